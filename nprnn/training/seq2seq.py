"""Encoder-decoder models in the one loop: shuffled batches of question/answer rows, test exact match.

As the textbook's ``Trainer.fit``: each epoch draws a new permutation from a seeded generator and
runs ``N // batch_size`` batches (the remainder is left out, as in the book); then the exact-match
accuracy on the test split (every answer character right, greedy or beam decoding) is the epoch's
metric. A checkpoint adds to the loop's state the shuffling generator's state at the start of the
epoch, so a resumed run draws the same permutation.
"""

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nprnn._checks import positive_int
from nprnn.checkpoint import rng_state, set_rng_state
from nprnn.models.decode import count_exact, exact_match
from nprnn.models.io import save_seq2seq
from nprnn.training.loop import LoopConfig, TrainingLoop
from nprnn.training.presets import SEQ2SEQ_DEFAULTS

# besides the loop's SAFE_ON_RESUME: only how the test accuracy is decoded
SAFE_ON_RESUME = ("beam", "eval_batch_size")


@dataclass
class Seq2seqConfig(LoopConfig):
    """A seq2seq model's training; the defaults are the textbook's (``ch07/train_seq2seq.py``)."""

    epochs: int = SEQ2SEQ_DEFAULTS["epochs"]
    batch_size: int = SEQ2SEQ_DEFAULTS["batch_size"]
    optimizer: str = SEQ2SEQ_DEFAULTS["optimizer"]
    lr: float = SEQ2SEQ_DEFAULTS["lr"]
    max_grad: float = SEQ2SEQ_DEFAULTS["max_grad"]
    schedule: str = SEQ2SEQ_DEFAULTS["schedule"]
    beam: int = 1  # decoding for the test accuracy: 1 is greedy, K > 1 beam search
    eval_batch_size: int = 1000  # questions decoded at once

    def validate(self):
        super().validate()
        positive_int("beam", self.beam)
        positive_int("eval_batch_size", self.eval_batch_size)
        return self


# ---------------------------------------------------------------- the trainer


