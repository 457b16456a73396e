"""Plain-PyTorch reference of the chunked (minibatch) update of a 2-layer MLP memory.

The memory of one (batch, head) is M(x) = x + N(W2 act(W1 x)) with W1 [Hd, K], W2 [K, Hd]
(N = layer norm without affine, or identity), as in Moneta, Yaad and Memora. The state carried
from chunk to chunk is X_l: the weights W_l themselves, for lq retention the accumulator A_l
with W_l = A_l / max(||A_l||_q, 1e-6)^(q-2), and for kl the log-weights, W_l = exp(X_l) (taking
the log of c softmax(...) instead would lose the entries that underflow float32).

Inside a segment of C tokens (a chunk; with kl retention every chunk is split into its first
"lag" token and the rest), with L_t = sum_{j<=t} log alpha_j, b_t = exp(L_t) and
D[t, i] = exp(L_t - L_i) for i <= t:

    key pass at the gradient point W diag(s_i) (s_i = b_i for l2 retention with gradient_at
    "retained", "retain, then learn"; 1 otherwise):   a1 = W1 (s k), h = act(a1), a2 = W2 (s h), e = k + N(a2) - v,
    g = phi(e), d2 = N'(a2)^T g, d1 = s (W2^T d2) act'(a1)
    (the key pass runs at W_l = exp(X_l) for kl)
    read (layer by layer, never forming per-token weights; r_l = 1 / n(A_l) for lq, else 1):
    u1_t = r1 (b_t X1 q_t - sum_{i<=t} D_ti eta_i (k_i . q_t) d1_i),      hq = act(u1)
    u2_t = r2 (b_t X2 hq_t - sum_{i<=t} D_ti eta_i (h_i . hq_t) d2_i),    o = q + N(u2)
    kl instead reads every token at its own exact map of the log-space state (as
    miras_search.memory.mirror_read, whose docstring says why; rows run over the input dim):
    raw_lt = b_t X_l - sum_{i<=t} D_ti eta_i d_li x_li^T,   u_lt = c softmax_row(raw_lt) z_lt
    with z_1 = q, z_2 = hq (this file forms the [C, out, in] weights; the kernels per token on chip).
    segment end: raw_l = b_C X_l - sum_i D_Ci eta_i d_li x_li^T with x_1 = k, x_2 = h;
    X_l' = raw_l (none, l2, lq), log c + log_softmax_row(raw_l) (kl) or shrink(raw_l) (elastic:
    the soft threshold at gamma, elastic_shrink). For lq, kl and elastic the last token reads the
    exact new memory: o_C = M_{W'}(q_C).

Momentum (Titans) carries S_l as well, S_t = theta_t S_{t-1} - eta_t d_t x_t^T, added to the
memory at every token: with Dt[j, i] = Theta_j / Theta_i (Theta = cumprod theta), the step
weights become (D @ Dt)[t, i] eta_i, the reads and raw_l gain m_t S_l with m = D @ Theta, and
S_l' = Theta_C S_l - sum_i Dt[C, i] eta_i d_li x_li^T (kl's per-token raw_lt too; only this
reference has kl with momentum). A channel-wise alpha makes b_t and D_ti per input channel.

A segment of one token is the exact recurrence. This file is written to be read; the Triton
kernels in chunk.py must match it (and it must match miras_search.memory's chunked form).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from miras_search.primitives import (
    LN_EPS,
    activation,
    decay_matrix,
    kl_log_weights,
    layer_norm_back,
    lq_log_scale,
)

from ..bias import BiasConfig, KernelInputError, as_bias, phi
from ..segments import segments

ACTIVATIONS = ("gelu", "silu", "relu")
RETENTIONS = ("none", "l2", "lq", "kl", "elastic")
GRADIENT_POINTS = ("retained", "previous")


@dataclass(frozen=True)
class MlpMemoryConfig:
    """The memory architecture and retention of a 2-layer MLP memory.

    ``q`` is the lq exponent (Moneta: 4); ``scale`` is kl's c (Memora: W = c softmax(...));
    ``threshold`` and ``smooth`` are elastic retention's soft threshold gamma and whether it
    takes the smooth surrogate (``elastic_shrink``).
    """

    activation: str = "gelu"
    layer_norm: bool = True
    retention: str = "l2"
    q: float = 4.0
    scale: float = 1.0
    gradient_at: str = "retained"
    threshold: float = 1e-3
    smooth: bool = True

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise KernelInputError(
                f"activation {self.activation!r} has no MLP-memory kernel; choose one of {ACTIVATIONS}"
            )
        if self.retention not in RETENTIONS:
            raise KernelInputError(
                f"retention {self.retention!r} has no MLP-memory kernel; choose one of {RETENTIONS}"
            )
        if self.retention == "elastic" and not self.threshold > 0.0:
            raise KernelInputError(f"elastic retention's threshold must be > 0, got {self.threshold}")
        if self.gradient_at not in GRADIENT_POINTS:
            raise KernelInputError(
                f"gradient_at {self.gradient_at!r} is not one of {GRADIENT_POINTS}"
            )

    @property
    def retains_first(self) -> bool:
        """l2 retention with the gradient at the retained memory (s_i = b_i), not at W_0."""
        return self.retention == "l2" and self.gradient_at == "retained"

    @property
    def lag_token(self) -> bool:
        return self.retention == "kl"

    @property
    def retention_scalar(self) -> float:
        """The retention's scalar the kernels take (their SCALE): kl's c, elastic's gamma."""
        return self.threshold if self.retention == "elastic" else self.scale


