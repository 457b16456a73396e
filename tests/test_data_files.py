"""User files (txt / jsonl / parquet), tokenizers, Hugging Face errors, and the store cache."""

from __future__ import annotations

import json
import math
import sys
import types
import warnings

import numpy as np
import pytest

from miras_search.data import EOS, ByteTokenizer, Files, HFDataset, load_tokenizer, split_documents
from miras_search.data.documents import SplitWarning
from miras_search.errors import MirasError

TEXTS = [f"Document number {i}: " + "word " * (3 + 5 * i) + "é ü 漢字\n" for i in range(12)]


def _docs(source, tokenizer=None) -> list[str]:
    tok = tokenizer or ByteTokenizer()
    out = []
    for split in ("train", "validation"):
        tokens = np.asarray(source.store.tokens(split), dtype=np.int64)
        ends = np.flatnonzero(tokens == tok.eos)
        starts = np.concatenate([[0], ends[:-1] + 1])
        out += [tok.decode(tokens[s:e]) for s, e in zip(starts, ends, strict=True)]
    return out


def test_txt_folder_round_trip(tmp_path):
    folder = tmp_path / "texts"
    (folder / "nested").mkdir(parents=True)
    for i, text in enumerate(TEXTS):
        (folder / ("nested" if i % 2 else "") / f"{i:02d}.txt").write_text(text, encoding="utf-8")
    (folder / "ignored.csv").write_text("not read")
    source = Files(paths=[str(folder)]).open(tmp_path / "cache")
    assert sorted(_docs(source)) == sorted(TEXTS)
    assert source.store.manifest["splits"]["validation"]["n_documents"] >= 1
    again = Files(paths=[str(folder)]).open(tmp_path / "cache")
    assert again.store.path == source.store.path and again.store.content_hash == source.store.content_hash
    (folder / "00.txt").write_text("changed text\n")  # a changed file gives a new store
    changed = Files(paths=[str(folder)]).open(tmp_path / "cache")
    assert changed.store.path != source.store.path and "changed text\n" in _docs(changed)


def test_jsonl_round_trip_with_a_field(tmp_path):
    path = tmp_path / "data.jsonl"
    lines = [json.dumps({"id": i, "body": t}) for i, t in enumerate(TEXTS)]
    path.write_text("\n".join(lines[:5]) + "\n\n" + "\n".join(lines[5:]) + "\n")
    source = Files(paths=[str(path)], field="body").open(tmp_path / "cache")
    assert sorted(_docs(source)) == sorted(TEXTS)
    batch = source.batch(2, step=0, seq_len=17)
    assert batch.inputs.shape == (2, 17)
    # Bytes tokenizer: one token per byte plus one EOS per document.
    n_bytes = {s: source.store.manifest["splits"][s]["n_bytes"] for s in ("train", "validation")}
    n_docs = {s: source.store.manifest["splits"][s]["n_documents"] for s in ("train", "validation")}
    assert sum(n_bytes.values()) == sum(len(t.encode("utf-8")) for t in TEXTS)
    per_token = n_bytes["validation"] / (n_bytes["validation"] + n_docs["validation"])
    assert source.bits_per_byte(2.0) == pytest.approx(2.0 / math.log(2) / per_token, rel=1e-12)


def test_parquet_round_trip(tmp_path):
    pa = pytest.importorskip("pyarrow", reason="pyarrow (optional extra 'data') is not installed")
    import pyarrow.parquet as pq

    path = tmp_path / "data.parquet"
    pq.write_table(pa.table({"content": TEXTS, "n": list(range(len(TEXTS)))}), path)
    source = Files(paths=[str(path)], field="content").open(tmp_path / "cache")
    assert sorted(_docs(source)) == sorted(TEXTS)
    with pytest.raises(MirasError, match="no column 'text'"):
        Files(paths=[str(path)]).open(tmp_path / "cache")


def test_missing_and_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(MirasError, match="does not exist"):
        Files(paths=[str(tmp_path / "nope.txt")]).open(tmp_path / "cache")
    bad_field = tmp_path / "a.jsonl"
    bad_field.write_text(json.dumps({"text": "x"}) + "\n" + json.dumps({"body": "y"}) + "\n")
    with pytest.raises(MirasError, match=r"line 2 has no field 'text' \(found: \['body'\]\)"):
        Files(paths=[str(bad_field)]).open(tmp_path / "cache")
    bad_json = tmp_path / "b.jsonl"
    bad_json.write_text('{"text": "ok"}\n{"text": broken}\n')
    with pytest.raises(MirasError, match="line 2 is not valid JSON"):
        Files(paths=[str(bad_json)]).open(tmp_path / "cache")
    wrong_type = tmp_path / "c.jsonl"
    wrong_type.write_text('{"text": 3}\n')
    with pytest.raises(MirasError, match="must be a string"):
        Files(paths=[str(wrong_type)]).open(tmp_path / "cache")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MirasError, match="holds no"):
        Files(paths=[str(tmp_path / "empty")]).open(tmp_path / "cache")
    other = tmp_path / "d.csv"
    other.write_text("a,b\n")
    with pytest.raises(MirasError, match=r"suffix '\.csv'"):
        Files(paths=[str(other)]).open(tmp_path / "cache")
    with pytest.raises(ValueError, match="paths"):
        Files(paths=[])


