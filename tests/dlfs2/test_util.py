"""nprnn.dlfs2.util against the textbook's common.util: the same values, dtypes and printed lines."""

import numpy as np
import pytest

from nprnn.dlfs2 import util as U

TEXT = "You say goodbye and I say hello. You say hello and I say goodbye."


def test_corpus_helpers_equal_the_books(dlfs2, rng):
    from common import util as B

    corpus, w2i, i2w = U.preprocess(TEXT)
    corpus_b, w2i_b, i2w_b = B.preprocess(TEXT)
    np.testing.assert_array_equal(corpus, corpus_b)
    assert (w2i, i2w) == (w2i_b, i2w_b)
    V = len(w2i)
    for window in (1, 2, 3):
        C, Cb = U.create_co_matrix(corpus, V, window), B.create_co_matrix(corpus, V, window)
        assert C.dtype == Cb.dtype == np.int32
        np.testing.assert_array_equal(C, Cb)
        c, t = U.create_contexts_target(corpus, window)
        cb, tb = B.create_contexts_target(corpus, window)
        np.testing.assert_array_equal(c, cb)
        np.testing.assert_array_equal(t, tb)
    C = B.create_co_matrix(corpus, V, 1)
    with np.errstate(all="ignore"):
        M, Mb = U.ppmi(C), B.ppmi(C)
    assert M.dtype == Mb.dtype == np.float32
    np.testing.assert_array_equal(M, Mb)
    for ids in (corpus, corpus.reshape(-1, 4)[:3]):
        np.testing.assert_array_equal(U.convert_one_hot(ids, V), B.convert_one_hot(ids, V))


def test_ppmi_verbose_prints_the_books_progress(dlfs2, capsys):
    from common import util as B

    C = np.arange(1, 26, dtype=np.int32).reshape(5, 5)
    U.ppmi(C, verbose=True)
    ours = capsys.readouterr().out
    B.ppmi(C, verbose=True)
    assert ours == capsys.readouterr().out and ours


def test_word_vector_helpers_print_what_the_books_do(dlfs2, rng, capsys):
    from common import util as B

    corpus, w2i, i2w = U.preprocess(TEXT)
    W = rng.standard_normal((len(w2i), 4))
    x, y = W[0], W[1]
    assert U.cos_similarity(x, y) == B.cos_similarity(x, y)
    U.most_similar("you", w2i, i2w, W, top=3)
    ours = capsys.readouterr().out
    B.most_similar("you", w2i, i2w, W, top=3)
    book = capsys.readouterr().out
    names = [line.split(":")[0] for line in ours.splitlines()]
    assert names == [line.split(":")[0] for line in book.splitlines()]
    for a, b in zip(ours.splitlines()[2:], book.splitlines()[2:]):
        assert float(a.split(": ")[1]) == pytest.approx(float(b.split(": ")[1]), rel=1e-12)
    U.most_similar("nope", w2i, i2w, W)
    assert capsys.readouterr().out == "nope is not found\n"
    U.analogy("you", "say", "i", w2i, i2w, W.copy(), top=3, answer="hello")
    ours = capsys.readouterr().out
    B.analogy("you", "say", "i", w2i, i2w, W.copy(), top=3, answer="hello")
    assert ours == capsys.readouterr().out
    for v in (W.copy(), W[0].copy()):
        np.testing.assert_array_equal(U.normalize(v.copy()), B.normalize(v.copy()))


def test_clip_grads_equals_the_books(dlfs2, rng):
    from common.util import clip_grads

    grads = [rng.standard_normal((5, 4)).astype(np.float32), rng.standard_normal(7).astype(np.float32)]
    for max_norm in (100.0, 0.5):  # untouched, then clipped
        ours, book = [g.copy() for g in grads], [g.copy() for g in grads]
        U.clip_grads(ours, max_norm), clip_grads(book, max_norm)
        for a, b in zip(ours, book):
            assert a.dtype == np.float32
            np.testing.assert_allclose(a, b, rtol=1e-6)
    norm = np.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in ours))
    assert norm == pytest.approx(0.5, rel=1e-5)


class TinyLM:
    """A language model whose loss is a fixed function of its batch, so the perplexity is known."""

    def __init__(self, with_flag):
        self.calls = []
        if with_flag:
            self.forward = self.forward_with_flag

    def forward(self, xs, ts):
        self.calls.append((xs.copy(), ts.copy(), None))
        return float(xs.mean() + ts.mean()) / 100

    def forward_with_flag(self, xs, ts, train_flg=True):
        self.calls.append((xs.copy(), ts.copy(), train_flg))
        return float(xs.mean() + ts.mean()) / 100


@pytest.mark.parametrize("with_flag", [False, True])
def test_eval_perplexity_reads_the_books_batches(dlfs2, capsys, with_flag):
    from common.util import eval_perplexity

    corpus = np.arange(1000) % 37
    ours_model, book_model = TinyLM(with_flag), TinyLM(with_flag)
    ppl = U.eval_perplexity(ours_model, corpus, batch_size=4, time_size=9)
    ours_out = capsys.readouterr().out
    assert ppl == eval_perplexity(book_model, corpus, batch_size=4, time_size=9)
    assert ours_out == capsys.readouterr().out
    assert len(ours_model.calls) == len(book_model.calls) == 999 // 36
    for (x, t, f), (xb, tb, fb) in zip(ours_model.calls, book_model.calls):
        np.testing.assert_array_equal(x, xb)
        np.testing.assert_array_equal(t, tb)
        assert x.dtype == xb.dtype == np.int32 and f == fb


def test_eval_perplexity_does_not_hide_a_models_type_error():
    class Broken:
        def forward(self, xs, ts, train_flg=True):
            raise TypeError("a bug inside the model")

    with pytest.raises(TypeError, match="a bug inside"):
        U.eval_perplexity(Broken(), np.arange(100), batch_size=2, time_size=5)


class Echo:
    """generate() returns a fixed guess."""

    def __init__(self, guess):
        self.guess = guess

    def generate(self, xs, start_id, sample_size):
        assert sample_size == len(self.guess)
        return list(self.guess)


@pytest.mark.parametrize("guess", [[3, 4], [4, 4]])
@pytest.mark.parametrize("verbose,reverse", [(False, False), (True, False), (True, True)])
def test_eval_seq2seq_equals_the_books(dlfs2, capsys, guess, verbose, reverse):
    from common.util import eval_seq2seq

    id_to_char = {0: "1", 1: "+", 2: "_", 3: "2", 4: "3"}
    question, correct = np.array([[0, 1, 0]]), np.array([[2, 3, 4]])
    ours = U.eval_seq2seq(Echo(guess), question, correct, id_to_char, verbose, reverse)
    ours_out = capsys.readouterr().out
    assert ours == eval_seq2seq(Echo(guess), question, correct, id_to_char, verbose, reverse)
    assert ours_out == capsys.readouterr().out


def test_to_cpu_and_to_gpu():
    x = np.ones(3)
    assert U.to_cpu(x) is x
    np.testing.assert_array_equal(U.to_cpu([1, 2]), [1, 2])
    try:
        import cupy  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError):
            U.to_gpu(x)
