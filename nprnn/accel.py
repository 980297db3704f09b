"""Settings for the time layers ``TimeRNN``, ``TimeLSTM`` and ``TimeGRU``: an optional compiled accelerator
for their time loops, and how many BLAS threads they use. Neither changes results beyond float rounding.

Each time step of a recurrent layer is one small matrix product ``h_prev @ Wh`` plus a few elementwise
operations on ``(N, H)`` arrays, and steps cannot overlap. Two things limit the speed of such a loop:

- **Per-step overhead.** NumPy spends a call (about a microsecond) and a pass over memory on every
  elementwise operation: an LSTM step is a dozen of them. ``use("numba")`` replaces them by one fused,
  vectorised kernel per step (``nprnn/layers/_kernels.py``); the matrix products stay NumPy's.
- **BLAS threads.** A multi-threaded BLAS call ends at a barrier where every thread waits for the
  slowest. On a busy machine a waiting thread may not run for a whole scheduler time slice, and
  OpenBLAS's threads spin meanwhile: measured on a loaded 2-core machine, a (64, 650) @ (650, 2600)
  product took 48 ms of wall time (24 ms of CPU) with 2 threads against 6.5 ms (2.6 ms of CPU) with
  one, and a time loop makes ``2 T`` such calls per forward+backward. OpenBLAS already goes
  multi-threaded above about 0.5 MFLOP. So by default the time layers cap BLAS at one thread inside
  their time loops and for the all-steps products (input projection, weight gradients) under
  ``MIN_THREADED_FLOPS`` (1 GFLOP); larger products keep BLAS's own threads, which pay there.

Settings, read from the environment when ``nprnn.accel`` is first imported and changeable at run time:

``NPRNN_ACCEL=numba``, ``use("numba")``
    Fused numba kernels (``pip install nprnn[accel]``). numba is imported, and the kernels compiled
    (a few seconds, cached on disk afterwards), when this is selected. Unset, ``numpy`` or ``none``:
    pure NumPy, the default and the reference implementation.
``NPRNN_BLAS_THREADS=1``, ``set_blas_threads(n)``
    The cap described above: ``1`` (default) or any ``n``; ``0`` leaves BLAS alone everywhere (try it
    on an idle many-core machine with large ``H``). Applied through ``threadpoolctl`` when it is
    installed, otherwise it has no effect. While capped, the whole process's BLAS runs with ``n``
    threads.
"""

import os
import threading
import warnings

BACKENDS = ("numpy", "numba")

MIN_THREADED_FLOPS = 1e9  # products smaller than this run with blas_threads() threads
_state = {"backend": "numpy", "kernels": None, "blas_threads": 1}
_blas = {"libs": None, "depth": 0, "saved": None, "lock": threading.Lock()}


def use(name):
    """Select the time-loop backend: ``"numpy"`` (or ``None``) or ``"numba"`` (raises ImportError without numba)."""
    name = "numpy" if name in (None, "none", "") else str(name).lower()
    if name not in BACKENDS:
        raise ValueError(f"nprnn.accel: backend must be one of {BACKENDS}, got {name!r}")
    kernels = None
    if name == "numba":
        try:
            from nprnn.layers import _kernels as kernels
        except ImportError as err:
            raise ImportError(f"nprnn.accel: backend 'numba' needs numba (pip install nprnn[accel]): {err}") from err
    _state["backend"], _state["kernels"] = name, kernels


def backend():
    """The selected time-loop backend, ``"numpy"`` or ``"numba"``."""
    return _state["backend"]


def kernels():
    """The kernel module when the numba backend is selected, else None (the layers then use NumPy)."""
    return _state["kernels"]


def set_blas_threads(n):
    """BLAS threads for the time loops and the products under ``MIN_THREADED_FLOPS``; ``0``: BLAS decides."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"nprnn.accel: BLAS threads must be an integer >= 0, got {n!r}")
    _state["blas_threads"] = n


def blas_threads():
    """The number set by ``set_blas_threads`` (``0``: BLAS decides everywhere)."""
    return _state["blas_threads"]


def _blas_libraries():
    if _blas["libs"] is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            _blas["libs"] = []
        else:
            _blas["libs"] = list(ThreadpoolController().select(user_api="blas").lib_controllers)
    return _blas["libs"]


class few_threads:
    """``with few_threads(flops):`` caps BLAS at ``blas_threads()`` threads for a time loop (no ``flops``)
    or for products of ``flops`` floating-point operations each, if under ``MIN_THREADED_FLOPS``;
    larger products keep BLAS's own threads.

    Re-entrant and thread-safe: the first context in saves BLAS's setting, the last one out restores it.
    """

    def __init__(self, flops=None):
        n = _state["blas_threads"]
        self.libs = _blas_libraries() if n and (flops is None or flops < MIN_THREADED_FLOPS) else ()

    def __enter__(self):
        if self.libs:
            with _blas["lock"]:
                if _blas["depth"] == 0:
                    _blas["saved"] = [lib.get_num_threads() for lib in self.libs]
                    for lib, saved in zip(self.libs, _blas["saved"]):
                        lib.set_num_threads(min(_state["blas_threads"], saved))
                _blas["depth"] += 1
        return self

    def __exit__(self, *exc):
        if self.libs:
            with _blas["lock"]:
                _blas["depth"] -= 1
                if _blas["depth"] == 0:
                    for lib, saved in zip(self.libs, _blas["saved"]):
                        lib.set_num_threads(saved)


def _from_environment():
    name = os.environ.get("NPRNN_ACCEL", "").strip().lower()
    try:
        use(name or None)
    except (ImportError, ValueError) as err:
        warnings.warn(f"NPRNN_ACCEL={name!r} ignored, using NumPy: {err}", RuntimeWarning, stacklevel=3)
    threads = os.environ.get("NPRNN_BLAS_THREADS", "").strip()
    if threads:
        try:
            set_blas_threads(int(threads))
        except ValueError:
            warnings.warn(
                f"NPRNN_BLAS_THREADS={threads!r} ignored: expected an integer >= 0", RuntimeWarning, stacklevel=3
            )


_from_environment()
