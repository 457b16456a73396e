"""Helpers for the memory tests and benchmarks: random inputs for a rule, and the slow chunk oracle
run through the public layout."""

from __future__ import annotations

import torch
import torch.utils._pytree as pytree
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

from miras_search.memory.forward import memory_forward
from miras_search.memory.gates import MemoryGates
from miras_search.memory.inputs import prepare_inputs
from miras_search.memory.reference_chunk import reference_chunked
from miras_search.memory.rule import MemoryRule


def random_inputs(
    rule: MemoryRule, batch: int, length: int, heads: int, dim: int, *,
    dtype: torch.dtype = torch.float64, seed: int = 0, channel: tuple[str, ...] = (),
    requires_grad: bool = False, alpha_low: float = 0.9,
) -> tuple[Tensor, Tensor, Tensor, MemoryGates, list[Tensor]]:
    """q, k, v, gates and initial params for ``rule`` (K = V = dim; l2-normalised keys).

    ``channel`` names the gates to make channel-wise ([.., H, C], C = ``rule.channel_width``);
    gate values lie well inside
    their ranges (eta in [0.02, 0.2], [0.01, 0.06] for mlp memories, whose LayerNorm backward
    multiplies the step by 1/sigma: larger steps make tiny MLP memories chaotic over a few
    hundred tokens, and round-off then grows exponentially in any two implementations; alpha in
    [alpha_low, 1], theta in [0.3, 0.8], delta in [1, 4]: both Huber branches occur; a standard
    normal write key for RWKV-7's rule).
    """
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> Tensor:
        return torch.rand(*shape, generator=gen, dtype=dtype)

    n = rule.steps_per_token
    micro = (batch, length, n, heads) if n > 1 else (batch, length, heads)
    q = torch.randn(batch, length, heads, dim, generator=gen, dtype=dtype)
    k = torch.nn.functional.normalize(torch.randn(*micro, dim, generator=gen, dtype=dtype), dim=-1)
    v = torch.randn(*micro, dim, generator=gen, dtype=dtype)
    needs = rule.needs()
    low, high = (0.01, 0.06) if rule.memory == "mlp" else (0.02, 0.2)

    def width(name: str) -> tuple[int, ...]:
        return (rule.channel_width(name, dim, dim),) if name in channel else ()

    eta = low + (high - low) * rand(*micro, *width("eta"))
    alpha = (alpha_low + (1.0 - alpha_low) * rand(batch, length, heads, *width("alpha"))
             if "alpha" in needs else None)
    theta = 0.3 + 0.5 * rand(batch, length, heads) if "theta" in needs else None
    delta = 1.0 + 3.0 * rand(batch, length, heads, *width("delta")) if "delta" in needs else None
    # RWKV-7's write key, drawn last so that the other rules' inputs do not depend on it
    write = torch.randn(*micro, dim, generator=gen, dtype=dtype) if rule.write_key == "lerp" else None
    # the Omega window's weights of the past c - 1 tokens, drawn after the others (as write)
    gamma = (0.2 + 0.8 * rand(batch, length, heads, *width("gamma"))
             if "gamma" in needs else None)
    torch.manual_seed(seed)
    params = [p.to(dtype) for p in rule.initial_parameters(heads, dim, dim)]
    leaves = [q, k, v, eta, alpha, theta, delta, write, gamma, *params]
    if requires_grad:
        for x in leaves:
            if x is not None:
                x.requires_grad_(True)
    return q, k, v, MemoryGates(eta, alpha, theta, delta, write, gamma), params


def reference_chunked_forward(
    rule: MemoryRule, q: Tensor, k: Tensor, v: Tensor, gates: MemoryGates,
    params: list[Tensor], chunk_size: int,
) -> Tensor:
    """``memory_forward``'s chunked semantics through the slow materialising loop: [B, T, H, V]."""
    x = prepare_inputs(q, k, v, gates, rule.steps_per_token, rule.algorithm == "implicit", q.dtype,
                       rule.omega_window)
    batch, heads, _, key_dim = x.k.shape
    state = rule.initial_state(params, batch, heads, key_dim, x.v.shape[-1], q.dtype, q.device)
    return x.token_outputs(reference_chunked(rule, x, state, chunk_size))


class WrittenElements(TorchDispatchMode):
    """Counts the elements every op writes (the sizes of its tensor outputs): a measure of work
    that, unlike time, the machine's load cannot move."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.total += sum(t.numel() for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor))
        return out


def written_elements(rule: MemoryRule, inputs: tuple, chunk: int, form: str) -> int:
    """Elements written by the ops of one forward + backward of the chunked memory; ``inputs`` as
    ``random_inputs`` returns them (with requires_grad)."""
    q, k, v, gates, params = inputs
    with WrittenElements() as counter:
        out = memory_forward(rule, q, k, v, gates, params, chunk_size=chunk, chunk_form=form)
        out.square().mean().backward()
    return counter.total
