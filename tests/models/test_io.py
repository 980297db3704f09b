"""nprnn.models.io: model files of every kind, old ones included, and crafted ones refused before allocation."""

import json
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nprnn.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from nprnn.data.vocab import Vocab
from nprnn.models.io import load_lm, load_model, load_seq2seq, save_lm, save_seq2seq
from nprnn.models.lm import LanguageModel, LMConfig, param_shapes
from nprnn.models.seq2seq import MODELS, build_model
from nprnn.models.seq2seq import param_shapes as seq2seq_shapes

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "v0.1"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())


# ---------------------------------------------------------------- files written by nprnn 0.1


@pytest.mark.parametrize("name", ["lm-char", "lm-word"])
def test_v01_language_models_load_and_score_as_they_did(name):
    kind, model, vocab, _, meta = load_model(FIXTURES / f"{name}.npz", dtype=np.float64)
    want = EXPECTED[name]
    assert kind == "lm" and len(vocab) == want["vocab_size"] and vocab.level == want["level"]
    ids = (np.arange(2 * 9) * 7 % len(vocab)).reshape(2, 9)
    assert float(model.forward(ids[:, :-1], ids[:, 1:])) == pytest.approx(want["loss64"], rel=1e-9)


def test_v01_seq2seq_model_loads_and_scores_as_it_did():
    kind, model, vocab, _, _ = load_model(FIXTURES / "seq2seq-attention.npz", dtype=np.float64)
    assert kind == "seq2seq" and model.config["kind"] == "attention"
    assert model.config["embed"] == model.wordvec_size  # read from nprnn 0.1's "wordvec_size"
    x = np.stack([vocab.encode_question(q) for q in ["september 27, 1994", "2/2/84"]])
    t = np.full((2, vocab.answer_width), vocab.start_id)
    t[:, 1:] = (np.arange(2 * (vocab.answer_width - 1)) % vocab.vocab_size).reshape(2, -1)
    assert float(model.forward(x, t)) == pytest.approx(EXPECTED["seq2seq-attention"]["loss64"], rel=1e-9)


