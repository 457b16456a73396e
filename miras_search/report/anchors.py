"""Against the anchors: which searched points beat each anchor of a study, and by how much.

The study's point is to find what beats Moneta, Yaad and Memora (and the other baselines it
measures as anchors). The comparison is at the study's own budget (base fidelity: the trials the
search ran, the anchors with the same budget), over the trials the study ranks (complete, finite,
inside every limit, not a repeat of an earlier point):

* one objective: a searched point beats an anchor when its value is strictly better in the
  objective's direction; an equal value is level, not a win;
* several objectives: it beats the anchor when it dominates it (no worse on every objective,
  strictly better on one); the margins shown are per objective.

A searched point at the anchor's own point (the same model, sampled again) is that anchor
measured once more, never a point that beats it. An anchor that failed, was pruned, breaks a
limit or was never run is said so, and nothing is counted as beating it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from miras_search.presets import NAMED_MODELS, preset_names
from miras_search.report.leaderboard import format_value
from miras_search.report.study_data import ObjectiveInfo, TrialRow
from miras_search.study.records import stored_key


@dataclass(frozen=True)
class Win:
    """A trial that beats an anchor: its number, values, and ``margins`` (per objective, how much
    better in the objective's direction: positive is better; for a dominating point none is
    negative)."""

    number: int
    values: tuple[float, ...]
    margins: tuple[float, ...]
    anchor: str | None = None  # set when the winner is another anchor (a baseline)

    def describe_margins(self, objectives: Sequence[ObjectiveInfo]) -> str:
        """'0.3' for one objective; 'val_bpb 0.3, mad_score 0.1' for several."""
        if len(objectives) == 1:
            return format_value(objectives[0].name, self.margins[0])
        return ", ".join(f"{o.name} {format_value(o.name, m)}" for o, m in zip(objectives, self.margins, strict=True))


@dataclass
class AnchorVerdict:
    """One anchor against the study's searched points.

    ``outcome``: "measured" (a value to beat), "breaks a limit" (measured, outside a limit: still
    compared), "failed", "pruned", "running", "queued" or "not run".
    """

    name: str
    outcome: str
    number: int | None = None
    values: tuple[float, ...] | None = None
    reason: str | None = None
    compared: int = 0  # searched points compared against it
    beaten_by: list[Win] = field(default_factory=list)  # searched points, best first
    level: list[int] = field(default_factory=list)  # searched points with the same values
    same_point: list[int] = field(default_factory=list)  # searched trials at the anchor's own point
    anchors_ahead: list[Win] = field(default_factory=list)  # other anchors that beat it

    @property
    def named(self) -> bool:
        """One of the paper's new models (Moneta, Yaad, Memora)."""
        return self.name in NAMED_MODELS

    @property
    def comparable(self) -> bool:
        return self.values is not None

    @property
    def best(self) -> Win | None:
        """The searched point that beats it by the most (first objective), or None."""
        return self.beaten_by[0] if self.beaten_by else None

    def sentence(self, objectives: Sequence[ObjectiveInfo]) -> str:
        """One plain line: 'moneta (#0, val_bpb 3.3): beaten by 2 of 6 searched points; the best,
        #5 (3), by 0.3.' or why it cannot be compared."""
        if not self.comparable:
            where = f" (#{self.number})" if self.number is not None else ""
            why = f": {self.reason}" if self.reason else ""
            outcome = "not run in this study" if self.outcome == "not run" else self.outcome
            return f"{self.name}{where}: {outcome}{why}; nothing is compared against it."
        first = objectives[0]
        shown = ", ".join(f"{o.name} {format_value(o.name, v)}" for o, v in zip(objectives, self.values or (), strict=True))
        head = f"{self.name} (#{self.number}, {shown})"
        if self.outcome != "measured":
            head += f" [{self.outcome}" + (f": {self.reason}]" if self.reason else "]")
        how = "dominated by" if len(objectives) > 1 else "beaten by"
        points = f"searched point{'s' if self.compared != 1 else ''}"
        if not self.compared:
            text = f"{head}: no searched point to compare with"
        elif not self.beaten_by:
            text = f"{head}: {how} none of the {self.compared} {points}"
        else:
            best = self.beaten_by[0]
            text = (f"{head}: {how} {len(self.beaten_by)} of the {self.compared} {points}; the "
                    f"best, #{best.number} ({first.name} {format_value(first.name, best.values[0])}), "
                    f"by {best.describe_margins(objectives)}")
        extra = []
        if self.level:
            extra.append(f"level with {_numbers(self.level)}")
        if self.same_point:
            extra.append(f"{_numbers(self.same_point)}: its own point measured again, not counted")
        if self.anchors_ahead:
            names = [w.anchor or f"#{w.number}" for w in self.anchors_ahead]
            extra.append(f"the anchor{'s' if len(names) > 1 else ''} {', '.join(names)} also beat it")
        return text + "".join(f"; {e}" for e in extra) + "."


