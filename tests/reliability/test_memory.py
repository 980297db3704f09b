"""Memory: training does not grow over epochs, and evaluation reads a memory-mapped id file batch by
batch, so a corpus larger than memory can be evaluated.

Training is measured twice. In process, with tracemalloc (every Python and NumPy allocation) after a
garbage collection at each epoch end: what is still allocated after epoch 6 minus after epoch 2 is
the history records, a few hundred bytes an epoch; a harness check shows the same measurement catches
a leak of one gradient copy per step. The plot is left out there (matplotlib's caches would only add
noise, and tracemalloc makes it slow); the second measurement covers it: the peak RSS of a real
`nprnn train` process after the warm-up epochs against its peak over the whole run.
"""

import gc
import os
import re
import subprocess
import tracemalloc

import numpy as np
import pytest

import nprnn.data.corpus
import nprnn.models.lm
from nprnn.cli import main
from nprnn.data.corpus import load_corpus
from nprnn.models.lm import LanguageModel, LMConfig
from nprnn.training.lm import LMTrainer, TrainConfig
from tests.reliability import make_text, nprnn_command


@pytest.fixture(scope="module")
def words(tmp_path_factory):
    return make_text(tmp_path_factory.mktemp("memory") / "words.txt", lines=200, words=12)


# ---------------------------------------------------------------- training


class LeakyTrainer(LMTrainer):
    """A trainer with the classic bug: it keeps something of every step (here a gradient copy)."""

    kept = []

    def step(self, x, t):
        loss = super().step(x, t)
        self.kept.append(self.model.grads[1].copy())
        return loss


def traced_after_each_epoch(words, tmp_path, monkeypatch, trainer_cls=LMTrainer, epochs=6):
    """Bytes held (tracemalloc, after gc.collect) at the end of each epoch of a small training run."""
    monkeypatch.setattr(LMTrainer, "_plot", lambda self: None)
    corpus = load_corpus(words, level="word")
    config = TrainConfig(
        epochs=epochs, batch_size=4, bptt=6, optimizer="adam", lr=0.01, eval_batch_size=2, eval_bptt=5,
        save_every=5, max_batches=20,
    )  # fmt: skip
    model = LanguageModel(LMConfig(vocab_size=len(corpus.vocab), embed=32, hidden=64, dropout=0.1), seed=0)
    held = []

    def log(*_):  # called once per epoch, after the validation pass
        gc.collect()
        held.append(tracemalloc.get_traced_memory()[0])

    tracemalloc.start()
    try:
        trainer_cls(model, corpus, config, tmp_path / "run", log=log, progress_bar=False).run()
    finally:
        tracemalloc.stop()
    assert len(held) == epochs
    return held


def test_training_allocations_do_not_grow_over_epochs(words, tmp_path, monkeypatch):
    held = traced_after_each_epoch(words, tmp_path, monkeypatch)
    growth = held[-1] - held[1]  # epoch 6 against epoch 2 (epoch 1 creates the optimizer state)
    assert growth < 16 * 1024, f"{growth} bytes more after epoch 6 than after epoch 2: {held}"


def test_the_measurement_catches_a_leak(words, tmp_path, monkeypatch):
    LeakyTrainer.kept = []
    held = traced_after_each_epoch(words, tmp_path, monkeypatch, LeakyTrainer)
    leaked = sum(a.nbytes for a in LeakyTrainer.kept[40:])  # what the 20 steps of each of epochs 3-6 kept
    assert held[-1] - held[1] >= leaked > 16 * 1024 * 10
    LeakyTrainer.kept = []


def test_rss_of_nprnn_train_stops_growing_after_warm_up(words, tmp_path):
    """A real `nprnn train` of 9 epochs (with plots, checkpoints and metrics each epoch): its peak RSS
    (VmHWM, read when it prints an epoch's line) at epoch 3 and at epoch 9 differ by little, so the
    five epochs in between, plots included, added nothing. Measured: about 0.3 MB; about 8 MB while
    each epoch's figure waited for Python's cyclic garbage collector, and 28 MB with a copy of the
    gradients kept at every step. (Not ru_maxrss: on Linux a child inherits its parent's peak.)"""
    args = [
        "train", "--data", words, "--level", "word", "--out", tmp_path / "run", "--cell", "lstm",
        "--hidden", "64", "--embed", "32", "--batch-size", "4", "--bptt", "6", "--eval-batch-size", "2",
        "--eval-bptt", "5", "--epochs", "9", "--max-batches", "40", "--save-every", "5", "--no-progress",
        "--sample-length", "0",
    ]  # fmt: skip
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    command = nprnn_command(*args)
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    peak = {}
    for line in proc.stdout:
        epoch = re.match(r"epoch (\d+)/9 ", line)
        if epoch and epoch.group(1) in ("3", "9"):
            with open(f"/proc/{proc.pid}/status") as f:  # the child is alive: it is printing
                peak[epoch.group(1)] = int(re.search(r"VmHWM:\s+(\d+) kB", f.read()).group(1))
    assert proc.wait(timeout=120) == 0 and peak.keys() == {"3", "9"}
    growth_kb = peak["9"] - peak["3"]
    assert growth_kb < 4 * 1024, f"peak RSS grew by {growth_kb} kB over epochs 4-8"


