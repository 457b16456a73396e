"""A byte-level tokenizer for transformers: ids 0..255 are the UTF-8 bytes of the text, then the
toolkit's specials (PAD 256, BOS 257, EOS 258, SEP 259), as the trials' text sources encode it.

A lone surrogate in the text (not Unicode: e.g. ``surrogateescape``'s stand-in for a byte that
is not UTF-8) is encoded as U+FFFD, as the text sources replace such bytes. Decoding an id
outside the vocabulary, or converting a token that is not one, is a ValueError naming it and the
vocabulary's size (as the slow tokenizers without an unknown token refuse it)."""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedTokenizer

from miras_search.data.tokenizer import utf8_bytes
from miras_search.data.vocab import BOS, EOS, N_BYTES, PAD, SEP

_SPECIALS = {"<pad>": PAD, "<bos>": BOS, "<eos>": EOS, "<sep>": SEP}


class MirasByteTokenizer(PreTrainedTokenizer):
    """Text <-> UTF-8 byte ids (each byte one token, written ``<0xNN>``); nothing to download."""

    model_input_names = ["input_ids", "attention_mask"]  # noqa: RUF012  (transformers' class attribute)

    def __init__(self, **kwargs: Any) -> None:
        self._ids = {f"<0x{b:02X}>": b for b in range(N_BYTES)} | _SPECIALS
        self._tokens = {i: t for t, i in self._ids.items()}
        kwargs.setdefault("pad_token", "<pad>")
        kwargs.setdefault("bos_token", "<bos>")
        kwargs.setdefault("eos_token", "<eos>")
        super().__init__(**kwargs)

    @property
    def vocab_size(self) -> int:
        return len(self._ids)

    def get_vocab(self) -> dict[str, int]:
        return dict(self._ids)

    def _tokenize(self, text: str, **kwargs: Any) -> list[str]:
        return [f"<0x{b:02X}>" for b in utf8_bytes(text)]

    def _convert_token_to_id(self, token: str) -> int:
        if token not in self._ids:
            raise ValueError(f"{token!r} is not a token of MirasByteTokenizer (bytes <0x00>..<0xFF> and "
                             f"{', '.join(_SPECIALS)})")
        return self._ids[token]

    def _convert_id_to_token(self, index: int) -> str:
        token = self._tokens.get(int(index))
        if token is None:
            raise ValueError(f"id {int(index)} is outside MirasByteTokenizer's vocabulary [0, {len(self._ids)}) "
                             f"(bytes 0..{N_BYTES - 1}, then the special ids)")
        return token

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        data = bytes(self._ids[t] for t in tokens if self._ids[t] < N_BYTES)
        return data.decode("utf-8", errors="replace")

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str, ...]:
        return ()  # the vocabulary is fixed by the class: nothing to write
