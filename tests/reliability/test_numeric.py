"""Numeric faults: a NaN/Inf loss, gradient or update stops `nprnn train` with one line naming the
step (exit 2), the last good checkpoint stays byte for byte as it was, no NaN reaches any file, and
resuming from it loses nothing. Clipping is on by default. Softmax and exp cannot overflow: huge
logits (1e4 .. 1e30, float32 and float64) pass through the loss, sampling, attention and the
recurrent cells with finite results and without a single NumPy warning.

Faults are injected by wrapping the model at a chosen training step (the code that must catch them,
``TrainingLoop.step`` in nprnn/training/loop.py, is left alone); evaluation is never hit because it
runs with ``model.train`` off.
"""

import json
import re
import warnings

import numpy as np
import pytest

import nprnn.models.io
import nprnn.training.lm
from nprnn.checkpoint import load_checkpoint
from nprnn.cli import build_parser, main
from nprnn.layers.attention import TimeAttention, softmax
from nprnn.layers.basic import TimeSoftmaxWithLoss
from nprnn.layers.gru import TimeGRU, init_gru_params
from nprnn.layers.lstm import TimeLSTM, init_lstm_params
from nprnn.layers.rnn import TimeRNN, init_rnn_params
from nprnn.models.lm import LanguageModel, LMConfig, generate, sample_next
from nprnn.training.lm import TrainConfig
from nprnn.training.presets import PRESETS, split_preset
from tests.reliability import make_text, snapshot

TINY = ["--level", "word", "--hidden", "12", "--embed", "8", "--epochs", "2", "--batch-size", "4", "--bptt", "6",
        "--eval-batch-size", "2", "--eval-bptt", "5", "--no-progress", "--sample-length", "0", "--save-every", "3",
        "--optimizer", "sgd", "--lr", "1.0", "--seed", "5"]  # fmt: skip
STEPS_PER_EPOCH = 71
FAULT_STEP = 95  # in the second epoch, two steps after the --save-every checkpoint of step 93
LAST_SAVE = 93


class strict:
    """No NumPy warning, and overflow, invalid operations and division by zero raise.
    (Underflow of exp(very negative) to 0 is the correct result and stays allowed.)"""

    def __enter__(self):
        self.errstate = np.errstate(over="raise", invalid="raise", divide="raise", under="ignore")
        self.errstate.__enter__()
        self.warnings = warnings.catch_warnings()
        self.warnings.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc):
        self.warnings.__exit__(*exc)
        self.errstate.__exit__(*exc)


# ---------------------------------------------------------------- clipping is on by default


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_clips_the_gradient(preset):
    model, train, _ = split_preset(preset)
    assert model["cell"] in ("rnn", "lstm", "gru")
    assert train["max_grad"] > 0
    args = build_parser().parse_args(["train", "--preset", preset])  # no --max-grad: the preset's applies
    assert args.max_grad is None


def test_the_library_default_clips_too():
    assert TrainConfig().max_grad > 0


# ---------------------------------------------------------------- faults during `nprnn train`


def inject(monkeypatch, fault):
    """Wrap the model so that ``fault`` happens at training step FAULT_STEP (counted in train mode)."""
    calls = {"forward": 0, "backward": 0}
    real_forward, real_backward = LanguageModel.forward, LanguageModel.backward

    def forward(self, ids, targets):
        loss = real_forward(self, ids, targets)
        if self.train:
            calls["forward"] += 1
            if calls["forward"] == FAULT_STEP and fault in ("nan-loss", "inf-loss"):
                return float("nan") if fault == "nan-loss" else float("inf")
        return loss

    def backward(self, dout=1.0):
        real_backward(self, dout)
        calls["backward"] += 1
        if calls["backward"] == FAULT_STEP:
            if fault in ("inf-grad", "nan-grad"):
                self.grads[1][0, 0] = np.inf if fault == "inf-grad" else np.nan
            elif fault == "exploding-grad":  # finite, but lr * grad overflows float32
                for g in self.grads:
                    g[...] = np.finfo(g.dtype).max / 2

    monkeypatch.setattr(LanguageModel, "forward", forward)
    monkeypatch.setattr(LanguageModel, "backward", backward)


