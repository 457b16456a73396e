"""Shared pydantic base class for every schema of the toolkit."""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

_late_registration: Callable[[], None] | None = None
"""Set once the package's schemas are built (``plugins.install``): rebuilds them for a new option."""


class Schema(BaseModel):
    """Strict, immutable base: unknown keys are errors, values are validated on assignment, and
    no number may be nan or +-inf (YAML's ``.nan`` / ``.inf``, or ``1e400``, which overflows):
    such a value would only surface later as a silently infeasible point or a confusing error.
    A number field takes no boolean: pydantic's lax mode would read ``n_heads: true`` as 1,
    hiding a slip in the file. (A string that spells a number, ``"64"`` or PyYAML's ``'1e-3'``,
    is read as that number.)"""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)

    # a model-level check: pydantic allows no before-validator on a discriminator field ('kind')
    @model_validator(mode="before")
    @classmethod
    def _no_boolean_numbers(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        for name, shape in _number_fields(cls).items():
            value = data.get(name)
            items = value if shape == "items" and isinstance(value, list | tuple) else [value]
            for item in items:
                if isinstance(item, bool):
                    raise ValueError(f"{name}: a number is needed, not a boolean ({str(item).lower()})")
        return data

    def unused_fields(self) -> frozenset[str]:
        """The fields this object's other settings make irrelevant to the model built from it
        (a gate in mode 'retnet' never reads its ``value``): two objects that differ only there
        are the same model. None by default; a schema with such fields overrides this."""
        return frozenset()


def canonical_data(obj: Schema) -> dict[str, Any]:
    """``obj`` as JSON-able data with every unused field (``Schema.unused_fields``) dropped, at
    every depth: the identity of the model it describes (equal data: the same model)."""
    return _canonical(obj, obj.model_dump(mode="json"))


def unused_paths(obj: Schema, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """The paths (``("retention", "alpha", "value")``) of every unused field under ``obj``."""
    found = {(*prefix, name) for name in obj.unused_fields()}
    for name in type(obj).model_fields:
        value = getattr(obj, name)
        if isinstance(value, Schema) and name not in obj.unused_fields():
            found |= unused_paths(value, (*prefix, name))
    return found


def _canonical(obj: Any, data: Any) -> Any:
    if isinstance(obj, Schema) and isinstance(data, dict):
        unused = obj.unused_fields()
        return {name: _canonical(getattr(obj, name, None), value)
                for name, value in data.items() if name not in unused}
    if isinstance(obj, list | tuple) and isinstance(data, list) and len(obj) == len(data):
        return [_canonical(item, value) for item, value in zip(obj, data, strict=True)]
    return data


class AxisOption(Schema):
    """Base of the options of one axis (a memory, a bias, a retention gate, an algorithm, a
    feature map).

    Each axis's base class declares its own ``registry``; a subclass that declares ``kind`` (its
    ``Literal``) registers itself there, in definition order. ``union()`` is the axis's
    discriminated union, ``kinds()`` its kind names: both derived from the registry, so an option
    is one class. An option defined after the package's schemas are built (in a user's module,
    ``miras_search.schema.plugins``) rebuilds them, so points and spaces may name it at once.

    When a class registers, its math hooks are checked: at least one of each group of
    ``required_hooks`` defined, and every hook it overrides callable as the axis's base calls it.
    A second class declaring a kind already taken is an error (the same class defined again, as
    a notebook re-runs a cell, replaces the first).
    """

    kind: str
    registry: ClassVar[dict[str, type[AxisOption]]] = {}
    axis: ClassVar[str] = ""
    """(axis base classes) the point's field that holds this axis ('bias', 'memory.feature_map')."""
    role: ClassVar[str] = ""
    """(axis base classes) what the axis is, for the docs' and the CLI's tables."""
    summary: ClassVar[str] = ""
    """(options) a few words beside the kind in the docs' and the CLI's tables."""
    required_hooks: ClassVar[tuple[tuple[str, ...], ...]] = ()
    """(axis base classes) groups of methods an option must define, at least one of each group."""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        kind = cls.model_fields["kind"].default
        if not isinstance(kind, str) or "kind" not in inspect.get_annotations(cls):
            return  # an axis base, a private helper, or a subclass keeping its parent's kind
        owner = cls.registry.get(kind)
        if owner is not None and (owner.__module__, owner.__qualname__) != (cls.__module__, cls.__qualname__):
            raise TypeError(
                f"{cls.__qualname__} declares {cls.axis} kind '{kind}', which "
                f"{owner.__module__}.{owner.__qualname__} already registered: give the new option "
                f"a kind of its own (taken: {', '.join(cls.registry)})"
            )
        check_hooks(cls, kind)
        cls.registry[kind] = cls
        if _late_registration is not None:
            _late_registration()

    @classmethod
    def members(cls) -> Any:
        """The registered options of this axis as a plain union (a field's type)."""
        return Union[tuple(cls.registry.values())]  # noqa: UP007

    @classmethod
    def union(cls) -> Any:
        """Any registered option of this axis, told apart by ``kind``."""
        return Annotated[cls.members(), Field(discriminator="kind")]

    @classmethod
    def kinds(cls) -> tuple[str, ...]:
        return tuple(cls.registry)

    @classmethod
    def examples(cls) -> list[dict[str, Any]]:
        """Settings the conformance suite (``miras_search.testing``) runs this option with: its
        defaults unless a class names variants; empty for an option that has no memory rule."""
        return [{"kind": cls.model_fields["kind"].default}]

    def label(self) -> str:
        """The kind with the settings that tell this option's variants apart (the presets table)."""
        return self.kind


_NUMBERS = (int, float)


def _number_shape(annotation: Any) -> str | None:
    """'scalar' for int / float (or either or None), 'items' for a tuple or list of them, else None."""
    args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    if annotation in _NUMBERS or (args and typing.get_origin(annotation) in (Union, types.UnionType)
                                  and all(arg in _NUMBERS for arg in args)):
        return "scalar"
    if typing.get_origin(annotation) in (tuple, list) and args and all(
            arg in _NUMBERS or arg is Ellipsis for arg in args):
        return "items"
    return None


@functools.cache
def _number_fields(model: type[BaseModel]) -> dict[str, str]:
    """The fields of ``model`` that hold numbers only, with their ``_number_shape``."""
    shapes = {name: _number_shape(info.annotation) for name, info in model.model_fields.items()}
    return {name: shape for name, shape in shapes.items() if shape is not None}


def _axis_base(option: type[AxisOption]) -> type[AxisOption]:
    """The axis base class of ``option``: the nearest class in its MRO that owns a registry."""
    return next(owner for owner in option.__mro__ if "registry" in owner.__dict__)


def check_hooks(option: type[AxisOption], kind: str) -> None:
    """TypeError naming the option and the method when a required hook is missing, or when an
    overridden hook cannot take the arguments the axis's base class is called with."""
    base = _axis_base(option)
    where = f"{base.axis} '{kind}' ({option.__qualname__})"
    for group in base.required_hooks:
        if all(getattr(option, name) is getattr(base, name) for name in group):
            raise TypeError(
                f"{where} defines none of {' / '.join(group)}: an option of this axis needs "
                f"{'one of them' if len(group) > 1 else 'it'} (see {base.__name__}.{group[0]})"
            )
    for name, hook in vars(base).items():
        own = option.__dict__.get(name)
        if name.startswith("_") or not inspect.isfunction(hook) or not inspect.isfunction(own):
            continue
        expected = [p for p in inspect.signature(hook).parameters.values()
                    if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        try:
            inspect.signature(own).bind(*expected)
        except TypeError:
            call = ", ".join(p.name for p in expected)
            raise TypeError(
                f"{base.axis} '{kind}': {option.__qualname__}.{name}{inspect.signature(own)} cannot "
                f"be called as {name}({call}), the "
                f"way the memory ops call every {base.__name__}: give it {base.__name__}.{name}'s "
                "parameters"
            ) from None
