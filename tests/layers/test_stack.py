import numpy as np
import pytest

from nprnn.gradcheck import numerical_gradient, relative_error
from nprnn.layers.gru import TimeGRU, init_gru_params
from nprnn.layers.lstm import TimeLSTM, init_lstm_params
from nprnn.layers.rnn import TimeRNN, init_rnn_params
from nprnn.layers.stack import Bidirectional, TimeStack, has_cell_state, make_recurrent
from tests.layers._shared import import_torch

KINDS = ["rnn", "lstm", "gru"]
CLASSES = {"rnn": (TimeRNN, init_rnn_params), "lstm": (TimeLSTM, init_lstm_params), "gru": (TimeGRU, init_gru_params)}


def random_stack(kind, rng, D, H, num_layers=1, bidirectional=False, dropout=0.0, stateful=False):
    """A float64 stack from make_recurrent, with every parameter (biases too) randomised in place."""
    stack = make_recurrent(kind, D, H, num_layers, bidirectional, dropout, stateful, seed=0, dtype=np.float64)
    for p in stack.params:
        p[...] = rng.standard_normal(p.shape) * 0.5
    return stack


def random_layer(kind, rng, D, H, stateful=False):
    cls, init = CLASSES[kind]
    return cls(*[rng.standard_normal(p.shape) * 0.5 for p in init(D, H, dtype=np.float64)], stateful=stateful)


def directional_layers(stack):
    """The single-direction layers of a stack in PyTorch's order: layer by layer, forward first."""
    return [
        d for layer in stack.layers for d in ((layer.fwd, layer.bwd) if isinstance(layer, Bidirectional) else [layer])
    ]


def replay_dropouts(stack):
    """A function that puts every dropout generator back to its current state (same masks again)."""
    states = [d.rng.bit_generator.state for d in stack.dropouts]

    def replay():
        for d, s in zip(stack.dropouts, states):
            d.rng.bit_generator.state = s

    return replay


# ---------------------------------------------------------------- gradient checks


def check_gradients(stack, rng, N, T, lengths=None, with_h0=True, with_finals=True):
    L = len(stack.layers) * stack.num_directions
    H, cell = stack.H, stack.has_cell_state
    xs = rng.standard_normal((N, T, stack.D))
    h0 = rng.standard_normal((L, N, H)) if with_h0 else None
    c0 = rng.standard_normal((L, N, H)) if with_h0 and cell else None
    R = rng.standard_normal((N, T, H * stack.num_directions))
    Rh = rng.standard_normal((L, N, H)) if with_finals else None
    Rc = rng.standard_normal((L, N, H)) if with_finals and cell else None
    replay = replay_dropouts(stack)

    def loss():
        replay()
        hs = stack.forward(xs, h0, c0, lengths=lengths)
        total = np.sum(hs * R)
        if Rh is not None:
            total += np.sum(stack.h * Rh)
        if Rc is not None:
            total += np.sum(stack.c * Rc)
        return float(total)

    loss()
    dxs = stack.backward(R, Rh, Rc)
    analytic = [g.copy() for g in stack.grads]
    dh0, dc0 = stack.dh, stack.dc
    assert len(analytic) == len(stack.params)
    for k, (p, g) in enumerate(zip(stack.params, analytic)):
        assert relative_error(g, numerical_gradient(loss, p)) < 1e-7, f"param {k} {p.shape}"
    assert relative_error(dxs, numerical_gradient(loss, xs)) < 1e-7
    if with_h0:
        assert dh0.shape == (L, N, H)
        assert relative_error(dh0, numerical_gradient(loss, h0)) < 1e-7
        if cell:
            assert relative_error(dc0, numerical_gradient(loss, c0)) < 1e-7
    return dxs


@pytest.mark.parametrize("kind", KINDS)
def test_stacked_gradients_with_dropout(kind, rng):
    stack = random_stack(kind, rng, D=3, H=3, num_layers=3, dropout=0.4)
    assert len(stack.dropouts) == 2
    check_gradients(stack, rng, N=2, T=4)
    # the masks were really active: some between-layer activations were dropped
    assert any(np.any(d.mask == 0) for d in stack.dropouts)


