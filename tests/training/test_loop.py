"""nprnn.training.loop: the lr plan, resume with changed settings, numeric stops, reports, the run lock.

The loop is driven here through the language-model trainer on a tiny corpus (tests/training/test_lm.py
and test_seq2seq.py check what each family adds)."""

import json
import math
import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from nprnn.checkpoint import CheckpointError
from nprnn.data.corpus import load_corpus
from nprnn.models.io import load_lm
from nprnn.models.lm import LanguageModel, LMConfig
from nprnn.training.lm import LMTrainer, TrainConfig
from nprnn.training.loop import (
    LoopConfig,
    NumericError,
    Progress,
    RunLock,
    RunLockedError,
    TrainingLoop,
    config_from_dict,
    learning_rate,
    progress_from_dict,
    write_metrics,
)


def make(corpus, out_dir, **overrides):
    settings = dict(epochs=2, batch_size=4, bptt=6, optimizer="sgd", lr=0.5, max_grad=1.0, eval_batch_size=2,
                    eval_bptt=5, seed=1, max_batches=5)  # fmt: skip
    settings.update(overrides)
    config = TrainConfig(**settings)
    model = LanguageModel(LMConfig(vocab_size=len(corpus.vocab), embed=8, hidden=8), seed=config.seed)
    return LMTrainer(model, corpus, config, out_dir, log=lambda *_: None, progress_bar=False)


def resumed(corpus, out_dir, **changes):
    model, _, arrays, meta = load_lm(out_dir / "checkpoint.npz")
    trainer = LMTrainer(
        model, corpus, config_from_dict(TrainConfig, meta["train"], out_dir), out_dir, log=lambda *_: None,
        progress_bar=False,
    )  # fmt: skip
    trainer.restore(arrays, meta, out_dir)
    return trainer, trainer.change_settings(changes)


def lrs_seen(trainer, monkeypatch):
    seen = []
    real = type(trainer.optimizer).update

    def update(self, params, grads, **options):
        seen.append(self.lr)
        real(self, params, grads, **options)

    monkeypatch.setattr(type(trainer.optimizer), "update", update)
    return seen


# ---------------------------------------------------------------- the lr as a function of the position


def at(epoch, step=0, history=(), plan=None):
    plan = plan or {"step": 0, "epoch": 0, "lr": 1.0, "end": 100}
    return Progress(epoch=epoch, step=step, history=list(history), plan=plan)


def test_step_schedule_multiplies_from_decay_start():
    c = LoopConfig(schedule="step", decay=0.5, decay_start=2)
    assert [learning_rate(c, at(e)) for e in range(5)] == [1.0, 1.0, 0.5, 0.25, 0.125]  # decays after epoch 2 (1-based)


def test_plateau_multiplies_after_each_epoch_that_did_not_improve():
    c = LoopConfig(schedule="plateau", decay=0.25)  # the textbook's divide-by-4
    history = [{"epoch": e + 1, "improved": flag} for e, flag in enumerate([True, False, True, False, False])]
    assert [learning_rate(c, at(e, history=history[:e])) for e in range(6)] == [1, 1, 0.25, 0.25, 0.0625, 0.015625]


def test_cosine_runs_from_the_plan_to_zero_at_its_end():
    c = LoopConfig(schedule="cosine")
    plan = {"step": 10, "epoch": 1, "lr": 2.0, "end": 30}
    assert learning_rate(c, at(1, 10, plan=plan)) == 2.0
    assert learning_rate(c, at(1, 20, plan=plan)) == pytest.approx(1.0)
    assert learning_rate(c, at(1, 29, plan=plan)) > 0  # the last update of the run is not at 0
    assert learning_rate(LoopConfig(schedule="none"), at(3, 99)) == 1.0


def test_decay_has_one_meaning_and_other_values_are_refused():
    for bad in (4.0, 1.0, 0.0, -0.5, math.nan):
        with pytest.raises(ValueError, match=r"decay multiplies the lr and must be in \(0, 1\)"):
            LoopConfig(decay=bad).validate()
    assert LoopConfig(schedule="constant").validate().schedule == "none"  # nprnn 0.1's seq2seq name


