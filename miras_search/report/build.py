"""``build_report``: the study's HTML page with its PNG figures written beside it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import optuna
from matplotlib.figure import Figure

from miras_search.report import html
from miras_search.report.anchors import AnchorVerdict, anchor_verdicts, expected_anchors
from miras_search.report.confirm import ConfirmResult
from miras_search.report.importance import study_importances
from miras_search.report.leaderboard import (
    board_rows,
    format_value,
    limit_text,
    rank_rows,
    rank_text,
    role,
    shown_metrics,
)
from miras_search.report.plots import (
    curves_figure,
    importance_figure,
    leaderboard_figure,
    pareto_figure,
    rank_figure,
    task_names,
    tasks_figure,
)
from miras_search.report.study_data import (
    AXES,
    ObjectiveInfo,
    TrialRow,
    count_states,
    study_objectives,
    study_rows,
)


@dataclass
class Report:
    """What ``build_report`` wrote, the ranking and the leaderboard it showed."""

    html: Path
    images: list[Path]
    ranked: list[TrialRow]  # feasible, non-duplicate complete trials, in `miras best`'s order
    board: list[TrialRow]  # the leaderboard: ``ranked``, then trials that break a limit
    objectives: list[ObjectiveInfo]
    anchors: list[AnchorVerdict] = field(default_factory=list)  # each anchor against the searched points


def _save(fig: Figure | None, path: Path, images: list[Path]) -> str:
    if fig is None:
        return ""
    fig.savefig(path, dpi=110)
    images.append(path)
    return html.image(path, path.stem)


def _leaderboard_html(board: list[TrialRow], objectives: list[ObjectiveInfo]) -> str:
    metrics = shown_metrics(board, objectives)
    headers = ["rank", "trial", "model", *AXES,
               *(f"{o.name} ({'min' if o.minimize else 'max'})" for o in objectives), *metrics]
    multi = len(objectives) > 1
    limits = any(not r.feasible for r in board)
    fidelities = any(r.fidelity != "base" for r in board)
    if fidelities:
        headers.append("fidelity")
    if multi:
        headers.append("Pareto")
    if limits:
        headers.append("limit")
    rows, classes = [], []
    for row in board:
        cells = [rank_text(row), str(row.number), row.anchor or "", *(row.axes[a] for a in AXES)]
        cells += [format_value(o.name, v) for o, v in zip(objectives, row.score, strict=True)]  # type: ignore[arg-type]
        cells += [format_value(m, row.metrics.get(m)) for m in metrics]
        if fidelities:
            cells.append(row.fidelity + (f", mean of {row.runs} runs" if row.runs > 1 else ""))
        if multi:
            cells.append("yes" if row.on_front else "")
        if limits:
            cells.append(limit_text(row))
        rows.append(cells)
        classes.append(role(row) if row.feasible else "infeasible")
    return html.table(headers, rows, classes, table_id="leaderboard", text_columns=7)


def _leaderboard_note(board: list[TrialRow], objectives: list[ObjectiveInfo]) -> str:
    """How the leaderboard is ordered and what it leaves out."""
    order = ("by the objective" if len(objectives) == 1 else
             "Pareto front first, then by the first objective")
    note = (f"Feasible complete trials ranked as `miras best` ranks them ({order}; values to 4 "
            "significant digits, exactly in `miras export --csv`); a trial that repeats an earlier point is not listed again. Named models "
            "(Moneta, Yaad, Memora) are highlighted in pink, other baselines in blue.")
    if any(not r.feasible for r in board):
        note += " Trials that break a limit of the study follow, greyed out and without a rank."
    if any(r.fidelity != "base" for r in board):
        note += (" Each point is shown at the highest fidelity it reached (a longer run from `miras confirm` "
                 "or successive halving, a larger one from `miras scale`: the fidelity column), and points "
                 "that reached a higher fidelity rank first.")
    return html.paragraph(note)


def _tasks_html(rows: list[TrialRow]) -> str:
    tasks = task_names(rows)
    body = [[r.label, *(format_value("acc", r.metrics.get(f"acc/{t}")) for t in tasks)] for r in rows]
    return html.table(["trial", *tasks], body, [role(r) for r in rows], table_id="tasks", text_columns=1)


_OUTCOMES = {"FAIL": "failed", "PRUNED": "pruned"}


def _has_reason(row: TrialRow) -> bool:
    """A failed trial, or one pruned before training because it breaks a limit."""
    return row.state == "FAIL" or (row.state == "PRUNED" and row.failure == "limit")


_STATE_WORDS = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "INTERRUPTED": "interrupted",
                "RUNNING": "running", "WAITING": "queued"}


def _interrupted(row: TrialRow) -> bool:
    return row.state == "FAIL" and row.failure == "interrupted"


def status_sentence(rows: list[TrialRow]) -> str:
    """'13 trials: 10 complete (1 with a value that is not finite, not ranked), 1 pruned, 2 failed.'
    or 'No trials yet.'; the longer or larger runs of points (confirm, scale, halving) apart, as
    `miras status` counts them."""
    extra = sum(r.fidelity != "base" for r in rows)
    runs = f" Besides, {extra} longer or larger run{'s' if extra != 1 else ''} of its points." if extra else ""
    rows = [r for r in rows if r.fidelity == "base"]
    if not rows:
        return "No trials yet." + runs
    # as `miras status`: a trial interrupted by a stopped run (queued again) is not a failure
    counts = count_states([r for r in rows if not _interrupted(r)])
    counts["INTERRUPTED"] = sum(map(_interrupted, rows))
    parts = []
    for state in (*_STATE_WORDS, *sorted(set(counts) - set(_STATE_WORDS))):
        if not counts.get(state):
            continue
        part = f"{counts[state]} {_STATE_WORDS.get(state, state.lower())}"
        unranked = sum(r.state == "COMPLETE" and r.values is not None and not r.complete for r in rows)
        if state == "COMPLETE" and unranked:
            part += f" ({unranked} with a value that is not finite, not ranked)"
        parts.append(part)
    return f"{len(rows)} trial{'s' if len(rows) != 1 else ''}: {', '.join(parts)}.{runs}"


def _status_html(rows: list[TrialRow]) -> str:
    explained = [r for r in rows if _has_reason(r)]
    parts = [html.paragraph(status_sentence(rows))]
    if explained:
        body = [[str(r.number), r.anchor or "", f"{_OUTCOMES[r.state]}: {r.failure or '?'}", r.reason or "?"]
                for r in explained[:30]]
        parts.append(html.table(["trial", "model", "outcome", "reason"], body,
                                table_id="failures", text_columns=4))
    return "".join(parts)


def _anchors_html(verdicts: list[AnchorVerdict], objectives: list[ObjectiveInfo]) -> str:
    """The anchors table and one sentence per anchor; empty when no anchor was run or expected."""
    if all(v.outcome == "not run" for v in verdicts):
        return ""
    multi = len(objectives) > 1
    rule = ("A searched point beats an anchor when it dominates it (no worse on every objective, "
            "strictly better on one); 'by' is its margin on each objective." if multi else
            "A searched point beats an anchor when its value is strictly better; an equal value is level.")
    note = (f"Each anchor against the searched points, at the study's own budget (complete trials "
            f"inside every limit, a repeated point counted once). {rule} A searched point at the "
            "anchor's own point is the anchor measured again, not a point that beats it.")
    first = objectives[0]
    headers = ["anchor", "trial", *(f"{o.name} ({'min' if o.minimize else 'max'})" for o in objectives),
               "outcome", "beaten by", "best of them", "by", "level", "anchors ahead"]
    rows, classes = [], []
    for v in verdicts:
        values = [format_value(o.name, x) for o, x in zip(objectives, v.values, strict=True)] if v.values \
            else ["-"] * len(objectives)
        best = v.best
        rows.append([
            v.name, "-" if v.number is None else str(v.number), *values,
            v.outcome + (f": {v.reason}" if v.reason and not v.comparable else ""),
            f"{len(v.beaten_by)} of {v.compared}" if v.comparable else "-",
            f"#{best.number} ({format_value(first.name, best.values[0])})" if best else "-",
            best.describe_margins(objectives) if best else "-",
            ", ".join(f"#{n}" for n in v.level) or "-",
            ", ".join(w.anchor or "" for w in v.anchors_ahead) or "-",
        ])
        classes.append("named" if v.named else "baseline")
    sentences = "".join(html.paragraph(v.sentence(objectives), "anchor") for v in verdicts)
    return html.section("Against the anchors", html.paragraph(note),
                        html.table(headers, rows, classes, table_id="anchors", text_columns=2),
                        sentences)


def _pareto_section(board: list[TrialRow], objectives: list[ObjectiveInfo], top: set[int],
                    path: Path, images: list[Path]) -> str:
    """pareto.png over the leaderboard's trials, with its legend; empty without the metrics."""
    multi = len(objectives) > 1
    front = {r.number for r in board if r.on_front} if multi else set()
    fig = pareto_figure(board, objectives[0], front, top)
    if fig is None:
        return ""
    note = ("Stars: the study's Pareto front over its objectives. Staircase: the front of each "
            "2-D projection." if multi else
            "Single-objective study; the staircase is the front of each 2-D projection.")
    if any(not r.feasible for r in board):
        note += " Both are over feasible trials only; crosses mark trials that break a limit."
    return html.section("Pareto front" if multi else "Trade-offs", html.paragraph(note),
                        _save(fig, path, images))


