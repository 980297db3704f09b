"""The textbook's seq2seq experiments, nprnn next to the textbook's own code, in one run.

    python benchmarks/bench_seq2seq.py                      # both tasks, 10 epochs each side
    python benchmarks/bench_seq2seq.py --book-epochs 2      # the textbook side only for 2 epochs
    python benchmarks/bench_seq2seq.py --tasks addition --json out.json

Tasks, with the textbook's hyperparameters (embed 16, batch 128, Adam lr 0.001, clip 5.0, the
90/10 split with seed 1984, questions reversed):

- addition: PeekySeq2seq, hidden 128 (ch07/train_seq2seq.py with is_reverse = True and the peeky model)
- date:     AttentionSeq2seq, hidden 256 (ch08/train.py)

nprnn runs ``nprnn.train_seq2seq.Seq2seqTrainer`` (shuffle, train, test accuracy, checkpoint and
plot every epoch). The textbook's side is its ch07/ch08 models composed here from its
``common/time_layers.py`` (the model classes and the attention layer live in the book's ch07/ch08
folders, not in ../shared/reference/dlfs2/common), trained with its ``common.trainer.Trainer`` and
``common.optimizer.Adam`` and scored one question at a time as its ``common.util.eval_seq2seq``
does, exactly as the book's scripts loop. Epochs of the two alternate, so load from other
processes on a shared machine hits both alike; the load average is recorded.

After training, the textbook's model is saved with its own ``save_params`` (float16 pickle), read
back with its ``load_params`` and scored by the book's loop; the same file goes through
``nprnn.train_seq2seq.import_book_seq2seq`` and nprnn's batched evaluation: the two accuracies
must be equal.

BLAS threads: 1 by default (``--threads``), set before NumPy loads. On a loaded 2-core machine,
OpenBLAS with more threads than free cores slows both sides down many times over.
"""

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
BOOK = SHARED / "reference" / "dlfs2"

TASKS = {
    # name: (model, hidden, reverse)
    "addition": ("peeky", 128, True),
    "date": ("attention", 256, True),
}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--epochs", type=int, default=10, help="nprnn epochs (default 10)")
    p.add_argument("--book-epochs", type=int, default=10, help="textbook epochs (default 10)")
    p.add_argument("--threads", type=int, default=1, help="BLAS threads for both sides (default 1)")
    p.add_argument("--data-dir", default=str(SHARED / "data" / "seq2seq"))
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--work", default="/tmp/bench_seq2seq", help="scratch folder for checkpoints and pickles")
    return p.parse_args()


ARGS = parse_args()
for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)
os.environ.setdefault("MPLBACKEND", "Agg")  # the textbook's trainer imports pyplot

import json  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(BOOK))
from common import time_layers as book  # noqa: E402
from common.base_model import BaseModel  # noqa: E402
from common.layers import Softmax  # noqa: E402
from common.optimizer import Adam as BookAdam  # noqa: E402
from common.trainer import Trainer as BookTrainer  # noqa: E402
from common.util import eval_seq2seq  # noqa: E402
from machine import describe  # noqa: E402 (benchmarks/machine.py: CPU, BLAS kernel, load, commit)

from nprnn.data.seq2seq import load_seq2seq  # noqa: E402
from nprnn.interop.book import import_book_seq2seq  # noqa: E402
from nprnn.models.decode import exact_match  # noqa: E402
from nprnn.models.io import load_seq2seq as load_seq2seq_model  # noqa: E402
from nprnn.models.seq2seq import build_model  # noqa: E402
from nprnn.training.seq2seq import Seq2seqConfig, Seq2seqTrainer  # noqa: E402

# ---------------------------------------------------------------- the textbook's models
# Written from the book's ch07/seq2seq.py, ch07/peeky_seq2seq.py, ch08/attention_seq2seq.py and
# ch08/attention_layer.py: same layers, same init (global np.random.randn), same parameter order,
# same per-example generate loop, same per-decoder-step attention layers.


def _randn(*shape, fan_in=None, scale=None):
    w = np.random.randn(*shape)  # noqa: NPY002 (the textbook draws from the global RNG)
    return (w * scale if scale is not None else w / np.sqrt(fan_in)).astype("f")


