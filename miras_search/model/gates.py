"""Gate producers: turn a schema ``Gate`` and the tokens x into the gate tensor the memory reads.

Modes (see ``miras_search.schema.gates``):

- ``constant``: the fixed ``value`` everywhere (nothing learned).
- ``retnet``: the fixed per-head decay ``1 - 2**(-5 - h)``, h = 0 .. H-1 (alpha only).
- ``alibi``: the fixed per-head, per-layer decay ``exp(-s_h (1 - l / (L - 1) + 1e-5))``, s_h the
  ALiBi slopes (Lightning Attention; alpha only; see ``alibi_slopes``).
- ``head``: ``squash(Linear(D, H)(x) + b)``, one scalar per head and token.
- ``mamba``: ``exp(-A_h softplus(Linear(D, H)(x) + b))`` (alpha only; Mamba2's and Gated
  DeltaNet's decay), ``A_h = exp(log_a_h)`` learned, drawn from ``gate.a_init`` at init, ``b_h``
  the inverse softplus of a dt drawn log-uniformly from ``gate.dt_init``.
- ``channel``: ``squash(Linear(rank, H*C)(Linear(D, rank)(x)) + b)``, C values per head and token:
  for eta and alpha one per input channel of each memory layer (C = K for a matrix memory, K +
  hidden for a 2-layer MLP memory), for delta one per value channel (C = V); the memory rule says
  which (``MemoryRule.channel_width``).

The last projection starts at zero and the bias b is set so that, at initialisation, the gate
equals ``gate.value`` for every token (mode ``mamba``: its head's drawn value); learning then makes
it data-dependent.

Squashing by gate name (the range each gate must stay in):

- alpha (retention) and theta (momentum): sigmoid, range (0, 1). alpha may be configured as 1.0;
  a sigmoid never reaches 1, so the initial value is capped at ``1 - 1e-4`` (head/channel only;
  gamma's too).
- eta (inner learning rate): sigmoid for ``value < 1`` (range (0, 1), the delta rule's stable
  range), softplus for ``value >= 1`` (range (0, inf)); with ``gate.max_ratio`` set, ``max_ratio
  value sigmoid`` (range (0, max_ratio value)) whatever the value.
- delta (Huber threshold): softplus, range (0, inf).
- gamma (the Omega window's weights of past tokens, Atlas): sigmoid, range (0, 1).

Outputs are clamped to [1e-6, 1 - 1e-6] (sigmoid) or [1e-6, inf) (softplus): in float32 a
saturated sigmoid/softplus returns exactly 0 or 1, outside the open ranges the memory rules need.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from miras_search.schema import Gate
from miras_search.schema.gates import ALPHA_ONLY_MODES

GATE_NAMES = ("eta", "alpha", "theta", "delta", "gamma")
_ALPHA_CAP = 1.0 - 1e-4
_EPS = 1e-6
_A_FLOOR = 1e-4  # Gated DeltaNet draws A from [0, 16]; its log must stay finite


def _inverse_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))  # log(exp(y) - 1), stable for large y


def squashing(name: str, value: float, upper: float | None = None) -> str:
    """Which squashing function gate ``name`` with initial ``value`` (and range maximum ``upper``,
    if set) uses: 'sigmoid' (range (0, upper or 1)) or 'softplus'."""
    if name not in GATE_NAMES:
        raise ValueError(f"unknown gate '{name}'; expected one of {GATE_NAMES}")
    if upper is not None:
        return "sigmoid"
    if name == "delta" or (name == "eta" and value >= 1.0):
        return "softplus"
    return "sigmoid"


def _initial_bias(squash: str, name: str, value: float, upper: float = 1.0) -> float:
    """The pre-activation b with squash(b) == value (alpha and gamma, whose schema range
    includes 1, capped below it); a sigmoid is scaled to the range (0, upper)."""
    if squash == "softplus":
        return _inverse_softplus(value)
    value = value / upper
    if name in ("alpha", "gamma"):
        value = min(value, _ALPHA_CAP)
    return math.log(value) - math.log1p(-value)  # logit


def alibi_slopes(n_heads: int) -> list[float]:
    """ALiBi's per-head slopes: ``2**(-8 (h + 1) / H)`` for H a power of two; otherwise those of
    the largest power of two below H, then every other slope of twice that many heads."""
    def power_of_two(n: int) -> list[float]:
        return [2.0 ** (-8.0 * (h + 1) / n) for h in range(n)]

    if n_heads & (n_heads - 1) == 0:
        return power_of_two(n_heads)
    below = 1 << (n_heads.bit_length() - 1)
    return power_of_two(below) + power_of_two(2 * below)[0::2][: n_heads - below]


def lightning_decay(n_heads: int, layer: int, n_layers: int) -> torch.Tensor:
    """Lightning Attention's fixed decay of each head at layer ``layer`` of ``n_layers``: [H]."""
    depth = 1.0 - layer / (n_layers - 1) if n_layers > 1 else 1.0
    slopes = torch.tensor(alibi_slopes(n_heads), dtype=torch.float64)
    return torch.exp(-slopes * (depth + 1e-5)).float()


