"""Study commands: ``miras run``, ``miras resume``, ``miras status``, ``miras best``."""

from __future__ import annotations

import datetime
import logging
import time
from pathlib import Path
from typing import Annotated

import optuna
import typer
from optuna.trial import FrozenTrial, TrialState
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from miras_search.cli.app import command, console
from miras_search.cli.checks import positive_finite, warn_if_study_file_changed
from miras_search.errors import MirasError
from miras_search.points import point_to_yaml
from miras_search.redact import install_log_redaction, redact_url
from miras_search.report.study_data import stored_point
from miras_search.study import (
    Event,
    InlinePool,
    RunSummary,
    StudyDriver,
    load_study_file,
    open_study,
)
from miras_search.study.records import is_feasible
from miras_search.study.summary import (
    StudyStatus,
    failure_groups,
    feasible_complete,
    objective_records,
    ranked,
    status,
)

_STUDY = Annotated[str, typer.Argument(help="A study YAML file, or a study name with --storage.")]
_STORAGE = Annotated[str | None, typer.Option(help="Storage URL or journal path (default: the study's).")]


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("running {task.fields[running]}"), TextColumn("{task.fields[best]}"),
        TimeElapsedColumn(), console=console,
    )


def _run(path: Path, workers: int | None, address: str | None, storage: str | None,
         trials: int | None, timeout: float | None, wandb: str | None, inline: bool,
         must_exist: bool) -> None:
    spec = load_study_file(path)
    if must_exist:
        open_study(spec, storage)  # MirasError when there is nothing to resume
    workers = workers or spec.parallel.workers
    address = address or spec.parallel.address
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    install_log_redaction()

    def pool_factory():
        if inline:
            return InlinePool(threads=spec.trial.threads)
        from miras_search.parallel import RayPool

        return RayPool(workers, address, spec.parallel.gpus_per_trial)

    tracker = None
    mode = wandb or spec.tracking.wandb
    if mode != "off":
        from miras_search.tracking import WandbTracker

        tracker = WandbTracker(spec.name, spec.out_dir() / "wandb", mode, spec.tracking.project,
                               spec.tracking.entity)
    best = _BestSoFar(spec.objective_records)
    # opened before the progress bar: a study it refuses (changed file, old measure) shows no bar
    driver = StudyDriver(spec, pool_factory, storage=storage, trials=trials, timeout_s=timeout,
                         tracker=tracker)
    with _progress() as bar:
        task = bar.add_task(escape(spec.name), total=None, running=0, best="")

        def show(event: Event) -> None:
            if event.kind == "note":
                bar.console.print(f"[yellow]{escape(event.message)}[/]")
            if event.kind == "finished" and event.trial is not None:
                best.add(event.trial)
            bar.update(task, total=event.target, completed=event.finished, running=event.running,
                       best=escape(best.text()))

        driver.on_event = show
        for trial in feasible_complete(driver.study):  # what earlier runs found counts too
            best.add(trial)
        summary = driver.run()
    _report(summary, tracker)
    if summary.stopped_because is not None:
        raise MirasError(f"study '{spec.name}' stopped: {summary.stopped_because}")
    if summary.interrupted:
        console.print(f"[yellow]stopped[/]: running trials were marked interrupted; continue with "
                      f"`miras resume {escape(str(path))}`", highlight=False)
        raise typer.Exit(130)
    _fail_if_nothing_completed(driver.study)


class _BestSoFar:
    """The best value per objective over the study's feasible complete trials (what ``miras
    status`` shows), fed with finished trials; pruned trials' values are training losses."""

    def __init__(self, records: list[dict[str, str]]) -> None:
        self.records = records
        self.values: list[float | None] = [None] * len(records)

    def add(self, trial: FrozenTrial) -> None:
        if trial.state != TrialState.COMPLETE or not trial.values or not is_feasible(trial):
            return
        for i, (record, value) in enumerate(zip(self.records, trial.values, strict=True)):
            better = min if record["direction"] == "minimize" else max
            self.values[i] = value if self.values[i] is None else better(self.values[i], value)

    def text(self) -> str:
        shown = "  ".join(f"{r['name']} {v:.4g}" for r, v in zip(self.records, self.values, strict=True)
                          if v is not None)
        return f"best {shown}" if shown else ""