def elastic_shrink(x: torch.Tensor, threshold: float, smooth: bool) -> torch.Tensor:
    """Elastic retention's soft threshold: sign(x) max(|x| - gamma, 0), or its smooth surrogate
    |x| atan(x / gamma) / (pi / 2) (DESIGN.md, retention "elastic")."""
    if smooth:
        return x.abs() * torch.atan(x / threshold) * (2.0 / torch.pi)
    return x.sign() * (x.abs() - threshold).clamp_min(0.0)


def initial_state(w1: torch.Tensor, w2: torch.Tensor, config: MlpMemoryConfig) -> list[torch.Tensor]:
    """The carried state X_l from the learned parameters (kl: the log-weights; else the
    parameter)."""
    if config.retention == "kl":
        return [kl_log_weights(w, config.scale) for w in (w1, w2)]
    return [w1, w2]


def _activation(z: torch.Tensor, name: str) -> torch.Tensor:
    return activation(name)[0](z)


def _norm(z: torch.Tensor, config: MlpMemoryConfig) -> torch.Tensor:
    return F.layer_norm(z, z.shape[-1:], eps=LN_EPS) if config.layer_norm else z


def _norm_back(z: torch.Tensor, g: torch.Tensor, config: MlpMemoryConfig) -> torch.Tensor:
    """N'(z)^T g over the last dim."""
    return layer_norm_back(z, g) if config.layer_norm else g


def lq_read_scale(x: torch.Tensor, q: float) -> torch.Tensor:
    """1 / max(||X||_q, 1e-6)^(q-2) over the last two dims: [..., 1, 1] (through logs:
    ``miras_search.primitives.lq_log_scale``)."""
    return (-lq_log_scale(x, q)).exp()


def _mlp(w1: torch.Tensor, w2: torch.Tensor, x: torch.Tensor, config: MlpMemoryConfig) -> torch.Tensor:
    """M(x) for x [..., n, K] with weights [..., Hd, K], [..., K, Hd]."""
    return x + _norm(_activation(x @ w1.mT, config.activation) @ w2.mT, config)


