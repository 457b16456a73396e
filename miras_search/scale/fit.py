"""Loss against training compute: a power law per point, ``L(C) = e + a (C / C0)^(-b)``.

``C0`` is the smallest compute fitted (so ``a`` is the loss above the floor at the first rung
and the fit is well conditioned whatever the units). Three or more rungs fit ``a``, ``b`` and
the floor ``e`` with ``scipy.optimize.curve_fit`` (bounds ``a, b > 0``, ``0 <= e < min L``);
two rungs fit a pure power law (``e = 0``: a line in log-log space), which extrapolates more
optimistically; fewer is an error that says so.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from miras_search.errors import MirasError

MIN_FLOOR_POINTS = 3


class FitError(MirasError):
    """Too few (or unusable) rungs for a power law."""


@dataclass(frozen=True)
class PowerLaw:
    """``L(C) = e + a (C / c0)^(-b)``; ``form`` is "floor" (3 parameters) or "pure" (e = 0)."""

    a: float
    b: float
    e: float
    c0: float
    form: str
    rmse: float
    points: int

    def __call__(self, compute: float | np.ndarray) -> float | np.ndarray:
        return self.e + self.a * (np.asarray(compute, dtype=float) / self.c0) ** (-self.b)

    def describe(self) -> str:
        floor = f"{self.e:.4g} + " if self.form == "floor" else ""
        return f"L(C) = {floor}{self.a:.4g} (C / {self.c0:.3g})^-{self.b:.3g}  ({self.points} rungs, rmse {self.rmse:.2g})"


def _model(x: np.ndarray, a: float, b: float, e: float) -> np.ndarray:
    return e + a * x ** (-b)


def _pure(x: np.ndarray, loss: np.ndarray) -> tuple[float, float]:
    """Least squares line through (log x, log L): returns (a, b) of ``L = a x^-b``."""
    slope, intercept = np.polyfit(np.log(x), np.log(loss), 1)
    return float(math.exp(intercept)), float(-slope)


def fit_power_law(compute: Sequence[float], loss: Sequence[float], label: str = "the point") -> PowerLaw:
    """Fit ``loss`` against ``compute`` (FLOPs); FitError when fewer than 2 usable rungs.

    Rungs with a non-finite or non-positive loss or compute are left out (a diverged rung).
    """
    c = np.asarray(compute, dtype=float)
    y = np.asarray(loss, dtype=float)
    keep = np.isfinite(c) & np.isfinite(y) & (c > 0) & (y > 0)
    c, y = c[keep], y[keep]
    if len(np.unique(c)) < 2:
        raise FitError(f"{label} has {len(np.unique(c))} finished rung(s) with a finite loss at distinct "
                       "compute: a power law needs at least 2 (3 to fit its floor). Add rungs to the "
                       "ladder, or run `miras scale` again to train the missing ones.")
    order = np.argsort(c)
    c, y = c[order], y[order]
    c0 = float(c[0])
    x = c / c0
    if len(np.unique(c)) < MIN_FLOOR_POINTS:
        a, b = _pure(x, y)
        return PowerLaw(a, b, 0.0, c0, "pure", _rmse(x, y, a, b, 0.0), len(c))
    from scipy.optimize import curve_fit

    e0 = 0.5 * float(y.min())
    a0, b0 = _pure(x, np.maximum(y - e0, 1e-12))
    upper_e = float(y.min()) * (1 - 1e-9)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            params, _ = curve_fit(_model, x, y, p0=[max(a0, 1e-9), min(max(b0, 1e-6), 9.0), e0],
                                  bounds=([1e-12, 1e-9, 0.0], [np.inf, 10.0, upper_e]), maxfev=20000)
    except (RuntimeError, ValueError):  # no convergence: the pure power law still describes the rungs
        a, b = _pure(x, y)
        return PowerLaw(a, b, 0.0, c0, "pure", _rmse(x, y, a, b, 0.0), len(c))
    a, b, e = (float(v) for v in params)
    return PowerLaw(a, b, e, c0, "floor", _rmse(x, y, a, b, e), len(c))


def _rmse(x: np.ndarray, y: np.ndarray, a: float, b: float, e: float) -> float:
    return float(np.sqrt(np.mean((_model(x, a, b, e) - y) ** 2)))
