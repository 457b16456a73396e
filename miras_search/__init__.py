"""miras-search: architecture search over the Miras design space of test-time-memory models.

The names most scripts need are importable from here (see the README's "From Python")::

    from miras_search import SearchSpace, TrialConfig, build_model, preset, run_trial

They load on first use, so ``import miras_search`` stays light (no torch, Optuna or Ray until a
name that needs them is touched).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_HOMES = {
    "ModelPoint": "miras_search.schema",
    "preset": "miras_search.presets",
    "preset_names": "miras_search.presets",
    "load_point": "miras_search.points",
    "point_from_dict": "miras_search.points",
    "point_to_yaml": "miras_search.points",
    "build_model": "miras_search.model",
    "param_count": "miras_search.model",
    "state_size": "miras_search.model",
    "SearchSpace": "miras_search.space",
    "TrialConfig": "miras_search.trial",
    "TrialResult": "miras_search.trial",
    "run_trial": "miras_search.trial",
    "load_study_file": "miras_search.study.spec",
    "MirasError": "miras_search.errors",
    "ConfigError": "miras_search.errors",
}
"""Public name -> the module that defines it."""

__all__ = [  # literal, so that linters see the re-exports; a test checks it matches _HOMES
    "ConfigError", "MirasError", "ModelPoint", "SearchSpace", "TrialConfig", "TrialResult",
    "__version__", "build_model", "load_point", "load_study_file", "param_count",
    "point_from_dict", "point_to_yaml", "preset", "preset_names", "run_trial", "state_size",
]

if TYPE_CHECKING:  # what type checkers and editors see; at run time __getattr__ loads lazily
    from miras_search.errors import ConfigError, MirasError
    from miras_search.model import build_model, param_count, state_size
    from miras_search.points import load_point, point_from_dict, point_to_yaml
    from miras_search.presets import preset, preset_names
    from miras_search.schema import ModelPoint
    from miras_search.space import SearchSpace
    from miras_search.study.spec import load_study_file
    from miras_search.trial import TrialConfig, TrialResult, run_trial


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'miras_search' has no attribute '{name}'")
    value = getattr(import_module(home), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
