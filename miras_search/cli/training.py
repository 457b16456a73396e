"""Commands that train: ``miras train`` (one point on the corpus) and ``miras trial``."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from miras_search.cli.app import command, console, interactive
from miras_search.cli.checks import device_choice, output_file
from miras_search.errors import ConfigError, MirasError, Problem
from miras_search.paths import input_folders
from miras_search.schema.train import MAX_TOKENS

if TYPE_CHECKING:  # imported where used: `miras --help` must not import torch
    from pydantic import ValidationError

    from miras_search.model.quick_train import StepInfo
    from miras_search.schema import ModelPoint
    from miras_search.trial import Objective, TrialConfig, TrialResult

_POINT_HELP = "A point YAML file or a preset name (see `miras presets`)."


def load_trial_config(path: Path) -> TrialConfig:
    """A trial config from its own YAML file or from the ``trial:`` section of a study file
    (whose first objective is the trial's objective, unless the section names its own)."""
    return _read_trial_config(path)[0]


def _read_trial_config(path: Path) -> tuple[TrialConfig, bool]:
    """``load_trial_config``'s config, and whether it came from a ``trial:`` section."""
    from miras_search.trial import Objective, TrialConfig
    from miras_search.validation import validate
    from miras_search.yamlio import read_yaml

    data, lines = read_yaml(path)
    _refuse_other_kind(path, data)
    if "trial" in data or _is_study(data):
        data.setdefault("trial", {})
        if not isinstance(data["trial"], dict):
            raise ConfigError(str(path), [Problem("trial", "must be a mapping", lines.get(("trial",)))])
        config = validate(TrialConfig, data["trial"], str(path), lines, prefix=("trial",))
        objectives = data.get("objectives")
        if "objective" not in data["trial"] and isinstance(objectives, list) and objectives:
            first = validate(Objective, objectives[0], str(path), lines, prefix=("objectives", "0"))
            config = config.model_copy(update={"objective": first})
        return config.relative_to(*input_folders(path)), True  # its data paths are read beside it, as a study's
    data.pop("type", None)
    return validate(TrialConfig, data, str(path), lines).relative_to(*input_folders(path)), False


def _is_study(data: dict) -> bool:
    """Whether ``data`` is a study file (its ``type``, else its keys: ``cli.files.detect_kind``)."""
    from miras_search.cli.files import detect_kind

    return detect_kind(data) == "study"


def _other_kind(data: dict) -> str | None:
    """'point' or 'space' when ``data`` is a point or space file rather than a trial config or
    study; None otherwise (then the trial config's own checks speak). A file without ``type``
    that has a point's keys counts as a point only with none of a trial config's."""
    from miras_search.file_kinds import plain_file_kind
    from miras_search.trial import TrialConfig

    kind = plain_file_kind(data)
    if kind == "space" or data.get("type") == "point":
        return kind
    if kind == "point" and not TrialConfig.model_fields.keys() & data.keys():
        return kind
    return None


def _refuse_other_kind(path: Path, data: dict) -> None:
    """MirasError, in one line, for a point or space file given as ``--config``."""
    kind = _other_kind(data)
    if kind is not None:
        raise MirasError(f"--config {path} is a {kind} file; --config takes a trial config (data, tokens, "
                         "batch_size, ...) or a study file (its trial: section)")


def _check_budget(point: ModelPoint, config: TrialConfig) -> None:
    """MirasError when the budget options do not fit the point (before any bar or work starts)."""
    from pydantic import ValidationError

    from miras_search.validation import problems_from

    try:
        config.apply(point)
    except ValidationError as error:
        reason = "; ".join(str(p) for p in problems_from(error, type(point), point.model_dump(), {}))
        raise MirasError(f"the budget does not fit the point: {reason}; give a larger --tokens or a "
                         "smaller --batch-size / --seq-len") from None


def _check_trial_budget(point: ModelPoint, config: TrialConfig, source: Path | None) -> None:
    """MirasError, before any work, when the trial's budget (the config's, else the point's) does
    not cover one batch of the point (`trial` would fail after a bar); a budget over the schema's
    ``MAX_TOKENS`` is refused where the point or config is read."""
    from pydantic import ValidationError

    from miras_search.validation import problems_from

    try:
        config.apply(point)
    except ValidationError as error:
        reason = "; ".join(str(p) for p in problems_from(error, type(point), point.model_dump(), {}))
        where = f"the budget of --config {source} (tokens, batch_size, seq_len)" if source else "the budget"
        raise MirasError(f"the trial's budget does not fit the point: {reason}; change {where} or the "
                         "point's train section") from None


def _check_cache(config: TrialConfig) -> None:
    """MirasError, in the paragraph `validate` and `run` give, when the data cache cannot be
    written and the config has text data to tokenize into it (before any bar or work starts)."""
    from miras_search.data.cache import cache_unusable
    from miras_search.data.text_sources import Files, HFDataset, TextCorpus

    if any(isinstance(spec, TextCorpus | Files | HFDataset) for spec in config.data):
        problem = cache_unusable()
        if problem is not None:
            raise MirasError(problem)


def _check_data(point: ModelPoint, config: TrialConfig, source: Path, sectioned: bool) -> None:
    """MirasError, before the bar, when the config's data cannot feed the point's trial: the check
    `validate` and `run` make first (``study.preflight.data_problems``: each source opens, is
    text, and gives a training and a validation batch at the trial's batch size and length).
    ``sectioned``: the config is a study's ``trial:`` section (its fields are named so)."""
    from miras_search.study.preflight import data_problems
    from miras_search.study.spec import StudyFile

    try:
        applied = config.apply(point)
    except ValueError:  # the budget does not fit the point: the trial says why
        return
    problems = data_problems(StudyFile.model_construct(trial=config), applied)
    if problems:
        named = [problem if sectioned else problem.removeprefix("trial.") for problem in problems]
        raise MirasError(f"--config {source}: its data cannot feed a trial: {'; '.join(named)}. Fix the "
                         f"file's {'trial.data' if sectioned else 'data'} or the data it names")


def _check_memory(point: ModelPoint, config: TrialConfig, device: str | None) -> None:
    """MirasError when the point, with the budget options, is over the memory `miras train` allows
    a run on this machine (the share a trial gets: ``trial.memory_limit``), with what train can
    change; before the bar, where the trial would fail as 'oom' without training."""
    from miras_search.model.factory import pick_device
    from miras_search.model.memory_estimate import estimate_memory
    from miras_search.trial.memory_limit import MACHINE_SHARE, too_large, trial_memory_limit

    limit = trial_memory_limit(None, pick_device(device), 1)
    reason = too_large(estimate_memory(config.apply(point), None), limit,
                       f"{MACHINE_SHARE:.0%} of this machine's memory, what `miras train` may use",
                       advice="give a smaller --seq-len or --batch-size, or train a smaller point")
    if reason is not None:
        raise MirasError(reason)


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("step {task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=console, transient=False,
    )


def _metrics_table(title: str, result: TrialResult, objective: Objective) -> Table:
    table = Table(title=escape(title))
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("status", result.status if result.ok else f"[red]{result.status}[/] ({result.failure})")
    if result.objective is not None:
        table.add_row(f"objective ({escape(objective.name)})", f"{result.objective:.4f}")
    for name, value in sorted(result.metrics.items()):
        shown = f"{value:,.0f}" if name in ("params", "state_size", "tokens") else f"{value:.4g}"
        table.add_row(escape(name), shown)
    return table


def _run_with_bar(point, config: TrialConfig, device: str | None, weights=None) -> TrialResult:
    from miras_search.trial import run_trial

    if not interactive():  # a pipe, a log, TERM=dumb: the bar would show only at the end
        return run_trial(point, config, device=device, progress=_step_lines(point.name or "point"),
                         weights=weights)
    with _progress() as bar:
        task = bar.add_task(escape(point.name or "point"), total=None, loss="-")

        def show(info: StepInfo) -> None:
            bar.update(task, total=info.steps, completed=info.step, loss=f"{info.loss:.3f}")

        return run_trial(point, config, device=device, progress=show, weights=weights)


STEP_LINES = 10
"""Lines the training progress takes where no bar can be drawn: one per tenth of the steps."""


def _step_lines(name: str):
    """A progress callback printing '[0:00:12] moneta step 40/400 loss 5.123' at each tenth of
    the steps (and the last), flushed at once."""
    shown = {"next": 0}

    def show(info: StepInfo) -> None:
        if info.step < shown["next"] and info.step != info.steps:
            return
        shown["next"] = info.step + max(1, info.steps // STEP_LINES)
        elapsed = datetime.timedelta(seconds=round(info.seconds))
        console.print(f"[{elapsed}] {name} step {info.step}/{info.steps} loss {info.loss:.3f}",
                      highlight=False, markup=False, soft_wrap=True)

    return show


def _config_device(config: TrialConfig, source: Path | None, device: str | None) -> str | None:
    """``--device`` checked; without it, the trial config's own device checked (it is used then)."""
    if device is not None:
        return device_choice(device)
    device_choice(config.device, f"{source}: device" if source else "device")
    return None


_OUTPUT_MAX_BYTES = 1 << 24
"""A JSON file larger than this is not taken for an earlier output of ours (none is that big)."""


def json_object(path: Path) -> dict | None:
    """The JSON object in ``path``; None when it is no (small) JSON object."""
    import json

    try:
        if path.stat().st_size > _OUTPUT_MAX_BYTES:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_metrics_file(path: Path) -> bool:
    """Whether ``path`` holds a trial's metrics as `miras trial --out` writes them."""
    data = json_object(path)
    return data is not None and {"status", "metrics"} <= data.keys()


METRICS_OUTPUT = ("a trial's metrics (the JSON `miras trial --out` writes)", is_metrics_file)
"""What `trial --out` may overwrite (``checks.output_file``'s ``replaces``)."""


def _write_metrics(result: TrialResult, out: Path) -> None:
    try:
        result.write_json(out)
    except OSError as error:  # checked before training; this is a race (the folder went away)
        raise MirasError(f"--out {out}: cannot write the metrics ({error.strerror or error}); "
                         "they are in the table above") from None
    console.print(f"wrote {escape(str(out))}", highlight=False)


@command("trial")
def trial(
    point: Annotated[str, typer.Argument(help=_POINT_HELP)],
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Trial config or study YAML.")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the metrics as JSON here.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda (default: the config's).")] = None,
) -> None:
    """Run one trial of a point: train for the budget, evaluate, print the metrics table."""
    from miras_search.points import load_point
    from miras_search.trial import TrialConfig

    trial_config, sectioned = _read_trial_config(config) if config else (TrialConfig(), False)
    loaded = load_point(point)
    chosen = _config_device(trial_config, config, device)
    _check_trial_budget(loaded, trial_config, config)
    if out is not None:
        output_file("--out", out, replaces=METRICS_OUTPUT)
    _check_cache(trial_config)
    if config is not None:  # the default data (the embedded corpus) always gives batches
        _check_data(loaded, trial_config, config, sectioned)
    seeds = _study_seeds(config) if sectioned else None
    if seeds:
        result = _run_per_seed(loaded, trial_config, chosen, seeds)
    else:
        result = _run_with_bar(loaded, trial_config, chosen)
    console.print(_metrics_table(f"trial of {point}", result, trial_config.objective))
    if result.reason:
        console.print(f"[red]failed:[/] {escape(result.reason)}", highlight=False, soft_wrap=True)
    if out is not None:
        _write_metrics(result, out)
    if not result.ok:
        raise typer.Exit(1)


