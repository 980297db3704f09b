"""Vanilla tanh RNN: the single-step cell ``RNN`` and the sequence layer ``TimeRNN``.

    h_next = tanh(h_prev @ Wh + x @ Wx + b)

Shapes: ``Wx: (D, H)``, ``Wh: (H, H)``, ``b: (H,)``; ``x: (N, D)``, ``h: (N, H)``;
sequences are batch-first, ``xs: (N, T, D)`` -> ``hs: (N, T, H)``.
"""

import numpy as np

from nprnn import accel
from nprnn._checks import check_input, check_lengths, check_params


def _rnn_params(name, Wx, Wh, b):
    D, H = Wx.shape if getattr(Wx, "ndim", 0) == 2 else (None, None)
    shapes = {"Wx": (None, None), "Wh": (H, H), "b": (H,)}
    dtype = check_params(name, {"Wx": Wx, "Wh": Wh, "b": b}, shapes)
    return D, H, dtype


def init_rnn_params(D, H, seed=0, dtype=np.float32):
    """Xavier-style initial ``[Wx, Wh, b]`` as in the textbook: ``randn / sqrt(fan_in)``, zero bias."""
    rng = np.random.default_rng(seed)
    Wx = (rng.standard_normal((D, H)) / np.sqrt(D)).astype(dtype)
    Wh = (rng.standard_normal((H, H)) / np.sqrt(H)).astype(dtype)
    return [Wx, Wh, np.zeros(H, dtype=dtype)]


def _steps(lengths, N, T):
    """Each row's number of real steps, as the kernels take it."""
    return np.full(N, T, dtype=np.intp) if lengths is None else lengths


class RNN:
    """One time step of a tanh RNN; the readable reference for ``TimeRNN``.

    ``forward(x: (N, D), h_prev: (N, H)) -> h_next: (N, H)``
    ``backward(dh_next: (N, H)) -> (dx: (N, D), dh_prev: (N, H))``, writing
    ``dWx, dWh, db`` into ``grads`` in place.
    """

    def __init__(self, Wx, Wh, b):
        self.D, self.H, self.dtype = _rnn_params("RNN", Wx, Wh, b)
        self.params = [Wx, Wh, b]
        self.grads = [np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(b)]
        self.cache = None

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


