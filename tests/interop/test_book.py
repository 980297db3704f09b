"""The textbook parameter importer: files written by save_params load exactly; anything that is
not a list of plain numeric arrays, in particular a pickle that tries to run code, is refused
before any of its code runs."""

import builtins
import collections
import os
import pickle
import warnings

import numpy as np
import pytest

from nprnn.interop.book import BookParamsError, load_book_params


def book_params(rng):
    """Parameters shaped like a tiny textbook Rnnlm; the tied BetterRnnlm also stores W.T (Fortran order)."""
    V, D, H = 7, 3, 4
    embed_W = rng.standard_normal((V, D)).astype(np.float32)
    return [
        embed_W,
        rng.standard_normal((D, 4 * H)).astype(np.float32),
        rng.standard_normal((H, 4 * H)).astype(np.float32),
        np.zeros(4 * H, np.float32),
        embed_W.T,
        rng.standard_normal(V).astype(np.float32),
    ]


def save_as_the_book_does(params, path, protocol=None):
    with open(path, "wb") as f:
        pickle.dump([p.astype(np.float16) for p in params], f, protocol=protocol)


def assert_loaded(got, params):
    assert isinstance(got, list) and len(got) == len(params)
    for g, p in zip(got, params):
        assert type(g) is np.ndarray and g.dtype == np.float16 and g.shape == p.shape
        np.testing.assert_array_equal(g, p.astype(np.float16))


# ---------------------------------------------------------------- good files


def test_textbook_save_params_file(dlfs2, tmp_path, rng):
    from common.base_model import BaseModel

    params = book_params(rng)
    model = BaseModel()
    model.params = params
    model.save_params(str(tmp_path / "Rnnlm.pkl"))  # the textbook's own code writes the file

    assert_loaded(load_book_params(tmp_path / "Rnnlm.pkl"), params)

    # with dtype=float32, exactly what the textbook's load_params puts into a model
    other = BaseModel()
    other.params = [np.zeros_like(p) for p in params]
    other.load_params(str(tmp_path / "Rnnlm.pkl"))
    for g, e in zip(load_book_params(tmp_path / "Rnnlm.pkl", dtype=np.float32), other.params):
        assert g.dtype == np.float32
        np.testing.assert_array_equal(g, e)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_every_pickle_protocol(tmp_path, rng, protocol):
    params = book_params(rng)
    save_as_the_book_does(params, tmp_path / "p.pkl", protocol)
    assert_loaded(load_book_params(tmp_path / "p.pkl"), params)


def test_numpy1_style_pickle_loads_without_warnings(tmp_path, rng):
    """Files from the textbook's era name numpy.core.multiarray._reconstruct (NumPy 2 renamed it)."""
    params = book_params(rng)
    raw = pickle.dumps([p.astype(np.float16) for p in params], protocol=2)
    assert b"numpy._core.multiarray" in raw
    (tmp_path / "old.pkl").write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DeprecationWarning from importing numpy.core
        assert_loaded(load_book_params(tmp_path / "old.pkl"), params)


def test_integer_arrays_are_numeric(tmp_path):
    with open(tmp_path / "p.pkl", "wb") as f:
        pickle.dump([np.arange(4, dtype=np.int32)], f)
    np.testing.assert_array_equal(load_book_params(tmp_path / "p.pkl")[0], np.arange(4))


# ---------------------------------------------------------------- malicious files


class Sub(np.ndarray):
    pass


class System:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class Eval:
    def __init__(self, code):
        self.code = code

    def __reduce__(self):
        return (builtins.eval, (self.code,))


def payloads(marker):
    return {
        "os.system": System(f"touch {marker}"),
        "builtins.eval": Eval(f"__import__('os').mkdir({str(marker)!r})"),
    }


