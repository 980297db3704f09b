"""GRU / TimeGRU (PyTorch formulation).

No parity test against the textbook: its GRU applies the reset gate *before* the recurrent
multiply, ``tanh(x Wx + (r * h) Wh + b)``, with no separate recurrent bias, orders its gates
z, r, h and lets z pick the candidate (``h' = (1 - z) h + z h~``). That is a different model from
the PyTorch / cuDNN one built here, so the two cannot agree for the same weights; parity is
checked against torch.nn.GRU instead.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nprnn.layers.gru import GRU, TimeGRU, init_gru_params
from tests.layers import _shared as shared


def make_params(rng, D, H, dtype=np.float64):
    return [
        rng.standard_normal((D, 3 * H)).astype(dtype) * 0.5,
        rng.standard_normal((H, 3 * H)).astype(dtype) * 0.5,
        rng.standard_normal(3 * H).astype(dtype) * 0.5,
        rng.standard_normal(H).astype(dtype) * 0.5,
    ]


# The checks TimeRNN, TimeLSTM and TimeGRU share are written once, in _shared.py; the tests
# below run them for this layer.
LAYER = shared.Recurrent(TimeGRU, GRU, make_params, init_gru_params, ("Wx", "Wh", "b", "bhn"))


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
    shared.check_cell_gradients(LAYER, rng)


def test_cell_sigmoid_does_not_overflow():
    H = 2
    Wx, Wh, b, bhn = np.zeros((1, 3 * H)), np.zeros((H, 3 * H)), np.full(3 * H, -1000.0), np.zeros(H)
    with np.errstate(all="raise"):
        h = GRU(Wx, Wh, b, bhn).forward(np.zeros((1, 1)), np.ones((1, H)))
    np.testing.assert_array_equal(h, np.tanh(-1000.0))  # z = 0: the candidate replaces the state


# ---------------------------------------------------------------- time layer: gradients


def test_time_gru_gradients(rng):
    shared.check_time_gradients(LAYER, rng, N=3, T=5, D=4, H=3)


def test_time_gru_gradients_variable_lengths(rng):
    shared.check_time_gradients(LAYER, rng, N=4, T=5, D=3, H=3, lengths=[5, 2, 1, 3])


def test_time_gru_stateful_gradients_across_calls(rng):
    shared.check_stateful_gradients_across_calls(LAYER, rng)


# ---------------------------------------------------------------- time layer: states


def test_non_stateful_starts_from_zero(rng):
    shared.check_non_stateful_starts_from_zero(LAYER, rng, atol=1e-15)


def test_stateful_reset_state_and_h0_override(rng):
    layer, params, xs = shared.check_stateful_reset_state(LAYER, rng)
    h0 = rng.standard_normal((2, 4))  # the layer carries a state again: a given h0 overrides it
    expected, _ = shared.reference_forward(LAYER, params, xs, [h0])
    np.testing.assert_allclose(layer.forward(xs, h0), expected, rtol=1e-12, atol=1e-15)


def test_variable_lengths_equal_running_each_sequence_alone(rng):
    shared.check_variable_lengths_equal_running_each_sequence_alone(LAYER, rng, np.array([4, 1, 3]))


# ---------------------------------------------------------------- protocol and dtypes


def test_params_are_the_arrays_passed_and_grads_keep_identity(rng):
    layer, params, xs = shared.check_params_are_the_arrays_passed_and_grads_keep_identity(LAYER, rng)
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
    shared.check_backward_is_repeatable(LAYER, rng)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_preserved(rng, dtype):
    shared.check_dtype_preserved(LAYER, rng, dtype)


def test_init_is_seeded_and_float32_by_default():
    shared.check_init_is_seeded_and_float32_by_default(LAYER, [(3, 12), (4, 12), (12,), (4,)])


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
    shared.check_matches_step_by_step_reference(LAYER, rng, N, T, D, H, stateful, lengths, final_grad)


# ---------------------------------------------------------------- PyTorch parity


def torch_gru_from(Wx, Wh, b, bhn, rng):
    """torch.nn.GRU with our weights: same gate order r, z, n; the r and z biases may be split
    between torch's two biases in any way, the n biases may not (bhn sits inside r * (...))."""
    H = Wh.shape[0]
    b_ih_rz = rng.standard_normal(2 * H)
    b_ih, b_hh = np.concatenate([b_ih_rz, b[2 * H :]]), np.concatenate([b[: 2 * H] - b_ih_rz, bhn])
    return shared.torch_layer(shared.import_torch().nn.GRU, Wx.T, Wh.T, b_ih, b_hh)


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
    gru = torch_gru_from(Wx, Wh, b, bhn, rng)
    shared.check_parity_with_torch(layer, gru, xs, [h0], R, [R_final], lengths)

    tol = dict(rtol=1e-10, atol=1e-10)
    dWx, dWh, db, dbhn = layer.grads
    db_ih, db_hh = gru.bias_ih_l0.grad.numpy(), gru.bias_hh_l0.grad.numpy()
    np.testing.assert_allclose(dWx, gru.weight_ih_l0.grad.numpy().T, **tol)
    np.testing.assert_allclose(dWh, gru.weight_hh_l0.grad.numpy().T, **tol)
    np.testing.assert_allclose(db, db_ih, **tol)
    np.testing.assert_allclose(db[: 2 * H], db_hh[: 2 * H], **tol)
    np.testing.assert_allclose(dbhn, db_hh[2 * H :], **tol)


# ---------------------------------------------------------------- bad input
# (what all three recurrent layers refuse alike is in test_recurrent.py)


@pytest.fixture
def layer32():
    return TimeGRU(*init_gru_params(3, 4, seed=0))


def f32(*shape):
    return np.zeros(shape, np.float32)


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
