"""run_trial: build a point, pretrain it briefly on the trial's data, evaluate, return metrics.

Nothing the point does (fail to build, NaN, diverge, run out of memory or time) escapes as an
exception: it comes back as a failed TrialResult with its reason and what was measured so far.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from miras_search.data import DataMix
from miras_search.data.cache import cache_problem, is_cache_path
from miras_search.errors import (
    ConfigError,
    MirasError,
    NonFiniteError,
    SequenceTooLong,
    UnsupportedPoint,
)
from miras_search.model import autocast_context, build_model, pick_device, state_size
from miras_search.model.compiling import is_compiled
from miras_search.model.quick_train import StepInfo, train_tokens
from miras_search.points import as_point
from miras_search.schema import ModelPoint
from miras_search.trial.allocator import release_free_memory, tune_allocator
from miras_search.trial.checkpoint import Checkpoint, load_weights, save_checkpoint, weights_mb
from miras_search.trial.config import Objective, TrialConfig
from miras_search.trial.evaluate import evaluate
from miras_search.trial.memory_limit import check_fits, is_out_of_memory, trial_memory_limit
from miras_search.trial.peak_memory import PeakMemory
from miras_search.trial.result import FailureKind, TrialFailed, TrialResult
from miras_search.validation import problems_from, validate

log = logging.getLogger(__name__)

Reporter = Callable[[int, float], bool | None]
"""Called as ``report(step, value)`` every ``report_every`` steps and at the final step, where
``value`` is the trial's objective on ``REPORT_EVAL_BATCHES`` held-out batches per source (the
objective's own unit, so that Optuna's pruner and plots see val_bpb as val_bpb), or the training
loss for an objective that a validation pass cannot give (throughput, say). False stops (prunes)
the trial, except at the final step: a trial that trained its whole budget is always evaluated."""

REPORT_EVAL_BATCHES = 1
"""Held-out batches per data source behind each intermediate value reported to the pruner."""


class _TimedBatches:
    """Batches of the mix for consecutive steps, timing how long fetching them takes."""

    def __init__(self, mix: DataMix, batch_size: int, seq_len: int, seed: int):
        self.mix, self.batch_size, self.seq_len, self.seed = mix, batch_size, seq_len, seed
        self.seconds = 0.0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        step = 0
        while True:
            start = time.perf_counter()
            _, batch = self.mix.batch(self.batch_size, step=step, seed=self.seed, seq_len=self.seq_len)
            self.seconds += time.perf_counter() - start
            yield batch.inputs, batch.targets
            step += 1


@contextlib.contextmanager
def _threads(count: int | None):
    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@dataclass(frozen=True)
class Weights:
    """Where a trial's weights come from and go: ``start`` (a checkpoint to continue from, built
    from the same point), ``save`` (a file for the final weights of a complete trial) and
    ``max_mb`` (weights larger than this are not saved)."""

    start: Checkpoint | None = None
    save: Path | None = None
    max_mb: float | None = None


def _as_config(config: TrialConfig | Mapping[str, Any] | None) -> TrialConfig:
    """``config``, a mapping of its fields validated (ConfigError naming the field), or the default."""
    if config is None:
        return TrialConfig()
    if isinstance(config, Mapping):
        return validate(TrialConfig, dict(config), "<trial config>")
    if not isinstance(config, TrialConfig):
        raise MirasError(f"config: expected a TrialConfig or a mapping of its fields, not {type(config).__name__}")
    return config


def run_trial(point: ModelPoint | str | Mapping[str, Any],
              config: TrialConfig | Mapping[str, Any] | None = None, report: Reporter | None = None,
              device: str | torch.device | None = None,
              progress: Callable[[StepInfo], None] | None = None,
              concurrent: int = 1, weights: Weights | None = None,
              report_objective: Objective | None = None) -> TrialResult:
    """Train ``point`` for the trial's token budget and evaluate it; never raises for the point.

    The budget is ``train.tokens`` rounded down to whole batches, counted with each data source's
    own ``seq_len`` (``DataMix.train_steps``); ``metrics['tokens']`` is what was trained.

    Args:
        point: the architecture (or a preset name, point file or mapping: ``points.as_point``);
            ``config`` overrides its budget (tokens, batch, seq_len, seed).
        config: data mix, budget, evaluation, bounds, objective (default: TrialConfig()); a
            mapping of its fields is validated.
        report: intermediate-value hook (the study turns it into Optuna pruning), called every
            ``config.report_every`` steps and at the final step, whose answer cannot prune.
        device: overrides ``config.device``.
        progress: called after every optimiser step (progress bars).
        concurrent: trials running side by side on this device (they share its RAM, or the
            GPU's memory with a fractional GPU per trial, when ``config.memory_limit_gb`` is not
            given).
        weights: start from a checkpoint's weights, and/or save the final ones (``Weights``);
            ``metrics['weights_mb']`` is their size, ``metrics['saved_weights']`` 1 when saved.
        report_objective: what ``report`` receives (default ``config.objective``): a study passes
            its own objective, which may name a metric this trial cannot measure.
    Raises ConfigError only for a config that cannot describe any trial (bad data spec) or a
    ``point`` that is no point (MirasError for a value of another type).
    """
    point = as_point(point)  # a preset name, a file or a mapping too; a bad one raises here
    config = _as_config(config)
    tune_allocator()  # once per process: the steps' large tensors reuse the heap's pages
    release_free_memory()  # ... but not an earlier trial's: this one's resident peak is its own
    started = time.perf_counter()
    metrics: dict[str, float] = {}
    curve: list[tuple[int, float]] = []
    status = "complete"
    try:
        with _threads(config.threads):
            status = _run(point, config, report, progress, device, metrics, curve, started,
                          weights or Weights(), report_objective or config.objective, concurrent)
    except TrialFailed as failed:
        return _failed(failed.kind, str(failed), metrics, curve, started)
    except NonFiniteError as error:
        return _failed("nan", str(error), metrics, curve, started)
    except torch.cuda.OutOfMemoryError as error:
        return _failed("oom", f"CUDA out of memory: {str(error).splitlines()[0]}", metrics, curve, started)
    except MemoryError as error:  # past the process's memory limit (memory_limit.process_memory_limit)
        return _failed("oom", f"out of memory: {_first_line(error) or 'an allocation failed'}", metrics, curve, started)
    except (UnsupportedPoint, SequenceTooLong) as error:
        return _failed("build", str(error), metrics, curve, started)
    except ConfigError:
        raise
    except MirasError as error:
        return _failed("error", str(error), metrics, curve, started)
    except Exception as error:  # a bug or an unforeseen numeric failure must not stop a study
        if is_out_of_memory(error):  # torch's CPU allocator: "DefaultCPUAllocator: can't allocate memory"
            return _failed("oom", f"out of memory: {_first_line(error)}", metrics, curve, started)
        return _failed("error", f"{type(error).__name__}: {error}", metrics, curve, started)
    metrics["wall_s"] = time.perf_counter() - started
    result = TrialResult(status, metrics, curve)
    if status == "complete":
        try:
            result.objective = config.objective.value(metrics)
        except KeyError as error:  # the objective names a metric this data mix cannot give
            return _failed("error", str(error.args[0]), metrics, curve, started)
    return result


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else ""


def _failed(kind: FailureKind, reason: str, metrics: dict[str, float],
            curve: list[tuple[int, float]], started: float) -> TrialResult:
    metrics["wall_s"] = time.perf_counter() - started
    return TrialResult("failed", metrics, curve, failure=kind, reason=reason)


def _record_kernel_use(model: torch.nn.Module, device: torch.device, metrics: dict[str, float]) -> None:
    """metrics['kernel_share']: the share of memory layers that trained on a Triton kernel (so
    that tokens/s of points compare knowingly); on a GPU, a warning says why any did not."""
    problems = model.kernel_problems() if hasattr(model, "kernel_problems") else []
    if not problems:
        return
    metrics["kernel_share"] = sum(problem is None for problem in problems) / len(problems)
    reasons = sorted({problem for problem in problems if problem is not None})
    if device.type == "cuda" and reasons:
        log.warning("%d of %d memory layers ran the PyTorch form: %s", sum(p is not None for p in problems),
                    len(problems), "; ".join(reasons))


def _run(point: ModelPoint, config: TrialConfig, report: Reporter | None,
         progress: Callable[[StepInfo], None] | None, device_choice: str | torch.device | None, metrics: dict[str, float],
         curve: list[tuple[int, float]], started: float, weights: Weights, objective: Objective,
         concurrent: int = 1) -> str:
    try:
        point = config.apply(point)
    except ValidationError as error:
        problems = problems_from(error, ModelPoint, point.model_dump(), {})
        reason = "; ".join(str(problem) for problem in problems)
        raise TrialFailed("build", f"the trial's budget does not fit the point: {reason}") from None
    train = point.train
    device = pick_device(device_choice or (None if config.device == "auto" else config.device))
    peak = PeakMemory(device)  # this trial's peak, not the worker's lifetime one
    try:
        mix = DataMix(list(config.data))
    except OSError as error:
        if is_cache_path(error.filename):  # the cache folder, not the data: said as validate says it
            raise TrialFailed("error", cache_problem(error)) from None
        raise
    if point.block.vocab_size < mix.vocab_size:
        raise TrialFailed(
            "build", f"block.vocab_size ({point.block.vocab_size}) is smaller than the data's "
            f"vocabulary ({mix.vocab_size} ids); set block.vocab_size to at least {mix.vocab_size}"
        )
    try:
        steps = mix.train_steps(train.tokens, train.batch_size, train.seq_len, train.seed)
    except MirasError as error:
        raise TrialFailed("build", str(error)) from None
    limit = trial_memory_limit(config.memory_limit_gb, device, concurrent)
    estimate = check_fits(point, config.eval_batch_size, limit, config.memory_limit_gb is not None)
    metrics["params"] = float(estimate.params)
    metrics["state_size"] = float(state_size(point))
    metrics["memory_estimate_mb"] = estimate.total / 2**20
    torch.manual_seed(train.seed)
    model = build_model(point, device)
    if weights.start is not None:
        load_weights(model, weights.start)
    batches = _TimedBatches(mix, train.batch_size, train.seq_len, train.seed)
    stopped = {"pruned": False}

    def report_value(loss: float) -> float:
        """The objective on a quick validation pass; the training loss where it cannot be."""
        quick = evaluate(model, mix, batches=REPORT_EVAL_BATCHES,
                         batch_size=config.eval_batch_size or train.batch_size, seq_len=train.seq_len,
                         device=device, autocast=autocast_context(point, device))
        try:
            return objective.value({**metrics, **quick})
        except KeyError:
            return loss

    def on_step(info: StepInfo) -> bool:
        peak.sample()
        if progress is not None:
            progress(info)
        if info.loss > config.max_loss:
            raise TrialFailed(
                "diverged", f"training loss {info.loss:.3g} at step {info.step} is above max_loss "
                f"{config.max_loss:g}: the point diverged"
            )
        if config.time_limit_s is not None and time.perf_counter() - started > config.time_limit_s:
            raise TrialFailed(
                "time_limit", f"the trial ran past its time limit of {config.time_limit_s:g} s "
                f"at step {info.step} of {info.steps}"
            )
        final = info.step == info.steps
        if info.step % config.report_every == 0 or final:
            curve.append((info.step, info.loss))
            metrics["train_loss"] = info.loss
            # The final step is reported for the curve, but pruning then would only throw away
            # a fully trained trial before its evaluation.
            if report is not None and report(info.step, report_value(info.loss)) is False and not final:
                stopped["pruned"] = True
                return False
        return True

    trained = train_tokens(point, batches, steps=steps, on_step=on_step, device=device, model=model)
    _record_kernel_use(model, device, metrics)
    metrics["compiled"] = float(is_compiled(model))  # train.compile true, or 'auto' where it paid
    metrics["tokens"] = float(trained.tokens)
    metrics["tokens_per_s"] = trained.tokens_per_s
    metrics["train_s"] = trained.seconds
    if stopped["pruned"]:
        return "pruned"
    eval_start = time.perf_counter()
    metrics.update(evaluate(
        model, mix, batches=config.eval_batches,
        batch_size=config.eval_batch_size or train.batch_size, seq_len=train.seq_len,
        device=device, autocast=autocast_context(point, device),
    ))
    eval_s = time.perf_counter() - eval_start
    metrics["eval_s"] = eval_s
    metrics["data_s"] = batches.seconds
    step_s = max(trained.seconds - batches.seconds, 0.0)
    metrics["outside_step_share"] = 1.0 - step_s / max(time.perf_counter() - started, 1e-9)
    metrics["peak_mem_mb"] = peak.mb()
    metrics["weights_mb"] = weights_mb(model)
    if weights.save is not None:
        saved = save_checkpoint(weights.save, point, model, metrics, weights.max_mb)
        metrics["saved_weights"] = float(saved)
    return "complete"
