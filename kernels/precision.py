"""Which precision the kernels' matrix products use (the ``PREC`` constexpr of their ``_mm``).

fp32 inputs take full fp32 products ("ieee"). bf16 inputs take bf16 operands (tensor cores,
fp32 accumulation) where that stays within 2e-2 of the float64 reference, and "tf32x3" (three
tf32 products: fp32-accurate, still on tensor cores) where the math amplifies rounding:

- a LayerNorm on the MLP memory's output: the output's mean cancels, and with it the leading
  digits of every product that feeds it (worst with kl retention, whose simplex rows make the
  outputs nearly equal: bf16 operands gave errors above 100% on memora);
- kl retention (log-space state) and the sharp biases (huber_switch, and huber_coordinate in
  the matrix kernel: their derivatives jump or scale by the sharpness).

Measured under the Triton interpreter with bf16 casts rounded to nearest even (as on a GPU),
T=37, K=16, hidden 64, every retention x bias x layer norm: without LayerNorm all but kl and
lq + huber_switch stayed under 1e-2; with it 21 of 28 configurations went past 2e-2.
"""

from __future__ import annotations

import torch

BF16, TF32X3, IEEE = 0, 1, 2

SHARP_BIASES = ("huber_switch", "huber_coordinate")


def matrix_precision(dtype: torch.dtype, bias_kind: str, kl: bool = False) -> int:
    """PREC of the matrix-memory kernel for inputs of ``dtype`` and this bias (``kl``: kl
    retention, whose softmax reads take fp32-accurate products, as the MLP kernel's)."""
    if dtype != torch.bfloat16:
        return IEEE
    return TF32X3 if kl or bias_kind in SHARP_BIASES else BF16


def mlp_precision(dtype: torch.dtype, layer_norm: bool, retention: str, bias_kind: str) -> int:
    """PREC of the MLP-memory kernel for inputs of ``dtype`` and this memory."""
    if dtype != torch.bfloat16:
        return IEEE
    if layer_norm or retention == "kl" or bias_kind == "huber_switch":
        return TF32X3
    return BF16


def products(precision: int) -> str:
    """'bf16', 'tf32x3' or 'fp32': the products a PREC makes (kernels.limits is keyed by it)."""
    return {BF16: "bf16", TF32X3: "tf32x3", IEEE: "fp32"}[precision]
