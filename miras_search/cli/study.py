"""Study commands: ``miras run``, ``miras resume``, ``miras status``, ``miras best``."""

from __future__ import annotations

import contextlib
import datetime
import logging
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.cells import cell_len
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from miras_search.cli.app import (
    command,
    console,
    interactive,
    print_note,
    print_text,
    stdout_closed,
    table_width,
)
from miras_search.cli.checks import (
    STORAGE_HELP,
    gpu_request,
    positive_finite,
    warn_about_opened_study,
    warn_left_out,
    warn_unreadable_trials,
)
from miras_search.errors import MirasError
from miras_search.redact import install_log_redaction, redact_text, redact_url

if TYPE_CHECKING:  # imported where used: `miras --help` must not import Optuna or torch
    import optuna
    from optuna.trial import FrozenTrial

    from miras_search.study import Event, RunSummary
    from miras_search.study.summary import StudyStatus

_STUDY = Annotated[str, typer.Argument(help="A study YAML file, or a study name with --storage.")]
_STORAGE = Annotated[str | None, typer.Option(help=STORAGE_HELP)]


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("running {task.fields[running]}"), TextColumn("{task.fields[best]}"),
        TimeElapsedColumn(), console=console,
    )


def _target(target: int | None) -> str:
    return "-" if target is None else str(target)


def _point_label(trial: FrozenTrial) -> str:
    """A trial's point in a few words: its anchor's name, else its axes ('mlp / lp / lq / gd')."""
    axes = trial.user_attrs.get("axes") or {}
    return trial.user_attrs.get("anchor") or " / ".join(str(v) for v in axes.values())


def _trial_line(event: Event, records: list[dict[str, str]], best: _BestSoFar, elapsed_s: float) -> str:
    """'[0:00:12] trial 3 (yaad) complete: val_bpb 7.501; 3/6 finished, best val_bpb 7.501'."""
    from optuna.trial import TrialState

    from miras_search.study.records import is_feasible

    trial = event.trial
    attrs = trial.user_attrs
    label = _point_label(trial)
    failure = attrs.get("failure")
    if trial.state == TrialState.COMPLETE:
        values = ", ".join(f"{r['name']} {v:.4g}" for r, v in zip(records, trial.values or [], strict=False))
        outcome = f"complete: {values or 'no value'}"
        if not is_feasible(trial):
            outcome += " (infeasible: over a constraint)"
        if attrs.get("reused_from") is not None:
            outcome += f" (reused from trial {attrs['reused_from']})"
    elif trial.state == TrialState.PRUNED and failure == "limit":
        outcome = f"pruned by a limit: {attrs.get('reason') or 'limit'}"
    elif trial.state == TrialState.PRUNED:
        steps = max(trial.intermediate_values, default=None)
        outcome = "pruned" + (f" at step {steps}" if steps is not None else "")
    else:
        outcome = f"failed ({failure or 'error'}): {attrs.get('reason') or '-'}"
    ranked = best.text()
    elapsed = datetime.timedelta(seconds=round(elapsed_s))
    return (f"[{elapsed}] trial {trial.number}{f' ({label})' if label else ''} {outcome}; "
            f"{event.finished}/{_target(event.target)} finished{f', {ranked}' if ranked else ''}")