def _study_seeds(path: Path) -> list[int] | None:
    """The ``seeds`` of the study file at ``path`` (None when it names none, or is no study):
    a study trains each point once per seed and ranks it by the mean."""
    from pydantic import create_model

    from miras_search.study.spec import StudyFile
    from miras_search.validation import validate
    from miras_search.yamlio import read_yaml

    data, lines = read_yaml(path)
    if not _is_study(data) or data.get("seeds") is None:
        return None
    field = StudyFile.model_fields["seeds"]
    seeds_only = create_model("StudySeeds", seeds=(field.annotation, field))
    return validate(seeds_only, {"seeds": data["seeds"]}, str(path), lines).seeds


def _run_per_seed(point: ModelPoint, config: TrialConfig, device: str | None, seeds: list[int]) -> TrialResult:
    """The point trained once per seed of its study, as the study's trial does (trial.seed, or
    the point's train.seed, is then not used): the mean of each metric, each seed's as
    ``<metric>/seed<N>``; a failed seed ends it."""
    from miras_search.trial.result import merge_seeds

    console.print(f"the study trains each point once per seed ({', '.join(map(str, seeds))}): so does this "
                  "trial, and its metrics are their mean", highlight=False)
    results = []
    for seed in seeds:
        results.append(_run_with_bar(point, config.model_copy(update={"seed": seed}), device))
        if not results[-1].ok:
            break
    return merge_seeds(results, list(seeds))


