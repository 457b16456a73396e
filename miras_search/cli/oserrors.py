"""One-paragraph messages for what the machine refuses: a full disk, a read-only folder, a file
the user may not write. Anything else stays a traceback (it is a bug, not the user's setup)."""

from __future__ import annotations

import errno

_WHAT = {
    errno.ENOSPC: ("no space is left on the device", "free some space"),
    errno.EDQUOT: ("the disk quota is used up", "free some space or raise the quota"),
    errno.EROFS: ("the file system is read-only", "point run_dir (or --storage) at a writable folder"),
    errno.EACCES: ("permission is denied", "point run_dir (or --storage) at a folder you may write, "
                   "or fix the permissions"),
    errno.EPERM: ("the operation is not permitted", "point run_dir (or --storage) at a folder you "
                  "may write, or fix the permissions"),
}


def os_error_message(error: OSError) -> str | None:
    """The message for ``error`` when it is one of the refusals above, else None."""
    if error.errno not in _WHAT:
        return None
    what, fix = _WHAT[error.errno]
    where = f" {error.filename}" if error.filename else ""
    verb = "use" if error.errno in (errno.EACCES, errno.EPERM) else "write to"
    return (f"cannot {verb}{where}: {what}. Nothing already stored was lost: a study's journal keeps "
            "every record written before this one, and a record cut short is set aside the next "
            f"time it is opened. {fix[0].upper()}{fix[1:]}, then run the command again (a study "
            "continues with `miras resume`).")
