"""Checks that TimeRNN, TimeLSTM and TimeGRU share, written once for the three of them.

The three layers differ in their weights and in the states they carry: ``h`` for the RNN and the
GRU, ``h`` and ``c`` for the LSTM. Everything else follows the states in the same way:

- time layer: ``forward(xs, *initial_states, lengths=...)``, ``backward(dhs, *final_state_grads)``,
  the final states in ``.h`` (``.c``), their gradients in ``.dh`` (``.dc``), ``set_state(*states)``;
- cell: ``forward(x, *states)`` returns the new state (a tuple of them for the LSTM) and
  ``backward(*state_grads)`` returns ``dx, *previous_state_grads``.

A test file describes its layer with a :class:`Recurrent` and calls the ``check_*`` functions below;
each one asserts, so a test that calls it fails when the layer is wrong.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

from nprnn.gradcheck import numerical_gradient, relative_error


@dataclass(frozen=True)
class Recurrent:
    """What the shared checks need to know about one recurrent layer."""

    time_layer: type  # TimeRNN, TimeLSTM, TimeGRU
    cell: type  # RNN, LSTM, GRU
    make_params: Callable  # (rng, D, H, dtype=np.float64) -> random weights for the tests
    init_params: Callable  # init_rnn_params, ...: (D, H, seed=0, dtype=np.float32) -> weights
    param_names: tuple
    states: tuple = ("h",)

    def step(self, cell, x, states):
        """One cell step; the new states, always as a tuple."""
        new = cell.forward(x, *states)
        return new if isinstance(new, tuple) else (new,)

    def final_states(self, layer):
        return [getattr(layer, s) for s in self.states]

    def state_grads(self, layer):
        return [getattr(layer, "d" + s) for s in self.states]


def normals(rng, shape, count):
    return [rng.standard_normal(shape) for _ in range(count)]


def alive_rows(N, t, lengths):
    """(N, 1) mask: which rows still run at step t."""
    return (np.ones(N, bool) if lengths is None else t < np.asarray(lengths))[:, None]


def reference_forward(kind, params, xs, states, lengths=None):
    """Slow step-by-step reference built on the cell (forward only): ``hs, *final_states``."""
    N, T, _ = xs.shape
    cell = kind.cell(*params)
    states, hs = list(states), np.zeros((N, T, params[1].shape[0]), dtype=xs.dtype)
    for t in range(T):
        new = kind.step(cell, xs[:, t], states)
        alive = alive_rows(N, t, lengths)
        states = [np.where(alive, n, s) for n, s in zip(new, states)]
        hs[:, t] = np.where(alive, new[0], 0)
    return (hs, *states)


def assert_gradients(loss, checks, tol):
    """``checks``: (name, analytic gradient, the array it is a gradient for), each against a numerical one."""
    for name, analytic, p in checks:
        assert relative_error(analytic, numerical_gradient(loss, p)) < tol, name


def assert_all_close(actual, expected, **tol):
    assert len(actual) == len(expected)
    for a, b in zip(actual, expected):
        np.testing.assert_allclose(a, b, **tol)


# ---------------------------------------------------------------- gradients


def check_cell_gradients(kind, rng, N=2, D=3, H=4, tol=1e-8):
    """The cell's parameter, input and previous-state gradients against numerical ones."""
    params = kind.make_params(rng, D, H)
    cell = kind.cell(*params)
    x, *prev = [rng.standard_normal((N, D)), *normals(rng, (N, H), len(kind.states))]
    Rs = normals(rng, (N, H), len(kind.states))

    def loss():  # every new state weighted by a random R
        return float(sum(np.sum(s * R) for s, R in zip(kind.step(cell, x, prev), Rs)))

    loss()
    dx, *dprev = cell.backward(*Rs)
    checks = [*zip(kind.param_names, [g.copy() for g in cell.grads], params), ("x", dx, x)]
    checks += [(s + "_prev", g, p) for s, g, p in zip(kind.states, dprev, prev)]
    assert_gradients(loss, checks, tol)


