import os
import signal

import numpy as np
import pytest

from nprnn.models.io import load_lm
from nprnn.models.lm import LanguageModel, LMConfig
from nprnn.training.lm import LMTrainer as Trainer
from nprnn.training.lm import TrainConfig, evaluate
from nprnn.training.loop import NumericError, TrainingLoop

TEXT = "\n".join(["the cat sat on the mat", "the dog sat on the log", "a cat and a dog met on the mat"] * 40) + "\n"


def make(corpus, out_dir, **overrides):
    settings = dict(
        epochs=3, batch_size=4, bptt=6, optimizer="adam", lr=0.01, max_grad=1.0, eval_batch_size=2, eval_bptt=5, seed=1
    )
    settings.update(overrides)
    config = TrainConfig(**settings)
    model = LanguageModel(LMConfig(vocab_size=len(corpus.vocab), embed=16, hidden=16, dropout=0.1), seed=config.seed)
    return Trainer(model, corpus, config, out_dir, log=lambda *_: None, progress_bar=False)


def test_training_drives_perplexity_down(corpus, tmp_path):
    trainer = make(corpus, tmp_path / "run", epochs=4)
    start = evaluate(trainer.model, corpus.train, 2, 5)
    history = trainer.run()
    assert start > 0.5 * len(corpus.vocab)  # an untrained model is about uniform
    assert history[-1]["train_ppl"] < 0.3 * start
    assert history[-1]["valid_ppl"] < 0.3 * start
    for name in ("checkpoint.npz", "best.npz", "metrics.jsonl", "perplexity.png"):
        assert (tmp_path / "run" / name).stat().st_size > 0


def test_same_seed_same_numbers(corpus, tmp_path):
    a, b = make(corpus, tmp_path / "a"), make(corpus, tmp_path / "b")
    a.run(), b.run()
    assert all(np.array_equal(p, q) for p, q in zip(a.model.params, b.model.params))
    c = make(corpus, tmp_path / "c", seed=2)
    c.run()
    assert not np.array_equal(a.model.params[0], c.model.params[0])


def resume(corpus, out_dir):
    model, vocab, arrays, meta = load_lm(out_dir / "checkpoint.npz")
    trainer = Trainer(
        model,
        load_corpus_like(corpus, vocab),
        TrainConfig(**meta["train"]),
        out_dir,
        log=lambda *_: None,
        progress_bar=False,
    )
    trainer.restore(arrays, meta, out_dir)
    return trainer


def load_corpus_like(corpus, vocab):
    assert vocab == corpus.vocab
    return corpus


def test_resume_mid_epoch_is_exact(corpus, tmp_path, monkeypatch):
    """A run that crashes mid-epoch and resumes from its last checkpoint ends with the very same parameters."""
    full = make(corpus, tmp_path / "full", save_every=3)
    full.run()

    crashing = make(corpus, tmp_path / "crash", save_every=3)
    steps_per_epoch = crashing.iters_per_epoch
    crash_at = steps_per_epoch + 5  # inside the second epoch, 2 steps after a checkpoint at a multiple of 3
    real_step = TrainingLoop.step

    def step_then_crash(self, xs, ts):
        if self.progress.step == crash_at:
            raise RuntimeError("simulated crash")
        return real_step(self, xs, ts)

    monkeypatch.setattr(TrainingLoop, "step", step_then_crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashing.run()
    monkeypatch.setattr(TrainingLoop, "step", real_step)

    resumed = resume(corpus, tmp_path / "crash")
    assert resumed.progress.step == crash_at - crash_at % 3 and resumed.progress.iteration > 0
    resumed.run()
    for p, q in zip(full.model.params, resumed.model.params):
        np.testing.assert_array_equal(p, q)
    assert [r["valid_ppl"] for r in resumed.progress.history] == [r["valid_ppl"] for r in full.progress.history]


def test_sigint_saves_a_resumable_checkpoint(corpus, tmp_path, monkeypatch):
    full = make(corpus, tmp_path / "full")
    full.run()

    trainer = make(corpus, tmp_path / "int")
    real_step = TrainingLoop.step

    def step_and_interrupt(self, xs, ts):
        loss = real_step(self, xs, ts)
        if self.progress.step == 7:
            os.kill(os.getpid(), signal.SIGINT)  # handled: the trainer stops at the step boundary
        return loss

    monkeypatch.setattr(TrainingLoop, "step", step_and_interrupt)
    with pytest.raises(KeyboardInterrupt, match="interrupted at step 8"):
        trainer.run()
    monkeypatch.setattr(TrainingLoop, "step", real_step)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored

    resumed = resume(corpus, tmp_path / "int")
    assert resumed.progress.step == 8
    resumed.run()
    for p, q in zip(full.model.params, resumed.model.params):
        np.testing.assert_array_equal(p, q)


def test_nan_stops_training_and_keeps_the_checkpoint(corpus, tmp_path):
    trainer = make(corpus, tmp_path / "nan", epochs=2)
    trainer.config.epochs = 1
    trainer.run()
    before = (tmp_path / "nan" / "checkpoint.npz").read_bytes()
    trainer.config.epochs = 2
    trainer.model.params[1][0, 0] = np.nan
    params_before = [p.copy() for p in trainer.model.params]
    with pytest.raises(NumericError, match=r"became nan at epoch 2, step \d+; stopped before updating"):
        trainer.run()
    assert (tmp_path / "nan" / "checkpoint.npz").read_bytes() == before
    for p, q in zip(params_before, trainer.model.params):
        np.testing.assert_array_equal(p, q)  # the bad step did not update anything


def test_bad_train_config():
    with pytest.raises(ValueError, match="optimizer must be one of"):
        TrainConfig(optimizer="lbfgs").validate()
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        TrainConfig(batch_size=0).validate()