def test_plateau_run_follows_its_history(corpus, tmp_path, monkeypatch):
    trainer = make(corpus, tmp_path / "p", schedule="plateau", decay=0.25, epochs=3, lr=0.5)
    flags = iter([True, False, True])
    monkeypatch.setattr(LMTrainer, "validate", lambda self: 10.0 if next(flags) else 20.0)
    seen = lrs_seen(trainer, monkeypatch)
    trainer.run()
    per_epoch = [seen[k * 5] for k in range(3)]
    assert per_epoch == [0.5, 0.5, 0.125]
    assert [r["improved"] for r in trainer.progress.history] == [True, False, False]


# ---------------------------------------------------------------- resume and extension (rules 2 and 8)


def test_resume_with_the_same_settings_is_exact(corpus, tmp_path, monkeypatch):
    full = make(corpus, tmp_path / "full", schedule="cosine", save_every=3)
    full.run()
    part = make(corpus, tmp_path / "part", schedule="cosine", save_every=3)
    real = TrainingLoop.step

    def crash(self, x, t):
        if self.progress.step == 7:
            raise RuntimeError("simulated crash")
        return real(self, x, t)

    monkeypatch.setattr(TrainingLoop, "step", crash)
    with pytest.raises(RuntimeError):
        part.run()
    monkeypatch.setattr(TrainingLoop, "step", real)
    again, shown = resumed(corpus, tmp_path / "part")
    assert shown == [] and again.progress.step == 6
    again.run()
    assert all(np.array_equal(p, q) for p, q in zip(full.model.params, again.model.params))


def test_extending_a_cosine_run_replans_it_over_the_new_total(corpus, tmp_path, monkeypatch):
    first = make(corpus, tmp_path / "cos", schedule="cosine", epochs=2)
    seen = lrs_seen(first, monkeypatch)
    first.run()
    assert seen[0] == 0.5 and seen[-1] < 0.02  # decayed over the 10 steps planned
    longer, shown = resumed(corpus, tmp_path / "cos", epochs=4)
    assert "epochs 2 -> 4" in shown and any("cosine to 0 at step 20" in s for s in shown)
    seen.clear()
    longer.run()
    assert len(seen) == 10 and seen[-1] > 0  # epochs 3-4 train: their lr is never 0 for whole epochs
    planned_for_four = [0.5 * (1 + math.cos(math.pi * k / 20)) / 2 for k in range(10, 20)]
    assert seen == pytest.approx(planned_for_four, rel=1e-12)  # as if it had been planned for 4 epochs


def test_a_new_lr_starts_at_the_resume_point(corpus, tmp_path, monkeypatch):
    make(corpus, tmp_path / "r", schedule="step", decay=0.5, decay_start=1, epochs=1).run()
    later, shown = resumed(corpus, tmp_path / "r", lr=0.1, epochs=3)
    assert shown[:2] == ["lr 0.5 -> 0.1", "epochs 1 -> 3"] and "lr now 0.1" in shown[2]
    seen = lrs_seen(later, monkeypatch)
    later.run()
    assert seen[:5] == [0.1] * 5 and seen[5:] == [0.05] * 5  # the step schedule continues from the new lr


def test_safe_settings_apply_and_others_stay(corpus, tmp_path):
    make(corpus, tmp_path / "s", epochs=1).run()
    later, shown = resumed(corpus, tmp_path / "s", max_grad=0.5, save_every=2, max_batches=3, epochs=2)
    assert later.config.max_grad == 0.5 and later.config.save_every == 2 and later.iters_per_epoch == 3
    assert set(shown) == {"epochs 1 -> 2", "max_grad 1.0 -> 0.5", "save_every 0 -> 2", "max_batches 5 -> 3"}
    assert later.config.batch_size == 4 and later.config.optimizer == "sgd"


# ---------------------------------------------------------------- numeric faults (rule 3)


def test_diverged_validation_stops_and_saves_nothing(corpus, tmp_path, monkeypatch):
    trainer = make(corpus, tmp_path / "inf", epochs=2)
    monkeypatch.setattr(LMTrainer, "validate", lambda self: math.inf)
    with pytest.raises(NumericError, match=r"validation perplexity became inf after epoch 1 \(step 5\)"):
        trainer.run()
    out = tmp_path / "inf"
    assert not (out / "best.npz").exists() and not (out / "checkpoint.npz").exists()
    assert (out / "metrics.jsonl").read_text() == ""


def test_metrics_are_strict_json(tmp_path):
    write_metrics(tmp_path, [{"epoch": 1, "valid_ppl": 3.5}])
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {"epoch": 1, "valid_ppl": 3.5}
    with pytest.raises(ValueError):
        write_metrics(tmp_path, [{"epoch": 1, "valid_ppl": math.inf}])
    assert json.loads((tmp_path / "metrics.jsonl").read_text())["valid_ppl"] == 3.5  # left as it was


