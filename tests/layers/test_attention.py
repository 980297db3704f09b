import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nprnn.gradcheck import numerical_gradient, relative_error
from nprnn.layers.attention import Attention, AttentionWeight, TimeAttention, WeightSum
from tests.layers._shared import import_torch


def check_gradients(loss, analytic, inputs, tol=1e-7):
    for name, g, x in zip(["first", "second"], analytic, inputs):
        assert g.shape == x.shape
        assert relative_error(g, numerical_gradient(loss, x)) < tol, name


# ---------------------------------------------------------------- one decoder step


def test_attention_weight_formula(rng):
    hs, h = rng.standard_normal((2, 5, 3)), rng.standard_normal((2, 3))
    a = AttentionWeight().forward(hs, h)
    for n in range(2):
        s = np.array([hs[n, t] @ h[n] for t in range(5)])
        np.testing.assert_allclose(a[n], np.exp(s) / np.exp(s).sum(), rtol=1e-13)
    np.testing.assert_allclose(a.sum(axis=1), 1.0, rtol=1e-14)


def test_weight_sum_formula(rng):
    hs, a = rng.standard_normal((2, 5, 3)), rng.random((2, 5))
    c = WeightSum().forward(hs, a)
    np.testing.assert_allclose(c, sum(a[:, t, None] * hs[:, t] for t in range(5)), rtol=1e-13)


def test_attention_weight_gradients(rng):
    layer = AttentionWeight()
    hs, h, R = rng.standard_normal((3, 4, 5)), rng.standard_normal((3, 5)), rng.standard_normal((3, 4))

    def loss():
        return float(np.sum(layer.forward(hs, h) * R))

    loss()
    check_gradients(loss, layer.backward(R), [hs, h])


def test_weight_sum_gradients(rng):
    layer = WeightSum()
    hs, a, R = rng.standard_normal((3, 4, 5)), rng.random((3, 4)), rng.standard_normal((3, 5))

    def loss():
        return float(np.sum(layer.forward(hs, a) * R))

    loss()
    check_gradients(loss, layer.backward(R), [hs, a])


def test_attention_gradients(rng):
    layer = Attention()
    hs, h, R = rng.standard_normal((3, 4, 5)), rng.standard_normal((3, 5)), rng.standard_normal((3, 5))

    def loss():
        return float(np.sum(layer.forward(hs, h) * R))

    loss()
    check_gradients(loss, layer.backward(R), [hs, h])
    layer.forward(hs, h)  # the gradient check left the weights of a perturbed input
    np.testing.assert_allclose(layer.attention_weight, AttentionWeight().forward(hs, h), rtol=1e-14)


# ---------------------------------------------------------------- all decoder steps


def test_time_attention_gradients(rng):
    layer = TimeAttention()
    hs_enc, hs_dec = rng.standard_normal((2, 5, 4)), rng.standard_normal((2, 3, 4))
    R = rng.standard_normal((2, 3, 4))

    def loss():
        return float(np.sum(layer.forward(hs_enc, hs_dec) * R))

    loss()
    check_gradients(loss, layer.backward(R), [hs_enc, hs_dec])


