"""Model files: save and load every model kind as one ``.npz`` (``nprnn.checkpoint``), with no
training code involved.

A file's metadata names its kind (``nprnn-lm`` or ``nprnn-seq2seq``), the model's config and the
vocabulary; its members are ``param/000``, ``param/001``, ... (the model's ``params`` in order),
``vocab``, and, in a resumable checkpoint, the training state that ``nprnn.training`` adds
(``opt/*``, ``state/*`` and more metadata). Loading checks the config's types and ranges and the
parameters' shapes against it before a model is built, so a crafted file cannot make nprnn
allocate more than the file honestly holds.
"""

import re

import numpy as np

from nprnn.checkpoint import CheckpointError, meta_value, open_checkpoint, save_checkpoint
from nprnn.data.seq2seq import Seq2seqData
from nprnn.data.vocab import Vocab
from nprnn.models import lm as lm_module
from nprnn.models import seq2seq as seq2seq_module

LM_KIND = "nprnn-lm"
SEQ2SEQ_KIND = "nprnn-seq2seq"
KINDS = (LM_KIND, SEQ2SEQ_KIND)

# Bounds on what a file may ask for, far above any model this library trains on a CPU.
MAX_SIZE = 1 << 16  # embed, hidden
MAX_LAYERS = 64
MAX_VOCAB = 1 << 24


# ---------------------------------------------------------------- helpers


def set_params(model, params, where):
    """Copy ``params`` into the model's arrays in place, checking count, shapes and finiteness."""
    if len(params) != len(model.params):
        raise ValueError(f"{where}: expected {len(model.params)} parameter arrays for this model, got {len(params)}")
    for i, (p, new) in enumerate(zip(model.params, params)):
        if p.shape != new.shape:
            raise ValueError(f"{where}: parameter {i} must have shape {p.shape}, got {new.shape}")
        if new.dtype.kind != "f":
            raise ValueError(f"{where}: parameter {i} must be a float array, got {new.dtype}")
        if not np.all(np.isfinite(new)):
            raise ValueError(f"{where}: parameter {i} holds NaN or infinite values")
        p[...] = new


_OPT = re.compile(r"opt/[a-z_]+\.(\d+)")


def _read_arrays(reader, shapes, state_arrays):
    """Every member of ``reader``, each checked from its header before it is read: ``param/NNN`` against
    the config's ``shapes``, the optimizer's ``opt/<slot>.<i>`` against parameter ``i``, ``vocab``, and
    the names in ``state_arrays`` (the carried state); any other member is refused unread."""
    where = reader.path
    names = [f"param/{i:03d}" for i in range(len(shapes))]
    found = sorted(n for n in reader.names if n.startswith("param/"))
    if found != names:
        raise CheckpointError(f"{where}: expected {len(shapes)} parameter arrays for its config, found {len(found)}")
    arrays = {}
    for name in reader.names:
        if name.startswith("param/"):
            arrays[name] = reader.read(name, tuple(shapes[int(name[len("param/") :])]))
        elif (m := _OPT.fullmatch(name)) and int(m.group(1)) < len(shapes):
            arrays[name] = reader.read(name, tuple(shapes[int(m.group(1))]))
        elif name == "vocab":
            arrays[name] = reader.read(name, (None,), "iuU", finite=False)
        elif name in state_arrays:
            arrays[name] = reader.read(name, state_arrays[name])
        else:
            raise CheckpointError(f"{where}: unexpected member {name!r} for a {reader.meta.get('kind')} file")
    dtypes = {arrays[n].dtype for n in names}
    if len(dtypes) != 1:
        raise CheckpointError(f"{where}: the parameters mix dtypes {sorted(map(str, dtypes))}")
    return arrays, [arrays[n] for n in names]


def _kind(meta, where):
    kind = meta.get("kind")
    if kind not in KINDS:
        raise CheckpointError(f"{where}: not an nprnn model file (kind {kind!r}; expected one of {', '.join(KINDS)})")
    return kind


