import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nprnn.gradcheck import numerical_gradient, relative_error
from nprnn.layers.basic import (
    IdOutOfRangeError,
    TimeAffine,
    TimeDropout,
    TimeEmbedding,
    TimeSoftmaxWithLoss,
    _tame_maxes,
    embedding_grad,
    stack_affine_params,
)

# ---------------------------------------------------------------- TimeEmbedding


def test_embedding_forward_is_row_lookup(rng):
    W = rng.standard_normal((7, 3))
    ids = rng.integers(0, 7, (2, 5))
    out = TimeEmbedding(W).forward(ids)
    assert out.shape == (2, 5, 3)
    for n in range(2):
        for t in range(5):
            np.testing.assert_array_equal(out[n, t], W[ids[n, t]])


def test_embedding_gradient_with_repeated_ids(rng):
    V, D, N, T = 5, 3, 3, 4
    W = rng.standard_normal((V, D))
    ids = rng.integers(0, V, (N, T))
    ids[0, :3] = 2  # certainly repeated
    assert len(np.unique(ids)) < ids.size
    layer = TimeEmbedding(W)
    R = rng.standard_normal((N, T, D))

    def loss():
        return float(np.sum(layer.forward(ids) * R))

    loss()
    assert layer.backward(R) is None
    assert relative_error(layer.grads[0], numerical_gradient(loss, W)) < 1e-8
    # an id that never occurs gets exactly zero gradient
    unused = np.setdiff1d(np.arange(V), ids)
    assert np.all(layer.grads[0][unused] == 0)


@settings(max_examples=40, deadline=None)
@given(
    V=st.integers(1, 30),
    D=st.integers(1, 6),
    N=st.integers(1, 5),
    T=st.integers(1, 8),
    seed=st.integers(0, 2**31),
)
def test_embedding_gradient_matches_add_at(V, D, N, T, seed):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((V, D))
    ids = rng.integers(0, V, (N, T))
    dout = rng.standard_normal((N, T, D))
    layer = TimeEmbedding(W)
    layer.forward(ids)
    layer.backward(dout)
    expected = np.zeros_like(W)
    np.add.at(expected, ids.ravel(), dout.reshape(-1, D))
    np.testing.assert_allclose(layer.grads[0], expected, rtol=1e-12, atol=1e-12)


def test_embedding_grads_overwritten_not_accumulated_and_keep_identity(rng):
    W = rng.standard_normal((6, 2))
    layer = TimeEmbedding(W)
    grad = layer.grads[0]
    layer.forward(np.array([[0, 1, 1]]))
    layer.backward(np.ones((1, 3, 2)))
    layer.forward(np.array([[3, 3]]))
    layer.backward(np.ones((1, 2, 2)))
    assert layer.grads[0] is grad and layer.params[0] is W
    expected = np.zeros((6, 2))
    expected[3] = 2
    np.testing.assert_array_equal(grad, expected)


