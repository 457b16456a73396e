"""The ``scale:`` block of a study file: which points to scale and the ladder they climb.

```yaml
scale:
  points: [transformer, gated_deltanet, moneta]   # presets or point files; and/or
  top: 3                                          # the study's best 3 points
  rungs:                                          # one model size / context / budget each
    - {d_model: 32, n_layers: 2, seq_len: 64, tokens: 8192}
    - {d_model: 48, n_layers: 2, seq_len: 64, tokens: 16384}
    - {d_model: 64, n_layers: 2, seq_len: 64, tokens: 32768}
  target_flops: 1.0e15                            # rank by the loss extrapolated to this compute
```

Plain pydantic (no torch): the study file validates it with the rest of the file; the
``miras_search.scale`` package, a layer above the study, trains and fits it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator, model_validator

from miras_search.paths import input_places
from miras_search.schema._base import Schema
from miras_search.schema.train import SEED_MAX


def scale_point_file(name: str, base: Path | tuple[Path, ...]) -> Path | None:
    """The point file a ``scale.points`` entry that is not a preset names: the path as written
    when it is absolute (``~`` read as the home folder), else beside the study file (``base``:
    its folder, or ``paths.input_folders``), else from the working directory, as the study's
    other inputs are read; None when that is no file."""
    folders = (base,) if isinstance(base, Path) else base
    return next((path for path in input_places(name, folders) if path.is_file()), None)


def not_a_scale_point(name: str, presets: list[str]) -> str:
    """Why a ``scale.points`` entry names nothing `miras scale` can train."""
    return f"'{name}' is neither a preset ({', '.join(presets)}) nor a point file (.yaml)"


MIN_RUNGS = 2
"""A power law needs two rungs (a pure power law, no floor) and three to fit its floor ``e``."""


class Rung(Schema):
    """One rung of the ladder: the model's width and depth, its context and its token budget."""

    d_model: int = Field(..., ge=8, le=16384, description="Model width.")
    n_layers: int = Field(..., ge=1, le=256, description="Layers.")
    n_heads: int | None = Field(None, ge=1, le=256, description="Heads (default: d_model // head_dim).")
    head_dim: int = Field(32, ge=2, le=1024, description="Per-head width when n_heads is not given.")
    seq_len: int = Field(64, ge=2, le=1_048_576, description="Training context in tokens.")
    tokens: int = Field(..., ge=1, description="Training tokens of this rung.")

    @model_validator(mode="after")
    def _heads(self) -> Rung:
        heads = self.heads
        if self.d_model % heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {heads} "
                             f"(give n_heads, or a head_dim that divides d_model)")
        return self

    @property
    def heads(self) -> int:
        return self.n_heads if self.n_heads is not None else max(1, self.d_model // self.head_dim)

    @property
    def key(self) -> str:
        """The rung's identity in the study (what a resumed run looks for)."""
        return f"d{self.d_model}-L{self.n_layers}-H{self.heads}-T{self.seq_len}-N{self.tokens}"


DEFAULT_RUNGS = (
    Rung(d_model=32, n_layers=2, seq_len=64, tokens=8192),
    Rung(d_model=48, n_layers=2, seq_len=64, tokens=16384),
    Rung(d_model=64, n_layers=2, seq_len=64, tokens=32768),
)
"""A ladder that a 2-core CPU climbs in a few minutes per point (tokens grow with the model, as
compute-optimal budgets do)."""


class ScaleSpec(Schema):
    """Points trained on a ladder of sizes, fitted against compute and ranked at a target."""

    points: list[str] = Field(default_factory=list,
                              description="Preset names or point files (.yaml, relative to the study file).")
    top: int = Field(0, ge=0, le=1000, description="Also the study's best N points (as `miras best`).")
    rungs: list[Rung] = Field(default_factory=lambda: [r.model_copy() for r in DEFAULT_RUNGS],
                              description=f"The ladder: at least {MIN_RUNGS} rungs.")
    metric: str = Field("val_loss", min_length=1, description="The loss fitted against compute (lower is better).")
    target_flops: float | None = Field(None, gt=0, description="Rank by the fitted loss at this training "
                                       "compute (default: 10x the largest rung's).")
    seeds: list[Annotated[int, Field(ge=0, le=SEED_MAX)]] = Field(default_factory=lambda: [0], min_length=1)
    batch_size: int | None = Field(None, ge=1, le=4096, description="Default: the study's trial batch size.")

    @field_validator("rungs")
    @classmethod
    def _ladder(cls, rungs: list[Rung]) -> list[Rung]:
        if len(rungs) < MIN_RUNGS:
            raise ValueError(f"a ladder needs at least {MIN_RUNGS} rungs to fit a power law "
                             f"(3 or more to fit its floor), got {len(rungs)}")
        keys = [r.key for r in rungs]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:
            raise ValueError(f"rung {twice[0]} is listed twice")
        return rungs

    @field_validator("points")
    @classmethod
    def _unique(cls, points: list[str]) -> list[str]:
        if len(set(points)) != len(points):
            raise ValueError("a point is listed twice")
        return points