@pytest.mark.parametrize("kind, refused", [("os.system", r"'posix\.system'"), ("builtins.eval", r"'builtins\.eval'")])
@pytest.mark.parametrize("wrap", ["alone", "after arrays", "in object array"])
def test_code_running_pickle_is_refused_without_running(tmp_path, rng, kind, refused, wrap):
    marker, live = tmp_path / "pwned", tmp_path / "live"
    pickle.loads(pickle.dumps(payloads(live)[kind]))  # the payload is real: plain pickle runs it...
    assert live.exists()

    payload = payloads(marker)[kind]
    if wrap == "alone":
        obj = payload
    elif wrap == "after arrays":  # a valid-looking parameter list with the payload at the end
        obj = [p.astype(np.float16) for p in book_params(rng)] + [payload]
    else:
        obj = [np.array([payload], dtype=object)]
    (tmp_path / "model.pkl").write_bytes(pickle.dumps(obj))

    with pytest.raises(BookParamsError, match=f"model.pkl: refused to unpickle global {refused}") as info:
        load_book_params(tmp_path / "model.pkl")
    assert "\n" not in str(info.value)
    assert not marker.exists()  # ...but load_book_params did not


@pytest.mark.parametrize(
    "obj, refused",
    [
        (np.zeros(2).view(Sub), r"[\w.]*test_book\.Sub"),  # an ndarray subclass
        ([np.float16(1.5)], "numpy._core.multiarray.scalar"),  # NumPy scalars are not parameters
        ([np.load], "numpy.load"),  # a NumPy function, but not an array constructor
        ([collections.OrderedDict()], "collections.OrderedDict"),
    ],
)
def test_other_globals_are_refused(tmp_path, obj, refused):
    (tmp_path / "p.pkl").write_bytes(pickle.dumps(obj))
    with pytest.raises(BookParamsError, match=f"refused to unpickle global '{refused}'"):
        load_book_params(tmp_path / "p.pkl")


def test_allowed_globals_with_forbidden_arguments(tmp_path):
    """Allowed names cannot be bent: _codecs.encode only with latin1, _reconstruct only for ndarray."""
    # protocol 0 text: _codecs.encode("abc", "rot13")
    (tmp_path / "a.pkl").write_bytes(b"c_codecs\nencode\n(Vabc\nVrot13\ntR.")
    with pytest.raises(BookParamsError, match="_codecs.encode with encoding 'rot13'"):
        load_book_params(tmp_path / "a.pkl")
    # _reconstruct(numpy.dtype, (0,), b"b"): a subtype other than ndarray
    raw = pickle.dumps(np.zeros(1), protocol=2).replace(b"cnumpy\nndarray\n", b"cnumpy\ndtype\n")
    (tmp_path / "b.pkl").write_bytes(raw)
    with pytest.raises(BookParamsError, match="refused to unpickle array subclass"):
        load_book_params(tmp_path / "b.pkl")


# ---------------------------------------------------------------- not a parameter list


@pytest.mark.parametrize(
    "obj, match",
    [
        ({"W": np.zeros(3, np.float16)}, "expected a list of arrays .*got dict"),
        ("params", "expected a list of arrays .*got str"),
        ((np.zeros(2, np.float16),), "got tuple"),
        ([], "the parameter list is empty"),
        ([np.zeros(2, np.float16), "W"], "item 1 is a str, expected a NumPy array"),
        ([[1.0, 2.0]], "item 0 is a list"),
        ([np.array([1, "a"], dtype=object)], "item 0 has dtype object"),
        ([np.array(["a", "b"])], "item 0 has dtype <U1"),
        ([np.zeros(2, complex)], "item 0 has dtype complex128"),
        ([np.zeros(2, bool)], "item 0 has dtype bool"),
    ],
)
def test_not_a_list_of_numeric_arrays(tmp_path, obj, match):
    (tmp_path / "p.pkl").write_bytes(pickle.dumps(obj))
    with pytest.raises(BookParamsError, match=match):
        load_book_params(tmp_path / "p.pkl")


@pytest.mark.parametrize("keep", [0, 1, 0.3, 0.9, -1])
def test_truncated_file(tmp_path, rng, keep):
    save_as_the_book_does(book_params(rng), tmp_path / "p.pkl")
    raw = (tmp_path / "p.pkl").read_bytes()
    n = len(raw) - 1 if keep == -1 else int(len(raw) * keep) if isinstance(keep, float) else keep
    (tmp_path / "p.pkl").write_bytes(raw[:n])
    with pytest.raises(BookParamsError, match="p.pkl: not a valid textbook parameter file: truncated or corrupt"):
        load_book_params(tmp_path / "p.pkl")


