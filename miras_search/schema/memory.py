"""Axis 1, memory architecture: what the associative memory M is."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from miras_search.schema._base import AxisOption
from miras_search.schema.feature_map import FeatureMapOption, IdentityMap

MemoryInit = Literal["auto", "zeros", "learned"]
FEATURE_MAP_HELP = (
    "Atlas's feature map phi on keys and queries (arXiv 2505.23735, Eqs. 5 and 22): 'identity', "
    "'polynomial' (degree p, learned coefficients) or 'exponential' (phi*, truncated)."
)
INIT_HELP = (
    "Initial memory state: 'zeros', 'learned' (a trained parameter per head), or 'auto' "
    "(zeros for linear memories with linear retention, learned otherwise)."
)


class MemoryArchitecture(AxisOption):
    """Base of every memory architecture; a subclass with its own ``kind`` registers itself."""

    registry: ClassVar[dict[str, type[MemoryArchitecture]]] = {}
    axis: ClassVar[str] = "memory"
    role: ClassVar[str] = "what `M` is"


class VectorMemory(MemoryArchitecture):
    """M(k) = w * k (element-wise, a diagonal matrix); state d_k. Needs d_k == d_v."""

    kind: Literal["vector"] = "vector"
    init: MemoryInit = Field("auto", description=INIT_HELP)


class MatrixMemory(MemoryArchitecture):
    """M(k) = W k; state d_v x d_k."""

    kind: Literal["matrix"] = "matrix"
    init: MemoryInit = Field("auto", description=INIT_HELP)
    feature_map: FeatureMapOption = Field(default_factory=IdentityMap, description=FEATURE_MAP_HELP)

    def label(self) -> str:
        return "matrix" if self.feature_map.kind == "identity" else f"matrix, {self.feature_map.label()}"


class MLPMemory(MemoryArchitecture):
    """M(x) = x + LN(W_L act(... act(W_1 x))): a residual MLP of ``depth`` linear layers; with a
    feature map, M(phi(k)) = phi_1(k) + LN(W_L act(... act(W_1 phi(k)))), phi_1 its degree-1 block
    (the hidden width stays expansion * the head's value dim)."""

    kind: Literal["mlp"] = "mlp"
    summary: ClassVar[str] = "depth, expansion, activation, LayerNorm"
    depth: int = Field(2, ge=2, le=8, description="Linear layers (depth 1 is the matrix memory).")
    expansion: int = Field(4, ge=1, le=16, description="Hidden width = expansion * head dim.")
    activation: Literal["gelu", "silu", "relu"] = "gelu"
    layer_norm: bool = Field(True, description="LayerNorm (no affine) on the MLP branch.")
    init: MemoryInit = Field("auto", description=INIT_HELP)
    feature_map: FeatureMapOption = Field(default_factory=IdentityMap, description=FEATURE_MAP_HELP)

    def label(self) -> str:
        phi = "" if self.feature_map.kind == "identity" else f", {self.feature_map.label()}"
        return f"mlp (L={self.depth}, e={self.expansion}{phi})"

    @classmethod
    def examples(cls) -> list[dict]:
        return [{"kind": "mlp", "depth": 2, "expansion": 2, "activation": "gelu"}]


class AttentionMemory(MemoryArchitecture):
    """No parameters: the memory is the set of (k, v) pairs; y = softmax(q K^T) V, with rotary
    positions on q and k.

    ``short_conv`` puts the Miras block's short causal conv + SiLU (``block.conv_size``) on q, k
    and v: softmax attention as a memory inside the block. Off, it is the Transformer++ layer
    (the paper's baseline: RoPE, RMSNorm, SwiGLU, no short conv), as the ``transformer`` preset.
    """

    kind: Literal["none"] = "none"
    summary: ClassVar[str] = "softmax / sliding-window attention"
    window: int | None = Field(
        None, ge=1, description="Sliding-window size in tokens; null for full causal attention."
    )
    short_conv: bool = Field(
        True,
        description="The block's short causal conv + SiLU on q, k, v (block.conv_size); false = "
        "the plain Transformer++ attention layer.",
    )

    @classmethod
    def examples(cls) -> list[dict]:
        return []  # softmax attention: no memory rule to compare forms of


Memory = MemoryArchitecture.union()
MEMORY_KINDS = MemoryArchitecture.kinds()