def segment_forward(
    x1: torch.Tensor, x2: torch.Tensor, s1: torch.Tensor | None, s2: torch.Tensor | None,
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eta: torch.Tensor,
    log_alpha: torch.Tensor, log_theta: torch.Tensor | None, delta: torch.Tensor | None,
    config: MlpMemoryConfig, bias: BiasConfig,
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor] | None]:
    """One segment: outputs [N, C, K], the carried state and the momentum (or None) at its end.

    x1: [N, Hd, K]; x2: [N, K, Hd]; s1, s2: the momentum, shaped alike (None for gd);
    q, k, v: [N, C, K]; eta: [N, C], or channel-wise [N, C, K + Hd] (one step per input channel
    of W1, then of W2: the layer's write input scaled by it); log_alpha: [N, C], or channel-wise
    [N, C, K + Hd] (each input channel of W1, then of W2, decays on its own); log_theta: [N, C];
    delta: [N, C], or [N, C, K] (one Huber threshold per value channel). Decays are kept per
    channel, [N, C(t), C(i), c] with c = 1 for a per-head one.
    """
    dim = k.shape[-1]
    if config.retention == "lq":
        r1, r2 = lq_read_scale(x1, config.q), lq_read_scale(x2, config.q)
    else:
        r1 = r2 = torch.ones_like(x1[..., :1, :1])
    v1, v2 = (x1.exp(), x2.exp()) if config.retention == "kl" else (x1, x2)  # the reads' base
    w1, w2 = r1 * v1, r2 * v2
    # per layer: log b [N, C, c], the decay D[t, i, c] = b_t / b_i (i <= t)
    if log_alpha.dim() == 3:
        log_as = [log_alpha[..., :dim], log_alpha[..., dim:]]
    else:
        log_as = [log_alpha[..., None]] * 2
    log_bs = [la.cumsum(-2) for la in log_as]
    bs = [lb.exp() for lb in log_bs]
    decays = [decay_matrix(lb.transpose(-1, -2)).permute(0, 2, 3, 1) for lb in log_bs]
    scales = bs if config.retains_first else [torch.ones_like(b) for b in bs]
    if log_theta is None:  # gd: token i's step reaches t decayed by D[t, i]
        coefs, ms = decays, None
    else:  # momentum: through S_j (theta from i to j), then decayed from j to t
        log_th = log_theta.cumsum(-1)
        theta_decay = decay_matrix(log_th)
        coefs = [torch.einsum("ntjc,nji->ntic", d, theta_decay) for d in decays]
        ms = [torch.einsum("ntjc,nj->ntc", d, log_th.exp()) for d in decays]  # how much of S_0 reaches t
    channel = eta.dim() == 3
    if channel:  # the steps scale each layer's write input, not the step weights
        eta_1, eta_2 = eta[..., :dim], eta[..., dim:]
        eta = torch.ones_like(eta[..., 0])
    weighted = [c * eta[..., None, :, None] for c in coefs]  # C[t, i, c] eta_i

    a1 = (scales[0] * k) @ w1.mT
    h = _activation(a1, config.activation)
    a2 = (scales[1] * h) @ w2.mT
    g = phi(k + _norm(a2, config) - v, v, delta, bias)
    d2 = _norm_back(a2, g, config)
    d1 = activation(config.activation)[1](scales[1] * (d2 @ w2), a1)
    x_1, x_2 = (k * eta_1, h * eta_2) if channel else (k, h)  # what each layer writes with

    def read(layer: int, x: torch.Tensor, mom: torch.Tensor | None, z: torch.Tensor,
             x_in: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """U_t z_t of one layer (x_in: the layer's write inputs): kl forms every token's
        U_t = c softmax_row(raw_t), the others never form U_t."""
        if config.retention == "kl":
            # sum_i C[t, i] eta_i d_i x_i^T as one [o, i] x [i, c] product per token (an einsum
            # over the three factors formed their [t, i, o, c] outer product: 13.6 GB at the GPU
            # tests' shapes in float64)
            steps = d.mT[:, None] @ (weighted[layer] * x_in[:, None])  # [N, t, o, c]
            raw = bs[layer][:, :, None, :] * x[:, None] - steps
            if mom is not None:
                raw = raw + ms[layer][:, :, None, :] * mom[:, None]
            return config.scale * (torch.softmax(raw, -1) @ z[..., None])[..., 0]
        scores = torch.einsum("ntic,ntc,nic->nti", weighted[layer], z, x_in)
        out = (bs[layer] * z) @ x.mT - scores @ d
        return out if mom is None else out + (ms[layer] * z) @ mom.mT

    # the reads grow from the weights (kl: each token's softmax of the log-space state)
    base1, base2 = (x1, x2) if config.retention == "kl" else (v1, v2)
    u1 = r1 * read(0, base1, s1, q, x_1, d1)
    hq = _activation(u1, config.activation)
    out = q + _norm(r2 * read(1, base2, s2, hq, x_2, d2), config)

    lasts = [wt[:, -1] for wt in weighted]  # [N, C(i), c]: C[last, i] eta_i
    b_lasts = [b[:, -1:] for b in bs]  # [N, 1, c]: each input channel's decay over the segment
    raw1 = b_lasts[0] * x1 - d1.mT @ (lasts[0] * x_1)
    raw2 = b_lasts[1] * x2 - d2.mT @ (lasts[1] * x_2)
    momentum = None
    if log_theta is not None:
        raw1, raw2 = raw1 + ms[0][:, -1:] * s1, raw2 + ms[1][:, -1:] * s2
        step = (theta_decay[..., -1, :] * eta)[..., None]  # Theta_C / Theta_i eta_i
        theta_all = log_th[..., -1, None, None].exp()
        momentum = [theta_all * s1 - d1.mT @ (step * x_1), theta_all * s2 - d2.mT @ (step * x_2)]
    if config.retention == "kl":
        x1, x2 = (kl_log_weights(raw, config.scale) for raw in (raw1, raw2))
        out = torch.cat([out[:, :-1], _mlp(x1.exp(), x2.exp(), q[:, -1:], config)], dim=1)
    elif config.retention == "lq":
        x1, x2 = raw1, raw2
        w1n, w2n = lq_read_scale(x1, config.q) * x1, lq_read_scale(x2, config.q) * x2
        out = torch.cat([out[:, :-1], _mlp(w1n, w2n, q[:, -1:], config)], dim=1)
    elif config.retention == "elastic":
        x1, x2 = (elastic_shrink(raw, config.threshold, config.smooth) for raw in (raw1, raw2))
        out = torch.cat([out[:, :-1], _mlp(x1, x2, q[:, -1:], config)], dim=1)
    else:
        x1, x2 = raw1, raw2
    return out, [x1, x2], momentum


def naive_chunk_mlp_memory(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    eta: torch.Tensor,
    w1: torch.Tensor,
    w2: torch.Tensor,
    alpha: torch.Tensor | None = None,
    theta: torch.Tensor | None = None,
    delta: torch.Tensor | None = None,
    config: MlpMemoryConfig | None = None,
    bias: BiasConfig | str = "l2",
    chunk_size: int = 16,
) -> torch.Tensor:
    """Chunked 2-layer MLP memory, one segment at a time, in the dtype of ``q``.

    Args:
        q, k, v: [B, T, H, K] (the memory is residual, so values share the key dim).
        eta: [B, T, H] (> 0), or channel-wise [B, T, H, K + Hd] (a step per input channel of
            W1, then of W2); alpha: [B, T, H] in (0, 1], channel-wise [B, T, H, K + Hd] (a decay
            per input channel of W1, then of W2) or None (ignored for retention
            'none'); theta: [B, T, H] in (0, 1) for momentum (Titans; the momentum starts at
            zero), None for gd; delta: [B, T, H] or, one per value channel, [B, T, H, K]
            (huber only).
        w1: [H, Hd, K], w2: [H, K, Hd]: the learned initial parameters (lq: the accumulators;
            kl: logits, the weights are c softmax_row of them).
        config: activation, layer norm and retention; bias: the attentional bias.
    Returns:
        o: [B, T, H, K].
    """
    config = config or MlpMemoryConfig()
    x1, x2 = initial_state(w1, w2, config)
    return chunk_mlp_from_state(q, k, v, eta, x1, x2, alpha, delta, theta, config, as_bias(bias),
                                chunk_size)


def chunk_mlp_from_state(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eta: torch.Tensor,
    x1: torch.Tensor, x2: torch.Tensor, alpha: torch.Tensor | None, delta: torch.Tensor | None,
    theta: torch.Tensor | None, config: MlpMemoryConfig, bias: BiasConfig, chunk_size: int,
) -> torch.Tensor:
    """naive_chunk_mlp_memory from the carried initial state x1 [H, Hd, K], x2 [H, K, Hd]."""
    batch, length, heads, dim = q.shape
    work = torch.float64 if q.dtype == torch.float64 else torch.float32

    def heads_first(x: torch.Tensor | None) -> torch.Tensor | None:
        if x is None:
            return None
        return x.to(work).transpose(1, 2).reshape(batch * heads, length, *x.shape[3:])

    qh, kh, vh, eh, dh, th = map(heads_first, (q, k, v, eta, delta, theta))
    if alpha is None or config.retention == "none":  # no retention: nothing decays
        log_alpha = torch.zeros(batch * heads, length, dtype=work, device=q.device)
    else:
        log_alpha = torch.log(heads_first(alpha))
    state = [
        x.to(work).unsqueeze(0).expand(batch, -1, -1, -1).reshape(batch * heads, *x.shape[1:])
        for x in (x1, x2)
    ]
    momentum = None if theta is None else [torch.zeros_like(x) for x in state]
    log_theta = None if th is None else torch.log(th)
    outputs = []
    for start, stop in segments(length, chunk_size, config.lag_token):
        cut = slice(start, stop)
        out, state, momentum = segment_forward(
            *state, *(momentum or (None, None)), qh[:, cut], kh[:, cut], vh[:, cut], eh[:, cut],
            log_alpha[:, cut], None if log_theta is None else log_theta[:, cut],
            None if dh is None else dh[:, cut], config, bias,
        )
        outputs.append(out)
    o = torch.cat(outputs, dim=1).reshape(batch, heads, length, dim).transpose(1, 2)
    return o.to(q.dtype)
