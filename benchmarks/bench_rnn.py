"""Time forward+backward of the recurrent time layers, side by side in one run, float32:
nprnn (its default path: the numba kernels of nprnn.accel) vs its NumPy reference path
(NPRNN_ACCEL=numpy) vs the textbook (../shared/reference/dlfs2) vs PyTorch CPU.

    python benchmarks/bench_rnn.py --cell rnn lstm gru   # the grid, every cell
    python benchmarks/bench_rnn.py --quick               # fewer repeats

PyTorch runs in processes of its own, one with 1 thread and one with 2 (in one process with NumPy,
its OpenMP threads and OpenBLAS's spin against each other), timed in the same rounds as the rest:
each implementation runs back to back for a block of runs after an idle pause, so that no one's
spinning threads meet the next (interleaving single runs slowed torch at (20, 35, 100, 100) from
2.5 ms to 58 ms); "torch best" is the better of its two thread counts (by median), and ratios are
medians over rounds of the ratio of neighbouring blocks (> 1: nprnn is faster).

Prints a Markdown table with the machine line (benchmarks/machine.py), the GFLOP/s of nprnn's
default path as a fraction of this machine's float32 matmul peak, and the load average after each
row. The peak (a 2048^3 product on BLAS's own threads) is timed in the same rounds as the layers, as
one more implementation: on a shared virtual machine it moved from 120 to 245 GFLOP/s within an
hour, so "of peak" is the median over rounds of the layer's GFLOP/s over the peak's in that round.
Times on a shared 2-core machine are noisy: read the ratios, and repeat the run.
"""

import argparse
import importlib
import os
import sys
import time
from pathlib import Path

import numpy as np
from machine import describe  # benchmarks/machine.py: CPU, BLAS kernel, load, commit
from timing import TorchProcess, interleaved_samples, ratio  # benchmarks/timing.py

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT.parent / "shared" / "reference" / "dlfs2"
GRID = [
    (10, 5, 100, 100), (20, 35, 100, 100), (32, 35, 200, 200),
    (20, 35, 650, 650), (64, 35, 650, 650), (20, 35, 1500, 1500),
]  # fmt: skip
GATES = {"rnn": 1, "lstm": 4, "gru": 3}


PEAK_N = 2048  # the yardstick for "of peak": a float32 (2048, 2048) @ (2048, 2048) product
PEAK_FLOPS = 2 * PEAK_N**3


def peak_runner():
    """One float32 ``PEAK_N``^3 product on BLAS's own threads, timed in the rounds like a layer."""
    a = np.random.default_rng(0).standard_normal((PEAK_N, PEAK_N), dtype=np.float32)
    c = np.empty_like(a)

    def run():
        np.matmul(a, a, out=c)

    return run


def matmul_peak(seconds=2.0):
    """Best float32 GFLOP/s of ``peak_runner`` over ``seconds``: the machine line's figure."""
    run = peak_runner()
    best, start = np.inf, time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return PEAK_FLOPS / best / 1e9


def flops(cell, N, T, D, H):
    """Multiply-add FLOPs of forward+backward: forward x@Wx, h@Wh; backward dx, dWx, dh, dWh."""
    return GATES[cell] * 6 * N * T * (D * H + H * H)


def nprnn_runner(cell, N, T, D, H, rng, backend="numba"):
    from nprnn import accel
    from nprnn.layers import init_rnn_params
    from nprnn.layers.rnn import TimeRNN

    if cell == "rnn":
        layer = TimeRNN(*init_rnn_params(D, H, seed=0))
    elif cell == "lstm":
        from nprnn.layers.lstm import TimeLSTM, init_lstm_params

        layer = TimeLSTM(*init_lstm_params(D, H, seed=0))
    else:
        from nprnn.layers.gru import TimeGRU, init_gru_params

        layer = TimeGRU(*init_gru_params(D, H, seed=0))
    xs = rng.standard_normal((N, T, D), dtype=np.float32)
    dhs = rng.standard_normal((N, T, H), dtype=np.float32)

    def run():
        accel.use(backend)
        layer.forward(xs)
        layer.backward(dhs)

    return run


def book_runner(cell, N, T, D, H, rng):
    if str(BOOK) not in sys.path:
        sys.path.insert(0, str(BOOK))
    time_layers = importlib.import_module("common.time_layers")
    G = GATES[cell]
    cls = {"rnn": time_layers.TimeRNN, "lstm": time_layers.TimeLSTM, "gru": time_layers.TimeGRU}[cell]
    Wx = (rng.standard_normal((D, G * H)) / np.sqrt(D)).astype(np.float32)
    Wh = (rng.standard_normal((H, G * H)) / np.sqrt(H)).astype(np.float32)
    layer = cls(Wx, Wh, np.zeros(G * H, np.float32))
    xs = rng.standard_normal((N, T, D), dtype=np.float32)
    dhs = rng.standard_normal((N, T, H), dtype=np.float32)

    def run():
        layer.forward(xs)
        layer.backward(dhs)

    return run


