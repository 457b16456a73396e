"""flash-linear-attention (fla) as the GPU path for the points it computes exactly.

Two families of matrix-memory points are fla's own models, token for token:

- the exact delta rule (l2 bias, chunk form 'exact_delta', per-head gates): deltanet
  (``chunk_delta_rule``), gated_deltanet (``chunk_gated_delta_rule``), longhorn (the same rule
  with Longhorn's step eta / (1 + eta ||k||^2)) and deltaproduct (``chunk_gated_delta_product``,
  one Householder step per micro-step);
- the generalized delta rule with RWKV-7's separate write key (``algorithm.write_key`` 'lerp',
  channel-wise eta and alpha, either gradient point): rwkv7 (``chunk_dplr_delta_rule``, fla's
  diagonal-plus-low-rank rule h_t = diag(exp(gk_t)) h + b_t (a_t^T h) + k_t v_t^T);
- the dot-bias gated forms (gd, retention none or l2): linear attention, retnet, mamba2, lightning
  attention (``chunk_simple_gla``, a per-head log-decay) and gla, hgrn2 (``chunk_gla``, a decay per
  key channel). The dot bias's gradient does not depend on the memory, so the mini-batch chunked
  form is exact for them too.

The mapping (``fla_call``) is plain torch: our memory is W: [V, K] with W_t = alpha_t W_{t-1} +
(step), read y_t = W_t q_t; fla's state is h = W^T: [K, V], its decay the log g = log alpha, its
delta-rule step beta = eta, its read scale 1 (fla's default is K^-0.5). The dot bias's step
eta_t v_t k_t^T is fla's k_t v_t^T with the key eta_t * k_t. RWKV-7's step
W_t = W diag(alpha_t) - (W r_t)(eta_t * k_t)^T + v_t kw_t^T (r_t = k_t, or alpha_t * k_t where the
gradient is taken at the retained memory) is the low-rank part a = r_t, b = -eta_t * k_t with
fla's key the write key kw_t and gk = log alpha_t per key channel. fla's delta-rule kernels take 16-bit
inputs only, so the path runs where the layer computes in bf16 / fp16 (CUDA autocast).
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from typing import Any

import torch
from einops import rearrange
from torch import Tensor

from miras_search.memory.fla_dqkwg import fla_refuses_gated_dqkwg, register_fla_backend
from miras_search.memory.gates import MemoryGates
from miras_search.memory.rule import MemoryRule

FLA_DTYPES = (torch.bfloat16, torch.float16)
INSTALL_HINT = "pip install 'miras-search[gpu]' (fla-core)"

# op -> (module, function) in fla.ops
_OPS = {
    "delta_rule": ("fla.ops.delta_rule", "chunk_delta_rule"),
    "gated_delta_rule": ("fla.ops.gated_delta_rule", "chunk_gated_delta_rule"),
    "gated_delta_product": ("fla.ops.gated_delta_product", "chunk_gated_delta_product"),
    "simple_gla": ("fla.ops.simple_gla", "chunk_simple_gla"),
    "gla": ("fla.ops.gla", "chunk_gla"),
    "dplr_delta_rule": ("fla.ops.generalized_delta_rule", "chunk_dplr_delta_rule"),
}


@dataclass
class FlaCall:
    """One call of an fla chunk op, in fla's layout and conventions (read scale 1).

    q: [B, T, H, K]; k: [B, T*n, H, K]; v: [B, T*n, H, V] (n = ``steps``, the micro-steps of a
    multistep point, else 1); beta: [B, T*n, H] (delta rules), [B, T, H, K] (dplr: its b) or None;
    g: the log-decay, [B, T, H] (per head) or [B, T, H, K] (gla, dplr) or None (no decay);
    initial_state: h_0 = W_0^T, [B, H, K, V] in float32 (float64 when the inputs are), or None
    (zeros); a: [B, T, H, K], dplr's removal read vector, else None.
    """

    op: str
    q: Tensor
    k: Tensor
    v: Tensor
    beta: Tensor | None
    g: Tensor | None
    initial_state: Tensor | None
    steps: int = 1
    a: Tensor | None = None


def _per_head(rule: MemoryRule, name: str) -> bool:
    return rule.gate_modes.get(name) != "channel"


def fla_op(rule: MemoryRule, mode: str = "chunked", chunk_form: str = "minibatch") -> tuple[str | None, str]:
    """(the fla op that computes this point exactly, '') or (None, why none does).

    Reads only the rule and the form, not the device: see ``fla_problem`` for the whole answer.
    """
    if rule.is_attention:
        return None, "the layer is softmax attention"
    if mode != "chunked":
        return None, f"mode '{mode}' is the token-by-token reference"
    if rule.memory != "matrix":
        return None, f"fla has no form for memory '{rule.memory}' (matrix only)"
    if rule.omega_window > 1:
        return None, f"the Omega window (Atlas, c = {rule.omega_window}) has no fla form"
    retention = rule.retention.kind
    if retention not in ("none", "l2"):
        return None, f"fla has no form for retention '{retention}' (none or l2 only)"
    if rule.write_key == "lerp":
        return _generalized_delta_op(rule, chunk_form)
    decays = "alpha" in rule.needs()
    if rule.bias.kind == "l2":
        if chunk_form != "exact_delta":
            return None, "the l2 bias's mini-batch form (gradients at the chunk start) is not fla's"
        if rule.algorithm not in ("gd", "implicit", "multistep"):
            return None, f"algorithm '{rule.algorithm}' with the l2 bias is not a delta rule"
        if retention == "l2" and not rule.retention.retains_first:
            return None, "l2 retention with gradient_at 'previous' is not the delta rule's order"
        if not (_per_head(rule, "eta") and _per_head(rule, "alpha")):
            return None, "fla's delta rules take per-head eta and alpha, not channel-wise ones"
        if rule.algorithm == "multistep":
            return "gated_delta_product", ""
        return ("gated_delta_rule" if decays else "delta_rule"), ""
    if rule.bias.kind == "dot":
        if chunk_form != "minibatch":
            return None, f"chunk_form '{chunk_form}' does not apply to the dot bias"
        if rule.algorithm != "gd" or rule.steps_per_token != 1:
            return None, f"algorithm '{rule.algorithm}' with the dot bias has no fla form (gd only)"
        return ("simple_gla" if _per_head(rule, "alpha") else "gla"), ""
    return None, f"fla has no form for bias '{rule.bias.kind}' (dot or l2 only)"


def _generalized_delta_op(rule: MemoryRule, chunk_form: str) -> tuple[str | None, str]:
    """RWKV-7's rule (a separate write key): fla's diagonal-plus-low-rank delta rule, whose
    low-rank read vector takes either gradient point and whose decay is per key channel."""
    if rule.bias.kind != "l2" or rule.algorithm != "gd" or rule.steps_per_token != 1:
        return None, ("a separate write key maps to fla's generalized delta rule with the l2 bias "
                      f"and gd only; got bias '{rule.bias.kind}', algorithm '{rule.algorithm}'")
    if chunk_form != "exact_delta":
        return None, f"a separate write key runs the exact chunked form, not '{chunk_form}'"
    return "dplr_delta_rule", ""


def compute_dtype(q: Tensor) -> torch.dtype:
    """The dtype the layer computes in: autocast's when it is on for q's device, else q's."""
    device = q.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return q.dtype