# ---------------------------------------------------------------- language models


def save_lm(path, model, vocab, extra_arrays=None, extra_meta=None):
    """Write a language model (and whatever training state is given) to one ``.npz``, atomically."""
    arrays = {f"param/{i:03d}": p for i, p in enumerate(model.params)}
    arrays["vocab"] = vocab.to_array()
    arrays.update(extra_arrays or {})
    meta = {"kind": LM_KIND, "model": model.config.to_dict(), "level": vocab.level}
    meta.update(extra_meta or {})
    save_checkpoint(path, arrays, meta)


def lm_config(meta, where):
    """The ``LMConfig`` a file's metadata describes, every value's type and range checked."""
    model = meta.get("model")
    if not isinstance(model, dict):
        raise CheckpointError(f"{where}: metadata 'model' must be a dict, got {type(model).__name__}")
    unknown = set(model) - set(lm_module.LMConfig.__dataclass_fields__)
    if unknown:
        raise CheckpointError(f"{where}: unknown model settings {sorted(unknown)}")
    m = {"model": model}  # the values' keys as the file has them: "model.hidden"
    values = {
        "vocab_size": meta_value(where, m, "model.vocab_size", int, low=1, high=MAX_VOCAB),
        "cell": meta_value(where, m, "model.cell", str, choices=("rnn", "lstm", "gru"), default="lstm"),
        "embed": meta_value(where, m, "model.embed", int, low=1, high=MAX_SIZE, default=100),
        "hidden": meta_value(where, m, "model.hidden", int, low=1, high=MAX_SIZE, default=100),
        "layers": meta_value(where, m, "model.layers", int, low=1, high=MAX_LAYERS, default=1),
        "dropout": meta_value(where, m, "model.dropout", float, low=0.0, high=0.999999, default=0.0),
        "tie_weights": meta_value(where, m, "model.tie_weights", bool, default=False),
        "init": meta_value(where, m, "model.init", str, choices=("xavier", "uniform"), default="xavier"),
        "init_scale": meta_value(where, m, "model.init_scale", float, low=1e-30, default=0.1),
    }
    try:
        return lm_module.LMConfig(**values).validate()
    except ValueError as e:
        raise CheckpointError(f"{where}: {e}") from None


def load_lm(path, dtype=None):
    """``(model, vocab, arrays, meta)`` from a file written by ``save_lm``; refuses anything else.
    Config and shapes are checked before any array is read."""
    return _load(path, LM_KIND, dtype)


def _load_lm(reader, dtype):
    where, meta = reader.path, reader.meta
    config = lm_config(meta, where)
    level = reader.value("level", str, choices=("word", "char"))
    if "vocab" not in reader.names:
        raise CheckpointError(f"{where}: no vocabulary member")
    state = (config.layers, None, config.hidden)  # the carried recurrent state: (L, N, H)
    arrays, params = _read_arrays(reader, lm_module.param_shapes(config), {"state/h": state, "state/c": state})
    try:
        vocab = Vocab.from_array(arrays["vocab"], level)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: unusable vocabulary ({e})") from None
    if config.vocab_size != len(vocab):
        raise CheckpointError(f"{where}: model vocabulary size {config.vocab_size} != stored vocabulary {len(vocab)}")
    model = lm_module.LanguageModel(config, dtype=dtype or params[0].dtype)
    set_params(model, params, where)
    return model, vocab, arrays, meta


# ---------------------------------------------------------------- seq2seq models


def save_seq2seq(path, model, vocab, extra_arrays=None, extra_meta=None):
    """Write an encoder-decoder model and its ``vocab`` (a ``Seq2seqData``: the ``CharVocab``, the
    question/answer widths, the reversal) to one ``.npz``, atomically."""
    arrays = {f"param/{i:03d}": p for i, p in enumerate(model.params)}
    arrays["vocab"] = vocab.vocab.to_array()  # code points: NUL-safe, no pickle
    arrays.update(extra_arrays or {})
    meta = {
        "kind": SEQ2SEQ_KIND,
        "model": model.config,
        "reverse": vocab.reverse,
        "question_width": vocab.question_width,
        "answer_width": vocab.answer_width,
    }
    meta.update(extra_meta or {})
    save_checkpoint(path, arrays, meta)


