"""nprnn.dlfs2.functions against the textbook's common.functions."""

import numpy as np
import pytest

from nprnn.dlfs2 import functions as F


@pytest.mark.parametrize("shape", [(7,), (5, 9)])
def test_softmax_equals_the_books(dlfs2, rng, shape):
    from common.functions import softmax

    x = (rng.standard_normal(shape) * 30).astype(np.float32)
    np.testing.assert_array_equal(F.softmax(x), softmax(x))
    assert F.softmax(x).dtype == np.float32


def test_softmax_any_rank_and_ints(rng):
    x = rng.standard_normal((2, 3, 4))
    np.testing.assert_allclose(F.softmax(x), np.exp(x) / np.exp(x).sum(-1, keepdims=True), rtol=1e-12)
    ints = np.array([[1, 2, 3]])
    np.testing.assert_allclose(F.softmax(ints).sum(), 1.0)
    assert F.softmax(np.array([1e4, 0.0]))[0] == 1.0  # no overflow
    with pytest.raises(ValueError, match="scalar"):
        F.softmax(np.float64(1.0))


def test_sigmoid_relu_cross_entropy_equal_the_books(dlfs2, rng):
    from common import functions as B

    x = rng.standard_normal((4, 6)).astype(np.float32) * 5
    np.testing.assert_array_equal(F.sigmoid(x), B.sigmoid(x))
    np.testing.assert_array_equal(F.relu(x), B.relu(x))
    y = B.softmax(x)
    t = rng.integers(0, 6, 4)
    assert F.cross_entropy_error(y, t) == B.cross_entropy_error(y, t)
    onehot = np.eye(6, dtype=np.int32)[t]
    assert F.cross_entropy_error(y, onehot) == B.cross_entropy_error(y, onehot)
    assert F.cross_entropy_error(y[0], t[:1]) == B.cross_entropy_error(y[0], t[:1])


def test_sigmoid_does_not_warn_on_overflow():
    with np.errstate(over="raise"):
        assert F.sigmoid(np.array([-1000.0], np.float32))[0] == 0.0
