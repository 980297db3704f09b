import itertools

import numpy as np
import pytest

from nprnn.gradcheck import numerical_gradient, relative_error
from nprnn.models import decode
from nprnn.models.seq2seq import (
    AttentionDecoder,
    AttentionEncoder,
    AttentionSeq2seq,
    Decoder,
    Encoder,
    PeekyDecoder,
    PeekySeq2seq,
    Seq2seq,
    plot_attention,
)
from nprnn.optim import Adam

MODELS = {"seq2seq": Seq2seq, "peeky": PeekySeq2seq, "attention": AttentionSeq2seq}


def make_model(kind, V=5, D=3, H=4, seed=0, dtype=np.float64, scale=None):
    """A small model; ``scale`` redraws every parameter as ``randn * scale`` so that an untrained
    model's outputs are far from uniform (distinct decodings, no near-ties)."""
    model = MODELS[kind](V, D, H, seed=seed, dtype=dtype)
    if scale is not None:
        rng = np.random.default_rng(seed + 100)
        for p in model.params:
            p[...] = rng.standard_normal(p.shape) * scale
    return model


def batch(rng, N=3, Tq=4, Ta=4, V=5):
    return rng.integers(0, V, (N, Tq)), rng.integers(0, V, (N, Ta))


def check_param_gradients(loss, params, analytic, tol=1e-6):
    assert len(params) == len(analytic)
    for i, (p, g) in enumerate(zip(params, analytic)):
        assert relative_error(g, numerical_gradient(loss, p)) < tol, f"params[{i}] {p.shape}"


# ---------------------------------------------------------------- parameters


@pytest.mark.parametrize(
    "kind, decoder_shapes",
    [
        ("seq2seq", [(7, 3), (3, 16), (4, 16), (16,), (4, 7), (7,)]),
        ("peeky", [(7, 3), (4 + 3, 16), (4, 16), (16,), (8, 7), (7,)]),
        ("attention", [(7, 3), (3, 16), (4, 16), (16,), (8, 7), (7,)]),
    ],
)
def test_param_order_and_shapes_are_the_textbooks(kind, decoder_shapes):
    model = MODELS[kind](7, 3, 4)
    encoder_shapes = [(7, 3), (3, 16), (4, 16), (16,)]  # embed W, lstm Wx, Wh, b
    assert [p.shape for p in model.params] == encoder_shapes + decoder_shapes
    assert [g.shape for g in model.grads] == encoder_shapes + decoder_shapes
    layers = [model.encoder.embed, model.encoder.lstm, model.decoder.embed, model.decoder.lstm, model.decoder.affine]
    expected = [p for layer in layers for p in layer.params]
    expected_grads = [g for layer in layers for g in layer.grads]
    if kind == "peeky":  # the decoder LSTM sees only the embedding rows of Wx (and writes those of dWx)
        H = 4
        for arrays, full in ((expected, model.params[5]), (expected_grads, model.grads[5])):
            assert arrays[5].base is full and np.shares_memory(arrays[5], full[H:]) and arrays[5].shape == (3, 16)
            arrays[5] = full
    assert all(a is b for a, b in zip(model.params, expected))  # the layers' own arrays, no copies
    assert all(a is b for a, b in zip(model.grads, expected_grads))


@pytest.mark.parametrize("kind", MODELS)
def test_init_is_seeded_float32_and_textbook_scaled(kind):
    a, b, c = MODELS[kind](20, 16, 64, seed=3), MODELS[kind](20, 16, 64, seed=3), MODELS[kind](20, 16, 64, seed=4)
    assert all(p.dtype == np.float32 for p in a.params)
    assert all(np.array_equal(p, q) for p, q in zip(a.params, b.params))
    assert not np.array_equal(a.params[0], c.params[0])
    assert not np.array_equal(a.params[0], a.params[4])  # encoder and decoder draw different numbers
    # the textbook's scales: embeddings randn / 100, weights randn / sqrt(fan_in), biases zero
    for p in a.params:
        if p.ndim == 1:
            assert not p.any()
    assert 0.005 < a.params[0].std() < 0.02
    for i in (1, 2, 5, 6, 8):
        assert abs(a.params[i].std() * np.sqrt(a.params[i].shape[0]) - 1) < 0.1


