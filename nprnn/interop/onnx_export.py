"""ONNX export of nprnn recurrent layers and language models, built node by node with ``onnx.helper``.

The language model's graph (batch-first at the edges, time-major inside, as ONNX's recurrent ops want):

    ids (N, T) int64 -> Transpose -> Gather(embedding) -> (T, N, E)
      -> layer k: LSTM | GRU | RNN (X, W, R, B, initial_h = h0[k], initial_c = c0[k]) -> Y (T, 1, N, H), Y_h, Y_c
         -> Transpose + Reshape -> the next layer's X (T, N, H)
      -> the last Y to (N, T, H) -> MatMul(W_out) -> Add(b) -> logits (N, T, V)
    h_n = Concat(every layer's Y_h) (L, N, H); c_n likewise for an LSTM.

ONNX's recurrent ops are single-layer, so a stack is one op per layer. ``h0`` (and ``c0``) are required
inputs and ``h_n`` (and ``c_n``) outputs, shaped as torch's states ``(num_layers * num_directions, N, H)``:
start from zeros and feed one call's outputs back as the next call's inputs to generate statefully.
N and T are symbolic (``batch``, ``time``), so one file serves any batch size and length.

Weight layouts: ONNX wants ``W (dirs, G*H, D)``, ``R (dirs, G*H, H)``, ``B (dirs, 2*G*H) = [Wb, Rb]``,
with its own gate order: LSTM **i, o, f, c** (nprnn f, g, i, o), GRU **z, r, h** (nprnn r, z, n). The GRU
uses ``linear_before_reset=1``, which is the torch/nprnn formulation: ``Rb_h = bhn`` stays inside
``r * (h @ R_h.T + Rb_h)``. A bidirectional layer is one op with ``direction="bidirectional"``; its
``Y (T, 2, N, H)`` is reshaped to the concatenation ``(T, N, 2H)``, forward first, as nprnn's.

The graph computes in float32 (a float64 model is rounded) and has no dropout (inference).
onnx (and onnxruntime for ``compare_with_onnxruntime``) are optional: imported when needed.
"""

import json
from pathlib import Path

import numpy as np

from nprnn import __version__
from nprnn.interop._optional import require
from nprnn.interop.torch_io import directional_layers, reorder_blocks

DEFAULT_OPSET = 17
MIN_OPSET = 14  # Reshape-14 / RNN-14 / LSTM-14 / GRU-14 are the versions this graph is written for
ONNX_BLOCKS = {"rnn": [0], "lstm": [2, 3, 0, 1], "gru": [1, 0, 2]}  # ONNX block k is nprnn block [k]
ONNX_OPS = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}


def onnx_weights(kind, params):
    """One direction's nprnn params -> ONNX's ``W (G*H, D)``, ``R (G*H, H)``, ``B (2*G*H,)`` (float32)."""
    order = ONNX_BLOCKS[kind]
    Wx, Wh, b = (np.asarray(p, dtype=np.float32) for p in params[:3])
    Wb = reorder_blocks(b, order)
    Rb = np.zeros_like(Wb)
    if kind == "gru":  # the candidate block (h) is last in ONNX's order too
        H = Wh.shape[0]
        Rb[2 * H :] = params[3]
    W = np.ascontiguousarray(reorder_blocks(Wx, order, axis=1).T)
    R = np.ascontiguousarray(reorder_blocks(Wh, order, axis=1).T)
    return W, R, np.concatenate([Wb, Rb])


class _Graph:
    """Collects nodes and initializers, naming intermediate values uniquely."""

    def __init__(self, onnx):
        self.onnx = onnx
        self.nodes, self.initializers = [], []
        self._count = 0

    def const(self, name, array):
        self.initializers.append(self.onnx.numpy_helper.from_array(np.asarray(array), name))
        return name

    def fresh(self, hint):
        self._count += 1
        return f"{hint}_{self._count}"

    def op(self, op_type, inputs, n_outputs=1, outputs=None, **attrs):
        outputs = outputs or [self.fresh(op_type) for _ in range(n_outputs)]
        self.nodes.append(self.onnx.helper.make_node(op_type, inputs, outputs, **attrs))
        return outputs[0] if len(outputs) == 1 else outputs


