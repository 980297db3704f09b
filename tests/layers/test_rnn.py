import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nprnn import RNN, TimeRNN
from nprnn.gradcheck import numerical_gradient, relative_error
from nprnn.layers.rnn import init_rnn_params


def make_params(rng, D, H, dtype=np.float64):
    return [
        rng.standard_normal((D, H)).astype(dtype) * 0.5,
        rng.standard_normal((H, H)).astype(dtype) * 0.5,
        rng.standard_normal(H).astype(dtype) * 0.1,
    ]


def reference_time_rnn(params, xs, h0, lengths=None):
    """Slow step-by-step reference built on the RNN cell (forward only)."""
    N, T, _ = xs.shape
    cell = RNN(*params)
    h, hs = h0, np.zeros((N, T, params[1].shape[0]), dtype=xs.dtype)
    for t in range(T):
        h_new = cell.forward(xs[:, t], h)
        alive = np.ones(N, bool) if lengths is None else t < np.asarray(lengths)
        h = np.where(alive[:, None], h_new, h)
        hs[:, t] = np.where(alive[:, None], h_new, 0)
    return hs, h


# ---------------------------------------------------------------- cell


def test_cell_forward_matches_formula(rng):
    Wx, Wh, b = make_params(rng, 3, 4)
    x, h = rng.standard_normal((2, 3)), rng.standard_normal((2, 4))
    np.testing.assert_allclose(RNN(Wx, Wh, b).forward(x, h), np.tanh(h @ Wh + x @ Wx + b), rtol=1e-14)


def test_cell_gradients(rng):
    params = make_params(rng, 3, 4)
    cell = RNN(*params)
    x, h_prev = rng.standard_normal((2, 3)), rng.standard_normal((2, 4))
    R = rng.standard_normal((2, 4))

    def loss():
        return float(np.sum(cell.forward(x, h_prev) * R))

    loss()
    dx, dh_prev = cell.backward(R)
    analytic = [g.copy() for g in cell.grads]
    for p, g in zip(params, analytic):
        assert relative_error(g, numerical_gradient(loss, p)) < 1e-8
    assert relative_error(dx, numerical_gradient(loss, x)) < 1e-8
    assert relative_error(dh_prev, numerical_gradient(loss, h_prev)) < 1e-8


# ---------------------------------------------------------------- time layer: gradients


def check_time_rnn_gradients(rng, N, T, D, H, lengths=None):
    params = make_params(rng, D, H)
    layer = TimeRNN(*params)
    xs, h0 = rng.standard_normal((N, T, D)), rng.standard_normal((N, H))
    R, R_final = rng.standard_normal((N, T, H)), rng.standard_normal((N, H))

    def loss():
        hs = layer.forward(xs, h0=h0, lengths=lengths)
        return float(np.sum(hs * R) + np.sum(layer.h * R_final))

    loss()
    dxs = layer.backward(R, dh_final=R_final)
    analytic = [g.copy() for g in layer.grads]
    dh0 = layer.dh.copy()
    for name, p, g in zip(["Wx", "Wh", "b"], params, analytic):
        assert relative_error(g, numerical_gradient(loss, p)) < 1e-7, name
    assert relative_error(dxs, numerical_gradient(loss, xs)) < 1e-7
    assert relative_error(dh0, numerical_gradient(loss, h0)) < 1e-7
    return dxs


def test_time_rnn_gradients(rng):
    check_time_rnn_gradients(rng, N=3, T=5, D=4, H=6)


def test_time_rnn_gradients_variable_lengths(rng):
    dxs = check_time_rnn_gradients(rng, N=4, T=5, D=3, H=4, lengths=[5, 2, 1, 3])
    # padded positions get exactly zero gradient
    assert np.all(dxs[1, 2:] == 0) and np.all(dxs[2, 1:] == 0) and np.all(dxs[3, 3:] == 0)


def test_time_rnn_stateful_gradients_across_calls(rng):
    """Two consecutive stateful calls: the second starts from the first's final state,
    gradients are truncated at the boundary, and .dh is the gradient w.r.t. the carried state."""
    N, T, D, H = 2, 4, 3, 5
    params = make_params(rng, D, H)
    layer = TimeRNN(*params, stateful=True)
    xs1, xs2 = rng.standard_normal((N, T, D)), rng.standard_normal((N, T, D))
    R = rng.standard_normal((N, T, H))

    layer.forward(xs1)
    carried = layer.h.copy()
    hs2 = layer.forward(xs2)
    expected, _ = reference_time_rnn(params, xs2, carried)
    np.testing.assert_allclose(hs2, expected, rtol=1e-12, atol=1e-14)
    layer.backward(R)
    analytic = [g.copy() for g in layer.grads] + [layer.dh.copy()]

    state = carried.copy()

    def loss():  # the second segment alone, from the carried state (truncated BPTT)
        layer.set_state(state)
        return float(np.sum(layer.forward(xs2) * R))

    for g, p in zip(analytic, params + [state]):
        assert relative_error(g, numerical_gradient(loss, p)) < 1e-7