def test_embedding_parity_with_textbook(dlfs2, rng):
    V, D, N, T = 11, 4, 3, 6
    W = rng.standard_normal((V, D)).astype(np.float32)  # the textbook builds float32 outputs
    ids = rng.integers(0, V, (N, T))
    dout = rng.standard_normal((N, T, D)).astype(np.float32)
    ours, ref = TimeEmbedding(W), dlfs2.time_layers.TimeEmbedding(W.copy())
    np.testing.assert_array_equal(ours.forward(ids), ref.forward(ids))
    ours.backward(dout)
    ref.backward(dout)
    np.testing.assert_allclose(ours.grads[0], ref.grads[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_embedding_dtype_preserved(rng, dtype):
    layer = TimeEmbedding(rng.standard_normal((5, 3)).astype(dtype))
    out = layer.forward(np.array([[1, 2], [4, 4]], dtype=np.int32))
    layer.backward(np.ones_like(out))
    assert out.dtype == dtype and layer.grads[0].dtype == dtype


@pytest.mark.parametrize("bad_id", [10, 12, -1])
def test_embedding_id_out_of_range(bad_id):
    layer = TimeEmbedding(np.zeros((10, 3), np.float32))
    ids = np.array([[1, 2, 3], [4, bad_id, 5]])
    with pytest.raises(IndexError, match=rf"id {bad_id} at position \(1, 1\) .*vocabulary size 10"):
        layer.forward(ids)
    with pytest.raises(ValueError):  # also a ValueError, like every other bad input
        layer.forward(ids)
    assert issubclass(IdOutOfRangeError, IndexError) and issubclass(IdOutOfRangeError, ValueError)


def test_embedding_bad_inputs():
    layer = TimeEmbedding(np.zeros((10, 3), np.float32))
    with pytest.raises(ValueError, match="ids must be integers, got dtype float64"):
        layer.forward(np.array([[1.0, 2.0]]))
    with pytest.raises(ValueError, match="ids must be integers, got dtype bool"):
        layer.forward(np.array([[True, False]]))
    with pytest.raises(ValueError, match=r"ids must have shape \(any, any\), got \(3,\)"):
        layer.forward(np.array([1, 2, 3]))
    with pytest.raises(RuntimeError, match="backward called before forward"):
        layer.backward(np.zeros((1, 3, 3), np.float32))
    layer.forward(np.array([[1, 2, 3]]))
    with pytest.raises(ValueError, match=r"dout must have shape \(1, 3, 3\), got \(1, 3, 4\)"):
        layer.backward(np.zeros((1, 3, 4), np.float32))
    with pytest.raises(ValueError, match=r"W must have shape \(any, any\), got \(10,\)"):
        TimeEmbedding(np.zeros(10, np.float32))
    with pytest.raises(ValueError, match="float32 or float64, got int64"):
        TimeEmbedding(np.zeros((10, 3), np.int64))


# ---------------------------------------------------------------- TimeAffine
# "stacked": W and b the rows of one array (stack_affine_params), where the bias rides in the products.
AFFINE_LAYOUTS = pytest.mark.parametrize("stacked", [False, True], ids=["separate", "stacked"])


def affine_params(W, b, stacked):
    return stack_affine_params(W, b) if stacked else (W, b)


@AFFINE_LAYOUTS
def test_affine_gradients(rng, stacked):
    N, T, D, V = 2, 3, 4, 5
    W, b = affine_params(rng.standard_normal((D, V)), rng.standard_normal(V), stacked)
    xs, R = rng.standard_normal((N, T, D)), rng.standard_normal((N, T, V))
    layer = TimeAffine(W, b)

    def loss():
        return float(np.sum(layer.forward(xs) * R))

    out = layer.forward(xs)
    np.testing.assert_allclose(out, np.einsum("ntd,dv->ntv", xs, W) + b, rtol=1e-13)
    dxs = layer.backward(R)
    assert dxs.shape == xs.shape
    for p, g in zip([W, b], layer.grads):
        assert relative_error(g, numerical_gradient(loss, p)) < 1e-8
    assert relative_error(dxs, numerical_gradient(loss, xs)) < 1e-8


@AFFINE_LAYOUTS
def test_affine_parity_with_textbook(dlfs2, rng, stacked):
    N, T, D, V = 3, 4, 5, 6
    W, b = affine_params(rng.standard_normal((D, V)), rng.standard_normal(V), stacked)
    xs, dout = rng.standard_normal((N, T, D)), rng.standard_normal((N, T, V))
    ours, ref = TimeAffine(W, b), dlfs2.time_layers.TimeAffine(W.copy(), b.copy())
    np.testing.assert_allclose(ours.forward(xs), ref.forward(xs), rtol=1e-13)
    np.testing.assert_allclose(ours.backward(dout), ref.backward(dout), rtol=1e-13)
    for g, r in zip(ours.grads, ref.grads):
        np.testing.assert_allclose(g, r, rtol=1e-13)


@AFFINE_LAYOUTS
def test_affine_protocol_and_dtype(rng, stacked):
    W, b = affine_params(rng.standard_normal((3, 4)).astype(np.float32), np.zeros(4, np.float32), stacked)
    layer = TimeAffine(W, b)
    grads = list(layer.grads)
    assert layer.params[0] is W and layer.params[1] is b
    xs = rng.standard_normal((2, 5, 3)).astype(np.float32)
    out = layer.forward(xs)
    dxs = layer.backward(np.ones_like(out))
    assert out.dtype == np.float32 and dxs.dtype == np.float32
    assert all(a is g for a, g in zip(layer.grads, grads)) and all(g.any() for g in grads)
    np.testing.assert_allclose(grads[1], np.full(4, 10.0))  # db = sum of dout over N*T positions


@AFFINE_LAYOUTS
def test_affine_non_contiguous_input(rng, stacked):
    W, b = affine_params(rng.standard_normal((3, 4)), rng.standard_normal(4), stacked)
    xs = rng.standard_normal((5, 2, 3)).transpose(1, 0, 2)  # (2, 5, 3), not C-contiguous
    layer = TimeAffine(W, b)
    np.testing.assert_allclose(layer.forward(xs), xs @ W + b, rtol=1e-13)
    layer.backward(np.ones((2, 5, 4)))
    np.testing.assert_allclose(layer.grads[0], xs.reshape(-1, 3).T @ np.ones((10, 4)), rtol=1e-13)


def test_stacked_affine_params_share_one_array_and_so_do_their_grads(rng):
    W, b = rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    Ws, bs = stack_affine_params(W, b)
    assert Ws.base is bs.base and Ws.base.shape == (4, 4)
    np.testing.assert_array_equal(Ws, W)
    np.testing.assert_array_equal(bs, b)
    grads = TimeAffine(Ws, bs).grads
    assert grads[0].base is grads[1].base is not None
    # rows of a larger array, a b that is not the row right after W, or an output no wider than the
    # input (copying xs into [xs, 1] would cost more than the passes it saves): the separate path
    narrow = TimeAffine(*stack_affine_params(np.zeros((4, 4), np.float32), np.zeros(4, np.float32)))
    assert narrow.grads[0].base is None and narrow.grads[1].base is None
    big = np.zeros((5, 4), np.float32)
    for Wx, bx in [(big[:3], big[4]), (big[:3], big[3].copy()), (big[1:4], big[4])]:
        layer = TimeAffine(Wx, bx)
        assert layer.grads[0].base is None and layer.grads[1].base is None


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-5), (np.float64, 1e-12)])
def test_stacked_and_separate_affine_agree(rng, dtype, rtol):
    """The language model's shape of output layer, both layouts: the same outputs and gradients to the
    dtype's rounding (the bias is summed in the product's order, not NumPy's)."""
    N, T, D, V = 4, 5, 32, 1000
    W, b = rng.standard_normal((D, V)).astype(dtype), rng.standard_normal(V).astype(dtype)
    xs, dout = rng.standard_normal((N, T, D)).astype(dtype), rng.standard_normal((N, T, V)).astype(dtype)
    separate, stacked = TimeAffine(W, b), TimeAffine(*stack_affine_params(W, b))
    np.testing.assert_allclose(stacked.forward(xs), separate.forward(xs), rtol=rtol, atol=rtol)
    np.testing.assert_allclose(stacked.backward(dout), separate.backward(dout), rtol=rtol, atol=rtol)
    for g_stacked, g_separate in zip(stacked.grads, separate.grads):
        np.testing.assert_allclose(g_stacked, g_separate, rtol=rtol, atol=rtol * 10)


