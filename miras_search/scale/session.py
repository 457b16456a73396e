"""Open what a scale run needs: the study (a study file's, or a stand-alone scale study), the
ladder (the file's ``scale:`` block with command-line overrides), the points and the budget."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from miras_search.errors import MirasError
from miras_search.scale.points import ScalePoint, resolve_points
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
    data.update({k: v for k, v in overrides.items() if v is not None})
    return validate(ScaleSpec, data, source)


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


def prepare(study_path: Path | None, names: list[str], overrides: dict[str, Any], *, name: str = "scale",
            storage: str | None = None, run_dir: str = "runs") -> ScaleJob:
    """The scale job for a study file (its storage, trial settings and ``scale:`` block) or, with
    none, for the named points in a stand-alone study ``name`` (``<run_dir>/<name>/study.journal``)."""
    from miras_search.study.setup import create_study, storage_of
    from miras_search.study.spec import load_study_file
    from miras_search.study.storage import default_storage, normalise

    if study_path is not None:
        study_file = load_study_file(study_path)
        spec = merged_spec(study_file.scale, overrides, f"{study_path} (scale)")
        url = storage_of(study_file, storage)
        study = create_study(study_file, url, study_file.load_space())
        config = study_file.trial
        points = resolve_points(list(spec.points) + [n for n in names if n not in spec.points], spec.top, study,
                                Path(study_path).parent, tokens=config.tokens)
        return ScaleJob(study, url, spec, points, config, list(study_file.objectives),
                        study_file.out_dir() / "scale", study_file)
    spec = merged_spec(None, overrides, "miras scale")
    url = normalise(storage) if storage else default_storage(run_dir, name)
    study = _standalone_study(name, url, spec.metric)
    points = resolve_points(list(spec.points) + [n for n in names if n not in spec.points], spec.top, None, Path())
    return ScaleJob(study, url, spec, points, TrialConfig(), [Objective(metric=spec.metric)],
                    Path(run_dir) / name / "scale")
