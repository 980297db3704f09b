"""Data-parallel seq2seq training: ``nprnn seq2seq train`` under a real ``mpiexec -n 2`` against one process.

The runs go through a driver (``DRIVER``, written to a temporary file) that runs ``nprnn.cli.main``,
counts the Allreduce calls of every training step through a wrapped communicator, and can send
Ctrl-C to rank 1 alone during a given step's Allreduce. Without an MPI launcher these tests skip on
a developer's machine and fail in CI (the ``mpiexec`` fixture of ``tests/training/test_distributed.py``).
"""

import json
import sys

import numpy as np
import pytest

from nprnn.data.seq2seq import load_seq2seq
from nprnn.models.seq2seq import build_model
from nprnn.training.seq2seq import Seq2seqConfig, Seq2seqTrainer
from tests.training.test_distributed import (  # noqa: F401 (mpiexec: a fixture)
    COUNTING_WORLD,
    _env,
    assert_same_arrays,
    launch,
    load,
    mpiexec,
)

# 250 lines: 225 training examples (45 batches of 5 = 3 + 2 rows on 2 ranks) and 25 test questions
# (13 + 12). Clipping at 0.5 is reached, so it must see the summed gradients.
N_LINES, BATCHES = 250, 45
EPOCHS = 2
ARGS = [
    "--model", "attention", "--embed", "8", "--hidden", "16", "--dtype", "float64", "--epochs", str(EPOCHS),
    "--batch-size", "5", "--lr", "0.02", "--max-grad", "0.5", "--seed", "3", "--save-every", "7", "--no-progress",
]  # fmt: skip
INTERRUPT_AT = 50  # Ctrl-C on rank 1 during step 51's Allreduce: both ranks stop after step 52

DRIVER = (
    COUNTING_WORLD
    + r"""
from nprnn import cli
from nprnn.training.seq2seq import Seq2seqTrainer

real_step = Seq2seqTrainer.step

def train_step(self, x, t):
    if self.progress.step == int(os.environ.get("INTERRUPT_AT", -1)) and comm.Get_rank() == 1:
        comm.interrupt = True
    rows.append(len(x))
    before = comm.allreduces if comm is not None else 0
    loss = real_step(self, x, t)
    if comm is not None:
        steps.append(comm.allreduces - before)
        buffers.add((id(comm.buffer), comm.buffer.size))
    return loss

steps, buffers, rows = [], set(), []
Seq2seqTrainer.step = train_step
code = cli.main(sys.argv[1:])
rank = comm.Get_rank() if comm is not None else 0
with open(os.environ["COUNTS"] + f".{rank}", "w") as f:
    json.dump({"per_step": steps, "buffer_sizes": [size for _, size in buffers], "rows": rows}, f)
sys.exit(code)
"""
)


def toy_lines(n=N_LINES, seed=0):
    """``"abca _acba"``: four symbols and a space, the answer written backwards."""
    rng = np.random.default_rng(seed)
    words = ["".join(rng.choice(list("abcd"), 4)) for _ in range(n)]
    return "".join(f"{w} _{w[::-1]}\n" for w in words)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, mpiexec):  # noqa: F811 (the imported fixture)
    """One process and two ranks, the same run; returns the folder and a runner for more."""
    tmp = tmp_path_factory.mktemp("seq2seq_mpi")
    data = tmp / "toy.txt"
    data.write_text(toy_lines())
    (tmp / "driver.py").write_text(DRIVER)

    def run(out, *extra, ranks=1, expect=0, **env):
        args = [sys.executable, str(tmp / "driver.py"), "seq2seq", "train", "--data", str(data), "--out", str(out)]
        environ = _env(tmp, **env)
        environ["COUNTS"] = str(out) + ".counts"
        return launch([*args, *ARGS, *extra], environ, ranks, mpiexec, expect)

    one, two = run(tmp / "one"), run(tmp / "two", ranks=2)
    return tmp, run, one, two


def counts(out, rank):
    return json.loads(out.with_name(out.name + f".counts.{rank}").read_text())


