"""Proxy check: do short trials rank points the way longer training does?

The top points of a study (the same ones ``miras best`` lists: feasible, no reused duplicates,
the Pareto front first for several objectives) and its named models are trained again with
``scale`` times the token budget and several seeds. The short-trial score (the study's first
objective) and the seed-averaged long score are compared with Spearman and Kendall correlations,
each with a one-sided permutation p-value (exact up to 8 points) and, from 5 points, a bootstrap
CI that is left out when it collapses.

The verdict rule (``_verdict``): the short trial "predicts" the long run only when at least
``MIN_VERDICT_POINTS`` (5) points completed the long runs AND the permutation p-value of
Spearman's rho is at most ``(1 - level) / 2`` (0.025 at the default 95% level: a one-sided test as
strict as asking a two-sided 95% interval to exclude zero). With 3 or 4 points the answer is
"too few points to tell" whatever the correlation: a perfect order of 3 points happens by chance
1 time in 6 and of 4 points 1 time in 24 (p = 0.042), neither of which is evidence. With 5 points
only a perfect order qualifies (p = 1/120).

The long runs get the study's per-trial ``time_limit_s`` multiplied by ``scale`` (they train
``scale`` times longer), unless ``time_limit`` overrides it; the result says where it came from.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from miras_search.errors import MirasError
from miras_search.jsonio import json_text
from miras_search.presets import NAMED_MODELS
from miras_search.report.ranks import (
    BOOTSTRAP_METHOD,
    BOOTSTRAP_MIN_POINTS,
    PERMUTATION_METHOD,
    PERMUTATIONS,
    Correlation,
    rank_agreement,
)
from miras_search.report.study_data import ObjectiveInfo, TrialRow, study_objectives, trial_row
from miras_search.study.records import (
    UnrebuildablePoint,
    is_feasible,
    nothing_rebuildable,
    rebuildable,
)
from miras_search.study.setup import check_measure
from miras_search.study.summary import ranked as ranked_like_best
from miras_search.trial import Objective, TrialConfig, TrialResult, run_trial

MIN_VERDICT_POINTS = 5
"""Fewer long-run points than this never give a verdict (3 ordered points: p = 1/6; 4: 1/24)."""
CONFIRM_METHOD = (
    f"{PERMUTATION_METHOD} and {BOOTSTRAP_METHOD} CI (from {BOOTSTRAP_MIN_POINTS} points, "
    "left out when it collapses), on seed-averaged long scores"
)


@dataclass
class ConfirmEntry:
    """One re-trained point: its short score and the long score of each seed."""

    trial: int
    label: str
    anchor: str | None
    short: float
    tokens: int
    long: list[float] = field(default_factory=list)  # one per seed that completed
    failures: list[str] = field(default_factory=list)  # "seed 2: nan: ..." for the others
    metrics: list[dict[str, float]] = field(default_factory=list)  # per completed seed (fidelity results)

    @property
    def long_mean(self) -> float:
        return float(np.mean(self.long)) if self.long else float("nan")

    @property
    def long_std(self) -> float:
        return float(np.std(self.long, ddof=1)) if len(self.long) > 1 else float("nan")

    @property
    def long_mean_text(self) -> str:
        """The mean over seeds for a table: '-' when no long run completed (not 'nan')."""
        return f"{self.long_mean:.4g}" if self.long else "-"

    @property
    def long_std_text(self) -> str:
        """The spread over seeds for a table: '-' with fewer than two seeds (no spread)."""
        return f"{self.long_std:.2g}" if len(self.long) > 1 else "-"


@dataclass
class ConfirmResult:
    study: str
    objective: ObjectiveInfo
    scale: float
    seeds: list[int]
    entries: list[ConfirmEntry]
    correlations: list[Correlation]
    verdict: str
    predicts: bool | None  # None: too few points to tell
    method: str = CONFIRM_METHOD
    missing: list[str] = field(default_factory=list)  # named models the study has no trial of
    # named models the study ran without a usable result -> why (failed, pruned, infeasible, ...)
    named_left_out: dict[str, str] = field(default_factory=dict)
    time_limit_s: float | None = None  # per long run; None: no limit
    time_limit_source: str = ""  # where time_limit_s came from (scaled study limit, --time-limit)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for entry, raw in zip(self.entries, data["entries"], strict=True):
            raw["long_mean"], raw["long_std"] = entry.long_mean, entry.long_std
        return data

    def write_json(self, path: str | Path) -> None:
        Path(path).write_text(json_text(self.to_dict()))  # a value that is not finite: null

    @classmethod
    def read_json(cls, path: str | Path) -> ConfirmResult:
        """Read a ``write_json`` file; MirasError (naming the file) when it is unreadable or broken."""
        try:
            return cls._from_dict(json.loads(Path(path).read_text()))
        except OSError as error:
            raise MirasError(f"{path} cannot be read ({error.strerror or error})") from None
        except json.JSONDecodeError as error:
            raise MirasError(f"{path} is not valid JSON ({error.msg}, line {error.lineno})") from None
        except KeyError as error:
            raise MirasError(f"{path} is not a confirm result: it has no '{error.args[0]}'") from None
        except (TypeError, ValueError, AttributeError) as error:
            raise MirasError(f"{path} is not a confirm result ({error})") from None

    @classmethod
    def _from_dict(cls, data: Any) -> ConfirmResult:
        if not isinstance(data, dict):
            raise TypeError(f"expected a JSON object, found {type(data).__name__}")
        for entry in data["entries"]:
            entry.pop("long_mean", None)
            entry.pop("long_std", None)
            entry["short"] = _float(entry["short"])  # null: written so when it was not finite
            entry["long"] = [_float(value) for value in entry.get("long") or []]
        for raw in data["correlations"]:
            for key in ("value", "low", "high", "p_value"):
                if key in raw:
                    raw[key] = _float(raw[key])
        return cls(
            study=data["study"], objective=ObjectiveInfo(**data["objective"]), scale=data["scale"],
            seeds=data["seeds"], entries=[ConfirmEntry(**e) for e in data["entries"]],
            correlations=[Correlation(**c) for c in data["correlations"]], verdict=data["verdict"],
            predicts=data["predicts"], method=data["method"], missing=data.get("missing", []),
            named_left_out=data.get("named_left_out", {}), time_limit_s=data.get("time_limit_s"),
            time_limit_source=data.get("time_limit_source", ""),
        )


def _long_tokens(config: TrialConfig, point: Any, scale: float) -> int:
    """The tokens of a point's long run: ``scale`` x the study's budget (or the point's own)."""
    return max(1, round(scale * (config.tokens or point.train.tokens)))


def _check_long_budgets(chosen: list[TrialRow], config: TrialConfig, scale: float) -> None:
    """MirasError, before any run starts, when ``scale`` leaves a point's long run less than one
    training batch (each run would fail): naming --scale and the smallest scale that covers one
    batch of every point."""
    first, needed = None, 0.0
    for row in chosen:
        point = row.model_point()
        tokens = _long_tokens(config, point, scale)
        settings = config.model_copy(update={"tokens": tokens})
        problem = settings.budget_problem(point.train.batch_size, point.train.seq_len)
        if problem is None:
            continue
        first = first or f"{row.label} (trial {row.number}): {problem}"
        low, high = 0, tokens  # the fewest tokens that cover one batch (the problem is monotone)
        while settings.model_copy(update={"tokens": high}).budget_problem(
                point.train.batch_size, point.train.seq_len) is not None:
            low, high = high, high * 2
        while high - low > 1:
            middle = (low + high) // 2
            fits = settings.model_copy(update={"tokens": middle}).budget_problem(
                point.train.batch_size, point.train.seq_len) is None
            low, high = (low, middle) if fits else (middle, high)
        needed = max(needed, high / (config.tokens or point.train.tokens))
    if first is None:
        return
    digits = max(0, 2 - math.floor(math.log10(needed)))
    smallest = math.ceil(needed * 10 ** digits) / 10 ** digits
    raise MirasError(f"--scale {scale:g} leaves a long run less than one training batch, so every such run "
                     f"would fail: {first}. The smallest --scale that covers one batch of every point "
                     f"re-trained is {smallest:.3g}")


def _float(value: Any) -> float:
    """A number read back from a confirm result: ``null`` (a value that was not finite) is nan."""
    return math.nan if value is None else float(value)


def study_trial_config(study: optuna.Study) -> TrialConfig:
    """The study's trial config from its stored study file (``trial:`` section), else defaults."""
    stored = study.user_attrs.get("study_file") or {}
    section = stored.get("trial") if isinstance(stored, dict) else None
    return TrialConfig.model_validate(section) if isinstance(section, dict) else TrialConfig()


def _why_unusable(trial: FrozenTrial) -> str:
    """Why a named model's trial gives the proxy check no short score (for the output)."""
    attrs = trial.user_attrs
    detail = f"{attrs.get('failure')}: {attrs.get('reason')}" if attrs.get("failure") else ""
    if trial.state == TrialState.FAIL:
        return f"trial {trial.number} failed in the study ({detail or 'no reason stored'})"
    if trial.state == TrialState.PRUNED:
        return f"trial {trial.number} was pruned in the study ({detail or 'stopped early by the pruner'})"
    if trial.state == TrialState.COMPLETE and not is_feasible(trial):
        return (f"trial {trial.number} breaks the study's limits (constraints "
                f"{attrs.get('constraints')}), so `miras best` leaves it out too")
    if trial.state == TrialState.COMPLETE and "reused_from" in attrs:
        return f"trial {trial.number} reused trial {attrs['reused_from']}, which has no usable result"
    if trial.state == TrialState.COMPLETE:
        return f"trial {trial.number} has no finite score"
    return f"trial {trial.number} has not finished ({trial.state.name.lower()})"


def confirm_points(study: optuna.Study, top: int,
                   ) -> tuple[list[TrialRow], list[str], dict[str, str], list[UnrebuildablePoint]]:
    """The points to re-train: ``miras best``'s top ``top``, then each named model not among them.

    The top points come from ``study.summary.ranked`` (feasible complete trials, reused
    duplicates left out, the Pareto front first for several objectives), so ``confirm`` and
    ``best`` agree; as there, a trial whose stored point cannot be rebuilt is passed over. A named
    model is added when one of its trials (or the trial it reused) is in that ranking. Returns
    (rows, named models the study has no trial of, named models it ran but has no usable result
    of -> why, the ranked trials passed over and why).
    """
    best = [row for row in (trial_row(t) for t in ranked_like_best(study, fidelity="base")) if row.complete]
    by_number = {row.number: row for row in best}
    rebuilt, passed = rebuildable(best, top, TrialRow.model_point)
    chosen = [row for row, _ in rebuilt]
    skipped = {trial.number for trial in passed}
    missing: list[str] = []
    left_out: dict[str, str] = {}
    trials = study.get_trials(deepcopy=False)
    for name in NAMED_MODELS:
        tried = [t for t in trials if t.user_attrs.get("anchor") == name]
        if not tried:
            missing.append(name)
            continue
        sources = [t.user_attrs.get("reused_from", t.number) for t in tried]
        usable = [by_number[n] for n in sources if n in by_number]
        if not usable:
            left_out[name] = _why_unusable(tried[-1])
        elif all(row.number != usable[0].number for row in chosen) and usable[0].number not in skipped:
            try:
                usable[0].model_point()
            except UnrebuildablePoint as error:
                left_out[name] = f"trial {error.number} {error.problem}"
                continue
            chosen.append(usable[0])
    return chosen, missing, left_out, passed


def long_time_limit(config: TrialConfig, scale: float,
                    override: float | None = None) -> tuple[float | None, str]:
    """The time limit of one long run and where it came from, as (seconds or None, words).

    ``override`` (the ``--time-limit`` option) wins; 0 means no limit. Otherwise the study's
    per-trial ``time_limit_s`` is multiplied by ``scale``: a run ``scale`` times longer needs
    about ``scale`` times the time, and keeping the short limit would fail the slower points
    and bias the check towards fast ones.
    """
    if override is not None:
        if not (math.isfinite(override) and override >= 0):
            raise MirasError(f"--time-limit must be a finite number of seconds >= 0 (0: no limit), got {override}")
        if override == 0:
            return None, "none (--time-limit 0)"
        return float(override), f"{override:g} s from --time-limit"
    if config.time_limit_s is None:
        return None, "none (the study's trials have no time limit)"
    limit = config.time_limit_s * scale
    return limit, (f"{limit:g} s = the study's {config.time_limit_s:g} s per trial x {scale:g} "
                   "(--scale; --time-limit overrides)")


def stored_objective(study: optuna.Study, name: str) -> Objective | None:
    """The study file's objective called ``name`` (it knows weighted formulas), if stored."""
    stored = study.user_attrs.get("study_file") or {}
    for raw in (stored.get("objectives") or []) if isinstance(stored, dict) else []:
        try:
            objective = Objective.model_validate(raw)
        except ValueError:
            continue
        if objective.name == name:
            return objective
    return None


def objective_value(objective: ObjectiveInfo, config: TrialConfig, result: TrialResult,
                    formula: Objective | None = None) -> float:
    """The study objective's value from a re-run's metrics (same formula as the study)."""
    if formula is not None:
        try:
            return formula.value(result.metrics)
        except KeyError as error:
            raise MirasError(f"the long run cannot compute objective '{objective.name}': "
                             f"{error.args[0]}") from None
    if objective.name in result.metrics:
        return float(result.metrics[objective.name])
    if objective.name == config.objective.name and result.objective is not None:
        return float(result.objective)
    if objective.name in ("objective", "objective 0") and result.objective is not None:
        return float(result.objective)
    raise MirasError(
        f"the long run did not measure the study's objective '{objective.name}'; "
        f"measured: {', '.join(sorted(result.metrics))}"
    )


def _verdict(correlations: list[Correlation], n: int, scale: float) -> tuple[str, bool | None]:
    """The plain verdict and ``predicts`` (True / False / None: cannot tell) for ``n`` points.

    Rule: True only with ``n >= MIN_VERDICT_POINTS`` and Spearman's one-sided permutation
    p-value ``<= (1 - level) / 2``; False when rho <= 0 or the p-value is larger; None with fewer
    points or an undefined correlation. The bootstrap interval never decides: it collapses to
    a single value for points in perfect order.
    """
    rho = correlations[0] if correlations else None
    if n < MIN_VERDICT_POINTS or rho is None:
        measured = f" ({rho.describe()})" if rho is not None else ""
        chance = (f": even a perfect order of {n} points happens by chance 1 time in {math.factorial(n)}"
                  if n >= 2 else "")
        return (f"Too few points ({n}) completed the longer run to judge the proxy{measured}{chance}. "
                f"Confirm at least {MIN_VERDICT_POINTS} points (raise --top, or fix the failed runs)."), None
    if not math.isfinite(rho.value):
        return (f"Cannot judge the proxy: {rho.describe()}."), None
    alpha = (1.0 - rho.level) / 2.0
    if math.isfinite(rho.p_value) and rho.p_value <= alpha and rho.value > 0:
        return (f"The short-trial score predicts the {scale:g}x longer run: {rho.describe()}; "
                f"{n} points agree this well by chance with probability {rho.p_value:.2g} (at most {alpha:.3g})."), True
    if not rho.value > 0:
        return (f"The short-trial score does NOT predict the {scale:g}x longer run: {rho.describe()}. "
                "Do not trust this study's short-trial ranking at the longer budget."), False
    return (f"The short-trial score is NOT shown to predict the {scale:g}x longer run: "
            f"{rho.describe()}; {n} points agree this well by chance with probability "
            f"{rho.p_value:.2g} (more than {alpha:.3g}), so the short ranking may be unrelated to the "
            "long one. Confirm more points (--top) before trusting it."), False


Progress = Callable[[TrialRow, int, TrialResult], None]
Notice = Callable[[str], None]


def confirm_study(study: optuna.Study, *, top: int = 5, scale: float = 4.0, seeds: Sequence[int] = (0, 1, 2),
                  config: TrialConfig | None = None, device: str | None = None,
                  resamples: int = 2000, level: float = 0.95, bootstrap_seed: int = 0,
                  progress: Progress | None = None, time_limit: float | None = None,
                  permutations: int = PERMUTATIONS, notice: Notice | None = None,
                  before_training: Callable[[], None] | None = None) -> ConfirmResult:
    """Re-train the top points and named models with ``scale`` x tokens per seed; correlate.

    Uses ``run_trial`` with the study's trial config (or ``config``), ``tokens`` = scale x the
    study's budget, ``seed`` from ``seeds`` and ``time_limit_s`` from ``long_time_limit`` (the
    study's limit x ``scale``, or ``time_limit``; 0 = none). Points are ``confirm_points``'s.
    Correlations use points whose long runs completed for at least one seed. ``notice`` gets
    the plan (time limit and its source, named models left out and why) before training starts;
    ``before_training`` is called once every check has passed, before the first run (the CLI
    writes to the study there, so that a read-only storage stops it before hours of training
    whose results it could not store).
    """
    if not (math.isfinite(scale) and scale > 0):
        raise MirasError(f"--scale must be a positive, finite number, got {scale}")
    if not seeds:
        raise MirasError("the proxy check needs at least one seed")
    check_measure(study)  # long runs measured now against short ones measured otherwise: no
    objectives = study_objectives(study)
    objective = objectives[0]
    config = config or study_trial_config(study)
    limit, limit_source = long_time_limit(config, scale, time_limit)
    formula = stored_objective(study, objective.name)
    chosen, missing, left_out, passed = confirm_points(study, top)
    if not chosen and passed:
        raise nothing_rebuildable(study.study_name, passed, "nothing to confirm")
    if not chosen:
        raise MirasError(f"study '{study.study_name}' has no complete feasible trial to confirm")
    _check_long_budgets(chosen, config, scale)
    if notice is not None:
        notice(f"re-training {len(chosen)} point(s) x {len(seeds)} seed(s) with {scale:g}x the study's "
               f"tokens; time limit per run: {limit_source}")
        for trial in passed:
            notice(trial.left_out("confirm"))
        for name, why in left_out.items():
            notice(f"named model {name} is left out: {why}")
        for name in missing:
            notice(f"named model {name} is left out: the study has no trial of it")
    if before_training is not None:
        before_training()
    entries: list[ConfirmEntry] = []
    for row in chosen:
        point = row.model_point()
        tokens = _long_tokens(config, point, scale)
        entry = ConfirmEntry(row.number, row.label, row.anchor, row.values[0], tokens)  # type: ignore[index]
        for seed in seeds:
            long_config = config.model_copy(update={"tokens": tokens, "seed": int(seed), "time_limit_s": limit})
            result = run_trial(point, long_config, device=device)
            if progress is not None:
                progress(row, int(seed), result)
            if result.ok:
                entry.long.append(objective_value(objective, long_config, result, formula))
                entry.metrics.append({k: float(v) for k, v in result.metrics.items() if math.isfinite(v)})
            else:
                entry.failures.append(f"seed {seed}: {result.failure}: {result.reason}")
        entries.append(entry)
    usable = [e for e in entries if e.long]
    correlations: list[Correlation] = []
    if len(usable) >= 3:
        short = np.array([e.short for e in usable])
        long = np.array([e.long_mean for e in usable])
        correlations = rank_agreement(short, long, resamples=resamples, level=level, seed=bootstrap_seed,
                                      permutations=permutations)
    verdict, predicts = _verdict(correlations, len(usable), scale)
    return ConfirmResult(study.study_name, objective, scale, [int(s) for s in seeds], entries,
                         correlations, verdict, predicts, missing=missing, named_left_out=left_out,
                         time_limit_s=limit, time_limit_source=limit_source)


def store_fidelity(study: optuna.Study, result: ConfirmResult, config: TrialConfig | None = None) -> list[int]:
    """Store each re-trained point's long runs in the study as one higher-fidelity result of that
    point (study.fidelity: source "confirm", level = the token multiplier, seeds = the seeds that
    completed; values = the study's objectives on the seed-averaged metrics). Returns the new trial
    numbers; a point whose long metrics lack an objective is left out."""
    from miras_search.report.study_data import study_limits
    from miras_search.study.records import finite_metrics

    config = config or study_trial_config(study)
    trials = study.get_trials(deepcopy=False)
    limits = study_limits(study)
    added = []
    for entry in result.entries:
        if not entry.metrics:
            continue
        names = set.intersection(*(set(m) for m in entry.metrics))
        metrics = {n: float(np.mean([m[n] for m in entry.metrics])) for n in names}
        try:
            values = [_value(study, info, metrics) for info in study_objectives(study)]
        except KeyError:
            continue
        base = trials[entry.trial]
        point = base.user_attrs.get("point") or {}
        block = point.get("block") or {}
        fidelity = {"source": "confirm", "tokens": entry.tokens, "d_model": block.get("d_model"),
                    "n_layers": block.get("n_layers"), "seq_len": config.seq_len or (point.get("train") or {}).get("seq_len"),
                    "seeds": len(entry.metrics), "level": result.scale}
        attrs = {key: base.user_attrs[key] for key in ("point", "point_key", "axes", "anchor") if key in base.user_attrs}
        attrs.update(metrics=finite_metrics(metrics), fidelity=fidelity, confirm_of=base.number,
                     constraints=[lim.violation(metrics[lim.metric]) for lim in limits if lim.metric in metrics])
        study.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, values=values, user_attrs=attrs))
        added.append(len(trials) + len(added))
    return added


def _value(study: optuna.Study, info: ObjectiveInfo, metrics: dict[str, float]) -> float:
    formula = stored_objective(study, info.name)
    if formula is not None:
        return formula.value(metrics)
    return float(metrics[info.name])
