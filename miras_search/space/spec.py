"""The YAML search-space format, as pydantic models (so ``miras schema`` can publish it).

```yaml
type: space
name: deep-memory
preset: moneta              # the base point; params below override it
anchors: [moneta, yaad]     # named presets this space contains / a study measures first
params:
  memory:
    depth: {int: [2, 4]}
    activation: {choice: [gelu, silu]}
  bias:
    kind:
      choice:               # conditional sub-spaces: p exists only when the bias is lp
        l2: {}
        lp: {p: {float: [1.0, 4.0], step: 0.5}}
  one_of:                   # whole alternative sub-trees
    fast: {train: {chunk_size: 64}}
    exact: {train: {chunk_size: 16}}
constraints:
  - when: {memory.kind: mlp}
    forbid: {retention.kind: kl, bias.kind: dot}
```
A node is a fixed value, ``{choice: [...]}``, ``{choice: {option: {siblings...}}}``,
``{int: [lo, hi], step, log}``, ``{float: [lo, hi], step, log}``, or a nested mapping;
the key ``one_of`` in any mapping picks one of several sub-trees.
"""

from __future__ import annotations

import json
import math
import re
import typing
from typing import Annotated, Any, Literal, Union

from pydantic import ConfigDict, Discriminator, Field, Tag, field_validator, model_validator
from typing_extensions import TypeAliasType

from miras_search.errors import did_you_mean
from miras_search.presets import PRESET_AXES
from miras_search.schema._base import Schema

Scalar = Union[str, int, float, bool, None]  # noqa: UP007 - pydantic needs the runtime union
Fixed = Union[Scalar, list[Any]]  # noqa: UP007


class Choice(Schema):
    """A categorical choice; as a mapping, each option carries the sibling keys it enables."""

    choice: list[Fixed] | dict[Scalar, dict[str, ParamNode] | None]

    @field_validator("choice")
    @classmethod
    def _not_empty(cls, value: Any) -> Any:
        if len(value) == 0:
            raise ValueError("'choice' must list at least one option")
        options = list(value)
        if len({repr(o) for o in options}) != len(options):
            raise ValueError(f"'choice' lists an option twice: {options}")
        # Python (and Optuna's categorical distribution) takes 1, 1.0 and true for one value
        equal = [(a, b) for i, a in enumerate(options) for b in options[i + 1:] if a == b]
        if equal:
            a, b = equal[0]
            raise ValueError(f"'choice' options {a!r} and {b!r} are the same value to Optuna "
                             f"(a number and a boolean, or an int and a float); keep one: {options}")
        return value

    @property
    def options(self) -> list[Any]:
        return list(self.choice)

    def branch(self, option: Any) -> dict[str, ParamNode]:
        """Sibling parameters that exist only when ``option`` is chosen."""
        if isinstance(self.choice, dict):
            return self.choice[option] or {}
        return {}


class _Range(Schema):
    # non-finite ends reach ``_check``, whose message names both ends of the range
    model_config = ConfigDict(allow_inf_nan=True)  # merged with Schema's config

    log: bool = Field(False, description="Sample on a log scale (needs low > 0).")

    def _check(self, low: float, high: float, step: float | None) -> None:
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ValueError(f"the range's ends must be finite numbers, got [{low}, {high}]")
        if step is not None and not math.isfinite(step):
            raise ValueError(f"'step' must be a finite positive number, got {step}")
        if low > high:
            raise ValueError(f"the range's low end {low} is above its high end {high}")
        if self.log and low <= 0:
            raise ValueError(f"a log range needs a positive low end, got {low}")
        if self.log and step not in (None, 1):
            raise ValueError("a range cannot have both 'log: true' and a 'step'")
        if step is not None and step <= 0:
            raise ValueError(f"'step' must be positive, got {step}")
        if step is not None and high > low:
            _check_step_fits(low, high, step)


def _check_step_fits(low: float, high: float, step: float) -> None:
    """The grid of ``step`` from ``low`` must reach ``high``: Optuna would otherwise shrink the
    range to the last grid point with only a warning, so the space would not be what it says."""
    if step > high - low:
        raise ValueError(f"'step' {step} is larger than the range [{low}, {high}]; give a step "
                         f"of at most {high - low:g}, or a choice")
    steps = (high - low) / step
    if abs(steps - round(steps)) > 1e-9 * max(1.0, steps):
        last = low + math.floor(steps + 1e-9) * step
        raise ValueError(f"'step' {step} does not divide the range [{low}, {high}]: its grid would "
                         f"end at {last:g}; make the high end {last:g} (or {last + step:g}), or "
                         "change the step")


class IntRange(_Range):
    """Integers in [low, high] (inclusive), every ``step``."""

    int: tuple[int, int]
    step: int = 1

    @model_validator(mode="after")
    def _valid(self) -> IntRange:
        self._check(*self.int, self.step)
        return self


class FloatRange(_Range):
    """Floats in [low, high], optionally on a grid of ``step``."""

    float: tuple[float, float]
    step: float | None = None

    @model_validator(mode="after")
    def _valid(self) -> FloatRange:
        self._check(*self.float, self.step)
        return self


