"""The one training loop, for every model family.

One step: forward a batch, backward, (data parallel: one Allreduce), clip the global gradient norm,
check that loss and gradient norm are finite, set the learning rate of this step, update, check the
parameters are finite. Each epoch ends with the validation metric (perplexity, accuracy), which
marks the best model (``best.npz``), drives the plateau schedule and is logged, written to the
metrics file and plotted. A checkpoint after every epoch (and every ``save_every`` steps, and on
Ctrl-C) holds everything needed to continue bit for bit.

The learning rate is a function of the position in the run and of a *plan*
``{"step", "epoch", "lr", "end"}`` kept in the checkpoint: the schedule runs from ``lr`` at the
plan's step/epoch, and a cosine one reaches 0 at step ``end``. Resuming with the same options keeps
the plan, so the run continues exactly; an option that is safe to change (``SAFE_ON_RESUME``)
re-plans from the resume point: a new ``lr`` starts there, a new ``epochs`` (or ``max_batches``)
moves the cosine's end to the new last step, so the lr never sits at 0 for whole epochs.

What differs between families (the batches, the validation metric, the state carried in a
checkpoint, the model's file) is in the subclasses in ``nprnn.training.lm`` and
``nprnn.training.seq2seq``.
"""

import gc
import json
import math
import os
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from nprnn import accel, optim
from nprnn._checks import positive_int
from nprnn.checkpoint import CheckpointError
from nprnn.training.presets import OPTIMIZER_NAMES, SCHEDULES

OPTIMIZERS = {
    "sgd": optim.SGD,
    "momentum": optim.Momentum,
    "nesterov": optim.Nesterov,
    "adagrad": optim.AdaGrad,
    "rmsprop": optim.RMSprop,
    "adam": optim.Adam,
    "adamw": optim.AdamW,
}
assert tuple(OPTIMIZERS) == OPTIMIZER_NAMES
LOOP_VERSION = 2  # the training state's layout in a checkpoint (1: nprnn 0.1)
# What --resume may change: it is applied from the resume point. Anything else that would change the
# model, the data or the random streams is refused (see nprnn.cli).
SAFE_ON_RESUME = ("lr", "epochs", "max_grad", "schedule", "decay", "decay_start", "save_every", "max_batches")


class NumericError(RuntimeError):
    """A NaN or infinite loss, gradient, update or validation metric: training stops before it spreads."""


class RunLockedError(ValueError):
    """Another run is writing into the same output folder."""


class RunExistsError(ValueError):
    """The output folder holds another run's checkpoint, and overwriting it was not asked for."""


# ---------------------------------------------------------------- settings and position


