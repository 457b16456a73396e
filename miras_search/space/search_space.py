"""SearchSpace: a validated space file, sampled define-by-run with Optuna, and encoded back."""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from pydantic import ValidationError

from miras_search.errors import ConfigError, MirasError, Problem
from miras_search.file_kinds import plain_file_kind
from miras_search.merge import deep_merge, get_path
from miras_search.presets import is_preset_point, preset
from miras_search.schema import AXES, ModelPoint, canonical_data, unused_paths
from miras_search.schema_paths import unknown_path_problem
from miras_search.space.base_check import base_problems
from miras_search.space.checks import shape_problems
from miras_search.space.constraints import first_violated
from miras_search.space.reach import unreachable_test_problems
from miras_search.space.spec import Choice, FloatRange, IntRange, SpaceFile
from miras_search.space.targets import (
    constraint_value_problems,
    drawn_kinds,
    iter_leaves_in,
    sibling_problems,
    target_problems,
)
from miras_search.space.walk import decode_option, encode_option, iter_nodes, walk
from miras_search.validation import problems_from, validate
from miras_search.yamlio import LineMap, read_yaml


class InfeasiblePoint(MirasError):
    """A sampled combination that breaks a constraint or a cross-axis rule (the reason says which)."""


class _OptunaChooser:
    def __init__(self, trial: optuna.trial.BaseTrial):
        self.trial = trial

    def categorical(self, name: str, path: tuple[str, ...], options: list[Any]) -> Any:
        value = self.trial.suggest_categorical(name, [encode_option(o) for o in options])
        return decode_option(value, options)

    def integer(self, name: str, path: tuple[str, ...], node: IntRange) -> int:
        low, high = node.int
        return self.trial.suggest_int(name, low, high, step=node.step, log=node.log)

    def real(self, name: str, path: tuple[str, ...], node: FloatRange) -> float:
        low, high = node.float
        return self.trial.suggest_float(name, low, high, step=node.step, log=node.log)

    def branch(self, name: str, labels: list[str], visit: Callable[[str], None]) -> None:
        visit(self.trial.suggest_categorical(name, labels))

    def fixed(self, path: tuple[str, ...], value: Any) -> None:
        pass


class _RecordingChooser(_OptunaChooser):
    """Samples as ``_OptunaChooser`` and records the path of every value that varies."""

    def __init__(self, trial: optuna.trial.BaseTrial):
        super().__init__(trial)
        self.drawn: set[tuple[str, ...]] = set()

    def categorical(self, name: str, path: tuple[str, ...], options: list[Any]) -> Any:
        if len(options) > 1:
            self.drawn.add(path)
        return super().categorical(name, path, options)

    def integer(self, name: str, path: tuple[str, ...], node: IntRange) -> int:
        if node.int[0] != node.int[1]:
            self.drawn.add(path)
        return super().integer(name, path, node)

    def real(self, name: str, path: tuple[str, ...], node: FloatRange) -> float:
        if node.float[0] != node.float[1]:
            self.drawn.add(path)
        return super().real(name, path, node)


class _Mismatch(Exception):
    pass


