"""Stacking recurrent time layers: ``Bidirectional``, the multi-layer ``TimeStack``, and ``make_recurrent``.

These wrap any recurrent time layer with the TimeRNN protocol (``TimeRNN``, ``TimeLSTM``,
``TimeGRU``): ``forward(xs, h0[, c0], *, lengths)``, ``backward(dhs, dh_final[, dc_final])``,
``.h``/``.dh`` (and ``.c``/``.dc`` for a layer with a cell state), ``D``, ``H``, ``dtype``.
States are shaped as in PyTorch: ``(num_layers * num_directions, N, H)``, layer by layer,
forward direction first.
"""

import numpy as np

from nprnn._checks import check_input, check_lengths, positive_int
from nprnn.layers.basic import TimeDropout
from nprnn.layers.gru import TimeGRU, init_gru_params
from nprnn.layers.lstm import TimeLSTM, init_lstm_params
from nprnn.layers.rnn import TimeRNN, init_rnn_params

KINDS = {
    "rnn": (TimeRNN, init_rnn_params),
    "lstm": (TimeLSTM, init_lstm_params),
    "gru": (TimeGRU, init_gru_params),
}


def has_cell_state(layer):
    """True for a layer with an LSTM-style cell state (it takes ``c0`` / ``dc_final`` and has ``.c`` / ``.dc``).

    A layer says so with a ``has_cell_state`` attribute; a layer without one has a cell state
    iff it exposes ``.c`` (TimeLSTM does, TimeRNN and TimeGRU do not).
    """
    flag = getattr(layer, "has_cell_state", None)
    return hasattr(layer, "c") if flag is None else bool(flag)


def _reverse_index(lengths, N, T):
    """``(N, T)`` time index reading each row backwards within its own length (padding stays put);
    ``None`` (plain ``[:, ::-1]``) without lengths. It is its own inverse."""
    if lengths is None:
        return None
    t = np.arange(T)
    L = lengths[:, None]
    return np.where(t < L, L - 1 - t, t)


def _reverse(a, index):
    if index is None:
        return a[:, ::-1]
    return a[np.arange(a.shape[0])[:, None], index]


class Bidirectional:
    """Two recurrent time layers of one kind reading the sequence in opposite directions.

    ``forward(xs: (N, T, D), h0: (2, N, H) | None, c0: (2, N, H) | None, *, lengths: (N,) | None)
    -> hs: (N, T, 2H)`` = ``[forward outputs, backward outputs]`` on the last axis, as PyTorch's
    ``bidirectional=True``. The backward layer reads each sequence reversed within its own
    length, so its final state ``.h[1]`` is its state after the first real step.
    ``backward(dhs: (N, T, 2H), dh_final: (2, N, H) | None, dc_final: (2, N, H) | None) -> dxs``.
    ``.h``, ``.dh`` (and ``.c``, ``.dc`` for LSTMs) are ``(2, N, H)``: index 0 forward, 1 backward.
    Never stateful: the backward direction starts at the end of the sequence.
    """

    num_directions = 2
    stateful = False

    def __init__(self, fwd, bwd):
        if type(fwd) is not type(bwd):
            raise ValueError(
                f"Bidirectional: both directions must be the same kind of layer, "
                f"got {type(fwd).__name__} and {type(bwd).__name__}"
            )
        if (fwd.D, fwd.H, fwd.dtype) != (bwd.D, bwd.H, bwd.dtype):
            raise ValueError(
                f"Bidirectional: both directions must have the same input size, hidden size and dtype, "
                f"got (D={fwd.D}, H={fwd.H}, {fwd.dtype}) and (D={bwd.D}, H={bwd.H}, {bwd.dtype})"
            )
        if fwd.stateful or bwd.stateful:
            raise ValueError(
                "Bidirectional: layers must not be stateful (got stateful=True): the backward direction "
                "starts from the end of each sequence, so there is no state to carry to the next batch"
            )
        self.fwd, self.bwd = fwd, bwd
        self.D, self.H, self.dtype = fwd.D, fwd.H, fwd.dtype
        self.has_cell_state = has_cell_state(fwd)
        self.params = fwd.params + bwd.params
        self.grads = fwd.grads + bwd.grads
        self._cache = None

    def _states(self, h, c, what_h, what_c, N):
        """Split ``(2, N, H)`` states into per-direction argument tuples for the two layers."""
        hs = [None, None] if h is None else check_input("Bidirectional", h, (2, N, self.H), self.dtype, what_h)
        if not self.has_cell_state:
            if c is not None:
                raise ValueError(
                    f"Bidirectional: {what_c} is only for layers with a cell state (LSTM), "
                    f"not {type(self.fwd).__name__}"
                )
            return (hs[0],), (hs[1],)
        cs = [None, None] if c is None else check_input("Bidirectional", c, (2, N, self.H), self.dtype, what_c)
        return (hs[0], cs[0]), (hs[1], cs[1])

    def forward(self, xs, h0=None, c0=None, *, lengths=None):
        check_input("Bidirectional", xs, (None, None, self.D), self.dtype, "xs")
        N, T, _ = xs.shape
        lengths = check_lengths("Bidirectional", lengths, N, T)
        states_f, states_b = self._states(h0, c0, "h0", "c0", N)
        rev = _reverse_index(lengths, N, T)
        hs_f = self.fwd.forward(xs, *states_f, lengths=lengths)
        hs_b = self.bwd.forward(_reverse(xs, rev), *states_b, lengths=lengths)
        self._cache = (N, T, rev)
        return np.concatenate([hs_f, _reverse(hs_b, rev)], axis=2)

    def backward(self, dhs, dh_final=None, dc_final=None):
        if self._cache is None:
            raise RuntimeError("Bidirectional: backward called before forward")
        N, T, rev = self._cache
        H = self.H
        check_input("Bidirectional", dhs, (N, T, 2 * H), self.dtype, "dhs")
        finals_f, finals_b = self._states(dh_final, dc_final, "dh_final", "dc_final", N)
        dxs_f = self.fwd.backward(dhs[:, :, :H], *finals_f)
        dxs_b = self.bwd.backward(_reverse(dhs[:, :, H:], rev), *finals_b)
        return dxs_f + _reverse(dxs_b, rev)

    def _both(self, attr):
        a, b = getattr(self.fwd, attr), getattr(self.bwd, attr)
        return None if a is None or b is None else np.stack([a, b])

    h = property(lambda self: self._both("h"), doc="final hidden states (2, N, H)")
    dh = property(lambda self: self._both("dh"), doc="gradient w.r.t. the initial hidden states (2, N, H)")
    c = property(lambda self: self._both("c") if self.has_cell_state else None, doc="final cell states (2, N, H)")
    dc = property(lambda self: self._both("dc") if self.has_cell_state else None, doc="its gradient (2, N, H)")

    def reset_state(self):
        self.fwd.reset_state()
        self.bwd.reset_state()


