"""API misuse, property-based: every time layer is called with random shapes, dtypes, sequence
lengths and initial states, valid or not. Whether a call is valid is decided here from the documented
contract alone (shapes in the docstrings, float32/float64 of the parameters' dtype, integer ids in
range, lengths in [1, T]); a valid call must match a slow reference (the cells stepped in a loop,
explicit per-position formulas), an invalid one must raise ``ValueError``. Anything else fails the
test: a wrong shape or dtype, a different number, or an IndexError/TypeError from inside NumPy.

Zero sizes are valid where the docstrings allow any size (N = 0, T = 0); a softmax over nothing
(V = 0 targets, Te = 0 encoder steps) is a ``ValueError``.
"""

import warnings

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from nprnn.layers.attention import TimeAttention
from nprnn.layers.basic import TimeAffine, TimeDropout, TimeEmbedding, TimeSoftmaxWithLoss
from nprnn.layers.gru import GRU, TimeGRU, init_gru_params
from nprnn.layers.lstm import LSTM, TimeLSTM, init_lstm_params
from nprnn.layers.rnn import RNN, TimeRNN, init_rnn_params
from nprnn.layers.stack import make_recurrent

FLOATS = [np.float32, np.float64]
OTHER_DTYPES = [np.float16, np.float32, np.float64, np.int32, np.int64, np.uint8, np.bool_, np.complex128]
KINDS = {
    "rnn": (TimeRNN, RNN, init_rnn_params),
    "lstm": (TimeLSTM, LSTM, init_lstm_params),
    "gru": (TimeGRU, GRU, init_gru_params),
}
EXAMPLES = settings(max_examples=60, deadline=None)


def tolerance(dtype):
    return dict(rtol=2e-4, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-9, atol=1e-11)


def close(actual, expected, dtype, what):
    assert isinstance(actual, np.ndarray), what
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape}, expected {expected.shape}"
    assert actual.dtype == dtype, f"{what}: dtype {actual.dtype}, expected {np.dtype(dtype)}"
    np.testing.assert_allclose(actual, expected, err_msg=what, **tolerance(dtype))


def conforms(a, shape, dtype):
    """The contract of a float input: an ndarray of ``dtype`` with ``shape`` (None = any size)."""
    return (
        isinstance(a, np.ndarray)
        and a.dtype == dtype
        and a.ndim == len(shape)
        and all(want is None or want == got for want, got in zip(shape, a.shape))
    )


@st.composite
def arrays_like(draw, shape, dtype, scale=1.0):
    """Mostly an array of ``shape`` and ``dtype`` (sometimes a non-contiguous view), else one mutation:
    another size on one axis, one axis more or less, another dtype, or a nested list."""
    kind = draw(st.sampled_from(["valid"] * 7 + ["size", "ndim", "dtype", "list"]))
    shape = list(shape)
    if kind == "size" and shape:
        axis = draw(st.integers(0, len(shape) - 1))
        shape[axis] = draw(st.integers(0, 5).filter(lambda n: n != shape[axis]))
    elif kind == "ndim":
        if shape and draw(st.booleans()):
            del shape[draw(st.integers(0, len(shape) - 1))]
        else:
            shape.insert(draw(st.integers(0, len(shape))), draw(st.integers(1, 3)))
    elif kind == "dtype":
        dtype = draw(st.sampled_from([d for d in OTHER_DTYPES if d != dtype]))
    seed = draw(st.integers(0, 2**32 - 1))
    values = np.random.default_rng(seed).standard_normal(shape) * scale
    a = (values + 0j if dtype == np.complex128 else values).astype(dtype)
    if kind == "list":
        return a.tolist()
    if kind == "valid" and a.ndim and draw(st.booleans()):  # the same values in a strided view
        wide = np.zeros((*a.shape[:-1], 2 * a.shape[-1]), dtype)
        wide[..., ::2] = a
        a = wide[..., ::2]
    return a


@st.composite
def lengths_like(draw, N, T):
    """None, valid lengths (integers in [1, T], one per row), or a near miss."""
    kind = draw(st.sampled_from(["none", "valid", "valid", "wild"]))
    if kind == "none":
        return None
    if kind == "valid" and (T >= 1 or N == 0):
        return np.array(draw(st.lists(st.integers(1, max(T, 1)), min_size=N, max_size=N)), dtype=np.int64)
    n = draw(st.sampled_from([N, N, max(N - 1, 0), N + 1]))
    values = draw(st.lists(st.integers(-1, T + 2), min_size=n, max_size=n))
    dtype = draw(st.sampled_from([np.int64, np.int32, np.uint8, np.float64, np.bool_]))
    with np.errstate(all="ignore"):
        return np.array(values).astype(dtype)


