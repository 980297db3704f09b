"""PyTorch interop: nprnn recurrent layers and language models to and from ``torch.nn.RNN/LSTM/GRU`` state_dicts.

Weight mapping of one layer and direction (torch computes ``x @ W.T``, nprnn ``x @ W``):

    RNN   weight_ih = Wx.T, weight_hh = Wh.T, bias_ih + bias_hh = b
    LSTM  the same with the gate blocks reordered: nprnn f, g, i, o <-> torch i, f, g, o
    GRU   weight_ih = Wx.T, weight_hh = Wh.T (both r, z, n, as torch); bias_ih + bias_hh = b on r and z;
          bias_ih_n = b_n and bias_hh_n = bhn (bhn sits inside r * (...), so it cannot be merged into b)

torch has two biases where nprnn has one: export puts all of ``b`` into ``bias_ih`` and zeros into
``bias_hh`` (for the GRU's n block: ``b_n`` and ``bhn``), import sums them. So nprnn -> torch -> nprnn
gives back the very same numbers, bit for bit (only a bias of -0.0 comes back as +0.0: -0.0 + 0.0 = +0.0).

Keys are torch's: ``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}`` (``_reverse``
appended for the backward direction) for a recurrent module; the language model's torch twin
``TorchLanguageModel`` has ``embedding.weight``, ``rnn.*``, ``decoder.weight``, ``decoder.bias``.

torch is optional: it is imported inside the functions that need it. The weight-mapping functions
(``params_to_torch``, ``params_from_torch``, ``grads_to_torch``) work on NumPy arrays without it.
"""

import functools

import numpy as np

from nprnn.interop._optional import require
from nprnn.layers.stack import KINDS, Bidirectional, TimeStack, make_recurrent
from nprnn.models.lm import LanguageModel, LMConfig

GATES = {"rnn": 1, "lstm": 4, "gru": 3}
# nprnn's LSTM gate blocks are f, g, i, o; torch's are i, f, g, o.
LSTM_TO_TORCH = [2, 0, 1, 3]  # torch block k is nprnn block LSTM_TO_TORCH[k]
LSTM_FROM_TORCH = [1, 2, 0, 3]  # nprnn block k is torch block LSTM_FROM_TORCH[k]
TORCH_MODES = {"RNN_TANH": "rnn", "LSTM": "lstm", "GRU": "gru"}  # torch.nn.RNNBase.mode -> kind


def reorder_blocks(a, order, axis=-1):
    """``a`` with its ``len(order)`` equal gate blocks along ``axis`` put in the given order (a new array)."""
    parts = np.split(a, len(order), axis=axis)
    return np.concatenate([parts[k] for k in order], axis=axis)


def _check_kind(kind):
    if kind not in GATES:
        raise ValueError(f"kind must be one of {sorted(GATES)}, got {kind!r}")


def _transposed(a):
    return np.array(a.T, order="C")


# ---------------------------------------------------------------- one layer, one direction (NumPy only)


def params_to_torch(kind, params):
    """nprnn params of one layer and direction -> torch's ``[weight_ih, weight_hh, bias_ih, bias_hh]``
    (new arrays): ``weight_ih: (G*H, D)``, ``weight_hh: (G*H, H)``, biases ``(G*H,)``, G = 1, 4, 3 gates."""
    _check_kind(kind)
    if kind == "gru":
        Wx, Wh, b, bhn = params
        H = bhn.shape[0]
        bias_hh = np.zeros_like(b)
        bias_hh[2 * H :] = bhn
        return [_transposed(Wx), _transposed(Wh), b.copy(), bias_hh]
    Wx, Wh, b = params
    if kind == "lstm":
        Wx, Wh, b = (reorder_blocks(p, LSTM_TO_TORCH) for p in (Wx, Wh, b))
    return [_transposed(Wx), _transposed(Wh), b.copy(), np.zeros_like(b)]


