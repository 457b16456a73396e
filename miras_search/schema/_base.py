"""Shared pydantic base class for every schema of the toolkit."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Union

from pydantic import BaseModel, ConfigDict, Field


class Schema(BaseModel):
    """Strict, immutable base: unknown keys are errors, values are validated on assignment, and
    no number may be nan or +-inf (YAML's ``.nan`` / ``.inf``, or ``1e400``, which overflows):
    such a value would only surface later as a silently infeasible point or a confusing error."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)


class AxisOption(Schema):
    """Base of the options of one axis (a memory, a bias, a retention gate, an algorithm).

    Each axis's base class declares its own ``registry``; a subclass that gives ``kind`` a default
    (its ``Literal``) registers itself there, in definition order. ``union()`` is the axis's
    discriminated union, ``kinds()`` its kind names: both derived from the registry, so an option
    is one class.
    """

    kind: str
    registry: ClassVar[dict[str, type[AxisOption]]] = {}
    role: ClassVar[str] = ""
    """(axis base classes) what the axis is, for the docs' and the CLI's tables."""
    summary: ClassVar[str] = ""
    """(options) a few words beside the kind in the docs' and the CLI's tables."""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        kind = cls.model_fields["kind"].default
        if isinstance(kind, str):  # a class with its own kind (the first one of that kind)
            cls.registry.setdefault(kind, cls)

    @classmethod
    def union(cls) -> Any:
        """Any registered option of this axis, told apart by ``kind``."""
        return Annotated[Union[tuple(cls.registry.values())], Field(discriminator="kind")]  # noqa: UP007

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