class BookEncoder:
    def __init__(self, V, D, H, return_all=False):
        self.embed = book.TimeEmbedding(_randn(V, D, scale=0.01))
        self.lstm = book.TimeLSTM(_randn(D, 4 * H, fan_in=D), _randn(H, 4 * H, fan_in=H), np.zeros(4 * H, "f"))
        self.params, self.grads = self.embed.params + self.lstm.params, self.embed.grads + self.lstm.grads
        self.return_all, self.hs = return_all, None

    def forward(self, xs):
        self.hs = self.lstm.forward(self.embed.forward(xs))
        return self.hs if self.return_all else self.hs[:, -1, :]

    def backward(self, dh):
        if self.return_all:
            dhs = dh
        else:
            dhs = np.zeros_like(self.hs)
            dhs[:, -1, :] = dh
        self.embed.backward(self.lstm.backward(dhs))


class BookAttentionStep:
    """One decoder step of the book's Attention (AttentionWeight then WeightSum), by broadcasting."""

    def __init__(self):
        self.softmax = Softmax()

    def forward(self, hs, h):
        N, T, H = hs.shape
        hr = h.reshape(N, 1, H)
        a = self.softmax.forward(np.sum(hs * hr, axis=2))
        ar = a.reshape(N, T, 1)
        self.cache = (hs, hr, ar)
        return np.sum(hs * ar, axis=1)

    def backward(self, dc):
        hs, hr, ar = self.cache
        N, T, H = hs.shape
        dt = dc.reshape(N, 1, H).repeat(T, axis=1)
        dhs0 = dt * ar
        da = np.sum(dt * hs, axis=2)
        ds = self.softmax.backward(da)
        dt = ds.reshape(N, T, 1).repeat(H, axis=2)
        return dhs0 + dt * hr, np.sum(dt * hs, axis=1)


class BookTimeAttention:
    def forward(self, hs_enc, hs_dec):
        out = np.empty_like(hs_dec)
        self.layers = []
        for t in range(hs_dec.shape[1]):
            layer = BookAttentionStep()
            out[:, t, :] = layer.forward(hs_enc, hs_dec[:, t, :])
            self.layers.append(layer)
        return out

    def backward(self, dout):
        dhs_enc, dhs_dec = 0, np.empty_like(dout)
        for t, layer in enumerate(self.layers):
            dhs, dh = layer.backward(dout[:, t, :])
            dhs_enc += dhs
            dhs_dec[:, t, :] = dh
        return dhs_enc, dhs_dec


class BookDecoder:
    """kind: "seq2seq", "peeky" or "attention"."""

    def __init__(self, V, D, H, kind):
        self.kind, self.H = kind, H
        lstm_in = H + D if kind == "peeky" else D
        affine_in = H if kind == "seq2seq" else 2 * H
        self.embed = book.TimeEmbedding(_randn(V, D, scale=0.01))
        self.lstm = book.TimeLSTM(
            _randn(lstm_in, 4 * H, fan_in=lstm_in), _randn(H, 4 * H, fan_in=H), np.zeros(4 * H, "f"), stateful=True
        )
        self.affine = book.TimeAffine(_randn(affine_in, V, fan_in=affine_in), np.zeros(V, "f"))
        self.attention = BookTimeAttention() if kind == "attention" else None
        self.params, self.grads = [], []
        for layer in (self.embed, self.lstm, self.affine):
            self.params += layer.params
            self.grads += layer.grads

    def _start(self, enc):
        h = enc[:, -1] if self.kind == "attention" else enc
        self.lstm.set_state(h)  # the book's stateful TimeLSTM: later calls continue from here
        return h

    def _scores(self, xs, enc, h):
        out = self.embed.forward(xs)
        if self.kind == "peeky":
            N, T = xs.shape
            peek = np.repeat(h, T, axis=0).reshape(N, T, self.H)
            out = np.concatenate((peek, self.lstm.forward(np.concatenate((peek, out), axis=2))), axis=2)
        elif self.kind == "attention":
            dec_hs = self.lstm.forward(out)
            out = np.concatenate((self.attention.forward(enc, dec_hs), dec_hs), axis=2)
        else:
            out = self.lstm.forward(out)
        return self.affine.forward(out)

    def forward(self, xs, enc):
        return self._scores(xs, enc, self._start(enc))

    def backward(self, dscore):
        H = self.H
        dout = self.affine.backward(dscore)
        if self.kind == "peeky":
            dlstm = self.lstm.backward(dout[:, :, H:])
            self.embed.backward(dlstm[:, :, H:])
            return self.lstm.dh + np.sum(dout[:, :, :H] + dlstm[:, :, :H], axis=1)
        if self.kind == "attention":
            denc_hs, ddec_hs = self.attention.backward(dout[:, :, :H])
            self.embed.backward(self.lstm.backward(ddec_hs + dout[:, :, H:]))
            denc_hs[:, -1] += self.lstm.dh
            return denc_hs
        self.embed.backward(self.lstm.backward(dout))
        return self.lstm.dh

    def generate(self, enc, start_id, size):
        """The book's loop: one id at a time through the stateful layers, feeding back the argmax."""
        h, sampled, char_id = self._start(enc), [], start_id
        for _ in range(size):
            char_id = int(np.argmax(self._scores(np.array([[char_id]]), enc, h).flatten()))
            sampled.append(char_id)
        return sampled


