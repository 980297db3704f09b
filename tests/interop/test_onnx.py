"""ONNX export: the exported graphs, run with onnxruntime, give nprnn's outputs and final states.

One exported file per model is run at two batch sizes and lengths (symbolic dimensions), from random
initial states (so the state inputs must be wired), and twice in a row with the states fed back.
"""

import json
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from nprnn.data.vocab import Vocab
from nprnn.interop import (
    MissingExtraError,
    compare_with_onnxruntime,
    export_checkpoint_onnx,
    lm_to_onnx,
    onnx_export,
    onnx_weights,
    recurrent_to_onnx,
)
from nprnn.layers.gru import TimeGRU, init_gru_params
from nprnn.layers.lstm import TimeLSTM, init_lstm_params
from nprnn.layers.rnn import TimeRNN, init_rnn_params
from nprnn.layers.stack import TimeStack, make_recurrent
from nprnn.models.lm import LanguageModel, LMConfig

KINDS = ["rnn", "lstm", "gru"]
SINGLE = {"rnn": (TimeRNN, init_rnn_params), "lstm": (TimeLSTM, init_lstm_params), "gru": (TimeGRU, init_gru_params)}
TOL = dict(rtol=1e-5, atol=1e-5)
SHAPES = [(2, 5), (3, 1)]  # (N, T): two batch sizes and lengths through one file


def session(model_or_path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    source = model_or_path.SerializeToString() if hasattr(model_or_path, "SerializeToString") else str(model_or_path)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def randomize(params, rng, scale=0.5):
    for p in params:
        p[...] = rng.uniform(-scale, scale, p.shape)


def random_lm(cell, layers, tied, rng, V=13, E=6, H=6, dtype=np.float32):
    config = LMConfig(vocab_size=V, cell=cell, embed=E, hidden=H, layers=layers, tie_weights=tied, dropout=0.2)
    model = LanguageModel(config, seed=int(rng.integers(1000)), dtype=dtype)
    randomize(model.params, rng)
    model.train = False
    return model


def states(cell, L, N, H, rng, zeros=False):
    """Initial states for the graph: {"h0": ...[, "c0": ...]}, random unless ``zeros``."""
    names = ["h0", "c0"] if cell == "lstm" else ["h0"]
    return {n: (np.zeros if zeros else rng.standard_normal)((L, N, H)).astype(np.float32) for n in names}


# ---------------------------------------------------------------- the language model


@pytest.mark.parametrize("cell", KINDS)
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("tied", [False, True])
def test_lm_matches_onnxruntime(cell, layers, tied, rng, tmp_path):
    model = random_lm(cell, layers, tied, rng)
    path = tmp_path / "lm.onnx"
    lm_to_onnx(model, path)
    onnx.checker.check_model(str(path), full_check=True)
    sess = session(path)
    assert [i.name for i in sess.get_inputs()] == ["ids"] + list(states(cell, 1, 1, 1, rng))
    for N, T in SHAPES:
        ids = rng.integers(0, 13, size=(N, T), dtype=np.int64)
        feed = states(cell, layers, N, 6, rng)
        logits, *finals = sess.run(None, {"ids": ids, **feed})
        model.rnn.set_state(*feed.values())
        np.testing.assert_allclose(logits, model.predict(ids), **TOL)
        assert logits.shape == (N, T, 13)
        expected = [model.rnn.h] + ([model.rnn.c] if cell == "lstm" else [])
        assert len(finals) == len(expected)
        for got, want in zip(finals, expected):
            np.testing.assert_allclose(got, want, **TOL)


@pytest.mark.parametrize("cell", KINDS)
def test_stateful_generation_feeds_the_states_back(cell, rng):
    """Two calls with the final states fed back == one nprnn run over the whole text."""
    model = random_lm(cell, 2, False, rng)
    sess = session(lm_to_onnx(model))
    ids = rng.integers(0, 13, size=(2, 7), dtype=np.int64)
    model.reset_state()
    whole = model.predict(ids)
    feed = states(cell, 2, 2, 6, rng, zeros=True)
    first, *finals = sess.run(None, {"ids": ids[:, :4], **feed})
    second, *finals = sess.run(None, {"ids": ids[:, 4:], **dict(zip(feed, finals))})
    np.testing.assert_allclose(np.concatenate([first, second], axis=1), whole, **TOL)
    np.testing.assert_allclose(finals[0], model.rnn.h, **TOL)
    # generation one token at a time, greedy, matches nprnn's own stateful loop
    model.reset_state()
    token = ids[:, :1]
    feed = states(cell, 2, 2, 6, rng, zeros=True)
    for _ in range(4):
        logits, *finals = sess.run(None, {"ids": token, **feed})
        want = model.predict(token)
        np.testing.assert_allclose(logits, want, **TOL)
        token = want[:, -1].argmax(axis=1)[:, None].astype(np.int64)
        feed = dict(zip(feed, finals))


def test_float64_model_exports_as_float32(rng):
    model = random_lm("lstm", 2, True, rng, dtype=np.float64)
    exported = lm_to_onnx(model)
    assert all(t.data_type == onnx.TensorProto.FLOAT for t in exported.graph.initializer if t.name.endswith("W"))
    assert compare_with_onnxruntime(model, exported) < 1e-5


def test_graph_structure(rng):
    model = random_lm("gru", 2, True, rng)
    exported = lm_to_onnx(model, opset=17)
    assert exported.opset_import[0].version == 17
    ops = [n.op_type for n in exported.graph.node]
    assert ops.count("GRU") == 2 and "Gather" in ops and "MatMul" in ops and "Add" in ops
    gru = next(n for n in exported.graph.node if n.op_type == "GRU")
    assert {a.name: onnx.helper.get_attribute_value(a) for a in gru.attribute}["linear_before_reset"] == 1
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in exported.graph.input}
    assert dims == {"ids": ["batch", "time"], "h0": [2, "batch", 6]}
    # tied: the embedding is stored once and transposed in the graph
    names = [t.name for t in exported.graph.initializer]
    assert "embedding.weight" in names and "decoder.weight" not in names
    meta = {p.key: p.value for p in exported.metadata_props}
    assert json.loads(meta["nprnn.config"]) == model.config.to_dict()


