"""Throughput of a full train step (forward, backward, AdamW) for a few presets at a small size.

    python benchmarks/model_step.py [--presets a,b] [--d-model 128] [--layers 2] [--seq-len 128]
        [--batch 8] [--steps 6] [--device cpu|cuda] [--chunk-size 16] [--compile]

Prints tokens/s per preset (the first step, allocation/compilation, is left out).
"""

from __future__ import annotations

import argparse
import itertools

import torch

from miras_search.model import param_count, state_size, train_tokens
from miras_search.presets import PRESET_AXES, preset

DEFAULT_PRESETS = "transformer,gated_deltanet,deltaproduct,titans,moneta,yaad,memora"


def random_batches(batch: int, seq_len: int, vocab: int = 256):
    gen = torch.Generator().manual_seed(0)
    for _ in itertools.count():
        yield torch.randint(0, vocab, (batch, seq_len + 1), generator=gen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default=DEFAULT_PRESETS)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--chunk-size", type=int, default=16)
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print(f"d_model {args.d_model}, heads {args.heads}, layers {args.layers}, seq_len {args.seq_len}, "
          f"batch {args.batch}, chunk_size {args.chunk_size}, steps {args.steps}")
    print(f"{'preset':<16}{'params':>10}{'state/layer':>13}{'tokens/s':>12}{'final loss':>12}")
    for name in args.presets.split(","):
        train = {
            **PRESET_AXES[name].get("train", {}),
            "seq_len": args.seq_len, "batch_size": args.batch, "chunk_size": args.chunk_size,
            "tokens": args.seq_len * args.batch * args.steps, "compile": args.compile,
        }
        block = {"d_model": args.d_model, "n_heads": args.heads, "n_layers": args.layers}
        point = preset(name, block=block, train=train)
        result = train_tokens(point, random_batches(args.batch, args.seq_len), args.steps, device=args.device)
        print(f"{name:<16}{param_count(point):>10,}{state_size(point):>13,}"
              f"{result.tokens_per_s:>12,.0f}{result.losses[-1]:>12.3f}")


if __name__ == "__main__":
    main()
