"""Import parameters saved by the textbook's ``BaseModel.save_params``, without trusting pickle.

The textbook stores a model as ``pickle.dump([p.astype(np.float16) for p in params], f)``.
A plain ``pickle.load`` of such a file would run whatever code the file asks for, so these
files are read with a restricted unpickler: the only globals it resolves are the few NumPy
functions that rebuild a plain ndarray (and ``_codecs.encode`` with latin1, which protocol-2
pickles use for raw bytes); anything else (``os.system``, ``builtins.eval``, ``numpy.load``,
array subclasses, ...) stops the load before it can be called. The result must then be a
non-empty list of real numeric ndarrays.

``import_book_lm`` turns such a file from the textbook's ch06 ``Rnnlm`` or ``BetterRnnlm`` into
an nprnn language-model file, ``import_book_seq2seq`` one of its ch07-08 ``Seq2seq``,
``PeekySeq2seq`` or ``AttentionSeq2seq`` into a seq2seq model file (``nprnn import-book``).
"""

import codecs
import os
import pickle
from pathlib import Path

import numpy as np

# The functions NumPy's own pickles name, taken from NumPy itself rather than imported by
# module path: NumPy 1.x files say numpy.core.*, NumPy 2.x files numpy._core.*.
_reconstruct = np.zeros(1).__reduce__()[0]  # protocols 0-4: empty array + __setstate__
_frombuffer = np.zeros(1).__reduce_ex__(5)[0]  # protocol 5: array from an in-band buffer


