"""Each chapter's models built the way the book's scripts build them, once from nprnn.dlfs2 and once from the
textbook's common (../shared/reference/dlfs2), seeded alike: the losses of the first iterations, the
evaluation results and the perplexity of a saved-and-reloaded model agree.

The models are reconstructed in book_models.py; the data are slices of ../shared/data so this stays fast.
"""

import numpy as np
import pytest

from . import book_models

LOSS_RTOL = 1e-6  # float32, the same initial weights: measured 0.6-2e-7 over the first iterations


@pytest.fixture(scope="module")
def both(dlfs2):
    return {name: book_models.load(name) for name in ("nprnn.dlfs2", "common")}


@pytest.fixture(scope="module")
def ptb(shared_dir):
    train, w2i = book_models.load_ptb(shared_dir / "data" / "ptb" / "ptb.train.txt", max_words=3000)
    test, w2i = book_models.load_ptb(shared_dir / "data" / "ptb" / "ptb.test.txt", max_words=700, word_to_id=w2i)
    return train, np.minimum(test, len(w2i) - 1), len(w2i)


def seeded(seed, fn, *args, **kwargs):
    np.random.seed(seed)  # noqa: NPY002 (the book's scripts draw from the global generator)
    return fn(*args, **kwargs)


def train_lm(pkg, model_name, corpus, V, sizes, lr, max_grad, seed, epochs=1, time_size=5, batch_size=10, **kw):
    """ch05/train.py, ch06/train_rnnlm.py, ch06/train_better_rnnlm.py: RnnlmTrainer + SGD, eval_interval=1."""
    model = seeded(seed, getattr(book_models.models(pkg), model_name), V, *sizes, **kw)
    trainer = pkg.trainer.RnnlmTrainer(model, pkg.optimizer.SGD(lr))
    xs, ts = corpus[:-1], corpus[1:]
    np.random.seed(seed + 1)  # noqa: NPY002 (the dropout masks)
    trainer.fit(xs, ts, max_epoch=epochs, batch_size=batch_size, time_size=time_size, max_grad=max_grad,
                eval_interval=1)  # fmt: skip
    return model, trainer


def test_ch05_simple_rnnlm(both, ptb, capsys):
    corpus, _, _ = ptb
    corpus = corpus[:1000]  # ch05/train.py: the first 1000 words
    V = int(corpus.max()) + 1
    runs = {k: train_lm(p, "SimpleRnnlm", corpus, V, (100, 100), 0.1, None, seed=0) for k, p in both.items()}
    ours, book = runs["nprnn.dlfs2"][1].ppl_list, runs["common"][1].ppl_list
    assert len(ours) == len(book) == 999 // (10 * 5)  # batch 10 x time 5, one epoch
    np.testing.assert_allclose(np.log(ours[:10]), np.log(book[:10]), rtol=LOSS_RTOL)
    np.testing.assert_allclose(ours, book, rtol=1e-5)


@pytest.mark.parametrize("model_name,sizes,kw", [("Rnnlm", (32, 32), {}),
                                                 ("BetterRnnlm", (32, 32), {"dropout_ratio": 0.5})])  # fmt: skip
def test_ch06_rnnlm_losses_and_saved_perplexity(both, ptb, tmp_path, capsys, model_name, sizes, kw):
    corpus, test, V = ptb
    runs = {
        k: train_lm(p, model_name, corpus, V, sizes, 20.0, 0.25, seed=3, time_size=7, batch_size=10, **kw)
        for k, p in both.items()
    }
    ours, book = runs["nprnn.dlfs2"], runs["common"]
    n = 8
    np.testing.assert_allclose(np.log(ours[1].ppl_list[:n]), np.log(book[1].ppl_list[:n]), rtol=LOSS_RTOL)
    np.testing.assert_allclose(np.log(ours[1].ppl_list), np.log(book[1].ppl_list), rtol=1e-5)

    # ch06: reset_state, eval_perplexity on the test corpus, save_params; then a fresh model loads the file
    ppl = {}
    for k, (model, _) in runs.items():
        model.reset_state()
        ppl[k] = both[k].util.eval_perplexity(model, test, batch_size=5, time_size=7)
        model.save_params(str(tmp_path / f"{k}.pkl"))
    assert ppl["nprnn.dlfs2"] == pytest.approx(ppl["common"], rel=1e-5)
    reloaded = {}
    for k, pkg in both.items():
        for saved in ("nprnn.dlfs2", "common"):  # each package reads the other's file
            model = seeded(9, getattr(book_models.models(pkg), model_name), V, *sizes, **kw)
            model.load_params(str(tmp_path / f"{saved}.pkl"))
            reloaded[k, saved] = pkg.util.eval_perplexity(model, test, batch_size=5, time_size=7)
    # the same float16 weights in both packages: perplexities equal to float32 rounding
    assert reloaded["nprnn.dlfs2", "common"] == pytest.approx(reloaded["common", "common"], rel=1e-5)
    assert reloaded["nprnn.dlfs2", "nprnn.dlfs2"] == pytest.approx(reloaded["common", "nprnn.dlfs2"], rel=1e-5)
    assert reloaded["nprnn.dlfs2", "nprnn.dlfs2"] == pytest.approx(ppl["nprnn.dlfs2"], rel=1e-2)  # float16 save