def _trained(trial: FrozenTrial) -> bool:
    """Complete, or pruned after some training (a limit prunes before any)."""
    return trial.state == TrialState.COMPLETE or (
        trial.state == TrialState.PRUNED and trial.user_attrs.get("failure") != "limit")


def _fail_if_nothing_completed(study: optuna.Study) -> None:
    """MirasError listing the reasons when no trial of the study has trained (exit 1, not 0):
    every one failed, or was pruned by a limit before training."""
    trials = study.get_trials(deepcopy=False)
    if not trials or any(_trained(t) for t in trials):
        return
    listed = "; ".join(f"{group.count} x {group.latest}" for group in failure_groups(trials)[:3])
    limited = sum(t.state == TrialState.PRUNED for t in trials)
    failed = sum(t.state == TrialState.FAIL for t in trials)
    how = f"{failed} failed, {limited} pruned by a limit before training"
    raise MirasError(f"no trial of study '{study.study_name}' trained ({how}): {listed}")


def _report(summary: RunSummary, tracker) -> None:
    if summary.already_done:
        console.print(
            f"study [bold]{escape(summary.study_name)}[/] already has {summary.finished}/"
            f"{summary.target} finished trials: nothing to run (pass --trials N for more)",
            highlight=False,
        )
        return
    overhead = sum(summary.overhead_s) / len(summary.overhead_s) if summary.overhead_s else 0.0
    target = summary.target if summary.target is not None else "-"
    console.print(
        f"study [bold]{escape(summary.study_name)}[/]: {summary.finished}/{target} finished trials "
        f"({summary.ran} trained and {summary.reused} reused in this run, {summary.wall_s:.0f} s, "
        f"orchestration {overhead:.2f} s/trial)", highlight=False,
    )
    console.print(f"storage: {escape(redact_url(summary.storage))}", highlight=False)
    if tracker is not None and tracker.error:
        console.print(f"[yellow]W&B tracking was turned off[/]: {escape(tracker.error)}")


_WORKERS = Annotated[int | None, typer.Option("--workers", "-w", min=1, help="Parallel trials (Ray workers).")]
_ADDRESS = Annotated[str | None, typer.Option(help="Join this Ray cluster instead of starting one.")]
_TRIALS = Annotated[int | None, typer.Option(min=1, help="Finished trials to reach (overrides the file).")]
_TIMEOUT = Annotated[float | None, typer.Option(callback=positive_finite,
                                                help="Wall-clock budget in seconds of this run.")]
_WANDB = Annotated[str | None, typer.Option("--wandb", help="offline (default), online or off.")]
_INLINE = Annotated[bool, typer.Option("--inline", help="Run trials in this process, without Ray.")]


def _check_wandb(value: str | None) -> None:
    if value is not None and value not in ("offline", "online", "off"):
        raise MirasError(f"--wandb must be offline, online or off, not '{value}'")


@command("run")
def run(study: Annotated[Path, typer.Argument(help="A study YAML file.")], workers: _WORKERS = None,
        address: _ADDRESS = None, storage: _STORAGE = None, trials: _TRIALS = None,
        timeout: _TIMEOUT = None, wandb: _WANDB = None, inline: _INLINE = False) -> None:
    """Run a study: anchors first, then sampled points, in parallel on Ray; resumable."""
    _check_wandb(wandb)
    _run(study, workers, address, storage, trials, timeout, wandb, inline, must_exist=False)


