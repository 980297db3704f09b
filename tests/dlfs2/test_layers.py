"""nprnn.dlfs2.layers: float64 gradient checks and equality with the textbook's common.layers."""

import numpy as np
import pytest

from nprnn.dlfs2 import layers as L
from nprnn.dlfs2.layers import embedding_grad

from ._helpers import check_layer_gradients, check_scalar_loss_gradients


def test_matmul_and_affine_gradients(rng):
    x, W, b = rng.standard_normal((4, 3)), rng.standard_normal((3, 5)), rng.standard_normal(5)
    mm = L.MatMul(W)
    check_layer_gradients(lambda: mm.forward(x), lambda d: [mm.backward(d), mm.grads[0]], [x, W], (4, 5), rng)
    af = L.Affine(W, b)
    check_layer_gradients(lambda: af.forward(x), lambda d: [af.backward(d), *af.grads], [x, W, b], (4, 5), rng)


def test_softmax_and_sigmoid_gradients(rng):
    x = rng.standard_normal((3, 6))
    sm, sg = L.Softmax(), L.Sigmoid()
    check_layer_gradients(lambda: sm.forward(x), lambda d: [sm.backward(d)], [x], (3, 6), rng)
    check_layer_gradients(lambda: sg.forward(x), lambda d: [sg.backward(d)], [x], (3, 6), rng)


def test_loss_layers_gradients(rng):
    x = rng.standard_normal((5, 4))
    t = rng.integers(0, 4, 5)
    sl = L.SoftmaxWithLoss()
    # the book's backward ignores the 1e-7 inside the log: d/dp log(p + 1e-7) differs by ~1e-7 / p
    check_scalar_loss_gradients(lambda: sl.forward(x, t), lambda: [sl.backward()], [x], tol=1e-5)
    xs = rng.standard_normal(6)
    ts = rng.integers(0, 2, 6)
    bl = L.SigmoidWithLoss()
    check_scalar_loss_gradients(lambda: bl.forward(xs, ts), lambda: [bl.backward()], [xs], tol=1e-5)


def test_embedding_gradient_and_grad_helper(rng):
    W = rng.standard_normal((6, 3))
    idx = np.array([0, 2, 2, 5, 0, 2])
    emb = L.Embedding(W)
    check_layer_gradients(lambda: emb.forward(idx), lambda d: [emb.backward(d) or emb.grads[0]], [W], (6, 3), rng)
    for ids in (np.array([], int), np.array([3, 1, 4]), rng.integers(0, 6, (4, 5))):
        dout = rng.standard_normal((*ids.shape, 3))
        got, want = np.full((6, 3), 7.0), np.zeros((6, 3))
        embedding_grad(got, ids, dout)
        np.add.at(want, ids.reshape(-1), dout.reshape(-1, 3))
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["MatMul", "Affine", "Embedding"])
def test_parametrized_layers_equal_the_books(dlfs2, rng, name):
    from common import layers as B

    W = rng.standard_normal((8, 5)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    args = {"MatMul": (W,), "Affine": (W, b), "Embedding": (W,)}[name]
    ours, book = getattr(L, name)(*args), getattr(B, name)(*(a.copy() for a in args))
    x = rng.integers(0, 8, 12) if name == "Embedding" else rng.standard_normal((4, 8)).astype(np.float32)
    out = ours.forward(x)
    np.testing.assert_array_equal(out, book.forward(x))
    dout = rng.standard_normal(out.shape).astype(np.float32)
    dx, dx_book = ours.backward(dout), book.backward(dout)
    if dx_book is None:
        assert dx is None
    else:
        np.testing.assert_allclose(dx, dx_book, rtol=1e-6)
    for g, gb in zip(ours.grads, book.grads):
        np.testing.assert_allclose(g, gb, rtol=1e-6, atol=1e-6)


def test_loss_and_activation_layers_equal_the_books(dlfs2, rng):
    from common import layers as B

    x = rng.standard_normal((6, 5)).astype(np.float32)
    t = rng.integers(0, 5, 6)
    for t_given in (t, np.eye(5, dtype=np.int32)[t]):  # labels and one-hot rows
        ours, book = L.SoftmaxWithLoss(), B.SoftmaxWithLoss()
        assert ours.forward(x, t_given) == book.forward(x, t_given)
        np.testing.assert_array_equal(ours.backward(), book.backward())
    for name in ("Softmax", "Sigmoid"):
        ours, book = getattr(L, name)(), getattr(B, name)()
        np.testing.assert_array_equal(ours.forward(x), book.forward(x))
        np.testing.assert_array_equal(ours.backward(x), book.backward(x))
    xs, ts = rng.standard_normal(6).astype(np.float32), rng.integers(0, 2, 6)
    ours, book = L.SigmoidWithLoss(), B.SigmoidWithLoss()
    assert ours.forward(xs, ts) == book.forward(xs, ts)
    np.testing.assert_array_equal(ours.backward(), book.backward())


def test_dropout_draws_the_books_masks(dlfs2, rng):
    from common.layers import Dropout

    x = rng.standard_normal((20, 30)).astype(np.float32)
    ours, book = L.Dropout(0.3), Dropout(0.3)
    np.random.seed(5)  # noqa: NPY002 (the book draws from the global generator)
    out = ours.forward(x)
    np.random.seed(5)  # noqa: NPY002 (the book draws from the global generator)
    np.testing.assert_array_equal(out, book.forward(x))
    np.testing.assert_array_equal(ours.backward(x), book.backward(x))
    np.testing.assert_array_equal(ours.forward(x, train_flg=False), book.forward(x, train_flg=False))
    assert 0.2 < 1 - ours.mask.mean() < 0.4