def check_time_gradients(kind, rng, N, T, D, H, lengths=None, tol=1e-7):
    """The time layer's gradients (parameters, xs, initial states) against numerical ones, for a loss
    on hs and on every final state. Padded positions must get exactly zero gradient. Returns dxs."""
    params = kind.make_params(rng, D, H)
    layer = kind.time_layer(*params)
    xs, *states0 = [rng.standard_normal((N, T, D)), *normals(rng, (N, H), len(kind.states))]
    R, *R_finals = [rng.standard_normal((N, T, H)), *normals(rng, (N, H), len(kind.states))]

    def loss():
        hs = layer.forward(xs, *states0, lengths=lengths)
        return float(np.sum(hs * R) + sum(np.sum(s * Rs) for s, Rs in zip(kind.final_states(layer), R_finals)))

    loss()
    dxs = layer.backward(R, *R_finals)
    checks = [*zip(kind.param_names, [g.copy() for g in layer.grads], params), ("xs", dxs, xs)]
    checks += [(s + "0", g.copy(), p) for s, g, p in zip(kind.states, kind.state_grads(layer), states0)]
    assert_gradients(loss, checks, tol)
    for n, L in enumerate([T] * N if lengths is None else lengths):
        assert np.all(dxs[n, L:] == 0), f"row {n}: gradient at a padded position"
    return dxs


def check_stateful_gradients_across_calls(kind, rng, N=2, T=4, D=3, H=3, tol=1e-7):
    """Two consecutive stateful calls: the second starts from the first's final states, gradients are
    truncated at the boundary, and .dh (.dc) are the gradients w.r.t. the carried states. The loss is on
    hs and, for the LSTM, on the final c too (h's final value is already in hs)."""
    params = kind.make_params(rng, D, H)
    layer = kind.time_layer(*params, stateful=True)
    xs1, xs2 = rng.standard_normal((N, T, D)), rng.standard_normal((N, T, D))
    R, *R_more = [rng.standard_normal((N, T, H)), *normals(rng, (N, H), len(kind.states) - 1)]

    layer.forward(xs1)
    carried = [s.copy() for s in kind.final_states(layer)]
    assert all(np.any(s != 0) for s in carried)
    hs2 = layer.forward(xs2)
    expected, *finals = reference_forward(kind, params, xs2, carried)
    assert_all_close([hs2, *kind.final_states(layer)], [expected, *finals], rtol=1e-12, atol=1e-14)
    layer.backward(R, None, *R_more)
    analytic = [g.copy() for g in layer.grads] + [g.copy() for g in kind.state_grads(layer)]

    states = [s.copy() for s in carried]

    def loss():  # the second segment alone, from the carried states (truncated BPTT)
        layer.set_state(*states)
        hs = layer.forward(xs2)
        return float(np.sum(hs * R) + sum(np.sum(s * Rs) for s, Rs in zip(kind.final_states(layer)[1:], R_more)))

    names = [*kind.param_names, *("carried " + s for s in kind.states)]
    assert_gradients(loss, zip(names, analytic, params + states), tol)


# ---------------------------------------------------------------- states


def check_non_stateful_starts_from_zero(kind, rng, atol=0.0):
    params = kind.make_params(rng, 3, 4)
    layer = kind.time_layer(*params)
    xs = rng.standard_normal((2, 3, 3))
    first = layer.forward(xs)
    np.testing.assert_array_equal(layer.forward(xs), first)
    expected, *_ = reference_forward(kind, params, xs, [np.zeros((2, 4))] * len(kind.states))
    np.testing.assert_allclose(first, expected, rtol=1e-12, atol=atol)


def check_stateful_reset_state(kind, rng):
    """A stateful layer's second call runs from the carried states; after reset_state() none is carried.
    Returns the layer (carrying the states of its last call), its weights and its input."""
    params = kind.make_params(rng, 3, 4)
    layer = kind.time_layer(*params, stateful=True)
    xs = rng.standard_normal((2, 3, 3))
    first = layer.forward(xs)
    assert not np.allclose(layer.forward(xs), first)  # carried states change the output
    layer.reset_state()
    assert all(s is None for s in kind.final_states(layer))
    np.testing.assert_array_equal(layer.forward(xs), first)
    return layer, params, xs


