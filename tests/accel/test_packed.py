"""The packed kernels of the numba backend (nprnn/accel/packed.py) and the products built on them
(``numba_kernels.matmul``, ``blas.split_matmul``): equal to NumPy's products to float rounding for
any shape, dtype and strides; the same bits on one thread or two and whatever the split."""

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nprnn import accel

try:
    import numba  # noqa: F401
except ImportError:
    if os.environ.get("CI"):  # the test extra installs numba: in CI these tests must run, not skip
        raise
    pytest.skip("the numba backend is optional (pip install nprnn[accel])", allow_module_level=True)
from nprnn.accel import blas, mkl, numba_kernels, packed  # noqa: E402  (needs numba)

TOL = {np.float64: {"rtol": 1e-12, "atol": 1e-12}, np.float32: {"rtol": 2e-5, "atol": 2e-5}}


def operands(rng, M, K, C, dtype, a_transposed=False, b_transposed=False):
    a = rng.standard_normal((K, M) if a_transposed else (M, K)).astype(dtype)
    b = rng.standard_normal((C, K) if b_transposed else (K, C)).astype(dtype)
    return (a.T if a_transposed else a), (b.T if b_transposed else b)


def assert_close(got, a, b):
    want = a.astype(np.float64) @ b.astype(np.float64)
    tol = TOL[a.dtype.type]
    np.testing.assert_allclose(got, want, rtol=tol["rtol"], atol=tol["atol"] * max(1, a.shape[1]) ** 0.5)


