"""One short pretraining trial of a point -> trustworthy, comparable metrics."""

from miras_search.trial.config import Objective, TrialConfig
from miras_search.trial.evaluate import MEASURE_VERSION
from miras_search.trial.result import TrialFailed, TrialResult
from miras_search.trial.runner import run_trial

__all__ = ["MEASURE_VERSION", "Objective", "TrialConfig", "TrialFailed", "TrialResult", "run_trial"]
