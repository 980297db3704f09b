"""Speed settings of the time layers ``TimeRNN``, ``TimeLSTM``, ``TimeGRU`` (and ``TimeAffine``'s BLAS
threads). A leaf below ``nprnn.layers``: nothing here imports the layers or anything above them.

Settings, read from the environment when ``nprnn.accel`` is first imported and changeable at run time:

``NPRNN_ACCEL=numba``, ``use("numba")`` (``backends``)
    The time loops' elementwise work in fused numba kernels (``numba_kernels``; ``pip install
    nprnn[accel]``); numba is imported, and the kernels compiled, only when this is selected.
    ``numpy`` (default, also unset or ``none``) is the reference implementation.
``NPRNN_BLAS_THREADS``, ``set_blas_threads(...)`` (``blas``)
    How many BLAS threads a time layer's products use: ``auto`` (default) decides from the
    problem's sizes alone; ``adaptive`` also runs on one thread while the machine is busy;
    ``n >= 1`` caps every product at ``n`` threads; ``0`` leaves BLAS alone.

Determinism: with every setting but ``adaptive``, a run's numbers depend only on its inputs, seed
and options and on the machine's CPU and BLAS, never on the load or timing. ``adaptive`` is faster
on a shared machine but NOT reproducible: 1 and 2 BLAS threads may round float32 products
differently. The backends agree to float rounding, not bit for bit. Why and what was measured:
docs/performance.md.
"""

from nprnn.accel import backends, blas
from nprnn.accel.backends import BACKENDS, backend, kernels, matmul, use
from nprnn.accel.blas import (
    BUSY_LOAD,
    POLICIES,
    SINGLE_THREAD_FLOPS,
    SMALL_FLOPS,
    blas_threads,
    in_row_blocks,
    machine_busy,
    one_thread,
    set_blas_threads,
    threads_for,
    threads_for_time_layer,
)

__all__ = [
    "BACKENDS", "use", "backend", "kernels", "matmul",
    "POLICIES", "SMALL_FLOPS", "SINGLE_THREAD_FLOPS", "BUSY_LOAD",
    "set_blas_threads", "blas_threads", "machine_busy", "threads_for", "threads_for_time_layer",
    "one_thread", "in_row_blocks",
]  # fmt: skip

backends.from_environment()
blas.from_environment()
