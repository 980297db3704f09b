"""How the addition recipe was chosen: variants of the textbook's peeky, reversed addition run (embed 16,
hidden 128, batch 128, Adam, clip 5, 10 epochs), scored on a validation split held out of the training
split (its last 4,500 of 45,000 rows), never on the test split.

    OPENBLAS_NUM_THREADS=1 python benchmarks/tune_seq2seq_addition.py VARIANT SEED [--data-dir DIR]

VARIANT joins with "+" any of: book (nothing changed), forget (forget-gate bias 1), orth (orthogonal
recurrent blocks), embed (unit-variance character embeddings instead of 0.01 * randn), lrX (Adam lr X
instead of 0.001), cos (cosine decay of the lr to 0 over the 10 epochs, as `--schedule cosine`).
Prints one JSON line: the validation exact-match accuracy (%) after each epoch. Results in
benchmarks/RESULTS_SEQ2SEQ.md.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np

from nprnn import optim
from nprnn.data.seq2seq import load_seq2seq
from nprnn.models.decode import exact_match
from nprnn.models.seq2seq import PeekySeq2seq

EPOCHS, BATCH, VALID = 10, 128, 4500

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("variant")
p.add_argument("seed", type=int)
p.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[1].parent / "shared/data/seq2seq"))
args = p.parse_args()
parts = args.variant.split("+")

data = load_seq2seq(Path(args.data_dir) / "addition.txt", reverse=True)
x_train, t_train = data.x_train[:-VALID], data.t_train[:-VALID]
x_valid, t_valid = data.x_train[-VALID:], data.t_train[-VALID:]
model = PeekySeq2seq(data.vocab_size, 16, 128, seed=args.seed)
rng = np.random.default_rng(1000 + args.seed)
for lstm in (model.encoder.lstm, model.decoder.lstm):
    Wx, Wh, b = lstm.params
    H = Wh.shape[0]
    if "forget" in parts:
        b[:H] = 1.0  # gate order f, g, i, o
    if "orth" in parts:
        for k in range(4):
            q, r = np.linalg.qr(rng.standard_normal((H, H)))
            Wh[:, k * H : (k + 1) * H] = q * np.sign(np.diag(r))
if "embed" in parts:
    for embed in (model.encoder.embed, model.decoder.embed):
        W = embed.params[0]
        W[...] = rng.standard_normal(W.shape)
lr0 = next((float(part[2:]) for part in parts if part.startswith("lr")), 0.001)
optimizer = optim.Adam(lr=lr0)
iters = len(x_train) // BATCH
shuffle = np.random.default_rng(args.seed)
accuracy, start = [], time.time()
for epoch in range(EPOCHS):
    order = shuffle.permutation(len(x_train))
    for it in range(iters):
        rows = order[it * BATCH : (it + 1) * BATCH]
        if "cos" in parts:
            optimizer.lr = lr0 * (1 + np.cos(np.pi * (epoch * iters + it) / (EPOCHS * iters))) / 2
        model.forward(x_train[rows], t_train[rows])
        model.backward()
        optim.clip_grads(model.grads, 5.0)
        optimizer.update(model.params, model.grads)
    accuracy.append(round(100 * exact_match(model, x_valid, t_valid), 2))
seconds = round(time.time() - start)
print(json.dumps({"variant": args.variant, "seed": args.seed, "valid": accuracy, "seconds": seconds}))
