"""Optional numba kernels for the per-step work of TimeRNN, TimeLSTM and TimeGRU (see ``nprnn.accel``).

A time step of a recurrent layer is one BLAS product (``h_prev @ Wh``, left to NumPy) and a handful of
elementwise operations. NumPy spends a call (about a microsecond) and a pass over memory on each of them;
each kernel here does all of a step's elementwise work in one call, row by row, with the gate values still
in cache. The kernels compute exactly the NumPy path's formulas, in the same layouts, so the two paths
share their buffers, their caches and everything outside the time loops.

Conventions shared by every kernel:

- ``t`` is the step and ``lengths: (N,)`` the per-row sequence lengths (all ``T`` without ``lengths``).
  A row with ``t >= lengths[n]`` is finished: its state is copied forward and it gets no gradient.
- Backward kernels take the whole ``dhs: (N, T, H)``; the gradient flowing into ``h_t`` from step
  ``t + 1`` is ``dh_rec`` (the product ``da_{t+1} @ Wh.T`` of the previous iteration), except at a row's
  last real step, where it is ``dh_final`` (nothing after it used ``h_t`` but the final state).
- float32 uses a rational approximation of tanh (Eigen's, within a few ulp of ``np.tanh``) because
  libm's ``tanhf`` is a scalar call that keeps the loops from vectorising; float64 uses ``math.tanh``.

numba is imported by this module only: import it through ``nprnn.accel``, which does so lazily.
"""

import math

import numba
import numpy as np
from numba import types
from numba.extending import overload

# Not nnan/ninf: NaN and inf go through the kernels as through NumPy. error_model="numpy" drops the
# ZeroDivisionError check on every division, which would stop the loops from vectorising.
_JIT = {"cache": True, "nogil": True, "error_model": "numpy", "fastmath": {"nsz", "arcp", "contract", "reassoc"}}
_TANH_CLAMP = np.float32(7.90531110763549805)  # the rational approximation holds up to here
_TANH_ONE = np.float32(9.01)  # and tanh rounds to +-1 in float32 beyond this


def _tanh(x):
    return math.tanh(x)


@overload(_tanh, jit_options={k: v for k, v in _JIT.items() if k not in ("cache", "nogil")})
def _tanh_impl(x):
    if x != types.float32:
        return lambda x: math.tanh(x)

    def tanh32(x):
        # Not max/min: a comparison that is false for NaN keeps NaN (and so NaN checks downstream).
        u = _TANH_CLAMP if x > _TANH_CLAMP else (-_TANH_CLAMP if x < -_TANH_CLAMP else x)
        x2 = u * u
        p = np.float32(-2.76076847742355e-16)
        p = p * x2 + np.float32(2.00018790482477e-13)
        p = p * x2 + np.float32(-8.60467152213735e-11)
        p = p * x2 + np.float32(5.12229709037114e-08)
        p = p * x2 + np.float32(1.48572235717979e-05)
        p = p * x2 + np.float32(6.37261928875436e-04)
        p = p * x2 + np.float32(4.89352455891786e-03)
        q = np.float32(1.19825839466702e-06)
        q = q * x2 + np.float32(1.18534705686654e-04)
        q = q * x2 + np.float32(2.26843463243900e-03)
        q = q * x2 + np.float32(4.89352518554385e-03)
        y = u * (p / q)
        return np.float32(1) if x > _TANH_ONE else (np.float32(-1) if x < -_TANH_ONE else y)

    return tanh32


def _const(array, value):
    return array.dtype.type(value)


@overload(_const)
def _const_impl(array, value):
    # ``value`` in the array's dtype: a literal like 1.0 is a float64 in numba and would silently
    # promote float32 arithmetic to float64.
    if array.dtype == types.float32:
        return lambda array, value: np.float32(value)
    return lambda array, value: np.float64(value)


# ---------------------------------------------------------------- RNN


