"""A slow, materialising loop with the chunked form's semantics (the test oracle for chunked.py).

It follows the spec literally: per chunk, every gradient at the chunk-start memory W_0 (at the
explicitly formed beta_i W_0 with l2 retention, beta_i = the chunk's alphas up to i); then token by
token it grows the per-token weights U_t (and the chunk-end accumulator) explicitly and reads
each token through the network with those weights. Memory O(T * params): tests only. Atlas's
Muon and Omega window (``materialised.py``'s chunked form) are followed token by token here too.
"""

from __future__ import annotations

import torch
from torch import Tensor

from miras_search.memory.chunked import ChunkDecay, chunked
from miras_search.memory.inputs import MemoryInputs, layer_gates
from miras_search.memory.recurrent import (
    algorithm_steps,
    gradient_point,
    input_widths,
    memory_gradients,
)
from miras_search.memory.rule import MemoryRule, MemoryState


def _chunk(rule: MemoryRule, state: MemoryState, x: MemoryInputs,
           decay: ChunkDecay | None = None) -> tuple[Tensor, MemoryState]:
    """``decay`` is ignored: the oracle forms its decays token by token."""
    network, retention = rule.network, rule.retention
    n_layers = len(network.layers)
    a0 = state.a if state.a is not None else [None] * n_layers
    base = [retention.linear_base(w, a) for w, a in zip(state.w, a0, strict=True)]
    scale = [retention.read_scale(w, a) for w, a in zip(state.w, a0, strict=True)]
    u = list(base)  # U_t, read by non-last tokens
    # the same sum in the end state's space
    u_end = [retention.end_start(w, a) for w, a in zip(state.w, a0, strict=True)]
    s = list(state.s) if state.s is not None else None
    beta = None  # prod of the chunk's alphas so far (None: no decay)
    outputs = []
    for i in range(x.length):
        tok = x.slice(i, i + 1)
        if tok.alpha is not None:
            beta = tok.alpha if beta is None else beta * tok.alpha
        # at W_0, or at the retained beta_i W_0 (l2 retention), as explicit weights
        point = gradient_point(rule, state.w, beta)
        k, v, delta, weight, _ = tok.gradient_terms()  # the Omega window's entries (or the token)
        grads = memory_gradients(rule, point, k, v, delta)
        if weight is not None:
            grads = [(d, weight * inp) for d, inp in grads]
        widths = input_widths(state.w)
        etas, decays = layer_gates(tok.eta, widths), layer_gates(tok.alpha, widths)
        step, buffers = algorithm_steps(rule, grads, etas, tok.theta, s)
        s = None if s is None else buffers
        decays = [1.0 if a is None else a for a in decays]
        u = [a * u_l + st for a, u_l, st in zip(decays, u, step, strict=True)]
        u_end = [a * u_l + st for a, u_l, st in zip(decays, u_end, step, strict=True)]
        if i == x.length - 1:
            mapped = [retention.end_map(raw) for raw in u_end]
            end = MemoryState(
                [w for w, _ in mapped],
                [a for _, a in mapped] if state.a is not None else None,
                s,
            )
            outputs.append(network.forward(end.w, tok.q))
        else:
            if retention.maps_each_token:  # every token reads the exact map of its log-space sum
                weights = [retention.end_map(raw)[0] for raw in u_end]
            else:
                weights = [u_l if sc is None else u_l * sc for u_l, sc in zip(u, scale, strict=True)]
            outputs.append(network.forward(weights, tok.q))
    return torch.cat(outputs, dim=2), end


def reference_chunked(rule: MemoryRule, x: MemoryInputs, state: MemoryState, chunk_size: int) -> Tensor:
    """Outputs at every micro-step [B, H, N, V] with the chunk semantics, per-token weights
    materialised (the same walk over chunks and kl's lag token as ``chunked``)."""
    return chunked(rule, x, state, chunk_size, update=_chunk)