def params_from_torch(kind, weight_ih, weight_hh, bias_ih, bias_hh):
    """torch's ``(weight_ih, weight_hh, bias_ih, bias_hh)`` of one layer and direction (arrays or tensors)
    -> nprnn params ``[Wx, Wh, b]`` (``[Wx, Wh, b, bhn]`` for a GRU), new arrays."""
    _check_kind(kind)
    w_ih, w_hh, b_ih, b_hh = (_to_numpy(a) for a in (weight_ih, weight_hh, bias_ih, bias_hh))
    if kind == "rnn":
        return [_transposed(w_ih), _transposed(w_hh), b_ih + b_hh]
    if kind == "lstm":
        order = LSTM_FROM_TORCH
        return [reorder_blocks(w_ih.T, order), reorder_blocks(w_hh.T, order), reorder_blocks(b_ih + b_hh, order)]
    H = w_hh.shape[1]
    b = np.concatenate([b_ih[: 2 * H] + b_hh[: 2 * H], b_ih[2 * H :]])
    return [_transposed(w_ih), _transposed(w_hh), b, b_hh[2 * H :].copy()]


def grads_to_torch(kind, grads):
    """nprnn gradients of one layer and direction -> what torch's ``(weight_ih, weight_hh, bias_ih,
    bias_hh).grad`` are for the same model: each torch bias receives the whole gradient of the sum."""
    _check_kind(kind)
    if kind == "gru":
        dWx, dWh, db, dbhn = grads
        H = dbhn.shape[0]
        return [_transposed(dWx), _transposed(dWh), db.copy(), np.concatenate([db[: 2 * H], dbhn])]
    dWx, dWh, db = grads
    if kind == "lstm":
        dWx, dWh, db = (reorder_blocks(g, LSTM_TO_TORCH) for g in (dWx, dWh, db))
    return [_transposed(dWx), _transposed(dWh), db.copy(), db.copy()]


# ---------------------------------------------------------------- whole recurrent layers


def layer_kind(layer):
    """``"rnn"``, ``"lstm"`` or ``"gru"`` for a ``TimeRNN``, ``TimeLSTM`` or ``TimeGRU``."""
    for kind, (cls, _) in KINDS.items():
        if isinstance(layer, cls):
            return kind
    raise ValueError(
        f"expected a recurrent layer (TimeRNN, TimeLSTM, TimeGRU, Bidirectional or TimeStack), "
        f"got {type(layer).__name__}"
    )


def directional_layers(layer):
    """``(kind, num_layers, num_directions, [(suffix, single-direction layer), ...])`` for a ``TimeRNN`` /
    ``TimeLSTM`` / ``TimeGRU``, ``Bidirectional`` or ``TimeStack``, in torch's order (layer by layer,
    forward direction first) with torch's key suffixes ``l0``, ``l0_reverse``, ``l1`` ..."""
    stacked = layer.layers if isinstance(layer, TimeStack) else [layer]
    found = []
    for k, each in enumerate(stacked):
        if isinstance(each, Bidirectional):
            found += [(f"l{k}", each.fwd), (f"l{k}_reverse", each.bwd)]
        else:
            found.append((f"l{k}", each))
    kinds = [layer_kind(d) for _, d in found]
    if len(set(kinds)) > 1:
        raise ValueError(f"all layers of a stack must be of one kind to map to one torch module, got {kinds}")
    return kinds[0], len(stacked), len(found) // len(stacked), found


def _expected_shapes(layer, prefix=""):
    kind, _, _, found = directional_layers(layer)
    G = GATES[kind]
    shapes = {}
    for suffix, d in found:
        shapes[f"{prefix}weight_ih_{suffix}"] = (G * d.H, d.D)
        shapes[f"{prefix}weight_hh_{suffix}"] = (G * d.H, d.H)
        shapes[f"{prefix}bias_ih_{suffix}"] = (G * d.H,)
        shapes[f"{prefix}bias_hh_{suffix}"] = (G * d.H,)
    return shapes


def _recurrent_arrays(layer, prefix=""):
    """The torch state_dict of a recurrent layer as NumPy arrays (torch's key order)."""
    kind, _, _, found = directional_layers(layer)
    arrays = {}
    for suffix, d in found:
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        for name, value in zip(names, params_to_torch(kind, d.params)):
            arrays[f"{prefix}{name}_{suffix}"] = value
    return arrays


