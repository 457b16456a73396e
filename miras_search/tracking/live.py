"""A trial's W&B run, written by the worker while the trial trains.

The training loop only puts rows on a queue (microseconds); a thread opens the run, logs the
rows queued every ``LOG_EVERY_S`` seconds, writes the final metrics and finishes the run, so
neither the trial nor the study waits on W&B. ``flush_live_runs`` waits for the runs still being written (the driver calls
it at the end of a study; a Ray worker before it is stopped). Nothing here can fail a trial: a
W&B error turns W&B off for the rest of the study in this process (``record_start_error``: every
run still being written stops, no later run starts, and the driver says why once, with the
study's end), and W&B's own log files are kept from printing their write errors (a full disk
would otherwise print a traceback per log line; ``quiet_wandb_logging``).

What a run costs is kept small because a worker runs many short trials:

* W&B starts once per process (``wandb.setup()``: one ``wandb-core`` service that every run of
  the process reuses, and the modules that the first ``wandb.init`` would import), on a
  background thread (``warm_up``), not once per trial;
* a trial's run does not list the installed packages (W&B reads the metadata of every installed
  distribution for that, about 0.1-0.3 s of CPU per run) nor ask git for the code's state (two
  git processes per run): both are the same for every trial of a study, and the study's summary
  run keeps them; nor does it capture the console (a worker's stdout is not the trial's);
* W&B's own system monitor (CPU, memory, disk, GPU) runs in its service process, as usual.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import queue
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from miras_search.redact import command_line_redacted, redact_tree

log = logging.getLogger(__name__)

_RUNNING: list[threading.Thread] = []
_LOCK = threading.Lock()
_SESSION_LOCK = threading.Lock()
_SESSION: dict[str, Any] = {}
_FINISH = object()
LOG_EVERY_S = 0.25
"""How often a run's writer logs the rows queued meanwhile (live enough, and cheap)."""
TRIAL_RUN_SETTINGS = {"x_save_requirements": False, "console": "off", "disable_git": True}
"""W&B settings of a trial's run (see the module docstring)."""
ONLINE_INIT_TIMEOUT_S = 20.0
"""How long an online run may take to start (W&B's default, 90 s, retried per run, kept a study
with no network waiting minutes after its last trial); a run that does not start in time turns
W&B off for the rest of the study."""
_START_ERRORS: dict[tuple[str, str], str] = {}  # (mode, dir) -> why a run of that study did not start
_START_LOCK = threading.Lock()  # one run starts at a time: the next learns whether the last could
_STUDIES: set[tuple[str, str]] = set()  # (mode, dir) of the studies whose runs this process writes


def init_settings(mode: str, **settings: Any) -> dict[str, Any]:
    """``wandb.Settings`` keywords for a run: ``settings`` and, online, the short start timeout."""
    return {**settings, "init_timeout": ONLINE_INIT_TIMEOUT_S} if mode == "online" else settings


def start_error(settings: dict[str, Any]) -> str | None:
    """Why a run of these settings' study (mode, folder) did not start in this process, if one did
    not: later runs do not try again (each would wait its start timeout for nothing)."""
    return _START_ERRORS.get((settings["mode"], str(settings["dir"])))


def record_start_error(settings: dict[str, Any], error: BaseException | str | None) -> None:
    """Remember (or, with None, forget: a new study) why a run of these settings did not start."""
    key = (settings["mode"], str(settings["dir"]))
    _STUDIES.add(key)
    if error is None:
        _START_ERRORS.pop(key, None)
    else:
        _START_ERRORS.setdefault(key, describe_error(error))


def quiet_wandb_logging() -> None:
    """Keep the handlers of W&B's logger (its per-run ``debug.log`` files) from printing a
    traceback for each record they fail to write (a full disk, a folder gone): Python's logging
    prints one per failed record (``Handler.handleError``), thousands in a study. The first such
    failure turns W&B off like any other W&B error (``record_start_error``, through the handler's
    run folder); the records are lost, as W&B's log file is anyway."""
    for handler in logging.getLogger("wandb").handlers:
        if getattr(handler, "_miras_quiet", False):
            continue
        handler.handleError = functools.partial(_handler_failed, handler)  # type: ignore[method-assign]
        handler._miras_quiet = True  # type: ignore[attr-defined]


def _handler_failed(handler: logging.Handler, record: logging.LogRecord) -> None:
    """``handleError`` of a quieted W&B handler: remember why (no traceback) and carry on."""
    error = sys.exc_info()[1]
    if error is None:
        return
    folder = str(getattr(handler, "baseFilename", ""))
    for key in list(_STUDIES):
        if folder.startswith(key[1] + os.sep):
            _START_ERRORS.setdefault(key, describe_error(error))


def is_off(settings: dict[str, Any]) -> bool:
    """Whether W&B is off for these settings' study in this process (see ``record_start_error``)."""
    return start_error(settings) is not None


def describe_error(error: BaseException | str) -> str:
    """One line for a W&B error: its first line (W&B adds advice, such as raising init_timeout,
    that does not apply here)."""
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return text.strip().splitlines()[0] if text.strip() else "unknown error"


def folder_write_error(folder: str | Path) -> str | None:
    """Why W&B could not write its runs, logs and cache under ``folder`` (a read-only mount, no
    permission, a full disk), or None; checked before W&B starts. W&B would turn itself off at its
    first run anyway, but its ``wandb-core`` service, which inherits the terminal, prints its log
    folder's error and its own log lines there (it logs to stderr when it cannot log to a file)."""
    folders = [Path(folder)]
    folders += [Path(os.environ[name]) for name in ("WANDB_CACHE_DIR", "WANDB_DATA_DIR") if os.environ.get(name)]
    for checked in folders:
        try:
            checked.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=checked, prefix=".miras-write-check-"):
                pass
        except OSError as error:
            return f"cannot write the W&B folder {checked}: {error.strerror or error}"
    return None