def _heads_first_storage(z: torch.Tensor, steps: int) -> torch.Tensor:
    """``z`` ([B, T, H(, C)]) stored heads-first ([B, H, T(, C)] contiguous, returned as a
    [B, T, H(, C)] view); a multistep gate ([B, T, n, H(, C)]) as it is. The memory reads its gates
    heads-first (``memory.inputs._in_loop_layout``), so squashed in that layout the gate is the
    tensor the memory reads and its gradients come back in its own layout:
    - under train.compile a squash in the projection's layout kept both and wrote the gate three
      times (about 3 ms per channel-wise gate and layer call at the whole-model benchmark's size);
    - eager, the squash's backward and the memory's per-chunk products with the gates ran on
      mismatched layouts (with the q/k/v written heads-first too: eager step, 10 interleaved
      rounds, titans 489.1 -> 468.9 ms, moneta 710.2 -> 694.2, yaad 629.5 -> 613.9)."""
    if steps > 1:
        return z
    return z.transpose(1, 2).contiguous().transpose(1, 2)


class GateProducer(nn.Module):
    """Produce one gate tensor from x.

    Args:
        name: 'eta' | 'alpha' | 'theta' | 'delta' (sets the squashing, see the module docstring).
        gate: the schema gate (mode, value, rank).
        d_model: D, the width of x.
        n_heads: H.
        channels: C, the width of a channel-wise gate per head (channel mode).
        steps: n > 1 adds an axis of n independent gates per token (multistep eta).
        layer, n_layers: this layer's index and the model's layer count (mode 'alibi' only).

    forward(x: [B, T, D]) -> [B, T, H] (scalar modes) or [B, T, H, C] (channel);
    with steps n > 1: [B, T, n, H] or [B, T, n, H, C].
    """

    def __init__(
        self, name: str, gate: Gate, d_model: int, n_heads: int, channels: int, steps: int = 1,
        layer: int = 0, n_layers: int = 1,
    ):
        super().__init__()
        self.name, self.mode, self.value = name, gate.mode, gate.value
        self.n_heads, self.channels, self.steps = n_heads, channels, steps
        self.squash = squashing(name, gate.value, gate.upper)
        self.upper = 1.0 if gate.upper is None else gate.upper  # a sigmoid's range is (0, upper)
        if gate.mode in ALPHA_ONLY_MODES and name != "alpha":
            raise ValueError(f"{name}: mode '{gate.mode}' is a decay schedule for alpha only")
        self.mamba_ranges = gate.mamba_ranges
        self.log_a: nn.Parameter | None = None
        per_token = n_heads * steps * (channels if gate.mode == "channel" else 1)
        self.down: nn.Linear | None = None
        self.proj: nn.Linear | None = None
        if gate.mode in ("head", "mamba"):
            self.proj = nn.Linear(d_model, per_token, bias=True)
        elif gate.mode == "channel":
            self.down = nn.Linear(d_model, gate.projection_rank, bias=False)
            self.proj = nn.Linear(gate.projection_rank, per_token, bias=True)
        if gate.mode == "mamba":
            self.log_a = nn.Parameter(torch.zeros(per_token))
        if gate.mode == "retnet":
            decay = 1.0 - 2.0 ** (-5.0 - torch.arange(n_heads, dtype=torch.float32))
            self.register_buffer("fixed", decay, persistent=False)
        elif gate.mode == "alibi":
            decay = lightning_decay(n_heads, layer, n_layers)
            self.register_buffer("fixed", decay, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Zero the last projection and set its bias so that the gate starts at ``value``."""
        if self.proj is None:
            return
        nn.init.zeros_(self.proj.weight)
        if self.log_a is not None:
            self._draw_mamba_init()
        else:
            nn.init.constant_(self.proj.bias, _initial_bias(self.squash, self.name, self.value, self.upper))
        if self.down is not None:
            nn.init.normal_(self.down.weight, std=self.down.in_features**-0.5)

    @torch.no_grad()
    def _draw_mamba_init(self) -> None:
        """Per head: A uniform in a_init, dt log-uniform in dt_init, the bias softplus^-1(dt)."""
        (a_low, a_high), (dt_low, dt_high) = self.mamba_ranges
        a = torch.empty_like(self.log_a, dtype=torch.float64).uniform_(a_low, a_high)
        self.log_a.copy_(a.clamp_min(_A_FLOOR).log())
        dt = torch.empty_like(a).uniform_(math.log(dt_low), math.log(dt_high)).exp()
        self.proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # _inverse_softplus, per head

    @property
    def shape_suffix(self) -> tuple[int, ...]:
        """The trailing dims after [B, T]."""
        steps = (self.steps,) if self.steps > 1 else ()
        channel = (self.channels,) if self.mode == "channel" else ()
        return (*steps, self.n_heads, *channel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length = x.shape[:2]
        shape = (batch, length, *self.shape_suffix)
        if self.mode == "constant":
            return x.new_full(shape, self.value)
        if self.mode in ("retnet", "alibi"):
            return self.fixed.to(x.dtype).expand(shape)
        h = x if self.down is None else self.down(x)  # [B, T, D] or [B, T, rank]
        z = _heads_first_storage(self.proj(h).view(shape), self.steps)
        if self.log_a is not None:
            dt = F.softplus(z)
            return torch.exp(-self.log_a.exp().view(self.shape_suffix) * dt).clamp(_EPS, 1.0 - _EPS)
        if self.squash == "sigmoid":
            squashed = torch.sigmoid(z).clamp(_EPS, 1.0 - _EPS)
            return squashed if self.upper == 1.0 else self.upper * squashed
        return F.softplus(z).clamp_min(_EPS)

    def extra_repr(self) -> str:
        if self.mode == "mamba":
            (a_low, a_high), (dt_low, dt_high) = self.mamba_ranges
            return f"{self.name}, mode=mamba, A in [{a_low}, {a_high}], dt in [{dt_low}, {dt_high}]"
        upper = "" if self.upper == 1.0 else f", range=(0, {self.upper:g})"
        return f"{self.name}, mode={self.mode}, value={self.value}{upper}, squash={self.squash}"