def _recurrent_nodes(g, layer, x, h0, c0, h_n, c_n, prefix, batch_first_out):
    """Add the recurrent stack: ``x`` time-major ``(T, N, D)`` -> outputs ``(T, N, dirs*H)``, or
    ``(N, T, dirs*H)`` with ``batch_first_out``; writes the graph values named ``h_n`` / ``c_n``."""
    kind, num_layers, dirs, found = directional_layers(layer)
    H = found[0][1].H
    flatten = g.const(f"{prefix}.flatten_shape", np.array([0, 0, -1], dtype=np.int64))
    axis0 = g.const(f"{prefix}.state_axes", np.array([0], dtype=np.int64)) if num_layers > 1 else None
    finals_h, finals_c = [], []
    for k in range(num_layers):
        weights = [onnx_weights(kind, d.params) for _, d in found[k * dirs : (k + 1) * dirs]]
        W, R, B = (g.const(f"{prefix}.l{k}.{n}", np.stack(ws)) for n, ws in zip("WRB", zip(*weights)))
        states = [h0, c0] if kind == "lstm" else [h0]
        if num_layers > 1:  # this layer's slice [k*dirs, (k+1)*dirs) of the stacked states
            starts = g.const(f"{prefix}.l{k}.state_start", np.array([k * dirs], dtype=np.int64))
            ends = g.const(f"{prefix}.l{k}.state_end", np.array([(k + 1) * dirs], dtype=np.int64))
            states = [g.op("Slice", [s, starts, ends, axis0]) for s in states]
        attrs = dict(hidden_size=H, direction="bidirectional" if dirs == 2 else "forward")
        if kind == "gru":
            attrs["linear_before_reset"] = 1
        n_out = 3 if kind == "lstm" else 2
        Y, *finals = g.op(ONNX_OPS[kind], [x, W, R, B, "", *states], n_outputs=n_out, **attrs)
        finals_h.append(finals[0])
        finals_c += finals[1:]
        # Y is (T, dirs, N, H): bring dirs next to H, then merge them into [forward, backward]
        last = k == num_layers - 1
        perm = [2, 0, 1, 3] if last and batch_first_out else [0, 2, 1, 3]
        x = g.op("Reshape", [g.op("Transpose", [Y], perm=perm), flatten])
    g.op("Concat", finals_h, outputs=[h_n], axis=0)
    if kind == "lstm":
        g.op("Concat", finals_c, outputs=[c_n], axis=0)
    return x


def _state_values(onnx, layer, float_type):
    """Value infos of the state inputs (h0[, c0]) and outputs (h_n[, c_n])."""
    kind, num_layers, dirs, found = directional_layers(layer)
    shape = [num_layers * dirs, "batch", found[0][1].H]
    names_in, names_out = (["h0", "c0"], ["h_n", "c_n"]) if kind == "lstm" else (["h0"], ["h_n"])
    make = onnx.helper.make_tensor_value_info
    return [make(n, float_type, shape) for n in names_in], [make(n, float_type, shape) for n in names_out]


def _finish(onnx, g, name, inputs, outputs, doc, opset, metadata, path):
    if not isinstance(opset, int) or not MIN_OPSET <= opset <= onnx.defs.onnx_opset_version():
        raise ValueError(f"opset must be an integer in [{MIN_OPSET}, {onnx.defs.onnx_opset_version()}], got {opset!r}")
    graph = onnx.helper.make_graph(g.nodes, name, inputs, outputs, initializer=g.initializers, doc_string=doc)
    opsets = [onnx.helper.make_opsetid("", opset)]
    model = onnx.helper.make_model(
        graph,
        opset_imports=opsets,
        ir_version=onnx.helper.find_min_ir_version_for(opsets),  # the oldest IR that runs it: widest support
        producer_name="nprnn",
        producer_version=__version__,
    )
    onnx.helper.set_model_props(model, {k: str(v) for k, v in (metadata or {}).items()})
    onnx.checker.check_model(model, full_check=True)
    if path is not None:
        onnx.save(model, str(path))
    return model