def lengths_ok(lengths, N, T):
    if lengths is None:
        return True
    lengths = np.asarray(lengths)
    return (
        lengths.shape == (N,)
        and np.issubdtype(lengths.dtype, np.integer)
        and (N == 0 or (int(lengths.min()) >= 1 and int(lengths.max()) <= T))
    )


def raises_value_error(call, *args, **kwargs):
    event(f"invalid {call.__name__}")  # hypothesis statistics: how often each branch ran
    with pytest.raises(ValueError):
        call(*args, **kwargs)


class no_warnings:
    def __enter__(self):
        self.catcher = warnings.catch_warnings()
        self.catcher.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc):
        self.catcher.__exit__(*exc)


# ---------------------------------------------------------------- slow references for one direction


def step_forward(kind, params, xs, h0, c0, lengths):
    """The cells stepped in a loop; a row past its length keeps its state and outputs zeros."""
    N, T, _ = xs.shape
    H = params[1].shape[0]
    dtype = params[0].dtype
    h = np.zeros((N, H), dtype) if h0 is None else h0
    c = np.zeros((N, H), dtype) if c0 is None else c0
    hs, tape = np.zeros((N, T, H), dtype), []
    for t in range(T):
        cell = KINDS[kind][1](*params)
        if kind == "lstm":
            h_new, c_new = cell.forward(np.ascontiguousarray(xs[:, t]), h, c)
        else:
            h_new, c_new = cell.forward(np.ascontiguousarray(xs[:, t]), h), c
        alive = (np.ones(N, bool) if lengths is None else t < np.asarray(lengths))[:, None]
        h, c = np.where(alive, h_new, h), np.where(alive, c_new, c)
        hs[:, t] = np.where(alive, h_new, 0)
        tape.append((cell, alive))
    return hs, h, c, tape


def step_backward(kind, params, tape, dhs, dh_final, dc_final, D):
    N, T, H = dhs.shape
    dtype = params[0].dtype
    dh = np.zeros((N, H), dtype) if dh_final is None else dh_final.copy()
    dc = np.zeros((N, H), dtype) if dc_final is None else dc_final.copy()
    dxs, grads = np.zeros((N, T, D), dtype), [np.zeros_like(p) for p in params]
    for t in reversed(range(T)):
        cell, alive = tape[t]
        g_h, g_c = np.where(alive, dhs[:, t] + dh, 0), np.where(alive, dc, 0)
        if kind == "lstm":
            dx, dh_prev, dc_prev = cell.backward(g_h, g_c)
        else:
            (dx, dh_prev), dc_prev = cell.backward(g_h), dc
        dh, dc = dh_prev + np.where(alive, 0, dh), (dc_prev + np.where(alive, 0, dc)) if kind == "lstm" else dc
        dxs[:, t] = dx
        for acc, g in zip(grads, cell.grads):
            acc += g
    return dxs, grads, dh, dc


def reverse_index(lengths, N, T):
    t = np.arange(T)[None, :]
    L = np.full((N, 1), T) if lengths is None else np.asarray(lengths, dtype=np.int64)[:, None]
    return np.where(t < L, L - 1 - t, t)


def reverse(a, index):
    return a[np.arange(a.shape[0])[:, None], index]


# ---------------------------------------------------------------- TimeRNN / TimeLSTM / TimeGRU