@pytest.mark.parametrize("kind", KINDS)
def test_bidirectional_gradients(kind, rng):
    check_gradients(random_stack(kind, rng, D=3, H=3, bidirectional=True), rng, N=2, T=4)


@pytest.mark.parametrize("kind", KINDS)
def test_stacked_bidirectional_gradients_with_lengths_and_dropout(kind, rng):
    stack = random_stack(kind, rng, D=2, H=3, num_layers=2, bidirectional=True, dropout=0.3)
    lengths = np.array([4, 2, 1])
    dxs = check_gradients(stack, rng, N=3, T=4, lengths=lengths)
    assert np.all(dxs[1, 2:] == 0) and np.all(dxs[2, 1:] == 0)  # padded positions get no gradient


@pytest.mark.parametrize("kind", KINDS)
def test_stacked_gradients_without_initial_or_final_states(kind, rng):
    check_gradients(random_stack(kind, rng, D=3, H=2, num_layers=2), rng, N=2, T=3, with_h0=False, with_finals=False)


@pytest.mark.parametrize("kind", KINDS)
def test_stateful_stack_across_two_calls(kind, rng):
    """The second call starts every layer from its carried state; the gradients stop at the call
    boundary (truncated BPTT) and .dh / .dc are the gradients w.r.t. the carried states."""
    N, T, D, H = 2, 3, 3, 3
    stack = random_stack(kind, rng, D, H, num_layers=2, dropout=0.3, stateful=True)
    assert stack.stateful
    xs1, xs2 = rng.standard_normal((N, T, D)), rng.standard_normal((N, T, D))
    R = rng.standard_normal((N, T, H))
    stack.forward(xs1)
    h_carried = stack.h.copy()
    c_carried = stack.c.copy() if stack.has_cell_state else None
    replay = replay_dropouts(stack)
    hs2 = stack.forward(xs2)

    # the same as a non-stateful stack over the same arrays, started from the carried states
    fresh = TimeStack([type(layer)(*layer.params) for layer in stack.layers], dropout=stack.dropout)
    replay()
    for d_fresh, d in zip(fresh.dropouts, stack.dropouts):  # same masks
        d_fresh.rng.bit_generator.state = d.rng.bit_generator.state
    np.testing.assert_allclose(fresh.forward(xs2, h_carried, c_carried), hs2, rtol=1e-12, atol=1e-14)

    def loss():  # the second call alone, from the carried states, with its dropout masks
        replay()
        stack.set_state(h_carried, c_carried)
        return float(np.sum(stack.forward(xs2) * R))

    np.testing.assert_array_equal(loss(), np.sum(hs2 * R))
    stack.backward(R)
    analytic = [g.copy() for g in stack.grads]
    dh, dc = stack.dh, stack.dc
    for p, g in zip(stack.params, analytic):
        assert relative_error(g, numerical_gradient(loss, p)) < 1e-7
    assert relative_error(dh, numerical_gradient(loss, h_carried)) < 1e-7
    if stack.has_cell_state:
        assert relative_error(dc, numerical_gradient(loss, c_carried)) < 1e-7
    stack.reset_state()
    assert stack.h is None


# ---------------------------------------------------------------- structure and semantics


@pytest.mark.parametrize("kind", KINDS)
def test_stack_equals_layers_chained_by_hand(kind, rng):
    N, T, D, H = 2, 5, 3, 4
    stack = random_stack(kind, rng, D, H, num_layers=2)
    xs = rng.standard_normal((N, T, D))
    first, second = stack.layers
    expected = second.forward(first.forward(xs))
    h_expected = np.stack([first.h, second.h])
    np.testing.assert_array_equal(stack.forward(xs), expected)
    np.testing.assert_array_equal(stack.h, h_expected)
    assert all(a is b for a, b in zip(stack.params, first.params + second.params))
    assert all(a is b for a, b in zip(stack.grads, first.grads + second.grads))


