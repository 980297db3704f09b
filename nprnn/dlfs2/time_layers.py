"""The textbook's ``common/time_layers.py`` (and ch08's attention layers) on nprnn's fast time layers.

Same constructors, attributes and behaviour as the book's classes:

- ``RNN``, ``LSTM``: the one-step cells (nprnn's, which have the book's interface).
- ``TimeRNN(Wx, Wh, b, stateful=False)``, ``TimeLSTM(...)``: nprnn's fast layers (one input projection for
  all steps, preallocated time-major buffers, weight gradients as single products), with the book's
  ``forward(xs)``, ``backward(dhs)``, ``h``, ``c``, ``dh``, ``set_state(h, c=None)``, ``reset_state()``.
  Inputs of another float dtype than the weights are converted, as the book's float32 buffers do.
- ``GRU(Wx, Wh, b)``, ``TimeGRU(Wx, Wh, b, stateful=False)``: the book's GRU, gates z, r, h side by side,
  ``h = (1 - z) * h_prev + z * tanh(x Wx_h + (r * h_prev) Wh_h + b_h)`` (the reset gate before the
  recurrent product; nprnn's ``TimeGRU`` is PyTorch's, a different model). ``TimeGRU`` is written like
  nprnn's time layers: one input projection, two small products per step, weight gradients after the loop.
- ``TimeEmbedding(W)`` (``.W``), ``TimeAffine(W, b)``, ``TimeSoftmaxWithLoss()`` (``ignore_label = -1``,
  labels ``(N, T)`` or one-hot ``(N, T, V)`` targets), ``TimeDropout(dropout_ratio=0.5)`` (``train_flg``,
  masks drawn from the global ``np.random`` exactly as the book draws them), ``TimeBiLSTM``,
  ``TimeSigmoidWithLoss``, ``Simple_TimeSoftmaxWithLoss``, ``Simple_TimeAffine``.
- ``AttentionWeight``, ``WeightSum``, ``Attention``, ``TimeAttention``: ch08's ``attention_layer`` (not in
  ``common``, provided here so ch08 runs fast too). ``TimeAttention`` runs all decoder steps as batched
  products and keeps ``attention_weights`` as the book's list of ``(N, T_enc)`` arrays, one per decoder step.

Also bound here, as the book's ``from common.layers import *`` binds them: ``np``, ``GPU`` and the names of
``nprnn.dlfs2.layers`` and ``nprnn.dlfs2.functions``, so ``from nprnn.dlfs2.time_layers import *`` gives a
model file everything ``from common.time_layers import *`` gives it.
"""

from nprnn import accel
from nprnn.dlfs2.config import GPU
from nprnn.dlfs2.functions import cross_entropy_error, sigmoid, softmax
from nprnn.dlfs2.layers import (
    Affine,
    Dropout,
    Embedding,
    MatMul,
    Sigmoid,
    SigmoidWithLoss,
    Softmax,
    SoftmaxWithLoss,
    embedding_grad,
)
from nprnn.dlfs2.np import np
from nprnn.layers import LSTM, RNN
from nprnn.layers import TimeAffine as _TimeAffine
from nprnn.layers import TimeLSTM as _TimeLSTM
from nprnn.layers import TimeRNN as _TimeRNN
from nprnn.layers import attention as _attention
from nprnn.layers.basic import softmax_rows

__all__ = [
    "RNN", "TimeRNN", "LSTM", "TimeLSTM", "GRU", "TimeGRU", "TimeEmbedding", "TimeAffine",
    "TimeSoftmaxWithLoss", "TimeDropout", "TimeBiLSTM", "TimeSigmoidWithLoss",
    "Simple_TimeSoftmaxWithLoss", "Simple_TimeAffine",
    "AttentionWeight", "WeightSum", "Attention", "TimeAttention",
    # what the book's star imports bind in common.time_layers
    "MatMul", "Affine", "Softmax", "SoftmaxWithLoss", "Sigmoid", "SigmoidWithLoss", "Dropout", "Embedding",
    "np", "GPU", "softmax", "sigmoid", "cross_entropy_error",
]  # fmt: skip


