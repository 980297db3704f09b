"""Training and using the encoder-decoder models on ``question_answer`` files (the textbook's ch. 7-8).

One training step, as the textbook's ``Trainer.fit``: a batch of ``batch_size`` rows of the
shuffled training split, forward, backward, clip the global gradient norm (5.0), Adam update.
Each epoch draws a new permutation from a seeded generator and runs ``N // batch_size`` batches
(the remainder is left out, as in the book); then the exact-match accuracy on the test split
(every answer character right, greedy or beam decoding) is logged, plotted and checkpointed.

A checkpoint (``.npz``, atomic, no pickle) holds the model kind and sizes, the parameters, the
character vocabulary (as code points), whether questions are reversed, and for a resumable run
the optimizer state, the shuffling generator and the position in the epoch, so that resuming
ends with the very same parameters as an uninterrupted run.

Under ``mpiexec -n K`` each rank trains on its contiguous share of every shuffled batch's rows (same
permutation everywhere), ONE ``Allreduce`` per step sums the share-weighted gradients (``nprnn.distributed``),
each rank scores its share of the test split; rank 0 alone prints and writes. Resume with the same K.

The ``nprnn seq2seq train|eval|translate`` commands are defined here (``add_seq2seq_commands``).
"""

import argparse
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from nprnn import optim
from nprnn.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from nprnn.data.seq2seq import BOOK_DATASETS, Seq2seqData, Seq2seqDataError, load_seq2seq, resolve_seq2seq_path
from nprnn.models.seq2seq import AttentionSeq2seq, PeekySeq2seq, Seq2seq, plot_attention
from nprnn.train import (
    NumericError,
    TrainingLoop,
    optimizer_from_checkpoint,
    optimizer_to_checkpoint,
    progress_bar,
    set_params,
    write_metrics,
)

CHECKPOINT_KIND = "nprnn-seq2seq"
MODELS = {"seq2seq": Seq2seq, "peeky": PeekySeq2seq, "attention": AttentionSeq2seq}
DATA_DIR_ENV = "NPRNN_DATA_DIR"
SPLIT_SEED = 1984  # the textbook's shuffle seed
SCHEDULES = ("constant", "cosine")


# ---------------------------------------------------------------- data


def find_data(name_or_path, data_dir=None):
    """The data file for ``--data``: an existing file, or ``"addition"`` / ``"date"`` inside ``data_dir``
    (default: the ``NPRNN_DATA_DIR`` environment variable). nprnn ships no data, so without a folder
    the textbook's names are an error that says what to pass instead."""
    data_dir = data_dir or os.environ.get(DATA_DIR_ENV) or None
    if str(name_or_path) in BOOK_DATASETS and not Path(name_or_path).is_file() and data_dir is None:
        raise ValueError(
            f"--data {name_or_path}: nprnn does not ship the textbook's datasets; pass the path of "
            f"{name_or_path}.txt, or --data-dir DIR (or {DATA_DIR_ENV}=DIR) naming the folder that holds it"
        )
    return resolve_seq2seq_path(name_or_path, data_dir)


def vocab_data(char_to_id, question_width, answer_width, reverse, path=""):
    """A ``Seq2seqData`` with empty splits: the vocabulary and widths a checkpoint needs to encode
    questions (``encode_question``) and decode answers."""
    return Seq2seqData(
        x_train=np.empty((0, question_width), dtype=np.int64),
        t_train=np.empty((0, answer_width), dtype=np.int64),
        x_test=np.empty((0, question_width), dtype=np.int64),
        t_test=np.empty((0, answer_width), dtype=np.int64),
        char_to_id=dict(char_to_id),
        id_to_char={i: c for c, i in char_to_id.items()},
        reverse=bool(reverse),
        path=str(path),
    )


