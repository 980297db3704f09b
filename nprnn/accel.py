"""Settings for the time loops of ``TimeRNN``, ``TimeLSTM`` and ``TimeGRU``: an optional compiled accelerator
and the number of BLAS threads used inside the loops. Neither changes results beyond float rounding.

Each time step of a recurrent layer is one small matrix product ``h_prev @ Wh`` plus a few elementwise
operations on ``(N, H)`` arrays, and steps cannot overlap. Two things limit the speed of such a loop:

- **Per-step overhead.** NumPy spends a call (about a microsecond) and a pass over memory on every
  elementwise operation: an LSTM step is a dozen of them. ``accel="numba"`` replaces them by one fused,
  vectorised kernel per step (``nprnn/layers/_kernels.py``); the matrix products stay NumPy's.
- **BLAS threads.** A multi-threaded BLAS call ends at a barrier where every thread waits for the
  slowest. On a busy machine a waiting thread may not run for a whole scheduler time slice, and
  OpenBLAS's threads spin meanwhile: measured on a loaded 2-core machine, a (64, 650) @ (650, 2600)
  product took 48 ms of wall time (24 ms of CPU) with 2 threads against 6.5 ms (2.6 ms of CPU) with one.
  A time loop makes ``2 T`` such calls per forward+backward, so by default the loops run BLAS with one
  thread; the large products outside the loops (the input projection and the weight gradients of all
  steps at once) keep BLAS's own threading.

Settings, read from the environment when ``nprnn`` is imported and changeable at run time:

``NPRNN_ACCEL=numba``, ``use("numba")``
    Fused numba kernels (``pip install nprnn[accel]``). numba is imported, and the kernels compiled
    (a few seconds, cached on disk afterwards), on first use. Unset, ``numpy`` or ``none``: pure NumPy,
    the default and the reference implementation.
``NPRNN_LOOP_THREADS=1``, ``set_loop_threads(n)``
    BLAS threads inside the time loops: ``1`` (default) or any ``n``; ``0`` leaves BLAS alone (try it on an
    idle many-core machine with large ``H``). Applied through ``threadpoolctl`` when it is installed,
    otherwise it has no effect. While a loop runs, this lowers the thread count of the process's BLAS.
"""

import contextlib
import os
import threading
import warnings

BACKENDS = ("numpy", "numba")

_state = {"backend": "numpy", "kernels": None, "loop_threads": 1}
_blas = {"libs": None, "depth": 0, "saved": None, "lock": threading.Lock()}


def use(backend):
    """Select the time-loop backend: ``"numpy"`` (or ``None``) or ``"numba"`` (raises ImportError without numba)."""
    backend = "numpy" if backend in (None, "none", "") else str(backend).lower()
    if backend not in BACKENDS:
        raise ValueError(f"nprnn.accel: backend must be one of {BACKENDS}, got {backend!r}")
    kernels = None
    if backend == "numba":
        try:
            from nprnn.layers import _kernels as kernels
        except ImportError as err:
            raise ImportError(f"nprnn.accel: backend 'numba' needs numba (pip install nprnn[accel]): {err}") from err
    _state["backend"], _state["kernels"] = backend, kernels


def backend():
    """The selected time-loop backend, ``"numpy"`` or ``"numba"``."""
    return _state["backend"]


def kernels():
    """The kernel module when the numba backend is selected, else None (the layers then use NumPy)."""
    return _state["kernels"]


def set_loop_threads(n):
    """BLAS threads inside the time loops; ``0`` leaves BLAS's own setting alone."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"nprnn.accel: loop threads must be an integer >= 0, got {n!r}")
    _state["loop_threads"] = n


def loop_threads():
    """The number set by ``set_loop_threads`` (``0``: BLAS decides)."""
    return _state["loop_threads"]


def _blas_libraries():
    if _blas["libs"] is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            _blas["libs"] = []
        else:
            _blas["libs"] = list(ThreadpoolController().select(user_api="blas").lib_controllers)
    return _blas["libs"]


@contextlib.contextmanager
def time_loop():
    """Context for a time loop: caps the BLAS threads at ``loop_threads()`` and restores them afterwards.

    Re-entrant and thread-safe: with loops running in several threads, the first one in saves the
    setting and the last one out restores it.
    """
    n = _state["loop_threads"]
    libs = _blas_libraries() if n else []
    if not libs:
        yield
        return
    with _blas["lock"]:
        if _blas["depth"] == 0:
            _blas["saved"] = [lib.get_num_threads() for lib in libs]
            for lib, saved in zip(libs, _blas["saved"]):
                lib.set_num_threads(min(n, saved))
        _blas["depth"] += 1
    try:
        yield
    finally:
        with _blas["lock"]:
            _blas["depth"] -= 1
            if _blas["depth"] == 0:
                for lib, saved in zip(libs, _blas["saved"]):
                    lib.set_num_threads(saved)


def _from_environment():
    name = os.environ.get("NPRNN_ACCEL", "").strip().lower()
    try:
        use(name or None)
    except (ImportError, ValueError) as err:
        warnings.warn(f"NPRNN_ACCEL={name!r} ignored, using NumPy: {err}", RuntimeWarning, stacklevel=3)
    threads = os.environ.get("NPRNN_LOOP_THREADS", "").strip()
    if threads:
        try:
            set_loop_threads(int(threads))
        except ValueError:
            warnings.warn(
                f"NPRNN_LOOP_THREADS={threads!r} ignored: expected an integer >= 0", RuntimeWarning, stacklevel=3
            )


_from_environment()
