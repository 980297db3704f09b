"""TimeRNN against PyTorch's nn.RNN and against the textbook's TimeRNN, same weights."""

import numpy as np
import pytest
import torch

from nprnn import TimeRNN

torch.set_num_threads(1)


def torch_rnn_from(Wx, Wh, b, rng):
    D, H = Wx.shape
    rnn = torch.nn.RNN(D, H, nonlinearity="tanh", batch_first=True, dtype=torch.float64)
    b_ih = rng.standard_normal(H)  # any split of b into the two torch biases is equivalent
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(torch.from_numpy(Wx.T))
        rnn.weight_hh_l0.copy_(torch.from_numpy(Wh.T))
        rnn.bias_ih_l0.copy_(torch.from_numpy(b_ih))
        rnn.bias_hh_l0.copy_(torch.from_numpy(b - b_ih))
    return rnn


@pytest.mark.parametrize("N, T, D, H", [(3, 6, 4, 5), (1, 1, 2, 3), (4, 9, 7, 2)])
def test_parity_with_torch(rng, N, T, D, H):
    Wx, Wh, b = rng.standard_normal((D, H)), rng.standard_normal((H, H)) * 0.5, rng.standard_normal(H)
    xs, h0 = rng.standard_normal((N, T, D)), rng.standard_normal((N, H))
    R, R_final = rng.standard_normal((N, T, H)), rng.standard_normal((N, H))

    layer = TimeRNN(Wx, Wh, b)
    hs = layer.forward(xs, h0=h0)
    dxs = layer.backward(R, dh_final=R_final)

    rnn = torch_rnn_from(Wx, Wh, b, rng)
    xs_t = torch.tensor(xs, requires_grad=True)
    h0_t = torch.tensor(h0[None], requires_grad=True)
    out, h_n = rnn(xs_t, h0_t)
    ((out * torch.from_numpy(R)).sum() + (h_n[0] * torch.from_numpy(R_final)).sum()).backward()

    tol = dict(rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(hs, out.detach().numpy(), **tol)
    np.testing.assert_allclose(layer.h, h_n[0].detach().numpy(), **tol)
    np.testing.assert_allclose(dxs, xs_t.grad.numpy(), **tol)
    np.testing.assert_allclose(layer.dh, h0_t.grad[0].numpy(), **tol)
    dWx, dWh, db = layer.grads
    np.testing.assert_allclose(dWx, rnn.weight_ih_l0.grad.numpy().T, **tol)
    np.testing.assert_allclose(dWh, rnn.weight_hh_l0.grad.numpy().T, **tol)
    np.testing.assert_allclose(db, rnn.bias_ih_l0.grad.numpy(), **tol)
    np.testing.assert_allclose(db, rnn.bias_hh_l0.grad.numpy(), **tol)


def test_parity_with_torch_packed_variable_lengths(rng):
    N, T, D, H = 4, 6, 3, 5
    lengths = np.array([6, 2, 4, 1])
    Wx, Wh, b = rng.standard_normal((D, H)), rng.standard_normal((H, H)) * 0.5, rng.standard_normal(H)
    xs, h0 = rng.standard_normal((N, T, D)), rng.standard_normal((N, H))
    R, R_final = rng.standard_normal((N, T, H)), rng.standard_normal((N, H))

    layer = TimeRNN(Wx, Wh, b)
    hs = layer.forward(xs, h0=h0, lengths=lengths)
    dxs = layer.backward(R, dh_final=R_final)

    rnn = torch_rnn_from(Wx, Wh, b, rng)
    xs_t = torch.tensor(xs, requires_grad=True)
    h0_t = torch.tensor(h0[None], requires_grad=True)
    packed = torch.nn.utils.rnn.pack_padded_sequence(xs_t, torch.from_numpy(lengths), True, enforce_sorted=False)
    out_packed, h_n = rnn(packed, h0_t)
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(out_packed, batch_first=True, total_length=T)
    ((out * torch.from_numpy(R)).sum() + (h_n[0] * torch.from_numpy(R_final)).sum()).backward()

    tol = dict(rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(hs, out.detach().numpy(), **tol)
    np.testing.assert_allclose(layer.h, h_n[0].detach().numpy(), **tol)
    np.testing.assert_allclose(dxs, xs_t.grad.numpy(), **tol)
    np.testing.assert_allclose(layer.dh, h0_t.grad[0].numpy(), **tol)
    np.testing.assert_allclose(layer.grads[0], rnn.weight_ih_l0.grad.numpy().T, **tol)
    np.testing.assert_allclose(layer.grads[1], rnn.weight_hh_l0.grad.numpy().T, **tol)
    np.testing.assert_allclose(layer.grads[2], rnn.bias_hh_l0.grad.numpy(), **tol)


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