def test_non_stateful_starts_from_zero(rng):
    params = make_params(rng, 3, 4)
    layer = TimeRNN(*params)
    xs = rng.standard_normal((2, 3, 3))
    first = layer.forward(xs)
    np.testing.assert_array_equal(layer.forward(xs), first)
    expected, _ = reference_time_rnn(params, xs, np.zeros((2, 4)))
    np.testing.assert_allclose(first, expected, rtol=1e-12)


def test_stateful_reset_state(rng):
    params = make_params(rng, 3, 4)
    layer = TimeRNN(*params, stateful=True)
    xs = rng.standard_normal((2, 3, 3))
    first = layer.forward(xs)
    assert not np.allclose(layer.forward(xs), first)  # carried state changes the output
    layer.reset_state()
    np.testing.assert_array_equal(layer.forward(xs), first)


def test_variable_lengths_equal_running_each_sequence_alone(rng):
    params = make_params(rng, 3, 4)
    layer = TimeRNN(*params)
    lengths = [4, 1, 3]
    xs, h0 = rng.standard_normal((3, 4, 3)), rng.standard_normal((3, 4))
    R = rng.standard_normal((3, 4, 4))
    hs = layer.forward(xs, h0=h0, lengths=lengths)
    dxs = layer.backward(R)
    total = [g.copy() for g in layer.grads]
    sums = [np.zeros_like(p) for p in params]
    for n, L in enumerate(lengths):
        alone = TimeRNN(*params)
        hs_n = alone.forward(xs[n : n + 1, :L], h0=h0[n : n + 1])
        np.testing.assert_allclose(hs[n, :L], hs_n[0], rtol=1e-12)
        assert np.all(hs[n, L:] == 0)
        np.testing.assert_allclose(layer.h[n], alone.h[0], rtol=1e-12)
        dxs_n = alone.backward(R[n : n + 1, :L])
        np.testing.assert_allclose(dxs[n, :L], dxs_n[0], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(layer.dh[n], alone.dh[0], rtol=1e-10, atol=1e-12)
        for s, g in zip(sums, alone.grads):
            s += g
    for s, g in zip(sums, total):
        np.testing.assert_allclose(g, s, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- protocol and dtypes


def test_params_are_the_arrays_passed_and_grads_keep_identity(rng):
    params = make_params(rng, 3, 4, np.float32)
    layer = TimeRNN(*params)
    assert all(a is b for a, b in zip(layer.params, params))
    grads = list(layer.grads)
    assert all(g.shape == p.shape and g.dtype == p.dtype and not g.any() for g, p in zip(grads, params))
    xs = rng.standard_normal((2, 5, 3)).astype(np.float32)
    for _ in range(2):
        layer.backward(np.ones_like(layer.forward(xs)))
    assert all(a is b for a, b in zip(layer.grads, grads))
    assert all(g.any() for g in grads)
    # an optimizer updating params in place is seen by the layer
    params[1] *= 0
    params[0] *= 0
    params[2][...] = 0.5
    np.testing.assert_allclose(layer.forward(xs), np.full((2, 5, 4), np.tanh(0.5), np.float32), rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_preserved(rng, dtype):
    layer = TimeRNN(*init_rnn_params(3, 4, seed=0, dtype=dtype))
    xs = rng.standard_normal((2, 5, 3)).astype(dtype)
    hs = layer.forward(xs)
    dxs = layer.backward(np.ones_like(hs))
    assert hs.dtype == dtype and dxs.dtype == dtype and layer.h.dtype == dtype and layer.dh.dtype == dtype
    assert all(g.dtype == dtype for g in layer.grads)


def test_init_is_seeded_and_float32_by_default():
    a, b = init_rnn_params(3, 4, seed=7), init_rnn_params(3, 4, seed=7)
    assert all(x.dtype == np.float32 for x in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], init_rnn_params(3, 4, seed=8)[0])


@settings(max_examples=40, deadline=None)
@given(
    N=st.integers(1, 4),
    T=st.integers(1, 5),
    D=st.integers(1, 5),
    H=st.integers(1, 5),
    stateful=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_matches_step_by_step_reference(N, T, D, H, stateful, seed):
    rng = np.random.default_rng(seed)
    params = make_params(rng, D, H)
    xs = rng.standard_normal((N, T, D))
    R = rng.standard_normal((N, T, H))
    layer = TimeRNN(*params, stateful=stateful)
    h0 = np.zeros((N, H))
    if stateful:
        layer.forward(rng.standard_normal((N, T, D)))
        h0 = layer.h.copy()
    hs = layer.forward(xs)
    assert hs.shape == (N, T, H)
    expected, h_last = reference_time_rnn(params, xs, h0)
    np.testing.assert_allclose(hs, expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(layer.h, h_last, rtol=1e-12, atol=1e-14)

    dxs = layer.backward(R)
    assert dxs.shape == (N, T, D) and layer.dh.shape == (N, H)
    # backward through the cell, step by step
    cells, h = [], h0
    for t in range(T):
        cells.append(RNN(*params))
        h = cells[-1].forward(xs[:, t], h)
    dh, grads = np.zeros((N, H)), [np.zeros_like(p) for p in params]
    ref_dxs = np.zeros_like(xs)
    for t in reversed(range(T)):
        ref_dxs[:, t], dh = cells[t].backward(R[:, t] + dh)
        for acc, g in zip(grads, cells[t].grads):
            acc += g
    np.testing.assert_allclose(dxs, ref_dxs, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.dh, dh, rtol=1e-10, atol=1e-12)
    for g, ref in zip(layer.grads, grads):
        np.testing.assert_allclose(g, ref, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- bad input


@pytest.fixture
def layer32():
    return TimeRNN(*init_rnn_params(3, 4, seed=0))


def test_bad_xs_ndim(layer32):
    with pytest.raises(ValueError, match=r"xs must be 3-D .*\(any, any, 3\).*got shape \(2, 3\)"):
        layer32.forward(np.zeros((2, 3), np.float32))


def test_bad_xs_feature_size(layer32):
    with pytest.raises(ValueError, match=r"xs must have shape \(any, any, 3\), got \(2, 5, 4\)"):
        layer32.forward(np.zeros((2, 5, 4), np.float32))


def test_integer_input_rejected(layer32):
    with pytest.raises(ValueError, match="dtype float32.*got int64"):
        layer32.forward(np.zeros((2, 5, 3), np.int64))


def test_dtype_mismatch_rejected(layer32):
    with pytest.raises(ValueError, match="dtype float32.*got float64"):
        layer32.forward(np.zeros((2, 5, 3)))


def test_mismatched_params_rejected():
    with pytest.raises(ValueError, match=r"Wh must have shape \(4, 4\), got \(3, 3\)"):
        TimeRNN(np.zeros((3, 4), np.float32), np.zeros((3, 3), np.float32), np.zeros(4, np.float32))
    with pytest.raises(ValueError, match=r"b must have shape \(4,\), got \(3,\)"):
        TimeRNN(np.zeros((3, 4), np.float32), np.zeros((4, 4), np.float32), np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="float32 or float64, got int64"):
        RNN(np.zeros((3, 4), np.int64), np.zeros((4, 4), np.int64), np.zeros(4, np.int64))
    with pytest.raises(ValueError, match="one dtype; Wh is float64, expected float32"):
        RNN(np.zeros((3, 4), np.float32), np.zeros((4, 4)), np.zeros(4, np.float32))


def test_h0_shape_mismatch(layer32):
    with pytest.raises(ValueError, match=r"h0 must have shape \(2, 4\), got \(3, 4\)"):
        layer32.forward(np.zeros((2, 5, 3), np.float32), h0=np.zeros((3, 4), np.float32))


def test_stateful_batch_size_change(rng):
    layer = TimeRNN(*init_rnn_params(3, 4, seed=0), stateful=True)
    layer.forward(np.zeros((2, 5, 3), np.float32))
    with pytest.raises(ValueError, match="batch size 2, got a batch of 3"):
        layer.forward(np.zeros((3, 5, 3), np.float32))
    layer.reset_state()
    assert layer.forward(np.zeros((3, 5, 3), np.float32)).shape == (3, 5, 4)


def test_backward_before_forward():
    with pytest.raises(RuntimeError, match="backward called before forward"):
        TimeRNN(*init_rnn_params(3, 4)).backward(np.zeros((2, 5, 4), np.float32))
    with pytest.raises(RuntimeError, match="backward called before forward"):
        RNN(*init_rnn_params(3, 4)).backward(np.zeros((2, 4), np.float32))


def test_dhs_shape_mismatch(layer32):
    layer32.forward(np.zeros((2, 5, 3), np.float32))
    with pytest.raises(ValueError, match=r"dhs must have shape \(2, 5, 4\), got \(2, 4, 4\)"):
        layer32.backward(np.zeros((2, 4, 4), np.float32))


def test_cell_bad_input():
    cell = RNN(*init_rnn_params(3, 4))
    with pytest.raises(ValueError, match=r"x must have shape \(any, 3\), got \(2, 5\)"):
        cell.forward(np.zeros((2, 5), np.float32), np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"h_prev must have shape \(2, 4\), got \(3, 4\)"):
        cell.forward(np.zeros((2, 3), np.float32), np.zeros((3, 4), np.float32))


@pytest.mark.parametrize(
    "lengths, message",
    [
        ([5, 0], r"lengths must be in \[1, 5\]"),
        ([6, 1], r"lengths must be in \[1, 5\]"),
        ([5], r"lengths must have shape \(2,\), got \(1,\)"),
        ([2.5, 1.0], "lengths must be integers"),
    ],
)
def test_bad_lengths(layer32, lengths, message):
    with pytest.raises(ValueError, match=message):
        layer32.forward(np.zeros((2, 5, 3), np.float32), lengths=lengths)
