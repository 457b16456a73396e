"""Commands that train: ``miras train`` (one point on the corpus) and ``miras trial``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from miras_search.cli.app import command, console
from miras_search.errors import ConfigError, MirasError, Problem
from miras_search.model.quick_train import StepInfo
from miras_search.points import load_point
from miras_search.trial import TrialConfig, TrialResult, run_trial
from miras_search.validation import validate
from miras_search.yamlio import read_yaml

_POINT_HELP = "A point YAML file or a preset name (see `miras presets`)."


def load_trial_config(path: Path) -> TrialConfig:
    """A trial config from its own YAML file or from the ``trial:`` section of a study file."""
    data, lines = read_yaml(path)
    if "trial" in data:
        if not isinstance(data["trial"], dict):
            raise ConfigError(str(path), [Problem("trial", "must be a mapping", lines.get(("trial",)))])
        return validate(TrialConfig, data["trial"], str(path), lines, prefix=("trial",))
    data.pop("type", None)
    return validate(TrialConfig, data, str(path), lines)


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("step {task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=console, transient=False,
    )


def _metrics_table(title: str, result: TrialResult) -> Table:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("status", result.status if result.ok else f"[red]{result.status}[/] ({result.failure})")
    if result.objective is not None:
        table.add_row("objective", f"{result.objective:.4f}")
    for name, value in sorted(result.metrics.items()):
        shown = f"{value:,.0f}" if name in ("params", "state_size", "tokens") else f"{value:.4g}"
        table.add_row(name, shown)
    return table


def _run_with_bar(point, config: TrialConfig, device: str | None) -> TrialResult:
    with _progress() as bar:
        task = bar.add_task(point.name or "point", total=None, loss="-")

        def show(info: StepInfo) -> None:
            bar.update(task, total=info.steps, completed=info.step, loss=f"{info.loss:.3f}")

        return run_trial(point, config, device=device, progress=show)


@command("trial")
def trial(
    point: Annotated[str, typer.Argument(help=_POINT_HELP)],
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Trial config or study YAML.")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the metrics as JSON here.")] = None,
    device: Annotated[str | None, typer.Option(help="cpu or cuda (default: the config's).")] = None,
) -> None:
    """Run one trial of a point: train for the budget, evaluate, print the metrics table."""
    trial_config = load_trial_config(config) if config else TrialConfig()
    result = _run_with_bar(load_point(point), trial_config, device)
    console.print(_metrics_table(f"trial of {point}", result))
    if result.reason:
        console.print(f"[red]failed:[/] {result.reason}", highlight=False, markup=True)
    if out is not None:
        result.write_json(out)
        console.print(f"wrote {out}")
    if not result.ok:
        raise typer.Exit(1)


@command("train")
def train(
    point: Annotated[str, typer.Argument(help=_POINT_HELP)],
    tokens: Annotated[int | None, typer.Option(help="Token budget (default: the point's).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Sequences per step.")] = None,
    seq_len: Annotated[int | None, typer.Option(help="Tokens per sequence.")] = None,
    device: Annotated[str | None, typer.Option(help="cpu or cuda (default: CUDA when present).")] = None,
) -> None:
    """Train one point on the embedded text corpus with a progress bar; print loss and tokens/s."""
    loaded = load_point(point)
    try:
        config = TrialConfig(tokens=tokens, batch_size=batch_size, seq_len=seq_len)
    except ValueError as error:
        raise MirasError(f"bad training option: {error}") from None
    result = _run_with_bar(loaded, config, device)
    if not result.ok:
        raise MirasError(f"training failed ({result.failure}): {result.reason}")
    metrics = result.metrics
    console.print(
        f"final train loss {metrics['train_loss']:.4f} | validation loss {metrics['val_loss']:.4f} "
        f"({metrics.get('val_bpb', float('nan')):.3f} bits/byte) | {metrics['tokens_per_s']:,.0f} tokens/s "
        f"| {metrics['params']:,.0f} parameters"
    )
