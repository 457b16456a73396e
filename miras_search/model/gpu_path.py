"""Which path a point's memory layers would take on a CUDA GPU, decided on any machine.

A trial reports the path its layers took (``MirasLM.kernel_problems``) after it ran; this module
answers before, without a GPU, so that a search planned on a laptop knows which of its points
will train on a fast kernel: softmax attention, flash-linear-attention's chunk kernels (the points
fla computes exactly), our Triton kernels (the chunked mini-batch form), or the PyTorch chunked
form, with the reason. It assumes what ``scripts/setup.sh`` installs on a GPU machine: a CUDA
build of torch, a Triton at least as new as the kernels' calibration and fla-core (the ``gpu``
extra); the trial runs under bf16 autocast, as ``train.precision`` 'auto' does on a GPU.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Literal

import torch

from miras_search.memory.fla_path import fla_op
from miras_search.memory.kernel_path import UNCOVERED_NOTE, form_problem, point_kernel
from miras_search.memory.rule import MemoryRule
from miras_search.model.factory import memory_key_width
from miras_search.model.mixer import resolved_chunk_form
from miras_search.schema import ModelPoint

PathKind = Literal["attention", "fla", "triton", "pytorch", "refused"]


@dataclass(frozen=True)
class GpuPath:
    """kind: 'attention', 'fla', 'triton', 'pytorch' or 'refused' (train.kernel 'triton' on a point
    no Triton kernel takes: the layer raises); detail: fla's op, or why no kernel runs."""

    kind: PathKind
    detail: str = ""

    @property
    def on_kernel(self) -> bool:
        return self.kind in ("fla", "triton")

    def label(self) -> str:
        """One line: e.g. "fla's chunk_gated_delta_rule", "our Triton kernel", "PyTorch: why"."""
        if self.kind == "attention":
            return "softmax attention (no memory update)"
        if self.kind == "fla":
            return f"fla's chunk_{self.detail}"
        if self.kind == "triton":
            return "our Triton kernel"
        if self.kind == "refused":
            return f"fails: train.kernel 'triton' cannot run this memory layer: {self.detail}"
        return f"PyTorch chunked form: {self.detail}"

    def short(self) -> str:
        """A narrow table cell: 'fla', 'Triton', 'PyTorch', 'attention' or 'refused'."""
        return {"fla": "fla", "triton": "Triton", "pytorch": "PyTorch"}.get(self.kind, self.kind)

    def group(self) -> str:
        """The label without the list of what the kernels cover (a table row shared by points)."""
        return self.label().removesuffix(UNCOVERED_NOTE)


def gpu_path(point: ModelPoint, dtype: torch.dtype = torch.bfloat16) -> GpuPath:
    """The path of ``point``'s memory layers on a CUDA GPU at its own shapes (block heads and head
    dims, the memory's key width behind a feature map, train.batch_size x train.seq_len tokens,
    train.chunk_size) with inputs of ``dtype``, and its train.kernel / mode / chunk_form."""
    rule = MemoryRule.from_point(point)
    if rule.is_attention:
        return GpuPath("attention")
    train = point.train
    if train.kernel == "torch":
        return GpuPath("pytorch", "train.kernel is 'torch'")
    form = resolved_chunk_form(point)
    fla_reason = None
    if train.kernel == "auto":
        op, fla_reason = fla_op(rule, train.mode, form)
        if op is not None:
            return GpuPath("fla", op)
    unfit = form_problem(train.mode, form, fla_reason)
    if unfit is not None:
        return GpuPath("pytorch", unfit)
    shape = (train.batch_size, train.seq_len, point.block.n_heads, memory_key_width(point), point.block.head_v)
    reason = point_kernel(rule, shape, train.chunk_size, dtype)[1]
    if reason is None:
        return GpuPath("triton")
    return GpuPath("refused" if train.kernel == "triton" else "pytorch", reason)


@dataclass(frozen=True)
class Coverage:
    """How a sample of points' memory layers would run on a GPU: each path's group and its count."""

    counts: Counter[str]
    kinds: dict[str, PathKind]

    @property
    def memory_points(self) -> int:
        return sum(n for group, n in self.counts.items() if self.kinds[group] != "attention")

    @property
    def on_kernel(self) -> int:
        return sum(n for group, n in self.counts.items() if self.kinds[group] in ("fla", "triton"))


def coverage(points: list[ModelPoint]) -> Coverage:
    """The GPU paths of ``points`` (e.g. ``SearchSpace.sample(n, seed)``), grouped by label."""
    counts: Counter[str] = Counter()
    kinds: dict[str, PathKind] = {}
    for point in points:
        path = gpu_path(point)
        group = path.group()
        counts[group] += 1
        kinds[group] = path.kind
    return Coverage(counts, kinds)