class _EncodeChooser:
    """Reads each parameter's value off an existing point; _Mismatch when the point is outside.
    A field the point leaves unused (a mamba decay's ``value``) takes any value of the space's."""

    def __init__(self, point: ModelPoint, free: tuple[str, ...] = ()):
        self.data = point.model_dump(mode="json")
        self.free = free  # top-level sections whose values need not match (the space's are kept)
        self.unused = unused_paths(point)
        self.params: dict[str, Any] = {}

    def _value(self, path: tuple[str, ...]) -> Any:
        return get_path(self.data, path)

    def _must_match(self, path: tuple[str, ...]) -> bool:
        """Whether the point's value at ``path`` must be one the space can give."""
        return path[0] not in self.free and path not in self.unused

    def _mismatch(self, name: str, path: tuple[str, ...], fallback: Any) -> Any:
        if self._must_match(path):
            raise _Mismatch
        self.params[name] = fallback
        return fallback

    def categorical(self, name: str, path: tuple[str, ...], options: list[Any]) -> Any:
        value = self._value(path)
        if value not in options:
            return decode_option(self._mismatch(name, path, encode_option(options[0])), options)
        self.params[name] = encode_option(value)
        return value

    def integer(self, name: str, path: tuple[str, ...], node: IntRange) -> int:
        value = self._value(path)
        low, high = node.int
        if not isinstance(value, int) or not low <= value <= high or (value - low) % node.step:
            return self._mismatch(name, path, low)
        self.params[name] = value
        return value

    def real(self, name: str, path: tuple[str, ...], node: FloatRange) -> float:
        value = self._value(path)
        low, high = node.float
        if not isinstance(value, int | float) or not low <= value <= high:
            return self._mismatch(name, path, float(low))
        if node.step is not None and not math.isclose(
            round((value - low) / node.step) * node.step + low, value, abs_tol=1e-9
        ):
            return self._mismatch(name, path, float(low))
        self.params[name] = float(value)
        return float(value)

    def branch(self, name: str, labels: list[str], visit: Callable[[str], None]) -> None:
        for label in labels:
            saved = dict(self.params)
            try:
                self.params[name] = label
                visit(label)
                return
            except _Mismatch:
                self.params = saved
        raise _Mismatch

    def fixed(self, path: tuple[str, ...], value: Any) -> None:
        if self._value(path) != value and self._must_match(path):
            raise _Mismatch


@dataclass(frozen=True)
class SpaceSummary:
    """Size facts shown by ``miras show``."""

    parameters: int
    conditional: int
    branches: int
    discrete_size: int | None  # None when a continuous range makes it infinite