@EXAMPLES
@given(data=st.data(), kind=st.sampled_from(list(KINDS)), dtype=st.sampled_from(FLOATS))
def test_recurrent_layer(data, kind, dtype):
    D, H, N, T = (data.draw(st.integers(lo, 4)) for lo in (1, 1, 0, 0))
    layer_cls, _, init = KINDS[kind]
    params = init(D, H, seed=data.draw(st.integers(0, 99)), dtype=dtype)
    layer = layer_cls(*params)
    xs = data.draw(arrays_like((N, T, D), dtype))
    states = {"h0": data.draw(st.none() | arrays_like((N, H), dtype))}
    if kind == "lstm":
        states["c0"] = data.draw(st.none() | arrays_like((N, H), dtype))
    lengths = data.draw(lengths_like(N, T))

    if not conforms(xs, (None, None, D), dtype):
        return raises_value_error(layer.forward, xs, **states, lengths=lengths)
    N, T = xs.shape[:2]
    valid = all(s is None or conforms(s, (N, H), dtype) for s in states.values()) and lengths_ok(lengths, N, T)
    if not valid:
        return raises_value_error(layer.forward, xs, **states, lengths=lengths)

    event("valid forward")
    with no_warnings():
        hs = layer.forward(xs, **states, lengths=lengths)
    ref_hs, ref_h, ref_c, tape = step_forward(kind, params, xs, states["h0"], states.get("c0"), lengths)
    close(hs, ref_hs, dtype, "hs")
    close(layer.h, ref_h, dtype, "h")
    if kind == "lstm":
        close(layer.c, ref_c, dtype, "c")

    dhs = data.draw(arrays_like((N, T, H), dtype))
    finals = {"dh_final": data.draw(st.none() | arrays_like((N, H), dtype))}
    if kind == "lstm":
        finals["dc_final"] = data.draw(st.none() | arrays_like((N, H), dtype))
    if not (conforms(dhs, (N, T, H), dtype) and all(f is None or conforms(f, (N, H), dtype) for f in finals.values())):
        return raises_value_error(layer.backward, dhs, **finals)
    event("valid backward")
    with no_warnings():
        dxs = layer.backward(dhs, **finals)
    ref_dxs, ref_grads, ref_dh, ref_dc = step_backward(
        kind, params, tape, dhs, finals["dh_final"], finals.get("dc_final"), D
    )
    close(dxs, ref_dxs, dtype, "dxs")
    close(layer.dh, ref_dh, dtype, "dh")
    if kind == "lstm":
        close(layer.dc, ref_dc, dtype, "dc")
    for k, (g, ref) in enumerate(zip(layer.grads, ref_grads)):
        close(g, ref, dtype, f"grads[{k}]")


# ---------------------------------------------------------------- TimeStack and Bidirectional


