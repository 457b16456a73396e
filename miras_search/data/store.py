"""On-disk token arrays of a two-split dataset, built once and memory-mapped afterwards.

A store is a folder ``<cache>/<name>/<key>/`` holding ``train.bin`` and ``validation.bin``
(flat token ids, every document followed by the tokenizer's EOS) and ``manifest.json`` (counts,
the SHA-256 of each .bin, the hash of every document, and ``content_hash`` over all of it).
``key`` is a recipe hash the caller computes cheaply from its inputs, so a warm start skips the
build; the .bin hashes are checked on load and a damaged store is rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from miras_search.data.cache import cache_dir
from miras_search.data.documents import SPLITS, doc_hash, split_documents
from miras_search.data.tokenizer import Tokenizer
from miras_search.errors import MirasError

FORMAT_VERSION = 3
"""Bumped when a store's content changes for the same inputs (3: near-duplicates split together)."""


@dataclass(frozen=True)
class TokenStore:
    """Memory-mapped token ids of each split; nothing is read into memory until sliced."""

    path: Path
    manifest: dict
    splits: dict[str, np.ndarray]

    @property
    def content_hash(self) -> str:
        return self.manifest["content_hash"]

    def tokens(self, split: str) -> np.ndarray:
        """1-D read-only array of the split's token ids."""
        if split not in self.splits:
            raise MirasError(f"split must be one of {SPLITS}, got '{split}'")
        return self.splits[split]

    def bytes_per_token(self, split: str = "validation") -> float:
        """UTF-8 bytes of text per stored token (EOS included): turns nats/token into bits/byte."""
        info = self.manifest["splits"][split]
        return info["n_bytes"] / info["n_tokens"]

    def doc_hashes(self, split: str) -> list[str]:
        return self.manifest["splits"][split]["doc_hashes"]


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _open(folder: Path) -> TokenStore | None:
    """The store in folder, or None when it is missing, from another format, or damaged."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        if manifest.get("format") != FORMAT_VERSION:
            return None
        splits = {}
        for split in SPLITS:
            info, path = manifest["splits"][split], folder / f"{split}.bin"
            if _file_hash(path) != info["sha256"]:
                return None
            splits[split] = np.memmap(path, dtype=manifest["dtype"], mode="r")
    except (OSError, ValueError, KeyError):
        return None
    return TokenStore(folder, manifest, splits)


def _write(folder: Path, docs: dict[str, list[str]], tokenizer: Tokenizer, meta: dict) -> None:
    dtype = np.uint16 if tokenizer.vocab_size <= 2**16 else np.uint32
    eos = np.array([tokenizer.eos], dtype=dtype)
    manifest = {"format": FORMAT_VERSION, "dtype": np.dtype(dtype).name, "tokenizer": tokenizer.name}
    manifest.update(meta)
    manifest["splits"] = {}
    for split in SPLITS:
        path, n_tokens = folder / f"{split}.bin", 0
        with path.open("wb") as handle:
            for doc in docs[split]:
                ids = np.asarray(tokenizer.encode(doc)).astype(dtype)
                handle.write(ids.tobytes())
                handle.write(eos.tobytes())
                n_tokens += len(ids) + 1
        manifest["splits"][split] = {
            "n_documents": len(docs[split]),
            "n_tokens": n_tokens,
            "n_chars": sum(len(d) for d in docs[split]),
            "n_bytes": sum(len(d.encode("utf-8")) for d in docs[split]),
            "sha256": _file_hash(path),
            "doc_hashes": [doc_hash(d) for d in docs[split]],
        }
    summary = json.dumps([manifest["tokenizer"], manifest["splits"]], sort_keys=True)
    manifest["content_hash"] = hashlib.sha256(summary.encode()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))


def recipe_key(*parts: object) -> str:
    """A short stable key from the inputs that decide a store's content."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def build_store(
    name: str,
    key: str,
    documents: Callable[[], Iterable[str]],
    tokenizer: Tokenizer,
    *,
    val_fraction: float = 0.05,
    meta: dict | None = None,
    root: str | os.PathLike[str] | None = None,
    force: bool = False,
) -> TokenStore:
    """Open ``<cache>/<name>/<key>`` or build it from ``documents()`` (split, tokenize, write).

    The build writes to a temporary folder that is renamed into place, so a crash leaves no
    half-written store and concurrent builders (several trial workers) end with one valid copy.
    """
    folder = cache_dir(root) / name / key
    if not force and (store := _open(folder)) is not None:
        return store
    docs = split_documents(documents(), val_fraction)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=folder.parent))
    try:
        _write(tmp, docs, tokenizer, dict(meta or {}, key=key, val_fraction=val_fraction))
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
        with contextlib.suppress(OSError):  # another process renamed its copy first: use that
            tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    store = _open(folder)
    if store is None:
        raise MirasError(f"data store '{folder}' could not be written or read back")
    return store