def load_data_like(path, vocab, split_seed=SPLIT_SEED):
    """Load ``path`` split with ``split_seed`` and reversed like ``vocab`` (a checkpoint's), its ids
    renumbered to ``vocab``'s. Raises ``Seq2seqDataError`` if the file uses characters the checkpoint
    does not know or has other question/answer widths."""
    data = load_seq2seq(path, seed=split_seed, reverse=vocab.reverse)
    widths, want = (data.question_width, data.answer_width), (vocab.question_width, vocab.answer_width)
    if widths != want:
        raise Seq2seqDataError(
            f"{path}: questions/answers are {widths[0]}/{widths[1]} characters wide, the checkpoint's "
            f"were {want[0]}/{want[1]}"
        )
    if data.char_to_id == vocab.char_to_id:
        return data
    unknown = sorted(c for c in data.char_to_id if c not in vocab.char_to_id)
    if unknown:
        raise Seq2seqDataError(f"{path}: characters not in the checkpoint's vocabulary: {unknown}")
    renumber = np.array([vocab.char_to_id[data.id_to_char[i]] for i in range(data.vocab_size)], dtype=np.int64)
    return Seq2seqData(
        x_train=renumber[data.x_train],
        t_train=renumber[data.t_train],
        x_test=renumber[data.x_test],
        t_test=renumber[data.t_test],
        char_to_id=vocab.char_to_id,
        id_to_char=vocab.id_to_char,
        reverse=vocab.reverse,
        path=data.path,
    )


# ---------------------------------------------------------------- decoding and accuracy


def predict(model, x, start_id, length, beam=1, batch_size=1000):
    """Answers ``(N, length)`` for questions ``x: (N, Tq)``: greedy (``beam=1``) or beam search,
    decoded ``batch_size`` questions at a time."""
    if not isinstance(beam, (int, np.integer)) or isinstance(beam, bool) or beam < 1:
        raise ValueError(f"beam must be an integer >= 1 (1 is greedy decoding), got {beam!r}")
    out = np.empty((len(x), length), dtype=np.int64)
    for lo in range(0, len(x), batch_size):
        chunk = x[lo : lo + batch_size]
        if beam == 1:
            out[lo : lo + batch_size] = model.generate(chunk, start_id, length)
        else:
            out[lo : lo + batch_size] = model.beam_search(chunk, start_id, length, beam)[0]
    return out


def exact_match(model, x, t, beam=1, batch_size=1000):
    """Fraction of questions ``x: (N, Tq)`` whose whole answer ``t[:, 1:]`` is produced (``t[:, 0]``
    is the start symbol), as the textbook's ``eval_seq2seq`` counts them."""
    if len(x) == 0:
        raise ValueError("exact_match: no examples to evaluate")
    return count_exact(model, x, t, beam, batch_size) / len(x)


def count_exact(model, x, t, beam=1, batch_size=1000):
    """How many questions ``x: (N, Tq)`` get their whole answer ``t[:, 1:]`` right (an int)."""
    if len(x) == 0:
        return 0
    guess = predict(model, x, int(t[0, 0]), t.shape[1] - 1, beam, batch_size)
    return int(np.all(guess == t[:, 1:], axis=1).sum())


def translate(model, vocab, questions, beam=1):
    """Answer strings (padding stripped) for question strings, with a checkpoint's ``vocab``."""
    x = np.stack([vocab.encode_question(q) for q in questions])
    ids = predict(model, x, vocab.start_id, vocab.answer_width - 1, beam)
    return [vocab.decode(row).rstrip() for row in ids]


def attention_weights(model, vocab, question):
    """Where an attention model looked while answering ``question`` (greedy):
    ``(weights (answer length, question width), question characters, answer characters)``, the
    question in reading order (the columns are flipped back for a model trained on reversed
    questions) and padded as in the data file."""
    if not isinstance(model, AttentionSeq2seq):
        raise ValueError(f"--attention-plot needs an attention model; this one is a {model_kind(model)} model")
    x = vocab.encode_question(question)[None]
    answer = predict(model, x, vocab.start_id, vocab.answer_width - 1)
    weights = model.attention_map(x, vocab.start_id, answer)[0]
    if vocab.reverse:
        weights = weights[:, ::-1]
    return weights, list(question.ljust(vocab.question_width)), list(vocab.decode(answer[0]))


def save_attention_plot(model, vocab, question, path):
    """The attention heatmap of ``model``'s greedy answer to ``question``, as a PNG at ``path``."""
    weights, question_chars, answer_chars = attention_weights(model, vocab, question)
    return plot_attention(weights, question_chars, answer_chars, path, title=f"{question} -> {''.join(answer_chars)}")


# ---------------------------------------------------------------- checkpoints


def model_kind(model):
    """``"seq2seq"``, ``"peeky"`` or ``"attention"``."""
    for kind, cls in MODELS.items():
        if type(model) is cls:
            return kind
    raise ValueError(f"not an nprnn seq2seq model: {type(model).__name__}")


def build_model(kind, vocab_size, embed=16, hidden=128, seed=0, dtype=np.float32):
    if kind not in MODELS:
        raise ValueError(f"model must be one of {', '.join(MODELS)}, got {kind!r}")
    return MODELS[kind](vocab_size, embed, hidden, seed=seed, dtype=dtype)