def _set_recurrent(layer, arrays, prefix=""):
    """Copy checked torch arrays into the layer's params in place (cast to the layer's dtype)."""
    kind, _, _, found = directional_layers(layer)
    for suffix, d in found:
        names = [f"{prefix}{n}_{suffix}" for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        for p, value in zip(d.params, params_from_torch(kind, *(arrays[n] for n in names))):
            p[...] = value


def _to_numpy(value):
    if hasattr(value, "detach"):  # a torch tensor, recognised without importing torch
        value = value.detach().cpu()
        if value.is_floating_point() and value.element_size() < 4:  # float16 / bfloat16: no .numpy()
            value = value.double()
        return value.numpy()
    return np.asarray(value)


def _checked_arrays(state_dict, shapes, where):
    """``state_dict`` as NumPy arrays, after checking it has exactly the keys of ``shapes``, each a
    floating-point array of its shape; every mismatch is listed in one ``ValueError``."""
    arrays = {key: _to_numpy(value) for key, value in state_dict.items()}
    missing = [key for key in shapes if key not in arrays]
    unexpected = [key for key in arrays if key not in shapes]
    wrong = [
        f"{key}: expected shape {shapes[key]}, got {arrays[key].shape}"
        for key in shapes
        if key in arrays and arrays[key].shape != shapes[key]
    ]
    wrong += [
        f"{key}: expected floating-point values, got dtype {arrays[key].dtype}"
        for key in shapes
        if key in arrays and arrays[key].dtype.kind != "f"
    ]
    problems = [f"missing keys: {', '.join(missing)}"] if missing else []
    problems += [f"unexpected keys: {', '.join(unexpected)}"] if unexpected else []
    problems += wrong
    if problems:
        raise ValueError(f"{where}: the state_dict does not match the model:\n  " + "\n  ".join(problems))
    return arrays


def _torch_dtype(torch, dtype):
    return {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}[np.dtype(dtype)]


def _numpy_dtype(tensor):
    dtype = _to_numpy(tensor).dtype
    return dtype if dtype in (np.float32, np.float64) else np.dtype(np.float32)


def recurrent_state_dict(layer, prefix=""):
    """The torch state_dict (``torch.Tensor`` values, new memory) of a ``TimeRNN`` / ``TimeLSTM`` /
    ``TimeGRU``, ``Bidirectional`` or ``TimeStack``: what ``torch_recurrent(layer).state_dict()`` holds.
    ``prefix`` goes before every key (e.g. ``"rnn."``)."""
    torch = require("torch", "recurrent_state_dict")
    return {key: torch.from_numpy(value) for key, value in _recurrent_arrays(layer, prefix).items()}


def load_recurrent_state_dict(layer, state_dict, prefix=""):
    """Copy a torch RNN/LSTM/GRU state_dict (tensors or arrays) into ``layer``'s params in place.

    The state_dict must have exactly the layer's keys (with ``prefix``) and shapes; values are cast to
    the layer's dtype. Missing and unexpected keys and wrong shapes are all listed in one ``ValueError``.
    """
    arrays = _checked_arrays(state_dict, _expected_shapes(layer, prefix), "load_recurrent_state_dict")
    _set_recurrent(layer, arrays, prefix)
    return layer


def torch_recurrent(layer, batch_first=True):
    """A new ``torch.nn.RNN`` / ``LSTM`` / ``GRU`` holding ``layer``'s weights (same dtype, same
    ``num_layers``, ``bidirectional`` and between-layer ``dropout``), batch-first like nprnn."""
    torch = require("torch", "torch_recurrent")
    kind, num_layers, dirs, found = directional_layers(layer)
    cls = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind]
    module = cls(
        found[0][1].D,
        found[0][1].H,
        num_layers=num_layers,
        bidirectional=dirs == 2,
        dropout=getattr(layer, "dropout", 0.0) if num_layers > 1 else 0.0,  # torch warns on dropout with 1 layer
        batch_first=batch_first,
        dtype=_torch_dtype(torch, layer.dtype),
    )
    module.load_state_dict(recurrent_state_dict(layer))
    return module


