"""Recurrent language model: Embedding -> recurrent stack -> Affine -> SoftmaxWithLoss.

    ids (N, T) -> TimeEmbedding W_embed (V, E) -> dropout -> TimeStack (rnn | lstm | gru, L layers,
    dropout between layers) -> dropout -> TimeAffine W (H, V), b (V,) -> logits (N, T, V)

Dropout sits on the non-recurrent connections only, as in Zaremba et al. 2014 and the textbook's
``BetterRnnlm``. With ``tie_weights`` (needs E == H) the output projection is the transpose of the
embedding (a view, not a copy): ``params`` lists the shared array once and its gradient is the sum
of the embedding's and the output layer's.

The recurrent stack is stateful: consecutive ``forward`` calls continue the text (truncated BPTT);
``reset_state()`` starts over.
"""

import math
from dataclasses import asdict, dataclass

import numpy as np

from nprnn._checks import positive_int
from nprnn.data.batching import EvalBatches
from nprnn.layers.basic import TimeAffine, TimeDropout, TimeEmbedding, TimeSoftmaxWithLoss, stack_affine_params
from nprnn.layers.stack import make_recurrent


@dataclass
class LMConfig:
    """The model's sizes and kind. The defaults are the ``tiny`` preset's (``nprnn train`` with no
    options): a one-layer LSTM of 256 units over 32-dimensional embeddings."""

    vocab_size: int
    cell: str = "lstm"
    embed: int = 32
    hidden: int = 256
    layers: int = 1
    dropout: float = 0.0
    tie_weights: bool = False
    init: str = "xavier"  # "xavier" (the textbook's randn / sqrt(fan_in)) or "uniform" (Zaremba et al.)
    init_scale: float = 0.1  # half-width of the uniform init

    def validate(self):
        if self.cell not in ("rnn", "lstm", "gru"):
            raise ValueError(f"cell must be one of rnn, lstm, gru, got {self.cell!r}")
        for name in ("vocab_size", "embed", "hidden", "layers"):
            positive_int(name, getattr(self, name))
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:  # also refuses NaN
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not isinstance(self.tie_weights, bool):
            raise ValueError(f"tie_weights must be true or false, got {self.tie_weights!r}")
        if self.tie_weights and self.embed != self.hidden:
            raise ValueError(f"tie_weights needs embed == hidden, got embed {self.embed} and hidden {self.hidden}")
        if self.init not in ("xavier", "uniform"):
            raise ValueError(f"init must be 'xavier' or 'uniform', got {self.init!r}")
        scale = self.init_scale
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale < math.inf:
            raise ValueError(f"init_scale must be a positive finite number, got {scale!r}")
        return self

    def to_dict(self):
        return asdict(self)


GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def param_shapes(config: LMConfig):
    """The shapes of ``LanguageModel(config).params``, worked out without allocating anything (so a
    checkpoint's arrays can be checked against its config before a model is built)."""
    V, E, H, G = config.vocab_size, config.embed, config.hidden, GATES[config.cell]
    shapes = [(V, E)]
    for layer in range(config.layers):
        shapes += [(E if layer == 0 else H, G * H), (H, G * H), (G * H,)] + ([(H,)] if config.cell == "gru" else [])
    return shapes + ([] if config.tie_weights else [(H, V)]) + [(V,)]


class LanguageModel:
    """``forward(ids: (N, T), targets: (N, T)) -> mean cross-entropy``; ``backward() -> None``;
    ``predict(ids) -> logits (N, T, V)``. ``params`` / ``grads``: unique arrays, in the textbook's
    order: embedding W, the recurrent layers' params, output W (absent when tied), output b."""

    def __init__(self, config: LMConfig, seed=0, dtype=np.float32):
        self.config = config.validate()
        V, E, H = config.vocab_size, config.embed, config.hidden
        rng = np.random.default_rng(seed)
        seeds = rng.integers(0, 2**31, size=4)

        W_embed = (rng.standard_normal((V, E)) / 100).astype(dtype)  # the textbook's embedding init
        self.embed = TimeEmbedding(W_embed)
        self.rnn = make_recurrent(
            config.cell, E, H, num_layers=config.layers, dropout=config.dropout,
            stateful=True, seed=int(seeds[0]), dtype=dtype,
        )  # fmt: skip
        self.drop_in = TimeDropout(config.dropout, seed=int(seeds[1]))
        self.drop_out = TimeDropout(config.dropout, seed=int(seeds[2]))
        W_out = W_embed.T if config.tie_weights else (rng.standard_normal((H, V)) / np.sqrt(H)).astype(dtype)
        b_out = np.zeros(V, dtype=dtype)
        if not config.tie_weights:  # one (H + 1, V) array: the bias rides in the products (TimeAffine)
            W_out, b_out = stack_affine_params(W_out, b_out)
        self.affine = TimeAffine(W_out, b_out)
        self.loss_layer = TimeSoftmaxWithLoss()

        self.params = [W_embed] + self.rnn.params + ([] if config.tie_weights else [W_out]) + [self.affine.params[1]]
        self.grads = [self.embed.grads[0]] + self.rnn.grads
        if config.tie_weights:
            # the embedding's grads[0] would be overwritten by its own backward, so keep a separate sum
            self.grads[0] = np.zeros_like(W_embed)
        else:
            self.grads.append(self.affine.grads[0])
        self.grads.append(self.affine.grads[1])

        if config.init == "uniform":
            init_rng = np.random.default_rng(int(seeds[3]))
            for p in self.params:
                p[...] = init_rng.uniform(-config.init_scale, config.init_scale, p.shape)
        self.dropouts = [self.drop_in, self.drop_out]
        self.train = True

    @property
    def train(self):
        return self._train

    @train.setter
    def train(self, flag):
        self._train = bool(flag)
        for layer in (self.drop_in, self.drop_out, self.rnn):
            layer.train = self._train

    def predict(self, ids):
        xs = self.drop_in.forward(self.embed.forward(ids))
        hs = self.drop_out.forward(self.rnn.forward(xs))
        return self.affine.forward(hs)

    def forward(self, ids, targets):
        return self.loss_layer.forward(self.predict(ids), targets)

    def backward(self, dout=1.0):
        dlogits = self.loss_layer.backward(dout)
        dhs = self.drop_out.backward(self.affine.backward(dlogits))
        self.embed.backward(self.drop_in.backward(self.rnn.backward(dhs)))
        if self.config.tie_weights:
            np.add(self.embed.grads[0], self.affine.grads[0].T, out=self.grads[0])

    def reset_state(self):
        self.rnn.reset_state()

    def get_state(self):
        """The recurrent stack's carried state as a dict of arrays (for checkpoints), or {} if none."""
        state = {}
        if self.rnn.h is not None:
            state["h"] = self.rnn.h.copy()
            if getattr(self.rnn, "c", None) is not None:
                state["c"] = self.rnn.c.copy()
        return state

    def set_state(self, state):
        if "h" in state:
            self.rnn.set_state(state["h"], state.get("c"))
        else:
            self.rnn.reset_state()

    def dropout_rngs(self):
        """Every random generator the model draws from during training (for exact resume)."""
        return [self.drop_in.rng, self.drop_out.rng] + [d.rng for d in getattr(self.rnn, "dropouts", [])]


