"""glibc's allocator set for training loops: freed tensors' memory kept for the next step.

Every training step allocates and frees the same large tensors. glibc serves a block above its
mmap threshold (128 KiB at start, rising only as such blocks are freed) with fresh pages from
the kernel and hands them back on free, so each step faults them in again. Where a page fault
is expensive (virtual machines and sandboxes: about 7 us a fault on the 2-core machine the
benchmarks ran on) that is a cost that grows faster than the work: the chunked forms' state
tensors outgrow the caches and the thresholds at long sequences (gated_deltanet fwd+bwd at
T=8192: 0.279 s, 0.212 s with this; time exponent from T=1024 1.13, 1.03 with this).

``tune_allocator`` raises the mmap threshold to glibc's maximum (32 MiB: larger blocks still go
back to the kernel) and the trim threshold to glibc's largest (2 GiB: mallopt takes an int), so
blocks up to 32 MiB are reused from the heap and a step's freed top of the heap stays for the next
step. With a 1 GiB trim threshold, Atlas (K=16, T=8192, B=1, H=4) gave back more than 1 GiB at
the end of every fwd+bwd and faulted it in again in the next: 356k-471k faults, 5.7-7.4 s a run,
against none and 5.1-5.4 s with this (its time exponent from T=1024 was 1.20). Blocks above
32 MiB still come and go as mapped pages, faulted in at every step; the memory forms keep their
large per-chunk tensors below it where they can (exact_delta's states, in blocks of
STATE_BLOCK_BYTES). Turning mmap off (glibc's M_MMAP_MAX = 0) was measured and left
out: it took that cost away (gated_deltanet fwd+bwd at T=8192, B=1, H=4: 0.182 -> 0.128 s), but
it is a process-wide change whose effect on a process that changes shapes was not measured
cleanly (an out-of-memory run first blamed on it came from a benchmark's leaking hook), and the
state blocks cover the case measured.
The price: a process keeps up to its peak heap instead of shrinking between steps, which
a trial process reaches anyway; between trials ``release_free_memory`` hands what the heap keeps
free back to the kernel, so that a worker's next trial starts (and measures its resident peak)
without the last one's. A no-op off glibc; ``MIRAS_MALLOC_TUNING=0`` turns it off.
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
TRIM_THRESHOLD = 2**31 - 1


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """glibc, or None (another C library or platform)."""
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


@functools.cache
def tune_allocator() -> bool:
    """Set glibc's mmap and trim thresholds for this process (once); whether they were set."""
    if os.environ.get("MIRAS_MALLOC_TUNING", "1") == "0":
        return False
    libc = _libc()
    if libc is None or not hasattr(libc, "mallopt"):
        return False
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    done = (libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)
    if not done:
        log.debug("glibc refused the allocator thresholds; its defaults stay")
    return done


def release_free_memory() -> bool:
    """Give the heap's free pages back to the kernel (glibc's malloc_trim); whether any were."""
    libc = _libc()
    if libc is None or not hasattr(libc, "malloc_trim"):
        return False
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    libc.malloc_trim.restype = ctypes.c_int
    return libc.malloc_trim(0) == 1
