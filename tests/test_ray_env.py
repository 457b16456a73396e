"""A local Ray instance that this machine's environment keeps from starting (a deep TMPDIR, a
TMPDIR or HOME that cannot be made or written) ends in one paragraph naming the variable and the
fix, found before Ray starts where it can be. No test here starts Ray: ``ray.init`` is replaced."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from miras_search import ray_env
from miras_search.errors import MirasError
from miras_search.parallel import ray_pool

LONG = "l" * 120


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """Ray's variables unset, HOME with a token in place (no token to write) and a short TMPDIR."""
    for name in ("RAY_TMPDIR", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text("x" * 32)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("TMPDIR", "/tmp")  # tmp_path itself is too deep for Ray's sockets
    return tmp_path


def _no_ray_init(**kwargs):
    raise AssertionError("ray.init was called: the environment's problem should be found first")


def test_the_socket_path_is_computed_as_ray_makes_it(clean_env, monkeypatch):
    monkeypatch.setenv("TMPDIR", "/tmp")
    path = ray_env.longest_socket_path(pid=12345)
    assert path.startswith("/tmp/ray/session_2000-01-01_00-00-00_000000_12345/sockets/")
    assert path.endswith("/plasma_store") and len(path) == len("/tmp") + 61 + 5


@pytest.mark.parametrize("variable", ["TMPDIR", "RAY_TMPDIR"])
def test_a_temp_folder_too_deep_for_ray_sockets_is_refused_before_ray_starts(clean_env, monkeypatch, variable):
    deep = clean_env / LONG
    monkeypatch.setenv(variable, str(deep))
    problem = ray_env.local_start_problem()
    assert problem is not None and problem.startswith("cannot start a local Ray instance")
    assert f"{variable}={deep}" in problem and "at most 107" in problem
    assert "RAY_TMPDIR" in problem and "--inline" in problem and "nothing stored was lost" in problem
    room = int(problem.split("a folder whose path has at most ")[1].split()[0])
    assert room == ray_env.SOCKET_PATH_LIMIT - 61 - len(str(os.getpid()))
    assert not deep.exists()  # found before anything is made there
    monkeypatch.setattr(ray_pool.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray_pool.ray, "init", _no_ray_init)
    with pytest.raises(MirasError, match="too deep for Ray's sockets"):
        ray_pool.connect(None, workers=1)


def test_a_temp_folder_just_short_enough_is_accepted(clean_env, monkeypatch):
    room = ray_env.SOCKET_PATH_LIMIT - 61 - len(str(os.getpid()))
    short = Path(tempfile.mkdtemp(dir="/tmp"))
    base = short / ("d" * (room - len(str(short)) - 1))
    assert len(str(base)) == room
    monkeypatch.setenv("TMPDIR", str(base))
    assert len(ray_env.longest_socket_path().encode()) == ray_env.SOCKET_PATH_LIMIT
    assert ray_env.local_start_problem() is None
    assert (base / "ray").is_dir()
    monkeypatch.setenv("TMPDIR", str(base) + "d")
    assert "too deep" in (ray_env.local_start_problem() or "")
    shutil.rmtree(short)


def test_ray_s_own_socket_error_is_worded_the_same(clean_env, monkeypatch):
    path = f"{clean_env}/{LONG}/ray/session_x/sockets/plasma_store"
    error = OSError(f"validate_socket_filename failed: AF_UNIX path length cannot exceed 107 bytes: {path}")
    message = ray_env.ray_start_message(error)
    assert message is not None and f"would be {len(path)} bytes" in message and "RAY_TMPDIR" in message


@pytest.mark.parametrize("below_a_file", [False, True])
def test_a_temp_folder_that_cannot_be_made_names_tmpdir(clean_env, monkeypatch, below_a_file):
    handle, file = tempfile.mkstemp(dir="/tmp")  # short: tmp_path is too deep for the sockets
    os.close(handle)
    tmpdir = f"{file}/below" if below_a_file else "/proc/nonexistent"
    monkeypatch.setenv("TMPDIR", tmpdir)
    try:
        problem = ray_env.local_start_problem()
    finally:
        os.unlink(file)
    assert problem is not None and "its temp folder" in problem and "cannot be used" in problem
    assert f"TMPDIR={tmpdir}" in problem and "--inline" in problem and "HOME" not in problem


def test_a_home_that_cannot_be_made_names_home_and_ray_auth_mode(clean_env, monkeypatch):
    monkeypatch.setenv("HOME", "/proc/nonexistent")
    problem = ray_env.local_start_problem()
    assert problem is not None and "/proc/nonexistent/.ray/auth_token" in problem
    assert "HOME=/proc/nonexistent" in problem and "RAY_AUTH_MODE=disabled" in problem
    assert "--inline" in problem and "TMPDIR" not in problem
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # no token is written: nothing to refuse
    assert ray_env.local_start_problem() is None
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "a" * 32)  # a token from the environment: none written
    assert ray_env.local_start_problem() is None


@pytest.mark.parametrize(("home_part", "code"), [
    ("", errno.ENOENT), (".ray", errno.EROFS), (".ray/auth_token", errno.EACCES),
])
def test_ray_s_own_token_errors_are_worded_with_home(clean_env, monkeypatch, home_part, code):
    home = clean_env / "nohome"
    monkeypatch.setenv("HOME", str(home))
    error = OSError(code, os.strerror(code), str(home / home_part))
    message = ray_env.ray_start_message(error)
    assert message is not None and "RAY_AUTH_MODE=disabled" in message and f"HOME={home}" in message

    monkeypatch.setattr(ray_pool.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray_env, "local_start_problem", lambda: None)  # what it cannot foresee

    def fail(**kwargs):
        raise error

    monkeypatch.setattr(ray_pool.ray, "init", fail)
    with pytest.raises(MirasError) as caught:
        ray_pool.connect(None, workers=1)
    assert str(caught.value) == message


def test_an_os_error_elsewhere_is_left_to_the_command_line(clean_env, monkeypatch):
    error = OSError(errno.ENOSPC, "No space left on device", str(clean_env / "runs" / "study.journal"))
    assert ray_env.ray_start_message(error) is None
    monkeypatch.setattr(ray_pool.ray, "is_initialized", lambda: False)

    def fail(**kwargs):
        raise error

    monkeypatch.setattr(ray_pool.ray, "init", fail)
    with pytest.raises(OSError) as caught:
        ray_pool.connect(None, workers=1)
    assert caught.value is error


def test_miras_run_with_a_deep_tmpdir_is_one_paragraph_before_ray_starts(clean_env, monkeypatch):
    from test_study import write_study
    from typer.testing import CliRunner

    from miras_search.cli import app

    path = write_study(clean_env, trials=1)
    monkeypatch.setattr(ray_pool.ray, "init", _no_ray_init)
    result = CliRunner().invoke(app, ["run", str(path)], env={"TMPDIR": str(clean_env / LONG), "COLUMNS": "400"})
    assert result.exit_code == 1, result.output
    assert "error: cannot start a local Ray instance" in result.output and "at most 107" in result.output
    assert "Traceback" not in result.output and not isinstance(result.exception, OSError | AssertionError)
