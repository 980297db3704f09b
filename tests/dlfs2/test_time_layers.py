"""nprnn.dlfs2.time_layers: float64 gradient checks of every layer with a backward pass, and parity with the
textbook's common.time_layers (and with ch08's attention layer, reconstructed below from the book)."""

import numpy as np
import pytest

from nprnn.dlfs2 import time_layers as TL

from ._helpers import check_layer_gradients, check_scalar_loss_gradients

N, T, D, H, V = 3, 5, 4, 6, 7


def weights(rng, G, dtype=np.float64, d=D):
    return [rng.standard_normal((d, G * H)).astype(dtype) * 0.5,
            rng.standard_normal((H, G * H)).astype(dtype) * 0.5,
            rng.standard_normal(G * H).astype(dtype) * 0.1]  # fmt: skip


# ---------------------------------------------------------------- gradient checks (float64)


@pytest.mark.parametrize("name,G", [("TimeRNN", 1), ("TimeLSTM", 4), ("TimeGRU", 3)])
def test_recurrent_gradients_with_a_carried_state(rng, name, G):
    params = weights(rng, G)
    layer = getattr(TL, name)(*params, stateful=True)
    xs, h0 = rng.standard_normal((N, T, D)), rng.standard_normal((N, H))

    def forward():
        layer.set_state(h0)
        return layer.forward(xs)

    def backward(dout):
        dxs = layer.backward(dout)
        return [dxs, layer.dh, *layer.grads]

    check_layer_gradients(forward, backward, [xs, h0, *params], (N, T, H), rng)


def test_book_gru_cell_gradients(rng):
    params = weights(rng, 3)
    cell = TL.GRU(*params)
    x, h = rng.standard_normal((N, D)), rng.standard_normal((N, H))
    check_layer_gradients(
        lambda: cell.forward(x, h), lambda d: [*cell.backward(d), *cell.grads], [x, h, *params], (N, H), rng
    )


def test_bilstm_embedding_affine_gradients(rng):
    params = weights(rng, 4) + weights(rng, 4)
    bi = TL.TimeBiLSTM(*params)
    xs = rng.standard_normal((N, T, D))
    check_layer_gradients(lambda: bi.forward(xs), lambda d: [bi.backward(d), *bi.grads], [xs, *params],
                          (N, T, 2 * H), rng)  # fmt: skip
    W = rng.standard_normal((V, D))
    ids = rng.integers(0, V, (N, T))
    emb = TL.TimeEmbedding(W)
    check_layer_gradients(lambda: emb.forward(ids), lambda d: [emb.backward(d) or emb.grads[0]], [W], (N, T, D), rng)
    Wa, ba = rng.standard_normal((D, V)), rng.standard_normal(V)
    af = TL.TimeAffine(Wa, ba)
    check_layer_gradients(lambda: af.forward(xs), lambda d: [af.backward(d), *af.grads], [xs, Wa, ba], (N, T, V), rng)
    saf = TL.Simple_TimeAffine(Wa, ba)
    check_layer_gradients(lambda: saf.forward(xs), lambda d: [saf.backward(d), saf.dW, saf.db], [xs, Wa, ba],
                          (N, T, V), rng)  # fmt: skip


@pytest.mark.parametrize("ignore", [False, True])
def test_softmax_loss_gradients(rng, ignore):
    xs = rng.standard_normal((N, T, V))
    ts = rng.integers(0, V, (N, T))
    if ignore:
        ts[0, :2] = -1
    layer = TL.TimeSoftmaxWithLoss()
    check_scalar_loss_gradients(lambda: layer.forward(xs, ts), lambda: [layer.backward()], [xs])


def test_other_loss_and_dropout_gradients(rng):
    xs = rng.standard_normal((N, T, V))
    ts = rng.integers(0, V, (N, T))
    simple = TL.Simple_TimeSoftmaxWithLoss()
    # the book's backward ignores the 1e-7 inside its log
    check_scalar_loss_gradients(lambda: simple.forward(xs, ts), lambda: [simple.backward()], [xs], tol=1e-5)
    x2, t2 = rng.standard_normal((N, T)), rng.integers(0, 2, (N, T))
    sig = TL.TimeSigmoidWithLoss()
    check_scalar_loss_gradients(lambda: sig.forward(x2, t2), lambda: [sig.backward()], [x2], tol=1e-5)
    drop = TL.TimeDropout(0.4)
    x3 = rng.standard_normal((N, T, D))

    def forward():
        np.random.seed(3)  # noqa: NPY002 (the same mask at every evaluation)
        return drop.forward(x3)

    check_layer_gradients(forward, lambda d: [drop.backward(d)], [x3], (N, T, D), rng)