def sample_next(logits, rng, temperature=1.0, top_k=None):
    """Draw one id per row from ``logits: (N, V)`` at ``temperature``, keeping only the ``top_k``
    most likely ids if given. ``temperature == 0`` takes the most likely id (greedy).

    A logit may be -inf (an id never to draw), not NaN or +inf. Nothing can overflow: each row's
    max is subtracted before dividing by the temperature, so the scaled logits are <= 0 (a tiny
    temperature sends all but the max to -inf, probability 0) and the max contributes exp(0) = 1."""
    if not 0 <= temperature < math.inf:  # also refuses NaN
        raise ValueError(f"temperature must be >= 0 and finite, got {temperature}")
    if top_k is not None:
        positive_int("top_k", top_k)
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[1] == 0:
        raise ValueError(f"logits must have shape (N, V) with V >= 1, got {logits.shape}")
    top = logits.max(axis=1, keepdims=True)
    if np.isnan(logits).any() or not np.isfinite(top).all():
        raise ValueError("logits must be finite or -inf, with a finite maximum in every row; got NaN, +inf or all -inf")
    if temperature == 0:
        return logits.argmax(axis=1)
    with np.errstate(over="ignore"):  # -inf is the right result there
        scaled = (logits - top) / temperature
    if top_k is not None and top_k < scaled.shape[1]:
        kth = np.partition(scaled, -top_k, axis=1)[:, -top_k][:, None]
        scaled = np.where(scaled < kth, -np.inf, scaled)
    probs = np.exp(scaled)
    probs /= probs.sum(axis=1, keepdims=True)
    return np.array([rng.choice(len(p), p=p) for p in probs])


def generate(model, vocab, prompt="", length=100, temperature=1.0, top_k=None, seed=0, skip_ids=()):
    """Continue ``prompt`` with ``length`` sampled tokens; returns the generated ids (prompt excluded).

    The prompt is fed in one call to warm the recurrent state (an empty prompt starts from the
    end-of-line token); then one token at a time is sampled and fed back. ``skip_ids`` (e.g. the
    id of ``<unk>``) are never sampled. Deterministic for a given ``seed``.
    """
    rng = np.random.default_rng(seed)
    prompt_ids = vocab.encode(prompt) if prompt else np.zeros(0, dtype=np.int64)
    if len(prompt_ids) == 0:
        prompt_ids = np.array([vocab.eos_id], dtype=np.int64)
    was_training = model.train
    model.train = False
    model.reset_state()
    generated = []
    try:
        logits = model.predict(np.asarray(prompt_ids, dtype=np.int64)[None, :])[:, -1]
        for _ in range(length):
            if skip_ids:
                logits = logits.copy()
                logits[:, list(skip_ids)] = -np.inf
            next_id = int(sample_next(logits, rng, temperature, top_k)[0])
            generated.append(next_id)
            logits = model.predict(np.array([[next_id]]))[:, -1]
    finally:
        model.reset_state()
        model.train = was_training
    return np.array(generated, dtype=np.int64)


# ---------------------------------------------------------------- evaluation


def perplexity(mean_loss):
    """``exp(mean_loss)``, or inf where that overflows (a diverged model has a huge but finite loss)."""
    return math.inf if not mean_loss <= 709.0 else math.exp(mean_loss)


def evaluate(model, ids, batch_size=10, bptt=35, parallel=None):
    """Perplexity over ``ids`` as the textbook's ``eval_perplexity`` computes it: from a zero
    state, stateful over consecutive batches, ``exp`` of the mean batch loss; dropout off.
    With ``parallel`` (a ``DataParallel``) each rank scores its share of the rows and the weighted
    losses are summed over the ranks."""
    batches = EvalBatches(ids, batch_size, bptt, rows=parallel.shard(batch_size) if parallel else None)
    was_training = model.train
    model.train = False
    model.reset_state()
    total = 0.0
    try:
        with np.errstate(all="ignore"):  # a diverged model's overflows show as an infinite perplexity
            for xs, ts in batches:
                total += float(model.forward(xs, ts))
    finally:
        model.reset_state()
        model.train = was_training
    if parallel is not None:
        total = parallel.sum(total * parallel.share(batch_size))
    return perplexity(total / len(batches))
