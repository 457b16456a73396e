"""The paper's mini-batch (chunked) form: all gradients of a chunk at its start memory.

With l2 retention ("retain, then learn") token i's gradient is taken at the decayed start memory
beta_i W_0 instead, so that a chunk of one token is exactly the recurrence; it needs no per-token
weights, only a per-token scale on each layer's input and back-propagated signal.

Per chunk of b micro-steps and per weight, unrolling X_t = alpha_t X_{t-1} + S_t (momentum:
S_t = theta_t S_{t-1} - eta_t delta_t x_t^T; gd: theta = 0) from the chunk's start X_0, S_0, with
every gradient delta_i x_i^T taken at the start memory:
    U_t = beta_t X_0 + m_t S_0 - sum_{i<=t} C_ti eta_i delta_i x_i^T
with beta_t = prod_{j<=t} alpha_j, C = D_alpha (gd) or D_alpha @ D_theta (momentum) and
m_t = sum_j D_alpha[t, j] Theta_j (the sums over j only where S joins X: the Omega window's
entries add it at each token's last, ``MemoryInputs.momentum_mask``). Reads never materialise
U_t, and take only the micro-steps whose outputs are kept (each token's last): layer by layer,
U_t z = X_0 (beta_t z) + S_0 (m_t z) - sum_i C_ti (eta_i x_i . z) delta_i, an attention-like
masked product. Nonlinear retentions map the chunk's end state exactly (its last token reads it);
kl starts each chunk with one exact "lag" micro-step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.utils.checkpoint
from torch import Tensor

from miras_search.memory.inputs import MemoryInputs, layer_gates
from miras_search.memory.mirror_read import (
    checkpointed_read,
    mirror_chunk_read,
    mirror_diagonal_read,
)
from miras_search.memory.networks import DiagonalLayer
from miras_search.memory.recurrent import input_widths, memory_gradients, recurrent_step
from miras_search.memory.rule import MemoryRule, MemoryState
from miras_search.primitives import prefix_sum


@dataclass
class ChunkDecay:
    """Decay coefficients of one chunk of b micro-steps (c = 1, or channel-wise: one per input
    channel of each memory layer, see ``layer_gates``).

    beta: [B, H, b, c]; coef C: [B, H, b, b, c] (C[t, i], zero for i > t), or None when it is
    separable, C[t, i] = beta_t / beta_i (channel-wise decay without momentum: the reads then never
    form the [b, b, c] tensor); m: [B, H, b, c] | None; theta_last (Theta_b): [B, H, 1, 1] | None;
    theta_ratio (Theta_b / Theta_i): [B, H, b, 1] | None.
    """

    beta: Tensor
    coef: Tensor | None
    m: Tensor | None = None
    theta_last: Tensor | None = None
    theta_ratio: Tensor | None = None

    def per_layer(self, widths: list[int]) -> list[ChunkDecay]:
        """This chunk's decays for each memory layer: channel-wise ones (c = sum of the layers'
        input ``widths``) split into each layer's input channels, per-head ones shared."""
        beta, coef = layer_gates(self.beta, widths), layer_gates(self.coef, widths)
        m = layer_gates(self.m, widths)
        return [ChunkDecay(*fields, self.theta_last, self.theta_ratio)
                for fields in zip(beta, coef, m, strict=True)]

    def rows(self, read: slice) -> ChunkDecay:
        """The decays of the micro-steps t in ``read`` only (their reads: beta_t, m_t and C[t, :]);
        the full form (``coef``) only."""
        def pick(t: Tensor | None) -> Tensor | None:
            return None if t is None else t[:, :, read]
        return ChunkDecay(pick(self.beta), pick(self.coef), pick(self.m), self.theta_last, self.theta_ratio)

    def last_row(self) -> Tensor:
        """C[last, i]: [B, H, b, c]."""
        if self.coef is None:  # beta_b / beta_i, and exactly 1 at i = b
            beta = self.beta
            return torch.cat([beta[:, :, -1:] / beta[:, :, :-1], torch.ones_like(beta[:, :, -1:])], dim=2)
        return self.coef[:, :, -1]


# Channel-wise C[t, i] = exp(L_t - L_i) is formed as beta_t / beta_i only while every beta_t =
# exp(L_t) of the chunk stays above exp(floor): the reads divide the inputs by beta_i, and below
# exp(-30) an input of 1e25 would overflow float32 (then inf * 0 = NaN); a quotient of two normal
# numbers is as accurate as the exponential of the difference. Below the floor the full
# [b, b, c] tensor is formed.
SEPARABLE_LOG_FLOOR = {torch.float32: -30.0, torch.float64: -300.0}


