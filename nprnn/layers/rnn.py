"""Vanilla tanh RNN: the single-step cell ``RNN`` and the sequence layer ``TimeRNN``.

    h_next = tanh(h_prev @ Wh + x @ Wx + b)

Shapes: ``Wx: (D, H)``, ``Wh: (H, H)``, ``b: (H,)``; ``x: (N, D)``, ``h: (N, H)``;
sequences are batch-first, ``xs: (N, T, D)`` -> ``hs: (N, T, H)``.
"""

import numpy as np

from nprnn import accel
from nprnn._checks import check_input
from nprnn.layers._recurrent import Cell, TimeRecurrent, init_params


def init_rnn_params(D, H, seed=0, dtype=np.float32):
    """Xavier-style initial ``[Wx, Wh, b]`` as in the textbook: ``randn / sqrt(fan_in)``, zero bias."""
    return init_params(D, H, 1, seed, dtype)


class RNN(Cell):
    """One time step of a tanh RNN; the readable reference for ``TimeRNN``.

    Weights: ``RNN(*init_rnn_params(D, H, seed=0))`` (``Wx: (D, H)``, ``Wh: (H, H)``, ``b: (H,)``, float32;
    ``dtype=np.float64`` for float64), or arrays of your own of those shapes.

    ``forward(x: (N, D), h_prev: (N, H)) -> h_next: (N, H)``
    ``backward(dh_next: (N, H)) -> (dx: (N, D), dh_prev: (N, H))``, writing
    ``dWx, dWh, db`` into ``grads`` in place.
    """

    BLOCKS = ("h",)

    def __init__(self, Wx, Wh, b):
        super().__init__(Wx, Wh, b)

    def forward(self, x, h_prev):
        Wx, Wh, b = self.params
        check_input("RNN", x, (None, self.D), self.dtype, "x")
        check_input("RNN", h_prev, (x.shape[0], self.H), self.dtype, "h_prev")
        h_next = np.tanh(h_prev @ Wh + x @ Wx + b)
        self.cache = (x, h_prev, h_next)
        return h_next

    def backward(self, dh_next):
        if self.cache is None:
            raise RuntimeError("RNN: backward called before forward")
        Wx, Wh, b = self.params
        x, h_prev, h_next = self.cache
        check_input("RNN", dh_next, h_next.shape, self.dtype, "dh_next")
        da = dh_next * (1 - h_next**2)  # d tanh(a) / da = 1 - tanh(a)^2
        self.grads[0][...] = x.T @ da
        self.grads[1][...] = h_prev.T @ da
        self.grads[2][...] = da.sum(axis=0)
        return da @ Wx.T, da @ Wh.T