def test_v01_translations_and_samples_are_unchanged(tmp_path):
    def run(*args):
        out = subprocess.run([sys.executable, "-m", "nprnn", *args], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return out.stdout

    got = run("seq2seq", "translate", str(FIXTURES / "seq2seq-attention.npz"), "september 27, 1994", "2/2/84")
    assert got == (FIXTURES / "seq2seq-attention.translate.txt").read_text()
    got = run("generate", str(FIXTURES / "lm-word.npz"), "--length", "10", "--seed", "3")
    # 0.1 framed the sample with '--- sample ... ---' lines; now stdout holds the sample alone
    assert got == (FIXTURES / "lm-word.sample.txt").read_text().splitlines()[1] + "\n"


def test_v01_checkpoint_is_refused_for_resume_with_one_line(tmp_path):
    out_dir = tmp_path / "run"
    out_dir.mkdir()
    (out_dir / "checkpoint.npz").write_bytes((FIXTURES / "lm-char.npz").read_bytes())
    out = subprocess.run(
        [sys.executable, "-m", "nprnn", "train", "--out", str(out_dir), "--resume", "--no-progress"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2 and len(out.stderr.splitlines()) == 1
    assert "written by an earlier nprnn" in out.stderr and "cannot be resumed" in out.stderr


# ---------------------------------------------------------------- round trips


def small_lm(cell="lstm", tie=False, layers=2, dtype=np.float32):
    config = LMConfig(vocab_size=7, cell=cell, embed=4, hidden=4 if tie else 5, layers=layers, tie_weights=tie)
    return LanguageModel(config, seed=3, dtype=dtype)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("tie", [False, True])
def test_param_shapes_are_the_models(cell, tie):
    model = small_lm(cell, tie)
    assert [p.shape for p in model.params] == param_shapes(model.config)


@pytest.mark.parametrize("kind", list(MODELS))
def test_seq2seq_param_shapes_are_the_models(kind):
    assert [p.shape for p in build_model(kind, 9, 3, 5).params] == seq2seq_shapes(kind, 9, 3, 5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lm_round_trip(tmp_path, dtype):
    model, vocab = small_lm(dtype=dtype), Vocab(["a", "b", "c", "d", "e", "<unk>", "\n"], level="char")
    save_lm(tmp_path / "m.npz", model, vocab)
    loaded, loaded_vocab, _, meta = load_lm(tmp_path / "m.npz")
    assert loaded_vocab == vocab and loaded.config == model.config and meta["kind"] == "nprnn-lm"
    assert all(p.dtype == dtype and np.array_equal(p, q) for p, q in zip(loaded.params, model.params))


def seq2seq_vocab():
    from nprnn.data.seq2seq import Seq2seqData

    return Seq2seqData.from_vocab(np.array([ord(c) for c in "_ 0123456789+"], dtype=np.int32), 7, 5, reverse=True)


@pytest.mark.parametrize("kind", list(MODELS))
def test_seq2seq_round_trip(tmp_path, kind):
    vocab = seq2seq_vocab()
    model = build_model(kind, vocab.vocab_size, 3, 4, seed=1)
    save_seq2seq(tmp_path / "s.npz", model, vocab)
    loaded, loaded_vocab, _, meta = load_seq2seq(tmp_path / "s.npz")
    assert meta["model"] == model.config == loaded.config
    assert loaded_vocab.vocab.tokens == vocab.vocab.tokens and loaded_vocab.reverse
    assert all(np.array_equal(p, q) for p, q in zip(loaded.params, model.params))


def test_reading_a_model_imports_no_training_code():
    code = (
        "import sys; from nprnn.models.io import load_model; "
        f"load_model({str(FIXTURES / 'lm-char.npz')!r}); load_model({str(FIXTURES / 'seq2seq-attention.npz')!r}); "
        "print(sorted(m for m in sys.modules if m.startswith('nprnn.training') or m.startswith('nprnn.cli')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------- crafted files


def lm_file(tmp_path, **meta_changes):
    model, vocab = small_lm(), Vocab(["a", "b", "c", "d", "e", "<unk>", "\n"], level="char")
    save_lm(tmp_path / "good.npz", model, vocab)
    arrays, meta = load_checkpoint(tmp_path / "good.npz")
    for key, value in meta_changes.items():
        meta["model"][key] = value
    return arrays, meta


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(hidden=10**6), r"metadata 'model.hidden' must be int in \[1, 65536\], got 1000000"),
        (dict(layers=10**7), r"metadata 'model.layers' must be int in \[1, 64\], got 10000000"),
        (dict(vocab_size=2**40), r"metadata 'model.vocab_size' must be int in \[1, 16777216\], got 1099511627776"),
        (dict(hidden="5"), r"metadata 'model.hidden' must be int in \[1, 65536\], got '5'"),
        (dict(hidden=5.0), r"metadata 'model.hidden' must be int in \[1, 65536\], got 5.0"),
        (dict(tie_weights=1), "metadata 'model.tie_weights' must be bool, got 1"),
        (dict(dropout=float("nan")), r"metadata 'model.dropout' must be float in \[0.0, 0.999999\], got nan"),
        (dict(init_scale=-1.0), r"metadata 'model.init_scale' must be float in \[1e-30, inf\], got -1.0"),
        (dict(cell="lstmx"), "metadata 'model.cell' must be str among 'rnn', 'lstm', 'gru', got 'lstmx'"),
        (dict(extra=1), r"unknown model settings \['extra'\]"),
        (dict(hidden=6), r"member 'param/001.npy' has shape \(4, 20\); expected \(4, 24\)"),
    ],
)
def test_crafted_config_is_refused_before_allocating(tmp_path, change, message):
    arrays, meta = lm_file(tmp_path, **change)
    save_checkpoint(tmp_path / "bad.npz", arrays, meta, finite=False)
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=message) as err:
        load_lm(tmp_path / "bad.npz")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert time.perf_counter() - start < 5 and peak < 8 << 20
    assert str(err.value).startswith(str(tmp_path / "bad.npz")) and "\n" not in str(err.value)


def test_unknown_member_is_refused(tmp_path):
    arrays, meta = lm_file(tmp_path)
    arrays["payload"] = np.zeros(10, np.float32)
    save_checkpoint(tmp_path / "bad.npz", arrays, meta)
    with pytest.raises(CheckpointError, match="unexpected member 'payload'"):
        load_lm(tmp_path / "bad.npz")


def test_optimizer_state_of_the_wrong_shape_is_refused(tmp_path):
    arrays, meta = lm_file(tmp_path)
    arrays["opt/m.0"] = np.zeros((1000, 1000), np.float32)  # parameter 0 is (7, 4)
    save_checkpoint(tmp_path / "bad.npz", arrays, meta)
    with pytest.raises(CheckpointError, match=r"opt/m.0"):
        load_lm(tmp_path / "bad.npz")


def test_carried_state_of_the_wrong_shape_is_refused(tmp_path):
    arrays, meta = lm_file(tmp_path)
    arrays["state/h"] = np.zeros((2, 3, 99), np.float32)  # hidden is 5
    save_checkpoint(tmp_path / "bad.npz", arrays, meta)
    with pytest.raises(CheckpointError, match="state/h"):
        load_lm(tmp_path / "bad.npz")


def test_complex_and_nan_parameters_are_refused(tmp_path):
    arrays, meta = lm_file(tmp_path)
    bad = dict(arrays, **{"param/001": arrays["param/001"].astype(np.complex64)})
    with pytest.raises(ValueError, match="complex64"):
        save_checkpoint(tmp_path / "c.npz", bad, meta)  # refused on writing already
    nan = dict(arrays)
    nan["param/001"] = arrays["param/001"].copy()
    nan["param/001"][0, 0] = np.nan
    save_checkpoint(tmp_path / "nan.npz", nan, meta, finite=False)
    with pytest.raises(CheckpointError, match="NaN or Inf"):
        load_lm(tmp_path / "nan.npz")


# mutations of a real checkpoint's metadata: it loads equal (the change was harmless) or is one clean error
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.floats(allow_nan=True) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from([("model", "hidden"), ("model", "layers"), ("model", "cell"), ("model", "embed"),
                             ("model", "vocab_size"), ("model", "tie_weights"), ("model", "dropout"), ("level",),
                             ("kind",), ("model",)]),
       value=JSON_VALUES)  # fmt: skip