class TimeStack:
    """Recurrent time layers stacked: layer ``k + 1`` reads layer ``k``'s outputs.

    ``layers``: recurrent time layers (or ``Bidirectional`` ones), all with the same hidden size,
    number of directions, dtype and cell-state kind; layer ``k + 1``'s input size is layer ``k``'s
    output size ``H * num_directions``. With ``dropout > 0`` a ``TimeDropout`` (in ``.dropouts``,
    seeded from ``seed``) sits between consecutive layers, not after the last, as in PyTorch.
    ``params`` / ``grads`` are the layers' lists concatenated (the same arrays).

    ``forward(xs: (N, T, D), h0: (L * dirs, N, H) | None, c0: same | None, *, lengths: (N,) | None)
    -> hs: (N, T, H * dirs)``; ``backward(dhs, dh_final: (L * dirs, N, H) | None, dc_final: same | None)
    -> dxs: (N, T, D)``. ``.h``, ``.c``, ``.dh``, ``.dc`` are ``(L * dirs, N, H)``, ordered as PyTorch's
    ``h_n``: layer by layer, forward direction first. ``.train`` switches the dropouts on or off.
    ``stateful`` (all layers' flag, unidirectional only), ``set_state(h, c=None)`` and ``reset_state()``
    act on every layer.
    """

    def __init__(self, layers, dropout=0.0, seed=0):
        layers = list(layers)
        if not layers:
            raise ValueError("TimeStack: needs at least one layer, got none")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"TimeStack: dropout must be in [0, 1), got {dropout}")
        first = layers[0]
        self.D, self.H, self.dtype = first.D, first.H, first.dtype
        self.num_directions = getattr(first, "num_directions", 1)
        self.has_cell_state = has_cell_state(first)
        for k, layer in enumerate(layers):
            got = (layer.H, getattr(layer, "num_directions", 1), layer.dtype, has_cell_state(layer), layer.stateful)
            want = (self.H, self.num_directions, self.dtype, self.has_cell_state, first.stateful)
            if got != want:
                raise ValueError(
                    f"TimeStack: every layer must have the same (hidden size, directions, dtype, cell state, "
                    f"stateful) as layer 0 {want}; layer {k} ({type(layer).__name__}) has {got}"
                )
            if k and layer.D != self.H * self.num_directions:
                raise ValueError(
                    f"TimeStack: layer {k} must take the previous layer's outputs, input size "
                    f"{self.H * self.num_directions}, got input size {layer.D}"
                )
        self.layers = layers
        n_between = len(layers) - 1 if dropout > 0 else 0
        self.dropouts = [TimeDropout(dropout, seed=s) for s in np.random.SeedSequence(seed).spawn(n_between)]
        self.dropout = dropout
        self._train = True
        self.params = [p for layer in layers for p in layer.params]
        self.grads = [g for layer in layers for g in layer.grads]

    # ------------------------------------------------------------ flags and states

    @property
    def train(self):
        return self._train

    @train.setter
    def train(self, value):
        self._train = bool(value)
        for d in self.dropouts:
            d.train = self._train

    @property
    def stateful(self):
        return self.layers[0].stateful

    @stateful.setter
    def stateful(self, value):
        if value and self.num_directions == 2:
            raise ValueError("TimeStack: a bidirectional stack cannot be stateful")
        for layer in self.layers:
            layer.stateful = value

    def _per_layer(self, state, N, what):
        """``(L * dirs, N, H)`` -> one entry per layer (``(N, H)`` or ``(2, N, H)``); None -> Nones."""
        L, dirs = len(self.layers), self.num_directions
        if state is None:
            return [None] * L
        check_input("TimeStack", state, (L * dirs, N, self.H), self.dtype, what)
        return [state[k] for k in range(L)] if dirs == 1 else [state[2 * k : 2 * k + 2] for k in range(L)]

    def _state_args(self, h, c, N, what_h, what_c):
        """Per-layer tuples of state arguments: ``(h,)`` or, with a cell state, ``(h, c)``."""
        hs = self._per_layer(h, N, what_h)
        if not self.has_cell_state:
            if c is not None:
                raise ValueError(
                    f"TimeStack: {what_c} is only for layers with a cell state (LSTM), "
                    f"not {type(self.layers[0]).__name__}"
                )
            return [(h_k,) for h_k in hs]
        return list(zip(hs, self._per_layer(c, N, what_c)))

    def _gather(self, attr):
        parts = [getattr(layer, attr) for layer in self.layers]
        if any(p is None for p in parts):
            return None
        return np.stack(parts) if self.num_directions == 1 else np.concatenate(parts)

    h = property(lambda self: self._gather("h"), doc="final hidden states (L * dirs, N, H)")
    dh = property(lambda self: self._gather("dh"), doc="gradient w.r.t. the initial hidden states")
    c = property(lambda self: self._gather("c") if self.has_cell_state else None, doc="final cell states")
    dc = property(lambda self: self._gather("dc") if self.has_cell_state else None, doc="its gradient")

    def set_state(self, h, c=None):
        if self.num_directions == 2:
            raise ValueError("TimeStack: a bidirectional stack has no state to set (it cannot be stateful)")
        if not isinstance(h, np.ndarray) or h.ndim != 3:
            raise ValueError(f"TimeStack: state h must be a 3-D array (num_layers, N, H), got {getattr(h, 'shape', h)}")
        for layer, args in zip(self.layers, self._state_args(h, c, h.shape[1], "state h", "state c")):
            layer.set_state(*args)

    def reset_state(self):
        for layer in self.layers:
            layer.reset_state()

    # ------------------------------------------------------------ forward / backward

    def forward(self, xs, h0=None, c0=None, *, lengths=None):
        check_input("TimeStack", xs, (None, None, self.D), self.dtype, "xs")
        states = self._state_args(h0, c0, xs.shape[0], "h0", "c0")
        hs = xs
        for k, (layer, args) in enumerate(zip(self.layers, states)):
            if k and self.dropouts:
                hs = self.dropouts[k - 1].forward(hs)
            hs = layer.forward(hs, *args, lengths=lengths)
        return hs

    def backward(self, dhs, dh_final=None, dc_final=None):
        check_input("TimeStack", dhs, (None, None, self.H * self.num_directions), self.dtype, "dhs")
        finals = self._state_args(dh_final, dc_final, dhs.shape[0], "dh_final", "dc_final")
        dxs = dhs
        for k in range(len(self.layers) - 1, -1, -1):
            dxs = self.layers[k].backward(dxs, *finals[k])
            if k and self.dropouts:
                dxs = self.dropouts[k - 1].backward(dxs)
        return dxs


