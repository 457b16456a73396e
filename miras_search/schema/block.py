"""The block around the memory and the language model's shape."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from miras_search.schema._base import Schema

LayerKind = Literal["memory", "swa", "attention"]


class Block(Schema):
    """Llama-style block: x -> RMSNorm -> token mixer -> + -> RMSNorm -> SwiGLU -> +.

    ``layer_pattern`` is repeated over ``n_layers`` (e.g. ``[memory, memory, memory, swa]`` puts
    sliding-window attention in every 4th layer). ``hybrid: samba`` runs memory then sliding-window
    attention inside every memory layer (the paper's "-H" variants).
    """

    d_model: int = Field(256, ge=8, le=16384)
    n_heads: int = Field(4, ge=1, le=256)
    n_layers: int = Field(4, ge=1, le=256)
    key_dim: int | None = Field(None, ge=2, le=1024, description="Per-head key dim (d_model / n_heads).")
    value_dim: int | None = Field(None, ge=2, le=1024, description="Per-head value dim (d_model / n_heads).")
    conv_size: int = Field(4, ge=0, le=16, description="Short causal depthwise conv on q, k, v; 0 = off.")
    qk_l2_norm: bool = True
    output_norm: bool = Field(True, description="Per-head RMSNorm on the memory output.")
    output_gate: bool = Field(True, description="SiLU output gate from a projection of x.")
    mlp_ratio: float = Field(2.75, ge=0.5, le=16.0, description="SwiGLU hidden width / d_model.")
    layer_pattern: list[LayerKind] = Field(default_factory=lambda: ["memory"], min_length=1)
    hybrid: Literal["none", "samba"] = "none"
    window: int = Field(256, ge=1, description="Window of the sliding-window attention layers.")
    tie_embeddings: bool = True
    vocab_size: int = Field(260, ge=2, le=1_000_000, description="Byte-level: 256 bytes + specials.")
    max_seq_len: int = Field(8192, ge=1, description="Longest sequence the model accepts.")

    @model_validator(mode="after")
    def _dims(self) -> Block:
        if (self.key_dim is None or self.value_dim is None) and self.d_model % self.n_heads:
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads}) "
                "unless key_dim and value_dim are given"
            )
        return self

    @property
    def head_k(self) -> int:
        return self.key_dim if self.key_dim is not None else self.d_model // self.n_heads

    @property
    def head_v(self) -> int:
        return self.value_dim if self.value_dim is not None else self.d_model // self.n_heads

    def layer_kinds(self) -> list[LayerKind]:
        """The kind of each of the ``n_layers`` layers (the pattern, repeated)."""
        return [self.layer_pattern[i % len(self.layer_pattern)] for i in range(self.n_layers)]
