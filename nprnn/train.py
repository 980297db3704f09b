"""Training a language model with stateful truncated BPTT: presets, the trainer, evaluation.

One training step: forward a batch ``(N, T)`` of ids, backward, clip the global gradient norm,
check that loss and gradients are finite, update. Each epoch starts the recurrent state from zero
and ends with the validation perplexity, which drives the learning-rate schedule and the choice of
the best model. A checkpoint holds everything needed to continue bit for bit: parameters,
optimizer and schedule state, the dropout generators, the carried recurrent state, the position
in the data and the history.
"""

import gc
import json
import math
import signal
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from nprnn import optim
from nprnn.checkpoint import CheckpointError, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from nprnn.data.batching import BPTTBatches, EvalBatches
from nprnn.data.corpus import DataError
from nprnn.data.vocab import Vocab
from nprnn.models.lm import LanguageModel, LMConfig

CHECKPOINT_KIND = "nprnn-lm"

# Model and training settings of the named configurations. "tiny" is what `nprnn train` runs with no
# arguments: a character-level LSTM that learns visibly within about two minutes on two cores.
PRESETS = {
    "tiny": dict(
        level="char", cell="lstm", embed=32, hidden=256, layers=1, dropout=0.0, tie_weights=False,
        optimizer="adam", lr=0.004, max_grad=1.0, schedule="plateau", decay=2.0,
        epochs=8, batch_size=32, bptt=64, eval_batch_size=32, eval_bptt=64,
    ),
    # the textbook's ch06 train_rnnlm.py: Rnnlm (LSTM 100/100), SGD lr 20, clip 0.25, 4 epochs
    "rnnlm": dict(
        level="word", cell="lstm", embed=100, hidden=100, layers=1, dropout=0.0, tie_weights=False,
        optimizer="sgd", lr=20.0, max_grad=0.25, schedule="none", epochs=4, batch_size=20, bptt=35, continuous=True,
    ),
    # the textbook's ch06 train_better_rnnlm.py: 2 x LSTM 650, dropout 0.5, tied, lr / 4 on plateau
    "better-rnnlm": dict(
        level="word", cell="lstm", embed=650, hidden=650, layers=2, dropout=0.5, tie_weights=True,
        optimizer="sgd", lr=20.0, max_grad=0.25, schedule="plateau", decay=4.0, epochs=40, batch_size=20, bptt=35,
    ),
    # Zaremba, Sutskever & Vinyals 2014, "Recurrent neural network regularization". Their loss is summed
    # over the T time steps (averaged over the batch); ours is the mean over all N*T positions, whose
    # gradient is T times smaller. So their lr 1 is lr T here and their clipping norm c is c / T.
    "zaremba-small": dict(
        level="word", cell="lstm", embed=200, hidden=200, layers=2, dropout=0.0, tie_weights=False,
        init="uniform", init_scale=0.1, optimizer="sgd", lr=20.0, max_grad=5.0 / 20,
        schedule="step", decay=0.5, decay_start=4, epochs=13, batch_size=20, bptt=20,
    ),
    "zaremba-medium": dict(
        level="word", cell="lstm", embed=650, hidden=650, layers=2, dropout=0.5, tie_weights=False,
        init="uniform", init_scale=0.05, optimizer="sgd", lr=35.0, max_grad=5.0 / 35,
        schedule="step", decay=0.8, decay_start=6, epochs=39, batch_size=20, bptt=35,
    ),
    "zaremba-large": dict(
        level="word", cell="lstm", embed=1500, hidden=1500, layers=2, dropout=0.65, tie_weights=False,
        init="uniform", init_scale=0.04, optimizer="sgd", lr=35.0, max_grad=10.0 / 35,
        schedule="step", decay=1 / 1.15, decay_start=14, epochs=55, batch_size=20, bptt=35,
    ),
}  # fmt: skip

OPTIMIZERS = {
    "sgd": optim.SGD,
    "momentum": optim.Momentum,
    "nesterov": optim.Nesterov,
    "adagrad": optim.AdaGrad,
    "rmsprop": optim.RMSprop,
    "adam": optim.Adam,
    "adamw": optim.AdamW,
}
SCHEDULES = ("none", "plateau", "step", "cosine")


