"""Language-model training throughput (words/s), nprnn vs an equivalent PyTorch CPU model, in one run.

    python benchmarks/bench_lm.py [--quick] [--threads 2]

Each configuration times full training steps (forward, backward, global-norm clipping, SGD update)
on random ids of a 10,000-word vocabulary, alternating the two implementations so that machine
load hits both alike. Prints a Markdown table; the ratio > 1 means nprnn is faster.
"""

import argparse
import time

import numpy as np
from machine import describe  # benchmarks/machine.py: CPU, BLAS kernel, load, commit

CONFIGS = {  # name: (cell, embed, hidden, layers, batch, bptt)
    "rnnlm (LSTM 100)": ("lstm", 100, 100, 1, 20, 35),
    "zaremba-small (2x200)": ("lstm", 200, 200, 2, 20, 20),
    "zaremba-medium (2x650)": ("lstm", 650, 650, 2, 20, 35),
    "gru 2x200": ("gru", 200, 200, 2, 20, 20),
}
V = 10000


def nprnn_step(cell, E, H, L, N, T, rng):
    from nprnn import optim
    from nprnn.models.lm import LanguageModel, LMConfig

    model = LanguageModel(LMConfig(vocab_size=V, cell=cell, embed=E, hidden=H, layers=L), seed=0)
    opt = optim.SGD(lr=1.0)
    xs, ts = rng.integers(0, V, (N, T)), rng.integers(0, V, (N, T))

    def step():
        model.forward(xs, ts)
        model.backward()
        optim.clip_grads(model.grads, 0.25)
        opt.update(model.params, model.grads)

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
    parser.add_argument("--threads", type=int, default=2, help="PyTorch intra-op threads (default 2)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    min_time = 3.0 if args.quick else 10.0
    print(describe())
    print(f"numpy {np.__version__}, torch {torch.__version__} ({args.threads} threads), V={V}\n")
    print("| model | N x T | nprnn words/s | torch words/s | nprnn / torch |")
    print("|---|---|---:|---:|---:|")
    for name, (cell, E, H, L, N, T) in CONFIGS.items():
        rng = np.random.default_rng(0)
        steps = {"nprnn": nprnn_step(cell, E, H, L, N, T, rng), "torch": torch_step(cell, E, H, L, N, T, rng)}
        times = {k: [] for k in steps}
        for step in steps.values():
            step()
        start = time.perf_counter()
        while time.perf_counter() - start < min_time or min(map(len, times.values())) < 5:
            for k, step in steps.items():
                t0 = time.perf_counter()
                step()
                times[k].append(time.perf_counter() - t0)
        wps = {k: N * T / float(np.median(v)) for k, v in times.items()}
        print(f"| {name} | {N} x {T} | {wps['nprnn']:,.0f} | {wps['torch']:,.0f} | {wps['nprnn'] / wps['torch']:.2f} |")


if __name__ == "__main__":
    main()
