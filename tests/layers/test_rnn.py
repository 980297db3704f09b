import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nprnn import RNN, TimeRNN
from nprnn.layers.rnn import init_rnn_params
from tests.layers import _shared as shared


def make_params(rng, D, H, dtype=np.float64):
    return [
        rng.standard_normal((D, H)).astype(dtype) * 0.5,
        rng.standard_normal((H, H)).astype(dtype) * 0.5,
        rng.standard_normal(H).astype(dtype) * 0.1,
    ]


# The checks TimeRNN, TimeLSTM and TimeGRU share are written once, in _shared.py; the tests
# below run them for this layer.
LAYER = shared.Recurrent(TimeRNN, RNN, make_params, init_rnn_params, ("Wx", "Wh", "b"))


# ---------------------------------------------------------------- cell


def test_cell_forward_matches_formula(rng):
    Wx, Wh, b = make_params(rng, 3, 4)
    x, h = rng.standard_normal((2, 3)), rng.standard_normal((2, 4))
    np.testing.assert_allclose(RNN(Wx, Wh, b).forward(x, h), np.tanh(h @ Wh + x @ Wx + b), rtol=1e-14)


def test_cell_gradients(rng):
    shared.check_cell_gradients(LAYER, rng)


# ---------------------------------------------------------------- time layer: gradients


def test_time_rnn_gradients(rng):
    shared.check_time_gradients(LAYER, rng, N=3, T=5, D=4, H=6)


def test_time_rnn_gradients_variable_lengths(rng):
    shared.check_time_gradients(LAYER, rng, N=4, T=5, D=3, H=4, lengths=[5, 2, 1, 3])


def test_time_rnn_stateful_gradients_across_calls(rng):
    shared.check_stateful_gradients_across_calls(LAYER, rng, H=5)


# ---------------------------------------------------------------- time layer: states


def test_non_stateful_starts_from_zero(rng):
    shared.check_non_stateful_starts_from_zero(LAYER, rng)


def test_stateful_reset_state(rng):
    shared.check_stateful_reset_state(LAYER, rng)


def test_variable_lengths_equal_running_each_sequence_alone(rng):
    shared.check_variable_lengths_equal_running_each_sequence_alone(LAYER, rng, [4, 1, 3], final_grads=False)


# ---------------------------------------------------------------- protocol and dtypes


def test_params_are_the_arrays_passed_and_grads_keep_identity(rng):
    layer, params, xs = shared.check_params_are_the_arrays_passed_and_grads_keep_identity(LAYER, rng)
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
    shared.check_init_is_seeded_and_float32_by_default(LAYER, [(3, 4), (4, 4), (4,)])


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
    shared.check_matches_step_by_step_reference(LAYER, np.random.default_rng(seed), N, T, D, H, stateful)


# ---------------------------------------------------------------- bad input
# (what all three recurrent layers refuse alike is in test_recurrent.py)


@pytest.fixture
def layer32():
    return TimeRNN(*init_rnn_params(3, 4, seed=0))


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
