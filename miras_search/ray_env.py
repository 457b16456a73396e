"""What a local Ray instance needs of this machine, told in one paragraph when it is missing.

A local instance (``ray.init(address="local")``) keeps its session files and Unix sockets in
``<temp>/ray`` (``temp``: ``$RAY_TMPDIR``, else ``$TMPDIR`` on Linux, else /tmp) and, with the
token authentication Ray (2.5x and later) turns on for every new local instance, writes its
token to ``~/.ray/auth_token``. Ray's own failures there are raw tracebacks: an ``OSError`` that
an AF_UNIX path is too long (a deep TMPDIR), a ``FileNotFoundError`` (a TMPDIR or HOME that
cannot be created). ``local_start_problem`` finds these before Ray starts; ``ray_start_message``
words the ones Ray raises anyway. Nothing here imports Ray (the command line's OSError messages
use it too, on every command).
"""

from __future__ import annotations

import datetime
import errno
import os
import sys
import tempfile
from pathlib import Path

SOCKET_PATH_LIMIT = (104 if sys.platform == "darwin" else 108) - 1
"""The longest AF_UNIX socket path in bytes, as Ray checks it (``validate_socket_filepath``)."""
_LONGEST_SOCKET = "plasma_store"
"""The longest of the socket names a local instance makes in its session's ``sockets`` folder
(the other is ``raylet``)."""
_NO_RAY = ("No trial was run and nothing stored was lost; run the same command again once it is "
           "fixed (run, resume and scale go on from what is stored)")


def ray_temp_base() -> tuple[str, str]:
    """The folder under which Ray makes its ``ray`` temp folder, and the variable that chose it
    ('RAY_TMPDIR', 'TMPDIR', or '' for the default): Ray's own rule."""
    if "RAY_TMPDIR" in os.environ:
        return os.environ["RAY_TMPDIR"], "RAY_TMPDIR"
    if sys.platform.startswith("linux") and "TMPDIR" in os.environ:
        return os.environ["TMPDIR"], "TMPDIR"
    if sys.platform.startswith(("linux", "darwin")):
        return "/tmp", ""
    return tempfile.gettempdir(), ""


def ray_temp_dir() -> Path:
    """The folder a local Ray instance writes its sessions to."""
    return Path(os.path.join(ray_temp_base()[0], "ray"))


def ray_token_dir() -> Path | None:
    """``~/.ray``, where Ray keeps its authentication token (None when no home can be found)."""
    try:
        return Path.home() / ".ray"
    except RuntimeError:  # no HOME and no password entry
        return None


def longest_socket_path(pid: int | None = None) -> str:
    """The longest socket path a local instance started by this process makes:
    ``<temp>/ray/session_<date>_<time>_<microseconds>_<pid>/sockets/plasma_store``."""
    stamp = datetime.datetime(2000, 1, 1).strftime("%Y-%m-%d_%H-%M-%S_%f")  # fixed width
    session = f"session_{stamp}_{os.getpid() if pid is None else pid}"
    temp = os.path.expanduser(os.fspath(ray_temp_dir()))
    return os.path.join(temp, session, "sockets", _LONGEST_SOCKET)


def _chosen_by() -> str:
    """'TMPDIR (/path)' or the like: where Ray's temp folder comes from, for a message."""
    base, variable = ray_temp_base()
    return f"{variable}={base}" if variable else f"the default {base}"


def socket_path_message(length: int) -> str:
    """Why a local instance cannot start when its socket paths would be ``length`` bytes."""
    base, variable = ray_temp_base()
    room = SOCKET_PATH_LIMIT - (length - len(os.fsencode(base.rstrip("/") or "/")))
    return (f"cannot start a local Ray instance: its temp folder {ray_temp_dir()} (from "
            f"{_chosen_by()}) is too deep for Ray's sockets: their paths there would be {length} "
            f"bytes, and a Unix socket's path may have at most {SOCKET_PATH_LIMIT}. Set RAY_TMPDIR "
            f"(which Ray reads before TMPDIR) to a folder whose path has at most {max(room, 1)} "
            "bytes, e.g. `export RAY_TMPDIR=/tmp`"
            f"{' (or a shorter TMPDIR)' if variable == 'TMPDIR' else ''}, or run the trials in this "
            f"process without Ray (--inline). {_NO_RAY}.")


def temp_dir_message(error: OSError) -> str:
    """Why a local instance cannot make or write its temp folder (``error`` names the part)."""
    reason = (error.strerror or str(error)).lower()
    where = f" at {error.filename}" if error.filename else ""
    return (f"cannot start a local Ray instance: its temp folder {ray_temp_dir()} (from "
            f"{_chosen_by()}) cannot be used: {reason}{where}. Ray keeps its session files and "
            "sockets there: set RAY_TMPDIR (which Ray reads before TMPDIR) or TMPDIR to a short "
            "path of a folder you may write, e.g. `export RAY_TMPDIR=/tmp`, or run the trials in "
            f"this process without Ray (--inline). {_NO_RAY}.")


