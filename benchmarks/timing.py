"""How the benchmarks time implementations side by side: PyTorch in processes of its own
(``TorchProcess``), every implementation in blocks of back-to-back runs after an idle pause, in
rotating rounds (``interleaved_samples``), and ratios as medians over rounds (``ratio``)."""

import importlib
import time

import numpy as np


def _torch_worker(conn, threads, factory):
    import torch

    torch.set_num_threads(threads)
    module, name = factory.split(":")
    make = getattr(importlib.import_module(module), name)
    run = None
    while True:
        message = conn.recv()
        if message[0] == "prepare":
            run = make(*message[1:], np.random.default_rng(0))
            run()  # warm-up
            conn.send(None)
        elif message[0] == "run":
            t0 = time.perf_counter()
            run()
            conn.send(time.perf_counter() - t0)
        else:
            return


class TorchProcess:
    """PyTorch on ``threads`` threads in a process of its own, timed in the rounds of the main
    process; ``factory`` ("module:function", importable from benchmarks/) makes a run from the
    arguments of ``runner`` and a seeded Generator. In one process, its OpenMP threads and NumPy's
    OpenBLAS threads spin after their parallel work and slow each other down (measured:
    torch.nn.LSTM (10, 5, 100, 100) 4.5 ms instead of 0.8 ms next to threaded NumPy products, and
    nprnn 3.5 ms instead of 0.5 ms next to torch), which no user of either meets."""

    def __init__(self, threads, factory):
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_torch_worker, args=(child, threads, factory), daemon=True)
        self.process.start()

    def runner(self, *args):
        self.conn.send(("prepare", *args))
        self.conn.recv()

        def run():
            self.conn.send(("run",))
            return self.conn.recv()  # the worker's own timing: no pipe latency

        return run

    def close(self):
        self.conn.send(("stop",))
        self.process.join()


def interleaved_samples(runners, min_time, settle=0.3, block=0.2):
    """Time the implementations in rounds (in a rotating order), so that load on the machine hits
    them alike. In a round each one runs as a training loop calls it, back to back for about
    ``block`` seconds, after ``settle`` seconds idle: the worker threads of OpenBLAS (~0.1 s) and of
    OpenMP runtimes spin on after their work, and would slow whoever runs next, in any process. The
    sample of a round is the median of its block, the first run left out. A runner may return its
    own timing (else it is timed here). Returns the samples, aligned by round."""
    once = {}
    for name, run in runners.items():  # warm-up, and the length of a run
        run()
        t0 = time.perf_counter()
        own = run()
        once[name] = time.perf_counter() - t0 if own is None else own
    names = list(runners)
    samples = {name: [] for name in names}
    start, rounds = time.perf_counter(), 0
    while time.perf_counter() - start < min_time or rounds < 5:
        for name in names[rounds % len(names) :] + names[: rounds % len(names)]:
            time.sleep(settle)
            times = []
            for _ in range(1 + max(3, int(block / max(once[name], 1e-6)))):
                t0 = time.perf_counter()
                own = runners[name]()
                times.append(time.perf_counter() - t0 if own is None else own)
            samples[name].append(float(np.median(times[1:])))
        rounds += 1
    return {name: np.array(s) for name, s in samples.items()}


def ratio(samples, slower, faster):
    """Median over rounds of time(slower) / time(faster): neighbours in time saw the same load."""
    if slower not in samples or faster not in samples:
        return float("nan")
    return float(np.median(samples[slower] / samples[faster]))