# ---------------------------------------------------------------- the textbook's models, same parameters


def book_scores(tl, kind, params, xs, dec_in):
    """The textbook's ch07/ch08 model forward (seq2seq.py, peeky_seq2seq.py, attention_seq2seq.py),
    composed from its common/time_layers; attention written out (its layer is not in common/)."""
    eW, eWx, eWh, eb, dW, dWx, dWh, db, aW, ab = params
    hs = tl.TimeLSTM(eWx, eWh, eb).forward(tl.TimeEmbedding(eW).forward(xs))
    h = hs[:, -1]
    lstm = tl.TimeLSTM(dWx, dWh, db, stateful=True)
    lstm.set_state(h)
    emb = tl.TimeEmbedding(dW).forward(dec_in)
    if kind == "seq2seq":
        out = lstm.forward(emb)
    elif kind == "peeky":
        peek = np.repeat(h, dec_in.shape[1], axis=0).reshape(len(h), dec_in.shape[1], -1)
        out = np.concatenate((peek, lstm.forward(np.concatenate((peek, emb), axis=2))), axis=2)
    else:
        dec_hs = lstm.forward(emb)
        s = np.einsum("nth,nsh->nts", dec_hs, hs)
        a = np.exp(s - s.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        out = np.concatenate((np.einsum("nts,nsh->nth", a, hs), dec_hs), axis=2)
    return tl.TimeAffine(aW, ab).forward(out)


def book_generate(tl, kind, params, x, start_id, length):
    """The textbook's generate: one example, feeding back the argmax, one step at a time
    (re-running the teacher-forced forward on the growing prefix is the same computation)."""
    out = [start_id]
    for _ in range(length):
        scores = book_scores(tl, kind, params, x, np.array([out]))
        out.append(int(np.argmax(scores[0, -1])))
    return out[1:]


@pytest.mark.parametrize("kind", MODELS)
def test_same_loss_and_answers_as_the_textbook_with_its_parameters(dlfs2, rng, kind):
    tl = dlfs2.time_layers
    model = make_model(kind, V=6, D=3, H=5, dtype=np.float32, scale=0.8)
    xs, ts = batch(rng, N=4, Tq=5, Ta=4, V=6)
    params = [p.copy() for p in model.params]  # as a textbook pickle would hand them over

    book_loss = tl.TimeSoftmaxWithLoss().forward(book_scores(tl, kind, params, xs, ts[:, :-1]), ts[:, 1:])
    assert model.forward(xs, ts) == pytest.approx(float(book_loss), rel=1e-5)

    ours = model.generate(xs, start_id=0, length=4)
    for n in range(len(xs)):
        assert ours[n].tolist() == book_generate(tl, kind, params, xs[n : n + 1], 0, 4)


# ---------------------------------------------------------------- gradient checks (float64)


@pytest.mark.parametrize("cls", [Encoder, AttentionEncoder])
def test_encoder_gradients(rng, cls):
    enc = cls(5, 3, 4, seed=1, dtype=np.float64)
    xs = rng.integers(0, 5, (2, 4))
    R = rng.standard_normal((2, 4, 4) if cls is AttentionEncoder else (2, 4))

    def loss():
        return float(np.sum(enc.forward(xs) * R))

    loss()
    assert enc.backward(R) is None
    check_param_gradients(loss, enc.params, [g.copy() for g in enc.grads])


@pytest.mark.parametrize("cls", [Decoder, PeekyDecoder, AttentionDecoder])
def test_decoder_gradients(rng, cls):
    dec = cls(5, 3, 4, seed=1, dtype=np.float64)
    for p in dec.params:  # larger than the init, so every path carries a visible gradient
        p[...] = rng.standard_normal(p.shape) * 0.5
    xs = rng.integers(0, 5, (2, 3))
    state = rng.standard_normal((2, 4, 4) if cls is AttentionDecoder else (2, 4))
    R = rng.standard_normal((2, 3, 5))

    def loss():
        return float(np.sum(dec.forward(xs, state) * R))

    loss()
    dstate = dec.backward(R)
    analytic = [g.copy() for g in dec.grads]
    check_param_gradients(loss, dec.params, analytic)
    assert relative_error(dstate, numerical_gradient(loss, state)) < 1e-6


@pytest.mark.parametrize("kind", MODELS)
def test_model_gradients_every_parameter(rng, kind):
    model = make_model(kind, scale=0.5)
    xs, ts = batch(rng)

    def loss():
        return model.forward(xs, ts)

    loss()
    model.backward()
    check_param_gradients(loss, model.params, [g.copy() for g in model.grads])


def test_backward_dout_scales_gradients(rng):
    model = make_model("attention", scale=0.5)
    xs, ts = batch(rng)
    model.forward(xs, ts)
    model.backward()
    ones = [g.copy() for g in model.grads]
    model.forward(xs, ts)
    model.backward(2.5)
    for g, g1 in zip(model.grads, ones):
        np.testing.assert_allclose(g, 2.5 * g1, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_preserved(rng, kind, dtype):
    model = make_model(kind, dtype=dtype)
    xs, ts = batch(rng)
    model.forward(xs, ts)
    model.backward()
    assert all(g.dtype == dtype for g in model.grads)
    assert model.decoder.step(np.zeros(3, dtype=np.int64), model.decoder.start(model.encoder.forward(xs)))[
        0
    ].dtype == np.dtype(dtype)


# ---------------------------------------------------------------- decoding


@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_width_one_is_greedy_exactly(rng, kind, dtype, seed):
    model = make_model(kind, V=7, seed=seed, dtype=dtype, scale=0.7)
    xs = rng.integers(0, 7, (6, 5))
    greedy = model.generate(xs, start_id=1, length=6)
    ids, logprob = model.beam_search(xs, start_id=1, length=6, beam_width=1)
    np.testing.assert_array_equal(ids, greedy)
    assert ids.dtype == np.int64 and ids.shape == (6, 6) and logprob.shape == (6,)
    rtol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(logprob, model.sequence_logprob(xs, 1, greedy), rtol=rtol)


@pytest.mark.parametrize("kind", MODELS)
def test_ties_are_broken_like_argmax(rng, kind):
    model = make_model(kind, V=6, dtype=np.float32)
    model.decoder.affine.params[0][...] = 0  # every token scores exactly the same
    model.decoder.affine.params[1][...] = [0, 1, 1, 0, 1, 0]  # three-way tie for the best
    xs = rng.integers(0, 6, (2, 3))
    np.testing.assert_array_equal(model.generate(xs, 0, 3), np.ones((2, 3)))
    np.testing.assert_array_equal(model.beam_search(xs, 0, 3, beam_width=1)[0], np.ones((2, 3)))
    np.testing.assert_array_equal(model.beam_search(xs, 0, 3, beam_width=4)[0], np.ones((2, 3)))


@pytest.mark.parametrize("kind", MODELS)
def test_greedy_agrees_with_teacher_forcing_and_per_example_runs(rng, kind):
    model = make_model(kind, V=6, scale=0.8)
    xs = rng.integers(0, 6, (5, 4))
    out = model.generate(xs, start_id=2, length=5)
    # feeding the answer back in teacher-forced mode gives the same argmax at every step
    scores = decode.teacher_forced_scores(model, xs, 2, out)
    np.testing.assert_array_equal(scores.argmax(axis=-1), out)
    for n in range(5):  # a batch decodes like each example alone
        np.testing.assert_array_equal(model.generate(xs[n : n + 1], 2, 5)[0], out[n])
    assert not np.allclose(scores[0], scores[1])  # the scores depend on the question


@pytest.mark.parametrize("kind", MODELS)
def test_wide_beam_is_exact_and_not_worse_than_greedy(rng, kind):
    V, L = 4, 3
    model = make_model(kind, V=V, scale=1.0)
    xs = rng.integers(0, V, (4, 3))
    ids, logprob = model.beam_search(xs, start_id=0, length=L, beam_width=V ** (L - 1))
    everything = np.array(list(itertools.product(range(V), repeat=L)))
    greedy = model.generate(xs, 0, L)
    greedy_logprob = model.sequence_logprob(xs, 0, greedy)
    for n in range(len(xs)):
        all_logprobs = model.sequence_logprob(np.repeat(xs[n : n + 1], len(everything), axis=0), 0, everything)
        best = int(np.argmax(all_logprobs))
        assert ids[n].tolist() == everything[best].tolist()
        assert logprob[n] == pytest.approx(all_logprobs[best], abs=1e-10)
        assert logprob[n] >= greedy_logprob[n] - 1e-10
    np.testing.assert_allclose(logprob, model.sequence_logprob(xs, 0, ids), rtol=1e-10)


def reference_beam(model, x, start_id, length, K):
    """Beam search written plainly: one example, prefixes in a list, each scored from scratch."""
    V = model.decoder.V
    beams = [((), 0.0)]
    for _ in range(length):
        candidates = []
        for prefix, _ in beams:
            for token in range(V):
                seq = np.array([prefix + (token,)])
                candidates.append((prefix + (token,), float(model.sequence_logprob(x, start_id, seq)[0])))
        beams = sorted(candidates, key=lambda c: -c[1])[:K]
    return beams[0]


@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize("K", [2, 3, 7])
def test_beam_matches_a_plain_reference(rng, kind, K):
    model = make_model(kind, V=5, scale=1.0, seed=K)
    xs = rng.integers(0, 5, (3, 4))
    ids, logprob = model.beam_search(xs, start_id=0, length=4, beam_width=K)
    for n in range(len(xs)):
        ref_ids, ref_logprob = reference_beam(model, xs[n : n + 1], 0, 4, K)
        assert ids[n].tolist() == list(ref_ids)
        assert logprob[n] == pytest.approx(ref_logprob, abs=1e-10)


def test_zero_length_and_bad_arguments(rng):
    model = make_model("seq2seq", dtype=np.float32)
    xs = rng.integers(0, 5, (2, 3))
    assert model.generate(xs, 0, 0).shape == (2, 0)
    ids, logprob = model.beam_search(xs, 0, 0, beam_width=3)
    assert ids.shape == (2, 0) and np.all(logprob == 0)
    with pytest.raises(ValueError, match=r"start_id must be a token id in \[0, 5\), got 5"):
        model.generate(xs, 5, 3)
    with pytest.raises(ValueError, match="length must be an integer >= 0, got -1"):
        model.generate(xs, 0, -1)
    with pytest.raises(ValueError, match="beam_width must be an integer >= 1, got 0"):
        model.beam_search(xs, 0, 3, beam_width=0)
    with pytest.raises(ValueError, match=r"ys must be an integer array of shape \(N, L\)"):
        model.sequence_logprob(xs, 0, np.zeros((2, 3)))


# ---------------------------------------------------------------- attention weights


def test_attention_map_is_what_generation_looked_at(rng):
    model = make_model("attention", V=6, scale=0.8)
    xs = rng.integers(0, 6, (3, 5))
    out = model.generate(xs, 0, 4)
    weights = model.attention_map(xs, 0, out)
    assert weights.shape == (3, 4, 5)
    np.testing.assert_allclose(weights.sum(axis=-1), 1.0, rtol=1e-12)
    # step by step, as generate runs, recording the attention layer after each step
    state = model.decoder.start(model.encoder.forward(xs))
    ids = np.zeros(3, dtype=np.int64)
    for t in range(4):
        scores, state = model.decoder.step(ids, state)
        ids = scores.argmax(axis=1)
        np.testing.assert_allclose(weights[:, t], model.decoder.attention.attention_weights[:, 0], rtol=1e-10)
    # forward keeps them too, per example: (N, Ta - 1, Tq)
    ts = np.concatenate((np.zeros((3, 1), dtype=np.int64), out), axis=1)
    model.forward(xs, ts)
    np.testing.assert_allclose(model.decoder.attention.attention_weights, weights, rtol=1e-10)


def test_plot_attention_writes_a_png(tmp_path):
    import matplotlib.image

    weights = np.eye(4, 6)  # output i looked at input i
    path = plot_attention(weights, list("abcdef"), list("wxyz"), tmp_path / "att.png", title="diag")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50
    gray = image[..., :3].mean(axis=-1)
    assert gray.min() < 0.1 and gray.max() > 0.9  # black cells and white (weight 1) cells
    with pytest.raises(ValueError, match=r"weights must have shape .* = \(4, 5\), got \(4, 6\)"):
        plot_attention(weights, list("abcde"), list("wxyz"), tmp_path / "bad.png")


# ---------------------------------------------------------------- bad input


def test_bad_input(rng):
    model = make_model("attention", dtype=np.float32)
    xs, ts = batch(rng)
    with pytest.raises(ValueError, match=r"ts must have shape \(N, T\) with T >= 2"):
        model.forward(xs, ts[:, :1])
    with pytest.raises(ValueError, match=r"xs must have shape \(3, any\) like ts"):
        model.forward(xs[:2], ts)
    with pytest.raises(ValueError, match="ids must be integers"):
        model.forward(xs.astype(np.float32), ts)
    with pytest.raises(IndexError, match="id 9 .* vocabulary size 5"):
        model.forward(np.full((3, 4), 9), ts)
    with pytest.raises(ValueError, match=r"Decoder: h must have shape \(3, 4\), got \(2, 4\)"):
        Decoder(5, 3, 4).forward(ts, np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"AttentionDecoder: enc_hs must be 3-D with shape \(3, any, 4\), got shape"):
        AttentionDecoder(5, 3, 4).forward(ts, np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError, match="hidden must be a positive integer, got 0"):
        Seq2seq(5, 3, 0)
    with pytest.raises(RuntimeError, match="backward called before forward"):
        Encoder(5, 3, 4).backward(np.zeros((3, 4), np.float32))


# ---------------------------------------------------------------- end to end


def toy_task(rng, n, length, symbols, reverse):
    """Questions: random symbols 1..symbols; answers: start symbol 0, then the question (reversed)."""
    x = rng.integers(1, symbols + 1, (n, length))
    y = x[:, ::-1] if reverse else x
    return x, np.concatenate((np.zeros((n, 1), dtype=x.dtype), y), axis=1)


@pytest.mark.parametrize("kind, reverse, length", [("seq2seq", False, 4), ("peeky", True, 4), ("attention", True, 5)])
def test_learns_a_toy_task_to_exact_match(kind, reverse, length):
    symbols = 5
    model = MODELS[kind](symbols + 1, 8, 32, seed=0)
    opt = Adam(0.01)
    rng = np.random.default_rng(0)
    x_test, t_test = toy_task(np.random.default_rng(1), 300, length, symbols, reverse)  # mostly unseen

    def accuracy(answers):
        return float(np.mean(np.all(answers == t_test[:, 1:], axis=1)))

    assert accuracy(model.generate(x_test, 0, length)) < 0.05
    for step in range(1, 1001):
        x, t = toy_task(rng, 64, length, symbols, reverse)
        model.forward(x, t)
        model.backward()
        opt.update(model.params, model.grads)
        if step % 50 == 0 and accuracy(model.generate(x_test, 0, length)) == 1.0:
            break
    assert accuracy(model.generate(x_test, 0, length)) == 1.0, f"not learned after {step} steps"
    ids, logprob = model.beam_search(x_test, 0, length, beam_width=3)
    assert accuracy(ids) == 1.0
    # not a theorem for a narrow beam, but on a trained model beam search should not lose to greedy;
    # the K-row beam and the 1-row greedy products round differently in float32 (by ~1e-7 per step
    # on OpenBLAS's Haswell kernels), so "not lose" is up to float32 rounding of the summed log-probs
    _, greedy_logprob = model.beam_search(x_test, 0, length, beam_width=1)
    assert model.params[0].dtype == np.float32
    np.testing.assert_array_less(greedy_logprob - 1e-5 * length, logprob)