class TimeRNN:
    """A tanh RNN over whole sequences, with truncated BPTT.

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

    Fast path, as cuDNN does it: the input projection of all T steps is one matrix
    multiply; the time loop only does ``h @ Wh``, the add and ``tanh`` into
    preallocated buffers; the weight gradients are single multiplies over all steps
    after the backward loop. Internally time-major, so each step's slice is contiguous.
    """

    def __init__(self, Wx, Wh, b, stateful=False):
        self.D, self.H, self.dtype = _rnn_params("TimeRNN", Wx, Wh, b)
        self.params = [Wx, Wh, b]
        self.grads = [np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(b)]
        self.stateful = stateful
        self.h = None
        self.dh = None
        self._cache = None

    def set_state(self, h):
        check_input("TimeRNN", h, (None, self.H), self.dtype, "state h")
        self.h = h

    def reset_state(self):
        self.h = None

    def _initial_state(self, N, h0):
        if h0 is not None:
            return check_input("TimeRNN", h0, (N, self.H), self.dtype, "h0")
        if self.stateful and self.h is not None:
            if self.h.shape[0] != N:
                raise ValueError(
                    f"TimeRNN: stateful layer carries a state for batch size {self.h.shape[0]}, "
                    f"got a batch of {N}; call reset_state() when the batch size changes"
                )
            return self.h
        return np.zeros((N, self.H), dtype=self.dtype)

    def forward(self, xs, h0=None, *, lengths=None):
        Wx, Wh, b = self.params
        check_input("TimeRNN", xs, (None, None, self.D), self.dtype, "xs")
        N, T, _ = xs.shape
        lengths = check_lengths("TimeRNN", lengths, N, T)
        H = self.H

        # hs_all[0] is the initial state, hs_all[t + 1] the state after step t. The input projections of
        # all steps go straight into hs_all[1:] in one multiply; each step then adds h @ Wh in place.
        hs_all = np.empty((T + 1, N, H), dtype=self.dtype)
        hs_all[0] = self._initial_state(N, h0)
        dead = None if lengths is None else np.arange(T)[:, None] >= lengths[None, :]  # (T, N)
        xs_tm = xs.transpose(1, 0, 2).reshape(T * N, self.D)  # a time-major copy, kept for backward's dWx
        with accel.threads_for_time_layer(N, T, self.D, H, 1):
            np.matmul(xs_tm, Wx, out=hs_all[1:].reshape(T * N, H))
            hs_all[1:] += b
            self._forward_loop(hs_all, lengths, dead)

        self.h = hs_all[T].copy()
        self._cache = (xs_tm, hs_all, lengths, dead)
        hs = hs_all[1:].transpose(1, 0, 2)
        return np.ascontiguousarray(hs) if dead is None else hs * ~dead.T[:, :, None]

    def backward(self, dhs, dh_final=None):
        if self._cache is None:
            raise RuntimeError("TimeRNN: backward called before forward")
        Wx, Wh, b = self.params
        xs_tm, hs_all, lengths, dead = self._cache
        T, N, H = hs_all.shape[0] - 1, hs_all.shape[1], self.H
        check_input("TimeRNN", dhs, (N, T, H), self.dtype, "dhs")
        if dh_final is not None:
            check_input("TimeRNN", dh_final, (N, H), self.dtype, "dh_final")

        with accel.threads_for_time_layer(N, T, self.D, H, 1):
            if accel.kernels() is not None:
                dA, dh = self._backward_loop_kernels(dhs, dh_final, hs_all, lengths)
            else:
                dA, dh = self._backward_loop(dhs, dh_final, hs_all, dead)
            dA2 = dA.reshape(T * N, H)
            self.grads[0][...] = xs_tm.T @ dA2
            self.grads[1][...] = hs_all[:-1].reshape(T * N, H).T @ dA2
            self.grads[2][...] = dA2.sum(axis=0)
            dxs = (dA2 @ Wx.T).reshape(T, N, self.D).transpose(1, 0, 2).copy()
        self.dh = dh
        return dxs

    def _forward_loop(self, hs_all, lengths, dead):
        """The time loop of forward: ``hs_all[t + 1]`` holds step t's input projection on entry and
        its state on exit."""
        T, N, H = hs_all.shape[0] - 1, hs_all.shape[1], self.H
        Wh = self.params[1]
        kernels = accel.kernels()
        steps = _steps(lengths, N, T) if kernels is not None else None
        hWh = np.empty((N, H), dtype=self.dtype)
        for t in range(T):
            h = hs_all[t + 1]
            np.matmul(hs_all[t], Wh, out=hWh)
            if kernels is not None:  # the add, the tanh and the finished rows in one call
                kernels.rnn_forward_step(h, hWh, hs_all[t], t, steps)
                continue
            h += hWh
            np.tanh(h, out=h)
            if dead is not None:  # finished rows keep their last state
                np.copyto(h, hs_all[t], where=dead[t][:, None])

    def _backward_loop(self, dhs, dh_final, hs_all, dead):
        """The time loop of backward in NumPy: returns ``dA: (T, N, H)``, the gradients of the
        pre-activations, and the gradient w.r.t. the initial state."""
        T, N, H = hs_all.shape[0] - 1, hs_all.shape[1], self.H
        WhT = np.ascontiguousarray(self.params[1].T)  # BLAS runs faster on a contiguous operand
        # da_t = (dhs_t + dh_t) * tanh'(a_t); padded steps get tanh' = 0 so they pass no gradient.
        dA = np.square(hs_all[1:])
        np.subtract(1, dA, out=dA)
        if dead is not None:
            dA[dead] = 0
        dh = np.zeros((N, H), dtype=self.dtype)
        if dh_final is not None:
            dh += dh_final
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

    def _backward_loop_kernels(self, dhs, dh_final, hs_all, lengths):
        """The same loop with a fused kernel per step (``nprnn.accel``)."""
        T, N, H = hs_all.shape[0] - 1, hs_all.shape[1], self.H
        steps = _steps(lengths, N, T)
        WhT = np.ascontiguousarray(self.params[1].T)
        kernels = accel.kernels()
        dhs = np.ascontiguousarray(dhs)
        dh_final = np.zeros((N, H), dtype=self.dtype) if dh_final is None else dh_final
        dA = np.empty((T, N, H), dtype=self.dtype)
        dh = dh_final.copy()  # becomes da_{t+1} @ Wh.T, first read at t = T - 2 (dh_final if T = 0)
        for t in range(T - 1, -1, -1):
            kernels.rnn_backward_step(dA[t], dhs, dh, dh_final, hs_all[t + 1], t, steps)
            np.matmul(dA[t], WhT, out=dh)
        return dA, dh
