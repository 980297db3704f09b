"""TimeRNN against PyTorch's nn.RNN and against the textbook's TimeRNN, same weights."""

import numpy as np
import pytest

from nprnn import TimeRNN
from tests.layers import _shared as shared


@pytest.mark.parametrize(
    "N, T, D, H, lengths", [(3, 6, 4, 5, None), (1, 1, 2, 3, None), (4, 9, 7, 2, None), (4, 6, 3, 5, [6, 2, 4, 1])]
)
def test_parity_with_torch(rng, N, T, D, H, lengths):
    """With lengths, torch runs a packed sequence."""
    Wx, Wh, b = rng.standard_normal((D, H)), rng.standard_normal((H, H)) * 0.5, rng.standard_normal(H)
    xs, h0 = rng.standard_normal((N, T, D)), rng.standard_normal((N, H))
    R, R_final = rng.standard_normal((N, T, H)), rng.standard_normal((N, H))
    lengths = None if lengths is None else np.array(lengths)

    layer = TimeRNN(Wx, Wh, b)
    b_ih = rng.standard_normal(H)  # any split of b into the two torch biases is equivalent
    rnn = shared.torch_layer(shared.import_torch().nn.RNN, Wx.T, Wh.T, b_ih, b - b_ih, nonlinearity="tanh")
    shared.check_parity_with_torch(layer, rnn, xs, [h0], R, [R_final], lengths)

    tol = dict(rtol=1e-10, atol=1e-10)
    dWx, dWh, db = layer.grads
    np.testing.assert_allclose(dWx, rnn.weight_ih_l0.grad.numpy().T, **tol)
    np.testing.assert_allclose(dWh, rnn.weight_hh_l0.grad.numpy().T, **tol)
    np.testing.assert_allclose(db, rnn.bias_ih_l0.grad.numpy(), **tol)
    np.testing.assert_allclose(db, rnn.bias_hh_l0.grad.numpy(), **tol)


def test_parity_with_textbook(rng, dlfs2):
    """The textbook computes in float32 (it allocates hs and h with dtype 'f'), so compare in float32."""
    from common.time_layers import TimeRNN as BookTimeRNN

    N, T, D, H = 5, 7, 4, 6
    f32 = np.float32
    Wx, Wh, b = (rng.standard_normal(s).astype(f32) * 0.5 for s in [(D, H), (H, H), (H,)])
    xs = rng.standard_normal((N, T, D)).astype(f32)
    dhs = rng.standard_normal((N, T, H)).astype(f32)

    ours, book = TimeRNN(Wx, Wh, b, stateful=True), BookTimeRNN(Wx.copy(), Wh.copy(), b.copy(), stateful=True)
    for _ in range(2):  # the second call runs from the carried state
        hs_ours, hs_book = ours.forward(xs), book.forward(xs)
        np.testing.assert_allclose(hs_ours, hs_book, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ours.backward(dhs), book.backward(dhs), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(ours.dh, book.dh, rtol=1e-4, atol=1e-5)
        for g_ours, g_book in zip(ours.grads, book.grads):
            np.testing.assert_allclose(g_ours, g_book, rtol=1e-4, atol=1e-4)