def seq2seq_config(meta, where):
    """``{"kind", "vocab_size", "embed", "hidden"}`` from a file's metadata, checked. Files written by
    nprnn 0.1 name the sizes ``wordvec_size`` and ``hidden_size``; they are read under the new names."""
    model = meta.get("model")
    if not isinstance(model, dict):
        raise CheckpointError(f"{where}: metadata 'model' must be a dict, got {type(model).__name__}")
    model = dict(model)
    for old, new in (("wordvec_size", "embed"), ("hidden_size", "hidden")):
        if old in model and new not in model:
            model[new] = model.pop(old)
    unknown = set(model) - {"kind", "vocab_size", "embed", "hidden"}
    if unknown:
        raise CheckpointError(f"{where}: unknown model settings {sorted(unknown)}")
    m = {"model": model}
    return {
        "kind": meta_value(where, m, "model.kind", str, choices=tuple(seq2seq_module.MODELS)),
        "vocab_size": meta_value(where, m, "model.vocab_size", int, low=2, high=MAX_VOCAB),
        "embed": meta_value(where, m, "model.embed", int, low=1, high=MAX_SIZE),
        "hidden": meta_value(where, m, "model.hidden", int, low=1, high=MAX_SIZE),
    }


def load_seq2seq(path, dtype=None):
    """``(model, vocab, arrays, meta)`` from a file written by ``save_seq2seq``; refuses anything else.
    Config and shapes are checked before any array is read."""
    return _load(path, SEQ2SEQ_KIND, dtype)


def _load_seq2seq(reader, dtype):
    where, meta = reader.path, reader.meta
    config = seq2seq_config(meta, where)
    widths = [reader.value(k, int, low=1, high=1 << 16) for k in ("question_width", "answer_width")]
    reverse = reader.value("reverse", bool)
    shapes = seq2seq_module.param_shapes(config["kind"], config["vocab_size"], config["embed"], config["hidden"])
    if "vocab" not in reader.names:
        raise CheckpointError(f"{where}: no vocabulary member")
    arrays, params = _read_arrays(reader, shapes, {})
    codes = arrays["vocab"]
    if codes.dtype.kind not in "iu" or len(codes) != config["vocab_size"]:
        raise CheckpointError(
            f"{where}: the vocabulary must be {config['vocab_size']} integer code points, "
            f"got {len(codes)} {codes.dtype}"
        )
    try:
        vocab = Seq2seqData.from_vocab(codes, widths[0], widths[1], reverse)
    except ValueError as e:
        raise CheckpointError(f"{where}: unusable vocabulary ({e})") from None
    model = seq2seq_module.build_model(
        config["kind"], config["vocab_size"], config["embed"], config["hidden"], dtype=dtype or params[0].dtype
    )
    set_params(model, params, where)
    return model, vocab, arrays, meta


# ---------------------------------------------------------------- any kind


def load_model(path, dtype=None):
    """``(kind, model, vocab, arrays, meta)`` for a file of either kind: ``kind`` is ``"lm"`` or ``"seq2seq"``."""
    return _load(path, None, dtype)


def _load(path, kind, dtype):
    """Open ``path`` and read the model of ``kind`` (None: whichever it holds)."""
    readers = {LM_KIND: ("lm", _load_lm, "language-model"), SEQ2SEQ_KIND: ("seq2seq", _load_seq2seq, "seq2seq model")}
    with open_checkpoint(path) as reader:
        found = _kind(reader.meta, reader.path)
        if kind is not None and found != kind:
            raise CheckpointError(f"{reader.path}: not a {readers[kind][2]} file (kind {found!r})")
        name, read, _ = readers[found]
        loaded = read(reader, dtype)
        return loaded if kind is not None else (name, *loaded)