def token_dir_message(error: OSError) -> str:
    """Why a local instance cannot write its authentication token to ``~/.ray``."""
    reason = (error.strerror or str(error)).lower()
    where = f" at {error.filename}" if error.filename else ""
    token = ray_token_dir()
    home = f"HOME={os.environ['HOME']}" if os.environ.get("HOME") else "this user's home folder"
    return (f"cannot start a local Ray instance: Ray writes the token that authenticates its "
            f"processes to {token or '~/.ray'}/auth_token (in {home}), and cannot: {reason}{where}. "
            "Set HOME to a folder you may write, or start Ray without token authentication "
            "(`export RAY_AUTH_MODE=disabled`; then any process that reaches this machine's Ray "
            "ports may use the instance), or run the trials in this process without Ray "
            f"(--inline). {_NO_RAY}.")


def _on_the_way(filename: object, folder: Path | None) -> bool:
    """Whether ``filename`` is ``folder``, inside it, or a folder on the way to it."""
    if folder is None or not filename or not isinstance(filename, str | bytes | os.PathLike):
        return False
    path, folder = Path(os.path.abspath(os.fsdecode(filename))), Path(os.path.abspath(folder))
    return path == folder or path in folder.parents or folder in path.parents


def in_ray_temp(filename: object) -> bool:
    """Whether ``filename`` is Ray's temp folder, the folder that holds it, or inside it (an
    error there from any command is Ray's, not the study's)."""
    if not filename or not isinstance(filename, str | bytes | os.PathLike):
        return False
    path, temp = Path(os.path.abspath(os.fsdecode(filename))), Path(os.path.abspath(ray_temp_dir()))
    return path in (temp, temp.parent) or temp in path.parents


def in_ray_token_dir(filename: object) -> bool:
    """Whether ``filename`` is ``~/.ray`` or inside it."""
    token = ray_token_dir()
    if token is None or not filename or not isinstance(filename, str | bytes | os.PathLike):
        return False
    path, token = Path(os.path.abspath(os.fsdecode(filename))), Path(os.path.abspath(token))
    return path == token or token in path.parents


def _token_to_write() -> bool:
    """Whether starting a local instance writes a new token to ``~/.ray/auth_token``: token
    authentication is on (RAY_AUTH_MODE unset or 'token') and no token is found elsewhere."""
    mode = os.environ.get("RAY_AUTH_MODE")
    if mode is not None and mode.strip().lower() != "token":
        return False
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return False
    token = ray_token_dir()
    return token is not None and not (token / "auth_token").is_file()


def local_start_problem() -> str | None:
    """Why a local Ray instance started now would fail, found before starting it: its socket
    paths too long for its temp folder, a temp folder that cannot be made, a token folder
    (``~/.ray``) that cannot be made; None when none of these. Makes the two folders, as Ray
    would a moment later."""
    length = len(os.fsencode(longest_socket_path()))
    if length > SOCKET_PATH_LIMIT:
        return socket_path_message(length)
    try:
        os.makedirs(ray_temp_dir(), exist_ok=True)
    except OSError as error:
        return temp_dir_message(error)
    if _token_to_write():
        try:
            os.makedirs(ray_token_dir(), exist_ok=True)  # type: ignore[arg-type]
        except OSError as error:
            return token_dir_message(error)
    return None


SOCKET_TOO_LONG = "AF_UNIX path length"
"""What Ray's OSError for a socket path over ``SOCKET_PATH_LIMIT`` says."""


def ray_start_message(error: OSError) -> str | None:
    """The message for an OSError that starting a local Ray instance raised, when it is the
    environment's doing (a socket path too long, a temp or token folder that cannot be made or
    written); None otherwise."""
    text = str(error)
    if SOCKET_TOO_LONG in text:
        path = text.rsplit(": ", 1)[-1].strip()
        return socket_path_message(len(os.fsencode(path)) if path.startswith("/") else
                                   len(os.fsencode(longest_socket_path())))
    if error.errno not in _FOLDER_ERRORS:
        return None
    if _on_the_way(error.filename, ray_token_dir()):  # Ray writes the token first
        return token_dir_message(error)
    if _on_the_way(error.filename, ray_temp_dir()):
        return temp_dir_message(error)
    return None


_FOLDER_ERRORS = (errno.ENOENT, errno.ENOTDIR, errno.EEXIST, errno.EACCES, errno.EPERM, errno.EROFS,
                  errno.ENOSPC, errno.EDQUOT, errno.ENAMETOOLONG, errno.ELOOP, errno.EIO)
