"""PyTorch interop: weight mapping, state_dicts of recurrent layers and of the language model, both directions.

Every check runs the two frameworks on the same inputs and compares outputs and final states; the
round trips nprnn -> torch -> nprnn must give back the very same bits.
"""

import subprocess
import sys

import numpy as np
import pytest

from nprnn.interop import (
    MissingExtraError,
    directional_layers,
    from_torch,
    grads_to_torch,
    infer_lm_config,
    layer_kind,
    lm_state_dict,
    load_lm_state_dict,
    load_recurrent_state_dict,
    params_from_torch,
    params_to_torch,
    recurrent_from_torch,
    recurrent_state_dict,
    to_torch,
    torch_recurrent,
)
from nprnn.interop.torch_io import LSTM_FROM_TORCH, LSTM_TO_TORCH, reorder_blocks
from nprnn.layers.gru import TimeGRU, init_gru_params
from nprnn.layers.lstm import TimeLSTM, init_lstm_params
from nprnn.layers.rnn import TimeRNN, init_rnn_params
from nprnn.layers.stack import TimeStack, make_recurrent
from nprnn.models.lm import LanguageModel, LMConfig

torch = pytest.importorskip("torch")  # every test here compares with torch

torch.set_num_threads(1)

KINDS = ["rnn", "lstm", "gru"]
SINGLE = {"rnn": (TimeRNN, init_rnn_params), "lstm": (TimeLSTM, init_lstm_params), "gru": (TimeGRU, init_gru_params)}
# (num_layers, bidirectional); num_layers None = a bare TimeRNN / TimeLSTM / TimeGRU
STRUCTURES = [(None, False), (1, False), (2, False), (1, True), (2, True)]
TOL = {np.float32: dict(rtol=1e-6, atol=1e-6), np.float64: dict(rtol=1e-10, atol=1e-10)}
TORCH_DTYPE = {np.float32: torch.float32, np.float64: torch.float64}
TORCH = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}


def randomize(params, rng, scale=0.5):
    """Random values (biases too, so a wrong bias mapping shows) in place."""
    for p in params:
        p[...] = rng.uniform(-scale, scale, p.shape)


def make_layer(kind, structure, rng, D=3, H=4, dtype=np.float64):
    num_layers, bidirectional = structure
    if num_layers is None:
        cls, init = SINGLE[kind]
        layer = cls(*init(D, H, dtype=dtype))
    else:
        layer = make_recurrent(kind, D, H, num_layers, bidirectional, dtype=dtype)
    randomize(layer.params, rng)
    return layer


def n_states(layer):
    _, num_layers, dirs, _ = directional_layers(layer)
    return num_layers * dirs


def run_nprnn(layer, xs, h0, c0):
    """Run any recurrent layer with torch-shaped states (L*dirs, N, H); returns (hs, h_n, c_n)."""
    if isinstance(layer, TimeStack):
        hs = layer.forward(xs, h0, c0)
        return hs, layer.h, layer.c
    if isinstance(layer, TimeLSTM):
        hs = layer.forward(xs, h0[0], c0[0])
        return hs, layer.h[None], layer.c[None]
    hs = layer.forward(xs, h0[0])
    return hs, layer.h[None], None


def run_torch(module, xs, h0, c0):
    with torch.no_grad():
        state = (torch.from_numpy(h0), torch.from_numpy(c0)) if c0 is not None else torch.from_numpy(h0)
        out, state = module(torch.from_numpy(xs), state)
    h_n, c_n = state if c0 is not None else (state, None)
    return out.numpy(), h_n.numpy(), None if c_n is None else c_n.numpy()


def random_inputs(layer, kind, rng, N=3, T=5, dtype=np.float64):
    D, H = directional_layers(layer)[3][0][1].D, layer.H
    xs = rng.standard_normal((N, T, D)).astype(dtype)
    h0 = rng.standard_normal((n_states(layer), N, H)).astype(dtype)
    c0 = rng.standard_normal((n_states(layer), N, H)).astype(dtype) if kind == "lstm" else None
    return xs, h0, c0


def assert_same_run(a, b, tol):
    for got, want, what in zip(a, b, ["outputs", "h_n", "c_n"]):
        if want is None:
            assert got is None
        else:
            np.testing.assert_allclose(got, want, err_msg=what, **tol)