def fla_import_problem(op: str) -> str | None:
    """None when fla's op imports here, else why not (not installed, or its import fails)."""
    module, name = _OPS[op]
    try:
        getattr(importlib.import_module(module), name)
    except Exception as error:  # ImportError, or an fla import that touches a missing driver
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return f"flash-linear-attention is not importable ({first}; {INSTALL_HINT})"
    return None


def uses_gated_dqkwg(rule: MemoryRule, op: str) -> bool:
    """Whether the backward of fla's ``op`` runs fla's gated ``chunk_bwd_dqkwg`` for this rule
    (the kernel fla issue #640 concerns): the ops given a log-decay ``g`` (gated_delta_rule always
    is); the generalized delta rule has backward kernels of its own."""
    return op == "gated_delta_rule" or (op in ("simple_gla", "gated_delta_product") and "alpha" in rule.needs())


@functools.cache
def fla_gated_backward_problem() -> str | None:
    """Why fla cannot take the gradient of its gated chunk ops on this machine, or None.

    fla 0.6 refuses (raises in the backward) its gated ``chunk_bwd_dqkwg`` on Hopper GPUs with
    Triton >= 3.4 and < 3.7.1, which compiles it to wrong results (fla issue #640). There our
    PyTorch form of that one kernel is registered with fla's dispatch (``fla_dqkwg``), and every
    gated op (gated_delta_rule, simple_gla, gated_delta_product) runs fla's other kernels; the
    answer is a reason only where that registration fails (an fla without backends).
    """
    if not fla_refuses_gated_dqkwg() or register_fla_backend():
        return None
    return ("fla refuses the gradient of its gated chunk kernels on Hopper GPUs with Triton >= 3.4 "
            "and < 3.7.1 (wrong results, fla issue #640) and this fla takes no backend for it: "
            "upgrade Triton to >= 3.7.1")


