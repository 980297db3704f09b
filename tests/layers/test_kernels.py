"""The optional numba backend of the time layers (nprnn.accel, nprnn/layers/_kernels.py) and the BLAS
thread cap.

The kernels must compute what the NumPy path computes: the same outputs, final states and gradients to
float rounding (float64: 1e-12; float32: the kernels' tanh is an approximation within 5 ulp), and the
float64 gradient checks must pass with the kernels on. The NumPy path itself is tested in test_rnn.py,
test_lstm.py and test_gru.py.
"""

import os
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nprnn import accel
from nprnn.gradcheck import numerical_gradient, relative_error
from nprnn.layers.gru import TimeGRU, init_gru_params
from nprnn.layers.lstm import TimeLSTM, init_lstm_params
from nprnn.layers.rnn import TimeRNN, init_rnn_params

try:
    import numba  # noqa: F401
except ImportError:
    if os.environ.get("CI"):  # the test extra installs numba: in CI these tests must run, not skip
        raise
    pytest.skip("the numba backend is optional (pip install nprnn[accel])", allow_module_level=True)
from nprnn.layers import _kernels  # noqa: E402  (needs numba)

KINDS = {"rnn": (TimeRNN, init_rnn_params), "lstm": (TimeLSTM, init_lstm_params), "gru": (TimeGRU, init_gru_params)}


class CountingKernels:
    """Stands in for the kernel module and counts the calls, so a test knows the kernels really ran."""

    def __init__(self):
        self.calls = Counter()

    def __getattr__(self, name):
        kernel = getattr(_kernels, name)

        def counted(*args):
            self.calls[name] += 1
            return kernel(*args)

        return counted


@pytest.fixture
def backend(monkeypatch):
    """``backend(name)`` selects a backend for the rest of the test; the previous one is restored after."""
    previous = accel.backend()
    counting = CountingKernels()

    def select(name):
        accel.use(name)
        if name == "numba":
            monkeypatch.setitem(accel._state, "kernels", counting)
        return counting

    yield select
    accel.use(previous)


def random_layer(kind, rng, D, H, dtype=np.float64, stateful=False):
    cls, init = KINDS[kind]
    params = [(rng.standard_normal(p.shape) * 0.5).astype(dtype) for p in init(D, H, dtype=dtype)]
    return cls(*params, stateful=stateful)


def states(kind, rng, N, H, dtype):
    """Random initial states and final-state gradients as keyword arguments for forward / backward."""
    h0, dh = rng.standard_normal((N, H)).astype(dtype), rng.standard_normal((N, H)).astype(dtype)
    if kind == "lstm":
        c0, dc = rng.standard_normal((N, H)).astype(dtype), rng.standard_normal((N, H)).astype(dtype)
        return {"h0": h0, "c0": c0}, {"dh_final": dh, "dc_final": dc}
    return {"h0": h0}, {"dh_final": dh}


def run(layer, xs, dhs, initial, final, lengths):
    """Forward + backward; every result a test compares, copied."""
    hs = layer.forward(xs, **initial, lengths=lengths)
    dxs = layer.backward(dhs, **final)
    out = {"hs": hs.copy(), "h": layer.h.copy(), "dxs": dxs, "dh": layer.dh.copy()}
    if hasattr(layer, "c"):
        out.update(c=layer.c.copy(), dc=layer.dc.copy())
    out.update({f"grad{i}": g.copy() for i, g in enumerate(layer.grads)})
    return out


def assert_results_close(got, want, dtype):
    tol = {"rtol": 1e-12, "atol": 1e-12} if dtype == np.float64 else {"rtol": 2e-5, "atol": 2e-5}
    assert got.keys() == want.keys()
    for key in want:
        np.testing.assert_allclose(got[key], want[key], **tol, err_msg=key)


# ---------------------------------------------------------------- kernels == NumPy path


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("lengths", [None, [6, 2, 1, 5]], ids=["full", "lengths"])
def test_kernels_match_numpy_path(backend, rng, kind, dtype, lengths):
    N, T, D, H = 4, 6, 5, 7
    layer = random_layer(kind, rng, D, H, dtype)
    xs, dhs = rng.standard_normal((N, T, D)).astype(dtype), rng.standard_normal((N, T, H)).astype(dtype)
    initial, final = states(kind, rng, N, H, dtype)

    backend("numpy")
    want = run(layer, xs, dhs, initial, final, lengths)
    counting = backend("numba")
    got = run(layer, xs, dhs, initial, final, lengths)
    assert counting.calls[f"{kind}_forward_step"] == T and counting.calls[f"{kind}_backward_step"] == T
    assert_results_close(got, want, dtype)
    if lengths is not None:  # padded positions: zero output, zero input gradient
        assert np.all(got["hs"][2, 1:] == 0) and np.all(got["dxs"][2, 1:] == 0)


