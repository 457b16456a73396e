"""Create, open and repair a study in its storage (the driver's first steps, also used by the CLI)."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from pydantic import BaseModel, ValidationError

from miras_search.data import DataMix
from miras_search.errors import MirasError
from miras_search.paths import names_a_file
from miras_search.presets import preset
from miras_search.redact import redact_tree, redact_url
from miras_search.schema import ModelPoint
from miras_search.space import SearchSpace
from miras_search.study.owner import alive_elsewhere
from miras_search.study.readable import ReadableStudy
from miras_search.study.records import flatten
from miras_search.study.samplers import make_pruner, make_sampler
from miras_search.study.spec import StudyFile, load_study_file
from miras_search.study.storage import (
    default_storage,
    is_url,
    local_file_missing,
    make_storage,
    normalise,
)
from miras_search.trial import MEASURE_VERSION, TrialConfig


def storage_of(study: StudyFile, override: str | None = None) -> str:
    """The study's storage: the override, else the file's ``storage``, else the default journal
    (``~`` read as the home folder in each). MirasError when it does not exist but a folder
    literally named ``~`` in the working directory holds it (``literal_home_copy``)."""
    chosen = override or study.storage
    url = normalise(chosen) if chosen else default_storage(study.run_dir, study.name)
    field = "--storage" if override else "storage" if study.storage else "run_dir"
    refuse_literal_home(chosen or f"{study.run_dir}/{study.name}/study.journal", url, field,
                        chosen or study.run_dir)
    return url


def refuse_literal_home(written: str, url: str, field: str, shown: str) -> None:
    """MirasError, changing nothing, when the storage path ``written`` (``field`` gave it, as
    ``shown``) starts with ``~`` and its storage ``url`` (in the home folder) does not exist, but
    ``literal_home_copy`` finds the file that an earlier version, which did not read ``~`` as the
    home folder, made: run, it would start the study over away from its trials."""
    copy = literal_home_copy(written)
    if copy is None or not local_file_missing(url):
        return
    raise MirasError(
        f"{field} '{shown}' starts with '~', the home folder, so the study's storage is {url}, "
        f"which does not exist; but {copy} does: an earlier miras-search took '~' as a folder of "
        f"that name in the working directory. Nothing was changed: move {copy} to {url} (and the "
        "rest of that '~' folder into the home folder), or write the path as './~/...' to keep "
        "using it where it is"
    )


def literal_home_copy(written: str) -> Path | None:
    """The file a path starting with ``~`` (not a URL) named before ``~`` was read as the home
    folder: the same path under a folder literally named ``~`` in the working directory, when it
    exists; else None."""
    if not written.startswith("~") or is_url(written):
        return None
    literal = Path(written).absolute()  # pathlib leaves '~' as written
    return literal if literal.exists() else None


def create_study(study: StudyFile, storage: str, space: SearchSpace) -> ReadableStudy:
    """The Optuna study named after the file (loaded when it exists), with its sampler and pruner,
    as a ``ReadableStudy`` (a trial whose stored values were edited into non-numbers reads as an
    unreadable failed trial; its ``notes`` say which).

    A new study gets the user attrs ``study_file``, ``objectives`` and ``space``; an existing one
    must have the same objectives, or MirasError (a different study under the same name).
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    backend = make_storage(storage)
    sampler, pruner = make_sampler(study, space), make_pruner(study.pruner)
    optuna.create_study(study_name=study.name, storage=backend, directions=study.directions,
                        sampler=sampler, pruner=pruner, load_if_exists=True)
    created = ReadableStudy(study.name, backend, sampler=sampler, pruner=pruner)
    stored = created.user_attrs.get("objectives")
    data_hash = data_fingerprint(study)
    if stored is None:
        _name_metrics(created, [record["name"] for record in study.objective_records])
        created.set_user_attr("study_file", redact_tree(study.model_dump(mode="json")))  # no passwords
        created.set_user_attr("objectives", study.objective_records)
        created.set_user_attr("space", space.name)
        created.set_user_attr("space_hash", space_fingerprint(space))
        created.set_user_attr("data_hash", data_hash)
        created.set_user_attr("measure_version", MEASURE_VERSION)
    check_measure(created)
    changes = file_changes(created, study, space, data_hash, refusing=True)
    if stored is not None and stored != study.objective_records and not objective_changes(created, study):
        changes.append(f"objectives: {json.dumps(stored)} -> {json.dumps(study.objective_records)}")
    if changes:  # every change at once: one edit and one rerun, not one refusal per change
        raise MirasError(
            f"study '{study.name}' in {redact_url(storage)} was created from a study file with other "
            f"objectives, trial settings or another space ({'; '.join(changes)}): trials measured "
            "under both could not be ranked together; restore them, or give the study a new name "
            "or storage ('name:', 'storage:' or --storage) to start a new one"
        )
    # a run that continues the study draws anew (samplers.run_seed); queued trials (anchors)
    # were never drawn: a run stopped before any trial started is rerun as from scratch
    stored_trials = sum(t.state != TrialState.WAITING for t in created.get_trials(deepcopy=False))
    if stored_trials:
        created.sampler = make_sampler(study, space, stored_trials)
    return created


