"""`data/runtime/allocator.py`: the malloc settings kf-train applies.

Measured by what they are for: a block of record-sized buffers allocated,
touched and freed over and over (the block shuffle's pattern) page-faults
its memory in again every round under glibc's defaults, and only once when
tuned. Each case runs in a fresh interpreter (the settings are process-wide).
"""

import json
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or not platform.libc_ver()[0] == "glibc",
    reason="glibc only")

PROBE = r"""
import json, resource, sys
from klassterfork.data.runtime import allocator
applied = allocator.tune_for_records() if sys.argv[1] == "tune" else {}
again = allocator.tune_for_records() if sys.argv[1] == "tune" else {}
size, count = 1536 * 1024, 48  # 48 records of 1.5 MiB: one shuffle block

def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

per_round = []
for _ in range(5):
    before = faults()
    block = [bytearray(size) for _ in range(count)]  # zero-filled: every page touched
    del block
    per_round.append(faults() - before)
print(json.dumps({"applied": applied, "again": again, "faults": per_round,
                  "line": allocator.describe(applied)}))
"""


def probe(mode, **env):
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True,
        env={**os.environ, **env}, timeout=120)
    return json.loads(out.stdout)


def test_tuned_blocks_fault_in_once():
    pages = 48 * 1536 * 1024 // 4096  # 18432 pages a round
    default = probe("default")
    tuned = probe("tune")
    assert tuned["applied"] == {"mmap_threshold": 32 << 20, "trim_threshold": 1 << 30}
    assert tuned["again"] == tuned["applied"]  # idempotent
    assert "mmap threshold 32 MiB, trim threshold 1024 MiB" in tuned["line"]
    # Defaults: each later round faults the block in again (trimmed or
    # mmapped, then freed); tuned: the heap keeps the pages.
    assert min(default["faults"][1:]) > 0.8 * pages, default
    assert max(tuned["faults"][1:]) < 0.05 * pages, tuned


def test_env_switch_turns_it_off():
    off = probe("tune", KF_MALLOC_TUNING="0")
    assert off["applied"] == {}
    assert "KF_MALLOC_TUNING=0" in off["line"]
    assert min(off["faults"][1:]) > 0.8 * 48 * 1536 * 1024 // 4096
