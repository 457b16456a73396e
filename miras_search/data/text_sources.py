"""Text data sources: the embedded corpus, user files, a Hugging Face dataset.

Each spec ``open()``s into a ``TextSource`` over a cached token store; its batches are windows
of the chosen split with every position scored (plain next-token prediction).
"""

from __future__ import annotations

import math
import os
from functools import partial
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, PrivateAttr

from miras_search.data._task import DataSourceSpec, Split
from miras_search.data.batch import Batch
from miras_search.data.corpus import load_corpus
from miras_search.data.files import files_fingerprint, iter_file_documents, iter_hf_documents
from miras_search.data.store import TokenStore, build_store, recipe_key
from miras_search.data.stream import Order, TextStream
from miras_search.data.tokenizer import ByteTokenizer, Tokenizer, load_tokenizer
from miras_search.data.vocab import IGNORE_INDEX, N_BYTES
from miras_search.errors import MirasError
from miras_search.paths import locate_input, user_path

Root = str | os.PathLike[str] | None


def locate(raw: str, base: Path | tuple[Path, ...] | None, what: str = "data file or folder", *,
           strict: bool = True) -> Path:
    """Where an input path named in a study or trial config file is: absolute as written (``~``
    read as the home folder), else beside that file (``base``: its folder, or the folders of
    ``paths.input_folders``: beside a symbolic link, then beside the file it points to), else in
    the working directory, where such paths were read before they were read beside their file.
    With ``strict``, MirasError naming every place looked in when it is in none; without, the
    path beside the file (what the error would name)."""
    if base is None:
        return user_path(raw)
    return locate_input(raw, (base,) if isinstance(base, Path) else base, what, strict=strict)


class _TextSpec(DataSourceSpec):
    tokenizer: str = Field("bytes", description="'bytes' or the path of a tokenizer.json file "
                           "(relative to the study or trial config file that names it).")
    eos_token: str | None = Field(None, description="End-of-document token of a tokenizer.json.")
    val_fraction: float = Field(0.05, gt=0.0, lt=1.0, description="Share of documents held out.")

    _base: tuple[Path, ...] | None = PrivateAttr(None)
    """The folder of the file that names this source: its relative paths are read from there
    (``located``), while the spec keeps them as written (what a study stores and compares)."""

    def relative_to(self, *folders: str | os.PathLike[str] | None) -> None:
        """Read this source's relative paths from ``folders`` (the folder of its study or trial
        config file, then that of the file a symbolic link to it points to:
        ``paths.input_folders``) from now on."""
        given = tuple(Path(folder).absolute() for folder in folders if folder is not None)
        self._base = given or None

    def _tokenizer_path(self, strict: bool = True) -> str:
        if self.tokenizer == "bytes":
            return self.tokenizer
        return str(locate(self.tokenizer, self._base, "tokenizer file", strict=strict))

    def load_tokenizer(self) -> Tokenizer:
        return load_tokenizer(self._tokenizer_path(), self.eos_token)

    def located(self) -> _TextSpec:
        """A copy whose paths are absolute, as read from this source's folder: what a Ray worker
        (in its own working directory) is sent."""
        return self.model_copy(update={"tokenizer": self._tokenizer_path(strict=False)})


class TextCorpus(_TextSpec):
    """The embedded corpus of text every Python installation carries (offline, ~4 MB)."""

    task: Literal["text"] = "text"

    def open(self, root: Root = None) -> TextSource:
        store = load_corpus(self.load_tokenizer(), val_fraction=self.val_fraction, root=root)
        return TextSource(self, store)


