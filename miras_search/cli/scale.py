"""``miras scale``: train points on a ladder of sizes, fit loss against compute, rank at a target."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from miras_search.cli.app import command, console, print_note, table_width
from miras_search.cli.checks import STORAGE_HELP, output_folder
from miras_search.errors import MirasError

if TYPE_CHECKING:
    from miras_search.scale.results import ScaleTable
    from miras_search.study.spec import ParallelSpec

_RUNG_HELP = ("A rung D_MODEL,N_LAYERS,SEQ_LEN,TOKENS (repeat the option; replaces the ladder of the "
              "study file). Default ladder: 32,2,64,8192  48,2,64,16384  64,2,64,32768.")


def parse_rung(text: str) -> dict[str, int]:
    """``"64,2,128,65536"`` -> a rung mapping; MirasError saying the format otherwise."""
    parts = [p.strip() for p in text.split(",")]
    names = ("d_model", "n_layers", "seq_len", "tokens")
    if len(parts) != len(names) or not all(p.isdigit() for p in parts):
        raise MirasError(f"--rung '{text}' is not D_MODEL,N_LAYERS,SEQ_LEN,TOKENS (four whole numbers, "
                         "e.g. --rung 64,2,128,65536)")
    return dict(zip(names, (int(p) for p in parts), strict=True))


def _is_study_file(ref: str) -> bool:
    from miras_search.yamlio import read_yaml

    path = Path(ref)
    if path.is_symlink() and not path.exists():  # a broken or looping link: reading it says which
        read_yaml(path)
    if not (path.is_file() and path.suffix in (".yaml", ".yml")):
        return False

    data, _ = read_yaml(path)
    return isinstance(data, dict) and data.get("type") == "study"


def scale_table_view(table: ScaleTable) -> Table:
    view = Table(title=escape(f"{table.metric} extrapolated to {table.target_flops:.3g} FLOPs"), width=None)
    for column in ("rank", "point", "rungs", "b", "at target"):
        view.add_column(column, justify="left" if column == "point" else "right")
    for place, point in enumerate(table.points, start=1):
        fitted = point.fit is not None
        view.add_row(str(place) if fitted else "-", escape(point.label), str(len(point.rungs)),
                     f"{point.fit.b:.3g}" if fitted else "-",
                     f"{point.at_target:.4g}" if fitted else "no fit")
    return view


@command("scale")
def scale(
    targets: Annotated[list[str], typer.Argument(
        help="A study file (its storage, budget and `scale:` block) and/or presets and point files.")],
    rung: Annotated[list[str] | None, typer.Option("--rung", help=_RUNG_HELP)] = None,
    top: Annotated[int | None, typer.Option("--top", "-n", min=0, help="Also the study's best N points.")] = None,
    target_flops: Annotated[float | None, typer.Option(
        "--target-flops", min=0.0, help="Rank by the fitted loss at this training compute (default: 10x the largest rung's).")] = None,
    metric: Annotated[str | None, typer.Option(help="The loss fitted (default: the file's, else val_loss).")] = None,
    seeds: Annotated[int | None, typer.Option(min=1, help="Seeds per rung (0, 1, ...).")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, help="Training batch size of every rung.")] = None,
    name: Annotated[str, typer.Option(help="Without a study file: the scale study's name (runs/<name>/).")] = "scale",
    storage: Annotated[str | None, typer.Option(help=STORAGE_HELP)] = None,
    workers: Annotated[int | None, typer.Option("--workers", "-w", min=1, help=(
        "Rungs trained at once (Ray workers; default: the study file's parallel.workers, else 1)."))] = None,
    address: Annotated[str | None, typer.Option(help=(
        "Join this Ray cluster instead of starting one (default: the study file's parallel.address)."))] = None,
    inline: Annotated[bool, typer.Option("--inline", help="Train in this process, one rung at a time (no Ray).")] = False,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder (default <run_dir>/<name>/scale).")] = None,
) -> None:
    """Train points on a ladder of model sizes and contexts, fit loss against compute (a power
    law per point), plot the curves and rank the points at a target compute.

    Each finished rung is stored in the study at once: after Ctrl-C or a crash, the same command
    trains only the missing rungs. Compute is counted, not measured: 6 x the parameters a token
    multiplies (input embedding left out) + 3 x the memory's or attention's own work per token.
    """
    from miras_search.scale.session import open_scale, plan_scale

    studies = [t for t in targets if _is_study_file(t)]
    if len(studies) > 1:
        raise MirasError(f"give at most one study file, got {', '.join(studies)}")
    names = [t for t in targets if t not in studies]
    overrides: dict[str, Any] = {"top": top, "target_flops": target_flops, "metric": metric,
                                 "seeds": list(range(seeds)) if seeds else None, "batch_size": batch_size,
                                 "rungs": [parse_rung(r) for r in rung] if rung else None}
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    plan = plan_scale(Path(studies[0]) if studies else None, names, overrides, name=name, storage=storage)
    folder = output_folder("--out", out or plan.out_dir)  # all checked before the storage is created
    job = open_scale(plan)
    parallel = plan.study_file.parallel if plan.study_file is not None else None
    if parallel is not None:  # a study file's Ray settings, as `miras run` reads them
        workers, address = workers or parallel.workers, address or parallel.address
    _train(job, workers or 1, address, inline, parallel)
    _write(job, folder)


def _train(job, workers: int, address: str | None, inline: bool, parallel: ParallelSpec | None = None) -> None:
    from miras_search.scale.runner import ScaleRunner

    def pool_factory():
        if inline:
            from miras_search.study import InlinePool

            return InlinePool(threads=job.config.threads)
        from miras_search.parallel import RayPool

        # not the file's gpus_per_trial: it is sized for the study's trials, and rungs grow past them
        return RayPool(workers, address, None, storage=job.storage,
                       shared_storage=parallel is not None and parallel.shared_storage, note=print_note)

    def show(kind: str, run, result: dict[str, Any] | None) -> None:
        if kind != "finished" or result is None:
            return
        what = f"{run.target.label} on {run.rung.key} seed {run.seed}"
        if result.get("status") == "complete":
            console.print(f"  {escape(what)}: {job.spec.metric} "
                          f"{(result.get('metrics') or {}).get(job.spec.metric, float('nan')):.4g}", highlight=False)
        else:
            console.print(f"  {escape(what)}: [red]{escape(str(result.get('failure')))}[/]: "
                          f"{escape(str(result.get('reason') or ''))}", highlight=False, soft_wrap=True)

    runner = ScaleRunner(job.study, job.spec, job.points, job.config, job.objectives, pool_factory, show)
    summary = runner.run()
    console.print(f"{len(job.points)} point(s) x {len(job.spec.rungs)} rung(s) x {len(job.spec.seeds)} seed(s): "
                  f"{summary.already} already stored, {summary.ran} trained now"
                  + (f" in {summary.wall_s:.0f} s" if summary.ran else ""), highlight=False)
    if summary.interrupted:
        console.print("[yellow]stopped[/]: the rungs that finished are stored; the same command trains the rest",
                      highlight=False)
        raise typer.Exit(summary.exit_code)


def _some_rung_finished(table: ScaleTable) -> None:
    """MirasError (exit 1) in one paragraph when no rung of any point finished, with the first
    failure: there is nothing to fit, plot or rank."""
    if any(point.rungs for point in table.points):
        return
    failures = [f"{point.label} on {failure}" for point in table.points for failure in point.failures]
    first = f"; the first: {failures[0]}" if failures else ""
    raise MirasError(f"no rung of any point finished ({len(failures)} failed{first}), so there is nothing "
                     "to fit: fix the cause and run the command again")


def _write(job, folder: Path) -> None:
    from miras_search.scale.plot import scale_figure
    from miras_search.scale.results import scale_table

    table = scale_table(job.study, job.spec.metric, job.spec.target_flops)
    if table is None:
        raise MirasError("no rung finished: nothing to fit")
    wanted = {p.key for p in job.points}
    table.points = [p for p in table.points if p.point_key in wanted] or table.points
    _some_rung_finished(table)
    console.print(scale_table_view(table), width=table_width())
    ladder = {rung.key for rung in job.spec.rungs}
    for point in table.points:
        outside = [r.rung for r in point.rungs if r.rung not in ladder]
        if outside:
            console.print(f"{escape(point.label)}: the fit also uses {len(outside)} stored rung(s) outside this "
                          f"ladder: {escape(', '.join(outside))} (a point's fit uses every rung the study holds "
                          "of it; another --name keeps a ladder apart)", highlight=False, soft_wrap=True)
        seeds = sorted({r.seeds for r in point.rungs if r.rung in ladder and r.seeds != len(job.spec.seeds)})
        if seeds:
            console.print(f"{escape(point.label)}: some rungs average {' or '.join(map(str, seeds))} stored seed(s), "
                          f"not the {len(job.spec.seeds)} asked for (every finished seed the study holds is "
                          "averaged)", highlight=False, soft_wrap=True)
        if point.fit is None:
            console.print(f"{escape(point.label)}: {escape(point.fit_error)}", highlight=False, soft_wrap=True)
        for failure in point.failures:
            console.print(f"{escape(point.label)}: [red]failed[/] {escape(failure)}", highlight=False, soft_wrap=True)
    table.write_json(folder / "scale.json")
    (folder / "scale.md").write_text(table.markdown())
    scale_figure(table).savefig(folder / "scale.png", dpi=120)
    console.print(f"wrote {escape(str(folder))}/scale.json, scale.md, scale.png (`miras report` shows them too)",
                  highlight=False)
