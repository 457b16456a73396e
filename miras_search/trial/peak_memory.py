"""The peak memory of one trial, not of the process that ran it.

On CUDA: the peak of allocated memory since the trial reset PyTorch's counter. On CPU the
process's peak resident set (``ru_maxrss``) only grows, so a Ray worker would report the largest
trial it ever ran for every later one; instead, Linux's peak counter (VmHWM) is reset at the
trial's start by writing 5 to ``/proc/self/clear_refs``. Where that is not possible (another OS,
a locked-down /proc), the resident set size is sampled (psutil) at every training step and the
largest sample is the peak.
"""

from __future__ import annotations

from pathlib import Path

import psutil
import torch

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def _reset_high_water_mark() -> bool:
    """Reset this process's VmHWM to its current resident set; False where that is not possible."""
    try:
        _CLEAR_REFS.write_text("5")
        return _high_water_mark_mb() is not None
    except OSError:
        return False


def _high_water_mark_mb() -> float | None:
    """VmHWM (peak resident set since the last reset) in MiB, or None."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        return None
    return None


class PeakMemory:
    """Tracks one trial's peak memory on ``device``: create it at the trial's start, call
    ``sample()`` during the trial (cheap; needed only where VmHWM cannot be reset), read ``mb()``."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._process = psutil.Process()
        self._sampled = 0.0
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            self._hwm = False
        else:
            self._hwm = _reset_high_water_mark()
            self.sample()

    def sample(self) -> None:
        if self.device.type != "cuda" and not self._hwm:
            self._sampled = max(self._sampled, self._process.memory_info().rss / 2**20)

    def mb(self) -> float:
        """The trial's peak so far, in MiB."""
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        if self._hwm:
            peak = _high_water_mark_mb()
            if peak is not None:
                return peak
        self.sample()
        return self._sampled