def _like(a, dtype):
    """``a`` as an ndarray of ``dtype`` (no copy if it already is one)."""
    a = np.asarray(a)
    return a if a.dtype == dtype else a.astype(dtype)


# ---------------------------------------------------------------- RNN and LSTM: nprnn's fast layers


class TimeRNN(_TimeRNN):
    """nprnn's ``TimeRNN`` with the book's call signatures (see the module docstring)."""

    def forward(self, xs):
        return super().forward(_like(xs, self.dtype))

    def backward(self, dhs):
        return super().backward(_like(dhs, self.dtype))

    def set_state(self, h):
        super().set_state(_like(h, self.dtype))


class TimeLSTM(_TimeLSTM):
    """nprnn's ``TimeLSTM`` (gates f, g, i, o, as the book's) with the book's call signatures."""

    def forward(self, xs):
        return super().forward(_like(xs, self.dtype))

    def backward(self, dhs):
        return super().backward(_like(dhs, self.dtype))

    def set_state(self, h, c=None):
        super().set_state(_like(h, self.dtype), None if c is None else _like(c, self.dtype))


# ---------------------------------------------------------------- the book's GRU


def _gru_check(Wx, Wh, b):
    H = Wh.shape[0]
    if Wx.ndim != 2 or Wh.shape != (H, 3 * H) or Wx.shape[1] != 3 * H or b.shape != (3 * H,):
        raise ValueError(
            f"GRU: expected Wx (D, 3H), Wh (H, 3H), b (3H,) with gates z, r, h side by side, "
            f"got {Wx.shape}, {Wh.shape}, {b.shape}"
        )
    return Wx.shape[0], H


class GRU:
    """One step of the book's GRU (gates z, r, h):

        z = sigmoid(x Wx_z + h_prev Wh_z + b_z)
        r = sigmoid(x Wx_r + h_prev Wh_r + b_r)
        h_hat = tanh(x Wx_h + (r * h_prev) Wh_h + b_h)
        h_next = (1 - z) * h_prev + z * h_hat

    ``forward(x: (N, D), h_prev: (N, H)) -> h_next``; ``backward(dh_next) -> (dx, dh_prev)``, writing
    ``dWx, dWh, db`` into ``grads`` in place (and keeping them in ``dWx``, ``dWh``, ``db`` as the book does).
    """

    def __init__(self, Wx, Wh, b):
        _gru_check(Wx, Wh, b)
        self.params = [Wx, Wh, b]
        self.grads = [np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(b)]
        self.cache = None

    def forward(self, x, h_prev):
        Wx, Wh, b = self.params
        H = Wh.shape[0]
        xw = np.dot(x, Wx) + b
        zr = sigmoid(xw[:, : 2 * H] + np.dot(h_prev, Wh[:, : 2 * H]))
        z, r = zr[:, :H], zr[:, H:]
        h_hat = np.tanh(xw[:, 2 * H :] + np.dot(r * h_prev, Wh[:, 2 * H :]))
        h_next = (1 - z) * h_prev + z * h_hat
        self.cache = (x, h_prev, z, r, h_hat)
        return h_next

    def backward(self, dh_next):
        Wx, Wh, b = self.params
        H = Wh.shape[0]
        x, h_prev, z, r, h_hat = self.cache
        dt = dh_next * z * (1 - h_hat**2)  # through tanh
        dhr = np.dot(dt, Wh[:, 2 * H :].T)  # gradient into r * h_prev
        dz = dh_next * (h_hat - h_prev) * z * (1 - z)
        dr = dhr * h_prev * r * (1 - r)
        dzr = np.hstack((dz, dr))
        dh_prev = dh_next * (1 - z) + r * dhr + np.dot(dzr, Wh[:, : 2 * H].T)
        dA = np.hstack((dzr, dt))
        dx = np.dot(dA, Wx.T)
        self.dWx = np.dot(x.T, dA)
        self.dWh = np.hstack((np.dot(h_prev.T, dzr), np.dot((r * h_prev).T, dt)))
        self.db = dA.sum(axis=0)
        self.grads[0][...] = self.dWx
        self.grads[1][...] = self.dWh
        self.grads[2][...] = self.db
        return dx, dh_prev


