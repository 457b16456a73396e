"""The inspecting commands: validate (good and broken files), show, presets, sample, schema."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from typer.testing import CliRunner

from miras_search.cli import app
from miras_search.points import point_from_dict

runner = CliRunner()


def test_validate_accepts_every_shipped_file(root):
    files = sorted((root / "spaces").glob("*.yaml")) + sorted((root / "tests/data/good").glob("*.yaml"))
    result = runner.invoke(app, ["validate", *map(str, files)])
    assert result.exit_code == 0, result.output
    assert result.output.count("✓") == len(files)


BROKEN = {
    "unknown_key.yaml": "memory.dept (line 3): unknown key",
    "wrong_type.yaml": "block.d_model (line 2)",
    "out_of_range.yaml": "bias.p (line 3)",
    "unknown_kind.yaml": "retention.kind (line 2)",
    "cross_axis.yaml": "algorithm.kind (line 3)",
    "empty_choice.yaml": "at least one option",
    "unsatisfiable.yaml": "satisfy the space's rules",
    "unknown_preset.yaml": "unknown preset 'mamba7'",
    "unknown_space_preset.yaml": "unknown preset(s) hyena",
    "syntax_error.yaml": "YAML syntax error",
    "top_level_list.yaml": "must be a mapping",
    "bad_range.yaml": "low end 4 is above its high end 2",
    "unknown_path.yaml": "'valeu' is not a field",
    "duplicate_key.yaml": "duplicate key 'memory'",
    "empty.yaml": "the file is empty",
    "binary.yaml": "binary file",
}


@pytest.mark.parametrize(("name", "needle"), sorted(BROKEN.items()))
def test_validate_fails_cleanly_on_broken_files(root, name, needle):
    result = runner.invoke(app, ["validate", str(root / "tests/data/bad" / name)])
    assert result.exit_code == 1
    assert needle in result.output
    assert "Traceback" not in result.output


def test_every_broken_file_is_covered(root):
    assert {p.name for p in (root / "tests/data/bad").glob("*.yaml")} == set(BROKEN)


def test_validate_as_a_real_process_prints_no_traceback(root):
    bad = root / "tests/data/bad/cross_axis.yaml"
    proc = subprocess.run(
        [sys.executable, "-m", "miras_search", "validate", str(bad)],
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "algorithm.kind" in proc.stderr


def test_missing_file_is_a_clean_error():
    result = runner.invoke(app, ["validate", "no/such/file.yaml"])
    assert result.exit_code == 1 and "no such file" in result.output


def test_show_space_prints_size_and_presets(root):
    result = runner.invoke(app, ["show", str(root / "spaces/quickstart.yaml")])
    assert result.exit_code == 0, result.output
    assert "size: 144" in result.output
    assert "moneta" in result.output and "memora" in result.output
    assert "on a CUDA GPU: 200 of 200 memory points train on a kernel" in " ".join(result.output.split())


def test_presets_table_lists_every_model():
    result = runner.invoke(app, ["presets"])
    assert result.exit_code == 0
    for name in ("gated_deltanet", "moneta", "yaad", "memora", "transformer"):
        assert name in result.output


@pytest.mark.parametrize("columns", [80, 200])
def test_presets_table_reads_whole_at_the_terminal_width(columns):
    """Nothing is cut to an ellipsis, and no line runs past the terminal, at 80 columns either."""
    result = runner.invoke(app, ["presets"], env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    assert "…" not in result.output
    assert max(len(line) for line in result.output.splitlines()) <= columns
    for name, path in (("transformer", "attention"), ("atlas", "PyTorch"), ("lightning_attention", "fla")):
        row = next(line for line in result.output.splitlines() if line.startswith(name + " "))
        assert row.split()[-1] == path


def test_sample_prints_valid_points_deterministically(root):
    args = ["sample", str(root / "spaces/miras-full.yaml"), "-n", "4", "--seed", "7"]
    first, second = runner.invoke(app, args), runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert first.output == second.output
    documents = [d for d in yaml.safe_load_all(first.output) if d]
    assert len(documents) == 4
    for document in documents:
        point_from_dict(document)


def test_sample_rejects_a_point_file(root):
    result = runner.invoke(app, ["sample", str(root / "tests/data/good/full_point.yaml")])
    assert result.exit_code == 1 and "not a space" in result.output


def test_schema_writes_json_schemas_that_describe_the_formats(tmp_path):
    result = runner.invoke(app, ["schema", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    point = json.loads((tmp_path / "point.schema.json").read_text())
    space = json.loads((tmp_path / "space.schema.json").read_text())
    assert {"memory", "bias", "retention", "algorithm", "preset"} <= set(point["properties"])
    assert "params" in space["properties"] and "constraints" in space["properties"]


@pytest.mark.parametrize(("seed", "words"), [("-1", "greater than or equal to 0"),
                                             ("4294967296", "less than or equal to 4294967295")])
def test_sample_rejects_an_out_of_range_seed(root, seed, words):
    result = runner.invoke(app, ["sample", str(root / "spaces/quickstart.yaml"), "-n", "1", "--seed", seed],
                           env={"COLUMNS": "250"})
    assert result.exit_code == 2, result.output
    assert "'--seed'" in result.output and words in result.output
    assert "Traceback" not in result.output


def test_sample_accepts_the_largest_seed(root):
    result = runner.invoke(app, ["sample", str(root / "spaces/quickstart.yaml"), "-n", "1", "--seed", "4294967295"])
    assert result.exit_code == 0, result.output


def test_schema_out_must_be_a_folder(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("kept\n")
    for out, words in [(afile, f"--out {afile} is a file; give a folder"),
                       (afile / "sub", f"{afile} is a file, so no folder can be made under it")]:
        result = runner.invoke(app, ["schema", "--out", str(out)], env={"COLUMNS": "250"})
        assert result.exit_code == 1, result.output
        assert words in result.output and "Traceback" not in result.output
    assert afile.read_text() == "kept\n"


def test_schema_out_creates_missing_folders(tmp_path):
    result = runner.invoke(app, ["schema", "--out", str(tmp_path / "a" / "b")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "a" / "b" / "point.schema.json").exists()


def test_command_list_keeps_each_sentence_whole():
    # Typer's rich help kept the docstrings' line breaks: "the\n points ..." in the command list.
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    listed = {line.split("│")[1].split()[0]: line for line in result.output.splitlines()
              if line.startswith("│ ") and len(line.split("│")[1].split()) > 1}
    assert "export" in listed
    assert "the points `miras best --top TOP` shows" in listed["export"]
    assert "exit 1 if any is invalid" in listed["validate"]


def test_show_takes_a_preset_name_and_suggests_a_file_for_a_typo(tmp_path):
    shown = CliRunner().invoke(app, ["show", "yaad"])
    assert shown.exit_code == 0 and "name: yaad" in shown.output
    (tmp_path / "quickstart.yaml").write_text("type: space\nname: q\npreset: moneta\n")
    typo = CliRunner().invoke(app, ["show", str(tmp_path / "quickstart.yml")], env={"COLUMNS": "300"})
    assert typo.exit_code == 1
    assert f"no such file (did you mean {tmp_path / 'quickstart.yaml'}?)" in typo.output


def test_show_quotes_a_path_with_spaces_in_the_command_it_suggests(root, tmp_path):
    folder = tmp_path / "my spaces"
    folder.mkdir()
    space = folder / "quick start.yaml"
    space.write_text((root / "spaces/quickstart.yaml").read_text())
    result = runner.invoke(app, ["show", str(space)], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    assert f"`miras kernels '{space}'`" in result.output
