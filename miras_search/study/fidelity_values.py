"""What the sampler learns from higher-fidelity results: each point's values carried onto the base scale.

A study's sampler (TPE, NSGA-II, CMA-ES) models one objective surface: the values of the study's
base trials, all measured at one budget. A point that ``confirm``, ``scale`` or successive halving
re-measured longer or larger has a better-informed value, but on another scale (val_bpb after 4x
the tokens is lower for every point), so it cannot simply join the base trials or replace its base
value: it would look better than every point that was not re-measured, only for being re-measured.

The choice here is a rank (quantile) mapping, one group of comparable measurements at a time:

- A group is one measurement protocol: the points promoted to the same successive-halving rung,
  confirmed with the same multiplier and seeds, or trained on the same ``scale`` rung (same width,
  depth, context and tokens). Within a group the points were measured alike, so their order is
  the better-informed order; their absolute values say nothing about the base scale.
- Within a group of n >= 2 points, the n base values those points hold are dealt out again in the
  group's order: the point best at the higher fidelity gets the best of the n base values, the
  second the second, and so on (per objective, each objective in its own direction-free order, as
  the map is monotone increasing). The multiset of values the sampler sees is unchanged, so TPE's
  split into good and bad points and CMA-ES's scale stay as the base budget made them; only who
  holds which value follows the higher fidelity.
- Groups are applied from the lowest level to the highest (a group's level: the mean of its
  members' ``fidelity.level``), so where fidelities disagree the highest decides, as in
  ``summary.ranked``; groups at or below the base fidelity (a ``scale`` rung smaller than the
  study's own run) are not used, and a group of a single point (nothing to rank it against) leaves
  its value as it is.

Why not a fitted base -> high offset or ratio: val_bpb's gain from 4x the tokens differs between
architectures (that is what a proxy check measures), so one offset would move points by a gap the
data does not support, and a per-point gap is only known for the points re-measured. The rank
mapping assumes nothing about the scale of the higher fidelity and is exact where it has data:
the order of the points measured there. Its limit: it never moves a re-measured point past a
point that was not re-measured (it has no value for that point at the higher fidelity).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from miras_search.study.fidelity import BASE_LEVEL, fidelity_of, level, seeds
from miras_search.study.records import is_feasible


def protocol(trial: FrozenTrial) -> Hashable:
    """The measurement a fidelity trial belongs to: trials with the same protocol measured their
    points alike (same rung of successive halving, same confirm multiplier and seeds, same scale rung)."""
    record = fidelity_of(trial) or {}
    source = str(record.get("source", "?"))
    if source == "scale":
        return (source, record.get("d_model"), record.get("n_layers"), record.get("seq_len"),
                record.get("tokens"), seeds(trial))
    if source == "halving" and isinstance(record.get("grow"), dict):
        return (source, tuple(sorted(record["grow"].items())), seeds(trial))
    return (source, level(trial), seeds(trial))


def _mean(rows: list[list[float]]) -> list[float]:
    return [sum(column) / len(rows) for column in zip(*rows, strict=True)]


def sampler_values(trials: Iterable[FrozenTrial]) -> dict[int, list[float]]:
    """Trial number -> the values a sampler should see for the base trials whose point has
    higher-fidelity results (the module docstring says how); base trials not in the dict keep
    their own values. ``trials``: all of a study's trials (base and fidelity)."""
    trials = [t for t in trials if t.state == TrialState.COMPLETE and t.values is not None]
    base_numbers: dict[str, list[int]] = {}
    current: dict[str, list[float]] = {}  # point_key -> its values on the base scale
    for trial in sorted(trials, key=lambda t: t.number):
        key = trial.user_attrs.get("point_key")
        if not key or fidelity_of(trial) is not None:
            continue
        base_numbers.setdefault(key, []).append(trial.number)
        if "reused_from" not in trial.user_attrs and is_feasible(trial):
            current.setdefault(key, list(trial.values))
    groups: dict[Hashable, dict[str, list[FrozenTrial]]] = {}
    for trial in trials:
        key = trial.user_attrs.get("point_key")
        if fidelity_of(trial) is None or key not in current or not is_feasible(trial):
            continue
        if (level(trial), seeds(trial)) <= (BASE_LEVEL, 1):
            continue  # not above the study's own measurement
        groups.setdefault(protocol(trial), {}).setdefault(key, []).append(trial)
    changed: set[str] = set()
    for members in sorted(groups.values(), key=_group_level):
        if len(members) < 2:
            continue
        keys = sorted(members)
        high = {k: _mean([list(t.values) for t in members[k]]) for k in keys}
        for j in range(len(current[keys[0]])):
            pool = sorted(current[k][j] for k in keys)
            order = sorted(keys, key=lambda k, j=j: (high[k][j], current[k][j], k))
            for value, k in zip(pool, order, strict=True):
                if current[k][j] != value:
                    current[k][j] = value
                    changed.add(k)
    return {number: list(current[k]) for k in changed for number in base_numbers[k]}


def _group_level(members: dict[str, list[FrozenTrial]]) -> tuple[float, Any]:
    levels = [level(t) for group in members.values() for t in group]
    return (sum(levels) / len(levels), max(seeds(t) for group in members.values() for t in group))