class TimeGRU:
    """The book's GRU over whole sequences: ``forward(xs: (N, T, D)) -> hs: (N, T, H)``,
    ``backward(dhs) -> dxs``; ``h``, ``dh``, ``stateful``, ``set_state(h)``, ``reset_state()`` as the book's.

    Fast path: the input projections of all T steps are one product; each step does ``h @ Wh_zr`` and
    ``(r h) @ Wh_h`` and the gate math into preallocated time-major buffers; backward precomputes every
    factor that does not depend on the incoming gradient and forms the weight gradients after the loop.
    """

    def __init__(self, Wx, Wh, b, stateful=False):
        self.D, self.H = _gru_check(Wx, Wh, b)
        self.params = [Wx, Wh, b]
        self.grads = [np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(b)]
        self.dtype = Wx.dtype
        self.h, self.dh = None, None
        self.stateful = stateful
        self._cache = None

    def set_state(self, h):
        self.h = h

    def reset_state(self):
        self.h = None

    def forward(self, xs):
        Wx, Wh, b = self.params
        xs = _like(xs, self.dtype)
        N, T, D = xs.shape
        H = self.H
        if xs.shape[2] != self.D:
            raise ValueError(f"TimeGRU: xs must have shape (N, T, {self.D}), got {xs.shape}")
        hs_all = np.empty((T + 1, N, H), dtype=self.dtype)  # hs_all[t] = h before step t
        if self.stateful and self.h is not None:
            hs_all[0] = self.h
        else:
            hs_all[0] = 0
        rh = np.empty((T, N, H), dtype=self.dtype)  # r * h_prev of each step
        xs_tm = xs.transpose(1, 0, 2).reshape(T * N, D)
        Wh_zr, Wh_h = np.ascontiguousarray(Wh[:, : 2 * H]), np.ascontiguousarray(Wh[:, 2 * H :])
        with accel.threads_for_time_layer(N, T, D, H, 3):
            gates = (xs_tm @ Wx).reshape(T, N, 3 * H)  # becomes z, r, h_hat of every step
            gates += b
            zr_rec = np.empty((N, 2 * H), dtype=self.dtype)
            h_rec = np.empty((N, H), dtype=self.dtype)
            scratch = np.empty((N, H), dtype=self.dtype)
            for t in range(T):
                h_prev, a = hs_all[t], gates[t]
                zr = a[:, : 2 * H]
                np.matmul(h_prev, Wh_zr, out=zr_rec)
                zr += zr_rec
                np.negative(zr, out=zr)  # sigmoid = 1 / (1 + exp(-a)), in place
                with np.errstate(over="ignore"):
                    np.exp(zr, out=zr)
                zr += 1
                np.reciprocal(zr, out=zr)
                z, r = a[:, :H], a[:, H : 2 * H]
                np.multiply(r, h_prev, out=rh[t])
                hh = a[:, 2 * H :]
                np.matmul(rh[t], Wh_h, out=h_rec)
                hh += h_rec
                np.tanh(hh, out=hh)
                h = hs_all[t + 1]  # (1 - z) * h_prev + z * h_hat
                np.subtract(1, z, out=h)
                h *= h_prev
                np.multiply(z, hh, out=scratch)
                h += scratch
        self.h = hs_all[T].copy()
        self._cache = (xs_tm, hs_all, rh, gates, (N, T))
        return np.ascontiguousarray(hs_all[1:].transpose(1, 0, 2))

    def backward(self, dhs):
        if self._cache is None:
            raise RuntimeError("TimeGRU: backward called before forward")
        Wx, Wh, b = self.params
        xs_tm, hs_all, rh, gates, (N, T) = self._cache
        H = self.H
        dhs = _like(dhs, self.dtype)
        if dhs.shape != (N, T, H):
            raise ValueError(f"TimeGRU: dhs must have shape {(N, T, H)}, got {dhs.shape}")
        z, r, hh = gates[..., :H], gates[..., H : 2 * H], gates[..., 2 * H :]
        h_prev = hs_all[:-1]
        # dA[t] = [dz', dr', dt] (pre-activation gradients); the factors that do not depend on dh first.
        dA = np.empty((T, N, 3 * H), dtype=self.dtype)
        dA[..., :H] = (hh - h_prev) * z * (1 - z)
        dA[..., H : 2 * H] = h_prev * r * (1 - r)
        dA[..., 2 * H :] = z * (1 - hh * hh)
        keep = 1 - z  # d h_next / d h_prev, directly
        Wh_zrT = np.ascontiguousarray(Wh[:, : 2 * H].T)
        Wh_hT = np.ascontiguousarray(Wh[:, 2 * H :].T)
        dh = np.zeros((N, H), dtype=self.dtype)  # gradient into h_t from step t + 1
        total = np.empty((N, H), dtype=self.dtype)
        dhr = np.empty((N, H), dtype=self.dtype)
        rec = np.empty((N, H), dtype=self.dtype)
        with accel.threads_for_time_layer(N, T, self.D, H, 3):
            for t in range(T - 1, -1, -1):
                np.add(dhs[:, t], dh, out=total)
                da = dA[t]
                da[:, :H] *= total
                da[:, 2 * H :] *= total
                np.matmul(da[:, 2 * H :], Wh_hT, out=dhr)
                da[:, H : 2 * H] *= dhr
                np.multiply(total, keep[t], out=dh)
                dhr *= r[t]
                dh += dhr
                np.matmul(da[:, : 2 * H], Wh_zrT, out=rec)
                dh += rec
            dA2 = dA.reshape(T * N, 3 * H)
            self.grads[0][...] = xs_tm.T @ dA2
            self.grads[1][:, : 2 * H] = h_prev.reshape(T * N, H).T @ dA2[:, : 2 * H]
            self.grads[1][:, 2 * H :] = rh.reshape(T * N, H).T @ dA2[:, 2 * H :]
            self.grads[2][...] = dA2.sum(axis=0)
            dxs = (dA2 @ Wx.T).reshape(T, N, self.D).transpose(1, 0, 2)
        self.dh = dh
        return np.ascontiguousarray(dxs)


