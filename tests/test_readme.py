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
