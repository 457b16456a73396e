"""The study file's sampler and pruner as Optuna objects."""

from __future__ import annotations

import collections.abc
import copy
import difflib
import functools
import hashlib
import inspect
import math
import sys
import types
import typing
import warnings
from collections.abc import Callable, Container, Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from pydantic import ValidationError

from miras_search.errors import ConfigError, MirasError, Problem
from miras_search.schema.train import SEED_MAX
from miras_search.space import Choice, FloatRange, InfeasiblePoint, IntRange, SearchSpace
from miras_search.space.walk import encode_option, iter_nodes
from miras_search.study.fidelity_values import sampler_values
from miras_search.study.records import REUSABLE_FAILURES
from miras_search.study.spec import PrunerSpec, StudyFile
from miras_search.yamlio import yaml_kind


def grid_space(space: SearchSpace, source: str = "<study>") -> dict[str, list[Any]]:
    """Every parameter of every branch with its values; ConfigError for a continuous range.

    Parameters of branches a grid point does not take are simply not suggested: two grid points
    that differ only there give the same model, which the study's de-duplication reuses.
    """
    grid: dict[str, list[Any]] = {}
    for name, _, node in iter_nodes(space.spec.params):
        if isinstance(node, Choice):
            grid[name] = [encode_option(o) for o in node.options]
        elif isinstance(node, IntRange):
            low, high = node.int
            grid[name] = list(range(low, high + 1, node.step))
        elif isinstance(node, FloatRange):
            low, high = node.float
            if node.step is None and low != high:
                raise ConfigError(source, [Problem(
                    "sampler.kind", f"grid search needs discrete parameters; '{name}' is a "
                    "continuous float range (give it a 'step' or use another sampler)",
                )])
            count = 1 if low == high else round((high - low) / node.step) + 1
            grid[name] = [low + i * (node.step or 0.0) for i in range(count)]
    return grid


def grid_size(grid: dict[str, list[Any]]) -> int:
    return math.prod(len(v) for v in grid.values())


SHOWN_FAILURES = (*REUSABLE_FAILURES, "infeasible")
"""The failures TPE is shown (as pruned trials): those of the point itself, a refused draw
included (it broke the space's rules or did not fit the trial settings), not those of the machine
or of an interruption."""


def constraints_func(count: int) -> Callable[[FrozenTrial], Sequence[float]]:
    """Optuna's constraint hook: the trial's ``constraints`` user attr (<= 0 means feasible)."""

    def read(trial: FrozenTrial) -> Sequence[float]:
        return trial.user_attrs.get("constraints") or [0.0] * count

    return read


