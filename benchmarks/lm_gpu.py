"""Whole-model training throughput at the paper's small size: tokens/s, peak memory and MFU.

The presets (default transformer, gated_deltanet, titans, moneta, yaad, memora) as the toolkit
trains them (bf16 autocast on CUDA, ``train.kernel: auto``: fla's kernels for gated_deltanet, our
Triton kernels where they cover a layer, else the PyTorch chunked form; the ``kernel share``
column says which), beside two baselines of the same size: flash-linear-attention's own
GatedDeltaNet model (``fla.models``, from the flash-linear-attention package; its fused norm /
SwiGLU / cross-entropy kernels included, as fla ships it) and a plain SDPA Transformer
(benchmarks/model_vs_sdpa.py's ``PlainTransformer``).

Size: d_model 768, 12 layers, 12 heads of 64, SwiGLU ratio 2.75, byte-level vocabulary (260),
tied embeddings: about 85M parameters (the paper's ~125M counts a 32K-token embedding). One step
= forward with the loss, backward, gradient clipping, AdamW; ``--tokens-per-step`` tokens per step
at each sequence length. MFU = model FLOPs per second / the GPU's dense bf16 peak, with model
FLOPs = 6 N per token (N: the parameters outside the embedding table, plus the tied head's matmul)
+ 6 L_attn T d per token for the L_attn softmax-attention layers (causal); a memory layer's inner
loop is not counted, so MFU understates the memories whose state math is heavy (MLP memories).

    python benchmarks/lm_gpu.py [--models a,b] [--seq-lens 2048,4096] [--out FILE]
    python benchmarks/lm_gpu.py --tiny      # seconds on a CPU: checks the script end to end

A model name with ``+compile`` (``gated_deltanet+compile``, ``sdpa+compile``) runs it with
``train.compile: true``: each layer through torch.compile, compiled on the warm-up steps (whose
time the budget also counts: give a compiled model a larger ``--budget-s``).

Each model and length has a time budget (``--budget-s``: warm-up and timed steps stop when it is
spent, after at least one timed step); a model that runs out of memory or fails gets a row that
says so, and the others go on.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_vs_sdpa import VOCAB, PlainTransformer

from miras_search.memory.fla_path import fla_gated_backward_problem
from miras_search.model import build_model
from miras_search.model.compiling import compile_layers
from miras_search.model.mixer import AttentionMixer
from miras_search.presets import PRESET_AXES, preset

PRESETS = ("transformer", "gated_deltanet", "titans", "moneta", "yaad", "memora")
BASELINES = ("fla_gated_deltanet", "sdpa")
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "H800": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0}
"""Dense bf16 tensor-core peak (TFLOP/s, SXM parts) by a substring of the device name."""


@dataclass
class Size:
    d_model: int = 768
    n_layers: int = 12
    n_heads: int = 12
    mlp_ratio: float = 2.75

    @property
    def mlp_hidden(self) -> int:  # as miras_search.model.layers.SwiGLU rounds it
        return max(8, 8 * round(self.mlp_ratio * self.d_model / 8))


@dataclass
class Built:
    """A model to train: ``loss(tokens, targets)`` -> scalar; ``attention_layers`` for the FLOPs."""

    model: nn.Module
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    attention_layers: int
    kernel_share: Callable[[], str] = lambda: "-"


@dataclass
class Row:
    model: str
    seq_len: int
    params: int = 0
    times: list[float] = field(default_factory=list)
    peak_gb: float | None = None
    mfu: float | None = None
    kernel: str = "-"
    note: str = ""

    def tokens_per_s(self, tokens: int) -> float | None:
        return tokens / statistics.median(self.times) if self.times else None


def flop_params(model: nn.Module) -> int:
    """Parameters outside embedding tables, plus a tied head's matrix (it is a matmul per token)."""
    embeddings = [m.weight for m in model.modules() if isinstance(m, nn.Embedding)]
    ids = {id(w) for w in embeddings}
    n = sum(p.numel() for p in model.parameters() if id(p) not in ids)
    heads = [m for m in model.modules() if isinstance(m, nn.Linear) and id(m.weight) in ids]
    return n + sum(m.weight.numel() for m in heads)


def build_preset(name: str, size: Size, seq_len: int, batch: int, device: torch.device,
                 compiled: bool = False) -> Built:
    block = {"d_model": size.d_model, "n_heads": size.n_heads, "n_layers": size.n_layers,
             "mlp_ratio": size.mlp_ratio, "max_seq_len": max(seq_len, 8)}
    train = {**PRESET_AXES[name].get("train", {}), "seq_len": seq_len, "batch_size": batch,
             "tokens": seq_len * batch, "compile": compiled}
    point = preset(name, block=block, train=train)
    model = build_model(point, device)
    model.check_finite = False  # no host sync per step: throughput, not a trial

    def share() -> str:
        problems = model.kernel_problems()
        return f"{sum(p is None for p in problems)}/{len(problems)}" if problems else "-"

    attention = sum(isinstance(m, AttentionMixer) for m in model.modules())
    return Built(model, lambda x, y: model(x, y)[1], attention, share)


