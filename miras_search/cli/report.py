"""Commands over a study's results: ``miras report``, ``export``, ``confirm``, ``dashboard``."""

from __future__ import annotations

import csv as csv_module
import io
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from miras_search.cli.app import command, console, print_text, table_width
from miras_search.cli.checks import (
    STORAGE_HELP,
    device_choice,
    output_file,
    output_folder,
    positive_finite,
    warn_about_opened_study,
    warn_left_out,
)
from miras_search.errors import MirasError
from miras_search.paths import input_folders, names_a_file

if TYPE_CHECKING:  # imported where used: `miras --help` must not import torch or matplotlib
    from miras_search.report.anchors import AnchorVerdict
    from miras_search.report.confirm import ConfirmResult
    from miras_search.report.study_data import ObjectiveInfo, TrialRow
    from miras_search.trial import TrialResult

_STUDY = "A study YAML file (its name and storage are used), or a study name with --storage."
StudyArg = Annotated[str, typer.Argument(help=_STUDY)]
StorageOpt = Annotated[str | None, typer.Option("--storage", help=STORAGE_HELP)]


def _study_dir(study: str, study_name: str) -> Path:
    """``<run_dir>/<name>``: the study file's run_dir when ``study`` is a study file (as
    ``miras run`` uses it), else runs/."""
    from miras_search.study.spec import load_study_file

    if names_a_file(study):
        return load_study_file(study).out_dir()
    return Path("runs") / study_name


def _read_confirm(folder: Path) -> ConfirmResult | None:
    """The study's ``miras confirm`` result if there is a readable one; a warning if it is broken."""
    from miras_search.report.confirm import ConfirmResult

    path = folder / "confirm" / "confirm.json"
    if not path.exists():
        return None
    try:
        return ConfirmResult.read_json(path)
    except MirasError as error:
        console.print(f"[yellow]warning:[/] {escape(str(error))}; the report leaves out the proxy check "
                      "(run `miras confirm` again to redo it)", highlight=False, soft_wrap=True)
        return None


@command("report")
def report(
    study: StudyArg,
    storage: StorageOpt = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder (default <run_dir>/<name>/report).")] = None,
    top: Annotated[int, typer.Option("--top", "-n", min=1, help="Searched points shown in the figures.")] = 10,
    rows: Annotated[int, typer.Option(min=1, help="Leaderboard rows printed in the terminal.")] = 20,
) -> None:
    """Write the study's HTML report (each anchor against the searched points, leaderboard, Pareto
    front, importances, curves, tasks) and PNGs; print the anchors' verdict and the leaderboard."""
    from miras_search.report.build import build_report
    from miras_search.report.leaderboard import leaderboard_table
    from miras_search.report.study_data import open_report_study

    opened = open_report_study(study, storage)
    warn_about_opened_study(study, opened)
    folder = _study_dir(study, opened.study_name)
    out = output_folder("--out", out or folder / "report")
    written = build_report(opened, out, top=top, confirm=_read_confirm(folder))
    _print_anchors(written.anchors, written.objectives)
    if written.board:
        console.print(leaderboard_table(written.board, written.objectives, top=rows,
                                        title=f"{escape(opened.study_name)}: leaderboard",
                                        width=table_width()))
    else:
        console.print("[yellow]no complete trial to rank yet[/] (the report's summary says why)")
    console.print(f"wrote {escape(str(written.html))} and {len(written.images)} figures", highlight=False)


def _print_anchors(verdicts: list[AnchorVerdict], objectives: list[ObjectiveInfo]) -> None:
    """One line per anchor the study ran; the named models it never ran in one line."""
    ran = [v for v in verdicts if v.outcome != "not run"]
    if not ran:
        return
    console.print("[bold]against the anchors[/]")
    for verdict in ran:
        console.print(verdict.sentence(objectives), highlight=False, markup=False, soft_wrap=True)
    missing = [v.name for v in verdicts if v.outcome == "not run"]
    if missing:
        console.print(f"not run in this study: {', '.join(missing)}", highlight=False, markup=False, soft_wrap=True)


