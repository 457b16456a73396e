"""Results people can look at: the HTML report, point export, the proxy check, the dashboard."""

from miras_search.report.build import Report, build_report
from miras_search.report.confirm import ConfirmResult, confirm_study
from miras_search.report.export import export_top
from miras_search.report.leaderboard import leaderboard_table, pareto_mask, rank_rows
from miras_search.report.ranks import kendall, rank_agreement, spearman
from miras_search.report.study_data import open_report_study, study_objectives, study_rows

__all__ = [
    "ConfirmResult", "Report", "build_report", "confirm_study", "export_top", "kendall",
    "leaderboard_table", "open_report_study", "pareto_mask", "rank_agreement", "rank_rows",
    "spearman", "study_objectives", "study_rows",
]