def test_one_document_cannot_be_split(tmp_path):
    (tmp_path / "one.txt").write_text("only one short document\n")
    with pytest.raises(MirasError, match="at least 2 distinct"):
        Files(paths=[str(tmp_path / "one.txt")]).open(tmp_path / "cache")


def test_damaged_store_is_rebuilt(tmp_path):
    (tmp_path / "a.txt").write_text(TEXTS[0])
    (tmp_path / "b.txt").write_text(TEXTS[1])
    spec = Files(paths=[str(tmp_path / "a.txt"), str(tmp_path / "b.txt")])
    store = spec.open(tmp_path / "cache").store
    good = store.content_hash
    with (store.path / "train.bin").open("r+b") as handle:
        handle.write(b"\x00\x01\x02")
    rebuilt = spec.open(tmp_path / "cache").store
    assert rebuilt.content_hash == good
    assert sorted(_docs(spec.open(tmp_path / "cache"))) == sorted(TEXTS[:2])


def test_split_is_by_content_and_disjoint():
    docs = [f"doc {i}\n" for i in range(400)] + ["doc 3\n"]  # one duplicate
    a = split_documents(docs, val_fraction=0.1)
    b = split_documents(list(reversed(docs)), val_fraction=0.1)
    assert a == b  # order of the input does not matter
    assert not set(a["train"]) & set(a["validation"])
    assert len(a["train"]) + len(a["validation"]) == 400
    assert 15 <= len(a["validation"]) <= 70  # ~40 expected
    long_doc = "".join(f"line {i}\n" for i in range(40_000))  # ~400 kB: cut into pieces
    pieces = split_documents([long_doc], val_fraction=0.5)
    assert pieces["train"] and pieces["validation"]
    assert max(len(p) for p in pieces["train"] + pieces["validation"]) <= 65_536
    assert sorted("".join(pieces["train"] + pieces["validation"]).splitlines()) == sorted(long_doc.splitlines())


def _paragraph(seed: int, lines: int = 6) -> str:
    return "".join(f"paragraph {seed} says something long enough to be a passage, line {i}\n"
                   for i in range(lines))


