"""GRU / TimeGRU (PyTorch formulation).

No parity test against the textbook: its GRU applies the reset gate *before* the recurrent
multiply, ``tanh(x Wx + (r * h) Wh + b)``, with no separate recurrent bias, orders its gates
z, r, h and lets z pick the candidate (``h' = (1 - z) h + z h~``). That is a different model from
the PyTorch / cuDNN one built here, so the two cannot agree for the same weights; parity is
checked against torch.nn.GRU instead.
"""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nprnn.gradcheck import numerical_gradient, relative_error
from nprnn.layers.gru import GRU, TimeGRU, init_gru_params

torch.set_num_threads(1)

PARAM_NAMES = ["Wx", "Wh", "b", "bhn"]


def make_params(rng, D, H, dtype=np.float64):
    return [
        rng.standard_normal((D, 3 * H)).astype(dtype) * 0.5,
        rng.standard_normal((H, 3 * H)).astype(dtype) * 0.5,
        rng.standard_normal(3 * H).astype(dtype) * 0.5,
        rng.standard_normal(H).astype(dtype) * 0.5,
    ]


def reference_time_gru(params, xs, h0, lengths=None):
    """Slow step-by-step reference built on the GRU cell (forward only)."""
    N, T, _ = xs.shape
    cell = GRU(*params)
    h, hs = h0, np.zeros((N, T, params[1].shape[0]), dtype=xs.dtype)
    for t in range(T):
        h_new = cell.forward(xs[:, t], h)
        alive = (np.ones(N, bool) if lengths is None else t < np.asarray(lengths))[:, None]
        h = np.where(alive, h_new, h)
        hs[:, t] = np.where(alive, h_new, 0)
    return hs, h


def plain_sigmoid(a):
    return 1 / (1 + np.exp(-a))


# ---------------------------------------------------------------- cell


def test_cell_forward_matches_formula_with_gate_layout_r_z_n(rng):
    H = 4
    Wx, Wh, b, bhn = make_params(rng, 3, H)
    x, h = rng.standard_normal((2, 3)), rng.standard_normal((2, H))
    (Wx_r, Wx_z, Wx_n), (Wh_r, Wh_z, Wh_n), (b_r, b_z, b_n) = (np.split(p, 3, axis=-1) for p in (Wx, Wh, b))
    r = plain_sigmoid(x @ Wx_r + h @ Wh_r + b_r)
    z = plain_sigmoid(x @ Wx_z + h @ Wh_z + b_z)
    n = np.tanh(x @ Wx_n + b_n + r * (h @ Wh_n + bhn))
    np.testing.assert_allclose(GRU(Wx, Wh, b, bhn).forward(x, h), (1 - z) * n + z * h, rtol=1e-13, atol=1e-15)


def test_cell_gradients(rng):
    params = make_params(rng, 3, 4)
    cell = GRU(*params)
    x, h_prev = rng.standard_normal((2, 3)), rng.standard_normal((2, 4))
    R = rng.standard_normal((2, 4))

    def loss():
        return float(np.sum(cell.forward(x, h_prev) * R))

    loss()
    dx, dh_prev = cell.backward(R)
    analytic = [g.copy() for g in cell.grads]
    for name, p, g in zip(PARAM_NAMES, params, analytic):
        assert relative_error(g, numerical_gradient(loss, p)) < 1e-8, name
    assert relative_error(dx, numerical_gradient(loss, x)) < 1e-8
    assert relative_error(dh_prev, numerical_gradient(loss, h_prev)) < 1e-8


def test_cell_sigmoid_does_not_overflow():
    H = 2
    Wx, Wh, b, bhn = np.zeros((1, 3 * H)), np.zeros((H, 3 * H)), np.full(3 * H, -1000.0), np.zeros(H)
    with np.errstate(all="raise"):
        h = GRU(Wx, Wh, b, bhn).forward(np.zeros((1, 1)), np.ones((1, H)))
    np.testing.assert_array_equal(h, np.tanh(-1000.0))  # z = 0: the candidate replaces the state