def _run(path: Path, workers: int | None, address: str | None, storage: str | None,
         trials: int | None, timeout: float | None, wandb: str | None, inline: bool,
         must_exist: bool, cluster: _Cluster | None = None) -> None:
    from miras_search.study import InlinePool, StudyDriver, load_study_file, open_study, storage_of
    from miras_search.study.summary import feasible_complete

    if inline and workers is not None and workers > 1:
        raise MirasError(f"--workers {workers} has no effect with --inline: inline trials run one at a "
                         "time in this process; drop --inline to run them on Ray workers, or --workers")
    spec = load_study_file(path)
    if must_exist:
        open_study(spec, storage)  # MirasError when there is nothing to resume
    workers = workers or spec.parallel.workers
    address = address or spec.parallel.address
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    install_log_redaction()
    options = cluster or _Cluster()
    gpus = options.gpus_per_trial if options.gpus_per_trial is not None else spec.parallel.gpus_per_trial
    if inline and gpus:
        _check_inline_gpus(gpus, given=options.gpus_per_trial is not None)

    def pool_factory():
        if inline:
            return InlinePool(threads=spec.trial.threads)
        from miras_search.parallel import RayPool

        return RayPool(workers, address, gpus, storage=storage_of(spec, storage),
                       shared_storage=options.shared_storage or spec.parallel.shared_storage,
                       warm_up=tracker.worker_warm_up if tracker is not None else None, note=print_note)

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
    driver.check_free()  # a study another driver runs: refused before the progress bar, too
    warn_unreadable_trials(driver.study)
    if _trials_on_gpus(inline, gpus):
        _note_gpu_kernel_share(spec, path)
    started = time.monotonic()
    # a bar where one can be drawn; elsewhere (a pipe, `| tee`, nohup, CI, TERM=dumb) Live shows
    # nothing until the end: a plain line per finished trial instead
    with _progress() if interactive() else contextlib.nullcontext() as bar:
        task = bar.add_task(escape(spec.name), total=None, running=0, best="") if bar is not None else None

        def show(event: Event) -> None:
            if event.kind == "note":
                (bar.console if bar is not None else console).print(f"[yellow]{escape(event.message)}[/]")
            if event.kind == "finished" and event.trial is not None:
                best.add(event.trial)
            if bar is not None:
                bar.update(task, total=event.target, completed=event.finished, running=event.running,
                           best=escape(best.text()))
            elif event.kind == "setup":
                console.print(f"study {spec.name}: {event.finished}/{_target(event.target)} finished trials; "
                              "a line per trial as it finishes", highlight=False, markup=False, soft_wrap=True)
            elif event.kind == "finished" and event.trial is not None:
                console.print(redact_text(_trial_line(event, spec.objective_records, best, time.monotonic() - started)),
                              highlight=False, markup=False, soft_wrap=True)

        driver.on_event = show
        for trial in feasible_complete(driver.study):  # what earlier runs found counts too
            best.add(trial)
        summary = driver.run()
    _report(summary, tracker)
    if summary.stopped_because is not None:
        raise MirasError(f"study '{spec.name}' stopped: {summary.stopped_because}")
    if summary.lost is not None:
        raise MirasError(f"study '{spec.name}' stopped: {summary.lost} (or `miras resume "
                         f"{shlex.quote(str(path))}`); the trials that were running were marked "
                         "interrupted and run again first")
    if summary.interrupted:
        by = "" if summary.interrupted_by == "Ctrl-C" else f" by {summary.interrupted_by}"
        marked = summary.marked_interrupted
        what = (f"{marked} running trial{'s were' if marked != 1 else ' was'} marked interrupted (queued "
                "to run again first)" if marked else "no trial was running")
        console.print(f"[yellow]stopped{by}[/]: {what}; continue with "
                      f"`miras resume {escape(shlex.quote(str(path)))}`", highlight=False)
        raise typer.Exit(summary.exit_code)
    _fail_if_nothing_completed(driver.study, driver.timeout_s, path)


def _check_inline_gpus(gpus_per_trial: float, given: bool) -> None:
    """Inline trials train on this machine's GPU: a GPU request that none here can grant is
    refused, as Ray refuses it, rather than silently run on the CPU."""
    import torch

    if not torch.cuda.is_available():
        source = "--gpus-per-trial" if given else "the study's parallel.gpus_per_trial"
        raise MirasError(
            f"{source} asks for {gpus_per_trial:g} GPU per trial, but no CUDA GPU is visible here and "
            "--inline trials run in this process: give --gpus-per-trial 0 to train on the CPU, or "
            "run without --inline on a machine or Ray cluster with GPUs"
        )


def _trials_on_gpus(inline: bool, gpus_per_trial: float | None) -> bool:
    """Whether a run's trials train on GPUs: inline ones on this machine's when it has CUDA; Ray
    workers with a share of one (by default, a whole one where there are GPUs)."""
    if inline or gpus_per_trial is None:
        import torch

        return torch.cuda.is_available()
    return gpus_per_trial > 0


GPU_SHARE_POINTS = 200
"""Points a GPU study's start draws to say what share of its space trains on a kernel."""