@settings(max_examples=30, deadline=None)
@given(
    N=st.integers(1, 3),
    Te=st.integers(1, 5),
    Td=st.integers(1, 4),
    H=st.integers(1, 4),
    seed=st.integers(0, 2**31),
)
def test_time_attention_equals_one_attention_per_step(N, Te, Td, H, seed):
    rng = np.random.default_rng(seed)
    hs_enc, hs_dec = rng.standard_normal((N, Te, H)), rng.standard_normal((N, Td, H))
    dcs = rng.standard_normal((N, Td, H))
    layer = TimeAttention()
    cs = layer.forward(hs_enc, hs_dec)
    dhs_enc, dhs_dec = layer.backward(dcs)
    assert cs.shape == (N, Td, H) and layer.attention_weights.shape == (N, Td, Te)

    ref_dhs_enc = np.zeros_like(hs_enc)
    for t in range(Td):
        step = Attention()
        np.testing.assert_allclose(cs[:, t], step.forward(hs_enc, hs_dec[:, t]), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(layer.attention_weights[:, t], step.attention_weight, rtol=1e-12, atol=1e-14)
        dhs, dh = step.backward(dcs[:, t])
        ref_dhs_enc += dhs
        np.testing.assert_allclose(dhs_dec[:, t], dh, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dhs_enc, ref_dhs_enc, rtol=1e-10, atol=1e-12)


def test_time_attention_matches_torch(rng):
    torch = import_torch()
    hs_enc, hs_dec, R = rng.standard_normal((3, 6, 5)), rng.standard_normal((3, 4, 5)), rng.standard_normal((3, 4, 5))
    layer = TimeAttention()
    cs = layer.forward(hs_enc, hs_dec)
    dhs_enc, dhs_dec = layer.backward(R)

    enc, dec = torch.tensor(hs_enc, requires_grad=True), torch.tensor(hs_dec, requires_grad=True)
    a = torch.softmax(dec @ enc.transpose(1, 2), dim=-1)
    out = a @ enc
    (out * torch.from_numpy(R)).sum().backward()
    np.testing.assert_allclose(cs, out.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(layer.attention_weights, a.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dhs_enc, enc.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dhs_dec, dec.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_large_scores_do_not_overflow(rng):
    hs_enc = rng.standard_normal((2, 4, 3)).astype(np.float32) * 100
    hs_dec = rng.standard_normal((2, 3, 3)).astype(np.float32) * 100
    layer = TimeAttention()
    cs = layer.forward(hs_enc, hs_dec)
    dhs_enc, dhs_dec = layer.backward(np.ones_like(cs))
    assert np.all(np.isfinite(cs)) and np.all(np.isfinite(dhs_enc)) and np.all(np.isfinite(dhs_dec))
    np.testing.assert_allclose(layer.attention_weights.sum(axis=-1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_preserved(rng, dtype):
    hs_enc, hs_dec = rng.standard_normal((2, 4, 3)).astype(dtype), rng.standard_normal((2, 3, 3)).astype(dtype)
    layer = TimeAttention()
    cs = layer.forward(hs_enc, hs_dec)
    grads = layer.backward(np.ones_like(cs))
    assert cs.dtype == dtype and layer.attention_weights.dtype == dtype and all(g.dtype == dtype for g in grads)
    step = Attention()
    c = step.forward(hs_enc, hs_dec[:, 0])
    assert c.dtype == dtype and all(g.dtype == dtype for g in step.backward(np.ones_like(c)))


def test_no_params():
    for layer in (AttentionWeight(), WeightSum(), Attention(), TimeAttention()):
        assert layer.params == [] and layer.grads == []


# ---------------------------------------------------------------- bad input


def test_bad_input():
    z = np.zeros
    with pytest.raises(ValueError, match=r"TimeAttention: hs_enc must be 3-D"):
        TimeAttention().forward(z((2, 3)), z((2, 3, 3)))
    with pytest.raises(ValueError, match=r"hs_dec must have shape \(2, any, 4\), got \(2, 3, 5\)"):
        TimeAttention().forward(z((2, 3, 4)), z((2, 3, 5)))
    with pytest.raises(ValueError, match=r"hs_dec must have shape \(2, any, 4\), got \(3, 3, 4\)"):
        TimeAttention().forward(z((2, 3, 4)), z((3, 3, 4)))
    with pytest.raises(ValueError, match=r"hs_dec must have dtype float64 .*got float32"):
        TimeAttention().forward(z((2, 3, 4)), z((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match=r"hs_enc must be a float32 or float64 NumPy array, got int64"):
        TimeAttention().forward(z((2, 3, 4), np.int64), z((2, 3, 4)))
    with pytest.raises(ValueError, match=r"AttentionWeight: h must have shape \(2, 4\), got \(2, 3\)"):
        AttentionWeight().forward(z((2, 3, 4)), z((2, 3)))
    with pytest.raises(ValueError, match=r"WeightSum: a must have shape \(2, 3\), got \(2, 4\)"):
        WeightSum().forward(z((2, 3, 4)), z((2, 4)))


def test_backward_checks():
    for layer in (AttentionWeight(), WeightSum(), TimeAttention()):
        with pytest.raises(RuntimeError, match="backward called before forward"):
            layer.backward(np.zeros((2, 3)))
    layer = TimeAttention()
    layer.forward(np.zeros((2, 3, 4)), np.zeros((2, 5, 4)))
    with pytest.raises(ValueError, match=r"dcs must have shape \(2, 5, 4\), got \(2, 3, 4\)"):
        layer.backward(np.zeros((2, 3, 4)))
