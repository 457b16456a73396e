"""The segments a chunked kernel walks a sequence in: its chunks, or, for kl retention (Memora),
each chunk split after its first token, the "lag token" that takes the exact update before the
rest of the chunk takes its gradients at the new state (miras_search.memory.chunked)."""

from __future__ import annotations


def segments(length: int, chunk_size: int, lag_token: bool) -> list[tuple[int, int]]:
    """[start, stop) of each segment: chunks, each split after its first token when ``lag_token``."""
    out = []
    for start in range(0, length, chunk_size):
        stop = min(start + chunk_size, length)
        if lag_token:
            out.append((start, start + 1))
            if stop > start + 1:
                out.append((start + 1, stop))
        else:
            out.append((start, stop))
    return out
