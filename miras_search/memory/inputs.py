"""The memory's inputs in its internal layout: heads first, multistep micro-steps flattened.

Every tensor is ``[B, H, N, ...]`` with N = T * n (n micro-steps per token for multistep, else 1);
gates are ``[B, H, N, c]`` with c = 1 (per head) or channel-wise: eta and alpha carry one value per
input channel of each memory layer (c = K for a matrix or vector memory; K + hidden for a 2-layer
MLP memory, its layers' input widths concatenated, see ``layer_gates``), delta one per value
channel (c = V).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

import torch
from einops import rearrange, repeat
from torch import Tensor

from miras_search.memory.gates import MemoryGates

_TENSORS = ("q", "k", "v", "eta", "alpha", "theta", "delta", "write", "momentum_mask",
            "window_k", "window_v", "window_delta", "window_weight")


@dataclass
class MemoryInputs:
    """q, k: [B, H, N, K]; v: [B, H, N, V]; eta: [B, H, N, c]; alpha: [B, H, N, c] | None
    (1 at every micro-step but a token's first); theta, delta: [B, H, N, 1] | None;
    write: [B, H, N, K] | None, the key the value is written with when it is not eta * k;
    momentum_mask: [B, H, N, 1] | None, 1 at the micro-steps whose momentum joins the memory
    (X = alpha X + S), 0 at the others (X = alpha X: the Omega window's entries before a token's
    last, ``window_as_entries``); None: every micro-step.
    ``steps``: micro-steps per token; outputs are read at each token's last micro-step;
    ``first_step``: the micro-step (within its token) of this piece's first row (split and
    slice set it: a chunk of micro-steps need not start at a token's first).

    The Omega rule's window (Atlas, arXiv 2505.23735 Eq. 9; None for the online update): each
    token carries the c tokens whose loss its step minimises, lag 0 (itself) first:
    window_k: [B, H, N, c, K]; window_v: [B, H, N, c, V]; window_delta: [B, H, N, c, d] | None;
    window_weight: [B, H, N, c, 1], gamma_i^(t) (1 at lag 0, 0 before the sequence starts)."""

    q: Tensor
    k: Tensor
    v: Tensor
    eta: Tensor
    alpha: Tensor | None
    theta: Tensor | None
    delta: Tensor | None
    steps: int = 1
    write: Tensor | None = None
    momentum_mask: Tensor | None = None
    window_k: Tensor | None = None
    window_v: Tensor | None = None
    window_delta: Tensor | None = None
    window_weight: Tensor | None = None
    first_step: int = 0

    @property
    def length(self) -> int:
        return self.k.shape[2]

    def read_rows(self) -> slice | None:
        """The rows whose outputs ``token_outputs`` keeps, each token's last micro-step (None:
        every row, one micro-step per token)."""
        if self.steps == 1:
            return None
        return slice((self.steps - 1 - self.first_step) % self.steps, None, self.steps)

    def _at(self, start: int) -> int:
        """first_step of a piece starting ``start`` rows into this one."""
        return (self.first_step + start) % self.steps

    def slice(self, start: int, stop: int) -> MemoryInputs:
        """Micro-steps [start, stop)."""
        def cut(x: Tensor | None) -> Tensor | None:
            return None if x is None else x[:, :, start:stop]
        return replace(self, first_step=self._at(start), **{name: cut(getattr(self, name)) for name in _TENSORS})

    @torch.compiler.disable  # under train.compile: views only, nothing to compile per field shape
    def split(self, sizes: int | list[int]) -> list[MemoryInputs]:
        """Consecutive pieces along the micro-steps, as ``torch.split`` cuts (an int: pieces of
        that many, the last one shorter). Loops over pieces take them this way, not with
        ``slice``: the backward of a slice of the full-length tensors fills a full-length zero
        gradient per piece (quadratic in N), that of split fills one in all."""
        def cut(x: Tensor | None) -> list[Tensor | None]:
            return [None] * n if x is None else list(x.split(sizes, dim=2))

        n = len(self.k.split(sizes, dim=2))
        fields = [cut(getattr(self, name)) for name in _TENSORS]
        lengths = [part.shape[2] for part in fields[_TENSORS.index("k")]]
        starts = itertools.accumulate(lengths[:-1], initial=0)
        return [replace(self, first_step=self._at(start), **dict(zip(_TENSORS, parts, strict=True)))
                for start, parts in zip(starts, zip(*fields, strict=True), strict=True)]

    def gradient_terms(self) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None, int]:
        """(k, v, delta, weight, c): the (key, value) pairs whose loss gradients the steps sum,
        flattened to [B, H, N * c, ...] (token i's c window entries in a row; c = 1 and weight
        None without a window); weight [B, H, N * c, 1]."""
        if self.window_k is None:
            return self.k, self.v, self.delta, None, 1
        def flat(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.flatten(2, 3)
        return (flat(self.window_k), flat(self.window_v), flat(self.window_delta),
                flat(self.window_weight), self.window_k.shape[3])

    def token_outputs(self, y: Tensor) -> Tensor:
        """Outputs at every micro-step [B, H, N, V] -> each token's output [B, T, H, V]."""
        y = rearrange(y, "b h (t n) v -> b t n h v", n=self.steps)
        return y[:, :, -1]


