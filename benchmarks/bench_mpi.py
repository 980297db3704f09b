"""Data-parallel training over MPI on this machine: words/s with K = 1 and K = 2 processes, and the
time per step spent in the gradient Allreduce.

    python benchmarks/bench_mpi.py            # zaremba-small (2x200 LSTM) and zaremba-medium (2x650)
    python benchmarks/bench_mpi.py --quick    # fewer steps, one repeat

Each configuration runs ``LMTrainer.step`` (forward, backward, Allreduce, clipping, SGD) on
random ids with a 10,000-word vocabulary (the PTB size; the numbers do not depend on the text),
float32, global batch 20 x bptt 35, in fresh processes:

- K=1, 1 thread and 2 threads (OPENBLAS/OMP_NUM_THREADS): one process, no MPI;
- K=2, 1 thread per rank, under ``mpiexec -n 2`` (the launcher beside this Python, else on PATH).

For K=2 the Allreduce time is split in two with a Barrier in front of each Allreduce (this script's
wrapper around the communicator, not the library's code): "wait" is time spent waiting for the
slower rank (load imbalance, noise from other processes), "transfer" the reduction itself. Each
configuration keeps the best of ``--repeats`` runs (the machine is shared and noisy).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from machine import describe  # benchmarks/machine.py: CPU, BLAS kernel, load, commit

MODELS = {
    "zaremba-small": dict(embed=200, hidden=200, layers=2),
    "zaremba-medium": dict(embed=650, hidden=650, layers=2),
}
VOCAB, BATCH, BPTT = 10_000, 20, 35


class SplitTimingComm:
    """COMM_WORLD with a timed Barrier before every Allreduce: separates waiting from reducing."""

    def __init__(self, comm):
        self._comm, self.wait, self.transfer, self.calls = comm, 0.0, 0.0, 0

    def Allreduce(self, sendbuf, recvbuf, *args):
        t0 = time.perf_counter()
        self._comm.Barrier()
        t1 = time.perf_counter()
        self._comm.Allreduce(sendbuf, recvbuf, *args)
        self.wait += t1 - t0
        self.transfer += time.perf_counter() - t1
        self.calls += 1

    def __getattr__(self, name):
        return getattr(self._comm, name)


def worker(model_name, steps, warmup):
    """One rank's run; rank 0 prints a JSON line."""
    from nprnn.models.lm import LanguageModel, LMConfig
    from nprnn.training.distributed import mpi_world
    from nprnn.training.lm import LMTrainer, TrainConfig

    world = mpi_world()
    comm = SplitTimingComm(world) if world is not None else None
    ids = np.random.default_rng(0).integers(0, VOCAB, size=BATCH * BPTT * (steps + warmup) + 1)
    corpus = SimpleNamespace(train=ids, valid=ids, vocab=None, name="random", source=None, level="word")
    config = TrainConfig(batch_size=BATCH, bptt=BPTT, optimizer="sgd", lr=1.0, max_grad=5.0)
    model = LanguageModel(LMConfig(vocab_size=VOCAB, **MODELS[model_name]), seed=0, dtype=np.float32)
    trainer = LMTrainer(model, corpus, config, "/nonexistent", log=lambda *a: None, progress_bar=False, comm=comm)
    batches = list(trainer.batches.epoch(0))
    for xs, ts in batches[:warmup]:
        trainer.step(xs, ts)
    if comm is not None:
        comm.Barrier()
        comm.wait = comm.transfer = 0.0
    start = time.perf_counter()
    for xs, ts in batches[warmup : warmup + steps]:
        trainer.step(xs, ts)
    if comm is not None:
        comm.Barrier()
    seconds = time.perf_counter() - start
    if comm is None or comm.Get_rank() == 0:
        result = dict(
            ranks=1 if comm is None else comm.Get_size(),
            step_ms=1e3 * seconds / steps,
            words_per_sec=BATCH * BPTT * steps / seconds,
            params=sum(p.size for p in model.params),
            wait_ms=1e3 * comm.wait / steps if comm else 0.0,
            transfer_ms=1e3 * comm.transfer / steps if comm else 0.0,
        )
        print("RESULT " + json.dumps(result), flush=True)


def launcher():
    here = Path(sys.executable).parent
    for name in ("mpiexec", "mpirun"):
        if (here / name).exists():
            return str(here / name)
    return shutil.which("mpiexec") or shutil.which("mpirun")


def run(model_name, ranks, threads, steps, warmup):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_COMM_WORLD"))}
    env.update(OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    args = [sys.executable, __file__, "--worker", model_name, "--steps", str(steps), "--warmup", str(warmup)]
    if ranks > 1:
        args = [launcher(), "-n", str(ranks), *args]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", metavar="MODEL", help=argparse.SUPPRESS)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--steps", type=int, default=None, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.steps, args.warmup)
    if launcher() is None:
        raise SystemExit('no mpiexec found: pip install "nprnn[mpi]" mpich')
    repeats = 1 if args.quick else args.repeats
    print(describe())
    print(f"global batch {BATCH} x bptt {BPTT}, vocab {VOCAB:,}, float32, SGD + clipping; best of {repeats}\n")
    print("| model | params | K ranks x threads | ms/step | words/s | speed-up | Allreduce ms/step: wait + transfer |")
    print("|---|---:|---|---:|---:|---:|---|")
    for name in args.models:
        steps = args.steps or (10 if args.quick else (40 if name == "zaremba-small" else 15))
        base = None
        for ranks, threads in [(1, 1), (1, 2), (2, 1)]:
            runs = [run(name, ranks, threads, steps, args.warmup) for _ in range(repeats)]
            best = min(runs, key=lambda r: r["step_ms"])
            base = base or best["words_per_sec"]
            wait, transfer = best["wait_ms"], best["transfer_ms"]
            comm = "-" if ranks == 1 else f"{wait + transfer:.1f}: {wait:.1f} + {transfer:.1f}"
            print(
                f"| {name} | {best['params']:,} | {ranks} x {threads} | {best['step_ms']:.0f} | "
                f"{best['words_per_sec']:,.0f} | {best['words_per_sec'] / base:.2f} | {comm} |",
                flush=True,
            )  # fmt: skip


if __name__ == "__main__":
    main()