# ---------------------------------------------------------------- evaluating a memory-mapped corpus


@pytest.fixture(scope="module")
def checkpoint(words, tmp_path_factory):
    out = tmp_path_factory.mktemp("memory-run") / "run"
    args = ["train", "--data", str(words), "--level", "word", "--out", str(out), "--cell", "rnn", "--hidden", "4",
            "--embed", "4", "--epochs", "1", "--batch-size", "4", "--bptt", "6", "--eval-batch-size", "2",
            "--eval-bptt", "5", "--no-progress", "--sample-length", "0"]  # fmt: skip
    assert main(args) == 0
    return out / "best.npz"


def write_ids(path, n, V, seed=0):
    """A random id file of n int64 tokens, written a chunk at a time."""
    ids = np.lib.format.open_memmap(path, mode="w+", dtype=np.int64, shape=(n,))
    rng = np.random.default_rng(seed)
    for start in range(0, n, 1 << 20):
        ids[start : start + (1 << 20)] = rng.integers(0, V, min(1 << 20, n - start))
    ids.flush()
    del ids
    return path


def test_eval_ids_equals_eval_of_the_text(checkpoint, tmp_path, capsys):
    """`eval --ids` of a text encoded with encode_file gives the perplexity `eval --data` gives the text."""
    from nprnn.data.corpus import encode_file
    from nprnn.models.io import load_lm

    _, vocab, _, _ = load_lm(checkpoint)
    corpus_dir = tmp_path / "corpus"
    corpus_dir.mkdir()
    make_text(corpus_dir / "c.test.txt", lines=300, words=14, seed=4)  # w12, w13: unknown to the model
    for split in ("train", "valid"):
        make_text(corpus_dir / f"c.{split}.txt", lines=50, words=12)
    encode_file(corpus_dir / "c.test.txt", vocab, tmp_path / "test.npy")
    capsys.readouterr()
    assert main(["eval", str(checkpoint), "--data", str(corpus_dir), "--batch-size", "3", "--bptt", "7"]) == 0
    from_text = capsys.readouterr().out
    assert main(["eval", str(checkpoint), "--ids", str(tmp_path / "test.npy"), "--batch-size", "3", "--bptt", "7"]) == 0
    from_ids = capsys.readouterr().out
    number = r"perplexity: ([\d.]+)  \(\w+(?:\.npy)?, ([\d,]+) tokens, ([\d.]+)% <unk>\)"
    assert re.search(number, from_text).groups() == re.search(number, from_ids).groups()
    assert float(re.search(number, from_ids).group(3)) > 0  # the unknown words were counted


def traced_eval(checkpoint, path, monkeypatch):
    """(peak bytes allocated while `nprnn eval --ids` runs (tracemalloc), the ids its batcher got)."""
    seen = []

    class SpyBatches(nprnn.models.lm.EvalBatches):
        def __init__(self, ids, *args, **kwargs):
            seen.append(ids)
            super().__init__(ids, *args, **kwargs)

    monkeypatch.setattr(nprnn.models.lm, "EvalBatches", SpyBatches)
    gc.collect()
    tracemalloc.start()
    try:
        assert main(["eval", str(checkpoint), "--ids", str(path), "--batch-size", "128", "--bptt", "32"]) == 0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(seen) == 1
    return peak, seen[0]


def test_eval_of_a_memory_mapped_corpus_never_loads_it(checkpoint, tmp_path, monkeypatch, capsys):
    """The batcher gets the np.memmap itself, and the memory for evaluating 8 MB and 32 MB id files is
    the same and far below either size: the file size, not the memory, bounds what can be evaluated."""
    small = write_ids(tmp_path / "small.npy", 1 << 20, V=14)
    large = write_ids(tmp_path / "large.npy", 4 << 20, V=14)
    peak_small, _ = traced_eval(checkpoint, small, monkeypatch)
    peak_large, ids = traced_eval(checkpoint, large, monkeypatch)
    assert isinstance(ids, np.memmap) and os.path.samefile(ids.filename, large)
    size = large.stat().st_size
    assert size >= 32 * 2**20
    assert peak_large < size / 8, f"peak {peak_large} bytes for a {size}-byte file"
    assert abs(peak_large - peak_small) < 256 * 1024, (peak_small, peak_large)  # O(batch), not O(file)
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].startswith("ids perplexity:") and "4,194,304 tokens" in lines[-1]


def test_the_eval_measurement_sees_a_copy(checkpoint, tmp_path, monkeypatch):
    """Had eval loaded the file (np.array of the memmap), both checks above would fail."""
    path = write_ids(tmp_path / "ids.npy", 1 << 20, V=14)
    real_open_ids = nprnn.data.corpus.open_ids
    monkeypatch.setattr(nprnn.data.corpus, "open_ids", lambda p: np.array(real_open_ids(p)))
    peak, ids = traced_eval(checkpoint, path, monkeypatch)
    assert not isinstance(ids, np.memmap)
    assert peak >= path.stat().st_size - 4096