def confirm_section(result: ConfirmResult, out_dir: Path, images: list[Path]) -> str:
    """The proxy check's table, figure and plain verdict."""
    usable = [e for e in result.entries if e.long]
    rows = [[e.label, f"{e.short:.4g}", e.long_mean_text, e.long_std_text, str(len(e.long)),
             "; ".join(e.failures)] for e in result.entries]
    parts = [
        html.paragraph(result.verdict, "verdict"),
        html.paragraph(f"Long runs: {result.scale:g}x the study's tokens, seeds {result.seeds}"
                       + (f", time limit {result.time_limit_source}" if result.time_limit_source else "")
                       + f"; intervals: {result.method}."),
        html.table(["point", f"short {result.objective.name}", "long mean", "long std", "seeds ok",
                    "failures"], rows, table_id="confirm", text_columns=1),
    ]
    for c in result.correlations:
        parts.append(html.paragraph(f"{c.describe()}."))
    if len(usable) >= 2:
        fig = rank_figure([e.short for e in usable], [e.long_mean for e in usable],
                          [e.label for e in usable], f"short {result.objective.name}",
                          f"long {result.objective.name} (mean over seeds)")
        parts.append(_save(fig, out_dir / "proxy_check.png", images))
    if result.missing:
        parts.append(html.paragraph(f"Named models not measured by the study: {', '.join(result.missing)}."))
    for name, why in result.named_left_out.items():
        parts.append(html.paragraph(f"{name} is left out: {why}."))
    return html.section("Proxy check (short vs long training)", *parts)


