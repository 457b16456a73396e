"""One-paragraph messages for what the machine refuses: a full disk, a file-size limit, a
read-only folder, a file the user may not write. Anything else stays a traceback (it is a bug,
not the user's setup)."""

from __future__ import annotations

import errno
import os

from miras_search.ray_env import (
    SOCKET_TOO_LONG,
    in_ray_temp,
    in_ray_token_dir,
    ray_start_message,
    ray_temp_dir,
    ray_token_dir,
)

__all__ = ["os_error_message", "ray_temp_dir"]

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
_RAY_TOKEN_FIX = ("Ray (with its token authentication, on by default) writes its token to "
                  "{token}/auth_token: set HOME to a folder you may write, or start Ray without "
                  "token authentication (`export RAY_AUTH_MODE=disabled`), or run the trials "
                  "without Ray (--inline)")


def os_error_message(error: OSError) -> str | None:
    """The message for ``error`` when it is one of the refusals above, else None."""
    if error.errno is None and SOCKET_TOO_LONG in str(error):  # Ray's, wherever it starts a node
        return ray_start_message(error)
    if error.errno in _PATHS:
        what, fix = _PATHS[error.errno]
        where = f" {_shortened(error.filename)}" if error.filename else ""
        return f"cannot use{where}: {what}. {fix[0].upper()}{fix[1:]}; nothing stored was changed."
    if error.errno not in _WHAT:
        return None
    what, fix = _WHAT[error.errno]
    if error.errno in _UNWRITABLE and in_ray_temp(error.filename):
        fix = _RAY_FIX.format(temp=ray_temp_dir())
    elif error.errno in _UNWRITABLE and in_ray_token_dir(error.filename):
        fix = _RAY_TOKEN_FIX.format(token=ray_token_dir())
    where = f" {error.filename}" if error.filename else " a file"  # a write names no file
    verb = "use" if error.errno in (errno.EACCES, errno.EPERM) else "write to"
    return (f"cannot {verb}{where}: {what}. Nothing already stored was lost: {_KEPT[_sqlite(error.filename)]} "
            f"{fix[0].upper()}{fix[1:]}, then run the command again (a study continues with "
            "`miras resume`).")


_KEPT = {False: ("a study's journal keeps every record written before this one, and a record cut "
                 "short is set aside the next time it is opened."),
         True: ("a SQLite database keeps every change committed before this one (the refused one "
                "is rolled back).")}


def _sqlite(filename: object) -> bool:
    """Whether ``filename`` is a SQLite database (a study's storage) or its rollback journal."""
    if not filename or not isinstance(filename, str | bytes | os.PathLike):
        return False
    name = os.fsdecode(filename).removesuffix("-journal").removesuffix("-wal")
    return name.endswith((".db", ".sqlite", ".sqlite3"))


def _shortened(filename: object, limit: int = 120) -> str:
    """A path for a message: its ends kept around '...' when it is longer than ``limit``."""
    text = os.fsdecode(filename) if isinstance(filename, str | bytes | os.PathLike) else str(filename)
    return text if len(text) <= limit else f"{text[:limit // 2]}...{text[-limit // 2:]}"
