"""The README's Python example runs as written (so it cannot drift from the API)."""

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
