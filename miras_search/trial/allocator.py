"""glibc's allocator set for training loops: freed tensors' memory kept for the next step.

Every training step allocates and frees the same large tensors. glibc serves a block above its
mmap threshold (128 KiB at start, rising only as such blocks are freed) with fresh pages from
the kernel and hands them back on free, so each step faults them in again. Where a page fault
is expensive (virtual machines and sandboxes: about 7 us a fault on the 2-core machine the
benchmarks ran on) that is a cost that grows faster than the work: the chunked forms' state
tensors outgrow the caches and the thresholds at long sequences (gated_deltanet fwd+bwd at
T=8192: 0.279 s, 0.212 s with this; time exponent from T=1024 1.13, 1.03 with this).

``tune_allocator`` raises the mmap threshold to glibc's maximum (32 MiB: larger blocks still go
back to the kernel) and the trim threshold to 1 GiB, so blocks up to 32 MiB are reused from the
heap. The price: a process keeps up to its peak heap instead of shrinking between steps, which
a trial process reaches anyway. A no-op off glibc; ``MIRAS_MALLOC_TUNING=0`` turns it off.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import platform
import sys

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20
"""glibc's largest mmap threshold on 64-bit systems (HEAP_MAX_SIZE / 2)."""
TRIM_THRESHOLD = 2**30


@functools.cache
def tune_allocator() -> bool:
    """Set glibc's mmap and trim thresholds for this process (once); whether they were set."""
    if os.environ.get("MIRAS_MALLOC_TUNING", "1") == "0":
        return False
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    if not done:
        log.debug("glibc refused the allocator thresholds; its defaults stay")
    return done