# ---------------------------------------------------------------- time layer: gradients


def check_time_gru_gradients(rng, N, T, D, H, lengths=None):
    params = make_params(rng, D, H)
    layer = TimeGRU(*params)
    xs, h0 = rng.standard_normal((N, T, D)), rng.standard_normal((N, H))
    R, R_final = rng.standard_normal((N, T, H)), rng.standard_normal((N, H))

    def loss():
        hs = layer.forward(xs, h0, lengths=lengths)
        return float(np.sum(hs * R) + np.sum(layer.h * R_final))

    loss()
    dxs = layer.backward(R, dh_final=R_final)
    analytic = [g.copy() for g in layer.grads]
    dh0 = layer.dh.copy()
    for name, p, g in zip(PARAM_NAMES, params, analytic):
        assert relative_error(g, numerical_gradient(loss, p)) < 1e-7, name
    assert relative_error(dxs, numerical_gradient(loss, xs)) < 1e-7
    assert relative_error(dh0, numerical_gradient(loss, h0)) < 1e-7
    return dxs


def test_time_gru_gradients(rng):
    check_time_gru_gradients(rng, N=3, T=5, D=4, H=3)


def test_time_gru_gradients_variable_lengths(rng):
    dxs = check_time_gru_gradients(rng, N=4, T=5, D=3, H=3, lengths=[5, 2, 1, 3])
    # padded positions get exactly zero gradient
    assert np.all(dxs[1, 2:] == 0) and np.all(dxs[2, 1:] == 0) and np.all(dxs[3, 3:] == 0)


def test_time_gru_stateful_gradients_across_calls(rng):
    """Two consecutive stateful calls: the second starts from the first's final state,
    gradients are truncated at the boundary, and .dh is the gradient w.r.t. the carried state."""
    N, T, D, H = 2, 4, 3, 3
    params = make_params(rng, D, H)
    layer = TimeGRU(*params, stateful=True)
    xs1, xs2 = rng.standard_normal((N, T, D)), rng.standard_normal((N, T, D))
    R = rng.standard_normal((N, T, H))

    layer.forward(xs1)
    carried = layer.h.copy()
    hs2 = layer.forward(xs2)
    expected, _ = reference_time_gru(params, xs2, carried)
    np.testing.assert_allclose(hs2, expected, rtol=1e-12, atol=1e-14)
    layer.backward(R)
    analytic = [g.copy() for g in layer.grads] + [layer.dh.copy()]

    state = carried.copy()

    def loss():  # the second segment alone, from the carried state (truncated BPTT)
        layer.set_state(state)
        return float(np.sum(layer.forward(xs2) * R))

    for g, p in zip(analytic, params + [state]):
        assert relative_error(g, numerical_gradient(loss, p)) < 1e-7


# ---------------------------------------------------------------- time layer: states


def test_non_stateful_starts_from_zero(rng):
    params = make_params(rng, 3, 4)
    layer = TimeGRU(*params)
    xs = rng.standard_normal((2, 3, 3))
    first = layer.forward(xs)
    np.testing.assert_array_equal(layer.forward(xs), first)
    expected, _ = reference_time_gru(params, xs, np.zeros((2, 4)))
    np.testing.assert_allclose(first, expected, rtol=1e-12, atol=1e-15)


def test_stateful_reset_state_and_h0_override(rng):
    params = make_params(rng, 3, 4)
    layer = TimeGRU(*params, stateful=True)
    xs, h0 = rng.standard_normal((2, 3, 3)), rng.standard_normal((2, 4))
    first = layer.forward(xs)
    assert not np.allclose(layer.forward(xs), first)  # carried state changes the output
    expected, _ = reference_time_gru(params, xs, h0)
    np.testing.assert_allclose(layer.forward(xs, h0), expected, rtol=1e-12, atol=1e-15)
    layer.reset_state()
    assert layer.h is None
    np.testing.assert_array_equal(layer.forward(xs), first)


