"""The embedded corpus (offline build, size, split, cache, determinism) and text streams."""

from __future__ import annotations

import builtins
import hashlib
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from miras_search.data import (
    EOS,
    IGNORE_INDEX,
    NeedleInHaystack,
    TextCorpus,
    TextStream,
    cache_dir,
    load_corpus,
)
from miras_search.data import niah as niah_module
from miras_search.data.corpus import CorpusReadWarning, compiled_module_texts
from miras_search.errors import MirasError


def _no_network(*args, **kwargs):
    raise OSError("network access attempted during an offline build")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The corpus built once into a fresh cache folder with sockets disabled; (root, store, seconds)."""
    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket, "socket", _no_network)
        mp.setattr(socket, "create_connection", _no_network)
        start = time.perf_counter()
        store = load_corpus(root=root)
        seconds = time.perf_counter() - start
    return root, store, seconds


def _documents(tokens: np.ndarray) -> list[str]:
    ends = np.flatnonzero(tokens == EOS)
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [bytes(tokens[s:e].astype(np.uint8)).decode("utf-8") for s, e in zip(starts, ends, strict=True)]


def test_corpus_is_at_least_3_mb_in_both_splits(built):
    _, store, _ = built
    sizes = {s: store.manifest["splits"][s]["n_chars"] for s in ("train", "validation")}
    assert sizes["train"] + sizes["validation"] >= 3_000_000
    share = sizes["validation"] / (sizes["train"] + sizes["validation"])
    assert 0.035 < share < 0.065, share  # val_fraction 0.05 of the characters
    assert int(store.tokens("train").max()) <= EOS


def test_splits_share_no_document(built):
    _, store, _ = built
    hashes = {}
    for split in ("train", "validation"):
        docs = _documents(np.asarray(store.tokens(split)))
        hashes[split] = [hashlib.sha256(d.encode()).hexdigest() for d in docs]
        assert hashes[split] == store.doc_hashes(split), "manifest agrees with the stored bytes"
        assert len(set(hashes[split])) == len(hashes[split])
    assert len(hashes["validation"]) >= 10
    assert not set(hashes["train"]) & set(hashes["validation"])


def test_validation_text_is_not_training_text(built):
    """Near-duplicate documents (help topics quoted in longer ones, generated codec tables) used
    to put 11 % of the validation windows verbatim in the training split."""
    _, store, _ = built
    train = np.asarray(store.tokens("train")).astype(np.uint16)
    haystack = np.where(train == EOS, 10, train).astype(np.uint8).tobytes()
    val = np.asarray(store.tokens("validation"))
    offsets = np.random.default_rng(0).integers(0, len(val) - 129, 300)
    windows = [val[o : o + 128] for o in offsets]
    found = sum(w[w != EOS].astype(np.uint8).tobytes() in haystack for w in windows)
    assert found <= 6, f"{found} of 300 validation windows are training text"


def test_second_load_is_a_fast_cache_hit(built):
    root, store, build_seconds = built
    start = time.perf_counter()
    again = load_corpus(root=root)
    seconds = time.perf_counter() - start
    assert again.path == store.path and again.content_hash == store.content_hash
    # relative to the build, not in absolute seconds: CI machines are shared and often busy
    assert seconds < build_seconds / 3, (seconds, build_seconds)


def test_a_fresh_process_builds_the_same_content(built, tmp_path):
    """Another interpreter, with a hook replaced the way rich / IPython do, builds the same bytes."""
    _, store, _ = built
    script = (
        "import sys; sys.excepthook = lambda *a: None\n"
        "from miras_search.data import load_corpus\n"
        f"print(load_corpus(root={str(tmp_path)!r}).content_hash)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == store.content_hash
    rebuilt = load_corpus(root=tmp_path)
    assert rebuilt.path.is_relative_to(tmp_path) and rebuilt.content_hash == store.content_hash
    assert np.array_equal(np.asarray(rebuilt.tokens("validation")), np.asarray(store.tokens("validation")))


def test_libraries_that_replace_stdlib_functions_do_not_change_the_corpus(monkeypatch):
    """W&B replaces ``sys.exit`` and Ray's tqdm ``builtins.print`` in the process that imports
    them: a corpus built there used to lose those members' docstrings (a CI worker built other
    bytes than a fresh interpreter did)."""
    clean = dict(compiled_module_texts())
    monkeypatch.setattr(builtins, "print", lambda *args, **kwargs: None)
    monkeypatch.setattr(sys, "exit", lambda *args: None)
    monkeypatch.setattr(sys, "getrecursionlimit", lambda: 1)
    patched = dict(compiled_module_texts())
    assert patched == clean
    assert "builtins.print\n" in patched["builtins"] and "sys.exit\n" in patched["sys"]
    assert "sys.getrecursionlimit\n" in patched["sys"]


@pytest.mark.parametrize("executable", ["missing", "not-python", "other-version"])
def test_without_a_fresh_interpreter_the_modules_are_read_here_with_a_warning(executable, tmp_path, monkeypatch):
    clean = compiled_module_texts()
    fake = {"missing": tmp_path / "no-python", "not-python": "/bin/false", "other-version": tmp_path / "python"}
    (tmp_path / "python").write_text('#!/bin/sh\necho \'{"python": "2.7.18 (old)", "modules": []}\'\n')
    (tmp_path / "python").chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake[executable]))
    with pytest.warns(CorpusReadWarning, match=r"read in this process") as caught:
        assert compiled_module_texts() == clean
    if executable == "other-version":
        assert "it is Python 2.7.18" in str(caught[0].message)


def test_cache_dir_env_override(tmp_path, monkeypatch):
    monkeypatch.setenv("MIRAS_CACHE_DIR", str(tmp_path / "here"))
    assert cache_dir() == tmp_path / "here" and (tmp_path / "here").is_dir()
    assert cache_dir(tmp_path / "arg") == tmp_path / "arg"


@pytest.mark.parametrize("seq_len", [1, 7, 100])
def test_text_stream_is_deterministic_per_seed(built, seq_len):
    _, store, _ = built
    tokens = store.tokens("train")
    a = TextStream(tokens, seq_len, 3, seed=5).windows(9)
    assert a.shape == (3, seq_len + 1) and a.dtype == torch.long
    assert torch.equal(a, TextStream(tokens, seq_len, 3, seed=5).windows(9))
    assert not torch.equal(a, TextStream(tokens, seq_len, 3, seed=6).windows(9))
    assert not torch.equal(a, TextStream(tokens, seq_len, 3, seed=5).windows(10))
    offsets = TextStream(tokens, seq_len, 3, seed=5).offsets(9)
    for row, off in zip(a, offsets, strict=True):  # each window is a real slice of the split
        expected = np.asarray(tokens[off : off + seq_len + 1], dtype=np.int64)
        assert torch.equal(row, torch.from_numpy(expected))


def test_sequential_windows_tile_the_split(built):
    _, store, _ = built
    tokens = store.tokens("validation")
    stream = TextStream(tokens, 63, 4, order="sequential")
    assert stream.tokens is tokens  # no copy of the split
    first, second = stream.windows(0), stream.windows(1)
    assert first[0, -1] == first[1, 0]  # consecutive windows share one token (input/target shift)
    glued = torch.cat([first[:, :-1].flatten(), second[:, :-1].flatten()])
    assert torch.equal(glued, torch.from_numpy(np.asarray(tokens[: 8 * 63], dtype=np.int64)))
    single = TextStream(tokens, 63, 1, order="sequential")
    assert torch.equal(single.windows(single.n_windows), single.windows(0))  # wraps around


def test_text_source_batches_score_every_position(built):
    root, _, _ = built
    source = TextCorpus().open(root)
    batch = source.batch(2, step=0, seq_len=31, split="validation")
    assert batch.inputs.shape == (2, 31) and not (batch.targets == IGNORE_INDEX).any()
    assert torch.equal(batch.inputs[:, 1:], batch.targets[:, :-1])
    with pytest.raises(MirasError, match="fewer than one window"):
        TextStream(np.zeros(10, dtype=np.uint16), 10, 1)


def test_niah_corpus_haystack(built, monkeypatch):
    root, _, _ = built
    monkeypatch.setenv("MIRAS_CACHE_DIR", str(root))
    niah_module._corpus_text.cache_clear()
    try:
        task = NeedleInHaystack(needle="number", haystack="corpus")
        T = 777
        batch = task.batch(3, step=0, seq_len=T)
        assert torch.equal(batch.inputs, task.batch(3, step=0, seq_len=T).inputs)
        for inputs, targets in zip(batch.inputs.tolist(), batch.targets.tolist(), strict=True):
            answer = bytes(y for y in targets if y != IGNORE_INDEX)
            assert len(answer) == 7
            assert bytes(inputs[1 : T - 6]).count(answer) == 1
    finally:
        niah_module._corpus_text.cache_clear()