@settings(max_examples=25, deadline=None)
@given(
    kind=st.sampled_from(sorted(KINDS)),
    N=st.integers(1, 4),
    T=st.integers(0, 5),
    D=st.integers(1, 4),
    H=st.integers(1, 5),
    seed=st.integers(0, 2**32 - 1),
    data=st.data(),
)
def test_kernels_match_numpy_path_any_shape(kind, N, T, D, H, seed, data):
    rng = np.random.default_rng(seed)
    lengths = data.draw(st.none() | st.lists(st.integers(1, T), min_size=N, max_size=N)) if T else None
    layer = random_layer(kind, rng, D, H)
    xs, dhs = rng.standard_normal((N, T, D)), rng.standard_normal((N, T, H))
    initial, final = states(kind, rng, N, H, np.float64)
    previous = accel.backend()
    try:
        accel.use("numpy")
        want = run(layer, xs, dhs, initial, final, lengths)
        accel.use("numba")
        got = run(layer, xs, dhs, initial, final, lengths)
    finally:
        accel.use(previous)
    assert_results_close(got, want, np.float64)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_kernels_stateful_across_calls(backend, rng, kind):
    N, T, D, H = 3, 4, 2, 5
    layers = [random_layer(kind, np.random.default_rng(7), D, H, stateful=True) for _ in range(2)]
    xs = [rng.standard_normal((N, T, D)) for _ in range(3)]
    dhs = rng.standard_normal((N, T, H))
    results = []
    for name, layer in zip(["numpy", "numba"], layers):
        backend(name)
        for x in xs:  # the state is carried from call to call
            layer.forward(x)
        results.append(run(layer, xs[0], dhs, {}, {}, None))
    assert_results_close(results[1], results[0], np.float64)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_backend_can_change_between_forward_and_backward(backend, rng, kind):
    """The two paths share their caches, so a backward may run on the other backend."""
    N, T, D, H = 3, 5, 2, 4
    layer = random_layer(kind, rng, D, H)
    xs, dhs = rng.standard_normal((N, T, D)), rng.standard_normal((N, T, H))
    initial, final = states(kind, rng, N, H, np.float64)
    lengths = [5, 3, 1]
    backend("numpy")
    want = run(layer, xs, dhs, initial, final, lengths)
    for first, second in [("numba", "numpy"), ("numpy", "numba")]:
        backend(first)
        hs = layer.forward(xs, **initial, lengths=lengths)
        backend(second)
        dxs = layer.backward(dhs, **final)
        np.testing.assert_allclose(hs, want["hs"], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(dxs, want["dxs"], rtol=1e-12, atol=1e-12)
        for i, g in enumerate(layer.grads):
            np.testing.assert_allclose(g, want[f"grad{i}"], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_kernels_take_non_contiguous_gradients(backend, rng, kind):
    N, T, D, H = 2, 3, 2, 4
    layer = random_layer(kind, rng, D, H)
    xs = rng.standard_normal((N, T, D))
    dhs = np.asfortranarray(rng.standard_normal((N, T, H)))
    backend("numpy")
    want = run(layer, xs, dhs, {}, {}, None)
    backend("numba")
    assert_results_close(run(layer, xs, dhs, {}, {}, None), want, np.float64)


# ---------------------------------------------------------------- gradient checks with the kernels on


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_kernel_gradients(backend, rng, kind):
    """Float64 central differences for every parameter, the input and the initial states, with
    variable lengths and gradients flowing into the final states."""
    backend("numba")
    N, T, D, H = 3, 4, 3, 3
    layer = random_layer(kind, rng, D, H)
    xs, R = rng.standard_normal((N, T, D)), rng.standard_normal((N, T, H))
    initial, final = states(kind, rng, N, H, np.float64)
    lengths = [4, 2, 1]

    def loss():
        hs = layer.forward(xs, **initial, lengths=lengths)
        total = np.sum(hs * R) + np.sum(layer.h * final["dh_final"])
        if kind == "lstm":
            total += np.sum(layer.c * final["dc_final"])
        return float(total)

    loss()
    dxs = layer.backward(R, **final)
    analytic = [g.copy() for g in layer.grads] + [dxs, layer.dh.copy()]
    wrt = list(layer.params) + [xs, initial["h0"]]
    if kind == "lstm":
        analytic.append(layer.dc.copy())
        wrt.append(initial["c0"])
    for g, p in zip(analytic, wrt):
        assert relative_error(g, numerical_gradient(loss, p)) < 1e-7
    assert np.all(dxs[1, 2:] == 0) and np.all(dxs[2, 1:] == 0)


# ---------------------------------------------------------------- float32 tanh and edge values


@numba.njit(**{k: v for k, v in _kernels._JIT.items() if k != "cache"})
def kernel_tanh(x, out):
    for i in range(x.size):
        out[i] = _kernels._tanh(x[i])


def test_float32_tanh_is_within_5_ulp():
    x = np.concatenate(
        [np.linspace(-12, 12, 400_001, dtype=np.float32), np.geomspace(1e-30, 12, 20_000, dtype=np.float32)]
    )
    x = np.concatenate([x, -x])
    got = np.empty_like(x)
    kernel_tanh(x, got)
    exact = np.tanh(x.astype(np.float64))
    ulp = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(got - exact) / ulp) <= 5 and np.max(np.abs(got)) <= 1
    np.testing.assert_array_equal(got[np.abs(x) > 9.02], np.sign(x[np.abs(x) > 9.02]))  # saturates exactly
    np.testing.assert_array_equal(got, -kernel_output(-x))  # odd


def kernel_output(x):
    out = np.empty_like(x)
    kernel_tanh(x, out)
    return out


def test_float32_tanh_special_values():
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan], dtype=np.float32)
    got = kernel_output(x)
    np.testing.assert_array_equal(got[:4], [0.0, -0.0, 1.0, -1.0])
    assert np.signbit(got[1]) and np.isnan(got[4])


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_kernels_propagate_nan_like_numpy(backend, rng, kind):
    """A NaN must not be hidden by the tanh approximation (training stops on a NaN loss)."""
    layer = random_layer(kind, rng, 2, 3, np.float32)
    xs = rng.standard_normal((2, 3, 2)).astype(np.float32)
    xs[0, 1, 0] = np.nan
    backend("numba")
    hs = layer.forward(xs)
    assert np.all(np.isnan(hs[0, 1:])) and not np.any(np.isnan(hs[1]))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kernels_saturated_lstm_gates(backend, dtype):
    H = 2
    Wx, Wh, b = np.zeros((1, 4 * H), dtype), np.zeros((H, 4 * H), dtype), np.full(4 * H, -1000.0, dtype)
    layer = TimeLSTM(Wx, Wh, b)
    backend("numba")
    hs = layer.forward(np.zeros((1, 2, 1), dtype), c0=np.ones((1, H), dtype))
    assert np.all(layer.c == 0) and np.all(hs == 0)  # forget and input gates fully closed