def _note_gpu_kernel_share(spec, path: Path) -> None:
    """Before a study whose trials train on GPUs: the share of its points whose memory layers run
    a kernel there, when some run the PyTorch form (much slower: ``miras kernels`` says why)."""
    from miras_search.model.gpu_path import coverage

    try:
        found = coverage(spec.sample_trial_points(GPU_SHARE_POINTS, seed=0)[0])
    except MirasError:  # a space with few valid points: no estimate, and the study runs as before
        return
    if found.on_kernel < found.memory_points:
        console.print(f"[yellow]on a GPU[/], {found.on_kernel} of {found.memory_points} memory points of "
                      f"this study ({GPU_SHARE_POINTS} drawn) train on a kernel; the rest run the slower "
                      f"PyTorch form (`miras kernels {escape(shlex.quote(str(path)))}` says why)", highlight=False)


class _BestSoFar:
    """The best value per objective over the study's feasible complete trials (what ``miras
    status`` shows), fed with finished trials; pruned trials' values are training losses."""

    def __init__(self, records: list[dict[str, str]]) -> None:
        self.records = records
        self.values: list[float | None] = [None] * len(records)

    def add(self, trial: FrozenTrial) -> None:
        from optuna.trial import TrialState

        from miras_search.study.records import is_feasible

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
    from optuna.trial import TrialState

    return trial.state == TrialState.COMPLETE or (
        trial.state == TrialState.PRUNED and trial.user_attrs.get("failure") != "limit")


def _fail_if_nothing_completed(study: optuna.Study, timeout_s: float | None, path: Path) -> None:
    """MirasError listing the reasons when no trial of the study has trained (exit 1, not 0):
    every one failed, or was pruned by a limit before training, or the run's wall-clock budget
    (``timeout_s``) ended before any trial started."""
    from optuna.trial import TrialState

    from miras_search.study.summary import failure_groups

    trials = study.get_trials(deepcopy=False)
    if any(_trained(t) for t in trials):
        return
    groups = failure_groups(trials)
    if not groups and not trials and timeout_s is None:
        return
    if not groups:
        queued = sum(t.state == TrialState.WAITING for t in trials)
        budget = "its wall-clock budget" if timeout_s is None else f"the wall-clock budget of {timeout_s:g} s"
        raise MirasError(
            f"no trial of study '{study.study_name}' trained: {budget} (--timeout, or the study "
            f"file's timeout) ended before any trial started, with {queued} queued; "
            f"`miras resume {shlex.quote(str(path))}` runs them (with a larger --timeout, or none)"
        )
    listed = "; ".join(f"{group.count} x {group.latest}" for group in groups[:3])
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
        f"({summary.ran} ran and {summary.reused} reused in this run, {summary.wall_s:.0f} s, "
        f"orchestration {overhead:.2f} s/trial)", highlight=False,
    )
    failed = sum(group.count for group in summary.failures)
    if summary.pruned or failed:  # the line above counts every finished trial
        parts = [f"{summary.complete} complete"] + ([f"{summary.pruned} pruned"] if summary.pruned else [])
        if failed:
            parts.append(f"{failed} failed ({', '.join(f'{group.kind} {group.count}' for group in summary.failures)})")
        console.print(f"of the finished trials: {', '.join(parts)}; `miras status` says why", highlight=False)
    if summary.promoted:
        console.print(f"successive halving: {summary.promoted} longer run(s) of promoted points stored as "
                      "fidelity results (`miras best` ranks by the highest fidelity)", highlight=False)
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
_GPUS = Annotated[float | None, typer.Option(
    "--gpus-per-trial", callback=gpu_request, help="GPUs each trial holds; a fraction (0.5, 0.25) "
    "runs several on one GPU, each within its share of the GPU's memory; above 1 a whole number "
    "(default: the file's parallel.gpus_per_trial, else 1 with GPUs, 0 without).")]
_SHARED = Annotated[bool, typer.Option(
    "--shared-storage", help="The storage file is on a file system every cluster node mounts.")]


@dataclass
class _Cluster:
    """Cluster options of run / resume that override the study file's ``parallel`` section."""

    gpus_per_trial: float | None = None
    shared_storage: bool = False


def _check_wandb(value: str | None) -> None:
    if value is not None and value not in ("offline", "online", "off"):
        raise MirasError(f"--wandb must be offline, online or off, not '{value}'")


