"""The non-recurrent time layers a language model is made of: embedding, affine, softmax loss, dropout.

All are batch-first and work on a whole sequence at once: ``ids: (N, T)`` ->
``TimeEmbedding`` -> ``(N, T, D)`` -> (recurrent layers) -> ``TimeAffine`` -> ``(N, T, V)`` ->
``TimeSoftmaxWithLoss`` -> a scalar. Textbook protocol: ``params`` / ``grads`` are lists
(empty for layers without parameters), ``backward`` writes ``grads`` in place.
"""

import numpy as np

from nprnn import accel
from nprnn._checks import FLOAT_DTYPES, check_input, check_params


class IdOutOfRangeError(IndexError, ValueError):
    """An id or target outside ``[0, V)``. Both an ``IndexError`` (what indexing raises)
    and a ``ValueError`` (what every other bad input raises), like NumPy's ``AxisError``."""


def _check_ids(name, ids, shape, what):
    """Integer array of the given shape (``None`` = any size). Returns it as an ndarray."""
    ids = np.asarray(ids)
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"{name}: {what} must be integers, got dtype {ids.dtype}")
    if ids.ndim != len(shape) or any(w is not None and w != s for w, s in zip(shape, ids.shape)):
        want = "(" + ", ".join("any" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name}: {what} must have shape {want}, got {ids.shape}")
    return ids


def _raise_out_of_range(name, what, values, bad, V, extra=""):
    pos = tuple(int(i) for i in np.argwhere(bad)[0])
    raise IdOutOfRangeError(
        f"{name}: {what} {values[pos]} at position {pos} is out of range for vocabulary size {V} "
        f"(valid: 0..{V - 1}{extra})"
    )


class TimeEmbedding:
    """Row lookup ``W[ids]`` for every position of a batch of sequences.

    ``W: (V, D)``; ``forward(ids: (N, T) int) -> (N, T, D)``; ``backward(dout: (N, T, D)) -> None``,
    writing ``dW`` (rows of repeated ids summed) into ``grads[0]``.
    """

    def __init__(self, W):
        check_params("TimeEmbedding", {"W": W}, {"W": (None, None)})
        self.V, self.D = W.shape
        self.dtype = W.dtype
        self.params = [W]
        self.grads = [np.zeros_like(W)]
        self.ids = None

    def forward(self, ids):
        ids = _check_ids("TimeEmbedding", ids, (None, None), "ids")
        if ids.size and (ids.min() < 0 or ids.max() >= self.V):  # no silent negative indexing
            _raise_out_of_range("TimeEmbedding", "id", ids, (ids < 0) | (ids >= self.V), self.V)
        self.ids = ids
        return self.params[0][ids]

    def backward(self, dout):
        if self.ids is None:
            raise RuntimeError("TimeEmbedding: backward called before forward")
        check_input("TimeEmbedding", dout, (*self.ids.shape, self.D), self.dtype, "dout")
        embedding_grad(self.grads[0], self.ids, dout)
        return None


def embedding_grad(dW, ids, dout):
    """``dW[...] = 0; np.add.at(dW, ids, dout)``, faster: the gradient of a row lookup ``W[ids]``.

    ``dW: (V, D)``; ``ids``: integer ids of any shape, in ``[-V, V)``; ``dout: ids.shape + (D,)``. The numba
    backend adds the rows in order in one pass, as ``np.add.at`` does (the same sums); NumPy sorts the
    ids once, assigns each id's first row and adds its repeats with one ``np.add.reduceat`` (the same
    sums up to float rounding; ``np.add.at`` itself is about 4x slower at V=10000, D=650, N*T=700).
    """
    V, D = dW.shape
    ids = np.asarray(ids).reshape(-1)
    douts = np.asarray(dout).reshape(ids.size, D)
    dW[...] = 0
    kernels = accel.kernels()
    if kernels is not None and dW.flags.c_contiguous and douts.dtype == dW.dtype and dW.dtype in FLOAT_DTYPES:
        kernels.embedding_grad(dW, ids.astype(np.intp, copy=False), np.ascontiguousarray(douts))
        return
    ids = ids % V  # negative ids count from the end, as in W[ids]
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    first = np.empty(ids.size, dtype=bool)
    first[:1] = True
    np.not_equal(sorted_ids[1:], sorted_ids[:-1], out=first[1:])
    dW[sorted_ids[first]] = douts[order[first]]
    repeats = np.flatnonzero(~first)
    if repeats.size:
        rep_ids = sorted_ids[repeats]  # still sorted, so each id's repeats are contiguous
        starts = np.flatnonzero(np.r_[True, rep_ids[1:] != rep_ids[:-1]])
        dW[rep_ids[starts]] += np.add.reduceat(douts[order[repeats]], starts, axis=0)


