"""The sharpness c that keeps the step of the smooth surrogates of sign(x) and |x| (the paper's
Section 5.4: tanh(c x), sqrt(x^2 + eps); ``miras_search.primitives``) a descent step.

Why a bound on c, per error coordinate. A gradient step moves the prediction of the key it was
taken at by ``-s G(e)`` per coordinate, with G the bias's gradient in the prediction and
``s = eta * kappa``: the step size times the memory's curvature along it (kappa = ||k||^2 = 1 for
a matrix memory with l2-normalised keys). The token's own loss then falls iff the error does not
overshoot: ``0 < s G(e) / e < 2``.

- Yaad's l1 branch, exact ``G = delta sign(e)``: ``s G / e = s delta / |e|``, a descent step only
  where ``|e| > s delta / 2``; near e = 0 it jumps across zero and back (oscillation, and the
  amplification of perturbations that a discontinuous step brings). Smooth, ``G = delta tanh(c e)``:
  ``s G / e = s delta tanh(c |e|) / |e|``, which is at most ``s delta c`` (its value at e -> 0)
  and, as ``|tanh| < 1``, never more than the exact one. So the smooth step is a descent step
  wherever the exact one is, for every c; and everywhere, also near 0, iff ``s delta c < 2``.
  Taking c relative to the threshold, ``c = rho / delta`` (``sharpness_scale: threshold``),
  bounds the l1 branch's slope by ``rho``: with ``rho <= 1`` it is never steeper than the Huber
  loss's own l2 branch (slope 1), so the switch is a descent step at every error wherever its l2
  branch is (``s < 2``), whatever the threshold; ``rho = 1`` joins the two branches' slopes
  (``delta tanh(e / delta)`` is e for small coordinates and delta sign(e) for large ones).
- lp, ``G = p tanh(c e) (e^2 + eps)^((p-1)/2)`` against ``p sign(e) |e|^(p-1)``: tanh only shortens
  the step; ``sqrt(e^2 + eps)`` lengthens it by ``(1 + eps / e^2)^((p-1)/2)``, which matters only
  for ``|e| <~ sqrt(eps)``. There ``s G / e <= s p c (2 eps)^((p-1)/2)`` (tanh(c e) <= c e), so
  ``c < 2 / (s p (2 eps)^((p-1)/2))`` keeps the smooth step a descent step wherever the exact one
  is (``lp_sharpness_bound``): with eps = 1e-6 and s = 1, 3.3e5 at p = 3 (Moneta; the default
  c = 10 is far inside), 707 at p = 2, 35 at p = 1.5, 2 at p = 1 (where, as for Huber, any c keeps
  the exact form's descent region and the bound makes the step a descent step everywhere).

An MLP memory's curvature kappa along the step is not ||k||^2: behind a LayerNorm it is about
||h||^2 / sigma^2 (h the hidden activations, sigma the standard deviation the LayerNorm divides
by; ``MemoryRule.initial_stds`` sets both scales). The bounds hold with its kappa, which the step
parameterisation of the MLP memories has to keep near 1 for the same reason.
"""

from __future__ import annotations


def huber_sharpness_bound(step: float, delta: float) -> float:
    """The largest c with which the smooth l1 branch ``delta tanh(c e)`` is a descent step at every
    error for a step of ``step = eta * kappa``: ``2 / (step * delta)`` (strictly below it)."""
    return 2.0 / (step * delta)


def lp_sharpness_bound(step: float, p: float, eps: float) -> float:
    """A c below which the smooth lp step is a descent step wherever the exact one is, for a step
    of ``step = eta * kappa``: ``2 / (step p (2 eps)^((p-1)/2))`` (see the module docstring)."""
    return 2.0 / (step * p * (2.0 * eps) ** ((p - 1.0) / 2.0))