def _option_error(error: ValidationError) -> MirasError:
    """One line per bad training option, named as on the command line (pydantic's 'Value error, '
    left out; a problem of several options, which has no field, as it is)."""
    lines = []
    for problem in error.errors():
        message = str(problem["msg"]).removeprefix("Value error, ")
        field = ".".join(map(str, problem["loc"])).replace("_", "-")
        lines.append(f"--{field}: {message}" if field else message)
    return MirasError("bad training option: " + "; ".join(lines))


def _check_train_budget(point: ModelPoint, tokens: int | None, batch_size: int | None,
                        seq_len: int | None) -> None:
    """MirasError, before any work, when `miras train`'s budget does not cover one batch; each
    number named as the option that gave it, or as the point's (an absurd budget is refused by the
    option's range and the point's schema, ``MAX_TOKENS``)."""
    given = {"tokens": tokens, "batch_size": batch_size, "seq_len": seq_len}
    used = {name: value if value is not None else getattr(point.train, name) for name, value in given.items()}
    named = {name: f"--{name.replace('_', '-')} {used[name]}" if value is not None
             else f"{name} {used[name]} (the point's)" for name, value in given.items()}
    batch = used["batch_size"] * used["seq_len"]
    if used["tokens"] < batch:
        where = "--tokens" if tokens is not None else "the point's train.tokens"
        raise MirasError(f"{where}: tokens ({used['tokens']}) do not cover one batch ({named['batch_size']} x "
                         f"{named['seq_len']} = {batch}); give --tokens {batch} or more, or a smaller "
                         "--batch-size or --seq-len")