def test_variable_lengths_equal_running_each_sequence_alone(rng):
    params = make_params(rng, 3, 4)
    layer = TimeGRU(*params)
    lengths = [4, 1, 3]
    xs, h0 = rng.standard_normal((3, 4, 3)), rng.standard_normal((3, 4))
    R, R_final = rng.standard_normal((3, 4, 4)), rng.standard_normal((3, 4))
    hs = layer.forward(xs, h0, lengths=np.array(lengths))
    dxs = layer.backward(R, R_final)
    total = [g.copy() for g in layer.grads]
    sums = [np.zeros_like(p) for p in params]
    for n, L in enumerate(lengths):
        alone = TimeGRU(*params)
        hs_n = alone.forward(xs[n : n + 1, :L], h0[n : n + 1])
        np.testing.assert_allclose(hs[n, :L], hs_n[0], rtol=1e-12)
        assert np.all(hs[n, L:] == 0)
        np.testing.assert_allclose(layer.h[n], alone.h[0], rtol=1e-12)
        dxs_n = alone.backward(R[n : n + 1, :L], R_final[n : n + 1])
        np.testing.assert_allclose(dxs[n, :L], dxs_n[0], rtol=1e-10, atol=1e-12)
        assert np.all(dxs[n, L:] == 0)
        np.testing.assert_allclose(layer.dh[n], alone.dh[0], rtol=1e-10, atol=1e-12)
        for s, g in zip(sums, alone.grads):
            s += g
    for s, g in zip(sums, total):
        np.testing.assert_allclose(g, s, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- protocol and dtypes


def test_params_are_the_arrays_passed_and_grads_keep_identity(rng):
    params = make_params(rng, 3, 4, np.float32)
    layer = TimeGRU(*params)
    assert all(a is b for a, b in zip(layer.params, params))
    grads = list(layer.grads)
    assert all(g.shape == p.shape and g.dtype == p.dtype and not g.any() for g, p in zip(grads, params))
    xs = rng.standard_normal((2, 5, 3)).astype(np.float32)
    for _ in range(2):
        layer.backward(np.ones_like(layer.forward(xs)))
    assert all(a is b for a, b in zip(layer.grads, grads))
    assert all(g.any() for g in grads)
    # an optimizer updating params in place is seen by the layer: with zero weights, r = z = sigmoid(b)
    # and n = tanh(b_n + r * bhn), so h_t = (1 - z) * n + z * h_{t-1} from h_0 = 0
    params[0] *= 0
    params[1] *= 0
    params[2][...] = 1
    params[3][...] = 2
    s = 1 / (1 + np.exp(-1.0))
    n = np.tanh(1 + s * 2)
    h, expected = 0.0, []
    for _ in range(5):
        h = (1 - s) * n + s * h
        expected.append(h)
    hs = layer.forward(xs)
    np.testing.assert_allclose(hs, np.broadcast_to(np.array(expected)[None, :, None], hs.shape), rtol=1e-6)


def test_backward_is_repeatable(rng):
    """backward leaves the forward cache intact, so calling it again gives the same gradients."""
    layer = TimeGRU(*make_params(rng, 3, 4))
    layer.forward(rng.standard_normal((2, 5, 3)), lengths=[5, 2])
    R = rng.standard_normal((2, 5, 4))
    Rh = rng.standard_normal((2, 4))
    first = [layer.backward(R, Rh), *(g.copy() for g in layer.grads), *[layer.dh.copy()]]
    second = [layer.backward(R, Rh), *layer.grads, *[layer.dh]]
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_preserved(rng, dtype):
    layer = TimeGRU(*init_gru_params(3, 4, seed=0, dtype=dtype))
    xs = rng.standard_normal((2, 5, 3)).astype(dtype)
    hs = layer.forward(xs, lengths=[5, 3])
    dxs = layer.backward(np.ones_like(hs), np.ones((2, 4), dtype))
    assert all(a.dtype == dtype for a in [hs, dxs, layer.h, layer.dh, *layer.grads])
    cell = GRU(*init_gru_params(3, 4, seed=0, dtype=dtype))
    h = cell.forward(xs[:, 0], layer.h)
    assert all(a.dtype == dtype for a in [h, *cell.backward(h), *cell.grads])


def test_init_is_seeded_and_float32_by_default():
    a, b = init_gru_params(3, 4, seed=7), init_gru_params(3, 4, seed=7)
    assert [x.shape for x in a] == [(3, 12), (4, 12), (12,), (4,)]
    assert all(x.dtype == np.float32 for x in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], init_gru_params(3, 4, seed=8)[0])


