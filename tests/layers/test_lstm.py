import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nprnn.gradcheck import numerical_gradient, relative_error
from nprnn.layers.lstm import LSTM, TimeLSTM, init_lstm_params

torch.set_num_threads(1)


def make_params(rng, D, H, dtype=np.float64):
    return [
        rng.standard_normal((D, 4 * H)).astype(dtype) * 0.5,
        rng.standard_normal((H, 4 * H)).astype(dtype) * 0.5,
        rng.standard_normal(4 * H).astype(dtype) * 0.5,
    ]


def reference_time_lstm(params, xs, h0, c0, lengths=None):
    """Slow step-by-step reference built on the LSTM cell (forward only)."""
    N, T, _ = xs.shape
    cell = LSTM(*params)
    h, c, hs = h0, c0, np.zeros((N, T, params[1].shape[0]), dtype=xs.dtype)
    for t in range(T):
        h_new, c_new = cell.forward(xs[:, t], h, c)
        alive = (np.ones(N, bool) if lengths is None else t < np.asarray(lengths))[:, None]
        h, c = np.where(alive, h_new, h), np.where(alive, c_new, c)
        hs[:, t] = np.where(alive, h_new, 0)
    return hs, h, c


def plain_sigmoid(a):
    return 1 / (1 + np.exp(-a))


# ---------------------------------------------------------------- cell


