"""memory_forward: one entry point for the recurrence, the mini-batch chunked form and the exact
chunked delta rule (and its generalization with a separate write key, RWKV-7)."""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

import torch
from torch import Tensor

from miras_search.errors import UnsupportedPoint
from miras_search.memory.attention import softmax_attention
from miras_search.memory.chunked import (
    checkpointed_update,
    checkpoints_updates,
    chunk_update,
    chunked,
)
from miras_search.memory.exact_delta import exact_delta
from miras_search.memory.gates import MemoryGates
from miras_search.memory.generalized_delta import generalized_delta
from miras_search.memory.inputs import MemoryInputs, prepare_inputs, window_as_entries
from miras_search.memory.kernel_path import KernelChoice, fast_forward
from miras_search.memory.materialised import checkpointed_chunk
from miras_search.memory.recurrent import input_widths, recurrent
from miras_search.memory.rule import MemoryRule, MemoryState


def check_exact_delta(rule: MemoryRule, x: MemoryInputs) -> None:
    """Raise UnsupportedPoint unless the exact chunked delta rule covers this rule and these gates."""
    problems = []
    if rule.memory != "matrix":
        problems.append(f"memory '{rule.memory}' (needs 'matrix')")
    if rule.bias.kind != "l2":
        problems.append("a bias other than 'l2'")
    if rule.omega_window > 1:
        problems.append(f"an Omega window of {rule.omega_window} (bias.window)")
    if rule.algorithm not in ("gd", "implicit", "multistep"):
        problems.append(f"algorithm '{rule.algorithm}' (needs gd, implicit or multistep)")
    generalized = x.write is not None  # RWKV-7's form: any gradient point, channel-wise gates
    if rule.retention.kind not in ("none", "l2"):
        problems.append(f"retention '{rule.retention.kind}' (needs none or l2)")
    elif rule.retention.kind == "l2" and not rule.retention.retains_first and not generalized:
        problems.append("l2 retention with gradient_at 'previous' (the delta rule retains first)")
    channel = x.eta.shape[-1] != 1 or (x.alpha is not None and x.alpha.shape[-1] != 1)
    if channel and not generalized:
        problems.append("channel-wise eta or alpha (needs per-head gates)")
    if generalized and rule.algorithm != "gd":
        problems.append(f"a separate write key with algorithm '{rule.algorithm}' (needs gd)")
    if problems:
        raise UnsupportedPoint(
            "chunk_form 'exact_delta' does not apply to " + ", ".join(problems)
            + "; use chunk_form 'minibatch'"
        )


def _check_gates(rule: MemoryRule, gates: MemoryGates) -> None:
    missing = [name for name in rule.needs() - {"alpha"} if getattr(gates, name) is None]
    if missing:
        raise ValueError(
            f"this memory rule needs gates {sorted(rule.needs())}; got None for {missing}"
        )
    if (rule.write_key == "lerp") != (gates.write_key is not None):
        raise ValueError(
            f"algorithm.write_key '{rule.write_key}' "
            + ("needs gates.write_key ([B, T, H, K]); got None" if rule.write_key == "lerp"
               else "takes no gates.write_key (only 'lerp' does); got a tensor")
        )


_chunk_loop = torch.compiler.disable(chunked, recursive=False)
"""``chunked``, whose own loop torch.compile (train.compile) leaves eager: unrolled into the layer's
graph, a few hundred ops per chunk times the chunks made a graph that compiled for minutes and ran
slower than eager (moneta); the functions it calls (the chunk update, the decays) still compile,
each into one graph that every chunk and layer reuses. Without compile this is ``chunked``."""
_token_loop = torch.compiler.disable(recurrent, recursive=False)
"""``recurrent`` (mode 'recurrent'), its token loop kept out of a compiled graph in the same way."""


def memory_forward(
    rule: MemoryRule,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    gates: MemoryGates,
    params: list[Tensor],
    mode: Literal["chunked", "recurrent"] = "chunked",
    chunk_size: int = 16,
    chunk_form: Literal["minibatch", "exact_delta"] = "minibatch",
    kernel: KernelChoice = "torch",
) -> Tensor:
    """Run the memory over a sequence and read it with the queries.

    q: [B, T, H, K]; k: [B, T, H, K] (multistep: [B, T, n, H, K]); v: [B, T, H, V] (multistep
    [B, T, n, H, V]); gates: see MemoryGates; params: rule.initial_parameters(...) (as parameters).
    Returns o: [B, T, H, V] with o_t = M_t(q_t), the memory read after its update with token t,
    in q's dtype. The state math runs in float32 (float64 when q is float64), outside autocast.
    ``mode='recurrent'`` is the token-by-token reference; chunked with chunk_size=1 equals it.
    ``kernel`` ('auto' | 'triton' | 'torch') routes the chunked form to flash-linear-attention
    where it computes the point exactly ('auto', CUDA, bf16 / fp16) and the chunked mini-batch form
    to a Triton kernel where one covers the point (see miras_search.memory.kernel_path).
    """
    if rule.is_attention:
        return softmax_attention(q, k, v, window=rule.window)
    if mode not in ("chunked", "recurrent"):
        raise ValueError(f"mode must be 'chunked' or 'recurrent', got '{mode}'")
    if chunk_form not in ("minibatch", "exact_delta"):
        raise ValueError(f"chunk_form must be 'minibatch' or 'exact_delta', got '{chunk_form}'")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    _check_gates(rule, gates)
    if mode == "chunked" and chunk_form == "minibatch" and gates.write_key is not None:
        raise UnsupportedPoint(
            "a separate write key (algorithm.write_key 'lerp', RWKV-7) has no minibatch chunked "
            "form; use chunk_form 'exact_delta' (the exact generalized delta rule) or the recurrence"
        )
    fused = fast_forward(rule, q, k, v, gates, params, mode, chunk_size, chunk_form, kernel)
    if fused is not None:
        return fused
    out_dtype = q.dtype
    dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    with torch.autocast(device_type=q.device.type, enabled=False):
        x = prepare_inputs(
            q, k, v, gates, rule.steps_per_token, rule.algorithm == "implicit", dtype,
            rule.omega_window,
        )
        batch, heads, _, key_dim = x.k.shape
        state: MemoryState = rule.initial_state(
            params, batch, heads, key_dim, x.v.shape[-1], dtype, q.device
        )
        if mode == "recurrent":
            y = _token_loop(rule, x, state)
        elif chunk_form == "exact_delta":
            check_exact_delta(rule, x)
            if x.write is not None:
                y = generalized_delta(x, state.w[0], chunk_size, rule.retention.retains_first)
            else:
                y = exact_delta(x, state.w[0], chunk_size)
        elif rule.materialised_chunks:  # Atlas's muon
            y = _chunk_loop(rule, x, state, chunk_size, update=checkpointed_chunk)
        else:
            if rule.omega_window > 1:  # the Omega window: c plain entries per token, chunks of b c
                x, rule, chunk_size = window_as_entries(x), replace(rule, omega_window=1), chunk_size * rule.omega_window
            large = checkpoints_updates(batch, heads, x.length, input_widths(state.w))
            y = _chunk_loop(rule, x, state, chunk_size, update=checkpointed_update if large else chunk_update)
        return x.token_outputs(y).to(out_dtype)
