"""The textbook's chapter models (ch05 SimpleRnnlm, ch06 Rnnlm / BetterRnnlm, ch07 Seq2seq / PeekySeq2seq,
ch08 AttentionSeq2seq), reconstructed from the book's design, built on whichever ``common`` package is given:
``models(nprnn.dlfs2)`` or ``models(common)``. Only names the book's model files import are used; weights
are drawn from the global ``np.random`` as the book draws them, so ``np.random.seed(s)`` before building
gives both packages the same initial weights. Also the book's data loading for the PTB and seq2seq files.

Used by tests/dlfs2/test_chapters.py and benchmarks/bench_book.py.
"""

import importlib
from types import SimpleNamespace

import numpy as np


def book_attention(layers):
    """ch08/attention_layer.py's TimeAttention as the book writes it (one Attention per decoder step), on
    ``layers.Softmax``; the reference ``common`` does not have it."""

    class TimeAttention:
        def __init__(self):
            self.params, self.grads = [], []
            self.attention_weights = None

        def forward(self, hs_enc, hs_dec):
            N, T, H = hs_dec.shape
            out = np.empty_like(hs_dec)
            self.steps, self.attention_weights = [], []
            for t in range(T):
                h = hs_dec[:, t]
                softmax = layers.Softmax()
                a = softmax.forward(np.sum(hs_enc * h.reshape(N, 1, H), axis=2))
                out[:, t] = np.sum(hs_enc * a.reshape(N, -1, 1), axis=1)
                self.steps.append((h, a, softmax))
                self.attention_weights.append(a)
            self.hs_enc = hs_enc
            return out

        def backward(self, dout):
            hs_enc = self.hs_enc
            dhs_enc, dhs_dec = 0, np.empty_like(dout)
            for t, (h, a, softmax) in enumerate(self.steps):
                dc = dout[:, t]
                da = np.sum(dc[:, None, :] * hs_enc, axis=2)
                ds = softmax.backward(da)
                dhs_dec[:, t] = np.sum(ds[:, :, None] * hs_enc, axis=1)
                dhs_enc += a[:, :, None] * dc[:, None, :] + ds[:, :, None] * h[:, None, :]
            return dhs_enc, dhs_dec

    return TimeAttention


def load(package):
    """The modules of a ``common`` package by its name: ``"nprnn.dlfs2"`` or ``"common"``."""
    names = ("time_layers", "layers", "base_model", "optimizer", "trainer", "util")
    return SimpleNamespace(**{n: importlib.import_module(f"{package}.{n}") for n in names})


