"""The Hugging Face interface: Auto-class registration, save / load round trip, generate against
a plain greedy loop, and `miras eval` through lm-evaluation-harness on a local task (offline)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

transformers = pytest.importorskip("transformers")

from typer.testing import CliRunner  # noqa: E402

from miras_search.cli import app  # noqa: E402
from miras_search.errors import BadTokens  # noqa: E402
from miras_search.hf import (  # noqa: E402
    MirasByteTokenizer,
    MirasConfig,
    MirasForCausalLM,
    MirasModel,
    from_checkpoint,
)
from miras_search.model import build_model  # noqa: E402
from miras_search.presets import preset  # noqa: E402
from miras_search.trial.checkpoint import save_checkpoint  # noqa: E402

BLOCK = {"d_model": 32, "n_heads": 2, "n_layers": 1, "max_seq_len": 512}


def _checkpoint(tmp_path, name="gated_deltanet", **overrides):
    point = preset(name, block={**BLOCK, **overrides})
    torch.manual_seed(0)
    model = build_model(point, "cpu")
    path = tmp_path / f"{name}.pt"
    save_checkpoint(path, point, model)
    return path, model.eval()


@pytest.mark.parametrize("tied", [True, False])
def test_save_pretrained_and_auto_classes_round_trip(tmp_path, tied):
    path, reference = _checkpoint(tmp_path, tie_embeddings=tied)
    model = from_checkpoint(path)
    model.save_pretrained(tmp_path / "hf")
    config = transformers.AutoConfig.from_pretrained(tmp_path / "hf")
    assert isinstance(config, MirasConfig) and config.model_point.block.tie_embeddings is tied
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert isinstance(loaded, MirasForCausalLM)
    tokens = torch.randint(0, 256, (2, 63))
    torch.testing.assert_close(loaded(tokens).logits, reference(tokens), rtol=0, atol=0)
    labels = tokens.clone()
    expected = torch.nn.functional.cross_entropy(reference(tokens)[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())
    torch.testing.assert_close(loaded(tokens, labels=labels).loss, expected, rtol=1e-6, atol=1e-6)

    # AutoModel: the same weights without the head; the head of its hidden states is the logits
    base = transformers.AutoModel.from_pretrained(tmp_path / "hf").eval()
    assert isinstance(base, MirasModel)
    hidden = base(tokens).last_hidden_state
    assert hidden.shape == (2, 63, reference.point.block.d_model)
    torch.testing.assert_close(reference.head(hidden), reference(tokens), rtol=0, atol=0)
    with pytest.raises(BadTokens, match="left padding"):
        base(tokens, attention_mask=torch.tensor([[0] + [1] * 62, [1] * 63]))


def test_generate_is_the_greedy_loop(tmp_path):
    path, reference = _checkpoint(tmp_path, "moneta")
    model = from_checkpoint(path)
    tokenizer = MirasByteTokenizer()
    prompt = tokenizer("Once upon a", return_tensors="pt")
    out = model.generate(**prompt, max_new_tokens=7, do_sample=False)
    tokens = prompt["input_ids"]
    for _ in range(7):  # the reference: argmax of the last position, appended
        tokens = torch.cat([tokens, reference(tokens)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, tokens)
    assert tokenizer.decode(prompt["input_ids"][0]) == "Once upon a"
    assert tokenizer("é")["input_ids"] == list("é".encode())


def test_left_padding_is_refused_and_right_padding_scores_as_unpadded(tmp_path):
    """A memory reads pads too: left padding (batched generate) would change every later token's
    output, so it is an error; right padding leaves the real tokens' scores as they are."""
    from miras_search.errors import BadTokens

    path, reference = _checkpoint(tmp_path)
    model = from_checkpoint(path)
    tokens = torch.randint(0, 256, (2, 9), generator=torch.Generator().manual_seed(0))
    left = torch.ones_like(tokens)
    left[0, :3] = 0
    with pytest.raises(BadTokens, match="left padding"):
        model(tokens, attention_mask=left)
    with pytest.raises(BadTokens, match="give sequences one at a time"):
        model.generate(input_ids=tokens, attention_mask=left, max_new_tokens=2, do_sample=False)
    right = torch.ones_like(tokens)
    right[0, 6:] = 0
    padded = model(tokens, attention_mask=right, labels=tokens)
    torch.testing.assert_close(padded.logits[0, :6], reference(tokens[:1, :6])[0], rtol=1e-5, atol=1e-5)


def _loglikelihood(model, context: str, continuation: str) -> float:
    """log p(continuation | context) summed over its bytes; like lm-eval, trailing whitespace of
    the context is scored as the start of the continuation."""
    stripped = context.rstrip()
    context, continuation = stripped, context[len(stripped):] + continuation
    ids = torch.tensor([list((context + continuation).encode())])
    start = len(context.encode())
    with torch.no_grad():
        logprobs = torch.log_softmax(model(ids[:, :-1]).double(), -1)[0]  # [T-1, V]
    targets = ids[0, start:]
    return float(logprobs[start - 1:].gather(-1, targets[:, None]).sum())


@pytest.fixture
def offline_lm_eval(monkeypatch):
    """lm-eval installed, and the Hugging Face Hub not reached (tasks of our own run offline)."""
    pytest.importorskip("lm_eval")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.mark.slow