def test_an_overflowing_update_stops_before_it_is_saved(corpus, tmp_path):
    trainer = make(corpus, tmp_path / "big", optimizer="adam", lr=1e30, max_grad=0)
    with pytest.raises(NumericError, match="epoch 1"):  # the update, the loss or the validation: whichever first
        trainer.run()
    assert not (tmp_path / "big" / "checkpoint.npz").exists()


# ---------------------------------------------------------------- reports (rule 6)


def test_resume_rewrites_stale_metrics_and_plot(corpus, tmp_path):
    out = tmp_path / "stale"
    make(corpus, out, epochs=2).run()
    (out / "metrics.jsonl").write_text('{"epoch": 1}\n')  # as if killed between checkpoint and metrics write
    (out / "perplexity.png").unlink()
    again, _ = resumed(corpus, out)  # nothing left to train
    again.run()
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2] and lines == again.progress.history
    assert (out / "perplexity.png").stat().st_size > 0
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


# ---------------------------------------------------------------- the run lock (rule 7)


def test_one_run_per_folder(tmp_path):
    lock = RunLock(tmp_path).acquire()
    with pytest.raises(RunLockedError, match=f"another nprnn run \\(pid {os.getpid()}\\) is writing here"):
        RunLock(tmp_path).acquire()
    lock.release()
    assert not (tmp_path / ".lock").exists()
    RunLock(tmp_path).acquire().release()


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / ".lock").write_text(dead.stdout)
    lock = RunLock(tmp_path).acquire()
    assert (tmp_path / ".lock").read_text().strip() == str(os.getpid())
    lock.release()


def test_a_second_trainer_into_the_same_folder_is_refused(corpus, tmp_path, monkeypatch):
    out = tmp_path / "shared"
    first, second = make(corpus, out), make(corpus, out)
    real = TrainingLoop.step
    errors = []

    def step_and_start_the_other(self, x, t):
        if self is first and self.progress.step == 2 and not errors:
            with pytest.raises(RunLockedError) as err:
                second.run()
            errors.append(err.value)
        return real(self, x, t)

    monkeypatch.setattr(TrainingLoop, "step", step_and_start_the_other)
    first.run()
    assert errors and str(out) in str(errors[0])
    assert not (out / ".lock").exists()  # released at the end


# ---------------------------------------------------------------- settings and progress from files


def test_settings_of_the_wrong_type_are_refused_naming_the_file():
    with pytest.raises(CheckpointError, match="ck.npz: training setting lr must be a float, got 'fast'"):
        config_from_dict(TrainConfig, {"lr": "fast"}, "ck.npz")
    with pytest.raises(CheckpointError, match="ck.npz: training setting epochs must be a int, got 2.5"):
        config_from_dict(TrainConfig, {"epochs": 2.5}, "ck.npz")
    with pytest.raises(CheckpointError, match=r"ck.npz: unknown training settings \['x'\]"):
        config_from_dict(TrainConfig, {"x": 1}, "ck.npz")
    with pytest.raises(CheckpointError, match="ck.npz: batch_size must be a positive integer"):
        config_from_dict(TrainConfig, {"batch_size": -1}, "ck.npz")
    assert config_from_dict(TrainConfig, {"lr": 3}, "ck.npz").lr == 3


@pytest.mark.parametrize(
    "change",
    [dict(epoch="1"), dict(step=-1), dict(epoch_loss=math.inf), dict(history={}), dict(history=[{"a": "b"}]),
     dict(plan={"step": 0}), dict(plan={"step": 0, "epoch": 0, "lr": -1, "end": 3}), dict(best=None)],
)  # fmt: skip
def test_progress_of_the_wrong_shape_is_refused(change):
    good = {**Progress().__dict__, "epoch": 1, "history": [{"epoch": 1, "valid_ppl": 3.0, "improved": True}],
            "plan": {"step": 0, "epoch": 0, "lr": 0.1, "end": 10}}  # fmt: skip
    assert progress_from_dict(good, "ck.npz").epoch == 1
    with pytest.raises(CheckpointError, match="^ck.npz: progress"):
        progress_from_dict({**good, **change}, "ck.npz")