def models(pkg):
    """The chapter models on the modules ``pkg`` (``load(...)``)."""
    tl, BaseModel = pkg.time_layers, pkg.base_model.BaseModel
    TimeAttention = getattr(tl, "TimeAttention", None) or book_attention(pkg.layers)
    rn = np.random.randn  # noqa: NPY002 (the book's initialisation)

    def collect(obj, layers):
        obj.params, obj.grads = [], []
        for layer in layers:
            obj.params += layer.params
            obj.grads += layer.grads

    class SimpleRnnlm:  # ch05/simple_rnnlm.py
        def __init__(self, vocab_size, wordvec_size, hidden_size):
            V, D, H = vocab_size, wordvec_size, hidden_size
            embed_W = (rn(V, D) / 100).astype("f")
            rnn_Wx = (rn(D, H) / np.sqrt(D)).astype("f")
            rnn_Wh = (rn(H, H) / np.sqrt(H)).astype("f")
            rnn_b = np.zeros(H).astype("f")
            affine_W = (rn(H, V) / np.sqrt(H)).astype("f")
            affine_b = np.zeros(V).astype("f")
            self.layers = [
                tl.TimeEmbedding(embed_W),
                tl.TimeRNN(rnn_Wx, rnn_Wh, rnn_b, stateful=True),
                tl.TimeAffine(affine_W, affine_b),
            ]
            self.loss_layer = tl.TimeSoftmaxWithLoss()
            self.rnn_layer = self.layers[1]
            collect(self, self.layers)

        def forward(self, xs, ts):
            for layer in self.layers:
                xs = layer.forward(xs)
            return self.loss_layer.forward(xs, ts)

        def backward(self, dout=1):
            dout = self.loss_layer.backward(dout)
            for layer in reversed(self.layers):
                dout = layer.backward(dout)
            return dout

        def reset_state(self):
            self.rnn_layer.reset_state()

    class Rnnlm(BaseModel):  # ch06/rnnlm.py
        def __init__(self, vocab_size=10000, wordvec_size=100, hidden_size=100):
            V, D, H = vocab_size, wordvec_size, hidden_size
            embed_W = (rn(V, D) / 100).astype("f")
            lstm_Wx = (rn(D, 4 * H) / np.sqrt(D)).astype("f")
            lstm_Wh = (rn(H, 4 * H) / np.sqrt(H)).astype("f")
            lstm_b = np.zeros(4 * H).astype("f")
            affine_W = (rn(H, V) / np.sqrt(H)).astype("f")
            affine_b = np.zeros(V).astype("f")
            self.layers = [
                tl.TimeEmbedding(embed_W),
                tl.TimeLSTM(lstm_Wx, lstm_Wh, lstm_b, stateful=True),
                tl.TimeAffine(affine_W, affine_b),
            ]
            self.loss_layer = tl.TimeSoftmaxWithLoss()
            self.lstm_layer = self.layers[1]
            collect(self, self.layers)

        def predict(self, xs):
            for layer in self.layers:
                xs = layer.forward(xs)
            return xs

        def forward(self, xs, ts):
            return self.loss_layer.forward(self.predict(xs), ts)

        def backward(self, dout=1):
            dout = self.loss_layer.backward(dout)
            for layer in reversed(self.layers):
                dout = layer.backward(dout)
            return dout

        def reset_state(self):
            self.lstm_layer.reset_state()

    class BetterRnnlm(BaseModel):  # ch06/better_rnnlm.py
        def __init__(self, vocab_size=10000, wordvec_size=650, hidden_size=650, dropout_ratio=0.5):
            V, D, H = vocab_size, wordvec_size, hidden_size
            embed_W = (rn(V, D) / 100).astype("f")
            lstm_Wx1 = (rn(D, 4 * H) / np.sqrt(D)).astype("f")
            lstm_Wh1 = (rn(H, 4 * H) / np.sqrt(H)).astype("f")
            lstm_b1 = np.zeros(4 * H).astype("f")
            lstm_Wx2 = (rn(H, 4 * H) / np.sqrt(H)).astype("f")
            lstm_Wh2 = (rn(H, 4 * H) / np.sqrt(H)).astype("f")
            lstm_b2 = np.zeros(4 * H).astype("f")
            affine_b = np.zeros(V).astype("f")
            self.layers = [
                tl.TimeEmbedding(embed_W),
                tl.TimeDropout(dropout_ratio),
                tl.TimeLSTM(lstm_Wx1, lstm_Wh1, lstm_b1, stateful=True),
                tl.TimeDropout(dropout_ratio),
                tl.TimeLSTM(lstm_Wx2, lstm_Wh2, lstm_b2, stateful=True),
                tl.TimeDropout(dropout_ratio),
                tl.TimeAffine(embed_W.T, affine_b),  # weight tying
            ]
            self.loss_layer = tl.TimeSoftmaxWithLoss()
            self.lstm_layers = [self.layers[2], self.layers[4]]
            self.drop_layers = [self.layers[1], self.layers[3], self.layers[5]]
            collect(self, self.layers)

        def predict(self, xs, train_flg=False):
            for layer in self.drop_layers:
                layer.train_flg = train_flg
            for layer in self.layers:
                xs = layer.forward(xs)
            return xs

        def forward(self, xs, ts, train_flg=True):
            return self.loss_layer.forward(self.predict(xs, train_flg), ts)

        def backward(self, dout=1):
            dout = self.loss_layer.backward(dout)
            for layer in reversed(self.layers):
                dout = layer.backward(dout)
            return dout

        def reset_state(self):
            for layer in self.lstm_layers:
                layer.reset_state()

    def lstm_weights(V, D, H):
        embed_W = (rn(V, D) / 100).astype("f")
        lstm_Wx = (rn(D, 4 * H) / np.sqrt(D)).astype("f")
        lstm_Wh = (rn(H, 4 * H) / np.sqrt(H)).astype("f")
        lstm_b = np.zeros(4 * H).astype("f")
        return embed_W, lstm_Wx, lstm_Wh, lstm_b

    class Encoder:  # ch07/seq2seq.py
        def __init__(self, vocab_size, wordvec_size, hidden_size):
            embed_W, lstm_Wx, lstm_Wh, lstm_b = lstm_weights(vocab_size, wordvec_size, hidden_size)
            self.embed = tl.TimeEmbedding(embed_W)
            self.lstm = tl.TimeLSTM(lstm_Wx, lstm_Wh, lstm_b, stateful=False)
            self.params = self.embed.params + self.lstm.params
            self.grads = self.embed.grads + self.lstm.grads
            self.hs = None

        def forward(self, xs):
            xs = self.embed.forward(xs)
            hs = self.lstm.forward(xs)
            self.hs = hs
            return hs[:, -1, :]

        def backward(self, dh):
            dhs = np.zeros_like(self.hs)
            dhs[:, -1, :] = dh
            dout = self.lstm.backward(dhs)
            dout = self.embed.backward(dout)
            return dout

    class Decoder:
        def __init__(self, vocab_size, wordvec_size, hidden_size):
            V, D, H = vocab_size, wordvec_size, hidden_size
            embed_W, lstm_Wx, lstm_Wh, lstm_b = lstm_weights(V, D, H)
            affine_W = (rn(H, V) / np.sqrt(H)).astype("f")
            affine_b = np.zeros(V).astype("f")
            self.embed = tl.TimeEmbedding(embed_W)
            self.lstm = tl.TimeLSTM(lstm_Wx, lstm_Wh, lstm_b, stateful=True)
            self.affine = tl.TimeAffine(affine_W, affine_b)
            collect(self, (self.embed, self.lstm, self.affine))

        def forward(self, xs, h):
            self.lstm.set_state(h)
            out = self.embed.forward(xs)
            out = self.lstm.forward(out)
            return self.affine.forward(out)

        def backward(self, dscore):
            dout = self.affine.backward(dscore)
            dout = self.lstm.backward(dout)
            self.embed.backward(dout)
            return self.lstm.dh

        def generate(self, h, start_id, sample_size):
            sampled = []
            sample_id = start_id
            self.lstm.set_state(h)
            for _ in range(sample_size):
                x = np.array(sample_id).reshape((1, 1))
                out = self.embed.forward(x)
                out = self.lstm.forward(out)
                score = self.affine.forward(out)
                sample_id = np.argmax(score.flatten())
                sampled.append(int(sample_id))
            return sampled

    class Seq2seq(BaseModel):
        def __init__(self, vocab_size, wordvec_size, hidden_size):
            V, D, H = vocab_size, wordvec_size, hidden_size
            self.encoder = Encoder(V, D, H)
            self.decoder = Decoder(V, D, H)
            self.softmax = tl.TimeSoftmaxWithLoss()
            self.params = self.encoder.params + self.decoder.params
            self.grads = self.encoder.grads + self.decoder.grads

        def forward(self, xs, ts):
            decoder_xs, decoder_ts = ts[:, :-1], ts[:, 1:]
            h = self.encoder.forward(xs)
            score = self.decoder.forward(decoder_xs, h)
            return self.softmax.forward(score, decoder_ts)

        def backward(self, dout=1):
            dout = self.softmax.backward(dout)
            dh = self.decoder.backward(dout)
            return self.encoder.backward(dh)

        def generate(self, xs, start_id, sample_size):
            h = self.encoder.forward(xs)
            return self.decoder.generate(h, start_id, sample_size)

    class PeekyDecoder:  # ch07/peeky_seq2seq.py
        def __init__(self, vocab_size, wordvec_size, hidden_size):
            V, D, H = vocab_size, wordvec_size, hidden_size
            embed_W = (rn(V, D) / 100).astype("f")
            lstm_Wx = (rn(H + D, 4 * H) / np.sqrt(H + D)).astype("f")
            lstm_Wh = (rn(H, 4 * H) / np.sqrt(H)).astype("f")
            lstm_b = np.zeros(4 * H).astype("f")
            affine_W = (rn(H + H, V) / np.sqrt(H + H)).astype("f")
            affine_b = np.zeros(V).astype("f")
            self.embed = tl.TimeEmbedding(embed_W)
            self.lstm = tl.TimeLSTM(lstm_Wx, lstm_Wh, lstm_b, stateful=True)
            self.affine = tl.TimeAffine(affine_W, affine_b)
            collect(self, (self.embed, self.lstm, self.affine))
            self.cache = None

        def forward(self, xs, h):
            N, T = xs.shape
            N, H = h.shape
            self.lstm.set_state(h)
            out = self.embed.forward(xs)
            hs = np.repeat(h, T, axis=0).reshape(N, T, H)
            out = np.concatenate((hs, out), axis=2)
            out = self.lstm.forward(out)
            out = np.concatenate((hs, out), axis=2)
            score = self.affine.forward(out)
            self.cache = H
            return score

        def backward(self, dscore):
            H = self.cache
            dout = self.affine.backward(dscore)
            dout, dhs0 = dout[:, :, H:], dout[:, :, :H]
            dout = self.lstm.backward(dout)
            dembed, dhs1 = dout[:, :, H:], dout[:, :, :H]
            self.embed.backward(dembed)
            dhs = dhs0 + dhs1
            return self.lstm.dh + np.sum(dhs, axis=1)

        def generate(self, h, start_id, sample_size):
            sampled = []
            char_id = start_id
            self.lstm.set_state(h)
            H = h.shape[1]
            peeky_h = h.reshape(1, 1, H)
            for _ in range(sample_size):
                x = np.array([char_id]).reshape((1, 1))
                out = self.embed.forward(x)
                out = np.concatenate((peeky_h, out), axis=2)
                out = self.lstm.forward(out)
                out = np.concatenate((peeky_h, out), axis=2)
                score = self.affine.forward(out)
                char_id = np.argmax(score.flatten())
                sampled.append(char_id)
            return sampled

    class PeekySeq2seq(Seq2seq):
        def __init__(self, vocab_size, wordvec_size, hidden_size):
            V, D, H = vocab_size, wordvec_size, hidden_size
            self.encoder = Encoder(V, D, H)
            self.decoder = PeekyDecoder(V, D, H)
            self.softmax = tl.TimeSoftmaxWithLoss()
            self.params = self.encoder.params + self.decoder.params
            self.grads = self.encoder.grads + self.decoder.grads

    class AttentionEncoder(Encoder):  # ch08/attention_seq2seq.py
        def forward(self, xs):
            xs = self.embed.forward(xs)
            return self.lstm.forward(xs)

        def backward(self, dhs):
            dout = self.lstm.backward(dhs)
            return self.embed.backward(dout)

    class AttentionDecoder:
        def __init__(self, vocab_size, wordvec_size, hidden_size):
            V, D, H = vocab_size, wordvec_size, hidden_size
            embed_W, lstm_Wx, lstm_Wh, lstm_b = lstm_weights(V, D, H)
            affine_W = (rn(2 * H, V) / np.sqrt(2 * H)).astype("f")
            affine_b = np.zeros(V).astype("f")
            self.embed = tl.TimeEmbedding(embed_W)
            self.lstm = tl.TimeLSTM(lstm_Wx, lstm_Wh, lstm_b, stateful=True)
            self.attention = TimeAttention()
            self.affine = tl.TimeAffine(affine_W, affine_b)
            collect(self, (self.embed, self.lstm, self.attention, self.affine))

        def forward(self, xs, enc_hs):
            h = enc_hs[:, -1]
            self.lstm.set_state(h)
            out = self.embed.forward(xs)
            dec_hs = self.lstm.forward(out)
            c = self.attention.forward(enc_hs, dec_hs)
            out = np.concatenate((c, dec_hs), axis=2)
            return self.affine.forward(out)

        def backward(self, dscore):
            dout = self.affine.backward(dscore)
            N, T, H2 = dout.shape
            H = H2 // 2
            dc, ddec_hs0 = dout[:, :, :H], dout[:, :, H:]
            denc_hs, ddec_hs1 = self.attention.backward(dc)
            ddec_hs = ddec_hs0 + ddec_hs1
            dout = self.lstm.backward(ddec_hs)
            dh = self.lstm.dh
            denc_hs[:, -1] += dh
            self.embed.backward(dout)
            return denc_hs

        def generate(self, enc_hs, start_id, sample_size):
            sampled = []
            sample_id = start_id
            h = enc_hs[:, -1]
            self.lstm.set_state(h)
            for _ in range(sample_size):
                x = np.array([sample_id]).reshape((1, 1))
                out = self.embed.forward(x)
                dec_hs = self.lstm.forward(out)
                c = self.attention.forward(enc_hs, dec_hs)
                out = np.concatenate((c, dec_hs), axis=2)
                score = self.affine.forward(out)
                sample_id = np.argmax(score.flatten())
                sampled.append(sample_id)
            return sampled

    class AttentionSeq2seq(Seq2seq):
        def __init__(self, vocab_size, wordvec_size, hidden_size):
            args = vocab_size, wordvec_size, hidden_size
            self.encoder = AttentionEncoder(*args)
            self.decoder = AttentionDecoder(*args)
            self.softmax = tl.TimeSoftmaxWithLoss()
            self.params = self.encoder.params + self.decoder.params
            self.grads = self.encoder.grads + self.decoder.grads

    return SimpleNamespace(
        SimpleRnnlm=SimpleRnnlm,
        Rnnlm=Rnnlm,
        BetterRnnlm=BetterRnnlm,
        Seq2seq=Seq2seq,
        PeekySeq2seq=PeekySeq2seq,
        AttentionSeq2seq=AttentionSeq2seq,
    )


