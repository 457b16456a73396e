"""How much memory a trial of a point needs, estimated from the point alone, before anything is built.

A trial trains the point with AdamW for a few steps and then evaluates it without gradients, so
its peak is the larger of the two phases, in float32 bytes (bfloat16 autocast on a GPU only
shrinks the activations, so there the estimate errs high):

- training: weights, gradients and AdamW's two moments (16 bytes a parameter), plus what autograd
  keeps for the backward pass: per layer and token the block's projections and SwiGLU
  (``_TOKEN_FLOATS``), per memory layer the memory state at every chunk boundary (every token for
  the recurrence, with the temporaries the retention rule keeps, ``_STATE_COPIES``), per
  attention layer its score matrix, and the logits with their softmax and gradient;
- evaluation: the weights, the logits of one evaluation batch, one layer's activations at a time
  and each memory layer's running state.

The estimate is coarse by design: measured peaks on the CPU were 0.65 to 1.4 times it
(benchmarks/memory_estimate.py; tests/test_memory_limits.py holds it within 0.4 to 3). It exists
to refuse points that cannot fit by far, before anything is allocated, and to say which term is
to blame; an allocation past the limit during a trial is still caught (trial.memory_limit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from miras_search.memory.chunked import checkpoints_updates, update_keeps
from miras_search.memory.materialised import CHECKPOINT_FLOATS
from miras_search.model.factory import (
    attention_state_size,
    memory_key_width,
    memory_state_size,
    param_count,
)
from miras_search.schema import ModelPoint

FLOAT = 4
"""Bytes per float32."""
_PARAM_BYTES = 16
"""Weights, gradients and AdamW's exp_avg and exp_avg_sq, float32 each."""
_STATE_COPIES = 10
"""Memory-state-sized tensors autograd keeps per chunk (the state, the step, retention's temporaries)."""
_STATE_COPIES_CHECKPOINTED = 2
"""The same for a deep memory whose chunk updates run checkpointed (memory.chunked.
checkpoints_updates): the chunk-start state and its momentum or retention's companion."""
_STATE_COPIES_RECURRENT = 4
"""The same per token of the recurrence (fewer temporaries per step; measured)."""
_LOGIT_COPIES = 3
"""Logits, their log-softmax and its gradient."""
_ENTRY_COPIES = 2
"""Floats per Omega-window entry and memory-layer channel (inputs and output) that the linear
form keeps for the backward pass: the c entries per token's keys, activations and errors.
Measured (two steps, CPU, benchmarks/memory_estimate.py): for OmegaNet at d_model 64 with heads
of 8 and 16 and its matrix variant at heads of 32 the estimate was 0.40 to 0.71 of the peak
without this term, 0.57 to 0.97 with it (the peak is crude: the widths do not fit one count)."""


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a trial of a point needs (see the module docstring for each term)."""

    params: int
    weights: int  # weights + gradients + AdamW moments
    activations: int  # training: the block's activations kept for backward
    memory_state: int  # training: memory states kept for backward
    attention: int  # training: attention score matrices
    logits: int  # training: logits, softmax and gradient
    evaluation: int  # the evaluation phase's peak (weights included)

    @property
    def training(self) -> int:
        return self.weights + self.activations + self.memory_state + self.attention + self.logits

    @property
    def total(self) -> int:
        return max(self.training, self.evaluation)

    def describe(self) -> str:
        """'about 12.3 GB: weights+gradients+AdamW 10.1 GB (1.2e9 parameters), ...'"""
        if self.evaluation > self.training:
            return (f"about {gb(self.total)} in evaluation (the weights, and the logits and "
                    f"activations of one evaluation batch); training needs {gb(self.training)}")
        parts = [("weights+gradients+AdamW", self.weights), ("activations", self.activations),
                 ("memory states", self.memory_state), ("attention scores", self.attention),
                 ("logits", self.logits)]
        shown = ", ".join(f"{name} {gb(size)}" for name, size in parts if size >= self.training / 20)
        return f"about {gb(self.total)} in training ({self.params:.3g} parameters; {shown})"


def parameters(point: ModelPoint) -> int:
    """``param_count(point)``, from models of one and two layers of each kind the point uses.

    Layers of a kind are alike, so the count is the shared part (embeddings, final norm) plus
    each layer's own; building the full model, even on the meta device, takes tens of seconds
    for the billion-parameter points that validation must refuse (their initialisation runs)."""
    per_kind: dict[str, int] = {}
    shared = 0
    for kind in dict.fromkeys(point.block.layer_kinds()):
        def count(layers: int, kind: str = kind) -> int:
            block = point.block.model_copy(update={"n_layers": layers, "layer_pattern": [kind]})
            return param_count(point.model_copy(update={"block": block}))
        one, two = count(1), count(2)
        per_kind[kind] = two - one
        shared = one - per_kind[kind]
    return shared + sum(per_kind[kind] for kind in point.block.layer_kinds())


def gb(size: float) -> str:
    return f"{size / 1e9:.3g} GB" if size >= 1e8 else f"{size / 1e6:.3g} MB"


def _token_floats(point: ModelPoint) -> int:
    """Floats one block keeps per token for backward: norms, q/k/v (and their short-conv copies),
    gates, output and its gate, the SwiGLU's three hidden vectors, residuals."""
    block = point.block
    d, h, k, v = block.d_model, block.n_heads, block.head_k, block.head_v
    hidden = math.ceil(block.mlp_ratio * d)
    qkv = h * (2 * k + v) * (2 if block.conv_size else 1)
    return 12 * d + 3 * qkv + 6 * h * v + 6 * hidden


