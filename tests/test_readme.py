"""What the README and the other user docs promise holds: their Python examples run as written,
their `miras ...` commands parse with the commands' own options, their YAML examples validate, the
files and paths they name exist, and options several commands share are spelled alike."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import miras_search

ROOT = Path(__file__).resolve().parents[1]


def _python_blocks(section: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", body, flags=re.DOTALL)


def test_the_from_python_example_runs(monkeypatch, capsys):
    (block,) = _python_blocks("From Python")
    monkeypatch.chdir(ROOT)  # the example loads spaces/quickstart.yaml from the repository root
    exec(compile(block, "README.md (From Python)", "exec"), {"__name__": "readme_example"})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("{'memory': 'mlp', 'bias': 'lp', 'retention': 'lq'")
    status, bpb = printed[1].split()
    assert status == "complete" and 0 < float(bpb) < 9  # bits per byte of a barely trained model
    assert len(printed) == 4


def test_every_public_name_loads_and_unknown_names_raise():
    assert set(miras_search.__all__) == {"__version__", *miras_search._HOMES}
    for name in miras_search.__all__:
        assert getattr(miras_search, name) is not None
    assert set(miras_search.__all__) <= set(dir(miras_search))
    with pytest.raises(AttributeError, match="no attribute 'build_modle'"):
        miras_search.build_modle  # noqa: B018


def test_every_public_name_says_what_it_does():
    """`help(miras_search.NAME)` answers for every exported name: a docstring of its own."""
    undocumented = [name for name in miras_search.__all__ if name != "__version__"
                    and not (getattr(miras_search, name).__doc__ or "").strip()]
    assert undocumented == []


def test_the_axis_table_lists_every_registered_option():
    """The README's table of the four axes is the one the registries give (``miras options
    --markdown`` prints it): a new option class shows up there, or this test names it."""
    from miras_search.schema.options import options_markdown

    text = (ROOT / "README.md").read_text()
    assert options_markdown() in text, "README's axis table is stale: paste `miras options --markdown`"


@pytest.mark.parametrize(("python", "words"), [
    ("no-such-python3", "'no-such-python3' is not found: install Python 3.10 or newer"),
    ("old", "miras-search needs Python 3.10 or newer; '{python}' is Python 3.9.18."),
    ("no_venv", "cannot create a virtual environment (its venv / ensurepip modules are missing)"),
])
def test_the_setup_command_names_an_interpreter_it_cannot_use(tmp_path, python, words):
    """The README's first command, with an interpreter too old, missing, or without venv (Debian's
    python3 before `apt install python3-venv`): one line that says what to do, no venv made."""
    import subprocess

    fakes = {  # stand-ins that answer the script's two checks as such interpreters do
        "old": 'case "$1" in --version) echo "Python 3.9.18";; *) exit 1;; esac',
        "no_venv": 'case "$2" in *ensurepip*) exit 1;; esac',
    }
    if python in fakes:
        fake = tmp_path / python
        fake.write_text(f"#!/bin/sh\n{fakes[python]}\n")
        fake.chmod(0o755)
        python = str(fake)
    venv = tmp_path / "venv"
    done = subprocess.run(["bash", str(ROOT / "scripts/setup.sh")], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "PYTHON": python, "VENV": str(venv)}, timeout=60)
    assert done.returncode == 1 and words.format(python=python) in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not venv.exists()


def test_the_setup_command_names_its_environment_by_absolute_path(tmp_path):
    """setup.sh makes the environment in the checkout whatever folder it runs from, so the line it
    ends with names that environment by its absolute path (`source .venv/bin/activate` would fail
    from another folder). A stand-in interpreter makes a stand-in environment; nothing installs."""
    import os
    import subprocess

    fake = tmp_path / "python3"
    fake.write_text('#!/bin/sh\n[ "$1 $2" = "-m venv" ] && mkdir -p "$3/bin" && cp "$0" "$3/bin/python"\n'
                    "exit 0\n")
    fake.chmod(0o755)
    venv = tmp_path / "venv"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run(["bash", str(ROOT / "scripts/setup.sh")], capture_output=True, text=True,
                          cwd=elsewhere, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "PYTHON": str(fake),
                               "VENV": os.path.relpath(venv, ROOT)})
    assert done.returncode == 0, done.stderr
    assert (venv / "bin" / "python").exists()
    named = done.stdout.strip().splitlines()[-1].split("source ", 1)[1].rstrip(")")
    assert Path(named).is_absolute() and Path(named).resolve() == (venv / "bin" / "activate").resolve()


def test_the_base_install_carries_what_best_export_and_report_import():
    """`miras best`, `export`, `compare` and `report` import miras_search.report, which imports
    matplotlib: without it in the dependencies a plain `pip install .` ended those commands in a
    traceback, and `pip install -e '.[dev]'` stopped the whole test run at collection."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0] for req in project["dependencies"]}
    assert {"torch", "optuna", "scipy", "matplotlib"} <= names
    assert not any(req.startswith("torch") and "<" in req for req in project["dependencies"])


