"""Parameter importances (Optuna's default evaluator), per parameter and summed per axis."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from miras_search.report.study_data import AXES, ObjectiveInfo
from miras_search.study.samplers import base_fidelity_view

QUIET_WARNINGS = (
    ".*low `target` values",  # which way is better: handled by the sign of the target
    "Some regimes for parameter",  # few trials per choice: the report says few trials are rough
    "The number of trials is too small",
    "Target and region quantiles select the same set",
)
"""Optuna's importance warnings (regexes) the report's own note covers; kept off the terminal."""


def axis_of(param: str) -> str:
    """The axis a parameter belongs to, from its name's last segment.

    ``memory.depth`` -> memory; ``bias.kind=lp/bias.p`` -> bias; ``one_of=deep/memory.depth`` ->
    memory; ``block.d_model`` -> block; a bare top-level ``one_of`` -> other.
    """
    leaf = param.rsplit("/", 1)[-1]
    head = leaf.split(".", 1)[0]
    return head if "." in leaf and head else "other"


@dataclass
class Importances:
    """Importances for one objective: per parameter, and the per-axis sums (each sums to 1), from
    ``trials`` complete trials with searched parameters."""

    objective: str
    params: dict[str, float]
    axes: dict[str, float]
    trials: int = 0


def group_by_axis(params: dict[str, float]) -> dict[str, float]:
    """Sum parameter importances per axis; the four Miras axes first, then the others, by name."""
    sums: dict[str, float] = {}
    for name, value in params.items():
        axis = axis_of(name)
        sums[axis] = sums.get(axis, 0.0) + value
    order = [a for a in AXES if a in sums] + sorted(a for a in sums if a not in AXES)
    return {a: sums[a] for a in order}


def study_importances(study: optuna.Study, objectives: list[ObjectiveInfo]) -> tuple[list[Importances], str | None]:
    """Importances for every objective, or ([], why not) when the study cannot give them yet.

    Uses ``optuna.importance.get_param_importances`` with its default evaluator, on complete
    trials; one ``target`` per objective (negated when maximised, since the default evaluator
    looks at what makes the target low).
    """
    study = base_fidelity_view(study)  # a point's longer / larger runs are not more samples of the space
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    searched = [t for t in complete if t.params]
    if len(searched) < 2:
        return [], (f"needs at least 2 complete trials with searched parameters (has {len(searched)}"
                    + (f" of {len(complete)} complete" if len(complete) != len(searched) else "") + ")")
    out: list[Importances] = []
    for index, objective in enumerate(objectives):
        # PED-ANOVA scores what leads to LOW target values: maximised objectives are negated
        sign = 1.0 if objective.minimize else -1.0
        target = lambda t, i=index, s=sign: s * t.values[i]  # noqa: E731
        try:
            with warnings.catch_warnings():
                for message in QUIET_WARNINGS:
                    warnings.filterwarnings("ignore", message=message)
                params = optuna.importance.get_param_importances(study, target=target)
        except (RuntimeError, ValueError, ZeroDivisionError) as error:
            return [], f"Optuna could not compute importances: {error}"
        params = {k: float(v) for k, v in params.items()}
        out.append(Importances(objective.name, params, group_by_axis(params), len(searched)))
    return out, None