@command("export")
def export(
    study: StudyArg,
    storage: StorageOpt = None,
    top: Annotated[int, typer.Option("--top", "-n", min=1, help="How many points.")] = 5,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder (default <run_dir>/<name>/points).")] = None,
    csv: Annotated[str | None, typer.Option(
        "--csv", metavar="FILE", help="Instead: every trial as one CSV line to FILE ('-': stdout).")] = None,
    weights: Annotated[bool, typer.Option(
        "--weights", help="Also copy each point's kept weights (study option checkpoints.keep).")] = False,
) -> None:
    """Write the top points as standalone point YAML files (loadable by `miras train`): the
    points `miras best --top TOP` shows, in its order. With --csv, write every trial (state,
    objectives, axes, parameters, metrics; exact values) as CSV instead."""
    from miras_search.report.export import export_top
    from miras_search.report.study_data import open_report_study

    opened = open_report_study(study, storage)
    warn_about_opened_study(study, opened)
    if csv is not None:
        _write_csv(opened, csv)
        return
    folder = _study_dir(study, opened.study_name)
    paths = export_top(opened, top, output_folder("--out", out or folder / "points"),
                       notice=lambda note: warn_left_out(opened.study_name, [note]))
    if not paths:
        raise MirasError(f"study '{opened.study_name}' has no complete (feasible) trial yet; nothing to export")
    for path in paths:
        console.print(f"wrote {escape(str(path))}", highlight=False)
    if weights:
        _export_weights(paths, folder / "checkpoints")


def _export_weights(paths: list[Path], checkpoints: Path) -> None:
    """Copy ``checkpoints/trial<N>.pt`` beside each exported ``rank<NN>-trial<N>.yaml``."""
    import shutil

    missing = []
    for path in paths:
        number = int(path.stem.rsplit("trial", 1)[1])
        source = checkpoints / f"trial{number}.pt"
        if source.is_file():
            shutil.copyfile(source, path.with_suffix(".pt"))
            console.print(f"wrote {escape(str(path.with_suffix('.pt')))}", highlight=False)
        else:
            missing.append(number)
    if missing:
        raise MirasError(
            f"no kept weights for trial(s) {', '.join(map(str, missing))} in {checkpoints}: the study "
            "keeps the final weights of its best trials only with `checkpoints: {keep: N}` in its file "
            "(set before the trials ran), and only up to checkpoints.max_mb each")


def _write_csv(opened, target: str) -> None:
    from miras_search.report.table import trials_csv

    text = trials_csv(opened)
    if target == "-":
        print_text(text)
        return
    path = output_file("--csv", Path(target), "trials.csv", replaces=("a trials CSV of `miras export`", _is_trials_csv))
    path.write_text(text)
    # records, not lines: a quoted reason may span several lines
    count = max(sum(1 for _ in csv_module.reader(io.StringIO(text))) - 1, 0)
    console.print(f"wrote {escape(str(path))} ({count} trial{'s' if count != 1 else ''})", highlight=False)


def _is_trials_csv(path: Path) -> bool:
    """Whether ``path`` reads as an earlier ``export --csv`` (its header starts with 'number,')."""
    try:
        with path.open(encoding="utf-8", errors="replace") as file:
            return file.readline(4096).startswith("number,")
    except OSError:
        return False


@command("compare")
def compare(
    first: Annotated[str, typer.Argument(help="A study YAML file or name.")],
    second: Annotated[str, typer.Argument(help="Another study YAML file or name.")],
    storage: StorageOpt = None,
    top: Annotated[int, typer.Option("--top", "-n", min=1, help="Best points listed per study.")] = 3,
) -> None:
    """Two studies side by side: trials, best and median of each shared objective, their best
    points, and a Mann-Whitney U test of whether one study's complete trials score better."""
    from miras_search.report.compare import compare_studies
    from miras_search.report.study_data import open_report_study

    studies = [open_report_study(name, storage) for name in (first, second)]
    for name, opened in zip((first, second), studies, strict=True):
        warn_about_opened_study(name, opened)
    comparison = compare_studies(*studies, top=top)
    console.print(comparison.table(width=table_width()))
    for line in comparison.notes:
        console.print(line, highlight=False, markup=False, soft_wrap=True)


def _show_run(row: TrialRow, seed: int, result: TrialResult) -> None:
    """One line per long run; a failed one says why."""
    if result.ok:
        console.print(f"  {escape(row.label)} seed {seed}: ok", highlight=False)
    else:
        console.print(f"  {escape(row.label)} seed {seed}: [red]{result.failure}[/]: {escape(result.reason or '')}",
                      highlight=False, soft_wrap=True)


