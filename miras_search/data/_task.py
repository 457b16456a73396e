"""Base class of the synthetic recall tasks: a pydantic spec that also generates its batches."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator

from miras_search.data.batch import Batch, generator
from miras_search.errors import MirasError
from miras_search.schema._base import Schema

Split = Literal["train", "validation"]


class DataSourceSpec(Schema):
    """Fields every data source has: its sampling weight in a mixture and an optional length."""

    weight: float = Field(1.0, gt=0.0, description="Relative share of batches in a mixture.")
    seq_len: int | None = Field(
        None, ge=1, le=1_048_576, description="Tokens per sequence; null = the trial's seq_len."
    )


class SyntheticTask(DataSourceSpec):
    """A task generated on the fly from a seed; subclasses set ``task`` and implement two methods."""

    task: str

    def min_seq_len(self) -> int:
        """Shortest sequence length T that holds the task's layout."""
        raise NotImplementedError

    def generate(self, batch_size: int, seq_len: int, gen: torch.Generator, split: Split = "train") -> Batch:
        """Draw a batch: inputs and targets [batch_size, seq_len] (targets -100 off the answers).

        ``gen`` already differs per split; ``split`` is for tasks that read split data (a corpus).
        """
        raise NotImplementedError

    @model_validator(mode="after")
    def _fits(self) -> SyntheticTask:
        if self.seq_len is not None and self.seq_len < self.min_seq_len():
            raise ValueError(self._too_short(self.seq_len))
        return self

    def _too_short(self, seq_len: int) -> str:
        return (
            f"seq_len {seq_len} is too short for task '{self.task}' with these parameters: "
            f"it needs at least {self.min_seq_len()} tokens"
        )

    def resolve_seq_len(self, seq_len: int | None = None) -> int:
        """The task's own seq_len, else the one given (the trial's); MirasError if neither fits."""
        length = self.seq_len if self.seq_len is not None else seq_len
        if length is None:
            raise MirasError(f"task '{self.task}' has no seq_len: set it in the data spec or pass one")
        if length < self.min_seq_len():
            raise MirasError(self._too_short(length))
        return length

    def batch(
        self,
        batch_size: int,
        *,
        step: int,
        seed: int = 0,
        split: Split = "train",
        seq_len: int | None = None,
    ) -> Batch:
        """The batch number ``step`` of the stream for (seed, split): same arguments, same tensors.

        Train and validation draw from independent streams of the same distribution.
        """
        if batch_size < 1:
            raise MirasError(f"batch_size must be >= 1, got {batch_size}")
        length = self.resolve_seq_len(seq_len)
        gen = generator("synthetic", self.task, seed, split, step)
        batch = self.generate(batch_size, length, gen, split)
        assert batch.inputs.shape == (batch_size, length), batch.inputs.shape
        return batch