class BookSeq2seq(BaseModel):
    def __init__(self, V, D, H, kind):
        self.encoder = BookEncoder(V, D, H, return_all=kind == "attention")
        self.decoder = BookDecoder(V, D, H, kind)
        self.softmax = book.TimeSoftmaxWithLoss()
        self.params = self.encoder.params + self.decoder.params
        self.grads = self.encoder.grads + self.decoder.grads

    def forward(self, xs, ts):
        return self.softmax.forward(self.decoder.forward(ts[:, :-1], self.encoder.forward(xs)), ts[:, 1:])

    def backward(self, dout=1):
        self.encoder.backward(self.decoder.backward(self.softmax.backward(dout)))

    def generate(self, xs, start_id, size):
        return self.decoder.generate(self.encoder.forward(xs), start_id, size)


def book_accuracy(model, data):
    """The book's scripts' loop: one question at a time through common.util.eval_seq2seq."""
    correct = 0
    for i in range(len(data.x_test)):
        correct += eval_seq2seq(model, data.x_test[[i]], data.t_test[[i]], data.id_to_char, False, data.reverse)
    return correct / len(data.x_test)


def check_book_models():
    """The composed textbook models compute what nprnn's do: same loss, gradients and greedy answers
    from the same parameters (so the comparison is between two codes for one model)."""
    rng = np.random.default_rng(0)
    for kind in ("seq2seq", "peeky", "attention"):
        ours = build_model(kind, 9, 5, 6, seed=1)
        for p in ours.params:
            p[...] = rng.standard_normal(p.shape) * 0.5
        theirs = BookSeq2seq(9, 5, 6, kind)
        for p, q in zip(theirs.params, ours.params):
            p[...] = q
        xs, ts = rng.integers(0, 9, (4, 7)), rng.integers(0, 9, (4, 5))
        assert np.isclose(ours.forward(xs, ts), float(theirs.forward(xs, ts)), rtol=1e-5), kind
        ours.backward(), theirs.backward()
        for g, h in zip(ours.grads, theirs.grads):
            np.testing.assert_allclose(g, h, rtol=1e-4, atol=1e-6, err_msg=kind)
        answers = ours.generate(xs, 0, 4)
        assert all(answers[n].tolist() == theirs.generate(xs[[n]], 0, 4) for n in range(len(xs))), kind


# ---------------------------------------------------------------- the run


def load():
    return os.getloadavg()[0]