def test_near_duplicates_land_in_one_split():
    """A document quoted inside another (a help topic inside a longer one, a shared table) would
    leak its text into the other split; they are split as one group."""
    singles = [_paragraph(i) for i in range(300)]
    quoting = [f"intro {i}\n" + singles[i] + f"outro {i}\n" for i in range(0, 300, 3)]
    split = split_documents(singles + quoting, val_fraction=0.2)
    assert split == split_documents(list(reversed(singles + quoting)), val_fraction=0.2)
    where = {doc: name for name, docs in split.items() for doc in docs}
    assert all(where[singles[i]] == where[quoting[i // 3]] for i in range(0, 300, 3))
    in_val = sum(where[singles[i]] == "validation" for i in range(0, 300, 3))
    assert 5 <= in_val <= 40  # the groups themselves are spread over both splits


def test_validation_holds_about_val_fraction_of_the_text_despite_a_large_group():
    """One group of a tenth of the text must not make a 5 % validation split three times too big."""
    rare = "".join(f"a shared table row that many codec files repeat verbatim, row {i}\n" for i in range(8))
    grouped = [f"codec {i}\n" + rare + "x" * 1200 for i in range(8)]  # ~13 kB, one group
    others = [_paragraph(i, lines=4) for i in range(400)]
    for fraction in (0.05, 0.2):
        split = split_documents(grouped + others, val_fraction=fraction)
        chars = {name: sum(map(len, docs)) for name, docs in split.items()}
        share = chars["validation"] / (chars["train"] + chars["validation"])
        assert abs(share - fraction) < 0.35 * fraction, (fraction, share)
        assert len({name for name, docs in split.items() for d in docs if d in grouped}) == 1


def _share(docs: dict[str, list[str]]) -> float:
    chars = {name: sum(map(len, d)) for name, d in docs.items()}
    return chars["validation"] / (chars["train"] + chars["validation"])


def test_a_header_every_document_carries_is_boilerplate_not_a_group():
    header = "".join(f"Licensed under the Apache License, Version 2.0, clause {i} of the header\n" for i in range(6))
    docs = [header + _paragraph(i) for i in range(400)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no SplitWarning: the split keeps its shape
        split = split_documents(docs, val_fraction=0.05)
    assert abs(_share(split) - 0.05) < 0.02 and len(split["train"]) > 300


def test_documents_chained_into_one_group_are_split_one_by_one_with_a_warning():
    """Each document quotes the next: one group of everything, which no split can hold out."""
    paragraphs = [_paragraph(i) for i in range(301)]
    docs = [paragraphs[i] + paragraphs[i + 1] for i in range(300)]
    with pytest.warns(SplitWarning, match="split one by one"):
        split = split_documents(docs, val_fraction=0.1)
    assert abs(_share(split) - 0.1) < 0.03


def test_byte_tokenizer_round_trip():
    tok = ByteTokenizer()
    text = "plain ascii, é, 漢字, emoji 🙂"
    ids = tok.encode(text)
    assert ids.max() < 256 and len(ids) == len(text.encode("utf-8"))
    assert tok.decode([*ids.tolist(), EOS]) == text
    assert tok.vocab_size == 260


def test_tokenizer_json_file(tmp_path):
    tokenizers = pytest.importorskip("tokenizers", reason="tokenizers (optional extra 'data') is not installed")
    from tokenizers import models, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(TEXTS, trainers.WordLevelTrainer(special_tokens=["[UNK]", "</s>"]))
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    loaded = load_tokenizer(str(path))
    assert loaded.eos == tok.token_to_id("</s>") and loaded.vocab_size == tok.get_vocab_size()
    assert loaded.decode(loaded.encode("word word")) == "word word"
    (tmp_path / "a.txt").write_text(TEXTS[3])
    (tmp_path / "b.txt").write_text(TEXTS[4])
    source = Files(paths=[str(tmp_path / "a.txt"), str(tmp_path / "b.txt")], tokenizer=str(path)).open(
        tmp_path / "cache"
    )
    assert source.vocab_size == loaded.vocab_size
    assert int(source.batch(1, step=0, seq_len=5).inputs.max()) < loaded.vocab_size
    with pytest.raises(MirasError, match="eos_token 'nope'"):
        load_tokenizer(str(path), eos_token="nope")
    with pytest.raises(MirasError, match="does not exist"):
        load_tokenizer(str(tmp_path / "missing.json"))


@pytest.mark.parametrize(("content", "words"), [
    ('{"not": "a tokenizer"}', "is JSON but not a Hugging Face `tokenizers` file: it has keys 'not', where a "
                               "tokenizer.json has a 'model' object (and version, normalizer"),
    ("[1, 2]", "is JSON but not a Hugging Face `tokenizers` file: it has a JSON list"),
    ("{}", "it has an empty object, where a tokenizer.json has a 'model' object"),
    ("{bad", "is not a tokenizer.json: it is not valid JSON (Expecting property name"),
    (b"\xff\xfe\x00", "is not a tokenizer.json: it is not UTF-8 text"),
])
def test_a_file_that_is_not_a_tokenizer_json_says_what_it_is(tmp_path, content, words):
    """Before: 'could not be read: expected , or } at line 1 column 7' (the tokenizers library's)."""
    pytest.importorskip("tokenizers", reason="tokenizers (optional extra 'data') is not installed")
    path = tmp_path / "tok.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(MirasError) as caught:
        load_tokenizer(str(path))
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_a_folder_as_the_tokenizer_says_it_is_a_folder(tmp_path):
    pytest.importorskip("tokenizers", reason="tokenizers (optional extra 'data') is not installed")
    with pytest.raises(MirasError, match=r"is a folder, not a tokenizer file: give the tokenizer\.json inside it"):
        load_tokenizer(str(tmp_path))


def test_hf_dataset_without_the_package_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import fails as when it is not installed
    with pytest.raises(MirasError, match="optional package 'datasets'"):
        HFDataset(name="some/dataset").open(tmp_path / "cache")


def test_hf_dataset_that_cannot_load_is_a_clear_error(tmp_path, monkeypatch):
    calls = []

    def offline(*args, **kwargs):
        calls.append(kwargs.get("split"))
        raise ConnectionError("no network")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=offline))
    with pytest.raises(MirasError, match=r"'some/dataset'.*could not be loaded: no network"):
        HFDataset(name="some/dataset", max_documents=50).open(tmp_path / "cache")
    assert calls == ["train", "train[:50]"]  # streaming first, then the local cache