def _confirm_table(result: ConfirmResult, study_name: str) -> Table:
    table = Table(title=escape(f"{study_name}: short vs {result.scale:g}x longer training"))
    for column in ("point", f"short {result.objective.name}", "long mean", "long std", "seeds ok"):
        table.add_column(escape(column), justify="left" if column == "point" else "right")
    for entry in result.entries:
        table.add_row(escape(entry.label), f"{entry.short:.4g}", entry.long_mean_text,
                      entry.long_std_text, f"{len(entry.long)}/{len(result.seeds)}")
    return table


@command("confirm")
def confirm(
    study: StudyArg,
    storage: StorageOpt = None,
    top: Annotated[int, typer.Option("--top", "-n", min=1, help="Top points to re-train (the named models in the study are added).")] = 5,
    scale: Annotated[float, typer.Option("--scale", callback=positive_finite,
                                         help="Token budget multiplier.")] = 4.0,
    seeds: Annotated[int, typer.Option(min=1, help="Seeds per point (0, 1, ...).")] = 3,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda (default: the trial config's).")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder (default <run_dir>/<name>/confirm).")] = None,
    time_limit: Annotated[float | None, typer.Option(
        "--time-limit", min=0.0, metavar="SECONDS",
        help="Wall-clock limit of each long run; 0: none (default: the study's time_limit_s x --scale).")] = None,
) -> None:
    """Proxy check: re-train the top points and named models longer; rank-correlate short vs long.

    The top points are the ones `miras best` lists. Each long run may take the study's per-trial
    time limit x --scale, unless --time-limit says otherwise. When every long run fails, an
    earlier confirm.json is kept and the failures go to confirm-failed.json beside it.
    """
    from miras_search.report.confirm import confirm_study, store_fidelity, study_trial_config
    from miras_search.report.study_data import open_report_study

    opened = open_report_study(study, storage)
    warn_about_opened_study(study, opened)
    chosen = device_choice(device)
    folder = output_folder("--out", out or _study_dir(study, opened.study_name) / "confirm")
    # the stored trial settings, their data paths read beside the study file when one is given
    config = study_trial_config(opened)
    if names_a_file(study):
        config = config.relative_to(*input_folders(study)).located()
    result = confirm_study(opened, top=top, scale=scale, seeds=range(seeds), device=chosen, progress=_show_run,
                           time_limit=time_limit, config=config, before_training=lambda: opened.set_user_attr(
                               "confirm_started", {"at": time.time(), "scale": scale, "top": top, "seeds": seeds}),
                           notice=lambda text: console.print(text, highlight=False, markup=False, soft_wrap=True))
    console.print(_confirm_table(result, opened.study_name))
    if not any(entry.long for entry in result.entries):
        failed = folder / "confirm-failed.json"
        result.write_json(failed)
        kept = " (the earlier confirm.json is kept)" if (folder / "confirm.json").exists() else ""
        raise MirasError(f"every long run failed (the reasons are above); wrote {failed}{kept}")
    for correlation in result.correlations:
        console.print(correlation.describe(), highlight=False, markup=False)
    if result.correlations:
        console.print(f"({result.method})", highlight=False, markup=False)
    console.print(result.verdict, style="bold", highlight=False, markup=False)
    result.write_json(folder / "confirm.json")
    console.print(f"wrote {escape(str(folder / 'confirm.json'))} (`miras report` includes it)", highlight=False)
    stored = store_fidelity(opened, result)
    if stored:
        console.print(f"stored {len(stored)} long run(s) in the study as x{result.scale:g} fidelity results of their "
                      "points (`miras best` ranks points by their highest fidelity)", highlight=False)


@command("dashboard")
def dashboard(
    study: StudyArg,
    storage: StorageOpt = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free one).")] = 8080,
) -> None:
    """Open optuna-dashboard on the study's storage (Ctrl-C stops it)."""
    from miras_search.report.dashboard import serve
    from miras_search.report.study_data import open_report_study

    opened = open_report_study(study, storage)
    warn_about_opened_study(study, opened)

    def ready(url: str) -> None:
        console.print(f"optuna-dashboard for '{escape(opened.study_name)}' at {escape(url)}", highlight=False)

    serve(opened, host=host, port=port, ready=ready)