def stack_affine_params(W, b):
    """Copies of ``W: (D, V)`` and ``b: (V,)`` as the rows of one ``(D + 1, V)`` array, ``b`` the last:
    a ``TimeAffine`` given such a pair folds the bias into its products (see there)."""
    Wb = np.empty((W.shape[0] + 1, W.shape[1]), dtype=W.dtype)
    Wb[:-1], Wb[-1] = W, b
    return Wb[:-1], Wb[-1]


def _stacked(W, b):
    """The ``(D + 1, V)`` array whose rows ``W`` and ``b`` are (``stack_affine_params``), else None."""
    Wb = W.base
    stacked = (
        isinstance(Wb, np.ndarray) and b.base is Wb and Wb.ndim == 2 and Wb.flags.c_contiguous
        and Wb.shape == (W.shape[0] + 1, W.shape[1]) and W.strides == Wb.strides
        and W.ctypes.data == Wb.ctypes.data and b.ctypes.data == Wb[-1].ctypes.data
    )  # fmt: skip
    return Wb if stacked else None


class TimeAffine:
    """``xs @ W + b`` at every time step, as one matrix multiply over all ``N * T`` positions.

    ``W: (D, V)``, ``b: (V,)``; ``forward(xs: (N, T, D)) -> (N, T, V)``;
    ``backward(dout: (N, T, V)) -> dxs: (N, T, D)``.

    When ``W`` and ``b`` are the rows of one array (``stack_affine_params``, as the language model
    makes them) and ``V > D``, the bias rides in the product: ``[xs, 1] @ [W; b]`` in forward and
    ``[xs, 1].T @ dout = [dW; db]`` in backward, so no pass over the large ``(N T, V)`` arrays adds
    ``b`` or sums ``db`` (memory-bound passes that cost as much as a third of the product).
    """

    def __init__(self, W, b):
        D, V = W.shape if getattr(W, "ndim", 0) == 2 else (None, None)
        self.dtype = check_params("TimeAffine", {"W": W, "b": b}, {"W": (None, None), "b": (V,)})
        self.D, self.V = D, V
        self.params = [W, b]
        # folding copies xs into [xs, 1] to spare passes over the output: worth it when the output is wider
        self._Wb = _stacked(W, b) if V is not None and V > D else None
        if self._Wb is None:
            self.grads = [np.zeros_like(W), np.zeros_like(b)]
        else:
            self._dWb = np.zeros_like(self._Wb)
            self.grads = [self._dWb[:-1], self._dWb[-1]]
        self.xs = self._xs1 = None

    def forward(self, xs):
        W, b = self.params
        check_input("TimeAffine", xs, (None, None, self.D), self.dtype, "xs")
        N, T, D = xs.shape
        flops = 2 * N * T * (D + (self._Wb is not None)) * self.V  # + the row of ones when stacked
        with accel.threads_for(flops, flops):  # the time layers' BLAS-thread policy (nprnn.accel.blas)
            if self._Wb is None:
                out = accel.matmul(xs.reshape(N * T, D), W)
                out += b
            else:
                self._xs1 = np.empty((N * T, D + 1), dtype=xs.dtype)  # [xs, 1]
                self._xs1[:, :D] = xs.reshape(N * T, D)
                self._xs1[:, D] = 1
                out = accel.matmul(self._xs1, self._Wb)
        self.xs = xs
        return out.reshape(N, T, self.V)

    def backward(self, dout):
        if self.xs is None:
            raise RuntimeError("TimeAffine: backward called before forward")
        W, _ = self.params
        N, T, D = self.xs.shape
        check_input("TimeAffine", dout, (N, T, self.V), self.dtype, "dout")
        dout2 = dout.reshape(N * T, self.V)
        flops = 2 * N * T * (D + (self._Wb is not None)) * self.V  # + the row of ones when stacked
        with accel.threads_for(flops, flops):
            if self._Wb is None:
                accel.matmul(self.xs.reshape(N * T, D).T, dout2, out=self.grads[0])  # no (D, V) temporary
            else:
                accel.matmul(self._xs1.T, dout2, out=self._dWb)  # dW and, from the row of ones, db
            dxs = accel.matmul(dout2, W.T)
        if self._Wb is None:
            np.sum(dout2, axis=0, out=self.grads[1])
        return dxs.reshape(N, T, D)