@dataclass
class LoopConfig:
    """What every family's training takes. ``decay`` multiplies the lr: every epoch from ``decay_start``
    (``step``), or when the validation metric did not improve (``plateau``, the textbook's divide-by-4
    is 0.25); ``cosine`` anneals to 0 over the run; ``none`` keeps it."""

    epochs: int = 4
    batch_size: int = 20
    optimizer: str = "sgd"
    lr: float = 20.0
    max_grad: float = 0.25  # global-norm clipping threshold; 0 turns clipping off
    schedule: str = "none"
    decay: float = 0.25
    decay_start: int = 1
    seed: int = 0
    save_every: int = 0  # also checkpoint every this many steps inside an epoch (0: at epoch ends only)
    max_batches: int = 0  # cap on batches per epoch (0: the whole training split); for quick runs

    def validate(self):
        for name in ("epochs", "batch_size", "decay_start"):
            positive_int(name, getattr(self, name))
        for name in ("save_every", "max_batches", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0 (0: off), got {value!r}")
        if self.schedule == "constant":  # nprnn 0.1's seq2seq name for it
            self.schedule = "none"
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if not _number(self.lr) or not 0 < self.lr < math.inf:
            raise ValueError(f"lr must be a positive finite number, got {self.lr!r}")
        if not _number(self.max_grad) or not 0 <= self.max_grad < math.inf:
            raise ValueError(f"max_grad must be a finite number >= 0 (0 turns clipping off), got {self.max_grad!r}")
        if not _number(self.decay) or not 0 < self.decay < 1:
            raise ValueError(
                "decay multiplies the lr and must be in (0, 1) (the textbook's divide-by-4 is 0.25), "
                f"got {self.decay!r}"
            )
        return self


def _number(x):
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def config_from_dict(cls, values, where):
    """``cls(**values).validate()`` for settings read from a checkpoint: unknown keys and values of the
    wrong type are a ``CheckpointError`` naming ``where``, never a TypeError deep inside."""
    if not isinstance(values, dict):
        raise CheckpointError(f"{where}: training settings must be a dict, got {type(values).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise CheckpointError(f"{where}: unknown training settings {unknown}")
    for key, value in values.items():
        want = type(known[key].default)
        ok = isinstance(value, want) and not (want is not bool and isinstance(value, bool))
        if want is float:
            ok = _number(value)
        if not ok:
            raise CheckpointError(f"{where}: training setting {key} must be a {want.__name__}, got {value!r}")
    try:
        return cls(**values).validate()
    except ValueError as e:
        raise CheckpointError(f"{where}: {e}") from None


@dataclass
class Progress:
    """Where the run is: ``epoch`` (0-based) and ``iteration`` within it, global ``step``; the sums of
    the epoch so far; the best validation metric; the per-epoch history; the lr plan."""

    epoch: int = 0
    iteration: int = 0
    step: int = 0
    epoch_loss: float = 0.0
    epoch_seconds: float = 0.0
    best: float = 0.0  # meaningful once history is non-empty
    best_epoch: int = 0
    history: list = field(default_factory=list)
    plan: dict = field(default_factory=dict)
    # [epoch as a float, mean training loss] every logging interval (about 20 an epoch): the plot's curve
    curve: list = field(default_factory=list)
    interval_loss: float = 0.0  # sum of the losses since the last curve point


def progress_from_dict(values, where):
    """A ``Progress`` from checkpoint metadata, every value's type and range checked."""
    if not isinstance(values, dict) or set(values) != {f.name for f in fields(Progress)}:
        got = sorted(values) if isinstance(values, dict) else type(values).__name__
        raise CheckpointError(f"{where}: training progress must have the keys of Progress, got {got}")
    for key in ("epoch", "iteration", "step", "best_epoch"):
        v = values[key]
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 1 << 62:
            raise CheckpointError(f"{where}: progress {key} must be an integer >= 0, got {v!r}")
    for key in ("epoch_loss", "epoch_seconds", "best", "interval_loss"):
        v = values[key]
        if not _number(v) or not math.isfinite(v):
            raise CheckpointError(f"{where}: progress {key} must be a finite number, got {v!r}")
    history = values["history"]
    if not isinstance(history, list) or len(history) != values["epoch"]:
        raise CheckpointError(f"{where}: progress history must be a list of one record per finished epoch")
    for record in history:
        if not isinstance(record, dict) or not all(
            isinstance(k, str) and (_number(v) and math.isfinite(v) or isinstance(v, bool)) for k, v in record.items()
        ):
            raise CheckpointError(f"{where}: progress history records must map names to finite numbers")
    curve = values["curve"]
    if not isinstance(curve, list) or not all(
        isinstance(point, list) and len(point) == 2 and all(_number(v) and math.isfinite(v) for v in point)
        for point in curve
    ):
        raise CheckpointError(f"{where}: progress curve must be a list of [epoch, loss] pairs of finite numbers")
    plan = values["plan"]
    if not isinstance(plan, dict) or set(plan) != {"step", "epoch", "lr", "end"}:
        raise CheckpointError(f"{where}: progress plan must have the keys step, epoch, lr, end, got {plan!r}")
    if not all(_number(v) and math.isfinite(v) and v >= 0 for v in plan.values()):
        raise CheckpointError(f"{where}: progress plan values must be finite numbers >= 0, got {plan!r}")
    return Progress(**values)


def check_resumable(meta, where):
    """A ``CheckpointError`` unless ``meta`` holds a training state this nprnn can continue."""
    if meta.get("train") is None or meta.get("progress") is None:
        raise CheckpointError(f"{where}: holds a model but no training state; cannot resume from it")
    if meta.get("loop") != LOOP_VERSION:
        raise CheckpointError(
            f"{where}: its training state was written by an earlier nprnn (layout {meta.get('loop', 1)}, this one "
            f"reads {LOOP_VERSION}); the model loads for eval, generate and export, but the run cannot be resumed: "
            "start a new one with --force"
        )


def learning_rate(config, progress):
    """The lr of the next update at ``progress`` under ``config.schedule`` and ``progress.plan``."""
    c, p, plan = config, progress, progress.plan
    lr = plan["lr"]
    if c.schedule == "step":

        def decays(epoch):  # epochs decayed at the start of ``epoch`` (0-based)
            return max(0, epoch - c.decay_start + 1)

        return lr * c.decay ** (decays(p.epoch) - decays(plan["epoch"]))
    if c.schedule == "plateau":
        misses = sum(not r["improved"] for r in p.history if plan["epoch"] <= r["epoch"] - 1 < p.epoch)
        return lr * c.decay**misses
    if c.schedule == "cosine":
        span = max(plan["end"] - plan["step"], 1)
        return optim.cosine_lr(lr, p.step - plan["step"], span)
    return lr


# ---------------------------------------------------------------- files


def write_atomic(path, write, mode="w"):
    """Replace ``path`` by what ``write(file)`` writes, through a temporary of a unique name beside it
    (two runs never share a temporary), with the permissions a new file would get."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path, text):
    """Replace ``path`` by a file holding ``text`` (see ``write_atomic``)."""
    write_atomic(path, lambda f: f.write(text))


def write_metrics(out_dir, history, log_format="jsonl"):
    """The per-epoch records as ``metrics.jsonl`` (strict JSON, one object a line) or ``metrics.csv``."""
    if log_format == "csv":
        keys = list(history[0]) if history else []
        lines = [",".join(keys)] + [",".join(str(r[k]) for k in keys) for r in history]
        text, name = "\n".join(lines) + "\n", "metrics.csv"
    else:
        text, name = "".join(json.dumps(r, allow_nan=False) + "\n" for r in history), "metrics.jsonl"
    write_text_atomic(Path(out_dir) / name, text)


class RunLock:
    """``out_dir/.lock``, created with O_EXCL and holding the owner's pid: one run per folder. A lock
    whose pid is no longer running is stale and taken over."""

    def __init__(self, out_dir):
        self.path = Path(out_dir) / ".lock"
        self.held = False

    def acquire(self):
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner is not None and _running(owner):
                    raise RunLockedError(
                        f"{self.path.parent}: another nprnn run (pid {owner}) is writing here; "
                        "wait for it or use another --out"
                    ) from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()}\n")
            self.held = True
            return self
        raise RunLockedError(f"{self.path}: could not take the run lock")

    def _owner(self):
        try:
            return int(self.path.read_text().strip() or -1)
        except (OSError, ValueError):
            return None

    def release(self):
        if self.held and self._owner() == os.getpid():
            self.path.unlink(missing_ok=True)
        self.held = False


def _running(pid):
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


_SAID = set()  # the notes said once per process


def say_once(key, text):
    """Print ``text`` on stderr the first time ``key`` comes up in this process."""
    if key not in _SAID:
        _SAID.add(key)
        print(text, file=sys.stderr)


EXTRA_NOTE = "nprnn: pip install 'nprnn[train]' adds the progress bar, the plots and BLAS thread control"


def progress_bar(enabled, total, initial, desc, unit="batch"):
    """A tqdm bar (``tqdm.auto``: a widget in Jupyter) over the batches of the whole run, or None when
    disabled, when stderr is not a terminal nor a notebook (a log file then gets one line per epoch),
    or when tqdm is not installed."""
    if not enabled or not (sys.stderr.isatty() or "ipykernel" in sys.modules):
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        say_once("extra", EXTRA_NOTE)
        return None
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=False, dynamic_ncols=True)


def optimizer_to_checkpoint(optimizer):
    """(arrays, scalars) of an optimizer's state: arrays go into the ``.npz`` as ``opt/<key>``."""
    arrays, scalars = {}, {}
    for key, value in optimizer.state_dict().items():
        if isinstance(value, np.ndarray):
            arrays[f"opt/{key}"] = value
        else:
            scalars[key] = value
    return arrays, scalars


def optimizer_from_checkpoint(optimizer, arrays, scalars):
    """Inverse of ``optimizer_to_checkpoint``: load the state into ``optimizer``."""
    if not isinstance(scalars, dict):
        raise ValueError(f"optimizer settings must be a dict, got {type(scalars).__name__}")
    state = dict(scalars)
    state.update({k[len("opt/") :]: v for k, v in arrays.items() if k.startswith("opt/")})
    optimizer.load_state_dict(state)


# ---------------------------------------------------------------- the loop


class TrainingLoop:
    """Trains ``model`` with ``config`` (a ``LoopConfig``); files go to ``out_dir``: ``checkpoint.npz``
    (resumable, latest), ``best.npz`` (best validation metric), ``metrics.jsonl`` (or ``.csv``) and a
    plot. ``comm``: an MPI communicator for data-parallel training (``nprnn.training.distributed``).

    A family's subclass sets ``metric`` (its history key), ``higher_is_better``, ``plot_name`` and
    defines ``full_epoch()``, ``start_epoch()``, ``batch(iteration)``, ``tokens(x)``, ``validate()``,
    ``epoch_record(train_loss)``, ``training_state()``, ``restore_training_state(arrays, meta, where)``,
    ``save_model(path, arrays, meta)`` and ``plot(ax, history)``.
    """

    metric = "valid_ppl"
    metric_label = "validation perplexity"
    higher_is_better = False
    plot_name = "perplexity.png"
    unit = "words"

    config_class = LoopConfig
    default_out = "runs/run"

    def __init__(self, model, config=None, out_dir=None, log=print, progress_bar=True, log_format="jsonl",
                 comm=None, overwrite=False):  # fmt: skip
        config = self.config_class() if config is None else config
        self.model, self.config = model, config.validate()
        self.out_dir = Path(out_dir if out_dir is not None else self.default_out)
        self.log, self.progress_bar, self.log_format = log, progress_bar, log_format
        self.overwrite, self._resumed = overwrite, False
        self.optimizer = OPTIMIZERS[config.optimizer](lr=config.lr)
        self.parallel = None
        if comm is not None:
            from nprnn.training.distributed import DataParallel

            self.parallel = DataParallel(comm, model, config.batch_size)
            if not self.parallel.is_root:
                self.log, self.progress_bar = (lambda *args, **kwargs: None), False
        self.progress = Progress()
        self.extra_meta = {}  # stored in every checkpoint, e.g. {"data": path of the corpus}
        self._stop_requested = False
        self._lock = None

    @property
    def root(self):
        return self.parallel is None or self.parallel.is_root

    @property
    def checkpoint_path(self):
        return self.out_dir / "checkpoint.npz"

    @property
    def iters_per_epoch(self):
        full = self.full_epoch()
        return min(full, self.config.max_batches) if self.config.max_batches else full

    def _remaining_steps(self):
        p = self.progress
        return max(self.config.epochs - p.epoch, 0) * self.iters_per_epoch - (
            p.iteration if p.epoch < self.config.epochs else 0
        )

    def start_plan(self):
        """The plan of a new run: from ``config.lr`` at step 0 to the last step of ``config.epochs``."""
        self.progress.plan = {"step": 0, "epoch": 0, "lr": self.config.lr, "end": self._remaining_steps()}

    @property
    def lr(self):
        """The lr of the next update."""
        if not self.progress.plan:
            self.start_plan()
        return learning_rate(self.config, self.progress)

    # -- resuming with changed options

    def change_settings(self, changes):
        """Apply ``changes`` (``{setting: value}`` of ``SAFE_ON_RESUME`` or a family's extra safe ones)
        from the resume point, re-planning the lr; returns ``["lr 0.004 -> 0.01", ...]`` to show."""
        old, p = self.config, self.progress
        values = {k: v for k, v in changes.items() if getattr(old, k) != v}
        if not values:
            return []
        current_lr = self.lr
        new = type(old)(**{**asdict(old), **values}).validate()
        self.config = new
        shown = [f"{k} {getattr(old, k)} -> {v}" for k, v in values.items()]
        if {"lr", "schedule", "decay", "decay_start"} & set(values):
            start = values.get("lr", current_lr)
            p.plan = {"step": p.step, "epoch": p.epoch, "lr": start, "end": p.step + self._remaining_steps()}
        elif {"epochs", "max_batches"} & set(values):
            p.plan = {**p.plan, "end": p.step + self._remaining_steps()}
        if new.schedule == "cosine" or {"lr", "schedule", "decay", "decay_start"} & set(values):
            shown.append(
                f"lr now {self.lr:.6g}" + (f", cosine to 0 at step {p.plan['end']}" if new.schedule == "cosine" else "")
            )
        return shown

    # -- saving and resuming

    def save(self, path=None):
        """Everything needed to continue exactly where the run is now (collective under MPI)."""
        arrays, scalars = optimizer_to_checkpoint(self.optimizer)
        state_arrays, state_meta = self.training_state()
        if not self.root:
            return
        arrays.update(state_arrays)
        meta = {
            "loop": LOOP_VERSION,
            "train": asdict(self.config),
            "progress": asdict(self.progress),
            "optimizer": scalars,
            **state_meta,
            **self.extra_meta,
        }
        self.save_model(path or self.checkpoint_path, arrays, meta)

    def restore(self, arrays, meta, where):
        """Load the training state of a checkpoint (the model's parameters are already loaded)."""
        check_resumable(meta, where)
        self.progress = progress_from_dict(meta["progress"], where)
        self._resumed = True
        try:
            optimizer_from_checkpoint(self.optimizer, arrays, meta.get("optimizer"))
            self.restore_training_state(arrays, meta, where)
        except (KeyError, TypeError, ValueError) as e:
            if str(e).startswith(str(where)):
                raise
            problem = f"missing {e}" if isinstance(e, KeyError) else str(e)
            raise CheckpointError(f"{where}: cannot resume from its training state ({problem})") from None

    # -- the loop

    def run(self):
        """Train until ``config.epochs``; returns the history (one dict per epoch). SIGINT saves a
        resumable checkpoint at the next step boundary and raises ``KeyboardInterrupt``."""
        if not self.progress.plan:
            self.start_plan()
        accel.retain_freed_memory()  # the step's large arrays are reused, not page-faulted in afresh
        if self.root:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self._lock = RunLock(self.out_dir).acquire()
        old_handler = signal.signal(signal.SIGINT, self._request_stop)
        p, c = self.progress, self.config
        self._bar = None
        try:
            fresh = not self._resumed and p.step == 0 and not p.history  # not continuing a run of its own
            if self.root and fresh and not self.overwrite and self.checkpoint_path.exists():
                raise RunExistsError(
                    f"{self.out_dir} holds another run ({self.checkpoint_path.name}); resume it, or pass "
                    "overwrite=True (--force) to start over, or another out_dir (--out)"
                )
            if self.root:  # from the checkpoint's history: a kill at any moment leaves nothing stale
                self._write_reports()
            total = c.epochs * self.iters_per_epoch
            self._bar = progress_bar(self.progress_bar, total, min(p.epoch * self.iters_per_epoch + p.iteration,
                                     total), f"epoch {p.epoch + 1}/{c.epochs}", "batch")  # fmt: skip
            while p.epoch < c.epochs:
                self._run_epoch()
        finally:
            if self._bar is not None:
                self._bar.close()
            signal.signal(signal.SIGINT, old_handler)
            if self._lock is not None:
                self._lock.release()
        return p.history

    def _say(self, line):
        """A line for the log: above the progress bar while one is shown."""
        if self._bar is not None and self.log is print:
            self._bar.write(line)
        else:
            self.log(line)

    def _request_stop(self, signum, frame):
        if self.parallel is not None:  # stop once every rank knows: the next step's Allreduce tells them
            self.parallel.signalled = True
        else:
            self._stop_requested = True

    def _where(self):
        return f"epoch {self.progress.epoch + 1}, step {self.progress.step + 1}"

    def step(self, x, t):
        """One update on the batch ``(x, t)``; returns the (full-batch) loss."""
        model, c = self.model, self.config
        # NumPy's overflow warnings would only say, over many lines, what the checks below report in one
        with np.errstate(all="ignore"):
            loss = float(model.forward(x, t))
            model.backward()
            if self.parallel is not None:  # one Allreduce: full-batch gradients and loss, any rank's Ctrl-C
                loss, self._stop_requested = self.parallel.allreduce_step(model.grads, loss)
            norm = optim.grad_norm(model.grads)
            rate = optim.clip_rate(norm, c.max_grad) if c.max_grad else 1.0  # applied by the update
            if not (math.isfinite(loss) and math.isfinite(norm)):
                what, value = ("loss", loss) if not math.isfinite(loss) else ("gradient norm", norm)
                raise NumericError(
                    f"{what} became {value} at {self._where()}; stopped before updating (the last checkpoint "
                    "is untouched). Try a lower --lr or a smaller --max-grad"
                )
            self.optimizer.lr = self.lr
            self.optimizer.update(model.params, model.grads, grad_scale=rate)
        if not all(np.isfinite(p).all() for p in model.params):  # an lr so high the update overflowed
            raise NumericError(
                f"the update of {self._where()} made parameters NaN or infinite; stopped (the last checkpoint "
                "is untouched). Try a lower --lr or a smaller --max-grad"
            )
        return loss

    def _run_epoch(self):
        p, c = self.progress, self.config
        self.model.train = True
        if p.iteration == 0:
            p.epoch_loss, p.epoch_seconds = 0.0, 0.0
        self.start_epoch()
        bar, iters = self._bar, self.iters_per_epoch
        if bar is not None:
            bar.set_description(f"epoch {p.epoch + 1}/{c.epochs}", refresh=False)
        interval = max(iters // 20, 1)  # the plot's curve: about 20 points an epoch
        start, seconds_before, tokens = time.perf_counter(), p.epoch_seconds, 0
        while p.iteration < iters:
            x, t = self.batch(p.iteration)
            loss = self.step(x, t)
            p.iteration, p.step, p.epoch_loss = p.iteration + 1, p.step + 1, p.epoch_loss + loss
            p.interval_loss += loss
            if p.iteration % interval == 0 or p.iteration == iters:
                done = p.iteration % interval or interval
                p.curve.append([p.epoch + p.iteration / iters, p.interval_loss / done])
                p.interval_loss = 0.0
            tokens += self.tokens(x)
            elapsed = time.perf_counter() - start
            p.epoch_seconds = seconds_before + elapsed
            if bar is not None:
                bar.update(1)
                rate = f"{tokens * (self.parallel.size if self.parallel else 1) / max(elapsed, 1e-9):,.0f}"
                bar.set_postfix({"loss": f"{loss:.4f}", f"{self.unit}/s": rate}, refresh=False)
            self._after_step()
        self._end_epoch()

    def _after_step(self):
        """After an update: stop if asked to (saving first), or checkpoint if ``save_every`` says so."""
        p, c = self.progress, self.config
        if self._stop_requested:
            if self._bar is not None:
                self._bar.close()
                self._bar = None
            self.save()
            raise KeyboardInterrupt(f"interrupted at step {p.step}; resumable checkpoint in {self.checkpoint_path}")
        if c.save_every and p.step % c.save_every == 0 and p.iteration < self.iters_per_epoch:
            self.save()

    def _end_epoch(self):
        p = self.progress
        train_loss = p.epoch_loss / max(p.iteration, 1)
        lr = self.optimizer.lr  # of the epoch's last update
        try:  # the layers never overflow on finite weights, so an overflow here means the model diverged
            with np.errstate(over="raise", invalid="raise"):
                value = self.validate()
        except FloatingPointError:
            value = "an overflow"
        if not (isinstance(value, float) and math.isfinite(value)):
            raise NumericError(
                f"the {self.metric_label} became {value} after epoch {p.epoch + 1} (step {p.step}); the model "
                "diverged. Stopped: nothing of this epoch is saved. Try a lower --lr or a smaller --max-grad"
            )
        improved = not p.history or (value > p.best if self.higher_is_better else value < p.best)
        record = {"epoch": p.epoch + 1, **self.epoch_record(train_loss, value), "lr": lr, "step": p.step,
                  "improved": improved}  # fmt: skip
        p.history.append(record)
        if improved:
            p.best, p.best_epoch = value, p.epoch + 1
        self._say(self.epoch_line(record) + ("  (best)" if improved else ""))
        p.epoch, p.iteration = p.epoch + 1, 0
        if improved:
            self.save_best(value)
        self.save()
        if self.root:
            self._write_reports()

    def save_best(self, value):
        if self.root:
            self.save_model(self.out_dir / "best.npz", {}, {self.metric: value, **self.extra_meta})

    def _write_reports(self):
        write_metrics(self.out_dir, self.progress.history, self.log_format)
        if self.progress.history:
            self._plot()

    def figure(self):
        """The training curves as a matplotlib ``Figure`` (shown inline in a notebook): the training
        loss every logging interval, the validation metric every epoch, the best epoch marked."""
        from matplotlib.ticker import MaxNLocator

        fig = new_figure(figsize=(6.4, 4))
        ax = fig.add_subplot()
        self.plot(ax, self.progress.history, self.progress.curve, self.progress.best_epoch)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(0, max(self.progress.epoch, 1) + 0.25)  # room for the best epoch's marker
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        return fig

    def _plot(self):
        try:
            fig = self.figure()
        except ImportError:
            say_once("extra", EXTRA_NOTE)
            return
        write_atomic(self.out_dir / self.plot_name, lambda f: fig.savefig(f, format="png", dpi=100), "wb")
        # a figure is a web of reference cycles: free it now, not at Python's next full collection
        fig.clear()
        gc.collect()


def new_figure(**kwargs):
    """A matplotlib ``Figure`` that draws without a display. In a Jupyter kernel it comes from pyplot
    (closed at once, so it shows once, as the cell's value), because only then does the inline
    backend display it; elsewhere it is a plain Agg figure that pyplot never holds on to."""
    if "ipykernel" in sys.modules:
        import matplotlib.pyplot as plt

        fig = plt.figure(**kwargs)
        plt.close(fig)
        return fig
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def readable_log_axis(axis):
    """Plain numbers (3, 4, 6, 10, 20...) on a log axis instead of 6x10^0."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
    axis.set_minor_formatter(NullFormatter())


def open_resume(checkpoint, load, config_class, force=False):
    """``(model, vocab, arrays, meta, config)`` of the run to resume from ``checkpoint``, read with ``load``
    (``nprnn.models.io.load_lm`` or ``load_seq2seq``); one-line errors when there is nothing to resume."""
    if force:
        raise ValueError("--resume continues the run in --out and --force starts it over; pass one of them")
    if not checkpoint.exists():
        raise ValueError(f"{checkpoint}: no checkpoint to resume from (train once without --resume first)")
    model, vocab, arrays, meta = load(checkpoint)
    check_resumable(meta, checkpoint)  # before reading any data
    return model, vocab, arrays, meta, config_from_dict(config_class, meta["train"], checkpoint)


def refuse_changes(fixed, where):
    """For ``--resume``: ``fixed`` maps an option (as typed, e.g. ``"--hidden"``) to ``(given, saved)``;
    an option given with another value than the run's is refused, naming both."""
    for option, (given, saved) in fixed.items():
        if given is not None and given != saved:
            raise ValueError(
                f"{option} {given}: the run in {where} has {option.lstrip('-')} {saved}; a resumed run keeps its "
                "model, data and random streams (start a new run with --force or another --out)"
            )
