"""Numerical gradients by central differences, for checking hand-written backward passes.

Use float64: with float32 the finite-difference error swamps the comparison.
"""

import numpy as np


def numerical_gradient(f, x, eps=1e-6):
    """d f() / d x by central differences, perturbing ``x`` in place (and restoring it).

    ``f`` takes no arguments and returns a scalar; it must read ``x`` (a float array)
    each time it is called.
    """
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        saved = x[i]
        x[i] = saved + eps
        f_plus = f()
        x[i] = saved - eps
        f_minus = f()
        x[i] = saved
        grad[i] = (f_plus - f_minus) / (2 * eps)
    return grad


def relative_error(a, b):
    """max |a - b| / max(1, |a|, |b|) elementwise: small for both tiny and large gradients."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(1.0, np.maximum(np.abs(a), np.abs(b))), initial=0.0))
