"""The textbook's ``common/functions.py``: ``sigmoid``, ``relu``, ``softmax``, ``cross_entropy_error``.

The same formulas as the book, so results agree bit for bit where the book's are defined; two extensions:
``sigmoid`` does not warn when ``exp(-x)`` overflows (the result is the limit 0 either way), and ``softmax``
works along the last axis of an array of any rank (the book's returns a 3-D input unchanged).
"""

from nprnn.dlfs2.np import np

__all__ = ["sigmoid", "relu", "softmax", "cross_entropy_error"]


def sigmoid(x):
    """``1 / (1 + exp(-x))``, elementwise."""
    with np.errstate(over="ignore"):  # exp(-x) = inf for x < -88 (float32): the value is 0, correctly
        return 1 / (1 + np.exp(-x))


def relu(x):
    return np.maximum(0, x)


def softmax(x):
    """Softmax along the last axis, shifted by the row maximum so no score overflows. Returns a new array."""
    x = np.asarray(x)
    if x.ndim == 0:
        raise ValueError("softmax: expected an array of scores with at least one axis, got a scalar")
    if x.dtype.kind != "f":
        x = x.astype(np.float64)
    out = x - x.max(axis=-1, keepdims=True)
    np.exp(out, out=out)
    out /= out.sum(axis=-1, keepdims=True)
    return out


def cross_entropy_error(y, t):
    """Mean ``-log(y[t] + 1e-7)`` over the rows of the probabilities ``y``; ``t`` holds labels or one-hot rows."""
    if y.ndim == 1:
        t = t.reshape(1, t.size)
        y = y.reshape(1, y.size)
    if t.size == y.size:  # one-hot targets: the index of the 1 in each row
        t = t.argmax(axis=1)
    batch_size = y.shape[0]
    return -np.sum(np.log(y[np.arange(batch_size), t] + 1e-7)) / batch_size
