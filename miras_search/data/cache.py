"""Where built data lives on disk: ``$MIRAS_CACHE_DIR``, else ``$XDG_CACHE_HOME/miras-search``,
else ``~/.cache/miras-search``."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "MIRAS_CACHE_DIR"


def cache_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """The cache root (created if missing); ``override`` wins over the environment."""
    if override is not None:
        root = Path(override)
    elif os.environ.get(ENV_VAR):
        root = Path(os.environ[ENV_VAR])
    else:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        root = Path(base) / "miras-search"
    root = root.expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root