def _environment(settings: dict[str, Any]) -> None:
    os.environ.setdefault("WANDB_SILENT", "true")
    if settings["mode"] == "offline":
        os.environ["WANDB_MODE"] = "offline"
        folder = Path(settings["dir"])
        os.environ.setdefault("WANDB_DATA_DIR", str(folder / "data"))
        os.environ.setdefault("WANDB_CACHE_DIR", str(folder / "cache"))


def wandb_session(settings: dict[str, Any]):
    """The ``wandb`` module, started once for this process (its service runs every later run)."""
    with _SESSION_LOCK:
        _environment(settings)
        if "wandb" not in _SESSION:
            import wandb

            wandb.setup()
            with contextlib.suppress(ImportError):  # what wandb.init imports on its first call
                import wandb.sdk.launch.inputs.internal
            _SESSION["wandb"] = wandb
        return _SESSION["wandb"]


def warm_up(settings: dict[str, Any]) -> None:
    """Start W&B for this process on a background thread (a no-op once started)."""
    if "wandb" in _SESSION:
        return

    def start() -> None:
        try:
            wandb_session(settings)
        except Exception as error:  # the first run reports it
            log.debug("W&B warm-up failed: %s", error)

    threading.Thread(target=start, name="wandb-warm-up", daemon=True).start()


class LiveRun:
    """One trial's run; ``settings`` come from ``WandbTracker.live_settings`` (plain data, so a
    Ray task carries them): mode, project, entity, dir, group, name, config, tags."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings
        _STUDIES.add((settings["mode"], str(settings["dir"])))
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._write, name=f"wandb-{settings['name']}", daemon=True)
        with _LOCK:
            _RUNNING[:] = [t for t in _RUNNING if t.is_alive()]
            _RUNNING.append(self._thread)
        self._thread.start()

    def log(self, row: dict[str, float], step: int) -> None:
        """Queue a row (dropped once W&B is off for the study: nothing would write it)."""
        if not is_off(self.settings):
            self._queue.put((row, step))

    def finish(self, summary: dict[str, Any], record: dict[str, Any]) -> None:
        """Queue the final summary (and the readable ``miras_trial.json`` record); returns at once."""
        self._queue.put((_FINISH, (redact_tree(summary), redact_tree(record))))  # a reason may hold a URL

    def _write(self) -> None:
        run = self._start()
        if run is None:
            self._drain()
            return
        try:
            # W&B turned off meanwhile (this study's other run, or a W&B log file, failed): stop
            while not is_off(self.settings) and self._log_batch(run):
                time.sleep(LOG_EVERY_S)  # rows gather meanwhile: one wake-up per batch, not per step
        except Exception as error:  # a full disk, a folder gone: W&B is off for the study
            record_start_error(self.settings, error)
            # said once, by the driver, with the study's end (a worker's log is not shown)
            log.info("W&B run %s: logging stopped: %s", self.settings["name"], describe_error(error))
        finally:
            with contextlib.suppress(Exception):  # W&B closing its log file on a full disk
                run.finish()

    def _start(self):
        """The started W&B run, or None: it could not start, or an earlier run of the study could
        not (it is not tried again: each try would wait out the start timeout)."""
        with _START_LOCK:
            if start_error(self.settings) is not None:
                return None
            try:
                run = self._init()
                quiet_wandb_logging()  # the run's debug.log handler, added by wandb.init
                return run
            except Exception as error:  # W&B missing, folder unwritable, network down...
                record_start_error(self.settings, error)
                # said once, by the driver, with the study's end (a worker's log is not shown)
                log.info("W&B run %s not started: %s", self.settings["name"], describe_error(error))
                return None

    def _init(self):
        wandb = wandb_session(self.settings)
        folder = Path(self.settings["dir"])
        folder.mkdir(parents=True, exist_ok=True)
        with command_line_redacted():  # W&B keeps the command line (an inline run's --storage URL)
            return wandb.init(
                project=self.settings["project"], entity=self.settings.get("entity"),
                group=self.settings["group"], name=self.settings["name"], job_type="trial",
                dir=str(folder.parent if folder.name == "wandb" else folder),
                mode=self.settings["mode"], config=redact_tree(self.settings["config"]),
                tags=self.settings["tags"], reinit="create_new",
                settings=wandb.Settings(**init_settings(self.settings["mode"], **TRIAL_RUN_SETTINGS)),
            )

    def _log_batch(self, run) -> bool:
        """Log every row queued so far; False once the final summary is written."""
        while True:
            try:
                item, payload = self._queue.get_nowait()
            except queue.Empty:
                return True
            if item is _FINISH:
                summary, record = payload
                run.summary.update(summary)
                (Path(run.dir) / "miras_trial.json").write_text(json.dumps(record, indent=1, default=str))
                return False
            run.log(item, step=payload)

    def _drain(self) -> None:
        while True:
            item, _ = self._queue.get()
            if item is _FINISH:
                return


def flush_live_runs(timeout_s: float = 120.0) -> None:
    """Wait (up to ``timeout_s`` in all) for the runs this process is still writing."""
    with _LOCK:
        threads = list(_RUNNING)
    for thread in threads:
        thread.join(timeout=timeout_s)