# --- the documented commands and YAML examples ---------------------------------------------

USER_DOCS = ("README.md", "results/README.md", "results/atlas-quick.md", "results/scale-smoke/README.md")
"""The Markdown files a user reads for commands (benchmarks/ is the maintainers' notebook)."""

PLACEHOLDERS = {"STUDY": "studies/quickstart.yaml", "HOST:6379": "10.0.0.1:6379", "F": "0.5",
                "CHECKPOINT": "m.pt", "FILE": "f.txt", "DIR": "tasks", "N": "3"}
"""The README's upper-case stand-ins, as values each option's type accepts."""


def _miras_commands(text: str) -> list[tuple[list[str], bool]]:
    """Every ``miras ...`` command in ``text``: its words after ``miras`` and whether it is written
    out whole (a fenced block) or may be a fragment (an inline span such as `miras trial --config`)."""
    found = []
    for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", text, flags=re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            found += [(words, True) for words in _after_miras(line.split(" #", 1)[0])]
    for span in re.findall(r"`([^`\n]+)`", text):
        found += [(words, False) for words in _after_miras(span)]
    return found


def _after_miras(line: str) -> list[list[str]]:
    commands = []
    for part in re.split(r"\s*(?:\||&&|;|>)\s*", line):  # pipes, chains and redirections end a command
        words = part.split()
        starts = [i for i, word in enumerate(words) if word in ("miras", ".venv/bin/miras")]
        if starts:
            commands.append([PLACEHOLDERS.get(word, word) for word in words[starts[0] + 1:]])
    return commands


def test_every_documented_miras_command_parses_with_its_commands_options():
    """Each `miras ...` line of the user docs names a real subcommand and options it takes, with
    values of their types (`--top 3`, `--gpus-per-trial 0.25`): parsed by the command's own parser,
    nothing run. A renamed or dropped option fails here, naming the line."""
    import typer

    from miras_search.cli import app

    click_error = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
    group = typer.main.get_command(app)
    checked, problems = 0, []
    for doc in USER_DOCS:
        for words, whole in _miras_commands((ROOT / doc).read_text()):
            if not words or words[0] in ("--version", "--help"):
                continue
            command = group.commands.get(words[0])
            if command is None:
                problems.append(f"{doc}: `miras {' '.join(words)}`: no command '{words[0]}'")
                continue
            try:
                command.make_context(words[0], words[1:])
            except click_error as error:
                if whole or type(error).__name__ != "MissingParameter":  # a fragment may leave out an argument
                    problems.append(f"{doc}: `miras {' '.join(words)}`: {error.format_message()}")
            checked += 1
    assert not problems, "\n".join(problems)
    assert checked >= 60  # the README alone has over 50: the extraction still finds them


def test_every_command_has_help_and_shared_options_mean_one_thing():
    """`miras CMD --help` exits 0 for every command, and an option several commands take is spelled
    alike in each: the same short form (`--top`/`-n`, `--out`/`-o`, `--workers`/`-w`) and the same
    kind (a flag everywhere or a value everywhere)."""
    import typer
    from typer.testing import CliRunner

    from miras_search.cli import app

    group = typer.main.get_command(app)
    spellings: dict[str, dict[str, tuple[tuple[str, ...], bool]]] = {}
    for name, command in group.commands.items():
        result = CliRunner().invoke(app, [name, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output, (name, result.output)
        for param in command.params:
            if param.param_type_name != "option" or "--help" in param.opts:
                continue
            long_names = [opt for opt in param.opts if opt.startswith("--")]
            short = tuple(sorted(opt for opt in param.opts if not opt.startswith("--")))
            for long_name in long_names:
                spellings.setdefault(long_name, {})[name] = (short, param.is_flag)
    differing = {opt: by_command for opt, by_command in spellings.items() if len(set(by_command.values())) > 1}
    assert not differing, differing
    assert spellings["--workers"]["scale"] == (("-w",), False)
    storage_help = {param.help for command in group.commands.values() for param in command.params
                    if "--storage" in param.opts}
    assert len(storage_help) == 1, storage_help  # one storage option, described once
    device_defaults = {name: param.default for name, command in group.commands.items()
                       for param in command.params if "--device" in param.opts}
    assert set(device_defaults.values()) <= {None, "auto"}, device_defaults  # CUDA when present


def _yaml_blocks() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.DOTALL)


def test_every_yaml_example_in_the_readme_validates(tmp_path):
    """Each ```yaml block of the README passes `miras validate`: a point or space as it stands, a
    study's section (`checkpoints:`, `scale:`, `budget:`) inside a copy of the quickstart study."""
    import yaml
    from typer.testing import CliRunner

    from miras_search.cli import app

    blocks = _yaml_blocks()
    assert len(blocks) >= 7
    study = yaml.safe_load((ROOT / "studies/quickstart.yaml").read_text())
    (tmp_path / "spaces").symlink_to(ROOT / "spaces")  # a study block names ../spaces/..., as shipped
    (tmp_path / "studies").mkdir()
    files = []
    for index, block in enumerate(blocks):
        data = yaml.safe_load(block)
        path = tmp_path / "studies" / f"block{index}.yaml"
        if "type" in data or "preset" in data:  # a whole point or space file
            path.write_text(block)
        else:
            path.write_text(yaml.safe_dump({**study, **data}))
        files.append(str(path))
    result = CliRunner().invoke(app, ["validate", *files])
    assert result.exit_code == 0, result.output
    assert result.output.count("✓") == len(blocks)


def test_the_hugging_face_example_runs(tmp_path, monkeypatch):
    """The README's Hugging Face block, as written, on a small checkpoint saved as its `m.pt`."""
    pytest.importorskip("transformers")
    import torch

    from miras_search.model import build_model
    from miras_search.presets import preset
    from miras_search.trial.checkpoint import save_checkpoint

    (block,) = _python_blocks("Checkpoints and Hugging Face")
    point = preset("gated_deltanet", block={"d_model": 32, "n_heads": 2, "n_layers": 1})
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "m.pt", point, build_model(point, "cpu"))
    monkeypatch.chdir(tmp_path)
    scope: dict = {"__name__": "readme_example"}
    exec(compile(block, "README.md (Checkpoints and Hugging Face)", "exec"), scope)
    assert (tmp_path / "m-hf" / "config.json").is_file()
    assert type(scope["model"]).__name__ == "MirasForCausalLM"
    prompt = len(b"Once upon a")
    assert scope["out"].shape[0] == 1 and prompt < scope["out"].shape[1] <= prompt + 20  # EOS may end it early


