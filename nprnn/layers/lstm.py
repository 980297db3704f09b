"""LSTM: the single-step cell ``LSTM`` and the sequence layer ``TimeLSTM``.

    a      = x @ Wx + h_prev @ Wh + b            (N, 4H), four gate blocks side by side
    f, i, o = sigmoid(a_f), sigmoid(a_i), sigmoid(a_o)
    g      = tanh(a_g)
    c_next = f * c_prev + i * g
    h_next = o * tanh(c_next)

Shapes: ``Wx: (D, 4H)``, ``Wh: (H, 4H)``, ``b: (4H,)``; ``x: (N, D)``, ``h, c: (N, H)``;
sequences are batch-first, ``xs: (N, T, D)`` -> ``hs: (N, T, H)``.

Gate layout: the textbook's, **f, g, i, o** (forget, candidate, input, output), i.e. columns
``[0:H]`` = f, ``[H:2H]`` = g, ``[2H:3H]`` = i, ``[3H:4H]`` = o, so weights trained with the
textbook's code load unchanged. PyTorch stacks the gates as **i, f, g, o** and stores the
transpose: ``weight_ih_l0 = Wx[:, cols].T``, ``weight_hh_l0 = Wh[:, cols].T`` and
``bias_ih_l0 + bias_hh_l0 = b[cols]`` with ``cols`` = our blocks (i, f, g, o) = (2, 0, 1, 3).
"""

import numpy as np

from nprnn import accel
from nprnn._checks import check_input
from nprnn.layers._recurrent import Cell, TimeRecurrent, init_params, sigmoid

GATES = ("f", "g", "i", "o")


def init_lstm_params(D, H, seed=0, dtype=np.float32):
    """Initial ``[Wx, Wh, b]`` as in the textbook: ``randn / sqrt(fan_in)``, zero bias (gates f, g, i, o)."""
    return init_params(D, H, 4, seed, dtype)


class LSTM(Cell):
    """One time step of an LSTM; the readable reference for ``TimeLSTM``.

    Weights: ``LSTM(*init_lstm_params(D, H, seed=0))`` (``Wx: (D, 4H)``, ``Wh: (H, 4H)``, ``b: (4H,)``,
    gates f, g, i, o as in the textbook).

    ``forward(x: (N, D), h_prev: (N, H), c_prev: (N, H)) -> (h_next: (N, H), c_next: (N, H))``
    ``backward(dh_next: (N, H), dc_next: (N, H)) -> (dx: (N, D), dh_prev: (N, H), dc_prev: (N, H))``,
    writing ``dWx, dWh, db`` into ``grads`` in place.
    """

    BLOCKS = GATES

    def __init__(self, Wx, Wh, b):
        super().__init__(Wx, Wh, b)

    def forward(self, x, h_prev, c_prev):
        Wx, Wh, b = self.params
        H = self.H
        check_input("LSTM", x, (None, self.D), self.dtype, "x")
        check_input("LSTM", h_prev, (x.shape[0], H), self.dtype, "h_prev")
        check_input("LSTM", c_prev, (x.shape[0], H), self.dtype, "c_prev")
        a = x @ Wx + h_prev @ Wh + b
        f = sigmoid(a[:, :H])
        g = np.tanh(a[:, H : 2 * H])
        i = sigmoid(a[:, 2 * H : 3 * H])
        o = sigmoid(a[:, 3 * H :])
        c_next = f * c_prev + i * g
        tanh_c = np.tanh(c_next)
        h_next = o * tanh_c
        self.cache = (x, h_prev, c_prev, f, g, i, o, tanh_c)
        return h_next, c_next

    def backward(self, dh_next, dc_next):
        if self.cache is None:
            raise RuntimeError("LSTM: backward called before forward")
        Wx, Wh, b = self.params
        x, h_prev, c_prev, f, g, i, o, tanh_c = self.cache
        check_input("LSTM", dh_next, h_prev.shape, self.dtype, "dh_next")
        check_input("LSTM", dc_next, h_prev.shape, self.dtype, "dc_next")
        # c_next feeds the next step directly and through h_next = o * tanh(c_next).
        dc = dc_next + dh_next * o * (1 - tanh_c**2)
        df = dc * c_prev * f * (1 - f)
        dg = dc * i * (1 - g**2)
        di = dc * g * i * (1 - i)
        do = dh_next * tanh_c * o * (1 - o)
        da = np.hstack([df, dg, di, do])
        self.grads[0][...] = x.T @ da
        self.grads[1][...] = h_prev.T @ da
        self.grads[2][...] = da.sum(axis=0)
        return da @ Wx.T, da @ Wh.T, dc * f