def test_loop_config_refuses_bad_numbers():
    for field, bad in [("lr", 0), ("lr", math.inf), ("max_grad", -1), ("max_batches", -1), ("save_every", -1),
                       ("epochs", 0), ("seed", -1), ("optimizer", "lbfgs"), ("schedule", "linear")]:  # fmt: skip
        with pytest.raises(ValueError, match=field.split("_")[0]):
            replace(LoopConfig(), **{field: bad}).validate()


# ---------------------------------------------------------------- the Python API (issue 17)


def test_defaults_are_the_command_lines(corpus):
    from dataclasses import asdict

    from nprnn.training.presets import split_preset

    model_settings, train_settings, _ = split_preset("tiny")
    assert {k: asdict(TrainConfig())[k] for k in train_settings} == train_settings
    assert {k: asdict(LMConfig(vocab_size=5))[k] for k in model_settings} == model_settings
    big = load_corpus(level="char")  # the built-in corpus, as nprnn train with no options
    trainer = LMTrainer(LanguageModel(LMConfig(vocab_size=len(big.vocab), hidden=8)), big)
    assert trainer.config == TrainConfig() and str(trainer.out_dir) == "runs/lm"


def test_the_trainers_import_lazily():
    code = (
        "import sys, nprnn.training as t\nassert 'nprnn.training.loop' not in sys.modules\n"
        "from nprnn.training import LMTrainer, Seq2seqConfig\nprint(LMTrainer.__module__, Seq2seqConfig.__module__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.split() == ["nprnn.training.lm", "nprnn.training.seq2seq"], out.stderr


def test_a_folder_holding_another_run_is_not_overwritten_unless_asked(corpus, tmp_path):
    from nprnn.training.loop import RunExistsError

    make(corpus, tmp_path / "r", epochs=1).run()
    before = (tmp_path / "r" / "checkpoint.npz").read_bytes()
    with pytest.raises(RunExistsError, match="holds another run"):
        make(corpus, tmp_path / "r", epochs=1, seed=2).run()
    assert (tmp_path / "r" / "checkpoint.npz").read_bytes() == before
    other = make(corpus, tmp_path / "r", epochs=1, seed=2)
    other.overwrite = True
    other.run()
    assert (tmp_path / "r" / "checkpoint.npz").read_bytes() != before


def test_figure_shows_the_curves_the_best_epoch_and_plain_numbers(corpus, tmp_path):
    trainer = make(corpus, tmp_path / "fig", epochs=2)
    trainer.run()
    fig = trainer.figure()
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels[:2] == ["train", "valid"] and labels[2].startswith("best: ")
    train_x = ax.get_lines()[0].get_xdata()
    assert len(train_x) == 2 * 5 and train_x[-1] == 2.0  # a point per logging interval, in epochs
    fig.canvas.draw()
    ticks = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert ticks and not any("10^" in t or "\\times" in t for t in ticks)
    assert all(float(t.get_text()).is_integer() for t in ax.get_xticklabels() if t.get_text())


def test_no_bar_frames_when_the_output_is_not_a_terminal(corpus, tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "nprnn", "train", "--data", str(tmp_path / "tiny.txt"), "--level", "word",
         "--out", str(tmp_path / "piped"), "--hidden", "8", "--embed", "8", "--epochs", "3", "--batch-size", "4",
         "--bptt", "6", "--eval-batch-size", "2", "--eval-bptt", "5", "--sample-length", "0"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "\r" not in run.stderr + run.stdout and "batch/s" not in run.stderr
    assert [line.split()[1] for line in run.stdout.splitlines() if line.startswith("epoch ")] == ["1/3", "2/3", "3/3"]


def test_a_numpy_only_install_says_once_what_the_train_extra_adds(corpus, tmp_path):
    code = (
        "import sys\nsys.modules['matplotlib'] = None\nsys.modules['tqdm'] = None\n"  # as if not installed
        "from nprnn.cli import main\n"
        f"sys.exit(main(['train', '--data', {str(tmp_path / 'tiny.txt')!r}, '--level', 'word', '--out', "
        f"{str(tmp_path / 'bare')!r}, '--hidden', '8', '--embed', '8', '--epochs', '3', '--batch-size', '4', "
        "'--bptt', '6', '--eval-batch-size', '2', '--eval-bptt', '5', '--sample-length', '0']))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stderr.count("pip install 'nprnn[train]' adds the progress bar, the plots") == 1
    assert (tmp_path / "bare" / "metrics.jsonl").is_file() and not (tmp_path / "bare" / "perplexity.png").exists()