def test_garbage_and_trailing_data(tmp_path, rng):
    (tmp_path / "g.pkl").write_bytes(rng.integers(0, 256, 300, dtype=np.uint8).tobytes())
    with pytest.raises(BookParamsError, match="g.pkl: "):
        load_book_params(tmp_path / "g.pkl")
    save_as_the_book_does(book_params(rng), tmp_path / "t.pkl")
    with open(tmp_path / "t.pkl", "ab") as f:
        f.write(b"more")
    with pytest.raises(BookParamsError, match="unexpected data after the pickled parameter list"):
        load_book_params(tmp_path / "t.pkl")


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(BookParamsError, match="nope.pkl: no such file"):
        load_book_params(tmp_path / "nope.pkl")
    with pytest.raises(BookParamsError, match="is a directory"):
        load_book_params(tmp_path)


# ---------------------------------------------------------------- import-book: textbook models -> checkpoint


def write_tiny_ptb(directory, rng):
    """A PTB-layout corpus: *.train.txt / *.valid.txt / *.test.txt of short lines."""
    words = [f"w{i}" for i in range(40)]
    directory.mkdir()
    for which, n_lines in (("train", 120), ("valid", 20), ("test", 75)):  # test: 2 batches of 10 x 35
        lines = [" ".join(rng.choice(words, size=rng.integers(3, 15))) for _ in range(n_lines)]
        (directory / f"tiny.{which}.txt").write_text("\n".join(lines) + "\n")
    return directory


def textbook_model(dlfs2, V, D, H, layers, tied, rng):
    """The textbook's ch06 Rnnlm (layers=1) / BetterRnnlm (layers=2, tied, dropout), built from its
    own common/ layers with random weights (biases included, so every array matters)."""
    from common.base_model import BaseModel
    from common.time_layers import TimeAffine, TimeDropout, TimeEmbedding, TimeLSTM, TimeSoftmaxWithLoss

    def randn(*shape, scale=0.3):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    class BookLM(BaseModel):
        def __init__(self):
            embed_W = randn(V, D)
            self.layers = [TimeEmbedding(embed_W)]
            self.lstms = []
            for i in range(layers):
                if tied:
                    self.layers.append(TimeDropout(0.5))
                D_in = D if i == 0 else H  # the textbook's scales: randn / sqrt(fan_in), not chaotic
                Wx, Wh = randn(D_in, 4 * H, scale=D_in**-0.5), randn(H, 4 * H, scale=H**-0.5)
                lstm = TimeLSTM(Wx, Wh, randn(4 * H), stateful=True)
                self.layers.append(lstm)
                self.lstms.append(lstm)
            if tied:
                self.layers.append(TimeDropout(0.5))
            self.layers.append(TimeAffine(embed_W.T if tied else randn(H, V, scale=H**-0.5), randn(V)))
            self.loss_layer = TimeSoftmaxWithLoss()
            self.params = [p for layer in self.layers for p in layer.params]

        def forward(self, xs, ts, train_flg=False):
            for layer in self.layers:
                if isinstance(layer, TimeDropout):
                    layer.train_flg = train_flg
                xs = layer.forward(xs)
            return self.loss_layer.forward(xs, ts)

        def reset_state(self):
            for lstm in self.lstms:
                lstm.reset_state()

    return BookLM()


