"""Tokens per second of every built-in data source (one CPU thread).

    python benchmarks/data_throughput.py [--batch-size 16] [--seq-lens 256 1024 4096] [--steps 20]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from miras_search.data import MQAR, NeedleInHaystack, NoisyRecall, SelectiveCopy, TextCorpus


def _rate(source, batch_size: int, seq_len: int, steps: int) -> float:
    source.batch(batch_size, step=0, seq_len=seq_len)  # warm-up (and corpus load)
    start = time.perf_counter()
    for step in range(1, steps + 1):
        source.batch(batch_size, step=step, seq_len=seq_len)
    return steps * batch_size * seq_len / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-lens", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--cache", default=None, help="Cache folder (default: the usual one).")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.cache:  # the corpus haystack of niah reads the cache named by the environment
        os.environ["MIRAS_CACHE_DIR"] = args.cache

    start = time.perf_counter()
    text = TextCorpus().open(args.cache)
    print(f"corpus open: {time.perf_counter() - start:.2f} s "
          f"({sum(len(text.store.tokens(s)) for s in ('train', 'validation')) / 1e6:.2f} M tokens)")
    sources = {
        "mqar (N=16)": MQAR(num_pairs=16),
        "noisy_recall (N=8)": NoisyRecall(),
        "selective_copy (N=16)": SelectiveCopy(),
        "niah passkey / noise": NeedleInHaystack(),
        "niah uuid / corpus": NeedleInHaystack(needle="uuid", haystack="corpus"),
        "text (random windows)": text,
    }
    print(f"{'source':<24}" + "".join(f"{'T=' + str(t):>14}" for t in args.seq_lens) + "   (M tokens/s)")
    for name, source in sources.items():
        rates = [_rate(source, args.batch_size, t, args.steps) / 1e6 for t in args.seq_lens]
        print(f"{name:<24}" + "".join(f"{r:>14.2f}" for r in rates))


if __name__ == "__main__":
    main()
