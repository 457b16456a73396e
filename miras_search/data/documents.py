"""Documents -> train / validation split, by a hash of each document's text (never by position).

Identical documents are kept once, so no text can land in both splits; the split of a document
depends only on its content, so adding files moves no existing document across splits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from miras_search.errors import MirasError

SPLITS = ("train", "validation")
MAX_DOC_CHARS = 65_536
"""Longer documents are cut at line ends into pieces of about this size before splitting, so one
large file still yields both splits."""


def doc_hash(text: str) -> str:
    """SHA-256 hex digest of a document's UTF-8 text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cut(text: str, max_chars: int = MAX_DOC_CHARS) -> list[str]:
    """Pieces of at most about max_chars, cut after a newline when one is in the second half."""
    pieces: list[str] = []
    while len(text) > max_chars:
        end = text.rfind("\n", max_chars // 2, max_chars) + 1 or max_chars
        pieces.append(text[:end])
        text = text[end:]
    if text:
        pieces.append(text)
    return pieces


def split_documents(
    docs: Iterable[str], val_fraction: float = 0.05, max_chars: int = MAX_DOC_CHARS
) -> dict[str, list[str]]:
    """{'train': [...], 'validation': [...]}: each distinct non-blank piece goes to exactly one split.

    A piece is in validation when the first 8 bytes of its hash, read as a fraction of 2**64, are
    below ``val_fraction``. If that leaves validation empty, the piece with the smallest hash goes
    there, so both splits exist whenever there are two distinct pieces.
    """
    if not 0.0 < val_fraction < 1.0:
        raise MirasError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    seen: dict[str, str] = {}
    for doc in docs:
        for piece in cut(doc, max_chars):
            if piece.strip():
                seen.setdefault(doc_hash(piece), piece)
    if len(seen) < 2:
        raise MirasError(
            f"need at least 2 distinct non-empty documents to make a train and a validation split, "
            f"got {len(seen)}; add text (files shorter than {max_chars} characters are one document)"
        )
    threshold = int(val_fraction * 2**64)
    order = sorted(seen)  # by hash: the result does not depend on the input order
    val = {h for h in order if int(h[:16], 16) < threshold} or {order[0]}
    if len(val) == len(order):
        val.discard(order[-1])
    return {
        "train": [seen[h] for h in order if h not in val],
        "validation": [seen[h] for h in order if h in val],
    }
