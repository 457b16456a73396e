"""Which share of a search space's points would train their memory layers on a GPU kernel.

Draws points from each space (its own sampler, a fixed seed) and sorts each point by the path its
memory layers take on a CUDA machine with bf16 inputs: softmax attention, fla's chunk kernels, our
Triton kernels, or the PyTorch form, the last grouped by the reason (for an uncovered point: its
memory, retention, algorithm and channel-wise gates, what a new kernel would have to cover). No
GPU is needed: ``miras_search.model.gpu_path`` decides as a trial on a GPU would, at each point's
own shapes (``miras kernels SPACE`` prints the same table in the terminal).

    python benchmarks/kernel_coverage.py [SPACE.yaml ...] [--points 400] [--seed 1] [--out F]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from miras_search.model.gpu_path import coverage as gpu_coverage
from miras_search.space.search_space import SearchSpace

ROOT = Path(__file__).resolve().parents[1]


def coverage(space_path: Path, points: int, seed: int) -> str:
    """A markdown table of the paths of ``points`` points drawn from the space
    (``miras_search.model.gpu_path``, as ``miras kernels`` prints them)."""
    found = gpu_coverage(SearchSpace.load(space_path).sample(points, seed=seed))
    lines = [f"### {space_path.name}: {found.on_kernel} of {found.memory_points} memory points on a kernel "
             f"({100 * found.on_kernel / max(found.memory_points, 1):.0f} %)", "", "| path | points |", "|---|---|"]
    lines += [f"| {group} | {count} |" for group, count in found.counts.most_common()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spaces", nargs="*", type=Path)
    parser.add_argument("--points", type=int, default=400)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    spaces = args.spaces or sorted((ROOT / "spaces").glob("*.yaml"))
    header = (f"Paths of the memory layers on a CUDA machine (bf16), {args.points} points per space "
              f"(seed {args.seed}). Command: `python benchmarks/kernel_coverage.py "
              f"--points {args.points} --seed {args.seed}`.")
    text = "\n\n".join([header, *(coverage(path, args.points, args.seed) for path in spaces)]) + "\n"
    print(text)
    if args.out is not None:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