def recurrent_to_onnx(layer, path=None, opset=DEFAULT_OPSET):
    """ONNX model of a ``TimeRNN`` / ``TimeLSTM`` / ``TimeGRU``, ``Bidirectional`` or ``TimeStack``
    (inference, float32), written to ``path`` if given; returns the checked ``onnx.ModelProto``.

    Inputs ``xs (N, T, D)``, ``h0 (L*dirs, N, H)`` [, ``c0``]; outputs ``hs (N, T, dirs*H)``,
    ``h_n (L*dirs, N, H)`` [, ``c_n``] (L*dirs = 1 for a single layer). N and T are symbolic.
    """
    onnx = require("onnx", "recurrent_to_onnx")
    kind, _, dirs, found = directional_layers(layer)
    D, H = found[0][1].D, found[0][1].H
    FLOAT = onnx.TensorProto.FLOAT
    g = _Graph(onnx)
    xs_tm = g.op("Transpose", ["xs"], perm=[1, 0, 2])
    hs = _recurrent_nodes(g, layer, xs_tm, "h0", "c0", "h_n", "c_n", "rnn", batch_first_out=True)
    g.op("Identity", [hs], outputs=["hs"])
    states_in, states_out = _state_values(onnx, layer, FLOAT)
    inputs = [onnx.helper.make_tensor_value_info("xs", FLOAT, ["batch", "time", D])] + states_in
    outputs = [onnx.helper.make_tensor_value_info("hs", FLOAT, ["batch", "time", dirs * H])] + states_out
    doc = f"nprnn {kind} recurrent layers (batch-first xs; states shaped (num_layers * num_directions, N, H))"
    return _finish(onnx, g, f"nprnn_{kind}", inputs, outputs, doc, opset, {"nprnn.kind": kind}, path)


def lm_to_onnx(model, path=None, opset=DEFAULT_OPSET, metadata=None):
    """ONNX model of a ``LanguageModel`` (inference, float32), written to ``path`` if given; returns the
    checked ``onnx.ModelProto``.

    Inputs ``ids (N, T) int64``, ``h0 (L, N, H)`` [, ``c0``]; outputs ``logits (N, T, V)``, ``h_n (L, N, H)``
    [, ``c_n``]. The model's config (and any ``metadata``, e.g. the vocabulary) is stored in the
    model's metadata properties as ``nprnn.config``.
    """
    onnx = require("onnx", "lm_to_onnx")
    config = model.config
    FLOAT, INT64 = onnx.TensorProto.FLOAT, onnx.TensorProto.INT64
    g = _Graph(onnx)
    W_embed = g.const("embedding.weight", np.asarray(model.embed.params[0], dtype=np.float32))
    xs = g.op("Gather", [W_embed, g.op("Transpose", ["ids"], perm=[1, 0])], axis=0)  # (T, N, E)
    hs = _recurrent_nodes(g, model.rnn, xs, "h0", "c0", "h_n", "c_n", "rnn", batch_first_out=True)
    W_out, b_out = model.affine.params
    if config.tie_weights:  # one stored matrix, as in the model
        W_out = g.op("Transpose", [W_embed], perm=[1, 0])
    else:
        W_out = g.const("decoder.weight", np.asarray(W_out, dtype=np.float32))
    b_out = g.const("decoder.bias", np.asarray(b_out, dtype=np.float32))
    g.op("Add", [g.op("MatMul", [hs, W_out]), b_out], outputs=["logits"])
    states_in, states_out = _state_values(onnx, model.rnn, FLOAT)
    inputs = [onnx.helper.make_tensor_value_info("ids", INT64, ["batch", "time"])] + states_in
    outputs = [onnx.helper.make_tensor_value_info("logits", FLOAT, ["batch", "time", config.vocab_size])]
    doc = (
        f"nprnn language model ({config.cell}, {config.layers} layer(s)). Feed ids (N, T) and the states "
        "(zeros to start); feed h_n (and c_n) back as h0 (and c0) to continue the text."
    )
    meta = {"nprnn.kind": "language-model", "nprnn.config": json.dumps(config.to_dict()), **(metadata or {})}
    return _finish(onnx, g, "nprnn_language_model", inputs, outputs + states_out, doc, opset, meta, path)


