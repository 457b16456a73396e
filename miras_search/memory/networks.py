"""Axis 1, memory architecture: vector, matrix and residual-MLP memories with hand-written backprop.

Weights are batched over batch and heads: a matrix layer is ``W: [B, H, out, in]``, a diagonal
(vector) layer is ``w: [B, H, 1, K]``. Token inputs are ``x: [B, H, N, in]``.

Each per-token gradient of a layer is an outer product ``delta_i x_i^T`` (diagonal: ``delta_i * x_i``),
which is what lets the chunked form read the memory without materialising per-token weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from miras_search.primitives import LN_EPS, activation, layer_norm_back, prefix_sum

LayerApply = Callable[[int, Tensor], Tensor]


class _ProductWithWeight(torch.autograd.Function):
    """z @ w^T whose gradient in w is formed in w's own [out, in] layout (grad^T z).

    Autograd's gradient of ``z @ w.mT`` is (z^T grad)^T, a transposed view. A chunk's weights are
    also scaled and added to, so the backward then multiplied gradients in that layout with
    weights in theirs: 3x slower element-wise passes (46 against 15 us at [8, 4, 32, 128]), a
    weight-sized pass per decay gradient and chunk. Eager whole-model step (section 3's size, one
    process, 10 interleaved rounds): titans 540.9 -> 520.7 ms, moneta 702.9 -> 659.0, yaad
    588.6 -> 568.5, memora 2184 -> 2153."""

    @staticmethod
    def forward(ctx, z: Tensor, w: Tensor) -> Tensor:
        ctx.save_for_backward(z, w)
        return z @ w.mT

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        z, w = ctx.saved_tensors
        # as the forward (the memory's state math runs outside autocast), whatever context
        # the backward is called in
        with torch.autocast(device_type=grad.device.type, enabled=False):
            grad_z = grad @ w if ctx.needs_input_grad[0] else None
            grad_w = None
            if ctx.needs_input_grad[1]:
                grad_w = grad.mT @ z
                if grad_w.shape != w.shape:  # w broadcast over z's batch dimensions
                    grad_w = grad_w.sum_to_size(w.shape)
        return grad_z, grad_w


def _minus_outer_sum(base: Tensor, delta: Tensor, x: Tensor) -> Tensor:
    """base - delta^T x: base [B, H, out, in], delta [B, H, N, out], x [B, H, N, in]."""
    out = torch.baddbmm(base.flatten(0, 1), delta.flatten(0, 1).mT, x.flatten(0, 1), alpha=-1.0)
    return out.view(base.shape)


class _MinusOuterSum(torch.autograd.Function):
    """base - delta^T x (one ``baddbmm``) whose gradients in delta and x come out in their own
    [N, out] / [N, in] layouts (x grad^T and delta grad); autograd's gradient of delta is a
    transposed view of grad x^T, and the hand-written inner backward's element-wise passes over
    it ran in mismatched layouts. Eager whole-model step, one process, 8 interleaved rounds:
    titans 581.0 -> 563.0 ms, moneta 663.4 -> 647.7, yaad 582.5 -> 568.2. (The same for the
    reads' [b, b] score products measured within the noise: 0.98-1.02x.)"""

    @staticmethod
    def forward(ctx, base: Tensor, delta: Tensor, x: Tensor) -> Tensor:
        ctx.save_for_backward(delta, x)
        return _minus_outer_sum(base, delta, x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        delta, x = ctx.saved_tensors
        with torch.autocast(device_type=grad.device.type, enabled=False):
            grad_delta = -(x @ grad.mT) if ctx.needs_input_grad[1] else None
            grad_x = -(delta @ grad) if ctx.needs_input_grad[2] else None
        return (grad if ctx.needs_input_grad[0] else None), grad_delta, grad_x


def times_weight(z: Tensor, w: Tensor) -> Tensor:
    """z @ w^T: z [..., N, in], w [..., out, in] -> [..., N, out]. Eager through
    ``_ProductWithWeight`` (its weight gradient in w's layout); under torch.compile the plain
    product, whose layouts inductor chooses."""
    if torch.is_grad_enabled() and not torch.compiler.is_compiling():
        return _ProductWithWeight.apply(z, w)
    return z @ w.mT


class LinearLayer:
    """y = W x with W: [B, H, out, in]."""

    @staticmethod
    def apply(w: Tensor, z: Tensor) -> Tensor:
        """z: [B, H, N, in] -> [B, H, N, out]."""
        return times_weight(z, w)

    @staticmethod
    def back(w: Tensor, d: Tensor) -> Tensor:
        """dl/dz from dl/dy: [B, H, N, out] -> [B, H, N, in]."""
        return d @ w

    @staticmethod
    def grad(delta: Tensor, x: Tensor) -> Tensor:
        """sum_i delta_i x_i^T: delta [B, H, N, out], x [B, H, N, in] -> [B, H, out, in]."""
        return delta.mT @ x

    @staticmethod
    def minus_grad(base: Tensor, delta: Tensor, x: Tensor) -> Tensor:
        """base - sum_i delta_i x_i^T in one fused product: base [B, H, out, in]."""
        if torch.is_grad_enabled() and not torch.compiler.is_compiling():
            return _MinusOuterSum.apply(base, delta, x)
        return _minus_outer_sum(base, delta, x)

    @staticmethod
    def chunk_read(
        x0: Tensor, beta: Tensor, s0: Tensor | None, m: Tensor | None,
        coef: Tensor | None, delta: Tensor, ex: Tensor, z: Tensor,
    ) -> Tensor:
        """U_t z_t with U_t = X0 diag(beta_t) + S0 diag(m_t) - sum_{i<=t} delta_i (C_ti * ex_i)^T.

        x0, s0: [B, H, out, in]; beta, m: [B, H, b, c]; coef C: [B, H, b, b, c] (zero above the
        diagonal) or None for C_ti = beta_t / beta_i; delta: [B, H, b, out]; ex = eta * x:
        [B, H, b, in]; z: [B, H, b, in]; c in {1, in}.
        """
        zb = z * beta
        out = times_weight(zb, x0)
        if s0 is not None and m is not None:
            out = out + times_weight(z * m, s0)
        if coef is None:
            # i < t: sum_k z_tk beta_tk ex_ik / beta_ik, one product; i = t: C = 1 exactly (its
            # gradient in alpha is exactly 0, as in the recurrence, not a rounding residue)
            b = z.shape[-2]
            below = torch.ones(b, b, dtype=torch.bool, device=z.device).tril(-1)
            scores = (zb @ (ex / beta).mT).masked_fill(~below, 0.0)
            scores = scores + torch.diag_embed((z * ex).sum(-1))
        elif coef.shape[-1] == 1:
            scores = (z @ ex.mT) * coef[..., 0]
        else:
            scores = torch.einsum("bhtik,bhtk,bhik->bhti", coef, z, ex)
        return out - scores @ delta


class DiagonalLayer:
    """y = w * x with w: [B, H, 1, K] (the vector memory)."""

    @staticmethod
    def apply(w: Tensor, z: Tensor) -> Tensor:
        return z * w

    @staticmethod
    def back(w: Tensor, d: Tensor) -> Tensor:
        return d * w

    @staticmethod
    def grad(delta: Tensor, x: Tensor) -> Tensor:
        """sum_i delta_i * x_i: [B, H, N, K] -> [B, H, 1, K]."""
        return (delta * x).sum(-2, keepdim=True)

    @staticmethod
    def minus_grad(base: Tensor, delta: Tensor, x: Tensor) -> Tensor:
        """base - sum_i delta_i * x_i: base [B, H, 1, K]."""
        return base - (delta * x).sum(-2, keepdim=True)

    @staticmethod
    def chunk_read(
        x0: Tensor, beta: Tensor, s0: Tensor | None, m: Tensor | None,
        coef: Tensor | None, delta: Tensor, ex: Tensor, z: Tensor,
    ) -> Tensor:
        """Diagonal analogue of LinearLayer.chunk_read (every channel decays on its own)."""
        out = z * beta * x0
        if s0 is not None and m is not None:
            out = out + z * m * s0
        if coef is None:  # C_ti = beta_t / beta_i: a running sum over i < t, and C_tt = 1
            step = ex * delta
            before = F.pad(prefix_sum(step / beta, -2)[..., :-1, :], (0, 0, 1, 0))
            summed = beta * before + step
        else:
            summed = (coef * (ex * delta).unsqueeze(-3)).sum(-2)  # [B, H, t, K]
        return out - z * summed


Layer = type[LinearLayer] | type[DiagonalLayer]
Cache = tuple[list[Tensor], list[Tensor]]


@dataclass(frozen=True)
class Network:
    """A memory architecture: its layers and how they chain.

    ``kind``: 'vector' | 'matrix' | 'mlp'. For 'mlp': M(x) = x + LN(W_L act(... act(W_1 x))); an
    input wider than the output (Atlas's feature map phi(k), its degree-1 block first) adds only
    its first V features as the residual.
    """

    kind: str
    depth: int = 1
    expansion: int = 1
    activation: str = "gelu"
    layer_norm: bool = False

    @property
    def layers(self) -> list[Layer]:
        if self.kind == "vector":
            return [DiagonalLayer]
        return [LinearLayer] * self.depth

    def shapes(self, key_dim: int, value_dim: int) -> list[tuple[int, int]]:
        """(out, in) of each weight of one head."""
        if self.kind == "vector":
            return [(1, key_dim)]
        if self.kind == "matrix":
            return [(value_dim, key_dim)]
        hidden = self.expansion * value_dim  # = key_dim without a feature map (K == V)
        return [(hidden, key_dim)] + [(hidden, hidden)] * (self.depth - 2) + [(value_dim, hidden)]

    def run(self, apply: LayerApply, x: Tensor) -> tuple[Tensor, Cache]:
        """M(x) with each layer's linear map given by ``apply(l, z)``; x: [B, H, N, K].

        Returns the output [B, H, N, V] and the cache (layer inputs, pre-activations) for backward.
        """
        if self.kind != "mlp":
            return apply(0, x), ([x], [])
        act, _ = activation(self.activation)
        inputs, pre = [], []
        h = x
        for layer in range(self.depth):
            inputs.append(h)
            z = apply(layer, h)
            pre.append(z)
            if layer < self.depth - 1:
                h = act(z)
        branch = F.layer_norm(z, z.shape[-1:], eps=LN_EPS) if self.layer_norm else z
        # behind a feature map the input is phi(k), whose first block is its degree-1 part
        residual = x if x.shape[-1] == z.shape[-1] else x[..., : z.shape[-1]]
        return residual + branch, (inputs, pre)

    def forward(self, weights: list[Tensor], x: Tensor) -> Tensor:
        """M(x) with the same weights for every token: weights per layer [B, H, out, in]."""
        return self.run(lambda layer, z: self.layers[layer].apply(weights[layer], z), x)[0]

    def backward(
        self, weights: list[Tensor], cache: Cache, g: Tensor,
        scales: list[Tensor | None] | None = None,
    ) -> list[tuple[Tensor, Tensor]]:
        """Per-layer (delta_l [B, H, N, out], x_l [B, H, N, in]): dl/dW_l for token i = delta_li x_li^T.

        ``g``: dl/dM(x), [B, H, N, V]; ``weights`` must be those the cache was computed with.
        ``scales`` (per layer, [B, H, N, c_l] | None): token i's weights are W_l diag(s_li) (the
        forward scaled layer l's input by s_li), so the signal back through layer l is scaled by
        s_li too.
        """
        inputs, pre = cache
        if self.kind != "mlp":
            return [(g, inputs[0])]
        _, act_back = activation(self.activation)
        dz = layer_norm_back(pre[-1], g) if self.layer_norm else g
        out: list[tuple[Tensor, Tensor]] = []
        for layer in reversed(range(self.depth)):
            out.append((dz, inputs[layer]))
            if layer > 0:
                back = LinearLayer.back(weights[layer], dz)
                if scales is not None and scales[layer] is not None:
                    back = back * scales[layer]
                dz = act_back(back, pre[layer - 1])
        return out[::-1]