def save_seq2seq_model(path, model, vocab, extra_arrays=None, extra_meta=None):
    """Write a model and its vocabulary (and whatever training state is given) to one ``.npz``, atomically."""
    arrays = {f"param/{i:03d}": p for i, p in enumerate(model.params)}
    chars = [vocab.id_to_char[i] for i in range(vocab.vocab_size)]
    arrays["vocab"] = np.array([ord(c) for c in chars], dtype=np.int32)  # code points: NUL-safe, no pickle
    arrays.update(extra_arrays or {})
    meta = {
        "kind": CHECKPOINT_KIND,
        "model": {
            "kind": model_kind(model),
            "vocab_size": model.vocab_size,
            "wordvec_size": model.wordvec_size,
            "hidden_size": model.hidden_size,
        },
        "reverse": vocab.reverse,
        "question_width": vocab.question_width,
        "answer_width": vocab.answer_width,
    }
    meta.update(extra_meta or {})
    save_checkpoint(path, arrays, meta)


def load_seq2seq_model(path, dtype=None):
    """(model, vocab, arrays, meta) from a checkpoint written by ``save_seq2seq_model``; ``vocab``
    is a ``Seq2seqData`` with empty splits (see ``vocab_data``)."""
    arrays, meta = load_checkpoint(path)
    if meta.get("kind") != CHECKPOINT_KIND:
        raise ValueError(f"{path}: not an nprnn seq2seq checkpoint (kind {meta.get('kind')!r})")
    try:
        config = meta["model"]
        chars = [chr(int(c)) for c in arrays["vocab"]]
        vocab = vocab_data(
            {c: i for i, c in enumerate(chars)}, meta["question_width"], meta["answer_width"], meta["reverse"]
        )
        n_params = sum(k.startswith("param/") for k in arrays)
        params = [arrays[f"param/{i:03d}"] for i in range(n_params)]
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: incomplete seq2seq checkpoint ({type(e).__name__}: {e})") from None
    if len(set(chars)) != len(chars) or config.get("vocab_size") != len(chars) or "_" not in vocab.char_to_id:
        raise ValueError(f"{path}: the stored vocabulary does not match the model's ({config.get('vocab_size')})")
    model = build_model(
        config.get("kind"),
        len(chars),
        config.get("wordvec_size"),
        config.get("hidden_size"),
        dtype=dtype or (params[0].dtype if params else np.float32),
    )
    set_params(model, params, path)
    return model, vocab, arrays, meta


# ---------------------------------------------------------------- the trainer