def fla_problem(rule: MemoryRule, q: Tensor, mode: str = "chunked",
                chunk_form: str = "minibatch") -> str | None:
    """None when ``fla_forward`` runs this layer on fla's kernels, else why not."""
    op, reason = fla_op(rule, mode, chunk_form)
    if op is None:
        return reason
    if not q.is_cuda:
        return "fla's kernels need the inputs on a CUDA device"
    dtype = compute_dtype(q)
    if dtype not in FLA_DTYPES:
        return f"the layer computes in {dtype}; fla's kernels take bfloat16 / float16 (autocast)"
    imported = fla_import_problem(op)
    if imported is not None or not uses_gated_dqkwg(rule, op):
        return imported
    return fla_gated_backward_problem()


def _per_head_gate(gate: Tensor, dims: int) -> Tensor:
    """A per-head gate with ``dims`` dims ([B, T, H], or [B, T, n, H] for multistep eta), or
    with a trailing channel of 1, as the former (decided by the dims, not the sizes: H may be 1)."""
    if gate.dim() == dims + 1 and gate.shape[-1] == 1:
        return gate.squeeze(-1)
    if gate.dim() != dims:
        raise ValueError(f"a per-head gate must be {dims}-dimensional (or with a trailing 1), "
                         f"got shape {tuple(gate.shape)}")
    return gate


def fla_call(rule: MemoryRule, q: Tensor, k: Tensor, v: Tensor, gates: MemoryGates,
             params: list[Tensor], dtype: torch.dtype, op: str | None = None) -> FlaCall:
    """Our layer's inputs (see ``memory_forward``) as fla's arguments, q / k / v in ``dtype``.

    The gates are mapped in float32 (float64 when ``dtype`` is): the log-decay and Longhorn's
    step would lose the gates near 1 in bf16; fla takes beta in the inputs' dtype, as its layers
    give it. ``op`` defaults to ``fla_op(rule, 'chunked', form)`` for the rule's own form.
    """
    if op is None:
        form = "exact_delta" if rule.bias.kind == "l2" else "minibatch"
        op, reason = fla_op(rule, "chunked", form)
        if op is None:
            raise ValueError(f"no fla op computes this point: {reason}")
    wide = torch.float64 if dtype == torch.float64 else torch.float32
    batch, _, heads, key_dim = q.shape
    value_dim = v.shape[-1]
    steps = rule.steps_per_token
    initial = None
    if rule.learned_init:
        state = rule.initial_state(params, batch, heads, key_dim, value_dim, wide, q.device)
        initial = state.w[0].mT.contiguous()  # W_0 [B, H, V, K] -> h_0 [B, H, K, V]
    if op == "dplr_delta_rule":
        return _generalized_delta_call(rule, q, k, v, gates, dtype, wide, initial)
    alpha = gates.alpha
    if alpha is not None and op != "gla":
        alpha = _per_head_gate(alpha, 3)
    log_alpha = None if alpha is None else torch.log(alpha.to(wide))  # [B, T, H] (gla: [B, T, H, K])
    if op in ("simple_gla", "gla"):
        eta = gates.eta.to(wide)
        eta = eta.unsqueeze(-1) if eta.dim() == 3 else eta  # [B, T, H, 1 or K]
        key = (k.to(wide) * eta).to(dtype)
        return FlaCall(op, q.to(dtype), key, v.to(dtype), None, log_alpha, initial)
    if steps > 1:
        k = rearrange(k, "b t n h d -> b (t n) h d")
        v = rearrange(v, "b t n h d -> b (t n) h d")
    eta = _per_head_gate(gates.eta.to(wide), 4 if steps > 1 else 3)
    if steps > 1:
        eta = rearrange(eta, "b t n h -> b (t n) h")
    if rule.algorithm == "implicit":  # Longhorn: the closed form's step eta / (1 + eta ||k||^2)
        eta = eta / (1.0 + eta * k.to(wide).square().sum(-1))
    beta = eta.to(dtype)
    return FlaCall(op, q.to(dtype), k.to(dtype), v.to(dtype), beta, log_alpha, initial, steps)


