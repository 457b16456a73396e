"""The shipped CPU finding (studies/cpu-finding.yaml): the file validates and describes what the
README says it does, and a shrunken copy (tiny models and tokens) runs end to end: the study,
`miras confirm` and `miras scale`, each stored in the one study."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from miras_search.cli import app
from miras_search.data import MAD_TASKS
from miras_search.model import param_count
from miras_search.presets import preset
from miras_search.scale.points import on_rung
from miras_search.study import load_study_file, open_study
from miras_search.study.fidelity import fidelity_of
from miras_search.study.summary import ranked


@pytest.fixture
def finding(root: Path) -> Path:
    return root / "studies" / "cpu-finding.yaml"


def test_the_cpu_finding_validates_and_is_what_the_readme_says(finding: Path) -> None:
    spec = load_study_file(finding)
    space = spec.load_space()
    tasks = [source.task for source in spec.trial.data]
    assert "text" in tasks and set(MAD_TASKS) <= set(tasks)
    assert [(o.metric, o.direction) for o in spec.objectives] == [("val_bpb", "minimize"), ("mad_score", "maximize")]
    assert {"moneta", "yaad", "memora"} <= set(spec.sampler.anchor_names)
    # Moneta and Yaad lie in the space (the sampler sees them); Memora's kl retention is not searched
    assert space.encode(preset("moneta"), axes_only=True) is not None
    assert space.encode(preset("yaad"), axes_only=True) is not None
    assert space.encode(preset("memora"), axes_only=True) is None
    raw = yaml.safe_load(spec.space_path().read_text())
    assert set(raw["params"]["memory"]["kind"]["choice"]) == {"matrix", "mlp"}
    # models of about 1 to 3M parameters: the study's block, and the scale ladder's largest rung
    sizes = [param_count(spec.trial.apply(_on_space(space, name))) for name in spec.sampler.anchor_names]
    assert min(sizes) >= 0.8e6 and max(sizes) <= 1.5e6, sizes
    top_rung = max(spec.scale.rungs, key=lambda r: r.d_model)
    largest = param_count(on_rung(_on_space(space, "yaad"), top_rung))
    assert 2.0e6 <= largest <= 3.0e6, largest
    # a few million tokens in all: the study's trials (the confirm and scale steps come on top)
    assert 2e6 <= spec.trials * spec.trial.tokens <= 6e6
    text = finding.read_text()
    assert "minutes" in text and "tokens/s" in text  # the time estimate and how it was made
    result = CliRunner().invoke(app, ["validate", str(finding)])
    assert result.exit_code == 0, result.output


def _on_space(space, name: str):
    from miras_search.schema import AXES, ModelPoint

    axes = preset(name).model_dump(mode="json", include=set(AXES))
    return ModelPoint.model_validate({**space.base, **axes})


def _shrunken(finding: Path, folder: Path) -> Path:
    """The finding at test size: the same space axes, anchors, data tasks and objectives; a tiny
    block, a few hundred tokens per trial, one searched point, a two-rung ladder."""
    study = yaml.safe_load(finding.read_text())
    space = yaml.safe_load((finding.parent / study["space"]).read_text())
    space["base"]["block"].update(d_model=32, n_heads=2, n_layers=1, max_seq_len=128)
    space["base"]["train"].update(tokens=512, batch_size=2, seq_len=32)
    (folder / "space.yaml").write_text(yaml.safe_dump(space))
    study["space"] = "space.yaml"
    study["trial"].update(tokens=512, batch_size=2, seq_len=32, eval_batches=1, report_every=2, time_limit_s=300)
    study["trials"] = len(study["sampler"]["anchors"]) + 1
    study.update(run_dir=str(folder / "runs"), tracking={"wandb": "off"}, parallel={"workers": 1})
    study["scale"].update(top=1, points=[], rungs=[
        {"d_model": 16, "n_layers": 1, "seq_len": 32, "tokens": 256},
        {"d_model": 32, "n_layers": 1, "seq_len": 32, "tokens": 512}])
    path = folder / "cpu-finding.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def test_a_shrunken_copy_runs_end_to_end(finding: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _shrunken(finding, tmp_path)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    for command in (["run", str(path), "--inline"],
                    ["confirm", str(path), "--top", "1", "--scale", "2", "--seeds", "1"],
                    ["scale", str(path), "--inline"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 0, (command, result.output)
    study = open_study(load_study_file(path))
    base = [t for t in study.trials if fidelity_of(t) is None]
    assert len(base) == 6 and all(t.state.name == "COMPLETE" for t in base), [t.user_attrs.get("reason") for t in base]
    assert all({"val_bpb", "mad_score"} <= set(t.user_attrs["metrics"]) for t in base)
    sources = {fidelity_of(t)["source"] for t in study.trials if fidelity_of(t) is not None}
    assert sources == {"confirm", "scale"}
    assert {"moneta", "yaad", "memora"} <= {t.user_attrs.get("anchor") for t in study.trials
                                            if (fidelity_of(t) or {}).get("source") == "confirm"}
    assert fidelity_of(ranked(study)[0]) is not None  # `best` reads the higher fidelities
    result = runner.invoke(app, ["best", str(path), "--top", "2"])
    assert result.exit_code == 0 and "fidelity" in result.output, result.output