def _numbers(numbers: list[int]) -> str:
    return ", ".join(f"#{n}" for n in numbers)


def _margins(values: Sequence[float], anchor: Sequence[float], objectives: Sequence[ObjectiveInfo]) -> tuple[float, ...]:
    """How much better ``values`` are than ``anchor``'s per objective (positive: better)."""
    return tuple((a - v) if o.minimize else (v - a)
                 for o, v, a in zip(objectives, values, anchor, strict=True))


def _beats(margins: tuple[float, ...]) -> bool:
    """Better: strictly on the one objective; dominating (no worse anywhere, better somewhere)
    for several."""
    return all(m >= 0 for m in margins) and any(m > 0 for m in margins)


def _base(rows: Sequence[TrialRow]) -> list[TrialRow]:
    return [r for r in rows if r.fidelity == "base"]


def _rankable(row: TrialRow) -> bool:
    return row.complete and row.feasible


_OUTCOME = {"FAIL": "failed", "PRUNED": "pruned", "RUNNING": "running", "WAITING": "queued"}


def _point_identity(row: TrialRow) -> str | None:
    """What makes two trials the same model: the key ``study.records.point_key`` computes from
    the stored point (a study stored by an earlier version may hold other keys: ``stored_key``),
    else the stored ``point_key``, else the stored point as written without its name; None when
    the trial stores neither."""
    point = row.point if isinstance(row.point, dict) and row.point else None
    key = stored_key({"point": point, "point_key": row.point_key})
    if key is not None:
        return key
    if point is not None:
        return json.dumps({k: v for k, v in point.items() if k != "name"}, sort_keys=True, default=str)
    return None


def _anchor_trial(trials: list[TrialRow]) -> tuple[TrialRow | None, str]:
    """The trial that measured the anchor and its outcome: a complete one first (one that ran
    before one that reused its result), else the latest attempt."""
    complete = [r for r in trials if r.complete]
    if complete:
        row = min(complete, key=lambda r: (r.reused_from is not None, r.number))
        return row, "measured" if row.feasible else "breaks a limit"
    if not trials:
        return None, "not run"
    row = max(trials, key=lambda r: r.number)
    if row.state == "COMPLETE":  # a value that is not finite
        return row, "failed"
    return row, _OUTCOME.get(row.state, row.state.lower())


def expected_anchors(study_file: Any) -> list[str]:
    """The anchors the stored study file names (``sampler.anchors``; [] when not stored)."""
    if not isinstance(study_file, dict):
        return []
    sampler = study_file.get("sampler")
    anchors = sampler.get("anchors") if isinstance(sampler, dict) else None
    if anchors == "all":
        return preset_names()
    return [str(a) for a in anchors] if isinstance(anchors, list) else []


def anchor_verdicts(rows: Sequence[TrialRow], objectives: Sequence[ObjectiveInfo],
                    expected: Sequence[str] = ()) -> list[AnchorVerdict]:
    """Each anchor of the study (those in its trials, those ``expected`` and the named models, in
    that order of first mention: named models first) against the searched points (see the module
    docstring for the rules). ``rows``: ``study_rows(study)``."""
    base = _base(rows)
    searched = [r for r in base if not r.anchor and _rankable(r) and r.reused_from is None]
    names = list(dict.fromkeys([*NAMED_MODELS, *(r.anchor for r in base if r.anchor), *expected]))
    measured: dict[str, AnchorVerdict] = {}
    verdicts = []
    for name in names:
        row, outcome = _anchor_trial([r for r in base if r.anchor == name])
        verdict = AnchorVerdict(name, outcome, row.number if row else None)
        verdicts.append(verdict)
        if row is None:
            continue
        if outcome not in ("measured", "breaks a limit"):
            verdict.reason = row.reason or row.failure or (
                "its value is not finite" if row.state == "COMPLETE" else None)
            continue
        verdict.values = row.values
        if outcome == "breaks a limit":
            verdict.reason = "; ".join(row.broken_limits)
        measured[name] = verdict
        own = _point_identity(row)
        wins = []
        for other in searched:
            if own is not None and _point_identity(other) == own:
                verdict.same_point.append(other.number)
                continue
            verdict.compared += 1
            margins = _margins(other.values or (), row.values, objectives)  # type: ignore[arg-type]
            if _beats(margins):
                wins.append(Win(other.number, other.values, margins))  # type: ignore[arg-type]
            elif all(m == 0 for m in margins):
                verdict.level.append(other.number)
        verdict.beaten_by = sorted(wins, key=lambda w: (-w.margins[0], w.number))
    for verdict in measured.values():
        for other in measured.values():
            if other is verdict or other.outcome != "measured":  # one outside a limit is not ahead
                continue
            margins = _margins(other.values or (), verdict.values or (), objectives)
            if _beats(margins):
                verdict.anchors_ahead.append(Win(other.number or 0, other.values or (), margins, other.name))
        verdict.anchors_ahead.sort(key=lambda w: (-w.margins[0], w.number))
    return verdicts