@pytest.mark.parametrize("kind", KINDS)
def test_bidirectional_is_forward_plus_reversed_backward(kind, rng):
    N, T, D, H = 2, 5, 3, 4
    fwd, bwd = random_layer(kind, rng, D, H), random_layer(kind, rng, D, H)
    bi = Bidirectional(fwd, bwd)
    xs = rng.standard_normal((N, T, D))
    hs = bi.forward(xs)
    ref_f, ref_b = type(fwd)(*fwd.params), type(bwd)(*bwd.params)  # same arrays
    expected = np.concatenate([ref_f.forward(xs), ref_b.forward(xs[:, ::-1])[:, ::-1]], axis=2)
    np.testing.assert_array_equal(hs, expected)
    np.testing.assert_array_equal(bi.h, np.stack([ref_f.h, ref_b.h]))
    assert all(a is b for a, b in zip(bi.params, fwd.params + bwd.params))
    assert all(a is b for a, b in zip(bi.grads, fwd.grads + bwd.grads))


@pytest.mark.parametrize("kind", KINDS)
def test_variable_lengths_equal_each_sequence_alone(kind, rng):
    """Bidirectional + stacked with lengths: every row behaves as if it ran alone with its own length,
    in outputs, final states, input gradients, initial-state gradients and summed parameter gradients."""
    N, T, D, H = 3, 5, 2, 3
    stack = random_stack(kind, rng, D, H, num_layers=2, bidirectional=True)
    cell = stack.has_cell_state
    lengths = np.array([5, 2, 3])
    xs = rng.standard_normal((N, T, D))
    h0, c0 = rng.standard_normal((4, N, H)), (rng.standard_normal((4, N, H)) if cell else None)
    R, Rh = rng.standard_normal((N, T, 2 * H)), rng.standard_normal((4, N, H))
    Rc = rng.standard_normal((4, N, H)) if cell else None

    hs = stack.forward(xs, h0, c0, lengths=lengths)
    h, c = stack.h, stack.c
    dxs = stack.backward(R, Rh, Rc)
    total = [g.copy() for g in stack.grads]
    dh0, dc0 = stack.dh, stack.dc
    sums = [np.zeros_like(p) for p in stack.params]
    for n, L in enumerate(lengths):
        row = slice(n, n + 1)
        c0_n = None if c0 is None else c0[:, row]
        hs_n = stack.forward(xs[row, :L], h0[:, row], c0_n)
        np.testing.assert_allclose(hs[n, :L], hs_n[0], rtol=1e-12, atol=1e-14)
        assert np.all(hs[n, L:] == 0)
        np.testing.assert_allclose(h[:, n], stack.h[:, 0], rtol=1e-12, atol=1e-14)
        if cell:
            np.testing.assert_allclose(c[:, n], stack.c[:, 0], rtol=1e-12, atol=1e-14)
        dxs_n = stack.backward(R[row, :L], Rh[:, row], None if Rc is None else Rc[:, row])
        np.testing.assert_allclose(dxs[n, :L], dxs_n[0], rtol=1e-10, atol=1e-12)
        assert np.all(dxs[n, L:] == 0)
        np.testing.assert_allclose(dh0[:, n], stack.dh[:, 0], rtol=1e-10, atol=1e-12)
        if cell:
            np.testing.assert_allclose(dc0[:, n], stack.dc[:, 0], rtol=1e-10, atol=1e-12)
        for s, g in zip(sums, stack.grads):
            s += g
    for s, g in zip(sums, total):
        np.testing.assert_allclose(g, s, rtol=1e-10, atol=1e-12)


