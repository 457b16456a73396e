"""The committed JSON Schemas (used by editors through the YAML modelines) are up to date."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from miras_search.cli import app


def test_committed_schemas_match_the_models(root, tmp_path):
    result = CliRunner().invoke(app, ["schema", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for fresh in sorted(tmp_path.glob("*.schema.json")):
        committed = root / "schemas" / fresh.name
        assert committed.exists(), f"run `miras schema` and commit {committed.name}"
        assert json.loads(committed.read_text()) == json.loads(fresh.read_text()), (
            f"schemas/{fresh.name} is stale: run `miras schema` and commit it"
        )