def check_variable_lengths_equal_running_each_sequence_alone(kind, rng, lengths, final_grads=True):
    """A batch of rows of different lengths gives, row by row, what running each row alone gives:
    outputs (zero past the row's end), final states, and gradients; the parameter gradients are the sums."""
    N, T = len(lengths), max(lengths)
    params = kind.make_params(rng, 3, 4)
    layer = kind.time_layer(*params)
    xs, *states0 = [rng.standard_normal((N, T, 3)), *normals(rng, (N, 4), len(kind.states))]
    R = rng.standard_normal((N, T, 4))
    R_finals = normals(rng, (N, 4), len(kind.states)) if final_grads else []
    hs = layer.forward(xs, *states0, lengths=lengths)
    dxs = layer.backward(R, *R_finals)
    total = [g.copy() for g in layer.grads]
    sums = [np.zeros_like(p) for p in params]
    for n, L in enumerate(lengths):
        alone = kind.time_layer(*params)
        hs_n = alone.forward(xs[n : n + 1, :L], *(s[n : n + 1] for s in states0))
        np.testing.assert_allclose(hs[n, :L], hs_n[0], rtol=1e-12)
        assert np.all(hs[n, L:] == 0)
        assert_all_close([s[n] for s in kind.final_states(layer)], [s[0] for s in kind.final_states(alone)], rtol=1e-12)
        dxs_n = alone.backward(R[n : n + 1, :L], *(r[n : n + 1] for r in R_finals))
        np.testing.assert_allclose(dxs[n, :L], dxs_n[0], rtol=1e-10, atol=1e-12)
        assert np.all(dxs[n, L:] == 0)
        mine, its = [g[n] for g in kind.state_grads(layer)], [g[0] for g in kind.state_grads(alone)]
        assert_all_close(mine, its, rtol=1e-10, atol=1e-12)
        for s, g in zip(sums, alone.grads):
            s += g
    assert_all_close(total, sums, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- protocol and dtypes


def check_params_are_the_arrays_passed_and_grads_keep_identity(kind, rng):
    """The layer holds the very arrays passed, and updates its gradient arrays in place. Returns the
    layer, its (float32) weights and an input, for a check that an in-place weight update is seen."""
    params = kind.make_params(rng, 3, 4, np.float32)
    layer = kind.time_layer(*params)
    assert all(a is b for a, b in zip(layer.params, params))
    grads = list(layer.grads)
    assert all(g.shape == p.shape and g.dtype == p.dtype and not g.any() for g, p in zip(grads, params))
    xs = rng.standard_normal((2, 5, 3)).astype(np.float32)
    for _ in range(2):
        layer.backward(np.ones_like(layer.forward(xs)))
    assert all(a is b for a, b in zip(layer.grads, grads))
    assert all(g.any() for g in grads)
    return layer, params, xs


def check_backward_is_repeatable(kind, rng):
    """backward leaves the forward cache intact, so calling it again gives the same gradients."""
    layer = kind.time_layer(*kind.make_params(rng, 3, 4))
    layer.forward(rng.standard_normal((2, 5, 3)), lengths=[5, 2])
    R, *R_finals = [rng.standard_normal((2, 5, 4)), *normals(rng, (2, 4), len(kind.states))]
    first = [
        layer.backward(R, *R_finals),
        *(g.copy() for g in layer.grads),
        *(g.copy() for g in kind.state_grads(layer)),
    ]
    second = [layer.backward(R, *R_finals), *layer.grads, *kind.state_grads(layer)]
    assert len(first) == len(second)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def check_dtype_preserved(kind, rng, dtype):
    """Every array the layer and its cell make has the weights' dtype."""
    layer = kind.time_layer(*kind.init_params(3, 4, seed=0, dtype=dtype))
    xs = rng.standard_normal((2, 5, 3)).astype(dtype)
    hs = layer.forward(xs, lengths=[5, 3])
    dxs = layer.backward(np.ones_like(hs), *(np.ones((2, 4), dtype) for _ in kind.states))
    assert all(a.dtype == dtype for a in [hs, dxs, *kind.final_states(layer), *kind.state_grads(layer), *layer.grads])
    cell = kind.cell(*kind.init_params(3, 4, seed=0, dtype=dtype))
    new = kind.step(cell, xs[:, 0], kind.final_states(layer))
    assert all(a.dtype == dtype for a in [*new, *cell.backward(*new), *cell.grads])


def check_init_is_seeded_and_float32_by_default(kind, shapes):
    a, b = kind.init_params(3, 4, seed=7), kind.init_params(3, 4, seed=7)
    assert [x.shape for x in a] == shapes
    assert all(x.dtype == np.float32 for x in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], kind.init_params(3, 4, seed=8)[0])