# ---------------------------------------------------------------- the book's data loading


def load_ptb(path, max_words=None, word_to_id=None):
    """The book's dataset/ptb.py: newlines become ``<eos>``, ids in order of first appearance.
    ``word_to_id`` continues an existing numbering (the book numbers valid/test after train)."""
    word_to_id = {} if word_to_id is None else word_to_id
    words = open(path).read().replace("\n", "<eos>").strip().split()
    if max_words is not None:
        words = words[:max_words]
    for w in words:
        if w not in word_to_id:
            word_to_id[w] = len(word_to_id)
    return np.array([word_to_id[w] for w in words]), word_to_id


def load_seq2seq(path, max_lines=None, seed=1984):
    """The book's dataset/sequence.py: questions and answers split at ``_``, chars numbered in order of
    first appearance, shuffled with ``np.random.seed(seed)``, the last 10% as the test split.
    Returns ``(x_train, t_train), (x_test, t_test), char_to_id, id_to_char``."""
    questions, answers = [], []
    for i, line in enumerate(open(path)):
        if max_lines is not None and i >= max_lines:
            break
        idx = line.find("_")
        questions.append(line[:idx])
        answers.append(line[idx:-1])
    char_to_id, id_to_char = {}, {}
    for text in questions + answers:
        for c in text:
            if c not in char_to_id:
                char_to_id[c] = len(char_to_id)
                id_to_char[char_to_id[c]] = c
    x = np.array([[char_to_id[c] for c in q] for q in questions], dtype=np.int32)
    t = np.array([[char_to_id[c] for c in a] for a in answers], dtype=np.int32)
    indices = np.arange(len(x))
    if seed is not None:
        np.random.seed(seed)  # noqa: NPY002 (the book's shuffle)
    np.random.shuffle(indices)  # noqa: NPY002
    x, t = x[indices], t[indices]
    split = len(x) - len(x) // 10
    return (x[:split], t[:split]), (x[split:], t[split:]), char_to_id, id_to_char