def window_as_entries(x: MemoryInputs) -> MemoryInputs:
    """The Omega window's step as c plain entries per token (``steps`` = c): entry j of token t
    writes (k_{t-j}, v_{t-j}) at the rate eta_t gamma_{t,j}; only the first retains (alpha_t, 1
    after it) and decays the momentum (theta_t, 1 after it), only the last adds the momentum to
    the memory (``momentum_mask``), and t reads after its last entry. In the chunked form a chunk
    of b tokens is then one of b c entries, all differentiated at the chunk's start memory, which
    is the window's chunked form (``materialised``) without per-token weights; kernels.omega runs
    gd's on the Triton kernels. ``x``: one micro-step per token, with its window fields."""
    c = x.window_k.shape[3]

    def flat(t: Tensor | None) -> Tensor | None:
        return None if t is None else t.flatten(2, 3)

    def first_entry(gate: Tensor | None) -> Tensor | None:  # [B, H, N, d] -> [B, H, N * c, d]
        if gate is None:
            return None
        rest = torch.ones_like(gate).unsqueeze(3).expand(-1, -1, -1, c - 1, -1)
        return flat(torch.cat([gate.unsqueeze(3), rest], dim=3))

    mask = None
    if x.theta is not None:
        last = torch.arange(c, device=x.k.device) == c - 1
        mask = last.to(x.k.dtype)[:, None].repeat(x.length, 1).expand(*x.k.shape[:2], -1, 1)
    return MemoryInputs(
        q=x.q.repeat_interleave(c, dim=2), k=flat(x.window_k), v=flat(x.window_v),
        eta=flat(x.eta.unsqueeze(3) * x.window_weight), alpha=first_entry(x.alpha),
        theta=first_entry(x.theta), delta=flat(x.window_delta), steps=c, momentum_mask=mask,
    )


def layer_gates(gate: Tensor | None, widths: list[int]) -> list[Tensor | None]:
    """A gate [..., c] split per memory layer: c = 1 (per head) serves every layer as it is; a
    channel-wise gate holds each layer's input channels in turn (c = sum of ``widths``, the
    layers' input widths) and layer l gets its own [..., widths[l]]."""
    if gate is None or gate.shape[-1] == 1:
        return [gate] * len(widths)
    if gate.shape[-1] != sum(widths):
        raise ValueError(
            f"a channel-wise gate has {gate.shape[-1]} channels, but this memory's layers take "
            f"{'+'.join(map(str, widths))} = {sum(widths)} (one per input channel of each layer)"
        )
    return list(gate.split(widths, dim=-1))


def _in_loop_layout(x: Tensor) -> Tensor:
    """``x`` written in its own (heads-first) layout (the gates already are: model.gates).
    Under train.compile the layer's graph ends where the chunk loop begins, and a permuted view of
    a [B, T, H, c] tensor leaving it came back as a gradient in the loop's layout, which
    AOTAutograd copied into the one the graph expects (about 1.5 ms per tensor and layer call at
    the whole-model benchmark's size); written heads-first by the kernel that makes it, it costs
    nothing more. Eager, every chunk's element-wise work then runs on one layout
    (``model.gates._heads_first_storage``)."""
    return x.contiguous()


def _gate(x: Tensor | None, steps: int, name: str, multistep_axis: bool) -> Tensor | None:
    """[B, T, (n,) H(, K)] -> [B, H, T*n, c]."""
    if x is None:
        return None
    if multistep_axis:
        if x.dim() == 4:
            x = x.unsqueeze(-1)
        if x.dim() != 5:
            raise ValueError(f"gates.{name} must be [B, T, n, H] or [B, T, n, H, K], got {tuple(x.shape)}")
        return rearrange(x, "b t n h c -> b h (t n) c")
    if x.dim() == 3:
        x = x.unsqueeze(-1)
    if x.dim() != 4:
        raise ValueError(f"gates.{name} must be [B, T, H] or [B, T, H, K], got {tuple(x.shape)}")
    x = rearrange(x, "b t h c -> b h t c")
    if steps > 1:
        return repeat(x, "b h t c -> b h (t n) c", n=steps)
    return _in_loop_layout(x)