@numba.njit(**_JIT)
def rnn_forward_step(h, rec, h_prev, t, lengths):
    """``h = tanh(h + rec)`` in place (``h`` holds ``x_t @ Wx + b`` on entry, ``rec = h_prev @ Wh``)."""
    N, H = h.shape
    for n in range(N):
        if t < lengths[n]:
            for j in range(H):
                h[n, j] = _tanh(h[n, j] + rec[n, j])
        else:
            for j in range(H):
                h[n, j] = h_prev[n, j]


@numba.njit(**_JIT)
def rnn_backward_step(da, dhs, dh_rec, dh_final, h, t, lengths):
    """``da = (dhs_t + dh_next) * (1 - h_t^2)``: the gradient of step t's pre-activation."""
    N, H = da.shape
    one = _const(da, 1.0)
    for n in range(N):
        if t >= lengths[n]:
            da[n, :] = 0
            continue
        dh_next = dh_final if t == lengths[n] - 1 else dh_rec
        for j in range(H):
            da[n, j] = (dhs[n, t, j] + dh_next[n, j]) * (one - h[n, j] * h[n, j])


# ---------------------------------------------------------------- LSTM (gates f, g, i, o)


@numba.njit(**_JIT)
def lstm_forward_step(a, rec, h_prev, c_prev, h, c, tanh_c, t, lengths):
    """One LSTM step. ``a: (N, 4H)`` holds ``x_t @ Wx + b`` on entry and the gates f, g, i, o on exit;
    as in the NumPy path, the f, i, o columns of ``a`` and ``rec`` are pre-halved, so that
    ``sigmoid(2u) = 0.5 * tanh(u) + 0.5``."""
    N, H = h.shape
    half = _const(a, 0.5)
    for n in range(N):
        # One short loop per gate block and per output: each one vectorises (measured: a single loop
        # over the i and o blocks, or one writing c, tanh(c) and h together, runs 5-10x slower).
        for j in range(H):
            a[n, j] = half * _tanh(a[n, j] + rec[n, j]) + half
        for j in range(H):
            a[n, H + j] = _tanh(a[n, H + j] + rec[n, H + j])
        for j in range(H):
            a[n, 2 * H + j] = half * _tanh(a[n, 2 * H + j] + rec[n, 2 * H + j]) + half
        for j in range(H):
            a[n, 3 * H + j] = half * _tanh(a[n, 3 * H + j] + rec[n, 3 * H + j]) + half
        if t < lengths[n]:
            for j in range(H):
                c[n, j] = a[n, j] * c_prev[n, j] + a[n, 2 * H + j] * a[n, H + j]
            for j in range(H):
                tanh_c[n, j] = _tanh(c[n, j])
            for j in range(H):
                h[n, j] = a[n, 3 * H + j] * tanh_c[n, j]
        else:  # finished: keep the states (tanh_c is not used by backward here, but keep it defined)
            for j in range(H):
                c[n, j] = c_prev[n, j]
                h[n, j] = h_prev[n, j]
                tanh_c[n, j] = 0


@numba.njit(**_JIT)
def lstm_backward_step(da, dc, dhs, dh_rec, dh_final, a, c_prev, tanh_c, t, lengths):
    """Gradient of step t's pre-activations into ``da: (N, 4H)``; ``dc`` (the gradient into ``c_t``)
    becomes the gradient into ``c_{t-1}``. Finished rows pass ``dc`` through unchanged."""
    N, H = dc.shape
    one = _const(da, 1.0)
    for n in range(N):
        if t >= lengths[n]:
            da[n, :] = 0
            continue
        dh_next = dh_final if t == lengths[n] - 1 else dh_rec
        # As in the forward kernel, short loops that each write one block vectorise; one loop doing it
        # all does not. The o block of da holds dh (the total gradient into h_t) until the last loop.
        for j in range(H):
            da[n, 3 * H + j] = dhs[n, t, j] + dh_next[n, j]
        for j in range(H):  # c_t feeds c_{t+1} and h_t = o * tanh(c_t)
            dc[n, j] += da[n, 3 * H + j] * a[n, 3 * H + j] * (one - tanh_c[n, j] * tanh_c[n, j])
        for j in range(H):
            da[n, j] = dc[n, j] * c_prev[n, j] * a[n, j] * (one - a[n, j])
        for j in range(H):
            da[n, H + j] = dc[n, j] * a[n, 2 * H + j] * (one - a[n, H + j] * a[n, H + j])
        for j in range(H):
            da[n, 2 * H + j] = dc[n, j] * a[n, H + j] * a[n, 2 * H + j] * (one - a[n, 2 * H + j])
        for j in range(H):
            da[n, 3 * H + j] *= tanh_c[n, j] * a[n, 3 * H + j] * (one - a[n, 3 * H + j])
        for j in range(H):
            dc[n, j] *= a[n, j]


