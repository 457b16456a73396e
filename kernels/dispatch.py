"""Which memory points have a Triton kernel, and whether kernels can run here.

``kernel_for`` reads a point's four axes duck-typed, so it takes a ``ModelPoint`` (schema
objects with ``.kind``) or a ``miras_search.memory`` rule (plain strings for the memory and the
algorithm, the point's own schema bias) without importing either. It only answers coverage: choosing between the
minibatch and the exact-delta chunk form stays with the caller.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import torch

from .bias import BiasConfig
from .limits import CHUNK_SIZES, matrix_shape_problem, mlp_shape_problem
from .omega import omega_window, window_algorithm_problem, window_entries, window_problem
from .precision import matrix_precision, mlp_precision, products


def available() -> bool:
    """Triton importable and a CUDA device present, or Triton's interpreter on (TRITON_INTERPRET=1)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    if os.environ.get("TRITON_INTERPRET") == "1":
        return True
    import torch

    return torch.cuda.is_available()


def _kind(axis: Any) -> str | None:
    """'matrix', 'gd', ... from a plain string or an object with ``.kind``."""
    return axis if isinstance(axis, str) else getattr(axis, "kind", None)


def bias_config(bias: Any) -> BiasConfig | None:
    """The kernel's BiasConfig for a schema bias (``rule.bias`` or ``point.bias``); None if not
    covered. An Omega window (``bias.window`` > 1) is not the bias's business: ``kernel_for``
    wraps the kernel (kernels.omega)."""
    kind = bias.kind
    if kind in ("dot", "l2"):
        return BiasConfig(kind)
    if kind == "lp":
        if not getattr(bias, "smooth", True):
            return None  # only the smooth surrogates have a kernel
        return BiasConfig("lp", p=bias.p, sharpness=bias.sharpness, eps=bias.eps)
    if kind == "huber":
        return BiasConfig(f"huber_{bias.variant}", smooth=bias.smooth, sharpness=bias.sharpness,
                          relative_sharpness=bias.sharpness_scale == "threshold")
    if kind == "robust":
        return BiasConfig("robust", radius=bias.radius)
    return None


def _gate_modes(rule: Any) -> dict[str, str]:
    """Gate name -> mode ('constant', 'retnet', 'head', 'channel'): a rule's ``gate_modes``, or
    those of a point's ``gates()``."""
    modes = getattr(rule, "gate_modes", None)
    if modes is not None:
        return dict(modes)
    return {name: gate.mode for name, gate in rule.gates().items()}


def _network(rule: Any) -> tuple[int, str, bool, int]:
    """(depth, activation, layer_norm, expansion) of an mlp memory (rule.network or point.memory)."""
    net = rule.network if isinstance(rule.memory, str) else rule.memory
    return (getattr(net, "depth", 2), getattr(net, "activation", "gelu"),
            bool(getattr(net, "layer_norm", False)), getattr(net, "expansion", 1))


def _retention_config(rule: Any) -> tuple[str, float, float]:
    """(kind, lq exponent, kl scale) of the retention, schema or memory rule alike."""
    retention = rule.retention
    kind = _kind(retention)
    q = float(retention.q) if kind == "lq" else 4.0
    scale = float(retention.scale) if kind == "kl" else 1.0  # (lq rules have a scale() method)
    return kind, q, scale


def _gradient_at(rule: Any) -> str:
    """Where the rule's l2 retention takes the step's gradient ('retained' for the other rules,
    which the kernels then ignore)."""
    return getattr(rule.retention, "gradient_at", "retained")


def _matrix_kernel(rule: Any, bias: BiasConfig, modes: dict[str, str]) -> Callable[..., Any] | None:
    algorithm = _kind(rule.algorithm)
    retention, q, scale = _retention_config(rule)
    if algorithm not in ("gd", "momentum") or retention not in ("none", "l2", "lq", "kl"):
        return None
    from .matrix_chunk import chunk_matrix_memory

    return functools.partial(chunk_matrix_memory, bias=bias, gradient_at=_gradient_at(rule),
                             retention=retention, lq_exponent=q, kl_scale=scale)


def _mlp_kernel(rule: Any, bias: BiasConfig, modes: dict[str, str]) -> Callable[..., Any] | None:
    depth, activation, layer_norm, _ = _network(rule)
    retention, q, scale = _retention_config(rule)
    if depth != 2 or _kind(rule.algorithm) not in ("gd", "momentum"):
        return None
    if retention not in ("none", "l2", "lq", "kl", "elastic") or activation not in ("gelu", "silu", "relu"):
        return None
    from .mlp_chunk import MlpMemoryConfig, chunk_mlp_memory

    config = MlpMemoryConfig(activation, layer_norm, retention, q, scale, _gradient_at(rule),
                             float(getattr(rule.retention, "threshold", 1e-3)),
                             bool(getattr(rule.retention, "smooth", True)))
    return functools.partial(chunk_mlp_memory, config=config, bias=bias)