class NumericError(RuntimeError):
    """A NaN or infinite loss or gradient: training stops before the update that would spread it."""


@dataclass
class TrainConfig:
    epochs: int = 4
    batch_size: int = 20
    bptt: int = 35
    optimizer: str = "sgd"
    lr: float = 20.0
    max_grad: float = 0.25  # global-norm clipping threshold; 0 turns clipping off
    schedule: str = "none"  # none | plateau (divide by `decay`) | step (times `decay` from `decay_start`) | cosine
    decay: float = 4.0
    decay_start: int = 1
    eval_batch_size: int = 10
    eval_bptt: int = 35
    seed: int = 0
    save_every: int = 0  # also checkpoint every this many steps inside an epoch (0: at epoch ends only)
    # continuous: the streams and the recurrent state run on across epochs, as the textbook's
    # fit(max_epoch=E) does for Rnnlm; otherwise every epoch starts at the row offsets from a zero state
    continuous: bool = False
    max_batches: int = 0  # cap on batches per epoch (0: the whole training split); for quick runs

    def validate(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        for name in ("epochs", "batch_size", "bptt", "eval_batch_size", "eval_bptt"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.max_grad < 0:
            raise ValueError(f"max_grad must be >= 0 (0 turns clipping off), got {self.max_grad}")
        return self


def split_preset(name, overrides=None):
    """(LMConfig fields, TrainConfig fields, level) of a preset, with ``overrides`` (None values ignored)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    settings = {**PRESETS[name], **{k: v for k, v in (overrides or {}).items() if v is not None}}
    model_keys = {f.name for f in fields(LMConfig)} - {"vocab_size"}
    train_keys = {f.name for f in fields(TrainConfig)}
    unknown = set(settings) - model_keys - train_keys - {"level"}
    if unknown:
        raise ValueError(f"unknown settings: {', '.join(sorted(unknown))}")
    model = {k: v for k, v in settings.items() if k in model_keys}
    train = {k: v for k, v in settings.items() if k in train_keys}
    return model, train, settings.get("level", "word")


# ---------------------------------------------------------------- evaluation


def evaluate(model, ids, batch_size=10, bptt=35, parallel=None):
    """Perplexity over ``ids`` as the textbook's ``eval_perplexity`` computes it: from a zero
    state, stateful over consecutive batches, ``exp`` of the mean batch loss; dropout off.
    With ``parallel`` (a ``nprnn.distributed.DataParallel``) each rank scores its share of the
    rows and the weighted losses are summed over the ranks."""
    batches = EvalBatches(ids, batch_size, bptt, rows=parallel.shard(batch_size) if parallel else None)
    was_training = model.train
    model.train = False
    model.reset_state()
    total = 0.0
    try:
        with np.errstate(all="ignore"):  # a diverged model's overflows show as an infinite perplexity
            for xs, ts in batches:
                total += float(model.forward(xs, ts))
    finally:
        model.reset_state()
        model.train = was_training
    if parallel is not None:
        total = parallel.sum(total * parallel.share(batch_size))
    return perplexity(total / len(batches))


def check_batchable(ids, batch_size, bptt, where, options):
    """DataError naming ``where`` unless ``ids`` fill at least one ``batch_size x bptt`` batch."""
    need = batch_size * bptt + 1
    if len(ids) < need:
        raise DataError(
            f"{where}: {len(ids):,} tokens, too few for one batch of {batch_size} x {bptt} (need {need:,}); "
            f"use smaller {options} or more data"
        )


def perplexity(mean_loss):
    """``exp(mean_loss)``, or inf where that overflows (a diverged model has a huge but finite loss)."""
    return math.inf if mean_loss > 709.0 else math.exp(mean_loss)


# ---------------------------------------------------------------- checkpoints


def save_lm(path, model, vocab, extra_arrays=None, extra_meta=None):
    """Write a model (and whatever training state is given) to one ``.npz``, atomically."""
    arrays = {f"param/{i:03d}": p for i, p in enumerate(model.params)}
    arrays["vocab"] = vocab.to_array()
    arrays.update(extra_arrays or {})
    meta = {"kind": CHECKPOINT_KIND, "model": model.config.to_dict(), "level": vocab.level}
    meta.update(extra_meta or {})
    save_checkpoint(path, arrays, meta)


def load_lm(path, dtype=None):
    """(model, vocab, arrays, meta) from a checkpoint written by ``save_lm``; refuses anything else."""
    arrays, meta = load_checkpoint(path)
    if meta.get("kind") != CHECKPOINT_KIND:
        raise ValueError(f"{path}: not an nprnn language-model checkpoint (kind {meta.get('kind')!r})")
    try:  # a damaged or foreign file must fail here with its name, not deep inside the model
        vocab = Vocab.from_array(arrays["vocab"], meta["level"])
        config = LMConfig(**meta["model"])
        if config.vocab_size != len(vocab):
            raise ValueError(f"model vocabulary size {config.vocab_size} != stored vocabulary {len(vocab)}")
        params = [arrays[f"param/{i:03d}"] for i in range(sum(k.startswith("param/") for k in arrays))]
        model = LanguageModel(config, dtype=dtype or (params[0].dtype if params else np.float32))
    except (KeyError, TypeError, ValueError) as e:
        problem = f"missing {e}" if isinstance(e, KeyError) else str(e)
        raise CheckpointError(f"{path}: not a usable language-model checkpoint ({problem})") from None
    set_params(model, params, path)
    return model, vocab, arrays, meta


def set_params(model, params, where):
    """Copy ``params`` into the model's arrays in place, checking count and shapes."""
    if len(params) != len(model.params):
        raise ValueError(f"{where}: expected {len(model.params)} parameter arrays for this model, got {len(params)}")
    for i, (p, new) in enumerate(zip(model.params, params)):
        if p.shape != new.shape:
            raise ValueError(f"{where}: parameter {i} must have shape {p.shape}, got {new.shape}")
        if not np.all(np.isfinite(new)):
            raise ValueError(f"{where}: parameter {i} holds NaN or infinite values")
        p[...] = new


# ---------------------------------------------------------------- pieces both trainers share


def optimizer_to_checkpoint(optimizer):
    """(arrays, scalars) of an optimizer's state: arrays go into the ``.npz`` as ``opt/<key>``,
    the scalars into the JSON metadata."""
    arrays, scalars = {}, {}
    for key, value in optimizer.state_dict().items():
        if isinstance(value, np.ndarray):
            arrays[f"opt/{key}"] = value
        else:
            scalars[key] = value
    return arrays, scalars


def optimizer_from_checkpoint(optimizer, arrays, scalars):
    """Inverse of ``optimizer_to_checkpoint``: load the state into ``optimizer``."""
    state = dict(scalars)
    state.update({k[len("opt/") :]: v for k, v in arrays.items() if k.startswith("opt/")})
    optimizer.load_state_dict(state)


def progress_bar(enabled, total, initial, desc):
    """A tqdm bar over the batches of an epoch, or None when disabled or tqdm is not installed."""
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, desc=desc, unit="batch", leave=False, dynamic_ncols=True)


def write_metrics(out_dir, history, log_format="jsonl"):
    """The per-epoch records as ``metrics.jsonl`` (one JSON object a line) or ``metrics.csv``, replaced atomically."""
    if log_format == "csv":
        keys = list(history[0])
        lines = [",".join(keys)] + [",".join(str(r[k]) for k in keys) for r in history]
        text, name = "\n".join(lines) + "\n", "metrics.csv"
    else:
        text, name = "".join(json.dumps(r) + "\n" for r in history), "metrics.jsonl"
    tmp = Path(out_dir) / (name + ".tmp")
    tmp.write_text(text)
    tmp.replace(Path(out_dir) / name)


# ---------------------------------------------------------------- the trainer


@dataclass
class EpochRecord:
    epoch: int
    train_ppl: float
    valid_ppl: float
    lr: float
    seconds: float
    words_per_sec: float


@dataclass
class Progress:
    """Where the run is: ``epoch`` (0-based) and ``iteration`` within it, global ``step``."""

    epoch: int = 0
    iteration: int = 0
    step: int = 0
    epoch_loss: float = 0.0  # sum of batch losses so far in this epoch
    epoch_seconds: float = 0.0
    best_valid: float = 0.0  # meaningful once history is non-empty
    history: list = field(default_factory=list)


class TrainingLoop:
    """What the language-model ``Trainer`` and the seq2seq trainer share: the epoch loop, Ctrl-C (a
    resumable checkpoint at the next step boundary), and checkpoints every ``config.save_every`` steps.

    A subclass sets ``out_dir``, ``config``, ``progress``, ``iters_per_epoch``, ``parallel`` and
    ``_stop_requested = False``, and defines ``save()`` and ``_run_epoch()``, which calls
    ``_after_step(bar)`` after every update.
    """

    @property
    def checkpoint_path(self):
        return self.out_dir / "checkpoint.npz"

    def run(self):
        """Train until ``config.epochs``; returns the history (one dict per epoch). SIGINT saves a
        resumable checkpoint at the next step boundary and raises ``KeyboardInterrupt``."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        old_handler = signal.signal(signal.SIGINT, self._request_stop)
        try:
            while self.progress.epoch < self.config.epochs:
                self._run_epoch()
        finally:
            signal.signal(signal.SIGINT, old_handler)
        return self.progress.history

    def _request_stop(self, signum, frame):
        if self.parallel is not None:  # stop once every rank knows: the next step's Allreduce tells them
            self.parallel.signalled = True
        else:
            self._stop_requested = True

    def _after_step(self, bar):
        """After an update: stop if asked to (saving first), or checkpoint if ``save_every`` says so."""
        p, c = self.progress, self.config
        if self._stop_requested:
            if bar is not None:
                bar.close()
            self.save()
            raise KeyboardInterrupt(f"interrupted at step {p.step}; resumable checkpoint in {self.checkpoint_path}")
        if c.save_every and p.step % c.save_every == 0 and p.iteration < self.iters_per_epoch:
            self.save()


class Trainer(TrainingLoop):
    """Trains ``model`` on ``corpus`` (a ``nprnn.data.Corpus``) with ``config``; files go to ``out_dir``:
    ``checkpoint.npz`` (resumable, latest), ``best.npz`` (best validation perplexity),
    ``metrics.jsonl`` (or ``.csv``) and ``perplexity.png``.

    ``comm``: an MPI communicator (``nprnn.distributed.mpi_world()``) for data-parallel training:
    this rank trains on its share of each batch's rows, gradients are averaged over the ranks, and
    only rank 0 logs, shows progress and writes files (``nprnn.distributed`` has the details)."""

    def __init__(self, model, corpus, config, out_dir, log=print, progress_bar=True, log_format="jsonl", comm=None):
        self.model, self.corpus, self.config = model, corpus, config.validate()
        self.out_dir = Path(out_dir)
        self.log, self.progress_bar, self.log_format = log, progress_bar, log_format
        self.optimizer = OPTIMIZERS[config.optimizer](lr=config.lr)
        self.schedule = self._make_schedule()
        self.parallel = None
        if comm is not None:
            from nprnn.distributed import DataParallel

            self.parallel = DataParallel(comm, model, config.batch_size)
            self.parallel.shard(config.eval_batch_size)  # enough validation rows for every rank? fail now
            if not self.parallel.is_root:
                self.log, self.progress_bar = (lambda *args, **kwargs: None), False
        where, c = corpus.source or corpus.name, config
        check_batchable(corpus.train, c.batch_size, c.bptt, f"{where} (train split)", "--batch-size/--bptt")
        # validation ends every epoch: fail now, not after an epoch of training
        check_batchable(
            corpus.valid, c.eval_batch_size, c.eval_bptt, f"{where} (valid split)", "--eval-batch-size/--eval-bptt"
        )
        rows = self.parallel.rows if self.parallel else None
        self.batches = BPTTBatches(
            corpus.train, config.batch_size, config.bptt, rows=rows, continuous=config.continuous
        )
        self.iters_per_epoch = len(self.batches)
        if config.max_batches:
            self.iters_per_epoch = min(self.iters_per_epoch, config.max_batches)
        self.progress = Progress()
        self.extra_meta = {}  # stored in every checkpoint, e.g. {"data": path of the corpus}
        self._stop_requested = False

    def _make_schedule(self):
        c = self.config
        if c.schedule == "plateau":
            return optim.DivideOnPlateau(self.optimizer, factor=c.decay)
        if c.schedule == "step":
            return optim.StepDecay(self.optimizer, step_size=1, gamma=c.decay, start=c.decay_start)
        if c.schedule == "cosine":
            return optim.Cosine(self.optimizer, total=c.epochs)
        return None

    # -- saving and resuming

    def save(self, path=None):
        """Everything needed to continue exactly where the run is now."""
        arrays, scalars = optimizer_to_checkpoint(self.optimizer)
        state, rngs, parallel_meta = self.model.get_state(), [rng_state(r) for r in self.model.dropout_rngs()], {}
        if self.parallel is not None:  # collective: every rank gets here, rank 0 writes the full state
            state, parallel_meta = self.parallel.gather_checkpoint(state, rngs)
            if not self.parallel.is_root:
                return
        for key, value in state.items():
            arrays[f"state/{key}"] = value
        meta = {
            "train": asdict(self.config),
            "progress": asdict(self.progress),
            "optimizer": scalars,
            "schedule": self.schedule.state_dict() if self.schedule else None,
            "rngs": rngs,
            **parallel_meta,
            **self.extra_meta,
        }
        save_lm(path or self.checkpoint_path, self.model, self.corpus.vocab, arrays, meta)

    def restore(self, arrays, meta, where):
        """Load the training state of a checkpoint (the model's parameters are already loaded)."""
        if meta.get("train") is None or meta.get("progress") is None:
            raise ValueError(f"{where}: holds a model but no training state; cannot resume from it")
        try:
            self._restore(arrays, meta, where)
        except (KeyError, TypeError, ValueError) as e:
            if str(e).startswith(str(where)):
                raise
            problem = f"missing {e}" if isinstance(e, KeyError) else str(e)
            raise CheckpointError(f"{where}: cannot resume from its training state ({problem})") from None

    def _restore(self, arrays, meta, where):
        optimizer_from_checkpoint(self.optimizer, arrays, meta["optimizer"])
        if self.schedule is not None and meta["schedule"] is not None:
            self.schedule.load_state_dict(meta["schedule"])
        rngs = self.model.dropout_rngs()
        if len(rngs) != len(meta["rngs"]):
            raise ValueError(f"{where}: {len(meta['rngs'])} random generators saved, the model has {len(rngs)}")
        for rng, state in zip(rngs, meta["rngs"]):
            set_rng_state(rng, state)
        self.model.set_state({k[len("state/") :]: v for k, v in arrays.items() if k.startswith("state/")})
        if self.parallel is not None:  # this rank's rows of the state, its own dropout generators
            self.parallel.restore_checkpoint(arrays, meta, where)
        self.progress = Progress(**meta["progress"])

    # -- the loop

    def train_step(self, xs, ts):
        # NumPy's overflow warnings would only say, over many lines, what the checks below report in one
        with np.errstate(all="ignore"):
            loss = float(self.model.forward(xs, ts))
            self.model.backward()
        if self.parallel is not None:  # one Allreduce: full-batch gradients and loss, any rank's Ctrl-C
            loss, self._stop_requested = self.parallel.allreduce_step(self.model.grads, loss)
        norm = (
            optim.clip_grads(self.model.grads, self.config.max_grad)
            if self.config.max_grad
            else optim.grad_norm(self.model.grads)
        )
        if not (math.isfinite(loss) and math.isfinite(norm)):
            what = "loss" if not math.isfinite(loss) else "gradient norm"
            raise NumericError(
                f"{what} became {loss if what == 'loss' else norm} at epoch {self.progress.epoch + 1}, "
                f"step {self.progress.step + 1}; stopped before updating (the last checkpoint is untouched). "
                "Try a lower --lr or a smaller --max-grad"
            )
        with np.errstate(all="ignore"):
            self.optimizer.update(self.model.params, self.model.grads)
        if not all(np.isfinite(p).all() for p in self.model.params):  # an lr so high the update overflowed
            raise NumericError(
                f"the update of epoch {self.progress.epoch + 1}, step {self.progress.step + 1} made parameters "
                "NaN or infinite; stopped (the last checkpoint is untouched). Try a lower --lr or a smaller --max-grad"
            )
        return loss

    def _run_epoch(self):
        p, c, model = self.progress, self.config, self.model
        model.train = True
        if p.iteration == 0:
            if not self.config.continuous or p.epoch == 0:
                model.reset_state()
            p.epoch_loss, p.epoch_seconds = 0.0, 0.0
        words_per_batch = c.batch_size * c.bptt
        bar = progress_bar(self.progress_bar, self.iters_per_epoch, p.iteration, f"epoch {p.epoch + 1}/{c.epochs}")
        start, seconds_before, done_here = time.perf_counter(), p.epoch_seconds, 0
        for xs, ts in self.batches.epoch(p.epoch, start=p.iteration):
            if p.iteration >= self.iters_per_epoch:
                break
            loss = self.train_step(xs, ts)
            p.iteration, p.step, p.epoch_loss = p.iteration + 1, p.step + 1, p.epoch_loss + loss
            done_here += 1
            elapsed = time.perf_counter() - start
            p.epoch_seconds = seconds_before + elapsed
            if bar is not None:
                bar.update(1)
                bar.set_postfix(
                    loss=f"{loss:.3f}", ppl=f"{math.exp(min(loss, 50)):.1f}",
                    words_s=f"{done_here * words_per_batch / max(elapsed, 1e-9):,.0f}", refresh=False,
                )  # fmt: skip
            self._after_step(bar)
        if bar is not None:
            bar.close()
        self._end_epoch()

    def _end_epoch(self):
        p, c = self.progress, self.config
        train_ppl = perplexity(p.epoch_loss / max(p.iteration, 1))
        carried = self.model.get_state()  # evaluation starts from zero; training may continue from here
        valid_ppl = evaluate(self.model, self.corpus.valid, c.eval_batch_size, c.eval_bptt, self.parallel)
        self.model.set_state(carried)
        words = p.iteration * c.batch_size * c.bptt
        record = EpochRecord(
            p.epoch + 1, train_ppl, valid_ppl, self.optimizer.lr, p.epoch_seconds, words / max(p.epoch_seconds, 1e-9)
        )
        p.history.append(asdict(record))
        improved = not p.history[:-1] or valid_ppl < p.best_valid
        if improved:
            p.best_valid = valid_ppl
        self.log(
            f"epoch {record.epoch}/{c.epochs}  train ppl {train_ppl:.2f}  valid ppl {valid_ppl:.2f}  "
            f"lr {record.lr:.4g}  {record.seconds:.0f}s  {record.words_per_sec:,.0f} words/s"
            + ("  (best)" if improved else "")
        )
        if isinstance(self.schedule, optim.DivideOnPlateau):
            self.schedule.step(valid_ppl)
        elif self.schedule is not None:
            self.schedule.step()
        p.epoch, p.iteration = p.epoch + 1, 0
        root = self.parallel is None or self.parallel.is_root
        if improved and root:
            save_lm(
                self.out_dir / "best.npz",
                self.model,
                self.corpus.vocab,
                extra_meta={"valid_ppl": valid_ppl, **self.extra_meta},
            )
        self.save()
        if root:
            write_metrics(self.out_dir, p.history, self.log_format)
            self._plot()

    def _plot(self):
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return
        history = self.progress.history
        epochs = [r["epoch"] for r in history]
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(epochs, [r["train_ppl"] for r in history], "o-", label="train")
        ax.plot(epochs, [r["valid_ppl"] for r in history], "s-", label="valid")
        ax.set_xlabel("epoch")
        ax.set_ylabel("perplexity")
        ax.set_yscale("log")
        ax.set_title(
            f"{self.corpus.name}: {self.model.config.cell} {self.model.config.layers}x{self.model.config.hidden}"
        )
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        tmp = self.out_dir / "perplexity.tmp.png"
        fig.savefig(tmp, dpi=100)
        plt.close(fig)
        # a figure is a web of reference cycles: free it now, not at Python's next full collection
        # (until then the process grew by about 1 MB per epoch)
        gc.collect()
        tmp.replace(self.out_dir / "perplexity.png")
