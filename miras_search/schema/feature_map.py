"""Atlas's feature maps on keys and queries (Behrouz et al. 2025, arXiv 2505.23735, Section 3.1).

The memory stores ``M(phi(k))`` and is read at ``phi(q)`` (a field of the matrix and MLP
memories, ``memory.feature_map``). One class per map, each registered by its ``kind``:

- ``identity``: phi(x) = x (every Miras model).
- ``polynomial``: the map of Eq. 5, phi(q)^T phi(k) = sum_{i=0}^{p} a_i (q^T k)^i, with learned
  coefficients a_i, initialised at a_i = 1 / i! (the Taylor series of exp, Eq. 4).
- ``exponential``: phi*, the exponential kernel's map of Eq. 22, [1, x, x^{(x)2} / sqrt(2!), ...]
  with exp(q^T k) = phi*(q)^T phi*(k) (Eq. 23), truncated after degree p (its Taylor terms are
  fixed, a_i = 1 / i!).

A degree-i block is x's i-fold tensor power, stored once per monomial (the symmetric tensor):
sqrt(i! / prod(m_j!)) x^m for each multi-index m with |m| = i, so that the blocks' inner products
are exactly (q^T k)^i with C(K + i - 1, i) features instead of K^i. The degree-1 block comes first
(an MLP memory's residual reads it, see ``Network``), then the constant, then degrees 2 .. p.

The paper lets a_i be any real; here sqrt(a_i) is learned (c_i, initialised at 1 / sqrt(i!)), so
that keys and queries go through one real feature map and a_i = c_i^2 >= 0.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from miras_search.schema._base import AxisOption

if TYPE_CHECKING:
    from torch import Tensor

MAX_FEATURES = 4096
"""Largest feature width per head: the memory's key width (a matrix memory holds V x features)."""


@functools.lru_cache(maxsize=32)
def monomials(key_dim: int, degree: int) -> tuple[list[tuple[int, ...]], list[int]]:
    """The multi-indices (as sorted index tuples) of the degree-``degree`` monomials of a
    ``key_dim``-vector and each one's prod(m_j!): its weight is w_m = sqrt(degree! / prod(m_j!)),
    so that sum_m w_m^2 q^m k^m = (q^T k)^degree. Integers, so that a model keeps them as buffers
    that no dtype cast rounds (the weights are formed in the input's dtype).

    Plain loops, in itertools.combinations_with_replacement's order."""
    indices: list[tuple[int, ...]] = [()]
    for _ in range(degree):
        indices = [(*index, i) for index in indices for i in range(index[-1] if index else 0, key_dim)]
    denominators = []
    for index in indices:
        counts: dict[int, int] = {}
        for i in index:
            counts[i] = counts.get(i, 0) + 1
        denominator = 1
        for count in counts.values():
            denominator *= math.factorial(count)
        denominators.append(denominator)
    return indices, denominators


def feature_width(key_dim: int, degree: int) -> int:
    """Features of a map of degree ``degree`` (constant, degree 1 and up to ``degree``)."""
    return 1 + sum(math.comb(key_dim + i - 1, i) for i in range(1, degree + 1))


class FeatureMap(AxisOption):
    """Base of every feature map; a subclass with its own ``kind`` registers itself."""

    registry: ClassVar[dict[str, type[FeatureMap]]] = {}
    axis: ClassVar[str] = "memory.feature_map"
    role: ClassVar[str] = "`phi` on keys and queries (Atlas)"
    learned: ClassVar[bool] = False
    """Whether the map has learned coefficients (one per degree and head)."""

    def width(self, key_dim: int) -> int:
        """The feature width per head for keys of ``key_dim``."""
        return key_dim

    def initial_coefficients(self) -> list[float]:
        """c_i = sqrt(a_i) for i = 0 .. p at initialisation (a_i = 1 / i!)."""
        return []

    def monomial_tensors(self, key_dim: int) -> list[tuple[Tensor, Tensor]]:
        """What ``apply`` gathers for keys of ``key_dim``, as integer tensors a model keeps
        (buffers, moved with it): (index [M, d], prod(m_j!) [M]) per degree d >= 2; none here."""
        return []

    def apply(self, x: Tensor, coefficients: Tensor | None = None,
              tables: list[tuple[Tensor, Tensor]] | None = None) -> Tensor:
        """phi(x): x [..., H, K] -> [..., H, width(K)]; ``coefficients`` [H, p + 1] (c_i);
        ``tables``: ``monomial_tensors(K)`` on x's device (else built and copied per call)."""
        return x


class IdentityMap(FeatureMap):
    """phi(x) = x."""

    kind: Literal["identity"] = "identity"
    summary: ClassVar[str] = "phi(x) = x (every Miras model)"

    @classmethod
    def examples(cls) -> list[dict]:
        return []  # the memory's own keys: no rule of its own (its points are the Miras ones)


class _Polynomial(FeatureMap):
    degree: int = Field(2, ge=1, le=3, description="p, the highest power of the keys' tensor.")

    def width(self, key_dim: int) -> int:
        return feature_width(key_dim, self.degree)

    def initial_coefficients(self) -> list[float]:
        return [1.0 / math.sqrt(math.factorial(i)) for i in range(self.degree + 1)]

    def label(self) -> str:
        return f"{self.kind} (p={self.degree})"

    @classmethod
    def examples(cls) -> list[dict]:
        return []  # applied by the block before the memory; tested on its own

    def monomial_tensors(self, key_dim: int) -> list[tuple[Tensor, Tensor]]:
        import torch

        return [tuple(map(torch.tensor, monomials(key_dim, degree))) for degree in range(2, self.degree + 1)]

    def apply(self, x: Tensor, coefficients: Tensor | None = None,
              tables: list[tuple[Tensor, Tensor]] | None = None) -> Tensor:
        import torch

        if coefficients is None:  # fixed Taylor terms
            coefficients = x.new_tensor(self.initial_coefficients()).expand(x.shape[-2], -1)
        c = coefficients.to(x.dtype)  # [H, p + 1]
        if tables is None:  # built and copied to x's device per call (a model passes its buffers)
            tables = [(index.to(x.device), counts.to(x.device)) for index, counts in self.monomial_tensors(x.shape[-1])]
        blocks = [x * c[:, 1:2], c[:, 0:1].expand(*x.shape[:-1], 1)]
        for degree, (index, counts) in enumerate(tables, start=2):  # index [M, degree], counts [M]
            weight = (math.factorial(degree) / counts.to(x.dtype)).sqrt()  # sqrt(d! / prod(m_j!))
            block = x[..., index].prod(-1) * weight  # [..., H, M]
            blocks.append(block * c[:, degree:degree + 1])
        return torch.cat(blocks, dim=-1)


class PolynomialMap(_Polynomial):
    """Eq. 5: phi_p with learned coefficients a_i (per head), a_i = 1 / i! at init."""

    kind: Literal["polynomial"] = "polynomial"
    summary: ClassVar[str] = "degree p, learned coefficients (Eq. 5)"
    learned: ClassVar[bool] = True


class ExponentialMap(_Polynomial):
    """Eq. 22: phi*, the exponential kernel's feature map, truncated after degree p."""

    kind: Literal["exponential"] = "exponential"
    summary: ClassVar[str] = "phi*, exp's Taylor terms to degree p (Eq. 22)"


FeatureMapOption = FeatureMap.union()
FEATURE_MAP_KINDS = FeatureMap.kinds()
