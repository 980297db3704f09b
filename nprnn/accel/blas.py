"""Settings for the time layers ``TimeRNN``, ``TimeLSTM`` and ``TimeGRU``: an optional compiled accelerator
for their time loops, and how many BLAS threads their matrix products use. Neither changes results
beyond float rounding.

Each time step of a recurrent layer is one small matrix product ``h_prev @ Wh`` plus a few elementwise
operations on ``(N, H)`` arrays, and steps cannot overlap. Two things limit the speed of such a loop:

- **Per-step overhead.** NumPy spends a call (about a microsecond) and a pass over memory on every
  elementwise operation: an LSTM step is a dozen of them. ``use("numba")`` replaces them by one fused,
  vectorised kernel per step (``nprnn/layers/_kernels.py``); the matrix products stay NumPy's.
- **BLAS threads.** A multi-threaded BLAS call ends at barriers where every thread waits for the
  slowest. On an idle 2-core machine 2 threads make a product 1.4x faster at 2.6 MFLOP and 1.8-2x
  from 10 MFLOP up, but on a busy machine a waiting thread may not run for a whole scheduler time
  slice while OpenBLAS's threads spin: measured with 5 other busy processes on 2 cores, a
  (64, 650) @ (650, 2600) product took 48 ms of wall time (24 ms of CPU) with 2 threads against
  6.5 ms (2.6 ms of CPU) with one, and a time loop makes ``2 T`` such calls per forward+backward.

It takes little: with one other busy process on an otherwise idle 2-core machine, that product took
24 ms with 2 threads against 2.3 ms with one, and a 10 MFLOP one 16 ms against 0.12 ms.

So, by default (``"auto"``), a forward or backward call of a time layer runs all its products, the
per-step ones and the all-steps ones (input projection, weight gradients), on one BLAS thread if its
per-step product has fewer than ``SMALL_FLOPS`` (1.5 MFLOP) floating-point operations; otherwise BLAS
uses its own threads. The choice depends on the sizes alone, never on the machine's load: 1 and 2
OpenBLAS threads may round float32 products differently, so a run's numbers would otherwise depend
on what else runs on the machine. The opt-in ``"adaptive"`` also runs every product on one thread
when the machine is busy (other processes' runnable tasks, averaged over about 5 seconds, are at
least ``BUSY_LOAD`` (0.5), i.e. they keep half a core busy; read from Linux's /proc): faster on a
shared machine, but NOT reproducible. Threading only the all-steps products
of a call with small per-step products does not pay: their threads spin between them, against the
rest of the call and other processes' threads (measured next to a torch process on the idle machine:
TimeLSTM (10, 5, 100, 100) took 3.5 ms that way, 0.6 ms on one thread). A call whose largest product
is under ``SINGLE_THREAD_FLOPS`` (2 MFLOP, which OpenBLAS runs on one thread by itself) is left
alone. ``threads_for_time_layer`` works out both figures from a call's sizes.

The output layer ``TimeAffine`` runs its products under the same policy (judged by the product's own
FLOPs): on a busy machine a 2-thread (512, 256) @ (256, 13) product of a seq2seq decoder took 16 ms
where it takes 0.16 ms.

Settings, read from the environment when ``nprnn.accel`` is first imported and changeable at run time:

``NPRNN_ACCEL=numba``, ``use("numba")``
    Fused numba kernels (``pip install nprnn[accel]``). numba is imported, and the kernels compiled
    (a few seconds, cached on disk afterwards), when this is selected. Unset, ``numpy`` or ``none``:
    pure NumPy, the default and the reference implementation.
``NPRNN_BLAS_THREADS=auto``, ``set_blas_threads(n)``
    ``auto`` (default) as above, reproducible; ``adaptive``: ``auto`` plus one thread whenever the
    machine is busy, NOT reproducible (results depend on the load); ``n >= 1``: every product of
    the time layers runs on at most ``n`` BLAS threads; ``0``: leave BLAS alone. Applied through
    ``threadpoolctl`` when it is installed, otherwise it has no effect. While capped, the whole
    process's BLAS runs with the capped threads.
"""

import math
import os
import threading
import time
import warnings

BACKENDS = ("numpy", "numba")
POLICIES = ("auto", "adaptive")  # the settings of set_blas_threads that are not a fixed number

SMALL_FLOPS = 1.5e6  # "auto": calls whose per-step product is smaller than this run on one BLAS thread
# OpenBLAS runs a product of up to about 2 MFLOP on one thread by itself (measured: (100, 100) @ (100, 100)
# takes 19 us with 1 or 2 threads, (140, 100) @ (100, 100) 31 us vs 20 us), so a call whose largest product
# is below this needs no cap, and skips the ~15 us of setting and restoring BLAS's threads.
SINGLE_THREAD_FLOPS = 2e6
BUSY_LOAD = 0.5  # "adaptive": other processes' load (runnable tasks) from which all products run on one thread
_state = {"backend": "numpy", "kernels": None, "blas_threads": "auto"}
_load = {"checked": -math.inf, "busy": False, "others": 0.0}
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
    """``"auto"`` (from the sizes, reproducible), ``"adaptive"`` (also from the machine's load, NOT
    reproducible), a cap ``n >= 1`` on the BLAS threads of every product of the time layers, or ``0`` (no cap)."""
    if n not in POLICIES and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
        raise ValueError(f"nprnn.accel: BLAS threads must be 'auto', 'adaptive' or an integer >= 0, got {n!r}")
    _state["blas_threads"] = n