def separable(log_cum: Tensor) -> bool:
    """Whether every cumulative log-decay in ``log_cum`` stays above SEPARABLE_LOG_FLOOR, where the
    separable form is exact. A data-dependent check: under torch.compile it breaks the graph, once
    per layer call (the callers check all chunks at once), which keeps the full form's [b, b, c]
    tensors out of every chunk where they are not needed. It reads a detached view: under
    torch.compile a minimum that autograd tracks also writes the [B, H, b, c] mask of its backward
    (6 ms per layer call for Moneta at the whole-model benchmark's size, where the minimum alone
    takes 0.2)."""
    if not log_cum.numel():
        return False
    return log_cum.detach().min().item() > SEPARABLE_LOG_FLOOR.get(log_cum.dtype, 0.0)


def _ratios(log_cum: Tensor) -> Tensor:
    """exp(L_t - L_i) for i <= t else 0: log_cum [B, H, b, c] -> [B, H, b, b, c]."""
    b = log_cum.shape[2]
    causal = torch.ones(b, b, dtype=torch.bool, device=log_cum.device).tril()
    diff = log_cum.unsqueeze(3) - log_cum.unsqueeze(2)
    # mask before exp so that no inf (and no NaN gradient) appears above the diagonal
    return torch.where(causal[:, :, None], diff, float("-inf")).exp()


def _log_prefixes(alpha: Tensor | None, theta: Tensor | None, like: Tensor) -> tuple[Tensor, Tensor | None]:
    """(L, log Theta): the cumulative log-decays of alpha [B, H, b, c] | None (1 where None;
    ``like`` [B, H, b, *] gives the shape) and theta [B, H, b, 1] | None."""
    log_alpha = torch.zeros_like(like[..., :1]) if alpha is None else torch.log(alpha)
    log_theta = None if theta is None else prefix_sum(torch.log(theta), 2)
    return prefix_sum(log_alpha, 2), log_theta


@torch.compiler.disable  # a scalar read: it breaks a graph anyway, and from eager code it runs eager
def _separable_form(alpha: Tensor | None, theta: Tensor | None, log_beta: Tensor) -> bool:
    """Whether C[t, i] = beta_t / beta_i is kept implicit: channel-wise decay without momentum,
    where ``separable``'s check allows it (a scalar read from the tensor)."""
    return theta is None and alpha is not None and alpha.shape[-1] > 1 and separable(log_beta)


def _decay_from(log_beta: Tensor, log_theta: Tensor | None, separable_form: bool,
                momentum_mask: Tensor | None = None) -> ChunkDecay:
    """The ChunkDecay of cumulative log-decays (``_log_prefixes``); ``momentum_mask`` [B, H, b, 1]
    (MemoryInputs.momentum_mask) keeps the micro-steps j whose momentum joins the memory in
    C = D_alpha diag(mask) D_theta and m = D_alpha (mask * Theta)."""
    if separable_form:
        return ChunkDecay(log_beta.exp(), None)
    d_alpha = _ratios(log_beta)
    if log_theta is None:
        return ChunkDecay(log_beta.exp(), d_alpha)
    d_theta = _ratios(log_theta)[..., 0]  # [B, H, j, i]
    joins = d_alpha if momentum_mask is None else d_alpha * momentum_mask.unsqueeze(2)
    coef = torch.einsum("bhtjc,bhji->bhtic", joins, d_theta)
    m = torch.einsum("bhtjc,bhj->bhtc", joins, log_theta.exp()[..., 0])
    return ChunkDecay(
        log_beta.exp(), coef, m,
        theta_last=log_theta[:, :, -1:].exp(),
        theta_ratio=d_theta[:, :, -1].unsqueeze(-1),
    )


def chunk_decay(alpha: Tensor | None, theta: Tensor | None, like: Tensor,
                momentum_mask: Tensor | None = None) -> ChunkDecay:
    """Coefficients from alpha [B, H, b, c] | None, theta [B, H, b, 1] | None and the momentum
    mask [B, H, b, 1] | None (MemoryInputs.momentum_mask)."""
    log_beta, log_theta = _log_prefixes(alpha, theta, like)
    return _decay_from(log_beta, log_theta, _separable_form(alpha, theta, log_beta), momentum_mask)


def _blocks(t: Tensor | None, n_full: int, size: int, skip: int) -> Tensor | None:
    """[B, H, N, c] -> [B, H * n_full, size - skip, c]: every full chunk, the chunks of a head side
    by side (a view of the inputs: no copy forward or backward)."""
    if t is None:
        return None
    return t[:, :, : n_full * size].unflatten(2, (n_full, size))[:, :, :, skip:].flatten(1, 2)