def test_bidirectional_parity_with_textbook_bilstm(dlfs2, rng):
    N, T, D, H = 3, 5, 4, 3
    params = [rng.standard_normal(p.shape).astype(np.float32) * 0.5 for _ in range(2) for p in init_lstm_params(D, H)]
    xs, dout = rng.standard_normal((N, T, D)).astype(np.float32), rng.standard_normal((N, T, 2 * H)).astype(np.float32)
    ours = Bidirectional(TimeLSTM(*params[:3]), TimeLSTM(*params[3:]))
    ref = dlfs2.time_layers.TimeBiLSTM(*[p.copy() for p in params])
    np.testing.assert_allclose(ours.forward(xs), ref.forward(xs), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours.backward(dout), ref.backward(dout), rtol=1e-5, atol=1e-5)
    for g, r in zip(ours.grads, ref.grads):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5)


def test_train_flag_turns_dropout_off(rng):
    stack = random_stack("lstm", rng, D=3, H=4, num_layers=3, dropout=0.5)
    plain = TimeStack(stack.layers)  # same layers, no dropout
    xs = rng.standard_normal((2, 5, 3))
    assert not np.allclose(stack.forward(xs), plain.forward(xs))
    stack.train = False
    assert all(d.train is False for d in stack.dropouts)
    np.testing.assert_array_equal(stack.forward(xs), plain.forward(xs))
    stack.train = True
    assert all(d.train for d in stack.dropouts)


def test_dropout_is_seeded(rng):
    xs = rng.standard_normal((2, 5, 3)).astype(np.float32)
    a = make_recurrent("gru", 3, 4, num_layers=2, dropout=0.5, seed=5)
    b = make_recurrent("gru", 3, 4, num_layers=2, dropout=0.5, seed=5)
    c = make_recurrent("gru", 3, 4, num_layers=2, dropout=0.5, seed=6)
    np.testing.assert_array_equal(a.forward(xs), b.forward(xs))
    assert not np.array_equal(a.dropouts[0].mask, c.dropouts[0].mask)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_make_recurrent_shapes_and_seeds(kind, bidirectional):
    stack = make_recurrent(kind, 5, 4, num_layers=3, bidirectional=bidirectional, seed=1)
    dirs = 2 if bidirectional else 1
    gates = {"rnn": 1, "lstm": 4, "gru": 3}[kind]
    assert stack.num_directions == dirs and stack.has_cell_state == (kind == "lstm")
    layers = directional_layers(stack)
    assert len(layers) == 3 * dirs
    assert [layer.params[0].shape for layer in layers] == [(5, gates * 4)] * dirs + [(4 * dirs, gates * 4)] * 2 * dirs
    assert all(p.dtype == np.float32 for p in stack.params)
    # every layer and direction has its own initial weights, and the seed reproduces them
    assert not np.array_equal(layers[-1].params[1], layers[-2].params[1])
    again = make_recurrent(kind, 5, 4, num_layers=3, bidirectional=bidirectional, seed=1)
    assert all(np.array_equal(p, q) for p, q in zip(stack.params, again.params))
    other = make_recurrent(kind, 5, 4, num_layers=3, bidirectional=bidirectional, seed=2)
    assert not np.array_equal(stack.params[0], other.params[0])
    xs = np.ones((2, 3, 5), np.float32)
    hs = stack.forward(xs)
    assert hs.shape == (2, 3, 4 * dirs) and hs.dtype == np.float32
    assert stack.h.shape == (3 * dirs, 2, 4)
    assert (stack.c is not None) == (kind == "lstm")
    dxs = stack.backward(np.ones_like(hs))
    assert dxs.shape == xs.shape and dxs.dtype == np.float32 and stack.dh.shape == (3 * dirs, 2, 4)


def test_has_cell_state():
    assert has_cell_state(TimeLSTM(*init_lstm_params(2, 3)))
    assert not has_cell_state(TimeRNN(*init_rnn_params(2, 3)))
    assert not has_cell_state(TimeGRU(*init_gru_params(2, 3)))
    assert make_recurrent("lstm", 2, 3, bidirectional=True).layers[0].has_cell_state
    assert not make_recurrent("gru", 2, 3, bidirectional=True).layers[0].has_cell_state