class TimeLSTM(TimeRecurrent):
    """An LSTM over whole sequences, with truncated BPTT.

    Weights: ``TimeLSTM(*init_lstm_params(D, H, seed=0), stateful=True)`` (``Wx: (D, 4H)``, ``Wh: (H, 4H)``,
    ``b: (4H,)``, gates f, g, i, o; ``init_lstm_params`` is in ``nprnn.layers``), or arrays of your own.

    ``forward(xs: (N, T, D), h0: (N, H) | None, c0: (N, H) | None, *, lengths: (N,) | None,
    step_bias: (N, 4H) | None) -> hs: (N, T, H)``
    ``backward(dhs: (N, T, H), dh_final: (N, H) | None, dc_final: (N, H) | None) -> dxs: (N, T, D)``

    State: ``.h`` and ``.c`` are the final hidden and cell states ``(N, H)`` of the last
    ``forward`` (with ``lengths``, each row's states at its last real step). Each initial
    state of a ``forward`` is ``h0`` / ``c0`` if given, else the carried ``.h`` / ``.c`` when
    ``stateful``, else zeros (``set_state(h)`` without ``c`` carries a zero cell state). No
    gradient flows across ``forward`` calls (truncated BPTT); the gradients w.r.t. the
    initial states are left in ``.dh`` and ``.dc``. ``dh_final`` / ``dc_final`` are extra
    gradients flowing into the final states (e.g. from a decoder that starts from them).

    ``lengths`` makes a padded batch behave as if each sequence ran alone: past its
    length a row's states stop updating, its outputs are zero and get no gradient.

    ``step_bias`` is added to every step's pre-activations of its row, like ``b`` but per
    sequence: the projection of an input that is the same at every step (a peeky decoder's
    encoder state, ``h_enc @ Wx_peek``), computed once instead of T times; its gradient, summed
    over the steps, is left in ``.dstep_bias``.

    The fast path (one input projection for all steps, only ``h @ Wh`` and the elementwise work
    in the time loop): ``TimeRecurrent``.
    """

    BLOCKS = GATES

    def __init__(self, Wx, Wh, b, stateful=False):
        super().__init__(Wx, Wh, b, stateful=stateful)
        self.c = None
        self.dc = None
        self.dstep_bias = None
        # sigmoid(a) = 0.5 * tanh(a / 2) + 0.5. Halving the f, i, o columns of the pre-activation
        # (exact: a power of two) lets a single tanh cover all four gates, which are not contiguous
        # in the f, g, i, o layout; `* half + half` then turns the f, i, o blocks into sigmoids.
        H = self.H
        self._half = np.full(4 * H, 0.5, dtype=self.dtype)  # 0.5 on f, i, o; 1 on g
        self._half[H : 2 * H] = 1
        self._shift = np.full(4 * H, 0.5, dtype=self.dtype)  # 0.5 on f, i, o; 0 on g
        self._shift[H : 2 * H] = 0

    def set_state(self, h, c=None):
        check_input("TimeLSTM", h, (None, self.H), self.dtype, "state h")
        if c is not None:
            check_input("TimeLSTM", c, h.shape, self.dtype, "state c")
        self.h, self.c = h, c

    def reset_state(self):
        self.h = self.c = None

    def forward(self, xs, h0=None, c0=None, *, lengths=None, step_bias=None):
        N, T, xs2, dead, steps = self._begin_forward(xs, lengths)
        if step_bias is not None:
            check_input("TimeLSTM", step_bias, (N, 4 * self.H), self.dtype, "step_bias")
        H, half = self.H, self._half

        # cs_all[0] is the initial cell state, cs_all[t + 1] the cell state after step t.
        hs_all = np.empty((T + 1, N, H), dtype=self.dtype)
        cs_all = np.empty((T + 1, N, H), dtype=self.dtype)
        hs_all[0] = self._initial_state(N, h0, self.h, "h0")
        cs_all[0] = self._initial_state(N, c0, self.c, "c0")
        tanh_cs = np.empty((T, N, H), dtype=self.dtype)
        with self._blas_threads(N, T):
            # All input projections at once; gates[t] then becomes step t's gate activations in place.
            gates = self._input_projection(xs2, half).reshape(T, N, 4 * H)
            self._forward_loop(gates, step_bias, hs_all, cs_all, tanh_cs, steps, dead)

        self.c = cs_all[T].copy()
        cache = (xs2, hs_all, cs_all, gates, tanh_cs, steps, dead, step_bias is not None)
        return self._end_forward(hs_all, dead, cache)

    def backward(self, dhs, dh_final=None, dc_final=None):
        dh_final, dc_final = self._begin_backward(dhs, dh_final=dh_final, dc_final=dc_final)
        xs2, hs_all, cs_all, gates, tanh_cs, steps, dead, has_step_bias = self._cache
        N, T = self._batch
        with self._blas_threads(N, T):
            if accel.kernels() is not None:
                dA, dh, dc = self._backward_loop_kernels(dhs, dh_final, dc_final, steps)
            else:
                dA, dh, dc = self._backward_loop(dhs, dh_final, dc_final, dead)
            dxs = self._shared_gradients(xs2, hs_all, dA)
        self.dh, self.dc = dh, dc
        self.dstep_bias = dA.sum(axis=0) if has_step_bias else None
        return dxs

    def _forward_loop(self, gates, step_bias, hs_all, cs_all, tanh_cs, steps, dead):
        """The time loop of forward: ``gates[t]`` holds step t's input projection (``_input_projection``)
        on entry and its gate activations on exit."""
        T, N, H4 = gates.shape
        H, b, half, shift = self.H, self.params[2], self._half, self._shift
        kernels = accel.kernels()
        if kernels is not None:  # the packed product, then all of the step's elementwise work in one call
            product = kernels.recurrent_product(self.params[1], N, scale=half)
            bias = b[None, :] if step_bias is None else b + step_bias
            kernels.lstm_forward(gates, bias, hs_all, cs_all, tanh_cs, steps, product)
            return
        if step_bias is not None:
            gates += step_bias * half
        Wh_half = self.params[1] * half
        rec = np.empty((N, H4), dtype=self.dtype)
        ig = np.empty((N, H), dtype=self.dtype)
        for t in range(T):
            a = gates[t]
            np.matmul(hs_all[t], Wh_half, out=rec)
            a += rec
            np.tanh(a, out=a)
            a *= half
            a += shift
            f, g, i, o = a[:, :H], a[:, H : 2 * H], a[:, 2 * H : 3 * H], a[:, 3 * H :]
            c = cs_all[t + 1]
            np.multiply(f, cs_all[t], out=c)
            np.multiply(i, g, out=ig)
            c += ig
            np.tanh(c, out=tanh_cs[t])
            np.multiply(o, tanh_cs[t], out=hs_all[t + 1])
            if dead is not None:  # finished rows keep their last states
                np.copyto(hs_all[t + 1], hs_all[t], where=dead[t][:, None])
                np.copyto(c, cs_all[t], where=dead[t][:, None])

    def _backward_loop(self, dhs, dh_final, dc_final, dead):
        """The time loop of backward in NumPy: returns ``dA: (T, N, 4H)``, the gradients of the
        pre-activations, and the gradients w.r.t. the initial states."""
        _, hs_all, cs_all, gates, tanh_cs, *_ = self._cache
        T, N, H = gates.shape[0], gates.shape[1], self.H
        # Everything that does not depend on the incoming gradient is computed for all steps at
        # once. With dc = dc_next + dh * c_from_h the gradient into c_t, the pre-activation
        # gradient of step t is da = [dc * c_prev f', dc * i g', dc * g i', dh * tanh(c) o'];
        # da starts as those factors and the loop multiplies dc / dh in place.
        f, g, i, o = (gates[..., k * H : (k + 1) * H] for k in range(4))
        dA = np.empty((T, N, 4 * H), dtype=self.dtype)
        dA[..., :H] = cs_all[:-1] * f * (1 - f)
        dA[..., H : 2 * H] = i * (1 - g * g)
        dA[..., 2 * H : 3 * H] = g * i * (1 - i)
        dA[..., 3 * H :] = tanh_cs * o * (1 - o)
        c_from_h = o * (1 - tanh_cs * tanh_cs)  # d h_t / d c_t
        forget = f
        if dead is not None:  # padded steps: no gate gradient, dc passes through unchanged
            dA[dead] = 0
            c_from_h[dead] = 0
            forget = np.where(dead[:, :, None], 1, f).astype(self.dtype, copy=False)

        dh = dh_final.copy()  # gradient into h_t from step t + 1
        dc = dc_final.copy()
        dh_total = np.empty((N, H), dtype=self.dtype)
        scratch = np.empty((N, H), dtype=self.dtype)
        WhT = np.ascontiguousarray(self.params[1].T)  # measured 2x faster per step than the transposed view
        for t in range(T - 1, -1, -1):
            np.add(dhs[:, t], dh, out=dh_total)
            np.multiply(dh_total, c_from_h[t], out=scratch)
            dc += scratch
            da = dA[t]
            da_fgi = da.reshape(N, 4, H)[:, :3]
            np.multiply(da_fgi, dc[:, None, :], out=da_fgi)
            np.multiply(da[:, 3 * H :], dh_total, out=da[:, 3 * H :])
            dc *= forget[t]
            np.matmul(da, WhT, out=dh_total)  # becomes the gradient into h_{t-1}
            if dead is not None:  # a finished row's state was copied, so is its gradient
                np.copyto(dh_total, dh, where=dead[t][:, None])
            dh, dh_total = dh_total, dh
        return dA, dh, dc

    def _backward_loop_kernels(self, dhs, dh_final, dc_final, steps):
        """The same loop with a fused kernel per step (``nprnn.accel``)."""
        _, hs_all, cs_all, gates, tanh_cs, *_ = self._cache
        T, N, H = gates.shape[0], gates.shape[1], self.H
        kernels = accel.kernels()
        dhs = np.ascontiguousarray(dhs)
        dA = np.empty((T, N, 4 * H), dtype=self.dtype)
        dc = dc_final.copy()
        product = kernels.recurrent_product(self.params[1].T, N)
        dh = kernels.lstm_backward(dA, dc, dhs, dh_final, gates, cs_all, tanh_cs, steps, product)
        return dA, dh, dc
