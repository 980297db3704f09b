"""The time layers and the output layer run their matrix products under the BLAS-thread policy
(``nprnn.accel.threads_for``, whose decisions tests/layers/test_kernels.py checks): on a busy
machine a 2-thread OpenBLAS product of a seq2seq output layer stalled for 16 ms where it takes
0.16 ms."""

import numpy as np

from nprnn import accel
from nprnn.layers import TimeAffine
from nprnn.layers.gru import TimeGRU, init_gru_params
from nprnn.layers.lstm import TimeLSTM, init_lstm_params
from nprnn.layers.rnn import TimeRNN, init_rnn_params


class Recorder:
    """Stands in for ``accel.threads_for`` and records the FLOPs each product was judged by."""

    calls = []

    def __init__(self, flops, largest=None):
        self.calls.append((flops, largest))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_time_affine_products_run_under_the_thread_policy(monkeypatch):
    monkeypatch.setattr(accel, "threads_for", Recorder)
    Recorder.calls = []
    N, T, D, V = 3, 4, 5, 7
    rng = np.random.default_rng(0)
    layer = TimeAffine(rng.standard_normal((D, V)), rng.standard_normal(V))
    xs, dout = rng.standard_normal((N, T, D)), rng.standard_normal((N, T, V))
    out = layer.forward(xs)
    dxs = layer.backward(dout)
    flops = 2 * N * T * D * V
    assert Recorder.calls == [(flops, flops), (flops, flops)]  # forward, then backward
    np.testing.assert_allclose(out, xs @ layer.params[0] + layer.params[1], rtol=1e-12)
    np.testing.assert_allclose(dxs, dout @ layer.params[0].T, rtol=1e-12)
    np.testing.assert_allclose(layer.grads[0], xs.reshape(-1, D).T @ dout.reshape(-1, V), rtol=1e-12)
    np.testing.assert_allclose(layer.grads[1], dout.sum(axis=(0, 1)), rtol=1e-12)


def test_time_layers_are_judged_by_their_per_step_and_largest_products(monkeypatch):
    monkeypatch.setattr(accel, "threads_for", Recorder)
    N, T, D, H = 3, 4, 7, 5
    for cls, init, gates in (
        (TimeRNN, init_rnn_params, 1),
        (TimeLSTM, init_lstm_params, 4),
        (TimeGRU, init_gru_params, 3),
    ):
        Recorder.calls = []
        layer = cls(*init(D, H, dtype=np.float64))
        layer.forward(np.ones((N, T, D)))
        layer.backward(np.ones((N, T, H)))
        per_step, largest = 2 * N * H * gates * H, 2 * T * N * gates * H * max(D, H)
        assert Recorder.calls == [(per_step, largest)] * 2, cls.__name__  # forward, then backward
