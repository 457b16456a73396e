"""A trial's memory estimate (miras_search.model.memory_estimate) against the measured peak.

Each point trains two steps on the CPU (float32, one thread) in a forked child of its own, after
a one-step warm-up at batch 1 x 16 tokens that loads the libraries; the figure is the growth of
the child's peak resident memory over that warm-up. Also: how long refusing an input file takes
(a 50 MB YAML, /dev/zero) and what validation says of a 14 billion parameter point.

    python benchmarks/memory_estimate.py [--out benchmarks/results/memory_estimate_cpu.md]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

import torch

from miras_search.errors import ConfigError
from miras_search.model import build_model
from miras_search.model.memory_estimate import estimate_memory, gb
from miras_search.model.quick_train import train_tokens
from miras_search.points import point_from_dict
from miras_search.trial.memory_limit import memory_problem
from miras_search.yamlio import read_yaml

POINTS = {
    "gated_deltanet d64 L2 b4x512": {"preset": "gated_deltanet", "block": {"d_model": 64, "n_heads": 2, "n_layers": 2},
                                     "train": {"batch_size": 4, "seq_len": 512}},
    "gated_deltanet d128 L2 b8x512": {"preset": "gated_deltanet", "block": {"d_model": 128, "n_heads": 2, "n_layers": 2},
                                      "train": {"batch_size": 8, "seq_len": 512}},
    "moneta d64 L2 b4x256": {"preset": "moneta", "block": {"d_model": 64, "n_heads": 2, "n_layers": 2},
                             "train": {"batch_size": 4, "seq_len": 256}},
    "moneta d128 L2 b8x256": {"preset": "moneta", "block": {"d_model": 128, "n_heads": 2, "n_layers": 2},
                              "train": {"batch_size": 8, "seq_len": 256}},
    "transformer d128 L2 b8x512": {"preset": "transformer", "block": {"d_model": 128, "n_heads": 4, "n_layers": 2},
                                   "train": {"batch_size": 8, "seq_len": 512}},
    "titans recurrent d64 L1 b2x128": {"preset": "titans", "block": {"d_model": 64, "n_heads": 2, "n_layers": 1},
                                       "train": {"batch_size": 2, "seq_len": 128, "mode": "recurrent"}},
    "omeganet d64 h8 L2 b8x128": {"preset": "omeganet", "block": {"d_model": 64, "n_heads": 8, "n_layers": 2},
                                  "train": {"batch_size": 8, "seq_len": 128}},
    "omeganet d64 h4 L2 b8x256": {"preset": "omeganet", "block": {"d_model": 64, "n_heads": 4, "n_layers": 2},
                                  "train": {"batch_size": 8, "seq_len": 256}},
    "omeganet/matrix d128 h4 L2 b8x512": {"preset": "omeganet", "memory": {"kind": "matrix", "init": "learned"},
                                          "block": {"d_model": 128, "n_heads": 4, "n_layers": 2},
                                          "train": {"batch_size": 8, "seq_len": 512}},
}


def _peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _train(point) -> None:
    gen = torch.Generator().manual_seed(0)

    def batches():
        while True:
            x = torch.randint(0, 256, (point.train.batch_size, point.train.seq_len), generator=gen)
            yield x, x

    train_tokens(point, batches(), steps=2, device=torch.device("cpu"), model=build_model(point, "cpu"))


def _measure(data: dict) -> dict:
    read, write = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read)
        _train(point_from_dict({**data, "train": {**data["train"], "batch_size": 1, "seq_len": 16}}))
        point = point_from_dict(data)
        before = _peak()
        _train(point)
        os.write(write, json.dumps({"measured": _peak() - before,
                                    "estimate": estimate_memory(point).training}).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        figures = json.loads(pipe.read())
    os.waitpid(child, 0)
    return figures


def _refusal_seconds(path: str) -> tuple[float, str]:
    start = time.perf_counter()
    try:
        read_yaml(path)
    except ConfigError as error:
        return time.perf_counter() - start, str(error).splitlines()[-1].strip()
    return time.perf_counter() - start, "accepted"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/memory_estimate_cpu.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    lines = ["# Memory estimate vs measured peak (CPU, float32, 2 training steps)", "",
             "| point | estimate | measured | estimate / measured |", "|---|---|---|---|"]
    for label, data in POINTS.items():
        figures = _measure(data)
        ratio = figures["estimate"] / figures["measured"]
        lines.append(f"| {label} | {gb(figures['estimate'])} | {gb(figures['measured'])} | {ratio:.2f} |")
        print(lines[-1], flush=True)
    with tempfile.TemporaryDirectory() as folder:
        big = Path(folder) / "big.yaml"
        big.write_bytes(b"a: 1\n" + b"# padding line\n" * (50 * 2**20 // 15))
        refusals = [("50 MB YAML", str(big)), ("/dev/zero", "/dev/zero")]
        lines += ["", "| input | refused in | message |", "|---|---|---|"]
        for label, path in refusals:
            seconds, message = _refusal_seconds(path)
            lines.append(f"| {label} | {seconds * 1000:.1f} ms | {message} |")
            print(lines[-1], flush=True)
    start = time.perf_counter()
    huge = point_from_dict({"preset": "gated_deltanet", "block": {"d_model": 6144, "n_heads": 48, "n_layers": 30}})
    problem = memory_problem(huge)
    lines += ["", f"14 billion parameter point, validated in {time.perf_counter() - start:.1f} s: {problem}"]
    print(lines[-1])
    Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