@settings(max_examples=50, deadline=None)
@given(
    data=st.data(),
    kind=st.sampled_from(list(KINDS)),
    dtype=st.sampled_from(FLOATS),
    num_layers=st.integers(1, 2),
    bidirectional=st.booleans(),
)
def test_stack_and_bidirectional(data, kind, dtype, num_layers, bidirectional):
    D, H, N, T = (data.draw(st.integers(lo, 3)) for lo in (1, 1, 0, 0))
    dirs = 2 if bidirectional else 1
    dropout = data.draw(st.sampled_from([0.0, 0.5]))  # off with .train = False
    stack = make_recurrent(kind, D, H, num_layers, bidirectional, dropout=dropout, seed=7, dtype=dtype)
    stack.train = False
    S = num_layers * dirs
    xs = data.draw(arrays_like((N, T, D), dtype))
    h0 = data.draw(st.none() | arrays_like((S, N, H), dtype))
    c0 = None  # only an LSTM has a cell state; now and then pass one to the others anyway
    if kind == "lstm" or data.draw(st.integers(0, 4)) == 0:
        c0 = data.draw(st.none() | arrays_like((S, N, H), dtype))
    lengths = data.draw(lengths_like(N, T))

    if not conforms(xs, (None, None, D), dtype):
        return raises_value_error(stack.forward, xs, h0, c0, lengths=lengths)
    N, T = xs.shape[:2]
    valid = (
        (h0 is None or conforms(h0, (S, N, H), dtype))
        and (c0 is None or (kind == "lstm" and conforms(c0, (S, N, H), dtype)))
        and lengths_ok(lengths, N, T)
    )
    if not valid:
        return raises_value_error(stack.forward, xs, h0, c0, lengths=lengths)

    event("valid forward")
    with no_warnings():
        hs = stack.forward(xs, h0, c0, lengths=lengths)

    # reference: layer by layer, direction by direction, each with the cells stepped in a loop
    rev = reverse_index(lengths, N, T)
    inputs, tapes, finals_h, finals_c = xs, [], [], []
    for k, layer in enumerate(stack.layers):
        directions = [layer.fwd, layer.bwd] if bidirectional else [layer]
        outs = []
        for d, direction in enumerate(directions):
            s = k * dirs + d
            x_in = reverse(inputs, rev) if d == 1 else inputs
            h_init = None if h0 is None else h0[s]
            c_init = None if c0 is None else c0[s]
            out, h_last, c_last, tape = step_forward(kind, direction.params, x_in, h_init, c_init, lengths)
            outs.append(reverse(out, rev) if d == 1 else out)
            tapes.append((direction.params, tape, x_in.shape[2]))
            finals_h.append(h_last)
            finals_c.append(c_last)
        inputs = np.concatenate(outs, axis=2)
    close(hs, inputs, dtype, "hs")
    close(stack.h, np.stack(finals_h), dtype, "h")
    if kind == "lstm":
        close(stack.c, np.stack(finals_c), dtype, "c")

    dhs = data.draw(arrays_like((N, T, H * dirs), dtype))
    dh_final = data.draw(st.none() | arrays_like((S, N, H), dtype))
    dc_final = data.draw(st.none() | arrays_like((S, N, H), dtype)) if kind == "lstm" else None
    valid = conforms(dhs, (N, T, H * dirs), dtype) and all(
        f is None or conforms(f, (S, N, H), dtype) for f in (dh_final, dc_final)
    )
    if not valid:
        return raises_value_error(stack.backward, dhs, dh_final, dc_final)
    event("valid backward")
    with no_warnings():
        dxs = stack.backward(dhs, dh_final, dc_final)

    grads, dh0, dc0, d_out = [None] * S, [None] * S, [None] * S, dhs
    for k in reversed(range(num_layers)):
        d_in = 0
        for d in range(dirs):
            s = k * dirs + d
            params, tape, width = tapes[s]
            d_part = d_out[:, :, d * H : (d + 1) * H]
            dxs_part, grads[s], dh0[s], dc0[s] = step_backward(
                kind,
                params,
                tape,
                reverse(d_part, rev) if d == 1 else d_part,
                None if dh_final is None else dh_final[s],
                None if dc_final is None else dc_final[s],
                width,
            )
            d_in = d_in + (reverse(dxs_part, rev) if d == 1 else dxs_part)
        d_out = d_in
    close(dxs, d_out, dtype, "dxs")
    close(stack.dh, np.stack(dh0), dtype, "dh")
    if kind == "lstm":
        close(stack.dc, np.stack(dc0), dtype, "dc")
    for k, (g, ref) in enumerate(zip(stack.grads, [g for per_direction in grads for g in per_direction])):
        close(g, ref, dtype, f"grads[{k}]")


# ---------------------------------------------------------------- TimeEmbedding


@st.composite
def ids_like(draw, shape, V):
    """Integer ids of ``shape``, mostly in [0, V), sometimes out of range, of another dtype or shape."""
    if draw(st.integers(0, 4)) == 0:  # another shape
        shape = draw(st.lists(st.integers(0, 3), min_size=1, max_size=3).filter(lambda s: tuple(s) != shape))
    size = int(np.prod(shape))
    low, high = (0, V - 1) if draw(st.integers(0, 3)) and V else (-2, V + 1)
    values = draw(st.lists(st.integers(low, high), min_size=size, max_size=size))
    dtype = draw(st.sampled_from([np.int64] * 4 + [np.int32, np.uint8, np.uint64, np.float64, np.bool_]))
    with np.errstate(all="ignore"):
        ids = np.array(values, dtype=np.int64).reshape(shape).astype(dtype)
    return ids.tolist() if draw(st.integers(0, 5)) == 0 else ids


def ids_ok(ids, shape, V, ignore=None):
    ids = np.asarray(ids)
    if not np.issubdtype(ids.dtype, np.integer) or ids.shape != shape:
        return False
    counted = ids if ignore is None else ids[ids != ignore]
    return counted.size == 0 or (int(counted.min()) >= 0 and int(counted.max()) < V)


