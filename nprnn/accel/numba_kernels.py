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

- ``first, last``: the rows a call works on (all of them, or a thread's share in the ``_*_rows``
  variants, which split a step by rows over numba's threads).

The per-step product ``h_prev @ Wh`` (and backward's ``da @ Wh.T``) is ``recurrent_product``, the
packed kernels of ``nprnn.accel.packed``; the time loops below run it and the step kernels in one
jitted call per forward or backward.

numba is imported by this module and ``packed`` only: import them through ``nprnn.accel``, which does
so lazily.
"""

import math

import numba
import numpy as np
from numba import types
from numba.extending import overload

from nprnn.accel import blas, mkl, packed

# Not nnan/ninf: NaN and inf go through the kernels as through NumPy. error_model="numpy" drops the
# ZeroDivisionError check on every division, which would stop the loops from vectorising.
_JIT = {"cache": True, "nogil": True, "error_model": "numpy", "fastmath": {"nsz", "arcp", "contract", "reassoc"}}
_TANH_CLAMP = np.float32(7.90531110763549805)  # the rational approximation holds up to here (it overshoots 1 after)
_TANH_ONE = np.float32(9.01)  # tanh rounds to +-1 in float32 beyond this; saturating exactly keeps closed gates closed


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


def _cap():
    """The threads ``nprnn.accel.set_blas_threads(n)`` allows: ``n``; for ``"auto"`` numba's; for
    ``"adaptive"`` numba's, or one while the machine is busy (``blas.one_thread_for_load``)."""
    setting = blas.blas_threads()
    if isinstance(setting, int):
        return setting
    return 1 if blas.one_thread_for_load() else None


def recurrent_product(W, N, scale=None):
    """The per-step product ``h @ W`` of a time loop for ``N`` rows (``packed.Product``)."""
    return packed.Product(W, N, scale, cap=_cap())


# Products of more FLOPs run as column blocks on one BLAS thread each (blas.split_matmul). Measured
# (GFLOP/s, split / packed): (1120, 200) @ (200, 800) 249 / 293, (200, 1120) @ (1120, 800) 141 / 207,
# (2240, 650) @ (650, 650) 291 / 298, (700, 650) @ (650, 2600) 334 / 266, (2240, 650) @ (650, 2600) 335 / 217.
# From 1 GFLOP a B of a million elements or more goes to the split too: packing it costs more than
# the packed kernels gain ((700, 100) @ (100, 10000): split 245, packed 206; its dW 271 / 130).
SPLIT_FLOPS = 1.5e9
# OpenBLAS runs a product of M K C <= 65536 * 4 on the calling thread; a larger one wakes its threads
# (interface/gemm.c), which then spin ~0.1 s: TimeLSTM in the textbook's ch07 Seq2seq took 24.7 ms an
# iteration beside its (512, 128) @ (128, 13) output products on NumPy, 7.8 ms with one BLAS thread.
OPENBLAS_ONE_THREAD = 65536 * 4
# OpenBLAS's SkylakeX (AVX-512) kernels run every product of M K C <= 1e6 on their small-matrix code, on the
# calling thread (measured with the process's CPU time against the wall time: (100, 100) @ (100, 100),
# (1000, 10) @ (10, 100) and (20, 100) @ (100, 400) stayed on one thread, (101, 100) @ (100, 100) woke
# the second; under OPENBLAS_CORETYPE=Haswell all but the first of those woke it). There a product up to
# that size stays on NumPy: TimeRNN (10, 5, 100, 100), whose products are (50, 100) @ (100, 100), took
# 166 us a forward+backward on the packed kernels (which pack W at every call) and 112 on NumPy.
# Most, not all: (512, 13) @ (13, 128).T and (512, 128) @ (128, 13) woke OpenBLAS's second thread, which
# spun against numba's (ch07 Seq2seq at default threads: 6.5 -> 22 ms an iteration), so above 65536 * 4
# they run with BLAS capped to one thread.
OPENBLAS_ONE_THREAD_SMALL_KERNELS = 1_000_000
SPLIT_FLOPS_LARGE_B = 1e9
# And from 200 MFLOP a transposed A (the weight gradients' x.T), which the packed kernels must copy
# first: (1120, 200).T @ (1120, 800) split 249, packed 186 GFLOP/s; but (400, 200).T @ (400, 800),
# zaremba-small's dWx and dWh (128 MFLOP), split 126, packed 220 (Intel Xeon with AMX, 2 threads).
SPLIT_FLOPS_TRANSPOSED_A = 2e8
# With MKL's sequential GEMM in the split (nprnn.accel.mkl), which needs no copy of a transposed operand,
# the split wins from smaller products (GFLOP/s, split / packed, Intel Xeon, 2 threads): (2240, 200) @
# (200, 800) 307 / 279 and (700, 400) @ (400, 1600) 295 / 252, but (1120, 200) @ (200, 800) 265 / 262
# and (400, 200) @ (200, 800) 218 / 247; a transposed A or B from ~120 MFLOP: (200, 400).T @ (400, 800)
# 229 / 219, (400, 800) @ (800, 200).T 215 / 194, (128, 640).T @ (640, 512) 192 / 200.
SPLIT_FLOPS_MKL = 3e8
SPLIT_FLOPS_TRANSPOSED_MKL = 1.2e8
# On one thread, with BLAS on one thread too, OpenBLAS beats the packed kernels on a transposed A and
# on narrow products (GFLOP/s, BLAS / packed, AMD EPYC: (256, 4480).T @ (4480, 1024) 94 / 71,
# (128, 896).T @ (896, 512) 84 / 69, (896, 512) @ (512, 16) 78 / 54, (700, 400) @ (400, 100) 99 / 86),
# and loses from 128 columns ((896, 512) @ (512, 128) 101 / 109, (640, 128) @ (128, 512) 99 / 104).
NARROW_ON_ONE_THREAD = 128
# Below this, on one thread, packing B costs more than the packed kernels gain: the forward of the
# textbook's ch05 output layer, (50, 100) @ (100, 418), took 128-138 us packed and 100-105 us on
# OpenBLAS inside a training step (Intel Xeon, AVX-512).
PACK_ON_ONE_THREAD = 1e7
# With MKL (nprnn.accel.mkl), products on one thread from this size run on its sequential GEMM, which
# never wakes a thread: 5-15% faster than OpenBLAS on one thread, ctypes' call included ((50, 100) @
# (100, 418) 34.8 / 38.4 us, (290, 256) @ (256, 1024) 1019 / 1168 us); the textbook's ch07 Seq2seq on
# one thread 8.2 -> 7.2 ms an iteration.
MKL_ON_ONE_THREAD = 2e6
# A product on its own (not a step of a time loop) wakes numba's threads, which have gone to sleep
# during the Python between calls: on a 2-core virtual machine the wake-up took longer than the work
# up to ~10 MFLOP (measured after 3 ms of serial work, 1 / 2 threads: (50, 100) @ (100, 100) 42 / 103
# us, (50, 100) @ (100, 418) 98 / 121 us), so smaller ones stay on the calling thread. The steps of a
# time loop follow packed.PARALLEL_FLOPS: there the threads are awake from the step before.
PARALLEL_FLOPS_ALONE = 1e7


def matmul(a, b, out=None):
    """``a @ b`` of two 2-D arrays of one float dtype: the smallest on NumPy's (OpenBLAS keeps such a
    product on the calling thread); else on the packed kernels (``packed.matmul``), or
    for large products on BLAS, one thread per block of columns (``blas.split_matmul``; measured on
    (700, 650) @ (650, 2600): packed 266 GFLOP/s, split 334, BLAS's own two threads 330). Either way
    BLAS's own threads stay asleep. The path and the split follow the sizes alone."""
    M, K = a.shape
    C = b.shape[1]
    if out is not None and not (out.flags.c_contiguous and out.shape == (M, C)):
        out[...] = matmul(a, b)
        return out
    if M * K * C <= OPENBLAS_ONE_THREAD:
        return np.matmul(a, b, out=out)  # OpenBLAS runs it on the calling thread: no packing
    if M * K * C <= blas.openblas_one_thread(OPENBLAS_ONE_THREAD, OPENBLAS_ONE_THREAD_SMALL_KERNELS):
        with blas.one_thread():
            return np.matmul(a, b, out=out)
    flops = 2 * M * K * C
    threads = 1 if flops < PARALLEL_FLOPS_ALONE else packed.use_threads(M, K, C, _cap())
    transposed_a = a.strides[1] != a.itemsize
    on_mkl = mkl.gemms() is not None
    if not on_mkl:
        large = (
            flops >= SPLIT_FLOPS
            or (flops >= SPLIT_FLOPS_LARGE_B and K * C >= 1_000_000)
            or (flops >= SPLIT_FLOPS_TRANSPOSED_A and transposed_a)
        )
    else:
        transposed = transposed_a or b.strides[1] != b.itemsize
        large = flops >= SPLIT_FLOPS_MKL or (flops >= SPLIT_FLOPS_TRANSPOSED_MKL and transposed)
    if threads > 1 and large and C >= 32 * threads and blas.can_cap():
        return _checked(blas.split_matmul(a, b, np.empty((M, C), a.dtype) if out is None else out, threads), a, b)
    if threads == 1 and flops >= MKL_ON_ONE_THREAD and on_mkl:
        result = np.empty((M, C), a.dtype) if out is None else out
        if mkl.matmul(a, b, result):
            return _checked(result, a, b)
    narrow = C < NARROW_ON_ONE_THREAD or a.strides[1] != a.itemsize
    if threads == 1 and (narrow or flops < PACK_ON_ONE_THREAD) and blas.single_threaded():
        return np.matmul(a, b, out=out)
    return _checked(packed.matmul(a, b, out, cap=threads), a, b)


def _checked(out, a, b):
    """``out`` of a product NumPy did not compute on this thread (the packed kernels, or the pool threads
    of ``split_matmul``, which do not see this thread's ``np.errstate``): overflow raises as ``np.matmul``
    would under ``np.errstate(over="raise")``."""
    errors = np.geterr()
    if "raise" in (errors["over"], errors["invalid"]) and not np.isfinite(out).all():
        if np.isfinite(a).all() and np.isfinite(b).all():
            raise FloatingPointError("overflow encountered in matmul")
    return out


# ---------------------------------------------------------------- RNN
# Every kernel works row by row on 1-D views, the gate blocks of a row being named slices, with one
# short loop per block written: LLVM vectorises such loops (measured: one loop writing several blocks
# does not vectorise and runs 3-5x slower; the LSTM backward step runs 1.7x faster on 1-D views than
# indexing the 2-D arrays, the other steps within 25% either way).


@numba.njit(**_JIT)
def rnn_forward_step(h, rec, b, h_prev, t, lengths, first, last):
    """``h = tanh(h + b + rec)`` in place (``h`` holds ``x_t @ Wx`` on entry, ``rec = h_prev @ Wh``)."""
    H = h.shape[1]
    for n in range(first, last):
        hn, rn = h[n], rec[n]
        if t < lengths[n]:
            for j in range(H):
                hn[j] = _tanh(hn[j] + b[j] + rn[j])
        else:
            hn[:] = h_prev[n]


@numba.njit(**_JIT)
def rnn_backward_step(da, dhs, dh_rec, dh_final, h, t, lengths, first, last):
    """``da = (dhs_t + dh_next) * (1 - h_t^2)``: the gradient of step t's pre-activation."""
    H = da.shape[1]
    one = _const(da, 1.0)
    for n in range(first, last):
        dan, hn, dh_out = da[n], h[n], dhs[n, t]
        if t >= lengths[n]:
            dan[:] = 0
            continue
        dh_next = dh_final[n] if t == lengths[n] - 1 else dh_rec[n]
        for j in range(H):
            dan[j] = (dh_out[j] + dh_next[j]) * (one - hn[j] * hn[j])


# ---------------------------------------------------------------- LSTM (gates f, g, i, o)


@numba.njit(**_JIT)
def lstm_forward_step(a, rec, bias, h_prev, c_prev, h, c, tanh_c, t, lengths, first, last):
    """One LSTM step. ``a: (N, 4H)`` holds ``x_t @ Wx`` on entry and the gates f, g, i, o on exit;
    ``bias: (1 or N, 4H)`` is ``b`` (plus a row's ``step_bias``). The f, i, o columns of ``rec`` are
    pre-halved (Wh was packed so), and those of ``a + bias`` are halved here (exact, a power of two),
    so that ``sigmoid(2u) = 0.5 * tanh(u) + 0.5``."""
    H = h.shape[1]
    half = _const(a, 0.5)
    per_row = bias.shape[0] > 1
    for n in range(first, last):
        an, rn, bn = a[n], rec[n], bias[n if per_row else 0]
        f, g, i, o = an[:H], an[H : 2 * H], an[2 * H : 3 * H], an[3 * H :]
        rf, rg, ri, ro = rn[:H], rn[H : 2 * H], rn[2 * H : 3 * H], rn[3 * H :]
        bf, bg, bi, bo = bn[:H], bn[H : 2 * H], bn[2 * H : 3 * H], bn[3 * H :]
        for j in range(H):
            f[j] = half * _tanh(half * (f[j] + bf[j]) + rf[j]) + half
        for j in range(H):
            g[j] = _tanh(g[j] + bg[j] + rg[j])
        for j in range(H):
            i[j] = half * _tanh(half * (i[j] + bi[j]) + ri[j]) + half
        for j in range(H):
            o[j] = half * _tanh(half * (o[j] + bo[j]) + ro[j]) + half
        cn, tcn, hn = c[n], tanh_c[n], h[n]
        if t < lengths[n]:
            cp = c_prev[n]
            for j in range(H):
                cn[j] = f[j] * cp[j] + i[j] * g[j]
            for j in range(H):
                tcn[j] = _tanh(cn[j])
            for j in range(H):
                hn[j] = o[j] * tcn[j]
        else:  # finished: keep the states (tanh_c is not used by backward here, but keep it defined)
            cn[:] = c_prev[n]
            hn[:] = h_prev[n]
            tcn[:] = 0


@numba.njit(**_JIT)
def lstm_backward_step(da, dc, dhs, dh_rec, dh_final, a, c_prev, tanh_c, t, lengths, first, last):
    """Gradient of step t's pre-activations into ``da: (N, 4H)``; ``dc`` (the gradient into ``c_t``)
    becomes the gradient into ``c_{t-1}``. Finished rows pass ``dc`` through unchanged."""
    H = dc.shape[1]
    one = _const(da, 1.0)
    for n in range(first, last):
        dan = da[n]
        if t >= lengths[n]:
            dan[:] = 0
            continue
        dh_next = dh_final[n] if t == lengths[n] - 1 else dh_rec[n]
        an, dcn, dh_out, cp, tc = a[n], dc[n], dhs[n, t], c_prev[n], tanh_c[n]
        f, g, i, o = an[:H], an[H : 2 * H], an[2 * H : 3 * H], an[3 * H :]
        df, dg, di, do = dan[:H], dan[H : 2 * H], dan[2 * H : 3 * H], dan[3 * H :]
        for j in range(H):  # do holds dh, the total gradient into h_t, until the last loop
            do[j] = dh_out[j] + dh_next[j]
        for j in range(H):  # c_t feeds c_{t+1} and h_t = o * tanh(c_t)
            dcn[j] += do[j] * o[j] * (one - tc[j] * tc[j])
        for j in range(H):
            df[j] = dcn[j] * cp[j] * f[j] * (one - f[j])
        for j in range(H):
            dg[j] = dcn[j] * i[j] * (one - g[j] * g[j])
        for j in range(H):
            di[j] = dcn[j] * g[j] * i[j] * (one - i[j])
        for j in range(H):
            do[j] *= tc[j] * o[j] * (one - o[j])
        for j in range(H):
            dcn[j] *= f[j]


# ---------------------------------------------------------------- GRU (gates r, z, n; PyTorch formulation)


@numba.njit(**_JIT)
def gru_forward_step(a, rec, b, bhn, h_prev, h, hn, t, lengths, first, last):
    """One GRU step. ``a: (N, 3H)`` holds ``x_t @ Wx`` on entry and r, z, n on exit;
    ``rec = h_prev @ Wh``; ``hn`` receives ``h_prev @ Wh_n + bhn`` (backward needs it)."""
    H = h.shape[1]
    half = _const(a, 0.5)
    br, bz, bn = b[:H], b[H : 2 * H], b[2 * H :]
    for n in range(first, last):
        an, rn, hnn, hp, hrow = a[n], rec[n], hn[n], h_prev[n], h[n]
        r, z, cand = an[:H], an[H : 2 * H], an[2 * H :]
        rr, rz, rcand = rn[:H], rn[H : 2 * H], rn[2 * H :]
        for j in range(H):
            r[j] = half * _tanh(half * (r[j] + br[j] + rr[j])) + half
        for j in range(H):
            z[j] = half * _tanh(half * (z[j] + bz[j] + rz[j])) + half
        for j in range(H):
            hnn[j] = rcand[j] + bhn[j]
        for j in range(H):  # rec's n block is free now: scratch that does not alias a
            rcand[j] = cand[j] + bn[j] + r[j] * hnn[j]
        for j in range(H):
            cand[j] = _tanh(rcand[j])
        if t < lengths[n]:
            for j in range(H):  # h = (1 - z) n + z h_prev
                hrow[j] = cand[j] + z[j] * (hp[j] - cand[j])
        else:
            hrow[:] = hp


@numba.njit(**_JIT)
def gru_backward_step(da, dn_x, dh_direct, dhs, dh_rec, dh_final, a, hn, h_prev, t, lengths, first, last):
    """Gradients of step t: ``da: (N, 3H)`` of the recurrent projection ``h_prev @ Wh (+ bhn)``,
    ``dn_x: (N, H)`` of the n block of the input projection. ``dh_direct`` holds ``dh_{t+1} * z_{t+1}``
    (h_{t+1} depends on h_t directly, not only through ``@ Wh``) and becomes ``dh_t * z_t``."""
    H = dn_x.shape[1]
    one = _const(da, 1.0)
    for n in range(first, last):
        dan, dnx, dd = da[n], dn_x[n], dh_direct[n]
        if t >= lengths[n]:
            dan[:] = 0
            dnx[:] = 0
            dd[:] = 0
            continue
        an, hnn, hp, dh_out = a[n], hn[n], h_prev[n], dhs[n, t]
        r, z, cand = an[:H], an[H : 2 * H], an[2 * H :]
        dr, dz, dhn = dan[:H], dan[H : 2 * H], dan[2 * H :]
        # dd becomes dh (the total gradient into h_t), then dh * z_t at the end.
        if t == lengths[n] - 1:
            dh_final_n = dh_final[n]
            for j in range(H):
                dd[j] = dh_out[j] + dh_final_n[j]
        else:
            dh_rec_n = dh_rec[n]
            for j in range(H):
                dd[j] += dh_out[j] + dh_rec_n[j]
        for j in range(H):
            dnx[j] = dd[j] * (one - z[j]) * (one - cand[j] * cand[j])
        for j in range(H):
            dr[j] = dnx[j] * hnn[j] * r[j] * (one - r[j])
        for j in range(H):
            dz[j] = dd[j] * (hp[j] - cand[j]) * z[j] * (one - z[j])
        for j in range(H):
            dhn[j] = dnx[j] * r[j]
        for j in range(H):
            dd[j] *= z[j]


# The step kernels on numba's threads, a static split by rows, for steps of at least PARALLEL_ROWS
# units (rows x H): below that a parallel launch costs more than it saves.
PARALLEL_ROWS = 4096


@numba.njit(parallel=True, **_JIT)
def _rnn_forward_rows(h, rec, b, h_prev, t, lengths, threads):
    for part in numba.prange(threads):
        N = h.shape[0]
        rnn_forward_step(h, rec, b, h_prev, t, lengths, N * part // threads, N * (part + 1) // threads)


@numba.njit(parallel=True, **_JIT)
def _rnn_backward_rows(da, dhs, dh_rec, dh_final, h, t, lengths, threads):
    for part in numba.prange(threads):
        N = h.shape[0]
        rnn_backward_step(da, dhs, dh_rec, dh_final, h, t, lengths, N * part // threads, N * (part + 1) // threads)


@numba.njit(parallel=True, **_JIT)
def _lstm_forward_rows(a, rec, bias, h_prev, c_prev, h, c, tanh_c, t, lengths, threads):
    for part in numba.prange(threads):
        N = h.shape[0]
        first, last = N * part // threads, N * (part + 1) // threads
        lstm_forward_step(a, rec, bias, h_prev, c_prev, h, c, tanh_c, t, lengths, first, last)


@numba.njit(parallel=True, **_JIT)
def _lstm_backward_rows(da, dc, dhs, dh_rec, dh_final, a, c_prev, tanh_c, t, lengths, threads):
    for part in numba.prange(threads):
        N = dc.shape[0]
        first, last = N * part // threads, N * (part + 1) // threads
        lstm_backward_step(da, dc, dhs, dh_rec, dh_final, a, c_prev, tanh_c, t, lengths, first, last)


@numba.njit(parallel=True, **_JIT)
def _gru_forward_rows(a, rec, b, bhn, h_prev, h, hn, t, lengths, threads):
    for part in numba.prange(threads):
        N = h.shape[0]
        gru_forward_step(a, rec, b, bhn, h_prev, h, hn, t, lengths, N * part // threads, N * (part + 1) // threads)


@numba.njit(parallel=True, **_JIT)
def _gru_backward_rows(da, dn_x, dh_direct, dhs, dh_rec, dh_final, a, hn, h_prev, t, lengths, threads):
    for part in numba.prange(threads):
        N = dn_x.shape[0]
        first, last = N * part // threads, N * (part + 1) // threads
        gru_backward_step(da, dn_x, dh_direct, dhs, dh_rec, dh_final, a, hn, h_prev, t, lengths, first, last)


# ---------------------------------------------------------------- time loops
# A whole forward or backward loop in one call: the step's packed product (``packed.step_product``,
# ``product`` a ``packed.Product``), then its elementwise kernel. The time step costs no Python.


@numba.njit(**_JIT)
def _rnn_forward(hs_all, b, steps, panels, C, rec, rows, threads, by_rows):
    for t in range(hs_all.shape[0] - 1):
        packed.step_product(hs_all[t], panels, C, rec, rows, threads)
        if by_rows:
            _rnn_forward_rows(hs_all[t + 1], rec, b, hs_all[t], t, steps, threads)
        else:
            rnn_forward_step(hs_all[t + 1], rec, b, hs_all[t], t, steps, 0, steps.shape[0])


@numba.njit(**_JIT)
def _rnn_backward(dA, dhs, dh_final, hs_all, steps, panels, C, dh, rows, threads, by_rows):
    for t in range(dA.shape[0] - 1, -1, -1):
        if by_rows:
            _rnn_backward_rows(dA[t], dhs, dh, dh_final, hs_all[t + 1], t, steps, threads)
        else:
            rnn_backward_step(dA[t], dhs, dh, dh_final, hs_all[t + 1], t, steps, 0, steps.shape[0])
        packed.step_product(dA[t], panels, C, dh, rows, threads)


@numba.njit(**_JIT)
def _lstm_forward(gates, bias, hs_all, cs_all, tanh_cs, steps, panels, C, rec, rows, threads, by_rows):
    for t in range(gates.shape[0]):
        packed.step_product(hs_all[t], panels, C, rec, rows, threads)
        a, h_prev, c_prev, h, c, tanh_c = gates[t], hs_all[t], cs_all[t], hs_all[t + 1], cs_all[t + 1], tanh_cs[t]
        if by_rows:
            _lstm_forward_rows(a, rec, bias, h_prev, c_prev, h, c, tanh_c, t, steps, threads)
        else:
            lstm_forward_step(a, rec, bias, h_prev, c_prev, h, c, tanh_c, t, steps, 0, steps.shape[0])


@numba.njit(**_JIT)
def _lstm_backward(dA, dc, dhs, dh_final, gates, cs_all, tanh_cs, steps, panels, C, dh, rows, threads, by_rows):
    for t in range(dA.shape[0] - 1, -1, -1):
        if by_rows:
            _lstm_backward_rows(dA[t], dc, dhs, dh, dh_final, gates[t], cs_all[t], tanh_cs[t], t, steps, threads)
        else:
            lstm_backward_step(
                dA[t], dc, dhs, dh, dh_final, gates[t], cs_all[t], tanh_cs[t], t, steps, 0, steps.shape[0]
            )
        packed.step_product(dA[t], panels, C, dh, rows, threads)


@numba.njit(**_JIT)
def _gru_forward(gates, b, bhn, hs_all, hns, steps, panels, C, rec, rows, threads, by_rows):
    for t in range(gates.shape[0]):
        packed.step_product(hs_all[t], panels, C, rec, rows, threads)
        if by_rows:
            _gru_forward_rows(gates[t], rec, b, bhn, hs_all[t], hs_all[t + 1], hns[t], t, steps, threads)
        else:
            gru_forward_step(gates[t], rec, b, bhn, hs_all[t], hs_all[t + 1], hns[t], t, steps, 0, steps.shape[0])


@numba.njit(**_JIT)
def _gru_backward(dA, dA_n, dh_direct, dhs, dh_final, gates, hns, hs_all, steps, panels, C, dh, rows, threads, by_rows):
    for t in range(dA.shape[0] - 1, -1, -1):
        if by_rows:
            _gru_backward_rows(
                dA[t], dA_n[t], dh_direct, dhs, dh, dh_final, gates[t], hns[t], hs_all[t], t, steps, threads
            )
        else:
            gru_backward_step(
                dA[t], dA_n[t], dh_direct, dhs, dh, dh_final, gates[t], hns[t], hs_all[t], t, steps, 0, steps.shape[0]
            )
        packed.step_product(dA[t], panels, C, dh, rows, threads)


# The same loops as row blocks. A row's state depends on that row only, so with
# SPLIT_ROWS rows or more per thread each thread runs the whole loop on its own block of rows, its
# product on the whole of W, and the threads never wait for each other: no barrier per step
# (forward+backward, TimeLSTM, ms, panel split -> row blocks: (20, 35, 100, 100) 3.15-3.28 ->
# 2.48-2.60, (20, 20, 200, 200) 5.18-5.26 -> 4.76-4.98, (32, 35, 200, 200) 11.3-11.5 -> 10.9;
# (20, 35, 650, 650) and (64, 35, 650, 650) within noise. Intel Xeon, 2 threads).
SPLIT_ROWS = 8


# One parallel call per loop, not a generic launcher taking the block loop as an argument: numba's disk
# cache missed such a function in every new process (a dispatcher argument's type is the process's
# own), so it compiled again at each start and two processes saving at once failed.


@numba.njit(parallel=True, **_JIT)
def _rnn_forward_blocks(hs_all, b, steps, panels, C, rec, threads):
    N = hs_all.shape[1]
    for part in numba.prange(threads):
        first, last = N * part // threads, N * (part + 1) // threads
        for t in range(hs_all.shape[0] - 1):
            packed.rows_product(hs_all[t], panels, C, rec, first, last)
            rnn_forward_step(hs_all[t + 1], rec, b, hs_all[t], t, steps, first, last)


@numba.njit(parallel=True, **_JIT)
def _rnn_backward_blocks(dA, dhs, dh_final, hs_all, steps, panels, C, dh, threads):
    N = dh.shape[0]
    for part in numba.prange(threads):
        first, last = N * part // threads, N * (part + 1) // threads
        for t in range(dA.shape[0] - 1, -1, -1):
            rnn_backward_step(dA[t], dhs, dh, dh_final, hs_all[t + 1], t, steps, first, last)
            packed.rows_product(dA[t], panels, C, dh, first, last)


@numba.njit(parallel=True, **_JIT)
def _lstm_forward_blocks(gates, bias, hs_all, cs_all, tanh_cs, steps, panels, C, rec, threads):
    N = hs_all.shape[1]
    for part in numba.prange(threads):
        first, last = N * part // threads, N * (part + 1) // threads
        for t in range(gates.shape[0]):
            packed.rows_product(hs_all[t], panels, C, rec, first, last)
            a, h_prev, c_prev, h, c, tanh_c = gates[t], hs_all[t], cs_all[t], hs_all[t + 1], cs_all[t + 1], tanh_cs[t]
            lstm_forward_step(a, rec, bias, h_prev, c_prev, h, c, tanh_c, t, steps, first, last)


@numba.njit(parallel=True, **_JIT)
def _lstm_backward_blocks(dA, dc, dhs, dh_final, gates, cs_all, tanh_cs, steps, panels, C, dh, threads):
    N = dh.shape[0]
    for part in numba.prange(threads):
        first, last = N * part // threads, N * (part + 1) // threads
        for t in range(dA.shape[0] - 1, -1, -1):
            lstm_backward_step(dA[t], dc, dhs, dh, dh_final, gates[t], cs_all[t], tanh_cs[t], t, steps, first, last)
            packed.rows_product(dA[t], panels, C, dh, first, last)


@numba.njit(parallel=True, **_JIT)
def _gru_forward_blocks(gates, b, bhn, hs_all, hns, steps, panels, C, rec, threads):
    N = hs_all.shape[1]
    for part in numba.prange(threads):
        first, last = N * part // threads, N * (part + 1) // threads
        for t in range(gates.shape[0]):
            packed.rows_product(hs_all[t], panels, C, rec, first, last)
            gru_forward_step(gates[t], rec, b, bhn, hs_all[t], hs_all[t + 1], hns[t], t, steps, first, last)


@numba.njit(parallel=True, **_JIT)
def _gru_backward_blocks(dA, dA_n, dh_direct, dhs, dh_final, gates, hns, hs_all, steps, panels, C, dh, threads):
    N = dh.shape[0]
    for part in numba.prange(threads):
        first, last = N * part // threads, N * (part + 1) // threads
        for t in range(dA.shape[0] - 1, -1, -1):
            gru_backward_step(
                dA[t], dA_n[t], dh_direct, dhs, dh, dh_final, gates[t], hns[t], hs_all[t], t, steps, first, last
            )
            packed.rows_product(dA[t], panels, C, dh, first, last)


def _run(loop, blocks, product, *arrays):
    """The time loop on the product's threads: as row blocks (``blocks``) from ``SPLIT_ROWS`` rows a
    thread, else ``loop(*arrays, <product's arguments>, by_rows)``, its product split by panels and
    its step kernels by rows when a step has at least ``PARALLEL_ROWS`` units. From the sizes alone."""
    if product.threads > 1 and product.out.shape[0] >= SPLIT_ROWS * product.threads:
        blocks(*arrays, product.panels, product.C, product.out, product.threads)
    else:
        loop(*arrays, *product.args(), product.threads > 1 and product.out.size >= PARALLEL_ROWS)


def _initial_state_gradient(product, dh_final, T):
    """What a backward loop leaves in ``product.out``: the gradient into the initial state (for T = 0,
    the gradient into the final state, which is the initial one)."""
    return product.out.copy() if T else dh_final.copy()


def rnn_forward(hs_all, b, steps, product):
    """``hs_all[t + 1]`` holds step t's input projection ``x_t @ Wx`` on entry and ``h_t`` on exit."""
    _run(_rnn_forward, _rnn_forward_blocks, product, hs_all, b, steps)


def rnn_backward(dA, dhs, dh_final, hs_all, steps, product):
    """Fills ``dA``; returns the gradient into the initial state."""
    _run(_rnn_backward, _rnn_backward_blocks, product, dA, dhs, dh_final, hs_all, steps)
    return _initial_state_gradient(product, dh_final, dA.shape[0])


def lstm_forward(gates, bias, hs_all, cs_all, tanh_cs, steps, product):
    """``gates[t]`` holds step t's input projection ``x_t @ Wx`` on entry and its gates on exit;
    ``bias: (1 or N, 4H)``; ``product`` of Wh with its f, i, o columns halved."""
    _run(_lstm_forward, _lstm_forward_blocks, product, gates, bias, hs_all, cs_all, tanh_cs, steps)


def lstm_backward(dA, dc, dhs, dh_final, gates, cs_all, tanh_cs, steps, product):
    """Fills ``dA``; ``dc`` ends as the gradient into the initial cell state. Returns the one into
    the initial hidden state."""
    _run(_lstm_backward, _lstm_backward_blocks, product, dA, dc, dhs, dh_final, gates, cs_all, tanh_cs, steps)
    return _initial_state_gradient(product, dh_final, dA.shape[0])


def gru_forward(gates, b, bhn, hs_all, hns, steps, product):
    """``gates[t]`` holds step t's input projection ``x_t @ Wx`` on entry and r, z, n on exit."""
    _run(_gru_forward, _gru_forward_blocks, product, gates, b, bhn, hs_all, hns, steps)


def gru_backward(dA, dA_n, dh_direct, dhs, dh_final, gates, hns, hs_all, steps, product):
    """Fills ``dA`` and ``dA_n``; returns the gradient into the initial state through ``Wh``, to which
    ``dh_direct`` (then ``dh_0 * z_0``) is still to be added."""
    _run(_gru_backward, _gru_backward_blocks, product, dA, dA_n, dh_direct, dhs, dh_final, gates, hns, hs_all, steps)
    return _initial_state_gradient(product, dh_final, dA.shape[0])


# ---------------------------------------------------------------- TimeEmbedding's gradient (nprnn.layers.basic)


@numba.njit(cache=True, nogil=True, error_model="numpy")  # no fastmath: np.add.at's sums, in its order
def embedding_grad(dW, ids, douts):
    """``np.add.at(dW, ids, douts)`` for ``dW: (V, D)``, ``ids: (n,)`` in ``[-V, V)``, ``douts: (n, D)``."""
    V = dW.shape[0]
    for i in range(ids.shape[0]):
        row, src = dW[ids[i] % V], douts[i]
        for j in range(row.shape[0]):
            row[j] += src[j]


# ---------------------------------------------------------------- SGD and momentum (nprnn.optim)
# Memory-bound: NumPy's ``p -= lr * g`` makes a temporary and moves five arrays' worth of memory, the
# loop below three (measured: docs/performance.md, "a language model's memory-bound passes").


@numba.njit(cache=True, nogil=True, error_model="numpy")  # no fastmath: NumPy's roundings, one by one
def sgd_update(p, g, lr, scale):
    """``p -= lr (scale g)`` on 1-D contiguous arrays of one dtype, ``lr`` and ``scale`` in their dtype
    (as NumPy does; ``scale g`` rounded as ``g *= scale`` rounds it, leaving ``g`` as it is)."""
    lr, scale = _const(p, lr), _const(p, scale)
    for i in range(p.shape[0]):
        p[i] -= lr * (g[i] * scale)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def momentum_update(p, g, v, momentum, lr, scale):
    """``v = momentum v - lr (scale g); p += v`` in one pass, each operation as NumPy's in-place code does it."""
    momentum, lr, scale = _const(v, momentum), _const(v, lr), _const(v, scale)
    for i in range(p.shape[0]):
        vi = v[i] * momentum
        vi -= lr * (g[i] * scale)
        v[i] = vi
        p[i] += vi


# ---------------------------------------------------------------- the textbook's Adam (nprnn.dlfs2.optimizer)


@numba.njit(cache=True, nogil=True, error_model="numpy")  # no fastmath: NumPy's roundings, one by one
def book_adam_update(p, g, m, v, beta1, beta2, lr_t):
    """One step of the textbook's Adam on 1-D contiguous arrays of one dtype, in one pass instead of
    twelve: ``m += (1 - beta1)(g - m)``, ``v += (1 - beta2)(g^2 - v)``, ``p -= lr_t m / (sqrt(v) + 1e-7)``,
    each operation in the dtype NumPy gives it there (the Python floats in the arrays' dtype; ``lr_t``,
    a NumPy float64 in the book, makes the step float64, rounded into ``p``), so the same bits."""
    one_b1, one_b2, eps = _const(m, 1.0 - beta1), _const(v, 1.0 - beta2), _const(v, 1e-7)
    for i in range(p.shape[0]):
        gi = g[i]
        mi = m[i] + one_b1 * (gi - m[i])
        vi = v[i] + one_b2 * (gi * gi - v[i])
        m[i] = mi
        v[i] = vi
        p[i] = np.float64(p[i]) - lr_t * np.float64(mi) / np.float64(np.sqrt(vi) + eps)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def adam_update(p, g, m, v, beta1, beta2, step, root_bias2, eps, book, scale):
    """``nprnn.optim.Adam``'s step in one pass, each operation as its NumPy code does it, every Python
    float in the arrays' dtype (so the same bits). Default: ``v = b2 v + (1 - b2) g g``,
    ``p -= step m / (sqrt(v) / root_bias2 + eps)``; ``book``: ``v += (1 - b2)(g^2 - v)``,
    ``p -= step m / (sqrt(v) + eps)``; ``m += (1 - b1)(g - m)`` in both; ``g`` read as ``scale g``."""
    one_b1, b2, one_b2 = _const(m, 1.0 - beta1), _const(v, beta2), _const(v, 1.0 - beta2)
    step, root_bias2, eps, scale = _const(p, step), _const(v, root_bias2), _const(v, eps), _const(g, scale)
    for i in range(p.shape[0]):
        gi = g[i] * scale
        mi = m[i] + one_b1 * (gi - m[i])
        m[i] = mi
        if book:
            vi = v[i] + one_b2 * (gi * gi - v[i])
            v[i] = vi
            p[i] -= step * mi / (np.sqrt(vi) + eps)
        else:
            vi = v[i] * b2
            vi += one_b2 * gi * gi
            v[i] = vi
            p[i] -= step * mi / (np.sqrt(vi) / root_bias2 + eps)
