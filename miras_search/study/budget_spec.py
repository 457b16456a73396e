"""The ``budget:`` block of a study file: every point at the trial budget, or successive halving.

```yaml
budget: {schedule: successive_halving, eta: 3, rungs: 3}   # tokens x1, x3, x9
budget:                                                     # or promotions that grow the model too
  schedule: successive_halving
  eta: 3
  promotions:                       # each: x the point's own base run (not x the previous one)
    - {tokens_x: 3}                 # the best 1/3: 3x the tokens
    - {tokens_x: 4, d_model_x: 2}   # the best 1/3 of those: twice as wide, 4x the tokens
```

Plain pydantic (no torch): the study file validates it with the rest of the file; the halving
scheduler (study.halving) reads ``schedule()``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from miras_search.schema._base import Schema

MAX_PROMOTIONS = 7
DEFAULT_RUNGS = 3


class Promotion(Schema):
    """One promotion of successive halving: the promoted points train again, this many times larger
    than their own base run. Width grows by whole factors, with the heads (each head keeps its
    width), so that every point's grown block is valid and every point gets the same level."""

    tokens_x: float = Field(1.0, ge=1.0, le=1.0e6, description="Training tokens, x the trial's.")
    d_model_x: int = Field(1, ge=1, le=16, description="Width d_model and heads, x the point's.")
    n_layers_x: int = Field(1, ge=1, le=64, description="Layers, x the point's.")

    @property
    def level(self) -> float:
        """The fidelity level (study.fidelity): tokens x 12 L d^2 over the base run's."""
        return self.tokens_x * self.n_layers_x * self.d_model_x ** 2

    def describe(self) -> str:
        parts = [f"{self.tokens_x:g}x the tokens"]
        if self.d_model_x > 1:
            parts.append(f"{self.d_model_x}x the width")
        if self.n_layers_x > 1:
            parts.append(f"{self.n_layers_x}x the layers")
        return ", ".join(parts)


class BudgetSpec(Schema):
    """How a study spends its budget: every point at the trial budget (``fixed``), or successive
    halving: the ``trials`` points at the trial budget, then the best 1/eta of them promoted to a
    larger run, the best 1/eta of those to a larger one still, and so on. ``rungs: R`` promotes to
    eta x the tokens, eta^2 x, ... (R budgets in all); ``promotions`` lists each promotion's growth
    in tokens, width and depth instead. Promoted runs are stored as higher-fidelity results of
    their points (``miras best`` ranks by them, the sampler learns from them)."""

    schedule: Literal["fixed", "successive_halving"] = "fixed"
    eta: int = Field(3, ge=2, le=16, description="successive_halving: keep the best 1/eta at each promotion.")
    rungs: int | None = Field(None, ge=2, le=MAX_PROMOTIONS + 1, description="successive_halving: budgets "
                              "tokens, eta x tokens, ... eta^(rungs-1) x tokens (default 3; or 'promotions').")
    promotions: list[Promotion] | None = Field(
        None, min_length=1, max_length=MAX_PROMOTIONS,
        description="successive_halving: each promotion's run, x the point's base run (tokens_x, "
        "d_model_x, n_layers_x); each must be larger (tokens x layers x width^2) than the one before.")

    @field_validator("promotions")
    @classmethod
    def _growing(cls, promotions: list[Promotion] | None) -> list[Promotion] | None:
        previous = 1.0
        for index, step in enumerate(promotions or []):
            if step.level <= previous:
                before = "the base run (1)" if index == 0 else f"promotion {index - 1}'s ({previous:g})"
                raise ValueError(
                    f"promotion {index} ({step.describe()}) is {step.level:g}x the base run's size and "
                    f"budget (tokens_x x n_layers_x x d_model_x^2), not more than {before}: each "
                    "promotion must train larger runs than the one before")
            previous = step.level
        return promotions

    @model_validator(mode="after")
    def _one_ladder(self) -> BudgetSpec:
        if self.promotions is not None and self.rungs is not None:
            raise ValueError("budget: give 'rungs' (tokens x eta per promotion) or 'promotions', not both")
        if self.promotions is not None and self.schedule != "successive_halving":
            raise ValueError("budget.promotions: only with 'schedule: successive_halving'")
        return self

    def schedule_of(self) -> list[Promotion]:
        """The promotions in order (``rungs: R`` gives eta^k x the tokens for k = 1 .. R - 1)."""
        if self.promotions is not None:
            return list(self.promotions)
        return [Promotion(tokens_x=float(self.eta ** k)) for k in range(1, self.rungs or DEFAULT_RUNGS)]