@settings(max_examples=30, deadline=None)
@given(
    N=st.integers(1, 4),
    T=st.integers(1, 5),
    D=st.integers(1, 4),
    H=st.integers(1, 4),
    stateful=st.booleans(),
    final_grad=st.booleans(),
    data=st.data(),
)
def test_matches_step_by_step_reference(N, T, D, H, stateful, final_grad, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31), label="seed"))
    lengths = data.draw(st.none() | st.lists(st.integers(1, T), min_size=N, max_size=N), label="lengths")
    params = make_params(rng, D, H)
    xs = rng.standard_normal((N, T, D))
    R = rng.standard_normal((N, T, H))
    R_final = rng.standard_normal((N, H)) if final_grad else None
    layer = TimeGRU(*params, stateful=stateful)
    h0 = np.zeros((N, H))
    if stateful:
        layer.forward(rng.standard_normal((N, T, D)))
        h0 = layer.h.copy()
    hs = layer.forward(xs, lengths=lengths)
    assert hs.shape == (N, T, H)
    expected, h_last = reference_time_gru(params, xs, h0, lengths)
    np.testing.assert_allclose(hs, expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(layer.h, h_last, rtol=1e-12, atol=1e-14)

    dxs = layer.backward(R, R_final)
    assert dxs.shape == (N, T, D) and layer.dh.shape == (N, H)
    # backward through the cell, step by step; a finished row passes its state gradient through
    alive = np.ones((T, N), bool) if lengths is None else np.arange(T)[:, None] < np.asarray(lengths)[None, :]
    cells, h = [], h0
    for t in range(T):
        cells.append(GRU(*params))
        h = np.where(alive[t][:, None], cells[-1].forward(xs[:, t], h), h)
    dh = np.zeros((N, H)) if R_final is None else R_final.copy()
    grads = [np.zeros_like(p) for p in params]
    ref_dxs = np.zeros_like(xs)
    for t in reversed(range(T)):
        keep = alive[t][:, None]
        ref_dxs[:, t], dh_prev = cells[t].backward(np.where(keep, R[:, t] + dh, 0))
        dh = np.where(keep, dh_prev, dh)
        for acc, g in zip(grads, cells[t].grads):
            acc += g
    np.testing.assert_allclose(dxs, ref_dxs, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.dh, dh, rtol=1e-10, atol=1e-12)
    for g, ref in zip(layer.grads, grads):
        np.testing.assert_allclose(g, ref, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- PyTorch parity


def torch_gru_from(Wx, Wh, b, bhn, rng):
    """torch.nn.GRU with our weights: same gate order r, z, n; the r and z biases may be split
    between torch's two biases in any way, the n biases may not (bhn sits inside r * (...))."""
    D, H = Wx.shape[0], Wh.shape[0]
    gru = torch.nn.GRU(D, H, batch_first=True, dtype=torch.float64)
    b_ih_rz = rng.standard_normal(2 * H)
    with torch.no_grad():
        gru.weight_ih_l0.copy_(torch.from_numpy(Wx.T))
        gru.weight_hh_l0.copy_(torch.from_numpy(Wh.T))
        gru.bias_ih_l0.copy_(torch.from_numpy(np.concatenate([b_ih_rz, b[2 * H :]])))
        gru.bias_hh_l0.copy_(torch.from_numpy(np.concatenate([b[: 2 * H] - b_ih_rz, bhn])))
    return gru


@pytest.mark.parametrize(
    "N, T, D, H, lengths",
    [(3, 6, 4, 5, None), (1, 1, 2, 3, None), (4, 9, 7, 2, None), (4, 6, 3, 5, [6, 2, 4, 1]), (3, 5, 2, 4, [1, 5, 5])],
)
def test_parity_with_torch(rng, N, T, D, H, lengths):
    Wx, Wh, b, bhn = make_params(rng, D, H)
    xs, h0 = rng.standard_normal((N, T, D)), rng.standard_normal((N, H))
    R, R_final = rng.standard_normal((N, T, H)), rng.standard_normal((N, H))
    lengths = None if lengths is None else np.array(lengths)

    layer = TimeGRU(Wx, Wh, b, bhn)
    hs = layer.forward(xs, h0, lengths=lengths)
    dxs = layer.backward(R, R_final)

    gru = torch_gru_from(Wx, Wh, b, bhn, rng)
    xs_t = torch.tensor(xs, requires_grad=True)
    h0_t = torch.tensor(h0[None], requires_grad=True)
    if lengths is None:
        out, h_n = gru(xs_t, h0_t)
    else:
        packed = torch.nn.utils.rnn.pack_padded_sequence(xs_t, torch.from_numpy(lengths), True, enforce_sorted=False)
        out_packed, h_n = gru(packed, h0_t)
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out_packed, batch_first=True, total_length=T)
    ((out * torch.from_numpy(R)).sum() + (h_n[0] * torch.from_numpy(R_final)).sum()).backward()

    tol = dict(rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(hs, out.detach().numpy(), **tol)
    np.testing.assert_allclose(layer.h, h_n[0].detach().numpy(), **tol)
    np.testing.assert_allclose(dxs, xs_t.grad.numpy(), **tol)
    np.testing.assert_allclose(layer.dh, h0_t.grad[0].numpy(), **tol)
    dWx, dWh, db, dbhn = layer.grads
    db_ih, db_hh = gru.bias_ih_l0.grad.numpy(), gru.bias_hh_l0.grad.numpy()
    np.testing.assert_allclose(dWx, gru.weight_ih_l0.grad.numpy().T, **tol)
    np.testing.assert_allclose(dWh, gru.weight_hh_l0.grad.numpy().T, **tol)
    np.testing.assert_allclose(db, db_ih, **tol)
    np.testing.assert_allclose(db[: 2 * H], db_hh[: 2 * H], **tol)
    np.testing.assert_allclose(dbhn, db_hh[2 * H :], **tol)


# ---------------------------------------------------------------- bad input


@pytest.fixture
def layer32():
    return TimeGRU(*init_gru_params(3, 4, seed=0))


def f32(*shape):
    return np.zeros(shape, np.float32)


def test_bad_xs_ndim(layer32):
    with pytest.raises(ValueError, match=r"xs must be 3-D .*\(any, any, 3\).*got shape \(2, 3\)"):
        layer32.forward(f32(2, 3))


def test_bad_xs_feature_size(layer32):
    with pytest.raises(ValueError, match=r"xs must have shape \(any, any, 3\), got \(2, 5, 4\)"):
        layer32.forward(f32(2, 5, 4))


def test_integer_input_rejected(layer32):
    with pytest.raises(ValueError, match="dtype float32.*got int64"):
        layer32.forward(np.zeros((2, 5, 3), np.int64))


def test_dtype_mismatch_rejected(layer32):
    with pytest.raises(ValueError, match="xs must have dtype float32.*got float64"):
        layer32.forward(np.zeros((2, 5, 3)))
    with pytest.raises(ValueError, match="h0 must have dtype float32.*got float64"):
        layer32.forward(f32(2, 5, 3), np.zeros((2, 4)))


def test_mismatched_params_rejected():
    with pytest.raises(ValueError, match=r"Wx must have shape \(D, 3H\).*got \(3, 4\)"):
        TimeGRU(f32(3, 4), f32(4, 4), f32(4), f32(1))
    with pytest.raises(ValueError, match=r"Wh must have shape \(4, 12\), got \(4, 4\)"):
        TimeGRU(f32(3, 12), f32(4, 4), f32(12), f32(4))
    with pytest.raises(ValueError, match=r"b must have shape \(12,\), got \(4,\)"):
        TimeGRU(f32(3, 12), f32(4, 12), f32(4), f32(4))
    with pytest.raises(ValueError, match=r"bhn must have shape \(4,\), got \(12,\)"):
        TimeGRU(f32(3, 12), f32(4, 12), f32(12), f32(12))
    with pytest.raises(ValueError, match="float32 or float64, got int64"):
        GRU(np.zeros((3, 12), np.int64), f32(4, 12), f32(12), f32(4))
    with pytest.raises(ValueError, match="one dtype; bhn is float64, expected float32"):
        GRU(f32(3, 12), f32(4, 12), f32(12), np.zeros(4))


def test_h0_shape_mismatch(layer32):
    with pytest.raises(ValueError, match=r"h0 must have shape \(2, 4\), got \(3, 4\)"):
        layer32.forward(f32(2, 5, 3), f32(3, 4))


def test_bad_set_state(layer32):
    with pytest.raises(ValueError, match=r"state h must have shape \(any, 4\), got \(2, 3\)"):
        layer32.set_state(f32(2, 3))


def test_stateful_batch_size_change():
    layer = TimeGRU(*init_gru_params(3, 4, seed=0), stateful=True)
    layer.forward(f32(2, 5, 3))
    with pytest.raises(ValueError, match="batch size 2, got a batch of 3"):
        layer.forward(f32(3, 5, 3))
    layer.reset_state()
    assert layer.forward(f32(3, 5, 3)).shape == (3, 5, 4)


def test_backward_before_forward():
    with pytest.raises(RuntimeError, match="backward called before forward"):
        TimeGRU(*init_gru_params(3, 4)).backward(f32(2, 5, 4))
    with pytest.raises(RuntimeError, match="backward called before forward"):
        GRU(*init_gru_params(3, 4)).backward(f32(2, 4))


def test_bad_backward_gradients(layer32):
    layer32.forward(f32(2, 5, 3))
    with pytest.raises(ValueError, match=r"dhs must have shape \(2, 5, 4\), got \(2, 4, 4\)"):
        layer32.backward(f32(2, 4, 4))
    with pytest.raises(ValueError, match=r"dh_final must have shape \(2, 4\), got \(1, 4\)"):
        layer32.backward(f32(2, 5, 4), f32(1, 4))
    with pytest.raises(ValueError, match="dh_final must have dtype float32.*got float64"):
        layer32.backward(f32(2, 5, 4), np.zeros((2, 4)))


def test_cell_bad_input():
    cell = GRU(*init_gru_params(3, 4))
    with pytest.raises(ValueError, match=r"x must have shape \(any, 3\), got \(2, 5\)"):
        cell.forward(f32(2, 5), f32(2, 4))
    with pytest.raises(ValueError, match=r"h_prev must have shape \(2, 4\), got \(3, 4\)"):
        cell.forward(f32(2, 3), f32(3, 4))
    cell.forward(f32(2, 3), f32(2, 4))
    with pytest.raises(ValueError, match=r"dh_next must have shape \(2, 4\), got \(2, 5\)"):
        cell.backward(f32(2, 5))


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
        layer32.forward(f32(2, 5, 3), lengths=lengths)
