"""One-paragraph messages for what the machine refuses: a full disk, a file-size limit, a
read-only folder, a file the user may not write. Anything else stays a traceback (it is a bug,
not the user's setup)."""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

_WHAT = {
    errno.ENOSPC: ("no space is left on the device", "free some space"),
    errno.EDQUOT: ("the disk quota is used up", "free some space or raise the quota"),
    errno.EFBIG: ("the file reached this process's file-size limit (`ulimit -f`, which a shell, "
                  "a batch job or a container may set)",
                  "raise the limit (`ulimit -f unlimited` in the shell that runs miras, or ask "
                  "for a larger one in the job's settings)"),
    errno.EROFS: ("the file system is read-only", "point run_dir (or --storage) at a writable folder"),
    errno.EACCES: ("permission is denied", "point run_dir (or --storage) at a folder you may write, "
                   "or fix the permissions"),
    errno.EPERM: ("the operation is not permitted", "point run_dir (or --storage) at a folder you "
                  "may write, or fix the permissions"),
}
_PATHS = {
    errno.ENAMETOOLONG: ("the name is too long for the file system (a name part over 255 bytes, "
                         "or a path over 4096)", "give a shorter path"),
    errno.EIO: ("the device reported an input/output error", "check the device (a failing disk, "
                "or a special file such as /proc that cannot be written), or give another path"),
    errno.ELOOP: ("its symbolic links loop", "fix the links, or give another path"),
}
"""Errors of a path the user gave (an argument, --out, --csv), not of the machine's space."""
_UNWRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)
_RAY_FIX = ("Ray keeps its session files under {temp}: set TMPDIR (or RAY_TMPDIR, which Ray reads "
            "first) to a folder you may write, e.g. `export RAY_TMPDIR=$HOME/ray-tmp`, or run the "
            "trials without Ray (--inline)")


def ray_temp_dir() -> Path:
    """The folder a local Ray instance writes its sessions to: ``$RAY_TMPDIR/ray``, else
    ``$TMPDIR/ray`` (Linux), else ``/tmp/ray`` (Ray's own rule, without importing Ray)."""
    base = os.environ.get("RAY_TMPDIR")
    if base is None and sys.platform.startswith("linux"):
        base = os.environ.get("TMPDIR")
    return Path(base or "/tmp") / "ray"


def _in_ray_temp(filename: object) -> bool:
    """Whether ``filename`` is Ray's temp folder, the temp folder that holds it, or inside it."""
    if not filename or not isinstance(filename, str | bytes | os.PathLike):
        return False
    path, temp = Path(os.path.abspath(os.fsdecode(filename))), Path(os.path.abspath(ray_temp_dir()))
    return path in (temp, temp.parent) or temp in path.parents


def os_error_message(error: OSError) -> str | None:
    """The message for ``error`` when it is one of the refusals above, else None."""
    if error.errno in _PATHS:
        what, fix = _PATHS[error.errno]
        where = f" {_shortened(error.filename)}" if error.filename else ""
        return f"cannot use{where}: {what}. {fix[0].upper()}{fix[1:]}; nothing stored was changed."
    if error.errno not in _WHAT:
        return None
    what, fix = _WHAT[error.errno]
    if error.errno in _UNWRITABLE and _in_ray_temp(error.filename):
        fix = _RAY_FIX.format(temp=ray_temp_dir())
    where = f" {error.filename}" if error.filename else " a file"  # a write names no file
    verb = "use" if error.errno in (errno.EACCES, errno.EPERM) else "write to"
    return (f"cannot {verb}{where}: {what}. Nothing already stored was lost: a study's journal keeps "
            "every record written before this one, and a record cut short is set aside the next "
            f"time it is opened. {fix[0].upper()}{fix[1:]}, then run the command again (a study "
            "continues with `miras resume`).")


def _shortened(filename: object, limit: int = 120) -> str:
    """A path for a message: its ends kept around '...' when it is longer than ``limit``."""
    text = os.fsdecode(filename) if isinstance(filename, str | bytes | os.PathLike) else str(filename)
    return text if len(text) <= limit else f"{text[:limit // 2]}...{text[-limit // 2:]}"