@command("run")
def run(study: Annotated[Path, typer.Argument(help="A study YAML file.")], workers: _WORKERS = None,
        address: _ADDRESS = None, storage: _STORAGE = None, trials: _TRIALS = None,
        timeout: _TIMEOUT = None, wandb: _WANDB = None, inline: _INLINE = False,
        gpus_per_trial: _GPUS = None, shared_storage: _SHARED = False) -> None:
    """Run a study: anchors first, then sampled points, in parallel on Ray; resumable."""
    _check_wandb(wandb)
    _run(study, workers, address, storage, trials, timeout, wandb, inline, must_exist=False,
         cluster=_Cluster(gpus_per_trial, shared_storage))


@command("resume")
def resume(study: Annotated[Path, typer.Argument(help="The study YAML file of an earlier run.")],
           workers: _WORKERS = None, address: _ADDRESS = None, storage: _STORAGE = None,
           trials: _TRIALS = None, timeout: _TIMEOUT = None, wandb: _WANDB = None,
           inline: _INLINE = False, gpus_per_trial: _GPUS = None, shared_storage: _SHARED = False) -> None:
    """Continue a study after any interruption: trials that were running are failed as
    'interrupted' and queued again; finished trials are kept; it runs to the requested number."""
    _check_wandb(wandb)
    _run(study, workers, address, storage, trials, timeout, wandb, inline, must_exist=True,
         cluster=_Cluster(gpus_per_trial, shared_storage))


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _counts_line(state: StudyStatus) -> str:
    """'12/16 finished: 10 complete (2 reused), 1 running, ... ETA 0:03:12' (fits 80 columns
    where a table of eight count columns did not)."""
    target = state.target if state.target is not None else "-"
    notes = [f"{state.reused} reused"] if state.reused else []
    if state.not_finite:
        notes.append(f"{state.not_finite} not finite, not ranked")
    complete = f"{state.complete} complete" + (f" ({', '.join(notes)})" if notes else "")
    running = state.running if not state.driver_stopped else 0
    # queued (anchors, retries) but past the target of a study no driver runs: they wait for a
    # run with a higher --trials, which the bare word "waiting" did not say
    idle = not state.driver_live and state.target is not None and state.finished >= state.target
    waiting = (f"queued, not run: the study's target is {state.target} finished trials "
               "(`--trials N` runs them)") if idle else "waiting"
    counts = [complete, *(f"{count} {label}" for count, label in (
        (running, "running"), (state.pruned, "pruned"), (state.failed, "failed"),
        (state.interrupted, "interrupted"), (state.waiting, waiting),
        (state.fidelity, "longer/larger runs")) if count)]
    if state.driver_stopped:  # a killed driver leaves them RUNNING in storage
        were = "1 was" if state.running == 1 else f"{state.running} were"
        counts.append(f"{were} running when its driver stopped (no driver holds the study now; "
                      "`miras resume` runs them again)")
    eta = "-" if state.eta_s is None or not state.driver_live else str(
        datetime.timedelta(seconds=round(state.eta_s)))
    return f"{state.finished}/{target} finished: {', '.join(counts)}; ETA {eta}"


def _status_table(state: StudyStatus, width: int | None = None) -> Table:
    """The status; within ``width`` (a narrow terminal) the best-so-far table leaves out its point
    column, then its trial column, rather than cut a value to "6.3…"."""
    grid = Table.grid()
    grid.add_row(Text(f"study {state.name}", style="bold"))
    grid.add_row(Text(_counts_line(state)))
    for columns in (("objective", "value", "trial", "point"), ("objective", "value", "trial"), ("objective", "value")):
        best = _best_table(state, columns)
        if width is None or Console(width=10_000).measure(best).minimum <= width:
            break
    grid.add_row(best)
    if state.failures:
        why = Table(title="why trials did not complete", title_justify="left")
        for column in ("reason", "trials", "the latest"):
            why.add_column(column, justify="right" if column == "trials" else "left")
        for group in state.failures:
            why.add_row(escape(group.kind), str(group.count), escape(group.latest))
        grid.add_row(why)
    return grid


