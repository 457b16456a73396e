"""Whole-model train step on CPU against a plain SDPA Transformer of the same size.

One training step = forward with the loss, backward, gradient clipping, AdamW step. The baseline
is a plain pre-norm Transformer written here (fused q/k/v projection, rotary positions,
``F.scaled_dot_product_attention``, SwiGLU MLP, tied embeddings: no short conv, no l2 norm, no
output gate) with the same d_model, layers, heads, MLP ratio and vocabulary as the presets.
Sides are interleaved: every round takes one step of the baseline and one of each preset, so a
busy machine slows all alike; the ratio is median baseline step time / median preset step time
(= the preset's tokens/s over the baseline's). One torch thread, float32.

``--compile`` adds a compiled copy of every model, the baseline included (train.compile: each
layer through ``torch.compile``, static shapes), so that compiled is set against compiled and
eager against eager; its first step (the compile) is reported apart and left out of the timing.

    python benchmarks/model_vs_sdpa.py [--presets a,b] [--rounds 10] [--chunk-size 16] [--compile]
        [--out benchmarks/results/model_vs_sdpa_cpu.md] [--note "how loaded the machine was"]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from torch import nn

from miras_search.model import build_model, param_count
from miras_search.model.compiling import compile_layers
from miras_search.model.layers import SwiGLU, rotary
from miras_search.presets import PRESET_AXES, preset
from miras_search.trial.allocator import tune_allocator

DEFAULT_PRESETS = "transformer,gated_deltanet,titans,moneta,yaad,memora"
VOCAB = 260


class PlainBlock(nn.Module):
    """x + attn(norm x), then + SwiGLU(norm x); x: [B, T, D]."""

    def __init__(self, d_model: int, n_heads: int, mlp_ratio: float):
        super().__init__()
        self.n_heads = n_heads
        self.norm1 = nn.RMSNorm(d_model, eps=1e-6)
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)
        self.norm2 = nn.RMSNorm(d_model, eps=1e-6)
        self.mlp = SwiGLU(d_model, mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(batch, length, 3, self.n_heads, d // self.n_heads).unbind(2)
        q, k = rotary(q), rotary(k)  # [B, T, H, K]
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                           is_causal=True)  # [B, H, T, K]
        x = x + self.out(o.transpose(1, 2).reshape(batch, length, d))
        return x + self.mlp(self.norm2(x))


class PlainTransformer(nn.Module):
    """Byte-level LM: embed -> blocks -> RMSNorm -> tied head; returns (logits, mean loss)."""

    def __init__(self, d_model: int, n_layers: int, n_heads: int, mlp_ratio: float):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, d_model)
        self.blocks = nn.ModuleList(PlainBlock(d_model, n_heads, mlp_ratio) for _ in range(n_layers))
        self.norm = nn.RMSNorm(d_model, eps=1e-6)
        self.head = nn.Linear(d_model, VOCAB, bias=False)
        self.head.weight = self.embed.weight
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)

    def forward(self, tokens: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.norm(x))
        return logits, F.cross_entropy(logits.flatten(0, 1), targets.flatten())


class Stepper:
    """One model with its AdamW; ``step()`` runs one training step and returns its seconds."""

    def __init__(self, model: nn.Module, batch: int, seq_len: int, seed: int):
        self.model = model
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95))
        gen = torch.Generator().manual_seed(seed)
        self.data = torch.randint(0, 256, (batch, seq_len + 1), generator=gen)
        self.times: list[float] = []
        self.first_s = 0.0

    def step(self) -> float:
        start = time.perf_counter()
        _, loss = self.model(self.data[:, :-1], self.data[:, 1:])
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default=DEFAULT_PRESETS)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--chunk-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--compile", action="store_true",
                        help="also every model compiled (train.compile), the baseline included")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--note", default="", help="a line for --out's header, e.g. how loaded the machine was")
    args = parser.parse_args()
    torch.set_num_threads(1)
    tune_allocator()  # as in every trial process (miras_search.trial.allocator)
    block = {"d_model": args.d_model, "n_heads": args.heads, "n_layers": args.layers}
    steppers: dict[str, Stepper] = {}
    sizes: dict[str, int] = {}
    for compiled in (False, True) if args.compile else (False,):
        suffix = " (compiled)" if compiled else ""
        torch.manual_seed(0)
        baseline = PlainTransformer(args.d_model, args.layers, args.heads, preset("transformer").block.mlp_ratio)
        if compiled:
            compile_layers(baseline.blocks, torch.device("cpu"))
        steppers["plain SDPA" + suffix] = Stepper(baseline, args.batch, args.seq_len, 0)
        sizes["plain SDPA" + suffix] = sum(p.numel() for p in baseline.parameters())
        for name in args.presets.split(","):
            train = {**PRESET_AXES[name].get("train", {}), "seq_len": args.seq_len, "batch_size": args.batch,
                     "chunk_size": args.chunk_size, "compile": compiled, "kernel": "torch"}
            point = preset(name, block=block, train=train)
            torch.manual_seed(0)
            steppers[name + suffix] = Stepper(build_model(point, "cpu"), args.batch, args.seq_len, 0)
            sizes[name + suffix] = param_count(point)
    for stepper in steppers.values():  # the first step: allocation, and the compile where there is one
        stepper.first_s = stepper.step()
    for _ in range(args.warmup):
        for stepper in steppers.values():
            stepper.step()
    for _ in range(args.rounds):
        for stepper in steppers.values():
            stepper.times.append(stepper.step())
    console = Console(record=True, width=120)
    tokens = args.batch * args.seq_len
    base = statistics.median(steppers["plain SDPA"].times)
    table = Table(title=f"train step (fwd+bwd+AdamW), d_model {args.d_model}, {args.layers} layers, "
                        f"{args.heads} heads, seq {args.seq_len}, batch {args.batch}, chunk {args.chunk_size}, "
                        f"fp32, cpu 1 thread, median of {args.rounds} interleaved rounds")
    columns = ["model", "params", "step ms", "tokens/s", "x plain SDPA"]
    if args.compile:
        base_compiled = statistics.median(steppers["plain SDPA (compiled)"].times)
        columns += ["x plain SDPA (compiled)", "first step s"]
    for col in columns:
        table.add_column(col, justify="right")
    for name, stepper in steppers.items():
        med = statistics.median(stepper.times)
        row = [name, f"{sizes[name]:,}", f"{1e3 * med:.1f}", f"{tokens / med:,.0f}", f"{base / med:.2f}"]
        if args.compile:
            row += [f"{base_compiled / med:.2f}" if name.endswith("(compiled)") else "",
                    f"{stepper.first_s:.1f}"]
        table.add_row(*row)
    console.print(table)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        note = f"{args.note}\n\n" if args.note else ""
        args.out.write_text(
            "# Whole model against a plain SDPA Transformer\n\nCommand: `python benchmarks/model_vs_sdpa.py "
            f"--rounds {args.rounds}{' --compile' if args.compile else ''}`\n\n"
            f"{note}```\n{console.export_text()}```\n"
        )


if __name__ == "__main__":
    main()
