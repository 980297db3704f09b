"""GRU in the PyTorch / cuDNN formulation: the single-step cell ``GRU`` and the sequence layer ``TimeGRU``.

    r      = sigmoid(x @ Wx_r + h_prev @ Wh_r + b_r)          reset gate
    z      = sigmoid(x @ Wx_z + h_prev @ Wh_z + b_z)          update gate
    n      = tanh(x @ Wx_n + b_n + r * (h_prev @ Wh_n + bhn))  candidate
    h_next = (1 - z) * n + z * h_prev

Shapes: ``Wx: (D, 3H)``, ``Wh: (H, 3H)``, ``b: (3H,)``, ``bhn: (H,)``; ``x: (N, D)``, ``h: (N, H)``;
sequences are batch-first, ``xs: (N, T, D)`` -> ``hs: (N, T, H)``.

Gate layout: **r, z, n** as in PyTorch, i.e. columns ``[0:H]`` = r, ``[H:2H]`` = z, ``[2H:3H]`` = n.
The reset gate multiplies the recurrent term *after* the matrix multiply, so the candidate's
recurrent bias ``bhn`` sits inside ``r * (...)`` and cannot be merged into ``b``; that is why it is
a separate parameter. (The textbook's GRU applies r before the multiply, ``tanh(x Wx + (r h) Wh)``,
orders its gates z, r, h and uses ``h' = (1 - z) h + z h~``: a different model.)

PyTorch mapping: ``weight_ih_l0 = Wx.T``, ``weight_hh_l0 = Wh.T``,
``bias_ih_l0[:2H] + bias_hh_l0[:2H] = b[:2H]``, ``bias_ih_l0[2H:] = b[2H:]``, ``bias_hh_l0[2H:] = bhn``.
"""

import numpy as np

from nprnn import accel
from nprnn._checks import check_input
from nprnn.layers._recurrent import Cell, TimeRecurrent, init_params, sigmoid, sigmoid_inplace

GATES = ("r", "z", "n")


def init_gru_params(D, H, seed=0, dtype=np.float32):
    """Initial ``[Wx, Wh, b, bhn]``: ``randn / sqrt(fan_in)`` weights (gates r, z, n), zero biases."""
    return [*init_params(D, H, 3, seed, dtype), np.zeros(H, dtype=dtype)]


class GRU(Cell):
    """One time step of a GRU; the readable reference for ``TimeGRU``.

    Weights: ``GRU(*init_gru_params(D, H, seed=0))`` (``Wx: (D, 3H)``, ``Wh: (H, 3H)``, ``b: (3H,)``,
    ``bhn: (H,)``, gates r, z, n as in PyTorch).

    ``forward(x: (N, D), h_prev: (N, H)) -> h_next: (N, H)``
    ``backward(dh_next: (N, H)) -> (dx: (N, D), dh_prev: (N, H))``, writing
    ``dWx, dWh, db, dbhn`` into ``grads`` in place.
    """

    BLOCKS = GATES

    def __init__(self, Wx, Wh, b, bhn):
        super().__init__(Wx, Wh, b, bhn=bhn)

    def forward(self, x, h_prev):
        Wx, Wh, b, bhn = self.params
        H = self.H
        check_input("GRU", x, (None, self.D), self.dtype, "x")
        check_input("GRU", h_prev, (x.shape[0], H), self.dtype, "h_prev")
        xw = x @ Wx + b
        hw = h_prev @ Wh
        r = sigmoid(xw[:, :H] + hw[:, :H])
        z = sigmoid(xw[:, H : 2 * H] + hw[:, H : 2 * H])
        hn = hw[:, 2 * H :] + bhn
        n = np.tanh(xw[:, 2 * H :] + r * hn)
        h_next = (1 - z) * n + z * h_prev
        self.cache = (x, h_prev, r, z, n, hn)
        return h_next

    def backward(self, dh_next):
        if self.cache is None:
            raise RuntimeError("GRU: backward called before forward")
        Wx, Wh, b, bhn = self.params
        x, h_prev, r, z, n, hn = self.cache
        check_input("GRU", dh_next, h_prev.shape, self.dtype, "dh_next")
        da_n = dh_next * (1 - z) * (1 - n**2)
        da_z = dh_next * (h_prev - n) * z * (1 - z)
        da_r = da_n * hn * r * (1 - r)
        dhn = da_n * r  # gradient of h_prev @ Wh_n + bhn
        da_x = np.hstack([da_r, da_z, da_n])  # of the input projection x @ Wx + b
        da_h = np.hstack([da_r, da_z, dhn])  # of the recurrent projection h_prev @ Wh (+ bhn)
        self.grads[0][...] = x.T @ da_x
        self.grads[1][...] = h_prev.T @ da_h
        self.grads[2][...] = da_x.sum(axis=0)
        self.grads[3][...] = dhn.sum(axis=0)
        return da_x @ Wx.T, da_h @ Wh.T + dh_next * z