class BookParamsError(ValueError):
    """A textbook parameter file that cannot be used; the message names the file and the problem."""


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle asked for a global outside the allow list; nothing of it was called."""


def _empty_ndarray(subtype, shape, dtype):
    # Only a plain ndarray, and always empty: the data arrives with __setstate__, so a forged
    # huge shape cannot make us allocate memory here.
    if subtype is not np.ndarray:
        raise RefusedGlobal(f"array subclass {subtype!r}")
    return _reconstruct(np.ndarray, (0,), dtype)


def _latin1_bytes(text, encoding):
    # How protocol-2 pickles spell bytes: _codecs.encode(str, "latin1"). No other codec.
    if encoding != "latin1":
        raise RefusedGlobal(f"_codecs.encode with encoding {encoding!r}")
    return codecs.encode(text, "latin1")


_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _empty_ndarray,
    ("numpy._core.multiarray", "_reconstruct"): _empty_ndarray,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_bytes,
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise RefusedGlobal(f"global '{module}.{name}'") from None

    def persistent_load(self, pid):
        raise RefusedGlobal(f"persistent id {pid!r}")


def load_book_params(path, dtype=None):
    """The list of arrays in a textbook ``save_params`` file (``[Wx, Wh, b, ...]``, float16 as saved).

    ``dtype`` converts every array (the textbook's ``load_params`` uses float32). Raises
    ``BookParamsError`` naming the file for anything that is not a list of numeric arrays,
    including pickles that try to call anything beyond NumPy's array constructors.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        what = "is a directory" if os.path.isdir(path) else "no such file"
        raise BookParamsError(f"{path}: {what}")
    try:
        with open(path, "rb") as f:
            params = _ArrayUnpickler(f).load()
            trailing = f.read(1)
    except RefusedGlobal as e:
        raise BookParamsError(
            f"{path}: refused to unpickle {e}: a textbook parameter file holds only NumPy arrays, "
            "so this file is either something else or crafted to run code"
        ) from None
    except OSError as e:
        raise BookParamsError(f"{path}: cannot read ({e.strerror or e})") from None
    except Exception as e:  # a damaged pickle can fail in many ways (EOFError, KeyError, ...)
        raise BookParamsError(f"{path}: not a valid textbook parameter file: truncated or corrupt ({e!r})") from None
    if trailing:
        raise BookParamsError(f"{path}: unexpected data after the pickled parameter list")

    if not isinstance(params, list):
        raise BookParamsError(f"{path}: expected a list of arrays (as save_params writes), got {type(params).__name__}")
    if not params:
        raise BookParamsError(f"{path}: the parameter list is empty")
    for i, p in enumerate(params):
        if type(p) is not np.ndarray:
            raise BookParamsError(f"{path}: item {i} is a {type(p).__name__}, expected a NumPy array")
        if p.dtype.kind not in "fiu":
            raise BookParamsError(f"{path}: item {i} has dtype {p.dtype}, expected a real numeric array")
    if dtype is not None:
        params = [p.astype(dtype) for p in params]
    return params


# ---------------------------------------------------------------- textbook language models

BOOK_PRESETS = ("rnnlm", "better-rnnlm")


def import_book_lm(params_path, preset, data, output, dtype=np.float32):
    """Write the nprnn checkpoint ``output`` for a textbook ``Rnnlm.pkl`` / ``BetterRnnlm.pkl``; returns its path.

    ``preset``: the model the file belongs to, ``"rnnlm"`` (ch06 ``Rnnlm``) or ``"better-rnnlm"``
    (``BetterRnnlm``). ``data``: the corpus it was trained on (a PTB-layout directory); its
    training text gives the vocabulary, numbered as the textbook numbers it. Both models store
    their arrays in nprnn's order with the same LSTM gate layout, so they are used as they are;
    ``BetterRnnlm`` also saves its tied output weight as a separate copy of ``embed_W.T``, which
    must equal the embedding's transpose and is dropped (nprnn stores a tied weight once).
    """
    from nprnn.data.corpus import load_corpus
    from nprnn.models.io import save_lm, set_params
    from nprnn.models.lm import LanguageModel, LMConfig
    from nprnn.training.presets import preset_model

    if preset not in BOOK_PRESETS:
        raise ValueError(f"preset must be one of {', '.join(BOOK_PRESETS)}, got {preset!r}")
    where = os.fspath(params_path)
    params = load_book_params(params_path)
    model_settings, level = preset_model(preset)
    corpus = load_corpus(data, level=level)
    model = LanguageModel(LMConfig(vocab_size=len(corpus.vocab), **model_settings), dtype=dtype)

    if model.config.tie_weights and len(params) == len(model.params) + 1:
        embed_W, out_W = params[0], params[-2]
        if out_W.shape != embed_W.shape[::-1] or not np.array_equal(out_W, embed_W.T):
            raise BookParamsError(
                f"{where}: the {preset} preset ties the output weight to the embedding, but array "
                f"{len(params) - 2} {out_W.shape} is not the transpose of array 0 {embed_W.shape}"
            )
        params = params[:-2] + params[-1:]
    got, expected = [p.shape for p in params], [p.shape for p in model.params]
    if got != expected:
        raise BookParamsError(
            f"{where}: holds arrays of shapes {got}, but the {preset} preset with the {len(corpus.vocab)}-word "
            f"vocabulary of {data} expects {expected}; wrong --preset or --data?"
        )
    set_params(model, [p.astype(dtype) for p in params], where)
    extra = {"data": str(Path(data).resolve()), "imported_from": str(Path(where).resolve()), "preset": preset}
    save_lm(output, model, corpus.vocab, extra_meta=extra)
    return Path(output)


def import_book_seq2seq(pkl, preset, data, out, reverse=False, data_dir=None, split_seed=None, dtype=np.float32):
    """Write the nprnn model file ``out`` for parameters saved by the textbook's ``save_params``
    (``Seq2seq.pkl``, ``PeekySeq2seq.pkl``, ``AttentionSeq2seq.pkl``); returns its path.

    ``preset``: ``"seq2seq"``, ``"peeky"`` or ``"attention"``, the model the file belongs to (the
    parameter order and gate layout are the book's, so the arrays are used as they are).
    ``data``: the file it was trained on (or ``"addition"`` / ``"date"`` with ``data_dir``), which
    gives the vocabulary; ``reverse``: whether the book's script reversed the questions
    (``ch08/train.py`` does, ``ch07/train_seq2seq.py`` only with ``is_reverse = True``). Embedding
    and hidden sizes are read from the arrays.
    """
    from nprnn.data.seq2seq import find_data, load_seq2seq
    from nprnn.models.io import save_seq2seq, set_params
    from nprnn.models.seq2seq import MODELS, build_model
    from nprnn.training.presets import SPLIT_SEED

    split_seed = SPLIT_SEED if split_seed is None else split_seed
    if preset not in MODELS:
        raise ValueError(f"preset must be one of {', '.join(MODELS)}, got {preset!r}")
    where = os.fspath(pkl)
    params = load_book_params(pkl)
    path = find_data(data, data_dir)
    dataset = load_seq2seq(path, seed=split_seed, reverse=reverse)
    V = dataset.vocab_size
    if len(params) != 10 or params[0].ndim != 2 or params[2].ndim != 2:
        raise BookParamsError(
            f"{where}: holds {len(params)} arrays of shapes {[p.shape for p in params]}; a textbook seq2seq "
            "model has 10 (encoder embed, Wx, Wh, b; decoder embed, Wx, Wh, b, affine W, b)"
        )
    D, H = params[0].shape[1], params[2].shape[0]
    model = build_model(preset, V, D, H, dtype=dtype)
    got, expected = [p.shape for p in params], [p.shape for p in model.params]
    if got != expected:
        raise BookParamsError(
            f"{where}: holds arrays of shapes {got}, but the {preset} model with the {V}-character "
            f"vocabulary of {path} expects {expected}; wrong --preset or --data?"
        )
    set_params(model, [p.astype(dtype) for p in params], where)
    extra = {
        "data": str(Path(path).resolve()),
        "split_seed": split_seed,
        "imported_from": str(Path(where).resolve()),
        "preset": preset,
    }
    save_seq2seq(out, model, dataset, extra_meta=extra)
    return Path(out)
