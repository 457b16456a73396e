"""How paths written by the user are read: ``~`` and where a relative input path is found.

Every path a user writes (a study file's ``space``, ``storage``, ``run_dir``, point files, data
and tokenizer paths; a command's ``--storage``, ``--out``, ``--csv``) reads a leading ``~`` (or
``~user``) as the home folder, as a shell does: a study's outputs then all go to one place (W&B
expands it on its own), and no folder named ``~`` is made in the working directory. Environment
variables (``$HOME/x``) are not expanded: a path means the same in every shell, job and worker;
write the path itself, or let the shell expand it on the command line.

An input path (one the study or config file reads) is found, when relative, beside the file that
names it; when that file is reached through a symbolic link, beside the link first and then
beside the file it points to; then in the working directory. Outputs (``run_dir``, a relative
``storage``) are taken from the working directory.
"""

from __future__ import annotations

import os
from pathlib import Path

from miras_search.errors import MirasError


def expand_home(raw: str) -> str:
    """``raw`` with a leading ``~`` / ``~user`` read as the home folder (``$VARS`` stay as
    written); anything else unchanged."""
    return os.path.expanduser(raw) if raw.startswith("~") else raw


def user_path(raw: str | os.PathLike[str]) -> Path:
    """The path the user wrote, its leading ``~`` expanded (``expand_home``)."""
    return Path(expand_home(os.fspath(raw)))


def input_folders(source: str | os.PathLike[str] | None) -> tuple[Path, ...]:
    """The folders a file's relative input paths are read from, in order: the file's own folder
    (as reached, through any link), then, when the file is a symbolic link to a file in another
    folder, that folder. Empty for no file (``None``, ``<study>``)."""
    if source is None or os.fspath(source) == "<study>":
        return ()
    file = Path(source).absolute()
    try:
        target = file.resolve(strict=True).parent
        same = target == file.parent.resolve()  # only the folder is reached through a link
    except (OSError, RuntimeError):  # a broken link or a loop: reading the file says so
        return (file.parent,)
    return (file.parent,) if same else (file.parent, target)


def input_places(raw: str, folders: tuple[Path, ...] | list[Path]) -> list[Path]:
    """Where the input path ``raw`` may be, in the order it is looked for: as written when it is
    absolute (``~`` expanded), else beside each folder of ``input_folders``, then in the working
    directory."""
    path = user_path(raw)
    if path.is_absolute():
        return [path]
    places = [folder / path for folder in folders] + [path.absolute()]
    return list(dict.fromkeys(places))


def describe_places(raw: str, places: list[Path], folders: tuple[Path, ...] | list[Path]) -> str:
    """Where ``input_places`` looked for ``raw``, for an error: 'at A' for an absolute path, else
    'beside the file that names it (A), beside the file its symbolic link points to (B) and in
    the working directory (C)'."""
    if user_path(raw).is_absolute():
        return f"at {places[0]}"
    labels = ["beside the file that names it", "beside the file its symbolic link points to"]
    words = [f"{labels[min(index, 1)] if index < len(folders) else 'in the working directory'} ({place})"
             for index, place in enumerate(places)]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def locate_input(raw: str, folders: tuple[Path, ...] | list[Path], what: str, *,
                 strict: bool = True) -> Path:
    """The first of ``input_places`` that exists (absolute). With ``strict``, MirasError naming
    every place looked in when none does; without, the first place (what the error would name)."""
    places = input_places(raw, folders)
    for place in places:
        if place.exists() or place.is_symlink():
            return place
    if strict:
        raise MirasError(f"{what} '{raw}' does not exist: looked {describe_places(raw, places, folders)}")
    return places[0]


def names_a_file(raw: str | os.PathLike[str]) -> bool:
    """Whether a command's study argument is a file path rather than a study name: a file, or a
    symbolic link that does not lead to a folder (a broken or looping link too: reading it then
    says what is wrong with it, where a study name would be looked up in the wrong place)."""
    path = Path(raw)
    return path.is_file() or (path.is_symlink() and not path.is_dir())