def _block_log_prefixes(x: MemoryInputs, n_full: int, size: int, skip: int) -> tuple[Tensor, Tensor | None]:
    """_log_prefixes of every full chunk at once: [B, H * n_full, size - skip, c] each."""
    return _log_prefixes(*(_blocks(t, n_full, size, skip) for t in (x.alpha, x.theta, x.k)))


@torch.compiler.disable(recursive=False)
def chunk_decays(x: MemoryInputs, size: int, skip: int = 0) -> list[ChunkDecay]:
    """chunk_decay of every full chunk of ``size`` micro-steps, its first ``skip`` left out (kl's
    lag token), all computed at once: one ChunkDecay per full chunk (none for a shorter last one).

    Under train.compile this function stays eager and its two halves compile on their own, so
    that ``separable``'s scalar read falls between them instead of breaking a graph (a break
    nested in a compiled frame left parts of the decays to run eagerly).
    """
    n_full = x.length // size
    if n_full == 0:
        return []
    heads = x.k.shape[1]
    log_beta, log_theta = _block_log_prefixes(x, n_full, size, skip)
    d = _decay_from(log_beta, log_theta, _separable_form(x.alpha, x.theta, log_beta),
                    _blocks(x.momentum_mask, n_full, size, skip))
    parts = [
        [None] * n_full if t is None else t.unflatten(1, (heads, n_full)).unbind(2)
        for t in (d.beta, d.coef, d.m, d.theta_last, d.theta_ratio)
    ]
    return [ChunkDecay(*fields) for fields in zip(*parts, strict=True)]


def chunk_update(rule: MemoryRule, state: MemoryState, x: MemoryInputs,
                 decay: ChunkDecay | None = None) -> tuple[Tensor, MemoryState]:
    """One chunk of the linear form: outputs [B, H, b, V] and the chunk-end state.

    ``decay``: this chunk's chunk_decay when already computed (``chunk_decays``), else None.
    """
    network, retention = rule.network, rule.retention
    if decay is None:
        decay = chunk_decay(x.alpha, x.theta, x.k, x.momentum_mask)
    widths = input_widths(state.w)
    decays = decay.per_layer(widths)
    # every gradient at the chunk-start W_0, retained to beta_i W_0 for l2 retention
    scale = retention.gradient_scale(None if x.alpha is None else decay.beta)
    grads = memory_gradients(rule, state.w, x.k, x.v, x.delta,
                             None if scale is None else layer_gates(scale, widths))
    deltas = [d for d, _ in grads]
    eta_x = [eta * inp for eta, (_, inp) in zip(layer_gates(x.eta, widths), grads, strict=True)]
    a_prev = state.a if state.a is not None else [None] * len(state.w)
    bases = [retention.linear_base(w, a) for w, a in zip(state.w, a_prev, strict=True)]
    scales = state.read_scale or [retention.read_scale(w, a) for w, a in zip(state.w, a_prev, strict=True)]
    s_prev = state.s if state.s is not None else [None] * len(state.w)
    # kl's running sums take the per-step decays
    alphas = layer_gates(x.alpha, widths) if retention.maps_each_token else None
    # only each token's last micro-step is read where it has several (multistep, the Omega
    # window's entries): the others' outputs are never used (kl's per-token maps and the
    # separable decays read them all)
    rows = None if retention.maps_each_token or decay.coef is None else x.read_rows()
    read_decays = decays if rows is None else [d.rows(rows) for d in decays]

    def read(layer: int, z: Tensor) -> Tensor:
        d = read_decays[layer]
        if retention.maps_each_token:  # kl: each token reads c softmax_row of its log-space state
            read_map = mirror_diagonal_read if network.layers[layer] is DiagonalLayer else mirror_chunk_read
            out = checkpointed_read(read_map, a_prev[layer], retention.scale, d.beta, s_prev[layer],
                                    d.m, d.coef, alphas[layer], deltas[layer], eta_x[layer], z)
        else:
            out = retention.chunk_read(
                network.layers[layer], state.w[layer], a_prev[layer], bases[layer], d.beta,
                s_prev[layer], d.m, d.coef, deltas[layer], eta_x[layer], z,
            )
        return out if scales[layer] is None else out * scales[layer]

    y, _ = network.run(read, x.q if rows is None else x.q[:, :, rows])
    if rows is not None:  # zeros where no output is kept
        kept = y
        y = kept.new_zeros(*kept.shape[:2], x.length, kept.shape[-1])
        y[:, :, rows] = kept

    new_w, new_a, new_s, new_scale = [], [], [], []
    for layer, kind in enumerate(network.layers):
        d = decays[layer]
        coef_last = d.last_row()  # [B, H, b, c]: C[last, i]
        beta_last = d.beta[:, :, -1:]  # [B, H, 1, c]
        raw = beta_last * retention.end_start(state.w[layer], a_prev[layer])
        if s_prev[layer] is not None:
            raw = torch.addcmul(raw, d.m[:, :, -1:], s_prev[layer])
            new_s.append(kind.minus_grad(
                decay.theta_last * s_prev[layer], deltas[layer], eta_x[layer] * decay.theta_ratio
            ))
        raw = kind.minus_grad(raw, deltas[layer], eta_x[layer] * coef_last)
        w_l, a_l, scale_l = retention.end_map_scaled(raw)
        new_w.append(w_l)
        new_a.append(a_l)
        new_scale.append(scale_l)
    end = MemoryState(
        new_w, None if state.a is None else new_a, None if state.s is None else new_s, new_scale
    )
    if retention.nonlinear:  # the chunk's last token reads the exact new state
        y_last = network.forward(end.w, x.q[:, :, -1:])
        y = torch.cat([y[:, :, :-1], y_last], dim=2)
    return y, end


