"""The GPU path ``miras kernels`` predicts (``miras_search.model.gpu_path``) against what each
preset's memory layers decide in a real forward on this machine (``MirasLM.kernel_problems``).

    python benchmarks/gpu_path_check.py [--presets a,b] [--d-model 256] [--heads 4] [--out F]

Each preset is built at one layer of d_model / heads (head dim 64 by default), batch 2 x 128
tokens, and run once under the point's autocast. On a CUDA machine with the gpu extra a
disagreement (a layer on a kernel where PyTorch was predicted, or the other way, or another
reason) exits 1. Without CUDA every layer runs PyTorch whatever the point: the table then shows
the predictions beside the CPU's reasons and the script exits 0 (a dry run).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from miras_search.model import build_model
from miras_search.model.factory import autocast_context
from miras_search.model.gpu_path import gpu_path
from miras_search.presets import PRESET_AXES, preset, preset_names


def check(name: str, d_model: int, heads: int, device: torch.device) -> tuple[str, str, bool]:
    """(predicted label, what the layers did, whether they agree) for one preset."""
    train = {**PRESET_AXES[name].get("train", {}), "batch_size": 2, "seq_len": 128, "tokens": 256}
    point = preset(name, block={"d_model": d_model, "n_heads": heads, "n_layers": 1, "max_seq_len": 128},
                   train=train)
    predicted = gpu_path(point)
    model = build_model(point, device)
    tokens = torch.randint(0, point.block.vocab_size, (2, 128), device=device)
    with torch.no_grad(), autocast_context(point, device):
        model(tokens)
    problems = model.kernel_problems()
    if not problems:
        return predicted.label(), "softmax attention", predicted.kind == "attention"
    on_kernel = all(problem is None for problem in problems)
    did = "a kernel" if on_kernel else f"PyTorch: {problems[0]}"
    agree = on_kernel == predicted.on_kernel and (on_kernel or problems[0] == predicted.detail)
    return predicted.label(), did, agree


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default=",".join(preset_names()))
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    lines = [f"Predicted GPU path vs the layers' own decision on {device} "
             f"(d_model {args.d_model}, {args.heads} heads, 1 layer, 2 x 128 tokens)", "",
             "| preset | predicted | the layers ran | agree |", "|---|---|---|---|"]
    disagree = 0
    for name in args.presets.split(","):
        predicted, did, agree = check(name, args.d_model, args.heads, device)
        disagree += not agree
        lines.append(f"| {name} | {predicted} | {did} | {'yes' if agree else 'NO'} |")
        print(lines[-1], flush=True)
    lines += ["", f"{disagree} disagreement(s)" + ("" if device.type == "cuda" else " (a CPU: expected)")]
    print(lines[-1])
    if args.out is not None:
        args.out.write_text("\n".join(lines) + "\n")
    return 1 if disagree and device.type == "cuda" else 0


if __name__ == "__main__":
    raise SystemExit(main())
