"""Crashes lose nothing: `nprnn train` in a real subprocess is killed (SIGKILL) in the middle of an
epoch, killed while it writes a checkpoint, or interrupted with Ctrl-C (SIGINT); `--resume` then ends
with exactly the parameters, optimizer state and history of an uninterrupted run with the same seed.

Every wait polls with a deadline (nothing relies on a fixed sleep), so a loaded machine only makes the
tests slower. The runs are tiny: a 16-unit LSTM on a generated 5,000-word corpus, 3 epochs of 158 steps.

Landing a kill inside a save: a checkpoint write takes about a millisecond, too short to hit from
outside. So that one test starts the child through a small wrapper, HANG_IN_SAVE below, which runs the
real CLI entry point (``runpy.run_module("nprnn")``) after wrapping ``nprnn.checkpoint._write_npz``:
for the one checkpoint the test picks (by its progress), the real writer gets the members through a
dict whose iteration stops halfway, flushes the partly written temporary file, writes a marker file and
sleeps. The test sees the marker and the partial ``.checkpoint.npz.*.tmp``, and SIGKILLs the child
right there. Nothing in nprnn knows about this hook; the code that writes, renames and resumes is the
real one.

Both model families: the language model for every kind of interruption, and a seq2seq run (a small
attention model on a generated reversal task, 2 epochs of 90 steps) for the kill mid-epoch, whose
resume must replay the interrupted epoch's shuffle.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from nprnn.checkpoint import CheckpointError, load_checkpoint
from tests.reliability import make_text, nprnn_command

SAVE_EVERY = 10
STEPS_PER_EPOCH = 158  # of train_args on make_text's corpus; checked by the reference fixture
TIMEOUT = 180  # seconds for any one wait; only reached if something is badly wrong


def train_args(data, out):
    return [
        "train", "--data", data, "--level", "word", "--out", out,
        "--cell", "lstm", "--hidden", "16", "--embed", "8", "--dropout", "0.1",
        "--batch-size", "4", "--bptt", "8", "--eval-batch-size", "2", "--eval-bptt", "8",
        "--epochs", "3", "--save-every", str(SAVE_EVERY), "--seed", "3",
        "--no-progress", "--sample-length", "0",
    ]  # fmt: skip


RESUME = ["--resume", "--no-progress", "--sample-length", "0"]


class Child:
    """A child process with stdout/stderr in files (a pipe that fills up would block it)."""

    def __init__(self, command, directory, env=None):
        self.out_path, self.err_path = directory / "child.out", directory / "child.err"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(command, stdout=out, stderr=err, cwd=directory, env=env)

    @property
    def stderr(self):
        return self.err_path.read_text()

    def wait(self):
        try:
            return self.proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"nprnn did not finish within {TIMEOUT} s; stderr: {self.stderr}")

    def poll_until(self, condition, what):
        """Poll ``condition()`` until it returns something truthy; fail if the child exits first."""
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            result = condition()
            if result:
                return result
            if self.proc.poll() is not None:
                pytest.fail(f"nprnn exited ({self.proc.returncode}) before {what}; stderr: {self.stderr}")
            time.sleep(0.002)
        self.proc.kill()
        self.proc.wait()
        pytest.fail(f"timed out waiting for {what}")


def run(command, directory):
    child = Child(command, directory)
    assert child.wait() == 0, child.stderr
    return child


def progress_of(path):
    """The progress stored in a checkpoint, or None if there is none (yet)."""
    try:
        return load_checkpoint(path)[1]["progress"]
    except CheckpointError:
        return None


def mid_epoch_checkpoint(path, steps_per_epoch=STEPS_PER_EPOCH):
    """The progress of ``path`` once it is a checkpoint from the first half of the second epoch or a
    later one: killed right after seeing it, the run is then surely in the middle of an epoch."""
    progress = progress_of(path)
    early = progress and progress["epoch"] >= 1 and 0 < progress["iteration"] <= steps_per_epoch // 2
    return progress if early else None


def run_record(out):
    """What must not depend on interruptions: every array of the final checkpoint (parameters,
    optimizer moments, carried state, vocabulary) and of best.npz, and the metadata except timings."""
    arrays, meta = load_checkpoint(out / "checkpoint.npz")
    best, best_meta = load_checkpoint(out / "best.npz")
    progress = dict(meta["progress"], epoch_seconds=None)
    timings = {"seconds", "words_per_sec", "eval_seconds"}
    progress["history"] = [{k: None if k in timings else v for k, v in r.items()} for r in progress["history"]]
    arrays = {f"checkpoint/{k}": v for k, v in arrays.items()} | {f"best/{k}": v for k, v in best.items()}
    return arrays, (dict(meta, progress=progress), best_meta)


def assert_bit_identical(out, reference):
    arrays, metas = run_record(out)
    ref_arrays, ref_metas = reference
    assert arrays.keys() == ref_arrays.keys()
    for name, a in arrays.items():
        b = ref_arrays[name]
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert a.tobytes() == b.tobytes(), f"{name} differs from the uninterrupted run"
    assert metas == ref_metas


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_text(tmp_path_factory.mktemp("crash-data") / "words.txt")


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """The uninterrupted run that every interrupted-and-resumed run must reproduce bit for bit."""
    directory = tmp_path_factory.mktemp("reference")
    run(nprnn_command(*train_args(data, directory / "run")), directory)
    record = run_record(directory / "run")
    assert len(record[1][0]["progress"]["history"]) == 3
    assert record[1][0]["progress"]["step"] == 3 * STEPS_PER_EPOCH
    return record


def test_sigkill_mid_epoch_then_resume_is_bit_identical(data, reference, tmp_path):
    out = tmp_path / "run"
    child = Child(nprnn_command(*train_args(data, out)), tmp_path)
    seen = child.poll_until(lambda: mid_epoch_checkpoint(out / "checkpoint.npz"), "a mid-epoch checkpoint")
    child.proc.kill()
    assert child.wait() == -signal.SIGKILL

    on_disk = progress_of(out / "checkpoint.npz")
    assert on_disk["step"] >= seen["step"] and on_disk["iteration"] > 0  # killed within an epoch
    resumed = run(nprnn_command("train", "--out", out, *RESUME), tmp_path)
    assert f"iteration {on_disk['iteration']} (step {on_disk['step']})" in resumed.out_path.read_text()
    assert_bit_identical(out, reference)


HANG_IN_SAVE = """
import json, os, runpy, sys, time
import nprnn.checkpoint as checkpoint

