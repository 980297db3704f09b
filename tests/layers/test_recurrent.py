"""What TimeRNN, TimeLSTM and TimeGRU (and their cells) share in nprnn/layers/_recurrent.py: the
bad input they refuse alike (each test runs for the three of them, ids rnn, lstm, gru) and the
overflow-free sigmoid. The checks that differ between the layers (their weights, the LSTM's c) are
in test_rnn.py, test_lstm.py and test_gru.py; the checks of their numbers in _shared.py."""

import warnings
from typing import NamedTuple

import numpy as np
import pytest

from nprnn.layers._recurrent import sigmoid, sigmoid_inplace
from nprnn.layers.gru import GRU, TimeGRU, init_gru_params
from nprnn.layers.lstm import LSTM, TimeLSTM, init_lstm_params
from nprnn.layers.rnn import RNN, TimeRNN, init_rnn_params


class Kind(NamedTuple):
    time_layer: type
    cell: type
    init_params: object
    n_states: int  # h, or h and c


@pytest.fixture(
    params=[
        Kind(TimeRNN, RNN, init_rnn_params, 1),
        Kind(TimeLSTM, LSTM, init_lstm_params, 2),
        Kind(TimeGRU, GRU, init_gru_params, 1),
    ],
    ids=["rnn", "lstm", "gru"],
)
def kind(request):
    return request.param


@pytest.fixture
def layer32(kind):
    """D = 3, H = 4, float32."""
    return kind.time_layer(*kind.init_params(3, 4, seed=0))


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


def test_stateful_batch_size_change(kind):
    """A stateful layer carrying states for 2 rows (from a call, or set_state) refuses 3 rows until reset."""
    layer = kind.time_layer(*kind.init_params(3, 4, seed=0), stateful=True)
    layer.forward(f32(2, 5, 3))
    with pytest.raises(ValueError, match="batch size 2, got a batch of 3"):
        layer.forward(f32(3, 5, 3))
    layer.set_state(*(f32(2, 4) for _ in range(kind.n_states)))
    with pytest.raises(ValueError, match="batch size 2, got a batch of 3"):
        layer.forward(f32(3, 5, 3))
    layer.reset_state()
    assert layer.forward(f32(3, 5, 3)).shape == (3, 5, 4)


def test_backward_before_forward(kind):
    """The errors name the layer that raised them."""
    with pytest.raises(RuntimeError, match=f"^{kind.time_layer.__name__}: backward called before forward"):
        kind.time_layer(*kind.init_params(3, 4)).backward(f32(2, 5, 4))
    with pytest.raises(RuntimeError, match=f"^{kind.cell.__name__}: backward called before forward"):
        kind.cell(*kind.init_params(3, 4)).backward(*(f32(2, 4) for _ in range(kind.n_states)))


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


def test_sigmoid_is_the_logistic_function_and_never_overflows():
    x = np.linspace(-30, 30, 601)
    np.testing.assert_allclose(sigmoid(x), 1 / (1 + np.exp(-x)), rtol=1e-12, atol=1e-15)
    a = x.copy()
    sigmoid_inplace(a)
    np.testing.assert_array_equal(a, sigmoid(x))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow in exp would warn
        big = sigmoid(np.array([-1e4, 1e4], np.float32))
    np.testing.assert_array_equal(big, [0, 1])


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_weight_gradients_in_one_product_or_apart_agree(kind, monkeypatch):
    """_shared_gradients: one product for narrow inputs, the products apart for wide ones; both give
    the float64 gradients of the other to rounding, and the ones the layer reports."""
    from nprnn.layers import _recurrent

    cls, init = {"rnn": (TimeRNN, init_rnn_params), "lstm": (TimeLSTM, init_lstm_params)}[kind]
    rng = np.random.default_rng(3)
    xs, dhs = rng.standard_normal((3, 4, 5)), rng.standard_normal((3, 4, 6))
    results = []
    for narrow in (0, 64):  # D = 5: apart, then in one product
        monkeypatch.setattr(_recurrent, "NARROW_INPUT", narrow)
        layer = cls(*init(5, 6, seed=1, dtype=np.float64))
        layer.forward(xs)
        dxs = layer.backward(dhs)
        results.append([dxs, *(g.copy() for g in layer.grads)])
    for apart, fused in zip(*results):
        assert np.abs(apart).max() > 0
        np.testing.assert_allclose(fused, apart, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_input_projection_leaves_the_bias_to_the_kernels(kind, dtype, each_backend):
    """On NumPy (xs @ Wx + b) * scale; with the kernels xs @ Wx alone, the step kernels adding b."""
    rng = np.random.default_rng(4)
    layer = kind.time_layer(*kind.init_params(5, 7, seed=0, dtype=dtype))
    Wx, b = layer.params[0], layer.params[2]
    b[...] = rng.standard_normal(b.shape)
    xs_tm = rng.standard_normal((30, 5)).astype(dtype)
    scale = rng.uniform(0.5, 2, b.shape).astype(dtype)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    product = xs_tm.astype(np.float64) @ Wx
    for s in (None, scale):
        expected = (product + b) * (1 if s is None else s) if each_backend == "numpy" else product
        np.testing.assert_allclose(layer._input_projection(xs_tm, s), expected, rtol=tol, atol=tol)
    out = np.empty((30, b.size), dtype)
    assert layer._input_projection(xs_tm, out=out) is out
    np.testing.assert_allclose(out, product + b if each_backend == "numpy" else product, rtol=tol, atol=tol)