def test_cell_forward_matches_formula_with_gate_layout_f_g_i_o(rng):
    H = 4
    Wx, Wh, b = make_params(rng, 3, H)
    x, h, c = rng.standard_normal((2, 3)), rng.standard_normal((2, H)), rng.standard_normal((2, H))
    a = x @ Wx + h @ Wh + b
    f, g, i, o = (
        plain_sigmoid(a[:, :H]),
        np.tanh(a[:, H : 2 * H]),
        plain_sigmoid(a[:, 2 * H : 3 * H]),
        plain_sigmoid(a[:, 3 * H :]),
    )
    c_next = f * c + i * g
    h_out, c_out = LSTM(Wx, Wh, b).forward(x, h, c)
    np.testing.assert_allclose(c_out, c_next, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(h_out, o * np.tanh(c_next), rtol=1e-13, atol=1e-15)


def test_cell_gradients(rng):
    params = make_params(rng, 3, 4)
    cell = LSTM(*params)
    x, h_prev, c_prev = rng.standard_normal((2, 3)), rng.standard_normal((2, 4)), rng.standard_normal((2, 4))
    Rh, Rc = rng.standard_normal((2, 4)), rng.standard_normal((2, 4))

    def loss():
        h, c = cell.forward(x, h_prev, c_prev)
        return float(np.sum(h * Rh) + np.sum(c * Rc))

    loss()
    dx, dh_prev, dc_prev = cell.backward(Rh, Rc)
    analytic = [g.copy() for g in cell.grads]
    for name, p, g in zip(["Wx", "Wh", "b"], params, analytic):
        assert relative_error(g, numerical_gradient(loss, p)) < 1e-8, name
    assert relative_error(dx, numerical_gradient(loss, x)) < 1e-8
    assert relative_error(dh_prev, numerical_gradient(loss, h_prev)) < 1e-8
    assert relative_error(dc_prev, numerical_gradient(loss, c_prev)) < 1e-8


def test_cell_sigmoid_does_not_overflow():
    H = 2
    Wx, Wh, b = np.zeros((1, 4 * H)), np.zeros((H, 4 * H)), np.full(4 * H, -1000.0)
    with np.errstate(all="raise"):
        h, c = LSTM(Wx, Wh, b).forward(np.zeros((1, 1)), np.zeros((1, H)), np.ones((1, H)))
    assert np.all(c == 0) and np.all(h == 0)  # forget and input gates fully closed


# ---------------------------------------------------------------- time layer: gradients


def check_time_lstm_gradients(rng, N, T, D, H, lengths=None):
    params = make_params(rng, D, H)
    layer = TimeLSTM(*params)
    xs, h0, c0 = rng.standard_normal((N, T, D)), rng.standard_normal((N, H)), rng.standard_normal((N, H))
    R, Rh, Rc = rng.standard_normal((N, T, H)), rng.standard_normal((N, H)), rng.standard_normal((N, H))

    def loss():
        hs = layer.forward(xs, h0, c0, lengths=lengths)
        return float(np.sum(hs * R) + np.sum(layer.h * Rh) + np.sum(layer.c * Rc))

    loss()
    dxs = layer.backward(R, dh_final=Rh, dc_final=Rc)
    analytic = [g.copy() for g in layer.grads]
    dh0, dc0 = layer.dh.copy(), layer.dc.copy()
    for name, p, g in zip(["Wx", "Wh", "b"], params, analytic):
        assert relative_error(g, numerical_gradient(loss, p)) < 1e-7, name
    assert relative_error(dxs, numerical_gradient(loss, xs)) < 1e-7
    assert relative_error(dh0, numerical_gradient(loss, h0)) < 1e-7
    assert relative_error(dc0, numerical_gradient(loss, c0)) < 1e-7
    return dxs


def test_time_lstm_gradients(rng):
    check_time_lstm_gradients(rng, N=3, T=5, D=4, H=3)


def test_time_lstm_gradients_variable_lengths(rng):
    dxs = check_time_lstm_gradients(rng, N=4, T=5, D=3, H=3, lengths=[5, 2, 1, 3])
    # padded positions get exactly zero gradient
    assert np.all(dxs[1, 2:] == 0) and np.all(dxs[2, 1:] == 0) and np.all(dxs[3, 3:] == 0)


def test_time_lstm_stateful_gradients_across_calls(rng):
    """Two consecutive stateful calls: the second starts from the first's final states,
    gradients are truncated at the boundary, and .dh / .dc are the gradients w.r.t. the carried states."""
    N, T, D, H = 2, 4, 3, 3
    params = make_params(rng, D, H)
    layer = TimeLSTM(*params, stateful=True)
    xs1, xs2 = rng.standard_normal((N, T, D)), rng.standard_normal((N, T, D))
    R, Rc = rng.standard_normal((N, T, H)), rng.standard_normal((N, H))

    layer.forward(xs1)
    h_carried, c_carried = layer.h.copy(), layer.c.copy()
    assert np.any(c_carried != 0)
    hs2 = layer.forward(xs2)
    expected, _, c_last = reference_time_lstm(params, xs2, h_carried, c_carried)
    np.testing.assert_allclose(hs2, expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(layer.c, c_last, rtol=1e-12, atol=1e-14)
    layer.backward(R, dc_final=Rc)
    analytic = [g.copy() for g in layer.grads] + [layer.dh.copy(), layer.dc.copy()]

    h_state, c_state = h_carried.copy(), c_carried.copy()

    def loss():  # the second segment alone, from the carried states (truncated BPTT)
        layer.set_state(h_state, c_state)
        hs = layer.forward(xs2)
        return float(np.sum(hs * R) + np.sum(layer.c * Rc))

    for g, p in zip(analytic, params + [h_state, c_state]):
        assert relative_error(g, numerical_gradient(loss, p)) < 1e-7


# ---------------------------------------------------------------- time layer: states


def test_non_stateful_starts_from_zero(rng):
    params = make_params(rng, 3, 4)
    layer = TimeLSTM(*params)
    xs = rng.standard_normal((2, 3, 3))
    first = layer.forward(xs)
    np.testing.assert_array_equal(layer.forward(xs), first)
    expected, _, _ = reference_time_lstm(params, xs, np.zeros((2, 4)), np.zeros((2, 4)))
    np.testing.assert_allclose(first, expected, rtol=1e-12, atol=1e-15)


def test_stateful_reset_state(rng):
    params = make_params(rng, 3, 4)
    layer = TimeLSTM(*params, stateful=True)
    xs = rng.standard_normal((2, 3, 3))
    first = layer.forward(xs)
    assert not np.allclose(layer.forward(xs), first)  # carried states change the output
    layer.reset_state()
    assert layer.h is None and layer.c is None
    np.testing.assert_array_equal(layer.forward(xs), first)


def test_set_state_without_c_carries_zero_cell(rng):
    params = make_params(rng, 3, 4)
    xs, h = rng.standard_normal((2, 3, 3)), rng.standard_normal((2, 4))
    layer = TimeLSTM(*params, stateful=True)
    layer.forward(xs)  # leaves a nonzero .c behind
    layer.set_state(h)
    expected, _, _ = reference_time_lstm(params, xs, h, np.zeros((2, 4)))
    np.testing.assert_allclose(layer.forward(xs), expected, rtol=1e-12, atol=1e-15)


def test_given_initial_states_override_carried_ones(rng):
    params = make_params(rng, 3, 4)
    xs, h0, c0 = rng.standard_normal((2, 3, 3)), rng.standard_normal((2, 4)), rng.standard_normal((2, 4))
    layer = TimeLSTM(*params, stateful=True)
    layer.forward(xs)
    carried_c = layer.c.copy()
    # h0 alone: c comes from the carried state; both: neither does
    expected, _, _ = reference_time_lstm(params, xs, h0, carried_c)
    np.testing.assert_allclose(layer.forward(xs, h0), expected, rtol=1e-12, atol=1e-15)
    expected, _, _ = reference_time_lstm(params, xs, h0, c0)
    np.testing.assert_allclose(layer.forward(xs, h0, c0), expected, rtol=1e-12, atol=1e-15)


def test_variable_lengths_equal_running_each_sequence_alone(rng):
    params = make_params(rng, 3, 4)
    layer = TimeLSTM(*params)
    lengths = [4, 1, 3]
    xs, h0, c0 = rng.standard_normal((3, 4, 3)), rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    R, Rh, Rc = rng.standard_normal((3, 4, 4)), rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    hs = layer.forward(xs, h0, c0, lengths=np.array(lengths))
    dxs = layer.backward(R, Rh, Rc)
    total = [g.copy() for g in layer.grads]
    sums = [np.zeros_like(p) for p in params]
    for n, L in enumerate(lengths):
        alone = TimeLSTM(*params)
        hs_n = alone.forward(xs[n : n + 1, :L], h0[n : n + 1], c0[n : n + 1])
        np.testing.assert_allclose(hs[n, :L], hs_n[0], rtol=1e-12)
        assert np.all(hs[n, L:] == 0)
        np.testing.assert_allclose(layer.h[n], alone.h[0], rtol=1e-12)
        np.testing.assert_allclose(layer.c[n], alone.c[0], rtol=1e-12)
        dxs_n = alone.backward(R[n : n + 1, :L], Rh[n : n + 1], Rc[n : n + 1])
        np.testing.assert_allclose(dxs[n, :L], dxs_n[0], rtol=1e-10, atol=1e-12)
        assert np.all(dxs[n, L:] == 0)
        np.testing.assert_allclose(layer.dh[n], alone.dh[0], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(layer.dc[n], alone.dc[0], rtol=1e-10, atol=1e-12)
        for s, g in zip(sums, alone.grads):
            s += g
    for s, g in zip(sums, total):
        np.testing.assert_allclose(g, s, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- protocol and dtypes


def test_params_are_the_arrays_passed_and_grads_keep_identity(rng):
    params = make_params(rng, 3, 4, np.float32)
    layer = TimeLSTM(*params)
    assert all(a is b for a, b in zip(layer.params, params))
    grads = list(layer.grads)
    assert all(g.shape == p.shape and g.dtype == p.dtype and not g.any() for g, p in zip(grads, params))
    xs = rng.standard_normal((2, 5, 3)).astype(np.float32)
    for _ in range(2):
        layer.backward(np.ones_like(layer.forward(xs)))
    assert all(a is b for a, b in zip(layer.grads, grads))
    assert all(g.any() for g in grads)
    # an optimizer updating params in place is seen by the layer: with zero weights and
    # bias 1 on every gate, c_t = sigmoid(1) * c_{t-1} + sigmoid(1) * tanh(1) from c_0 = 0
    params[0] *= 0
    params[1] *= 0
    params[2][...] = 1
    s, g = 1 / (1 + np.exp(-1.0)), np.tanh(1.0)
    c, expected = 0.0, []
    for _ in range(5):
        c = s * c + s * g
        expected.append(s * np.tanh(c))
    hs = layer.forward(xs)
    np.testing.assert_allclose(hs, np.broadcast_to(np.array(expected)[None, :, None], hs.shape), rtol=1e-6)


def test_backward_is_repeatable(rng):
    """backward leaves the forward cache intact, so calling it again gives the same gradients."""
    layer = TimeLSTM(*make_params(rng, 3, 4))
    layer.forward(rng.standard_normal((2, 5, 3)), lengths=[5, 2])
    R = rng.standard_normal((2, 5, 4))
    Rh, Rc = rng.standard_normal((2, 4)), rng.standard_normal((2, 4))
    first = [layer.backward(R, Rh, Rc), *(g.copy() for g in layer.grads), *[layer.dh.copy(), layer.dc.copy()]]
    second = [layer.backward(R, Rh, Rc), *layer.grads, *[layer.dh, layer.dc]]
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_preserved(rng, dtype):
    layer = TimeLSTM(*init_lstm_params(3, 4, seed=0, dtype=dtype))
    xs = rng.standard_normal((2, 5, 3)).astype(dtype)
    hs = layer.forward(xs, lengths=[5, 3])
    dxs = layer.backward(np.ones_like(hs), np.ones((2, 4), dtype), np.ones((2, 4), dtype))
    arrays = [hs, dxs, layer.h, layer.c, layer.dh, layer.dc, *layer.grads]
    assert all(a.dtype == dtype for a in arrays)
    cell = LSTM(*init_lstm_params(3, 4, seed=0, dtype=dtype))
    h, c = cell.forward(xs[:, 0], layer.h, layer.c)
    assert all(a.dtype == dtype for a in [h, c, *cell.backward(h, c), *cell.grads])


def test_init_is_seeded_and_float32_by_default():
    a, b = init_lstm_params(3, 4, seed=7), init_lstm_params(3, 4, seed=7)
    assert [x.shape for x in a] == [(3, 16), (4, 16), (16,)]
    assert all(x.dtype == np.float32 for x in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], init_lstm_params(3, 4, seed=8)[0])


@settings(max_examples=30, deadline=None)
@given(
    N=st.integers(1, 4),
    T=st.integers(1, 5),
    D=st.integers(1, 4),
    H=st.integers(1, 4),
    stateful=st.booleans(),
    final_grads=st.booleans(),
    data=st.data(),
)
def test_matches_step_by_step_reference(N, T, D, H, stateful, final_grads, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31), label="seed"))
    lengths = data.draw(st.none() | st.lists(st.integers(1, T), min_size=N, max_size=N), label="lengths")
    params = make_params(rng, D, H)
    xs = rng.standard_normal((N, T, D))
    R = rng.standard_normal((N, T, H))
    Rh, Rc = (rng.standard_normal((N, H)), rng.standard_normal((N, H))) if final_grads else (None, None)
    layer = TimeLSTM(*params, stateful=stateful)
    h0, c0 = np.zeros((N, H)), np.zeros((N, H))
    if stateful:
        layer.forward(rng.standard_normal((N, T, D)))
        h0, c0 = layer.h.copy(), layer.c.copy()
    hs = layer.forward(xs, lengths=lengths)
    assert hs.shape == (N, T, H)
    expected, h_last, c_last = reference_time_lstm(params, xs, h0, c0, lengths)
    np.testing.assert_allclose(hs, expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(layer.h, h_last, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(layer.c, c_last, rtol=1e-12, atol=1e-14)

    dxs = layer.backward(R, Rh, Rc)
    assert dxs.shape == (N, T, D) and layer.dh.shape == (N, H) and layer.dc.shape == (N, H)
    # backward through the cell, step by step; a finished row passes its state gradients through
    alive = np.ones((T, N), bool) if lengths is None else np.arange(T)[:, None] < np.asarray(lengths)[None, :]
    cells, h, c = [], h0, c0
    for t in range(T):
        cells.append(LSTM(*params))
        h_new, c_new = cells[-1].forward(xs[:, t], h, c)
        h, c = np.where(alive[t][:, None], h_new, h), np.where(alive[t][:, None], c_new, c)
    dh = np.zeros((N, H)) if Rh is None else Rh.copy()
    dc = np.zeros((N, H)) if Rc is None else Rc.copy()
    grads = [np.zeros_like(p) for p in params]
    ref_dxs = np.zeros_like(xs)
    for t in reversed(range(T)):
        keep = alive[t][:, None]
        dx, dh_prev, dc_prev = cells[t].backward(np.where(keep, R[:, t] + dh, 0), np.where(keep, dc, 0))
        ref_dxs[:, t] = dx
        dh, dc = np.where(keep, dh_prev, dh), np.where(keep, dc_prev, dc)
        for acc, g in zip(grads, cells[t].grads):
            acc += g
    np.testing.assert_allclose(dxs, ref_dxs, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.dh, dh, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.dc, dc, rtol=1e-10, atol=1e-12)
    for g, ref in zip(layer.grads, grads):
        np.testing.assert_allclose(g, ref, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- PyTorch parity

# Our blocks are f, g, i, o; torch's are i, f, g, o: torch block k is our block TORCH_ORDER[k].
TORCH_ORDER = (2, 0, 1, 3)


def torch_columns(H):
    return np.concatenate([np.arange(k * H, (k + 1) * H) for k in TORCH_ORDER])


def torch_lstm_from(Wx, Wh, b, rng):
    D, H = Wx.shape[0], Wh.shape[0]
    cols = torch_columns(H)
    lstm = torch.nn.LSTM(D, H, batch_first=True, dtype=torch.float64)
    b_ih = rng.standard_normal(4 * H)  # any split of b into the two torch biases is equivalent
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(torch.from_numpy(Wx[:, cols].T))
        lstm.weight_hh_l0.copy_(torch.from_numpy(Wh[:, cols].T))
        lstm.bias_ih_l0.copy_(torch.from_numpy(b_ih))
        lstm.bias_hh_l0.copy_(torch.from_numpy(b[cols] - b_ih))
    return lstm


def grads_from_torch(lstm, H):
    """Torch's parameter gradients in our layout, [dWx, dWh, db] (db once per torch bias)."""
    cols = torch_columns(H)

    def ours(torch_grad):  # (4H, ...) in torch order -> (..., 4H) in ours
        out = np.empty_like(torch_grad.T)
        out[..., cols] = torch_grad.T
        return out

    g = {name: p.grad.numpy() for name, p in lstm.named_parameters()}
    return [ours(g["weight_ih_l0"]), ours(g["weight_hh_l0"]), ours(g["bias_ih_l0"]), ours(g["bias_hh_l0"])]


def run_torch(lstm, xs, h0, c0, R, Rh, Rc, lengths=None):
    N, T, _ = xs.shape
    xs_t = torch.tensor(xs, requires_grad=True)
    h0_t, c0_t = torch.tensor(h0[None], requires_grad=True), torch.tensor(c0[None], requires_grad=True)
    if lengths is None:
        out, (h_n, c_n) = lstm(xs_t, (h0_t, c0_t))
    else:
        packed = torch.nn.utils.rnn.pack_padded_sequence(xs_t, torch.from_numpy(lengths), True, enforce_sorted=False)
        out_packed, (h_n, c_n) = lstm(packed, (h0_t, c0_t))
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out_packed, batch_first=True, total_length=T)
    loss = (
        (out * torch.from_numpy(R)).sum()
        + (h_n[0] * torch.from_numpy(Rh)).sum()
        + (c_n[0] * torch.from_numpy(Rc)).sum()
    )
    loss.backward()
    states = [t.detach().numpy() for t in (out, h_n[0], c_n[0])]
    return states + [xs_t.grad.numpy(), h0_t.grad[0].numpy(), c0_t.grad[0].numpy()]


@pytest.mark.parametrize(
    "N, T, D, H, lengths",
    [(3, 6, 4, 5, None), (1, 1, 2, 3, None), (4, 9, 7, 2, None), (4, 6, 3, 5, [6, 2, 4, 1]), (3, 5, 2, 4, [1, 5, 5])],
)
def test_parity_with_torch(rng, N, T, D, H, lengths):
    Wx, Wh, b = make_params(rng, D, H)
    xs, h0, c0 = rng.standard_normal((N, T, D)), rng.standard_normal((N, H)), rng.standard_normal((N, H))
    R, Rh, Rc = rng.standard_normal((N, T, H)), rng.standard_normal((N, H)), rng.standard_normal((N, H))
    lengths = None if lengths is None else np.array(lengths)

    layer = TimeLSTM(Wx, Wh, b)
    hs = layer.forward(xs, h0, c0, lengths=lengths)
    dxs = layer.backward(R, Rh, Rc)

    lstm = torch_lstm_from(Wx, Wh, b, rng)
    out, h_n, c_n, dxs_t, dh0_t, dc0_t = run_torch(lstm, xs, h0, c0, R, Rh, Rc, lengths)

    tol = dict(rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(hs, out, **tol)
    np.testing.assert_allclose(layer.h, h_n, **tol)
    np.testing.assert_allclose(layer.c, c_n, **tol)
    np.testing.assert_allclose(dxs, dxs_t, **tol)
    np.testing.assert_allclose(layer.dh, dh0_t, **tol)
    np.testing.assert_allclose(layer.dc, dc0_t, **tol)
    dWx, dWh, db_ih, db_hh = grads_from_torch(lstm, H)
    np.testing.assert_allclose(layer.grads[0], dWx, **tol)
    np.testing.assert_allclose(layer.grads[1], dWh, **tol)
    np.testing.assert_allclose(layer.grads[2], db_ih, **tol)
    np.testing.assert_allclose(layer.grads[2], db_hh, **tol)


# ---------------------------------------------------------------- textbook parity


def test_parity_with_textbook(rng, dlfs2):
    """The textbook computes in float32 (it allocates hs, h and c with dtype 'f'), so compare in float32."""
    from common.time_layers import TimeLSTM as BookTimeLSTM

    N, T, D, H = 5, 7, 4, 6
    params = make_params(rng, D, H, np.float32)
    xs = rng.standard_normal((N, T, D)).astype(np.float32)
    dhs = rng.standard_normal((N, T, H)).astype(np.float32)

    ours, book = TimeLSTM(*params, stateful=True), BookTimeLSTM(*(p.copy() for p in params), stateful=True)
    for _ in range(2):  # the second call runs from the carried states
        np.testing.assert_allclose(ours.forward(xs), book.forward(xs), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ours.h, book.h, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ours.c, book.c, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ours.backward(dhs), book.backward(dhs), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(ours.dh, book.dh, rtol=1e-4, atol=1e-5)
        for g_ours, g_book in zip(ours.grads, book.grads):
            np.testing.assert_allclose(g_ours, g_book, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- bad input


@pytest.fixture
def layer32():
    return TimeLSTM(*init_lstm_params(3, 4, seed=0))


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
    with pytest.raises(ValueError, match="c0 must have dtype float32.*got float64"):
        layer32.forward(f32(2, 5, 3), f32(2, 4), np.zeros((2, 4)))


def test_mismatched_params_rejected():
    with pytest.raises(ValueError, match=r"Wx must have shape \(D, 4H\).*got \(3, 6\)"):
        TimeLSTM(f32(3, 6), f32(4, 6), f32(6))
    with pytest.raises(ValueError, match=r"Wh must have shape \(4, 16\), got \(4, 4\)"):
        TimeLSTM(f32(3, 16), f32(4, 4), f32(16))
    with pytest.raises(ValueError, match=r"b must have shape \(16,\), got \(4,\)"):
        TimeLSTM(f32(3, 16), f32(4, 16), f32(4))
    with pytest.raises(ValueError, match="float32 or float64, got int64"):
        LSTM(np.zeros((3, 16), np.int64), np.zeros((4, 16), np.int64), np.zeros(16, np.int64))
    with pytest.raises(ValueError, match="one dtype; b is float64, expected float32"):
        LSTM(f32(3, 16), f32(4, 16), np.zeros(16))
    with pytest.raises(ValueError, match="Wh must be a NumPy array, got list"):
        LSTM(f32(3, 16), [[0.0] * 16] * 4, f32(16))


def test_initial_state_shape_mismatch(layer32):
    with pytest.raises(ValueError, match=r"h0 must have shape \(2, 4\), got \(3, 4\)"):
        layer32.forward(f32(2, 5, 3), f32(3, 4))
    with pytest.raises(ValueError, match=r"c0 must have shape \(2, 4\), got \(2, 5\)"):
        layer32.forward(f32(2, 5, 3), c0=f32(2, 5))


def test_bad_set_state(layer32):
    with pytest.raises(ValueError, match=r"state h must have shape \(any, 4\), got \(2, 3\)"):
        layer32.set_state(f32(2, 3))
    with pytest.raises(ValueError, match=r"state c must have shape \(2, 4\), got \(3, 4\)"):
        layer32.set_state(f32(2, 4), f32(3, 4))


def test_stateful_batch_size_change():
    layer = TimeLSTM(*init_lstm_params(3, 4, seed=0), stateful=True)
    layer.forward(f32(2, 5, 3))
    with pytest.raises(ValueError, match="batch size 2, got a batch of 3"):
        layer.forward(f32(3, 5, 3))
    layer.set_state(f32(2, 4), f32(2, 4))
    with pytest.raises(ValueError, match="batch size 2, got a batch of 3"):
        layer.forward(f32(3, 5, 3))
    layer.reset_state()
    assert layer.forward(f32(3, 5, 3)).shape == (3, 5, 4)


def test_backward_before_forward():
    with pytest.raises(RuntimeError, match="backward called before forward"):
        TimeLSTM(*init_lstm_params(3, 4)).backward(f32(2, 5, 4))
    with pytest.raises(RuntimeError, match="backward called before forward"):
        LSTM(*init_lstm_params(3, 4)).backward(f32(2, 4), f32(2, 4))


def test_bad_backward_gradients(layer32):
    layer32.forward(f32(2, 5, 3))
    with pytest.raises(ValueError, match=r"dhs must have shape \(2, 5, 4\), got \(2, 4, 4\)"):
        layer32.backward(f32(2, 4, 4))
    with pytest.raises(ValueError, match=r"dh_final must have shape \(2, 4\), got \(1, 4\)"):
        layer32.backward(f32(2, 5, 4), dh_final=f32(1, 4))
    with pytest.raises(ValueError, match=r"dc_final must have shape \(2, 4\), got \(2, 3\)"):
        layer32.backward(f32(2, 5, 4), dc_final=f32(2, 3))
    with pytest.raises(ValueError, match="dc_final must have dtype float32.*got float64"):
        layer32.backward(f32(2, 5, 4), dc_final=np.zeros((2, 4)))


def test_cell_bad_input():
    cell = LSTM(*init_lstm_params(3, 4))
    with pytest.raises(ValueError, match=r"x must have shape \(any, 3\), got \(2, 5\)"):
        cell.forward(f32(2, 5), f32(2, 4), f32(2, 4))
    with pytest.raises(ValueError, match=r"h_prev must have shape \(2, 4\), got \(3, 4\)"):
        cell.forward(f32(2, 3), f32(3, 4), f32(2, 4))
    with pytest.raises(ValueError, match=r"c_prev must have shape \(2, 4\), got \(2, 3\)"):
        cell.forward(f32(2, 3), f32(2, 4), f32(2, 3))
    cell.forward(f32(2, 3), f32(2, 4), f32(2, 4))
    with pytest.raises(ValueError, match=r"dc_next must have shape \(2, 4\), got \(2, 5\)"):
        cell.backward(f32(2, 4), f32(2, 5))


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