def test_two_ranks_train_the_same_parameters_and_accuracy_as_one_process(runs):
    tmp, _, one, two = runs
    a, meta_a = load(tmp / "one" / "checkpoint.npz")
    b, meta_b = load(tmp / "two" / "checkpoint.npz")
    assert_same_arrays(a, b, atol=1e-10)  # parameters, Adam's moments, the vocabulary
    assert meta_b["world_size"] == 2 and meta_a.get("world_size") is None
    assert meta_a["progress"]["step"] == meta_b["progress"]["step"] == EPOCHS * BATCHES
    assert meta_a["rng"] == meta_b["rng"]  # the same shuffles
    history_a, history_b = meta_a["progress"]["history"], meta_b["progress"]["history"]
    assert len(history_a) == len(history_b) == EPOCHS
    for ra, rb in zip(history_a, history_b):
        assert ra["train_loss"] == pytest.approx(rb["train_loss"], rel=1e-10)  # the loss is summed over ranks
        assert ra["test_accuracy"] == rb["test_accuracy"]  # right answers counted per rank, then summed
    assert 0 < history_a[-1]["test_accuracy"]  # it learned something, so equal accuracies mean something

    # training moved the parameters far beyond the tolerance
    data = load_seq2seq(tmp / "toy.txt", reverse=False)
    initial = build_model("attention", data.vocab_size, 8, 16, seed=3, dtype=np.float64).params
    assert max(np.abs(p - a[f"param/{i:03d}"]).max() for i, p in enumerate(initial)) > 0.1

    # each rank saw its 3 or 2 rows of every batch; one Allreduce per step, on one buffer
    assert counts(tmp / "one", 0)["rows"] == [5] * (EPOCHS * BATCHES)
    for rank, n_rows in ((0, 3), (1, 2)):
        c = counts(tmp / "two", rank)
        assert c["rows"] == [n_rows] * (EPOCHS * BATCHES)
        assert c["per_step"] == [1] * (EPOCHS * BATCHES)
        assert c["buffer_sizes"] == [sum(p.size for p in initial) + 2]  # grads, loss, stop flag

    # rank 0 alone speaks and writes
    assert "data parallel: 2 MPI ranks" in two.stdout
    assert two.stdout.count("epoch 1/2") == 1 and one.stdout.count("epoch 1/2") == 1
    assert sorted(p.name for p in (tmp / "two").iterdir()) == sorted(p.name for p in (tmp / "one").iterdir())
    assert (tmp / "two" / "metrics.jsonl").read_text().count("\n") == EPOCHS


def test_ctrl_c_on_one_rank_stops_both_and_resuming_with_two_ranks_is_exact(runs):
    tmp, run, _, _ = runs
    stopped = run(tmp / "cut", ranks=2, expect=130, INTERRUPT_AT=INTERRUPT_AT)
    assert stopped.stderr.count(f"interrupted at step {INTERRUPT_AT + 2}") == 2  # both ranks, the same step
    _, meta = load(tmp / "cut" / "checkpoint.npz")
    assert meta["progress"]["step"] == INTERRUPT_AT + 2
    assert meta["progress"]["iteration"] == INTERRUPT_AT + 2 - BATCHES  # mid-epoch: the permutation is replayed

    resumed = run(tmp / "cut", "--resume", ranks=2)
    assert resumed.stdout.count("resuming") == 1
    full, _ = load(tmp / "two" / "checkpoint.npz")
    again, _ = load(tmp / "cut" / "checkpoint.npz")
    assert_same_arrays(full, again, atol=0)


class FakeComm:
    """Just enough of a communicator for the checks that run before any collective call."""

    def __init__(self, size):
        self.size = size

    def Get_size(self):
        return self.size

    def Get_rank(self):
        return 0


def test_fewer_test_questions_than_ranks_is_refused(tmp_path):
    path = tmp_path / "small.txt"
    path.write_text(toy_lines(n=12))  # 11 training lines, 1 test question
    data = load_seq2seq(path)
    model = build_model("seq2seq", data.vocab_size, 4, 4)
    with pytest.raises(ValueError, match="2 MPI ranks need a test split of at least 2 examples, .* has 1"):
        Seq2seqTrainer(model, data, Seq2seqConfig(batch_size=4), tmp_path / "run", comm=FakeComm(2))
