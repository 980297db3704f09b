"""The BLAS-thread policy (nprnn/accel/blas.py): what each setting decides, that BLAS's own setting
is restored, the load detection of the opt-in "adaptive", and that the time layers and the output
layer run their products under it, judged by the right FLOP figures. Same numbers under any load,
end to end: test_determinism.py."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from nprnn import accel
from nprnn.accel import blas
from nprnn.layers import TimeAffine
from nprnn.layers.gru import TimeGRU, init_gru_params
from nprnn.layers.lstm import TimeLSTM, init_lstm_params
from nprnn.layers.rnn import TimeRNN, init_rnn_params

LAYERS = [(TimeRNN, init_rnn_params), (TimeLSTM, init_lstm_params), (TimeGRU, init_gru_params)]


class Recorder:
    """Stands in for the policy's decision and records the FLOPs each product was judged by."""

    def __init__(self):
        self.calls = []

    def __call__(self, flops, largest):
        self.calls.append((flops, largest))
        return 0  # no cap


def test_time_affine_products_run_under_the_thread_policy(monkeypatch):
    recorder = Recorder()
    monkeypatch.setattr(blas, "_cap", recorder)
    N, T, D, V = 3, 4, 5, 7
    rng = np.random.default_rng(0)
    layer = TimeAffine(rng.standard_normal((D, V)), rng.standard_normal(V))
    xs, dout = rng.standard_normal((N, T, D)), rng.standard_normal((N, T, V))
    out = layer.forward(xs)
    dxs = layer.backward(dout)
    flops = 2 * N * T * D * V
    assert recorder.calls == [(flops, flops), (flops, flops)]  # forward, then backward
    np.testing.assert_allclose(out, xs @ layer.params[0] + layer.params[1], rtol=1e-12)
    np.testing.assert_allclose(dxs, dout @ layer.params[0].T, rtol=1e-12)
    np.testing.assert_allclose(layer.grads[0], xs.reshape(-1, D).T @ dout.reshape(-1, V), rtol=1e-12)
    np.testing.assert_allclose(layer.grads[1], dout.sum(axis=(0, 1)), rtol=1e-12)


def test_time_layers_are_judged_by_their_per_step_and_largest_products(monkeypatch):
    N, T, D, H = 3, 4, 7, 5
    for (cls, init), gates in zip(LAYERS, (1, 4, 3)):
        recorder = Recorder()
        monkeypatch.setattr(blas, "_cap", recorder)
        layer = cls(*init(D, H, dtype=np.float64))
        layer.forward(np.ones((N, T, D)))
        layer.backward(np.ones((N, T, H)))
        per_step, largest = 2 * N * H * gates * H, 2 * T * N * gates * H * max(D, H)
        assert recorder.calls == [(per_step, largest)] * 2, cls.__name__  # forward, then backward


@pytest.mark.parametrize("bad", [-1, 1.5, "2", "all", True])
def test_set_blas_threads_validates(bad):
    with pytest.raises(ValueError, match="'auto', 'adaptive' or an integer >= 0"):
        accel.set_blas_threads(bad)


@pytest.fixture
def blas_two_threads():
    """NumPy's BLAS on 2 threads for the test, and nprnn's thread setting restored after it."""
    threadpoolctl = pytest.importorskip("threadpoolctl", reason="the BLAS thread cap works through threadpoolctl")
    previous = accel.blas_threads()
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        if set(blas_thread_counts()) != {2}:
            pytest.skip("this BLAS cannot run 2 threads here, so a cap to 1 would not show")
        yield
    accel.set_blas_threads(previous)