class TimeRNN(TimeRecurrent):
    """A tanh RNN over whole sequences, with truncated BPTT.

    Weights: ``TimeRNN(*init_rnn_params(D, H, seed=0), stateful=True)`` (``Wx: (D, H)``, ``Wh: (H, H)``,
    ``b: (H,)``; ``init_rnn_params`` is in ``nprnn.layers``), or arrays of your own of those shapes.

    ``forward(xs: (N, T, D), h0: (N, H) | None, lengths: (N,) | None) -> hs: (N, T, H)``
    ``backward(dhs: (N, T, H), dh_final: (N, H) | None) -> dxs: (N, T, D)``

    State: ``.h`` is the final hidden state ``(N, H)`` of the last ``forward``
    (with ``lengths``, each row's state at its last real step). The initial state of
    a ``forward`` is ``h0`` if given, else the carried ``.h`` when ``stateful``, else
    zeros. No gradient flows across ``forward`` calls (truncated BPTT); the gradient
    w.r.t. the initial state is left in ``.dh``. ``dh_final`` is an extra gradient
    flowing into the final state (e.g. from a decoder that starts from it).

    ``lengths`` makes a padded batch behave as if each sequence ran alone: past its
    length a row's state stops updating, its outputs are zero and get no gradient.

    The fast path (one input projection for all steps, only ``h @ Wh`` and the elementwise work
    in the time loop): ``TimeRecurrent``.
    """

    BLOCKS = ("h",)

    def __init__(self, Wx, Wh, b, stateful=False):
        super().__init__(Wx, Wh, b, stateful=stateful)

    def forward(self, xs, h0=None, *, lengths=None):
        N, T, xs_tm, dead, steps = self._begin_forward(xs, lengths)
        H = self.H
        # The input projections of all steps go straight into hs_all[1:] in one multiply; each step then
        # adds h @ Wh in place. xs_tm, the time-major copy of xs, is kept for backward's dWx.
        hs_all = np.empty((T + 1, N, H), dtype=self.dtype)
        hs_all[0] = self._initial_state(N, h0, self.h, "h0")
        with self._blas_threads(N, T):
            self._input_projection(xs_tm, out=hs_all[1:].reshape(T * N, H))
            self._forward_loop(hs_all, steps, dead)
        return self._end_forward(hs_all, dead, (xs_tm, hs_all, steps, dead))

    def backward(self, dhs, dh_final=None):
        (dh_final,) = self._begin_backward(dhs, dh_final=dh_final)
        xs_tm, hs_all, steps, dead = self._cache
        N, T = self._batch
        with self._blas_threads(N, T):
            if accel.kernels() is not None:
                dA, dh = self._backward_loop_kernels(dhs, dh_final, hs_all, steps)
            else:
                dA, dh = self._backward_loop(dhs, dh_final, hs_all, dead)
            dxs = self._shared_gradients(xs_tm, hs_all, dA)
        self.dh = dh
        return dxs

    def _forward_loop(self, hs_all, steps, dead):
        """The time loop of forward: ``hs_all[t + 1]`` holds step t's input projection
        (``_input_projection``) on entry and its state on exit."""
        T, N, H = hs_all.shape[0] - 1, hs_all.shape[1], self.H
        Wh = self.params[1]
        kernels = accel.kernels()
        if kernels is not None:  # the packed product, then the add, the tanh and the finished rows in one call
            kernels.rnn_forward(hs_all, self.params[2], steps, kernels.recurrent_product(Wh, N))
            return
        hWh = np.empty((N, H), dtype=self.dtype)
        for t in range(T):
            h = hs_all[t + 1]
            np.matmul(hs_all[t], Wh, out=hWh)
            h += hWh
            np.tanh(h, out=h)
            if dead is not None:  # finished rows keep their last state
                np.copyto(h, hs_all[t], where=dead[t][:, None])

    def _backward_loop(self, dhs, dh_final, hs_all, dead):
        """The time loop of backward in NumPy: returns ``dA: (T, N, H)``, the gradients of the
        pre-activations, and the gradient w.r.t. the initial state."""
        T = hs_all.shape[0] - 1
        WhT = np.ascontiguousarray(self.params[1].T)  # BLAS runs faster on a contiguous operand
        # da_t = (dhs_t + dh_t) * tanh'(a_t); padded steps get tanh' = 0 so they pass no gradient.
        dA = np.square(hs_all[1:])
        np.subtract(1, dA, out=dA)
        if dead is not None:
            dA[dead] = 0
        dh = dh_final.copy()
        dhs_tm = dhs.transpose(1, 0, 2).copy()  # contiguous per-step slices
        for t in range(T - 1, -1, -1):
            da = dA[t]
            carried = None if dead is None else dh * dead[t][:, None]
            dh += dhs_tm[t]
            da *= dh
            np.matmul(da, WhT, out=dh)
            if carried is not None:  # a finished row's state was copied, so is its gradient
                dh += carried
        return dA, dh

    def _backward_loop_kernels(self, dhs, dh_final, hs_all, steps):
        """The same loop with a fused kernel per step (``nprnn.accel``)."""
        T, N, H = hs_all.shape[0] - 1, hs_all.shape[1], self.H
        kernels = accel.kernels()
        dhs = np.ascontiguousarray(dhs)
        dA = np.empty((T, N, H), dtype=self.dtype)
        product = kernels.recurrent_product(self.params[1].T, N)
        return dA, kernels.rnn_backward(dA, dhs, dh_final, hs_all, steps, product)