class Seq2seqTrainer(TrainingLoop):
    """Trains ``model`` on ``data`` (a ``Seq2seqData``) with ``config`` (a ``Seq2seqConfig``); files go
    to ``out_dir``: ``checkpoint.npz``, ``best.npz`` (best test accuracy), ``metrics.jsonl`` (one record
    per epoch: train loss, test accuracy, seconds) and ``accuracy.png``.

    ``comm``: an MPI communicator for data-parallel training: this rank trains on its share of each
    batch's rows and scores its share of the test split; only rank 0 logs and writes files."""

    metric = "test_accuracy"
    metric_label = "test exact-match accuracy"
    higher_is_better = True
    plot_name = "accuracy.png"
    unit = "examples"

    config_class = Seq2seqConfig
    default_out = "runs/seq2seq"

    def __init__(self, model, data, config=None, out_dir=None, log=print, progress_bar=True, log_format="jsonl",
                 comm=None, overwrite=False):  # fmt: skip
        config = self.config_class() if config is None else config  # its batch size is checked here
        n_train, B = len(data.x_train), config.batch_size
        if n_train < B:
            raise ValueError(
                f"batch size {B} is larger than the training split ({n_train} examples); pass a smaller --batch-size"
            )
        if len(data.x_test) == 0:
            raise ValueError(
                f"{data.path}: the test split is empty (it is a tenth of the lines); the file needs at least 10 lines"
            )
        if comm is not None and len(data.x_test) < comm.Get_size():  # every rank scores a test question
            raise ValueError(
                f"{comm.Get_size()} MPI ranks need a test split of at least {comm.Get_size()} examples, "
                f"{data.path} has {len(data.x_test)}; use fewer ranks"
            )
        super().__init__(model, config, out_dir, log, progress_bar, log_format, comm, overwrite)
        self.data = data
        # Its own stream (not the weights' seed sequence), so changing the model does not change the order.
        self.shuffle_rng = np.random.default_rng([config.seed, 1])
        self._epoch_rng_state = rng_state(self.shuffle_rng)  # before this epoch's permutation was drawn
        self._order = None
        if data.path:
            self.extra_meta["data"] = str(Path(data.path).resolve())

    def full_epoch(self):
        return len(self.data.x_train) // self.config.batch_size  # as the textbook: no last partial batch

    def start_epoch(self):
        # On resume mid-epoch the generator was set back to the epoch's start: same permutation.
        self._epoch_rng_state = rng_state(self.shuffle_rng)
        self._order = self.shuffle_rng.permutation(len(self.data.x_train))

    def batch(self, iteration):
        B = self.config.batch_size
        rows = self._order[iteration * B : (iteration + 1) * B]
        if self.parallel is not None:
            rows = rows[self.parallel.rows]
        return self.data.x_train[rows], self.data.t_train[rows]

    def tokens(self, x):
        return len(x)

    def validate(self):
        """Exact-match accuracy on the test split; data parallel, each rank decodes its share of
        the questions and the counts of right answers are summed (exact: integers)."""
        c, x, t = self.config, self.data.x_test, self.data.t_test
        start = time.perf_counter()
        if self.parallel is None:
            accuracy = exact_match(self.model, x, t, c.beam, c.eval_batch_size)
        else:
            rows = self.parallel.shard(len(x))
            right = count_exact(self.model, x[rows], t[rows], c.beam, c.eval_batch_size)
            accuracy = self.parallel.sum(float(right)) / len(x)
        self._eval_seconds = time.perf_counter() - start
        return accuracy

    def epoch_record(self, train_loss, value):
        return {"train_loss": train_loss, "test_accuracy": value, "seconds": self.progress.epoch_seconds,
                "eval_seconds": self._eval_seconds, "beam": self.config.beam}  # fmt: skip

    def epoch_line(self, r):
        beam = f" (beam {r['beam']})" if r["beam"] > 1 else ""
        return (
            f"epoch {r['epoch']}/{self.config.epochs}  loss {r['train_loss']:.4f}  test exact match "
            f"{100 * r['test_accuracy']:.2f}%{beam}  lr {r['lr']:.4g}  "
            f"{r['seconds']:.1f}s + {r['eval_seconds']:.1f}s eval"
        )

    def training_state(self):
        if self.parallel is not None:  # collective: every rank gets here; the replicas hold the same state
            self.parallel.check_in_sync("before saving a checkpoint")
        p = self.progress
        # mid-epoch, the state that draws this epoch's permutation again; else the next epoch's
        meta = {"rng": self._epoch_rng_state if p.iteration else rng_state(self.shuffle_rng)}
        if self.parallel is not None:
            meta["world_size"] = self.parallel.size
        return {}, meta

    def restore_training_state(self, arrays, meta, where):
        set_rng_state(self.shuffle_rng, meta["rng"])
        self._epoch_rng_state = meta["rng"]
        if self.parallel is not None:
            self.parallel.check_in_sync("after loading the checkpoint")

    def save_model(self, path, arrays, meta):
        save_seq2seq(path, self.model, self.data, arrays, meta)

    def plot(self, ax, history, curve, best_epoch):
        epochs = [r["epoch"] for r in history]
        ax.plot(epochs, [100 * r["test_accuracy"] for r in history], "o-", color="C1", label="test exact match")
        if best_epoch:
            best = 100 * history[best_epoch - 1]["test_accuracy"]
            ax.plot([best_epoch], [best], "*", ms=14, color="C3", label=f"best: {best:.2f}% (epoch {best_epoch})")
        ax.set_ylabel("test exact-match accuracy (%)")
        ax.set_ylim(-5, 105)
        if curve:
            loss_ax = ax.twinx()
            loss_ax.plot([x for x, _ in curve], [loss for _, loss in curve], "-", lw=1, color="C0", alpha=0.7)
            loss_ax.set_ylabel("training loss (blue)")
        m = self.model.config
        ax.set_title(f"{Path(self.data.path).name or 'data'}: {m['kind']}, hidden {m['hidden']}")
