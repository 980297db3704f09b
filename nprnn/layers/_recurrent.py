"""What the recurrent layers share, so that rnn.py, lstm.py and gru.py hold only their cell math and
time loops.

- ``cell_params`` / ``init_params``: the weights of a cell with ``G`` pre-activation blocks side by
  side, ``Wx: (D, G H)``, ``Wh: (H, G H)``, ``b: (G H,)`` (plus the GRU's ``bhn: (H,)``);
- ``Weights``, ``Cell``: the cells' and time layers' parameters and gradients;
- ``TimeRecurrent``: the time layers' hidden state (initial, carried, ``set_state`` /
  ``reset_state``), the padding masks of ``lengths`` built once per call, the input and gradient
  checks, the masking of the outputs, the products' BLAS threads and the gradients of the two
  projections computed over all steps at once;
- ``sigmoid`` in the form that never overflows.
"""

import numpy as np

from nprnn import accel
from nprnn._checks import check_input, check_lengths, check_params

# TimeRNN / TimeLSTM compute their weight gradients in one product for inputs up to this wide
# (_shared_gradients). One thread, backward's weight gradients: (128, 29, 16, 256) LSTM 33-34 ms apart,
# 26-30 fused; (20, 35, 650, 650) 50-53 apart, 51-56 fused (on two threads 29-32 / 32-33).
NARROW_INPUT = 64


def sigmoid(x):
    # The tanh form is the same function but never overflows (exp(-x) does for x < -709).
    return 0.5 * np.tanh(0.5 * x) + 0.5


def sigmoid_inplace(a):
    """``a = sigmoid(a)`` in place, in the same tanh form."""
    a *= 0.5
    np.tanh(a, out=a)
    a *= 0.5
    a += 0.5


def cell_params(name, blocks, Wx, Wh, b, **extra):
    """Check the weights of a cell whose pre-activation is ``len(blocks)`` blocks of ``H`` side by side
    (e.g. ``("f", "g", "i", "o")``), each ``extra`` parameter of shape ``(H,)``; returns D, H, dtype."""
    G = len(blocks)
    dtype = check_params(name, {"Wx": Wx}, {"Wx": (None, None)})
    D, width = Wx.shape
    if width % G:
        raise ValueError(
            f"{name}: Wx must have shape (D, {G}H) (gates {', '.join(blocks)} side by side), "
            f"got {Wx.shape} whose second axis is not a multiple of {G}"
        )
    H = width // G
    shapes = {"Wx": (D, width), "Wh": (H, width), "b": (width,), **{key: (H,) for key in extra}}
    check_params(name, {"Wx": Wx, "Wh": Wh, "b": b, **extra}, shapes)
    return D, H, dtype


def init_params(D, H, G, seed, dtype):
    """``[Wx, Wh, b]`` of ``G`` blocks as in the textbook: ``randn / sqrt(fan_in)`` weights, zero bias."""
    rng = np.random.default_rng(seed)
    Wx = (rng.standard_normal((D, G * H)) / np.sqrt(D)).astype(dtype)
    Wh = (rng.standard_normal((H, G * H)) / np.sqrt(H)).astype(dtype)
    return [Wx, Wh, np.zeros(G * H, dtype=dtype)]


class Weights:
    """``params = [Wx, Wh, b, *extra]`` (the arrays given, checked for the class's ``BLOCKS``), their
    ``grads`` and ``D``, ``H``, ``dtype``."""

    BLOCKS = ()

    def __init__(self, Wx, Wh, b, **extra):
        self._name = type(self).__name__  # in error messages
        self.D, self.H, self.dtype = cell_params(self._name, self.BLOCKS, Wx, Wh, b, **extra)
        self.params = [Wx, Wh, b, *extra.values()]
        self.grads = [np.zeros_like(p) for p in self.params]


class Cell(Weights):
    """The base of the one-step cells RNN, LSTM and GRU."""

    cache = None  # what forward keeps for backward


