"""MAD recall at CPU scale: accuracy after a short training with the loss on every token (MAD's
way) against the loss on the answers only (the `mad` preset's choice). One CPU thread.

    python benchmarks/mad_loss_on.py [--steps 150] [--preset gated_deltanet] [--out FILE]
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator

import torch

from miras_search.data import DataMix, MadRecall
from miras_search.model import build_model
from miras_search.model.quick_train import train_tokens
from miras_search.presets import preset
from miras_search.schema import ModelPoint
from miras_search.trial.evaluate import evaluate

BATCH, SEQ_LEN = 16, 64


def _accuracy(name: str, loss_on: str, steps: int) -> float:
    data = preset(name).model_dump()
    data["block"].update(d_model=64, n_heads=2, n_layers=2, max_seq_len=256)
    data["train"].update(batch_size=BATCH, seq_len=SEQ_LEN, lr=0.003)
    point = ModelPoint.model_validate(data)
    task = MadRecall(vocab_size=16, seq_len=SEQ_LEN, loss_on=loss_on)

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        step = 0
        while True:
            batch = task.batch(BATCH, step=step, seed=0)
            step += 1
            yield batch.inputs, batch.targets

    torch.manual_seed(0)
    model = build_model(point, "cpu")
    train_tokens(point, batches(), steps=steps, device="cpu", model=model)
    metrics = evaluate(model, DataMix([task]), batches=4, batch_size=BATCH, seq_len=SEQ_LEN,
                       device=torch.device("cpu"), autocast=contextlib.nullcontext())
    return metrics["acc/mad_recall"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--preset", default="gated_deltanet")
    parser.add_argument("--out", default=None, help="Also write the table to this file.")
    args = parser.parse_args()
    torch.set_num_threads(1)
    lines = [f"mad_recall (vocab_size 16, seq_len {SEQ_LEN}), {args.preset} d_model 64 x 2 layers, "
             f"{args.steps} steps of {BATCH} sequences, lr 0.003, seed 0; accuracy on 64 validation sequences",
             "loss_on   accuracy"]
    for loss_on in ("all", "answers"):
        lines.append(f"{loss_on:<9} {_accuracy(args.preset, loss_on, args.steps):.3f}")
        print(lines[-1], flush=True)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