def _name_metrics(study: optuna.Study, names: list[str]) -> None:
    """Name the objectives in the storage, so optuna-dashboard shows "val_bpb", not "Objective 0"."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(names)


UNMEASURED_TRIAL_FIELDS = frozenset({"threads", "device", "time_limit_s", "max_loss", "report_every", "objective",
                                     "memory_limit_gb"})
"""Trial settings that route, bound or prune a trial but do not change what a finished one
measures (the study's own objectives are checked apart)."""


def data_fingerprint(study: StudyFile) -> str | None:
    """``DataMix.fingerprint`` of the study's data (its text stores built or opened from the
    cache), or None when the data cannot be opened here: the trials then fail with the reason."""
    try:
        return DataMix(list(study.trial.data)).fingerprint()
    except (MirasError, OSError, ValueError):
        return None


def space_fingerprint(space: SearchSpace) -> str:
    """A hash of what decides the space's points: its base point (preset included), parameters
    and constraints; not its name, description or anchors, nor how the file writes them."""
    decisive = {"base": space.given_base, "params": _plain(space.spec.params),
                "constraints": _plain(space.spec.constraints)}
    return hashlib.sha256(json.dumps(decisive, sort_keys=True).encode()).hexdigest()[:16]


def _plain(node: object) -> object:
    """Parameter-tree nodes (pydantic models, mappings, sequences) as plain JSON values."""
    if isinstance(node, BaseModel):
        return {type(node).__name__: _plain(dict(node))}
    if isinstance(node, dict):
        return {json.dumps(key): _plain(value) for key, value in node.items()}
    if isinstance(node, list | tuple):
        return [_plain(value) for value in node]
    return node


def _shown(value: object, limit: int = 60) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def file_changes(study: optuna.Study, spec: StudyFile, space: SearchSpace | None = None,
                 data_hash: str | None = None, refusing: bool = False) -> list[str]:
    """Where ``spec`` (and its ``space``, and its data's ``data_fingerprint``) differs from what
    ``study`` was created with, in what decides what its trials measure: the trial settings
    (budget, data, evaluation; not those in UNMEASURED_TRIAL_FIELDS), the seeds, the space's
    content and the data's, and the objectives (``objective_changes``); e.g.
    ["trial.eval_batches: 2 -> 8"]. What is not given, or what the study does not store (made by
    other code, or by an older version), is not compared. ``refusing``: for a run that refuses
    the file (the objective entries do not say which objectives are used)."""
    stored = study.user_attrs.get("study_file")
    if not isinstance(stored, dict) or not isinstance(stored.get("trial"), dict):
        return []
    current = redact_tree(spec.model_dump(mode="json"))  # as stored
    try:  # through today's schema, so that a field added since (with its default) is no change
        old_trial = TrialConfig.model_validate(stored["trial"]).model_dump(mode="json")
    except ValidationError:
        old_trial = stored["trial"]
    before = flatten({k: v for k, v in old_trial.items() if k not in UNMEASURED_TRIAL_FIELDS}, "trial.")
    after = flatten({k: v for k, v in current["trial"].items() if k not in UNMEASURED_TRIAL_FIELDS}, "trial.")
    before["seeds"], after["seeds"] = stored.get("seeds"), current.get("seeds")
    changes = [f"{key}: {_shown(before.get(key))} -> {_shown(after.get(key))}"
               for key in sorted(set(before) | set(after)) if before.get(key) != after.get(key)]
    stored_space = study.user_attrs.get("space_hash")
    if space is not None and stored_space is not None and stored_space != space_fingerprint(space):
        changes.append(f"the space {spec.space} (its base, parameters or constraints changed)")
    stored_data = study.user_attrs.get("data_hash")
    if data_hash is not None and stored_data is not None and stored_data != data_hash:
        changes.append("the data's content (a data file added, edited or removed, or the "
                       "embedded corpus of another Python)")
    return changes + objective_changes(study, spec, refusing)


def objective_changes(study: optuna.Study, spec: StudyFile, refusing: bool = False) -> list[str]:
    """Where ``spec``'s objectives differ from those ``study`` stores (its ``objectives`` user
    attr), one entry per objective, saying that the stored ones are those used (Optuna's study
    keeps its directions: read commands rank by them; ``run`` and ``resume`` refuse the file);
    e.g. ["objective val_bpb: direction minimize -> maximize (the stored minimize is used)"]."""
    stored = study.user_attrs.get("objectives")
    current = spec.objective_records
    if not isinstance(stored, list) or not all(isinstance(r, dict) for r in stored) or stored == current:
        return []
    if [r.get("name") for r in stored] != [r["name"] for r in current]:
        before = ", ".join(f"{r.get('name')} ({r.get('direction')})" for r in stored)
        after = ", ".join(f"{r['name']} ({r['direction']})" for r in current)
        return [f"objectives: {before} -> {after}" + ("" if refusing else " (the stored objectives are used)")]
    return [f"objective {new['name']}: direction {old.get('direction')} -> {new['direction']}"
            + ("" if refusing else f" (the stored {old.get('direction')} is used)")
            for old, new in zip(stored, current, strict=True) if old.get("direction") != new["direction"]]


def check_measure(study: optuna.Study) -> None:
    """MirasError when the study's finished trials were measured otherwise than trials are now
    (``trial.MEASURE_VERSION``): new trials could not be ranked against them. A study without
    finished trials is simply brought up to date."""
    stored = study.user_attrs.get("measure_version", 1)  # studies from before the attribute
    if stored == MEASURE_VERSION:
        return
    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    if not finished:
        study.set_user_attr("measure_version", MEASURE_VERSION)
        return
    if isinstance(stored, int) and stored > MEASURE_VERSION:
        raise MirasError(
            f"study '{study.study_name}' holds {len(finished)} trial(s) measured by a newer "
            f"miras-search (measure version {stored}; this one measures version {MEASURE_VERSION}); "
            "run it with that version, or give the study a new name or storage"
        )
    raise MirasError(
        f"study '{study.study_name}' holds {len(finished)} trial(s) measured by an earlier "
        f"miras-search (measure version {stored}; this one measures version {MEASURE_VERSION}: "
        "val_bpb is bits per byte over the bytes the tokens stand for, every trial is evaluated "
        "on one validation set, and the text split keeps near-duplicates together), so new "
        "trials could not be ranked against them; give the study a new name or storage to run "
        "it again (report, best, status and export still read the old trials)"
    )


CRASH_LIMIT = 2
"""A point whose driver died this many times while it trained is not run again ('crashed')."""


def check_no_live_driver(study: optuna.Study) -> None:
    """MirasError, changing nothing, when a driver that is still alive on this host runs some of
    the study's trials: a second driver would fail trials that the first one is training."""
    owners: dict[int, list[int]] = {}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        driver = trial.user_attrs.get("driver")
        if alive_elsewhere(driver):
            owners.setdefault(int(driver["pid"]), []).append(trial.number)
    if owners:
        pid, numbers = next(iter(owners.items()))
        raise MirasError(
            f"study '{study.study_name}' is being run by another driver (pid {pid} on this host, "
            f"running trial(s) {', '.join(map(str, numbers))}): wait for it to finish, or stop it "
            f"(Ctrl-C in its terminal, or kill {pid}) and then `miras resume` the study"
        )


def recover_interrupted(study: optuna.Study, reason: str) -> tuple[list[int], list[dict[str, Any]]]:
    """Trials left RUNNING by a dead driver: mark them failed ("interrupted") and return them as
    entries to queue again (``requeue_entry``), so a resumed run measures them under new numbers.

    A driver that died while it ran a trial in its own process (``--inline``) may have been killed
    by that very trial (out of memory): each entry counts such deaths (``driver_died``), the driver
    queues the entries behind other work, and a point whose driver died ``CRASH_LIMIT`` times is
    failed as 'crashed' and not queued again. (A trial on a Ray worker did not take the driver
    down: its count does not grow.) Returns (the numbers recovered, the entries to queue).
    """
    check_no_live_driver(study)
    numbers, entries = [], []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        deaths = int(trial.user_attrs.get("driver_died") or 0) + _ran_in_driver(trial)
        crashed = deaths >= CRASH_LIMIT
        params = fail_running_trial(study, trial, "crashed" if crashed else "interrupted", (
            f"{reason}, for the {deaths}th time with this point (out of memory?): it is not run again"
            if crashed else reason))
        numbers.append(trial.number)
        if not crashed:
            entries.append({"params": params, "anchor": trial.user_attrs.get("anchor"),
                            "number": trial.number, "driver_died": deaths})
    return numbers, entries


def fail_running_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial, failure: str,
                       reason: str) -> dict[str, Any]:
    """Fail a RUNNING ``trial`` with ``failure`` and ``reason`` recorded; return the params to
    queue it again with (those fixed when it was enqueued, then those sampled: it may have been
    asked and not yet sampled)."""
    study._storage.set_trial_user_attr(trial._trial_id, "failure", failure)
    study._storage.set_trial_user_attr(trial._trial_id, "reason", reason)
    study.tell(trial.number, state=TrialState.FAIL)
    return {**trial.system_attrs.get("fixed_params", {}), **trial.params}


