"""Tokenizers: raw UTF-8 bytes (the default) or a Hugging Face ``tokenizers`` tokenizer.json file."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Protocol

import numpy as np

from miras_search.data.vocab import EOS, N_BYTES, VOCAB_SIZE
from miras_search.errors import MirasError

# Tried in order when a tokenizer.json does not name its end-of-document token.
_EOS_CANDIDATES = ("<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>", "[SEP]", "<|im_end|>")


class Tokenizer(Protocol):
    """What a text source needs from a tokenizer."""

    name: str
    """Identity used in cache keys: same name, same ids."""
    vocab_size: int
    """Every id produced is < vocab_size (the model's vocabulary must be at least this)."""
    eos: int
    """Id appended after every document."""

    def encode(self, text: str) -> np.ndarray:
        """1-D integer array of ids."""
        ...

    def decode(self, ids: np.ndarray | list[int]) -> str:
        ...


_SURROGATES = re.compile("[\ud800-\udfff]")


def utf8_bytes(text: str) -> bytes:
    """``text``'s UTF-8 bytes; a lone surrogate (not Unicode text: e.g. what ``surrogateescape``
    makes of an undecodable byte) is encoded as U+FFFD's bytes, as the text sources replace the
    bytes of a file that are not UTF-8."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATES.sub("\ufffd", text).encode("utf-8")


class ByteTokenizer:
    """UTF-8 bytes as ids 0..255; the specials (PAD, BOS, EOS, SEP) are 256..259."""

    name = "bytes"
    vocab_size = VOCAB_SIZE
    eos = EOS

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(utf8_bytes(text), dtype=np.uint8)

    def decode(self, ids: np.ndarray | list[int]) -> str:
        raw = bytes(int(i) for i in ids if 0 <= int(i) < N_BYTES)
        return raw.decode("utf-8", errors="replace")


_TOKENIZER_KEYS = ("version", "model", "normalizer", "pre_tokenizer", "post_processor", "decoder",
                   "added_tokens", "truncation", "padding")


def _check_tokenizer_json(path: Path) -> None:
    """MirasError saying what ``path`` is when it is not a ``tokenizers`` file: unreadable, not
    JSON, or JSON without the ``model`` a tokenizer.json holds (the tokenizers library's own
    message would be a serde position, e.g. 'expected , or } at line 1 column 7')."""
    import json

    try:
        data = json.loads(path.read_bytes())
    except OSError as error:
        raise MirasError(f"tokenizer file '{path}' could not be read ({error.strerror or error})") from None
    except UnicodeDecodeError:
        raise MirasError(f"tokenizer file '{path}' is not a tokenizer.json: it is not UTF-8 text "
                         "(a binary file?); give a Hugging Face `tokenizers` file or 'bytes'") from None
    except json.JSONDecodeError as error:
        raise MirasError(f"tokenizer file '{path}' is not a tokenizer.json: it is not valid JSON ({error.msg} "
                         f"at line {error.lineno} column {error.colno}); give a Hugging Face `tokenizers` file "
                         "or 'bytes'") from None
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        found = (f"keys {', '.join(repr(k) for k in list(data)[:6])}" if isinstance(data, dict) and data
                 else f"a JSON {type(data).__name__}" if not isinstance(data, dict) else "an empty object")
        others = ", ".join(k for k in _TOKENIZER_KEYS if k != "model")
        raise MirasError(f"tokenizer file '{path}' is JSON but not a Hugging Face `tokenizers` file: it has "
                         f"{found}, where a tokenizer.json has a 'model' object (and {others}); give such a "
                         "file or 'bytes'")


class FileTokenizer:
    """A ``tokenizers`` tokenizer.json (optional dependency: ``pip install miras-search[data]``)."""

    def __init__(self, path: str | Path, eos_token: str | None = None):
        try:
            from tokenizers import Tokenizer as HFTokenizer
        except ImportError as error:
            raise MirasError(
                f"tokenizer '{path}' needs the optional package 'tokenizers' "
                "(pip install 'miras-search[data]'), or use tokenizer 'bytes'"
            ) from error
        path = Path(path).expanduser()
        if path.is_dir():
            raise MirasError(f"tokenizer '{path}' is a folder, not a tokenizer file: give the tokenizer.json "
                             "inside it (a Hugging Face `tokenizers` file), or 'bytes'")
        if not path.is_file():
            raise MirasError(f"tokenizer file '{path}' does not exist (give a tokenizer.json or 'bytes')")
        _check_tokenizer_json(path)
        try:
            self._tok = HFTokenizer.from_file(str(path))
        except Exception as error:
            raise MirasError(f"tokenizer file '{path}' could not be read: {error}") from error
        self.name = "tokenizers:" + hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        base = self._tok.get_vocab_size(with_added_tokens=True)
        names = (eos_token,) if eos_token else _EOS_CANDIDATES
        found = [i for i in (self._tok.token_to_id(n) for n in names) if i is not None]
        if eos_token and not found:
            raise MirasError(f"eos_token '{eos_token}' is not in the vocabulary of tokenizer '{path}'")
        # Without an end-of-document token of its own, one extra id after the vocabulary is used.
        self.eos = found[0] if found else base
        self.vocab_size = base if found else base + 1

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._tok.encode(text, add_special_tokens=False).ids, dtype=np.int64)

    def decode(self, ids: np.ndarray | list[int]) -> str:
        return self._tok.decode([int(i) for i in ids if int(i) != self.eos])


def load_tokenizer(spec: str = "bytes", eos_token: str | None = None) -> Tokenizer:
    """'bytes' -> ByteTokenizer; anything else is the path of a tokenizer.json."""
    if spec == "bytes":
        return ByteTokenizer()
    return FileTokenizer(spec, eos_token)
