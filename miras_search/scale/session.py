"""Open what a scale run needs: the study (a study file's, or a stand-alone scale study), the
ladder (the file's ``scale:`` block with command-line overrides), the points and the budget."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from miras_search.errors import ConfigError, MirasError, Problem
from miras_search.paths import input_folders, user_path
from miras_search.scale.points import ScalePoint, resolve_points, rung_problems
from miras_search.study.scale_spec import ScaleSpec
from miras_search.study.spec import StudyFile
from miras_search.trial import MEASURE_VERSION, Objective, TrialConfig
from miras_search.validation import validate


@dataclass
class ScaleJob:
    study: optuna.Study
    storage: str
    spec: ScaleSpec
    points: list[ScalePoint]
    config: TrialConfig
    objectives: list[Objective]
    out_dir: Path
    study_file: StudyFile | None = None


def merged_spec(base: ScaleSpec | None, overrides: dict[str, Any], source: str) -> ScaleSpec:
    """``base`` (a study file's block, or the defaults) with the given fields replaced, validated
    as a whole: a bad ladder is a ConfigError naming the field."""
    data = base.model_dump(mode="json", exclude_unset=True) if base is not None else {}
    given = {k: v for k, v in overrides.items() if v is not None}
    data.update(given)
    try:
        return validate(ScaleSpec, data, source)
    except ConfigError as error:  # a value from the command line is named as its option
        raise ConfigError(error.source, [_as_option(p, given) for p in error.problems]) from None


_OPTIONS = {"batch_size": "--batch-size", "seeds": "--seeds", "target_flops": "--target-flops",
            "metric": "--metric", "top": "--top", "points": "the points named"}


def _as_option(problem: Problem, given: dict[str, Any]) -> Problem:
    """``problem`` with its path as the command line's option when the value came from there:
    ``batch_size`` -> ``--batch-size``, ``rungs.1.d_model`` -> ``--rung 7,1,32,2048 (the 2nd):
    d_model``."""
    parts = problem.path.split(".")
    if parts[0] not in given:
        return problem
    if parts[0] == "rungs" and len(parts) > 1 and parts[1].isdigit() and int(parts[1]) < len(given["rungs"]):
        rung = given["rungs"][int(parts[1])]
        text = ",".join(str(rung.get(k)) for k in ("d_model", "n_layers", "seq_len", "tokens"))
        where = f"--rung {text} (number {int(parts[1]) + 1})" + (f": {'.'.join(parts[2:])}" if parts[2:] else "")
    elif parts[0] == "rungs":
        where = "--rung" + (f" {'.'.join(parts[1:])}" if parts[1:] else "")
    else:
        where = _OPTIONS.get(parts[0], parts[0]) + (f" {'.'.join(parts[1:])}" if parts[1:] else "")
    return Problem(where, problem.message, problem.line)


def _standalone_study(name: str, storage: str, metric: str) -> optuna.Study:
    from miras_search.study.setup import check_measure
    from miras_search.study.storage import make_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=make_storage(storage), directions=["minimize"],
                                load_if_exists=True)
    records = [{"name": metric, "direction": "minimize"}]
    stored = study.user_attrs.get("objectives")
    if stored is None:
        study.set_user_attr("objectives", records)
        study.set_user_attr("measure_version", MEASURE_VERSION)
        study.set_user_attr("kind", "scale")
    elif stored != records:
        raise MirasError(f"the scale study '{name}' measures {stored[0]['name']}, not {metric}: give "
                         "--metric as before, or another --name")
    check_measure(study)
    return study


@dataclass
class ScalePlan:
    """What a scale run will do, checked before any storage is opened or created: the ladder, the
    points named (presets, point files), the trial settings, the storage URL and the output folder."""

    spec: ScaleSpec
    names: list[str]
    config: TrialConfig
    objectives: list[Objective]
    storage: str
    out_dir: Path
    source: str
    name: str
    base: tuple[Path, ...] = ()
    study_file: StudyFile | None = None
    overrides: dict[str, Any] | None = None  # the command line's (named as options in errors)


def _check_name(name: str) -> None:
    """MirasError unless ``name`` can name the stand-alone study's folder (as a study file's)."""
    from miras_search.study.spec import name_problem

    problem = name_problem(name)
    if problem is not None:
        raise MirasError(f"--name {name!r}: {problem}")


def _check_metric(spec: ScaleSpec, config: TrialConfig, overrides: dict[str, Any], source: str) -> None:
    """ConfigError (or, for --metric, MirasError) when the fitted metric is none a trial measures."""
    from miras_search.trial.config import metric_problem

    problem = metric_problem(spec.metric, config.metric_names())
    if problem is None:
        return
    if overrides.get("metric") is not None:
        raise MirasError(f"--metric {spec.metric}: {problem}")
    raise ConfigError(source, [Problem("metric", problem)])


def _check_rungs(points: list[ScalePoint], spec: ScaleSpec, config: TrialConfig, source: str,
                 given: dict[str, Any] | None = None) -> None:
    """ConfigError naming each rung too small for one batch of a point (scale.points.rung_problems);
    a rung or batch size from the command line (``given``) is named as its option."""
    problems = rung_problems(points, list(spec.rungs), spec.batch_size or config.batch_size)
    if not problems:
        return
    given = {k: v for k, v in (given or {}).items() if v is not None}
    if "batch_size" in given:
        problems = [Problem(p.path, p.message.replace(f"(batch_size {given['batch_size']} x",
                                                      f"(--batch-size {given['batch_size']} x"), p.line)
                    for p in problems]
    raise ConfigError(source, [_as_option(p, given) for p in problems])


def plan_scale(study_path: Path | None, names: list[str], overrides: dict[str, Any], *, name: str = "scale",
               storage: str | None = None, run_dir: str = "runs") -> ScalePlan:
    """Read and check everything a scale run needs, creating nothing: the study file (if any)
    and its ``scale:`` block with ``overrides``, the stand-alone study's ``name``, the metric,
    the named points and every rung against one batch of each point."""
    from miras_search.study.setup import storage_of
    from miras_search.study.spec import load_study_file
    from miras_search.study.storage import default_storage, normalise

    if study_path is not None:
        study_file = load_study_file(study_path)
        source = f"{study_path} (scale)"
        spec = merged_spec(study_file.scale, overrides, source)
        plan = ScalePlan(spec, _wanted(spec, names), study_file.trial.located(), list(study_file.objectives),
                         storage_of(study_file, storage), study_file.out_dir() / "scale", source, study_file.name,
                         input_folders(study_path), study_file)
    else:
        _check_name(name)
        spec = merged_spec(None, overrides, "miras scale")
        url = normalise(storage) if storage else default_storage(run_dir, name)
        plan = ScalePlan(spec, _wanted(spec, names), TrialConfig(), [Objective(metric=spec.metric)], url,
                         user_path(run_dir) / name / "scale", "miras scale", name)
    plan.overrides = overrides
    _check_metric(plan.spec, plan.config, overrides, plan.source)
    if study_path is None and plan.spec.top:
        raise MirasError("--top picks a study's best points: give a study file (or scale.points)")
    named = resolve_points(plan.names, 0, None, plan.base, from_file=len(plan.spec.points)) if plan.names else []
    _check_rungs(named, plan.spec, plan.config, plan.source, overrides)
    if not named and not plan.spec.top:
        raise MirasError("nothing to scale: name presets or point files, or give a study and --top N")
    return plan


def _wanted(spec: ScaleSpec, names: list[str]) -> list[str]:
    """The ladder's points, then the command line's that it does not list."""
    return list(spec.points) + [n for n in names if n not in spec.points]


def open_scale(plan: ScalePlan) -> ScaleJob:
    """The scale job of a checked ``plan``: its study opened (created when new), the points
    resolved against it (a preset the study ran keeps the study's point; the study's best
    ``top``) and their rungs checked, against one batch and against the batch size the study's
    stored rungs of each point trained at (scale.runner.batch_size_mismatch)."""
    from miras_search.study.setup import create_study

    if plan.study_file is not None:
        study = create_study(plan.study_file, plan.storage, plan.study_file.load_space())
        tokens = plan.config.tokens
    else:
        study, tokens = _standalone_study(plan.name, plan.storage, plan.spec.metric), None
    points = resolve_points(plan.names, plan.spec.top, study if plan.study_file is not None else None, plan.base,
                            tokens=tokens, from_file=len(plan.spec.points))
    _check_rungs(points, plan.spec, plan.config, plan.source, plan.overrides)
    from miras_search.scale.runner import batch_size_mismatch

    keep_apart = (f"another --name (e.g. --name {plan.name}-b{plan.spec.batch_size or plan.config.batch_size or 'N'})"
                  if plan.study_file is None else "a study file of another `name` (another study)")
    batch_size_mismatch(study, points, plan.spec, plan.config, keep_apart)
    return ScaleJob(study, plan.storage, plan.spec, points, plan.config, plan.objectives, plan.out_dir,
                    plan.study_file)


def prepare(study_path: Path | None, names: list[str], overrides: dict[str, Any], *, name: str = "scale",
            storage: str | None = None, run_dir: str = "runs") -> ScaleJob:
    """The scale job for a study file (its storage, trial settings and ``scale:`` block) or, with
    none, for the named points in a stand-alone study ``name`` (``<run_dir>/<name>/study.journal``).
    Everything is checked (plan_scale) before the study's storage is opened or created."""
    return open_scale(plan_scale(study_path, names, overrides, name=name, storage=storage, run_dir=run_dir))