@pytest.mark.parametrize("opset", [onnx_export.MIN_OPSET, onnx.defs.onnx_opset_version()])
def test_other_opsets(opset, rng):
    model = random_lm("lstm", 1, False, rng)
    exported = lm_to_onnx(model, opset=opset)
    assert exported.opset_import[0].version == opset
    assert compare_with_onnxruntime(model, exported) < 1e-5


def test_bad_opset(rng):
    model = random_lm("rnn", 1, False, rng)
    for opset in [13, onnx.defs.onnx_opset_version() + 1, 17.0]:
        with pytest.raises(ValueError, match="opset must be an integer in"):
            lm_to_onnx(model, opset=opset)


def test_compare_with_onnxruntime_detects_a_wrong_export_and_leaves_the_model_alone(rng):
    model = random_lm("lstm", 2, False, rng)
    exported = lm_to_onnx(model)
    model.train = True
    model.rnn.set_state(np.ones((2, 4, 6), np.float32), np.ones((2, 4, 6), np.float32))
    assert compare_with_onnxruntime(model, exported) < 1e-5
    assert model.train and np.array_equal(model.rnn.h, np.ones((2, 4, 6)))
    model.params[-1] += 0.5  # the output bias: the export no longer matches
    assert compare_with_onnxruntime(model, exported) > 0.4


# ---------------------------------------------------------------- recurrent layers on their own

STRUCTURES = [(None, False), (2, False), (1, True), (2, True)]  # None: a bare TimeRNN / TimeLSTM / TimeGRU


def make_layer(kind, structure, rng, D=3, H=4):
    num_layers, bidirectional = structure
    if num_layers is None:
        cls, init = SINGLE[kind]
        layer = cls(*init(D, H))
    else:
        layer = make_recurrent(kind, D, H, num_layers, bidirectional, dropout=0.3)
        layer.train = False
    randomize(layer.params, rng)
    return layer


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("structure", STRUCTURES)
def test_recurrent_layers_match_onnxruntime(kind, structure, rng):
    layer = make_layer(kind, structure, rng)
    sess = session(recurrent_to_onnx(layer))
    num_layers, bidirectional = structure
    L, dirs = (num_layers or 1) * (2 if bidirectional else 1), 2 if bidirectional else 1
    for N, T in SHAPES:
        xs = rng.standard_normal((N, T, 3)).astype(np.float32)
        feed = states(kind, L, N, 4, rng)
        hs, *finals = sess.run(None, {"xs": xs, **feed})
        assert hs.shape == (N, T, dirs * 4)
        if isinstance(layer, TimeStack):
            want = [layer.forward(xs, *feed.values()), layer.h] + ([layer.c] if kind == "lstm" else [])
        else:  # a bare layer takes and keeps (N, H) states
            want = [layer.forward(xs, *(s[0] for s in feed.values())), layer.h[None]]
            want += [layer.c[None]] if kind == "lstm" else []
        assert len(finals) == len(want) - 1
        for got, expected in zip([hs, *finals], want):
            np.testing.assert_allclose(got, expected, **TOL)


