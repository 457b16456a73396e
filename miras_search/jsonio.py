"""JSON files that strict parsers read: a NaN or an infinity is written as ``null``.

``json.dumps`` writes a bare ``NaN`` / ``Infinity`` by default, which Python reads back but
JavaScript, ``jq`` and most other parsers reject."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any


def finite_or_none(value: Any) -> Any:
    """``value`` with every NaN or infinity (in lists, tuples and mappings too) as None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(item) for item in value]
    return value


def json_text(data: Any, default: Callable[[Any], Any] | None = None) -> str:
    """``data`` as indented, valid JSON: NaN and infinities written as ``null``; ``default``
    turns what JSON has no type for into something it has (``str``, say), as in ``json.dumps``."""
    if default is not None:  # what default makes of an object may hold floats too
        data = json.loads(json.dumps(data, default=default))
    return json.dumps(finite_or_none(data), indent=2, allow_nan=False) + "\n"
