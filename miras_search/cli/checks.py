"""Checks of command-line options that must fail before any work starts, not after it."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape

from miras_search.cli.app import errors
from miras_search.errors import MirasError

if TYPE_CHECKING:
    from collections.abc import Callable

    import optuna

STORAGE_HELP = ("Optuna storage: a URL, or a journal or SQLite file (default: the study file's "
                "`storage:`, else <run_dir>/<name>/study.journal).")
"""The --storage help of every command that takes it: one option, one meaning."""


def _file_in_the_way(folder: Path) -> Path | None:
    """The first existing path among ``folder`` and its parents, if it is not a folder."""
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            return None if candidate.is_dir() else candidate
    return None


def _prepare_folder(named: str, folder: Path) -> None:
    """Create ``folder`` and missing parents; ``named`` is how errors name the option and value."""
    blocking = _file_in_the_way(folder)
    if blocking == folder:
        raise MirasError(f"{named} is a file; give a folder")
    if blocking is not None:
        raise MirasError(f"{named}: {blocking} is a file, so no folder can be made under it; give a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise MirasError(f"{named}: cannot create the folder {folder} ({error.strerror or error}); "
                         "give a folder you can write to") from None
    if not os.access(folder, os.W_OK):
        raise MirasError(f"{named}: the folder {folder} is not writable; give a folder you can write to")


def output_folder(option: str, folder: Path) -> Path:
    """Create ``folder`` (and missing parents) for a command's output; MirasError if it cannot be.

    Commands call this before their work so that a bad ``--out`` costs nothing.
    """
    _prepare_folder(f"{option} {folder}", folder)
    return folder


def output_file(option: str, path: Path, example: str = "metrics.json",
                replaces: tuple[str, Callable[[Path], bool]] | None = None) -> Path:
    """Check that ``path`` can be written as a file (creating its missing parent folders);
    ``example`` is the file name a folder given instead is told to add (what the option writes).

    ``replaces``: (what the option writes, a test of an existing file): then ``path`` must not be
    a device, pipe or socket, and an existing non-empty file only a previous output of that kind
    (which the option overwrites); anything else is refused, so nothing else is lost."""
    named = f"{option} {path}"
    if path.is_dir():
        raise MirasError(f"{named} is a folder; give a file name, e.g. {path / example}")
    blocking = _file_in_the_way(path.parent)
    if blocking is not None:
        raise MirasError(f"{named}: {blocking} is a file, so no folder can be made under it; give a file "
                         "name in a folder")
    if replaces is not None and path.exists():
        _replaceable(named, path, *replaces)
    _prepare_folder(named, path.parent)
    if path.exists() and not os.access(path, os.W_OK):
        raise MirasError(f"{named}: the file is not writable; give a file you can write to")
    return path


def _replaceable(named: str, path: Path, kind: str, is_kind: Callable[[Path], bool]) -> None:
    """MirasError unless the existing ``path`` is an empty regular file or one of ``kind``."""
    if not path.is_file():
        raise MirasError(f"{named} exists and is not a regular file (a device, pipe or socket), so it is not "
                         f"replaced; give the path of a regular file (a new one, or {kind} to overwrite)")
    if path.stat().st_size > 0 and not is_kind(path):
        raise MirasError(f"{named}: the file exists and is not {kind}, so it is not overwritten; give "
                         "another path, or remove the file first")


def device_choice(value: str | None, option: str = "--device") -> str | None:
    """The device to pass to ``run_trial``: None for auto (the trial config decides), else checked.

    Allowed: auto, cpu, cuda (and cuda:N for a visible GPU N); cuda only where a GPU is visible
    (model.factory.pick_device, which the trial uses too, checks it before any work starts).
    """
    if value is None or value == "auto":
        return None
    from miras_search.model.factory import pick_device  # deferred: the CLI starts without torch

    pick_device(value, option)
    return value


def gpu_request(value: float | None) -> float | None:
    """Typer callback for --gpus-per-trial: a GPU request Ray can grant (see ParallelSpec)."""
    from miras_search.study.spec import gpus_per_trial_problem

    problem = None if value is None else gpus_per_trial_problem(value)
    if problem is not None:
        raise typer.BadParameter(problem)
    return value


def positive_finite(value: float | None) -> float | None:
    """Typer callback for budgets and multipliers: a positive, finite number (or not given)."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise typer.BadParameter(f"must be a positive, finite number, not {value}")
    return value


def warn_about_opened_study(study_arg: str | Path, opened: optuna.Study) -> None:
    """The warnings a read command gives once, after opening its study: trials whose stored
    values are not numbers (``warn_unreadable_trials``), and a study file that differs from the
    one the study was created with (``warn_if_study_file_changed``)."""
    warn_unreadable_trials(opened)
    warn_if_study_file_changed(study_arg, opened)


def warn_unreadable_trials(opened: optuna.Study) -> None:
    """One warning per trial whose stored objective values or metrics are not numbers (a journal
    or database edited by hand): what was stored and how the commands show the trial."""
    notes = getattr(opened, "unreadable_notes", None)
    for note in notes() if notes is not None else []:
        errors.print(f"[yellow]warning:[/] study '{escape(opened.study_name)}': {escape(note)}",
                     highlight=False, soft_wrap=True)


def warn_left_out(study_name: str, notes: list[str]) -> None:
    """One warning per trial a command left out (each note names the trial and why), e.g. a
    trial whose stored point cannot be rebuilt (``study.records.UnrebuildablePoint.left_out``)."""
    for note in notes:
        errors.print(f"[yellow]warning:[/] study '{escape(study_name)}': {escape(note)}",
                     highlight=False, soft_wrap=True)


def warn_if_study_file_changed(study_arg: str | Path, opened: optuna.Study) -> None:
    """A warning when ``study_arg`` is a study file that differs from the one ``opened`` was
    created with (``study.setup.file_changes``): most often another study of the same name found
    through a run_dir relative to another working directory."""
    from miras_search.study.setup import file_changes
    from miras_search.study.spec import load_study_file

    path = Path(study_arg)
    if not path.is_file():
        return
    try:
        spec = load_study_file(path)
        changes = file_changes(opened, spec, spec.load_space())
    except MirasError:
        return
    if changes:
        errors.print(
            f"[yellow]warning:[/] {escape(str(path))} differs from the file study "
            f"'{escape(opened.study_name)}' was created with ({escape('; '.join(changes))}); is this "
            "the study you mean? (a relative run_dir or storage is resolved from the working "
            "directory)", highlight=False, soft_wrap=True,
        )
