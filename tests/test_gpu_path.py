"""The GPU path of a point, decided without a GPU (``miras_search.model.gpu_path``, ``miras
kernels``): the presets' paths, the reasons of the PyTorch form, agreement with what a layer
decides from its real tensors, and the command on points, spaces and studies."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

import miras_search.model.mixer as mixer_module
from miras_search.cli import app
from miras_search.memory.kernel_path import UNCOVERED_NOTE, point_kernel
from miras_search.model import build_model
from miras_search.model.gpu_path import coverage, gpu_path
from miras_search.presets import preset, preset_names
from miras_search.space.search_space import SearchSpace

FLA_OPS = {  # the paper's Table 1 rows fla computes exactly, and the op that does
    "linear_attention": "simple_gla", "retnet": "simple_gla", "mamba2": "simple_gla",
    "lightning_attention": "simple_gla", "gla": "gla", "hgrn2": "gla", "deltanet": "delta_rule",
    "longhorn": "delta_rule", "gated_deltanet": "gated_delta_rule",
    "deltaproduct": "gated_delta_product", "rwkv7": "dplr_delta_rule",
}
TRITON = ("moneta", "yaad", "memora", "titans", "ttt_linear", "ttt_mlp")
ATLAS = {"atlas": "muon", "omeganet": "feature map", "deeptransformer": "feature map"}


def test_every_preset_has_a_known_path():
    assert set(FLA_OPS) | set(TRITON) | set(ATLAS) | {"transformer"} == set(preset_names())
    for name, op in FLA_OPS.items():
        assert gpu_path(preset(name)).kind == "fla" and gpu_path(preset(name)).detail == op, name
    for name in TRITON:
        assert gpu_path(preset(name)).kind == "triton", (name, gpu_path(preset(name)))
    for name, needle in ATLAS.items():
        path = gpu_path(preset(name))
        assert path.kind == "pytorch" and needle in path.detail, (name, path)
    assert gpu_path(preset("transformer")).kind == "attention"


@pytest.mark.parametrize(("change", "needle"), [
    ({"train": {"kernel": "torch"}}, "train.kernel is 'torch'"),
    ({"train": {"mode": "recurrent"}}, "chunked minibatch form, not recurrent"),
    ({"block": {"d_model": 64, "n_heads": 8}}, "got K=8"),  # head dim 8: below the kernel's tiles
    ({"memory": {"kind": "mlp", "depth": 3}}, "memory 'mlp' (depth 3"),
    ({"memory": {"kind": "vector"}}, "memory 'vector'"),
])
def test_the_pytorch_form_says_why(change, needle):
    base = preset("moneta").model_dump(mode="json")
    for axis, fields in change.items():  # a new kind replaces the axis, else fields are merged
        same_kind = fields.get("kind", base[axis].get("kind")) == base[axis].get("kind")
        base[axis] = {**base[axis], **fields} if same_kind else fields
    path = gpu_path(type(preset("moneta")).model_validate(base))
    assert path.kind == "pytorch" and needle in path.detail, path
    assert not path.on_kernel and path.label().startswith("PyTorch chunked form: ")
    assert UNCOVERED_NOTE not in path.group()


def test_a_forced_triton_kernel_on_an_uncovered_point_fails():
    point = preset("moneta", memory={"kind": "mlp", "depth": 3})
    point = point.model_copy(update={"train": point.train.model_copy(update={"kernel": "triton"})})
    path = gpu_path(point)
    assert path.kind == "refused" and not path.on_kernel
    assert path.label().startswith("fails: train.kernel 'triton' cannot run") and "depth 3" in path.label()


def test_the_channel_gates_of_an_uncovered_point_are_named():
    point = preset("moneta", memory={"kind": "mlp", "depth": 4})
    assert "channel-wise alpha, eta" in gpu_path(point).detail


def _layer_inputs(point, monkeypatch) -> list[tuple]:
    """(rule, q, v, chunk) each memory layer hands kernel_problem in a real forward (CPU)."""
    seen = []
    decide = mixer_module.kernel_problem

    def spy(rule, q, v, chunk_size, *rest):
        seen.append((rule, q, v, chunk_size))
        return decide(rule, q, v, chunk_size, *rest)

    monkeypatch.setattr(mixer_module, "kernel_problem", spy)
    model = build_model(point, device="cpu")
    tokens = torch.randint(0, point.block.vocab_size, (point.train.batch_size, point.train.seq_len))
    with torch.no_grad():
        model(tokens)
    return seen


@pytest.mark.parametrize("name", ["moneta", "titans", "omeganet", "ttt_linear", "atlas"])
def test_the_decision_agrees_with_the_layers_own_tensors(name, monkeypatch):
    """The shapes gpu_path derives from the point (heads, head dims, the feature map's key width,
    batch x seq_len) are those the layer passes at run time: same kernel or same reason."""
    named = preset(name)
    point = named.model_copy(update={
        "block": named.block.model_copy(update={"d_model": 64, "n_heads": 2, "n_layers": 1}),
        "train": named.train.model_copy(update={"batch_size": 2, "seq_len": 24, "tokens": 48}),
    })
    layers = _layer_inputs(point, monkeypatch)
    assert layers
    expected = gpu_path(point)
    assert expected.kind in ("triton", "pytorch")
    for rule, q, v, chunk in layers:
        shape = (*q.shape[:3], q.shape[-1], v.shape[-1])
        reason = point_kernel(rule, shape, chunk, torch.bfloat16)[1]
        assert (expected.kind == "triton") == (reason is None)
        assert reason is None or reason == expected.detail


def test_coverage_counts_a_space(root):
    space = SearchSpace.load(root / "spaces/quickstart.yaml")
    found = coverage(space.sample(12, seed=3))
    assert sum(found.counts.values()) == 12
    assert found.on_kernel == found.memory_points == 12  # the quickstart runs on kernels


def test_the_kernels_command(root, tmp_path):
    runner = CliRunner()
    done = runner.invoke(app, ["kernels", "gated_deltanet"])
    assert done.exit_code == 0 and "fla's chunk_gated_delta_rule" in done.output
    done = runner.invoke(app, ["kernels", str(root / "spaces/miras-full.yaml"), "--points", "40"],
                         env={"COLUMNS": "200"})
    assert done.exit_code == 0, done.output
    assert "memory points on a GPU kernel" in done.output and "PyTorch chunked form" in done.output
    done = runner.invoke(app, ["kernels", str(root / "studies/quickstart.yaml"), "--points", "10"],
                         env={"COLUMNS": "200"})
    assert done.exit_code == 0 and "10 of 10 memory points on a GPU kernel (100 %)" in done.output, done.output
    sampled = runner.invoke(app, ["sample", str(root / "spaces/quickstart.yaml"), "-n", "3"])
    many = tmp_path / "three.yaml"
    many.write_text(sampled.output)
    done = runner.invoke(app, ["kernels", str(many)])
    assert done.exit_code == 0 and done.output.count(": our Triton kernel") == 3, done.output
    done = runner.invoke(app, ["kernels", "no_such_model"])
    assert done.exit_code != 0 and "Traceback" not in done.output and "known presets" in done.output


def test_the_device_check_runs_on_a_cpu(root, tmp_path):
    """benchmarks/gpu_path_check.py (gpu_check.sh's PATH_CHECK step) in a fresh CPU process:
    the predictions beside the CPU's reasons, exit 0 (a dry run; on a GPU it exits 1 on a
    disagreement)."""
    import subprocess
    import sys

    out = tmp_path / "paths.md"
    done = subprocess.run(
        [sys.executable, str(root / "benchmarks/gpu_path_check.py"), "--presets", "transformer,moneta",
         "--d-model", "64", "--heads", "2", "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
        env={"CUDA_VISIBLE_DEVICES": "", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {line.split("|")[1].strip(): line for line in out.read_text().splitlines() if line.startswith("| ")}
    assert rows["transformer"].rstrip().endswith("| yes |")
    assert "our Triton kernel" in rows["moneta"] and "need a CUDA device" in rows["moneta"]


def test_a_gpu_study_notes_the_share_of_its_points_off_the_kernels(root):
    """`miras run` on GPUs first says how many of the study's points would run the PyTorch form;
    a study whose points all have a kernel says nothing."""
    from miras_search.cli.app import console
    from miras_search.cli.study import _note_gpu_kernel_share
    from miras_search.study import load_study_file

    for name, expect_note in (("table1", True), ("quickstart", False)):
        path = root / "studies" / f"{name}.yaml"
        with console.capture() as captured:
            _note_gpu_kernel_share(load_study_file(path), path)
        text = " ".join(captured.get().split())
        assert ("memory points of this study (200 drawn) train on a kernel" in text) is expect_note, text
        assert not expect_note or "miras kernels" in text


def test_a_space_with_too_few_valid_points_is_still_shown(root, monkeypatch):
    from miras_search.errors import ConfigError, Problem

    def refuse(self, n, seed=0, max_attempts=None):
        if n == 1:
            return real(self, n, seed, max_attempts)
        raise ConfigError(self.source, [Problem("constraints", f"only 3 of {n} points satisfy the rules")])

    real = SearchSpace.sample
    monkeypatch.setattr(SearchSpace, "sample", refuse)
    done = CliRunner().invoke(app, ["show", str(root / "spaces/quickstart.yaml")])
    assert done.exit_code == 0, done.output
    assert "size: 144" in done.output and "on a CUDA GPU: not estimated" in done.output


def test_which_runs_train_on_gpus():
    from miras_search.cli.study import _trials_on_gpus

    cuda = torch.cuda.is_available()
    assert _trials_on_gpus(False, 0.25) and not _trials_on_gpus(False, 0.0)
    assert _trials_on_gpus(False, None) is cuda  # Ray's default: a whole GPU where there is one
    assert _trials_on_gpus(True, 0.25) is cuda and _trials_on_gpus(True, 0.0) is cuda  # inline: this machine