# ---------------------------------------------------------------- GRU (gates r, z, n; PyTorch formulation)


@numba.njit(**_JIT)
def gru_forward_step(a, rec, bhn, h_prev, h, hn, t, lengths):
    """One GRU step. ``a: (N, 3H)`` holds ``x_t @ Wx + b`` on entry and r, z, n on exit;
    ``rec = h_prev @ Wh``; ``hn`` receives ``h_prev @ Wh_n + bhn`` (backward needs it)."""
    N, H = h.shape
    half = _const(a, 0.5)
    for n in range(N):
        for j in range(H):
            a[n, j] = half * _tanh(half * (a[n, j] + rec[n, j])) + half  # r
        for j in range(H):
            a[n, H + j] = half * _tanh(half * (a[n, H + j] + rec[n, H + j])) + half  # z
        for j in range(H):
            hn[n, j] = rec[n, 2 * H + j] + bhn[j]
        for j in range(H):  # rec's n block is free now: a scratch row that does not alias a
            rec[n, 2 * H + j] = a[n, 2 * H + j] + a[n, j] * hn[n, j]
        for j in range(H):
            a[n, 2 * H + j] = _tanh(rec[n, 2 * H + j])
        if t < lengths[n]:
            for j in range(H):  # h = (1 - z) n + z h_prev
                h[n, j] = a[n, 2 * H + j] + a[n, H + j] * (h_prev[n, j] - a[n, 2 * H + j])
        else:
            for j in range(H):
                h[n, j] = h_prev[n, j]


@numba.njit(**_JIT)
def gru_backward_step(da, dn_x, dh_direct, dhs, dh_rec, dh_final, a, hn, h_prev, t, lengths):
    """Gradients of step t: ``da: (N, 3H)`` of the recurrent projection ``h_prev @ Wh (+ bhn)``,
    ``dn_x: (N, H)`` of the n block of the input projection. ``dh_direct`` holds ``dh_{t+1} * z_{t+1}``
    (h_{t+1} depends on h_t directly, not only through ``@ Wh``) and becomes ``dh_t * z_t``."""
    N, H = dn_x.shape
    one = _const(da, 1.0)
    for n in range(N):
        if t >= lengths[n]:
            da[n, :] = 0
            dn_x[n, :] = 0
            dh_direct[n, :] = 0
            continue
        # dh_direct becomes dh (the total gradient into h_t), then dh * z_t at the end.
        if t == lengths[n] - 1:
            for j in range(H):
                dh_direct[n, j] = dhs[n, t, j] + dh_final[n, j]
        else:
            for j in range(H):
                dh_direct[n, j] += dhs[n, t, j] + dh_rec[n, j]
        for j in range(H):
            dn_x[n, j] = dh_direct[n, j] * (one - a[n, H + j]) * (one - a[n, 2 * H + j] * a[n, 2 * H + j])
        for j in range(H):
            da[n, j] = dn_x[n, j] * hn[n, j] * a[n, j] * (one - a[n, j])
        for j in range(H):
            da[n, H + j] = dh_direct[n, j] * (h_prev[n, j] - a[n, 2 * H + j]) * a[n, H + j] * (one - a[n, H + j])
        for j in range(H):
            da[n, 2 * H + j] = dn_x[n, j] * a[n, j]
        for j in range(H):
            dh_direct[n, j] *= a[n, H + j]
