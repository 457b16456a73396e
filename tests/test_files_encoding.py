"""Invalid UTF-8 in user .txt / .jsonl files: read as U+FFFD as before, with one warning per file."""

from __future__ import annotations

import json
import warnings

import pytest

from miras_search.data import Files
from miras_search.data.files import InvalidUTF8Warning, iter_file_documents

# Invalid: a lone continuation byte (1), a truncated 3-byte sequence (2), an encoded surrogate (3).
BAD = "caf\u00e9 ".encode() + b"\x80 ok \xe2\x82\r\nline two \xed\xa0\x80 end\r\n"
INVALID_BYTES = 1 + 2 + 3


def _read(paths, field: str = "text") -> tuple[list[str], list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        documents = list(iter_file_documents([str(p) for p in paths], field))
    return documents, [w for w in caught if issubclass(w.category, InvalidUTF8Warning)]


def test_a_txt_file_warns_once_with_the_count_and_reads_as_before(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(BAD)
    documents, caught = _read([path])
    assert documents == [path.read_text(encoding="utf-8", errors="replace")]  # the text read until now
    assert documents[0].count("\ufffd") == 5 and "\r" not in documents[0]
    assert len(caught) == 1
    message = str(caught[0].message)
    assert str(path) in message and f"{INVALID_BYTES} byte(s) are not valid UTF-8" in message


def test_a_jsonl_file_warns_once_for_all_its_lines(tmp_path):
    path = tmp_path / "bad.jsonl"
    good = json.dumps({"text": "caf\u00e9 fine"}).encode()
    broken = b'{"text": "a \x80 b \xe2\x82 c"}'
    path.write_bytes(b"\r\n".join([good, broken, broken, good]) + b"\r\n")
    documents, caught = _read([path])
    assert documents == ["caf\u00e9 fine", "a \ufffd b \ufffd c", "a \ufffd b \ufffd c", "caf\u00e9 fine"]
    assert len(caught) == 1 and str(path) in str(caught[0].message)
    assert "6 byte(s) are not valid UTF-8" in str(caught[0].message)


def test_valid_files_do_not_warn(tmp_path):
    (tmp_path / "good.txt").write_text("caf\u00e9 \u6f22\u5b57 \U0001f600\n", encoding="utf-8")
    (tmp_path / "good.jsonl").write_text(json.dumps({"text": "\u00fc"}) + "\n", encoding="utf-8")
    documents, caught = _read(sorted(tmp_path.iterdir()))
    assert documents == ["\u00fc", "caf\u00e9 \u6f22\u5b57 \U0001f600\n"] and caught == []


def test_a_files_source_warns_per_bad_file(tmp_path):
    folder = tmp_path / "texts"
    folder.mkdir()
    for i in range(6):
        (folder / f"{i}.txt").write_bytes(f"document {i} ".encode() * (i + 2) + (b"\xff" * i))
    with pytest.warns(InvalidUTF8Warning) as caught:
        Files(paths=[str(folder)]).open(tmp_path / "cache")
    counts = sorted(str(w.message).split(": ")[1].split(" ")[0] for w in caught)
    assert counts == ["1", "2", "3", "4", "5"]  # 0.txt is valid
