"""peak_mem_mb is the trial's own peak: a worker that once held a large array reports small
trials as small afterwards (ru_maxrss would report the large array for every later trial)."""

from __future__ import annotations

import mmap
import resource

import numpy as np
import psutil
import torch

from miras_search.presets import preset
from miras_search.schema import ModelPoint
from miras_search.trial import TrialConfig, peak_memory, run_trial

TINY = TrialConfig.model_validate({"data": [{"task": "text"}], "tokens": 512, "batch_size": 2,
                                   "seq_len": 32, "eval_batches": 1})
BIG_MB = 600


def _tiny_point() -> ModelPoint:
    data = preset("gated_deltanet").model_dump()
    data["block"].update({"d_model": 32, "n_heads": 2, "n_layers": 1, "max_seq_len": 512})
    return ModelPoint.model_validate(data)


def _touch_and_free(mb: int) -> None:
    """Make ``mb`` MiB resident, then give them back to the OS: fresh mapped pages, whatever
    the allocator does with a freed block (run_trial tunes the process it runs in to keep freed
    heap memory for the next step, miras_search.trial.allocator)."""
    with mmap.mmap(-1, mb * 2**20) as pages:
        np.frombuffer(pages, dtype=np.uint8)[:] = 1  # written, so resident


def test_a_trial_after_a_large_allocation_reports_its_own_peak():
    _touch_and_free(BIG_MB)
    lifetime_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = run_trial(_tiny_point(), TINY, device="cpu")
    assert result.ok, result.reason
    peak = result.metrics["peak_mem_mb"]
    assert 0 < peak < lifetime_mb - BIG_MB / 2, (peak, lifetime_mb)


def test_the_sampled_fallback_sees_an_allocation_during_the_trial(monkeypatch, tmp_path):
    monkeypatch.setattr(peak_memory, "_CLEAR_REFS", tmp_path / "missing" / "clear_refs")
    tracker = peak_memory.PeakMemory(torch.device("cpu"))
    assert not tracker._hwm
    before = tracker.mb()
    # fresh pages from the OS: a heap allocation could reuse memory the process freed earlier
    # and is still resident (glibc keeps it), and then the resident set would not grow
    with mmap.mmap(-1, 200 * 2**20) as pages:
        np.frombuffer(pages, dtype=np.uint8)[:] = 1  # written, so resident
        tracker.sample()
    assert tracker.mb() >= before + 150


def test_the_high_water_mark_is_reset_where_linux_allows_it():
    _touch_and_free(BIG_MB)
    resident_mb = psutil.Process().memory_info().rss / 2**20
    before = peak_memory._high_water_mark_mb()
    if before is None:  # not Linux: the sampled form is tested above
        return
    assert before >= resident_mb + BIG_MB * 0.9
    tracker = peak_memory.PeakMemory(torch.device("cpu"))
    if not tracker._hwm:  # /proc/self/clear_refs is not writable here
        return
    assert tracker.mb() < resident_mb + BIG_MB / 2
