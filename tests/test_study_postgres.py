"""A study against a real PostgreSQL server started by the test, with 2 concurrent Ray workers."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
from optuna.trial import TrialState
from test_study import trials_of, write_study

from miras_search.study import load_study_file, run_study

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]  # one Ray cluster at a time (conftest)
ray = pytest.importorskip("ray")
pytest.importorskip("psycopg", reason="the 'postgres' extra (psycopg) is not installed")


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """A throw-away server: initdb in a temp dir, pg_ctl on a free localhost port, stopped after."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) are not installed; scripts/ci_postgres.sh installs them")
    as_user: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="miras-pg-"))
    if os.geteuid() == 0:  # initdb refuses to run as root
        runuser = shutil.which("runuser")
        if runuser is None or subprocess.run(["id", "postgres"], capture_output=True).returncode != 0:
            pytest.skip("running as root without a 'postgres' user and runuser to start the server")
        shutil.chown(folder, "postgres")
        as_user = [runuser, "-u", "postgres", "--"]
    data, port = folder / "data", _free_port()
    subprocess.run([*as_user, initdb, "-D", str(data), "-A", "trust", "-U", "miras", "--no-sync"],
                   check=True, capture_output=True)
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run([*as_user, pg_ctl, "-D", str(data), "-o", options, "-l", str(folder / "log"), "-w", "start"],
                   check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://miras@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_two_workers_on_postgres_lose_and_duplicate_nothing(tmp_path, postgres_url):
    from miras_search.parallel import RayPool

    path = write_study(tmp_path, trials=6, storage=postgres_url,
                       sampler={"kind": "tpe", "anchors": ["gated_deltanet", "transformer"]},
                       pruner={"kind": "median", "n_startup_trials": 2})
    spec = load_study_file(path)
    summary = run_study(spec, lambda: RayPool(2))
    assert summary.storage == postgres_url and not (tmp_path / "runs" / "tiny" / "study.journal").exists()
    trials = trials_of(path)
    assert [t.number for t in trials] == list(range(6))
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    trained = [t for t in trials if "reused_from" not in t.user_attrs]
    assert len(trained) == summary.ran
    assert len({t.user_attrs["point_key"] for t in trained}) == len(trained)  # no point run twice
    assert len({t.user_attrs["worker"]["pid"] for t in trained}) == 2
    for trial in trained:  # each worker's intermediate reports reached the database
        assert trial.intermediate_values and set(trial.intermediate_values) <= {2, 4, 6, 7}
        if trial.state == TrialState.COMPLETE:
            assert trial.values == [trial.user_attrs["metrics"]["val_bpb"]]
    assert [t.user_attrs["anchor"] for t in trials[:2]] == ["gated_deltanet", "transformer"]
    # resuming against the same database continues the same study
    more = run_study(spec, lambda: RayPool(2), trials=7)
    assert more.finished == 7 and len(trials_of(path)) == 7


def test_a_password_in_the_postgres_url_is_stored_and_shown_nowhere(tmp_path, postgres_url, monkeypatch):
    """The server trusts local connections, so any password opens it: the URL carries one the
    way a real deployment's does. Not on the terminal, in the W&B runs, in the run folder or in
    any row of the database."""
    import psycopg
    from typer.testing import CliRunner

    from miras_search.cli import app

    secret = "S3cr3t-pg-pw"
    url = postgres_url.replace("miras@", f"miras:{secret}@")
    monkeypatch.setenv("WANDB_MODE", "offline")
    for name in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)
    path = write_study(tmp_path, name="secret-study", trials=1, storage=url, tracking={"wandb": "offline"})
    result = CliRunner().invoke(app, ["run", str(path), "--inline", "--storage", url])
    assert result.exit_code == 0, result.output
    assert secret not in result.output and "miras:***@127.0.0.1" in result.output
    held = [p for p in tmp_path.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert held == [path]  # only the user's own study file
    plain = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain) as connection:
        tables = [row[0] for row in connection.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")]
        assert "study_user_attributes" in tables
        for table in tables:
            rows = connection.execute(f'SELECT t::text FROM "{table}" t').fetchall()
            assert not any(secret in row[0] for row in rows), table