def build_sdpa(size: Size, device: torch.device, compiled: bool = False) -> Built:
    model = PlainTransformer(size.d_model, size.n_layers, size.n_heads, size.mlp_ratio).to(device)
    if compiled:
        compile_layers(model.blocks, device)
    return Built(model, lambda x, y: model(x, y)[1], size.n_layers)


def build_fla_gated_deltanet(size: Size, device: torch.device) -> Built:
    """fla's GatedDeltaNet LM at our size: 12 heads of 64 (expand_v 1), our SwiGLU width,
    our vocabulary, tied embeddings; everything else as fla sets it."""
    if device.type != "cuda":
        raise RuntimeError("fla's model runs Triton kernels: needs CUDA")
    try:
        from fla.models import GatedDeltaNetConfig, GatedDeltaNetForCausalLM
    except ImportError as error:
        raise RuntimeError(f"flash-linear-attention's models are not installed ({error}); "
                           "pip install 'miras-search[gpu]'") from None
    refused = fla_gated_backward_problem()
    if refused is not None:  # fla would raise in the first backward, after minutes of autotuning
        raise RuntimeError(refused)
    config = GatedDeltaNetConfig(
        hidden_size=size.d_model, num_hidden_layers=size.n_layers, num_heads=size.n_heads,
        head_dim=size.d_model // size.n_heads, expand_v=1.0, intermediate_size=size.mlp_hidden,
        hidden_ratio=None, vocab_size=VOCAB, tie_word_embeddings=True, use_cache=False,
    )
    model = GatedDeltaNetForCausalLM(config).to(device)
    return Built(model, lambda x, y: model(input_ids=x, labels=y).loss, 0)


def peak_flops(device: torch.device, override: float | None) -> float | None:
    if override is not None:
        return override * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((tflops * 1e12 for key, tflops in PEAK_TFLOPS.items() if key in name), None)


