"""What every benchmark table records beside its figures: the CPU model, the BLAS library and the kernel
it runs (threadpoolctl), the load, the CPU time a hypervisor took during the run (steal), the commit.
``python benchmarks/machine.py`` prints it."""

import os
import platform
import subprocess
from pathlib import Path

import numpy as np

from nprnn.accel.blas import steal_ticks  # the /proc/stat reading of the 'adaptive' policy


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cpu_features():
    """The vector extensions OpenBLAS picks its kernels by."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return "?"
    have = set(flags.split(":", 1)[1].split())
    return "AVX-512" if "avx512f" in have else "AVX2" if "avx2" in have else "no AVX2"


def blas():
    try:
        import threadpoolctl
    except ImportError:
        return "BLAS unknown (no threadpoolctl)"
    try:
        from nprnn.accel import mkl  # loads MKL where it runs the large products, so that it is listed
    except ImportError:  # a commit before nprnn.accel.mkl
        split = "large products on NumPy's BLAS"
    else:
        split = mkl.describe()
    libs = [i for i in threadpoolctl.threadpool_info() if i.get("user_api") == "blas" and i["internal_api"] != "mkl"]
    return (
        "; ".join(
            f"{i['internal_api']} {i.get('version')} kernel {i.get('architecture')}, {i['num_threads']} threads"
            for i in libs
        )
        or "no BLAS found"
    ) + f"; {split}"


def commit():
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                             cwd=Path(__file__).resolve().parent)  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=Path(__file__).resolve().parent).stdout.strip()  # fmt: skip
        return out.stdout.strip() + (" (modified)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


_START = steal_ticks()  # the run's start: benchmarks import this module first


def steal():
    """The share of CPU time the hypervisor gave other guests since this module was imported: on a
    shared VM it slows threads that meet at every step (docs/performance.md)."""
    now = steal_ticks()
    if _START is None or now is None or now[1] <= _START[1]:
        return "steal unknown"
    return f"steal {100 * (now[0] - _START[0]) / (now[1] - _START[1]):.1f}% during the run"


def describe():
    """One Markdown line describing the machine and the code a table was measured on."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    overrides = " ".join(
        f"{k}={os.environ[k]}" for k in ("OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS") if k in os.environ
    )
    return (
        f"*{cpu_model()} ({cpu_features()}, {os.cpu_count()} cores); numpy {np.__version__}, {blas()}"
        f"{'; ' + overrides if overrides else ''}; load {load}, {steal()}; commit {commit()}*"
    )


if __name__ == "__main__":
    print(describe())
