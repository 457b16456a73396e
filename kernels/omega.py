"""Atlas's Omega window (arXiv 2505.23735, Eq. 9) on the chunk kernels: gd, and momentum on the
matrix kernel.

With the window, token t's step is a weighted sum of c gradients, all taken (in the chunked
mini-batch form) at the chunk's start memory W_0:

    W_t = alpha_t W_{t-1} - eta_t sum_{j<c} w_{t,j} grad l(W_0; k_{t-j}, v_{t-j}),
    w_{t,0} = 1, w_{t,j} = gamma_{t,j} (j >= 1), 0 where t - j < 0.

That is c' >= c consecutive plain gd entries per token: entry (t, j) writes (k_{t-j}, v_{t-j})
with the rate eta_t w_{t,j} (0 for the entries past the window and before the sequence), the
first entry retains with alpha_t and the others with 1, and token t reads after its last entry.
A chunk of b tokens is then one of b c' entries, whose gradients the kernels take at the same
W_0 (and, for l2 retention's gradient at the retained memory, at the same beta_t W_0): the kernels'
output at each token's last entry is exactly ``miras_search.memory.materialised``'s. c' is the
smallest width >= c with b c' one of the kernels' chunk sizes, so the entries cost c' times the
tokens of a window-1 layer (and c'^2 times its intra-chunk products).

With momentum, S_t = theta_t S_{t-1} - eta_t sum_j w_{t,j} grad_j and W_t = alpha_t W_{t-1} + S_t:
the entries carry theta_t at the first one (1 at the others) and S accumulates over them, but S
must join W once per token. The matrix kernel's momentum mask (``momentum_mask``, 1 at each
token's last entry) does that (W_e = alpha_e W_{e-1} + m_e S_e); the MLP kernels, the matrix
kernel's momentum with a channel-wise alpha and its kl kernel have no mask
(``window_algorithm_problem``). Muon's step is not linear in the gradients: no kernel.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .limits import CHUNK_SIZES


def window_entries(window: int, chunk_size: int) -> int | None:
    """c', the entries per token for an Omega window of ``window`` at ``chunk_size`` tokens per
    chunk: the smallest c' >= window with chunk_size * c' in CHUNK_SIZES, or None."""
    fits = [size // chunk_size for size in CHUNK_SIZES if size % chunk_size == 0 and size // chunk_size >= window]
    return min(fits) if fits else None


def window_algorithm_problem(memory: str, algorithm: str, alpha_mode: str | None,
                             retention: str) -> str | None:
    """Why no kernel runs an Omega window with this memory ('matrix' / 'mlp'), algorithm, alpha
    mode ('head', 'channel', ... or None) and retention kind, or None: gd on the matrix and MLP
    kernels; momentum on the matrix kernel (its momentum mask) with alpha per head or none and
    retention none, l2 or lq."""
    if algorithm == "gd":
        return None
    if algorithm != "momentum":
        return (f"the Omega window has a kernel with algorithm 'gd' (matrix and MLP memories) or "
                f"'momentum' (matrix memory), not '{algorithm}'")
    if memory != "matrix":
        return "the Omega window with momentum has a kernel on a matrix memory only, not an MLP one"
    if alpha_mode == "channel" or retention == "kl":
        return ("the Omega window with momentum has a kernel with alpha per head or none and "
                "retention none, l2 or lq, not a channel-wise alpha or kl retention")
    return None


def window_problem(window: int, chunk_size: int) -> str | None:
    """Why the kernels cannot take an Omega window of ``window`` at ``chunk_size``, or None."""
    if window_entries(window, chunk_size) is not None:
        return None
    return (f"an Omega window of {window} (bias.window) at chunk_size {chunk_size}: the kernels run "
            f"the window as c' >= {window} entries per token in chunks of chunk_size x c' tokens, "
            f"one of {CHUNK_SIZES} (e.g. chunk_size 16 takes windows up to 4, 32 up to 2)")


def _entry_index(length: int, window: int, entries: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(source, valid): source[t, j] = t - j where entry (t, j) is in the window and the
    sequence, else t (a placeholder with a zero rate); valid [T, c'] as 0 / 1."""
    t = torch.arange(length, device=device)[:, None]
    j = torch.arange(entries, device=device)[None, :]
    valid = (j < window) & (t >= j)
    return torch.where(valid, t - j, t), valid