def bits(arrays):
    return [np.ascontiguousarray(a).tobytes() for a in arrays]


# ---------------------------------------------------------------- weight mapping of one direction


def test_lstm_block_orders_are_inverse():
    a = np.arange(8.0)  # four blocks of two
    assert np.array_equal(reorder_blocks(reorder_blocks(a, LSTM_TO_TORCH), LSTM_FROM_TORCH), a)


@pytest.mark.parametrize("kind", KINDS)
def test_export_bias_layout(kind, rng):
    """All of b goes into bias_ih, zeros into bias_hh; the GRU's bhn into bias_hh's n block; LSTM gate
    blocks f, g, i, o come out in torch's order i, f, g, o."""
    H = 2
    layer = make_layer(kind, (None, False), rng, D=3, H=H)
    G = {"rnn": 1, "lstm": 4, "gru": 3}[kind]
    b = np.repeat(np.arange(1.0, G + 1), H)  # block k holds the value k + 1
    layer.params[2][...] = b
    w_ih, w_hh, b_ih, b_hh = params_to_torch(kind, layer.params)
    assert w_ih.shape == (G * H, 3) and w_hh.shape == (G * H, H)
    if kind == "lstm":
        np.testing.assert_array_equal(b_ih, np.repeat([3.0, 1.0, 2.0, 4.0], H))  # i, f, g, o
        np.testing.assert_array_equal(w_ih[:H], layer.params[0][:, 2 * H : 3 * H].T)  # torch's i = our i block
    else:
        np.testing.assert_array_equal(b_ih, b)
        np.testing.assert_array_equal(w_ih, layer.params[0].T)
    if kind == "gru":
        np.testing.assert_array_equal(b_hh, np.concatenate([np.zeros(2 * H), layer.params[3]]))
    else:
        np.testing.assert_array_equal(b_hh, np.zeros(G * H))
    # new arrays, not views: changing them leaves the layer alone
    w_ih += 1
    assert not np.shares_memory(w_ih, layer.params[0])


@pytest.mark.parametrize("kind", KINDS)
def test_params_from_torch_sums_the_two_biases(kind, rng):
    module = TORCH[kind](3, 4, batch_first=True, dtype=torch.float64)
    params = params_from_torch(kind, module.weight_ih_l0, module.weight_hh_l0, module.bias_ih_l0, module.bias_hh_l0)
    layer = SINGLE[kind][0](*params)
    xs, h0, c0 = random_inputs(layer, kind, rng)
    assert_same_run(run_nprnn(layer, xs, h0, c0), run_torch(module, xs, h0, c0), TOL[np.float64])


