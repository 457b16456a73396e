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
