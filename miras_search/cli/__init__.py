"""The ``miras`` command line: one module per group of commands, all registered on ``app``."""

from miras_search.cli import evaluate as _evaluate  # noqa: F401  (registers its commands)
from miras_search.cli import inspect as _inspect  # noqa: F401
from miras_search.cli import report as _report  # noqa: F401
from miras_search.cli import scale as _scale  # noqa: F401
from miras_search.cli import study as _study  # noqa: F401
from miras_search.cli import training as _training  # noqa: F401
from miras_search.cli.app import app

__all__ = ["app"]