CHECKPOINT_LAYER_BYTES = 2**30
"""A deep memory layer whose chunk updates would keep more than this for the backward pass runs
them checkpointed (``checkpointed_update``): 1 GiB, which trials at the toolkit's proxy sizes stay
under (no recomputation on the CPU) and the paper's sizes pass many times over (moneta at B=8,
T=2048, 12 heads of 64 kept about 11 GB per layer: 12 layers did not fit a 141 GB GPU)."""
SAVED_FLOATS_PER_INPUT = 48
"""Floats autograd keeps per token, head and layer-input channel of a deep memory's chunk update
(measured at head dim 64, hidden 256, chunk 16: moneta 44, titans 24, memora 52)."""


def update_keeps(batch: int, heads: int, length: int, widths: list[int]) -> int:
    """Bytes the chunk updates of one deep-memory layer keep for the backward pass, estimated:
    ``widths`` are the input widths of its weights (K and the hidden width for a 2-layer MLP)."""
    return 4 * SAVED_FLOATS_PER_INPUT * batch * heads * length * sum(widths)


def checkpoints_updates(batch: int, heads: int, length: int, widths: list[int]) -> bool:
    """Whether a layer of this size runs its chunk updates checkpointed: deep memories (two or
    more weights) whose updates would keep more than CHECKPOINT_LAYER_BYTES."""
    return len(widths) > 1 and update_keeps(batch, heads, length, widths) > CHECKPOINT_LAYER_BYTES


def checkpointed_update(rule: MemoryRule, state: MemoryState, x: MemoryInputs,
                        decay: ChunkDecay | None = None) -> tuple[Tensor, MemoryState]:
    """``chunk_update`` whose intermediates autograd does not keep: the backward pass recomputes
    the chunk from its start state (``torch.utils.checkpoint``), so a layer keeps one state per
    chunk instead of several states' worth of a chunk's temporaries, at about 1.3x the time."""
    if not torch.is_grad_enabled():
        return chunk_update(rule, state, x, decay)
    return torch.utils.checkpoint.checkpoint(chunk_update, rule, state, x, decay, use_reentrant=False)


ChunkUpdate = Callable[[MemoryRule, MemoryState, MemoryInputs, ChunkDecay | None],
                       tuple[Tensor, MemoryState]]


def chunked(rule: MemoryRule, x: MemoryInputs, state: MemoryState, chunk_size: int,
            update: ChunkUpdate = chunk_update) -> Tensor:
    """Outputs at every micro-step [B, H, N, V], chunk by chunk (chunk_size counts micro-steps).

    ``update`` runs one chunk: the linear form (``chunk_update``) or, for the tests' oracle, a
    form that materialises per-token weights (``reference_chunk``); it is given the chunk's
    decays, computed for all full chunks at once.
    """
    lag_token = rule.retention.lag_token
    # the decays do not depend on the state: all full chunks' at once
    decays = chunk_decays(x, chunk_size, skip=int(lag_token)) if chunk_size > int(lag_token) else []
    outputs = []
    for c, chunk in enumerate(x.split(chunk_size)):
        if lag_token:  # kl: the chunk's first micro-step is exact
            lag, chunk = chunk.split([1, chunk.length - 1])
            state = recurrent_step(rule, state, lag)
            outputs.append(rule.network.forward(state.w, lag.q))
            if chunk.length == 0:
                continue
        y, state = update(rule, state, chunk, decays[c] if c < len(decays) else None)
        outputs.append(y)
    return torch.cat(outputs, dim=2)
