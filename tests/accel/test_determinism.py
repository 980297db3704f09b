"""Same seed, same numbers under any load (issue 14, point 1): ``nprnn train`` in real subprocesses,
once on its own and once while other processes keep the cores busy, ends with bit-identical
checkpoints; so does a run killed mid-epoch and resumed under load.

The model is big enough that the BLAS-thread policy lets BLAS use its threads (checked against
``nprnn.accel``'s thresholds below): a policy that looked at the load (the old default, now the opt-in
``NPRNN_BLAS_THREADS=adaptive``) would run those products on one thread under load and on two when
idle. That only shows in the numbers where 1 and 2 threads round differently: OpenBLAS's Haswell
(AVX2) kernels do, its SkylakeX (AVX-512) kernels mostly do not. So the children run with 2 BLAS
threads and, if this machine's own kernels round alike, with ``OPENBLAS_CORETYPE=Haswell`` (only when
the CPU has AVX2 and FMA); ``test_blas_threads_show_in_the_checkpoint`` proves on every run that a
change in the thread count changes the NumPy path's checkpoint, i.e. that the load tests can fail.
Every test runs on both backends: the numba path (the default) and the NumPy reference.

The busy processes are niced busy loops: runnable all the time, so the machine counts as busy, but
the run under test still gets the cores. Each child takes 2-5 s; the file about 20-30 s.
"""

import os
import platform
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from nprnn import accel

N, T, EMBED, HIDDEN = 32, 64, 32, 128  # the tiny preset's batch, bptt and embedding; the hidden size set below
TRAIN = [
    "train", "--preset", "tiny", "--hidden", str(HIDDEN), "--epochs", "2", "--max-batches", "4",
    "--save-every", "2", "--seed", "11", "--no-progress", "--sample-length", "0",
]  # fmt: skip
RESUME = ["--resume", "--no-progress", "--sample-length", "0"]
METADATA = "__nprnn__"  # the JSON member: holds timings, so it is not compared
TIMEOUT = 180  # seconds for any one child; only reached if something is badly wrong

ROUNDING_PROBE = """
import numpy as np, threadpoolctl
rng = np.random.default_rng(0)
a = rng.standard_normal((32, 256), dtype=np.float32)
b = rng.standard_normal((256, 1024), dtype=np.float32)
with threadpoolctl.threadpool_limits(1, user_api="blas"):
    one = a @ b
with threadpoolctl.threadpool_limits(2, user_api="blas"):
    two = a @ b
print("differ" if not np.array_equal(one, two) else "alike")
"""


def nprnn(*args):
    return [sys.executable, "-m", "nprnn", *map(str, args)]


def cpu_has_avx2():
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return platform.machine() in ("x86_64", "AMD64") and {"avx2", "fma"} <= set(flags)


@pytest.fixture(scope="module", params=["numba", "numpy"])
def env(request):
    """The children's environment: the backend under test, no other NPRNN_ settings (the defaults are
    under test), 2 BLAS threads, and a BLAS kernel whose 1- and 2-thread products round differently."""
    pytest.importorskip("threadpoolctl", reason="nprnn sets BLAS threads through threadpoolctl")
    if request.param == "numba":
        pytest.importorskip("numba", reason="the numba backend needs numba")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("NPRNN_", "OPENBLAS_", "OMP_"))}
    base["OPENBLAS_NUM_THREADS"] = "2"
    base["NPRNN_ACCEL"] = request.param
    candidates = [base] + ([dict(base, OPENBLAS_CORETYPE="Haswell")] if cpu_has_avx2() else [])
    for candidate in candidates:
        probe = subprocess.run([sys.executable, "-c", ROUNDING_PROBE], env=candidate, capture_output=True, text=True)
        assert probe.returncode == 0, probe.stderr
        if probe.stdout.strip() == "differ":
            return candidate
    pytest.skip("this BLAS rounds 1- and 2-thread products alike: the load cannot change a run's numbers here")


