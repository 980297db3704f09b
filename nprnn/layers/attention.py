"""Dot-product attention over encoder states (the textbook's chapter 8), batched.

For one decoder state ``h`` and the encoder states ``hs``:

    s_t = hs_t . h            scores, one per encoder step         s: (N, Te)
    a   = softmax(s)          attention weights over encoder steps  a: (N, Te)
    c   = sum_t a_t hs_t      context vector                        c: (N, H)

``AttentionWeight`` (h -> a), ``WeightSum`` (a -> c) and ``Attention`` (both) do one decoder
step, as in the book. ``TimeAttention`` does all decoder steps at once: in the book's model
the context does not feed back into the LSTM, so every decoder state is known before attention
runs and the T_dec steps are three batched matrix multiplies instead of a Python loop.

None of these layers has parameters (``params = grads = []``).
"""

import numpy as np

from nprnn._checks import FLOAT_DTYPES, check_input


def _check_states(name, hs, what="hs", softmax_over=False):
    if not isinstance(hs, np.ndarray) or hs.dtype not in FLOAT_DTYPES:
        got = hs.dtype if isinstance(hs, np.ndarray) else type(hs).__name__
        raise ValueError(f"{name}: {what} must be a float32 or float64 NumPy array, got {got}")
    check_input(name, hs, (None, None, None), hs.dtype, what)
    if softmax_over and hs.shape[1] == 0:  # a softmax over no encoder step is undefined
        raise ValueError(f"{name}: {what} must have at least one encoder step, got shape {hs.shape}")
    return hs


def softmax(s):
    """Softmax over the last axis, shifted by the max so large scores do not overflow."""
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def softmax_backward(a, da):
    """Gradient through ``a = softmax(s)`` over the last axis: ``ds = a * (da - <da, a>)``."""
    return a * (da - np.sum(da * a, axis=-1, keepdims=True))


class AttentionWeight:
    """Weights of the encoder states for one decoder state.

    ``forward(hs: (N, Te, H), h: (N, H)) -> a: (N, Te)`` (rows sum to 1)
    ``backward(da: (N, Te)) -> (dhs: (N, Te, H), dh: (N, H))``
    """

    def __init__(self):
        self.params, self.grads = [], []
        self._cache = None

    def forward(self, hs, h):
        _check_states("AttentionWeight", hs, softmax_over=True)
        N, Te, H = hs.shape
        check_input("AttentionWeight", h, (N, H), hs.dtype, "h")
        a = softmax(np.matmul(hs, h[:, :, None])[:, :, 0])
        self._cache = (hs, h, a)
        return a

    def backward(self, da):
        if self._cache is None:
            raise RuntimeError("AttentionWeight: backward called before forward")
        hs, h, a = self._cache
        check_input("AttentionWeight", da, a.shape, hs.dtype, "da")
        ds = softmax_backward(a, da)
        dhs = ds[:, :, None] * h[:, None, :]
        dh = np.matmul(ds[:, None, :], hs)[:, 0]
        return dhs, dh


class WeightSum:
    """The context: encoder states averaged with the attention weights.

    ``forward(hs: (N, Te, H), a: (N, Te)) -> c: (N, H)``
    ``backward(dc: (N, H)) -> (dhs: (N, Te, H), da: (N, Te))``
    """

    def __init__(self):
        self.params, self.grads = [], []
        self._cache = None

    def forward(self, hs, a):
        _check_states("WeightSum", hs)
        N, Te, H = hs.shape
        check_input("WeightSum", a, (N, Te), hs.dtype, "a")
        self._cache = (hs, a)
        return np.matmul(a[:, None, :], hs)[:, 0]

    def backward(self, dc):
        if self._cache is None:
            raise RuntimeError("WeightSum: backward called before forward")
        hs, a = self._cache
        check_input("WeightSum", dc, (hs.shape[0], hs.shape[2]), hs.dtype, "dc")
        dhs = a[:, :, None] * dc[:, None, :]
        da = np.matmul(hs, dc[:, :, None])[:, :, 0]
        return dhs, da


class Attention:
    """One decoder step of attention: ``AttentionWeight`` then ``WeightSum``.

    ``forward(hs: (N, Te, H), h: (N, H)) -> c: (N, H)``; the weights are kept in
    ``.attention_weight: (N, Te)``.
    ``backward(dc: (N, H)) -> (dhs: (N, Te, H), dh: (N, H))``
    """

    def __init__(self):
        self.params, self.grads = [], []
        self.weight_layer = AttentionWeight()
        self.sum_layer = WeightSum()
        self.attention_weight = None

    def forward(self, hs, h):
        a = self.weight_layer.forward(hs, h)
        self.attention_weight = a
        return self.sum_layer.forward(hs, a)

    def backward(self, dc):
        dhs_sum, da = self.sum_layer.backward(dc)
        dhs_weight, dh = self.weight_layer.backward(da)
        return dhs_sum + dhs_weight, dh


class TimeAttention:
    """Attention for every decoder step at once.

    ``forward(hs_enc: (N, Te, H), hs_dec: (N, Td, H)) -> cs: (N, Td, H)``, where ``cs[:, t]``
    is the context for decoder state ``hs_dec[:, t]``. The weights are kept in
    ``.attention_weights: (N, Td, Te)`` (``[n]`` is example n's map, decoder step by encoder step).
    ``backward(dcs: (N, Td, H)) -> (dhs_enc: (N, Te, H), dhs_dec: (N, Td, H))``

    Equal to running ``Attention`` at each decoder step and summing the encoder gradients.
    """

    def __init__(self):
        self.params, self.grads = [], []
        self.attention_weights = None
        self._cache = None

    def forward(self, hs_enc, hs_dec):
        _check_states("TimeAttention", hs_enc, "hs_enc", softmax_over=True)
        N, Te, H = hs_enc.shape
        check_input("TimeAttention", hs_dec, (N, None, H), hs_enc.dtype, "hs_dec")
        enc_T = hs_enc.transpose(0, 2, 1)  # (N, H, Te)
        a = softmax(np.matmul(hs_dec, enc_T))  # (N, Td, Te)
        self.attention_weights = a
        self._cache = (hs_enc, hs_dec, a)
        return np.matmul(a, hs_enc)

    def backward(self, dcs):
        if self._cache is None:
            raise RuntimeError("TimeAttention: backward called before forward")
        hs_enc, hs_dec, a = self._cache
        check_input("TimeAttention", dcs, hs_dec.shape, hs_enc.dtype, "dcs")
        # cs = a @ hs_enc
        da = np.matmul(dcs, hs_enc.transpose(0, 2, 1))
        dhs_enc = np.matmul(a.transpose(0, 2, 1), dcs)
        # scores = hs_dec @ hs_enc^T
        ds = softmax_backward(a, da)
        dhs_dec = np.matmul(ds, hs_enc)
        dhs_enc += np.matmul(ds.transpose(0, 2, 1), hs_dec)
        return dhs_enc, dhs_dec
