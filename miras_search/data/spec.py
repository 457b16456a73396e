"""``DataSpec``: the pydantic config of one data source, and a weighted mixture of them.

A trial config embeds a list of these, e.g. in YAML::

    data:
      - {task: mqar, num_pairs: 16, weight: 1}
      - {task: niah, needle: uuid, seq_len: 1024, weight: 0.5}
      - {task: text}
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Iterator
from typing import Annotated, Protocol

import torch
from pydantic import Field, TypeAdapter, ValidationError

from miras_search.data._task import Split
from miras_search.data.batch import Batch, generator
from miras_search.data.mad_compression import MadCompression
from miras_search.data.mad_copy import MadSelectiveCopy
from miras_search.data.mad_fuzzy_recall import MadFuzzyRecall
from miras_search.data.mad_memorization import MadMemorization
from miras_search.data.mad_recall import MadNoisyRecall, MadRecall
from miras_search.data.mad_suite import MAD_TASKS
from miras_search.data.mqar import MQAR
from miras_search.data.niah import NeedleInHaystack
from miras_search.data.noisy_recall import NoisyRecall
from miras_search.data.selective_copy import SelectiveCopy
from miras_search.data.text_sources import Files, HFDataset, TextCorpus
from miras_search.data.vocab import VOCAB_SIZE
from miras_search.errors import ConfigError, MirasError, Problem
from miras_search.schema.train import batch_cover_problem

DataSpec = Annotated[
    MQAR | NoisyRecall | SelectiveCopy | NeedleInHaystack | TextCorpus | Files | HFDataset
    | MadRecall | MadFuzzyRecall | MadNoisyRecall | MadSelectiveCopy | MadCompression | MadMemorization,
    Field(discriminator="task"),
]
TASKS = ("mqar", "noisy_recall", "selective_copy", "niah", "text", "files", "hf", *MAD_TASKS)
SYNTHETIC_TASKS = ("mqar", "noisy_recall", "selective_copy", "niah", *MAD_TASKS)

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
        self.specs = _share_corpus_split(list(specs))
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

    def fingerprint(self) -> str:
        """A hash of what the mix's batches are drawn from: every source's settings and, for a
        text source, its token store's content (files added or edited change it)."""
        parts = [[spec.model_dump(mode="json"), getattr(getattr(source, "store", None), "content_hash", None)]
                 for spec, source in zip(self.specs, self.sources, strict=True)]
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]

    def seq_lens(self, seq_len: int) -> list[int]:
        """Tokens per sequence of each source: its own ``seq_len``, else ``seq_len`` (the trial's)."""
        return [spec.seq_len if spec.seq_len is not None else seq_len for spec in self.specs]

    def train_steps(self, tokens: int, batch_size: int, seq_len: int, seed: int = 0) -> int:
        """Training steps of ``batch(batch_size, step=0, 1, ...)`` that fit in ``tokens`` tokens.

        Batch ``step`` holds ``batch_size * T`` tokens, T the length (see ``seq_lens``) of the
        source that ``pick(step, seed)`` draws. The steps are counted in order while the next
        batch still fits, so a run trains the budget rounded down to whole batches (less than one
        batch short of it), and knows its step count, the length of its lr schedule, before
        training. With a single length this is ``tokens // (batch_size * seq_len)``, as
        ``Train.steps``. Raises MirasError when one batch of the longest source exceeds ``tokens``.
        """
        lengths = self.seq_lens(seq_len)
        longest = max(range(len(lengths)), key=lengths.__getitem__)
        problem = batch_cover_problem(tokens, batch_size, lengths[longest],
                                      seq_len_of=f" of data source '{self.names[longest]}'")
        if problem is not None:
            raise MirasError(problem)
        if len(set(lengths)) == 1:
            return tokens // (batch_size * lengths[0])
        # One pick per step (microseconds), negligible next to training that step.
        steps = trained = 0
        while True:
            size = batch_size * lengths[self.pick(steps, seed)]
            if trained + size > tokens:
                return steps
            trained, steps = trained + size, steps + 1


def _share_corpus_split(specs: list[DataSpec]) -> list[DataSpec]:
    """``specs`` with each corpus-haystack NIAH that leaves ``val_fraction`` unset given that of
    the mix's embedded text corpus, so that no training haystack holds its validation text.

    Of several TextCorpus sources the largest val_fraction is taken: validation is filled with
    groups of documents in one fixed order up to val_fraction of the text, so the larger split's
    training documents are (but for a group passed over at a boundary) training documents of
    every smaller one too.
    """
    fractions = [spec.val_fraction for spec in specs if isinstance(spec, TextCorpus)]
    if not fractions:
        return specs
    return [
        spec.model_copy(update={"val_fraction": max(fractions)})
        if isinstance(spec, NeedleInHaystack) and spec.haystack == "corpus" and spec.val_fraction is None
        else spec
        for spec in specs
    ]
