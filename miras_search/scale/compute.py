"""Training compute of a point, counted analytically (not measured).

FLOPs per training token = 6 x N_matmul + 3 x (the memory's own forward work per token):

- ``N_matmul``: the parameters that take part in a matrix product per token: all of the model's
  parameters less the input embedding table (a lookup), plus the output head's ``vocab x d_model``
  when the embeddings are tied (the head then reuses the table). 2 FLOPs per weight forward and 4
  backward give Kaplan's ``6 N``.
- The memory's work per token and layer, forward, summed over heads: a memory of ``P`` weights
  per head (matrix ``dk dv``, vector ``dk``, MLP its linear maps) is read at the query (``2P``),
  evaluated at the key (``2P``) and differentiated for its inner step (``4P``): ``8P`` per inner
  step (``multistep`` takes several). Softmax attention: ``4 d_attn`` per attended token
  (``q k^T`` and ``a v``), over ``(T + 1) / 2`` tokens on average (full causal) or ``min(window, T)``.
  The backward pass costs twice the forward: ``x 3``.

Elementwise work (gates, norms, activations, softmax) is left out, as in Kaplan et al. and
Chinchilla; it is a few percent at these widths. Chunked forms do extra work inside a chunk that
depends on the chunk size; this counts the work of the math, not of one implementation.
"""

from __future__ import annotations

import itertools

from miras_search.schema import ModelPoint


def memory_weights_per_head(point: ModelPoint) -> int:
    """Weights ``P`` of one head's memory (0 for attention)."""
    memory, k, v = point.memory, point.block.head_k, point.block.head_v
    if memory.kind == "none":
        return 0
    if memory.kind == "vector":
        return k
    if memory.kind == "mlp":
        widths = [k] + [memory.expansion * k] * (memory.depth - 1) + [v]
        return sum(a * b for a, b in itertools.pairwise(widths))
    return k * v


def _attention_forward(point: ModelPoint, seq_len: int, window: int | None) -> float:
    """Forward FLOPs per token of one softmax-attention layer's scores and mixing."""
    span = (seq_len + 1) / 2 if window is None else float(min(window, seq_len))
    return 4.0 * point.block.n_heads * point.block.head_k * span


def mixer_forward_flops(point: ModelPoint, seq_len: int) -> float:
    """Forward FLOPs per token of every layer's memory or attention (not its projections)."""
    steps = getattr(point.algorithm, "steps_per_token", 1)
    per_memory = 8.0 * memory_weights_per_head(point) * point.block.n_heads * steps
    total = 0.0
    for kind in point.block.layer_kinds():
        if kind == "swa":
            total += _attention_forward(point, seq_len, point.block.window)
        elif kind == "attention" or point.memory.kind == "none":
            window = getattr(point.memory, "window", None) if kind == "memory" else None
            total += _attention_forward(point, seq_len, window)
        else:
            total += per_memory
            if point.block.hybrid == "samba":
                total += _attention_forward(point, seq_len, point.block.window)
    return total


def matmul_params(point: ModelPoint) -> int:
    """``N_matmul``: parameters less the input embedding table, plus a tied head's product."""
    from miras_search.model import param_count

    table = point.block.vocab_size * point.block.d_model
    total = param_count(point)
    return total if point.block.tie_embeddings else total - table


def flops_per_token(point: ModelPoint, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward) of ``point`` at context ``seq_len``."""
    return 6.0 * matmul_params(point) + 3.0 * mixer_forward_flops(point, seq_len)