@pytest.mark.parametrize("kind", KINDS)
def test_stateful_set_state(kind, rng):
    stack = make_recurrent(kind, 3, 4, num_layers=2, stateful=True, dtype=np.float64)
    xs = rng.standard_normal((2, 5, 3))
    h = rng.standard_normal((2, 2, 4))
    c = rng.standard_normal((2, 2, 4)) if kind == "lstm" else None
    stack.set_state(h, c)
    carried = stack.forward(xs)
    stack.stateful = False
    np.testing.assert_array_equal(stack.forward(xs, h, c), carried)
    assert not np.allclose(stack.forward(xs), carried)  # not stateful: starts from zeros


# ---------------------------------------------------------------- PyTorch parity

TORCH = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}  # torch.nn's class for each kind
# nprnn's LSTM gate blocks are f, g, i, o; torch's are i, f, g, o.
LSTM_TORCH_BLOCKS_FOR_NPRNN = [1, 2, 0, 3]  # nprnn block k is torch block [k]
LSTM_NPRNN_BLOCKS_FOR_TORCH = [2, 0, 1, 3]  # torch block k is nprnn block [k]


def _blocks(a, order, axis):
    """Reorder the four equal gate blocks of ``a`` along ``axis``."""
    parts = np.split(a, 4, axis=axis)
    return np.concatenate([parts[k] for k in order], axis=axis)


def nprnn_params_from_torch(kind, w_ih, w_hh, b_ih, b_hh):
    """torch (weight_ih, weight_hh, bias_ih, bias_hh) of one layer/direction -> nprnn params."""
    if kind == "rnn":
        return [w_ih.T, w_hh.T, b_ih + b_hh]
    if kind == "lstm":
        order = LSTM_TORCH_BLOCKS_FOR_NPRNN
        return [_blocks(w_ih.T, order, 1), _blocks(w_hh.T, order, 1), _blocks(b_ih + b_hh, order, 0)]
    H = w_hh.shape[1]
    b = np.concatenate([b_ih[: 2 * H] + b_hh[: 2 * H], b_ih[2 * H :]])
    return [w_ih.T, w_hh.T, b, b_hh[2 * H :]]


def torch_grads_from_nprnn(kind, grads):
    """nprnn grads of one layer/direction -> what torch's (weight_ih, weight_hh, bias_ih, bias_hh).grad must be."""
    if kind == "rnn":
        dWx, dWh, db = grads
        return [dWx.T, dWh.T, db, db]
    if kind == "lstm":
        order = LSTM_NPRNN_BLOCKS_FOR_TORCH
        dWx, dWh, db = (_blocks(g, order, g.ndim - 1) for g in grads)
        return [dWx.T, dWh.T, db, db]
    dWx, dWh, db, dbhn = grads
    H = dbhn.shape[0]
    return [dWx.T, dWh.T, db, np.concatenate([db[: 2 * H], dbhn])]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("packed", [False, True])
