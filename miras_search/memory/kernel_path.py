"""Route a chunked memory update to a fast kernel when one covers the point.

``kernel='auto'`` first takes flash-linear-attention's chunk kernels for the points fla computes
exactly (the exact delta rule, the dot-bias gated forms: ``miras_search.memory.fla_path``), then
a Triton kernel of ours for a chunked mini-batch update on CUDA tensors when Triton is importable
and the point is covered (see ``miras_search.kernels.kernel_for``: matrix memories and the
2-layer MLP memories of the Moneta / Yaad / Memora / Titans family, their channel-wise gates
included; chunk 16/32/64, or with the Omega window a chunk of b x c' entries of those sizes);
``'triton'`` demands our Triton kernel (an UnsupportedPoint says why not, naming the axis);
``'torch'`` never uses either. The kernels live in ``miras_search.kernels``, each beside its
PyTorch reference.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from miras_search.errors import UnsupportedPoint
from miras_search.memory.fla_path import fla_forward, fla_problem
from miras_search.memory.gates import MemoryGates
from miras_search.memory.rule import MemoryRule

KernelChoice = Literal["auto", "triton", "torch"]


KERNEL_BIASES = "dot, l2, lp with smooth true, huber and robust"
"""The biases the Triton kernels compute (``kernels.dispatch.bias_config``), in words."""
UNCOVERED_NOTE = (
    f" (covered: biases {KERNEL_BIASES}, eta per head or channel-wise, a channel-wise Huber "
    "threshold for the coordinate and switch variants; matrix memory with retention none/l2/lq/kl, "
    "gd/momentum, alpha per head or channel-wise; 2-layer MLP memory with retention "
    "none/l2/lq/kl/elastic, gd/momentum, alpha per head or channel-wise; the Omega window with gd "
    "on either, with momentum on a matrix memory; other points run the PyTorch chunked form)"
)
"""What the Triton kernels cover, appended to the reason a point is not covered."""


def atlas_problem(rule: MemoryRule, q: Tensor, v: Tensor) -> str | None:
    """Why no kernel runs an Atlas option (arXiv 2505.23735), or None: the kernels implement
    neither Muon's orthogonalised step (nor any step not linear in the gradients), nor the Omega
    window with momentum on an MLP memory, a channel-wise alpha or kl retention (it runs as window
    entries with gd, and with momentum on the matrix kernel: kernels.omega), nor an MLP memory
    behind a feature map (keys wider than values); those points run the PyTorch chunked form.
    q: [..., K], v: [..., V]."""
    return _atlas_problem(rule, q.shape[-1], v.shape[-1])


def _atlas_problem(rule: MemoryRule, key_dim: int, value_dim: int) -> str | None:
    if rule.materialised_chunks:
        return f"algorithm '{rule.algorithm}' (a step not linear in the gradients) has no kernel"
    if rule.omega_window > 1:
        from miras_search.kernels.omega import window_algorithm_problem

        problem = window_algorithm_problem(rule.memory, rule.algorithm, rule.gate_modes.get("alpha"),
                                           rule.retention.kind)
        if problem is not None:
            return f"{problem} (bias.window {rule.omega_window})"
    if rule.memory == "mlp" and key_dim != value_dim:
        return "an MLP memory behind a feature map (memory.feature_map) has no kernel"
    return None


def _triton_problem(q: Tensor, forced: bool) -> str | None:
    """Why Triton kernels cannot run on this machine with these inputs, or None. Only a forced
    kernel ('triton') may run on CPU tensors, through Triton's interpreter."""
    try:
        from miras_search.kernels.dispatch import available
    except ImportError as error:  # triton missing (e.g. not Linux)
        return f"Triton is not importable ({error})"
    if not available():
        return "Triton kernels need a CUDA device (or TRITON_INTERPRET=1)"
    import triton

    from miras_search.kernels.limits import CALIBRATED_TRITON, triton_calibrated

    if not forced and not triton_calibrated(triton.__version__):
        oldest = ".".join(map(str, CALIBRATED_TRITON))
        return (f"Triton {triton.__version__} is older than {oldest}, the oldest the kernels' "
                "shape limits were measured with ('triton' forces them)")
    if not q.is_cuda and not (forced and os.environ.get("TRITON_INTERPRET") == "1"):
        return "the inputs are not on a CUDA device"
    return None


def point_kernel(rule: MemoryRule, shape: tuple[int, int, int, int, int], chunk_size: int,
                 dtype: torch.dtype) -> tuple[Callable[..., Tensor] | None, str | None]:
    """(our Triton kernel, None) when it covers this rule at these shapes, else (None, why not),
    whatever the machine: shape = (B, T, H, K, V) of the memory's token tensors (K after a
    feature map), ``dtype`` the one the layer computes in (bfloat16 under autocast)."""
    try:
        from miras_search.kernels.dispatch import bias_config, kernel_for, shape_problem
        from miras_search.kernels.limits import token_tensor_problem
        from miras_search.kernels.omega import window_entries
    except ImportError as error:
        return None, f"Triton is not importable ({error})"
    batch, length, heads, key_dim, value_dim = shape
    if rule.write_key == "lerp":
        return None, "a separate write key (algorithm.write_key 'lerp', RWKV-7) has no kernel"
    atlas = _atlas_problem(rule, key_dim, value_dim)
    if atlas is not None:
        return None, atlas
    if bias_config(rule.bias) is None:
        smooth_off = rule.bias.kind == "lp" and not getattr(rule.bias, "smooth", True)
        bias = "lp with smooth false (the exact sign)" if smooth_off else f"'{rule.bias.kind}'"
        return None, f"no kernel covers bias {bias} (the kernels take {KERNEL_BIASES})"
    run = kernel_for(rule)
    if run is None:
        memory = f"'{rule.memory}'"
        if rule.memory == "mlp":
            memory += f" (depth {rule.network.depth}, {rule.network.activation})"
        channel = sorted(name for name, mode in rule.gate_modes.items() if mode == "channel")
        gates = f"channel-wise {', '.join(channel)}" if channel else "these gates"
        return None, (f"no kernel covers memory {memory}, retention '{rule.retention.kind}', "
                      f"algorithm '{rule.algorithm}' with {gates}" + UNCOVERED_NOTE)
    if rule.steps_per_token != 1:
        return None, "multistep updates have no kernel"
    reason = shape_problem(rule, key_dim, value_dim, chunk_size, dtype)
    if reason is None:
        if rule.omega_window > 1:  # the kernel runs window_entries per token
            length *= window_entries(rule.omega_window, chunk_size)
        reason = token_tensor_problem(batch, length, heads, max(key_dim, value_dim))
    return (None, reason) if reason is not None else (run, None)


