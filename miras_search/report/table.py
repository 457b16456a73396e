"""Every trial of a study as flat records: for CSV files, pandas, spreadsheets.

One record per trial, in trial-number order, with fixed columns first (``number``, ``state``,
``rank``, ``anchor``, the four axes, one column per objective, ``failure``, ``reason``), then the
searched parameters as ``param:<name>`` and the metrics as ``metric:<name>``. Values are exact
(as stored), not rounded as the report's tables are.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import optuna

from miras_search.errors import MirasError
from miras_search.report.study_data import AXES, open_report_study, study_objectives, study_rows

StudyRef = optuna.Study | str | Path
"""An Optuna study, or a study YAML file (opened as ``miras report`` opens it)."""


def _as_study(study: StudyRef) -> optuna.Study:
    """``study`` as an Optuna study; MirasError names what else it may be."""
    if isinstance(study, optuna.Study):
        return study
    if isinstance(study, str | Path):
        return open_report_study(study)
    raise MirasError(f"study: expected an optuna.Study or a study YAML file; got {type(study).__name__}")


def _fixed_columns(study: optuna.Study) -> list[str]:
    """The columns every record has, in order (a study without trials has only these)."""
    return ["number", "state", "rank", "anchor", *AXES, *(o.name for o in study_objectives(study)),
            "failure", "reason", "reused_from"]


def trial_records(study: StudyRef) -> list[dict[str, Any]]:
    """One flat mapping per trial (see the module docstring); missing values are None.
    ``study``: an Optuna study or a study file (``trial_records("studies/quickstart.yaml")``)."""
    study = _as_study(study)
    objectives = study_objectives(study)
    rows = study_rows(study)
    params = sorted({name for row in rows for name in row.params})
    metrics = sorted({name for row in rows for name in row.metrics})
    records = []
    for row in rows:
        record: dict[str, Any] = {
            "number": row.number, "state": row.state, "rank": row.rank, "anchor": row.anchor,
            **{axis: row.axes.get(axis) for axis in AXES},
        }
        for index, objective in enumerate(objectives):
            record[objective.name] = row.values[index] if row.values is not None else None
        record.update(failure=row.failure, reason=row.reason, reused_from=row.reused_from)
        record.update({f"param:{name}": row.params.get(name) for name in params})
        record.update({f"metric:{name}": row.metrics.get(name) for name in metrics})
        records.append(record)
    return records


def trials_csv(study: StudyRef) -> str:
    """The study's ``trial_records`` as CSV text (a header line, then one line per trial)."""
    study = _as_study(study)
    records = trial_records(study)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(records[0]) if records else _fixed_columns(study),
                            lineterminator="\n")
    writer.writeheader()  # also for a study without trials: the columns are the same
    writer.writerows(records)
    return out.getvalue()


def trials_dataframe(study: StudyRef):
    """The study's ``trial_records`` as a pandas DataFrame indexed by trial number (pandas is
    not a dependency of the toolkit: MirasError says how to install it)."""
    try:
        import pandas as pd
    except ImportError:
        raise MirasError("trials_dataframe needs pandas, which is not installed; "
                         "`pip install pandas` (or use trials_csv / trial_records)") from None
    study = _as_study(study)
    records = trial_records(study)
    columns = list(records[0]) if records else _fixed_columns(study)
    return pd.DataFrame.from_records(records, columns=columns).set_index("number")
