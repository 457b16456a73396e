"""Which share of a search space's points would train their memory layers on a GPU kernel.

Draws points from each space (its own sampler, a fixed seed) and sorts each point by the path its
memory layers take on a CUDA machine with bf16 inputs: softmax attention, fla's chunk kernels, our
Triton kernels, or the PyTorch form, the last grouped by the point's memory, retention, algorithm
and channel-wise gates (what a new kernel would have to cover). No GPU is needed: coverage and
shape limits are decided without one (``kernels.kernel_for``, ``kernels.dispatch.shape_problem``,
``memory.fla_path.fla_op``).

    python benchmarks/kernel_coverage.py [SPACE.yaml ...] [--points 400] [--seed 1] [--out F]
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

import torch

from miras_search.kernels import kernel_for
from miras_search.kernels.dispatch import shape_problem
from miras_search.memory import MemoryRule
from miras_search.memory.fla_path import fla_op
from miras_search.model.mixer import resolved_chunk_form
from miras_search.schema import ModelPoint
from miras_search.space.search_space import SearchSpace

ROOT = Path(__file__).resolve().parents[1]


def layer_path(point: ModelPoint) -> str:
    """'attention', 'fla', 'triton' or 'pytorch: <memory / retention / algorithm [channel gates]>'."""
    rule = MemoryRule.from_point(point)
    if rule.is_attention:
        return "attention"
    form = resolved_chunk_form(point)
    if point.train.mode == "chunked" and fla_op(rule, "chunked", form)[0] is not None:
        return "fla"
    head_dim = point.block.d_model // point.block.n_heads
    covered = point.train.mode == "chunked" and form == "minibatch" and kernel_for(point) is not None
    if covered:
        problem = shape_problem(point, head_dim, head_dim, point.train.chunk_size, torch.bfloat16)
        if problem is None:
            return "triton"
        return f"pytorch: the kernel's shapes ({problem[:70]})"
    channel = sorted(name for name, mode in rule.gate_modes.items() if mode == "channel")
    gates = f" [channel {', '.join(channel)}]" if channel else ""
    network = ""
    if rule.memory == "mlp":
        network = f" (depth {rule.network.depth}, {rule.network.activation})"
    return f"pytorch: {rule.memory}{network} / {rule.retention.kind} / {rule.algorithm}{gates}"


def coverage(space_path: Path, points: int, seed: int) -> str:
    """A markdown table of the paths of ``points`` points drawn from the space."""
    space = SearchSpace.load(space_path)
    counts = collections.Counter(layer_path(point) for point in space.sample(points, seed=seed))
    total = sum(counts.values())
    memory = total - counts["attention"]
    on_kernel = counts["fla"] + counts["triton"]
    lines = [f"### {space_path.name}: {on_kernel} of {memory} memory points on a kernel "
             f"({100 * on_kernel / max(memory, 1):.0f} %)", "", "| path | points |", "|---|---|"]
    lines += [f"| {path} | {count} |" for path, count in counts.most_common()]
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
