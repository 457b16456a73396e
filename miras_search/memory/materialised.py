"""The chunked form of Atlas's rules, with per-token weights materialised (arXiv 2505.23735).

Muon's step NS_k(S_t) is not linear in the gradients, so the reads cannot be the masked products
of ``chunked.chunk_update``; the Omega window's step with momentum (a weighted sum of c
gradients per token, carried by S) runs here too. (With gd, ``memory_forward`` runs the window
in the linear form instead, as c entries per token: ``inputs.window_as_entries``; this module
computes that case too, as the tests' second form.) As the paper's parallel form (Section 3.3, Eq. 16; Section 5.1, Eqs. 34-41), every
gradient of a chunk is taken at the chunk's start memory W_0 (at beta_t W_0, beta_t = the chunk's
alphas up to t, when l2 retention takes its gradient at the retained memory): exact for chunks
of one token, an approximation for longer ones, as the paper's own. Then, per chunk:

    G_t = sum_{j<c} gamma_{t,j} grad l(W_0; k_{t-j}, v_{t-j})          (Eq. 16's window sum)
    step_t = the algorithm's step of G_t (``MemoryAlgorithm.chunk_steps``; gd: -eta_t G_t;
             muon, in closed form: S_t = Theta_t S_0 + sum_{i<=t} (Theta_t / Theta_i) G_i,
             Eq. 39, with Theta_t = prod_{j<=t} theta_j, then step_t = -eta_t NS_k(S_t),
             Eqs. 40-41, 32; an algorithm with a buffer and no closed form: token by token)
    W_t = beta_t W_0 + sum_{i<=t} (beta_t / beta_i) step_i,   y_t = M_{W_t}(q_t)

Every algorithm whose step is not linear in the gradients (Muon, a new one) runs here. Memory
O(chunk * weights) per chunk: the weights W_t and the momenta S_t of every token of the chunk
exist at once ([B, H, b, out, in] per layer).
Covers linear retentions (none, l2) on matrix and MLP memories (``ModelPoint`` refuses others).
``memory_forward`` runs it checkpointed (``checkpointed_chunk``): per-token weights are
recomputed in the backward pass rather than kept for every token of the sequence.
"""

from __future__ import annotations

import torch
import torch.utils.checkpoint
from torch import Tensor

from miras_search.memory.chunked import ChunkDecay
from miras_search.memory.inputs import MemoryInputs, layer_gates
from miras_search.memory.recurrent import input_widths, memory_gradients
from miras_search.memory.rule import MemoryRule, MemoryState
from miras_search.primitives import decay_matrix, prefix_sum

CHECKPOINT_FLOATS = 2**24
"""Per-token weights of one chunk (floats, batch and heads included) from which the chunk is
checkpointed: 64 MB in float32."""


def _ratio_matrix(log_cum: Tensor) -> Tensor:
    """exp(L_t - L_i) for i <= t else 0: [B, H, b, c] -> [B, H, b(t), b(i), c]."""
    return decay_matrix(log_cum.movedim(2, -1)).permute(0, 1, 3, 4, 2)


def _prefix(gate: Tensor | None, like: Tensor) -> tuple[Tensor, Tensor]:
    log = torch.zeros_like(like[..., :1]) if gate is None else torch.log(gate)
    log_cum = prefix_sum(log, 2)
    return log_cum.exp(), _ratio_matrix(log_cum)


def _window_sums(rule: MemoryRule, state: MemoryState, x: MemoryInputs,
                 scales: list[Tensor | None] | None) -> list[Tensor]:
    """G_t per layer, [B, H, b, out, in]: the window's weighted gradients at the chunk start."""
    k, v, delta, weight, c = x.gradient_terms()
    if scales is not None and c > 1:  # token t's scale serves its c window entries
        scales = [None if s is None else s.repeat_interleave(c, dim=2) for s in scales]
    grads = memory_gradients(rule, state.w, k, v, delta, scales)
    b = x.length
    sums = []
    for d, inp in grads:
        if weight is not None:
            inp = weight * inp
        sums.append(torch.einsum("bhnjo,bhnji->bhnoi", d.unflatten(2, (b, c)), inp.unflatten(2, (b, c))))
    return sums


def materialised_chunk(rule: MemoryRule, state: MemoryState, x: MemoryInputs,
                       decay: ChunkDecay | None = None) -> tuple[Tensor, MemoryState]:
    """One chunk (see the module docstring): outputs [B, H, b, V] and the chunk-end state.
    ``decay`` is not used: the per-token weights need the decays in their own layout."""
    network, retention = rule.network, rule.retention
    widths = input_widths(state.w)
    beta, d_alpha = _prefix(x.alpha, x.k)  # [B, H, b, c], [B, H, b, b, c]
    scale = retention.gradient_scale(None if x.alpha is None else beta)
    sums = _window_sums(rule, state, x, None if scale is None else layer_gates(scale, widths))
    etas = [None if eta is None else eta.unsqueeze(-2) for eta in layer_gates(x.eta, widths)]  # [B, H, b, 1, c_l]
    theta = None if x.theta is None else x.theta.unsqueeze(-1)  # [B, H, b, 1, 1]
    buffers = state.s if state.s is not None else [None] * len(sums)
    steps, momenta = [], []
    for g, eta, buffer in zip(sums, etas, buffers, strict=True):
        step, momentum = rule.optimiser.chunk_steps(g, eta, theta, buffer)
        steps.append(step)
        momenta.append(momentum)
    weights = []
    for w0, step, b_l, d_l in zip(state.w, steps, layer_gates(beta, widths),
                                  layer_gates(d_alpha, widths), strict=True):
        d_l = d_l.expand(*d_l.shape[:-1], w0.shape[-1])
        weights.append(b_l.unsqueeze(-2) * w0.unsqueeze(2) + torch.einsum("bhtic,bhioc->bhtoc", d_l, step))

    def apply(layer: int, z: Tensor) -> Tensor:
        return torch.einsum("bhnoi,bhni->bhno", weights[layer], z)

    y, _ = network.run(apply, x.q)
    end = MemoryState(
        [w[:, :, -1] for w in weights], None,
        None if state.s is None else [s[:, :, -1] for s in momenta],
    )
    return y, end


def checkpointed_chunk(rule: MemoryRule, state: MemoryState, x: MemoryInputs,
                       decay: ChunkDecay | None = None) -> tuple[Tensor, MemoryState]:
    """``materialised_chunk`` whose per-token weights autograd does not keep: the backward pass
    recomputes them chunk by chunk (``torch.utils.checkpoint``), so training keeps the states at
    chunk boundaries plus one chunk's per-token weights instead of every token's. Chunks whose
    per-token weights stay below ``CHECKPOINT_FLOATS`` run without it (the recomputation about
    doubles their time, and they fit anyway)."""
    floats = sum(w.numel() for w in state.w) * x.length  # one chunk's per-token weights
    if not torch.is_grad_enabled() or floats < CHECKPOINT_FLOATS:
        return materialised_chunk(rule, state, x, decay)
    return torch.utils.checkpoint.checkpoint(
        materialised_chunk, rule, state, x, decay, use_reentrant=False
    )