def test_miras_eval_runs_a_local_lm_eval_task_offline(tmp_path, monkeypatch, root, offline_lm_eval, capfd):
    tasks = tmp_path / "tasks"
    shutil.copytree(root / "tests/data/lm_eval", tasks)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the task's data file is read beside its YAML, not from here
    path, reference = _checkpoint(tmp_path)
    result = CliRunner().invoke(app, ["eval", str(path), "--tasks", "miras_tiny_choice", "--include-path",
                                      str(tasks), "--out", str(tmp_path / "results.json")])
    assert result.exit_code == 0, result.output
    # lm-eval records the working folder's git commit; outside a repository git said 'fatal: ...'
    assert "not a git repository" not in capfd.readouterr().err + result.output
    acc = json.loads((tmp_path / "results.json").read_text())["miras_tiny_choice"]["acc,none"]
    docs = [json.loads(line) for line in (tasks / "tiny_choice.jsonl").read_text().splitlines()]
    right = 0
    for doc in docs:  # the same accuracy computed from the model directly
        scores = [_loglikelihood(reference, doc["context"], choice) for choice in doc["choices"]]
        right += max(range(len(scores)), key=scores.__getitem__) == doc["label"]
    assert acc == pytest.approx(right / len(docs))
    unknown = CliRunner().invoke(app, ["eval", str(path), "--tasks", "no_such_task"])
    assert unknown.exit_code == 1 and "unknown lm-eval task(s) no_such_task" in unknown.output


@pytest.mark.slow
def test_miras_eval_says_in_one_line_when_a_task_s_data_file_is_missing(tmp_path, monkeypatch, root,
                                                                         offline_lm_eval):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    shutil.copy(root / "tests/data/lm_eval/miras_tiny_choice.yaml", tasks)  # without its data file
    monkeypatch.chdir(tmp_path)
    path, _ = _checkpoint(tmp_path)
    result = CliRunner().invoke(app, ["eval", str(path), "--tasks", "miras_tiny_choice", "--include-path",
                                      str(tasks), "--limit", "1"])
    assert result.exit_code == 1, result.output
    error = result.output[result.output.index("error:"):].strip()
    assert error.startswith("error: lm-eval failed on task(s) miras_tiny_choice: FileNotFoundError: ")
    assert "tiny_choice.jsonl" in error and "\n" not in error and "Traceback" not in result.output


def test_a_bad_point_in_config_json_names_the_file_and_the_field(tmp_path):
    """Before: a raw pydantic ValidationError naming neither the file nor ``point``."""
    from transformers import AutoModelForCausalLM

    from miras_search.errors import ConfigError

    model = from_checkpoint(_checkpoint(tmp_path)[0])
    model.save_pretrained(tmp_path / "hf")
    path = tmp_path / "hf" / "config.json"
    config = json.loads(path.read_text())
    config["point"] = {"preset": "nosuch"}
    path.write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=r"hf/config\.json is not valid .*\n  - point\.preset: unknown key"):
        AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    config["point"] = "moneta"
    path.write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=r"hf/config\.json is not valid .*\n  - point: must be a mapping of a point.s fields, not str"):
        AutoModelForCausalLM.from_pretrained(tmp_path / "hf")


def test_the_tokenizer_names_ids_outside_its_vocabulary_and_replaces_lone_surrogates():
    tok = MirasByteTokenizer()
    for bad in (300, 1000, -1):
        with pytest.raises(ValueError, match=rf"id {bad} is outside MirasByteTokenizer's vocabulary \[0, 260\)"):
            tok.decode([bad, 65])
    assert tok.decode([256, 257, 65], skip_special_tokens=True) == "A"
    with pytest.raises(ValueError, match="'foo' is not a token of MirasByteTokenizer"):
        tok.convert_tokens_to_ids("foo")
    # a lone surrogate (surrogateescape's stand-in for a byte that is not UTF-8) is U+FFFD
    ids = tok("héllo \udcff")["input_ids"]
    assert ids == list("héllo \ufffd".encode())
    assert tok.decode(ids) == "héllo \ufffd"


def test_inputs_embeds_is_refused_in_one_line(tmp_path):
    from miras_search.errors import BadTokens

    model = from_checkpoint(_checkpoint(tmp_path)[0])
    with pytest.raises(BadTokens, match="inputs_embeds is not supported"):
        model(inputs_embeds=torch.zeros(1, 3, 32))
    with pytest.raises(BadTokens, match="input_ids is missing"):
        model()


def test_miras_eval_tables_only_scores_with_the_examples_they_cover(tmp_path, monkeypatch):
    """lm-eval's per-task results mix scores ("acc,none") with bookkeeping: the examples scored
    ("sample_len") and the task's alias. The table lists the scores, each with its example count,
    not the count as a score; the JSON keeps everything lm-eval returned."""
    import miras_search.hf.evaluation as evaluation

    results = {"piqa": {"alias": "piqa", "sample_len": 6, "acc,none": 0.5, "acc_stderr,none": 0.2,
                        "acc_norm,none": 0.25}}
    monkeypatch.setattr(evaluation, "evaluate_checkpoint", lambda *args, **kwargs: results)
    path, _ = _checkpoint(tmp_path)
    result = CliRunner().invoke(app, ["eval", str(path), "--tasks", "piqa", "--out", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.output.splitlines() if line.startswith("│ piqa")]
    assert [row[3:6:2] for row in rows] == [["acc", "0.5000"], ["acc_norm", "0.2500"]]
    assert all(row[7] == "6" for row in rows) and "sample_len" not in result.output
    assert json.loads((tmp_path / "r.json").read_text()) == results
