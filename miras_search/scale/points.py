"""The points a scale run trains: presets, point files, a study's best; and a point on a rung."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from pydantic import ValidationError

from miras_search.errors import ConfigError, MirasError, Problem
from miras_search.presets import PRESET_AXES, preset
from miras_search.schema import ModelPoint
from miras_search.schema.train import batch_cover_problem
from miras_search.study.records import nothing_rebuildable, point_key, rebuildable, stored_point
from miras_search.study.scale_spec import Rung, not_a_scale_point, scale_point_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScalePoint:
    """One point to scale: its label, the point itself (its identity in the study) and the
    trial number and budget it came from (None: not from the study)."""

    label: str
    point: ModelPoint
    anchor: str | None = None
    trial: int | None = None
    base_tokens: int | None = None
    stored_key: str | None = None  # the study trial's point_key (its identity there)

    @property
    def key(self) -> str:
        return self.stored_key or point_key(self.point)


def _study_anchor(study: optuna.Study | None, name: str) -> Any:
    """The study's (first complete) trial of the named model, if it has one."""
    if study is None:
        return None
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if trial.user_attrs.get("anchor") == name and trial.user_attrs.get("point") and (
                "fidelity" not in trial.user_attrs):
            return trial
    return None


def resolve_points(names: list[str], top: int, study: optuna.Study | None, base: tuple[Path, ...],
                   source: str = "scale.points", tokens: int | None = None,
                   from_file: int | None = None) -> list[ScalePoint]:
    """``names`` (presets or point files read beside the study file, ``base``: ``paths.input_folders``) and the study's ``top`` best.

    A preset the study ran as an anchor keeps the study's point (its identity there: the
    study's block); otherwise the preset at its own size (the ladder sets the size anyway).
    ``from_file``: how many of ``names`` (the first) a file's ``source`` lists (all by default);
    the others were named on `miras scale`'s command line, and an error says so.
    """
    from miras_search.points import load_point
    from miras_search.study.summary import ranked

    chosen: list[ScalePoint] = []
    for index, name in enumerate(names):
        if name in PRESET_AXES:
            trial = _study_anchor(study, name)
            if trial is not None:
                chosen.append(ScalePoint(name, stored_point(trial.user_attrs["point"], trial.number), name,
                                         trial.number, tokens, trial.user_attrs.get("point_key")))
            else:
                chosen.append(ScalePoint(name, preset(name), name, None, tokens))
            continue
        path = scale_point_file(name, base)
        if path is None:
            if from_file is None or index < from_file:
                raise ConfigError(source, [Problem(f"{index}", _no_point(name, base))])
            raise MirasError(f"miras scale {name}: {_no_point(name, base)}")
        chosen.append(ScalePoint(path.stem, load_point(path), None, None, tokens))
    if top:
        if study is None:
            raise MirasError("--top picks a study's best points: give a study file (or scale.points)")
        best, passed = rebuildable(ranked(study, fidelity="base"), top,
                                   lambda trial: stored_point(trial.user_attrs.get("point"), trial.number))
        if passed and not best:
            raise nothing_rebuildable(study.study_name, passed, "--top has no point to scale")
        for skipped in passed:
            log.warning("study '%s': %s", study.study_name, skipped.left_out("`miras scale --top`"))
        for trial, point in best:
            label = trial.user_attrs.get("anchor") or f"trial {trial.number}"
            chosen.append(ScalePoint(label, point, trial.user_attrs.get("anchor"), trial.number, tokens,
                                     trial.user_attrs.get("point_key")))
    unique: dict[str, ScalePoint] = {}
    for item in chosen:
        unique.setdefault(item.key, item)
    if not unique:
        raise MirasError("nothing to scale: name presets or point files, or give a study and --top N")
    return list(unique.values())


def _no_point(name: str, base: tuple[Path, ...]) -> str:
    """Why ``name`` names no point: a name that reads as a file's (.yaml / .yml, or a path) is a
    point file that is not there (or is a folder); anything else is neither a preset nor a file.
    ``base``: the folders a relative file is read beside (``paths.input_folders``)."""
    from miras_search.errors import did_you_mean
    from miras_search.paths import describe_places, input_places

    if Path(name).suffix.lower() not in (".yaml", ".yml") and "/" not in name and "\\" not in name:
        return not_a_scale_point(name, list(PRESET_AXES)) + did_you_mean(name, list(PRESET_AXES))
    places = input_places(name, base)
    folder = next((p for p in places if p.is_dir()), None)
    if folder is not None:
        return f"point file '{folder}' is a folder, not a point file (.yaml)"
    return (f"no such point file: '{name}' (looked {describe_places(name, places, base)}; a point "
            f"file is a .yaml; presets: {', '.join(PRESET_AXES)})")


def on_rung(point: ModelPoint, rung: Rung, label: str = "the point") -> ModelPoint:
    """``point`` at the rung's width, depth and heads (head dims follow d_model / n_heads)."""
    data = point.model_dump(mode="json")
    block = data["block"]
    block.update(d_model=rung.d_model, n_layers=rung.n_layers, n_heads=rung.heads, key_dim=None, value_dim=None,
                 max_seq_len=max(int(block.get("max_seq_len") or 0), rung.seq_len))
    try:
        return ModelPoint.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise MirasError(f"{label} cannot be built on rung {rung.key}: {where}: {first['msg']} "
                         "(change that rung's d_model / n_heads / head_dim)") from None


def compute_proxy(tokens: int, d_model: int, n_layers: int) -> float:
    """A size-and-budget measure shared by every architecture: tokens x 12 L d^2 (a transformer's
    weights); the ratio of two runs' proxies is a fidelity level."""
    return float(tokens) * 12.0 * n_layers * d_model * d_model


def batch_problem(target: ScalePoint, rung: Rung, batch_size: int) -> str | None:
    """Why ``rung`` is too small for one training batch of ``target`` (None when it is not)."""
    problem = batch_cover_problem(rung.tokens, batch_size, rung.seq_len, of=f" of {target.label}")
    if problem is None:
        return None
    return f"rung {rung.d_model},{rung.n_layers},{rung.seq_len},{rung.tokens}: {problem}"


def rung_problems(points: list[ScalePoint], rungs: list[Rung], batch_size: int | None) -> list[Problem]:
    """The rungs (``rungs.N``) too small for one batch of a point, each named once: the batch
    is ``batch_size`` (--batch-size, scale.batch_size or the study's trial.batch_size) or the
    point's own ``train.batch_size``. A rung a point cannot be built on is a MirasError (on_rung)."""
    problems = []
    for index, rung in enumerate(rungs):
        for target in points:
            on_rung(target.point, rung, target.label)
            problem = batch_problem(target, rung, batch_size or target.point.train.batch_size)
            if problem is not None:
                problems.append(Problem(f"rungs.{index}", problem))
                break
    return problems