PARALLEL_SOFTMAX = 1 << 20  # scores: from a million, the rows are split over the cores (nprnn.accel)


def _tame_maxes(dtype, V):
    """The row maxima for which ``exp(scores)`` needs no ``- max``: the sum of ``V`` terms cannot overflow
    (``V e^high`` stays a factor e below the largest float), and the largest term is a normal number
    with 20 nats to spare (terms that underflow are below ``e^-20`` of it, nothing in the sum)."""
    info = np.finfo(dtype)
    return float(np.log(info.tiny)) + 20, float(np.log(info.max)) - float(np.log(V)) - 1


def softmax_rows(function, rows, size):
    """``function(lo, hi)`` over ``range(rows)`` of a ``size``-element softmax: in blocks over the cores
    from ``PARALLEL_SOFTMAX`` elements (``accel.in_row_blocks``), else in one call."""
    if size >= PARALLEL_SOFTMAX:
        accel.in_row_blocks(function, rows)
    else:
        function(0, rows)


class TimeSoftmaxWithLoss:
    """Softmax + cross-entropy at every position, averaged over the positions that count.

    ``forward(xs: (N, T, V) scores, ts: (N, T) int targets) -> loss`` (a Python float): the mean of
    ``-log softmax(xs)[t]`` over positions whose target is not ``ignore_label`` (default -1, the
    textbook's padding label; ``None`` masks nothing). ``backward(dout=1.0) -> dxs: (N, T, V)``, zero
    at masked positions. A batch where every position is masked has loss ``0.0`` and zero gradient
    (rather than 0/0 = nan), so a fully padded batch is harmless.

    Stable for huge scores: a row whose maximum is out of a safe range (``_tame_maxes``; for float32
    and V = 10,000 about -67 to 78) is shifted by it, the loss being ``log(sum(exp(xs - max))) -
    (xs_t - max)``, never the log of an underflowed probability; the others skip that pass over the
    scores: ``log(sum(exp(xs))) - xs_t``.
    """

    def __init__(self, ignore_label=-1):
        self.ignore_label = ignore_label
        self.params, self.grads = [], []
        self._cache = None

    def forward(self, xs, ts):
        name = "TimeSoftmaxWithLoss"
        if not isinstance(xs, np.ndarray) or xs.dtype not in FLOAT_DTYPES or xs.ndim != 3:
            got = f"{xs.dtype} array of shape {xs.shape}" if isinstance(xs, np.ndarray) else type(xs).__name__
            raise ValueError(f"{name}: xs must be a float32/float64 array of shape (N, T, V), got {got}")
        N, T, V = xs.shape
        if V == 0:  # no class to put the probability on (and log(V) below would warn)
            raise ValueError(f"{name}: xs must have at least one class, got shape {xs.shape}")
        ts = _check_ids(name, ts, (N, T), "ts")
        counted = np.ones((N, T), bool) if self.ignore_label is None else ts != self.ignore_label
        bad = counted & ((ts < 0) | (ts >= V))
        if bad.any():
            _raise_out_of_range(name, "target", ts, bad, V, f", or ignore_label {self.ignore_label}")

        scores = xs.reshape(N * T, V)
        targets = np.where(counted, ts, 0).reshape(N * T)  # any valid index at masked positions
        exps = np.empty_like(scores)
        sums = np.empty(N * T, dtype=scores.dtype)
        losses = np.empty(N * T, dtype=scores.dtype)

        low, high = _tame_maxes(scores.dtype, V)

        def rows(lo, hi):  # row by row: the same numbers whatever the blocks
            x, e = scores[lo:hi], exps[lo:hi]
            maxes = x.max(axis=1)
            shifted = np.zeros(hi - lo, dtype=x.dtype)
            wild = ~((maxes >= low) & (maxes <= high))  # NaN too
            if wild.any():  # those rows shifted by their max (the others by 0, exactly x)
                shifted[wild] = maxes[wild]
                np.exp(np.subtract(x, shifted[:, None], out=e), out=e)
            else:  # no row needs x - max: a pass over the scores fewer
                np.exp(x, out=e)
            target_scores = x[np.arange(hi - lo), targets[lo:hi]] - shifted
            e.sum(axis=1, out=sums[lo:hi])
            np.subtract(np.log(sums[lo:hi]), target_scores, out=losses[lo:hi])

        softmax_rows(rows, N * T, scores.size)
        counted = counted.reshape(N * T)
        n_counted = int(counted.sum())
        loss = float(losses[counted].sum() / n_counted) if n_counted else 0.0
        # softmax = exps / sums; the division is left to backward, where it fuses with the scaling.
        self._cache = (exps, sums, targets, counted, n_counted, (N, T, V))
        return loss

    def backward(self, dout=1.0):
        if self._cache is None:
            raise RuntimeError("TimeSoftmaxWithLoss: backward called before forward")
        exps, sums, targets, counted, n_counted, shape = self._cache
        # d loss / d scores = (softmax - onehot(t)) * dout / n_counted at counted rows, 0 elsewhere.
        row_scale = np.zeros(len(sums), dtype=exps.dtype)
        if n_counted:
            row_scale[counted] = dout / n_counted
        scale = row_scale / sums
        dxs = np.empty_like(exps)

        def rows(lo, hi):
            np.multiply(exps[lo:hi], scale[lo:hi, None], out=dxs[lo:hi])

        softmax_rows(rows, len(sums), exps.size)
        dxs[np.arange(len(sums)), targets] -= row_scale
        return dxs.reshape(shape)


