"""Exception types: every error a user can cause ends in one readable paragraph, not a traceback."""

from __future__ import annotations

import difflib
from dataclasses import dataclass


class MirasError(Exception):
    """Base class; ``str(error)`` is a complete, user-facing message."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a file: where (dotted path, line) and what."""

    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = self.path or "<top level>"
        if self.line is not None:
            where += f" (line {self.line})"
        return f"{where}: {self.message}"


def first_line(error: BaseException, limit: int | None = None) -> str:
    """The first non-empty line of ``error``'s text (its class name when it has none), cut to
    ``limit`` characters with ' ...' when given: a library's error quoted in one of ours."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else type(error).__name__
    return text if limit is None or len(text) <= limit else text[:limit] + " ..."


class ConfigError(MirasError):
    """A point, space or study file (or dict) that does not validate."""

    def __init__(self, source: str, problems: list[Problem]):
        self.source = source
        self.problems = problems
        super().__init__(_describe(source, problems))


def _describe(source: str, problems: list[Problem]) -> str:
    """The message: a file that is missing, empty or unreadable is not called "not valid"."""
    if len(problems) == 1 and not problems[0].path and problems[0].line is None:
        message = problems[0].message  # e.g. "no such file", "is a directory, not a YAML file"
        return f"{source} {message}" if message.startswith("is ") else f"{source}: {message}"
    listed = "\n".join(f"  - {p}" for p in problems)
    return f"{source} is not valid ({len(problems)} problem(s)):\n{listed}"


class UnsupportedPoint(MirasError):
    """A valid point whose combination the model factory does not build (names the axis)."""


class NonFiniteError(MirasError):
    """NaN or inf appeared in a forward pass; trials turn this into a clean failure."""


class SequenceTooLong(MirasError):
    """An input longer than the model's configured maximum."""


class BadTokens(MirasError, ValueError):
    """Token ids (or targets) a model cannot read: not an integer [batch, time] tensor, empty, or
    ids outside [0, vocab_size)."""


def did_you_mean(name: object, known: list[str] | tuple[str, ...]) -> str:
    """" (did you mean 'moneta'?)" for the known name closest to a misspelt ``name``, else ""."""
    close = difflib.get_close_matches(str(name), list(known), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
