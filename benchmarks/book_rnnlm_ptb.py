"""The textbook's own ch06 experiment on Penn Treebank, then its saved parameters through nprnn.

    python benchmarks/book_rnnlm_ptb.py [--work DIR] [--epochs 4]

1. Trains the textbook's `Rnnlm` (LSTM 100/100; composed here from its `common/` layers exactly as
   its ch06/rnnlm.py does, since only `common/` is in ../shared) with its `RnnlmTrainer`, SGD lr 20,
   clipping 0.25, batch 20 x 35, 4 epochs, as ch06/train_rnnlm.py; the global NumPy RNG is seeded.
2. Scores the test split with the textbook's `eval_perplexity` (10 streams x 35), on the weights as
   saved by its `save_params` (float16) and read back by its `load_params`, as its scripts do.
3. Runs `nprnn import-book` on that pickle and `nprnn eval ... --batch-size 10 --bptt 35`: the issue asks
   for the same perplexity.
Results in benchmarks/RESULTS_LM.md.
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(SHARED / "reference" / "dlfs2"))

from common.base_model import BaseModel  # noqa: E402
from common.optimizer import SGD  # noqa: E402
from common.time_layers import TimeAffine, TimeEmbedding, TimeLSTM, TimeSoftmaxWithLoss  # noqa: E402
from common.trainer import RnnlmTrainer  # noqa: E402
from common.util import eval_perplexity  # noqa: E402
from machine import describe  # noqa: E402 (benchmarks/machine.py: CPU, BLAS kernel, load, commit)

from nprnn.data.corpus import load_corpus  # noqa: E402


class Rnnlm(BaseModel):
    """The textbook's ch06 Rnnlm: embedding, one stateful LSTM, affine, softmax with loss."""

    def __init__(self, vocab_size=10000, wordvec_size=100, hidden_size=100):
        V, D, H = vocab_size, wordvec_size, hidden_size
        rn = np.random.randn
        embed_W = (rn(V, D) / 100).astype("f")
        lstm_Wx = (rn(D, 4 * H) / np.sqrt(D)).astype("f")
        lstm_Wh = (rn(H, 4 * H) / np.sqrt(H)).astype("f")
        lstm_b = np.zeros(4 * H).astype("f")
        affine_W = (rn(H, V) / np.sqrt(H)).astype("f")
        affine_b = np.zeros(V).astype("f")
        self.layers = [
            TimeEmbedding(embed_W),
            TimeLSTM(lstm_Wx, lstm_Wh, lstm_b, stateful=True),
            TimeAffine(affine_W, affine_b),
        ]
        self.loss_layer = TimeSoftmaxWithLoss()
        self.lstm_layer = self.layers[1]
        self.params, self.grads = [], []
        for layer in self.layers:
            self.params += layer.params
            self.grads += layer.grads

    def predict(self, xs):
        for layer in self.layers:
            xs = layer.forward(xs)
        return xs

    def forward(self, xs, ts):
        return self.loss_layer.forward(self.predict(xs), ts)

    def backward(self, dout=1):
        dout = self.loss_layer.backward(dout)
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        return dout

    def reset_state(self):
        self.lstm_layer.reset_state()


def main():
    print(describe())
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="/tmp/book_rnnlm_ptb", help="folder for the pickle and the nprnn checkpoint")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    ptb = SHARED / "data" / "ptb"
    corpus = load_corpus(ptb)  # ids in the textbook's order (tests/data check this against its ptb.py)
    train, test = np.asarray(corpus.train), np.asarray(corpus.test)

    np.random.seed(args.seed)  # noqa: NPY002  (the textbook draws from the global RNG)
    model = Rnnlm(len(corpus.vocab), 100, 100)
    trainer = RnnlmTrainer(model, SGD(20.0))
    start = time.perf_counter()
    trainer.fit(train[:-1], train[1:], args.epochs, 20, 35, 0.25, eval_interval=500)
    seconds = time.perf_counter() - start
    pkl = work / "Rnnlm.pkl"
    model.save_params(str(pkl))
    model.load_params(str(pkl))  # score the float16-rounded weights, as the textbook's scripts do
    model.reset_state()
    book_ppl = float(eval_perplexity(model, test))
    words = args.epochs * (len(train) - 1) // (20 * 35) * 20 * 35
    print(f"textbook: {args.epochs} epochs in {seconds:.0f} s ({words / seconds:,.0f} words/s); "
          f"test perplexity (its eval_perplexity) {book_ppl:.2f}")  # fmt: skip

    out = work / "imported.npz"
    nprnn = [sys.executable, "-m", "nprnn"]
    imported = [*nprnn, "import-book", str(pkl), "--preset", "rnnlm", "--data", str(ptb), "-o", str(out)]
    subprocess.run(imported, check=True)
    run = subprocess.run(
        [*nprnn, "eval", str(out), "--split", "test", "--batch-size", "10", "--bptt", "35"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    print(run.stdout.strip())
    ours = float(run.stdout.split("test perplexity:")[1].split()[0])
    print(f"nprnn eval of the imported checkpoint {ours:.2f} vs the textbook's {book_ppl:.2f}: "
          f"difference {ours - book_ppl:+.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