@dataclass
class Seq2seqConfig:
    """Training settings; the defaults are the textbook's (``ch07/train_seq2seq.py``, ``ch08/train.py``)."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.001  # Adam
    schedule: str = "constant"  # constant (the book) | cosine: lr * (1 + cos(pi * step / total steps)) / 2
    max_grad: float = 5.0  # global-norm clipping threshold; 0 turns clipping off
    seed: int = 0  # initial weights and the per-epoch shuffles
    beam: int = 1  # decoding for the test accuracy: 1 is greedy, K > 1 beam search
    eval_batch_size: int = 1000  # questions decoded at once
    save_every: int = 0  # also checkpoint every this many steps inside an epoch (0: at epoch ends only)
    max_batches: int = 0  # cap on batches per epoch (0: the whole training split); for quick runs

    def validate(self):
        for name in ("epochs", "batch_size", "beam", "eval_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("save_every", "max_batches"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if not self.max_grad >= 0:
            raise ValueError(f"max_grad must be >= 0 (0 turns clipping off), got {self.max_grad}")
        return self


@dataclass
class Progress:
    """Where the run is: ``epoch`` (0-based), ``iteration`` within it, global ``step``."""

    epoch: int = 0
    iteration: int = 0
    step: int = 0
    epoch_loss: float = 0.0  # sum of batch losses so far in this epoch
    epoch_seconds: float = 0.0
    history: list = field(default_factory=list)


class Seq2seqTrainer(TrainingLoop):
    """Trains ``model`` on ``data`` (a ``Seq2seqData``) with ``config``; files go to ``out_dir``:
    ``checkpoint.npz`` (the latest state, resumable), ``metrics.jsonl`` (one record per epoch:
    train loss, test accuracy, seconds) and ``accuracy.png``. ``extra_meta`` is stored in every
    checkpoint: the data file's path, and ``split_seed`` if it is not the default 1984 (the CLI sets it).

    ``comm``: an MPI communicator (``nprnn.distributed.mpi_world()``) for data-parallel training:
    this rank trains on its share of each batch's rows and scores its share of the test split;
    only rank 0 logs, shows progress and writes files."""

    def __init__(self, model, data, config, out_dir, log=print, progress_bar=True, comm=None):
        self.model, self.data, self.config = model, data, config.validate()
        self.out_dir = Path(out_dir)
        self.log, self.progress_bar = log, progress_bar
        n_train, B = len(data.x_train), config.batch_size
        if n_train < B:
            raise ValueError(
                f"batch size {B} is larger than the training split ({n_train} examples); pass a smaller --batch-size"
            )
        if len(data.x_test) == 0:
            raise ValueError(
                f"{data.path}: the test split is empty (it is a tenth of the lines); the file needs at least 10 lines"
            )
        self.parallel = None
        if comm is not None:
            from nprnn.distributed import DataParallel

            if len(data.x_test) < comm.Get_size():  # every rank scores at least one test question
                raise ValueError(
                    f"{comm.Get_size()} MPI ranks need a test split of at least {comm.Get_size()} examples, "
                    f"{data.path} has {len(data.x_test)}; use fewer ranks"
                )
            self.parallel = DataParallel(comm, model, B)
            if not self.parallel.is_root:
                self.log, self.progress_bar = (lambda *args, **kwargs: None), False
        self.iters_per_epoch = n_train // B  # as the textbook: the last partial batch is left out
        if config.max_batches:
            self.iters_per_epoch = min(self.iters_per_epoch, config.max_batches)
        self.optimizer = optim.Adam(lr=config.lr)
        # Its own stream (not the weights' seed sequence), so changing the model does not change the order.
        self.shuffle_rng = np.random.default_rng([config.seed, 1])
        self._epoch_rng_state = rng_state(self.shuffle_rng)  # before this epoch's permutation was drawn
        self.progress = Progress()
        self.extra_meta = {"data": str(Path(data.path).resolve())} if data.path else {}
        self._stop_requested = False

    # -- saving and resuming

    def save(self, path=None):
        """Everything needed to continue exactly where the run is now."""
        arrays, scalars = optimizer_to_checkpoint(self.optimizer)
        p = self.progress
        meta = {
            "train": asdict(self.config),
            "progress": asdict(p),
            "optimizer": scalars,
            # mid-epoch, the state that draws this epoch's permutation again; else the next epoch's
            "rng": self._epoch_rng_state if p.iteration else rng_state(self.shuffle_rng),
            **self.extra_meta,
        }
        if self.parallel is not None:  # collective: every rank gets here; the replicas hold the same state
            self.parallel.check_in_sync("before saving a checkpoint")
            if not self.parallel.is_root:
                return
            meta["world_size"] = self.parallel.size
        save_seq2seq_model(path or self.checkpoint_path, self.model, self.data, arrays, meta)

    def restore(self, arrays, meta, where):
        """Load the training state of a checkpoint (the model's parameters are already loaded)."""
        if meta.get("progress") is None or meta.get("rng") is None:
            raise ValueError(f"{where}: holds a model but no training state; cannot resume from it")
        optimizer_from_checkpoint(self.optimizer, arrays, meta["optimizer"])
        set_rng_state(self.shuffle_rng, meta["rng"])
        self._epoch_rng_state = meta["rng"]
        self.progress = Progress(**meta["progress"])
        if self.parallel is not None:
            self.parallel.check_in_sync("after loading the checkpoint")

    # -- the loop

    def train_step(self, x, t):
        """One update on the batch ``x: (B, Tq)``, ``t: (B, Ta)`` (this rank's rows of it when data
        parallel); returns the full batch's mean loss."""
        model = self.model
        loss = float(model.forward(x, t))
        model.backward()
        if self.parallel is not None:  # one Allreduce: full-batch gradients and loss, any rank's Ctrl-C
            loss, self._stop_requested = self.parallel.allreduce_step(model.grads, loss)
        max_grad = self.config.max_grad
        norm = optim.clip_grads(model.grads, max_grad) if max_grad else optim.grad_norm(model.grads)
        if not (math.isfinite(loss) and math.isfinite(norm)):
            what, value = ("loss", loss) if not math.isfinite(loss) else ("gradient norm", norm)
            raise NumericError(
                f"{what} became {value} at epoch {self.progress.epoch + 1}, step {self.progress.step + 1}; "
                "stopped before updating (the last checkpoint is untouched). Try a lower --lr"
            )
        self.optimizer.lr = self.learning_rate(self.progress.step)
        self.optimizer.update(model.params, model.grads)
        return loss

    def learning_rate(self, step):
        """The lr of update ``step`` (0-based): a function of the step alone, so a resumed run follows
        the same schedule. Cosine decays from ``lr`` towards 0 over all ``epochs`` of the run."""
        c = self.config
        if c.schedule == "constant":
            return c.lr
        return optim.cosine_lr(c.lr, step, c.epochs * self.iters_per_epoch)

    def _run_epoch(self):
        p, c, data = self.progress, self.config, self.data
        if p.iteration == 0:
            p.epoch_loss, p.epoch_seconds = 0.0, 0.0
        # On resume mid-epoch the generator was set back to the epoch's start: same permutation.
        self._epoch_rng_state = rng_state(self.shuffle_rng)
        order = self.shuffle_rng.permutation(len(data.x_train))
        bar = progress_bar(self.progress_bar, self.iters_per_epoch, p.iteration, f"epoch {p.epoch + 1}/{c.epochs}")
        start, seconds_before = time.perf_counter(), p.epoch_seconds
        while p.iteration < self.iters_per_epoch:
            rows = order[p.iteration * c.batch_size : (p.iteration + 1) * c.batch_size]
            if self.parallel is not None:
                rows = rows[self.parallel.rows]
            loss = self.train_step(data.x_train[rows], data.t_train[rows])
            p.iteration, p.step, p.epoch_loss = p.iteration + 1, p.step + 1, p.epoch_loss + loss
            p.epoch_seconds = seconds_before + time.perf_counter() - start
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            self._after_step(bar)
        if bar is not None:
            bar.close()
        self._end_epoch()

    def _end_epoch(self):
        p, c = self.progress, self.config
        start = time.perf_counter()
        accuracy = self.evaluate()
        record = {
            "epoch": p.epoch + 1,
            "train_loss": p.epoch_loss / max(p.iteration, 1),
            "test_accuracy": accuracy,
            "seconds": p.epoch_seconds,
            "eval_seconds": time.perf_counter() - start,
            "beam": c.beam,
            "lr": self.optimizer.lr,  # of the epoch's last update
        }
        p.history.append(record)
        self.log(
            f"epoch {record['epoch']}/{c.epochs}  loss {record['train_loss']:.4f}  "
            f"test exact match {100 * accuracy:.2f}%{f' (beam {c.beam})' if c.beam > 1 else ''}  "
            f"{record['seconds']:.1f}s + {record['eval_seconds']:.1f}s eval"
        )
        p.epoch, p.iteration = p.epoch + 1, 0
        self.save()
        if self.parallel is None or self.parallel.is_root:
            write_metrics(self.out_dir, p.history)
            self._plot()

    def evaluate(self):
        """Exact-match accuracy on the test split; data parallel, each rank decodes its share of
        the questions and the counts of right answers are summed (exact: integers)."""
        c, x, t = self.config, self.data.x_test, self.data.t_test
        if self.parallel is None:
            return exact_match(self.model, x, t, c.beam, c.eval_batch_size)
        rows = self.parallel.shard(len(x))
        right = count_exact(self.model, x[rows], t[rows], c.beam, c.eval_batch_size)
        return self.parallel.sum(float(right)) / len(x)

    def _plot(self):
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError:
            return
        history = self.progress.history
        fig = Figure(figsize=(6, 4))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ax.plot([r["epoch"] for r in history], [r["test_accuracy"] for r in history], "o-")
        ax.set_xlabel("epoch")
        ax.set_ylabel("test exact-match accuracy")
        ax.set_ylim(-0.05, 1.05)
        ax.set_title(f"{Path(self.data.path).name}: {model_kind(self.model)}, hidden {self.model.hidden_size}")
        ax.grid(True, alpha=0.3)
        fig.tight_layout()
        tmp = self.out_dir / "accuracy.tmp.png"
        fig.savefig(tmp, format="png", dpi=100)
        tmp.replace(self.out_dir / "accuracy.png")


# ---------------------------------------------------------------- the textbook's saved parameters


def import_book_seq2seq(pkl, preset, data, out, reverse=False, data_dir=None, split_seed=SPLIT_SEED, dtype=np.float32):
    """Write the nprnn checkpoint ``out`` for parameters saved by the textbook's ``save_params``
    (``Seq2seq.pkl``, ``PeekySeq2seq.pkl``, ``AttentionSeq2seq.pkl``); returns its path.

    ``preset``: ``"seq2seq"``, ``"peeky"`` or ``"attention"``, the model the file belongs to (the
    parameter order and gate layout are the book's, so the arrays are used as they are).
    ``data``: the file it was trained on (or ``"addition"`` / ``"date"`` with ``data_dir``), which
    gives the vocabulary; ``reverse``: whether the book's script reversed the questions
    (``ch08/train.py`` does, ``ch07/train_seq2seq.py`` only with ``is_reverse = True``). Embedding
    and hidden sizes are read from the arrays. The file is read with ``nprnn.book``'s restricted
    unpickler, which refuses anything but NumPy arrays.
    """
    from nprnn.book import BookParamsError, load_book_params

    if preset not in MODELS:
        raise ValueError(f"preset must be one of {', '.join(MODELS)}, got {preset!r}")
    where = os.fspath(pkl)
    params = load_book_params(pkl)
    path = find_data(data, data_dir)
    dataset = load_seq2seq(path, seed=split_seed, reverse=reverse)
    V = dataset.vocab_size
    if len(params) != 10 or params[0].ndim != 2 or params[2].ndim != 2:
        raise BookParamsError(
            f"{where}: holds {len(params)} arrays of shapes {[p.shape for p in params]}; a textbook seq2seq "
            "model has 10 (encoder embed, Wx, Wh, b; decoder embed, Wx, Wh, b, affine W, b)"
        )
    D, H = params[0].shape[1], params[2].shape[0]
    model = build_model(preset, V, D, H, dtype=dtype)
    got, expected = [p.shape for p in params], [p.shape for p in model.params]
    if got != expected:
        raise BookParamsError(
            f"{where}: holds arrays of shapes {got}, but the {preset} model with the {V}-character "
            f"vocabulary of {path} expects {expected}; wrong --preset or --data?"
        )
    set_params(model, [p.astype(dtype) for p in params], where)
    extra = {
        "data": str(Path(path).resolve()),
        "split_seed": split_seed,
        "imported_from": str(Path(where).resolve()),
        "preset": preset,
    }
    save_seq2seq_model(out, model, dataset, extra_meta=extra)
    return Path(out)


# ---------------------------------------------------------------- commands


def cmd_train(args):
    from nprnn.distributed import abort_on_error, mpi_world

    comm = mpi_world()  # None unless started by mpiexec with more than one process
    root = comm is None or comm.Get_rank() == 0
    say = print if root else (lambda *a, **k: None)
    out_dir = Path(args.out) if args.out else Path("runs") / f"seq2seq-{Path(args.data or 'resumed').stem}-{args.model}"
    checkpoint = out_dir / "checkpoint.npz"
    if args.resume:
        if not checkpoint.exists():
            raise ValueError(f"{checkpoint}: no checkpoint to resume from (train once without --resume first)")
        model, vocab, arrays, meta = load_seq2seq_model(checkpoint)
        data_path = find_data(args.data, args.data_dir) if args.data else meta.get("data")
        if data_path is None:
            raise ValueError(f"{checkpoint}: records no data file; pass --data")
        split_seed = meta.get("split_seed", SPLIT_SEED)
        data = load_data_like(data_path, vocab, split_seed)
        settings = dict(meta.get("train") or {})
        if args.epochs is not None:
            settings["epochs"] = args.epochs
        trainer = Seq2seqTrainer(
            model, data, Seq2seqConfig(**settings), out_dir, progress_bar=not args.no_progress, comm=comm
        )
        trainer.restore(arrays, meta, checkpoint)
        say(f"resuming {checkpoint} at epoch {trainer.progress.epoch + 1}, iteration {trainer.progress.iteration}")
    else:
        if args.data is None:
            raise ValueError("--data is required (addition, date or a question_answer file)")
        data_path, split_seed = find_data(args.data, args.data_dir), args.split_seed
        data = load_seq2seq(data_path, seed=split_seed, reverse=args.reverse)
        config = Seq2seqConfig(
            **{k: v for k, v in vars(args).items() if k in Seq2seqConfig.__dataclass_fields__ and v is not None}
        )
        model = build_model(args.model, data.vocab_size, args.embed, args.hidden, config.seed, np.dtype(args.dtype))
        trainer = Seq2seqTrainer(model, data, config, out_dir, progress_bar=not args.no_progress, comm=comm)
        if checkpoint.exists() and not args.force:
            raise ValueError(f"{checkpoint} exists: pass --resume to continue it, or --force to start over")
    trainer.extra_meta.update(data=str(Path(data_path).resolve()), split_seed=split_seed)

    c, n_params = trainer.config, sum(p.size for p in model.params)
    say(
        f"data: {data_path}: {len(data.x_train):,} train / {len(data.x_test):,} test, {data.vocab_size} characters, "
        f"questions {data.question_width} wide{' (reversed)' if data.reverse else ''}, answers {data.answer_width - 1}"
    )
    say(
        f"model: {model_kind(model)}, embed {model.wordvec_size}, hidden {model.hidden_size}; "
        f"{n_params:,} parameters ({model.params[0].dtype})"
    )
    say(
        f"training: {c.epochs} epochs x {trainer.iters_per_epoch} batches of {c.batch_size}, Adam lr {c.lr}"
        f"{' with cosine decay' if c.schedule == 'cosine' else ''}, "
        f"clip {c.max_grad or 'off'}, seed {c.seed}; output: {out_dir}/"
    )
    if comm is None:
        history = trainer.run()
    else:
        say(f"data parallel: {comm.Get_size()} MPI ranks, each on its share of the {c.batch_size} rows of a batch")
        with abort_on_error(comm):
            history = trainer.run()
        if not root:
            return 0
    print(f"test exact-match accuracy {100 * history[-1]['test_accuracy']:.2f}%, checkpoint {checkpoint}")
    print(f"accuracy plot: {out_dir / 'accuracy.png'}, metrics: {out_dir / 'metrics.jsonl'}")
    x, t = data.x_test[:3], data.t_test[:3]
    guesses = predict(model, x, data.start_id, data.answer_width - 1, c.beam)
    for xi, ti, gi in zip(x, t, guesses):
        mark = "ok " if np.array_equal(gi, ti[1:]) else "BAD"
        print(f"  {mark} {data.decode_question(xi).rstrip()} -> {data.decode(gi).rstrip()}")
    return 0


def cmd_eval(args):
    model, vocab, _, meta = load_seq2seq_model(args.checkpoint)
    data_path = find_data(args.data, args.data_dir) if args.data else meta.get("data")
    if data_path is None:
        raise ValueError(f"{args.checkpoint}: records no data file; pass --data")
    data = load_data_like(data_path, vocab, meta.get("split_seed", SPLIT_SEED))
    x, t = {
        "test": (data.x_test, data.t_test),
        "train": (data.x_train, data.t_train),
        "all": (np.concatenate((data.x_train, data.x_test)), np.concatenate((data.t_train, data.t_test))),
    }[args.split]
    accuracy = exact_match(model, x, t, args.beam, args.batch_size)
    decoding = "greedy" if args.beam == 1 else f"beam {args.beam}"
    print(
        f"{args.split} exact-match accuracy: {100 * accuracy:.2f}% "
        f"({round(accuracy * len(x))}/{len(x)}, {decoding}, {Path(data_path).name})"
    )
    return 0


def cmd_translate(args):
    model, vocab, _, _ = load_seq2seq_model(args.checkpoint)
    if args.attention_plot and len(args.questions) != 1:
        raise ValueError(f"--attention-plot draws one question's map, got {len(args.questions)} questions")
    if args.attention_plot and not isinstance(model, AttentionSeq2seq):
        raise ValueError(
            f"--attention-plot needs an attention model; {args.checkpoint} holds a {model_kind(model)} model"
        )
    for answer in translate(model, vocab, args.questions, args.beam):
        print(answer)
    if args.attention_plot:
        save_attention_plot(model, vocab, args.questions[0], args.attention_plot)
        print(f"attention map: {args.attention_plot}")
    return 0


def _positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _add_data_options(p, required=False, what="the question_answer file"):
    p.add_argument(
        "--data",
        required=required,
        metavar="addition|date|FILE",
        help=f"{what}: a file in the textbook's format, or the textbook's addition/date "
        f"(found in --data-dir, since nprnn ships no data)",
    )
    p.add_argument(
        "--data-dir",
        metavar="DIR",
        help=f"folder holding addition.txt and date.txt (default: ${DATA_DIR_ENV})",
    )


def add_seq2seq_commands(subparsers):
    """Register ``nprnn seq2seq train|eval|translate`` on the top-level ``add_subparsers()`` object."""
    s = subparsers.add_parser(
        "seq2seq",
        help="encoder-decoder models on question_answer files (the textbook's addition and date tasks)",
        description="Train and use Seq2seq, PeekySeq2seq and AttentionSeq2seq on character-level "
        "question_answer files (question and answer split at the first '_', fixed widths).",
    )
    sub = s.add_subparsers(dest="seq2seq_command", required=True, metavar="SUBCOMMAND", help="train, eval or translate")

    t = sub.add_parser(
        "train",
        help="train a model; exact-match accuracy on the test split after every epoch",
        description="Train with the textbook's settings by default: embed 16, hidden 128, batch 128, "
        "Adam lr 0.001, gradient clipping 5.0, the 90/10 train/test split with seed 1984.",
    )
    _add_data_options(t, what="training data (with --resume: default the checkpoint's)")
    t.add_argument(
        "--model", default="attention", choices=list(MODELS), help="encoder-decoder variant (default attention)"
    )
    t.add_argument("--reverse", action="store_true", help="reverse the questions (the textbook's trick; helps)")
    t.add_argument("--split-seed", type=int, default=SPLIT_SEED, help="seed of the train/test shuffle (default 1984)")
    g = t.add_argument_group("model and optimization")
    g.add_argument("--embed", type=_positive, default=16, help="character embedding size (default 16)")
    g.add_argument(
        "--hidden", type=_positive, default=128, help="LSTM hidden size (default 128; the book uses 256 for date)"
    )
    g.add_argument("--dtype", default="float32", choices=["float32", "float64"], help="parameter dtype (float32)")
    g.add_argument("--epochs", type=_positive, help="passes over the training split (default 10; with --resume: total)")
    g.add_argument("--batch-size", type=_positive, help="examples per update (default 128)")
    g.add_argument("--lr", type=float, help="Adam learning rate (default 0.001)")
    g.add_argument(
        "--schedule",
        choices=SCHEDULES,
        help="learning rate over the run: constant (default, the book's) or cosine (from --lr down to 0 over "
        "all epochs; with --lr 0.005 it learns addition to 99%% in 10 epochs, see benchmarks/RESULTS_SEQ2SEQ.md)",
    )
    g.add_argument("--max-grad", type=float, help="clip the global gradient norm to this (default 5.0; 0: off)")
    g.add_argument("--seed", type=int, help="seed of the initial weights and of the shuffles (default 0)")
    g.add_argument("--beam", type=_positive, help="beam width for the test accuracy (default 1: greedy)")
    g.add_argument("--max-batches", type=int, help="cap on batches per epoch, for quick runs (0: no cap)")
    g = t.add_argument_group("output")
    g.add_argument("--out", metavar="DIR", help="output directory (default runs/seq2seq-<data>-<model>)")
    g.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint.npz")
    g.add_argument("--force", action="store_true", help="start over even if --out already has a checkpoint")
    g.add_argument("--save-every", type=int, help="also checkpoint every N steps within an epoch")
    g.add_argument("--no-progress", action="store_true", help="no progress bar (one line per epoch only)")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser(
        "eval",
        help="exact-match accuracy of a checkpoint",
        description="The fraction of questions whose whole answer the model gets right.",
    )
    e.add_argument("checkpoint", help="a .npz written by nprnn seq2seq train (or import-book)")
    _add_data_options(e, what="data to score (default: the checkpoint's); split as in training")
    e.add_argument("--split", default="test", choices=["test", "train", "all"], help="which part (default test)")
    e.add_argument("--beam", type=_positive, default=1, help="beam width (default 1: greedy decoding)")
    e.add_argument("--batch-size", type=_positive, default=1000, help="questions decoded at once (default 1000)")
    e.set_defaults(func=cmd_eval)

    r = sub.add_parser(
        "translate",
        help="answer questions with a checkpoint",
        description='Print the model\'s answer to each question, e.g. "september 27, 1994".',
    )
    r.add_argument("checkpoint", help="a .npz written by nprnn seq2seq train (or import-book)")
    r.add_argument("questions", nargs="+", metavar="QUESTION", help="question text, as written in the data file")
    r.add_argument("--beam", type=_positive, default=1, help="beam width (default 1: greedy decoding)")
    r.add_argument(
        "--attention-plot", metavar="PNG", help="write the attention heatmap of the answer (attention models)"
    )
    r.set_defaults(func=cmd_translate)
    return s