class Files(_TextSpec):
    """Local .txt / .jsonl / .parquet files or folders of them."""

    task: Literal["files"] = "files"
    paths: list[str] = Field(min_length=1, description="Files or folders (searched recursively).")
    field: str = Field("text", description="The text's key in .jsonl records / column in .parquet.")

    def file_paths(self) -> list[Path]:
        """``paths`` as read: absolute as written, else beside the file that names them, else
        from the working directory (``locate``); MirasError naming both places for a missing one."""
        return [locate(raw, self._base) for raw in self.paths]

    def located(self) -> Files:
        return self.model_copy(update={
            "tokenizer": self._tokenizer_path(strict=False),
            "paths": [str(locate(raw, self._base, strict=False)) for raw in self.paths]})

    def open(self, root: Root = None) -> TextSource:
        tok = self.load_tokenizer()
        paths = self.file_paths()
        key = recipe_key(files_fingerprint(paths), self.field, tok.name, self.val_fraction)
        documents = partial(iter_file_documents, paths, self.field)
        meta = {"source": "files", "paths": self.paths, "field": self.field}
        store = build_store("files", key, documents, tok, val_fraction=self.val_fraction, meta=meta, root=root)
        return TextSource(self, store)


class HFDataset(_TextSpec):
    """A Hugging Face dataset (optional ``datasets`` package; network or a local HF cache)."""

    task: Literal["hf"] = "hf"
    name: str = Field(min_length=1, description="Dataset name on the Hub, e.g. 'roneneldan/TinyStories'.")
    config: str | None = None
    split: str = Field("train", description="The dataset's split to read (then re-split by hash).")
    field: str = "text"
    max_documents: int | None = Field(20_000, ge=2, description="Rows read; null = all.")

    def open(self, root: Root = None) -> TextSource:
        tok = self.load_tokenizer()
        parts = [self.name, self.config, self.split, self.field, self.max_documents]
        key = recipe_key(parts, tok.name, self.val_fraction)
        documents = partial(
            iter_hf_documents, self.name, self.config, self.split, self.field, self.max_documents
        )
        meta = {"source": "hf", "dataset": parts}
        store = build_store("hf", key, documents, tok, val_fraction=self.val_fraction, meta=meta, root=root)
        return TextSource(self, store)


class TextSource:
    """An opened text spec: batches of windows from its token store."""

    def __init__(self, spec: _TextSpec, store: TokenStore):
        self.spec, self.store = spec, store
        self.tokenizer = spec.load_tokenizer()

    @property
    def vocab_size(self) -> int:
        """The model's vocabulary must hold at least this many ids."""
        return self.tokenizer.vocab_size

    def bits_per_byte(self, loss: float, split: Split = "validation") -> float:
        """Bits per UTF-8 byte from a mean cross-entropy ``loss`` (nats per token) on ``split``."""
        return loss / math.log(2) / self.store.bytes_per_token(split)

    def target_bytes(self, targets: torch.Tensor, split: Split = "validation") -> float:
        """UTF-8 bytes of text that the scored ``targets`` [B, T] stand for.

        Exact for the byte tokenizer (ids below 256 are bytes; the end-of-document token stands
        for none); for a tokenizer.json, the split's bytes per token times the scored tokens.
        """
        scored = targets != IGNORE_INDEX
        if self.tokenizer.name == ByteTokenizer.name:
            return float((scored & (targets < N_BYTES)).sum())
        return float(scored.sum()) * self.store.bytes_per_token(split)

    def stream(
        self,
        batch_size: int,
        seq_len: int | None = None,
        *,
        seed: int = 0,
        split: Split = "train",
        order: Order = "random",
    ) -> TextStream:
        length = self.spec.seq_len if self.spec.seq_len is not None else seq_len
        if length is None:
            raise MirasError(f"data source '{self.spec.task}' has no seq_len: set it or pass one")
        tokens = self.store.tokens(split)
        return TextStream(tokens, length, batch_size, seed=seed, order=order, name=f"{self.spec.task}/{split}")

    def batch(
        self,
        batch_size: int,
        *,
        step: int,
        seed: int = 0,
        split: Split = "train",
        seq_len: int | None = None,
    ) -> Batch:
        """Batch ``step`` of random windows: inputs, targets [batch_size, seq_len]."""
        return self.stream(batch_size, seq_len, seed=seed, split=split).batch(step)
