"""Every layer test runs on both time-loop backends: the NumPy reference and the numba kernels
(nprnn/accel, the default where numba is installed), so the gradient checks, the parity tests with
PyTorch and the textbook, and the bad-input checks hold for what users run and for the reference."""

import os

import pytest

from nprnn import accel

try:
    import numba  # noqa: F401

    BACKENDS = ["numpy", "numba"]
except ImportError:
    if os.environ.get("CI"):  # the test extra installs numba: in CI the numba path must be tested
        raise
    BACKENDS = ["numpy"]


@pytest.fixture(autouse=True, params=BACKENDS)
def each_backend(request):
    previous = accel.backend()
    accel.use(request.param)
    yield request.param
    accel.use(previous)
