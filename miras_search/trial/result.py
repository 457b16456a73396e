"""What a trial returns: metrics, the learning curve, and (when it failed) why."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from miras_search.errors import MirasError

Status = Literal["complete", "pruned", "failed"]
FailureKind = Literal["build", "nan", "diverged", "oom", "time_limit", "data", "error"]


class TrialFailed(MirasError):
    """Raised inside a trial to end it as failed; ``kind`` says which failure it was."""

    def __init__(self, kind: FailureKind, message: str):
        self.kind = kind
        super().__init__(message)


@dataclass
class TrialResult:
    """The outcome of one trial.

    metrics: name -> value (val_loss, val_bpb, acc/<task>, tokens_per_s, peak_mem_mb, params,
    state_size, wall_s, ...); for a failed trial, whatever was measured before it failed.
    curve: (step, training loss) every ``report_every`` steps and at the final step.
    """

    status: Status
    metrics: dict[str, float] = field(default_factory=dict)
    curve: list[tuple[int, float]] = field(default_factory=list)
    objective: float | None = None
    failure: FailureKind | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "complete"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["metrics"] = {k: (v if math.isfinite(v) else str(v)) for k, v in self.metrics.items()}
        data["curve"] = [[x if not isinstance(x, float) or math.isfinite(x) else str(x) for x in point]
                         for point in self.curve]  # a diverged loss: "nan", as in metrics (valid JSON)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialResult:
        data = dict(data)
        data["metrics"] = {k: float(v) for k, v in data.get("metrics", {}).items()}
        data["curve"] = [tuple(float(x) if isinstance(x, str) else x for x in p) for p in data.get("curve", [])]
        return cls(**data)

    def write_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def merge_seeds(results: list[TrialResult], seeds: list[int | None]) -> TrialResult:
    """One result of a point trained once per seed of ``seeds`` (``results`` in that order, the
    last one possibly failed: the seeds after it were not run): the mean of each metric over the
    seeds, ``<metric>/seed<N>`` for each seed's, the first seed's curve; a failure names its seed."""
    last = results[-1]
    if len(results) == 1 or not last.ok:
        return last if len(results) == 1 else TrialResult(
            last.status, last.metrics, results[0].curve, failure=last.failure,
            reason=f"seed {seeds[len(results) - 1]}: {last.reason}",
        )
    names = set.intersection(*(set(r.metrics) for r in results))
    metrics = {n: sum(r.metrics[n] for r in results) / len(results) for n in names}
    for seed, result in zip(seeds, results, strict=False):
        metrics.update({f"{n}/seed{seed}": v for n, v in result.metrics.items()})
    return TrialResult("complete", metrics, results[0].curve)
