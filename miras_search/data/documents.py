"""Documents -> train / validation split, by a hash of each document's text (never by position).

Identical documents are kept once, and documents that share a passage (a run of SHARED_LINES
long lines, e.g. a help topic quoted inside a longer one) are split as one group, so no passage
of validation text is also training text. Groups are ordered by the smallest hash of their
members and fill validation in that order: the split depends only on content, never on the
order documents come in; adding documents can move only the groups at the boundary.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from miras_search.errors import MirasError

SPLITS = ("train", "validation")
SHARED_LINES = 4
"""Documents sharing a run of this many consecutive non-blank lines ..."""
MIN_SHARED_CHARS = 80
"""... of at least this many characters in all are near-duplicates (shorter runs are boilerplate
such as a licence header or an empty docstring template)."""
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


def passages(text: str) -> set[bytes]:
    """Fingerprints of the runs of SHARED_LINES consecutive non-blank lines (stripped) of at
    least MIN_SHARED_CHARS characters: two documents sharing one share a passage."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    runs = ("\n".join(lines[i : i + SHARED_LINES]) for i in range(len(lines) - SHARED_LINES + 1))
    return {hashlib.blake2b(run.encode(), digest_size=8).digest() for run in runs if len(run) >= MIN_SHARED_CHARS}


def near_duplicate_groups(texts: dict[str, str]) -> dict[str, str]:
    """{hash: the smallest hash of its group}: documents that share a passage, directly or
    through others, form one group (union-find over ``texts``, keyed by document hash)."""
    parent = {h: h for h in texts}

    def root(h: str) -> str:
        while parent[h] != h:
            parent[h] = parent[parent[h]]
            h = parent[h]
        return h

    first_holder: dict[bytes, str] = {}
    for h in sorted(texts):
        for passage in passages(texts[h]):
            other = first_holder.setdefault(passage, h)
            a, b = root(h), root(other)
            if a != b:
                parent[max(a, b)] = min(a, b)
    return {h: root(h) for h in texts}


def split_documents(
    docs: Iterable[str], val_fraction: float = 0.05, max_chars: int = MAX_DOC_CHARS
) -> dict[str, list[str]]:
    """{'train': [...], 'validation': [...]}: each distinct non-blank piece goes to exactly one
    split, with its near-duplicates (``near_duplicate_groups``).

    Validation holds about ``val_fraction`` of the characters: whole groups, taken in the order
    of their smallest hash. If that leaves validation empty, the group of the smallest hash goes
    there (and if it takes everything, the piece with the largest hash stays in training), so
    both splits exist whenever there are two distinct pieces.
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
    order = sorted(seen)  # by hash: the result does not depend on the input order
    group = near_duplicate_groups(seen)
    members: dict[str, list[str]] = {}
    for h in order:
        members.setdefault(group[h], []).append(h)
    # Groups in the order of their smallest hash (random, but fixed by content) fill validation
    # up to val_fraction of the characters; a group that would overshoot by more than half its
    # size is passed over, so one large group does not make validation several times too big.
    target, held = val_fraction * sum(len(t) for t in seen.values()), 0.0
    val: set[str] = set()
    for root in sorted(members):
        size = sum(len(seen[h]) for h in members[root])
        if held + size / 2 <= target:
            val.update(members[root])
            held += size
    if not val:
        val = set(members[order[0]])
    if len(val) == len(order):
        val.discard(order[-1])
    return {
        "train": [seen[h] for h in order if h not in val],
        "validation": [seen[h] for h in order if h in val],
    }
