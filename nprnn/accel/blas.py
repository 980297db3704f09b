"""How many BLAS threads the products of the time layers (and ``TimeAffine``) use.

``with threads_for(flops, largest):`` runs the products inside under the setting of
``set_blas_threads``:

- ``"auto"`` (default): a call whose per-step product has fewer than ``SMALL_FLOPS`` floating-point
  operations runs all its products on one thread, unless its largest product is under
  ``SINGLE_THREAD_FLOPS`` (OpenBLAS keeps such a call on one thread by itself: left alone); any
  other call uses BLAS's own threads. Decided from the sizes alone, so reproducible.
- ``"adaptive"``: as ``"auto"``, and every product on one thread while other processes keep
  ``BUSY_LOAD`` (half) a core busy or more, or the hypervisor takes ``BUSY_STEAL`` of a core from this
  machine (``machine_busy``, from Linux's /proc). NOT reproducible: 1 and 2 threads may round float32
  products differently, so the numbers depend on the load.
- ``n >= 1``: at most ``n`` threads; ``0``: BLAS's own setting.

Applied through ``threadpoolctl`` when it is installed, otherwise without effect; while capped, the
whole process's BLAS runs with the capped threads. Why these thresholds: docs/performance.md.
"""

import math
import os
import threading
import time
import warnings

import numpy as np

from nprnn.accel import mkl

POLICIES = ("auto", "adaptive")  # the settings of set_blas_threads that are not a fixed number

SMALL_FLOPS = 1.5e6  # "auto": calls whose per-step product is smaller than this run on one BLAS thread
# OpenBLAS runs a product of up to about 2 MFLOP on one thread by itself (measured: (100, 100) @ (100, 100)
# takes 19 us with 1 or 2 threads, (140, 100) @ (100, 100) 31 us vs 20 us), so a call whose largest product
# is below this needs no cap, and skips the ~15 us of setting and restoring BLAS's threads.
SINGLE_THREAD_FLOPS = 2e6
BUSY_LOAD = 0.5  # "adaptive": other processes' load (runnable tasks) from which all products run on one thread
# "adaptive": CPU time the hypervisor gives other guests ("steal"), in cores, from which all products run
# on one thread: threads that meet at every step wait for the one whose core is taken (measured in
# docs/performance.md, "adaptive"; a 2-core VM showed about 1% steal idle, 0-6% during benchmarks).
BUSY_STEAL = 0.1
_state = {"blas_threads": "auto"}
_load = {"checked": -math.inf, "busy": False, "others": 0.0, "stolen": 0.0, "stat": None}
_blas = {"libs": None, "counters": None, "setters": None, "architecture": None, "depth": 0, "saved": None}
_blas["lock"] = threading.Lock()


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
    """Whether the machine is too busy for threads that wait for each other: averaged over about 5
    seconds, the runnable tasks that are not threads of this process are at least ``BUSY_LOAD``, or
    the CPU time the hypervisor takes (``_stolen_cores``) is at least ``BUSY_STEAL`` of a core.
    Sampled at most once a second; False where it cannot be read (it needs Linux's /proc)."""
    now = time.monotonic()
    if now - _load["checked"] < 1.0:
        return _load["busy"]
    keep = math.exp(-(now - _load["checked"]) / 5)  # 0 on the first sample
    sample, stolen = _others_running(), _stolen_cores()
    if sample is not None:
        _load["others"] = keep * _load["others"] + (1 - keep) * sample
    if stolen is not None:
        _load["stolen"] = keep * _load["stolen"] + (1 - keep) * stolen
    busy = sample is not None and _load["others"] >= BUSY_LOAD
    busy = busy or (stolen is not None and _load["stolen"] >= BUSY_STEAL)
    _load["checked"], _load["busy"] = now, busy
    return busy


def one_thread_for_load():
    """Whether the setting is ``"adaptive"`` and the machine busy (``machine_busy``): then every product
    and every split over the cores runs on one thread."""
    return _state["blas_threads"] == "adaptive" and machine_busy()


