"""Encoder-decoder models (the textbook's chapters 7 and 8): ``Seq2seq``, ``PeekySeq2seq``,
``AttentionSeq2seq``.

    question ids (N, Tq) -> Encoder (embedding + LSTM) -> h (N, H)  [all states hs (N, Tq, H) for attention]
    answer ids   (N, Ta):  decoder reads t[:, :-1] (starting with the start symbol '_'),
                           predicts t[:, 1:] -> softmax cross-entropy

- ``Decoder``: an LSTM started from the encoder's final state ``h`` (cell state zero).
- ``PeekyDecoder``: also feeds ``h`` to every step: LSTM input ``concat(h, embed)``, output
  layer input ``concat(h, lstm_out)``.
- ``AttentionDecoder``: LSTM started from the last encoder state; at each step the context
  ``c`` (dot-product attention over all encoder states) goes with the LSTM output into the
  output layer: ``concat(c, lstm_out)``.

Parameter lists are in the textbook's order, with the textbook's shapes (encoder: embed W,
lstm Wx, Wh, b; decoder: embed W, lstm Wx, Wh, b, affine W, b; gates f, g, i, o), and the
concatenation orders are the book's, so a parameter list saved by the book's code
(``BaseModel.save_params``) loads unchanged with ``param[...] = saved[i]``.

Decoding (``generate``, ``beam_search``) goes through each decoder's step interface:
``start(encoder_output) -> state`` and ``step(ids: (B,), state) -> (scores: (B, V), state)``,
where ``state`` is a tuple of arrays with the batch on axis 0 (see ``nprnn.models.decode``).
"""

import numpy as np

from nprnn._checks import check_input, positive_int
from nprnn.layers.attention import TimeAttention
from nprnn.layers.basic import TimeAffine, TimeEmbedding, TimeSoftmaxWithLoss
from nprnn.layers.lstm import TimeLSTM, init_lstm_params
from nprnn.models import decode


def _check_sizes(name, **sizes):
    for key, value in sizes.items():
        positive_int(key, value, name)


def _normal(rng, shape, scale, dtype):
    return (rng.standard_normal(shape) * scale).astype(dtype)


class Encoder:
    """Reads the question: ``forward(xs: (N, T) ids) -> h: (N, H)``, the LSTM's final hidden state.

    ``backward(dh: (N, H)) -> None`` (ids get no gradient).
    params: ``[embed W (V, D), lstm Wx (D, 4H), Wh (H, 4H), b (4H,)]``.
    ``seed`` is an int or a ``np.random.Generator`` (a model passes one generator to both halves).
    """

    def __init__(self, vocab_size, embed, hidden, seed=0, dtype=np.float32):
        _check_sizes(type(self).__name__, vocab_size=vocab_size, embed=embed, hidden=hidden)
        rng = np.random.default_rng(seed)
        V, D, H = vocab_size, embed, hidden
        self.V, self.H, self.dtype = V, H, np.dtype(dtype)
        self.embed = TimeEmbedding(_normal(rng, (V, D), 0.01, dtype))
        self.lstm = TimeLSTM(*init_lstm_params(D, H, seed=rng, dtype=dtype))
        self.params = self.embed.params + self.lstm.params
        self.grads = self.embed.grads + self.lstm.grads
        self._hs_shape = None

    def forward(self, xs):
        hs = self.lstm.forward(self.embed.forward(xs))
        self._hs_shape = hs.shape
        return self.lstm.h

    def backward(self, dh):
        if self._hs_shape is None:
            raise RuntimeError(f"{type(self).__name__}: backward called before forward")
        N, T, H = self._hs_shape
        check_input(type(self).__name__, dh, (N, H), self.dtype, "dh")
        # Only the final state is used, so the per-step outputs get no gradient.
        dxs = self.lstm.backward(np.zeros((N, T, H), dtype=self.dtype), dh_final=dh)
        self.embed.backward(dxs)


