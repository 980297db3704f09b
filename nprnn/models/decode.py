"""Decoding for the encoder-decoder models: greedy, beam search, and scoring given answers.

A model has ``encoder.forward(xs)`` and a decoder with the step interface
``start(encoded) -> state`` and ``step(ids: (B,), state) -> (scores: (B, V), state)``,
``state`` being a tuple of arrays with the batch on axis 0 (so hypotheses are reordered by
indexing every array with the same rows). Answers have a fixed length, as in the textbook's
tasks (no end symbol), and all examples of a batch are decoded together.

Beam search keeps, per example, the ``beam_width`` most probable prefixes (sum of the log
softmax of each step, in float64). Ties are broken exactly as ``argmax`` breaks them, so
``beam_width=1`` returns the greedy answer bit for bit. It is exact when ``beam_width >=
V ** (length - 1)``; below that it is a heuristic, and can in principle end on a less probable
answer than greedy's (a prefix greedy would extend can fall out of the beam).
"""

import numpy as np

from nprnn._checks import positive_int


def _check_args(model, start_id, length, beam_width=1):
    V = model.decoder.V
    for name, value, low in (("start_id", start_id, 0), ("length", length, 0), ("beam_width", beam_width, 1)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if start_id >= V:
        raise ValueError(f"start_id must be a token id in [0, {V}), got {start_id}")


def log_softmax(scores):
    """``log softmax`` over the last axis in float64."""
    scores = np.asarray(scores, dtype=np.float64)
    shifted = scores - scores.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def greedy(model, xs, start_id, length):
    """The most probable token at every step: ``xs: (N, Tq) -> ids: (N, length)`` (int64)."""
    _check_args(model, start_id, length)
    state = model.decoder.start(model.encoder.forward(xs))
    N = state[0].shape[0]
    out = np.empty((N, length), dtype=np.int64)
    ids = np.full(N, start_id, dtype=np.int64)
    for t in range(length):
        scores, state = model.decoder.step(ids, state)
        ids = scores.argmax(axis=1)
        out[:, t] = ids
    return out


def beam_search(model, xs, start_id, length, beam_width=3):
    """Beam search: ``xs: (N, Tq) -> (ids: (N, length) int64, logprob: (N,) float64)``, the best
    answer found for each example and its log-probability."""
    _check_args(model, start_id, length, beam_width)
    state = model.decoder.start(model.encoder.forward(xs))
    N = state[0].shape[0]
    B = 1  # live hypotheses per example: min(beam_width, V ** t), the same for every example
    seqs = np.empty((N, 1, 0), dtype=np.int64)
    cum = np.zeros((N, 1))
    ids = np.full(N, start_id, dtype=np.int64)
    for _ in range(length):
        scores, state = model.decoder.step(ids, state)  # (N * B, V), rows grouped by example
        V = scores.shape[1]
        total = (cum[:, :, None] + log_softmax(scores).reshape(N, B, V)).reshape(N, B * V)
        # Rank candidates by total log-prob; on ties (also those made by rounding in the sum),
        # the better parent beam first, then the higher raw score, then the lower token id.
        # With one beam this is exactly argmax of the raw scores, i.e. greedy.
        beam_of = np.broadcast_to(np.repeat(np.arange(B), V), (N, B * V))
        token_of = np.broadcast_to(np.tile(np.arange(V), B), (N, B * V))
        order = np.lexsort((token_of, -scores.reshape(N, B * V), beam_of, -total), axis=-1)
        keep = order[:, : min(beam_width, B * V)]
        parents, tokens = keep // V, keep % V
        cum = np.take_along_axis(total, keep, axis=1)
        seqs = np.concatenate((np.take_along_axis(seqs, parents[:, :, None], axis=1), tokens[:, :, None]), axis=2)
        rows = (np.arange(N)[:, None] * B + parents).ravel()
        state = tuple(s[rows] for s in state)
        ids = tokens.ravel()
        B = keep.shape[1]
    return seqs[:, 0], cum[:, 0]


def teacher_forced_scores(model, xs, start_id, ys):
    """Decoder scores ``(N, L, V)`` for answers ``ys: (N, L)``, the decoder reading
    ``[start_id, ys[:, :-1]]`` (what it read while producing ``ys``)."""
    ys = np.asarray(ys)
    if ys.ndim != 2 or ys.shape[1] < 1 or not np.issubdtype(ys.dtype, np.integer):
        raise ValueError(f"ys must be an integer array of shape (N, L) with L >= 1, got {ys.dtype} {ys.shape}")
    _check_args(model, start_id, ys.shape[1])
    inputs = np.concatenate((np.full((ys.shape[0], 1), start_id, dtype=ys.dtype), ys[:, :-1]), axis=1)
    return model.decoder.forward(inputs, model.encoder.forward(xs))


def sequence_logprob(model, xs, start_id, ys):
    """Log-probability ``(N,)`` (float64) the model gives to the answers ``ys: (N, L)``."""
    logp = log_softmax(teacher_forced_scores(model, xs, start_id, ys))
    return np.take_along_axis(logp, np.asarray(ys)[:, :, None], axis=2)[:, :, 0].sum(axis=1)


# ---------------------------------------------------------------- answering questions


def predict(model, x, start_id, length, beam=1, batch_size=1000):
    """Answers ``(N, length)`` for questions ``x: (N, Tq)``: greedy (``beam=1``) or beam search,
    decoded ``batch_size`` questions at a time."""
    positive_int("beam (1 is greedy decoding)", beam)
    out = np.empty((len(x), length), dtype=np.int64)
    for lo in range(0, len(x), batch_size):
        chunk = x[lo : lo + batch_size]
        if beam == 1:
            out[lo : lo + batch_size] = greedy(model, chunk, start_id, length)
        else:
            out[lo : lo + batch_size] = beam_search(model, chunk, start_id, length, beam)[0]
    return out


def count_exact(model, x, t, beam=1, batch_size=1000):
    """How many questions ``x: (N, Tq)`` get their whole answer ``t[:, 1:]`` right (an int;
    ``t[:, 0]`` is the start symbol), as the textbook's ``eval_seq2seq`` counts them."""
    if len(x) == 0:
        return 0
    guess = predict(model, x, int(t[0, 0]), t.shape[1] - 1, beam, batch_size)
    return int(np.all(guess == t[:, 1:], axis=1).sum())


def exact_match(model, x, t, beam=1, batch_size=1000):
    """Fraction of questions ``x: (N, Tq)`` whose whole answer ``t[:, 1:]`` is produced."""
    if len(x) == 0:
        raise ValueError("exact_match: no examples to evaluate")
    return count_exact(model, x, t, beam, batch_size) / len(x)


def translate(model, vocab, questions, beam=1):
    """Answer strings (padding stripped) for question strings, with a checkpoint's ``vocab``."""
    x = np.stack([vocab.encode_question(q) for q in questions])
    ids = predict(model, x, vocab.start_id, vocab.answer_width - 1, beam)
    return [vocab.decode(row).rstrip() for row in ids]


def attention_weights(model, vocab, question):
    """Where an attention model looked while answering ``question`` (greedy):
    ``(weights (answer length, question width), question characters, answer characters)``, the
    question in reading order (the columns are flipped back for a model trained on reversed
    questions), without the padding the data file adds after it."""
    if not hasattr(model, "attention_map"):
        raise ValueError(f"an attention map needs an attention model; this one is a {type(model).__name__}")
    x = vocab.encode_question(question)[None]
    answer = predict(model, x, vocab.start_id, vocab.answer_width - 1)
    weights = model.attention_map(x, vocab.start_id, answer)[0]
    if vocab.reverse:
        weights = weights[:, ::-1]
    shown = max(len(question.rstrip()), 1)  # the padding columns carry no information: left out
    return weights[:, :shown], list(question[:shown]), list(vocab.decode(answer[0]))