def test_parity_with_torch(kind, bidirectional, packed, rng):
    N, T, D, H, num_layers = 4, 6, 3, 5, 2
    dirs = 2 if bidirectional else 1
    L = num_layers * dirs
    lengths = np.array([6, 2, 4, 1]) if packed else None
    cell = kind == "lstm"
    torch = import_torch()
    module = getattr(torch.nn, TORCH[kind])(D, H, num_layers=num_layers, bidirectional=bidirectional, batch_first=True)
    module = module.to(torch.float64)
    with torch.no_grad():  # random biases too, so that a wrong bias mapping shows
        for p in module.parameters():
            p.copy_(torch.from_numpy(rng.uniform(-0.6, 0.6, tuple(p.shape))))
    stack = make_recurrent(kind, D, H, num_layers, bidirectional, dtype=np.float64)
    suffixes = [f"l{k}{s}" for k in range(num_layers) for s in ([""] + ["_reverse"] * (dirs - 1))]
    tensors = {name: p for name, p in module.named_parameters()}
    for layer, sfx in zip(directional_layers(stack), suffixes):
        names = [f"weight_ih_{sfx}", f"weight_hh_{sfx}", f"bias_ih_{sfx}", f"bias_hh_{sfx}"]
        for p, value in zip(layer.params, nprnn_params_from_torch(kind, *(tensors[n].detach().numpy() for n in names))):
            p[...] = value

    xs, h0 = rng.standard_normal((N, T, D)), rng.standard_normal((L, N, H))
    c0 = rng.standard_normal((L, N, H)) if cell else None
    R, Rh = rng.standard_normal((N, T, dirs * H)), rng.standard_normal((L, N, H))
    Rc = rng.standard_normal((L, N, H)) if cell else None

    hs = stack.forward(xs, h0, c0, lengths=lengths)
    dxs = stack.backward(R, Rh, Rc)

    xs_t, h0_t = torch.tensor(xs, requires_grad=True), torch.tensor(h0, requires_grad=True)
    c0_t = torch.tensor(c0, requires_grad=True) if cell else None
    inp = xs_t
    if packed:
        inp = torch.nn.utils.rnn.pack_padded_sequence(xs_t, torch.from_numpy(lengths), True, enforce_sorted=False)
    out, state = module(inp, (h0_t, c0_t) if cell else h0_t)
    if packed:
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T)
    h_n, c_n = state if cell else (state, None)
    loss = (out * torch.from_numpy(R)).sum() + (h_n * torch.from_numpy(Rh)).sum()
    if cell:
        loss = loss + (c_n * torch.from_numpy(Rc)).sum()
    loss.backward()

    tol = dict(rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(hs, out.detach().numpy(), **tol)
    np.testing.assert_allclose(stack.h, h_n.detach().numpy(), **tol)
    np.testing.assert_allclose(dxs, xs_t.grad.numpy(), **tol)
    np.testing.assert_allclose(stack.dh, h0_t.grad.numpy(), **tol)
    if cell:
        np.testing.assert_allclose(stack.c, c_n.detach().numpy(), **tol)
        np.testing.assert_allclose(stack.dc, c0_t.grad.numpy(), **tol)
    for layer, sfx in zip(directional_layers(stack), suffixes):
        names = [f"weight_ih_{sfx}", f"weight_hh_{sfx}", f"bias_ih_{sfx}", f"bias_hh_{sfx}"]
        for name, expected in zip(names, torch_grads_from_nprnn(kind, layer.grads)):
            np.testing.assert_allclose(expected, tensors[name].grad.numpy(), err_msg=name, **tol)


# ---------------------------------------------------------------- bad input


def test_make_recurrent_bad_arguments():
    with pytest.raises(ValueError, match=r"kind must be one of \['gru', 'lstm', 'rnn'\], got 'lstmx'"):
        make_recurrent("lstmx", 3, 4)
    with pytest.raises(ValueError, match="bidirectional stack cannot be stateful"):
        make_recurrent("rnn", 3, 4, bidirectional=True, stateful=True)
    with pytest.raises(ValueError, match="num_layers must be a positive integer, got 0"):
        make_recurrent("rnn", 3, 4, num_layers=0)
    with pytest.raises(ValueError, match="hidden_size must be a positive integer, got 2.5"):
        make_recurrent("rnn", 3, 2.5)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got 1.0"):
        make_recurrent("gru", 3, 4, num_layers=2, dropout=1.0)


def test_bidirectional_bad_layers():
    rnn, gru = TimeRNN(*init_rnn_params(3, 4)), TimeGRU(*init_gru_params(3, 4))
    with pytest.raises(ValueError, match="same kind of layer, got TimeRNN and TimeGRU"):
        Bidirectional(rnn, gru)
    with pytest.raises(ValueError, match=r"got \(D=3, H=4, float32\) and \(D=3, H=5, float32\)"):
        Bidirectional(rnn, TimeRNN(*init_rnn_params(3, 5)))
    with pytest.raises(ValueError, match="must not be stateful"):
        Bidirectional(rnn, TimeRNN(*init_rnn_params(3, 4), stateful=True))


def test_time_stack_bad_layers():
    with pytest.raises(ValueError, match="at least one layer"):
        TimeStack([])
    with pytest.raises(
        ValueError, match="layer 1 must take the previous layer's outputs, input size 4, got input size 3"
    ):
        TimeStack([TimeRNN(*init_rnn_params(3, 4)), TimeRNN(*init_rnn_params(3, 4))])
    with pytest.raises(ValueError, match=r"layer 1 \(TimeLSTM\) has \(4, 1, dtype\('float32'\), True, False\)"):
        TimeStack([TimeRNN(*init_rnn_params(3, 4)), TimeLSTM(*init_lstm_params(4, 4))])
    bi = make_recurrent("rnn", 3, 4, bidirectional=True).layers[0]
    with pytest.raises(ValueError, match="same \\(hidden size, directions"):
        TimeStack([TimeRNN(*init_rnn_params(3, 8)), bi])


@pytest.mark.parametrize("bidirectional", [False, True])
def test_stack_bad_inputs(bidirectional):
    dirs = 2 if bidirectional else 1
    stack = make_recurrent("lstm", 3, 4, num_layers=2, bidirectional=bidirectional)
    xs = np.zeros((2, 5, 3), np.float32)
    with pytest.raises(ValueError, match=rf"h0 must have shape \({2 * dirs}, 2, 4\), got \(1, 2, 4\)"):
        stack.forward(xs, np.zeros((1, 2, 4), np.float32))
    with pytest.raises(ValueError, match=rf"c0 must have shape \({2 * dirs}, 2, 4\), got \({2 * dirs}, 3, 4\)"):
        stack.forward(xs, None, np.zeros((2 * dirs, 3, 4), np.float32))
    with pytest.raises(ValueError, match=r"xs must have shape \(any, any, 3\), got \(2, 5, 4\)"):
        stack.forward(np.zeros((2, 5, 4), np.float32))
    with pytest.raises(ValueError, match=r"lengths must be in \[1, 5\]"):
        stack.forward(xs, lengths=[6, 1])
    stack.forward(xs)
    with pytest.raises(ValueError, match=rf"dhs must have shape \(any, any, {4 * dirs}\), got \(2, 5, 3\)"):
        stack.backward(np.zeros((2, 5, 3), np.float32))
    with pytest.raises(ValueError, match=rf"dh_final must have shape \({2 * dirs}, 2, 4\)"):
        stack.backward(np.zeros((2, 5, 4 * dirs), np.float32), np.zeros((2 * dirs, 1, 4), np.float32))


def test_cell_state_only_for_lstm():
    stack = make_recurrent("gru", 3, 4, num_layers=2)
    xs = np.zeros((2, 5, 3), np.float32)
    with pytest.raises(ValueError, match="c0 is only for layers with a cell state \\(LSTM\\), not TimeGRU"):
        stack.forward(xs, None, np.zeros((2, 2, 4), np.float32))
    bi = make_recurrent("rnn", 3, 4, bidirectional=True).layers[0]
    with pytest.raises(ValueError, match="c0 is only for layers with a cell state \\(LSTM\\), not TimeRNN"):
        bi.forward(xs, None, np.zeros((2, 2, 4), np.float32))
    stack.forward(xs)
    assert stack.c is None and stack.dc is None


def test_bidirectional_stack_is_not_stateful():
    stack = make_recurrent("rnn", 3, 4, num_layers=2, bidirectional=True)
    with pytest.raises(ValueError, match="bidirectional stack cannot be stateful"):
        stack.stateful = True
    with pytest.raises(ValueError, match="bidirectional stack has no state to set"):
        stack.set_state(np.zeros((4, 2, 4), np.float32))
    with pytest.raises(RuntimeError, match="backward called before forward"):
        stack.layers[0].backward(np.zeros((2, 5, 8), np.float32))