def materialised(point: ModelPoint) -> bool:
    """Whether the chunked form keeps per-token weights (an algorithm whose step is not linear in
    the gradients, such as Atlas's muon; the Omega window runs the linear form, c entries per
    token)."""
    return point.memory.kind != "none" and not point.algorithm.linear_chunks


def _materialised_copies(point: ModelPoint) -> int:
    """State-sized tensors per token that the materialised chunked form keeps for the backward
    pass (for every token, or for one chunk's when its chunks are checkpointed): the weights, the
    step, the gradient sum, and Muon's Newton-Schulz iterates (3 per iteration). Measured: the
    atlas preset at d_model 64, 8 heads, batch 8 x 128 peaked at 5.5 GB (a trial of
    studies/atlas-quick.yaml), this estimate says 4.5 GB."""
    return 4 + 3 * getattr(point.algorithm, "ns_steps", 0)


def _input_widths(point: ModelPoint) -> list[int]:
    """Input widths of one head's memory layers: the key width, then an MLP's hidden widths."""
    widths = [memory_key_width(point)]
    if point.memory.kind == "mlp":
        widths += [point.memory.expansion * point.block.head_v] * (point.memory.depth - 1)
    return widths


def _update_widths(point: ModelPoint) -> list[int]:
    """Input widths of one head's memory weights where the PyTorch chunk update may be
    checkpointed (a deep memory in the linear chunked form), else []."""
    if point.memory.kind != "mlp" or point.train.chunk_form == "exact_delta" or materialised(point):
        return []
    return _input_widths(point)


def _entry_floats(point: ModelPoint) -> int:
    """Floats per Omega-window entry and head that the linear form keeps (0 without a window,
    or for Muon's materialised form, counted on its own): the memory layers' input widths and
    its output width."""
    if point.bias.window == 1 or materialised(point):
        return 0
    return (sum(_input_widths(point)) + point.block.head_v) * _ENTRY_COPIES


def _span(context: int, window: int | None) -> int:
    return context if window is None else min(window, context)


def estimate_memory(point: ModelPoint, eval_batch_size: int | None = None) -> MemoryEstimate:
    """The memory a trial of ``point`` (its ``train`` section as the trial applies it) needs.

    ``eval_batch_size`` defaults to the training batch size, as in the trial."""
    train, block = point.train, point.block
    batch, context = train.batch_size, train.seq_len
    chunk = 1 if train.mode == "recurrent" else train.chunk_size
    params = parameters(point)
    tokens = batch * context
    states = attention = 0
    for kind in block.layer_kinds():
        if kind == "memory" and point.memory.kind != "none":
            copies = _STATE_COPIES_RECURRENT if chunk == 1 else _STATE_COPIES
            state = memory_state_size(point, context)
            widths = _update_widths(point)
            entries = point.bias.window if not materialised(point) else 1  # the window's entries
            if chunk > 1 and checkpoints_updates(batch, block.n_heads, context * entries, widths):
                # checkpointed chunk updates: the chunk-start states, and one chunk recomputed
                copies = _STATE_COPIES_CHECKPOINTED
                states += update_keeps(batch, block.n_heads, chunk * entries, widths) // FLOAT
            states += batch * math.ceil(context / chunk) * state * copies
            states += batch * block.n_heads * context * entries * _entry_floats(point)
            if chunk > 1 and materialised(point):  # per-token weights: all, or one chunk's
                per_chunk = batch * chunk * state
                kept = per_chunk if per_chunk >= CHECKPOINT_FLOATS else batch * context * state
                states += kept * _materialised_copies(point)
            if block.hybrid == "samba":
                attention += 2 * batch * block.n_heads * context * _span(context, block.window)
        else:
            window = block.window if kind == "swa" else (point.memory.window if kind == "memory" else None)
            attention += 2 * batch * block.n_heads * context * _span(context, window)
    activations = block.n_layers * tokens * _token_floats(point)
    logits = tokens * block.vocab_size * _LOGIT_COPIES
    eval_batch = eval_batch_size or batch
    eval_tokens = eval_batch * context
    running_state = sum(
        attention_state_size(point, None, context) if kind == "attention" else memory_state_size(point, context)
        for kind in block.layer_kinds()
    )
    evaluation = FLOAT * (params + eval_tokens * (2 * block.vocab_size + 2 * _token_floats(point))
                          + eval_batch * running_state)
    return MemoryEstimate(
        params=params, weights=_PARAM_BYTES * params, activations=FLOAT * activations,
        memory_state=FLOAT * states, attention=FLOAT * attention, logits=FLOAT * logits,
        evaluation=evaluation,
    )