def kernel_for(rule: Any) -> Callable[..., Any] | None:
    """The Triton kernel for this point, or None when it is not covered.

    Covered, with the biases dot, l2, lp (smooth), huber (coordinate / norm / switch; a per-head
    delta, or a channel-wise one for the coordinate and switch variants), robust, and an eta per
    head or per input channel:

    - matrix memory, retention none, l2, lq or kl (Memora's: every token reads its own exact map,
      as for the MLP memory), gd or momentum, alpha per head or channel-wise:
      ``chunk_matrix_memory`` with the bias and retention bound,
      ``f(q, k, v, eta, alpha=None, theta=None, delta=None, initial_state=None, chunk_size=64)``;
    - 2-layer MLP memory (Moneta / Yaad / Memora / Titans family), retention none, l2, lq or
      elastic (the soft threshold, smooth or exact, on the chunk's end state, which its last
      token reads), gd or momentum, alpha per head or channel-wise, or retention kl (Memora:
      every token reads its own exact softmax map, as miras_search.memory.mirror_read):
      ``chunk_mlp_memory`` with the architecture, retention and bias bound,
      ``f(q, k, v, eta, w1, w2, alpha=None, theta=None, delta=None, chunk_size=16)``. Every gate
      combination runs in both of its layouts (W on chip, or the hidden dim in tiles where W
      does not fit: Moneta, Yaad and Memora as named at K = 64, hidden 256; momentum with a
      channel-wise alpha, kl's included, in tiles up to chunk x K = 2048: ``shape_problem``).

    Atlas's Omega window (``bias.window`` > 1) runs on either kernel with gd, and on the matrix
    kernel with momentum (alpha per head or none, retention none / l2 / lq: its momentum mask)
    (kernels.omega: c' entries per token, the call takes the window's ``gamma=`` too); Muon, the
    window with momentum otherwise and an MLP memory behind a feature map do not. Shapes are
    checked by ``shape_problem``.
    """
    bias = bias_config(rule.bias)
    modes = _gate_modes(rule)
    if bias is None:
        return None
    if modes.get("delta") == "channel" and bias.kind not in ("huber_coordinate", "huber_switch"):
        return None  # a per-channel threshold of the norm variant: the PyTorch form
    if _atlas_only(rule) or _write_key(rule) == "lerp":
        return None  # RWKV-7's separate write key: no kernel takes it
    memory = _kind(rule.memory)
    run = None
    if memory == "matrix":
        run = _matrix_kernel(rule, bias, modes)
    elif memory == "mlp":
        run = _mlp_kernel(rule, bias, modes)
    window = _omega_window(rule)
    return run if run is None or window == 1 else omega_window(run, window)


def _write_key(rule: Any) -> str:
    """algorithm.write_key of a rule (a plain field) or a point (on its algorithm)."""
    return getattr(rule, "write_key", None) or getattr(rule.algorithm, "write_key", "key")


def _omega_window(rule: Any) -> int:
    """c, the Omega window of a memory rule (``omega_window``) or a point (``bias.window``)."""
    return getattr(rule, "omega_window", None) or getattr(rule.bias, "window", 1)


def _atlas_only(rule: Any) -> bool:
    """Whether the point uses an Atlas option no kernel implements (arXiv 2505.23735): the
    Omega window with an algorithm the kernels do not run it with
    (``omega.window_algorithm_problem``), or an MLP memory behind a feature map (Muon is not gd
    or momentum, so the kernels refuse it anyway). Schema point or memory rule alike; a rule's
    feature map is seen by ``memory.kernel_path.atlas_problem`` from the key width."""
    feature_map = getattr(rule.memory, "feature_map", None)
    deep_features = _kind(rule.memory) == "mlp" and feature_map is not None and feature_map.kind != "identity"
    window_refused = _omega_window(rule) > 1 and window_algorithm_problem(
        _kind(rule.memory), _kind(rule.algorithm), _gate_modes(rule).get("alpha"),
        _retention_config(rule)[0]) is not None
    return window_refused or deep_features


def shape_problem(rule: Any, key_dim: int, value_dim: int, chunk_size: int,
                  dtype: torch.dtype = torch.bfloat16) -> str | None:
    """Why the covered point's kernel cannot take these head dims / chunk size at inputs of
    ``dtype`` (None: it can); the limits depend on the precision of its products
    (kernels.precision), not on the gates: the MLP kernel takes its channel-wise gates in both
    layouts (kernels.limits.mlp_hidden_tile picks W on chip or hidden tiles), kl retention's
    exact per-token read too, momentum with a channel-wise alpha (kl's too) up to chunk x K = 2048
    in tiles. An Omega window is checked at the chunk of its entries (kernels.omega)."""
    window = _omega_window(rule)
    if window > 1:
        entries = window_entries(window, chunk_size)
        if entries is None:
            return window_problem(window, chunk_size)
        chunk_size *= entries  # the kernel's chunk of window entries
    if chunk_size not in CHUNK_SIZES:
        return f"chunk_size {chunk_size} is not one of the kernel's {CHUNK_SIZES}"
    bias = bias_config(rule.bias)
    bias_kind = bias.kind if bias is not None else ""
    if _kind(rule.memory) == "mlp":
        _, _, layer_norm, expansion = _network(rule)
        retention = _retention_config(rule)[0]
        operands = products(mlp_precision(dtype, layer_norm, retention, bias_kind))
        momentum = _kind(rule.algorithm) == "momentum"
        channel_alpha = _gate_modes(rule).get("alpha") == "channel" or retention == "kl"
        return mlp_shape_problem(key_dim, expansion * key_dim, chunk_size, operands,
                                 momentum and retention == "lq", channel_momentum=momentum and channel_alpha)
    retention = _retention_config(rule)[0]
    operands = products(matrix_precision(dtype, bias_kind, kl=retention == "kl"))
    return matrix_shape_problem(key_dim, value_dim, operands, bias is not None and bias.row_norm,
                                lq=retention == "lq", kl=retention == "kl")