def test_attention_gradients(rng):
    hs_enc, hs_dec = rng.standard_normal((N, T, H)), rng.standard_normal((N, 4, H))
    att = TL.TimeAttention()
    check_layer_gradients(lambda: att.forward(hs_enc, hs_dec), lambda d: list(att.backward(d)), [hs_enc, hs_dec],
                          (N, 4, H), rng)  # fmt: skip


# ---------------------------------------------------------------- parity with the textbook (float32)


def f32(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("name,G", [("TimeRNN", 1), ("TimeLSTM", 4), ("TimeGRU", 3)])
def test_recurrent_layers_equal_the_books(dlfs2, rng, name, G):
    from common import time_layers as B

    params = weights(rng, G, np.float32)
    ours, book = getattr(TL, name)(*params, stateful=True), getattr(B, name)(*(p.copy() for p in params), True)
    xs, dhs = f32(rng, N, T, D), f32(rng, N, T, H)
    for _ in range(2):  # the second call starts from the carried state
        np.testing.assert_allclose(ours.forward(xs), book.forward(xs), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ours.h, book.h, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ours.backward(dhs), book.backward(dhs), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(ours.dh, book.dh, rtol=1e-4, atol=1e-5)
        for g, gb in zip(ours.grads, book.grads):
            np.testing.assert_allclose(g, gb, rtol=1e-4, atol=1e-5)
    h = f32(rng, N, H)
    ours.set_state(h), book.set_state(h)
    np.testing.assert_allclose(ours.forward(xs), book.forward(xs), rtol=1e-5, atol=1e-6)
    ours.reset_state(), book.reset_state()
    assert ours.h is None and book.h is None


def test_book_gru_cell_equals_the_books(dlfs2, rng):
    from common.time_layers import GRU

    params = weights(rng, 3, np.float32)
    ours, book = TL.GRU(*params), GRU(*(p.copy() for p in params))
    x, h, dh = f32(rng, N, D), f32(rng, N, H), f32(rng, N, H)
    np.testing.assert_allclose(ours.forward(x, h), book.forward(x, h), rtol=1e-5, atol=1e-6)
    for a, b in zip(ours.backward(dh), book.backward(dh)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for g, gb in zip(ours.grads, book.grads):
        np.testing.assert_allclose(g, gb, rtol=1e-5, atol=1e-6)


def test_lstm_accepts_another_float_dtype_and_keeps_the_books_attributes(rng):
    params = weights(rng, 4, np.float32)
    layer = TL.TimeLSTM(*params, stateful=True)
    layer.set_state(rng.standard_normal((N, H)))  # float64 state, as the book allows
    hs = layer.forward(rng.standard_normal((N, T, D)))
    assert hs.dtype == np.float32 and layer.c.shape == (N, H)
    assert layer.backward(np.ones((N, T, H))).dtype == np.float32 and layer.dh.shape == (N, H)


def test_bilstm_equals_the_books(dlfs2, rng):
    from common.time_layers import TimeBiLSTM

    params = weights(rng, 4, np.float32) + weights(rng, 4, np.float32)
    ours, book = TL.TimeBiLSTM(*params), TimeBiLSTM(*(p.copy() for p in params))
    xs, dhs = f32(rng, N, T, D), f32(rng, N, T, 2 * H)
    np.testing.assert_allclose(ours.forward(xs), book.forward(xs), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours.backward(dhs), book.backward(dhs), rtol=1e-4, atol=1e-5)
    for g, gb in zip(ours.grads, book.grads):
        np.testing.assert_allclose(g, gb, rtol=1e-4, atol=1e-5)


def test_embedding_and_affine_equal_the_books(dlfs2, rng):
    from common import time_layers as B

    W = f32(rng, V, D)
    ours, book = TL.TimeEmbedding(W), B.TimeEmbedding(W.copy())
    assert ours.W is W and ours.params[0] is W
    ids = rng.integers(0, V, (N, T)).astype(np.int32)
    np.testing.assert_array_equal(ours.forward(ids), book.forward(ids))
    dout = f32(rng, N, T, D)
    assert ours.backward(dout) is None and book.backward(dout) is None
    np.testing.assert_allclose(ours.grads[0], book.grads[0], rtol=1e-6, atol=1e-6)
    # a non-contiguous slice of a gradient, as PeekyDecoder passes it
    wide = f32(rng, N, T, D + 3)
    ours.backward(wide[:, :, 3:]), book.backward(wide[:, :, 3:])
    np.testing.assert_allclose(ours.grads[0], book.grads[0], rtol=1e-6, atol=1e-6)

    Wa, ba = f32(rng, D, V), f32(rng, V)
    for Wgiven in (Wa, f32(rng, V, D).T):  # also the tied BetterRnnlm's transposed view
        ours, book = TL.TimeAffine(Wgiven, ba), B.TimeAffine(Wgiven.copy(), ba.copy())
        xs = f32(rng, N, T, D)
        np.testing.assert_allclose(ours.forward(xs), book.forward(xs), rtol=1e-5, atol=1e-6)
        assert ours.x is xs
        dout = f32(rng, N, T, V)
        np.testing.assert_allclose(ours.backward(dout), book.backward(dout), rtol=1e-5, atol=1e-6)
        for g, gb in zip(ours.grads, book.grads):
            np.testing.assert_allclose(g, gb, rtol=1e-5, atol=1e-5)


def test_a_large_softmax_loss_in_row_blocks_equals_the_books(dlfs2, rng):
    from common.time_layers import TimeSoftmaxWithLoss

    from nprnn.layers.basic import PARALLEL_SOFTMAX

    xs = f32(rng, 4, 31, 10_000) * 3  # 1.24M scores: the rows are split over the cores
    assert xs.size >= PARALLEL_SOFTMAX
    ts = rng.integers(0, 10_000, (4, 31)).astype(np.int32)
    ts[0, 5:] = -1
    ours, book = TL.TimeSoftmaxWithLoss(), TimeSoftmaxWithLoss()
    np.testing.assert_allclose(ours.forward(xs, ts), book.forward(xs, ts), rtol=1e-6)
    np.testing.assert_allclose(ours.backward(), book.backward(), rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("targets", ["labels", "one-hot", "ignored"])
def test_softmax_loss_equals_the_books(dlfs2, rng, targets):
    from common.time_layers import TimeSoftmaxWithLoss

    xs = f32(rng, N, T, V) * 3
    ts = rng.integers(0, V, (N, T)).astype(np.int32)
    if targets == "ignored":
        ts[1, 1:] = -1
    given = np.eye(V, dtype=np.int32)[ts] if targets == "one-hot" else ts
    ours, book = TL.TimeSoftmaxWithLoss(), TimeSoftmaxWithLoss()
    assert ours.ignore_label == book.ignore_label == -1
    np.testing.assert_allclose(ours.forward(xs, given), book.forward(xs, given), rtol=1e-6)
    np.testing.assert_allclose(ours.backward(), book.backward(), rtol=1e-5, atol=1e-7)
    xs_before = xs.copy()
    ours.forward(xs, ts), ours.backward(2.0)
    np.testing.assert_array_equal(xs, xs_before)  # the scores are not modified
    with pytest.raises(RuntimeError):
        ours.backward()


def test_simple_layers_and_sigmoid_loss_equal_the_books(dlfs2, rng):
    from common import time_layers as B

    xs, ts = f32(rng, N, T, V), rng.integers(0, V, (N, T))
    ours, book = TL.Simple_TimeSoftmaxWithLoss(), B.Simple_TimeSoftmaxWithLoss()
    np.testing.assert_allclose(ours.forward(xs, ts), book.forward(xs, ts), rtol=1e-6)
    np.testing.assert_allclose(ours.backward(), book.backward(), rtol=1e-5, atol=1e-7)
    Wa, ba = f32(rng, V, D), f32(rng, D)
    ours, book = TL.Simple_TimeAffine(Wa, ba), B.Simple_TimeAffine(Wa.copy(), ba.copy())
    np.testing.assert_allclose(ours.forward(xs), book.forward(xs), rtol=1e-5, atol=1e-6)
    # the book's Simple_TimeAffine.backward fails (it reads Affine.dW, which Affine does not have), so its
    # backward is checked against the formulas
    dout = f32(rng, N, T, D)
    np.testing.assert_allclose(ours.backward(dout), dout @ Wa.T, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours.dW, xs.reshape(-1, V).T @ dout.reshape(-1, D), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours.db, dout.sum(axis=(0, 1)), rtol=1e-5, atol=1e-5)
    x2, t2 = f32(rng, N, T), rng.integers(0, 2, (N, T))
    ours, book = TL.TimeSigmoidWithLoss(), B.TimeSigmoidWithLoss()
    np.testing.assert_allclose(ours.forward(x2, t2), book.forward(x2, t2), rtol=1e-6)
    np.testing.assert_allclose(ours.backward(), book.backward(), rtol=1e-5, atol=1e-8)


def test_dropout_draws_the_books_masks_from_the_global_generator(dlfs2, rng):
    from common.time_layers import TimeDropout

    xs = f32(rng, 20, T, 30)
    ours, book = TL.TimeDropout(dropout_ratio=0.3), TimeDropout(dropout_ratio=0.3)
    assert ours.train_flg is True and ours.dropout_ratio == 0.3
    np.random.seed(11)  # noqa: NPY002 (the book draws from the global generator)
    out = ours.forward(xs)
    np.random.seed(11)  # noqa: NPY002 (the book draws from the global generator)
    np.testing.assert_array_equal(out, book.forward(xs))
    np.testing.assert_array_equal(ours.mask, book.mask)
    assert ours.mask.dtype == np.float32
    np.testing.assert_array_equal(ours.backward(xs), book.backward(xs))
    ours.train_flg = False
    assert ours.forward(xs) is xs  # evaluation: the identity


class BookTimeAttention:
    """ch08/attention_layer.py's TimeAttention as the book writes it: one Attention per decoder step, each
    an AttentionWeight (h against every encoder state, Softmax) and a WeightSum."""

    def __init__(self, Softmax):
        self.Softmax = Softmax

    def forward(self, hs_enc, hs_dec):
        Nb, Td, Hb = hs_dec.shape
        out = np.empty_like(hs_dec)
        self.steps, self.attention_weights = [], []
        for t in range(Td):
            h = hs_dec[:, t]
            softmax = self.Softmax()
            a = softmax.forward(np.sum(hs_enc * h.reshape(Nb, 1, Hb), axis=2))
            out[:, t] = np.sum(hs_enc * a.reshape(Nb, -1, 1), axis=1)
            self.steps.append((h, a, softmax))
            self.attention_weights.append(a)
        self.hs_enc = hs_enc
        return out

    def backward(self, dout):
        hs_enc = self.hs_enc
        dhs_enc, dhs_dec = 0, np.empty_like(dout)
        for t, (h, a, softmax) in enumerate(self.steps):
            dc = dout[:, t]
            dhs0 = a[:, :, None] * dc[:, None, :]
            da = np.sum(dc[:, None, :] * hs_enc, axis=2)
            ds = softmax.backward(da)
            dhs1 = ds[:, :, None] * h[:, None, :]
            dhs_dec[:, t] = np.sum(ds[:, :, None] * hs_enc, axis=1)
            dhs_enc += dhs0 + dhs1
        return dhs_enc, dhs_dec


def test_attention_equals_the_books_and_keeps_its_list_of_weights(dlfs2, rng):
    from common.layers import Softmax

    hs_enc, hs_dec, dout = f32(rng, N, T, H), f32(rng, N, 4, H), f32(rng, N, 4, H)
    ours, book = TL.TimeAttention(), BookTimeAttention(Softmax)
    np.testing.assert_allclose(ours.forward(hs_enc, hs_dec), book.forward(hs_enc, hs_dec), rtol=1e-5, atol=1e-6)
    assert isinstance(ours.attention_weights, list) and len(ours.attention_weights) == 4
    for a, b in zip(ours.attention_weights, book.attention_weights):
        assert a.shape == (N, T)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    # ch08/visualize_attention.py: np.array(weights) of a one-example batch -> (Td, 1, Te)
    assert np.array(ours.attention_weights).shape == (4, N, T)
    for a, b in zip(ours.backward(dout), book.backward(dout)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    step = TL.Attention()
    c = step.forward(hs_enc, hs_dec[:, 0])
    np.testing.assert_allclose(c, ours.forward(hs_enc, hs_dec)[:, 0], rtol=1e-5, atol=1e-6)
    assert step.attention_weight.shape == (N, T) and step.attention_weight_layer is step.weight_layer
    assert isinstance(step.weight_sum_layer, TL.WeightSum.__mro__[1])


def test_star_import_binds_what_the_books_does(dlfs2):
    import common.time_layers as B

    ours = {}
    exec("from nprnn.dlfs2.time_layers import *", ours)
    book = {}
    exec("from common.time_layers import *", book)
    missing = {k for k in book if not k.startswith("_")} - set(ours) - {"sys"}
    assert not missing, missing
    assert ours["np"] is np and ours["GPU"] is False
    assert B  # the reference imported