@command("resume")
def resume(study: Annotated[Path, typer.Argument(help="The study YAML file of an earlier run.")],
           workers: _WORKERS = None, address: _ADDRESS = None, storage: _STORAGE = None,
           trials: _TRIALS = None, timeout: _TIMEOUT = None, wandb: _WANDB = None,
           inline: _INLINE = False) -> None:
    """Continue a study after any interruption: trials that were running are failed as
    'interrupted' and queued again; finished trials are kept; it runs to the requested number."""
    _check_wandb(wandb)
    _run(study, workers, address, storage, trials, timeout, wandb, inline, must_exist=True)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _status_table(state: StudyStatus) -> Table:
    target = state.target if state.target is not None else "-"
    table = Table(title=escape(f"study {state.name}: {state.finished}/{target} finished"))
    for column in ("complete", "running", "pruned", "failed", "interrupted", "waiting", "of which reused", "ETA"):
        table.add_column(column, justify="right")
    eta = "-" if state.eta_s is None else str(datetime.timedelta(seconds=round(state.eta_s)))
    table.add_row(*(str(v) for v in (state.complete, state.running, state.pruned, state.failed,
                                      state.interrupted, state.waiting, state.reused)), eta)
    best = Table(title="best so far")
    for column in ("objective", "direction", "value", "trial", "point"):
        best.add_column(column)
    for record, trial in zip(state.objectives, state.best, strict=True):
        if trial is None:
            best.add_row(escape(record["name"]), record["direction"], "-", "-", "-")
            continue
        index = state.objectives.index(record)
        axes = trial.user_attrs.get("axes") or {}
        label = trial.user_attrs.get("anchor") or " / ".join(str(v) for v in axes.values())
        best.add_row(escape(record["name"]), record["direction"], _fmt(trial.values[index]), str(trial.number),
                     escape(label))
    grid = Table.grid()
    grid.add_row(table)
    grid.add_row(best)
    if state.failures:
        why = Table(title="why trials did not complete")
        for column in ("reason", "trials", "the latest"):
            why.add_column(column, justify="right" if column == "trials" else "left")
        for group in state.failures:
            why.add_row(escape(group.kind), str(group.count), escape(group.latest))
        grid.add_row(why)
    return grid


@command("status")
def status_cmd(study: _STUDY, storage: _STORAGE = None,
               watch: Annotated[bool, typer.Option("--watch", help="Refresh every 2 s until Ctrl-C.")] = False) -> None:
    """Finished / running / pruned / failed trials, why trials did not complete, the best so far
    per objective, and an ETA."""
    opened = open_study(study, storage)
    warn_if_study_file_changed(study, opened)
    if not watch:
        console.print(_status_table(status(opened)))
        return
    try:
        with Live(_status_table(status(opened)), console=console, refresh_per_second=1) as live:
            while True:
                time.sleep(2)
                live.update(_status_table(status(open_study(study, storage))))
    except KeyboardInterrupt:
        pass


@command("best")
def best(study: _STUDY, storage: _STORAGE = None,
         n: Annotated[int, typer.Option("-n", min=1, help="How many points.")] = 3,
         full: Annotated[bool, typer.Option("--full", help="Every field, not only non-defaults.")] = False) -> None:
    """The top points (the Pareto front first for several objectives) as YAML point documents."""
    opened = open_study(study, storage)
    warn_if_study_file_changed(study, opened)
    top = ranked(opened)[:n]
    if not top:
        raise MirasError(f"study '{opened.study_name}' has no complete (feasible) trial yet")
    records = objective_records(opened)
    docs = []
    for trial in top:
        point = stored_point(trial.user_attrs.get("point"), trial.number)
        meta = {
            "study": opened.study_name, "trial": trial.number, "anchor": trial.user_attrs.get("anchor"),
            "objectives": {r["name"]: v for r, v in zip(records, trial.values, strict=True)},
        }
        docs.append(point_to_yaml(point, compact=not full, meta=meta))
    console.print("---\n".join(docs), highlight=False, markup=False, soft_wrap=True)