def _ran_in_driver(trial: optuna.trial.FrozenTrial) -> int:
    """1 when the trial ran inside its driver's own process, else 0."""
    driver, worker = trial.user_attrs.get("driver") or {}, trial.user_attrs.get("worker") or {}
    return int(bool(driver) and driver.get("pid") == worker.get("pid") and driver.get("host") == worker.get("host"))


def requeue_entry(study: optuna.Study, entry: dict[str, Any]) -> None:
    """Queue a trial that ``recover_interrupted`` returned (or the driver's retry of a trial whose
    worker died: ``retry_of``)."""
    extra = {key: entry[key] for key in ("driver_died", "retry_of") if key in entry}
    requeue(study, entry["params"], entry.get("anchor"), entry["number"], extra)


def requeue(study: optuna.Study, params: dict, anchor: str | None, number: int,
            extra: dict[str, Any] | None = None) -> None:
    attrs = {"requeued_from": number, **(extra or {})}
    if anchor is not None:
        attrs["anchor"] = anchor
    study.enqueue_trial(params, user_attrs=attrs)


def enqueue_anchors(study: optuna.Study, space: SearchSpace, names: list[str],
                    files: dict[str, ModelPoint] | None = None) -> list[str]:
    """Queue each anchor once per study (idempotent across resumes), before any sampling.

    A preset whose four axes lie in the space is queued with its parameters (the sampler learns
    from it); one outside the space is queued without parameters and built from the preset's axes
    on the space's block and training settings. A point file (``files[name]``, as Optuna users
    enqueue their own points) is measured as written, with the study's trial budget: queued with
    its parameters when the space holds exactly that point, else without.
    """
    files = files or {}
    seen = {t.user_attrs.get("anchor") for t in study.get_trials(deepcopy=False)}
    queued = []
    for name in names:
        if name in seen:
            continue
        if name in files:
            params = space.encode(files[name]) or {}
        else:
            params = space.encode(preset(name), axes_only=True) or {}
        study.enqueue_trial(params, user_attrs={"anchor": name})
        queued.append(name)
    return queued


