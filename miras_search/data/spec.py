"""``DataSpec``: the pydantic config of one data source, and a weighted mixture of them.

A trial config embeds a list of these, e.g. in YAML::

    data:
      - {task: mqar, num_pairs: 16, weight: 1}
      - {task: niah, needle: uuid, seq_len: 1024, weight: 0.5}
      - {task: text}
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from typing import Annotated, Protocol

import torch
from pydantic import Field, TypeAdapter, ValidationError

from miras_search.data._task import Split
from miras_search.data.batch import Batch, generator
from miras_search.data.mqar import MQAR
from miras_search.data.niah import NeedleInHaystack
from miras_search.data.noisy_recall import NoisyRecall
from miras_search.data.selective_copy import SelectiveCopy
from miras_search.data.text_sources import Files, HFDataset, TextCorpus
from miras_search.data.vocab import VOCAB_SIZE
from miras_search.errors import ConfigError, MirasError, Problem

DataSpec = Annotated[
    MQAR | NoisyRecall | SelectiveCopy | NeedleInHaystack | TextCorpus | Files | HFDataset,
    Field(discriminator="task"),
]
TASKS = ("mqar", "noisy_recall", "selective_copy", "niah", "text", "files", "hf")
SYNTHETIC_TASKS = ("mqar", "noisy_recall", "selective_copy", "niah")

_ONE = TypeAdapter(DataSpec)
_MANY = TypeAdapter(list[DataSpec])


class Source(Protocol):
    """Anything that yields reproducible batches: a synthetic task spec or an opened text source."""

    def batch(
        self, batch_size: int, *, step: int, seed: int = 0, split: Split = "train", seq_len: int | None = None
    ) -> Batch: ...


def _problems(error: ValidationError, prefix: str = "") -> list[Problem]:
    out = []
    for item in error.errors():
        path = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "union_tag_invalid":
            message = f"'task' must be one of {TASKS}"
        elif item["type"] == "union_tag_not_found":
            path, message = f"{path}.task", f"required key 'task' is missing; one of {TASKS}"
        out.append(Problem(".".join(p for p in (prefix, path) if p), message))
    return out


def parse_data_spec(data: object, source: str = "data spec") -> DataSpec:
    """One DataSpec from a dict (or a spec); ConfigError naming each bad field."""
    try:
        return _ONE.validate_python(data)
    except ValidationError as error:
        raise ConfigError(source, _problems(error)) from None


def parse_data_specs(data: object, source: str = "data") -> list[DataSpec]:
    """A non-empty list of DataSpecs; problems are named like ``data.1.num_pairs``."""
    try:
        specs = _MANY.validate_python(data)
    except ValidationError as error:
        raise ConfigError(source, _problems(error, source)) from None
    if not specs:
        raise ConfigError(source, [Problem(source, "needs at least one data source")])
    return specs


def open_source(spec: DataSpec, root: str | os.PathLike[str] | None = None) -> Source:
    """A ready source: synthetic specs generate themselves; text specs open their token store."""
    if isinstance(spec, TextCorpus | Files | HFDataset):
        return spec.open(root)
    return spec


def iter_batches(
    source: Source,
    batch_size: int,
    *,
    seed: int = 0,
    split: Split = "train",
    seq_len: int | None = None,
    start: int = 0,
    stop: int | None = None,
) -> Iterator[Batch]:
    """Batches ``start, start + 1, ...`` (up to ``stop``, else endless) of one source."""
    for step in itertools.count(start) if stop is None else range(start, stop):
        yield source.batch(batch_size, step=step, seed=seed, split=split, seq_len=seq_len)


class DataMix:
    """Weighted mixture: each batch comes whole from one source, drawn by weight from (seed, step)."""

    def __init__(self, specs: list[DataSpec], root: str | os.PathLike[str] | None = None):
        if not specs:
            raise MirasError("a data mixture needs at least one data source")
        self.specs = list(specs)
        self.sources = [open_source(s, root) for s in self.specs]
        self.weights = torch.tensor([s.weight for s in self.specs], dtype=torch.float64)
        self.names = [f"{i}:{s.task}" for i, s in enumerate(self.specs)]

    @property
    def vocab_size(self) -> int:
        """The model's vocabulary must hold at least this many ids: a tokenizer's size for text
        sources, the shared byte vocabulary (data.vocab.VOCAB_SIZE) for the others."""
        return max(getattr(source, "vocab_size", VOCAB_SIZE) for source in self.sources)

    def pick(self, step: int, seed: int = 0, split: Split = "train") -> int:
        """Index of the source that batch ``step`` comes from."""
        gen = generator("mix", seed, split, step)
        return int(torch.multinomial(self.weights, 1, generator=gen))

    def batch(
        self, batch_size: int, *, step: int, seed: int = 0, split: Split = "train", seq_len: int | None = None
    ) -> tuple[str, Batch]:
        """(source name like '0:mqar', batch) for batch number ``step``."""
        index = self.pick(step, seed, split)
        batch = self.sources[index].batch(batch_size, step=step, seed=seed, split=split, seq_len=seq_len)
        return self.names[index], batch
