"""Optuna studies over a search space: study files, storage, the ask/tell driver, resume."""

from miras_search.study.driver import Event, RunSummary, StudyDriver, run_study
from miras_search.study.execute import TrialTask, execute
from miras_search.study.pools import InlinePool, Pool
from miras_search.study.setup import open_study, storage_of
from miras_search.study.spec import Limit, StudyFile, load_study_dict, load_study_file

__all__ = [
    "Event", "InlinePool", "Limit", "Pool", "RunSummary", "StudyDriver", "StudyFile", "TrialTask",
    "execute", "load_study_dict", "load_study_file", "open_study", "run_study", "storage_of",
]
