"""The token vocabulary shared by every data source: 256 byte ids and 4 special ids.

Byte-level text uses ids 0..255 for the bytes of its UTF-8 encoding; synthetic tasks draw their
symbols from the same 0..255 range, so every batch fits the model's default vocabulary of 260.
"""

from __future__ import annotations

N_BYTES = 256
"""Ids 0..255 are raw bytes (byte-level text) or task symbols (synthetic tasks)."""

PAD = 256
"""Filler: blank positions of synthetic tasks."""

BOS = 257
"""Beginning of a sequence (synthetic tasks start with it)."""

EOS = 258
"""End of a document; separates documents in a text stream."""

SEP = 259
"""Separator: marks where a synthetic task's queries or answers begin."""

VOCAB_SIZE = 260
"""256 bytes + PAD, BOS, EOS, SEP: the smallest model vocabulary every built-in source fits."""

IGNORE_INDEX = -100
"""Target value of positions where no loss is taken (torch's cross-entropy default)."""