class AttentionEncoder(Encoder):
    """An ``Encoder`` that returns every state: ``forward(xs: (N, T)) -> hs: (N, T, H)``;
    ``backward(dhs: (N, T, H)) -> None``. Same parameters as ``Encoder``."""

    def forward(self, xs):
        hs = self.lstm.forward(self.embed.forward(xs))
        self._hs_shape = hs.shape
        return hs

    def backward(self, dhs):
        if self._hs_shape is None:
            raise RuntimeError("AttentionEncoder: backward called before forward")
        check_input("AttentionEncoder", dhs, self._hs_shape, self.dtype, "dhs")
        self.embed.backward(self.lstm.backward(dhs))


class Decoder:
    """Writes the answer from the encoder's state, with teacher forcing.

    ``forward(xs: (N, T) ids, h: (N, H)) -> scores: (N, T, V)``: the LSTM starts from ``h``
    (and a zero cell state) and reads ``xs`` (the answer shifted right: start symbol first).
    ``backward(dscores: (N, T, V)) -> dh: (N, H)``.
    params: ``[embed W (V, D), lstm Wx (D, 4H), Wh (H, 4H), b (4H,), affine W (H, V), b (V,)]``.
    """

    def __init__(self, vocab_size, embed, hidden, seed=0, dtype=np.float32):
        _check_sizes(type(self).__name__, vocab_size=vocab_size, embed=embed, hidden=hidden)
        rng = np.random.default_rng(seed)
        V, D, H = vocab_size, embed, hidden
        self.V, self.H, self.dtype = V, H, np.dtype(dtype)
        self.embed = TimeEmbedding(_normal(rng, (V, D), 0.01, dtype))
        self.lstm = TimeLSTM(*init_lstm_params(self._lstm_input_size(D, H), H, seed=rng, dtype=dtype))
        self.affine = TimeAffine(*self._affine_init(rng, H, V, dtype))
        self.params, self.grads = [], []
        for layer in (self.embed, self.lstm, self.affine):
            self.params += layer.params
            self.grads += layer.grads

    def _lstm_input_size(self, D, H):
        return D

    def _affine_init(self, rng, H, V, dtype):
        return [_normal(rng, (H, V), 1 / np.sqrt(H), dtype), np.zeros(V, dtype=dtype)]

    def _check_h(self, h, N):
        return check_input(type(self).__name__, h, (N, self.H), self.dtype, "h")

    def forward(self, xs, h):
        emb = self.embed.forward(xs)
        self._check_h(h, emb.shape[0])
        return self.affine.forward(self.lstm.forward(emb, h0=h))

    def backward(self, dscores):
        dout = self.lstm.backward(self.affine.backward(dscores))
        self.embed.backward(dout)
        return self.lstm.dh

    def start(self, h):
        """Decoding state from the encoder's output: ``(h, c)``."""
        self._check_h(h, h.shape[0] if getattr(h, "ndim", 0) == 2 else None)
        return (h, np.zeros_like(h))

    def step(self, ids, state):
        """One decoding step: ``ids: (B,)`` the previous outputs -> ``scores: (B, V)``, next state."""
        h, c = state
        out = self.lstm.forward(self.embed.forward(ids[:, None]), h0=h, c0=c)
        return self.affine.forward(out)[:, 0], (self.lstm.h, self.lstm.c)


