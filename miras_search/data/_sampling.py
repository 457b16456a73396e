"""Vectorised random draws shared by the synthetic tasks (all driven by one torch.Generator)."""

from __future__ import annotations

import torch

# Above this many candidates, distinct draws use rejection instead of a full permutation.
_PERMUTE_LIMIT = 4096


def distinct(n_choices: int, n: int, batch: int, gen: torch.Generator) -> torch.Tensor:
    """[batch, n] integers in [0, n_choices), distinct within each row, in random order."""
    if n > n_choices:
        raise ValueError(f"cannot draw {n} distinct values out of {n_choices}")
    if n_choices <= _PERMUTE_LIMIT:
        return torch.rand(batch, n_choices, generator=gen).argsort(dim=1)[:, :n]
    out = torch.randint(n_choices, (batch, n), generator=gen)
    while True:
        ordered, order = out.sort(dim=1)
        dup = torch.zeros_like(out, dtype=torch.bool)
        dup[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
        if not dup.any():
            return out
        # Redraw the later copy of every repeated value (positions in the unsorted row).
        redo = torch.zeros_like(dup).scatter_(1, order, dup)
        out[redo] = torch.randint(n_choices, (int(redo.sum()),), generator=gen)


def distinct_tuples(
    n_symbols: int, length: int, n: int, batch: int, gen: torch.Generator
) -> torch.Tensor:
    """[batch, n, length] tuples over [0, n_symbols), the n tuples of a row pairwise distinct."""
    codes = distinct(n_symbols**length, n, batch, gen)  # [batch, n]
    digits = n_symbols ** torch.arange(length - 1, -1, -1)  # most significant first
    return codes.unsqueeze(-1) // digits % n_symbols


def place(region: int, item_len: int, n: int, batch: int, gen: torch.Generator) -> torch.Tensor:
    """[batch, n] sorted start offsets of n non-overlapping items of item_len tokens in a region.

    Uniform over all arrangements: choose the n item slots among (free tokens + n) units, then
    every earlier item pushes a start right by item_len - 1.
    """
    free = region - n * item_len
    if free < 0:
        raise ValueError(f"{n} items of {item_len} tokens do not fit in {region} tokens")
    slots = distinct(free + n, n, batch, gen).sort(dim=1).values
    return slots + torch.arange(n) * (item_len - 1)


def scatter_items(
    seq: torch.Tensor, starts: torch.Tensor, items: torch.Tensor, offset: int = 0
) -> torch.Tensor:
    """Write ``items: [B, n, L]`` into ``seq: [B, S]`` at ``offset + starts: [B, n]``.

    Returns the [B, n, L] absolute positions written.
    """
    positions = offset + starts.unsqueeze(-1) + torch.arange(items.shape[-1])  # [B, n, L]
    seq.scatter_(1, positions.flatten(1), items.flatten(1))
    return positions