@EXAMPLES
@given(data=st.data(), dtype=st.sampled_from(FLOATS))
def test_embedding(data, dtype):
    V, D, N, T = (data.draw(st.integers(lo, 4)) for lo in (1, 1, 0, 0))
    W = np.random.default_rng(data.draw(st.integers(0, 99))).standard_normal((V, D)).astype(dtype)
    layer = TimeEmbedding(W)
    ids = data.draw(ids_like((N, T), V))
    shape = np.asarray(ids).shape
    if not (len(shape) == 2 and ids_ok(ids, shape, V)):
        return raises_value_error(layer.forward, ids)
    with no_warnings():
        out = layer.forward(ids)
    a = np.asarray(ids)
    expected = np.zeros((*a.shape, D), dtype)
    for n, t in np.ndindex(*a.shape):
        expected[n, t] = W[a[n, t]]
    close(out, expected, dtype, "out")

    dout = data.draw(arrays_like((*a.shape, D), dtype))
    if not conforms(dout, (*a.shape, D), dtype):
        return raises_value_error(layer.backward, dout)
    assert layer.backward(dout) is None
    dW = np.zeros_like(W)
    for n, t in np.ndindex(*a.shape):
        dW[a[n, t]] += dout[n, t]
    close(layer.grads[0], dW, dtype, "dW")


# ---------------------------------------------------------------- TimeAffine


@EXAMPLES
@given(data=st.data(), dtype=st.sampled_from(FLOATS))
def test_affine(data, dtype):
    D, V, N, T = (data.draw(st.integers(lo, 4)) for lo in (1, 1, 0, 0))
    rng = np.random.default_rng(data.draw(st.integers(0, 99)))
    W, b = rng.standard_normal((D, V)).astype(dtype), rng.standard_normal(V).astype(dtype)
    layer = TimeAffine(W, b)
    xs = data.draw(arrays_like((N, T, D), dtype))
    if not conforms(xs, (None, None, D), dtype):
        return raises_value_error(layer.forward, xs)
    N, T = xs.shape[:2]
    with no_warnings():
        out = layer.forward(xs)
    expected = np.zeros((N, T, V), dtype)
    for n, t in np.ndindex(N, T):
        expected[n, t] = [sum(xs[n, t, d] * W[d, v] for d in range(D)) + b[v] for v in range(V)]
    close(out, expected, dtype, "out")

    dout = data.draw(arrays_like((N, T, V), dtype))
    if not conforms(dout, (N, T, V), dtype):
        return raises_value_error(layer.backward, dout)
    with no_warnings():
        dxs = layer.backward(dout)
    dW, db, ref_dxs = np.zeros_like(W), np.zeros_like(b), np.zeros_like(xs)
    for n, t in np.ndindex(N, T):
        dW += np.outer(xs[n, t], dout[n, t])
        db += dout[n, t]
        ref_dxs[n, t] = W @ dout[n, t]
    close(dxs, ref_dxs, dtype, "dxs")
    close(layer.grads[0], dW, dtype, "dW")
    close(layer.grads[1], db, dtype, "db")


# ---------------------------------------------------------------- TimeSoftmaxWithLoss


@EXAMPLES
@given(data=st.data(), dtype=st.sampled_from(FLOATS), ignore=st.sampled_from([-1, None, 0]))
def test_softmax_with_loss(data, dtype, ignore):
    V, N, T = (data.draw(st.integers(lo, 4)) for lo in (1, 0, 0))  # V = 0 comes from the mutations
    layer = TimeSoftmaxWithLoss(ignore_label=ignore)
    xs = data.draw(arrays_like((N, T, V), dtype, scale=3.0))
    ts = data.draw(ids_like((N, T), V))
    # no parameters: any float32/float64 scores, at least one class to put the probability on
    if not (isinstance(xs, np.ndarray) and xs.dtype in FLOATS and xs.ndim == 3 and xs.shape[2] > 0):
        return raises_value_error(layer.forward, xs, ts)
    N, T, V = xs.shape
    dtype = xs.dtype
    if not ids_ok(ts, (N, T), V, ignore):
        return raises_value_error(layer.forward, xs, ts)
    with no_warnings():
        loss = layer.forward(xs, ts)
        dout = data.draw(st.floats(0.1, 3.0))
        dxs = layer.backward(dout)
    ts = np.asarray(ts)
    counted = [(n, t) for n, t in np.ndindex(N, T) if ignore is None or ts[n, t] != ignore]
    x64 = xs.astype(np.float64)
    losses, ref_dxs = [], np.zeros((N, T, V))
    for n, t in counted:
        row = x64[n, t]
        p = np.exp(row - row.max()) / np.exp(row - row.max()).sum()
        losses.append(-np.log(p[ts[n, t]]))
        ref_dxs[n, t] = (p - np.eye(V)[ts[n, t]]) * dout / len(counted)
    assert isinstance(loss, float)
    tol = tolerance(dtype)
    assert loss == pytest.approx(np.mean(losses) if counted else 0.0, rel=tol["rtol"], abs=tol["atol"])
    close(dxs, ref_dxs.astype(dtype), dtype, "dxs")