def _channels(gate: Tensor, key_dim: int) -> Tensor:
    """A gate per head ([B, T, H], or with a trailing 1) or per key channel, as [B, T, H, K]."""
    gate = gate.unsqueeze(-1) if gate.dim() == 3 else gate
    return gate.expand(*gate.shape[:-1], key_dim)


def _generalized_delta_call(rule: MemoryRule, q: Tensor, k: Tensor, v: Tensor, gates: MemoryGates,
                            dtype: torch.dtype, wide: torch.dtype, initial: Tensor | None) -> FlaCall:
    """RWKV-7's step W_t = W diag(alpha_t) - (W r_t)(eta_t * k_t)^T + v_t kw_t^T as fla's
    diagonal-plus-low-rank rule: a = r_t (k_t, or alpha_t * k_t with the gradient at the retained
    memory W diag(alpha_t)), b = -eta_t * k_t, key kw_t, gk = log alpha_t: [B, T, H, K] each."""
    if gates.write_key is None:
        raise ValueError("algorithm.write_key 'lerp' needs gates.write_key ([B, T, H, K]); got None")
    key_dim = k.shape[-1]
    key = k.to(wide)
    eta = _channels(gates.eta.to(wide), key_dim)
    log_alpha = None
    read = key
    if gates.alpha is not None:
        alpha = _channels(gates.alpha.to(wide), key_dim)
        log_alpha = torch.log(alpha)
        if rule.retention.retains_first:
            read = alpha * key
    return FlaCall("dplr_delta_rule", q.to(dtype), gates.write_key.to(dtype), v.to(dtype),
                   (-eta * key).to(dtype), log_alpha, initial, a=read.to(dtype))


@torch.compiler.disable
def run_fla(call: FlaCall) -> Tensor:
    """Run fla's chunk op: o: [B, T, H, V] in the inputs' dtype. Outside torch.compile's graph
    (train.compile): Dynamo is kept out of fla's Triton launches and autotuners, the layer's other
    ops still compile (a graph break where fla runs, on a GPU only)."""
    module, name = _OPS[call.op]
    fn = getattr(importlib.import_module(module), name)
    args: dict[str, Any] = {
        "q": call.q.contiguous(), "k": call.k.contiguous(), "v": call.v.contiguous(),
        "scale": 1.0, "initial_state": call.initial_state,
    }
    g = None if call.g is None else call.g.float().contiguous()
    if call.op == "delta_rule":
        args["beta"] = call.beta.contiguous()
    elif call.op == "gated_delta_rule":
        args.update(beta=call.beta.contiguous(), g=g if g is not None else _zero_log_decay(call))
    elif call.op == "gated_delta_product":
        args.update(beta=call.beta.contiguous(), g=g, num_householder=call.steps)
    elif call.op == "dplr_delta_rule":
        gk = g if g is not None else torch.zeros(call.k.shape, dtype=torch.float32, device=call.k.device)
        args.update(a=call.a.contiguous(), b=call.beta.contiguous(), gk=gk)
    else:  # simple_gla (g per head or None) and gla (g per key channel)
        args["g"] = g
    if args["initial_state"] is not None:
        args["initial_state"] = args["initial_state"].float().contiguous()
    o, _ = fn(**args)
    return o


def _zero_log_decay(call: FlaCall) -> Tensor:
    return call.q.new_zeros(call.q.shape[:3], dtype=torch.float32)


def fla_forward(rule: MemoryRule, q: Tensor, k: Tensor, v: Tensor, gates: MemoryGates,
                params: list[Tensor], mode: str, chunk_form: str) -> Tensor | None:
    """The layer's memory output o: [B, T, H, V] in q's dtype computed by fla, or None when fla
    does not run this call (``fla_problem`` says why)."""
    if fla_problem(rule, q, mode, chunk_form) is not None:
        return None
    op, _ = fla_op(rule, mode, chunk_form)
    dtype = compute_dtype(q)
    with torch.autocast(device_type=q.device.type, enabled=False):
        o = run_fla(fla_call(rule, q, k, v, gates, params, dtype, op))
    return o.to(q.dtype)
