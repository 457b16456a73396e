"""Small building blocks of the block: short causal conv, SwiGLU MLP, rotary position embedding."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable


class _CausalConvSiLU(torch.autograd.Function):
    """silu(y), y_t = sum_j w[:, j] * x_{t - K + 1 + j} (zero before the start), with a
    hand-written backward: a few fused multiply-adds over [B, T, C] each way, where nn.Conv1d's
    CPU backward on this layout and autograd over shifted slices (a zero-filled full-size
    gradient per tap) cost several times more. Tap j reads x shifted by K - 1 - j steps, as
    slices of x itself (no zero-padded copy)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor) -> Tensor:  # x: [B, T, C], weight: [C, 1, K]
        taps, length = weight.shape[-1], x.shape[1]
        wt = weight[:, 0].t().contiguous()  # [K, C]
        y = x * wt[taps - 1]
        for j in range(taps - 1):
            shift = min(taps - 1 - j, length)
            y[:, shift:].addcmul_(x[:, : length - shift], wt[j])
        ctx.save_for_backward(x, wt, y)
        return F.silu(y)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor]:
        x, wt, y = ctx.saved_tensors
        taps, length = wt.shape[0], y.shape[1]
        gy = torch.ops.aten.silu_backward(grad, y)  # [B, T, C]
        gx = gy * wt[taps - 1]  # x_s feeds y_{s + K - 1 - j} through tap j
        taps_grads = []
        for j in range(taps - 1):
            shift = min(taps - 1 - j, length)
            gx[:, : length - shift].addcmul_(gy[:, shift:], wt[j])
            taps_grads.append((x[:, : length - shift] * gy[:, shift:]).sum((0, 1)))
        taps_grads.append((x * gy).sum((0, 1)))
        return gx, torch.stack(taps_grads, dim=1).unsqueeze(1)