@settings(max_examples=60, deadline=None)
@given(
    M=st.integers(1, 40), K=st.integers(1, 300), C=st.integers(1, 100),
    dtype=st.sampled_from([np.float32, np.float64]), a_t=st.booleans(), b_t=st.booleans(),
    threads=st.sampled_from([1, 2]), seed=st.integers(0, 2**16),
)  # fmt: skip
def test_matmul_equals_numpy_for_any_shape_and_strides(M, K, C, dtype, a_t, b_t, threads, seed):
    a, b = operands(np.random.default_rng(seed), M, K, C, dtype, a_t, b_t)
    out = packed.matmul(a, b, cap=threads)
    assert out.shape == (M, C) and out.dtype == dtype
    assert_close(out, a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("M, K, C", [(20, 650, 2600), (7, 300, 70), (300, 40, 33), (1, 600, 64)])
def test_threads_and_splits_give_the_same_bits(rng, dtype, M, K, C):
    """Every element is one FMA chain over k (in K_BLOCK pieces) whatever the split: 1 and 2 threads,
    split by panels or by rows, give identical results."""
    a, b = operands(rng, M, K, C, dtype)
    panels = packed.pack(b)
    one = packed.product(a, panels, C, np.empty((M, C), dtype), threads=1)
    rows = packed.tile_rows(M)
    a_tiles = (rows * a.strides[0], a.strides[1], a.strides[0])
    for by_rows in (False, True):
        two = np.empty((M, C), dtype)
        packed._product_threads(a, M, a_tiles, panels, C, two, rows, 2, by_rows)
        assert np.array_equal(one, two), by_rows
    assert_close(one, a, b)


@pytest.mark.parametrize("K, C", [(5, 40), (packed.PACK_ROWS + 3, 64), (2 * packed.PACK_ROWS, 33)])
@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pack_pads_with_zeros_and_scales_columns(rng, K, C, transposed, dtype):
    """Both packing kernels (W with contiguous rows, blocks of PACK_ROWS rows; any other strides, a pass
    per panel), serial and parallel, give the panels exactly."""
    W = rng.standard_normal((C, K)).T if transposed else rng.standard_normal((K, C))
    W, scale = W.astype(dtype), rng.standard_normal(C).astype(dtype)
    width = packed.WIDTH[W.dtype]
    if transposed:
        kernels = (packed._pack, packed._pack_threads)
    else:
        kernels = (packed._pack_contiguous, packed._pack_contiguous_threads)
    for kernel in kernels:
        panels = np.full((-(-C // width), K, width), np.nan, dtype)
        kernel(W, scale, panels)
        flat = panels.transpose(1, 0, 2).reshape(K, -1)
        np.testing.assert_array_equal(flat[:, :C], W * scale)
        assert not flat[:, C:].any()
    assert np.array_equal(packed.pack(W, scale), panels)


def test_product_of_a_time_loop_writes_only_its_columns(rng):
    W, h = rng.standard_normal((30, 50)), rng.standard_normal((6, 30))
    product = packed.Product(W, 6, scale=np.full(50, 0.5))
    out = product(h)
    assert out is product.out and out.shape == (6, 50)
    np.testing.assert_allclose(out, h @ (W * 0.5), rtol=1e-12)


def test_product_refuses_mixed_dtypes(rng):
    panels = packed.pack(rng.standard_normal((4, 8)))
    with pytest.raises(TypeError, match="dtypes differ"):
        packed.product(np.ones((2, 4), np.float32), panels, 8, np.empty((2, 8)))


def test_tile_rows_covers_the_rows_in_as_few_even_tiles_as_possible():
    assert packed.tile_rows(1) == 1
    assert packed.tile_rows(packed.ROWS) == packed.ROWS
    for M in range(1, 100):
        rows = packed.tile_rows(M)
        assert 1 <= rows <= packed.ROWS and -(-M // rows) == -(-M // packed.ROWS)


def test_thread_counts_follow_the_sizes_and_the_cap_only():
    assert packed.use_threads(20, 100, 400) == packed.use_threads(20, 100, 400)
    assert packed.use_threads(2, 3, 4) == 1  # too small to split
    assert packed.use_threads(64, 650, 2600, cap=1) == 1
    assert packed.use_threads(64, 650, 2600) == numba.config.NUMBA_NUM_THREADS


@pytest.mark.parametrize("M, C", [(70, 150), (150, 70)], ids=["by columns", "by rows"])
@pytest.mark.parametrize("parts", [2, 3])
def test_split_matmul_equals_numpy_and_repeats_exactly(rng, parts, M, C):
    a, b = operands(rng, M, 90, C, np.float32)
    out = blas.split_matmul(a, b, np.empty((M, C), np.float32), parts)
    assert_close(out, a, b)
    again = blas.split_matmul(a, b, np.empty((M, C), np.float32), parts)
    assert np.array_equal(out, again)


def test_split_matmul_keeps_one_pool_per_thread_count(rng):
    import threading

    a, b = operands(rng, 40, 50, 200, np.float32)

    def alternate():
        for parts in (2, 3, 2, 3, 2):
            blas.split_matmul(a, b, np.empty((40, 200), np.float32), parts)
        return len([t for t in threading.enumerate() if t.name.startswith("nprnn-blas")])

    first = alternate()
    assert alternate() == first  # the pools of 1 and 2 workers are reused, not made again per call


def test_each_product_takes_the_path_of_its_size(rng, monkeypatch):
    monkeypatch.setattr(mkl, "gemms", lambda: None)  # OpenBLAS's rules (MKL's: the tests named so)
    if not blas.can_cap() or numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("the split path needs threadpoolctl and two threads")
    used = []
    monkeypatch.setattr(blas, "split_matmul", lambda a, b, *_: used.append("split") or a @ b)
    monkeypatch.setattr(packed, "matmul", lambda a, b, *_, **__: used.append("packed") or a @ b)
    numba_kernels.matmul(*operands(rng, 1200, 800, 800, np.float32))  # 1536 MFLOP
    numba_kernels.matmul(*operands(rng, 700, 400, 400, np.float32))  # 224 MFLOP
    numba_kernels.matmul(*operands(rng, 20, 30, 400, np.float32))  # M K C = 240000: NumPy's, on one thread
    assert used == ["split", "packed"]


@pytest.mark.parametrize("on_mkl", [False, True], ids=["openblas", "mkl"])
def test_with_mkl_smaller_and_transposed_products_go_to_the_split(rng, monkeypatch, on_mkl):
    if not blas.can_cap() or numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("the split path needs threadpoolctl and two threads")
    monkeypatch.setattr(mkl, "gemms", lambda: {} if on_mkl else None)
    used = []
    monkeypatch.setattr(blas, "split_matmul", lambda a, b, *_: used.append("split") or a @ b)
    monkeypatch.setattr(packed, "matmul", lambda a, b, *_, **__: used.append("packed") or a @ b)
    numba_kernels.matmul(*operands(rng, 1120, 200, 800, np.float32))  # 358 MFLOP
    numba_kernels.matmul(*operands(rng, 400, 800, 200, np.float32, b_transposed=True))  # 128 MFLOP, W.T
    numba_kernels.matmul(*operands(rng, 200, 400, 800, np.float32, a_transposed=True))  # 128 MFLOP, x.T
    numba_kernels.matmul(*operands(rng, 400, 200, 800, np.float32))  # 128 MFLOP
    assert used == (["split", "split", "split", "packed"] if on_mkl else ["packed"] * 4)


@pytest.mark.parametrize(
    "architecture, numpy_up_to", [("skylakex", 1_000_000), ("haswell", 65536 * 4), ("", 65536 * 4)]
)
def test_products_openblas_keeps_on_one_thread_stay_numpy(rng, monkeypatch, architecture, numpy_up_to):
    """OpenBLAS's SkylakeX kernels run products up to M K C = 1e6 on their small-matrix code: those stay
    np.matmul, the same bits, but with BLAS capped to one thread above 65536 * 4 (not every layout
    takes that code: (512, 13) @ (13, 128).T woke OpenBLAS's threads, which then spun against numba's);
    other kernels (or an unknown BLAS) from 65536 * 4."""
    monkeypatch.setattr(mkl, "gemms", lambda: None)  # OpenBLAS's rules (MKL's: the tests named so)
    monkeypatch.setitem(blas._blas, "architecture", architecture)
    monkeypatch.setattr(blas, "single_threaded", lambda: False)  # BLAS on several threads
    caps = []
    monkeypatch.setitem(blas._blas, "setters", [caps.append for _ in blas._blas_libraries()])
    packed_calls = []
    monkeypatch.setattr(packed, "matmul", lambda a, b, *_, **__: packed_calls.append(a.shape) or a @ b)
    shapes = [(20, 30, 400), (50, 100, 100), (100, 100, 100), (101, 100, 100)]  # M K C = 2.4e5 ... 1.01e6
    for M, K, C in shapes:
        a, b = operands(rng, M, K, C, np.float32)
        del caps[:]
        out = numba_kernels.matmul(a, b)
        if M * K * C <= numpy_up_to:
            assert np.array_equal(out, np.matmul(a, b))
        capped = 65536 * 4 < M * K * C <= numpy_up_to and blas.can_cap()
        assert caps[: len(blas._blas_libraries())] == ([1] * len(blas._blas_libraries()) if capped else [])
    assert packed_calls == [(M, K) for M, K, C in shapes if M * K * C > numpy_up_to]


@pytest.mark.parametrize("on_mkl", [False, True], ids=["openblas", "mkl"])
def test_with_mkl_products_on_one_thread_run_on_it(rng, monkeypatch, on_mkl):
    calls = []
    monkeypatch.setattr(mkl, "gemms", lambda: {} if on_mkl else None)
    monkeypatch.setattr(mkl, "matmul", lambda a, b, out: calls.append(a.shape) or np.matmul(a, b, out=out) is out)
    shapes = [(50, 100, 100), (50, 100, 418), (290, 256, 1024)]  # 1, 4.2 and 152 MFLOP
    monkeypatch.setattr(numba_kernels, "_cap", lambda: 1)  # every product on one thread
    for M, K, C in shapes:
        a, b = operands(rng, M, K, C, np.float32)
        np.testing.assert_allclose(numba_kernels.matmul(a, b), a.astype(np.float64) @ b, rtol=1e-4, atol=1e-4)
    assert calls == ([(50, 100), (290, 256)] if on_mkl else [])  # the smallest stays NumPy's


def test_a_small_product_alone_stays_on_the_calling_thread(rng, monkeypatch):
    monkeypatch.setattr(mkl, "gemms", lambda: None)  # OpenBLAS's rules (MKL's: the tests named so)
    caps = []
    monkeypatch.setattr(packed, "matmul", lambda a, b, out=None, cap=None: caps.append(cap) or a @ b)
    monkeypatch.setattr(blas, "single_threaded", lambda: False)  # BLAS on several threads: packed kernels
    numba_kernels.matmul(*operands(rng, 50, 100, 418, np.float32))  # 4.2 MFLOP
    numba_kernels.matmul(*operands(rng, 700, 400, 400, np.float32))  # 224 MFLOP
    assert caps == [1, packed.use_threads(700, 400, 400, numba_kernels._cap())]


def test_serial_and_parallel_kernels_keep_apart_in_the_disk_cache():
    # numba names cached code by function name and line only: two dispatchers of one function, one
    # with parallel=True, would load each other's code (the serial pack then woke numba's threads)
    dispatchers = [
        value
        for module in (packed, numba_kernels)
        for value in vars(module).values()
        if isinstance(value, numba.core.registry.CPUDispatcher) and hasattr(value._cache, "_cache_file")
    ]
    index_files = [d._cache._cache_file._index_path for d in dispatchers]
    assert len(dispatchers) > 10
    assert len(set(index_files)) == len(index_files)
    assert packed._pack.targetoptions.get("parallel") is not True
    assert packed._pack_threads.targetoptions.get("parallel") is True


def test_on_one_thread_transposed_and_narrow_products_go_to_blas(rng, monkeypatch):
    monkeypatch.setattr(mkl, "gemms", lambda: None)  # OpenBLAS's rules (MKL's: the tests named so)
    if not blas.can_cap():
        pytest.skip("telling BLAS's thread count needs threadpoolctl")
    from threadpoolctl import threadpool_limits

    used = []
    monkeypatch.setattr(packed, "matmul", lambda a, b, *_, **__: used.append("packed") or a @ b)
    monkeypatch.setattr(numba_kernels, "_cap", lambda: 1)  # as set_blas_threads(1) or one numba thread
    transposed = operands(rng, 128, 896, 512, np.float32, a_transposed=True)
    narrow = operands(rng, 896, 512, 16, np.float32)
    wide = operands(rng, 640, 128, 512, np.float32)
    with threadpool_limits(1):
        assert blas.single_threaded()
        for a, b in (transposed, narrow):
            assert np.array_equal(numba_kernels.matmul(a, b), np.matmul(a, b))  # BLAS's own call
        numba_kernels.matmul(*wide)
    assert used == ["packed"]
    with threadpool_limits(2):
        if not blas.single_threaded():  # BLAS may wake its threads: the packed kernels keep them asleep
            numba_kernels.matmul(*transposed)
            assert used == ["packed", "packed"]


@pytest.mark.parametrize("path", ["numpy", "packed", "mkl"])
def test_accel_matmul_overflow_raises_under_errstate_like_numpy(rng, monkeypatch, request, path):
    previous = accel.backend()
    accel.use("numba")
    used = []
    real = packed.matmul
    monkeypatch.setattr(packed, "matmul", lambda *args, **kw: used.append("packed") or real(*args, **kw))
    shape = (3, 4, 5) if path == "numpy" else (50, 100, 418)
    if path == "packed":
        monkeypatch.setattr(mkl, "gemms", lambda: None)
        monkeypatch.setattr(blas, "single_threaded", lambda: False)  # BLAS on several threads: packed kernels
    if path == "mkl":
        request.getfixturevalue("forced_mkl")
    try:
        a, b = np.full(shape[:2], 1e30, np.float32), np.full(shape[1:], 1e30, np.float32)
        with np.errstate(over="raise"):
            with pytest.raises(FloatingPointError, match="overflow"):
                accel.matmul(a, b)
        with np.errstate(over="ignore"):
            assert np.isinf(accel.matmul(a, b)).all()  # not raising: inf, as NumPy gives
        assert used == (["packed", "packed"] if path == "packed" else [])  # MKL's products: not packed
    finally:
        accel.use(previous)


def test_on_one_thread_a_small_product_goes_to_blas(rng, monkeypatch):
    monkeypatch.setattr(mkl, "gemms", lambda: None)  # OpenBLAS's rules (MKL's: the tests named so)
    if not blas.can_cap():
        pytest.skip("telling BLAS's thread count needs threadpoolctl")
    from threadpoolctl import threadpool_limits

    used = []
    monkeypatch.setattr(packed, "matmul", lambda a, b, *_, **__: used.append("packed") or a @ b)
    small = operands(rng, 50, 100, 418, np.float32)  # the textbook's ch05 output layer: 4.2 MFLOP
    large = operands(rng, 200, 200, 1000, np.float32)  # 80 MFLOP
    with threadpool_limits(1):
        assert np.array_equal(numba_kernels.matmul(*small), np.matmul(*small))  # BLAS's own call
        numba_kernels.matmul(*large)
    assert used == ["packed"]


def test_the_avx2_tile_on_any_x86_64_cpu(tmp_path):
    """NUMBA_CPU_NAME=haswell compiles the tile for AVX2 (16 vector registers), as on a CPU without
    AVX-512: it must give the same products."""
    code = (
        "import numpy as np; from nprnn.accel import packed; r = np.random.default_rng(0);"
        "a = r.standard_normal((23, 300)).astype(np.float32); b = r.standard_normal((300, 77)).astype(np.float32);"
        "o = packed.matmul(a, b); print(packed.VECTOR_BYTES, packed.ROWS, float(np.abs(o - a @ b).max()))"
    )
    env = {**os.environ, "NUMBA_CPU_NAME": "haswell", "NUMBA_CACHE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    vector_bytes, rows, error = done.stdout.split()
    assert (vector_bytes, rows) == ("32", "6") and float(error) < 1e-3