class SearchSpace:
    """A search space over ModelPoint, loaded from a validated space file."""

    def __init__(self, spec: SpaceFile, source: str = "<space>", lines: LineMap | None = None):
        self.spec = spec
        self.source = source
        given: dict[str, Any] = {}
        if spec.preset is not None:
            given = preset(spec.preset).model_dump(mode="json")
        self.given_base = deep_merge(given, spec.base)
        """What the file sets (its preset and base): the space's fingerprint."""
        # without a preset the points start from the default one: a space that searches a field
        # of an axis it leaves at its default (bias.window, memory.feature_map) merges into it
        self.base = self.given_base if spec.preset is not None else deep_merge(
            ModelPoint().model_dump(mode="json"), self.given_base)
        self._check_paths(lines or {})

    @classmethod
    def load(cls, path: str | Path) -> SearchSpace:
        """The space of a YAML file; ConfigError names what is wrong with it (a mapping of a
        space's fields goes to ``from_dict``)."""
        if not isinstance(path, str | os.PathLike):
            raise MirasError(f"SearchSpace.load: expected a space file's path; got {type(path).__name__}"
                             " (a mapping of a space's fields: SearchSpace.from_dict)")
        data, lines = read_yaml(path)
        return cls.from_dict(data, str(path), lines)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<space>",
                  lines: LineMap | None = None) -> SearchSpace:
        _refuse_other_kinds(data, source)
        return cls(validate(SpaceFile, data, source, lines), source, lines)

    @property
    def name(self) -> str:
        return self.spec.name

    def _check_paths(self, lines: LineMap) -> None:
        """ConfigError naming every path, value or base field of the space that cannot work."""
        problems = shape_problems(self.spec.params, self.spec.constraints, lines)
        if problems:  # the walk below needs a well-formed tree
            raise ConfigError(self.source, problems)
        for where, path, _node, kinds in iter_leaves_in(self.spec.params, self.base):
            problem = unknown_path_problem(path, where, lines, kinds)
            if problem is not None and all(p.message != problem.message for p in problems):
                problems.append(problem)  # {low: .., high: ..} under one field: said once
        problems.extend(target_problems(self.spec.params, lines, self.base))
        problems.extend(sibling_problems(self.spec.params, self.base, lines))
        drawn = drawn_kinds(self.spec.params, self.base)  # a tested field must exist in some draw
        for index, constraint in enumerate(self.spec.constraints):
            for section in ("when", "require", "forbid"):
                for dotted in getattr(constraint, section):
                    where = ("constraints", str(index), section, dotted)
                    problem = unknown_path_problem(tuple(dotted.split(".")), where, lines, drawn)
                    if problem is not None:
                        problems.append(problem)
        problems.extend(constraint_value_problems(self.spec.constraints, lines))
        reported = {p.path for p in problems}
        problems.extend(p for p in unreachable_test_problems(self.spec.params, self.base,
                                                             self.spec.constraints, lines)
                        if not any(r == p.path or r.startswith(p.path + ".") for r in reported))
        problems.extend(base_problems(self.base, self.spec.base, self.spec.params, lines))
        if problems:
            raise ConfigError(self.source, problems)

    def suggest(self, trial: optuna.trial.BaseTrial) -> dict[str, Any]:
        """Sample one point's data with ``trial.suggest_*`` (define-by-run), not yet validated."""
        sampled: dict[str, Any] = {}
        walk(self.spec.params, _OptunaChooser(trial), sampled)
        return deep_merge(self.base, sampled)

    def to_point(self, data: dict[str, Any]) -> ModelPoint:
        """Validate sampled data against the schema and the constraints; InfeasiblePoint if not."""
        try:
            point = ModelPoint.model_validate(data)
        except ValidationError as error:
            reason = "; ".join(str(p) for p in problems_from(error, ModelPoint, data, {}))
            raise InfeasiblePoint(f"the sampled combination is not valid: {reason}") from None
        index = first_violated(point.model_dump(mode="json"), self.spec.constraints)
        if index is not None:
            reason = self.spec.constraints[index].describe()
            raise InfeasiblePoint(f"the sampled point breaks constraint {index + 1}: {reason}")
        return point

    def point_from_trial(self, trial: optuna.trial.BaseTrial) -> ModelPoint:
        return self.to_point(self.suggest(trial))

    def encode(self, point: ModelPoint, axes_only: bool = False) -> dict[str, Any] | None:
        """Optuna params that reproduce ``point`` in this space (for enqueueing), or None.

        With ``axes_only`` only the four axes must match: block and training settings are the
        space's own, so that a named model is measured on the same footing as the searched points.
        """
        free = ("name", "block", "train") if axes_only else ()
        chooser = _EncodeChooser(point, free)
        try:
            walk(self.spec.params, chooser, {})
        except _Mismatch:
            return None
        rebuilt = self.to_point_or_none(deep_merge(self.base, _decoded(self, chooser.params)))
        keep = set(AXES) if axes_only else set(ModelPoint.model_fields) - {"name"}
        # compared without unused fields: a space that draws a gate's value only under the modes
        # that read it holds a preset whose mamba decay carries one
        same = rebuilt is not None and _sections(rebuilt, keep) == _sections(point, keep)
        return chooser.params if same else None

    def to_point_or_none(self, data: dict[str, Any]) -> ModelPoint | None:
        try:
            return self.to_point(data)
        except InfeasiblePoint:
            return None

    def unused_draws(self, draws: int = 256, seed: int = 0) -> list[str]:
        """One sentence per drawn field that a valid point of the space leaves unused
        (``Schema.unused_fields``: a gate's ``value`` under mode 'mamba'), naming the setting
        that ignores it: such a draw changes no model, so the sampler learns from noise there.
        Found among ``draws`` random draws (a branch drawn rarely may go unseen)."""
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        found: dict[tuple[str, ...], dict[str, None]] = {}  # path -> the settings that ignore it
        for _ in range(draws):
            chooser = _RecordingChooser(study.ask())
            sampled: dict[str, Any] = {}
            walk(self.spec.params, chooser, sampled)
            point = self.to_point_or_none(deep_merge(self.base, sampled))
            if point is None:
                continue
            data = point.model_dump(mode="json")
            for path in sorted(chooser.drawn & unused_paths(point)):
                owner = get_path(data, path[:-1]) if len(path) > 1 else data
                setting = next((f"{'.'.join((*path[:-1], k))} is '{owner[k]}'" for k in ("mode", "kind")
                                if isinstance(owner, dict) and k in owner), f"in {'.'.join(path[:-1])}")
                found.setdefault(path, {})[setting] = None
        return [f"{'.'.join(path)} is drawn also where {' or '.join(found[path])}, which does not use it "
                "(the same model whatever its value): draw it only inside the branches that use it"
                for path in sorted(found)]

    def sample(self, n: int, seed: int = 0, max_attempts: int | None = None) -> list[ModelPoint]:
        """``n`` valid points drawn at random (rejection sampling); ConfigError if none is valid."""
        return list(self.iter_sample(n, seed, max_attempts))

    def iter_sample(self, n: int, seed: int = 0, max_attempts: int | None = None) -> Iterator[ModelPoint]:
        """``sample``'s points one at a time, as each is drawn; ConfigError after the last when
        fewer than ``n`` are valid."""
        for name, value in (("n", n), ("seed", seed)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise MirasError(f"sample: {name} must be a whole number >= 0, not {value!r}")
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        attempts = max_attempts or max(200, 50 * n)
        points: list[ModelPoint] = []
        reasons: Counter[str] = Counter()
        for _ in range(attempts):
            if len(points) == n:
                break
            trial = study.ask()
            try:
                points.append(self.point_from_trial(trial))
            except InfeasiblePoint as error:
                reasons[str(error)] += 1
                if not points and sum(reasons.values()) >= 200:
                    break
                continue
            yield self._named(points[-1], len(points) - 1)
        if len(points) < n:
            common = "; ".join(f"{r} ({c}x)" for r, c in reasons.most_common(3))
            # with no constraints declared, the schema's own rules rejected the params' values
            draws = sum(reasons.values()) + len(points)
            found = (f"none of {draws} draws satisfy the space's rules" if not points else
                     f"only {len(points)} of {n} points satisfy the space's rules after {draws} draws")
            raise ConfigError(self.source, [Problem(
                "constraints" if self.spec.constraints else "params",
                f"{found}; most common rejections: {common}",
            )])

    def _named(self, point: ModelPoint, index: int) -> ModelPoint:
        """A sampled point keeps its preset's name only if it has the preset's four axes, every
        setting of them (a point of a space built on moneta is not Moneta); others are named
        ``<space>-<index>``."""
        return point if is_preset_point(point) else point.model_copy(update={"name": f"{self.spec.name}-{index}"})

    def summary(self) -> SpaceSummary:
        nodes = list(iter_nodes(self.spec.params))
        size: int | None = 1
        for _, _, node in nodes:
            if isinstance(node, FloatRange) and node.float[0] != node.float[1] and node.step is None:
                size = None
        if size is not None:
            size = _count(self.spec.params)
        conditional = sum(1 for name, _, _ in nodes if "/" in name)
        branches = sum(
            len(node.options) for _, _, node in nodes
            if isinstance(node, Choice) and isinstance(node.choice, dict)
        )
        return SpaceSummary(len(nodes), conditional, branches, size)


def _refuse_other_kinds(data: Any, source: str) -> None:
    """ConfigError in one line when ``data`` is plainly a study file, or says it is a point file,
    rather than a list of its keys that a space does not take. (A space without params, a name and
    a preset, reads like a point by its keys, so only a declared point is refused.)"""
    if not isinstance(data, dict):
        return
    kind = plain_file_kind(data)
    if kind == "study" or (kind == "point" and data.get("type") == "point"):
        raise ConfigError(source, [Problem("", (
            f"is a {kind} file, not a space file; give a space file (type: space, with its preset, "
            "params and constraints)"))])


def _sections(point: ModelPoint, keep: set[str]) -> dict[str, Any]:
    """The ``keep`` sections of the point's canonical data (unused fields dropped)."""
    return {name: value for name, value in canonical_data(point).items() if name in keep}


def _decoded(space: SearchSpace, params: dict[str, Any]) -> dict[str, Any]:
    """Replay encoded params through the tree to rebuild the sampled data."""
    trial = optuna.trial.FixedTrial(params)
    sampled: dict[str, Any] = {}
    walk(space.spec.params, _OptunaChooser(trial), sampled)
    return sampled


def _count(tree: dict[str, Any]) -> int:
    """Number of distinct points of a fully discrete tree (conditional branches summed)."""
    total = 1
    for key, node in tree.items():
        if key == "one_of":
            total *= sum(_count(sub or {}) for sub in node.values())
        elif isinstance(node, Choice):
            total *= sum(_count(node.branch(option)) for option in node.options)
        elif isinstance(node, IntRange):
            low, high = node.int
            total *= len(range(low, high + 1, node.step))
        elif isinstance(node, FloatRange):
            low, high = node.float
            total *= 1 if low == high else round((high - low) / node.step) + 1
        elif isinstance(node, dict):
            total *= _count(node)
    return total