def test_the_model_is_big_enough_for_blas_threads():
    """The products of the run are ones that "auto" leaves to BLAS's threads (so "adaptive" would cap them)."""
    per_step = 2 * N * HIDDEN * 4 * HIDDEN  # TimeLSTM's h @ Wh
    largest = 2 * T * N * 4 * HIDDEN * max(EMBED, HIDDEN)
    assert per_step >= accel.SMALL_FLOPS and largest >= accel.SINGLE_THREAD_FLOPS


class BusyMachine:
    """``with BusyMachine(2):`` keeps 3 niced busy loops running; they are killed on the way out."""

    def __init__(self, count):
        self.count, self.procs = count, []

    def __enter__(self):
        code = "import os, sys\nos.nice(19)\nprint('spinning', flush=True)\nwhile True: pass"
        try:
            for _ in range(self.count):
                self.procs.append(subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True))
            for proc in self.procs:  # each one is in its loop before the run starts
                assert proc.stdout.readline().strip() == "spinning"
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        for proc in self.procs:
            proc.kill()
        for proc in self.procs:
            proc.wait()
            proc.stdout.close()


def run(command, cwd, env):
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    return done


def arrays(out):
    """Every array of the run's checkpoint.npz and best.npz but the metadata (parameters, optimizer
    moments, carried state, vocabulary)."""
    result = {}
    for name in ("checkpoint.npz", "best.npz"):
        with np.load(out / name) as npz:
            result.update({f"{name}/{key}": npz[key] for key in npz.files if key != METADATA})
    return result


def assert_bit_identical(got, want):
    assert got.keys() == want.keys()
    assert any(key.endswith("param/000") for key in want)  # the parameters are among them
    for key, a in want.items():
        b = got[key]
        assert a.dtype == b.dtype and a.shape == b.shape, key
        assert np.array_equal(a, b), f"{key} differs from the idle run's"


@pytest.fixture(scope="module")
def idle_run(env, tmp_path_factory):
    """The uninterrupted run on an otherwise idle machine (as idle as the test machine is)."""
    directory = tmp_path_factory.mktemp("idle")
    run(nprnn(*TRAIN, "--out", directory / "run"), directory, env)
    return arrays(directory / "run")


def test_blas_threads_show_in_the_checkpoint(env, idle_run, tmp_path):
    """The same run with every product on one thread ends elsewhere, so a policy that switched between
    1 and 2 threads with the load would fail the tests below. On the NumPy path 1 and 2 OpenBLAS
    threads round differently; on the numba path the packed products give the same bits either way,
    but the weight gradients' products (x.T @ dA, 268 MFLOP here) run as split BLAS blocks on two
    threads and on the packed kernels on one."""
    run(nprnn(*TRAIN, "--out", tmp_path / "run"), tmp_path, dict(env, NPRNN_BLAS_THREADS="1"))
    one_thread = arrays(tmp_path / "run")
    assert not np.array_equal(one_thread["checkpoint.npz/param/000"], idle_run["checkpoint.npz/param/000"])


def test_a_run_under_load_is_bit_identical_to_the_idle_run(env, idle_run, tmp_path):
    with BusyMachine(2):
        run(nprnn(*TRAIN, "--out", tmp_path / "run"), tmp_path, env)
    assert_bit_identical(arrays(tmp_path / "run"), idle_run)


def test_a_run_killed_and_resumed_under_load_is_bit_identical_to_the_idle_run(env, idle_run, tmp_path):
    out = tmp_path / "run"
    with open(tmp_path / "child.err", "wb") as err:
        command = nprnn(*TRAIN, "--out", out)
        child = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (out / "checkpoint.npz").exists():  # the first periodic checkpoint, mid-epoch 1
            assert child.poll() is None, (tmp_path / "child.err").read_text()
            assert time.monotonic() < deadline, "no checkpoint in time"
            time.sleep(0.005)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL  # killed before the end, so the resume has work to do
    with BusyMachine(2):
        run(nprnn(*TRAIN[:1], "--out", out, *RESUME), tmp_path, env)
    assert_bit_identical(arrays(out), idle_run)