@pytest.mark.parametrize("kind", KINDS)
def test_grads_to_torch_matches_autograd(kind, rng):
    layer = make_layer(kind, (None, False), rng)
    module = torch_recurrent(layer)
    xs, h0, c0 = random_inputs(layer, kind, rng)
    hs, _, _ = run_nprnn(layer, xs, h0, c0)
    R = rng.standard_normal(hs.shape)
    layer.backward(R)
    state = (torch.from_numpy(h0), torch.from_numpy(c0)) if c0 is not None else torch.from_numpy(h0)
    out, _ = module(torch.from_numpy(xs), state)
    (out * torch.from_numpy(R)).sum().backward()
    names = ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]
    for name, expected in zip(names, grads_to_torch(kind, layer.grads)):
        np.testing.assert_allclose(expected, getattr(module, name).grad.numpy(), err_msg=name, rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------- recurrent layers


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("structure", STRUCTURES)
def test_state_dict_has_torchs_keys_and_shapes(kind, structure, rng):
    layer = make_layer(kind, structure, rng)
    num_layers, bidirectional = structure
    cls = TORCH[kind]
    reference = cls(3, 4, num_layers=num_layers or 1, bidirectional=bidirectional).state_dict()
    ours = recurrent_state_dict(layer, prefix="")
    assert list(ours) == list(reference)  # same keys, same order
    assert all(ours[k].shape == reference[k].shape for k in reference)
    assert all(isinstance(v, torch.Tensor) for v in ours.values())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("structure", STRUCTURES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nprnn_layer_runs_the_same_in_torch(kind, structure, dtype, rng):
    layer = make_layer(kind, structure, rng, dtype=dtype)
    module = torch_recurrent(layer)
    assert module.batch_first and next(module.parameters()).dtype == TORCH_DTYPE[dtype]
    xs, h0, c0 = random_inputs(layer, kind, rng, dtype=dtype)
    assert_same_run(run_torch(module, xs, h0, c0), run_nprnn(layer, xs, h0, c0), TOL[dtype])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("structure", STRUCTURES[1:])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_torch_module_runs_the_same_in_nprnn(kind, structure, dtype, rng):
    num_layers, bidirectional = structure
    cls = TORCH[kind]
    module = cls(3, 4, num_layers=num_layers, bidirectional=bidirectional, batch_first=True, dtype=TORCH_DTYPE[dtype])
    with torch.no_grad():  # both biases random: the import must sum them
        for p in module.parameters():
            p.uniform_(-0.5, 0.5)
    stack = recurrent_from_torch(module)
    assert isinstance(stack, TimeStack) and stack.dtype == dtype
    assert (len(stack.layers), stack.num_directions) == (num_layers, 2 if bidirectional else 1)
    xs, h0, c0 = random_inputs(stack, kind, rng, dtype=dtype)
    assert_same_run(run_nprnn(stack, xs, h0, c0), run_torch(module, xs, h0, c0), TOL[dtype])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("structure", STRUCTURES)
def test_round_trip_is_exact(kind, structure, rng):
    layer = make_layer(kind, structure, rng, dtype=np.float32)
    other = make_layer(kind, structure, rng, dtype=np.float32)  # different random weights
    assert bits(other.params) != bits(layer.params)
    load_recurrent_state_dict(other, torch_recurrent(layer).state_dict())
    assert bits(other.params) == bits(layer.params)
    if structure[0] is not None:  # through a torch module and back to a new stack
        assert bits(recurrent_from_torch(torch_recurrent(layer)).params) == bits(layer.params)


def test_recurrent_from_torch_options():
    module = torch.nn.LSTM(3, 4, num_layers=3, dropout=0.25, batch_first=True)
    stack = recurrent_from_torch(module, stateful=True, dtype=np.float64)
    assert stack.stateful and stack.dtype == np.float64 and stack.dropout == 0.25 and len(stack.dropouts) == 2
    i, f, g, o = np.split(module.weight_hh_l2.detach().numpy(), 4)  # torch's gate blocks
    np.testing.assert_array_equal(stack.layers[2].params[1], np.concatenate([f, g, i, o]).T)  # float32 -> 64 is exact
    back = torch_recurrent(stack)
    assert (back.num_layers, back.dropout, back.hidden_size, back.input_size) == (3, 0.25, 4, 3)


def test_layer_kind_and_directional_layers(rng):
    stack = make_recurrent("gru", 3, 4, num_layers=2, bidirectional=True)
    kind, num_layers, dirs, found = directional_layers(stack)
    assert (kind, num_layers, dirs) == ("gru", 2, 2)
    assert [s for s, _ in found] == ["l0", "l0_reverse", "l1", "l1_reverse"]
    assert found[1][1] is stack.layers[0].bwd and found[2][1] is stack.layers[1].fwd
    assert layer_kind(stack.layers[1].bwd) == "gru"


# ---------------------------------------------------------------- the language model


def random_lm(cell, layers, tied, dtype, rng, V=13, H=6, dropout=0.0):
    config = LMConfig(vocab_size=V, cell=cell, embed=H, hidden=H, layers=layers, tie_weights=tied, dropout=dropout)
    model = LanguageModel(config, seed=int(rng.integers(1000)), dtype=dtype)
    randomize(model.params, rng)
    model.train = False
    return model


def run_lm_torch(module, ids, state=None):
    with torch.no_grad():
        logits, state = module(torch.from_numpy(ids), state)
    return logits.numpy(), state


def states_of(state):
    return [s.numpy() for s in state] if isinstance(state, tuple) else [state.numpy()]


@pytest.mark.parametrize("cell", KINDS)
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lm_runs_the_same_in_torch(cell, layers, tied, dtype, rng):
    """Logits and final states agree, over two consecutive (stateful) calls."""
    model = random_lm(cell, layers, tied, dtype, rng)
    module = to_torch(model).eval()
    assert next(module.parameters()).dtype == TORCH_DTYPE[dtype]
    state = None
    for T in (5, 3):
        ids = rng.integers(0, 13, size=(2, T))
        logits, state = run_lm_torch(module, ids, state)
        np.testing.assert_allclose(logits, model.predict(ids), **TOL[dtype])
        expected = [model.rnn.h] + ([model.rnn.c] if cell == "lstm" else [])
        for got, want in zip(states_of(state), expected, strict=True):
            np.testing.assert_allclose(got, want, **TOL[dtype])


@pytest.mark.parametrize("cell", KINDS)
@pytest.mark.parametrize("tied", [False, True])
def test_lm_round_trip_is_exact(cell, tied, rng):
    model = random_lm(cell, 2, tied, np.float32, rng)
    state_dict = to_torch(model).state_dict()
    back = from_torch(state_dict)  # config inferred from the shapes
    assert back.config == LMConfig(vocab_size=13, cell=cell, embed=6, hidden=6, layers=2, tie_weights=tied)
    assert back.embed.dtype == np.float32
    assert bits(back.params) == bits(model.params)
    other = random_lm(cell, 2, tied, np.float32, rng)
    assert bits(load_lm_state_dict(other, lm_state_dict(model)).params) == bits(model.params)


@pytest.mark.parametrize("cell", KINDS)
def test_torch_trained_lm_loads_into_nprnn(cell, rng):
    """A TorchLanguageModel with torch's own initialisation and random values in both biases."""
    from nprnn.interop.torch_io import TorchLanguageModel

    config = LMConfig(vocab_size=11, cell=cell, embed=5, hidden=4, layers=2)
    module = TorchLanguageModel(config, dtype=torch.float64).eval()
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(-0.5, 0.5)
    model = from_torch(module)
    assert model.config is config and model.embed.dtype == np.float64
    model.train = False
    ids = rng.integers(0, 11, size=(3, 4))
    logits, state = run_lm_torch(module, ids)
    np.testing.assert_allclose(model.predict(ids), logits, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(model.rnn.h, states_of(state)[0], rtol=1e-10, atol=1e-10)


def test_torch_lm_structure(rng):
    model = random_lm("lstm", 2, True, np.float32, rng, dropout=0.3)
    model.train = True
    module = to_torch(model)
    assert module.training  # the train flag is carried over
    assert module.decoder.weight is module.embedding.weight  # tied: one parameter
    assert module.rnn.dropout == 0.3 and module.drop.p == 0.3 and module.rnn.batch_first
    assert list(module.state_dict()) == list(lm_state_dict(model))
    state = lm_state_dict(model)
    assert state["decoder.weight"] is state["embedding.weight"]  # as in torch's state_dict of a tied model
    untied = to_torch(random_lm("gru", 1, False, np.float32, rng))
    assert untied.decoder.weight is not untied.embedding.weight and untied.rnn.dropout == 0.0


# ---------------------------------------------------------------- bad input


def test_bad_recurrent_state_dict_lists_every_problem(rng):
    stack = make_recurrent("lstm", 3, 4, num_layers=2)
    state = recurrent_state_dict(stack)
    del state["weight_hh_l1"], state["bias_ih_l0"]
    state["weight_ih_l2"] = torch.zeros(16, 4)
    state["weight_ih_l0"] = torch.zeros(12, 3)
    state["bias_hh_l1"] = torch.zeros(16, dtype=torch.int64)
    before = bits(stack.params)
    with pytest.raises(ValueError) as info:
        load_recurrent_state_dict(stack, state)
    message = str(info.value)
    for expected in [
        "missing keys: bias_ih_l0, weight_hh_l1",
        "unexpected keys: weight_ih_l2",
        "weight_ih_l0: expected shape (16, 3), got (12, 3)",
        "bias_hh_l1: expected floating-point values, got dtype int64",
    ]:
        assert expected in message
    assert bits(stack.params) == before  # nothing was half-loaded


def test_bad_lm_state_dict(rng):
    model = random_lm("gru", 1, False, np.float32, rng)
    state = lm_state_dict(model)
    state["decoder.weight"] = torch.zeros(13, 5)
    state["extra.weight"] = torch.zeros(1)
    del state["rnn.bias_hh_l0"]
    with pytest.raises(ValueError, match=r"(?s)missing keys: rnn.bias_hh_l0.*unexpected keys: extra.weight.*"
                       r"decoder.weight: expected shape \(13, 6\), got \(13, 5\)"):  # fmt: skip
        load_lm_state_dict(model, state)
    with pytest.raises(ValueError, match="missing keys: rnn.weight_ih_l0"):
        load_lm_state_dict(model, {"embedding.weight": state["embedding.weight"]})


def test_tied_model_refuses_untied_weights(rng):
    tied = random_lm("rnn", 1, True, np.float32, rng)
    untied = random_lm("rnn", 1, False, np.float32, rng)
    with pytest.raises(ValueError, match="decoder.weight differs from its embedding.weight"):
        load_lm_state_dict(tied, lm_state_dict(untied))


def test_infer_lm_config_bad_input(rng):
    with pytest.raises(ValueError, match="missing keys: rnn.weight_ih_l0, rnn.weight_hh_l0, decoder.weight"):
        infer_lm_config({"embedding.weight": torch.zeros(3, 2)})
    state = lm_state_dict(random_lm("lstm", 1, False, np.float32, rng))
    state["rnn.weight_ih_l0_reverse"] = state["rnn.weight_ih_l0"]
    with pytest.raises(ValueError, match="cannot be bidirectional"):
        infer_lm_config(state)
    state = lm_state_dict(random_lm("lstm", 1, False, np.float32, rng))
    state["rnn.weight_hh_l0"] = torch.zeros(12, 6)
    with pytest.raises(ValueError, match=r"G = 1 \(RNN\), 4 \(LSTM\) or 3 \(GRU\), got \(12, 6\)"):
        infer_lm_config(state)


def test_unsupported_torch_modules():
    with pytest.raises(ValueError, match="tanh only, got mode RNN_RELU"):
        recurrent_from_torch(torch.nn.RNN(3, 4, nonlinearity="relu"))
    with pytest.raises(ValueError, match="bias=False"):
        recurrent_from_torch(torch.nn.GRU(3, 4, bias=False))
    with pytest.raises(ValueError, match="proj_size=2"):
        recurrent_from_torch(torch.nn.LSTM(3, 4, proj_size=2))
    with pytest.raises(ValueError, match="expected a torch.nn.RNN, LSTM or GRU, got Linear"):
        recurrent_from_torch(torch.nn.Linear(3, 4))


def test_unsupported_nprnn_layers():
    with pytest.raises(ValueError, match=r"expected a recurrent layer \(TimeRNN, .*\), got list"):
        recurrent_state_dict([1, 2])
    mixed = TimeStack([TimeRNN(*init_rnn_params(3, 4)), TimeGRU(*init_gru_params(4, 4))])
    with pytest.raises(ValueError, match=r"one kind .*\['rnn', 'gru'\]"):
        torch_recurrent(mixed)
    with pytest.raises(ValueError, match="kind must be one of \\['gru', 'lstm', 'rnn'\\], got 'cnn'"):
        params_to_torch("cnn", [])


# ---------------------------------------------------------------- torch is optional


def test_missing_torch_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    layer = make_recurrent("rnn", 2, 3)
    for call in [lambda: recurrent_state_dict(layer), lambda: torch_recurrent(layer), lambda: to_torch(None)]:
        with pytest.raises(MissingExtraError, match=r"'torch'.*pip install \"nprnn\[interop\]\"") as info:
            call()
        assert isinstance(info.value, ImportError) and isinstance(info.value, RuntimeError)
        assert info.value.name == "torch"
    # the NumPy-only mapping needs no torch
    assert len(params_to_torch("rnn", layer.params)) == 4


def test_package_imports_without_the_optional_dependencies():
    code = (
        "import sys\n"
        "for m in ('torch', 'onnx', 'onnxruntime'): sys.modules[m] = None\n"
        "import nprnn.interop as io\n"
        "from nprnn.layers.stack import make_recurrent\n"
        "stack = make_recurrent('lstm', 2, 3)\n"
        "assert len(io.params_to_torch('lstm', stack.params)) == 4\n"
        "try:\n"
        "    io.lm_to_onnx(None)\n"
        "except io.MissingExtraError as e:\n"
        "    print(e)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "lm_to_onnx needs the optional dependency 'onnx'" in done.stdout
    assert 'pip install "nprnn[interop]"' in done.stdout
