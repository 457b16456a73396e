"""Options defined outside the package.

A user adds an option as one class in a module of their own (a subclass of ``AttentionalBias``,
``RetentionGate``, ``FeatureMap``, ...). Two things make it usable everywhere:

- ``refresh()`` rebuilds the schemas when an option registers after they were built: the axis
  unions and kind tuples, the memories' feature-map field, ``ModelPoint`` and every model that
  holds one. ``AxisOption`` calls it for each late class, so defining the class is enough in a
  script or a notebook.
- ``load_plugins()`` imports the modules that define such options in every process that builds
  points (the CLI, Ray's trial workers, a notebook): the ``miras_search.options`` entry points
  of installed packages, and the modules named in ``MIRAS_PLUGINS`` (comma-separated, importable
  from ``sys.path``; the working directory is searched first, as ``python -m`` does).
"""

from __future__ import annotations

import importlib
import os
import sys
import typing
from importlib.metadata import entry_points
from typing import Any

from pydantic import BaseModel

from miras_search.errors import MirasError
from miras_search.schema import _base, algorithm, bias, feature_map, memory, point, retention
from miras_search.schema._base import AxisOption

PLUGINS_ENV = "MIRAS_PLUGINS"
PLUGINS_PATH_ENV = "MIRAS_PLUGINS_PATH"
"""The folder ``MIRAS_PLUGINS``' modules were found from (the first process's working directory),
passed on to the processes it starts (Ray's workers) through the environment."""
ENTRY_POINT_GROUP = "miras_search.options"

_AXES: tuple[tuple[Any, type[AxisOption], str, str], ...] = (
    (feature_map, feature_map.FeatureMap, "FeatureMapOption", "FEATURE_MAP_KINDS"),
    (memory, memory.MemoryArchitecture, "Memory", "MEMORY_KINDS"),
    (bias, bias.AttentionalBias, "Bias", "BIAS_KINDS"),
    (retention, retention.RetentionGate, "Retention", "RETENTION_KINDS"),
    (algorithm, algorithm.MemoryAlgorithm, "Algorithm", "ALGORITHM_KINDS"),
)
_loaded: set[str] = set()


def install() -> None:
    """From now on, an option registered late rebuilds the schemas (the package's own options
    are all defined by the time ``miras_search.schema`` has imported)."""
    _base._late_registration = refresh


def refresh() -> None:
    """Rebuild every schema that validates an axis option, from the registries as they are now."""
    package = sys.modules["miras_search.schema"]
    for module, base, union_name, kinds_name in _AXES:
        for holder in (module, package):
            if hasattr(holder, union_name):
                setattr(holder, union_name, base.union())
            if hasattr(holder, kinds_name):
                setattr(holder, kinds_name, base.kinds())
    rebuilt: set[type[BaseModel]] = set()
    for option in memory.MemoryArchitecture.registry.values():
        if "feature_map" in option.model_fields:
            _retype(option, {"feature_map": feature_map.FeatureMap})
            rebuilt.add(option)
    _retype(point.ModelPoint, {
        "memory": memory.MemoryArchitecture, "bias": bias.AttentionalBias,
        "retention": retention.RetentionGate, "algorithm": algorithm.MemoryAlgorithm,
    })
    rebuilt.add(point.ModelPoint)
    _rebuild_holders(rebuilt)


def _retype(model: type[BaseModel], fields: dict[str, type[AxisOption]]) -> None:
    """Give each field the union of its axis's registered options, then rebuild the model (the
    field's discriminator, ``kind``, is kept on its FieldInfo)."""
    for name, base in fields.items():
        model.model_fields[name].annotation = base.members()
    model.model_rebuild(force=True)


def _rebuild_holders(rebuilt: set[type[BaseModel]]) -> None:
    """Rebuild, innermost first, every model of the package whose fields hold a rebuilt one: a
    pydantic model keeps a copy of its fields' schemas from when it was built."""
    models = [model for model in _all_models(BaseModel) if model.__module__.startswith("miras_search")]
    changed = True
    while changed:
        changed = False
        for model in models:
            if model not in rebuilt and any(_mentions(info.annotation, rebuilt)
                                            for info in model.model_fields.values()):
                model.model_rebuild(force=True)
                rebuilt.add(model)
                changed = True


def _all_models(root: type[BaseModel]) -> list[type[BaseModel]]:
    found: list[type[BaseModel]] = []
    for sub in root.__subclasses__():
        found += [sub, *_all_models(sub)]
    return list(dict.fromkeys(found))


def _mentions(annotation: Any, models: set[type[BaseModel]]) -> bool:
    """Whether a field's type is, or contains (``list[X]``, ``X | None``, ...), one of ``models``."""
    if annotation in models:
        return True
    return any(_mentions(arg, models) for arg in typing.get_args(annotation))


def load_plugins() -> None:
    """Import the option modules of the installed packages' ``miras_search.options`` entry points
    and of ``MIRAS_PLUGINS``; MirasError naming the module when one cannot be imported."""
    named = [name.strip() for name in os.environ.get(PLUGINS_ENV, "").split(",") if name.strip()]
    sources = [(entry.value, f"entry point '{entry.name}' ({ENTRY_POINT_GROUP})")
               for entry in entry_points(group=ENTRY_POINT_GROUP)]
    sources += [(name, PLUGINS_ENV) for name in named]
    if named:  # a module beside the user's files, as `python -m` finds it, in every process
        folder = os.environ.setdefault(PLUGINS_PATH_ENV, os.getcwd())
        if folder not in sys.path:
            sys.path.insert(0, folder)
    for target, source in sources:
        module_name = target.split(":")[0]
        if module_name in _loaded:
            continue
        try:
            module = importlib.import_module(module_name)
        except SystemExit as error:  # sys.exit() at import: said, not an exit without a word
            raise MirasError(
                f"the option module '{module_name}' named by {source} exited while being imported "
                f"(sys.exit({error.code!r})). Fix the module (an option module only defines classes), or "
                f"remove it from {source.split()[0]}."
            ) from None
        except Exception as error:  # any failure in a user's module: one readable message
            raise MirasError(
                f"the option module '{module_name}' named by {source} could not be imported: "
                f"{type(error).__name__}: {error}. Fix the module, or remove it from {source.split()[0]}."
            ) from error
        _check_kinds(module, source)
        _loaded.add(module_name)


def _check_kinds(module: Any, source: str) -> None:
    """MirasError naming an option class of ``module`` that declares no ``kind`` value: it would
    never register, so no point could choose it, without a word. A private class (``_Name``) and a
    class that other, registered options derive from (a shared base) are left alone."""
    registered = {option for _, base, _, _ in _AXES for option in base.registry.values()}
    for name, value in vars(module).items():
        if not (isinstance(value, type) and value.__module__ == module.__name__ and not name.startswith("_")):
            continue
        base = next((b for _, b, _, _ in _AXES if issubclass(value, b) and value is not b), None)
        if base is None or value in registered or isinstance(value.model_fields["kind"].default, str):
            continue
        if any(issubclass(option, value) for option in registered):
            continue
        raise MirasError(
            f"the option module '{module.__name__}' named by {source} defines {name}, a "
            f"subclass of {base.__name__} without a kind, so it is not registered and no point can choose it: declare "
            f"one, e.g. `kind: Literal[\"{name.lower()}\"] = \"{name.lower()}\"` (a class meant only as the "
            f"base of other options: name it with a leading '_')")
