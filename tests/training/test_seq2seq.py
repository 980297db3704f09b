"""Seq2seqTrainer, seq2seq checkpoints, exact-match accuracy and the textbook import, on a tiny
generated task in the textbook's file format (answer = the question written backwards)."""

import json
import os
import pickle
import signal
from collections import Counter

import numpy as np
import pytest

from nprnn.checkpoint import load_checkpoint, save_checkpoint
from nprnn.data.seq2seq import DATA_DIR_ENV, Seq2seqDataError, find_data, load_data_like, load_seq2seq
from nprnn.interop.book import BookParamsError, import_book_seq2seq
from nprnn.models.decode import attention_weights, exact_match, predict, translate
from nprnn.models.io import load_seq2seq as load_seq2seq_model
from nprnn.models.io import save_seq2seq as save_seq2seq_model
from nprnn.models.seq2seq import build_model, plot_attention
from nprnn.training.loop import NumericError
from nprnn.training.seq2seq import Seq2seqConfig, Seq2seqTrainer


def save_attention_plot(model, vocab, question, path):
    weights, question_chars, answer_chars = attention_weights(model, vocab, question)
    return plot_attention(weights, question_chars, answer_chars, path)


def toy_lines(n=600, seed=0, width=4, symbols="abcd"):
    """``"abca _acba"``: a question of ``width`` symbols and a space, its answer written backwards."""
    rng = np.random.default_rng(seed)
    words = ["".join(rng.choice(list(symbols), width)) for _ in range(n)]
    return [f"{w} _{w[::-1]}\n" for w in words]


@pytest.fixture
def toy_file(tmp_path):
    path = tmp_path / "toy.txt"
    path.write_text("".join(toy_lines()))
    return path


@pytest.fixture
def toy(toy_file):
    return load_seq2seq(toy_file, reverse=True)


def make(data, out_dir, kind="attention", hidden=32, **overrides):
    settings = dict(epochs=5, batch_size=16, lr=0.02, seed=0)
    settings.update(overrides)
    config = Seq2seqConfig(**settings)
    model = build_model(kind, data.vocab_size, 8, hidden, seed=config.seed)
    return Seq2seqTrainer(model, data, config, out_dir, log=lambda *_: None, progress_bar=False)


def params_equal(a, b):
    return len(a.params) == len(b.params) and all(np.array_equal(p, q) for p, q in zip(a.params, b.params))


# ---------------------------------------------------------------- training