def scale_section(study: optuna.Study, out_dir: Path, images: list[Path]) -> str:
    """`miras scale`'s rungs stored in the study: the ranking at the target compute and the figure."""
    from miras_search.scale.plot import scale_figure
    from miras_search.scale.results import scale_table

    stored = study.user_attrs.get("study_file")
    block = stored.get("scale") if isinstance(stored, dict) else None
    objectives = study.user_attrs.get("objectives") or []
    if isinstance(block, dict):
        metric, target = block.get("metric", "val_loss"), block.get("target_flops")
    elif study.user_attrs.get("kind") == "scale" and objectives:
        metric, target = objectives[0]["name"], None
    else:
        metric, target = "val_loss", None
    table = scale_table(study, metric, target)
    if table is None:
        return ""
    rows = []
    for place, point in enumerate(table.points, start=1):
        fitted = point.fit is not None
        rows.append([str(place) if fitted else "-", point.label, str(len(point.rungs)),
                     "; ".join(f"{r.loss:.4g} at {r.compute:.3g}" for r in point.rungs),
                     point.fit.describe() if fitted else point.fit_error,
                     f"{point.at_target:.4g}" if fitted else "-"])
    note = (f"Each point trained on a ladder of sizes and budgets (`miras scale`); {metric} against training "
            "compute (counted: 6 x the parameters a token multiplies + 3 x the memory's or attention's own "
            "work per token), a power law L(C) = e + a (C / C0)^-b fitted per point (3 parameters from 3 "
            "rungs fit exactly: use 4 or more to see the fit's error), and the points ranked by the fitted "
            f"loss at {table.target_flops:.3g} FLOPs (the star in the figure).")
    return html.section("Scaling", html.paragraph(note),
                        html.table(["rank", "point", "rungs", f"{metric} at compute", "fit", "at target"], rows,
                                   table_id="scale", text_columns=5),
                        _save(scale_figure(table), out_dir / "scale.png", images))


