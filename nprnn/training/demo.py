"""A one-minute demonstration that needs nothing but NumPy: a TimeRNN learns to echo its
input from a few steps back (a task that needs memory), trained by truncated BPTT and Adam.

    nprnn demo [--delay 2] [--epochs 30] [--seed 0]

It trains the bare layer with an optimizer, to show the layer protocol at work; models are trained by
``nprnn.training.loop``.
"""

import time

import numpy as np

from nprnn._checks import positive_int
from nprnn.layers.rnn import TimeRNN, init_rnn_params
from nprnn.optim import Adam


def make_echo_task(num_sequences, T, delay, rng):
    """xs: (S, T, 1) random values; ts: (S, T, 1) with ts[:, t] = xs[:, t - delay] (0 before the start)."""
    xs = rng.uniform(-1, 1, size=(num_sequences, T, 1)).astype(np.float32)
    ts = np.zeros_like(xs)
    ts[:, delay:] = xs[:, :-delay] if delay else xs
    return xs, ts


def run_demo(delay=2, epochs=30, hidden=32, batch_size=32, T=20, seed=0, lr=0.01, log=print):
    """Train the echo task; returns the mean squared error of each epoch."""
    for what, value in (("epochs", epochs), ("hidden", hidden), ("batch_size", batch_size), ("T", T)):
        positive_int(what, value, "nprnn demo")
    if isinstance(delay, bool) or not isinstance(delay, int) or not 0 <= delay < T:
        raise ValueError(f"nprnn demo: delay must be an integer in [0, T={T}), got {delay!r}")
    rng = np.random.default_rng(seed)
    xs, ts = make_echo_task(1024, T, delay, rng)
    rnn = TimeRNN(*init_rnn_params(1, hidden, seed=seed))
    W_out = (rng.standard_normal((hidden, 1)) / np.sqrt(hidden)).astype(np.float32)
    b_out = np.zeros(1, np.float32)
    params = rnn.params + [W_out, b_out]
    dW_out, db_out = np.zeros_like(W_out), np.zeros_like(b_out)
    grads = rnn.grads + [dW_out, db_out]
    optimizer = Adam(lr=lr)
    losses = []
    log(f"TimeRNN(1 -> {hidden}) learning to echo its input {delay} steps back; loss = mean squared error")
    log(f"(predicting 0 everywhere scores {np.mean(ts**2):.4f})")
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(xs))
        total = 0.0
        for i in range(0, len(xs), batch_size):
            x, t = xs[order[i : i + batch_size]], ts[order[i : i + batch_size]]
            hs = rnn.forward(x)
            ys = hs @ W_out + b_out
            diff = ys - t
            total += float(np.mean(diff**2)) * len(x)
            dys = 2 * diff / diff.size
            rnn.backward(dys @ W_out.T)
            dW_out[...] = np.einsum("nth,nto->ho", hs, dys)
            db_out[...] = dys.sum(axis=(0, 1))
            optimizer.update(params, grads)
        losses.append(total / len(xs))
        if epoch == 1 or epoch % 5 == 0 or epoch == epochs:
            log(f"epoch {epoch:3d}  loss {losses[-1]:.5f}  ({time.perf_counter() - start:.1f}s)")
    return losses