# ---------------------------------------------------------------- embedding, affine, loss, dropout


class TimeEmbedding:
    """``W[xs]`` at every position: ``forward(xs: (N, T) ids) -> (N, T, D)``; ``backward(dout) -> None``
    with ``dW`` (the rows of repeated ids summed) in ``grads[0]``. ``W`` is ``params[0]``."""

    def __init__(self, W):
        self.params = [W]
        self.grads = [np.zeros_like(W)]
        self.W = W
        self.idx = None

    def forward(self, xs):
        self.idx = xs
        return self.W[xs]

    def backward(self, dout):
        if self.idx is None:
            raise RuntimeError("TimeEmbedding: backward called before forward")
        embedding_grad(self.grads[0], self.idx, dout)
        return None


class TimeAffine(_TimeAffine):
    """nprnn's ``TimeAffine`` (one product over all N T positions): ``forward(x: (N, T, D)) -> (N, T, V)``;
    ``.x`` is the last input, as in the book."""

    def forward(self, x):
        return super().forward(_like(x, self.dtype))

    def backward(self, dout):
        return super().backward(_like(dout, self.dtype))

    @property
    def x(self):
        return self.xs


class TimeSoftmaxWithLoss:
    """Softmax and cross-entropy at every position, averaged over those whose label is not ``ignore_label``.

    ``forward(xs: (N, T, V), ts) -> loss``, ``ts`` the labels ``(N, T)`` or one-hot ``(N, T, V)``;
    ``backward(dout=1) -> dxs: (N, T, V)``, zero at ignored positions. The same loss as the book's, in fewer
    passes over the ``(N T, V)`` scores: the loss is ``log(sum(exp(s - max))) - (s_t - max)`` (no log of an
    underflowed probability), and backward scales the kept exponentials in place.
    """

    def __init__(self):
        self.params, self.grads = [], []
        self.cache = None
        self.ignore_label = -1

    def forward(self, xs, ts):
        N, T, V = xs.shape
        ts = np.asarray(ts)
        if ts.ndim == 3:  # one-hot targets
            ts = ts.argmax(axis=2)
        ts = ts.reshape(N * T)
        mask = ts != self.ignore_label
        n = int(np.count_nonzero(mask))
        all_counted = n == N * T
        targets = ts if all_counted else np.where(mask, ts, 0)
        scores = xs.reshape(N * T, V)
        e = np.empty(scores.shape, dtype=scores.dtype)
        picked = np.empty(N * T, dtype=scores.dtype)
        sums = np.empty(N * T, dtype=scores.dtype)
        ones = np.ones(V, dtype=scores.dtype)

        def rows(lo, hi):
            block = e[lo:hi]
            np.subtract(scores[lo:hi], scores[lo:hi].max(axis=1, keepdims=True), out=block)
            picked[lo:hi] = block[np.arange(hi - lo), targets[lo:hi]]
            np.exp(block, out=block)
            np.matmul(block, ones, out=sums[lo:hi])  # a BLAS gemv: about 2x faster than block.sum(axis=1)

        # BLAS on the calling thread: a gemv this large would wake OpenBLAS's threads, which then spin for
        # ~0.1 s against the numba kernels that come next (Rnnlm took 110 ms an iteration instead of 80)
        with accel.one_thread():
            softmax_rows(rows, N * T, scores.size)
        losses = np.log(sums) - picked
        if not all_counted:
            losses *= mask
        loss = losses.sum(dtype=np.float64) / n if n else 0.0
        self.cache = (targets, e, sums, mask, n, (N, T, V))
        return loss

    def backward(self, dout=1):
        if self.cache is None:
            raise RuntimeError("TimeSoftmaxWithLoss: backward called before forward")
        targets, e, sums, mask, n, shape = self.cache
        scale = dout / n if n else 0.0
        counted_all = n == len(sums)
        row_scale = (scale / sums).astype(e.dtype, copy=False)
        if not counted_all:
            row_scale *= mask
        dx = e  # softmax * scale, in place: this buffer is ours and used once

        def rows(lo, hi):
            dx[lo:hi] *= row_scale[lo:hi, None]

        softmax_rows(rows, len(sums), dx.size)
        dx[np.arange(len(sums)), targets] -= e.dtype.type(scale) if counted_all else (scale * mask).astype(e.dtype)
        self.cache = None
        return dx.reshape(shape)