def blas_thread_counts():
    """Threads of NumPy's BLAS (other BLAS libraries loaded later, e.g. SciPy's, are not nprnn's concern)."""
    import threadpoolctl

    blas = [lib for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"]
    numpys = [lib for lib in blas if "numpy" in lib["filepath"]]
    return set(lib["num_threads"] for lib in numpys or blas)


def test_threads_for_fixed_settings(blas_two_threads):
    accel.set_blas_threads(1)
    for flops in (1e3, 1e12):
        with accel.threads_for(flops):
            assert blas_thread_counts() == {1}
        assert blas_thread_counts() == {2}
    accel.set_blas_threads(0)  # no cap at all
    with accel.threads_for(1e3):
        assert blas_thread_counts() == {2}


def busy_machine(monkeypatch, busy):
    monkeypatch.setattr(blas, "machine_busy", lambda: busy)


@pytest.mark.parametrize("busy", [False, True], ids=["idle", "busy"])
def test_threads_for_auto_depends_on_the_sizes_only(blas_two_threads, monkeypatch, busy):
    """The default: the same sizes get the same threads whatever the load (issue 14), so 1- and
    2-thread rounding never depends on what else runs on the machine."""
    accel.set_blas_threads("auto")
    busy_machine(monkeypatch, busy)
    with accel.threads_for(accel.SMALL_FLOPS - 1):  # small products: one thread
        assert blas_thread_counts() == {1}
        with accel.threads_for(1e12):  # nested: keeps the outer cap
            assert blas_thread_counts() == {1}
        assert blas_thread_counts() == {1}
    assert blas_thread_counts() == {2}
    with accel.threads_for(accel.SMALL_FLOPS):  # large products: BLAS's threads, busy or not
        assert blas_thread_counts() == {2}
        with accel.threads_for(1e3):
            assert blas_thread_counts() == {1}
        assert blas_thread_counts() == {2}
    with accel.threads_for(1e12, 1e13):
        assert blas_thread_counts() == {2}
    # a call whose largest product BLAS keeps on one thread by itself is left alone
    with accel.threads_for(1e3, accel.SINGLE_THREAD_FLOPS - 1):
        assert blas_thread_counts() == {2}
    with accel.threads_for(1e3, accel.SINGLE_THREAD_FLOPS):
        assert blas_thread_counts() == {1}


def test_threads_for_auto_never_asks_about_the_load(monkeypatch):
    def refuse():
        raise AssertionError("'auto' must not look at the machine's load")

    monkeypatch.setattr(blas, "machine_busy", refuse)
    previous = accel.blas_threads()
    try:
        accel.set_blas_threads("auto")
        for flops, largest in [(1e3, None), (1e12, None), (1e12, 1e13), (1e3, 1e3)]:
            accel.threads_for(flops, largest)
    finally:
        accel.set_blas_threads(previous)


def test_threads_for_adaptive_follows_the_load(blas_two_threads, monkeypatch):
    """The opt-in, not reproducible: one thread for every product while the machine is busy."""
    accel.set_blas_threads("adaptive")
    busy_machine(monkeypatch, False)
    with accel.threads_for(accel.SMALL_FLOPS - 1):
        assert blas_thread_counts() == {1}
    with accel.threads_for(1e12):  # large products on an idle machine: BLAS's threads
        assert blas_thread_counts() == {2}
    busy_machine(monkeypatch, True)
    with accel.threads_for(1e12):  # on a busy machine every product runs on one thread
        assert blas_thread_counts() == {1}
    assert blas_thread_counts() == {2}
    with accel.threads_for(1e3, accel.SINGLE_THREAD_FLOPS - 1):  # left alone, busy or not
        assert blas_thread_counts() == {2}


def test_blas_threads_are_restored_after_layers_and_errors(blas_two_threads):
    accel.set_blas_threads(1)
    for cls, init in LAYERS:
        layer = cls(*init(2, 3, dtype=np.float64))
        layer.forward(np.zeros((2, 4, 2)))
        layer.backward(np.ones((2, 4, 3)))
        assert blas_thread_counts() == {2}, cls.__name__
    with pytest.raises(RuntimeError, match="inside"):
        with accel.threads_for(1e3):
            raise RuntimeError("inside")
    assert blas_thread_counts() == {2}


class FakeClock:
    """Stands in for the time module in nprnn.accel.blas: the test moves the clock."""

    def __init__(self):
        self.now = 1000.0

    def monotonic(self):
        return self.now


def test_machine_busy_averages_other_processes_runnable_tasks(monkeypatch):
    clock, others = FakeClock(), [0]
    monkeypatch.setattr(blas, "time", clock)
    monkeypatch.setattr(blas, "_others_running", lambda: others[0])
    monkeypatch.setattr(blas, "_stolen_cores", lambda: None)  # no VM steal here: runnable tasks only
    monkeypatch.setattr(blas, "_load", {"checked": -np.inf, "busy": False, "others": 0.0, "stolen": 0.0})

    def after(seconds, running):
        clock.now += seconds
        others[0] = running
        return accel.machine_busy()

    assert after(0, 1)  # another process keeps a core busy: the first sample counts in full
    assert after(0.5, 0)  # re-evaluated at most once a second: still the last answer
    assert after(0.6, 0)  # averaged: one idle sample after a busy one is not enough
    assert not after(20, 0)  # idle machine
    assert not after(1, 1)  # nor is one busy sample after a long idle spell
    for _ in range(10):
        busy = after(1, 1)
    assert busy
    others[0] = None  # no /proc
    assert not after(1, None)


def test_machine_busy_counts_the_cpu_time_the_hypervisor_takes(monkeypatch):
    """On a VM, CPU time the host gives other guests stalls threads that meet at every step as a busy
    process does: averaged like the runnable tasks, from BUSY_STEAL of a core."""
    clock, stolen = FakeClock(), [None]
    monkeypatch.setattr(blas, "time", clock)
    monkeypatch.setattr(blas, "_others_running", lambda: 0)
    monkeypatch.setattr(blas, "_stolen_cores", lambda: stolen[0])
    monkeypatch.setattr(blas, "_load", {"checked": -np.inf, "busy": False, "others": 0.0, "stolen": 0.0})

    def after(seconds, cores):
        clock.now += seconds
        stolen[0] = cores
        return accel.machine_busy()

    assert not after(0, None)  # the first reading has nothing to compare with
    assert not after(1, blas.BUSY_STEAL / 2)  # a little steal is normal on a VM
    assert not after(20, 0.0)
    for _ in range(10):
        busy = after(1, 2 * blas.BUSY_STEAL)
    assert busy
    assert not after(20, 0.0)  # steal over: two threads again


def test_stolen_cores_reads_the_steal_column_of_proc_stat(tmp_path, monkeypatch):
    monkeypatch.setattr(blas, "_load", dict(blas._load, stat=None))
    stat = tmp_path / "stat"
    #                user nice system idle iowait irq softirq steal guest guest_nice
    lines = "cpu  {} 0 50 {} 0 0 0 {} 7 0\ncpu0 1 2 3\ncpu1 4 5 6\nintr 12345\n"
    stat.write_text(lines.format(100, 800, 50))
    assert blas._stolen_cores(stat) is None  # first reading
    stat.write_text(lines.format(150, 850, 150))  # 200 ticks in all, 100 stolen, on 2 CPUs: one core
    assert blas._stolen_cores(stat) == pytest.approx(1.0)
    stat.write_text(lines.format(250, 950, 150))  # 200 more ticks, none stolen
    assert blas._stolen_cores(stat) == 0.0
    stat.write_text("not a stat file\n")
    assert blas._stolen_cores(stat) is None
    assert blas._stolen_cores(tmp_path / "missing") is None


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="steal time needs Linux's /proc/stat")
def test_stolen_cores_reads_this_machine():
    blas._stolen_cores()
    time.sleep(0.05)
    stolen = blas._stolen_cores()
    assert stolen is not None and 0.0 <= stolen <= os.cpu_count()


