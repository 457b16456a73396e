"""Shared pydantic base class for every schema of the toolkit."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Schema(BaseModel):
    """Strict, immutable base: unknown keys are errors, values are validated on assignment, and
    no number may be nan or +-inf (YAML's ``.nan`` / ``.inf``, or ``1e400``, which overflows):
    such a value would only surface later as a silently infeasible point or a confusing error."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)