class _BaseFidelityView:
    """The study as a sampler should see it: its own (base) trials, with each re-measured point's
    higher-fidelity results (study.fidelity) carried onto the base scale by rank
    (study.fidelity_values) when ``carry`` is true; the fidelity trials themselves are left out,
    as their values are on another budget's scale.

    With ``failures_as_pruned`` (TPE), a point's own failures (``SHOWN_FAILURES``: NaN, divergence,
    build errors, limits, crashes, and draws refused as infeasible) are shown as pruned trials
    without intermediate values, which TPE ranks below every complete and every reporting pruned
    trial. Optuna's samplers skip failed trials, so TPE otherwise keeps proposing a failing point:
    in benchmarks/gpu_check.sh's dry-run study (24 trials) two failing points were proposed four
    more times, and a space whose batch_size 8 never fitted trial.tokens (4 did) stopped after 10
    trials on 200 refused draws of 8 in a row. Storage keeps them failed."""

    def __init__(self, study: optuna.Study, carry: bool = True, failures_as_pruned: bool = False):
        self._study = study
        self._carry = carry
        self._failures_as_pruned = failures_as_pruned

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _seen(self, trials: list[FrozenTrial]) -> list[FrozenTrial]:
        base = [t for t in trials if "fidelity" not in t.user_attrs]
        if not self._carry:
            return base
        carried = sampler_values(self._study._get_trials(deepcopy=False))
        if not carried:
            return base
        out = []
        for trial in base:
            if trial.number in carried:
                trial = copy.copy(trial)
                trial.values = carried[trial.number]
            out.append(trial)
        return out

    def _with_failures(self, trials: list[FrozenTrial], states: Container[TrialState] | None,
                       use_cache: bool = False) -> list[FrozenTrial]:
        """``trials`` (read with ``states``) and, where pruned but not failed trials were asked for
        (a failure is shown once), the point failures as pruned trials, in trial-number order."""
        if (not self._failures_as_pruned or states is None or TrialState.PRUNED not in states
                or TrialState.FAIL in states):
            return trials
        failed = self._study._get_trials(deepcopy=False, states=(TrialState.FAIL,), use_cache=use_cache)
        shown = [_as_pruned(t) for t in failed if t.user_attrs.get("failure") in SHOWN_FAILURES]
        return sorted(trials + shown, key=lambda t: t.number) if shown else trials

    def _get_trials(self, deepcopy: bool = True, states: Container[TrialState] | None = None,
                    use_cache: bool = False) -> list[FrozenTrial]:
        trials = self._study._get_trials(deepcopy=deepcopy, states=states, use_cache=use_cache)
        return self._seen(self._with_failures(trials, states, use_cache))

    def get_trials(self, deepcopy: bool = True, states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        trials = self._study.get_trials(deepcopy=deepcopy, states=states)
        return self._seen(self._with_failures(trials, states))

    @property
    def trials(self) -> list[FrozenTrial]:
        return self.get_trials()

    @property
    def best_trials(self) -> list[FrozenTrial]:  # NSGA-II's elite
        from optuna.study._multi_objective import _get_pareto_front_trials_by_trials

        return _get_pareto_front_trials_by_trials(self._get_trials(deepcopy=False, states=(
            optuna.trial.TrialState.COMPLETE,)), self._study.directions)


def _as_pruned(trial: FrozenTrial) -> FrozenTrial:
    """A copy of a failed trial that a sampler reads as pruned before any report."""
    shown = copy.copy(trial)
    shown.state = TrialState.PRUNED
    shown.intermediate_values = {}
    return shown


def base_fidelity_view(study: optuna.Study, carry: bool = False) -> optuna.Study:
    """``study`` without its fidelity trials, for code that reads trials as samples of the space:
    parameter importances (the base budget's values, ``carry=False``) and samplers (``carry=True``:
    each point's higher-fidelity results carried onto the base scale, study.fidelity_values)."""
    return _BaseFidelityView(study, carry)  # type: ignore[return-value]


class BaseFidelitySampler(optuna.samplers.BaseSampler):
    """Wraps a sampler so that it models one value per point on the base budget's scale: a point
    re-trained 4x longer (``confirm``), on a ladder (``scale``) or promoted by successive halving
    is seen once, at its base trial, holding the value its rank among the points re-measured alike
    gives it (study.fidelity_values); a point worse at the base budget but better at the higher
    fidelity is then what the sampler learns from. ``failures_as_pruned``: a point's failures are
    shown as pruned trials (``_BaseFidelityView``; for TPE, which ranks those as bad)."""

    def __init__(self, inner: optuna.samplers.BaseSampler, failures_as_pruned: bool = False):
        self.inner = inner
        self.failures_as_pruned = failures_as_pruned

    def _view(self, study: optuna.Study) -> optuna.Study:
        return _BaseFidelityView(study, failures_as_pruned=self.failures_as_pruned)  # type: ignore[return-value]

    def __str__(self) -> str:
        return str(self.inner)

    def infer_relative_search_space(self, study, trial):
        return self.inner.infer_relative_search_space(self._view(study), trial)

    def sample_relative(self, study, trial, search_space):
        return self.inner.sample_relative(self._view(study), trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self.inner.sample_independent(self._view(study), trial, param_name, param_distribution)

    def before_trial(self, study, trial) -> None:
        self.inner.before_trial(self._view(study), trial)

    def after_trial(self, study, trial, state, values) -> None:
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()


SAMPLER_CLASSES: dict[str, type[optuna.samplers.BaseSampler]] = {
    "tpe": optuna.samplers.TPESampler, "nsgaii": optuna.samplers.NSGAIISampler,
    "cmaes": optuna.samplers.CmaEsSampler, "grid": optuna.samplers.GridSampler,
    "random": optuna.samplers.RandomSampler, "anchors": optuna.samplers.RandomSampler,
}
"""The Optuna sampler each ``sampler.kind`` builds (anchors-only studies: a seeded random one)."""

_SET_BY_THE_STUDY = {
    "seed": "give sampler.seed instead",
    "search_space": "the grid is the space's own values",
    "constraints_func": "the study's limits set it",
}
_AT_LEAST: dict[str, tuple[float, bool]] = {  # option -> (bound, whether the bound itself is allowed)
    "n_startup_trials": (0, True), "n_ei_candidates": (1, True), "population_size": (2, True),
    "popsize": (1, True), "sigma0": (0, False), "prior_weight": (0, False),
}
_PROBABILITIES = ("mutation_prob", "crossover_prob", "swapping_prob")


class _OnlyForTypeCheckers(str):
    """An annotation naming classes Optuna imports only for type checkers: Python objects (or
    functions), which a study file cannot give."""


class _AnyOf(tuple):
    """A union some of whose parts are ``_OnlyForTypeCheckers`` (typing's unions cannot hold them)."""


def _members(annotation: Any) -> tuple[Any, ...] | None:
    """The parts of a union annotation (None for one that is no union)."""
    if isinstance(annotation, _AnyOf):
        return tuple(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return None


def _top_level_parts(annotation: str) -> list[str]:
    """``"list[A] | Callable[[B | C], D] | None"`` -> its union's parts, brackets kept whole."""
    parts, depth, start = [], 0, 0
    for index, char in enumerate(annotation):
        depth += (char == "[") - (char == "]")
        if char == "|" and depth == 0:
            parts.append(annotation[start:index].strip())
            start = index + 1
    return [*parts, annotation[start:].strip()]


def _resolved(annotation: Any, namespace: dict[str, Any]) -> Any:
    """``annotation`` as a type (Optuna writes them as strings); a part of a union that names
    a class only type checkers see becomes ``_OnlyForTypeCheckers``."""
    if not isinstance(annotation, str):
        return annotation
    resolved = []
    for part in _top_level_parts(annotation):
        holder = types.SimpleNamespace(__annotations__={"value": part})
        try:
            resolved.append(typing.get_type_hints(holder, globalns=namespace)["value"])
        except Exception:  # a name imported under TYPE_CHECKING
            resolved.append(_OnlyForTypeCheckers(part))
    return resolved[0] if len(resolved) == 1 else _AnyOf(resolved)


@functools.cache
def sampler_options(kind: str) -> dict[str, Any]:
    """The keyword options of ``kind``'s Optuna sampler and the type each takes (from its
    constructor's signature and annotations; ``inspect.Parameter.empty`` where not known)."""
    init = SAMPLER_CLASSES[kind].__init__
    namespace = {**vars(typing), **vars(collections.abc), **vars(sys.modules[init.__module__])}
    return {name: _resolved(parameter.annotation, namespace)
            for name, parameter in inspect.signature(init).parameters.items()
            if name != "self" and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)}


def _fits(value: Any, annotation: Any) -> bool | None:
    """Whether a YAML ``value`` is of the type ``annotation`` (None: cannot tell)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if isinstance(annotation, _OnlyForTypeCheckers):
        return False
    if annotation is inspect.Parameter.empty or annotation is Any:
        return None
    if annotation is None or annotation is type(None):
        return value is None
    if _members(annotation) is not None:
        answers = [_fits(value, arg) for arg in _members(annotation) or ()]
        return True if True in answers else (None if None in answers else False)
    if origin is typing.Literal:
        return value in args
    if annotation in (int, float) and isinstance(value, bool):
        return False  # YAML's true / false are no numbers here
    if annotation is float:
        return isinstance(value, int | float)
    if origin in (dict, collections.abc.Mapping):
        return isinstance(value, dict)
    if origin in (list, collections.abc.Sequence):
        return isinstance(value, list) and all(_fits(item, args[0]) is not False for item in value) if args else (
            isinstance(value, list))
    if origin is collections.abc.Callable or annotation is collections.abc.Callable:
        return False
    return isinstance(value, annotation) if isinstance(annotation, type) else None


def _type_words(annotation: Any) -> str:
    """How a study file gives a value of ``annotation``: 'an integer or null', 'true or false'..."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if _members(annotation) is not None:
        return " or ".join(dict.fromkeys(_type_words(arg) for arg in _members(annotation) or ()))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(arg) for arg in args)
    if (origin is collections.abc.Callable or annotation is collections.abc.Callable
            or (isinstance(annotation, _OnlyForTypeCheckers) and annotation.startswith("Callable"))):
        return "a Python function (which a study file cannot give)"
    if isinstance(annotation, _OnlyForTypeCheckers):
        return f"a Python object ({annotation}, which a study file cannot give)"
    words = {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null",
             dict: "a mapping", list: "a list"}
    if annotation in words or origin in words:
        return words.get(annotation) or words[origin]
    if origin in (collections.abc.Mapping, collections.abc.Sequence):
        return "a mapping" if origin is collections.abc.Mapping else "a list"
    name = getattr(annotation, "__name__", str(annotation))
    return f"a Python object ({name}, which a study file cannot give)"


def _shown(value: Any, width: int = 40) -> str:
    """``repr(value)``, cut to ``width`` characters."""
    text = repr(value)
    return text if len(text) <= width else text[:width - 1] + "…"


def _value_words(value: Any) -> str:
    """What a YAML value is, in words: 'a string', 'a boolean', 'a number'..."""
    kind = yaml_kind(value)
    return {"str": "a string", "boolean": "a boolean", "number": "a number", "list": "a list",
            "mapping": "a mapping"}.get(kind, kind)


def _range_problem(name: str, value: Any) -> str | None:
    """Why a number ``value`` of option ``name`` is out of its range (None when it is in)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if name in _PROBABILITIES and not 0 <= value <= 1:
        return f"a probability, between 0 and 1, not {value}"
    if name in _AT_LEAST:
        bound, inclusive = _AT_LEAST[name]
        if value < bound or (value == bound and not inclusive):
            return f"must be {'>=' if inclusive else '>'} {bound:g}, not {value}"
    return None


def option_problem(kind: str, name: str, value: Any) -> str | None:
    """Why ``name: value`` is no option ``kind``'s Optuna sampler takes (None when it is one)."""
    known = sampler_options(kind)
    sampler = SAMPLER_CLASSES[kind].__name__
    if name in _SET_BY_THE_STUDY and name in known:
        return f"set by the study, not an option ({_SET_BY_THE_STUDY[name]})"
    if name not in known:
        allowed = [n for n in known if n not in _SET_BY_THE_STUDY]
        close = difflib.get_close_matches(name, allowed, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        return (f"not an option of Optuna's {sampler} (sampler.kind {kind}); {hint}its options: "
                f"{', '.join(allowed) or 'none'}")
    if _fits(value, known[name]) is False:
        return f"{sampler} takes {_type_words(known[name])} here, not {_shown(value)} ({_value_words(value)})"
    return _range_problem(name, value)


def sampler_option_problems(kind: str, options: dict[str, Any]) -> list[Problem]:
    """Each ``sampler.options`` entry that ``kind``'s Optuna sampler would not take: an unknown
    name, a value of another type (a boolean is no number), or a count or scale out of range."""
    problems = []
    for name, value in options.items():
        problem = option_problem(kind, str(name), value)
        if problem is not None:
            problems.append(Problem(f"sampler.options.{name}", problem))
    return problems


def run_seed(seed: int, stored_trials: int) -> int:
    """The seed a run's sampler draws with: ``seed`` (``sampler.seed``) in a study's first run, so
    that two studies run from scratch with one seed propose the same points in the same order; in
    a run that continues a study already holding ``stored_trials`` trials (asked ones: not those
    only queued), a seed derived from both. Restarted with ``seed`` itself, a sampler would replay the first run's draws (a random
    sampler all of them, TPE and NSGA-II their random start-up), and a duplicate point only takes
    its earlier result: the run would add no new points. The same storage resumed twice still
    draws the same points."""
    if stored_trials == 0:
        return seed
    digest = hashlib.sha256(f"miras-run-seed:{seed}:{stored_trials}".encode()).digest()
    return int.from_bytes(digest[:4], "big")  # <= SEED_MAX (2**32 - 1)


def make_sampler(study: StudyFile, space: SearchSpace, stored_trials: int = 0) -> optuna.samplers.BaseSampler:
    """The sampler of ``study.sampler`` (anchors-only studies use a seeded random sampler), seeing
    one value per point on the base scale, higher fidelities carried by rank (BaseFidelitySampler);
    TPE also sees a point's failures, as pruned trials. It draws with ``run_seed(sampler.seed,
    stored_trials)``: a run continuing a study that holds ``stored_trials`` trials draws anew.

    ConfigError names a ``sampler.options`` entry the sampler does not take; with options given,
    a copy of the sampler draws one point of the space in a throw-away study first, so that an
    option Optuna refuses only when it samples stops the study before it holds any trial."""
    inner = _make_sampler(study, space, run_seed(study.sampler.seed, stored_trials))
    if study.sampler.options:
        _try_first_sample(study, space)
    return BaseFidelitySampler(inner, failures_as_pruned=study.sampler.kind == "tpe")


def _try_first_sample(study: StudyFile, space: SearchSpace) -> None:
    """Draw one point of ``space`` with a sampler of its own, built as the study's is, in an
    in-memory study (the study's sampler and storage are untouched); a TypeError / ValueError
    Optuna raises there is a ConfigError on ``sampler.options``."""
    sampler = _make_sampler(study, space, study.sampler.seed)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trial = optuna.create_study(sampler=sampler, directions=study.directions).ask()
            space.point_from_trial(trial)
    except InfeasiblePoint:
        pass  # the space's own rules: `validate` samples the space on its own
    except (TypeError, ValueError) as error:
        if isinstance(error, MirasError | ValidationError):
            raise
        raise ConfigError(study.source, [Problem("sampler.options", _refused(study.sampler.kind, error))]) from None
    finally:
        optuna.logging.set_verbosity(verbosity)


def _refused(kind: str, error: Exception) -> str:
    """One paragraph: Optuna's sampler for ``kind`` refused its options, and Optuna's words."""
    words = " ".join(str(error).split()) or type(error).__name__
    return (f"Optuna's {SAMPLER_CLASSES[kind].__name__} (sampler.kind {kind}) does not take these options: "
            f"{words}; see its documentation for the options and the values they take")


def _make_sampler(study: StudyFile, space: SearchSpace, seed: int) -> optuna.samplers.BaseSampler:
    spec = study.sampler
    if not 0 <= spec.seed <= SEED_MAX:  # the study file rejects it; a copied spec may not
        raise ConfigError(study.source, [Problem(
            "sampler.seed", f"must be between 0 and {SEED_MAX} (2**32 - 1), not {spec.seed}",
        )])
    problems = sampler_option_problems(spec.kind, spec.options)
    if problems:
        raise ConfigError(study.source, problems)
    options = dict(spec.options)
    constraints = None  # Optuna >= 5 reads trial.set_constraint; older versions need the hook
    if study.limits and not hasattr(optuna.trial.Trial, "set_constraint"):
        constraints = constraints_func(len(study.limits))
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    try:
        if spec.kind == "tpe":
            kwargs = {"multivariate": True, "group": True, "constraints_func": constraints}
            return optuna.samplers.TPESampler(seed=seed, **{**kwargs, **options})
        if spec.kind == "nsgaii":
            return optuna.samplers.NSGAIISampler(seed=seed, constraints_func=constraints, **options)
        if spec.kind == "cmaes":
            options.setdefault("warn_independent_sampling", False)
            return optuna.samplers.CmaEsSampler(seed=seed, **options)
        if spec.kind == "grid":
            return optuna.samplers.GridSampler(grid_space(space, study.source), seed=seed, **options)
        return optuna.samplers.RandomSampler(seed=seed, **options)
    except (TypeError, ValueError) as error:  # what the signature does not say (e.g. two options that exclude each other)
        raise ConfigError(study.source, [Problem("sampler.options", _refused(spec.kind, error))]) from None


def make_pruner(spec: PrunerSpec) -> optuna.pruners.BasePruner:
    if spec.kind == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=spec.n_startup_trials, n_warmup_steps=spec.n_warmup_steps
        )
    if spec.kind == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=spec.min_resource, reduction_factor=spec.reduction_factor
        )
    return optuna.pruners.NopPruner()