@pytest.mark.parametrize("setting", ["auto", "adaptive"])
@pytest.mark.parametrize("busy", [False, True], ids=["idle", "busy"])
def test_row_blocks_use_one_thread_only_for_adaptive_on_a_busy_machine(monkeypatch, setting, busy):
    monkeypatch.setattr(blas, "_cores", lambda: 2)
    busy_machine(monkeypatch, busy)
    previous = accel.blas_threads()
    calls = []
    try:
        accel.set_blas_threads(setting)
        accel.in_row_blocks(lambda lo, hi: calls.append((lo, hi)), 10)
    finally:
        accel.set_blas_threads(previous)
    assert sorted(calls) == ([(0, 10)] if setting == "adaptive" and busy else [(0, 5), (5, 10)])


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="counting runnable tasks needs Linux's /proc")
def test_others_running_sees_a_busy_process():
    threads_before = blas._others_running()
    assert threads_before is not None and threads_before >= 0
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        assert min(blas._others_running() for _ in range(5)) >= 1  # the burner is always runnable
    finally:
        burner.kill()
        burner.wait()


def test_a_cap_of_one_on_one_thread_leaves_blas_alone(monkeypatch):
    if not blas.can_cap():
        pytest.skip("telling BLAS's thread count needs threadpoolctl")
    import threadpoolctl

    calls = []
    monkeypatch.setitem(blas._blas, "setters", [calls.append for _ in blas._blas_libraries()])
    accel.set_blas_threads(1)
    try:
        with threadpoolctl.threadpool_limits(1, user_api="blas"):
            with accel.one_thread(), accel.threads_for(1e12):
                assert blas.single_threaded()
            assert calls == []  # already one thread: nothing set, nothing restored
        monkeypatch.setattr(blas, "single_threaded", lambda: False)
        with accel.threads_for(1e12):
            assert calls == [1] * len(blas._blas_libraries())
        assert len(calls) == 2 * len(blas._blas_libraries())  # and restored on the way out
    finally:
        accel.set_blas_threads("auto")


def test_the_single_thread_limit_follows_the_openblas_kernel(monkeypatch):
    monkeypatch.setitem(blas._blas, "architecture", None)  # found again from threadpoolctl
    names = [getattr(lib, "architecture", None) for lib in blas._blas_libraries() if lib.internal_api == "openblas"]
    skylakex = len(names) == 1 and str(names[0]).lower() == "skylakex"
    assert blas.openblas_one_thread(1, 2) == (2 if skylakex else 1)
    for architecture, limit in [("skylakex", 2), ("haswell", 1), ("zen", 1), ("", 1)]:
        monkeypatch.setitem(blas._blas, "architecture", architecture)
        assert blas.openblas_one_thread(1, 2) == limit


def test_the_cached_thread_setters_set_blas_threads():
    if not blas.can_cap():
        pytest.skip("telling BLAS's thread count needs threadpoolctl")
    counters, setters = blas._thread_counters(), blas._thread_setters()
    assert len(setters) == len(counters) == len(blas._blas_libraries())
    saved = [count() for count in counters]
    try:
        for set_threads, threads in zip(setters, saved):
            set_threads(max(1, threads - 1))
        assert [count() for count in counters] == [max(1, threads - 1) for threads in saved]
    finally:
        for set_threads, threads in zip(setters, saved):
            set_threads(threads)
    assert [count() for count in counters] == saved