def _find_kernel(rule: MemoryRule, q: Tensor, v: Tensor, chunk_size: int,
                 forced: bool) -> tuple[Callable[..., Tensor] | None, str | None]:
    """(the kernel, None) when one can run this call, else (None, the reason it cannot).
    q: [B, T, H, K], v: [B, T, H, V] (or [B, T, n, H, V] with n steps per token)."""
    device = _triton_problem(q, forced)
    if device is not None:
        return None, device
    return point_kernel(rule, (*q.shape[:3], q.shape[-1], v.shape[-1]), chunk_size, q.dtype)


def kernel_problem(rule: MemoryRule, q: Tensor, v: Tensor, chunk_size: int, kernel: KernelChoice,
                   mode: str = "chunked", chunk_form: str = "minibatch") -> str | None:
    """None when ``memory_forward`` with these settings runs on a fast kernel (fla's or our Triton
    one), else why it runs the PyTorch form (e.g. for a trial's report of which path its memory
    layers took)."""
    if rule.is_attention:
        return "the layer is softmax attention"
    if kernel == "torch":
        return "train.kernel is 'torch'"
    fla_reason = fla_problem(rule, q, mode, chunk_form) if kernel == "auto" else None
    if kernel == "auto" and fla_reason is None:
        return None
    form = form_problem(mode, chunk_form, fla_reason)
    if form is not None:
        return form
    return _find_kernel(rule, q, v, chunk_size, forced=kernel == "triton")[1]


def form_problem(mode: str, chunk_form: str, fla_reason: str | None = None) -> str | None:
    """Why our Triton kernels cannot compute this form (they run the chunked minibatch one), with
    fla's reason where fla was asked too; None for the chunked minibatch form."""
    if mode == "chunked" and chunk_form == "minibatch":
        return None
    reason = f"the Triton kernels implement the chunked minibatch form, not {mode} / {chunk_form}"
    return reason + (f"; fla: {fla_reason}" if fla_reason else "")


def fast_forward(rule: MemoryRule, q: Tensor, k: Tensor, v: Tensor, gates: MemoryGates,
                 params: list[Tensor], mode: str, chunk_size: int, chunk_form: str,
                 kernel: KernelChoice) -> Tensor | None:
    """fla's output (kernel 'auto', a point fla computes exactly) or our Triton kernel's (the
    chunked mini-batch form): o: [B, T, H, V]; None when the PyTorch form should run instead."""
    if kernel == "auto":
        o = fla_forward(rule, q, k, v, gates, params, mode, chunk_form)
        if o is not None:
            return o
    if mode == "chunked" and chunk_form == "minibatch":
        return kernel_forward(rule, q, k, v, gates, params, chunk_size, kernel)
    return None


@torch.compiler.disable
def _outside_compile(run: Callable[..., Tensor], *args: object, **kwargs: object) -> Tensor:
    """run(*args, **kwargs) outside torch.compile's graph (train.compile), as fla's ops
    (fla_path.run_fla): Dynamo stays out of the Triton launches; a graph break on GPUs only."""
    return run(*args, **kwargs)


def kernel_forward(rule: MemoryRule, q: Tensor, k: Tensor, v: Tensor, gates: MemoryGates,
                   params: list[Tensor], chunk_size: int, kernel: KernelChoice) -> Tensor | None:
    """Our Triton kernel's output o: [B, T, H, V], or None when the PyTorch form should run instead."""
    if kernel == "torch":
        return None
    run, reason = _find_kernel(rule, q, v, chunk_size, forced=kernel == "triton")
    if run is None:
        if kernel == "triton":
            raise UnsupportedPoint(f"train.kernel 'triton' cannot run this memory layer: {reason}")
        return None
    window = {"gamma": gates.gamma} if rule.omega_window > 1 else {}  # Atlas's Omega window
    if rule.memory == "mlp":  # params: the learned initial W1 [H, Hd, K] and W2 [H, K, Hd]
        return _outside_compile(run, q, k, v, gates.eta, params[0], params[1], alpha=gates.alpha,
                                delta=gates.delta, theta=gates.theta, chunk_size=chunk_size, **window)
    initial = params[0] if params else None  # matrix memory: W_0 [H, V, K] when learned
    return _outside_compile(
        run, q, k, v, gates.eta, alpha=gates.alpha, theta=gates.theta, delta=gates.delta,
        initial_state=initial, chunk_size=chunk_size, **window,
    )