def steal_ticks(stat_path="/proc/stat"):
    """``(steal, total, cpus)`` from Linux's /proc/stat: the ``steal`` ticks of its ``cpu`` line, the
    sum of that line's first eight columns (user ... steal; guest time is inside user), and the
    number of CPUs; None without a readable /proc/stat."""
    try:
        with open(stat_path) as f:
            lines = f.read().splitlines()
        ticks = [int(v) for v in lines[0].split()[1:9]]  # user nice system idle iowait irq softirq steal
        steal = ticks[7]
    except (OSError, ValueError, IndexError):
        return None
    return steal, sum(ticks), sum(1 for line in lines[1:] if line.startswith("cpu"))


def _stolen_cores(stat_path="/proc/stat"):
    """The CPU time the hypervisor gave to others since the last call, in cores (``steal_ticks``: the
    stolen share of all ticks, times the CPUs); None on the first call or without /proc/stat."""
    now = steal_ticks(stat_path)
    if now is None:
        return None
    steal, total, cpus = now
    previous, _load["stat"] = _load["stat"], (steal, total)
    if previous is None or total <= previous[1]:
        return None
    return max(steal - previous[0], 0) / (total - previous[1]) * max(cpus, 1)


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
    return 1 if one_thread_for_load() else 0


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
                    if self.cap == 1 and single_threaded():
                        self.entered = False  # nothing to cap or restore (threadpoolctl's calls cost ~5 us)
                        return self
                    _blas["saved"] = [count() for count in _thread_counters()]
                    for set_threads, saved in zip(_thread_setters(), _blas["saved"]):
                        set_threads(min(self.cap, saved))
                _blas["depth"] += 1
                self.entered = True
        return self

    def __exit__(self, *exc):
        if self.libs and self.entered:
            with _blas["lock"]:
                _blas["depth"] -= 1
                if _blas["depth"] == 0:
                    for set_threads, saved in zip(_thread_setters(), _blas["saved"]):
                        set_threads(saved)


def openblas_one_thread(default, small_kernels):
    """The largest ``M K C`` that BLAS runs on the calling thread by itself: ``small_kernels`` when it is
    OpenBLAS with its SkylakeX kernels (their small-matrix code, single-threaded), else ``default``. From
    the library threadpoolctl finds (machine and library, never the load); ``default`` without it."""
    if _blas["architecture"] is None:
        names = [getattr(lib, "architecture", None) for lib in _blas_libraries() if lib.internal_api == "openblas"]
        _blas["architecture"] = str(names[0]).lower() if len(names) == 1 else ""
    return small_kernels if _blas["architecture"] == "skylakex" else default


def can_cap():
    """Whether BLAS's threads can be capped here (threadpoolctl is installed and finds a BLAS)."""
    return bool(_blas_libraries())


def single_threaded():
    """Whether BLAS runs on one thread now (set so by ``OPENBLAS_NUM_THREADS=1``, threadpoolctl or a
    capping context); False when it cannot be told (no threadpoolctl)."""
    counters = _thread_counters()
    return bool(counters) and all(count() == 1 for count in counters)


def _thread_counters():
    """A function per BLAS library that returns its thread count: OpenBLAS's C function itself, looked
    up once (threadpoolctl's ``get_num_threads`` looks the symbol up at every call, which held a few
    more bytes each time: single_threaded runs before every product)."""
    if _blas["counters"] is None:
        _blas["counters"] = _thread_functions("get_num_threads", "omp_get_max_threads", "openblas_get_num_threads")
    return _blas["counters"]


def _thread_setters():
    """The same for setting the thread count (threadpoolctl's ``set_num_threads`` looked the symbol up:
    4 us of the 5 a capping context cost around a 8 us product)."""
    if _blas["setters"] is None:
        _blas["setters"] = _thread_functions("set_num_threads", "omp_set_num_threads", "openblas_set_num_threads")
    return _blas["setters"]


def _thread_functions(method, openmp_symbol, openblas_symbol):
    """Per BLAS library (in ``_blas_libraries``' order): OpenBLAS's C function for the thread count, as
    threadpoolctl picks it (OpenMP's for an OpenMP build), else threadpoolctl's ``method``."""
    functions = []
    for lib in _blas_libraries():
        function = getattr(lib, method)
        if lib.internal_api == "openblas" and hasattr(lib, "_get_symbol"):
            openmp = getattr(lib, "threading_layer", None) == "openmp"
            function = lib._get_symbol(openmp_symbol if openmp else openblas_symbol) or function
        functions.append(function)
    return functions