def build_report(study: optuna.Study, out_dir: str | Path, top: int = 10,
                 confirm: ConfirmResult | None = None) -> Report:
    """Write ``out_dir/index.html`` (self-contained) and its PNG figures; return what was written.

    The leaderboard ranks the trials as ``miras best`` does (feasible, non-duplicate complete
    trials; the Pareto front first for several objectives) and lists the trials that break a
    limit after them, unranked; the figures show the top ``top`` searched points against the
    study's anchors (named models and baselines).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    objectives = study_objectives(study)
    rows = study_rows(study)
    ranked = rank_rows(rows)
    board = board_rows(rows, objectives)
    top_rows = [r for r in ranked if not r.anchor][:top]
    anchors = [r for r in ranked if r.anchor]
    top_set = {r.number for r in top_rows}
    shown = sorted({r.number: r for r in (*top_rows, *anchors)}.values(), key=ranked.index)
    images: list[Path] = []
    space = study.user_attrs.get("space")
    summary = (f"Study '{study.study_name}'" + (f" over space '{space}'" if space else "")
               + "; objectives: " + ", ".join(f"{o.name} ({o.direction})" for o in objectives) + ".")
    sections = [html.section("Summary", html.paragraph(summary), _status_html(rows))]
    verdicts = anchor_verdicts(rows, objectives, expected_anchors(study.user_attrs.get("study_file")))
    against = _anchors_html(verdicts, objectives)
    if against:
        sections.append(against)
    if board:
        sections.append(html.section(
            "Leaderboard", _leaderboard_note(board, objectives), _leaderboard_html(board, objectives),
            _save(leaderboard_figure(shown, objectives[0], top_set) if shown else None,
                  out / "leaderboard.png", images),
        ))
        sections.append(_pareto_section(board, objectives, top_set, out / "pareto.png", images))
    importances, why = study_importances(study, objectives)
    if importances:
        tables = [html.table(["axis", f"importance ({imp.objective})"],
                             [[a, f"{v:.3f}"] for a, v in imp.axes.items()], text_columns=1)
                  for imp in importances]
        sections.append(html.section(
            "Parameter importances",
            html.paragraph("optuna.importance.get_param_importances (default evaluator) on "
                           f"{importances[0].trials} complete trials with searched parameters "
                           "(anchors outside the space have none), summed per axis; with few "
                           "trials these are rough (equal shares mean no signal yet)."),
            *tables, _save(importance_figure(importances), out / "importances.png", images),
        ))
    else:
        sections.append(html.section("Parameter importances", html.paragraph(f"Not available: {why}.")))
    curves = curves_figure(top_rows, anchors)
    if curves is not None:
        sections.append(html.section("Learning curves", _save(curves, out / "curves.png", images)))
    if task_names(shown):
        sections.append(html.section("Synthetic recall tasks", _tasks_html(shown),
                                     _save(tasks_figure(shown), out / "tasks.png", images)))
    if confirm is not None:
        sections.append(confirm_section(confirm, out, images))
    scaling = scale_section(study, out, images)
    if scaling:
        sections.append(scaling)
    path = out / "index.html"
    path.write_text(html.page(f"miras report: {study.study_name}", sections))
    return Report(path, images, ranked, board, objectives, verdicts)