class PeekyDecoder(Decoder):
    """A ``Decoder`` that shows the encoder state ``h`` to every step ("peeking").

    LSTM input ``concat(h, embed(x))`` (so ``Wx: (H + D, 4H)``, the ``h`` rows first), output layer
    input ``concat(h, lstm_out)`` (``affine W: (2H, V)``), as the textbook's ``PeekyDecoder``.
    ``forward(xs: (N, T), h: (N, H)) -> scores (N, T, V)``; ``backward(dscores) -> dh: (N, H)``,
    which sums the gradient through the initial state and through every peek.

    The peek is the same at every step, so its share of the input projection, ``h @ Wx[:H]``, is
    computed once and given to the LSTM as a per-row ``step_bias`` (the textbook multiplies it at
    every step): the LSTM itself only sees ``embed(x)`` and ``Wx[H:]``, views into the one ``Wx``
    that ``params`` holds, as its gradient rows are views into the one ``dWx`` of ``grads``.
    """

    def __init__(self, vocab_size, embed, hidden, seed=0, dtype=np.float32):
        super().__init__(vocab_size, embed, hidden, seed, dtype)
        H = self.H
        (Wx, Wh, b), (dWx, dWh, db) = self.lstm.params, self.lstm.grads
        self.lstm = TimeLSTM(Wx[H:], Wh, b)
        self.lstm.grads = [dWx[H:], dWh, db]  # its backward writes the embedding rows of dWx in place
        self._Wx_peek, self._dWx_peek = Wx[:H], dWx[:H]
        self._h = None

    def _lstm_input_size(self, D, H):
        return H + D

    def _affine_init(self, rng, H, V, dtype):
        return [_normal(rng, (2 * H, V), 1 / np.sqrt(2 * H), dtype), np.zeros(V, dtype=dtype)]

    def forward(self, xs, h):
        emb = self.embed.forward(xs)
        N, T, _ = emb.shape
        self._check_h(h, N)
        self._h = h
        out = self.lstm.forward(emb, h0=h, step_bias=h @ self._Wx_peek)
        peek = np.broadcast_to(h[:, None, :], (N, T, self.H))
        return self.affine.forward(np.concatenate((peek, out), axis=2))

    def backward(self, dscores):
        H = self.H
        dout = self.affine.backward(dscores)
        self.embed.backward(self.lstm.backward(dout[:, :, H:]))
        dpeek_proj = self.lstm.dstep_bias  # (N, 4H): the gradient of h @ Wx[:H], summed over the steps
        self._dWx_peek[...] = self._h.T @ dpeek_proj
        return self.lstm.dh + dout[:, :, :H].sum(axis=1) + dpeek_proj @ self._Wx_peek.T

    def start(self, h):
        """Decoding state: ``(h, c, peek, peek @ Wx[:H])``; ``peek`` is the encoder state shown to every step."""
        h, c = super().start(h)
        return (h, c, h, h @ self._Wx_peek)

    def step(self, ids, state):
        h, c, peek, peek_proj = state
        out = self.lstm.forward(self.embed.forward(ids[:, None]), h0=h, c0=c, step_bias=peek_proj)
        scores = self.affine.forward(np.concatenate((peek[:, None, :], out), axis=2))[:, 0]
        return scores, (self.lstm.h, self.lstm.c, peek, peek_proj)


class AttentionDecoder(Decoder):
    """A ``Decoder`` that attends over all encoder states.

    ``forward(xs: (N, T), enc_hs: (N, Te, H)) -> scores (N, T, V)``: the LSTM starts from
    ``enc_hs[:, -1]``; each output state ``h_t`` gets a context ``c_t`` (``TimeAttention``), and
    the output layer reads ``concat(c_t, h_t)`` (``affine W: (2H, V)``), as the textbook.
    ``backward(dscores) -> denc_hs: (N, Te, H)``. The last weights are in
    ``.attention.attention_weights: (N, T, Te)``.
    """

    def __init__(self, vocab_size, embed, hidden, seed=0, dtype=np.float32):
        super().__init__(vocab_size, embed, hidden, seed=seed, dtype=dtype)
        self.attention = TimeAttention()  # no parameters: params stay embed, lstm, affine

    def _affine_init(self, rng, H, V, dtype):
        return [_normal(rng, (2 * H, V), 1 / np.sqrt(2 * H), dtype), np.zeros(V, dtype=dtype)]

    def _check_enc_hs(self, enc_hs, N):
        return check_input("AttentionDecoder", enc_hs, (N, None, self.H), self.dtype, "enc_hs")

    def forward(self, xs, enc_hs):
        emb = self.embed.forward(xs)
        self._check_enc_hs(enc_hs, emb.shape[0])
        dec_hs = self.lstm.forward(emb, h0=enc_hs[:, -1])
        cs = self.attention.forward(enc_hs, dec_hs)
        return self.affine.forward(np.concatenate((cs, dec_hs), axis=2))

    def backward(self, dscores):
        H = self.H
        dout = self.affine.backward(dscores)
        denc_hs, ddec_hs = self.attention.backward(dout[:, :, :H])
        ddec_hs += dout[:, :, H:]
        self.embed.backward(self.lstm.backward(ddec_hs))
        denc_hs[:, -1] += self.lstm.dh
        return denc_hs

    def start(self, enc_hs):
        """Decoding state: ``(h, c, enc_hs)``."""
        self._check_enc_hs(enc_hs, enc_hs.shape[0] if getattr(enc_hs, "ndim", 0) == 3 else None)
        h = np.ascontiguousarray(enc_hs[:, -1])
        return (h, np.zeros_like(h), enc_hs)

    def step(self, ids, state):
        h, c, enc_hs = state
        dec_h = self.lstm.forward(self.embed.forward(ids[:, None]), h0=h, c0=c)
        cs = self.attention.forward(enc_hs, dec_h)
        scores = self.affine.forward(np.concatenate((cs, dec_h), axis=2))[:, 0]
        return scores, (self.lstm.h, self.lstm.c, enc_hs)