# ---------------------------------------------------------------- settings


def test_use_validates_the_backend_name():
    previous = accel.backend()
    with pytest.raises(ValueError, match="backend must be one of"):
        accel.use("cuda")
    assert accel.backend() == previous
    try:
        accel.use("numba")
        assert accel.backend() == "numba" and accel.kernels() is _kernels
        accel.use(None)
        assert accel.backend() == "numpy" and accel.kernels() is None
    finally:
        accel.use(previous)


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
    monkeypatch.setattr(accel, "machine_busy", lambda: busy)


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

    monkeypatch.setattr(accel, "machine_busy", refuse)
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
    for kind in KINDS:
        layer = random_layer(kind, np.random.default_rng(0), 2, 3)
        layer.forward(np.zeros((2, 4, 2)))
        layer.backward(np.ones((2, 4, 3)))
        assert blas_thread_counts() == {2}, kind
    with pytest.raises(RuntimeError, match="inside"):
        with accel.threads_for(1e3):
            raise RuntimeError("inside")
    assert blas_thread_counts() == {2}


class FakeClock:
    """Stands in for the time module in nprnn.accel: the test moves the clock."""

    def __init__(self):
        self.now = 1000.0

    def monotonic(self):
        return self.now


def test_machine_busy_averages_other_processes_runnable_tasks(monkeypatch):
    clock, others = FakeClock(), [0]
    monkeypatch.setattr(accel, "time", clock)
    monkeypatch.setattr(accel, "_others_running", lambda: others[0])
    monkeypatch.setattr(accel, "_load", {"checked": -np.inf, "busy": False, "others": 0.0})

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


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="counting runnable tasks needs Linux's /proc")
def test_others_running_sees_a_busy_process():
    threads_before = accel._others_running()
    assert threads_before is not None and threads_before >= 0
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        assert min(accel._others_running() for _ in range(5)) >= 1  # the burner is always runnable
    finally:
        burner.kill()
        burner.wait()


def python(code, **env):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("NPRNN_")}
    done = subprocess.run([sys.executable, "-c", code], env={**environ, **env}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done


def test_environment_variables_select_backend_and_threads():
    show = "import nprnn.accel as a; print(a.backend(), a.blas_threads())"
    assert python(show).stdout.split() == ["numpy", "auto"]  # the defaults
    done = python(show, NPRNN_ACCEL="numba", NPRNN_BLAS_THREADS="0")
    assert done.stdout.split() == ["numba", "0"]
    assert python(show, NPRNN_BLAS_THREADS="Adaptive").stdout.split() == ["numpy", "adaptive"]
    done = python(show, NPRNN_ACCEL="cuda", NPRNN_BLAS_THREADS="x")
    assert done.stdout.split() == ["numpy", "auto"]
    assert "NPRNN_ACCEL='cuda' ignored" in done.stderr and "NPRNN_BLAS_THREADS='x' ignored" in done.stderr


def test_numba_is_not_imported_by_default():
    code = (
        "import sys, numpy as np, nprnn\n"
        "from nprnn.layers.lstm import TimeLSTM, init_lstm_params\n"
        "TimeLSTM(*init_lstm_params(2, 3)).forward(np.zeros((1, 2, 2), np.float32))\n"
        "print('numba' in sys.modules)"
    )
    assert python(code).stdout.strip() == "False"