class TimeDropout:
    """Inverted dropout: at train time zero each element with probability ``ratio`` and scale
    the survivors by ``1 / (1 - ratio)``, so the expected output equals the input and nothing
    needs rescaling at test time. With ``.train = False`` (or ``ratio == 0``) it is the identity.

    ``forward(xs: any shape) -> same shape``; ``backward(dout) -> dxs`` through the same mask.
    Randomness comes from its own generator ``.rng = np.random.default_rng(seed)``; save and
    restore ``.rng.bit_generator.state`` to replay a mask.
    """

    def __init__(self, ratio=0.5, seed=0):
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"TimeDropout: ratio must be in [0, 1), got {ratio}")
        self.ratio = ratio
        self.rng = np.random.default_rng(seed)
        self.train = True
        self.params, self.grads = [], []
        self.mask = None
        self._shape = None

    def forward(self, xs):
        if not isinstance(xs, np.ndarray) or xs.dtype not in FLOAT_DTYPES:
            got = xs.dtype if isinstance(xs, np.ndarray) else type(xs).__name__
            raise ValueError(f"TimeDropout: xs must be a float32/float64 array, got {got}")
        self._shape, self._dtype = xs.shape, xs.dtype
        if not self.train or self.ratio == 0.0:
            self.mask = None
            return xs
        keep = self.rng.random(xs.shape, dtype=xs.dtype) >= self.ratio
        self.mask = keep * xs.dtype.type(1.0 / (1.0 - self.ratio))
        return xs * self.mask

    def backward(self, dout):
        if self._shape is None:
            raise RuntimeError("TimeDropout: backward called before forward")
        if not isinstance(dout, np.ndarray) or dout.shape != self._shape:
            got = dout.shape if isinstance(dout, np.ndarray) else type(dout).__name__
            raise ValueError(f"TimeDropout: dout must have the forward input's shape {self._shape}, got {got}")
        if dout.dtype != self._dtype:  # else a float64 gradient would silently flow into float32 layers
            raise ValueError(f"TimeDropout: dout must have the forward input's dtype {self._dtype}, got {dout.dtype}")
        return dout if self.mask is None else dout * self.mask