def spy_on_saves(monkeypatch, out):
    """Snapshot of ``out`` right after every write of checkpoint.npz."""
    snapshots = []
    real = nprnn.models.io.save_checkpoint

    def save_checkpoint(path, arrays, meta, **kwargs):
        real(path, arrays, meta, **kwargs)
        if str(path).endswith("checkpoint.npz"):
            snapshots.append(snapshot(out))

    monkeypatch.setattr(nprnn.models.io, "save_checkpoint", save_checkpoint)
    return snapshots


@pytest.fixture
def words(tmp_path):
    return make_text(tmp_path / "words.txt", lines=200, words=12)


def assert_no_nan_on_disk(out):
    for path in out.glob("*.npz"):
        arrays, _ = load_checkpoint(path)
        for name, a in arrays.items():
            assert a.dtype.kind not in "fc" or np.isfinite(a).all(), f"{path.name}: {name}"

    def refuse(constant):
        raise AssertionError(f"metrics.jsonl holds {constant}: not strict JSON")

    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1  # the first epoch's record
    for line in lines:
        json.loads(line, parse_constant=refuse)


@pytest.mark.parametrize(
    "fault, options, message",
    [
        ("nan-loss", [], f"loss became nan at epoch 2, step {FAULT_STEP}; stopped before updating"),
        ("inf-loss", [], f"loss became inf at epoch 2, step {FAULT_STEP}; stopped before updating"),
        ("inf-grad", [], f"gradient norm became inf at epoch 2, step {FAULT_STEP}; stopped before updating"),
        ("nan-grad", ["--max-grad", "0"], f"gradient norm became nan at epoch 2, step {FAULT_STEP}; stopped before"),
        (
            "exploding-grad",
            ["--max-grad", "0", "--lr", "4"],
            f"the update of epoch 2, step {FAULT_STEP} made parameters NaN or infinite; stopped",
        ),
    ],
    ids=["nan-loss", "inf-loss", "inf-grad", "nan-grad", "exploding-grad"],
)
def test_numeric_fault_stops_training_and_keeps_the_last_checkpoint(
    words, tmp_path, monkeypatch, capsys, fault, options, message
):
    reference = tmp_path / "reference"
    assert main(["train", "--data", str(words), "--out", str(reference), *TINY, *options]) == 0
    reference_meta = load_checkpoint(reference / "checkpoint.npz")[1]
    assert reference_meta["progress"]["step"] == 2 * STEPS_PER_EPOCH  # the fault is mid second epoch

    out = tmp_path / "run"
    inject(monkeypatch, fault)
    saved = spy_on_saves(monkeypatch, out)
    capsys.readouterr()
    assert main(["train", "--data", str(words), "--out", str(out), *TINY, *options]) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(r"nprnn: error: [^\n]*\n", err) and message in err, err
    assert "the last checkpoint is untouched" in err

    # nothing written since the last good checkpoint, byte for byte; the run lock (held while the
    # checkpoint was written) is released on the way out
    assert not (out / ".lock").exists()
    assert snapshot(out) == {k: v for k, v in saved[-1].items() if k != ".lock"}
    assert ".lock" in saved[-1]
    assert load_checkpoint(out / "checkpoint.npz")[1]["progress"]["step"] == LAST_SAVE
    assert_no_nan_on_disk(out)

    monkeypatch.undo()  # the fault was transient: resuming from the last checkpoint loses nothing
    assert main(["train", "--out", str(out), "--resume", "--no-progress", "--sample-length", "0"]) == 0
    final, ref = load_checkpoint(out / "checkpoint.npz")[0], load_checkpoint(reference / "checkpoint.npz")[0]
    for name in ref:
        assert final[name].tobytes() == ref[name].tobytes(), name


def test_learning_rate_so_high_the_first_update_overflows(words, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--data", str(words), "--out", str(out), *TINY, "--lr", "1e39"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err == (
        "nprnn: error: the update of epoch 1, step 1 made parameters NaN or infinite; stopped (the last "
        "checkpoint is untouched). Try a lower --lr or a smaller --max-grad\n"
    )
    assert not (out / "checkpoint.npz").exists() and not (out / "best.npz").exists()