def check_matches_step_by_step_reference(kind, rng, N, T, D, H, stateful, lengths=None, final_grads=False):
    """The time layer against the cell run step by step, forward and backward; a finished row keeps its
    states and passes its state gradients through. With final_grads, the loss is on the final states too."""
    params = kind.make_params(rng, D, H)
    xs = rng.standard_normal((N, T, D))
    R = rng.standard_normal((N, T, H))
    R_finals = normals(rng, (N, H), len(kind.states)) if final_grads else []
    layer = kind.time_layer(*params, stateful=stateful)
    states0 = [np.zeros((N, H)) for _ in kind.states]
    if stateful:
        layer.forward(rng.standard_normal((N, T, D)))
        states0 = [s.copy() for s in kind.final_states(layer)]
    hs = layer.forward(xs, lengths=lengths)
    assert hs.shape == (N, T, H)
    expected, *finals = reference_forward(kind, params, xs, states0, lengths)
    assert_all_close([hs, *kind.final_states(layer)], [expected, *finals], rtol=1e-12, atol=1e-14)

    dxs = layer.backward(R, *R_finals)
    assert dxs.shape == (N, T, D) and all(g.shape == (N, H) for g in kind.state_grads(layer))
    cells, states = [], states0
    for t in range(T):
        cells.append(kind.cell(*params))
        alive = alive_rows(N, t, lengths)
        states = [np.where(alive, n, s) for n, s in zip(kind.step(cells[-1], xs[:, t], states), states)]
    dstates = [r.copy() for r in R_finals] or [np.zeros((N, H)) for _ in kind.states]
    grads = [np.zeros_like(p) for p in params]
    ref_dxs = np.zeros_like(xs)
    for t in reversed(range(T)):
        keep = alive_rows(N, t, lengths)
        upstream = [R[:, t] + dstates[0], *dstates[1:]]
        ref_dxs[:, t], *dprev = cells[t].backward(*(np.where(keep, u, 0) for u in upstream))
        dstates = [np.where(keep, p, d) for p, d in zip(dprev, dstates)]
        for acc, g in zip(grads, cells[t].grads):
            acc += g
    tol = dict(rtol=1e-10, atol=1e-12)
    assert_all_close([dxs, *kind.state_grads(layer), *layer.grads], [ref_dxs, *dstates, *grads], **tol)


# ---------------------------------------------------------------- PyTorch


def import_torch():
    """PyTorch on one thread, for a parity test; skips the test where torch is not installed, so the
    NumPy-only tests never need it."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    return torch


def torch_layer(module, weight_ih, weight_hh, bias_ih, bias_hh, **options):
    """A one-layer batch-first float64 torch.nn.RNN/LSTM/GRU with the given weights, in torch's layout."""
    torch = import_torch()
    layer = module(weight_ih.shape[1], weight_hh.shape[1], batch_first=True, dtype=torch.float64, **options)
    with torch.no_grad():
        for name, value in dict(weight_ih=weight_ih, weight_hh=weight_hh, bias_ih=bias_ih, bias_hh=bias_hh).items():
            getattr(layer, name + "_l0").copy_(torch.from_numpy(value))
    return layer


def run_torch(layer, xs, states0, R, R_finals, lengths=None):
    """Runs a torch layer from the initial states (packed when there are lengths), backpropagates the loss
    sum(hs * R) + sum(final_state * R_final) and returns NumPy arrays:
    hs, final states, dxs, initial-state gradients (the states in our order: h, then c)."""
    torch = import_torch()
    T = xs.shape[1]
    xs_t = torch.tensor(xs, requires_grad=True)
    states_t = [torch.tensor(s[None], requires_grad=True) for s in states0]
    given = states_t[0] if len(states_t) == 1 else tuple(states_t)
    if lengths is None:
        out, finals = layer(xs_t, given)
    else:
        packed = torch.nn.utils.rnn.pack_padded_sequence(xs_t, torch.from_numpy(lengths), True, enforce_sorted=False)
        out_packed, finals = layer(packed, given)
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out_packed, batch_first=True, total_length=T)
    finals = [finals] if isinstance(finals, torch.Tensor) else list(finals)
    loss = (out * torch.from_numpy(R)).sum()
    for f, r in zip(finals, R_finals):
        loss = loss + (f[0] * torch.from_numpy(r)).sum()
    loss.backward()
    detached = [f[0].detach().numpy() for f in finals]
    return out.detach().numpy(), detached, xs_t.grad.numpy(), [s.grad[0].numpy() for s in states_t]


def check_parity_with_torch(ours, theirs, xs, states0, R, R_finals, lengths=None):
    """Our time layer and a torch one with the same weights, from the same initial states (h, or h and c)
    and for the same loss: hs, final states, dxs and initial-state gradients must agree. The parameter
    gradients, in torch's layout, are the caller's to compare (the .grad of theirs, after this)."""
    names = ("h", "c")[: len(states0)]
    hs = ours.forward(xs, *states0, lengths=lengths)
    dxs = ours.backward(R, *R_finals)
    out, finals, dxs_t, dstates_t = run_torch(theirs, xs, states0, R, R_finals, lengths)
    tol = dict(rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(hs, out, **tol)
    assert_all_close([getattr(ours, s) for s in names], finals, **tol)
    np.testing.assert_allclose(dxs, dxs_t, **tol)
    assert_all_close([getattr(ours, "d" + s) for s in names], dstates_t, **tol)