def make_recurrent(
    kind,
    input_size,
    hidden_size,
    num_layers=1,
    bidirectional=False,
    dropout=0.0,
    stateful=False,
    seed=0,
    dtype=np.float32,
):
    """A ``TimeStack`` of ``num_layers`` freshly initialised ``kind`` layers, like ``torch.nn.LSTM(...)``.

    ``kind`` is ``"rnn"``, ``"lstm"`` or ``"gru"``; each layer (and direction) gets its own seed
    derived from ``seed``, and so do the dropouts between layers.
    """
    if kind not in KINDS:
        raise ValueError(f"make_recurrent: kind must be one of {sorted(KINDS)}, got {kind!r}")
    for name, value in [("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)]:
        positive_int(name, value, "make_recurrent")
    if bidirectional and stateful:
        raise ValueError("make_recurrent: a bidirectional stack cannot be stateful")
    cls, init = KINDS[kind]
    dirs = 2 if bidirectional else 1
    seeds = [int(s) for s in np.random.SeedSequence(seed).generate_state(num_layers * dirs + 1)]
    layers = []
    for k in range(num_layers):
        D = input_size if k == 0 else hidden_size * dirs
        made = [
            cls(*init(D, hidden_size, seed=seeds[k * dirs + d], dtype=dtype), stateful=stateful) for d in range(dirs)
        ]
        layers.append(Bidirectional(*made) if bidirectional else made[0])
    return TimeStack(layers, dropout=dropout, seed=seeds[-1])