def test_a_huge_finite_loss_is_an_infinite_perplexity_not_a_crash(rng):
    """A diverged but finite model (loss ~1e300) has perplexity inf: exp of the mean loss would
    raise OverflowError, which used to end `nprnn train` with a traceback at the end of the epoch."""
    model = LanguageModel(LMConfig(vocab_size=9, embed=4, hidden=8), seed=0, dtype=np.float64)
    model.affine.params[0][...] = rng.choice([-1e300, 1e300], model.affine.params[0].shape)
    ids = rng.integers(0, 9, 200)
    with strict():
        ppl = nprnn.training.lm.evaluate(model, ids, batch_size=2, bptt=5)
    assert ppl == np.inf
    assert nprnn.training.lm.perplexity(1e30) == np.inf
    assert nprnn.training.lm.perplexity(2.0) == pytest.approx(np.exp(2.0))


def test_a_nan_checkpoint_is_never_written(words, tmp_path, capsys):
    """Even a direct save of a damaged model refuses before touching the file on disk."""
    out = tmp_path / "run"
    assert main(["train", "--data", str(words), "--out", str(out), *TINY]) == 0
    before = (out / "best.npz").read_bytes()
    model, vocab, _, _ = nprnn.models.io.load_lm(out / "best.npz")
    model.params[2][0] = np.nan
    with pytest.raises(ValueError, match="'param/002' contains NaN or Inf; refusing to write it"):
        nprnn.models.io.save_lm(out / "best.npz", model, vocab)
    assert (out / "best.npz").read_bytes() == before
    assert not list(out.glob(".best.npz.*"))


# ---------------------------------------------------------------- softmax / exp cannot overflow

MAGNITUDES = [1e4, 1e10, 1e20, 1e30]
DTYPES = [np.float32, np.float64]


def huge_logits(rng, shape, magnitude, dtype):
    x = rng.uniform(-1, 1, shape) * magnitude
    x[..., 0] = magnitude  # a clear maximum ...
    x[..., 1] = -magnitude  # ... and a clear minimum in every row
    return x.astype(dtype)


def reference_loss(xs, ts):
    """Mean cross-entropy in float64, position by position with log-sum-exp."""
    xs = xs.astype(np.float64)
    losses = []
    for n in range(xs.shape[0]):
        for t in range(xs.shape[1]):
            row = xs[n, t]
            top = row.max()
            losses.append(top + np.log(np.sum(np.exp(row - top))) - row[ts[n, t]])
    return float(np.mean(losses))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("magnitude", MAGNITUDES)