@command("train")
def train(
    point: Annotated[str | None, typer.Argument(help=_POINT_HELP + " Not with --from.")] = None,
    tokens: Annotated[int | None, typer.Option(min=1, max=MAX_TOKENS, help=(
        "Token budget (default: the point's; at most 10^13)."))] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, max=4096, help="Sequences per step.")] = None,
    seq_len: Annotated[int | None, typer.Option(min=1, max=1_048_576, help="Tokens per sequence.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda (default: CUDA when present).")] = None,
    start: Annotated[Path | None, typer.Option(
        "--from", metavar="CHECKPOINT", help="Continue from a checkpoint's weights (its point).")] = None,
    save: Annotated[Path | None, typer.Option(
        "--save", metavar="CHECKPOINT", help="Write the final weights (and the point) here.")] = None,
) -> None:
    """Train one point on the embedded text corpus with a progress bar; print loss and tokens/s.
    With --from, continue a checkpoint (a study's kept weights, or an earlier --save) with a fresh
    optimiser and schedule over the new budget."""
    from pydantic import ValidationError

    from miras_search.points import load_point
    from miras_search.trial import TrialConfig
    from miras_search.trial.checkpoint import check_weights, is_checkpoint, read_checkpoint
    from miras_search.trial.runner import Weights

    if (point is None) == (start is None):
        raise MirasError("give a point (a file or preset name) or --from CHECKPOINT, one of the two")
    checkpoint = read_checkpoint(start) if start is not None else None
    if checkpoint is not None:
        check_weights(checkpoint, str(start))
    loaded = checkpoint.point if checkpoint is not None else load_point(point)
    if save is not None:
        output_file("--save", save, "model.pt", replaces=("a miras checkpoint", is_checkpoint))
    _check_train_budget(loaded, tokens, batch_size, seq_len)
    try:
        config = TrialConfig(tokens=tokens, batch_size=batch_size, seq_len=seq_len)
    except ValidationError as error:
        raise _option_error(error) from None
    _check_budget(loaded, config)
    chosen = device_choice(device)
    _check_memory(loaded, config, chosen)
    _check_cache(config)
    weights = Weights(start=checkpoint, save=save)
    result = _run_with_bar(loaded, config, chosen, weights)
    if not result.ok:
        hint = "; give a smaller --seq-len or --batch-size, or train a smaller point" if result.failure == "oom" else ""
        raise MirasError(f"training failed ({result.failure}): {result.reason}{hint}")
    metrics = result.metrics
    console.print(
        f"final train loss {metrics['train_loss']:.4f} | validation loss {metrics['val_loss']:.4f} "
        f"({metrics.get('val_bpb', float('nan')):.3f} bits/byte) | {metrics['tokens_per_s']:,.0f} tokens/s "
        f"| {metrics['params']:,.0f} parameters"
    )
    if save is not None:
        console.print(f"wrote {escape(str(save))} ({metrics['weights_mb']:.1f} MiB)", highlight=False)