@pytest.mark.parametrize("kind", KINDS)
def test_onnx_weights_gate_order(kind, rng):
    """ONNX's gate orders: LSTM i, o, f, c from nprnn's f, g, i, o; GRU z, r, h from r, z, n; B = [Wb, Rb]."""
    H = 2
    cls, init = SINGLE[kind]
    params = init(3, H)
    randomize(params, rng)
    G = len(params[2]) // H
    params[2][...] = np.repeat(np.arange(1.0, G + 1), H)  # block k holds k + 1
    W, R, B = onnx_weights(kind, params)
    assert W.shape == (G * H, 3) and R.shape == (G * H, H) and B.shape == (2 * G * H,)
    order = {"rnn": [1], "lstm": [3, 4, 1, 2], "gru": [2, 1, 3]}[kind]
    np.testing.assert_array_equal(B[: G * H], np.repeat(order, H))
    k = order[0] - 1  # ONNX's first block is our block k
    np.testing.assert_array_equal(W[:H], params[0][:, k * H : (k + 1) * H].T)
    np.testing.assert_array_equal(R[:H], params[1][:, k * H : (k + 1) * H].T)
    rb = np.zeros(G * H, np.float32)
    if kind == "gru":
        rb[2 * H :] = params[3]
    np.testing.assert_array_equal(B[G * H :], rb)


def test_recurrent_to_onnx_bad_layer():
    with pytest.raises(ValueError, match=r"expected a recurrent layer .*got dict"):
        recurrent_to_onnx({})


# ---------------------------------------------------------------- the command line's entry point


def saved_checkpoint(path, rng, cell="lstm"):
    from nprnn.models.io import save_lm

    vocab = Vocab(["<unk>", "<eos>", "the", "cat", "sat", "on", "a", "mat"])
    model = random_lm(cell, 2, False, rng, V=len(vocab))
    save_lm(path, model, vocab)
    return model, vocab


def test_export_checkpoint_onnx(rng, tmp_path):
    model, vocab = saved_checkpoint(tmp_path / "ckpt.npz", rng)
    out, difference = export_checkpoint_onnx(tmp_path / "ckpt.npz", tmp_path / "lm.onnx")
    assert out == tmp_path / "lm.onnx" and difference < 1e-5
    exported = onnx.load(str(out))
    onnx.checker.check_model(exported, full_check=True)
    meta = {p.key: p.value for p in exported.metadata_props}
    assert json.loads(meta["nprnn.vocab"]) == vocab.tokens and meta["nprnn.level"] == "word"
    ids = vocab.encode("the cat sat on a mat").astype(np.int64)[None]
    logits, _, _ = session(out).run(None, {"ids": ids, **states("lstm", 2, 1, 6, rng, zeros=True)})
    np.testing.assert_allclose(logits, model.predict(ids), **TOL)
    out, difference = export_checkpoint_onnx(tmp_path / "ckpt.npz", tmp_path / "lm2.onnx", verify=False)
    assert difference is None and out.exists()


def test_export_checkpoint_verify_catches_a_wrong_gate_order(rng, tmp_path, monkeypatch):
    saved_checkpoint(tmp_path / "ckpt.npz", rng)
    monkeypatch.setitem(onnx_export.ONNX_BLOCKS, "lstm", [0, 1, 2, 3])  # nprnn's order, not ONNX's
    with pytest.raises(RuntimeError, match="outputs under onnxruntime differ from nprnn's by .* not writing"):
        export_checkpoint_onnx(tmp_path / "ckpt.npz", tmp_path / "lm.onnx")
    assert not (tmp_path / "lm.onnx").exists()


def test_export_checkpoint_not_a_checkpoint(tmp_path):
    with pytest.raises((ValueError, OSError)):
        export_checkpoint_onnx(tmp_path / "missing.npz", tmp_path / "lm.onnx")
    assert not (tmp_path / "lm.onnx").exists()


# ---------------------------------------------------------------- onnx and onnxruntime are optional


@pytest.mark.parametrize("module", ["onnx", "onnxruntime"])
def test_missing_module_names_the_extra(module, monkeypatch, rng):
    model = random_lm("rnn", 1, False, rng)
    exported = lm_to_onnx(model)
    monkeypatch.setitem(sys.modules, module, None)
    call = (lambda: lm_to_onnx(model)) if module == "onnx" else (lambda: compare_with_onnxruntime(model, exported))
    with pytest.raises(MissingExtraError, match=rf"'{module}'.*pip install \"nprnn\[interop\]\"") as info:
        call()
    assert isinstance(info.value, ImportError) and isinstance(info.value, RuntimeError)
    if module == "onnx":
        with pytest.raises(MissingExtraError, match="recurrent_to_onnx needs the optional dependency 'onnx'"):
            recurrent_to_onnx(make_recurrent("gru", 2, 3))