class ShortConv(nn.Module):
    """Causal depthwise conv over time followed by SiLU; ``kernel_size`` 0 = SiLU only.

    forward(x: [B, T, C]) -> [B, T, C]; output t sees inputs t-kernel_size+1 .. t.
    The weight lives in ``self.conv`` (an nn.Conv1d, whose call ``reference`` makes); forward
    runs the same math with a cheaper backward (``_CausalConvSiLU``).
    """

    def __init__(self, channels: int, kernel_size: int):
        super().__init__()
        self.kernel_size = kernel_size
        self.conv = (
            nn.Conv1d(channels, channels, kernel_size, groups=channels, padding=kernel_size - 1, bias=False)
            if kernel_size > 0
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv is None:
            return F.silu(x)
        return _CausalConvSiLU.apply(x, self.conv.weight)

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """The same map through nn.Conv1d (the obviously-right form the tests compare with)."""
        if self.conv is not None:
            length = x.shape[1]
            x = self.conv(x.transpose(1, 2))[..., :length].transpose(1, 2)  # left padding only
        return F.silu(x)


class SwiGLU(nn.Module):
    """down(SiLU(gate(x)) * up(x)); hidden width = round(ratio * D) to a multiple of 8.

    forward(x: [B, T, D]) -> [B, T, D].
    """

    def __init__(self, d_model: int, ratio: float):
        super().__init__()
        hidden = max(8, 8 * round(ratio * d_model / 8))
        self.gate = nn.Linear(d_model, hidden, bias=False)
        self.up = nn.Linear(d_model, hidden, bias=False)
        self.down = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class _L2Normalize(torch.autograd.Function):
    """x / max(||x||, eps) over the last axis with a hand-written backward,
    g -> (g - y <g, y>) / ||x|| (g / eps where the norm is clamped): one pass where autograd
    through F.normalize's norm, clamp and division takes several."""

    @staticmethod
    def forward(ctx, x: Tensor, eps: float) -> Tensor:
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
        inverse = norm.clamp_min(eps).reciprocal_()
        y = x * inverse
        ctx.save_for_backward(y, inverse, norm > eps)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        y, inverse, unclamped = ctx.saved_tensors
        along = (grad * y).sum(-1, keepdim=True).mul_(unclamped)
        return (grad - y * along).mul_(inverse), None


def l2_normalize(x: Tensor, eps: float = 1e-12) -> Tensor:
    """F.normalize(x, dim=-1, eps=eps) with a cheaper backward. x: [..., K] -> [..., K]."""
    return _L2Normalize.apply(x, eps)


_ROTARY_TABLES: dict[tuple, tuple[Tensor, Tensor]] = {}
"""(half, base, device, dtype, inference mode) -> the longest cos, sin tables built so far."""


def _build_rotary_tables(length: int, half: int, device: torch.device, dtype: torch.dtype,
                         base: float) -> tuple[Tensor, Tensor]:
    """cos and sin of ``t * base**(-i / half)``: [T, half] each, computed in float32 (float64 for
    float64) and cast to ``dtype``."""
    wide = torch.float64 if dtype == torch.float64 else torch.float32
    inv_freq = base ** (-torch.arange(half, device=device, dtype=wide) / half)
    angle = torch.arange(length, device=device, dtype=wide)[:, None] * inv_freq  # [T, half]
    return angle.cos().to(dtype), angle.sin().to(dtype)


def rotary_tables(length: int, half: int, device: torch.device, dtype: torch.dtype,
                  base: float = 10000.0) -> tuple[Tensor, Tensor]:
    """The rotary cos, sin tables, [T, half] each; cached per (half, base, device, dtype).

    The row of position t does not depend on T, so one table (the longest asked for) serves every
    shorter length as a slice. Tables made under inference mode are kept apart (autograd may not
    save those); under torch.compile they are built in the graph, not cached.
    """
    if torch.compiler.is_compiling():
        return _build_rotary_tables(length, half, device, dtype, base)
    key = (half, base, device, dtype, torch.is_inference_mode_enabled())
    tables = _ROTARY_TABLES.get(key)
    if tables is None or tables[0].shape[0] < length:
        tables = _build_rotary_tables(length, half, device, dtype, base)
        _ROTARY_TABLES[key] = tables
    return tables[0][:length], tables[1][:length]


def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Pairs (x_i, x_{i + half}) of the first 2 * half channels rotated by the angle (cos, sin)."""
    half = cos.shape[-1]
    x1, x2, rest = x[..., :half], x[..., half : 2 * half], x[..., 2 * half :]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos, rest], dim=-1)


class _Rotary(torch.autograd.Function):
    """_rotate with the backward a rotation by the opposite angle (the map is orthogonal): one
    pass over the gradient, where autograd through the slices and the cat fills zero tensors."""

    @staticmethod
    def forward(ctx, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        ctx.save_for_backward(cos, sin)
        return _rotate(x, cos, sin)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        cos, sin = ctx.saved_tensors
        return _Rotary.apply(grad, cos, -sin), None, None


def rotary(x: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotary position embedding (half-split pairs) of the first ``2 * (K // 2)`` channels.

    x: [B, T, ..., K] -> same shape (e.g. [B, T, H, K], or [B, T, 2, H, K] for q and k at once);
    position t is the index along T. Tables come from ``rotary_tables`` (cached).
    """
    length, dim = x.shape[1], x.shape[-1]
    half = dim // 2
    if half == 0:
        return x
    cos, sin = rotary_tables(length, half, x.device, x.dtype, base)
    shape = (1, length) + (1,) * (x.dim() - 3) + (half,)
    return _Rotary.apply(x, cos.view(shape), sin.view(shape))


def rotary_reference(x: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotary position embedding written out, tables rebuilt on every call, autograd's backward
    (the obviously-right form the tests compare ``rotary`` with). x: [B, T, H, K]."""
    length, dim = x.shape[1], x.shape[-1]
    half = dim // 2
    if half == 0:
        return x
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    inv_freq = base ** (-torch.arange(half, device=x.device, dtype=dtype) / half)
    angle = torch.arange(length, device=x.device, dtype=dtype)[:, None] * inv_freq  # [T, half]
    cos = angle.cos()[None, :, None, :].to(x.dtype)  # [1, T, 1, half]
    sin = angle.sin()[None, :, None, :].to(x.dtype)
    x1, x2, rest = x[..., :half], x[..., half : 2 * half], x[..., 2 * half :]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos, rest], dim=-1)
