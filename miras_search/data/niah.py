"""Single needle in a haystack (S-NIAH, in the style of RULER), byte-level.

One sequence of T + 1 tokens::

    BOS  haystack ... [needle sentence] ... haystack  question  answer

The needle states a value (a pass key, a number, or a uuid) at a depth of the haystack; the
question at the end asks for it and loss is taken on the answer bytes only. The haystack is either
a repeated block of plain sentences (``noise``, as RULER's pass-key task) or text of the embedded
corpus (``corpus``, like RULER's essay haystack). A corpus haystack of the train (validation) split
is text of the corpus's train (validation) split, split with ``val_fraction`` as the mix's text
corpus source is, so training haystacks never hold that source's validation text. The value is
drawn so that it occurs exactly once before the answer.
"""

from __future__ import annotations

import uuid
from functools import cache
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from miras_search.data._task import Split, SyntheticTask
from miras_search.data.batch import Batch
from miras_search.data.vocab import BOS, EOS
from miras_search.errors import MirasError

NeedleKind = Literal["passkey", "number", "uuid"]

_TEMPLATES: dict[str, tuple[str, str]] = {
    # kind: (needle sentence, question that the answer completes)
    "passkey": ("The pass key is {}. Remember it. ", "\nWhat is the pass key? The pass key is "),
    "number": (
        "The special magic number is: {}. ",
        "\nWhat is the special magic number mentioned in the text? The special magic number is: ",
    ),
    "uuid": (
        "The special magic uuid is: {}. ",
        "\nWhat is the special magic uuid mentioned in the text? The special magic uuid is: ",
    ),
}
_NOISE = b"The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
_DEFAULT_DIGITS = {"passkey": 5, "number": 7}
_MAX_DRAWS = 100


@cache
def _corpus_text(split: Split, val_fraction: float | None) -> np.ndarray:
    """Byte-corpus token ids of ``split`` as bytes (document ends become newlines), loaded once
    per process; ``val_fraction`` None is the corpus's default split."""
    from miras_search.data.corpus import load_corpus

    store = load_corpus() if val_fraction is None else load_corpus(val_fraction=val_fraction)
    tokens = store.tokens(split)
    return np.where(tokens == EOS, ord("\n"), tokens).astype(np.uint8)


class NeedleInHaystack(SyntheticTask):
    """Retrieve one value stated once somewhere in a long context."""

    task: Literal["niah"] = "niah"
    needle: NeedleKind = Field("passkey", description="What the needle states.")
    haystack: Literal["noise", "corpus"] = Field("noise", description="Repeated sentences or corpus text.")
    depth: float | None = Field(
        None, ge=0.0, le=1.0, description="Needle position as a fraction of the haystack; null = uniform."
    )
    digits: int | None = Field(
        None, ge=1, le=18, description="Digits of a passkey / number (default 5 / 7); unused for uuid."
    )
    val_fraction: float | None = Field(
        None, gt=0.0, lt=1.0,
        description=(
            "Corpus haystacks: share of corpus documents held out for validation haystacks; "
            "null = the val_fraction of the mix's text source (task: text), else the corpus default."
        ),
    )

    def _value_len(self) -> int:
        if self.needle == "uuid":
            return 36
        return self.digits if self.digits is not None else _DEFAULT_DIGITS[self.needle]

    def min_seq_len(self) -> int:
        needle, question = _TEMPLATES[self.needle]
        answer = self._value_len()
        return len(needle.format("x" * answer)) + len(question) + answer

    def _draw_value(self, gen: torch.Generator) -> str:
        if self.needle == "uuid":
            raw = bytes(torch.randint(256, (16,), generator=gen).tolist())
            return str(uuid.UUID(bytes=raw, version=4))
        digits = self._value_len()
        return str(int(torch.randint(10 ** (digits - 1), 10**digits, (1,), generator=gen)))

    def _haystack(self, length: int, gen: torch.Generator, split: Split) -> bytes:
        if self.haystack == "noise":
            return (_NOISE * (length // len(_NOISE) + 1))[:length]
        text = _corpus_text(split, self.val_fraction)
        if len(text) < length:
            raise MirasError(
                f"the corpus's {split} split has {len(text)} bytes, too few for a haystack of {length}; "
                "lower this niah source's seq_len or raise its val_fraction"
            )
        start = int(torch.randint(len(text) - length + 1, (1,), generator=gen))
        return text[start : start + length].tobytes()

    def _sequence(self, seq_len: int, gen: torch.Generator, split: Split) -> bytes:
        """The T bytes after BOS: haystack with the needle, question, answer."""
        needle_t, question_t = _TEMPLATES[self.needle]
        question = question_t.encode()
        hay_len = seq_len - self.min_seq_len()
        hay = self._haystack(hay_len, gen, split)
        depth = self.depth if self.depth is not None else float(torch.rand(1, generator=gen))
        at = round(depth * hay_len)
        for sep in (b". ", b"\n", b" "):  # start the needle on a sentence, else a line or word
            boundary = hay.rfind(sep, 0, at)
            if boundary >= 0 and at - boundary <= 256:
                at = boundary + len(sep)
                break
        for _ in range(_MAX_DRAWS):
            value = self._draw_value(gen)
            answer = value.encode()
            context = hay[:at] + needle_t.format(value).encode() + hay[at:] + question
            if context.count(answer) == 1:
                return context + answer
        raise MirasError(f"could not draw a {self.needle} that is unique in its haystack")

    def generate(self, batch_size: int, seq_len: int, gen: torch.Generator, split: Split = "train") -> Batch:
        """inputs, targets: [batch_size, seq_len]; targets scored on the answer bytes only; a
        corpus haystack comes from the corpus's ``split``."""
        rows = [self._sequence(seq_len, gen, split) for _ in range(batch_size)]
        body = torch.tensor(np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(batch_size, seq_len))
        seq = torch.cat([torch.full((batch_size, 1), BOS), body.long()], dim=1)  # [B, T+1]
        scored = torch.zeros_like(seq, dtype=torch.bool)
        scored[:, seq_len + 1 - self._value_len() :] = True
        return Batch.from_sequences(seq, scored)
