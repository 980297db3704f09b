"""Language models in the one loop: stateful truncated-BPTT batches, validation perplexity.

Each epoch starts the recurrent state from zero (or, ``continuous``, runs the streams on across
epochs as the textbook's ``fit(max_epoch=E)`` does for ``Rnnlm``) and ends with the validation
perplexity. A checkpoint adds to the loop's state the carried recurrent state and the dropout
generators.
"""

from dataclasses import dataclass

import numpy as np

from nprnn._checks import positive_int
from nprnn.checkpoint import rng_state, set_rng_state
from nprnn.data.batching import BPTTBatches, check_batchable
from nprnn.models.io import save_lm
from nprnn.models.lm import evaluate, perplexity
from nprnn.training.loop import LoopConfig, TrainingLoop
from nprnn.training.presets import PRESETS

# besides the loop's SAFE_ON_RESUME: only the validation's batching
SAFE_ON_RESUME = ("eval_batch_size", "eval_bptt")


_TINY = PRESETS["tiny"]


@dataclass
class TrainConfig(LoopConfig):
    """A language model's training: the loop's settings plus the BPTT batches. The defaults are the
    ``tiny`` preset's, what ``nprnn train`` runs with no options."""

    epochs: int = _TINY["epochs"]
    batch_size: int = _TINY["batch_size"]
    optimizer: str = _TINY["optimizer"]
    lr: float = _TINY["lr"]
    max_grad: float = _TINY["max_grad"]
    schedule: str = _TINY["schedule"]
    decay: float = _TINY["decay"]
    bptt: int = _TINY["bptt"]
    eval_batch_size: int = _TINY["eval_batch_size"]
    eval_bptt: int = _TINY["eval_bptt"]
    # continuous: the streams and the recurrent state run on across epochs, as the textbook's
    # fit(max_epoch=E) does for Rnnlm; otherwise every epoch starts at the row offsets from a zero state
    continuous: bool = False

    def validate(self):
        super().validate()
        for name in ("bptt", "eval_batch_size", "eval_bptt"):
            positive_int(name, getattr(self, name))
        if not isinstance(self.continuous, bool):
            raise ValueError(f"continuous must be true or false, got {self.continuous!r}")
        return self


