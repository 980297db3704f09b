"""What the matrix products alone allow: for the time layers of benchmarks/bench_rnn.py at H >= 650 and
the language models of benchmarks/bench_lm.py, the products of one forward+backward (training step),
each timed on its own at its best on this machine, and the time they would take if nothing else cost.

    python benchmarks/bench_limits.py [--quick]

Each product shape is timed on every implementation at hand, and the fastest counts: OpenBLAS on 1
and on 2 threads (np.matmul), nprnn's ``accel.matmul`` (what the layers call), for the per-step
products nprnn's packed kernel with the weight packed beforehand (``packed.Product``, what a time loop
runs each step), and PyTorch's ``torch.mm`` on 1 and on 2 threads in processes of their own. Each
figure is the best of blocks of back-to-back runs after an idle pause (noise only slows a run), as
is the peak, a 2048^3 product on BLAS's two threads.

The bound is the sum over a step's products of count x best time: elementwise work, packing and
memory passes cost nothing in it. ``bound / peak`` is the highest "of peak" a layer could reach, so a
target above it is beyond the machine; for a language model, ``bound words/s`` is the most a
training step's products allow (bench_lm's torch figure times 1.2 is the issue-16 target).
"""

import argparse
import time
from contextlib import nullcontext

import numpy as np
from bench_lm import CONFIGS as LMS  # name: (cell, embed, hidden, layers, batch, bptt)
from bench_lm import V
from bench_rnn import GATES, GRID, PEAK_FLOPS, peak_runner
from machine import describe  # benchmarks/machine.py: CPU, BLAS kernel, load, commit
from timing import TorchProcess  # benchmarks/timing.py

LAYERS = [(cell, N, T, D, H) for cell in GATES for N, T, D, H in GRID if H >= 650]


def layer_products(cell, N, T, D, H):
    """``(what, M, K, C, transposed_a, step, count)`` of a time layer's forward+backward."""
    G = GATES[cell]
    return [
        ("input projection x @ Wx", T * N, D, G * H, False, False, 1),
        ("step h @ Wh", N, H, G * H, False, True, T),
        ("step da @ Wh.T", N, G * H, H, False, True, T),
        ("dWh = h.T @ dA", H, T * N, G * H, True, False, 1),
        ("dWx = x.T @ dA", D, T * N, G * H, True, False, 1),
        ("dx = dA @ Wx.T", T * N, G * H, D, False, False, 1),
    ]


def lm_products(cell, E, H, L, N, T):
    """The products of a language model's training step: its recurrent layers and the output layer."""
    found = [p for layer in range(L) for p in layer_products(cell, N, T, E if layer == 0 else H, H)]
    return found + [
        ("output x @ W", T * N, H, V, False, False, 1),
        ("output dW = x.T @ dout", H, T * N, V, True, False, 1),
        ("output dx = dout @ W.T", T * N, V, H, False, False, 1),
    ]


def operands(M, K, C, transposed_a, rng):
    a = rng.standard_normal((K, M) if transposed_a else (M, K), dtype=np.float32)
    return (a.T if transposed_a else a), rng.standard_normal((K, C), dtype=np.float32)


def numpy_runners(M, K, C, transposed_a, step, rng):
    """The implementations that run in this process, each a function timing one product."""
    from threadpoolctl import threadpool_limits

    from nprnn import accel
    from nprnn.accel import packed

    a, b = operands(M, K, C, transposed_a, rng)
    out = np.empty((M, C), np.float32)

    def timed(run, context=nullcontext):
        def once():
            with context():
                t0 = time.perf_counter()
                run()
                return time.perf_counter() - t0

        return once

    runners = {
        f"openblas {n}t": timed(lambda: np.matmul(a, b, out=out), lambda n=n: threadpool_limits(n)) for n in (1, 2)
    }
    runners["nprnn"] = timed(lambda: accel.matmul(a, b))
    if step:
        for cap in (1, None):  # one thread, numba's threads
            product = packed.Product(b, M, cap=cap)
            runners[f"nprnn packed step {product.threads}t"] = timed(lambda product=product: product(a))
    return runners