class TimeRecurrent(Weights):
    """The base of TimeRNN, TimeLSTM and TimeGRU (see their docstrings for the contract).

    Fast path, as cuDNN does it: the input projection of all T steps is one matrix multiply; the
    time loop only does ``h @ Wh`` and the (fused) elementwise work into preallocated buffers; the
    weight gradients are single multiplies over all steps after the backward loop. Internally
    time-major, so each step's slice is contiguous: ``hs_all[0]`` is the initial state and
    ``hs_all[t + 1]`` the state after step t.

    A forward is ``_begin_forward``, the input projection and the time loop under
    ``_blas_threads``, then ``_end_forward``; a backward is ``_begin_backward``, the backward loop,
    then ``_shared_gradients`` (or, where the two projections' gradients differ, as in the GRU,
    ``_recurrent_gradient`` and ``_input_gradients``).
    """

    def __init__(self, Wx, Wh, b, stateful=False, **extra):
        super().__init__(Wx, Wh, b, **extra)
        self.stateful = stateful
        self.h = None
        self.dh = None
        self._cache = None
        self._batch = None  # (N, T) of the last forward

    def set_state(self, h):
        check_input(self._name, h, (None, self.H), self.dtype, "state h")
        self.h = h

    def reset_state(self):
        self.h = None

    def _initial_state(self, N, given, carried, what):
        """``given`` (``h0``, ...) if any, else the ``carried`` state of a stateful layer, else zeros."""
        if given is not None:
            return check_input(self._name, given, (N, self.H), self.dtype, what)
        if self.stateful and carried is not None:
            if carried.shape[0] != N:
                raise ValueError(
                    f"{self._name}: stateful layer carries a state for batch size {carried.shape[0]}, "
                    f"got a batch of {N}; call reset_state() when the batch size changes"
                )
            return carried
        return np.zeros((N, self.H), dtype=self.dtype)

    def _begin_forward(self, xs, lengths):
        """Checks ``xs`` and ``lengths``. Returns N, T, the time-major inputs ``(T N, D)`` and the padding
        masks: ``dead: (T, N)``, True where a row's sequence has ended (None without lengths), for the
        NumPy loops, and ``steps: (N,)``, each row's number of real steps, for the kernels."""
        check_input(self._name, xs, (None, None, self.D), self.dtype, "xs")
        N, T, D = xs.shape
        lengths = check_lengths(self._name, lengths, N, T)
        dead = None if lengths is None else np.arange(T)[:, None] >= lengths[None, :]
        steps = np.full(N, T, dtype=np.intp) if lengths is None else lengths
        return N, T, xs.transpose(1, 0, 2).reshape(T * N, D), dead, steps

    def _input_projection(self, xs_tm, scale=None, out=None):
        """Every step's input projection, ``xs_tm: (T N, D)`` -> ``(T N, G H)``, into ``out`` if given. With
        the kernels it is ``xs_tm @ Wx`` alone: the step kernels add the bias (and scale) as they read
        it, which costs no pass of its own over the output. On NumPy it is ``(xs_tm @ Wx + b) * scale``
        (``scale: (G H,)``, None for 1)."""
        Wx, b = self.params[0], self.params[2]
        if accel.kernels() is not None:
            return accel.matmul(xs_tm, Wx, out=out)
        out = accel.matmul(xs_tm, Wx if scale is None else Wx * scale, out=out)
        out += b if scale is None else b * scale
        return out

    def _blas_threads(self, N, T):
        return accel.threads_for_time_layer(N, T, self.D, self.H, len(self.BLOCKS))

    def _end_forward(self, hs_all, dead, cache):
        """Keeps the final state and what backward needs; returns ``hs: (N, T, H)``, zero past each
        row's length."""
        self.h = hs_all[-1].copy()
        self._cache, self._batch = cache, (hs_all.shape[1], hs_all.shape[0] - 1)
        hs = hs_all[1:].transpose(1, 0, 2)
        return np.ascontiguousarray(hs) if dead is None else hs * ~dead.T[:, :, None]

    def _begin_backward(self, dhs, **finals):
        """Checks that forward ran and the gradients' shapes; returns the gradients flowing into the
        final states (``dh_final=...``, ...), zeros for those not given."""
        if self._cache is None:
            raise RuntimeError(f"{self._name}: backward called before forward")
        N, T = self._batch
        check_input(self._name, dhs, (N, T, self.H), self.dtype, "dhs")
        given = [np.zeros((N, self.H), self.dtype) if g is None else g for g in finals.values()]
        for what, g in zip(finals, given):
            check_input(self._name, g, (N, self.H), self.dtype, what)
        return given

    def _shared_gradients(self, xs_tm, hs_all, dA):
        """``dWx``, ``dWh``, ``db`` and ``dxs: (N, T, D)`` when the input and the recurrent projections of
        every step share the pre-activation gradient ``dA: (T, N, G H)`` (RNN, LSTM). With a narrow input
        (``D <= NARROW_INPUT``) the three weight gradients are one product, ``[xs, h_prev, 1].T @ dA``,
        that reads ``dA`` once: apart, the product with the narrow ``xs`` and the sum for ``db`` each
        cost a pass over ``dA``, memory-bound. Wider inputs take the products apart, faster there."""
        if self.D > NARROW_INPUT:
            self._recurrent_gradient(hs_all, dA)
            return self._input_gradients(xs_tm, dA)
        T, N, width = dA.shape
        D, H = self.D, self.H
        dA2 = dA.reshape(T * N, width)
        inputs = np.empty((T * N, D + H + 1), dtype=self.dtype)  # [xs, h_prev, 1] at every step
        inputs[:, :D] = xs_tm
        inputs[:, D : D + H] = hs_all[:-1].reshape(T * N, H)
        inputs[:, D + H] = 1
        stacked = accel.matmul(inputs.T, dA2)
        self.grads[0][...] = stacked[:D]
        self.grads[1][...] = stacked[D : D + H]
        self.grads[2][...] = stacked[D + H]
        return self._input_gradient(dA)

    def _recurrent_gradient(self, hs_all, dA):
        """``dWh`` from ``dA: (T, N, G H)``, the gradient of every step's ``h_prev @ Wh``: one product."""
        T, N, width = dA.shape
        accel.matmul(hs_all[:-1].reshape(T * N, self.H).T, dA.reshape(T * N, width), out=self.grads[1])

    def _input_gradients(self, xs_tm, dA):
        """``dWx``, ``db`` and ``dxs: (N, T, D)`` from ``dA: (T, N, G H)``, the gradient of every step's
        input projection ``x @ Wx + b``: one product each."""
        T, N, width = dA.shape
        dA2 = dA.reshape(T * N, width)
        accel.matmul(xs_tm.T, dA2, out=self.grads[0])
        self.grads[2][...] = dA2.sum(axis=0)
        return self._input_gradient(dA)

    def _input_gradient(self, dA):
        """``dxs: (N, T, D)`` from ``dA: (T, N, G H)``: ``dA @ Wx.T``, one product over all steps."""
        T, N, width = dA.shape
        return accel.matmul(dA.reshape(T * N, width), self.params[0].T).reshape(T, N, self.D).transpose(1, 0, 2).copy()