def _best_table(state: StudyStatus, columns: tuple[str, ...]) -> Table:
    rows = []
    for index, (record, trial) in enumerate(zip(state.objectives, state.best, strict=True)):
        arrow = "↓" if record["direction"] == "minimize" else "↑"
        if trial is None:
            rows.append((f"{record['name']} {arrow}", "-", "-", "-"))
            continue
        rows.append((f"{record['name']} {arrow}", _fmt(trial.values[index]), f"#{trial.number}", _point_label(trial)))
    best = Table(title="best so far", title_justify="left")
    for i, column in enumerate(columns):
        if column == "point":  # wraps at its spaces ("mlp / lp /" over "l2 / gd")
            best.add_column(column)
            continue
        # never wrapped or cut: their full width is also the least the column takes
        widest = max(cell_len(text) for text in [column, *(row[i] for row in rows)])
        best.add_column(column, justify="right" if column in ("value", "trial") else "left", no_wrap=True,
                        min_width=widest)
    for row in rows:
        best.add_row(*(escape(cell) for cell in row[:len(columns)]))
    return best


_WATCH_S = 2.0


@command("status")
def status_cmd(study: _STUDY, storage: _STORAGE = None,
               watch: Annotated[bool, typer.Option("--watch", help="Refresh every 2 s until Ctrl-C.")] = False) -> None:
    """Finished / running / pruned / failed trials, why trials did not complete, the best so far
    per objective, and an ETA. With --watch on a terminal the table refreshes in place; piped
    (`| tee log`), a new table is printed whenever it changes."""
    from miras_search.study import open_study
    from miras_search.study.summary import status

    opened = open_study(study, storage)
    warn_about_opened_study(study, opened)
    if not watch:
        console.print(_status_table(status(opened), table_width()))
        return
    try:
        if interactive():
            with Live(_status_table(status(opened), table_width()), console=console, refresh_per_second=1) as live:
                while True:
                    time.sleep(_WATCH_S)
                    live.update(_status_table(status(open_study(study, storage)), table_width()))
        else:
            _watch_piped(lambda: _status_table(status(open_study(study, storage)), table_width()))
    except KeyboardInterrupt:
        pass


def _watch_piped(table) -> None:
    """Print the status with a time stamp each time it changes, flushed at once (a pipe would
    otherwise hold it back); Live's in-place refresh needs a terminal and prints nothing to a pipe
    or a dumb terminal. Ends (exit 0) when the pipe's reader has gone (`| head -20`): checked at
    each refresh, also while the table stays the same."""
    last = None
    while not stdout_closed():
        with console.capture() as captured:
            console.print(table())
        text = captured.get()
        if text != last:
            console.print(f"-- {datetime.datetime.now():%H:%M:%S}", highlight=False, markup=False)
            console.file.write(text)
            console.file.flush()
            last = text
        time.sleep(_WATCH_S)


@command("best")
def best(study: _STUDY, storage: _STORAGE = None,
         top: Annotated[int, typer.Option("--top", "-n", min=1, help="How many points.")] = 3,
         full: Annotated[bool, typer.Option("--full", help="Every field, not only non-defaults.")] = False) -> None:
    """The top points (the Pareto front first for several objectives) as YAML point documents."""
    from miras_search.points import point_to_yaml
    from miras_search.study import open_study
    from miras_search.study.fidelity import describe as describe_fidelity
    from miras_search.study.records import nothing_rebuildable, rebuildable, stored_point
    from miras_search.study.summary import objective_records, ranked_scores

    opened = open_study(study, storage)
    warn_about_opened_study(study, opened)
    ranked = ranked_scores(opened)
    if not ranked:
        raise MirasError(f"study '{opened.study_name}' has no complete (feasible) trial yet")
    chosen, passed = rebuildable(ranked, top, lambda score: stored_point(
        score.trial.user_attrs.get("point"), score.trial.number))
    if not chosen:
        raise nothing_rebuildable(opened.study_name, passed, "`miras best` has no point to show")
    warn_left_out(opened.study_name, [trial.left_out("`miras best`") for trial in passed])
    records = objective_records(opened)
    docs = []
    for score, point in chosen:
        trial = score.trial
        meta = {  # the values it was ranked by: over several runs (seeds of a scale rung), their mean
            "study": opened.study_name, "trial": trial.number, "anchor": trial.user_attrs.get("anchor"),
            "objectives": {r["name"]: v for r, v in zip(records, score.values, strict=True)},
            "fidelity": describe_fidelity(trial) + (f", mean of {score.runs} runs" if score.runs > 1 else ""),
        }
        docs.append(point_to_yaml(point, compact=not full, meta=meta))
    print_text("---\n".join(docs))