class LMTrainer(TrainingLoop):
    """Trains a ``LanguageModel`` on ``corpus`` (a ``nprnn.data.Corpus``) with ``config`` (a
    ``TrainConfig``); files go to ``out_dir``: ``checkpoint.npz``, ``best.npz`` (best validation
    perplexity), ``metrics.jsonl`` (or ``.csv``) and ``perplexity.png``.

    ``comm``: an MPI communicator for data-parallel training: this rank trains on its share of each
    batch's rows, gradients are averaged over the ranks, and only rank 0 logs and writes files."""

    metric = "valid_ppl"
    higher_is_better = False
    plot_name = "perplexity.png"

    config_class = TrainConfig
    default_out = "runs/lm"

    def __init__(self, model, corpus, config=None, out_dir=None, log=print, progress_bar=True, log_format="jsonl",
                 comm=None, overwrite=False):  # fmt: skip
        super().__init__(model, config, out_dir, log, progress_bar, log_format, comm, overwrite)
        self.corpus = corpus
        self.unit = "chars" if corpus.level == "char" else "words"
        c, where = self.config, corpus.source or corpus.name
        if self.parallel is not None:
            self.parallel.shard(c.eval_batch_size)  # enough validation rows for every rank? fail now
        check_batchable(corpus.train, c.batch_size, c.bptt, f"{where} (train split)", "--batch-size/--bptt")
        # validation ends every epoch: fail now, not after an epoch of training
        check_batchable(
            corpus.valid, c.eval_batch_size, c.eval_bptt, f"{where} (valid split)", "--eval-batch-size/--eval-bptt"
        )
        rows = self.parallel.rows if self.parallel else None
        self.batches = BPTTBatches(corpus.train, c.batch_size, c.bptt, rows=rows, continuous=c.continuous)

    def full_epoch(self):
        return len(self.batches)

    def start_epoch(self):
        p = self.progress
        if p.iteration == 0 and (not self.config.continuous or p.epoch == 0):
            self.model.reset_state()

    def batch(self, iteration):
        return self.batches.batch(self.progress.epoch * len(self.batches) + iteration)

    def tokens(self, x):
        return x.size

    def validate(self):
        c = self.config
        carried = self.model.get_state()  # evaluation starts from zero; training may continue from here
        valid = evaluate(self.model, self.corpus.valid, c.eval_batch_size, c.eval_bptt, self.parallel)
        self.model.set_state(carried)
        return valid

    def epoch_record(self, train_loss, value):
        p = self.progress
        words = p.iteration * self.config.batch_size * self.config.bptt
        return {"train_ppl": perplexity(train_loss), "valid_ppl": value, "seconds": p.epoch_seconds,
                "words_per_sec": words / max(p.epoch_seconds, 1e-9)}  # fmt: skip

    def epoch_line(self, r):
        return (
            f"epoch {r['epoch']}/{self.config.epochs}  train ppl {r['train_ppl']:.2f}  valid ppl {r['valid_ppl']:.2f}  "
            f"lr {r['lr']:.4g}  {r['seconds']:.0f}s  {r['words_per_sec']:,.0f} {self.unit}/s"
        )

    def training_state(self):
        state, rngs, meta = self.model.get_state(), [rng_state(r) for r in self.model.dropout_rngs()], {}
        if self.parallel is not None:  # collective: every rank gets here, rank 0 writes the full state
            state, meta = self.parallel.gather_checkpoint(state, rngs)
            if state is None:
                return {}, {}
        return {f"state/{k}": v for k, v in state.items()}, {"rngs": rngs, **meta}

    def restore_training_state(self, arrays, meta, where):
        rngs, saved = self.model.dropout_rngs(), meta["rngs"]
        if not isinstance(saved, list) or len(rngs) != len(saved):
            raise ValueError(f"{where}: {len(saved)} random generators saved, the model has {len(rngs)}")
        for rng, state in zip(rngs, saved):
            set_rng_state(rng, state)
        state = {k[len("state/") :]: v for k, v in arrays.items() if k.startswith("state/")}
        if set(state) - {"h", "c"}:
            raise ValueError(f"{where}: unknown carried state {sorted(set(state) - {'h', 'c'})}")
        for key, value in state.items():
            if value.dtype != self.model.params[0].dtype or not np.isfinite(value).all():
                raise ValueError(f"{where}: carried state {key} must be finite {self.model.params[0].dtype}")
        self.model.set_state(state)
        if self.parallel is not None:  # this rank's rows of the state, its own dropout generators
            self.parallel.restore_checkpoint(arrays, meta, where)

    def save_model(self, path, arrays, meta):
        save_lm(path, self.model, self.corpus.vocab, arrays, meta)

    def plot(self, ax, history, curve, best_epoch):
        import math

        from nprnn.training.loop import readable_log_axis

        if curve:
            ax.plot([x for x, _ in curve], [math.exp(min(loss, 50)) for _, loss in curve], "-", lw=1, label="train")
        epochs = [r["epoch"] for r in history]
        ax.plot(epochs, [r["valid_ppl"] for r in history], "s-", label="valid")
        if best_epoch:
            best = history[best_epoch - 1]["valid_ppl"]
            ax.plot([best_epoch], [best], "*", ms=14, color="C3", label=f"best: {best:.2f} (epoch {best_epoch})")
        ax.set_ylabel(f"perplexity (per {'character' if self.corpus.level == 'char' else 'word'})")
        ax.set_yscale("log")
        readable_log_axis(ax.yaxis)
        m = self.model.config
        ax.set_title(f"{self.corpus.name}: {m.cell} {m.layers}x{m.hidden}")
