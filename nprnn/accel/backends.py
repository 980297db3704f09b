"""The time-loop backend: ``"numpy"`` (the reference) or ``"numba"`` (``nprnn.accel.numba_kernels``,
imported, and so numba, only when selected)."""

import os
import warnings

import numpy as np

BACKENDS = ("numpy", "numba")
_state = {"backend": "numpy", "kernels": None}


def use(name):
    """Select the time-loop backend: ``"numpy"`` (or ``None``) or ``"numba"`` (raises ImportError without numba)."""
    name = "numpy" if name in (None, "none", "") else str(name).lower()
    if name not in BACKENDS:
        raise ValueError(f"nprnn.accel: backend must be one of {BACKENDS}, got {name!r}")
    kernels = None
    if name == "numba":
        # numba's OpenMP threads spin ~16 ms after each parallel region by default (GOMP_SPINCOUNT
        # 300000), stealing a core from the BLAS calls between the time loops; 10000 is ~0.5 ms.
        os.environ.setdefault("GOMP_SPINCOUNT", "10000")
        try:
            from nprnn.accel import numba_kernels as kernels
        except ImportError as err:
            raise ImportError(f"nprnn.accel: backend 'numba' needs numba (pip install nprnn[accel]): {err}") from err
    _state["backend"], _state["kernels"] = name, kernels


def backend():
    """The selected time-loop backend, ``"numpy"`` or ``"numba"``."""
    return _state["backend"]


def kernels():
    """The kernel module when the numba backend is selected, else None (the layers then use NumPy)."""
    return _state["kernels"]


def matmul(a, b, out=None):
    """``a @ b`` for 2-D arrays: on the numba backend the packed kernels (``nprnn.accel.packed``) for
    float32 and float64, so that a time layer's products and its time loop share one pool of threads;
    ``np.matmul`` otherwise. ``out``, if given, receives the result."""
    kernels = _state["kernels"]
    if kernels is None or a.dtype != b.dtype or a.dtype not in _PACKED:
        return np.matmul(a, b, out=out)
    return kernels.matmul(a, b, out)


_PACKED = (np.dtype(np.float32), np.dtype(np.float64))


def from_environment():
    """``NPRNN_ACCEL``: a bad value warns and keeps NumPy."""
    name = os.environ.get("NPRNN_ACCEL", "").strip().lower()
    try:
        use(name or None)
    except (ImportError, ValueError) as err:
        warnings.warn(f"NPRNN_ACCEL={name!r} ignored, using NumPy: {err}", RuntimeWarning, stacklevel=3)