def blas_threads():
    """The setting made by ``set_blas_threads``: ``"auto"``, ``"adaptive"``, a cap ``n >= 1``, or ``0`` (no cap)."""
    return _state["blas_threads"]


def machine_busy():
    """Whether other processes keep half a core busy: the number of runnable tasks on the machine that
    are not threads of this process, averaged over about 5 seconds, is at least ``BUSY_LOAD``.
    Sampled at most once a second; False where it cannot be read (it needs Linux's /proc)."""
    now = time.monotonic()
    if now - _load["checked"] < 1.0:
        return _load["busy"]
    sample = _others_running()
    if sample is not None:
        keep = math.exp(-(now - _load["checked"]) / 5)  # 0 on the first sample
        _load["others"] = keep * _load["others"] + (1 - keep) * sample
    _load["checked"], _load["busy"] = now, sample is not None and _load["others"] >= BUSY_LOAD
    return _load["busy"]


def _others_running():
    """Runnable tasks right now that are not threads of this process, or None without Linux's /proc.
    (The load average would do too, but it lags by a minute and counts this process's own threads.)"""
    try:
        with open("/proc/loadavg") as f:
            running = int(f.read().split()[3].split("/")[0])  # "0.52 0.58 0.59 3/407 12345"
        own = 0
        for task in os.scandir("/proc/self/task"):
            with open(os.path.join(task.path, "stat")) as f:
                own += f.read().rpartition(")")[2].split()[0] == "R"
    except (OSError, ValueError, IndexError):
        return None
    return max(running - own, 0)


def _blas_libraries():
    if _blas["libs"] is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            _blas["libs"] = []
        else:
            _blas["libs"] = list(ThreadpoolController().select(user_api="blas").lib_controllers)
    return _blas["libs"]


def _cap(flops, largest):
    setting = _state["blas_threads"]
    if setting not in POLICIES:
        return setting
    if largest is not None and largest < SINGLE_THREAD_FLOPS:
        return 0  # BLAS keeps every product of the call on one thread anyway
    if flops < SMALL_FLOPS:
        return 1
    # "auto" decides from the sizes alone, so the numbers never depend on the load; only the opt-in
    # "adaptive" also looks at the machine (1 and 2 BLAS threads may round float32 products differently).
    return 1 if setting == "adaptive" and machine_busy() else 0


class threads_for:
    """``with threads_for(flops, largest):`` runs the products inside with the BLAS threads the setting
    gives a time-layer call whose per-step product has ``flops`` floating-point operations and whose
    largest product (e.g. the all-steps input projection) has ``largest`` (see the module docstring),
    then restores BLAS's own setting.

    Re-entrant and thread-safe: the first capping context in saves BLAS's setting and the last one out
    restores it; a context inside a capping one keeps the outer cap.
    """

    def __init__(self, flops, largest=None):
        self.cap = _cap(flops, largest)
        self.libs = _blas_libraries() if self.cap else ()

    def __enter__(self):
        if self.libs:
            with _blas["lock"]:
                if _blas["depth"] == 0:
                    _blas["saved"] = [lib.get_num_threads() for lib in self.libs]
                    for lib, saved in zip(self.libs, _blas["saved"]):
                        lib.set_num_threads(min(self.cap, saved))
                _blas["depth"] += 1
        return self

    def __exit__(self, *exc):
        if self.libs:
            with _blas["lock"]:
                _blas["depth"] -= 1
                if _blas["depth"] == 0:
                    for lib, saved in zip(self.libs, _blas["saved"]):
                        lib.set_num_threads(saved)


def threads_for_time_layer(N, T, D, H, gates):
    """``threads_for`` a forward or backward call of a time layer on ``(N, T, D)`` inputs with ``gates``
    blocks of ``H`` units: its per-step product is ``(N, H) @ (H, gates H)``, its largest one
    ``(T N, max(D, H)) @ (max(D, H), gates H)`` (input projection, weight gradients)."""
    width = gates * H
    return threads_for(2 * N * H * width, 2 * T * N * width * max(H, D))


def _from_environment():
    name = os.environ.get("NPRNN_ACCEL", "").strip().lower()
    try:
        use(name or None)
    except (ImportError, ValueError) as err:
        warnings.warn(f"NPRNN_ACCEL={name!r} ignored, using NumPy: {err}", RuntimeWarning, stacklevel=3)
    threads = os.environ.get("NPRNN_BLAS_THREADS", "").strip().lower()
    if threads:
        try:
            set_blas_threads(threads if threads in POLICIES else int(threads))
        except ValueError:
            warnings.warn(
                f"NPRNN_BLAS_THREADS={threads!r} ignored: expected 'auto', 'adaptive' or an integer >= 0",
                RuntimeWarning,
                stacklevel=3,
            )


_from_environment()
