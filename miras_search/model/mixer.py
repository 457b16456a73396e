"""Token mixers: the test-time memory layer and the softmax-attention layer.

Both map x: [B, T, D] -> [B, T, D]; H heads with per-head key width K and value width V
(``block.head_k`` / ``block.head_v``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from miras_search.errors import UnsupportedPoint
from miras_search.memory import MemoryGates, MemoryRule, memory_forward, softmax_attention
from miras_search.memory.kernel_path import kernel_problem
from miras_search.model.gates import GATE_NAMES, GateProducer
from miras_search.model.layers import ShortConv, l2_normalize, rotary
from miras_search.schema import ModelPoint


def resolved_chunk_form(point: ModelPoint) -> str:
    """train.chunk_form with 'auto' resolved: 'exact_delta' where it applies, else 'minibatch'."""
    return "exact_delta" if point.uses_exact_delta() else "minibatch"


class MemoryMixer(nn.Module):
    """The Miras layer: q/k/v -> short conv + SiLU -> l2 norm (q, k) -> memory -> norm -> gate -> out.

    With a multistep algorithm (n inner steps per token) k, v and eta carry an extra axis of n.
    The gates and the memory's state math run in float32 or wider, also under bf16 autocast.

    ``mode`` / ``chunk_size`` / ``chunk_form`` come from ``point.train`` and may be changed on the
    instance (``MirasLM.set_memory_form``) without rebuilding. ``layer`` / ``n_layers`` place the
    layer in the model (Lightning Attention's fixed decay depends on depth).

    ``memory.feature_map`` (Atlas, arXiv 2505.23735 Eqs. 5, 22) maps the normalised keys and
    queries to phi(k), phi(q) before the memory (learned coefficients: one per degree and head).
    ``bias.window`` > 1 adds the gate gamma (the Omega window's weights, Eq. 9).

    ``algorithm.write_key`` changes the keys: 'one_minus_alpha' (HGRN2) has no key projection, the
    key is ``1 - alpha_t``; 'lerp' (RWKV-7) writes the value with ``k * (1 + (eta - 1) * a)``, ``a``
    a learned vector per head and key channel starting at 1, and removes with the key k itself.
    """

    def __init__(self, point: ModelPoint, layer: int = 0, n_layers: int = 1):
        super().__init__()
        block = point.block
        self.rule = MemoryRule.from_point(point)
        self.n_heads, self.key_dim, self.value_dim = block.n_heads, block.head_k, block.head_v
        self.steps = getattr(self.rule, "steps_per_token", 1) or 1
        d, h, k, v, n = block.d_model, self.n_heads, self.key_dim, self.value_dim, self.steps
        # Atlas's feature map on keys and queries: the memory's key width is phi's
        self.feature_map = getattr(point.memory, "feature_map", None)
        if self.feature_map is not None and self.feature_map.kind == "identity":
            self.feature_map = None
        # sqrt(a_i) per head and degree, flat so that weight decay leaves it alone (as write_mix)
        self.feature_coefficients = (
            nn.Parameter(torch.tensor(self.feature_map.initial_coefficients()).repeat(h))
            if self.feature_map is not None and self.feature_map.learned else None
        )
        # the map's monomial tables (integers), kept on the model's device: no copy per call
        tables = [] if self.feature_map is None else self.feature_map.monomial_tensors(k)
        for i, (index, counts) in enumerate(tables):
            self.register_buffer(f"monomial_index_{i}", index, persistent=False)
            self.register_buffer(f"monomial_counts_{i}", counts, persistent=False)
        self._monomial_degrees = len(tables)
        k_mem = k if self.feature_map is None else self.feature_map.width(k)
        self.q_proj = nn.Linear(d, h * k, bias=False)
        self.write_key = self.rule.write_key
        keyed = self.write_key != "one_minus_alpha"
        self.k_proj = nn.Linear(d, n * h * k, bias=False) if keyed else None
        self.v_proj = nn.Linear(d, n * h * v, bias=False)
        self.q_conv = ShortConv(h * k, block.conv_size)
        self.k_conv = ShortConv(n * h * k, block.conv_size) if keyed else None
        # RWKV-7's k_a, one per head and key channel; flat so that weight decay leaves it alone
        self.write_mix = nn.Parameter(torch.ones(h * k)) if self.write_key == "lerp" else None
        self.v_conv = ShortConv(n * h * v, block.conv_size)
        self.qk_l2_norm = block.qk_l2_norm
        specs, needs = point.gates(), sorted(self.rule.needs(), key=GATE_NAMES.index)
        missing = [name for name in needs if name not in specs]
        if missing:
            raise UnsupportedPoint(
                f"the memory rule of this point needs gate(s) {', '.join(missing)}, which none of "
                f"its axes defines (defined: {', '.join(specs) or 'none'})"
            )
        self.gates = nn.ModuleDict(
            {
                name: GateProducer(name, specs[name], d, h, self.rule.channel_width(name, k_mem, v),
                                   steps=n if name == "eta" else 1, layer=layer, n_layers=n_layers)
                for name in needs
            }
        )
        self.memory_params = nn.ParameterList(
            [nn.Parameter(p) for p in self.rule.initial_parameters(h, k_mem, v)]
        )
        # Huber thresholds in units of sqrt(d_v), the error norm's scale at init (bias.threshold_units)
        sqrt_dv = getattr(point.bias, "threshold_units", "absolute") == "sqrt_dv"
        self.delta_scale = math.sqrt(v) if sqrt_dv else 1.0
        self.out_norm = nn.RMSNorm(v, eps=1e-6) if block.output_norm else None
        self.g_proj = nn.Linear(d, h * v, bias=False) if block.output_gate else None
        self.o_proj = nn.Linear(h * v, d, bias=False)
        self.mode = point.train.mode
        self.chunk_size = point.train.chunk_size
        self.chunk_form = resolved_chunk_form(point)
        self.kernel = point.train.kernel
        self.kernel_problem: str | None = None
        """After a forward: None if the memory ran on a Triton kernel, else why it ran PyTorch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        h, k, v, n = self.n_heads, self.key_dim, self.value_dim, self.steps
        step_axis = (n,) if n > 1 else ()
        q = self.q_conv(self.q_proj(x)).view(batch, length, h, k)
        val = self.v_conv(self.v_proj(x)).view(batch, length, *step_axis, h, v)
        key = None
        if self.k_proj is not None:
            key = self.k_conv(self.k_proj(x)).view(batch, length, *step_axis, h, k)
        if self.qk_l2_norm:
            q = l2_normalize(q)
            key = None if key is None else l2_normalize(key)
        if self.feature_map is not None:  # phi(q), phi(k): [B, T, H, features]
            coefficients = (None if self.feature_coefficients is None
                            else self.feature_coefficients.view(h, -1))
            tables = [(getattr(self, f"monomial_index_{i}"), getattr(self, f"monomial_counts_{i}"))
                      for i in range(self._monomial_degrees)]
            q = self.feature_map.apply(q, coefficients, tables)
            key = self.feature_map.apply(key, coefficients, tables)
        # gates near 1 (alpha = 0.9999) do not survive bfloat16: they are produced in float32 (or
        # float64 when x is) outside autocast; memory_forward runs its state math in float32 too
        with torch.autocast(device_type=x.device.type, enabled=False):
            wide = x.to(torch.promote_types(x.dtype, torch.float32))
            produced = {name: producer(wide) for name, producer in self.gates.items()}
            if "delta" in produced and self.delta_scale != 1.0:
                produced["delta"] = produced["delta"] * self.delta_scale
        gates = MemoryGates(**{name: produced.get(name) for name in GATE_NAMES})
        if key is None:  # HGRN2: the key is 1 - alpha_t, [B, T, H, K]
            key = _per_channel(1.0 - gates.alpha, k)
        elif self.write_mix is not None:  # RWKV-7's replacement key
            mix = self.write_mix.view(h, k)
            gates.write_key = key * (1.0 + (_per_channel(gates.eta, k) - 1.0) * mix)
        self.kernel_problem = kernel_problem(self.rule, q, val, self.chunk_size, self.kernel, self.mode,
                                             self.chunk_form)
        # decided once: a layer that reports PyTorch runs PyTorch without asking again
        kernel = "torch" if self.kernel_problem is not None and self.kernel != "triton" else self.kernel
        o = memory_forward(
            self.rule, q, key, val, gates, list(self.memory_params),
            mode=self.mode, chunk_size=self.chunk_size, chunk_form=self.chunk_form, kernel=kernel,
        )  # [B, T, H, V], in q's dtype
        if self.out_norm is not None:
            o = self.out_norm(o)
        o = o.reshape(batch, length, h * v)
        if self.g_proj is not None:
            o = o * F.silu(self.g_proj(x))
        return self.o_proj(o)

    def extra_repr(self) -> str:
        return f"mode={self.mode}, chunk_size={self.chunk_size}, chunk_form={self.chunk_form}"


def _per_channel(gate: torch.Tensor, key_dim: int) -> torch.Tensor:
    """A gate [B, T, H] or [B, T, H, K] as [B, T, H, K]."""
    return gate if gate.dim() == 4 else gate.unsqueeze(-1).expand(*gate.shape, key_dim)


class AttentionMixer(nn.Module):
    """Llama-style causal softmax attention with rotary positions; ``window`` None = full context.

    Scores use the usual 1/sqrt(K) scale (no l2 norm, no output gate). ``conv_size`` > 0 puts the
    Miras block's short causal conv + SiLU on q, k and v: that is memory 'none' inside the block
    (the same q / k / v path the block puts around every other memory); the plain Transformer++
    layer has ``conv_size`` 0.
    """

    def __init__(self, d_model: int, n_heads: int, key_dim: int, value_dim: int, window: int | None,
                 conv_size: int = 0):
        super().__init__()
        self.n_heads, self.key_dim, self.value_dim, self.window = n_heads, key_dim, value_dim, window
        self.q_proj = nn.Linear(d_model, n_heads * key_dim, bias=False)
        self.k_proj = nn.Linear(d_model, n_heads * key_dim, bias=False)
        self.v_proj = nn.Linear(d_model, n_heads * value_dim, bias=False)
        self.o_proj = nn.Linear(n_heads * value_dim, d_model, bias=False)
        self.convs = (
            nn.ModuleList(ShortConv(n_heads * d, conv_size) for d in (key_dim, key_dim, value_dim))
            if conv_size > 0
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        h, k, v = self.n_heads, self.key_dim, self.value_dim
        # three matmuls: one over the concatenated weights measured about 5% slower per layer
        # (fwd + bwd, CPU, one thread, 128 wide) than these
        q, key, val = self.q_proj(x), self.k_proj(x), self.v_proj(x)  # [B, T, H*d]
        if self.convs is not None:
            q, key, val = (conv(t) for conv, t in zip(self.convs, (q, key, val), strict=True))
        q = rotary(q.view(batch, length, h, k))
        key = rotary(key.view(batch, length, h, k))
        o = softmax_attention(q, key, val.view(batch, length, h, v), window=self.window)  # [B, T, H, V]
        return self.o_proj(o.reshape(batch, length, h * v))

    def extra_repr(self) -> str:
        return f"window={self.window}, conv={self.convs is not None}"
