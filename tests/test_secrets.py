"""A password in a storage URL is never printed, logged or stored in clear: not on the terminal,
not in the study's attributes, not in W&B's config, metadata (the command line) or debug log."""

from __future__ import annotations

import logging
import sys

import pytest
from sqlalchemy.engine import make_url
from test_study import write_study
from typer.testing import CliRunner

from miras_search.cli import app
from miras_search.redact import RedactingFilter, redact_text, redact_tree, redact_url

SECRET = "S3cr3t-pw"


@pytest.mark.parametrize(("url", "shown"), [
    (f"postgresql+psycopg://miras:{SECRET}@db.example:5432/optuna",
     "postgresql+psycopg://miras:***@db.example:5432/optuna"),
    (f"mysql://root:{SECRET}@localhost/optuna?charset=utf8mb4",
     "mysql://root:***@localhost/optuna?charset=utf8mb4"),
    (f"postgresql://u:{SECRET}@h", "postgresql://u:***@h"),
    (f"postgresql://u:p@ss{SECRET}@h:1/db", "postgresql://u:***@h:1/db"),  # an unescaped '@'
    (f"postgresql://u:p%40{SECRET}@h/db", "postgresql://u:***@h/db"),
    (f"postgresql://u:{SECRET}:x@[::1]:5432/db", "postgresql://u:***@[::1]:5432/db"),
    (f"postgresql://u@h/db?password={SECRET}&sslmode=require",
     "postgresql://u@h/db?password=***&sslmode=require"),
    (f"postgresql://u@h/db?sslmode=require&sslpassword={SECRET}",
     "postgresql://u@h/db?sslmode=require&sslpassword=***"),
    ("postgresql://u@h:5432/db", "postgresql://u@h:5432/db"),
    ("sqlite:////tmp/study.db", "sqlite:////tmp/study.db"),
    ("/runs/x/study.journal", "/runs/x/study.journal"),
    ("http://host:8080/path@version", "http://host:8080/path@version"),  # no userinfo
    # SQLAlchemy reads '/' and quotes as part of the password (generated ones often hold '/')
    (f"postgresql://user:s3c/{SECRET}@127.0.0.1:1/db", "postgresql://user:***@127.0.0.1:1/db"),
    (f"mysql://u:a/b:{SECRET}@c@h:3306/x", "mysql://u:***@h:3306/x"),
    (f"redis://:{SECRET}'x\"y@host:6379/0", "redis://:***@host:6379/0"),
    # no scheme: a storage string or Ray address written without one, or a path ending in one
    (f"user:{SECRET}@db.example:5432", "user:***@db.example:5432"),
    (f"u:p@ss/{SECRET}@127.0.0.1:1/db", "u:***@127.0.0.1:1/db"),
    (f"u:{SECRET}@[::1]:6379", "u:***@[::1]:6379"),
    (f"/runs/x/user:{SECRET}@host:5432", "/runs/x/user:***@host:5432"),
    ("git@github.com:org/repo.git", "git@github.com:org/repo.git"),
    ("runs/12:30/study.journal", "runs/12:30/study.journal"),
])
def test_urls_lose_their_password_and_nothing_else(url, shown):
    assert redact_url(url) == shown
    assert SECRET not in redact_url(url)
    assert redact_url(shown) == shown  # idempotent


@pytest.mark.parametrize("url", [
    f"postgresql+psycopg://miras:{SECRET}@db.example:5432/optuna",
    f"mysql+pymysql://a.b-c:{SECRET}@10.0.0.1/x",
    f"oracle://scott:{SECRET}@host:1521/?service_name=orcl",
])
def test_redaction_agrees_with_sqlalchemy(url):
    assert redact_url(url) == make_url(url).render_as_string(hide_password=True)


def test_urls_inside_messages_and_structures_are_redacted():
    message = f"cannot open 'postgresql://u:{SECRET}@h/db' (x) and mysql://v:{SECRET}2@k/y."
    assert redact_text(message) == "cannot open 'postgresql://u:***@h/db' (x) and mysql://v:***@k/y."
    for password in (f"a/{SECRET}", f"{SECRET}'q", f'{SECRET}"q', f"12/{SECRET}"):
        message = f"error: storage 'postgresql://user:{password}@127.0.0.1:1/db' needs a driver"
        assert redact_text(message) == "error: storage 'postgresql://user:***@127.0.0.1:1/db' needs a driver"
    bare = f"user:{SECRET}@127.0.0.1:1"
    message = f"error: could not join '{bare}': Invalid address format: {bare}. (--address={bare})"
    assert redact_text(message) == ("error: could not join 'user:***@127.0.0.1:1': Invalid address "
                                    "format: user:***@127.0.0.1:1. (--address=user:***@127.0.0.1:1)")
    tree = {"storage": f"postgresql://u:{SECRET}@h/db", "list": [f"a://b:{SECRET}@c", bare], "n": 3}
    assert SECRET not in str(redact_tree(tree)) and redact_tree(tree)["n"] == 3


