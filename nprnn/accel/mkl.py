"""Intel MKL's sequential GEMM for the large products that ``blas.split_matmul`` runs side by side.

Optional (``pip install "nprnn[mkl]"``, the ``mkl`` wheel): on Intel CPUs MKL's single-threaded sgemm
runs the large products of the time layers and of ``TimeAffine`` faster than OpenBLAS's (measured in
benchmarks, see docs/performance.md). Loaded through ctypes, never imported by NumPy; used only when

- ``NPRNN_BLAS`` is ``mkl``, or unset / ``auto`` on a CPU whose vendor is ``GenuineIntel`` (MKL is slower
  than OpenBLAS on AMD's), and
- MKL accepts its sequential threading layer and the conditional numerical reproducibility mode
  ``MKL_CBWR_AUTO | MKL_CBWR_STRICT``, which makes its results the same bits from run to run whatever
  the alignment of the arrays (measured: no slower).

``NPRNN_BLAS=openblas`` keeps NumPy's BLAS for every product. The choice follows the machine and the
environment, never the load.
"""

import ctypes
import ctypes.util
import os
import re
import sys
import threading
import warnings
from pathlib import Path

import numpy as np

_SEQUENTIAL = 1  # MKL_THREADING_SEQUENTIAL
_CBWR_AUTO_STRICT = 2 | 0x10000  # MKL_CBWR_AUTO | MKL_CBWR_STRICT
_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
_state = {"gemm": None, "loaded": False, "why": "", "version": ""}
_lock = threading.Lock()


def _library_paths():
    """Where the ``mkl`` wheel puts its runtime (``<prefix>/lib``), then the system's search path."""
    for prefix in dict.fromkeys([sys.prefix, sys.base_prefix]):
        for version in ("3", "2"):
            yield Path(prefix) / "lib" / f"libmkl_rt.so.{version}"
    found = ctypes.util.find_library("mkl_rt")
    if found:
        yield found


def _cpu_vendor(cpuinfo="/proc/cpuinfo"):
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as file:
            for line in file:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


SETTINGS = ("auto", "mkl", "openblas")


def setting():
    """``NPRNN_BLAS``, lower-cased; a value not in ``SETTINGS`` warns and counts as ``auto``."""
    value = os.environ.get("NPRNN_BLAS", "auto").strip().lower() or "auto"
    if value not in SETTINGS:
        warnings.warn(
            f"NPRNN_BLAS={value!r} ignored: expected one of {', '.join(SETTINGS)}", RuntimeWarning, stacklevel=3
        )
        return "auto"
    return value


def wanted(value, vendor):
    """Whether MKL should run the large products, for the ``NPRNN_BLAS`` value and the CPU vendor."""
    return value == "mkl" or (value == "auto" and vendor == "GenuineIntel")


def _numpy_on_mkl():
    """Whether NumPy itself was built on MKL (then MKL's threading layer is NumPy's, not ours to set)."""
    try:
        name = np.__config__.CONFIG["Build Dependencies"]["blas"]["name"]
    except (AttributeError, KeyError, TypeError):
        return False
    return "mkl" in str(name).lower()


def _load():
    """``{float32: sgemm, float64: dgemm}`` of MKL set up sequential and reproducible, or None (and why)."""
    if _numpy_on_mkl():
        _state["why"] = "NumPy's BLAS is MKL already"
        return None
    for path in _library_paths():
        if isinstance(path, Path) and not path.exists():
            continue
        try:
            lib = ctypes.CDLL(str(path))
        except OSError:
            continue
        try:
            return _set_up(lib, path)
        except AttributeError as error:  # not the MKL runtime this module knows
            _state["why"] = f"{path}: {error}"
            return None
    _state["why"] = "no libmkl_rt found (pip install mkl)"
    return None


def _set_up(lib, path):
    """The GEMMs of a loaded ``libmkl_rt``, made sequential and reproducible; None if MKL refuses."""
    # Both must come before MKL's first computation: a library that something else already
    # initialised answers with its own layer, and is then left alone.
    if lib.MKL_Set_Threading_Layer(_SEQUENTIAL) != _SEQUENTIAL:
        _state["why"] = f"{path}: MKL already runs another threading layer"
        return None
    if lib.MKL_CBWR_Set(_CBWR_AUTO_STRICT) != 0:
        _state["why"] = f"{path}: MKL refused its reproducible mode"
        return None
    text = ctypes.create_string_buffer(256)
    lib.MKL_Get_Version_String(text, len(text))
    version = re.search(r"Version ([0-9.]+)", text.value.decode("ascii", "replace"))
    _state["version"] = f"MKL {version.group(1) if version else '?'}"
    gemms = {}
    for dtype, name, scalar in (
        (np.float32, "cblas_sgemm", ctypes.c_float),
        (np.float64, "cblas_dgemm", ctypes.c_double),
    ):
        gemm = getattr(lib, name)
        integer, pointer = ctypes.c_int, ctypes.c_void_p
        gemm.argtypes = [integer] * 6 + [scalar, pointer, integer, pointer, integer, scalar, pointer, integer]
        gemm.restype = None
        gemms[np.dtype(dtype)] = gemm
    return gemms


def gemms():
    """The loaded GEMMs by dtype, or None when MKL is absent or not wanted (``wanted``)."""
    if not _state["loaded"]:
        with _lock:  # split_matmul's blocks may ask from several threads at once
            if not _state["loaded"]:
                value, vendor = setting(), _cpu_vendor()
                if wanted(value, vendor):
                    _state["gemm"] = _load()
                else:
                    _state["why"] = f"NPRNN_BLAS={value}" if value != "auto" else f"CPU vendor {vendor or 'unknown'}"
                _state["loaded"] = True
    return _state["gemm"]


def describe():
    """One line for benchmark tables: which library runs the large products, and why."""
    if gemms() is not None:
        return f"large products on {_state['version']} (sequential, CNR auto strict)"
    return "large products on NumPy's BLAS" + (f" ({_state['why']})" if _state["why"] else "")


def _operand(x):
    """``(transpose flag, leading dimension)`` of a 2-D operand with contiguous rows or columns, else None."""
    step = x.itemsize
    if x.strides[1] == step and x.strides[0] % step == 0 and x.strides[0] >= step * max(1, x.shape[1]):
        return _NO_TRANS, x.strides[0] // step
    if x.strides[0] == step and x.strides[1] % step == 0 and x.strides[1] >= step * max(1, x.shape[0]):
        return _TRANS, x.strides[1] // step
    return None


def matmul(a, b, out):
    """``out[...] = a @ b`` on MKL's GEMM of this dtype (``a: (M, K)``, ``b: (K, C)``, ``out: (M, C)``
    with contiguous rows), on the calling thread; False (nothing done) where MKL cannot take them."""
    gemm = (gemms() or {}).get(out.dtype)
    if gemm is None or a.dtype != out.dtype or b.dtype != out.dtype or out.strides[1] != out.itemsize:
        return False
    (M, K), C = a.shape, b.shape[1]
    a_layout, b_layout = _operand(a), _operand(b)
    if a_layout is None or b_layout is None or min(M, K, C) == 0 or out.strides[0] < out.itemsize * C:
        return False
    ldc = out.strides[0] // out.itemsize
    if max(M, K, C, a_layout[1], b_layout[1], ldc) >= 2**31:  # the LP64 interface's int
        return False
    gemm(_ROW_MAJOR, a_layout[0], b_layout[0], M, C, K, 1.0, a.ctypes.data, a_layout[1],
         b.ctypes.data, b_layout[1], 0.0, out.ctypes.data, ldc)  # fmt: skip
    return True