def test_the_annotated_study_is_the_shipped_quickstart_and_every_shipped_file_is_listed():
    """The README's annotated study file is studies/quickstart.yaml (its comments aside), and its
    "Shipped files" table names every space and study the checkout ships."""
    import yaml

    text = (ROOT / "README.md").read_text()
    (annotated,) = [block for block in _yaml_blocks() if block.startswith("# yaml-language-server") and
                    "type: study" in block]
    shipped = yaml.safe_load((ROOT / "studies/quickstart.yaml").read_text())
    shipped.pop("description")
    assert yaml.safe_load(annotated) == shipped
    table = text.split("### Shipped files\n", 1)[1].split("\n## ", 1)[0]
    files = sorted(f"{folder}/{path.name}" for folder in ("spaces", "studies")
                   for path in (ROOT / folder).glob("*.yaml"))
    assert [name for name in files if f"`{name}`" not in table] == []


@pytest.mark.parametrize("command", [["validate", "spaces/quickstart.yaml"], ["run", "studies/quickstart.yaml", "--inline"],
                                     ["show", "studies/quickstart.yaml"]])
def test_the_readme_s_paths_outside_a_checkout_say_where_the_files_are(tmp_path, monkeypatch, command):
    """The README's commands name spaces/ and studies/ from a checkout's root; run from another
    folder (or after a non-editable install, which does not carry them) the error says so, in one
    paragraph, instead of a bare 'no such file'."""
    from typer.testing import CliRunner

    from miras_search.cli import app

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 1, result.output
    words = " ".join(result.output.split())
    assert f"{command[1]}: no such file (no folder {command[1].split('/')[0]}/ here" in words
    assert "miras-search checkout" in words and "Traceback" not in result.output
    (tmp_path / command[1].split("/")[0]).mkdir()  # a folder of that name: a plain miss
    assert "checkout" not in CliRunner().invoke(app, command).output


WRITTEN_BY_COMMANDS = {"benchmarks/results/gpu_check/"}
"""Paths the docs name that a command makes (gpu_check.sh's default output folder)."""


def test_every_repository_path_the_docs_name_exists():
    """A file or folder the user docs name by its path in the checkout (`benchmarks/...`,
    `miras_search/...`, `results/...`) is there: a renamed or removed file fails here."""
    named, missing = set(), []
    for doc in USER_DOCS:
        for span in re.findall(r"`([^`\n]+)`", (ROOT / doc).read_text()):
            for word in span.split():
                path = word.rstrip(".,;:)")
                if (re.fullmatch(r"(miras_search|kernels|benchmarks|tests|spaces|studies|results|schemas|"
                                 r"scripts)/[\w./-]*", path) and "*" not in path and path not in WRITTEN_BY_COMMANDS):
                    named.add(path)
                    if not (ROOT / path).exists():
                        missing.append(f"{doc}: {path}")
    assert missing == []
    assert len(named) > 80  # the extraction still finds the docs' paths
