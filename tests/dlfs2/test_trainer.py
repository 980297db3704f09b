"""nprnn.dlfs2.trainer against the textbook's common.trainer: the same batches, shuffles, printed lines,
loss and perplexity lists, and the same merging of shared weights."""

import re

import matplotlib
import numpy as np
import pytest

from nprnn.dlfs2 import optimizer, time_layers
from nprnn.dlfs2.trainer import RnnlmTrainer, Trainer, remove_duplicate

matplotlib.use("Agg")


class TinyLM:
    """Embedding -> stateful LSTM -> affine tied to the embedding, built from nprnn.dlfs2's layers."""

    def __init__(self, V=11, H=6, seed=0):
        rng = np.random.default_rng(seed)
        embed = (rng.standard_normal((V, H)) / 10).astype("f")
        Wx, Wh = (rng.standard_normal((H, 4 * H)) / np.sqrt(H)).astype("f"), (rng.standard_normal((H, 4 * H)) / 3)
        self.layers = [
            time_layers.TimeEmbedding(embed),
            time_layers.TimeLSTM(Wx, Wh.astype("f"), np.zeros(4 * H, "f"), stateful=True),
            time_layers.TimeAffine(embed.T, np.zeros(V, "f")),
        ]
        self.loss_layer = time_layers.TimeSoftmaxWithLoss()
        self.params = [p for layer in self.layers for p in layer.params]
        self.grads = [g for layer in self.layers for g in layer.grads]

    def forward(self, xs, ts):
        for layer in self.layers:
            xs = layer.forward(xs)
        return self.loss_layer.forward(xs, ts)

    def backward(self, dout=1):
        dout = self.loss_layer.backward(dout)
        for layer in reversed(self.layers):
            dout = layer.backward(dout)


class TinyClassifier:
    """forward(x, t) -> loss of an affine softmax classifier, for Trainer."""

    def __init__(self, seed=0):
        rng = np.random.default_rng(seed)
        self.W = (rng.standard_normal((4, 3)) / 2).astype("f")
        self.params, self.grads = [self.W], [np.zeros_like(self.W)]
        self.loss = time_layers.SoftmaxWithLoss()

    def forward(self, x, t):
        self.x = x
        return self.loss.forward(x @ self.W, t)

    def backward(self, dout=1):
        self.grads[0][...] = self.x.T @ self.loss.backward(dout)


def without_times(text):
    return re.sub(r"time \d+\[s\]", "time _", text)


def test_rnnlm_trainer_equals_the_books(dlfs2, capsys):
    from common.trainer import RnnlmTrainer as BookTrainer

    corpus = np.random.default_rng(1).integers(0, 11, 400)
    xs, ts = corpus[:-1], corpus[1:]
    ours, book = RnnlmTrainer(TinyLM(), optimizer.SGD(1.0)), BookTrainer(TinyLM(), optimizer.SGD(1.0))
    ours.fit(xs, ts, max_epoch=2, batch_size=3, time_size=5, max_grad=0.5, eval_interval=4)
    printed = capsys.readouterr().out
    book.fit(xs, ts, max_epoch=2, batch_size=3, time_size=5, max_grad=0.5, eval_interval=4)
    assert without_times(printed) == without_times(capsys.readouterr().out)
    assert ours.time_idx == book.time_idx and ours.current_epoch == book.current_epoch == 2
    np.testing.assert_allclose(ours.ppl_list, book.ppl_list, rtol=1e-6)
    for a, b in zip(ours.model.params, book.model.params):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    ours.plot(ylim=(0, 50))


def test_get_batch_equals_the_books(dlfs2):
    from common.trainer import RnnlmTrainer as BookTrainer

    x, t = np.arange(97), np.arange(97) * 2
    ours, book = RnnlmTrainer(None, None), BookTrainer(None, None)
    ours.time_idx = book.time_idx = 0
    for _ in range(5):  # past the end of the data: the streams wrap around
        for a, b in zip(ours.get_batch(x, t, 4, 7), book.get_batch(x, t, 4, 7)):
            assert a.dtype == b.dtype == np.int32
            np.testing.assert_array_equal(a, b)


def test_trainer_equals_the_books_with_the_same_shuffles(dlfs2, capsys):
    from common.trainer import Trainer as BookTrainer

    rng = np.random.default_rng(2)
    x, t = rng.standard_normal((50, 4)).astype("f"), rng.integers(0, 3, 50)
    ours, book = Trainer(TinyClassifier(), optimizer.Adam(0.05)), BookTrainer(TinyClassifier(), optimizer.Adam(0.05))
    np.random.seed(3)  # noqa: NPY002 (the book shuffles with the global generator)
    ours.fit(x, t, max_epoch=3, batch_size=8, max_grad=1.0, eval_interval=2)
    printed = capsys.readouterr().out
    np.random.seed(3)  # noqa: NPY002
    book.fit(x, t, max_epoch=3, batch_size=8, max_grad=1.0, eval_interval=2)
    assert without_times(printed) == without_times(capsys.readouterr().out)
    np.testing.assert_allclose(ours.loss_list, book.loss_list, rtol=1e-6)
    np.testing.assert_allclose(ours.model.W, book.model.W, rtol=1e-6)
    ours.plot()


@pytest.mark.parametrize("case", ["tied view", "same array", "equal copy", "symmetric", "none"])
def test_remove_duplicate_equals_the_books(dlfs2, rng, case):
    from common.trainer import remove_duplicate as book_remove_duplicate

    A = rng.standard_normal((4, 3))
    S = rng.standard_normal((3, 3))
    extra = {
        "tied view": A.T,
        "same array": A,
        "equal copy": A.T.copy(),  # the book merges equal values, not only views
        "symmetric": S.T,  # a (3, 3) view: merged as a transpose
        "none": rng.standard_normal((3, 4)),
    }[case]
    params = [A, rng.standard_normal(5), S, extra, rng.standard_normal((3, 3))]
    grads = [rng.standard_normal(p.shape) for p in params]
    p1, g1 = remove_duplicate(params, [g.copy() for g in grads])
    p2, g2 = book_remove_duplicate(params, [g.copy() for g in grads])
    assert [id(p) for p in p1] == [id(p) for p in p2] and len(params) == 5
    for a, b in zip(g1, g2):
        np.testing.assert_array_equal(a, b)
