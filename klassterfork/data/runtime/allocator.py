"""glibc malloc settings for processes that stream large records.

A training record is a whole video (~1 MB at short side 128, tens of MB for
long videos). With glibc's defaults, each record string larger than the
dynamic mmap threshold is its own `mmap` (every page faults in on the copy
from the file, and `munmap` returns it on free), and the arena tops are
trimmed back to the OS whenever more than ~2x that threshold is free. The
train pipeline's block shuffle allocates a block of S records, then frees
them as they are decoded, so each block faults its S megabytes in again.
Measured on the project's 2-core VM (`bench/pipeline.py`, 9 real videos at
short side 128, ~1.5 MB records, every row in one process): the uint8 train
pipeline went from 567 to 694 clips/s (CPU 3.29 -> 2.72 ms/clip) and the
float one from 466 to 552; the Model-Garden-style and decode-bound rows gain
10-15 % too. (`M_TRIM_THRESHOLD` alone made things worse: it freezes the
mmap threshold at 128 KiB, so every record is mmapped.)

`tune_for_records` raises the mmap threshold to its maximum (32 MiB:
records up to that come from the arenas and their pages are reused) and the
trim threshold to 1 GiB (an arena keeps up to that much free memory at its
top instead of returning and re-faulting it). The cost: the process keeps
its peak heap (about two shuffle blocks of records per arena that read
them) instead of shrinking between blocks.

It is process-wide, so the library never calls it on import: `kf-train`,
`kf-data-service worker` and the benchmarks call it once at start and print
`describe`'s line; `KF_MALLOC_TUNING=0` turns it off. Elsewhere than glibc (macOS,
musl) it does nothing and says so at debug level.
"""

import ctypes
import ctypes.util
import logging
import os

LOG = logging.getLogger(__name__)

# <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's cap on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 1 << 30
ENV = "KF_MALLOC_TUNING"

_applied = None


def tune_for_records():
    """Applies the settings above once per process.

    Returns:
        dict of the settings applied (`{"mmap_threshold": ..,
        "trim_threshold": ..}`), or {} when off or not glibc.
    """
    global _applied
    if _applied is not None:
        return dict(_applied)
    _applied = {}
    if os.environ.get(ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        LOG.info("malloc tuning off (%s=%s)", ENV, os.environ[ENV])
        return {}
    mallopt = _glibc_mallopt()
    if mallopt is None:
        LOG.debug("malloc tuning skipped: not glibc")
        return {}
    # The order matters: setting either disables glibc's dynamic
    # thresholds, which would otherwise move the mmap threshold again.
    if mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1:
        LOG.warning("malloc tuning: mallopt(M_MMAP_THRESHOLD, %d) was refused; left as is",
                    MMAP_THRESHOLD)
        return {}
    if mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) != 1:
        LOG.warning("malloc tuning: mallopt(M_TRIM_THRESHOLD, %d) was refused", TRIM_THRESHOLD)
        return {}
    _applied = {"mmap_threshold": MMAP_THRESHOLD, "trim_threshold": TRIM_THRESHOLD}
    LOG.info(describe(_applied))
    return dict(_applied)


def describe(applied):
    """One line for the run's log."""
    if not applied:
        return f"malloc left at glibc's defaults ({ENV}=0 or not glibc)"
    return (f"malloc tuned for streaming large records: mmap threshold "
            f"{applied['mmap_threshold'] >> 20} MiB, trim threshold "
            f"{applied['trim_threshold'] >> 20} MiB (the process keeps its peak heap; "
            f"{ENV}=0 turns this off)")


def _glibc_mallopt():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # glibc only
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt
