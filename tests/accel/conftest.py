import platform

import pytest

from nprnn.accel import mkl


@pytest.fixture
def unloaded_mkl(monkeypatch):
    """``nprnn.accel.mkl`` as before its first use (it decides and loads again); restored after the test."""
    monkeypatch.setattr(mkl, "_state", {"gemm": None, "loaded": False, "why": "", "version": ""})
    return mkl


@pytest.fixture
def forced_mkl(monkeypatch, unloaded_mkl):
    """MKL loaded and running the products it takes, whatever the CPU's vendor (``NPRNN_BLAS=mkl``; the
    test extra installs the mkl wheel); the module's state is restored after the test."""
    monkeypatch.setenv("NPRNN_BLAS", "mkl")
    if mkl.gemms() is None:
        if platform.machine() not in ("x86_64", "AMD64"):
            pytest.skip("the mkl wheel is for x86-64 only")
        pytest.fail(f"MKL did not load: {mkl._state['why']} (the test extra installs the mkl wheel)")
    return mkl
