"""The study file's sampler and pruner as Optuna objects."""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Container, Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from miras_search.errors import ConfigError, Problem
from miras_search.schema.train import SEED_MAX
from miras_search.space import Choice, FloatRange, IntRange, SearchSpace
from miras_search.space.walk import encode_option, iter_nodes
from miras_search.study.fidelity_values import sampler_values
from miras_search.study.records import REUSABLE_FAILURES
from miras_search.study.spec import PrunerSpec, StudyFile


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

    With ``failures_as_pruned`` (TPE), a point's own failures (``REUSABLE_FAILURES``: NaN, divergence,
    build errors, limits, crashes) are shown as pruned trials without intermediate values, which TPE
    ranks below every complete and every reporting pruned trial. Optuna's samplers skip failed
    trials, so TPE otherwise keeps proposing a failing point: in benchmarks/gpu_check.sh's dry-run
    study (24 trials) two failing points were proposed four more times. Storage keeps them failed."""

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
        shown = [_as_pruned(t) for t in failed if t.user_attrs.get("failure") in REUSABLE_FAILURES]
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


def make_sampler(study: StudyFile, space: SearchSpace) -> optuna.samplers.BaseSampler:
    """The sampler of ``study.sampler`` (anchors-only studies use a seeded random sampler), seeing
    one value per point on the base scale, higher fidelities carried by rank (BaseFidelitySampler);
    TPE also sees a point's failures, as pruned trials."""
    return BaseFidelitySampler(_make_sampler(study, space), failures_as_pruned=study.sampler.kind == "tpe")


def _make_sampler(study: StudyFile, space: SearchSpace) -> optuna.samplers.BaseSampler:
    spec = study.sampler
    if not 0 <= spec.seed <= SEED_MAX:  # the study file rejects it; a copied spec may not
        raise ConfigError(study.source, [Problem(
            "sampler.seed", f"must be between 0 and {SEED_MAX} (2**32 - 1), not {spec.seed}",
        )])
    options = dict(spec.options)
    constraints = None  # Optuna >= 5 reads trial.set_constraint; older versions need the hook
    if study.limits and not hasattr(optuna.trial.Trial, "set_constraint"):
        constraints = constraints_func(len(study.limits))
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    try:
        if spec.kind == "tpe":
            kwargs = {"multivariate": True, "group": True, "constraints_func": constraints}
            return optuna.samplers.TPESampler(seed=spec.seed, **{**kwargs, **options})
        if spec.kind == "nsgaii":
            return optuna.samplers.NSGAIISampler(seed=spec.seed, constraints_func=constraints, **options)
        if spec.kind == "cmaes":
            options.setdefault("warn_independent_sampling", False)
            return optuna.samplers.CmaEsSampler(seed=spec.seed, **options)
        if spec.kind == "grid":
            return optuna.samplers.GridSampler(grid_space(space, study.source), seed=spec.seed, **options)
        return optuna.samplers.RandomSampler(seed=spec.seed, **options)
    except TypeError as error:
        raise ConfigError(study.source, [Problem("sampler.options", f"not accepted by {spec.kind}: {error}")]) from None


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