def test_affine_bad_inputs():
    with pytest.raises(ValueError, match=r"b must have shape \(4,\), got \(3,\)"):
        TimeAffine(np.zeros((3, 4), np.float32), np.zeros(3, np.float32))
    layer = TimeAffine(np.zeros((3, 4), np.float32), np.zeros(4, np.float32))
    with pytest.raises(ValueError, match=r"xs must have shape \(any, any, 3\), got \(2, 5, 4\)"):
        layer.forward(np.zeros((2, 5, 4), np.float32))
    with pytest.raises(ValueError, match=r"xs must be 3-D"):
        layer.forward(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="dtype float32.*got float64"):
        layer.forward(np.zeros((2, 5, 3)))
    with pytest.raises(RuntimeError, match="backward called before forward"):
        layer.backward(np.zeros((2, 5, 4), np.float32))
    layer.forward(np.zeros((2, 5, 3), np.float32))
    with pytest.raises(ValueError, match=r"dout must have shape \(2, 5, 4\), got \(2, 5, 3\)"):
        layer.backward(np.zeros((2, 5, 3), np.float32))


# ---------------------------------------------------------------- TimeSoftmaxWithLoss


def reference_loss(xs, ts, ignore_label=-1):
    """Mean cross-entropy over unmasked positions, with log-sum-exp done by NumPy."""
    lse = np.logaddexp.reduce(xs, axis=-1)
    n, t = np.nonzero(ts != ignore_label)
    return float(np.mean(lse[n, t] - xs[n, t, ts[n, t]]))


