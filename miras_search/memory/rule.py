"""MemoryRule: the torch-side view of a ModelPoint's four axes, and the memory state it carries."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from miras_search.errors import UnsupportedPoint
from miras_search.memory.networks import Network
from miras_search.schema import ModelPoint
from miras_search.schema.algorithm import MemoryAlgorithm
from miras_search.schema.bias import AttentionalBias
from miras_search.schema.retention import RetentionGate

MEMORY_NETWORKS = ("vector", "matrix", "mlp")
"""The memory architectures the memory ops have a network for (``memory.networks``)."""


def require_network(kind: str) -> None:
    """UnsupportedPoint naming memory ``kind`` when the memory ops have no network for it (an
    option registered in the schema only)."""
    if kind not in MEMORY_NETWORKS:
        raise UnsupportedPoint(
            f"memory '{kind}' is not built: the memory ops run {', '.join(MEMORY_NETWORKS)} (and "
            "'none', softmax attention); a new architecture also needs its network in "
            "miras_search/memory/networks.py"
        )


@dataclass
class MemoryState:
    """The state carried from token to token: per-layer weights W ([B, H, out, in]), the lq
    accumulator A (or None) and the algorithm's buffer S (the momentum; or None). ``read_scale``:
    the retention's read scale of these weights when the chunked form already has it (lq:
    1 / n(A)), else None."""

    w: list[Tensor]
    a: list[Tensor] | None = None
    s: list[Tensor] | None = None
    read_scale: list[Tensor | None] | None = None


@dataclass
class MemoryRule:
    """One point's memory: architecture (``network``), bias, retention and algorithm (its kind,
    and the option itself as ``optimiser``, whose ``step`` the memory ops take).

    ``memory == 'none'`` is softmax attention (no network, no gates); ``memory_forward`` then runs
    ``softmax_attention`` with ``window``.
    """

    memory: str
    algorithm: str
    network: Network | None = None
    bias: AttentionalBias | None = None
    retention: RetentionGate | None = None
    optimiser: MemoryAlgorithm | None = None
    init: str = "auto"
    steps_per_token: int = 1
    unit_keys: bool = True
    """Whether keys are l2-normalised (``block.qk_l2_norm``): sets the first MLP layer's init."""
    window: int | None = None
    gate_modes: dict[str, str] = field(default_factory=dict)
    omega_window: int = 1
    """bias.window: the Omega rule's c (Atlas); > 1 reads ``MemoryGates.gamma``."""
    write_key: str = "key"
    """algorithm.write_key: 'key', 'one_minus_alpha' (HGRN2, made by the block) or 'lerp'
    (RWKV-7: the memory ops take a separate write key, ``MemoryGates.write_key``)."""

    @classmethod
    def from_point(cls, point: ModelPoint) -> MemoryRule:
        """Build the rule; UnsupportedPoint (naming the axis) for combinations not built."""
        memory, algorithm = point.memory, point.algorithm
        if memory.kind == "none":
            return cls(memory="none", algorithm="none", window=memory.window)
        require_network(memory.kind)
        if memory.kind == "mlp":
            network = Network(
                "mlp", memory.depth, memory.expansion, memory.activation, memory.layer_norm
            )
        else:
            network = Network(memory.kind)
        modes = {name: gate.mode for name, gate in point.gates().items()}
        return cls(
            memory=memory.kind,
            algorithm=algorithm.kind,
            network=network,
            bias=point.bias,
            retention=point.retention,
            optimiser=algorithm,
            init=memory.init,
            steps_per_token=algorithm.steps_per_token,
            unit_keys=point.block.qk_l2_norm,
            gate_modes=modes,
            write_key=getattr(algorithm, "write_key", "key"),
            omega_window=point.bias.window,
        )

    @property
    def is_attention(self) -> bool:
        return self.memory == "none"

    @property
    def materialised_chunks(self) -> bool:
        """Whether the chunked form materialises per-token weights (``memory.materialised``): an
        algorithm whose step is not linear in the gradients (Muon's orthogonalised step) has no
        linear chunk read (the Omega window with gd or momentum runs the linear form as c entries
        per token, ``inputs.window_as_entries``)."""
        return self.optimiser is not None and not self.optimiser.linear_chunks

    def needs(self) -> set[str]:
        """The gates the rule reads: a subset of {'eta', 'alpha', 'theta', 'delta', 'gamma'}."""
        return set(self.gate_modes)

    @property
    def learned_init(self) -> bool:
        """Whether the initial state is a learned parameter (else zeros)."""
        if self.is_attention:
            return False
        return (
            self.memory == "mlp"
            or self.retention.learned_init
            or self.init == "learned"
        )

    def channel_width(self, gate: str, key_dim: int, value_dim: int) -> int:
        """The width of gate ``gate`` in channel mode, per head: delta has one threshold per value
        channel (V); eta and alpha one value per input channel of each memory layer, those of
        layer 1, 2, ... in turn (K for a matrix or vector memory, K + hidden for a 2-layer MLP)."""
        if gate == "delta":
            return value_dim
        if gate == "gamma":
            return self.omega_window - 1
        if self.network is None:
            return key_dim
        return sum(in_dim for _, in_dim in self.network.shapes(key_dim, value_dim))

    def initial_parameters(self, n_heads: int, key_dim: int, value_dim: int) -> list[Tensor]:
        """Raw tensors [H, out, in] (one per memory weight) for the block to register as
        nn.Parameters; empty when the memory starts at zeros.

        Each from the retention's ``initial_parameter`` with the layer's std (``initial_stds``):
        N(0, std^2) by default, the lq accumulator scaled so that W_0 = A_0 / n(A_0) has that std.
        """
        if not self.learned_init:
            return []
        params = []
        shapes = self.network.shapes(key_dim, value_dim)
        for (out_dim, in_dim), std in zip(shapes, self.initial_stds(key_dim, value_dim), strict=True):
            shape = (n_heads, out_dim, in_dim)
            params.append(self.retention.initial_parameter(shape, std, self.memory == "mlp"))
        return params

    def initial_stds(self, key_dim: int, value_dim: int) -> list[float]:
        """The std of each memory weight's initial entries.

        By default 1 / sqrt(fan_in). An MLP memory behind its LayerNorm differs, because the
        inner step is only stable relative to the inner loss's curvature, and under the
        LayerNorm that curvature in a layer's weights is about 1 / std^2 of the last layer
        (its output spread sets the LayerNorm's gain): 1 / sqrt(fan_in) there makes it about
        the hidden width (256 at head dim 64), where a matrix memory with unit keys has 1, so
        any eta below 1 overshoots by two orders of magnitude. Hence:

        - last layer: std 1. The LayerNorm makes M(x) independent of this scale, so only the
          curvature changes: about 1, as for a matrix memory with unit keys.
        - first layer: std 1 / ||k|| (1 for l2-normalised keys, else 1 / sqrt(K)): unit-variance
          pre-activations, for which the first layer's curvature is about 1 too.
        - middle layers: 1 / sqrt(fan_in).
        """
        shapes = self.network.shapes(key_dim, value_dim)
        stds = [1.0 / math.sqrt(in_dim) for _, in_dim in shapes]
        if self.memory == "mlp" and self.network.layer_norm:
            stds[0] = 1.0 if self.unit_keys else 1.0 / math.sqrt(key_dim)
            stds[-1] = 1.0
        return stds

    def initial_state(
        self, params: list[Tensor], batch: int, n_heads: int, key_dim: int, value_dim: int,
        dtype: torch.dtype, device: torch.device,
    ) -> MemoryState:
        """W_0 (and A_0, S_0) broadcast over the batch: each [B, H, out, in]."""
        shapes = self.network.shapes(key_dim, value_dim)
        if self.learned_init:
            if len(params) != len(shapes):
                raise ValueError(
                    f"memory '{self.memory}' with retention '{self.retention.kind}' needs "
                    f"{len(shapes)} initial parameters (rule.initial_parameters), got {len(params)}"
                )
            w, a = [], []
            for param, (out_dim, in_dim) in zip(params, shapes, strict=True):
                if tuple(param.shape) != (n_heads, out_dim, in_dim):
                    raise ValueError(
                        f"initial memory parameter has shape {tuple(param.shape)}, expected "
                        f"{(n_heads, out_dim, in_dim)} for {n_heads} heads"
                    )
                # contiguous: every chunk then sees one state layout (a compiled chunk update is
                # specialised to its inputs' strides, and this copy is one state's size)
                full = param.to(dtype).unsqueeze(0).expand(batch, -1, -1, -1).contiguous()
                w_l, a_l = self.retention.from_param(full)
                w.append(w_l)
                a.append(a_l)
            state = MemoryState(w, a if self.retention.carries_aux else None)
        else:
            zeros = [torch.zeros(batch, n_heads, o, i, dtype=dtype, device=device) for o, i in shapes]
            state = MemoryState(zeros)
        if self.optimiser.buffered:
            state.s = [torch.zeros_like(w_l) for w_l in state.w]
        return state
