"""Speed settings of the time layers ``TimeRNN``, ``TimeLSTM``, ``TimeGRU`` (and ``TimeAffine``'s BLAS
threads). A leaf below ``nprnn.layers``: nothing here imports the layers or anything above them.

Settings, read from the environment when ``nprnn.accel`` is first imported and changeable at run time:

``NPRNN_ACCEL=auto``, ``use("auto")`` (``backends``)
    The default: the numba kernels (``numba_kernels``, ``packed``: packed small-batch products and
    fused step kernels; ``pip install nprnn[train]`` or ``[accel]``) where numba imports, else NumPy.
    numba is imported, and the kernels compiled (cached on disk), only when a layer first needs them.
    ``numpy`` (also ``none``) selects the reference implementation, ``numba`` insists on numba.
``NPRNN_BLAS_THREADS``, ``set_blas_threads(...)`` (``blas``)
    How many BLAS threads a time layer's products use: ``auto`` (default) decides from the
    problem's sizes alone; ``adaptive`` also runs on one thread, numba's kernels included, while
    the machine is busy (other processes, or a hypervisor taking CPU time);
    ``n >= 1`` caps every product at ``n`` threads; ``0`` leaves BLAS alone.
``NPRNN_BLAS=auto`` (``mkl``)
    Which library runs the large products that ``blas.split_matmul`` splits over the cores: with the
    optional ``mkl`` wheel (``pip install nprnn[mkl]``) and an Intel CPU, MKL's sequential GEMM in its
    reproducible (CNR) mode, else NumPy's BLAS; ``mkl`` insists on MKL where installed (AMD too),
    ``openblas`` keeps NumPy's BLAS. Read once, when the first large product runs.
``NPRNN_RETAIN_MEMORY=0`` (``memory``)
    Keeps ``retain_freed_memory()``, which the training loops call, from changing glibc's malloc
    thresholds (freed large arrays then go back to the kernel and are page-faulted in again).

Determinism: with every setting but ``adaptive``, a run's numbers depend only on its inputs, seed
and options and on the machine's CPU and BLAS, never on the load or timing. ``adaptive`` is faster
on a shared machine but NOT reproducible: 1 and 2 BLAS threads may round float32 products
differently. The backends agree to float rounding, not bit for bit. Why and what was measured:
docs/performance.md.
"""

from nprnn.accel import backends, blas
from nprnn.accel.backends import BACKENDS, backend, fusable, kernels, matmul, use
from nprnn.accel.blas import (
    BUSY_LOAD,
    BUSY_STEAL,
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
from nprnn.accel.memory import retain_freed_memory

__all__ = [
    "BACKENDS", "use", "backend", "kernels", "matmul", "fusable",
    "POLICIES", "SMALL_FLOPS", "SINGLE_THREAD_FLOPS", "BUSY_LOAD", "BUSY_STEAL",
    "set_blas_threads", "blas_threads", "machine_busy", "threads_for", "threads_for_time_layer",
    "one_thread", "in_row_blocks", "retain_freed_memory",
]  # fmt: skip

backends.from_environment()
blas.from_environment()
