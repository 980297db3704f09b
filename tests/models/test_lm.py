import numpy as np
import pytest

from nprnn.gradcheck import numerical_gradient, relative_error
from nprnn.models.lm import LanguageModel, LMConfig, sample_next


def gradient_check(config, rng, N=2, T=4):
    model = LanguageModel(config, seed=3, dtype=np.float64)
    V = config.vocab_size
    xs, ts = rng.integers(0, V, (N, T)), rng.integers(0, V, (N, T))
    rng_states = [r.bit_generator.state for r in model.dropout_rngs()]

    def loss():  # the same dropout masks and the same (zero) initial state every time
        for r, s in zip(model.dropout_rngs(), rng_states):
            r.bit_generator.state = s
        model.reset_state()
        return float(model.forward(xs, ts))

    loss()
    model.backward()
    analytic = [g.copy() for g in model.grads]
    assert len(analytic) == len(model.params)
    for i, (p, g) in enumerate(zip(model.params, analytic)):
        assert g.shape == p.shape
        assert relative_error(g, numerical_gradient(loss, p)) < 1e-6, f"param {i}"


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_gradients(rng, cell):
    gradient_check(LMConfig(vocab_size=7, cell=cell, embed=3, hidden=4, layers=2), rng)


def test_gradients_tied_weights_with_dropout(rng):
    """Tied weights: one array in params, whose gradient is the sum of both uses."""
    config = LMConfig(vocab_size=6, embed=4, hidden=4, layers=2, dropout=0.3, tie_weights=True)
    model = LanguageModel(config, dtype=np.float64)
    assert model.affine.params[0].base is model.params[0]  # a view, not a copy
    assert len(model.params) == 1 + 2 * 3 + 1
    gradient_check(config, rng)


def test_params_are_unique_arrays_in_textbook_order():
    model = LanguageModel(LMConfig(vocab_size=10, embed=5, hidden=6, layers=1))
    shapes = [p.shape for p in model.params]
    assert shapes == [(10, 5), (5, 24), (6, 24), (24,), (6, 10), (10,)]
    for i, p in enumerate(model.params):
        for q in model.params[:i]:
            assert not np.shares_memory(p, q)


@pytest.mark.parametrize("tie", [False, True])
def test_the_output_bias_is_the_row_after_the_output_weights_unless_tied(tie):
    """So TimeAffine folds the bias into its products (layers/basic.py); a tied W is the embedding's
    transpose, which it cannot be."""
    model = LanguageModel(LMConfig(vocab_size=10, embed=6, hidden=6, tie_weights=tie))
    W_out, b_out = model.affine.params
    stacked = W_out.base is not None and W_out.base is b_out.base
    assert stacked == (not tie)
    assert (model.affine.grads[0].base is model.affine.grads[1].base is not None) == (not tie)


def test_seeded_init_is_reproducible():
    a = LanguageModel(LMConfig(vocab_size=10, init="uniform", init_scale=0.1), seed=5)
    b = LanguageModel(LMConfig(vocab_size=10, init="uniform", init_scale=0.1), seed=5)
    c = LanguageModel(LMConfig(vocab_size=10, init="uniform", init_scale=0.1), seed=6)
    assert all(np.array_equal(p, q) for p, q in zip(a.params, b.params))
    assert not np.array_equal(a.params[1], c.params[1])
    assert all(np.abs(p).max() <= 0.1 for p in a.params)


def test_bad_config():
    with pytest.raises(ValueError, match="tie_weights needs embed == hidden, got embed 3 and hidden 4"):
        LMConfig(vocab_size=5, embed=3, hidden=4, tie_weights=True).validate()
    with pytest.raises(ValueError, match="cell must be one of rnn, lstm, gru, got 'tanh'"):
        LMConfig(vocab_size=5, cell="tanh").validate()
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got 1.5"):
        LMConfig(vocab_size=5, dropout=1.5).validate()


def test_sample_next_top_k_and_greedy():
    rng = np.random.default_rng(0)
    logits = np.log(np.array([[0.1, 0.2, 0.3, 0.4]]))
    draws = [int(sample_next(logits, rng, 1.0, top_k=2)[0]) for _ in range(200)]
    assert set(draws) == {2, 3}
    assert sample_next(logits, rng, 0.0)[0] == 3
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        sample_next(logits, rng, -1.0)
