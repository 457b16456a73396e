"""Which trials' weights a study keeps: the ``keep`` best (``miras best``'s order); the files of
every other trial in the study's checkpoint folder are removed as better trials arrive."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import optuna

from miras_search.study.summary import ranked

_FILE = re.compile(r"trial(\d+)\.pt")


def checkpoint_path(folder: str | Path, number: int) -> Path:
    """The weights file of trial ``number`` in a study's checkpoint folder."""
    return Path(folder) / f"trial{number}.pt"


def keep_best_checkpoints(study: optuna.Study, folder: str | Path, keep: int) -> list[int]:
    """Delete the weights of trials outside the ``keep`` best; returns the trial numbers kept
    (those of the best whose file exists)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    best = {t.number for t in ranked(study, fidelity="base")[:keep]}
    kept = []
    for path in folder.iterdir():
        match = _FILE.fullmatch(path.name)
        if match is None:
            continue
        if int(match.group(1)) in best:
            kept.append(int(match.group(1)))
        else:
            with contextlib.suppress(FileNotFoundError):  # another driver removed it
                path.unlink()
    return sorted(kept)
