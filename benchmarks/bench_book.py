"""Training speed of the textbook's chapter models: the book's ``common`` vs ``nprnn.dlfs2``.

Each chapter model is built and trained the way its chapter script does it (ch05 SimpleRnnlm, ch06 Rnnlm and
BetterRnnlm with RnnlmTrainer + SGD, ch07 Seq2seq and PeekySeq2seq, ch08 AttentionSeq2seq with Trainer +
Adam; the book's sizes, batch sizes and clipping), from the same seed, on the book's data from
../shared/data. Each measurement runs in a fresh subprocess with the BLAS thread count fixed through
``OPENBLAS_NUM_THREADS`` / ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` / ``NUMBA_NUM_THREADS`` (``1``: one thread for
nprnn's numba kernels too; or unset for the default), and
times only the training iterations (after two warm-up iterations). Book and nprnn.dlfs2 runs alternate, in
alternating order, so a change of the machine's load hits both alike; the figure is the median over the
repeats. Prints a Markdown table with the ratios and the machine line (``benchmarks/machine.py``).

    python benchmarks/bench_book.py                 # all models, 3 repeats
    python benchmarks/bench_book.py --repeats 1 --models ch05 ch07-peeky
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED = ROOT.parent / "shared"
REFERENCE = SHARED / "reference" / "dlfs2"

# name: (description, model class, kind, sizes, training settings, iterations)
MODELS = {
    "ch05": ("ch05 SimpleRnnlm, 1000 words, 100/100", "SimpleRnnlm", "lm",
             dict(words=1000, D=100, H=100, batch=10, time=5, lr=0.1, max_grad=None), 500),
    "ch06-rnnlm": ("ch06 Rnnlm, PTB, 100/100", "Rnnlm", "lm",
                   dict(words=None, D=100, H=100, batch=20, time=35, lr=20.0, max_grad=0.25), 25),
    "ch06-better": ("ch06 BetterRnnlm, PTB, 2x650, dropout 0.5", "BetterRnnlm", "lm",
                    dict(words=None, D=650, H=650, batch=20, time=35, lr=20.0, max_grad=0.25), 3),
    "ch07-seq2seq": ("ch07 Seq2seq, addition, 16/128", "Seq2seq", "seq2seq",
                     dict(data="addition.txt", D=16, H=128, batch=128, reverse=False), 150),
    "ch07-peeky": ("ch07 PeekySeq2seq, addition, reversed, 16/128", "PeekySeq2seq", "seq2seq",
                   dict(data="addition.txt", D=16, H=128, batch=128, reverse=True), 150),
    "ch08-attention": ("ch08 AttentionSeq2seq, dates, reversed, 16/256", "AttentionSeq2seq", "seq2seq",
                       dict(data="date.txt", D=16, H=256, batch=128, reverse=True), 30),
}  # fmt: skip
WARMUP = 2
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def worker(side, name, iters):
    """Build and train one model; returns seconds per iteration (the warm-up iterations excluded)."""
    sys.path.insert(0, str(ROOT))
    if side == "book":
        sys.path.insert(0, str(REFERENCE))
    from tests.dlfs2 import book_models

    pkg = book_models.load("common" if side == "book" else "nprnn.dlfs2")
    _, cls, kind, s, _ = MODELS[name]
    np.random.seed(0)  # noqa: NPY002 (the book's scripts draw from the global generator)
    if kind == "lm":
        corpus, w2i = book_models.load_ptb(SHARED / "data" / "ptb" / "ptb.train.txt", max_words=s["words"])
        V = len(w2i)
        model = getattr(book_models.models(pkg), cls)(V, s["D"], s["H"])
        trainer = pkg.trainer.RnnlmTrainer(model, pkg.optimizer.SGD(s["lr"]))
        step = s["batch"] * s["time"]

        def run(n):  # exactly n iterations: one epoch over n batches of the corpus (repeated if too short)
            data = np.tile(corpus, -(-(n * step + 1) // len(corpus)))
            xs, ts = data[: n * step], data[1 : n * step + 1]
            trainer.fit(xs, ts, max_epoch=1, batch_size=s["batch"], time_size=s["time"], max_grad=s["max_grad"],
                        eval_interval=None)  # fmt: skip
    else:
        (x, t), _, char_to_id, _ = book_models.load_seq2seq(SHARED / "data" / "seq2seq" / s["data"])
        if s["reverse"]:
            x = x[:, ::-1]
        model = getattr(book_models.models(pkg), cls)(len(char_to_id), s["D"], s["H"])
        trainer = pkg.trainer.Trainer(model, pkg.optimizer.Adam())

        def run(n):
            reps = -(-n * s["batch"] // len(x))
            xs, ts = np.concatenate([x] * reps)[: n * s["batch"]], np.concatenate([t] * reps)[: n * s["batch"]]
            trainer.fit(xs, ts, max_epoch=1, batch_size=s["batch"], max_grad=5.0, eval_interval=None)

    run(WARMUP)
    start = time.perf_counter()
    run(iters)
    return (time.perf_counter() - start) / iters


def measure(side, name, iters, threads):
    env = dict(os.environ)
    for var in THREAD_VARS:
        env.pop(var, None)
        if threads is not None:
            env[var] = str(threads)
    out = subprocess.run(
        [sys.executable, __file__, "--worker", side, name, str(iters)],
        env=env, capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])["seconds_per_iter"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every iteration count")
    parser.add_argument("--worker", nargs=3, metavar=("SIDE", "MODEL", "ITERS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        side, name, iters = args.worker
        print(json.dumps({"seconds_per_iter": worker(side, name, int(iters))}))
        return

    sys.path.insert(0, str(HERE))
    from machine import describe

    settings = [("1 thread", 1), ("default threads", None)]
    times = {}  # (model, setting, side) -> [seconds per iteration]
    for rep in range(args.repeats):
        for name in args.models:
            iters = max(1, round(MODELS[name][4] * args.scale))
            for label, threads in settings:
                sides = ("book", "nprnn") if (rep + len(times)) % 2 == 0 else ("nprnn", "book")
                for side in sides:
                    sec = measure(side, name, iters, threads)
                    times.setdefault((name, label, side), []).append(sec)
                    print(f"# rep {rep + 1} {name:15s} {label:16s} {side:6s} {sec * 1e3:9.2f} ms/iter",
                          file=sys.stderr, flush=True)  # fmt: skip

    print(f"Training time per iteration, median of {args.repeats} runs (book's `common` vs `nprnn.dlfs2`)\n")
    print("| model | iterations | threads | book ms/iter | nprnn.dlfs2 ms/iter | speed-up |")
    print("|---|---:|---|---:|---:|---:|")
    for name in args.models:
        iters = max(1, round(MODELS[name][4] * args.scale))
        for label, _ in settings:
            book = statistics.median(times[(name, label, "book")])
            ours = statistics.median(times[(name, label, "nprnn")])
            row = [MODELS[name][0], str(iters), label, f"{book * 1e3:.2f}", f"{ours * 1e3:.2f}", f"{book / ours:.2f}x"]
            print("| " + " | ".join(row) + " |")
    print()
    print(describe())


if __name__ == "__main__":
    main()