def recurrent_from_torch(module, stateful=False, dtype=None):
    """A ``TimeStack`` (from ``make_recurrent``) with the weights of a ``torch.nn.RNN`` / ``LSTM`` / ``GRU``.

    ``dtype`` defaults to the module's (float32 unless it is float64). nprnn has no ReLU RNN, no
    LSTM projection and no bias-free layers: such modules get a ``ValueError``.
    """
    torch = require("torch", "recurrent_from_torch")
    if not isinstance(module, torch.nn.RNNBase):
        raise ValueError(f"recurrent_from_torch: expected a torch.nn.RNN, LSTM or GRU, got {type(module).__name__}")
    if module.mode not in TORCH_MODES:
        raise ValueError(f"recurrent_from_torch: nprnn's RNN is tanh only, got mode {module.mode}")
    if not module.bias:
        raise ValueError("recurrent_from_torch: the module has bias=False; nprnn layers always have biases")
    if getattr(module, "proj_size", 0):
        raise ValueError(f"recurrent_from_torch: LSTM projections are not supported, got proj_size={module.proj_size}")
    stack = make_recurrent(
        TORCH_MODES[module.mode],
        module.input_size,
        module.hidden_size,
        num_layers=module.num_layers,
        bidirectional=module.bidirectional,
        dropout=module.dropout if module.num_layers > 1 else 0.0,
        stateful=stateful,
        dtype=dtype or _numpy_dtype(module.weight_ih_l0),
    )
    return load_recurrent_state_dict(stack, module.state_dict())


# ---------------------------------------------------------------- the language model


@functools.cache
def _torch_lm_class():
    torch = require("torch", "TorchLanguageModel")
    nn = torch.nn
    modules = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}

    class TorchLanguageModel(nn.Module):
        """nprnn's ``LanguageModel`` in torch: Embedding -> dropout -> RNN/LSTM/GRU (batch_first, num_layers,
        dropout between layers) -> dropout -> Linear, the Linear's weight tied to the embedding if
        ``config.tie_weights``.

        ``forward(ids: (N, T) int64, state=None) -> (logits: (N, T, V), state)``; ``state`` is ``h_n``
        ``(L, N, H)``, or ``(h_n, c_n)`` for an LSTM, as ``torch.nn.LSTM`` takes and returns it.
        """

        def __init__(self, config, dtype=torch.float32):
            super().__init__()
            self.config = config.validate()
            V, E, H, L = config.vocab_size, config.embed, config.hidden, config.layers
            self.embedding = nn.Embedding(V, E, dtype=dtype)
            self.drop = nn.Dropout(config.dropout)
            dropout = config.dropout if L > 1 else 0.0
            self.rnn = modules[config.cell](E, H, num_layers=L, dropout=dropout, batch_first=True, dtype=dtype)
            self.decoder = nn.Linear(H, V, dtype=dtype)
            if config.tie_weights:
                self.decoder.weight = self.embedding.weight

        def forward(self, ids, state=None):
            hs, state = self.rnn(self.drop(self.embedding(ids)), state)
            return self.decoder(self.drop(hs)), state

    return TorchLanguageModel


def __getattr__(name):
    # ``TorchLanguageModel`` subclasses torch.nn.Module, so it is made (importing torch) on first use.
    if name == "TorchLanguageModel":
        return _torch_lm_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _lm_shapes(model):
    c = model.config
    shapes = {"embedding.weight": (c.vocab_size, c.embed)}
    shapes.update(_expected_shapes(model.rnn, "rnn."))
    # a tied weight is in torch's state_dict under both names
    shapes["decoder.weight"] = (c.vocab_size, c.hidden)
    shapes["decoder.bias"] = (c.vocab_size,)
    return shapes


def lm_state_dict(model):
    """The state_dict (``torch.Tensor`` values, new memory) of ``TorchLanguageModel(model.config)`` holding
    ``model``'s weights. With tied weights ``decoder.weight`` is the same tensor as ``embedding.weight``,
    as in torch's own state_dict of a tied model."""
    torch = require("torch", "lm_state_dict")
    W_embed = model.embed.params[0]
    W_out, b_out = model.affine.params
    state = {"embedding.weight": torch.from_numpy(W_embed.copy())}
    state.update(recurrent_state_dict(model.rnn, "rnn."))
    tied = model.config.tie_weights
    state["decoder.weight"] = state["embedding.weight"] if tied else torch.from_numpy(_transposed(W_out))
    state["decoder.bias"] = torch.from_numpy(b_out.copy())
    return state


