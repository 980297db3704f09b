"""The time-loop backend: ``"numpy"`` (the reference) or ``"numba"`` (``nprnn.accel.numba_kernels``,
imported, and so numba, only when selected)."""

import os
import warnings

BACKENDS = ("numpy", "numba")
_state = {"backend": "numpy", "kernels": None}


def use(name):
    """Select the time-loop backend: ``"numpy"`` (or ``None``) or ``"numba"`` (raises ImportError without numba)."""
    name = "numpy" if name in (None, "none", "") else str(name).lower()
    if name not in BACKENDS:
        raise ValueError(f"nprnn.accel: backend must be one of {BACKENDS}, got {name!r}")
    kernels = None
    if name == "numba":
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


def from_environment():
    """``NPRNN_ACCEL``: a bad value warns and keeps NumPy."""
    name = os.environ.get("NPRNN_ACCEL", "").strip().lower()
    try:
        use(name or None)
    except (ImportError, ValueError) as err:
        warnings.warn(f"NPRNN_ACCEL={name!r} ignored, using NumPy: {err}", RuntimeWarning, stacklevel=3)
