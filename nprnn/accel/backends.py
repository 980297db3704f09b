"""The time-loop backend: ``"numba"`` (``nprnn.accel.numba_kernels`` and ``packed``, the default where
numba is installed: ``pip install nprnn[train]`` or ``[accel]``) or ``"numpy"`` (the reference, and
the fallback without numba). numba is imported when the backend is first needed, not with nprnn."""

import os
import warnings

import numpy as np

BACKENDS = ("numpy", "numba")
_state = {"backend": None, "kernels": None}  # None: "auto" not yet resolved


def use(name):
    """Select the time-loop backend: ``"numba"``, ``"numpy"`` (``None`` or ``"none"``: ``"numpy"``) or
    ``"auto"`` (numba where it imports, else numpy). ``"numba"`` raises ImportError without numba."""
    name = "numpy" if name in (None, "none", "") else str(name).lower()
    if name not in BACKENDS + ("auto",):
        raise ValueError(f"nprnn.accel: backend must be one of {BACKENDS + ('auto',)}, got {name!r}")
    if name == "auto":
        _state["backend"], _state["kernels"] = None, None
        return
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


def _resolve():
    if _state["backend"] is None:  # "auto"
        try:
            use("numba")
        except ImportError:
            use("numpy")


def backend():
    """The selected time-loop backend, ``"numpy"`` or ``"numba"``."""
    _resolve()
    return _state["backend"]


def kernels():
    """The kernel module when the numba backend is selected, else None (the layers then use NumPy)."""
    _resolve()
    return _state["kernels"]


def matmul(a, b, out=None):
    """``a @ b`` for 2-D arrays: on the numba backend the packed kernels (``nprnn.accel.packed``) for
    float32 and float64, so that a time layer's products and its time loop share one pool of threads;
    ``np.matmul`` otherwise. ``out``, if given, receives the result."""
    k = kernels()
    if k is None or a.dtype != b.dtype or a.dtype not in _PACKED:
        return np.matmul(a, b, out=out)
    return k.matmul(a, b, out)  # which raises on overflow under np.errstate as np.matmul does


_PACKED = (np.dtype(np.float32), np.dtype(np.float64))


def fusable(*arrays):
    """Whether a fused elementwise kernel (the optimizers' updates) can take these arrays as flat
    views: all C-contiguous, of one shape and one float dtype, float32 or float64."""
    first = arrays[0]
    return first.dtype in _PACKED and all(
        a.flags.c_contiguous and a.dtype == first.dtype and a.shape == first.shape for a in arrays
    )


def from_environment():
    """``NPRNN_ACCEL``: ``numba``, ``numpy`` or unset / ``auto`` (numba where installed); a bad value
    warns and keeps the default."""
    name = os.environ.get("NPRNN_ACCEL", "").strip().lower() or "auto"
    try:
        use(name)
    except (ImportError, ValueError) as err:
        warnings.warn(f"NPRNN_ACCEL={name!r} ignored, using the default: {err}", RuntimeWarning, stacklevel=3)
        use("auto")