@pytest.mark.parametrize("preset", ["rnnlm", "better-rnnlm"])
def test_import_book_reproduces_textbook_perplexity(dlfs2, tmp_path, rng, capsys, preset):
    from common.util import eval_perplexity

    from nprnn.cli import main
    from nprnn.data.corpus import load_corpus
    from nprnn.interop.book import import_book_lm
    from nprnn.models.io import load_lm
    from nprnn.training.lm import evaluate

    data = write_tiny_ptb(tmp_path / "tiny", rng)
    corpus = load_corpus(data)
    assert (len(corpus.test) - 1) // (10 * 35) >= 2  # the state must carry over between eval batches
    H, layers, tied = (100, 1, False) if preset == "rnnlm" else (650, 2, True)
    book = textbook_model(dlfs2, len(corpus.vocab), H, H, layers, tied, rng)
    pkl = tmp_path / "Model.pkl"
    book.save_params(str(pkl))
    book.load_params(str(pkl))  # evaluate the float16-rounded weights, as the textbook's eval scripts do
    expected = float(eval_perplexity(book, corpus.test, batch_size=10, time_size=35))

    out = import_book_lm(pkl, preset, data, tmp_path / "imported.npz")
    model, vocab, _, meta = load_lm(out)
    assert vocab == corpus.vocab and meta["preset"] == preset and model.config.tie_weights == tied
    assert len(model.params) == len(book.params) - tied  # the tied copy is stored once
    assert evaluate(model, corpus.test, batch_size=10, bptt=35) == pytest.approx(expected, rel=1e-5)

    if preset != "rnnlm":
        return  # the command line once is enough (the 2 x 650 model is slow to evaluate twice more)
    # the command line: nprnn import-book, then nprnn eval prints the same perplexity
    capsys.readouterr()
    args = ["import-book", str(pkl), "--preset", preset, "--data", str(data), "-o", str(tmp_path / "cli.npz")]
    assert main(args) == 0
    assert main(["eval", str(tmp_path / "cli.npz"), "--split", "test", "--batch-size", "10", "--bptt", "35"]) == 0
    printed = capsys.readouterr().out.split("test perplexity:")[1].split()[0]
    assert float(printed) == pytest.approx(expected, abs=0.006)


def test_import_book_wrong_preset_or_data(dlfs2, tmp_path, rng):
    from nprnn.interop.book import import_book_lm

    data = write_tiny_ptb(tmp_path / "tiny", rng)
    from nprnn.data.corpus import load_corpus

    V = len(load_corpus(data).vocab)
    book = textbook_model(dlfs2, V, 100, 100, 1, False, rng)
    book.save_params(str(tmp_path / "Rnnlm.pkl"))
    out = tmp_path / "out.npz"
    with pytest.raises(BookParamsError, match=r"Rnnlm.pkl: holds arrays of shapes .*better-rnnlm preset .*wrong"):
        import_book_lm(tmp_path / "Rnnlm.pkl", "better-rnnlm", data, out)
    smaller = textbook_model(dlfs2, V - 1, 100, 100, 1, False, rng)
    smaller.save_params(str(tmp_path / "Small.pkl"))
    with pytest.raises(BookParamsError, match=rf"Small.pkl: .*the rnnlm preset with the {V}-word vocabulary"):
        import_book_lm(tmp_path / "Small.pkl", "rnnlm", data, out)
    with pytest.raises(ValueError, match="preset must be one of rnnlm, better-rnnlm"):
        import_book_lm(tmp_path / "Rnnlm.pkl", "zaremba-small", data, out)
    assert not out.exists()


def test_import_book_tied_copy_must_be_the_transpose(dlfs2, tmp_path, rng):
    from nprnn.data.corpus import load_corpus
    from nprnn.interop.book import import_book_lm

    data = write_tiny_ptb(tmp_path / "tiny", rng)
    book = textbook_model(dlfs2, len(load_corpus(data).vocab), 650, 650, 2, True, rng)
    params = [p.astype(np.float16) for p in book.params]
    params[-2] = params[-2].copy()
    params[-2][0, 0] += 1  # an output weight that is no longer the embedding's transpose
    (tmp_path / "B.pkl").write_bytes(pickle.dumps(params))
    with pytest.raises(BookParamsError, match=r"array 7 \(650, \d+\) is not the transpose of array 0"):
        import_book_lm(tmp_path / "B.pkl", "better-rnnlm", data, tmp_path / "out.npz")
    assert not (tmp_path / "out.npz").exists()