# ---------------------------------------------------------------- running it


def _session(onnx_model):
    ort = require("onnxruntime", "running an exported model")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    source = onnx_model.SerializeToString() if hasattr(onnx_model, "SerializeToString") else str(onnx_model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def compare_with_onnxruntime(model, onnx_model, shapes=((2, 5), (3, 2)), seed=0):
    """Largest ``|onnxruntime - nprnn|`` over the logits and final states of a ``LanguageModel`` and its
    export (a ``ModelProto`` or a path), on random ids of each ``(N, T)`` in ``shapes``, each run twice in
    a row with the states fed back (stateful generation). The model's state and mode are left as found."""
    session = _session(onnx_model)
    rng = np.random.default_rng(seed)
    config = model.config
    L, H = config.layers, config.hidden
    was_training, saved = model.train, model.get_state()
    model.train = False
    worst = 0.0
    try:
        for N, T in shapes:
            model.reset_state()
            feed = {"h0": np.zeros((L, N, H), np.float32)}
            if config.cell == "lstm":
                feed["c0"] = np.zeros((L, N, H), np.float32)
            for _ in range(2):
                ids = rng.integers(0, config.vocab_size, size=(N, T), dtype=np.int64)
                logits, *finals = session.run(None, {"ids": ids, **feed})
                expected = [model.predict(ids), model.rnn.h] + ([model.rnn.c] if config.cell == "lstm" else [])
                for got, want in zip([logits, *finals], expected):
                    worst = max(worst, float(np.max(np.abs(got - want))))
                feed = dict(zip(feed, finals))  # h_n (, c_n) -> h0 (, c0)
    finally:
        model.reset_state()
        model.set_state(saved)
        model.train = was_training
    return worst


# ---------------------------------------------------------------- the command line's entry point


def export_checkpoint_onnx(checkpoint_path, out_path, opset=DEFAULT_OPSET, verify=True, tolerance=1e-4):
    """Write the language model of an nprnn checkpoint (``nprnn.models.io.save_lm``) to ``out_path`` as ONNX,
    with the vocabulary (``nprnn.vocab``, JSON list; ``nprnn.level``) in the metadata.

    With ``verify`` the export is first run with onnxruntime against nprnn (``compare_with_onnxruntime``);
    a difference above ``tolerance`` raises ``RuntimeError`` and nothing is written.
    Returns ``(out_path, difference or None)``.
    """
    from nprnn.models.io import load_lm

    onnx = require("onnx", "export_checkpoint_onnx")
    model, vocab, _, _ = load_lm(checkpoint_path)
    metadata = {"nprnn.vocab": json.dumps(vocab.tokens), "nprnn.level": vocab.level}
    onnx_model = lm_to_onnx(model, opset=opset, metadata=metadata)
    difference = compare_with_onnxruntime(model, onnx_model) if verify else None
    if difference is not None and not difference <= tolerance:
        raise RuntimeError(
            f"{checkpoint_path}: the ONNX export's outputs under onnxruntime differ from nprnn's by "
            f"{difference:.3g} (more than {tolerance:g}); not writing {out_path}"
        )
    out_path = Path(out_path)
    onnx.save(onnx_model, str(out_path))
    return out_path, difference
