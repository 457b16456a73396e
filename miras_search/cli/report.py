"""Commands over a study's results: ``miras report``, ``export``, ``confirm``, ``dashboard``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from miras_search.cli.app import command, console
from miras_search.report.build import build_report
from miras_search.report.confirm import ConfirmResult, confirm_study
from miras_search.report.export import export_top
from miras_search.report.leaderboard import leaderboard_table
from miras_search.report.study_data import open_report_study

_STUDY = "A study YAML file (its name and storage are used), or a study name with --storage."
_STORAGE = "Optuna storage URL or file (default: the study file's, else runs/<name>/)."
StudyArg = Annotated[str, typer.Argument(help=_STUDY)]
StorageOpt = Annotated[str | None, typer.Option("--storage", help=_STORAGE)]


def _default_dir(study_name: str, leaf: str) -> Path:
    return Path("runs") / study_name / leaf


@command("report")
def report(
    study: StudyArg,
    storage: StorageOpt = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder (default runs/<name>/report).")] = None,
    top: Annotated[int, typer.Option(min=1, help="Searched points shown in the figures.")] = 10,
    rows: Annotated[int, typer.Option(min=1, help="Leaderboard rows printed in the terminal.")] = 20,
) -> None:
    """Write the study's HTML report (leaderboard, Pareto front, importances, curves, tasks) and PNGs."""
    opened = open_report_study(study, storage)
    out = out or _default_dir(opened.study_name, "report")
    confirm_file = _default_dir(opened.study_name, "confirm") / "confirm.json"
    confirm = ConfirmResult.read_json(confirm_file) if confirm_file.exists() else None
    written = build_report(opened, out, top=top, confirm=confirm)
    console.print(leaderboard_table(written.ranked, written.objectives, top=rows,
                                    title=f"{opened.study_name}: leaderboard"))
    console.print(f"wrote {written.html} and {len(written.images)} figures")


@command("export")
def export(
    study: StudyArg,
    storage: StorageOpt = None,
    top: Annotated[int, typer.Option("--top", "-k", min=1, help="How many points.")] = 5,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder (default runs/<name>/points).")] = None,
) -> None:
    """Write the top points as standalone point YAML files (loadable by `miras train`)."""
    opened = open_report_study(study, storage)
    paths = export_top(opened, top, out or _default_dir(opened.study_name, "points"))
    for path in paths:
        console.print(f"wrote {path}")
    if not paths:
        console.print("[yellow]the study has no complete trial yet[/]")


@command("confirm")
def confirm(
    study: StudyArg,
    storage: StorageOpt = None,
    top: Annotated[int, typer.Option("--top", "-k", min=1, help="Top points to re-train.")] = 5,
    scale: Annotated[float, typer.Option("--scale", "-n", help="Token budget multiplier.")] = 4.0,
    seeds: Annotated[int, typer.Option(min=1, help="Seeds per point (0, 1, ...).")] = 3,
    device: Annotated[str | None, typer.Option(help="cpu or cuda (default: the trial config's).")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder (default runs/<name>/confirm).")] = None,
) -> None:
    """Proxy check: re-train the top points and named models longer; rank-correlate short vs long."""
    opened = open_report_study(study, storage)

    def show(row, seed, result) -> None:
        state = "ok" if result.ok else f"[red]{result.failure}[/]"
        console.print(f"  {row.label} seed {seed}: {state}")

    result = confirm_study(opened, top=top, scale=scale, seeds=range(seeds), device=device, progress=show)
    folder = out or _default_dir(opened.study_name, "confirm")
    folder.mkdir(parents=True, exist_ok=True)
    result.write_json(folder / "confirm.json")
    table = Table(title=f"{opened.study_name}: short vs {scale:g}x longer training")
    for column in ("point", f"short {result.objective.name}", "long mean", "long std", "seeds ok"):
        table.add_column(column, justify="left" if column == "point" else "right")
    for entry in result.entries:
        table.add_row(entry.label, f"{entry.short:.4g}", f"{entry.long_mean:.4g}",
                      f"{entry.long_std:.2g}", f"{len(entry.long)}/{len(result.seeds)}")
    console.print(table)
    for correlation in result.correlations:
        console.print(f"{correlation.describe()}  ({result.method})", highlight=False, markup=False)
    console.print(result.verdict, style="bold", highlight=False, markup=False)
    console.print(f"wrote {folder / 'confirm.json'} (`miras report` includes it)")


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
    console.print(f"optuna-dashboard for '{opened.study_name}' at http://{host}:{port}/")
    serve(opened, host=host, port=port)