class TimeDropout:
    """The book's (inverted) dropout: with ``train_flg`` true, ``mask = (np.random.rand(*xs.shape) > ratio)
    / (1 - ratio)`` in float32, drawn from the global ``np.random`` (so ``np.random.seed`` replays it);
    with ``train_flg = False`` the identity."""

    def __init__(self, dropout_ratio=0.5):
        self.params, self.grads = [], []
        self.dropout_ratio = dropout_ratio
        self.mask = None
        self.train_flg = True

    def forward(self, xs):
        if not self.train_flg:
            return xs
        keep = np.random.rand(*xs.shape) > self.dropout_ratio
        scale = np.float32(1 / (1.0 - self.dropout_ratio))
        self.mask = np.multiply(keep, scale, dtype=np.float32)
        return xs * self.mask

    def backward(self, dout):
        return dout * self.mask


class TimeBiLSTM:
    """Two ``TimeLSTM``: one reads ``xs`` forward, the other backward; outputs ``(N, T, 2H)`` side by side."""

    def __init__(self, Wx1, Wh1, b1, Wx2, Wh2, b2, stateful=False):
        self.forward_lstm = TimeLSTM(Wx1, Wh1, b1, stateful)
        self.backward_lstm = TimeLSTM(Wx2, Wh2, b2, stateful)
        self.params = self.forward_lstm.params + self.backward_lstm.params
        self.grads = self.forward_lstm.grads + self.backward_lstm.grads

    def forward(self, xs):
        o1 = self.forward_lstm.forward(xs)
        o2 = self.backward_lstm.forward(xs[:, ::-1])[:, ::-1]
        return np.concatenate((o1, o2), axis=2)

    def backward(self, dhs):
        H = dhs.shape[2] // 2
        dxs1 = self.forward_lstm.backward(dhs[:, :, :H])
        dxs2 = self.backward_lstm.backward(dhs[:, :, H:][:, ::-1])
        return dxs1 + dxs2[:, ::-1]