def run_task(name, work):
    kind, hidden, reverse = TASKS[name]
    data = load_seq2seq(Path(ARGS.data_dir) / f"{name}.txt", reverse=reverse)
    V = data.vocab_size
    print(f"\n== {name}: {kind}, hidden {hidden}, reverse {reverse}, vocab {V}, {len(data.x_train)} train", flush=True)

    trainer = Seq2seqTrainer(
        build_model(kind, V, 16, hidden, seed=0),
        data,
        Seq2seqConfig(epochs=1, batch_size=128, lr=0.001, max_grad=5.0, seed=0),
        work / f"nprnn-{name}",
        log=lambda *a: None,
        progress_bar=False,
    )
    np.random.seed(0)  # noqa: NPY002 (the textbook's init and shuffles use the global RNG)
    book_model = BookSeq2seq(V, 16, hidden, kind)
    book_trainer = BookTrainer(book_model, BookAdam(lr=0.001))

    rows = []
    for epoch in range(1, max(ARGS.epochs, ARGS.book_epochs) + 1):
        row = {"epoch": epoch, "load_before": load()}
        if epoch <= ARGS.book_epochs:
            t0 = time.perf_counter()
            book_trainer.fit(data.x_train, data.t_train, max_epoch=1, batch_size=128, max_grad=5.0, eval_interval=None)
            t1 = time.perf_counter()
            row["book_acc"] = book_accuracy(book_model, data)
            row["book_train_s"], row["book_eval_s"] = t1 - t0, time.perf_counter() - t1
        if epoch <= ARGS.epochs:
            trainer.config.epochs = epoch
            t0 = time.perf_counter()
            record = trainer.run()[-1]
            row["nprnn_epoch_s"] = time.perf_counter() - t0  # train + eval + checkpoint + plot
            row["nprnn_acc"], row["nprnn_train_s"], row["nprnn_eval_s"] = (
                record["test_accuracy"],
                record["seconds"],
                record["eval_seconds"],
            )
        row["load_after"] = load()
        rows.append(row)
        print(
            f"epoch {epoch:2d}  "
            + (
                f"textbook {100 * row['book_acc']:6.2f}% {row['book_train_s']:6.1f}s+{row['book_eval_s']:5.1f}s  "
                if "book_acc" in row
                else ""
            )
            + (
                f"nprnn {100 * row['nprnn_acc']:6.2f}% {row['nprnn_train_s']:6.1f}s+{row['nprnn_eval_s']:5.1f}s "
                f"(epoch wall {row['nprnn_epoch_s']:.1f}s)  "
                if "nprnn_acc" in row
                else ""
            )
            + f"load {row['load_before']:.1f}/{row['load_after']:.1f}",
            flush=True,
        )

    # The textbook's saved parameters, through its own reload and through nprnn import-book.
    pkl = work / f"book-{name}.pkl"
    book_model.save_params(str(pkl))
    np.random.seed(1)  # noqa: NPY002
    reloaded = BookSeq2seq(V, 16, hidden, kind)
    reloaded.load_params(str(pkl))
    book_reloaded_acc = book_accuracy(reloaded, data)
    out = import_book_seq2seq(pkl, kind, name, work / f"imported-{name}.npz", reverse=reverse, data_dir=ARGS.data_dir)
    imported, _, _, _ = load_seq2seq_model(out)
    imported_acc = exact_match(imported, data.x_test, data.t_test)
    verdict = "equal" if book_reloaded_acc == imported_acc else "DIFFER"
    print(
        f"textbook params saved (float16) and reloaded: textbook eval {100 * book_reloaded_acc:.2f}%, "
        f"nprnn import-book + eval {100 * imported_acc:.2f}%  ({verdict})",
        flush=True,
    )
    return {
        "task": name,
        "model": kind,
        "hidden": hidden,
        "reverse": reverse,
        "epochs": rows,
        "import_check": {"book_reloaded_acc": book_reloaded_acc, "nprnn_imported_acc": imported_acc},
    }


def main():
    work = Path(ARGS.work)
    work.mkdir(parents=True, exist_ok=True)
    check_book_models()
    print(describe())
    print(f"numpy {np.__version__}, BLAS threads {ARGS.threads}, cpus {os.cpu_count()}, load {os.getloadavg()}")
    results = {"threads": ARGS.threads, "start_load": os.getloadavg(), "tasks": []}
    start = time.perf_counter()
    for name in ARGS.tasks:
        results["tasks"].append(run_task(name, work))
        if ARGS.json:
            Path(ARGS.json).write_text(json.dumps(results, indent=1))
    results["wall_s"] = time.perf_counter() - start
    results["end_load"] = os.getloadavg()
    for task in results["tasks"]:
        rows = task["epochs"]
        both = [r for r in rows if "book_acc" in r and "nprnn_acc" in r]
        book_epoch = np.mean([r["book_train_s"] + r["book_eval_s"] for r in both])
        nprnn_epoch = np.mean([r["nprnn_epoch_s"] for r in both])
        book_train = np.mean([r["book_train_s"] for r in both])
        nprnn_train = np.mean([r["nprnn_train_s"] for r in both])
        task["ratio_epoch"], task["ratio_train"] = book_epoch / nprnn_epoch, book_train / nprnn_train
        print(
            f"{task['task']}: over {len(both)} interleaved epochs, textbook {book_epoch:.1f}s/epoch, nprnn "
            f"{nprnn_epoch:.1f}s/epoch: ratio {task['ratio_epoch']:.2f} (training only: {task['ratio_train']:.2f}); "
            f"final accuracy nprnn {100 * rows[-1].get('nprnn_acc', float('nan')):.2f}%"
        )
    if ARGS.json:
        Path(ARGS.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