target = json.loads(os.environ["HANG_IN_SAVE_OF"])  # e.g. {"epoch": 1, "iteration": 0}
marker = os.environ["HANG_MARKER"]
real_write_npz = checkpoint._write_npz


def write_npz(f, members):
    progress = json.loads(str(members[checkpoint.META_KEY]))["meta"].get("progress") or {}
    if any(progress.get(key) != value for key, value in target.items()):
        return real_write_npz(f, members)

    class HangHalfway(dict):
        def items(self):
            pairs = list(dict.items(self))
            yield from pairs[: len(pairs) // 2]
            f.flush()
            with open(marker, "w") as m:
                json.dump(progress, m)
            time.sleep(3600)  # the test kills the process here
            yield from pairs[len(pairs) // 2 :]

    return real_write_npz(f, HangHalfway(members))


checkpoint._write_npz = write_npz
sys.argv[0] = "nprnn"
runpy.run_module("nprnn", run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize(
    "hang_at",
    [{"epoch": 1, "iteration": 0}, {"step": 20 * SAVE_EVERY}],
    ids=["end-of-epoch-save", "mid-epoch-save"],
)
def test_sigkill_while_writing_a_checkpoint_keeps_the_old_one(data, reference, tmp_path, hang_at):
    out, marker = tmp_path / "run", tmp_path / "in-save.json"
    env = dict(os.environ, HANG_IN_SAVE_OF=json.dumps(hang_at), HANG_MARKER=str(marker))
    command = [sys.executable, "-c", HANG_IN_SAVE, *train_args(data, out)]
    child = Child(command, tmp_path, env=env)
    child.poll_until(lambda: marker.exists() and marker.stat().st_size, "the hooked checkpoint save")
    partial = list(out.glob(".checkpoint.npz.*.tmp"))
    assert len(partial) == 1 and partial[0].stat().st_size > 0  # half written
    child.proc.kill()
    assert child.wait() == -signal.SIGKILL

    interrupted = json.loads(marker.read_text())  # the save that was cut short
    on_disk = progress_of(out / "checkpoint.npz")  # loads: the complete previous checkpoint
    assert on_disk["step"] == (interrupted["step"] - 1) // SAVE_EVERY * SAVE_EVERY  # the save before it
    with pytest.raises(CheckpointError):  # the half-written file never became the checkpoint
        load_checkpoint(partial[0])

    run(nprnn_command("train", "--out", out, *RESUME), tmp_path)
    assert_bit_identical(out, reference)


def test_ctrl_c_saves_a_resumable_checkpoint_and_exits_130(data, reference, tmp_path):
    out = tmp_path / "run"
    child = Child(nprnn_command(*train_args(data, out)), tmp_path)
    seen = child.poll_until(lambda: mid_epoch_checkpoint(out / "checkpoint.npz"), "a mid-epoch checkpoint")
    child.proc.send_signal(signal.SIGINT)
    assert child.wait() == 130

    stderr = child.stderr
    match = re.fullmatch(r"nprnn: interrupted at step (\d+); resumable checkpoint in (.+)\n", stderr)
    assert match, f"expected one line on stderr, got {stderr!r}"
    step = int(match.group(1))
    assert match.group(2) == str(out / "checkpoint.npz")
    on_disk = progress_of(out / "checkpoint.npz")
    assert on_disk["step"] == step >= seen["step"]  # saved where it stopped, not at the last --save-every
    assert not list(out.glob(".checkpoint.npz.*.tmp"))  # a clean save: no temporary left behind

    run(nprnn_command("train", "--out", out, *RESUME), tmp_path)
    assert_bit_identical(out, reference)


# ---------------------------------------------------------------- seq2seq

SEQ2SEQ_STEPS_PER_EPOCH = 90  # 720 training examples // batch 8


def seq2seq_args(data, out):
    return [
        "seq2seq", "train", "--data", data, "--out", out, "--model", "attention", "--embed", "16",
        "--hidden", "64", "--batch-size", "8", "--epochs", "2", "--save-every", "5", "--seed", "3",
        "--no-progress",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def reversal(tmp_path_factory):
    """800 lines ``"abca _acba"``: four symbols, the answer written backwards."""
    rng = np.random.default_rng(0)
    words = ["".join(rng.choice(list("abcd"), 4)) for _ in range(800)]
    path = tmp_path_factory.mktemp("crash-seq2seq") / "reversal.txt"
    path.write_text("".join(f"{w} _{w[::-1]}\n" for w in words))
    return path


@pytest.fixture(scope="module")
def seq2seq_reference(reversal, tmp_path_factory):
    directory = tmp_path_factory.mktemp("seq2seq-reference")
    run(nprnn_command(*seq2seq_args(reversal, directory / "run")), directory)
    record = run_record(directory / "run")
    assert record[1][0]["progress"]["step"] == 2 * SEQ2SEQ_STEPS_PER_EPOCH
    return record


def test_seq2seq_sigkill_mid_epoch_then_resume_is_bit_identical(reversal, seq2seq_reference, tmp_path):
    out = tmp_path / "run"
    child = Child(nprnn_command(*seq2seq_args(reversal, out)), tmp_path)
    seen = child.poll_until(
        lambda: mid_epoch_checkpoint(out / "checkpoint.npz", SEQ2SEQ_STEPS_PER_EPOCH), "a mid-epoch checkpoint"
    )
    child.proc.kill()
    assert child.wait() == -signal.SIGKILL

    on_disk = progress_of(out / "checkpoint.npz")
    assert on_disk["step"] >= seen["step"] and on_disk["iteration"] > 0  # killed within an epoch
    assert (out / ".lock").exists()  # left by the killed run: stale, taken over by the resume
    resumed = run(nprnn_command("seq2seq", "train", "--out", out, "--resume", "--no-progress"), tmp_path)
    assert f"iteration {on_disk['iteration']} (step {on_disk['step']})" in resumed.out_path.read_text()
    assert not (out / ".lock").exists()
    assert_bit_identical(out, seq2seq_reference)
