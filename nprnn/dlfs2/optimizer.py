"""The textbook's ``common/optimizer.py``: ``SGD``, ``Momentum``, ``Nesterov``, ``AdaGrad``, ``RMSprop``,
``Adam`` with the book's constructors, attributes (``lr``, ``momentum``, ``decay_rate``, ``beta1``,
``beta2``, ``iter``, ``v``, ``h``, ``m``) and ``update(params, grads)``.

The book's formulas, operation for operation and in the same dtypes, so an update equals the book's bit
for bit (the book's Adam multiplies by a NumPy float64 ``lr_t``, so its step is computed in float64 and
rounded into the float32 parameter; so is this one). Faster than the book's: on the numba backend
``SGD``, ``Momentum`` and ``Adam`` make one fused pass per parameter (the same operations in the same
order); otherwise each update writes into per-parameter scratch buffers allocated once
(``np.multiply(..., out=...)``) instead of allocating a temporary array for every operation. The state
lists are created on the first update, as in the book.

These are the textbook's variants. ``nprnn.optim`` has the published algorithms (and the same ones with
``book=True``), with ``state_dict`` for checkpoints.
"""

from nprnn import accel
from nprnn.dlfs2.np import np

__all__ = ["SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam"]


class _Scratch:
    """Per-parameter scratch arrays, kept between updates; reallocated only when the parameters' shapes
    or dtypes change."""

    def _buffers(self, params, name="s", dtype=None):
        key = [(p.shape, p.dtype if dtype is None else np.dtype(dtype)) for p in params]
        store = self.__dict__.setdefault("_scratch", {})
        if name not in store or store[name][0] != key:
            store[name] = (key, [np.empty(shape, d) for shape, d in key])
        return store[name][1]


class SGD(_Scratch):
    """``p -= lr * g``."""

    def __init__(self, lr=0.01):
        self.lr = lr

    def update(self, params, grads):
        kernels = accel.kernels()
        if kernels is not None and all(accel.fusable(p, g) for p, g in zip(params, grads)):
            for p, g in zip(params, grads):  # one pass, no scratch: the same operations, the same bits
                kernels.sgd_update(p.reshape(-1), g.reshape(-1), self.lr, 1.0)
            return
        buf = self._buffers(params)
        for p, g, s in zip(params, grads, buf):
            np.multiply(g, self.lr, out=s)
            p -= s


class Momentum(_Scratch):
    """``v = momentum * v - lr * g; p += v``."""

    def __init__(self, lr=0.01, momentum=0.9):
        self.lr = lr
        self.momentum = momentum
        self.v = None

    def update(self, params, grads):
        if self.v is None:
            self.v = [np.zeros_like(p) for p in params]
        kernels = accel.kernels()
        if kernels is not None and all(accel.fusable(p, g, v) for p, g, v in zip(params, grads, self.v)):
            for p, g, v in zip(params, grads, self.v):
                kernels.momentum_update(p.reshape(-1), g.reshape(-1), v.reshape(-1), self.momentum, self.lr, 1.0)
            return
        buf = self._buffers(params)
        for p, g, v, s in zip(params, grads, self.v, buf):
            v *= self.momentum
            np.multiply(g, self.lr, out=s)
            v -= s
            p += v


class Nesterov(_Scratch):
    """The book's Nesterov: ``v = momentum v - lr g; p += momentum^2 v - (1 + momentum) lr g``."""

    def __init__(self, lr=0.01, momentum=0.9):
        self.lr = lr
        self.momentum = momentum
        self.v = None

    def update(self, params, grads):
        if self.v is None:
            self.v = [np.zeros_like(p) for p in params]
        buf = self._buffers(params)
        mu = self.momentum
        for p, g, v, s in zip(params, grads, self.v, buf):
            v *= mu
            np.multiply(g, self.lr, out=s)
            v -= s
            np.multiply(v, mu * mu, out=s)
            p += s
            np.multiply(g, (1 + mu) * self.lr, out=s)
            p -= s


class AdaGrad(_Scratch):
    """``h += g * g; p -= lr * g / (sqrt(h) + 1e-7)``."""

    def __init__(self, lr=0.01):
        self.lr = lr
        self.h = None

    def update(self, params, grads):
        if self.h is None:
            self.h = [np.zeros_like(p) for p in params]
        buf, den = self._buffers(params), self._buffers(params, "d")
        for p, g, h, s, d in zip(params, grads, self.h, buf, den):
            np.multiply(g, g, out=s)
            h += s
            _step(p, g, self.lr, h, s, d)


class RMSprop(_Scratch):
    """``h = decay_rate * h + (1 - decay_rate) * g * g; p -= lr * g / (sqrt(h) + 1e-7)``."""

    def __init__(self, lr=0.01, decay_rate=0.99):
        self.lr = lr
        self.decay_rate = decay_rate
        self.h = None

    def update(self, params, grads):
        if self.h is None:
            self.h = [np.zeros_like(p) for p in params]
        buf, den = self._buffers(params), self._buffers(params, "d")
        for p, g, h, s, d in zip(params, grads, self.h, buf, den):
            h *= self.decay_rate
            np.multiply(g, 1 - self.decay_rate, out=s)
            s *= g
            h += s
            _step(p, g, self.lr, h, s, d)


def _step(p, g, lr, h, s, d):
    """``p -= lr * g / (sqrt(h) + 1e-7)`` in the scratch arrays ``s``, ``d``."""
    np.sqrt(h, out=d)
    d += 1e-7
    np.multiply(g, lr, out=s)
    s /= d
    p -= s


class Adam(_Scratch):
    """The book's Adam: ``m += (1 - beta1)(g - m)``, ``v += (1 - beta2)(g^2 - v)``,
    ``p -= lr_t m / (sqrt(v) + 1e-7)`` with ``lr_t = lr sqrt(1 - beta2^iter) / (1 - beta1^iter)``."""

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999):
        self.lr = lr
        self.beta1 = beta1
        self.beta2 = beta2
        self.iter = 0
        self.m = None
        self.v = None

    def update(self, params, grads):
        if self.m is None:
            self.m = [np.zeros_like(p) for p in params]
            self.v = [np.zeros_like(p) for p in params]
        self.iter += 1
        # a NumPy float64, as the book's np.sqrt makes it: the step below is then float64, as the book's
        lr_t = self.lr * np.sqrt(1.0 - self.beta2**self.iter) / (1.0 - self.beta1**self.iter)
        kernels = accel.kernels()
        if kernels is not None and all(accel.fusable(p, g, m, v) for p, g, m, v in zip(params, grads, self.m, self.v)):
            for p, g, m, v in zip(params, grads, self.m, self.v):  # one fused pass per parameter
                kernels.book_adam_update(*(a.reshape(-1) for a in (p, g, m, v)), self.beta1, self.beta2, float(lr_t))
            return
        buf = self._buffers(params)
        wide = self._buffers(params, "step", np.float64)  # lr_t * m in float64
        for p, g, m, v, s, st in zip(params, grads, self.m, self.v, buf, wide):
            np.subtract(g, m, out=s)
            s *= 1 - self.beta1
            m += s
            np.square(g, out=s)
            s -= v
            s *= 1 - self.beta2
            v += s
            np.multiply(m, lr_t, out=st)
            np.sqrt(v, out=s)
            s += 1e-7
            st /= s
            p -= st