def train_seq2seq(pkg, model_name, data, seed, D=16, H=32, reverse=True, epochs=1, batch_size=32):
    """ch07/train_seq2seq.py and ch08/train.py: Trainer + Adam, max_grad 5, then eval_seq2seq on the test
    questions; eval_interval=1 records every iteration's loss."""
    (x_train, t_train), (x_test, t_test), char_to_id, id_to_char = data
    if reverse:
        x_train, x_test = x_train[:, ::-1], x_test[:, ::-1]
    model = seeded(seed, getattr(book_models.models(pkg), model_name), len(char_to_id), D, H)
    trainer = pkg.trainer.Trainer(model, pkg.optimizer.Adam())
    np.random.seed(seed + 1)  # noqa: NPY002 (the shuffles)
    trainer.fit(x_train, t_train, max_epoch=epochs, batch_size=batch_size, max_grad=5.0, eval_interval=1)
    correct = [pkg.util.eval_seq2seq(model, x_test[[i]], t_test[[i]], id_to_char, i < 2, reverse) for i in range(20)]
    guesses = [model.generate(x_test[[i]], int(t_test[i, 0]), t_test.shape[1] - 1) for i in range(20)]
    return model, trainer, correct, guesses


@pytest.mark.parametrize("model_name", ["Seq2seq", "PeekySeq2seq"])
def test_ch07_seq2seq(both, shared_dir, capsys, model_name):
    data = book_models.load_seq2seq(shared_dir / "data" / "seq2seq" / "addition.txt", max_lines=1000)
    runs = {k: train_seq2seq(p, model_name, data, seed=5) for k, p in both.items()}
    ours, book = runs["nprnn.dlfs2"], runs["common"]
    np.testing.assert_allclose(ours[1].loss_list[:10], book[1].loss_list[:10], rtol=LOSS_RTOL)
    np.testing.assert_allclose(ours[1].loss_list, book[1].loss_list, rtol=1e-5)
    assert ours[2] == book[2]
    assert [list(map(int, g)) for g in ours[3]] == [list(map(int, g)) for g in book[3]]


def test_ch08_attention_seq2seq(both, shared_dir, capsys):
    data = book_models.load_seq2seq(shared_dir / "data" / "seq2seq" / "date.txt", max_lines=600)
    runs = {k: train_seq2seq(p, "AttentionSeq2seq", data, seed=7, H=32) for k, p in both.items()}
    ours, book = runs["nprnn.dlfs2"], runs["common"]
    np.testing.assert_allclose(ours[1].loss_list[:10], book[1].loss_list[:10], rtol=LOSS_RTOL)
    np.testing.assert_allclose(ours[1].loss_list, book[1].loss_list, rtol=1e-5)
    assert ours[2] == book[2]
    assert [list(map(int, g)) for g in ours[3]] == [list(map(int, g)) for g in book[3]]
    # ch08/visualize_attention.py reads the decoder's list of weights after a forward
    (x_train, t_train), *_ = data
    for model in (ours[0], book[0]):
        model.forward(x_train[[0]][:, ::-1], t_train[[0]])
        d = np.array(model.decoder.attention.attention_weights)
        assert d.shape == (t_train.shape[1] - 1, 1, x_train.shape[1])
    a, b = (np.array(m.decoder.attention.attention_weights) for m in (ours[0], book[0]))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
