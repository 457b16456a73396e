"""Training settings of a point: optimiser, schedule, precision and the memory's execution form."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from miras_search.schema._base import Schema

SEED_MAX = 2**32 - 1
"""Largest seed: numpy's and Optuna's samplers take seeds in [0, 2**32 - 1]."""


def batch_cover_problem(tokens: int, batch_size: int, seq_len: int, *, of: str = "",
                        seq_len_of: str = "") -> str | None:
    """Why a budget of ``tokens`` cannot train one step of ``batch_size`` sequences of ``seq_len``
    tokens (None when it can), in the one wording every check of a budget against its batch
    shares (a point's ``train``, ``trial.tokens``, ``scale.rungs``, ``miras scale --batch-size``,
    a trial's data sources); the caller names its field. ``of`` says whose batch it is (' of
    moneta'), ``seq_len_of`` where the length comes from when it is not the budget's own (' of
    trial.data.1 (niah)')."""
    batch = batch_size * seq_len
    if tokens >= batch:
        return None
    return (f"tokens ({tokens}) do not cover one batch{of} (batch_size {batch_size} x seq_len {seq_len}"
            f"{seq_len_of} = {batch}); give at least {batch} tokens, or a smaller batch_size or seq_len")


MAX_TOKENS = 10**13
"""The largest training budget a point or trial takes: months at a million tokens/s, far past any
run of this toolkit; a larger number is a typo."""


class Train(Schema):
    """How a point is trained in a trial (the trial config may override the budget)."""

    tokens: int = Field(
        200_000, ge=1, le=MAX_TOKENS,
        description="Token budget of a training run, rounded down to whole batches (at most 10^13).",
    )
    batch_size: int = Field(8, ge=1, le=4096)
    seq_len: int = Field(256, ge=1, le=1_048_576)
    lr: float = Field(3e-3, gt=0.0, le=1.0)
    min_lr_ratio: float = Field(0.1, ge=0.0, le=1.0, description="Final lr / peak lr.")
    warmup: float = Field(0.1, ge=0.0, lt=1.0, description="Fraction of steps spent warming up.")
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    weight_decay: float = Field(0.1, ge=0.0, le=1.0)
    grad_clip: float = Field(1.0, gt=0.0)
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto = bf16 autocast on CUDA, float32 on CPU."
    )
    mode: Literal["chunked", "recurrent"] = Field(
        "chunked", description="chunked (fast) or the token-by-token recurrence (reference)."
    )
    chunk_size: int = Field(16, ge=1, le=1024, description="Tokens per chunk; 1 = the recurrence.")
    chunk_form: Literal["auto", "minibatch", "exact_delta"] = Field(
        "auto",
        description=(
            "minibatch = gradients at the chunk-start memory (the paper); exact_delta = the exact "
            "chunked delta rule (matrix memory, l2 bias); auto = exact_delta where it applies."
        ),
    )
    kernel: Literal["auto", "triton", "torch"] = Field(
        "auto", description=(
            "auto = on CUDA, flash-linear-attention's kernels for the points it computes exactly "
            "(the exact delta rule, the dot-bias gated forms; bf16) and our Triton kernels for the "
            "covered chunked minibatch forms; triton = our Triton kernel or an error; torch = never."
        ),
    )
    compile: bool | Literal["auto"] = Field("auto", description=(
        "torch.compile each layer, the chunk update on its own graph (inductor; on a CPU it needs a "
        "C++ compiler, else the model runs eager). true: from the first step (25-65 s of compiling "
        "for a small model on a CPU, seconds once inductor's cache has the shapes); auto: on a CPU, "
        "after a few eager steps, once the steps left would take more than 5 minutes eager (then "
        "1.3x for gated_deltanet to 1.7x for titans and memora faster); false: never. Evaluation "
        "runs eager."
    ))
    seed: int = Field(0, ge=0, le=SEED_MAX)

    @model_validator(mode="after")
    def _budget(self) -> Train:
        problem = batch_cover_problem(self.tokens, self.batch_size, self.seq_len)
        if problem is not None:
            raise ValueError(problem)
        return self

    @property
    def steps(self) -> int:
        """Optimiser steps the token budget buys when every batch is ``batch_size * seq_len``
        tokens: the budget is rounded down to whole batches (tokens=5000, batch_size=2,
        seq_len=64 gives 39 steps, 4992 tokens). A trial whose data sources set their own
        ``seq_len`` counts its steps with ``DataMix.train_steps`` instead."""
        return self.tokens // (self.batch_size * self.seq_len)