def test_softmax_loss_value_and_gradient_with_mask(rng):
    N, T, V = 3, 4, 5
    xs = rng.standard_normal((N, T, V)) * 2
    ts = rng.integers(0, V, (N, T))
    ts[0, 1] = ts[2, 3] = ts[1, 0] = -1
    layer = TimeSoftmaxWithLoss()

    def loss():
        return layer.forward(xs, ts)

    value = loss()
    assert isinstance(value, float)
    np.testing.assert_allclose(value, reference_loss(xs, ts), rtol=1e-13)
    dxs = layer.backward()
    assert dxs.shape == xs.shape
    assert relative_error(dxs, numerical_gradient(loss, xs)) < 1e-8
    assert np.all(dxs[ts == -1] == 0)
    # each counted row of the gradient sums to zero (softmax minus one-hot), divided by the count
    np.testing.assert_allclose(dxs.sum(axis=-1), 0, atol=1e-15)
    np.testing.assert_allclose(dxs[0, 0, ts[0, 0]], (np.exp(xs[0, 0]) / np.exp(xs[0, 0]).sum())[ts[0, 0]] / 9 - 1 / 9)


def test_softmax_loss_backward_scales_with_dout_and_can_repeat(rng):
    xs, ts = rng.standard_normal((2, 3, 4)), rng.integers(0, 4, (2, 3))
    layer = TimeSoftmaxWithLoss()
    layer.forward(xs, ts)
    d1 = layer.backward()
    np.testing.assert_allclose(layer.backward(2.5), 2.5 * d1, rtol=1e-14)
    np.testing.assert_array_equal(layer.backward(), d1)  # backward does not consume its cache


def test_softmax_loss_parity_with_textbook(dlfs2, rng):
    N, T, V = 4, 5, 7
    xs = rng.standard_normal((N, T, V)) * 3
    ts = rng.integers(0, V, (N, T))
    ts[rng.random((N, T)) < 0.3] = -1  # the textbook's ignore_label
    ts[0, 0] = 2
    ours, ref = TimeSoftmaxWithLoss(), dlfs2.time_layers.TimeSoftmaxWithLoss()
    np.testing.assert_allclose(ours.forward(xs, ts), ref.forward(xs.copy(), ts), rtol=1e-13)
    np.testing.assert_allclose(ours.backward(), ref.backward(), rtol=1e-12, atol=1e-17)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_loss_stable_for_huge_scores(rng, dtype):
    N, T, V = 2, 3, 6
    xs = (rng.standard_normal((N, T, V)) * 1e4).astype(dtype)
    xs[0, 0] = [1e4, -1e4, 0, 5e3, 1e4, 3]  # ties at the max and a very negative score
    ts = rng.integers(0, V, (N, T))
    ts[0, 0] = 1  # a target whose softmax probability underflows to 0
    layer = TimeSoftmaxWithLoss()
    # no overflow, no invalid operation, no divide by zero (underflow of exp to 0 is expected and harmless)
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        loss = layer.forward(xs, ts)
        dxs = layer.backward()
    assert np.isfinite(loss) and np.all(np.isfinite(dxs)) and dxs.dtype == dtype
    np.testing.assert_allclose(loss, reference_loss(xs.astype(np.float64), ts), rtol=1e-6)
    assert loss > 1e3  # confidently wrong predictions cost a lot


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_loss_rows_near_the_edges_of_the_unshifted_range(rng, dtype):
    """Rows whose maximum is just inside or just outside the range where exp(scores) is taken
    unshifted: the loss and the softmax agree with float64 log-sum-exp either way."""
    V = 10000
    low, high = _tame_maxes(dtype, V)
    maxes = [high - 0.5, high + 0.5, low + 0.5, low - 0.5, 0.0, 700.0]
    xs = rng.standard_normal((1, len(maxes), V)) * 3
    xs[0, :, 0] = 0.0
    xs = xs - xs.max(axis=-1, keepdims=True) + np.array(maxes)[None, :, None]  # each row's max as listed
    xs = xs.astype(dtype)
    ts = rng.integers(0, V, (1, len(maxes)))
    layer = TimeSoftmaxWithLoss()
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        loss = layer.forward(xs, ts)
        dxs = layer.backward()
    x64 = xs.astype(np.float64)
    np.testing.assert_allclose(loss, reference_loss(x64, ts), rtol=1e-5 if dtype == np.float32 else 1e-12)
    softmax = np.exp(x64 - np.logaddexp.reduce(x64, axis=-1, keepdims=True))
    onehot = np.zeros_like(softmax)
    onehot[0, np.arange(len(maxes)), ts[0]] = 1
    tol = 1e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(dxs, (softmax - onehot) / len(maxes), atol=tol / len(maxes))