# ---------------------------------------------------------------- TimeDropout


@EXAMPLES
@given(data=st.data(), dtype=st.sampled_from(FLOATS), ratio=st.sampled_from([0.0, 0.3, 0.9]), train=st.booleans())
def test_dropout(data, dtype, ratio, train):
    shape = tuple(data.draw(st.lists(st.integers(0, 4), min_size=1, max_size=3)))
    seed = data.draw(st.integers(0, 99))
    layer = TimeDropout(ratio, seed=seed)
    layer.train = train
    xs = data.draw(arrays_like(shape, dtype))
    if not (isinstance(xs, np.ndarray) and xs.dtype in FLOATS):
        return raises_value_error(layer.forward, xs)
    with no_warnings():
        out = layer.forward(xs)
    if train and ratio:
        keep = np.random.default_rng(seed).random(xs.shape, dtype=xs.dtype) >= ratio  # the same draws
        mask = keep.astype(xs.dtype) / xs.dtype.type(1 - ratio)
    else:
        mask = np.ones(xs.shape, xs.dtype)
    close(out, xs * mask, xs.dtype, "out")

    dout = data.draw(arrays_like(xs.shape, xs.dtype))
    if not conforms(dout, xs.shape, xs.dtype):
        return raises_value_error(layer.backward, dout)
    close(layer.backward(dout), dout * mask, xs.dtype, "dxs")


# ---------------------------------------------------------------- TimeAttention


@EXAMPLES
@given(data=st.data(), dtype=st.sampled_from(FLOATS))
def test_attention(data, dtype):
    N, Te, Td, H = (data.draw(st.integers(lo, 4)) for lo in (0, 1, 0, 1))  # Te = 0 from the mutations
    layer = TimeAttention()
    hs_enc = data.draw(arrays_like((N, Te, H), dtype))
    hs_dec = data.draw(arrays_like((N, Td, H), dtype))
    # no parameters: float32/float64 encoder states set the dtype; a softmax needs >= 1 encoder step
    if not (isinstance(hs_enc, np.ndarray) and hs_enc.dtype in FLOATS and hs_enc.ndim == 3 and hs_enc.shape[1]):
        return raises_value_error(layer.forward, hs_enc, hs_dec)
    N, Te, H = hs_enc.shape
    dtype = hs_enc.dtype
    if not conforms(hs_dec, (N, None, H), dtype):
        return raises_value_error(layer.forward, hs_enc, hs_dec)
    Td = hs_dec.shape[1]
    with no_warnings():
        cs = layer.forward(hs_enc, hs_dec)
    ref_cs, ref_a = np.zeros((N, Td, H)), np.zeros((N, Td, Te))
    for n, t in np.ndindex(N, Td):
        s = np.array([hs_enc[n, e].astype(np.float64) @ hs_dec[n, t] for e in range(Te)])
        a = np.exp(s - s.max()) / np.exp(s - s.max()).sum()
        ref_a[n, t] = a
        ref_cs[n, t] = sum(a[e] * hs_enc[n, e] for e in range(Te))
    close(cs, ref_cs.astype(dtype), dtype, "cs")
    close(layer.attention_weights, ref_a.astype(dtype), dtype, "attention_weights")

    dcs = data.draw(arrays_like((N, Td, H), dtype))
    if not conforms(dcs, (N, Td, H), dtype):
        return raises_value_error(layer.backward, dcs)
    with no_warnings():
        dhs_enc, dhs_dec = layer.backward(dcs)
    ref_enc, ref_dec = np.zeros((N, Te, H)), np.zeros((N, Td, H))
    for n, t in np.ndindex(N, Td):
        a = ref_a[n, t]
        da = hs_enc[n].astype(np.float64) @ dcs[n, t]  # d c / d a_e = hs_enc[e]
        ds = a * (da - a @ da)  # through the softmax
        ref_enc[n] += np.outer(a, dcs[n, t]) + np.outer(ds, hs_dec[n, t])
        ref_dec[n, t] = ds @ hs_enc[n]
    close(dhs_enc, ref_enc.astype(dtype), dtype, "dhs_enc")
    close(dhs_dec, ref_dec.astype(dtype), dtype, "dhs_dec")