def load_lm_state_dict(model, state_dict):
    """Copy a ``TorchLanguageModel`` state_dict (tensors or arrays) into ``model``'s params in place.

    Exactly the model's keys and shapes are required (all mismatches listed in one ``ValueError``);
    a tied model needs ``decoder.weight`` equal to ``embedding.weight``.
    """
    arrays = _checked_arrays(state_dict, _lm_shapes(model), "load_lm_state_dict")
    if model.config.tie_weights and not np.array_equal(arrays["decoder.weight"], arrays["embedding.weight"]):
        raise ValueError(
            "load_lm_state_dict: the model ties its output projection to the embedding, but the "
            "state_dict's decoder.weight differs from its embedding.weight (an untied model?)"
        )
    model.embed.params[0][...] = arrays["embedding.weight"]
    _set_recurrent(model.rnn, arrays, "rnn.")
    W_out, b_out = model.affine.params
    if not model.config.tie_weights:  # when tied W_out is a view of the embedding, already set
        W_out[...] = arrays["decoder.weight"].T
    b_out[...] = arrays["decoder.bias"]
    return model


def to_torch(model):
    """A ``TorchLanguageModel`` with ``model``'s configuration, dtype and weights (and its train/eval mode)."""
    torch = require("torch", "to_torch")
    module = _torch_lm_class()(model.config, dtype=_torch_dtype(torch, model.embed.dtype))
    module.load_state_dict(lm_state_dict(model))
    return module.train(model.train)


def infer_lm_config(state_dict):
    """The ``LMConfig`` a ``TorchLanguageModel`` state_dict fits: vocabulary, sizes, cell and number of
    layers from the shapes, ``tie_weights`` when ``decoder.weight`` equals ``embedding.weight``.
    Dropout is not in a state_dict: it is 0."""
    arrays = {key: _to_numpy(value) for key, value in state_dict.items()}
    needed = ["embedding.weight", "rnn.weight_ih_l0", "rnn.weight_hh_l0", "decoder.weight"]
    missing = [key for key in needed if key not in arrays]
    if missing:
        raise ValueError(f"infer_lm_config: not a language-model state_dict, missing keys: {', '.join(missing)}")
    if any(key.startswith("rnn.") and key.endswith("_reverse") for key in arrays):
        raise ValueError("infer_lm_config: the language model cannot be bidirectional (found *_reverse keys)")
    V, E = arrays["embedding.weight"].shape
    GH, H = arrays["rnn.weight_hh_l0"].shape
    cells = {G: kind for kind, G in GATES.items()}
    if GH % H or GH // H not in cells:
        raise ValueError(
            f"infer_lm_config: rnn.weight_hh_l0 must be (G*H, H) with G = 1 (RNN), 4 (LSTM) or 3 (GRU), got {(GH, H)}"
        )
    layers = 0
    while f"rnn.weight_ih_l{layers}" in arrays:
        layers += 1
    W_dec, W_emb = arrays["decoder.weight"], arrays["embedding.weight"]
    tied = W_dec.shape == W_emb.shape and np.array_equal(W_dec, W_emb)
    return LMConfig(vocab_size=V, cell=cells[GH // H], embed=E, hidden=H, layers=layers, tie_weights=tied)


def from_torch(source, config=None, dtype=None, seed=0):
    """A new ``LanguageModel`` from a ``TorchLanguageModel`` (or any module with its parameter names) or
    from its state_dict.

    ``config`` defaults to the module's ``.config``, else is inferred from the shapes
    (``infer_lm_config``); ``dtype`` defaults to the weights' (float32 unless they are float64).
    """
    state_dict = source.state_dict() if hasattr(source, "state_dict") else source
    if config is None:
        config = getattr(source, "config", None) or infer_lm_config(state_dict)
    if "embedding.weight" in state_dict and dtype is None:
        dtype = _numpy_dtype(state_dict["embedding.weight"])
    model = LanguageModel(config, seed=seed, dtype=dtype or np.float32)
    return load_lm_state_dict(model, state_dict)
