"""The textbook's ``common/layers.py``: one-step layers with the book's constructors and attributes.

``MatMul(W)``, ``Affine(W, b)``, ``Softmax()``, ``SoftmaxWithLoss()``, ``Sigmoid()``,
``SigmoidWithLoss()``, ``Dropout(dropout_ratio=0.5)``, ``Embedding(W)``. The book's protocol: ``params`` /
``grads`` are lists, ``backward`` writes the gradients into ``grads`` in place. The math is the book's, line
for line, so the numbers agree with it; ``Embedding.backward`` is nprnn's ``embedding_grad`` (``np.add.at``'s
sums in one pass on the numba backend, one sort and one ``np.add.reduceat`` on NumPy's), and ``Dropout``
draws its mask from the global ``np.random``, as the book does, so ``np.random.seed`` replays it.
"""

from nprnn import accel
from nprnn.dlfs2.config import GPU
from nprnn.dlfs2.functions import cross_entropy_error, sigmoid, softmax
from nprnn.dlfs2.np import np
from nprnn.layers.basic import embedding_grad

__all__ = [
    "MatMul", "Affine", "Softmax", "SoftmaxWithLoss", "Sigmoid", "SigmoidWithLoss", "Dropout", "Embedding",
    "np", "GPU", "softmax", "sigmoid", "cross_entropy_error",
]  # fmt: skip


def _dot(a, b):
    """``np.dot``; for two matrices ``nprnn.accel.matmul``, so that on the numba backend the products
    never wake OpenBLAS's threads, which would spin against the time layers' kernels."""
    return accel.matmul(a, b) if a.ndim == 2 and b.ndim == 2 else np.dot(a, b)


class MatMul:
    """``x @ W``. ``forward(x: (N, D)) -> (N, H)``; ``backward(dout: (N, H)) -> dx: (N, D)``."""

    def __init__(self, W):
        self.params = [W]
        self.grads = [np.zeros_like(W)]
        self.x = None

    def forward(self, x):
        (W,) = self.params
        self.x = x
        return _dot(x, W)

    def backward(self, dout):
        (W,) = self.params
        self.grads[0][...] = _dot(self.x.T, dout)
        return _dot(dout, W.T)


class Affine:
    """``x @ W + b``. ``forward(x: (N, D)) -> (N, H)``; ``backward(dout: (N, H)) -> dx: (N, D)``."""

    def __init__(self, W, b):
        self.params = [W, b]
        self.grads = [np.zeros_like(W), np.zeros_like(b)]
        self.x = None

    def forward(self, x):
        W, b = self.params
        self.x = x
        return _dot(x, W) + b

    def backward(self, dout):
        W, _ = self.params
        self.grads[0][...] = _dot(self.x.T, dout)
        self.grads[1][...] = np.sum(dout, axis=0)
        return _dot(dout, W.T)


class Softmax:
    """Softmax over the last axis; ``backward`` is the Jacobian-vector product ``y * (dout - <dout, y>)``."""

    def __init__(self):
        self.params, self.grads = [], []
        self.out = None

    def forward(self, x):
        self.out = softmax(x)
        return self.out

    def backward(self, dout):
        dx = self.out * dout
        sumdx = np.sum(dx, axis=-1, keepdims=True)
        dx -= self.out * sumdx
        return dx


class SoftmaxWithLoss:
    """Softmax and the mean cross-entropy ``-log(y[t] + 1e-7)``; ``t`` holds labels ``(N,)`` or one-hot rows.

    ``forward(x: (N, C), t) -> loss``; ``backward(dout=1) -> dx = (y - onehot(t)) * dout / N``.
    """

    def __init__(self):
        self.params, self.grads = [], []
        self.y = None  # the softmax output
        self.t = None  # the labels

    def forward(self, x, t):
        self.t = t
        self.y = softmax(x)
        if self.t.size == self.y.size:  # one-hot rows: their labels
            self.t = self.t.argmax(axis=1)
        return cross_entropy_error(self.y, self.t)

    def backward(self, dout=1):
        batch_size = self.t.shape[0]
        dx = self.y.copy()
        dx[np.arange(batch_size), self.t] -= 1
        dx *= dout
        return dx / batch_size


class Sigmoid:
    def __init__(self):
        self.params, self.grads = [], []
        self.out = None

    def forward(self, x):
        self.out = sigmoid(x)
        return self.out

    def backward(self, dout):
        return dout * (1.0 - self.out) * self.out


class SigmoidWithLoss:
    """Sigmoid and the mean binary cross-entropy; ``t`` holds 0/1 labels ``(N,)``.

    ``forward(x: (N,), t: (N,)) -> loss``; ``backward(dout=1) -> dx = (y - t) * dout / N``.
    """

    def __init__(self):
        self.params, self.grads = [], []
        self.loss = None
        self.y = None  # the sigmoid output
        self.t = None  # the labels

    def forward(self, x, t):
        self.t = t
        self.y = sigmoid(x)
        self.loss = cross_entropy_error(np.c_[1 - self.y, self.y], self.t)
        return self.loss

    def backward(self, dout=1):
        batch_size = self.t.shape[0]
        return (self.y - self.t) * dout / batch_size


class Dropout:
    """Dropout as in the book (not inverted): ``forward(x, train_flg=True)`` zeroes each element with
    probability ``dropout_ratio``, drawing the mask from the global ``np.random``; at test time
    (``train_flg=False``) it scales by ``1 - dropout_ratio`` instead."""

    def __init__(self, dropout_ratio=0.5):
        self.params, self.grads = [], []
        self.dropout_ratio = dropout_ratio
        self.mask = None

    def forward(self, x, train_flg=True):
        if train_flg:
            self.mask = np.random.rand(*x.shape) > self.dropout_ratio
            return x * self.mask
        return x * (1.0 - self.dropout_ratio)

    def backward(self, dout):
        return dout * self.mask


class Embedding:
    """Row lookup ``W[idx]``. ``forward(idx: int array) -> idx.shape + (D,)``; ``backward(dout) -> None``,
    writing into ``grads[0]`` the sum of ``dout``'s rows per id (rows of ids not looked up are 0)."""

    def __init__(self, W):
        self.params = [W]
        self.grads = [np.zeros_like(W)]
        self.idx = None

    def forward(self, idx):
        (W,) = self.params
        self.idx = idx
        return W[idx]

    def backward(self, dout):
        embedding_grad(self.grads[0], self.idx, dout)
        return None