def test_softmax_loss_rows_do_not_depend_on_each_other(rng):
    """A row that needs the shift by its max leaves the other rows' numbers as they are, bit for bit."""
    xs = rng.standard_normal((1, 8, 1000)).astype(np.float32)
    ts = rng.integers(0, 1000, (1, 8))
    huge = xs.copy()
    huge[0, 3] *= 1e4
    layer = TimeSoftmaxWithLoss()
    layer.forward(xs, ts)
    plain = layer.backward()
    layer.forward(huge, ts)
    mixed = layer.backward()
    keep = [i for i in range(8) if i != 3]
    np.testing.assert_array_equal(mixed[0, keep], plain[0, keep])
    assert np.all(np.isfinite(mixed))


def test_softmax_loss_all_masked_is_zero():
    layer = TimeSoftmaxWithLoss()
    xs = np.random.default_rng(0).standard_normal((2, 3, 4))
    with np.errstate(all="raise"):
        assert layer.forward(xs, np.full((2, 3), -1)) == 0.0
        dxs = layer.backward()
    assert dxs.shape == xs.shape and np.all(dxs == 0)


def test_softmax_loss_custom_and_no_ignore_label(rng):
    xs, ts = rng.standard_normal((2, 3, 4)), rng.integers(0, 4, (2, 3))
    ts[0, 0], ts[1, 2] = 0, 3
    assert TimeSoftmaxWithLoss(ignore_label=None).forward(xs, ts) == pytest.approx(
        reference_loss(xs, ts, ignore_label=None)
    )
    layer = TimeSoftmaxWithLoss(ignore_label=0)
    assert layer.forward(xs, ts) == pytest.approx(reference_loss(xs, ts, ignore_label=0))
    assert np.all(layer.backward()[ts == 0] == 0)


@pytest.mark.parametrize("bad", [4, 9, -2])
def test_softmax_loss_target_out_of_range(bad):
    ts = np.array([[0, 1, -1], [2, bad, 3]])
    with pytest.raises(IdOutOfRangeError, match=rf"target {bad} at position \(1, 1\) .*vocabulary size 4"):
        TimeSoftmaxWithLoss().forward(np.zeros((2, 3, 4)), ts)