class Seq2seq:
    """LSTM encoder -> LSTM decoder started from the encoder's final state (textbook ch. 7).

    ``forward(xs: (N, Tq) ids, ts: (N, Ta) ids) -> loss``: the decoder reads ``ts[:, :-1]``
    and is scored on ``ts[:, 1:]`` (``ts[:, 0]`` is the start symbol). ``backward(dout=1.0)``
    fills ``grads``. ``params`` = encoder params + decoder params (the textbook's order).

    ``generate(xs, start_id, length) -> (N, length)`` greedy answers;
    ``beam_search(xs, start_id, length, beam_width)`` -> ``(ids (N, length), logprob (N,))``;
    ``sequence_logprob(xs, start_id, ys) -> (N,)`` the log-probability of given answers.
    """

    encoder_class = Encoder
    decoder_class = Decoder

    def __init__(self, vocab_size, embed=16, hidden=128, seed=0, dtype=np.float32):
        rng = np.random.default_rng(seed)
        self.vocab_size, self.wordvec_size, self.hidden_size = vocab_size, embed, hidden  # the textbook's names
        self.dtype = np.dtype(dtype)
        self.encoder = self.encoder_class(vocab_size, embed, hidden, seed=rng, dtype=dtype)
        self.decoder = self.decoder_class(vocab_size, embed, hidden, seed=rng, dtype=dtype)
        self.softmax = TimeSoftmaxWithLoss()
        self.params = self.encoder.params + self.decoder.params
        self.grads = self.encoder.grads + self.decoder.grads

    @property
    def config(self):
        """What rebuilds the model: ``{"kind", "vocab_size", "embed", "hidden"}`` (as stored in checkpoints)."""
        return {"kind": model_kind(self), "vocab_size": self.vocab_size, "embed": self.wordvec_size,
                "hidden": self.hidden_size}  # fmt: skip

    def forward(self, xs, ts):
        name = type(self).__name__
        xs, ts = np.asarray(xs), np.asarray(ts)
        if ts.ndim != 2 or ts.shape[1] < 2:
            raise ValueError(f"{name}: ts must have shape (N, T) with T >= 2 (start symbol + answer), got {ts.shape}")
        if xs.ndim != 2 or xs.shape[0] != ts.shape[0]:
            raise ValueError(f"{name}: xs must have shape ({ts.shape[0]}, any) like ts {ts.shape}, got {xs.shape}")
        encoded = self.encoder.forward(xs)
        scores = self.decoder.forward(ts[:, :-1], encoded)
        return self.softmax.forward(scores, ts[:, 1:])

    def backward(self, dout=1.0):
        self.encoder.backward(self.decoder.backward(self.softmax.backward(dout)))

    def generate(self, xs, start_id, length):
        return decode.greedy(self, xs, start_id, length)

    def beam_search(self, xs, start_id, length, beam_width=3):
        return decode.beam_search(self, xs, start_id, length, beam_width)

    def sequence_logprob(self, xs, start_id, ys):
        return decode.sequence_logprob(self, xs, start_id, ys)


