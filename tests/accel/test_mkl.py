"""nprnn.accel.mkl: MKL's sequential GEMM for split_matmul's blocks (optional: the ``mkl`` wheel)."""

import numpy as np
import pytest

from nprnn.accel import blas, mkl


def layouts(rng, M, K, C, dtype, a_transposed, b_transposed):
    a = rng.standard_normal((K, M) if a_transposed else (M, K)).astype(dtype)
    b = rng.standard_normal((C, K) if b_transposed else (K, C)).astype(dtype)
    return (a.T if a_transposed else a), (b.T if b_transposed else b)


@pytest.mark.parametrize(
    "value, vendor, want",
    [("auto", "GenuineIntel", True), ("auto", "AuthenticAMD", False), ("auto", "", False),
     ("mkl", "AuthenticAMD", True), ("openblas", "GenuineIntel", False)],
)  # fmt: skip
def test_mkl_is_wanted_on_intel_cpus_or_when_asked(value, vendor, want):
    assert mkl.wanted(value, vendor) is want


def test_a_bad_setting_warns_and_counts_as_auto(monkeypatch):
    monkeypatch.setenv("NPRNN_BLAS", "fastest")
    with pytest.warns(RuntimeWarning, match="NPRNN_BLAS='fastest' ignored"):
        assert mkl.setting() == "auto"
    monkeypatch.setenv("NPRNN_BLAS", " OpenBLAS ")
    assert mkl.setting() == "openblas"


def test_openblas_setting_keeps_mkl_unloaded(monkeypatch, unloaded_mkl):
    monkeypatch.setenv("NPRNN_BLAS", "openblas")
    assert mkl.gemms() is None
    out = np.full((2, 2), 7.0, np.float32)
    assert mkl.matmul(np.ones((2, 3), np.float32), np.ones((3, 2), np.float32), out) is False
    assert (out == 7).all()  # nothing written: the caller falls back to NumPy
    assert mkl.describe() == "large products on NumPy's BLAS (NPRNN_BLAS=openblas)"


def test_the_cpu_vendor_comes_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\n")
    assert mkl._cpu_vendor(str(info)) == "AuthenticAMD"
    assert mkl._cpu_vendor(str(tmp_path / "missing")) == ""


def test_operand_layouts():
    x = np.zeros((6, 8), np.float32)
    assert mkl._operand(x) == (mkl._NO_TRANS, 8)
    assert mkl._operand(x.T) == (mkl._TRANS, 8)
    assert mkl._operand(x[:, 2:5]) == (mkl._NO_TRANS, 8)  # a block of columns keeps the row stride
    assert mkl._operand(x.T[1:4]) == (mkl._TRANS, 8)
    assert mkl._operand(x[:, ::2]) is None  # neither rows nor columns contiguous


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("a_transposed, b_transposed", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_mkl_matmul_equals_the_float64_product(forced_mkl, rng, dtype, a_transposed, b_transposed):
    a, b = layouts(rng, 37, 53, 29, dtype, a_transposed, b_transposed)
    out = np.full((37, 29), np.nan, dtype)
    assert mkl.matmul(a, b, out)
    want = a.astype(np.float64) @ b.astype(np.float64)
    rtol, atol = (1e-5, 1e-5) if dtype == np.float32 else (1e-12, 1e-12)
    np.testing.assert_allclose(out, want, rtol=rtol, atol=atol)


def test_mkl_matmul_writes_blocks_of_rows_and_columns(forced_mkl, rng):
    a, b = layouts(rng, 40, 30, 64, np.float32, 0, 0)
    out = np.zeros((40, 64), np.float32)
    assert mkl.matmul(a[:15], b, out[:15]) and mkl.matmul(a[15:], b[:, :32], out[15:, :32])
    assert mkl.matmul(a[15:], b[:, 32:], out[15:, 32:])
    np.testing.assert_allclose(out, a.astype(np.float64) @ b, rtol=1e-5, atol=1e-5)


def test_mkl_matmul_refuses_what_it_cannot_take(forced_mkl, rng):
    a, b = layouts(rng, 8, 6, 4, np.float32, 0, 0)
    out = np.zeros((8, 4), np.float32)
    assert mkl.matmul(a[:, ::1], b, out)
    assert not mkl.matmul(np.repeat(a, 2, axis=1)[:, ::2], b, out)  # strided columns
    assert not mkl.matmul(a.astype(np.float64), b, out)  # mixed dtypes
    assert not mkl.matmul(a, b, np.zeros((4, 8), np.float32).T)  # an output without contiguous rows
    assert not mkl.matmul(a[:, :0], b[:0], out)  # K = 0: NumPy's zeros


def test_mkl_repeats_exactly_whatever_the_alignment(forced_mkl, rng):
    """CNR strict mode: the same bits for the same values, at a different address and alignment."""
    a, b = layouts(rng, 301, 203, 157, np.float32, 0, 0)
    first = np.empty((301, 157), np.float32)
    assert mkl.matmul(a, b, first)
    buffer = np.empty(a.size + 1, np.float32)
    shifted = buffer[1:].reshape(a.shape)  # 4 bytes past the allocation's alignment
    shifted[...] = a
    again = np.empty_like(first)
    assert mkl.matmul(shifted, b, again)
    assert np.array_equal(first, again)


def test_split_matmul_runs_its_blocks_on_mkl(forced_mkl, rng, monkeypatch):
    calls = []
    gemm = mkl._state["gemm"][np.dtype(np.float32)]
    monkeypatch.setitem(mkl._state["gemm"], np.dtype(np.float32), lambda *args: calls.append(args[3:6]) or gemm(*args))
    a, b = layouts(rng, 90, 40, 70, np.float32, 0, 0)
    out = blas.split_matmul(a, b, np.empty((90, 70), np.float32), 2)
    assert sorted(calls) == [(45, 70, 40), (45, 70, 40)]  # two row blocks, (M, C, K) each
    np.testing.assert_allclose(out, a.astype(np.float64) @ b, rtol=1e-5, atol=1e-5)
    assert forced_mkl.describe().startswith("large products on MKL ")


class FakeRuntime:
    """Stands in for libmkl_rt: answers the set-up calls with the given codes."""

    def __init__(self, layer, cbwr):
        self.MKL_Set_Threading_Layer = lambda requested: layer
        self.MKL_CBWR_Set = lambda mode: cbwr


@pytest.mark.parametrize(
    "layer, cbwr, why",
    [(0, 0, "MKL already runs another threading layer"), (mkl._SEQUENTIAL, -1, "MKL refused its reproducible mode")],
)
def test_mkl_is_left_alone_when_it_refuses_the_set_up(unloaded_mkl, layer, cbwr, why):
    assert mkl._set_up(FakeRuntime(layer, cbwr), "libmkl_rt.so.3") is None
    assert mkl._state["why"] == f"libmkl_rt.so.3: {why}"


def test_a_library_without_mkl_symbols_is_not_used(monkeypatch, unloaded_mkl):
    monkeypatch.setattr(mkl, "_numpy_on_mkl", lambda: False)
    monkeypatch.setattr(mkl, "_library_paths", lambda: iter(["libc.so.6"]))  # loads, but is not MKL
    assert mkl._load() is None
    assert mkl._state["why"].startswith("libc.so.6: ") and "MKL_Set_Threading_Layer" in mkl._state["why"]
    monkeypatch.setattr(mkl, "_library_paths", lambda: iter([mkl.Path("/nonexistent/libmkl_rt.so.3")]))
    assert mkl._load() is None and mkl._state["why"] == "no libmkl_rt found (pip install mkl)"
