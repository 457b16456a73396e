"""What the machine refuses ends in one paragraph naming the cause and its fix."""

from __future__ import annotations

import errno

import pytest

from miras_search.cli.oserrors import os_error_message, ray_temp_dir


def test_a_file_size_limit_names_ulimit_and_keeps_the_study():
    message = os_error_message(OSError(errno.EFBIG, "File too large", "/runs/tiny/study.journal"))
    assert message is not None
    assert message.startswith("cannot write to /runs/tiny/study.journal: the file reached")
    assert "ulimit -f" in message and "Nothing already stored was lost" in message
    assert "miras resume" in message


@pytest.mark.parametrize("variable", ["TMPDIR", "RAY_TMPDIR"])
@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS, errno.EPERM])
def test_an_unwritable_ray_temp_dir_points_at_tmpdir_not_run_dir(tmp_path, monkeypatch, variable, code):
    monkeypatch.delenv("RAY_TMPDIR", raising=False)
    monkeypatch.setenv(variable, str(tmp_path / "rotmp"))
    assert ray_temp_dir() == tmp_path / "rotmp" / "ray"
    for where in (tmp_path / "rotmp", tmp_path / "rotmp" / "ray", tmp_path / "rotmp" / "ray" / "session_1"):
        message = os_error_message(OSError(code, "denied", str(where)))
        assert message is not None
        assert "TMPDIR" in message and "RAY_TMPDIR" in message and "run_dir" not in message, message


def test_an_unwritable_run_dir_keeps_the_run_dir_advice(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    message = os_error_message(OSError(errno.EACCES, "denied", str(tmp_path / "runs")))
    assert message is not None and "run_dir" in message and "RAY_TMPDIR" not in message


@pytest.mark.parametrize("args", [
    ["show", "{long}.yaml"], ["kernels", "{long}.yaml"], ["schema", "--out", "{long}"],
    ["best", "{name}"], ["train", "--from", "{long}.pt"],
])
def test_a_path_too_long_for_the_file_system_is_one_paragraph(tmp_path, args):
    from typer.testing import CliRunner

    from miras_search.cli import app

    name = "a" * 300  # one name part over the 255 bytes a file system allows
    filled = [arg.format(long=tmp_path / name, name=name) for arg in args]
    result = CliRunner().invoke(app, filled, env={"COLUMNS": "400"})
    assert result.exit_code == 1, result.output
    assert "the name is too long for the file system" in result.output
    assert "Traceback" not in result.output and not isinstance(result.exception, OSError)
    assert "..." in result.output  # the 300-character part is shortened in the message


def test_a_write_error_that_names_no_file_still_reads_as_a_sentence():
    message = os_error_message(OSError(errno.ENOSPC, "No space left on device"))
    assert message is not None and message.startswith("cannot write to a file: no space is left")


@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS, errno.EPERM])
@pytest.mark.parametrize("part", [".ray", ".ray/auth_token"])
def test_an_unwritable_ray_token_folder_points_at_home_not_run_dir(tmp_path, monkeypatch, code, part):
    monkeypatch.setenv("HOME", str(tmp_path / "rohome"))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    message = os_error_message(OSError(code, "denied", str(tmp_path / "rohome" / part)))
    assert message is not None and "run_dir" not in message, message
    assert "HOME" in message and "RAY_AUTH_MODE=disabled" in message and "--inline" in message
    assert f"{tmp_path / 'rohome' / '.ray'}/auth_token" in message


def test_ray_s_socket_path_error_names_tmpdir_and_its_limit(monkeypatch):
    monkeypatch.delenv("RAY_TMPDIR", raising=False)
    deep = "/scratch/" + "d" * 60
    monkeypatch.setenv("TMPDIR", deep)
    path = f"{deep}/ray/session_2026-12-06_17-16-46_568169_4392/sockets/plasma_store"
    message = os_error_message(OSError(
        f"validate_socket_filename failed: AF_UNIX path length cannot exceed 107 bytes: {path}"))
    assert message is not None and f"TMPDIR={deep}" in message and f"would be {len(path)} bytes" in message
    assert "RAY_TMPDIR" in message and "--inline" in message
