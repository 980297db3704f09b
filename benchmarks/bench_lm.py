"""Language-model training throughput (words/s), nprnn vs an equivalent PyTorch CPU model, in one run.

    python benchmarks/bench_lm.py [--quick]

Each configuration times full training steps (forward, backward, global-norm clipping, SGD update)
on random ids of a 10,000-word vocabulary: nprnn's default path (the numba kernels), its NumPy
reference path, and PyTorch in processes of its own at 1 and at 2 threads, in the rounds of
benchmarks/timing.py (blocks of back-to-back steps after an idle pause). Prints a Markdown table with
the machine line; "nprnn / torch best" > 1 means nprnn trains faster than PyTorch at its better
thread count.
"""

import argparse
import os

import numpy as np
from machine import describe  # benchmarks/machine.py: CPU, BLAS kernel, load, commit
from timing import TorchProcess, interleaved_samples, ratio  # benchmarks/timing.py

CONFIGS = {  # name: (cell, embed, hidden, layers, batch, bptt)
    "rnnlm (LSTM 100)": ("lstm", 100, 100, 1, 20, 35),
    "zaremba-small (2x200)": ("lstm", 200, 200, 2, 20, 20),
    "zaremba-medium (2x650)": ("lstm", 650, 650, 2, 20, 35),
    "gru 2x200": ("gru", 200, 200, 2, 20, 20),
}
V = 10000


def nprnn_step(cell, E, H, L, N, T, rng, backend="numba"):
    from nprnn import accel, optim
    from nprnn.models.lm import LanguageModel, LMConfig

    accel.retain_freed_memory()  # as nprnn's training loop does when it starts
    model = LanguageModel(LMConfig(vocab_size=V, cell=cell, embed=E, hidden=H, layers=L), seed=0)
    opt = optim.SGD(lr=1.0)
    xs, ts = rng.integers(0, V, (N, T)), rng.integers(0, V, (N, T))

    def step():
        accel.use(backend)
        model.forward(xs, ts)
        model.backward()
        rate = optim.clip_rate(optim.grad_norm(model.grads), 0.25)  # clipped in the update, as nprnn's loop does
        opt.update(model.params, model.grads, grad_scale=rate)

    return step


def torch_step(cell, E, H, L, N, T, rng):
    import torch

    class LM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(V, E)
            self.rnn = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](E, H, L, batch_first=True)
            self.out = torch.nn.Linear(H, V)

        def forward(self, ids, state):
            hs, state = self.rnn(self.embed(ids), state)
            return self.out(hs), state

    model = LM()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    xs = torch.from_numpy(rng.integers(0, V, (N, T)))
    ts = torch.from_numpy(rng.integers(0, V, (N, T)))
    state = [None]

    def step():
        opt.zero_grad()
        logits, new_state = model(xs, state[0])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), ts.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        opt.step()
        # stateful truncated BPTT, as nprnn's language model does
        state[0] = tuple(s.detach() for s in new_state) if isinstance(new_state, tuple) else new_state.detach()

    return step


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter timing per configuration")
    args = parser.parse_args(argv)
    from importlib.metadata import version

    from nprnn import accel

    min_time = 4.0 if args.quick else 12.0
    print(describe())
    print(f"numpy {np.__version__}, torch {version('torch')} (1 and 2 threads, own processes), V={V}")
    print(f"nprnn default backend: {accel.backend()}\n")
    print("| model | N x T | nprnn words/s | numpy path words/s | torch 1t words/s | torch 2t words/s "
          "| nprnn / torch best | nprnn / numpy path | load |")  # fmt: skip
    print("|---|---|" + "---:|" * 7)
    torches = {f"torch {n}t": TorchProcess(n, "bench_lm:torch_step") for n in (1, 2)}
    for name, (cell, E, H, L, N, T) in CONFIGS.items():
        rng = np.random.default_rng(0)
        runners = {
            "nprnn": nprnn_step(cell, E, H, L, N, T, rng, "numba"),
            "numpy": nprnn_step(cell, E, H, L, N, T, rng, "numpy"),
            **{label: proc.runner(cell, E, H, L, N, T) for label, proc in torches.items()},
        }
        samples = interleaved_samples(runners, min_time)
        accel.use("auto")
        wps = {k: N * T / float(np.median(v)) for k, v in samples.items()}
        best = max(torches, key=lambda k: wps[k])
        print(
            f"| {name} | {N} x {T} | {wps['nprnn']:,.0f} | {wps['numpy']:,.0f} | {wps['torch 1t']:,.0f} "
            f"| {wps['torch 2t']:,.0f} | {ratio(samples, best, 'nprnn'):.2f} ({best[6:]}) "
            f"| {ratio(samples, 'numpy', 'nprnn'):.2f} | {os.getloadavg()[0]:.1f} |",
            flush=True,
        )
    for proc in torches.values():
        proc.close()


if __name__ == "__main__":
    main()