def torch_runner(cell, N, T, D, H, rng):
    import torch

    cls = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
    module = cls(D, H, batch_first=True)
    xs = torch.from_numpy(rng.standard_normal((N, T, D), dtype=np.float32)).requires_grad_()
    dhs = torch.from_numpy(rng.standard_normal((N, T, H), dtype=np.float32))

    def run():
        module.zero_grad(set_to_none=False)
        xs.grad = None
        out, _ = module(xs)
        out.backward(dhs)

    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cell", nargs="+", default=["rnn"], choices=sorted(GATES))
    parser.add_argument("--quick", action="store_true", help="shorter timing per configuration")
    parser.add_argument("--no-book", action="store_true", help="skip the textbook reference")
    parser.add_argument("--sizes", type=int, nargs="+", help="indices into the grid (default: all)")
    parser.add_argument(
        "--blas-threads",
        help="nprnn's BLAS threads: auto (default), adaptive, a cap n >= 1, or 0 (nprnn.accel.set_blas_threads)",
    )
    args = parser.parse_args(argv)

    from importlib.metadata import version

    from nprnn import accel

    if args.blas_threads is not None:
        accel.set_blas_threads(
            args.blas_threads if args.blas_threads in ("auto", "adaptive") else int(args.blas_threads)
        )
    peak = matmul_peak()
    print(describe())
    print(f"numpy {np.__version__}, torch {version('torch')} (1 and 2 threads, own processes)")
    print(f"nprnn default backend: {accel.backend()}; BLAS threads: {accel.blas_threads()}")
    print(f"float32 matmul peak (2048^3), before the grid: {peak:.1f} GFLOP/s; load average {os.getloadavg()[0]:.2f}")
    print('"of peak": median over rounds of nprnn\'s GFLOP/s over the peak\'s in the same round; "peak": its median\n')
    torches = {f"torch {n}t": TorchProcess(n, "bench_rnn:torch_runner") for n in (1, 2)}
    min_time = 2.0 if args.quick else 6.0
    rng = np.random.default_rng(0)
    grid = GRID if args.sizes is None else [GRID[i] for i in args.sizes]
    for cell in args.cell:
        print(f"### Time{cell.upper()} forward+backward, float32\n")
        print(
            "| N, T, D, H | nprnn ms | numpy path ms | book ms | torch 1t ms | torch 2t ms "
            "| book / nprnn | torch best / nprnn | numpy path / nprnn | GFLOP/s | peak | of peak | load |"
        )
        print("|---|" + "---:|" * 12)
        for N, T, D, H in grid:
            runners = {
                "nprnn": nprnn_runner(cell, N, T, D, H, rng, "numba"),
                "numpy": nprnn_runner(cell, N, T, D, H, rng, "numpy"),
                **{name: proc.runner(cell, N, T, D, H) for name, proc in torches.items()},
                "peak": peak_runner(),
            }
            if not args.no_book:
                runners["book"] = book_runner(cell, N, T, D, H, rng)
            samples = interleaved_samples(runners, min_time)
            accel.use("auto")
            t = {name: float(np.median(v)) for name, v in samples.items()}
            best = min(torches, key=lambda name: t[name])
            gflops = flops(cell, N, T, D, H) / t["nprnn"] / 1e9
            of_peak = ratio(samples, "peak", "nprnn") * flops(cell, N, T, D, H) / PEAK_FLOPS
            book = f"{t['book'] * 1e3:.2f}" if "book" in t else "-"
            print(
                f"| {N}, {T}, {D}, {H} | {t['nprnn'] * 1e3:.2f} | {t['numpy'] * 1e3:.2f} | {book} "
                f"| {t['torch 1t'] * 1e3:.2f} | {t['torch 2t'] * 1e3:.2f} "
                f"| {ratio(samples, 'book', 'nprnn'):.2f} | {ratio(samples, best, 'nprnn'):.2f} ({best[6:]}) "
                f"| {ratio(samples, 'numpy', 'nprnn'):.2f} | {gflops:.1f} "
                f"| {PEAK_FLOPS / t['peak'] / 1e9:.0f} | {of_peak:.0%} "
                f"| {os.getloadavg()[0]:.1f} |",
                flush=True,
            )
        print()
    for proc in torches.values():
        proc.close()


if __name__ == "__main__":
    main()