def test_trainer_learns_the_toy_task(toy, toy_file, tmp_path):
    trainer = make(toy, tmp_path / "run")
    assert trainer.iters_per_epoch == len(toy.x_train) // 16  # the textbook drops the last partial batch
    assert exact_match(trainer.model, toy.x_test, toy.t_test) < 0.05
    history = trainer.run()
    assert [r["epoch"] for r in history] == [1, 2, 3, 4, 5]
    assert history[0]["test_accuracy"] < 0.8 and history[-1]["test_accuracy"] >= 0.9
    assert history[-1]["train_loss"] < 0.3 * history[0]["train_loss"]
    # the logged accuracy is the model's on the test split
    assert history[-1]["test_accuracy"] == exact_match(trainer.model, toy.x_test, toy.t_test)
    for name in ("checkpoint.npz", "metrics.jsonl", "accuracy.png"):
        assert (tmp_path / "run" / name).stat().st_size > 0
    with open(tmp_path / "run" / "accuracy.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert logged == history
    model, _, _, meta = load_seq2seq_model(tmp_path / "run" / "checkpoint.npz")
    assert params_equal(model, trainer.model) and meta["progress"]["epoch"] == 5
    assert meta["data"] == str(toy_file.resolve())  # so eval and resume find the data without --data


def test_same_seed_same_numbers(toy, tmp_path):
    a, b = make(toy, tmp_path / "a", epochs=1), make(toy, tmp_path / "b", epochs=1)
    a.run(), b.run()
    assert params_equal(a.model, b.model)
    c = make(toy, tmp_path / "c", epochs=1, seed=1)
    c.run()
    assert not np.array_equal(a.model.params[0], c.model.params[0])


def test_each_epoch_draws_a_new_seeded_order(toy, tmp_path, monkeypatch):
    runs = []

    def batches_seen(seed):
        runs.append(seed)
        trainer = make(toy, tmp_path / f"order{len(runs)}", epochs=2, seed=seed)
        seen = []
        monkeypatch.setattr(trainer, "step", lambda x, t: seen.append(x.copy()) or 1.0)
        trainer.run()
        return np.array(seen)

    first, again, other = batches_seen(0), batches_seen(0), batches_seen(1)
    n = len(first) // 2
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first[:n], first[n:])  # reshuffled every epoch
    assert not np.array_equal(first, other)
    # each epoch draws rows without replacement: no row more often than it is in the split
    available = Counter(map(tuple, toy.x_train))
    for epoch in (first[:n], first[n:]):
        used = Counter(map(tuple, epoch.reshape(-1, toy.question_width)))
        assert sum(used.values()) == n * 16 and all(used[q] <= available[q] for q in used)


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_resume_mid_epoch_is_exact(toy, tmp_path, monkeypatch, schedule):
    """A run that crashes mid-epoch and resumes from its last checkpoint ends with the very same parameters."""
    full = make(toy, tmp_path / "full", epochs=3, save_every=5, schedule=schedule)
    full.run()

    crashing = make(toy, tmp_path / "crash", epochs=3, save_every=5, schedule=schedule)
    crash_at = crashing.iters_per_epoch + 9  # in the second epoch, 2 steps after the checkpoint at step 40
    real_step = Seq2seqTrainer.step

    def step_then_crash(self, x, t):
        if self.progress.step == crash_at:
            raise RuntimeError("simulated crash")
        return real_step(self, x, t)

    monkeypatch.setattr(Seq2seqTrainer, "step", step_then_crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashing.run()
    monkeypatch.setattr(Seq2seqTrainer, "step", real_step)

    resumed = resume(toy, tmp_path / "crash")
    assert resumed.progress.step == crash_at - crash_at % 5 and 0 < resumed.progress.iteration
    assert resumed.progress.epoch == 1
    resumed.run()
    for p, q in zip(full.model.params, resumed.model.params):
        np.testing.assert_array_equal(p, q)
    assert [r["test_accuracy"] for r in resumed.progress.history] == [r["test_accuracy"] for r in full.progress.history]
    assert [r["train_loss"] for r in resumed.progress.history] == [r["train_loss"] for r in full.progress.history]


def resume(data, out_dir):
    model, vocab, arrays, meta = load_seq2seq_model(out_dir / "checkpoint.npz")
    trainer = Seq2seqTrainer(
        model,
        load_data_like(data.path, vocab),
        Seq2seqConfig(**meta["train"]),
        out_dir,
        log=lambda *_: None,
        progress_bar=False,
    )
    trainer.restore(arrays, meta, out_dir)
    return trainer


def test_resume_at_an_epoch_boundary_is_exact(toy, tmp_path):
    full = make(toy, tmp_path / "full", epochs=2)
    full.run()
    first = make(toy, tmp_path / "half", epochs=1)
    first.run()
    resumed = resume(toy, tmp_path / "half")
    resumed.config.epochs = 2
    resumed.run()
    assert params_equal(full.model, resumed.model)


def test_sigint_saves_a_resumable_checkpoint(toy, tmp_path, monkeypatch):
    full = make(toy, tmp_path / "full", epochs=2)
    full.run()
    trainer = make(toy, tmp_path / "int", epochs=2)
    real_step = Seq2seqTrainer.step

    def step_and_interrupt(self, x, t):
        loss = real_step(self, x, t)
        if self.progress.step == 40:
            os.kill(os.getpid(), signal.SIGINT)  # handled: the trainer stops at the step boundary
        return loss

    monkeypatch.setattr(Seq2seqTrainer, "step", step_and_interrupt)
    with pytest.raises(KeyboardInterrupt, match="interrupted at step 41"):
        trainer.run()
    monkeypatch.setattr(Seq2seqTrainer, "step", real_step)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    resumed = resume(toy, tmp_path / "int")
    assert resumed.progress.step == 41
    resumed.run()
    assert params_equal(full.model, resumed.model)


def test_nan_stops_training_and_keeps_the_checkpoint(toy, tmp_path):
    trainer = make(toy, tmp_path / "nan", epochs=1)
    trainer.run()
    before = (tmp_path / "nan" / "checkpoint.npz").read_bytes()
    trainer.config.epochs = 2
    trainer.model.params[1][0, 0] = np.nan
    params_before = [p.copy() for p in trainer.model.params]
    with pytest.raises(NumericError, match=r"became nan at epoch 2, step \d+; stopped before updating"):
        trainer.run()
    assert (tmp_path / "nan" / "checkpoint.npz").read_bytes() == before
    for p, q in zip(params_before, trainer.model.params):
        np.testing.assert_array_equal(p, q)


def test_cosine_schedule_sets_the_lr_of_every_update(toy, tmp_path, monkeypatch):
    trainer = make(toy, tmp_path / "cos", epochs=2, lr=0.02, schedule="cosine")
    total = 2 * trainer.iters_per_epoch

    def lr_at(trainer, step):
        trainer.progress.step = step
        return trainer.lr

    trainer.learning_rate = lambda step: lr_at(trainer, step)
    assert trainer.learning_rate(0) == 0.02
    assert trainer.learning_rate(total // 2) == pytest.approx(0.01, rel=1e-12) and total % 2 == 0
    assert trainer.learning_rate(total) == 0.0 == trainer.learning_rate(total + 5)
    trainer.progress.step = 0
    seen = []
    real_update = type(trainer.optimizer).update
    monkeypatch.setattr(
        type(trainer.optimizer),
        "update",
        lambda self, p, g, **options: (seen.append(self.lr), real_update(self, p, g, **options)),
    )
    trainer.run()
    assert seen == pytest.approx([0.01 * (1 + np.cos(np.pi * k / total)) for k in range(total)], rel=1e-12)
    assert [r["lr"] for r in trainer.progress.history] == [seen[total // 2 - 1], seen[-1]]
    constant = make(toy, tmp_path / "const", epochs=1, lr=0.02)
    assert lr_at(constant, 0) == lr_at(constant, 10**6) == 0.02


def test_bad_settings(toy, tmp_path, write_lines):
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        Seq2seqConfig(batch_size=0).validate()
    with pytest.raises(ValueError, match="lr must be a positive finite number, got 0"):
        Seq2seqConfig(lr=0).validate()
    with pytest.raises(ValueError, match="beam must be a positive integer"):
        Seq2seqConfig(beam=0).validate()
    with pytest.raises(ValueError, match="schedule must be one of none, plateau, step, cosine, got 'linear'"):
        Seq2seqConfig(schedule="linear").validate()
    with pytest.raises(ValueError, match=r"batch size 1000 is larger than the training split \(540 examples\)"):
        make(toy, tmp_path, batch_size=1000)
    few = load_seq2seq(write_lines(toy_lines(n=9)))
    with pytest.raises(ValueError, match="the test split is empty .* at least 10 lines"):
        make(few, tmp_path, batch_size=2)
    with pytest.raises(ValueError, match="model must be one of seq2seq, peeky, attention, got 'gru'"):
        build_model("gru", 5)


# ---------------------------------------------------------------- decoding and accuracy


@pytest.mark.parametrize("kind", ["seq2seq", "peeky", "attention"])
def test_exact_match_counts_whole_answers(toy, kind):
    model = build_model(kind, toy.vocab_size, 8, 16, seed=3)
    for p in model.params:  # far from uniform, so the answers vary
        p *= 20
    x = toy.x_test
    greedy = model.generate(x, toy.start_id, toy.answer_width - 1)
    np.testing.assert_array_equal(predict(model, x, toy.start_id, toy.answer_width - 1, batch_size=7), greedy)
    np.testing.assert_array_equal(predict(model, x, toy.start_id, toy.answer_width - 1, beam=1), greedy)
    beam = predict(model, x, toy.start_id, toy.answer_width - 1, beam=3, batch_size=7)
    np.testing.assert_array_equal(beam, model.beam_search(x, toy.start_id, toy.answer_width - 1, 3)[0])

    t = np.concatenate((np.full((len(x), 1), toy.start_id), greedy), axis=1)
    assert exact_match(model, x, t) == 1.0
    t[:5, -1] = (t[:5, -1] + 1) % toy.vocab_size  # five answers wrong in their last character only
    assert exact_match(model, x, t) == pytest.approx(1 - 5 / len(x))
    assert exact_match(model, x, t, beam=2) == np.mean(np.all(predict(model, x, toy.start_id, 4, 2) == t[:, 1:], 1))
    with pytest.raises(ValueError, match=r"beam \(1 is greedy decoding\) must be a positive integer"):
        predict(model, x, toy.start_id, 5, beam=0)


def test_translate_and_attention_plot(toy, tmp_path):
    import matplotlib.image

    trainer = make(toy, tmp_path / "run")
    trainer.run()
    model, vocab, _, _ = load_seq2seq_model(tmp_path / "run" / "checkpoint.npz")
    questions = [toy.decode_question(q).rstrip() for q in toy.x_test[:20]]
    answers = [toy.decode(t[1:]).rstrip() for t in toy.t_test[:20]]
    got = translate(model, vocab, questions)
    assert got == [toy.decode(a).rstrip() for a in predict(model, toy.x_test[:20], toy.start_id, 4)]
    assert np.mean([g == a for g, a in zip(got, answers)]) >= 0.9
    beam = [toy.decode(a).rstrip() for a in predict(model, toy.x_test[:20], toy.start_id, 4, beam=4)]
    assert translate(model, vocab, questions, beam=4) == beam
    png = save_attention_plot(model, vocab, "abcd", tmp_path / "att.png")
    image = matplotlib.image.imread(png)
    assert image.ndim == 3 and image.shape[0] > 50
    with pytest.raises(ValueError, match="characters not in the vocabulary"):
        translate(model, vocab, ["abxd"])
    with pytest.raises(ValueError, match="at most 5"):
        translate(model, vocab, ["abcdabcd"])
    peeky = build_model("peeky", toy.vocab_size, 8, 8)
    with pytest.raises(ValueError, match="an attention map needs an attention model; this one is a PeekySeq2seq"):
        save_attention_plot(peeky, vocab, "abcd", tmp_path / "no.png")


def test_attention_follows_the_reversal(toy, tmp_path):
    """A trained model answering the reversed question looks at the mirrored input position:
    output character k comes from question character width - 1 - k (in reading order)."""
    trainer = make(toy, tmp_path / "run")
    trainer.run()
    model = trainer.model
    x = toy.x_test[:50]
    answer = model.generate(x, toy.start_id, 4)
    weights = model.attention_map(x, toy.start_id, answer)[:, :, ::-1]  # reading order of the question
    np.testing.assert_allclose(weights.argmax(axis=2).mean(axis=0), [3, 2, 1, 0], atol=0.5)
    # the plotted map: rows are answer characters, columns the question as written
    weights, question, answer = attention_weights(model, toy, "abcd")
    assert question == list("abcd") and answer == list("dcba")  # the padding column is left out
    assert weights.shape == (4, 4) and weights.argmax(axis=1).tolist() == [3, 2, 1, 0]


# ---------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("kind", ["seq2seq", "peeky", "attention"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_checkpoint_round_trip(toy, tmp_path, kind, dtype):
    model = build_model(kind, toy.vocab_size, 5, 7, seed=2, dtype=dtype)
    save_seq2seq_model(tmp_path / "m.npz", model, toy, extra_meta={"note": "x"})
    loaded, vocab, arrays, meta = load_seq2seq_model(tmp_path / "m.npz")
    assert type(loaded) is type(model) and params_equal(loaded, model)
    assert all(p.dtype == dtype for p in loaded.params)
    assert (loaded.vocab_size, loaded.wordvec_size, loaded.hidden_size) == (toy.vocab_size, 5, 7)
    assert vocab.char_to_id == toy.char_to_id and vocab.id_to_char == toy.id_to_char
    assert (vocab.question_width, vocab.answer_width, vocab.reverse) == (5, 5, True)
    assert meta["note"] == "x" and arrays["vocab"].dtype == np.int32
    np.testing.assert_array_equal(
        loaded.generate(toy.x_test, toy.start_id, 4), model.generate(toy.x_test, toy.start_id, 4)
    )
    # stored without pickle: plain np.load with allow_pickle=False reads it
    with np.load(tmp_path / "m.npz", allow_pickle=False) as z:
        assert z["param/000"].shape == model.params[0].shape


def test_any_character_survives_the_checkpoint(tmp_path, write_lines):
    """The vocabulary is stored as code points, so NUL, non-ASCII and '_' inside answers come back."""
    lines = [f"{q}_{a}\n" for q, a in [("\x00é ", "ü_1"), ("ab€", "__2"), ("\x00\x00a", "é 3")] * 4]
    data = load_seq2seq(write_lines(lines))
    model = build_model("seq2seq", data.vocab_size, 3, 4)
    save_seq2seq_model(tmp_path / "m.npz", model, data)
    _, vocab, _, _ = load_seq2seq_model(tmp_path / "m.npz")
    assert vocab.char_to_id == data.char_to_id and "\x00" in vocab.char_to_id and "€" in vocab.char_to_id


def test_load_refuses_what_is_not_a_seq2seq_checkpoint(toy, tmp_path):
    save_checkpoint(tmp_path / "lm.npz", {"param/000": np.zeros(3)}, {"kind": "nprnn-lm"})
    with pytest.raises(ValueError, match="lm.npz: not a seq2seq model file \\(kind 'nprnn-lm'\\)"):
        load_seq2seq_model(tmp_path / "lm.npz")
    model = build_model("peeky", toy.vocab_size, 4, 6)
    save_seq2seq_model(tmp_path / "m.npz", model, toy)
    arrays, meta = load_checkpoint(tmp_path / "m.npz")
    broken = dict(arrays)
    broken["vocab"] = arrays["vocab"][:-1]
    save_checkpoint(tmp_path / "short.npz", broken, meta)
    with pytest.raises(ValueError, match="short.npz: the vocabulary must be 6 integer code points, got 5"):
        load_seq2seq_model(tmp_path / "short.npz")
    del broken["param/009"]
    broken["vocab"] = arrays["vocab"]
    save_checkpoint(tmp_path / "few.npz", broken, meta)
    with pytest.raises(ValueError, match="few.npz: expected 10 parameter arrays for its config, found 9"):
        load_seq2seq_model(tmp_path / "few.npz")
    with pytest.raises(ValueError, match="holds a model but no training state"):
        make(toy, tmp_path / "r").restore(arrays, meta, "m.npz")


# ---------------------------------------------------------------- data


def test_find_data(tmp_path, toy_file, monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    assert find_data(toy_file) == toy_file
    with pytest.raises(ValueError, match="--data addition: nprnn does not ship .* --data-dir DIR .*NPRNN_DATA_DIR"):
        find_data("addition")
    (tmp_path / "addition.txt").write_text("1+1_2\n")
    assert find_data("addition", tmp_path) == tmp_path / "addition.txt"
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    assert find_data("addition") == tmp_path / "addition.txt"
    with pytest.raises(FileNotFoundError, match="no date.txt in"):
        find_data("date")
    with pytest.raises(FileNotFoundError, match="no such seq2seq data file: nope.txt"):
        find_data("nope.txt")


def test_load_data_like_renumbers_to_the_checkpoints_vocabulary(toy, toy_file, tmp_path, write_lines):
    model = build_model("seq2seq", toy.vocab_size, 3, 4)
    save_seq2seq_model(tmp_path / "m.npz", model, toy)
    _, vocab, _, _ = load_seq2seq_model(tmp_path / "m.npz")
    same = load_data_like(toy_file, vocab)
    np.testing.assert_array_equal(same.x_test, toy.x_test)
    # the same lines in another order: other first appearances, same questions after renumbering
    lines = toy_lines()
    shuffled = write_lines(lines[::-1], "reversed.txt")
    other = load_data_like(shuffled, vocab)
    assert load_seq2seq(shuffled).char_to_id != toy.char_to_id and other.char_to_id == toy.char_to_id
    decoded = {(other.decode_question(x), other.decode(t)) for x, t in zip(other.x_train, other.t_train)}
    assert decoded <= {(line.split("_")[0], "_" + line.split("_")[1][:-1]) for line in lines}
    with pytest.raises(Seq2seqDataError, match=r"z.txt: characters not in the vocabulary: \['z'\]"):
        load_data_like(write_lines([line.replace("a", "z") for line in lines], "z.txt"), vocab)
    with pytest.raises(Seq2seqDataError, match="questions/answers are 6/5 characters wide, the checkpoint's were 5/5"):
        load_data_like(write_lines([" " + line for line in lines], "wide.txt"), vocab)


# ---------------------------------------------------------------- the textbook's saved parameters


@pytest.fixture
def write_lines(tmp_path):
    def write(lines, name="lines.txt"):
        path = tmp_path / name
        path.write_text("".join(lines), encoding="utf-8", newline="")
        return path

    return write


class BookGreedy:
    """What the textbook's eval_seq2seq needs: ``generate(question, start_id, size) -> list``,
    computed with the textbook's own layers (tests/models/test_seq2seq.py's book_generate)."""

    def __init__(self, tl, kind, params):
        self.tl, self.kind, self.params = tl, kind, params

    def generate(self, question, start_id, size):
        from tests.models.test_seq2seq import book_generate

        return book_generate(self.tl, self.kind, self.params, question, start_id, size)


@pytest.mark.parametrize("kind", ["peeky", "attention"])
def test_import_book_reproduces_the_textbooks_accuracy(dlfs2, toy, toy_file, tmp_path, kind):
    from common.base_model import BaseModel
    from common.util import eval_seq2seq

    trainer = make(toy, tmp_path / "run", kind=kind, epochs=3)  # partly trained: accuracy strictly inside (0, 1)
    trainer.run()
    book = BaseModel()
    book.params = trainer.model.params
    book.save_params(str(tmp_path / "book.pkl"))  # the textbook's own writer: float16 pickle
    reloaded = BaseModel()
    reloaded.params = [np.empty_like(p) for p in trainer.model.params]
    reloaded.load_params(str(tmp_path / "book.pkl"))  # and its reader (float16 -> float32)
    book_model = BookGreedy(dlfs2.time_layers, kind, reloaded.params)
    correct = sum(
        eval_seq2seq(book_model, toy.x_test[[i]], toy.t_test[[i]], toy.id_to_char) for i in range(len(toy.x_test))
    )
    book_accuracy = correct / len(toy.x_test)
    assert 0 < book_accuracy < 1

    out = import_book_seq2seq(tmp_path / "book.pkl", kind, toy_file, tmp_path / "imported.npz", reverse=True)
    model, vocab, _, meta = load_seq2seq_model(out)
    assert meta["preset"] == kind and meta["split_seed"] == 1984 and vocab.reverse
    for p, q in zip(model.params, reloaded.params):
        np.testing.assert_array_equal(p, q)
    data = load_data_like(meta["data"], vocab, meta["split_seed"])
    assert exact_match(model, data.x_test, data.t_test) == book_accuracy


def test_import_book_refuses_mismatches(toy, toy_file, tmp_path):
    params = [p.astype(np.float16) for p in build_model("peeky", toy.vocab_size, 4, 6).params]
    with open(tmp_path / "peeky.pkl", "wb") as f:
        pickle.dump(params, f)
    with pytest.raises(
        BookParamsError,
        match=f"but the attention model with the {toy.vocab_size}-character vocabulary .* wrong --preset",
    ):
        import_book_seq2seq(tmp_path / "peeky.pkl", "attention", toy_file, tmp_path / "o.npz")
    with open(tmp_path / "short.pkl", "wb") as f:
        pickle.dump(params[:4], f)
    with pytest.raises(BookParamsError, match="holds 4 arrays .* a textbook seq2seq model has 10"):
        import_book_seq2seq(tmp_path / "short.pkl", "peeky", toy_file, tmp_path / "o.npz")
    with pytest.raises(ValueError, match="preset must be one of seq2seq, peeky, attention"):
        import_book_seq2seq(tmp_path / "peeky.pkl", "rnnlm", toy_file, tmp_path / "o.npz")
    assert not (tmp_path / "o.npz").exists()
    assert import_book_seq2seq(tmp_path / "peeky.pkl", "peeky", toy_file, tmp_path / "o.npz").exists()
