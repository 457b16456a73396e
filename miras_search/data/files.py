"""User text as documents: .txt, .jsonl (one field) and .parquet (one column) files or folders,
and Hugging Face datasets (optional ``datasets`` package, needs network or a local copy)."""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

from miras_search.errors import MirasError

SUFFIXES = (".txt", ".jsonl", ".parquet")
_ESCAPED = re.compile("[\udc80-\udcff]")
"""Characters that errors='surrogateescape' decodes each invalid UTF-8 byte into (valid UTF-8
never decodes to a lone surrogate)."""


class InvalidUTF8Warning(UserWarning):
    """A .txt / .jsonl data file holds bytes that are not valid UTF-8 (read as U+FFFD)."""


def _replace_invalid(text: str) -> tuple[str, int]:
    """``text`` decoded with errors='surrogateescape' -> (the text errors='replace' gives, the
    number of invalid bytes)."""
    invalid = len(_ESCAPED.findall(text))
    if not invalid:
        return text, 0
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace"), invalid


def _warn_invalid(path: Path, invalid: int) -> None:
    if invalid:
        warnings.warn(
            f"{path}: {invalid} byte(s) are not valid UTF-8; each invalid sequence was read as the "
            "replacement character U+FFFD, so training and byte counts see text that differs from "
            "the file. Save the file as UTF-8 to train on its exact text.",
            InvalidUTF8Warning,
            stacklevel=2,
        )


def _read_text(path: Path) -> str:
    """The whole file as text (universal newlines), invalid UTF-8 as U+FFFD with one warning."""
    with path.open(encoding="utf-8", errors="surrogateescape") as handle:
        text, invalid = _replace_invalid(handle.read())
    _warn_invalid(path, invalid)
    return text


def resolve_files(paths: Sequence[str | Path]) -> list[Path]:
    """Every readable file named, or found (recursively, sorted) in a named folder."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            inside = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES)
            if not inside:
                raise MirasError(f"folder '{path}' holds no {', '.join(SUFFIXES)} files")
            found += inside
        elif path.is_file():
            if path.suffix not in SUFFIXES:
                raise MirasError(
                    f"file '{path}' has suffix '{path.suffix}'; data files must be one of {SUFFIXES}"
                )
            found.append(path)
        else:
            raise MirasError(f"data file or folder '{path}' does not exist")
    return found


def _jsonl(path: Path, field: str) -> Iterator[str]:
    """``field`` of every record; invalid UTF-8 as U+FFFD, with one warning after the file."""
    invalid = 0
    with path.open(encoding="utf-8", errors="surrogateescape") as handle:
        for number, raw in enumerate(handle, start=1):
            line, bad = _replace_invalid(raw)
            invalid += bad
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise MirasError(f"{path} line {number} is not valid JSON: {error.msg}") from error
            if not isinstance(record, dict) or field not in record:
                keys = sorted(record) if isinstance(record, dict) else type(record).__name__
                raise MirasError(
                    f"{path} line {number} has no field '{field}' (found: {keys}); "
                    "set 'field' to the key that holds the text"
                )
            if not isinstance(record[field], str):
                raise MirasError(
                    f"{path} line {number}: field '{field}' must be a string, "
                    f"got {type(record[field]).__name__}"
                )
            yield record[field]
    _warn_invalid(path, invalid)


def _parquet(path: Path, field: str) -> Iterator[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError as error:
        raise MirasError(
            f"reading '{path}' needs the optional package 'pyarrow' (pip install 'miras-search[data]')"
        ) from error
    columns = pq.read_schema(path).names
    if field not in columns:
        raise MirasError(
            f"{path} has no column '{field}' (columns: {columns}); set 'field' to the text column"
        )
    for batch in pq.ParquetFile(path).iter_batches(columns=[field]):
        for value in batch.column(0).to_pylist():
            if value is not None:
                yield str(value)


def iter_file_documents(paths: Sequence[str | Path], field: str = "text") -> Iterator[str]:
    """Documents of the files: a whole .txt file, a .jsonl line's ``field``, a .parquet row's ``field``.

    Bytes of .txt / .jsonl files that are not valid UTF-8 are read as U+FFFD, with one
    InvalidUTF8Warning per file giving their count.
    """
    for path in resolve_files(paths):
        if path.suffix == ".txt":
            yield _read_text(path)
        elif path.suffix == ".jsonl":
            yield from _jsonl(path, field)
        else:
            yield from _parquet(path, field)


def files_fingerprint(paths: Sequence[str | Path]) -> list[tuple[str, int, int]]:
    """(absolute path, size, mtime) of every file: changes when any file does."""
    out = []
    for p in resolve_files(paths):
        stat = p.stat()
        out.append((str(p.resolve()), stat.st_size, stat.st_mtime_ns))
    return out


def iter_hf_documents(
    name: str, config: str | None, split: str, field: str, max_documents: int | None
) -> Iterator[str]:
    """``field`` of the first max_documents rows of a Hugging Face dataset split."""
    try:
        import datasets
    except ImportError as error:
        raise MirasError(
            f"Hugging Face dataset '{name}' needs the optional package 'datasets' "
            "(pip install 'miras-search[data]'); or save the text as .txt/.jsonl files and use task 'files'"
        ) from error
    try:
        data = datasets.load_dataset(name, config, split=split, streaming=True)
    except Exception:  # streaming needs network; a copy in the local HF cache loads without it
        sliced = split if max_documents is None else f"{split}[:{max_documents}]"
        try:
            data = datasets.load_dataset(name, config, split=sliced)
        except Exception as error:  # network, unknown name, bad config: one message to the user
            raise MirasError(
                f"Hugging Face dataset '{name}' (config {config!r}, split '{split}') could not be "
                f"loaded: {error}. Without network, only datasets already in the local Hugging Face "
                "cache load; otherwise use task 'files' on local files"
            ) from error
    for index, row in enumerate(data):
        if max_documents is not None and index >= max_documents:
            break
        if field not in row:
            raise MirasError(f"dataset '{name}' has no field '{field}' (fields: {sorted(row)})")
        yield str(row[field])