def _lagged(x: Tensor, window: int) -> Tensor:
    """[B, H, N, d] -> [B, H, N, c, d]: entry j of token t is x_{t-j} (zeros before the start)."""
    length = x.shape[2]
    padded = torch.nn.functional.pad(x, (0, 0, window - 1, 0))
    return torch.stack([padded[:, :, window - 1 - j: window - 1 - j + length] for j in range(window)], dim=3)


def window_inputs(x: MemoryInputs, gamma: Tensor | None, window: int) -> MemoryInputs:
    """``x`` with the Omega rule's window fields (see MemoryInputs); gamma: [B, H, N, 1 | c - 1]."""
    batch, heads, length, _ = x.k.shape
    if gamma is None:
        raise ValueError(f"an Omega window of {window} needs gates.gamma ([B, T, H] or [B, T, H, "
                         f"{window - 1}]); got None")
    lags = torch.arange(window, device=x.k.device)
    valid = (torch.arange(length, device=x.k.device)[:, None] >= lags).to(x.k.dtype)  # [N, c]
    past = gamma.expand(batch, heads, length, window - 1)
    weight = torch.cat([torch.ones_like(past[..., :1]), past], dim=-1) * valid
    return replace(
        x, window_k=_lagged(x.k, window), window_v=_lagged(x.v, window),
        window_delta=None if x.delta is None else _lagged(x.delta, window),
        window_weight=weight.unsqueeze(-1),
    )


def prepare_inputs(
    q: Tensor, k: Tensor, v: Tensor, gates: MemoryGates, steps: int, implicit: bool,
    dtype: torch.dtype, window: int = 1,
) -> MemoryInputs:
    """Cast to ``dtype`` and move to the internal layout (see MemoryInputs); ``window`` > 1 adds
    the Omega rule's window fields from ``gates.gamma``."""
    def cast(x: Tensor | None) -> Tensor | None:
        return None if x is None else x.to(dtype)

    q, k, v = cast(q), cast(k), cast(v)
    if steps > 1:
        if k.dim() != 5 or v.dim() != 5:
            raise ValueError(
                f"multistep ({steps} steps) needs k: [B, T, n, H, K] and v: [B, T, n, H, V]; "
                f"got k {tuple(k.shape)}, v {tuple(v.shape)}"
            )
        k_in = rearrange(k, "b t n h d -> b h (t n) d")
        v_in = rearrange(v, "b t n h d -> b h (t n) d")
    else:
        k_in = rearrange(k, "b t h d -> b h t d")
        v_in = rearrange(v, "b t h d -> b h t d")
    q_in = repeat(q, "b t h d -> b h (t n) d", n=steps)
    q_in, k_in, v_in = _in_loop_layout(q_in), _in_loop_layout(k_in), _in_loop_layout(v_in)
    eta = _gate(cast(gates.eta), steps, "eta", multistep_axis=steps > 1)
    alpha = _gate(cast(gates.alpha), 1, "alpha", multistep_axis=False)
    if alpha is not None and steps > 1:
        # retention applies once per token, at its first micro-step
        ones = torch.ones_like(alpha).unsqueeze(-2).expand(-1, -1, -1, steps - 1, -1)
        alpha = rearrange(
            torch.cat([alpha.unsqueeze(-2), ones], dim=-2), "b h t n c -> b h (t n) c"
        )
    if implicit:
        # Longhorn's closed form = a gd step with eta / (1 + eta ||k||^2)
        eta = eta / (1.0 + eta * k_in.square().sum(-1, keepdim=True))
    x = MemoryInputs(
        q=q_in, k=k_in, v=v_in, eta=eta, alpha=alpha,
        theta=_gate(cast(gates.theta), steps, "theta", multistep_axis=False),
        delta=_gate(cast(gates.delta), steps, "delta", multistep_axis=False),
        steps=steps,
        write=_write_key(cast(gates.write_key), steps),
    )
    if window > 1:
        if steps > 1:
            raise ValueError("an Omega window takes one step per token (not multistep)")
        x = window_inputs(x, _gate(cast(gates.gamma), 1, "gamma", multistep_axis=False), window)
    return x


def _write_key(x: Tensor | None, steps: int) -> Tensor | None:
    """[B, T, H, K] -> [B, H, T, K]; a separate write key is a single-step (gd) feature."""
    if x is None:
        return None
    if steps > 1 or x.dim() != 4:
        raise ValueError(
            f"gates.write_key must be [B, T, H, K] with one step per token, got {tuple(x.shape)} "
            f"with {steps} steps"
        )
    return rearrange(x, "b t h k -> b h t k")