def _per_entry(x: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """[B, T, H, ...] -> [B, T * c', H, ...]: entry (t, j) holds token source[t, j]'s row."""
    return x.index_select(1, source.flatten())


def _rates(eta: torch.Tensor, gamma: torch.Tensor, valid: torch.Tensor, window: int) -> torch.Tensor:
    """eta_t w_{t,j} per entry: eta [B, T, H] or [B, T, H, C], gamma [B, T, H] or [B, T, H, c - 1]
    -> [B, T * c', H] or [B, T * c', H, C]."""
    batch, length, heads = eta.shape[:3]
    entries = valid.shape[1]
    lags = gamma.unsqueeze(-1) if gamma.dim() == 3 else gamma  # [B, T, H, 1 | c - 1]
    lags = lags.expand(batch, length, heads, window - 1).movedim(-1, 2)  # [B, T, c - 1, H]
    first = torch.ones_like(lags[:, :, :1])
    past = torch.zeros_like(lags[:, :, :1]).expand(-1, -1, entries - window, -1)
    weight = torch.cat([first, lags, past], dim=2) * valid[None, :, :, None].to(lags.dtype)  # [B, T, c', H]
    if eta.dim() == 4:
        weight = weight.unsqueeze(-1)
    return (eta.unsqueeze(2) * weight).flatten(1, 2)


def _at_first_entry(gate: torch.Tensor, entries: int) -> torch.Tensor:
    """A decay gate (alpha_t, theta_t) at each token's first entry, 1 at the others:
    [B, T, H(, C)] -> [B, T * c', H(, C)]."""
    rest = torch.ones_like(gate).unsqueeze(2).expand(-1, -1, entries - 1, *gate.shape[2:])
    return torch.cat([gate.unsqueeze(2), rest], dim=2).flatten(1, 2)


def _last_entries(theta: torch.Tensor, entries: int) -> torch.Tensor:
    """The momentum mask: 1 at each token's last entry, 0 at the others, [B, T, H] ->
    [B, T * c', H] (theta's dtype)."""
    mask = torch.zeros_like(theta).unsqueeze(2).expand(-1, -1, entries, -1).clone()
    mask[:, :, -1] = 1.0
    return mask.flatten(1, 2)


def omega_window(run: Callable[..., torch.Tensor], window: int) -> Callable[..., torch.Tensor]:
    """A chunk kernel ``run(q, k, v, eta, *weights, alpha=, theta=, delta=, chunk_size=, ...)`` as
    the same call with the Omega window's ``gamma=`` ([B, T, H] or [B, T, H, c - 1], in (0, 1)).

    q, k: [B, T, H, K]; v: [B, T, H, V]; eta, alpha, theta, delta as ``run`` takes them per token
    (delta is the entry's own token's threshold, as in ``miras_search.memory.inputs``). With
    ``theta`` (momentum) ``run`` must take ``momentum_mask=`` (the matrix kernel).
    Returns o: [B, T, H, V]."""

    def run_window(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eta: torch.Tensor,
                   *weights: torch.Tensor, gamma: torch.Tensor, alpha: torch.Tensor | None = None,
                   theta: torch.Tensor | None = None, delta: torch.Tensor | None = None,
                   chunk_size: int = 16, **options: object) -> torch.Tensor:
        entries = window_entries(window, chunk_size)
        if entries is None:
            raise ValueError(window_problem(window, chunk_size))
        length = q.shape[1]
        source, valid = _entry_index(length, window, entries, q.device)
        reader = torch.arange(length, device=q.device).repeat_interleave(entries)
        if theta is not None:  # S accumulates over a token's entries and joins W at its last
            options = {**options, "theta": _at_first_entry(theta, entries),
                       "momentum_mask": _last_entries(theta, entries)}
        o = run(
            q.index_select(1, reader), _per_entry(k, source), _per_entry(v, source),
            _rates(eta, gamma.to(eta.dtype), valid, window), *weights,
            alpha=None if alpha is None else _at_first_entry(alpha, entries),
            delta=None if delta is None else _per_entry(delta, source),
            chunk_size=chunk_size * entries, **options,
        )
        return o.unflatten(1, (length, entries))[:, :, -1]

    return run_window