class TimeSigmoidWithLoss:
    """Sigmoid and binary cross-entropy at every position of ``xs: (N, T)`` with 0/1 labels ``ts: (N, T)``:
    the mean over N and T of ``-log(p + 1e-7)`` (``p`` the probability of the label), as the book's."""

    def __init__(self):
        self.params, self.grads = [], []
        self.xs_shape = None
        self.cache = None

    def forward(self, xs, ts):
        N, T = xs.shape
        self.xs_shape = xs.shape
        ys = sigmoid(xs)
        ts = np.asarray(ts)
        p = np.where(ts.astype(bool), ys, 1 - ys)
        self.cache = (ys, ts)
        return -np.sum(np.log(p + 1e-7)) / (N * T)

    def backward(self, dout=1):
        ys, ts = self.cache
        N, T = self.xs_shape
        return ((ys - ts) * (dout / (N * T))).astype(np.float32)


class Simple_TimeSoftmaxWithLoss:
    """The book's step-by-step variant: ``SoftmaxWithLoss`` (with its ``+ 1e-7`` in the log) at every time
    step, averaged over T; no ignore label. Computed for all steps at once."""

    def __init__(self):
        self.params, self.grads = [], []
        self.cache = None

    def forward(self, xs, ts):
        N, T, V = xs.shape
        ts = np.asarray(ts)
        if ts.size == xs.size:  # one-hot targets
            ts = ts.argmax(axis=2)
        ys = softmax(xs.reshape(N * T, V))
        ts = ts.reshape(N * T)
        loss = -np.sum(np.log(ys[np.arange(N * T), ts] + 1e-7)) / (N * T)
        self.cache = (ys, ts, xs.shape)
        return loss

    def backward(self, dout=1):
        ys, ts, (N, T, V) = self.cache
        dx = ys.copy()
        dx[np.arange(N * T), ts] -= 1
        dx *= dout / (N * T)
        return dx.reshape(N, T, V).astype(np.float32, copy=False)


class Simple_TimeAffine:
    """The book's variant without ``params`` / ``grads``: weights ``W``, ``b``, gradients ``dW``, ``db``."""

    def __init__(self, W, b):
        self.W, self.b = W, b
        self.dW, self.db = None, None
        self.x = None

    def forward(self, xs):
        N, T, D = xs.shape
        self.x = xs
        return (np.dot(xs.reshape(N * T, D), self.W) + self.b).reshape(N, T, -1)

    def backward(self, dout):
        N, T, D = self.x.shape
        dout2 = dout.reshape(N * T, -1)
        self.dW = np.dot(self.x.reshape(N * T, D).T, dout2)
        self.db = dout2.sum(axis=0)
        return np.dot(dout2, self.W.T).reshape(N, T, D)


# ---------------------------------------------------------------- attention (the book's ch08)


class AttentionWeight(_attention.AttentionWeight):
    """ch08's ``AttentionWeight``: ``forward(hs: (N, T, H), h: (N, H)) -> a: (N, T)``;
    ``backward(da) -> (dhs, dh)``."""


class WeightSum(_attention.WeightSum):
    """ch08's ``WeightSum``: ``forward(hs: (N, T, H), a: (N, T)) -> c: (N, H)``; ``backward(dc) -> (dhs, da)``."""


class Attention(_attention.Attention):
    """ch08's ``Attention`` (``attention_weight_layer``, ``weight_sum_layer``, ``attention_weight``)."""

    def __init__(self):
        super().__init__()
        self.attention_weight_layer = self.weight_layer
        self.weight_sum_layer = self.sum_layer


class TimeAttention(_attention.TimeAttention):
    """ch08's ``TimeAttention``: ``forward(hs_enc: (N, Te, H), hs_dec: (N, Td, H)) -> (N, Td, H)``,
    ``backward(dout) -> (dhs_enc, dhs_dec)``, computed for all decoder steps at once.
    ``attention_weights`` is the book's list: one ``(N, Te)`` array per decoder step."""

    def forward(self, hs_enc, hs_dec):
        out = super().forward(hs_enc, _like(hs_dec, hs_enc.dtype))
        weights = self.attention_weights  # (N, Td, Te)
        self.attention_weights = [weights[:, t] for t in range(weights.shape[1])]
        return out

    def backward(self, dout):
        return super().backward(_like(dout, self._cache[0].dtype))