class TimeGRU(TimeRecurrent):
    """A GRU over whole sequences, with truncated BPTT.

    Weights: ``TimeGRU(*init_gru_params(D, H, seed=0), stateful=True)`` (``Wx: (D, 3H)``, ``Wh: (H, 3H)``,
    ``b: (3H,)``, ``bhn: (H,)``; ``init_gru_params`` is in ``nprnn.layers``), or arrays of your own.

    ``forward(xs: (N, T, D), h0: (N, H) | None, *, lengths: (N,) | None) -> hs: (N, T, H)``
    ``backward(dhs: (N, T, H), dh_final: (N, H) | None) -> dxs: (N, T, D)``

    State: ``.h`` is the final hidden state ``(N, H)`` of the last ``forward`` (with
    ``lengths``, each row's state at its last real step). The initial state of a ``forward``
    is ``h0`` if given, else the carried ``.h`` when ``stateful``, else zeros. No gradient
    flows across ``forward`` calls (truncated BPTT); the gradient w.r.t. the initial state
    is left in ``.dh``. ``dh_final`` is an extra gradient flowing into the final state.

    ``lengths`` makes a padded batch behave as if each sequence ran alone: past its
    length a row's state stops updating, its outputs are zero and get no gradient.

    The fast path (one input projection for all steps, only ``h @ Wh`` and the elementwise work
    in the time loop): ``TimeRecurrent``.
    """

    BLOCKS = GATES

    def __init__(self, Wx, Wh, b, bhn, stateful=False):
        super().__init__(Wx, Wh, b, stateful=stateful, bhn=bhn)

    def forward(self, xs, h0=None, *, lengths=None):
        N, T, xs2, dead, steps = self._begin_forward(xs, lengths)
        H = self.H
        hs_all = np.empty((T + 1, N, H), dtype=self.dtype)
        hs_all[0] = self._initial_state(N, h0, self.h, "h0")
        hns = np.empty((T, N, H), dtype=self.dtype)  # h_prev @ Wh_n + bhn, needed by backward
        with self._blas_threads(N, T):
            # All input projections at once; gates[t] then becomes step t's r, z, n in place.
            gates = self._input_projection(xs2).reshape(T, N, 3 * H)
            self._forward_loop(gates, hs_all, hns, steps, dead)
        return self._end_forward(hs_all, dead, (xs2, hs_all, gates, hns, steps, dead))

    def backward(self, dhs, dh_final=None):
        (dh_final,) = self._begin_backward(dhs, dh_final=dh_final)
        xs2, hs_all, gates, hns, steps, dead = self._cache
        N, T = self._batch
        H = self.H
        with self._blas_threads(N, T):
            if accel.kernels() is not None:
                dA, dA_n, dh = self._backward_loop_kernels(dhs, dh_final, steps)
            else:
                dA, dA_n, dh = self._backward_loop(dhs, dh_final, dead)
            self._recurrent_gradient(hs_all, dA)
            self.grads[3][...] = dA.reshape(T * N, 3 * H)[:, 2 * H :].sum(axis=0)  # dbhn
            dA[..., 2 * H :] = dA_n  # now the gradient of the input projection
            dxs = self._input_gradients(xs2, dA)
        self.dh = dh
        return dxs

    def _forward_loop(self, gates, hs_all, hns, steps, dead):
        """The time loop of forward: ``gates[t]`` holds step t's input projection (``_input_projection``)
        on entry and r, z, n on exit; ``hns[t]`` receives ``h_prev @ Wh_n + bhn``."""
        T, N, H3 = gates.shape
        H, Wh, bhn = self.H, self.params[1], self.params[3]
        kernels = accel.kernels()
        if kernels is not None:  # the packed product, then all of the step's elementwise work in one call
            kernels.gru_forward(gates, self.params[2], bhn, hs_all, hns, steps, kernels.recurrent_product(Wh, N))
            return
        rec = np.empty((N, H3), dtype=self.dtype)
        scratch = np.empty((N, H), dtype=self.dtype)
        for t in range(T):
            a, h_prev, h = gates[t], hs_all[t], hs_all[t + 1]
            np.matmul(h_prev, Wh, out=rec)
            rz = a[:, : 2 * H]
            rz += rec[:, : 2 * H]
            sigmoid_inplace(rz)  # r and z are contiguous: one pass for both
            r, z, n = a[:, :H], a[:, H : 2 * H], a[:, 2 * H :]
            np.add(rec[:, 2 * H :], bhn, out=hns[t])
            np.multiply(r, hns[t], out=scratch)
            n += scratch
            np.tanh(n, out=n)
            np.subtract(h_prev, n, out=h)  # h = n + z * (h_prev - n)
            h *= z
            h += n
            if dead is not None:  # finished rows keep their last state
                np.copyto(h, h_prev, where=dead[t][:, None])

    def _backward_loop(self, dhs, dh_final, dead):
        """The time loop of backward in NumPy. Returns ``dA: (T, N, 3H)``, the gradient of the
        recurrent projection ``h_prev @ Wh (+ bhn)`` of each step, ``dA_n: (T, N, H)``, the gradient
        of the n block of the input projection, and the gradient w.r.t. the initial state."""
        _, hs_all, gates, hns, _, _ = self._cache
        T, N, H = gates.shape[0], gates.shape[1], self.H
        # Every pre-activation gradient of step t is (gradient into h_t) * (a factor known from
        # the forward pass), so the factors are computed for all steps at once and the loop only
        # scales them: dA_h[t] = dh_t * [dr_factor, dz_factor, dhn_factor] is the gradient of the
        # recurrent projection h_{t-1} @ Wh (+ bhn); the input projection differs only in the
        # n block, dh_t * dn_factor, which is formed after the loop from the saved dh_t.
        r, z, n = gates[..., :H], gates[..., H : 2 * H], gates[..., 2 * H :]
        dn_factor = (1 - z) * (1 - n * n)
        dA = np.empty((T, N, 3 * H), dtype=self.dtype)
        dA[..., :H] = dn_factor * hns * r * (1 - r)
        dA[..., H : 2 * H] = (hs_all[:-1] - n) * z * (1 - z)
        dA[..., 2 * H :] = dn_factor * r
        if dead is not None:  # padded steps: no gate gradient
            dA[dead] = 0
            dn_factor[dead] = 0

        dh = dh_final.copy()  # gradient into h_t from step t + 1
        dh_totals = np.empty((T, N, H), dtype=self.dtype)  # total gradient into each h_t
        dh_prev = np.empty((N, H), dtype=self.dtype)
        scratch = np.empty((N, H), dtype=self.dtype)
        WhT = np.ascontiguousarray(self.params[1].T)  # measured 2x faster per step than the transposed view
        for t in range(T - 1, -1, -1):
            dh_total = dh_totals[t]
            np.add(dhs[:, t], dh, out=dh_total)
            da = dA[t].reshape(N, 3, H)
            np.multiply(da, dh_total[:, None, :], out=da)
            np.matmul(dA[t], WhT, out=dh_prev)
            np.multiply(dh_total, z[t], out=scratch)  # h_t depends on h_{t-1} directly through z
            dh_prev += scratch
            if dead is not None:  # a finished row's state was copied, so is its gradient
                np.copyto(dh_prev, dh, where=dead[t][:, None])
            dh, dh_prev = dh_prev, dh
        dh_totals *= dn_factor
        return dA, dh_totals, dh

    def _backward_loop_kernels(self, dhs, dh_final, steps):
        """The same loop with a fused kernel per step (``nprnn.accel``)."""
        _, hs_all, gates, hns, _, _ = self._cache
        T, N, H = gates.shape[0], gates.shape[1], self.H
        kernels = accel.kernels()
        dhs = np.ascontiguousarray(dhs)
        dA = np.empty((T, N, 3 * H), dtype=self.dtype)
        dA_n = np.empty((T, N, H), dtype=self.dtype)
        dh_direct = np.zeros((N, H), dtype=self.dtype)  # dh_{t+1} * z_{t+1}, first read at t = T - 2
        product = kernels.recurrent_product(self.params[1].T, N)
        dh = kernels.gru_backward(dA, dA_n, dh_direct, dhs, dh_final, gates, hns, hs_all, steps, product)
        dh += dh_direct  # zero for T = 0
        return dA, dA_n, dh
