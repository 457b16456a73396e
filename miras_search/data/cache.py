"""Where built data lives on disk: ``$MIRAS_CACHE_DIR``, else ``$XDG_CACHE_HOME/miras-search``,
else ``~/.cache/miras-search``."""

from __future__ import annotations

import errno
import os
from pathlib import Path

ENV_VAR = "MIRAS_CACHE_DIR"


def cache_root(override: str | os.PathLike[str] | None = None) -> Path:
    """The cache root by the rules above, without creating it."""
    if override is not None:
        root = Path(override)
    elif os.environ.get(ENV_VAR):
        root = Path(os.environ[ENV_VAR])
    else:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        root = Path(base) / "miras-search"
    return root.expanduser()


def cache_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """The cache root (created if missing); ``override`` wins over the environment."""
    root = cache_root(override)
    root.mkdir(parents=True, exist_ok=True)
    return root


def is_cache_path(filename: object, override: str | os.PathLike[str] | None = None) -> bool:
    """Whether ``filename`` (an OSError's) is the cache root, a folder on the way to it, or inside
    it: an error there is the cache's, not the data's."""
    if not isinstance(filename, str | bytes | os.PathLike):
        return False
    path = Path(os.path.abspath(os.fsdecode(filename)))
    root = Path(os.path.abspath(cache_root(override)))
    return path == root or path in root.parents or root in path.parents


def cache_problem(error: OSError, override: str | os.PathLike[str] | None = None) -> str:
    """One paragraph for ``error`` met while writing the cache: the folder, what decided it, the fix."""
    root = cache_root(override)
    if override is not None:
        chosen = "the folder the caller passed"
    elif os.environ.get(ENV_VAR):
        chosen = f"${ENV_VAR}"
    elif os.environ.get("XDG_CACHE_HOME"):
        chosen = "$XDG_CACHE_HOME/miras-search"
    else:
        chosen = f"~/.cache/miras-search, in HOME={Path.home()}"
    reason = (error.strerror or type(error).__name__).lower()
    return (f"the data cache {root} ({chosen}) cannot be used: {reason} at {error.filename}. "
            "Every trial tokenizes its data into this folder, so every trial would fail the same "
            f"way. Make it writable (or free space there), or move the cache: set {ENV_VAR} to a "
            f"folder you may write (e.g. `export {ENV_VAR}=/scratch/$USER/miras-cache`), then run "
            "the command again")


def cache_unusable(override: str | os.PathLike[str] | None = None) -> str | None:
    """``cache_problem``'s paragraph when the cache root cannot be created or written (a regular
    file in its place or on its way, a folder without write permission), else None; a missing
    root is created. For commands that tokenize data, before they start any work."""
    try:
        root = cache_dir(override)
    except OSError as error:
        return cache_problem(error, override)
    if not os.access(root, os.W_OK | os.X_OK):
        return cache_problem(PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(root)), override)
    return None
