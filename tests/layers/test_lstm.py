import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nprnn.layers.lstm import LSTM, TimeLSTM, init_lstm_params
from tests.layers import _shared as shared


def make_params(rng, D, H, dtype=np.float64):
    return [
        rng.standard_normal((D, 4 * H)).astype(dtype) * 0.5,
        rng.standard_normal((H, 4 * H)).astype(dtype) * 0.5,
        rng.standard_normal(4 * H).astype(dtype) * 0.5,
    ]


# The checks TimeRNN, TimeLSTM and TimeGRU share are written once, in _shared.py; the tests
# below run them for this layer.
LAYER = shared.Recurrent(TimeLSTM, LSTM, make_params, init_lstm_params, ("Wx", "Wh", "b"), states=("h", "c"))


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
    shared.check_cell_gradients(LAYER, rng)


def test_cell_sigmoid_does_not_overflow():
    H = 2
    Wx, Wh, b = np.zeros((1, 4 * H)), np.zeros((H, 4 * H)), np.full(4 * H, -1000.0)
    with np.errstate(all="raise"):
        h, c = LSTM(Wx, Wh, b).forward(np.zeros((1, 1)), np.zeros((1, H)), np.ones((1, H)))
    assert np.all(c == 0) and np.all(h == 0)  # forget and input gates fully closed


# ---------------------------------------------------------------- time layer: gradients


def test_time_lstm_gradients(rng):
    shared.check_time_gradients(LAYER, rng, N=3, T=5, D=4, H=3)


def test_time_lstm_gradients_variable_lengths(rng):
    shared.check_time_gradients(LAYER, rng, N=4, T=5, D=3, H=3, lengths=[5, 2, 1, 3])


def test_time_lstm_stateful_gradients_across_calls(rng):
    shared.check_stateful_gradients_across_calls(LAYER, rng)


# ---------------------------------------------------------------- time layer: states


def test_non_stateful_starts_from_zero(rng):
    shared.check_non_stateful_starts_from_zero(LAYER, rng, atol=1e-15)


def test_stateful_reset_state(rng):
    shared.check_stateful_reset_state(LAYER, rng)


def test_set_state_without_c_carries_zero_cell(rng):
    params = make_params(rng, 3, 4)
    xs, h = rng.standard_normal((2, 3, 3)), rng.standard_normal((2, 4))
    layer = TimeLSTM(*params, stateful=True)
    layer.forward(xs)  # leaves a nonzero .c behind
    layer.set_state(h)
    expected, _, _ = shared.reference_forward(LAYER, params, xs, [h, np.zeros((2, 4))])
    np.testing.assert_allclose(layer.forward(xs), expected, rtol=1e-12, atol=1e-15)


def test_given_initial_states_override_carried_ones(rng):
    params = make_params(rng, 3, 4)
    xs, h0, c0 = rng.standard_normal((2, 3, 3)), rng.standard_normal((2, 4)), rng.standard_normal((2, 4))
    layer = TimeLSTM(*params, stateful=True)
    layer.forward(xs)
    carried_c = layer.c.copy()
    # h0 alone: c comes from the carried state; both: neither does
    expected, _, _ = shared.reference_forward(LAYER, params, xs, [h0, carried_c])
    np.testing.assert_allclose(layer.forward(xs, h0), expected, rtol=1e-12, atol=1e-15)
    expected, _, _ = shared.reference_forward(LAYER, params, xs, [h0, c0])
    np.testing.assert_allclose(layer.forward(xs, h0, c0), expected, rtol=1e-12, atol=1e-15)


def test_variable_lengths_equal_running_each_sequence_alone(rng):
    shared.check_variable_lengths_equal_running_each_sequence_alone(LAYER, rng, np.array([4, 1, 3]))


# ---------------------------------------------------------------- protocol and dtypes


def test_params_are_the_arrays_passed_and_grads_keep_identity(rng):
    layer, params, xs = shared.check_params_are_the_arrays_passed_and_grads_keep_identity(LAYER, rng)
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
    shared.check_backward_is_repeatable(LAYER, rng)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_preserved(rng, dtype):
    shared.check_dtype_preserved(LAYER, rng, dtype)


def test_init_is_seeded_and_float32_by_default():
    shared.check_init_is_seeded_and_float32_by_default(LAYER, [(3, 16), (4, 16), (16,)])


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
    shared.check_matches_step_by_step_reference(LAYER, rng, N, T, D, H, stateful, lengths, final_grads)


# ---------------------------------------------------------------- PyTorch parity

# Our blocks are f, g, i, o; torch's are i, f, g, o: torch block k is our block TORCH_ORDER[k].
TORCH_ORDER = (2, 0, 1, 3)


def torch_columns(H):
    return np.concatenate([np.arange(k * H, (k + 1) * H) for k in TORCH_ORDER])


def torch_lstm_from(Wx, Wh, b, rng):
    cols = torch_columns(Wh.shape[0])
    b_ih = rng.standard_normal(b.shape)  # any split of b into the two torch biases is equivalent
    return shared.torch_layer(shared.import_torch().nn.LSTM, Wx[:, cols].T, Wh[:, cols].T, b_ih, b[cols] - b_ih)


def grads_from_torch(lstm, H):
    """Torch's parameter gradients in our layout, [dWx, dWh, db] (db once per torch bias)."""
    cols = torch_columns(H)

    def ours(torch_grad):  # (4H, ...) in torch order -> (..., 4H) in ours
        out = np.empty_like(torch_grad.T)
        out[..., cols] = torch_grad.T
        return out

    g = {name: p.grad.numpy() for name, p in lstm.named_parameters()}
    return [ours(g["weight_ih_l0"]), ours(g["weight_hh_l0"]), ours(g["bias_ih_l0"]), ours(g["bias_hh_l0"])]


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
    lstm = torch_lstm_from(Wx, Wh, b, rng)
    shared.check_parity_with_torch(layer, lstm, xs, [h0, c0], R, [Rh, Rc], lengths)

    tol = dict(rtol=1e-10, atol=1e-10)
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
# (what all three recurrent layers refuse alike is in test_recurrent.py)


@pytest.fixture
def layer32():
    return TimeLSTM(*init_lstm_params(3, 4, seed=0))


def f32(*shape):
    return np.zeros(shape, np.float32)


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
