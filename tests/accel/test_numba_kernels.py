"""The optional numba kernels of the time layers (nprnn/accel/numbanumba_kernels.py, selected with
``nprnn.accel.use("numba")``).

The kernels must compute what the NumPy path computes: the same outputs, final states and gradients to
float rounding (float64: 1e-12; float32: the kernels' tanh is an approximation within 5 ulp), and the
float64 gradient checks must pass with the kernels on. The NumPy path itself is tested in test_rnn.py,
test_lstm.py and test_gru.py.
"""

import json
import os
import subprocess
import sys
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
from nprnn.accel import backends, numba_kernels  # noqa: E402  (needs numba)

KINDS = {"rnn": (TimeRNN, init_rnn_params), "lstm": (TimeLSTM, init_lstm_params), "gru": (TimeGRU, init_gru_params)}


class CountingKernels:
    """Stands in for the kernel module and counts the calls, so a test knows the kernels really ran."""

    def __init__(self):
        self.calls = Counter()

    def __getattr__(self, name):
        kernel = getattr(numba_kernels, name)

        def counted(*args, **kwargs):
            self.calls[name] += 1
            return kernel(*args, **kwargs)

        return counted


@pytest.fixture
def backend(monkeypatch):
    """``backend(name)`` selects a backend for the rest of the test; the previous one is restored after."""
    previous = accel.backend()
    counting = CountingKernels()

    def select(name):
        accel.use(name)
        if name == "numba":
            monkeypatch.setitem(backends._state, "kernels", counting)
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
    assert counting.calls[f"{kind}_forward"] == 1 and counting.calls[f"{kind}_backward"] == 1
    assert_results_close(got, want, dtype)
    if lengths is not None:  # padded positions: zero output, zero input gradient
        assert np.all(got["hs"][2, 1:] == 0) and np.all(got["dxs"][2, 1:] == 0)


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize(
    "lengths", [None, [6, 2, 1, 5, 6, 3, 4, 6, 1, 2, 6, 6, 5, 4, 3, 2, 1]], ids=["full", "lengths"]
)
def test_loops_in_row_blocks_match_numpy_path(backend, rng, monkeypatch, kind, lengths):
    """From SPLIT_ROWS rows a thread each thread runs the whole loop on its own rows (17: 8 + 9)."""
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("row blocks need two numba threads")
    N, T, D, H = 17, 6, 5, 180  # a step product of 1.1 MFLOP or more: on two threads
    blocks = []
    for direction in ("forward", "backward"):
        name = f"_{kind}_{direction}_blocks"
        real = getattr(numba_kernels, name)
        monkeypatch.setattr(numba_kernels, name, lambda *a, name=name, real=real: blocks.append(name) or real(*a))
    layer = random_layer(kind, rng, D, H)
    xs, dhs = rng.standard_normal((N, T, D)), rng.standard_normal((N, T, H))
    initial, final = states(kind, rng, N, H, np.float64)
    backend("numpy")
    want = run(layer, xs, dhs, initial, final, lengths)
    backend("numba")
    got = run(layer, xs, dhs, initial, final, lengths)
    assert blocks == [f"_{kind}_forward_blocks", f"_{kind}_backward_blocks"]
    for key in want:  # sums of 180 terms of up to ~100: float64 rounding relative to the largest
        np.testing.assert_allclose(got[key], want[key], rtol=1e-12, atol=1e-12 * np.abs(want[key]).max(), err_msg=key)


ROW_BLOCK_LOOPS = """
import json, numpy as np
from nprnn import accel
from nprnn.accel import numba_kernels
from nprnn.layers import TimeGRU, TimeLSTM, TimeRNN, init_gru_params, init_lstm_params, init_rnn_params
accel.use("numba")
rng = np.random.default_rng(0)
for cls, init in ((TimeRNN, init_rnn_params), (TimeLSTM, init_lstm_params), (TimeGRU, init_gru_params)):
    layer = cls(*init(5, 180, seed=0))
    layer.forward(rng.standard_normal((17, 3, 5)).astype(np.float32))
    layer.backward(rng.standard_normal((17, 3, 180)).astype(np.float32))
names = [f"_{k}_{d}_blocks" for k in ("rnn", "lstm", "gru") for d in ("forward", "backward")]
stats = {n: getattr(numba_kernels, n).stats for n in names}
print(json.dumps({n: [sum(s.cache_hits.values()), sum(s.cache_misses.values())] for n, s in stats.items()}))
"""


def test_row_block_loops_load_from_the_disk_cache_in_a_new_process():
    """Compiled once, then loaded by every later process (a loop compiled again at each start would
    cost seconds per run, and processes saving at once could fail)."""
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("row blocks need two numba threads")

    def counts():
        done = subprocess.run([sys.executable, "-c", ROW_BLOCK_LOOPS], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    counts()  # compiles (and saves) what the cache does not hold yet
    for name, (hits, misses) in counts().items():
        assert (hits, misses) == (1, 0), name


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


@numba.njit(**{k: v for k, v in numba_kernels._JIT.items() if k != "cache"})
def kernel_tanh(x, out):
    for i in range(x.size):
        out[i] = numba_kernels._tanh(x[i])


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


@pytest.mark.parametrize("busy", [False, True], ids=["idle", "busy"])
def test_adaptive_runs_the_kernels_on_one_thread_while_the_machine_is_busy(monkeypatch, busy):
    """The opt-in "adaptive" covers numba's threads too (their steps meet at a barrier, which a busy
    core stalls); "auto" and a fixed cap never look at the load."""
    from nprnn.accel import blas, packed

    monkeypatch.setattr(packed.numba.config, "NUMBA_NUM_THREADS", 2)
    monkeypatch.setattr(blas, "machine_busy", lambda: busy)
    W = np.zeros((256, 1024), dtype=np.float32)
    previous = accel.blas_threads()
    try:
        for setting, expected in [("auto", 2), ("adaptive", 1 if busy else 2), (1, 1), (0, 2)]:
            accel.set_blas_threads(setting)
            assert numba_kernels.recurrent_product(W, 64).threads == expected, setting
    finally:
        accel.set_blas_threads(previous)
