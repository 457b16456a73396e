"""Commands over a study's results: ``miras report``, ``export``, ``confirm``, ``dashboard``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from miras_search.cli.app import command, console
from miras_search.cli.checks import (
    device_choice,
    output_folder,
    positive_finite,
    warn_if_study_file_changed,
)
from miras_search.errors import MirasError
from miras_search.report.build import build_report
from miras_search.report.confirm import ConfirmResult, confirm_study
from miras_search.report.export import export_top
from miras_search.report.leaderboard import leaderboard_table
from miras_search.report.study_data import TrialRow, open_report_study
from miras_search.study.spec import load_study_file
from miras_search.trial import TrialResult

_STUDY = "A study YAML file (its name and storage are used), or a study name with --storage."
_STORAGE = "Optuna storage URL or file (default: the study file's, else runs/<name>/)."
StudyArg = Annotated[str, typer.Argument(help=_STUDY)]
StorageOpt = Annotated[str | None, typer.Option("--storage", help=_STORAGE)]


def _study_dir(study: str, study_name: str) -> Path:
    """``<run_dir>/<name>``: the study file's run_dir when ``study`` is a study file (as
    ``miras run`` uses it), else runs/."""
    if Path(study).is_file():
        return load_study_file(study).out_dir()
    return Path("runs") / study_name


def _read_confirm(folder: Path) -> ConfirmResult | None:
    """The study's ``miras confirm`` result if there is a readable one; a warning if it is broken."""
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
    top: Annotated[int, typer.Option(min=1, help="Searched points shown in the figures.")] = 10,
    rows: Annotated[int, typer.Option(min=1, help="Leaderboard rows printed in the terminal.")] = 20,
) -> None:
    """Write the study's HTML report (leaderboard, Pareto front, importances, curves, tasks) and PNGs."""
    opened = open_report_study(study, storage)
    warn_if_study_file_changed(study, opened)
    folder = _study_dir(study, opened.study_name)
    out = output_folder("--out", out or folder / "report")
    written = build_report(opened, out, top=top, confirm=_read_confirm(folder))
    if written.board:
        console.print(leaderboard_table(written.board, written.objectives, top=rows,
                                        title=f"{escape(opened.study_name)}: leaderboard",
                                        width=console.width if console.is_terminal else None))
    else:
        console.print("[yellow]no complete trial to rank yet[/] (the report's summary says why)")
    console.print(f"wrote {escape(str(written.html))} and {len(written.images)} figures", highlight=False)


@command("export")
def export(
    study: StudyArg,
    storage: StorageOpt = None,
    top: Annotated[int, typer.Option("--top", "-k", min=1, help="How many points.")] = 5,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder (default <run_dir>/<name>/points).")] = None,
) -> None:
    """Write the top points as standalone point YAML files (loadable by `miras train`): the
    points `miras best -n TOP` shows, in its order."""
    opened = open_report_study(study, storage)
    warn_if_study_file_changed(study, opened)
    paths = export_top(opened, top, output_folder("--out", out or _study_dir(study, opened.study_name) / "points"))
    if not paths:
        raise MirasError(f"study '{opened.study_name}' has no complete (feasible) trial yet; nothing to export")
    for path in paths:
        console.print(f"wrote {escape(str(path))}", highlight=False)


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
        table.add_row(escape(entry.label), f"{entry.short:.4g}", f"{entry.long_mean:.4g}",
                      f"{entry.long_std:.2g}", f"{len(entry.long)}/{len(result.seeds)}")
    return table


@command("confirm")
def confirm(
    study: StudyArg,
    storage: StorageOpt = None,
    top: Annotated[int, typer.Option("--top", "-k", min=1, help="Top points to re-train (the named models in the study are added).")] = 5,
    scale: Annotated[float, typer.Option("--scale", "-n", callback=positive_finite,
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
    opened = open_report_study(study, storage)
    warn_if_study_file_changed(study, opened)
    chosen = device_choice(device)
    folder = output_folder("--out", out or _study_dir(study, opened.study_name) / "confirm")
    result = confirm_study(opened, top=top, scale=scale, seeds=range(seeds), device=chosen, progress=_show_run,
                           time_limit=time_limit,
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


@command("dashboard")
def dashboard(
    study: StudyArg,
    storage: StorageOpt = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8080,
) -> None:
    """Open optuna-dashboard on the study's storage (Ctrl-C stops it)."""
    from miras_search.report.dashboard import serve

    opened = open_report_study(study, storage)
    warn_if_study_file_changed(study, opened)
    console.print(f"optuna-dashboard for '{escape(opened.study_name)}' at http://{escape(host)}:{port}/",
                  highlight=False)
    serve(opened, host=host, port=port)

