"""TimeLSTM's ``step_bias``: a per-row addition to every step's pre-activations (the projection of an
input that is the same at every step, as a peeky decoder's encoder state), and its gradient."""

import numpy as np
import pytest

from nprnn import accel
from nprnn.gradcheck import numerical_gradient, relative_error
from nprnn.layers.lstm import TimeLSTM


def layer_and_data(rng, N=3, T=4, D=2, H=3):
    layer = TimeLSTM(rng.standard_normal((D, 4 * H)), rng.standard_normal((H, 4 * H)), rng.standard_normal(4 * H))
    xs, dhs = rng.standard_normal((N, T, D)), rng.standard_normal((N, T, H))
    return layer, xs, dhs, rng.standard_normal((N, 4 * H))


@pytest.fixture(params=["numpy", "numba"])
def backend(request):
    previous = accel.backend()
    accel.use(request.param)
    yield request.param
    accel.use(previous)


def test_equals_a_constant_input_appended_to_every_step(backend):
    """step_bias = c @ Wc is the same as feeding c at every step through extra rows Wc of Wx."""
    rng = np.random.default_rng(0)
    layer, xs, dhs, _ = layer_and_data(rng)
    N, T, D = xs.shape
    c, Wc = rng.standard_normal((N, 5)), rng.standard_normal((5, 4 * layer.H))
    wide = TimeLSTM(np.vstack([Wc, layer.params[0]]), *layer.params[1:])
    lengths = [4, 2, 1]
    want_hs = wide.forward(np.concatenate([np.repeat(c[:, None], T, 1), xs], axis=2), lengths=lengths)
    want_dxs = wide.backward(dhs)
    hs = layer.forward(xs, lengths=lengths, step_bias=c @ Wc)
    dxs = layer.backward(dhs)
    np.testing.assert_allclose(hs, want_hs, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dxs, want_dxs[:, :, 5:], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.grads[0], wide.grads[0][5:], rtol=1e-12, atol=1e-12)
    for g, want in zip(layer.grads[1:], wide.grads[1:]):
        np.testing.assert_allclose(g, want, rtol=1e-12, atol=1e-12)
    # the constant input's gradients follow from dstep_bias
    np.testing.assert_allclose(c.T @ layer.dstep_bias, wide.grads[0][:5], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.dstep_bias @ Wc.T, want_dxs[:, :, :5].sum(axis=1), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("lengths", [None, [4, 2, 1]])
def test_gradient_is_central_differences(backend, lengths):
    rng = np.random.default_rng(1)
    layer, xs, dhs, step_bias = layer_and_data(rng)
    h0, c0 = rng.standard_normal((3, 3)), rng.standard_normal((3, 3))

    def loss():
        return float(np.sum(layer.forward(xs, h0, c0, lengths=lengths, step_bias=step_bias) * dhs))

    loss()
    layer.backward(dhs)
    assert layer.dstep_bias.shape == step_bias.shape
    assert relative_error(layer.dstep_bias, numerical_gradient(loss, step_bias)) < 1e-7


def test_without_step_bias_there_is_no_gradient_for_it():
    rng = np.random.default_rng(2)
    layer, xs, dhs, step_bias = layer_and_data(rng)
    layer.forward(xs, step_bias=step_bias)
    layer.backward(dhs)
    assert layer.dstep_bias is not None
    layer.forward(xs)
    layer.backward(dhs)
    assert layer.dstep_bias is None


def test_bad_step_bias_is_named():
    rng = np.random.default_rng(3)
    layer, xs, _, step_bias = layer_and_data(rng)
    with pytest.raises(ValueError, match=r"TimeLSTM: step_bias must have shape \(3, 12\), got \(3, 11\)"):
        layer.forward(xs, step_bias=step_bias[:, :11])
    with pytest.raises(ValueError, match="step_bias must have dtype float64"):
        layer.forward(xs, step_bias=step_bias.astype(np.float32))