_RANGE_KEYS = ("choice", "int", "float")


def _node_tag(value: Any) -> str:
    # Tags are bracketed so that they never collide with keys of the YAML (error paths drop them).
    if isinstance(value, dict):
        for key in _RANGE_KEYS:
            if key in value:
                return f"<{key}>"
        return "<mapping>"
    return "<fixed>"


ParamNode = TypeAliasType(
    "ParamNode",
    Annotated[
        Union[  # noqa: UP007
            Annotated[Choice, Tag("<choice>")],
            Annotated[IntRange, Tag("<int>")],
            Annotated[FloatRange, Tag("<float>")],
            Annotated[dict[str, "ParamNode"], Tag("<mapping>")],
            Annotated[Fixed, Tag("<fixed>")],
        ],
        Discriminator(_node_tag),
    ],
)
Choice.model_rebuild()

Operator = Literal["in", "not_in", "min", "max"]
OPERATORS: tuple[str, ...] = typing.get_args(Operator)
Test = Union[Scalar, dict[Operator, Any]]  # noqa: UP007
_TEST_SHAPES = ("a value (equality), or a mapping of operators: {in: [...]} / {not_in: [...]} "
                "(lists of values), {min: n} / {max: n} (numbers, bounds included)")


def _flow(value: Any) -> str:
    """``value`` as YAML's flow style writes it: a plain word unquoted, anything else as JSON."""
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z_][\w.-]*", value) \
            and value not in ("true", "false", "null", "yes", "no", "on", "off"):
        return value
    return json.dumps(value)


def _test_problem(test: Any) -> str | None:
    """What is wrong with the shape of one constraint test, or None (operators' values are
    checked in checks.py, with the YAML line)."""
    if isinstance(test, list):
        return (f"a test is {_TEST_SHAPES}; got a list {test!r}: to match any of several values "
                f"write {{in: [{', '.join(_flow(item) for item in test)}]}}")
    if isinstance(test, dict):
        unknown = [key for key in test if key not in OPERATORS]
        if unknown:
            key = unknown[0]
            return (f"'{key}' is not an operator of a test{did_you_mean(key, OPERATORS)}; "
                    f"a test is {_TEST_SHAPES}")
        return None
    if test is not None and not isinstance(test, str | int | float | bool):
        return f"a test is {_TEST_SHAPES}; got {test!r}"
    return None


class Constraint(Schema):
    """A declarative rule over dotted paths of the point (no code is evaluated).

    ``when`` (optional) selects the points the rule applies to; then every ``require`` test must
    hold, or not all ``forbid`` tests may hold at once. A test is a value (equality) or a mapping
    of ``in`` / ``not_in`` (lists), ``min`` / ``max`` (numbers).
    """

    when: dict[str, Test] = Field(default_factory=dict)
    require: dict[str, Test] = Field(default_factory=dict)
    forbid: dict[str, Test] = Field(default_factory=dict)
    message: str | None = Field(None, description="Shown when the rule rejects a point.")

    @field_validator("when", "require", "forbid", mode="before")
    @classmethod
    def _test_shapes(cls, value: Any) -> Any:
        """One readable line per badly shaped test (not one per member of the ``Test`` union),
        led by the test's dotted path so that the problem names it."""
        if not isinstance(value, dict):
            return value
        found = [(path, _test_problem(test)) for path, test in value.items()]
        rules = [f"{path}: {message}" for path, message in found if message is not None]
        if rules:
            raise ValueError("\n".join(rules))
        return value

    @model_validator(mode="after")
    def _one_rule(self) -> Constraint:
        if bool(self.require) == bool(self.forbid):
            raise ValueError("a constraint needs exactly one of 'require' or 'forbid'")
        return self

    def describe(self) -> str:
        if self.message:
            return self.message
        when = f"when {self.when} " if self.when else ""
        return f"{when}{'require' if self.require else 'forbid'} {self.require or self.forbid}"


class SpaceFile(Schema):
    """A search space over ModelPoint: a base point, parameters to search, constraints."""

    type: Literal["space"] = "space"
    name: str = Field(..., min_length=1)
    description: str = ""
    preset: str | None = Field(None, description="Named preset used as the base point.")
    base: dict[str, Any] = Field(
        default_factory=dict, description="Fixed point fields applied over the preset."
    )
    anchors: list[str] = Field(default_factory=list, description="Named presets of this space.")
    params: dict[str, ParamNode] = Field(default_factory=dict)
    constraints: list[Constraint] = Field(default_factory=list)

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str | None) -> str | None:
        if value is not None and value not in PRESET_AXES:
            raise ValueError(f"unknown preset '{value}'; known presets: {', '.join(PRESET_AXES)}")
        return value

    @field_validator("anchors")
    @classmethod
    def _known_anchors(cls, value: list[str]) -> list[str]:
        unknown = [name for name in value if name not in PRESET_AXES]
        if unknown:
            raise ValueError(
                f"unknown preset(s) {', '.join(unknown)}; known presets: {', '.join(PRESET_AXES)}"
            )
        return value