def test_softmax_loss_bad_inputs():
    layer = TimeSoftmaxWithLoss()
    with pytest.raises(ValueError, match=r"ts must have shape \(2, 3\), got \(3, 2\)"):
        layer.forward(np.zeros((2, 3, 4)), np.zeros((3, 2), int))
    with pytest.raises(ValueError, match="ts must be integers, got dtype float64"):
        layer.forward(np.zeros((2, 3, 4)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"xs must be a float32/float64 array of shape \(N, T, V\), got int64"):
        layer.forward(np.zeros((2, 3, 4), int), np.zeros((2, 3), int))
    with pytest.raises(ValueError, match=r"shape \(N, T, V\), got float64 array of shape \(6, 4\)"):
        layer.forward(np.zeros((6, 4)), np.zeros((2, 3), int))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # refused before any log(V)
        with pytest.raises(ValueError, match=r"at least one class, got shape \(2, 3, 0\)"):
            layer.forward(np.zeros((2, 3, 0)), np.full((2, 3), -1))  # every position ignored
    with pytest.raises(RuntimeError, match="backward called before forward"):
        layer.backward()
    assert layer.params == [] and layer.grads == []


# ---------------------------------------------------------------- TimeDropout


def test_dropout_seeded_reproducible():
    xs = np.ones((4, 5, 6))
    a, b, c = TimeDropout(0.5, seed=3), TimeDropout(0.5, seed=3), TimeDropout(0.5, seed=4)
    out_a = a.forward(xs)
    np.testing.assert_array_equal(out_a, b.forward(xs))
    assert not np.array_equal(out_a, c.forward(xs))
    # saving and restoring the generator's state replays the mask
    state = a.rng.bit_generator.state
    second = a.forward(xs)
    assert not np.array_equal(second, out_a)
    a.rng.bit_generator.state = state
    np.testing.assert_array_equal(a.forward(xs), second)


@pytest.mark.parametrize("ratio", [0.1, 0.5, 0.8])
def test_dropout_preserves_mean_and_scales_survivors(ratio):
    n = 400_000
    layer = TimeDropout(ratio, seed=0)
    out = layer.forward(np.ones((4, 100, n // 400)))
    scale = 1 / (1 - ratio)
    assert set(np.unique(out)) <= {0.0, scale}
    # mean of n i.i.d. draws of scale * Bernoulli(1 - ratio): expectation 1, std sqrt(r / (1 - r) / n)
    std = np.sqrt(ratio / (1 - ratio) / n)
    assert abs(out.mean() - 1.0) < 6 * std
    assert abs(np.mean(out == 0) - ratio) < 6 * np.sqrt(ratio * (1 - ratio) / n)


def test_dropout_backward_uses_the_forward_mask(rng):
    xs, dout = rng.standard_normal((3, 4, 5)) + 3, rng.standard_normal((3, 4, 5))  # xs never 0
    layer = TimeDropout(0.4, seed=1)
    out = layer.forward(xs)
    mask = out / xs
    dxs = layer.backward(dout)
    np.testing.assert_allclose(dxs, dout * mask, rtol=1e-14)
    assert np.array_equal(dxs == 0, out == 0)


def test_dropout_gradient(rng):
    xs, R = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 3, 4))
    layer = TimeDropout(0.5, seed=2)
    state = layer.rng.bit_generator.state

    def loss():
        layer.rng.bit_generator.state = state  # the same mask every call
        return float(np.sum(layer.forward(xs) * R))

    loss()
    assert relative_error(layer.backward(R), numerical_gradient(loss, xs)) < 1e-8


def test_dropout_identity_when_not_training(rng):
    xs, dout = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 3, 4))
    layer = TimeDropout(0.9, seed=0)
    layer.train = False
    state = layer.rng.bit_generator.state
    np.testing.assert_array_equal(layer.forward(xs), xs)
    np.testing.assert_array_equal(layer.backward(dout), dout)
    assert layer.rng.bit_generator.state == state  # no randomness drawn at test time
    layer.train = True
    assert np.mean(layer.forward(xs) == 0) > 0.5
    np.testing.assert_array_equal(TimeDropout(0.0).forward(xs), xs)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_dtype_preserved(dtype):
    layer = TimeDropout(0.5)
    out = layer.forward(np.ones((2, 3, 4), dtype))
    assert out.dtype == dtype and layer.backward(np.ones((2, 3, 4), dtype)).dtype == dtype


def test_dropout_bad_inputs():
    for ratio in [1.0, -0.1, 1.5]:
        with pytest.raises(ValueError, match=rf"ratio must be in \[0, 1\), got {ratio}"):
            TimeDropout(ratio)
    layer = TimeDropout(0.5)
    assert layer.params == [] and layer.grads == []
    with pytest.raises(RuntimeError, match="backward called before forward"):
        layer.backward(np.ones((2, 3)))
    with pytest.raises(ValueError, match="float32/float64 array, got int64"):
        layer.forward(np.ones((2, 3), int))
    layer.forward(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"forward input's shape \(2, 3\), got \(3, 2\)"):
        layer.backward(np.ones((3, 2)))


def test_embedding_grad_sums_as_add_at(rng, each_backend):
    V, D = 7, 33
    ids = np.concatenate([rng.integers(-V, V, 62), np.full(9, 3), np.full(5, -4)])  # -4 is 3 too
    rng.shuffle(ids)
    ids = ids.reshape(4, -1)
    dout = rng.standard_normal((*ids.shape, D)).astype(np.float32)
    want = np.zeros((V, D), np.float32)
    np.add.at(want, ids.ravel(), dout.reshape(-1, D))
    got = np.full((V, D), 5.0, np.float32)  # overwritten, not accumulated into
    embedding_grad(got, ids, dout)
    if each_backend == "numba":  # the rows added in order, as np.add.at adds them: the same sums
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert np.all(got[np.setdiff1d(np.arange(V), ids % V)] == 0)