class PeekySeq2seq(Seq2seq):
    """``Seq2seq`` with a ``PeekyDecoder`` (textbook ch. 7)."""

    decoder_class = PeekyDecoder


class AttentionSeq2seq(Seq2seq):
    """``AttentionEncoder`` -> ``AttentionDecoder`` (textbook ch. 8).

    After ``forward`` the weights are in ``decoder.attention.attention_weights: (N, Ta - 1, Tq)``;
    ``attention_map(xs, start_id, ys)`` gives them for any answers, e.g. generated ones.
    """

    encoder_class = AttentionEncoder
    decoder_class = AttentionDecoder

    def attention_map(self, xs, start_id, ys):
        """Attention weights ``(N, L, Tq)`` while producing answers ``ys: (N, L)``: row ``t`` is where
        the decoder looked to emit ``ys[:, t]`` (the same as during ``generate`` for its output)."""
        decode.teacher_forced_scores(self, xs, start_id, ys)
        return self.decoder.attention.attention_weights.copy()


MODELS = {"seq2seq": Seq2seq, "peeky": PeekySeq2seq, "attention": AttentionSeq2seq}


def model_kind(model):
    """``"seq2seq"``, ``"peeky"`` or ``"attention"``."""
    for kind, cls in MODELS.items():
        if type(model) is cls:
            return kind
    raise ValueError(f"not an nprnn seq2seq model: {type(model).__name__}")


def build_model(kind, vocab_size, embed=16, hidden=128, seed=0, dtype=np.float32):
    """A new ``MODELS[kind]`` model; ``kind`` is ``"seq2seq"``, ``"peeky"`` or ``"attention"``."""
    if kind not in MODELS:
        raise ValueError(f"model must be one of {', '.join(MODELS)}, got {kind!r}")
    return MODELS[kind](vocab_size, embed, hidden, seed=seed, dtype=dtype)


def param_shapes(kind, vocab_size, embed, hidden):
    """The shapes of ``build_model(kind, vocab_size, embed, hidden).params``, without allocating them."""
    V, D, H = vocab_size, embed, hidden
    encoder = [(V, D), (D, 4 * H), (H, 4 * H), (4 * H,)]
    lstm_in, affine_in = (H + D, 2 * H) if kind == "peeky" else (D, 2 * H if kind == "attention" else H)
    return encoder + [(V, D), (lstm_in, 4 * H), (H, 4 * H), (4 * H,), (affine_in, V), (V,)]


def plot_attention(weights, input_labels, output_labels, path, title=None):
    """Save one example's attention map ``weights: (len(output_labels), len(input_labels))`` as a
    PNG heatmap (rows: output characters, columns: input characters; white = 1, black = 0, as
    the textbook's figure). For a model trained on reversed questions, pass ``weights[:, ::-1]``
    and the question in reading order. Uses matplotlib's Agg canvas (no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    weights = np.asarray(weights, dtype=np.float64)
    want = (len(output_labels), len(input_labels))
    if weights.shape != want:
        raise ValueError(
            f"plot_attention: weights must have shape (len(output_labels), len(input_labels)) = {want}, "
            f"got {weights.shape}"
        )
    rows, cols = want
    fig = Figure(figsize=(1.5 + 0.3 * cols, 1.2 + 0.3 * rows))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(weights, cmap="Greys_r", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(cols), labels=list(input_labels))
    ax.set_yticks(range(rows), labels=list(output_labels))
    ax.set_xlabel("input")
    ax.set_ylabel("output")
    if title:
        ax.set_title(title)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    return path
