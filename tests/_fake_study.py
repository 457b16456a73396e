"""A study in the storage contract's format whose trials carry given metrics, without training:
for tests of commands that only read a study (best, status, export, compare, CSV)."""

from __future__ import annotations

from pathlib import Path

import optuna
import yaml
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from miras_search.presets import preset
from miras_search.schema import AXES
from miras_search.space import SearchSpace
from miras_search.trial import MEASURE_VERSION

SPACE = {
    "type": "space", "name": "fake-space", "preset": "moneta",
    "base": {"block": {"d_model": 32, "n_heads": 2, "n_layers": 1, "max_seq_len": 64},
             "train": {"tokens": 1024, "batch_size": 2, "seq_len": 32, "chunk_size": 8}},
    "params": {"memory": {"kind": {"choice": {"matrix": {}, "mlp": {}}}},
               "bias": {"kind": {"choice": ["l2", "lp"]}},
               "retention": {"kind": {"choice": ["l2", "lq"]}}},
}


def fake_study(folder: Path, name: str = "fake", values: list[float] | None = None,
               point_name: str | None = None) -> Path:
    """A study file ``folder/<name>.yaml`` (journal storage beside it) with one complete trial
    per value of ``values`` (val_bpb, minimised), sampled points, and one failed trial."""
    values = values if values is not None else [3.5, 3.1, 3.3, 4.0]
    (folder / "space.yaml").write_text(yaml.safe_dump(SPACE, sort_keys=False))
    journal = folder / f"{name}.journal"
    study_file = {"type": "study", "name": name, "space": "space.yaml",
                  "objectives": [{"metric": "val_bpb", "direction": "minimize"}],
                  "trial": {"eval_batches": 1}, "pruner": {"kind": "none"}, "trials": len(values) + 1,
                  "storage": str(journal)}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(study_file, sort_keys=False))
    space = SearchSpace.from_dict(SPACE)
    study = optuna.create_study(study_name=name, storage=JournalStorage(JournalFileBackend(str(journal))),
                                directions=["minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    study.set_user_attr("study_file", study_file)
    study.set_user_attr("objectives", [{"name": "val_bpb", "direction": "minimize"}])
    study.set_user_attr("space", space.name)
    study.set_user_attr("measure_version", MEASURE_VERSION)
    for index, value in enumerate(values):
        trial = study.ask()
        point = space.point_from_trial(trial)
        if index == 0 and point_name:
            point = point.model_copy(update={"name": point_name})
        trial.set_user_attr("point", point.model_dump(mode="json"))
        trial.set_user_attr("point_key", f"key{index}")
        trial.set_user_attr("axes", {a: getattr(point, a).kind for a in AXES})
        trial.set_user_attr("anchor", None)
        trial.set_user_attr("metrics", {"val_bpb": value, "val_loss": value * 0.69, "tokens_per_s": 1000.0 + index,
                                        "params": 12345.0, "peak_mem_mb": 100.0 + index})
        trial.set_user_attr("curve", [[4, 5.0], [8, 4.5]])
        study.tell(trial, [value])
    failed = study.ask()
    failed.set_user_attr("point", preset("moneta").model_dump(mode="json"))
    failed.set_user_attr("failure", "nan")
    failed.set_user_attr("reason", "training loss is nan at step 3")
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    return path