def set_aside_dropped_anchors(study: optuna.Study, names: list[str]) -> list[str]:
    """Queued anchors that the study file no longer names (``names``: its sampler.anchors, after
    an edit): each WAITING trial of such an anchor is failed as 'dropped', which does not count
    against the trial budget, so that it does not run (and ahead of the file's anchors, as queued
    trials run first). Returns the anchors set aside, in queue order."""
    dropped = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        anchor = trial.user_attrs.get("anchor")
        if anchor is None or anchor in names:
            continue
        study._storage.set_trial_user_attr(trial._trial_id, "failure", "dropped")
        study._storage.set_trial_user_attr(trial._trial_id, "reason", (
            f"anchor '{anchor}' was queued, and the study file's sampler.anchors no longer names it"))
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        dropped.append(anchor)
    return dropped


def open_study(study_file_or_name: str | Path | StudyFile, storage: str | None = None) -> ReadableStudy:
    """An existing study, by study file (path or StudyFile) or by name (+ storage).

    With a name and no storage, the default journal ``runs/<name>/study.journal`` is used.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if isinstance(study_file_or_name, StudyFile):
        name, url = study_file_or_name.name, storage_of(study_file_or_name, storage)
    elif str(study_file_or_name).endswith((".yaml", ".yml")) or names_a_file(study_file_or_name):
        spec = load_study_file(study_file_or_name)
        name, url = spec.name, storage_of(spec, storage)
    else:
        name = str(study_file_or_name)
        url = normalise(storage) if storage else default_storage("runs", name)
        if storage:
            refuse_literal_home(storage, url, "--storage", storage)
    if local_file_missing(url):
        raise MirasError(
            f"no study '{name}' yet: its storage {url} does not exist (run it first; run_dir and a "
            "relative storage path are taken from the working directory, so run the commands of a "
            "study from one folder, or give it an absolute run_dir)"
        )
    return load_existing(name, make_storage(url), f"the storage {url}")


def load_existing(name: str, storage: str | optuna.storages.BaseStorage, where: str) -> ReadableStudy:
    """The study ``name`` in ``storage``, as the read commands see it (``ReadableStudy``: a trial
    whose stored values are not numbers is mended, its ``notes`` say which); MirasError naming the
    studies it does hold (``where`` names the storage in the message)."""
    try:
        return ReadableStudy(study_name=name, storage=storage)
    except KeyError:
        known = ", ".join(s.study_name for s in optuna.get_all_study_summaries(storage))
        held = f"it holds: {known}" if known else "it holds none yet (a run that is starting creates it)"
        raise MirasError(f"{where} holds no study named '{name}'; {held}") from None