def torch_product(M, K, C, transposed_a, step, rng):
    """``torch.mm`` of the shape, for TorchProcess (which times each run)."""
    import torch

    a, b = (torch.from_numpy(x) for x in operands(M, K, C, transposed_a, rng))  # a transposed view stays one
    out = torch.empty((M, C))
    return lambda: torch.mm(a, b, out=out)


def best_time(run, block, settle):
    """The fastest of a block of back-to-back runs (about ``block`` seconds) after ``settle`` idle; a
    run may return its own timing (else it is timed here)."""
    time.sleep(settle)
    run()
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < block or len(times) < 3:
        t0 = time.perf_counter()
        own = run()
        times.append(time.perf_counter() - t0 if own is None else own)
    return min(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="two rounds of shorter blocks")
    args = parser.parse_args(argv)
    rounds, block, settle = (2, 0.1, 0.2) if args.quick else (3, 0.3, 0.3)
    rng = np.random.default_rng(0)

    configs = {
        f"Time{cell.upper()} ({N}, {T}, {D}, {H})": layer_products(cell, N, T, D, H) for cell, N, T, D, H in LAYERS
    }
    configs.update({f"LM {name}": lm_products(*spec) for name, spec in LMS.items()})
    shapes = sorted({p[1:6] for products in configs.values() for p in products})

    torches = {f"torch {n}t": TorchProcess(n, "bench_limits:torch_product") for n in (1, 2)}
    peak_run = peak_runner()  # bench_rnn's yardstick, a 2048^3 product on BLAS's own threads
    best = {shape: {} for shape in shapes}  # shape -> implementation -> best seconds
    peak = np.inf
    for _ in range(rounds):
        peak = min(peak, best_time(peak_run, block, settle))
        for shape in shapes:
            runners = numpy_runners(*shape, rng)
            runners.update({name: proc.runner(*shape) for name, proc in torches.items()})
            for name, run in runners.items():
                best[shape][name] = min(best[shape].get(name, np.inf), best_time(run, block, settle))
    for proc in torches.values():
        proc.close()
    peak_gflops = PEAK_FLOPS / peak / 1e9

    print(describe())
    print(f"float32 peak (2048^3 on BLAS's threads, best of {rounds} rounds): {peak_gflops:.1f} GFLOP/s\n")
    print("### The products, each at its best\n")
    print("| M, K, C | A | best implementation | GFLOP/s | of peak | runner-up |")
    print("|---|---|---|---:|---:|---|")
    for shape in shapes:
        M, K, C, transposed_a, _ = shape
        ranked = sorted(best[shape].items(), key=lambda item: item[1])
        rate = [2 * M * K * C / seconds / 1e9 for _, seconds in ranked]
        print(
            f"| {M}, {K}, {C} | {'transposed' if transposed_a else 'plain'} | {ranked[0][0]} | {rate[0]:.1f} "
            f"| {rate[0] / peak_gflops:.0%} | {ranked[1][0]} {rate[1]:.1f} |"
        )
    print("\n### What the products allow\n")
    print("| configuration | GFLOP a step | products-only bound ms | bound GFLOP/s | bound / peak | bound words/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, products in configs.items():
        total = sum(2 * M * K * C * count for _, M, K, C, _, _, count in products)
        seconds = sum(min(best[(M, K, C, tr, st)].values()) * count for _, M, K, C, tr, st, count in products)
        words = ""
        if name.startswith("LM "):
            _, _, _, _, N, T = LMS[name[3:]]
            words = f"{N * T / seconds:,.0f}"
        print(
            f"| {name} | {total / 1e9:.2f} | {seconds * 1e3:.1f} | {total / seconds / 1e9:.1f} "
            f"| {total / seconds / 1e9 / peak_gflops:.0%} | {words} |"
        )


if __name__ == "__main__":
    main()