def profile_step(step: Callable[[], float], path: Path, cuda: bool) -> None:
    """One more step under torch.profiler: its ops by self time (the GPU's on CUDA), top 40, to
    ``path`` (what a model's step spends its time on beside the other rows)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        step()
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(prof.key_averages().table(sort_by=key, row_limit=40, max_name_column_width=70))


def measure(name: str, build: Callable[[], Built], seq_len: int, batch: int, device: torch.device,
            steps: int, warmup: int, budget_s: float, peak: float | None, size: Size,
            profile_dir: Path | None = None) -> Row:
    row = Row(name, seq_len)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    try:
        torch.manual_seed(0)
        built = build()
        row.params = sum(p.numel() for p in built.model.parameters())
        optimizer = torch.optim.AdamW(built.model.parameters(), lr=1e-4, betas=(0.9, 0.95), fused=cuda)
        gen = torch.Generator().manual_seed(0)
        data = torch.randint(0, 256, (batch, seq_len + 1), generator=gen).to(device)
        autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext())

        def step() -> float:
            start = time.perf_counter()
            with autocast:
                loss = built.loss(data[:, :-1], data[:, 1:])
            loss.backward()
            nn.utils.clip_grad_norm_(built.model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if cuda:
                torch.cuda.synchronize(device)
            return time.perf_counter() - start

        began = time.perf_counter()
        for _ in range(warmup):  # Triton compiles on the first steps
            step()
            if time.perf_counter() - began > budget_s:
                row.note = "budget spent in warm-up"
                break
        for _ in range(steps):
            row.times.append(step())
            if time.perf_counter() - began > budget_s:
                break
        row.kernel = built.kernel_share()
        if profile_dir is not None:
            profile_step(step, profile_dir / f"{name}_T{seq_len}.txt", cuda)
        if cuda:
            row.peak_gb = torch.cuda.max_memory_allocated(device) / 1e9
        if peak is not None and row.times:
            tokens_per_s = batch * seq_len / statistics.median(row.times)
            per_token = 6 * flop_params(built.model) + 6 * built.attention_layers * seq_len * size.d_model
            row.mfu = tokens_per_s * per_token / peak
    except torch.cuda.OutOfMemoryError:
        row.note = "out of memory"
    except Exception as error:  # a model that cannot run here gets a row that says why
        text = str(error).strip().splitlines()
        row.note = f"{type(error).__name__}: {text[0] if text else ''}"[:160]
    finally:
        built = None
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    return row


def goals(rows: list[Row], tokens: dict[int, int]) -> list[str]:
    """The issue's whole-model goals, per sequence length."""
    lines = []
    for seq_len in sorted({r.seq_len for r in rows}):
        by = {r.model: r.tokens_per_s(tokens[seq_len]) for r in rows if r.seq_len == seq_len}
        for ours, theirs, goal in (("gated_deltanet", "fla_gated_deltanet", 0.9), ("moneta", "sdpa", 0.25)):
            if by.get(ours) and by.get(theirs):
                ratio = by[ours] / by[theirs]
                verdict = "met" if ratio >= goal else "NOT met"
                lines.append(f"T={seq_len}: {ours} / {theirs} tokens/s = {ratio:.2f} (goal >= {goal}: {verdict})")
            else:
                lines.append(f"T={seq_len}: {ours} / {theirs}: not measured (see the rows' notes)")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(PRESETS + BASELINES))
    parser.add_argument("--seq-lens", default="2048,4096")
    parser.add_argument("--tokens-per-step", type=int, default=16384)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--budget-s", type=float, default=60.0, help="per model and length")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the GPU's dense bf16 peak")
    parser.add_argument("--tiny", action="store_true",
                        help="d_model 64, 2 layers, 4 heads, T 64, 2 steps: the script end to end in seconds")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="after the timed steps, one profiled step per model and length: "
                             "DIR/<model>_T<length>.txt, its ops by self (GPU) time")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    size = Size()
    seq_lens = [int(s) for s in args.seq_lens.split(",")]
    if args.tiny:
        size = Size(d_model=64, n_layers=2, n_heads=4)
        seq_lens, args.tokens_per_step, args.steps, args.warmup = [64], 128, 2, 1
    if device.type == "cpu":
        torch.set_num_threads(1)
    peak = peak_flops(device, args.peak_tflops)
    rows: list[Row] = []
    tokens: dict[int, int] = {}
    for seq_len in seq_lens:
        batch = max(1, args.tokens_per_step // seq_len)
        tokens[seq_len] = batch * seq_len
        for name in args.models.split(","):
            base, _, suffix = name.partition("+")
            compiled = suffix == "compile"
            if suffix not in ("", "compile") or (compiled and base == "fla_gated_deltanet"):
                parser.error(f"--models: '{name}': the one suffix is '+compile', for a preset or sdpa")
            if base == "sdpa":
                build = lambda compiled=compiled: build_sdpa(size, device, compiled)  # noqa: E731
            elif base == "fla_gated_deltanet":
                build = lambda: build_fla_gated_deltanet(size, device)  # noqa: E731
            elif base in PRESET_AXES:
                build = lambda base=base, seq_len=seq_len, batch=batch, compiled=compiled: build_preset(  # noqa: E731
                    base, size, seq_len, batch, device, compiled)
            else:
                parser.error(f"--models: '{name}' is neither a preset nor one of {', '.join(BASELINES)}")
            row = measure(name, build, seq_len, batch, device, args.steps, args.warmup, args.budget_s, peak,
                          size, args.profile)
            rows.append(row)
            print(f"# {name} T={seq_len}: {row.tokens_per_s(tokens[seq_len]) or 0:,.0f} tokens/s {row.note}",
                  flush=True)
            if args.out is not None:  # as it goes: a run cut short keeps the rows it has
                write(args.out, render(rows, tokens, size, device, args, final=False), argv)
    text = render(rows, tokens, size, device, args, final=True)
    print(text)
    if args.out is not None:
        write(args.out, text, argv)


def write(path: Path, text: str, argv: list[str] | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/lm_gpu.py " + " ".join(argv if argv is not None else sys.argv[1:])
    path.write_text(f"# Whole model at the paper's size\n\nCommand: `{command.strip()}`\n\n```\n{text}```\n")


def render(rows: list[Row], tokens: dict[int, int], size: Size, device: torch.device,
           args: argparse.Namespace, final: bool) -> str:
    """The table and the goals' verdicts as text."""
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu, 1 thread"
    console = Console(record=True, width=220, file=io.StringIO())
    table = Table(title=f"whole-model train step (fwd+bwd+clip+AdamW), d_model {size.d_model}, "
                        f"{size.n_layers} layers, {size.n_heads} heads of {size.d_model // size.n_heads}, "
                        f"{'bf16 autocast' if device.type == 'cuda' else 'fp32'}, {where}; median of "
                        f"up to {args.steps} steps after {args.warmup} warm-up")
    for col in ("model", "T", "batch", "params", "step ms", "tokens/s", "x sdpa", "peak GB", "MFU",
                "kernel share", "note"):
        table.add_column(col, justify="left" if col in ("model", "note") else "right")
    for row in rows:
        tps = row.tokens_per_s(tokens[row.seq_len])
        base = next((r.tokens_per_s(tokens[r.seq_len]) for r in rows
                     if r.model == "sdpa" and r.seq_len == row.seq_len), None)
        table.add_row(
            row.model, str(row.seq_len), str(tokens[row.seq_len] // row.seq_len), f"{row.params:,}",
            f"{1e3 * statistics.median(row.times):.1f}" if row.times else "-",
            f"{tps:,.0f}" if tps else "-", f"{tps / base:.2f}" if tps and base else "-",
            f"{row.peak_gb:.1f}" if row.peak_gb is not None else "-",
            f"{100 * row.mfu:.1f}%" if row.mfu is not None and math.isfinite(row.mfu) else "-",
            row.kernel, row.note,
        )
    console.print(table)
    for line in goals(rows, tokens) if final else ["(still running)"]:
        console.print(line)
    return console.export_text()


if __name__ == "__main__":
    main()