def test_softmax_loss_with_huge_logits(rng, magnitude, dtype):
    N, T, V = 3, 4, 7
    xs = huge_logits(rng, (N, T, V), magnitude, dtype)
    ts = rng.integers(0, V, (N, T))
    ts[0, 0], ts[0, 1] = 0, 1  # the most and the least likely token
    layer = TimeSoftmaxWithLoss()
    with strict():
        loss = layer.forward(xs, ts)
        dxs = layer.backward()
    assert np.isfinite(loss) and dxs.dtype == dtype and np.isfinite(dxs).all()
    assert loss == pytest.approx(reference_loss(xs, ts), rel=1e-6)
    # gradient = (softmax - onehot) / (N T): each row sums to 0; the max's probability is ~1
    np.testing.assert_allclose(dxs.sum(axis=-1), 0, atol=1e-6 / (N * T))
    assert dxs[0, 0, 0] == pytest.approx(0, abs=1e-6) and dxs[0, 1, 1] == pytest.approx(-1 / (N * T), rel=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("magnitude", MAGNITUDES)
def test_attention_softmax_with_huge_scores(rng, magnitude, dtype):
    s = huge_logits(rng, (2, 3, 5), magnitude, dtype)
    with strict():
        a = softmax(s)
    assert a.dtype == dtype and np.isfinite(a).all()
    np.testing.assert_allclose(a.sum(axis=-1), 1, rtol=1e-6)
    np.testing.assert_allclose(a[..., 0], 1, rtol=1e-6)  # the clear maximum takes all the weight

    # through the layer: states of size sqrt(magnitude) make dot-product scores of about `magnitude`
    H = 4
    hs_enc = (rng.standard_normal((2, 5, H)) * np.sqrt(magnitude)).astype(dtype)
    hs_dec = (rng.standard_normal((2, 3, H)) * np.sqrt(magnitude)).astype(dtype)
    layer = TimeAttention()
    with strict():
        cs = layer.forward(hs_enc, hs_dec)
        dhs_enc, dhs_dec = layer.backward(np.ones_like(cs))
    for out in (cs, layer.attention_weights, dhs_enc, dhs_dec):
        assert out.dtype == dtype and np.isfinite(out).all()
    np.testing.assert_allclose(layer.attention_weights.sum(axis=-1), 1, rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("magnitude", MAGNITUDES)
@pytest.mark.parametrize("temperature", [1.0, 1e-3, 1e-30, 1e-300])
def test_sampling_with_huge_logits(rng, magnitude, dtype, temperature):
    logits = huge_logits(rng, (4, 6), magnitude, dtype)
    logits[1, 3] = -np.inf  # a banned id
    with strict():
        ids = sample_next(logits, rng, temperature)
        top2 = sample_next(logits, rng, temperature, top_k=2)
    # 1e4 apart is beyond any temperature <= 1 here: the maximum is certain
    np.testing.assert_array_equal(ids, 0)
    np.testing.assert_array_equal(top2, 0)


@pytest.mark.parametrize("temperature", [1.0, 1e-300])
def test_sampling_ties_at_a_huge_maximum(rng, temperature):
    logits = np.array([[1e30, -1e30, 1e30, 5.0]], np.float32)
    with strict():
        draws = {int(sample_next(logits, rng, temperature)[0]) for _ in range(100)}
    assert draws == {0, 2}


@pytest.mark.parametrize(
    "logits, kwargs, match",
    [
        ([[np.nan, 0.0]], {}, "got NaN, \\+inf or all -inf"),
        ([[np.inf, 0.0]], {}, "got NaN, \\+inf or all -inf"),
        ([[-np.inf, -np.inf]], {}, "got NaN, \\+inf or all -inf"),
        ([1.0, 2.0], {}, r"logits must have shape \(N, V\) with V >= 1, got \(2,\)"),
        (np.zeros((1, 0)), {}, r"got \(1, 0\)"),
        ([[0.0, 1.0]], {"temperature": float("inf")}, "temperature must be >= 0 and finite"),
        ([[0.0, 1.0]], {"temperature": float("nan")}, "temperature must be >= 0 and finite"),
        ([[0.0, 1.0]], {"top_k": 1.5}, "top_k must be a positive integer, got 1.5"),
    ],
)
def test_sampling_bad_logits_are_value_errors(rng, logits, kwargs, match):
    with pytest.raises(ValueError, match=match):
        sample_next(np.asarray(logits), rng, **kwargs)


@pytest.mark.parametrize("dtype", DTYPES)
def test_generate_from_a_model_with_huge_logits(dtype):
    """End to end: output weights of 1e28 give logits near 1e29 (float32 max is 3e38); generation at a
    low temperature is then greedy and deterministic, with no warning."""
    model = LanguageModel(LMConfig(vocab_size=9, embed=4, hidden=8), seed=0, dtype=dtype)
    model.affine.params[0][...] *= 1e28

    class Words:
        eos_id = 0

        def encode(self, text):
            return np.array([1, 2], np.int64)

    with strict():
        low = generate(model, Words(), "a b", length=12, temperature=1e-3, seed=0)
        again = generate(model, Words(), "a b", length=12, temperature=1e-3, seed=99)
        greedy = generate(model, Words(), "a b", length=12, temperature=0.0)
    np.testing.assert_array_equal(low, greedy)
    np.testing.assert_array_equal(again, greedy)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("magnitude", MAGNITUDES)
@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_recurrent_layers_saturate_without_overflow(rng, kind, magnitude, dtype):
    """Huge pre-activations saturate tanh and the sigmoids (written with tanh, no exp to overflow)."""
    layer_cls, init = {"rnn": (TimeRNN, init_rnn_params), "lstm": (TimeLSTM, init_lstm_params),
                       "gru": (TimeGRU, init_gru_params)}[kind]  # fmt: skip
    layer = layer_cls(*init(3, 4, seed=1, dtype=dtype))
    xs = (rng.choice([-1.0, 1.0], (2, 5, 3)) * magnitude).astype(dtype)
    with strict():
        hs = layer.forward(xs)
        dxs = layer.backward(np.ones_like(hs))
    assert np.isfinite(hs).all() and np.abs(hs).max() <= 1
    assert np.isfinite(dxs).all() and all(np.isfinite(g).all() for g in layer.grads)


def test_strict_catches_what_it_must():
    """The guard used above does fail on an overflowing softmax (so the tests can fail)."""
    naive = np.array([[1e30, 0.0]], np.float32)
    with pytest.raises(FloatingPointError), strict():
        np.exp(naive) / np.exp(naive).sum()
