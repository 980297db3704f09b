"""nprnn.accel.memory: freed large blocks stay in the process and are reused without page faults."""

import platform
import subprocess
import sys

import pytest

from nprnn.accel import memory

glibc = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's"
)

# Three 16 MB arrays made, filled and freed ten times; prints the page faults taken after the first time.
CYCLES = """
import resource, sys
import numpy as np
from nprnn.accel import memory
print(memory.retain_freed_memory() if sys.argv[1] == "retain" else None)
def cycle():
    arrays = [np.ones(4 << 20, np.float32) for _ in range(3)]
    del arrays
cycle()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    cycle()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode, **env):
    import os

    out = subprocess.run(
        [sys.executable, "-c", CYCLES, mode], env={**os.environ, **env}, capture_output=True, text=True, check=True
    )
    accepted, count = out.stdout.split()
    return accepted, int(count)


@glibc
def test_retained_memory_is_reused_without_page_faults():
    accepted, kept = faults("retain")
    assert accepted == "True"
    _, fresh = faults("default")
    # 480 MB filled afresh: thousands of faults without; a few at most with (Python's own small blocks)
    assert fresh > 1000
    assert kept < 50


@glibc
def test_it_can_be_turned_off_from_the_environment():
    accepted, count = faults("retain", NPRNN_RETAIN_MEMORY="0")
    assert accepted == "False"
    assert count > 1000


def test_the_second_call_answers_like_the_first(monkeypatch):
    monkeypatch.setitem(memory._state, "done", None)
    first = memory.retain_freed_memory()
    assert memory.retain_freed_memory() is first
