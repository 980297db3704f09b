"""The rnnlm preset trains as the textbook's RnnlmTrainer.fit does: same batches, same state carried
across epochs, same clipping and SGD steps, so the same weights to float32 rounding. (With the
preset's lr 20 on a tiny corpus the training is chaotic: float32 rounding differences of 1e-7 grow
to 1e-1 within 40 steps, so the test uses lr 2.)"""

import numpy as np

from nprnn.data.corpus import load_corpus
from nprnn.models.lm import LanguageModel, LMConfig
from nprnn.training.lm import LMTrainer, TrainConfig
from nprnn.training.presets import split_preset

TEXT = "\n".join(["the cat sat on the mat", "the dog sat on the log", "a cat and a dog met on the mat"] * 40) + "\n"


class BookRnnlm:
    """The textbook's ch06 Rnnlm, composed from its common/ layers as the book's script does."""

    def __init__(self, params):
        from common.time_layers import TimeAffine, TimeEmbedding, TimeLSTM, TimeSoftmaxWithLoss

        W_embed, Wx, Wh, b, W_out, b_out = (p.copy() for p in params)
        self.layers = [TimeEmbedding(W_embed), TimeLSTM(Wx, Wh, b, stateful=True), TimeAffine(W_out, b_out)]
        self.loss_layer = TimeSoftmaxWithLoss()
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

    def reset_state(self):
        self.layers[1].reset_state()


def test_rnnlm_preset_trains_like_the_textbook(tmp_path, dlfs2):
    from common.optimizer import SGD
    from common.trainer import RnnlmTrainer

    path = tmp_path / "tiny.txt"
    path.write_text(TEXT)
    corpus = load_corpus(path, level="word")
    model_settings, train_settings, _ = split_preset(
        "rnnlm",
        {
            "embed": 8,
            "hidden": 10,
            "epochs": 2,
            "batch_size": 4,
            "bptt": 5,
            "eval_batch_size": 2,
            "eval_bptt": 5,
            "lr": 2.0,
        },
    )
    assert train_settings["continuous"] and train_settings["max_grad"] == 0.25
    config = TrainConfig(**train_settings)
    ours = LanguageModel(LMConfig(vocab_size=len(corpus.vocab), **model_settings), seed=0)
    book = BookRnnlm(ours.params)

    LMTrainer(ours, corpus, config, tmp_path / "run", log=lambda *_: None, progress_bar=False).run()
    ids = corpus.train.astype(np.int64)
    RnnlmTrainer(book, SGD(lr=config.lr)).fit(
        ids[:-1], ids[1:], max_epoch=config.epochs, batch_size=config.batch_size, time_size=config.bptt,
        max_grad=config.max_grad, eval_interval=None,
    )  # fmt: skip
    for p_ours, p_book in zip(ours.params, book.params):
        np.testing.assert_allclose(p_ours, p_book, rtol=1e-3, atol=2e-4)
    moved = max(
        np.abs(p - q).max()
        for p, q in zip(
            ours.params,
            BookRnnlm(LanguageModel(LMConfig(vocab_size=len(corpus.vocab), **model_settings), seed=0).params).params,
        )
    )
    assert moved > 1e-2  # training did move the weights, so the agreement above means something
