"""Choosing the time-loop backend (nprnn/accel/backends.py). What the numba kernels compute:
test_numba_kernels.py."""

import sys

import pytest

from nprnn import accel


def test_use_validates_the_backend_name():
    previous = accel.backend()
    with pytest.raises(ValueError, match="backend must be one of"):
        accel.use("cuda")
    assert accel.backend() == previous


def test_use_selects_and_deselects_numba():
    pytest.importorskip("numba", reason="the numba backend is optional (pip install nprnn[accel])")
    from nprnn.accel import numba_kernels

    previous = accel.backend()
    try:
        accel.use("NUMBA")
        assert accel.backend() == "numba" and accel.kernels() is numba_kernels
        accel.use(None)
        assert accel.backend() == "numpy" and accel.kernels() is None
        accel.use("none")
        assert accel.backend() == "numpy" and accel.kernels() is None
    finally:
        accel.use(previous)


def test_use_without_numba_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "numba", None)  # "import numba" now raises ImportError
    monkeypatch.delitem(sys.modules, "nprnn.accel.numba_kernels", raising=False)
    monkeypatch.delattr(accel, "numba_kernels", raising=False)
    previous = accel.backend()
    with pytest.raises(ImportError, match=r"needs numba \(pip install nprnn\[accel\]\)"):
        accel.use("numba")
    assert accel.backend() == previous
