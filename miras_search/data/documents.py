"""Documents -> train / validation split, by a hash of each document's text (never by position).

Identical documents are kept once, and documents that share a passage (a run of SHARED_LINES
long lines, e.g. a help topic quoted inside a longer one) are split as one group, so no passage
of validation text is also training text (boilerplate that many documents hold, such as a
licence header, does not count). Groups are ordered by the smallest hash of their members and
fill validation in that order: the split depends only on content, never on the order documents
come in; adding documents can move only the groups at the boundary.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterable

from miras_search.errors import MirasError

SPLITS = ("train", "validation")
SHARED_LINES = 4
"""Documents sharing a run of this many consecutive non-blank lines ..."""
MIN_SHARED_CHARS = 80
"""... of at least this many characters in all are near-duplicates (shorter runs are too
common to mean anything, such as an empty docstring template)."""
BOILERPLATE_DOCS = 8
"""A passage in more documents than this (and than 1 % of them) is boilerplate, not a copy."""

MAX_DOC_CHARS = 65_536
"""Longer documents are cut at line ends into pieces of about this size before splitting, so one
large file still yields both splits."""


class SplitWarning(UserWarning):
    """The documents could not be split with their near-duplicates kept together."""


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
    through others, form one group (union-find over ``texts``, keyed by document hash).

    A passage held by more than max(BOILERPLATE_DOCS, 1 % of the documents) links nothing: it is
    boilerplate (a licence header, a prompt template) that no split could keep on one side.
    """
    holders: dict[bytes, list[str]] = {}
    for h in sorted(texts):
        for passage in passages(texts[h]):
            holders.setdefault(passage, []).append(h)
    parent = {h: h for h in texts}

    def root(h: str) -> str:
        while parent[h] != h:
            parent[h] = parent[parent[h]]
            h = parent[h]
        return h

    limit = max(BOILERPLATE_DOCS, len(texts) // 100)
    for docs in holders.values():
        if len(docs) > limit:
            continue
        for other in docs[1:]:
            a, b = root(docs[0]), root(other)
            if a != b:
                parent[max(a, b)] = min(a, b)
    return {h: root(h) for h in texts}


def _fill(members: dict[str, list[str]], chars: dict[str, int], target: float) -> set[str]:
    """Groups (``members``: smallest hash -> hashes) taken in the order of that hash while
    validation stays within ``target`` characters; a group that would overshoot by more than half
    its size is passed over, so one large group cannot make validation several times too big."""
    val: set[str] = set()
    held = 0.0
    for root in sorted(members):
        size = sum(chars[h] for h in members[root])
        if held + size / 2 <= target:
            val.update(members[root])
            held += size
    return val


def split_documents(
    docs: Iterable[str], val_fraction: float = 0.05, max_chars: int = MAX_DOC_CHARS
) -> dict[str, list[str]]:
    """{'train': [...], 'validation': [...]}: each distinct non-blank piece goes to exactly one
    split, with its near-duplicates (``near_duplicate_groups``).

    Validation holds about ``val_fraction`` of the characters: whole groups, taken in the order
    of their smallest hash. When no group is small enough (documents chained by shared passages
    into a few large groups), the pieces are split one by one instead, with a SplitWarning. Both
    splits exist whenever there are two distinct pieces.
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
    chars = {h: len(seen[h]) for h in order}
    total = sum(chars.values())
    target = val_fraction * total
    group = near_duplicate_groups(seen)
    members: dict[str, list[str]] = {}
    for h in order:
        members.setdefault(group[h], []).append(h)
    val = _fill(members, chars, target)
    if len(members) < len(order) and (not val or len(val) == len(order)):
        largest = max(sum(chars[h] for h in hs) for hs in members.values())
        warnings.warn(SplitWarning(
            f"the documents share passages so widely that near-duplicates form groups of up to "
            f"{largest / total:.0%} of the text, too large to hold out {val_fraction:.0%}; they are "
            "split one by one, so some validation passages are also training text"
        ), stacklevel=2)
        val = _fill({h: [h] for h in order}, chars, target)
    val = val or {order[0]}
    if len(val) == len(order):
        val.discard(order[-1])
    return {
        "train": [seen[h] for h in order if h not in val],
        "validation": [seen[h] for h in order if h in val],
    }