def test_log_records_are_redacted(caplog):
    logger = logging.getLogger("miras_search.test_secrets")
    for handler in (caplog.handler,):
        handler.addFilter(RedactingFilter())
    logger.warning("storage %s failed", f"postgresql://u:{SECRET}@h/db")
    logger.warning("joining %s", f"u:{SECRET}@10.0.0.9:6379")
    assert SECRET not in caplog.text and "postgresql://u:***@h/db" in caplog.text
    assert "joining u:***@10.0.0.9:6379" in caplog.text


def _files_holding(folder, text: str) -> list:
    return [p for p in folder.rglob("*") if p.is_file() and text.encode() in p.read_bytes()]


def test_a_study_on_a_password_url_keeps_the_password_out_of_everything(tmp_path, monkeypatch):
    """The study runs on a PostgreSQL URL with a password (served here by SQLite under the hood,
    the only change): its output, the study's attributes (the stored study file), the W&B runs
    (config, command line metadata, debug logs) and the run folder never hold the password."""
    url = f"postgresql+psycopg://miras:{SECRET}@db.example:5432/optuna"
    database = f"sqlite:///{tmp_path / 'served.db'}"
    from miras_search.study.rdb import TolerantRDBStorage

    monkeypatch.setattr("miras_search.study.rdb.TolerantRDBStorage", lambda given, **kwargs: TolerantRDBStorage(
        database) if given == url else TolerantRDBStorage(given, **kwargs))
    monkeypatch.setenv("WANDB_MODE", "offline")
    for name in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)
    path = write_study(tmp_path, trials=1, storage=url, tracking={"wandb": "offline"})
    monkeypatch.setattr(sys, "argv", ["miras", "run", str(path), "--inline", "--storage", url])
    result = CliRunner().invoke(app, ["run", str(path), "--inline", "--storage", url])
    assert result.exit_code == 0, result.output
    assert "postgresql+psycopg://miras:***@db.example:5432/optuna" in result.output
    assert SECRET not in result.output
    holders = _files_holding(tmp_path, SECRET)
    assert holders == [path], holders  # only the user's own study file
    assert any((tmp_path / "runs").rglob("*.wandb"))  # W&B did write its runs
    served = (tmp_path / "served.db").read_bytes()
    assert b"miras:***@db.example" in served  # the study file is stored, redacted
    status = CliRunner().invoke(app, ["status", str(path)])
    assert status.exit_code == 0 and SECRET not in status.output


def test_an_unreachable_password_url_fails_without_showing_it(tmp_path):
    url = f"postgresql+psycopg://miras:{SECRET}@127.0.0.1:9/optuna"
    result = CliRunner().invoke(app, ["status", "tiny", "--storage", url])
    assert result.exit_code == 1
    assert "error" in result.output and SECRET not in result.output


def _names_holding(folder, text: str) -> list:
    return [p for p in folder.rglob("*") if text in p.name]


@pytest.mark.parametrize("where", ["study file", "--storage", "--storage --inline"])
def test_a_password_url_without_its_scheme_is_refused_and_never_shown(tmp_path, monkeypatch, where):
    """``storage: user:pw@host:5432`` was taken as a journal path: the run printed it and created
    a file of that name. It is refused before anything is created, the password masked."""
    monkeypatch.chdir(tmp_path)
    bare = f"user:{SECRET}@db.example:5432"
    path = write_study(tmp_path, trials=1, **({"storage": bare} if where == "study file" else {}))
    given = [] if where == "study file" else [f"--storage={bare}"]
    inline = ["--inline"] if where.endswith("--inline") else []
    for command in (["run", str(path), *given, *inline], ["status", str(path), *given]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 1, result.output
        assert "without its scheme" in result.output and SECRET not in result.output
        assert "postgresql+psycopg://user:***@db.example:5432/DB" in result.output
    assert _names_holding(tmp_path, SECRET) == [] and not (tmp_path / "runs").exists()
    assert _files_holding(tmp_path, SECRET) == ([path] if where == "study file" else [])


@pytest.mark.parametrize("where", ["--address", "parallel.address", "RAY_ADDRESS"])
def test_a_password_in_a_ray_address_is_never_shown_nor_stored(tmp_path, monkeypatch, where):
    """A Ray address takes no password: ``user:pw@host:port`` is refused before Ray sees it (Ray
    echoed it: "Invalid address format: user:pw@..."), and the study's stored copy of its file
    holds it masked."""
    from miras_search.parallel import ray_pool

    def must_not_join(**kwargs):
        raise AssertionError("ray.init was called with an address that holds a password")

    monkeypatch.setattr(ray_pool.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray_pool.ray, "init", must_not_join)
    address = f"user:{SECRET}@127.0.0.1:1"
    fields = {"parallel": {"workers": 1, "address": address}} if where == "parallel.address" else {}
    path = write_study(tmp_path, trials=1, **fields)
    journal = tmp_path / "s.journal"
    args = ["run", str(path), "--storage", str(journal)]
    if where == "--address":
        args += ["--address", address]
    if where == "RAY_ADDRESS":
        monkeypatch.setenv("RAY_ADDRESS", address)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "user:***@127.0.0.1:1" in result.output and "HOST:PORT" in result.output
    assert SECRET not in result.output
    assert _files_holding(tmp_path, SECRET) == ([path] if where == "parallel.address" else [])
    if where == "parallel.address":  # the study's stored copy of its file
        assert b"user:***@127.0.0.1:1" in journal.read_bytes()