def test_metadata_mutations_load_equal_or_fail_cleanly(tmp_path_factory, path, value):
    tmp = tmp_path_factory.mktemp("mut")
    arrays, meta = lm_file(tmp)
    good, _, _, _ = load_lm(tmp / "good.npz")
    target = meta
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    try:
        save_checkpoint(tmp / "m.npz", arrays, meta)
    except ValueError:
        return  # not representable as JSON (e.g. NaN): such a file cannot exist
    start = time.perf_counter()
    try:
        model, _, _, _ = load_lm(tmp / "m.npz")
    except CheckpointError as e:
        assert str(e).startswith(str(tmp / "m.npz")) and "\n" not in str(e)
    else:
        assert [p.shape for p in model.params] == [p.shape for p in good.params]
        assert all(np.array_equal(p, q) for p, q in zip(model.params, good.params))
    assert time.perf_counter() - start < 5


def test_a_crafted_file_is_one_line_and_exit_2_on_the_command_line(tmp_path):
    arrays, meta = lm_file(tmp_path, layers=10**7)
    save_checkpoint(tmp_path / "bad.npz", arrays, meta)
    for command in (["generate"], ["eval"], ["export", "-o", str(tmp_path / "x.onnx")]):
        out = subprocess.run(
            [sys.executable, "-m", "nprnn", command[0], str(tmp_path / "bad.npz"), *command[1:]],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert out.returncode == 2, out.stderr
        assert out.stderr.count("\n") == 1 and "bad.npz" in out.stderr and "'model.layers'" in out.stderr