def one_thread():
    """``with one_thread():`` runs BLAS on the calling thread only (as ``threads_for`` with a cap of 1).
    OpenBLAS's worker threads, once woken, spin for about 0.1 s after each call and slow whatever
    else runs on the cores meanwhile, such as numba's kernels: what runs beside them calls BLAS so."""
    context = threads_for.__new__(threads_for)
    context.cap, context.libs = 1, _blas_libraries()
    return context


_pools = {}  # worker count -> ThreadPoolExecutor, kept for the process's life
os.register_at_fork(after_in_child=_pools.clear)  # a forked child has none of their threads


def _executor(workers):
    """One pool per worker count, made on first use and never replaced (a replaced pool's threads
    would live on)."""
    if workers not in _pools:
        from concurrent.futures import ThreadPoolExecutor

        _pools[workers] = ThreadPoolExecutor(workers, thread_name_prefix="nprnn-blas")
    return _pools[workers]


def in_row_blocks(function, rows, parts=None):
    """``function(lo, hi)`` for ``parts`` blocks of ``range(rows)`` side by side (the caller does the
    first, a pool thread each other; NumPy releases the GIL in its loops over large arrays). For
    work done row by row, whose results do not depend on the blocks. ``parts``: the cores, at most 4
    (one while ``one_thread_for_load``)."""
    parts = min(parts or (1 if one_thread_for_load() else _cores()), max(rows, 1))
    bounds = [rows * i // parts for i in range(parts + 1)]
    pool = _executor(parts - 1) if parts > 1 else None
    futures = [pool.submit(function, lo, hi) for lo, hi in zip(bounds[1:-1], bounds[2:])]
    function(bounds[0], bounds[1])
    for future in futures:
        future.result()


def _cores():
    try:
        return max(1, min(4, len(os.sched_getaffinity(0))))
    except AttributeError:  # not Linux
        return max(1, min(4, os.cpu_count() or 1))


def split_matmul(a, b, out, parts):
    """``out = a @ b`` as ``parts`` products run side by side, each on one BLAS thread (the caller and
    ``parts - 1`` threads of a pool kept for it): blocks of rows for an output at least as tall as it
    is wide, else blocks of columns. As fast as BLAS's own threads on large products, without waking
    them (``one_thread``). The blocks depend on the sizes only."""
    M, C = a.shape[0], b.shape[1]
    if M >= C:  # (2240, 650) @ (650, 650): 262 GFLOP/s by columns, 282 by rows (Intel Xeon, 2 threads)
        bounds = [M * i // parts for i in range(parts)] + [M]
        blocks = [(a[lo:hi], b, out[lo:hi]) for lo, hi in zip(bounds, bounds[1:])]
    else:  # (700, 650) @ (650, 2600): 302 by columns, 294 by rows
        bounds = [C * i // parts // 16 * 16 for i in range(parts)] + [C]  # 16: whole vectors per block
        blocks = [(a, b[:, lo:hi], out[:, lo:hi]) for lo, hi in zip(bounds, bounds[1:])]
    (a0, b0, out0), *rest = blocks
    with one_thread():
        futures = [_executor(parts - 1).submit(_block_matmul, x, w, o) for x, w, o in rest]
        _block_matmul(a0, b0, out0)
        for future in futures:
            future.result()
    return out


def _block_matmul(a, b, out):
    """One block of ``split_matmul`` on the calling thread: MKL's sequential GEMM where it is installed
    and chosen (``nprnn.accel.mkl``), else NumPy's BLAS (capped to this thread by ``one_thread``)."""
    if not mkl.matmul(a, b, out):
        np.matmul(a, b, out=out)


def threads_for_time_layer(N, T, D, H, gates):
    """``threads_for`` a forward or backward call of a time layer on ``(N, T, D)`` inputs with ``gates``
    blocks of ``H`` units: its per-step product is ``(N, H) @ (H, gates H)``, its largest one
    ``(T N, max(D, H)) @ (max(D, H), gates H)`` (input projection, weight gradients)."""
    width = gates * H
    return threads_for(2 * N * H * width, 2 * T * N * width * max(H, D))


def from_environment():
    """``NPRNN_BLAS_THREADS``: a bad value warns and keeps ``"auto"``."""
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
