"""The small-batch product of the time loops, ``out = h @ W`` with ``h: (N, K)`` and few rows (N = 1 to a
few hundred), in numba kernels of our own (see ``nprnn.accel``; imported only with numba).

At the textbook's batch size, 20, OpenBLAS runs a step's ``(20, H) @ (H, 4H)`` at a third to half of the
machine's peak: its kernels are made for large products and re-pack the operands at every call. Here,
as oneDNN does for its RNNs:

- ``pack(W)`` copies ``W: (K, C)`` once per forward or backward call into column panels,
  ``(P, K, WIDTH)``: the ``WIDTH`` columns of a panel lie side by side for every ``k``, zero past ``C``;
- each step's product runs a register tile of up to ``ROWS`` rows by ``WIDTH`` columns that keeps its
  accumulators in vector registers over the whole of ``K`` (``_tile``, written in LLVM IR, since numba
  does not keep such a tile in registers from Python loops);
- on several threads the tiles are split by panels, statically.

Every output element is the same chain of fused multiply-adds, ``k = 0`` to ``K - 1``, whatever the tile
shape, the split or the number of threads, so the result is the same bit for bit on one thread or
many: the thread count depends only on the sizes (``use_threads``) and could even follow the load
without changing a number. It differs from BLAS (which sums in another order) by float rounding.
"""

import threading
from types import FunctionType

import numba
import numpy as np
from llvmlite import binding, ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_JIT = {"cache": True, "nogil": True}


def _vector_bytes():
    """64 on CPUs with AVX-512 (32 vector registers), else 32 (AVX2: 16 registers). Follows numba's
    target: NUMBA_CPU_NAME=haswell compiles the AVX2 tile on an AVX-512 machine."""
    name = numba.config.CPU_NAME
    features = numba.config.CPU_FEATURES
    if features is None:
        features = binding.get_host_cpu_features().flatten() if name in (None, "host") else ""
    return 64 if "+avx512f" in features else 32


VECTOR_BYTES = _vector_bytes()
VECTORS = 2  # vectors per tile row: a panel is two vectors wide (measured best against 3 and 4)
ROWS = 12 if VECTOR_BYTES == 64 else 6  # ROWS * VECTORS accumulators, with room for W and h in registers
WIDTH = {np.dtype(np.float32): VECTORS * VECTOR_BYTES // 4, np.dtype(np.float64): VECTORS * VECTOR_BYTES // 8}
PARALLEL_FLOPS = 1e6  # products of fewer FLOPs run on one thread (a parallel launch costs a few us)


def _make_tile(rows):
    """The ``rows`` x ``WIDTH`` register tile: ``out[r, :ncols] (+)= a[r, :K] @ panel[:, :ncols]`` for
    ``r < rows``, with ``a`` (element strides ``lda``, ``sk``), ``panel`` (``(K, WIDTH)``, contiguous) and
    ``out`` (row stride ``ldo``, columns contiguous) given as addresses; ``accumulate``: 0 starts from
    zero, 1 from what ``out`` holds, so a product split over ``k`` is the same chain of operations."""

    @intrinsic
    def tile(typingctx, like, a_addr, lda, sk, panel_addr, K, out_addr, ldo, ncols, accumulate):
        sig = types.void(like, *[types.intp] * 9)

        def codegen(context, builder, signature, args):
            _, a_addr, lda, sk, panel_addr, K, out_addr, ldo, ncols, accumulate = args
            scalar = context.get_value_type(like.dtype)
            size = like.dtype.bitwidth // 8
            lanes = VECTOR_BYTES // size
            vec = ir.VectorType(scalar, lanes)
            i1, i32, i64 = ir.IntType(1), ir.IntType(32), ir.IntType(64)
            mask_type = ir.VectorType(i1, lanes)
            suffix = f"v{lanes}f{size * 8}"
            fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [vec] * 3), f"llvm.fma.{suffix}")
            vptr = vec.as_pointer()
            masked_load = cgutils.get_or_insert_function(
                builder.module,
                ir.FunctionType(vec, [vptr, i32, mask_type, vec]),
                f"llvm.masked.load.{suffix}.p0{suffix}",
            )
            masked_store = cgutils.get_or_insert_function(
                builder.module,
                ir.FunctionType(ir.VoidType(), [vec, vptr, i32, mask_type]),
                f"llvm.masked.store.{suffix}.p0{suffix}",
            )
            a = builder.inttoptr(a_addr, scalar.as_pointer())
            panel = builder.inttoptr(panel_addr, scalar.as_pointer())
            out = builder.inttoptr(out_addr, scalar.as_pointer())
            zero = ir.Constant(vec, [0.0] * lanes)
            align = ir.Constant(i32, size)
            # lane l of vector v is written when v * lanes + l < ncols (the last panel of a product)
            masks = []
            for v in range(VECTORS):
                lane = ir.Constant(ir.VectorType(i64, lanes), [v * lanes + j for j in range(lanes)])
                bound = builder.insert_element(
                    ir.Constant(ir.VectorType(i64, lanes), ir.Undefined), ncols, ir.Constant(i32, 0)
                )
                bound = builder.shuffle_vector(bound, bound, ir.Constant(ir.VectorType(i32, lanes), [0] * lanes))
                masks.append(builder.icmp_signed("<", lane, bound))

            def out_at(r, v):
                at = builder.gep(out, [builder.add(builder.mul(ir.Constant(i64, r), ldo), ir.Constant(i64, v * lanes))])
                return builder.bitcast(at, vptr)

            # Accumulators as allocas in the entry block: LLVM's mem2reg turns them into registers.
            acc = [[cgutils.alloca_once(builder, vec) for _ in range(VECTORS)] for _ in range(rows)]
            with builder.if_else(builder.icmp_signed("!=", accumulate, ir.Constant(i64, 0))) as (then, otherwise):
                with then:
                    for r in range(rows):
                        for v in range(VECTORS):
                            builder.store(builder.call(masked_load, [out_at(r, v), align, masks[v], zero]), acc[r][v])
                with otherwise:
                    for r in range(rows):
                        for v in range(VECTORS):
                            builder.store(zero, acc[r][v])
            undef = ir.Constant(vec, ir.Undefined)
            lane0 = ir.Constant(i32, 0)
            splat = ir.Constant(ir.VectorType(i32, lanes), [0] * lanes)
            with cgutils.for_range(builder, K) as loop:
                k = loop.index
                row = builder.mul(k, ir.Constant(i64, VECTORS * lanes))
                w = []
                for v in range(VECTORS):
                    at = builder.gep(panel, [builder.add(row, ir.Constant(i64, v * lanes))])
                    w.append(builder.load(builder.bitcast(at, vptr), align=size))
                ak = builder.mul(k, sk)
                for r in range(rows):
                    x = builder.load(builder.gep(a, [builder.add(builder.mul(ir.Constant(i64, r), lda), ak)]))
                    xs = builder.shuffle_vector(builder.insert_element(undef, x, lane0), undef, splat)
                    for v in range(VECTORS):
                        builder.store(builder.call(fma, [xs, w[v], builder.load(acc[r][v])]), acc[r][v])
            for r in range(rows):
                for v in range(VECTORS):
                    builder.call(masked_store, [builder.load(acc[r][v]), out_at(r, v), align, masks[v]])
            return context.get_dummy_value()

        return sig, codegen

    return tile


_TILES = {rows: _make_tile(rows) for rows in range(1, ROWS + 1)}


def _make_block():
    """``_block(rows, ...)``: the tile of ``rows`` rows (numba cannot index a tuple of intrinsics)."""
    names = {f"_tile{rows}": tile for rows, tile in _TILES.items()}
    args = "like, a_addr, lda, sk, panel_addr, K, out_addr, ldo, ncols, accumulate"
    lines = [f"def _block(rows, {args}):"]
    for rows in range(ROWS, 0, -1):
        lines.append(f"    {'if' if rows == ROWS else 'elif'} rows == {rows}:")
        lines.append(f"        _tile{rows}({args})")
    exec("\n".join(lines), names)  # noqa: S102  (source built from the integers above)
    return numba.njit(inline="always", nogil=True)(names["_block"])  # inlined: nothing of its own to cache


_block = _make_block()
K_BLOCK = 256  # rows of a panel per pass: 256 x WIDTH is 32 KB, in the L1 cache, whatever the dtype
M_TILES = 16  # tiles of rows per pass over the panels
# Panels of at most SHORT_K rows (all of them a few tens of KB) are swept whole by each tile of rows, which
# so writes its output rows in order: on (3712, 16) @ (16, 1024), the input projection of the textbook's
# ch08 encoder, 46-71 GFLOP/s against 17-26 for the pass per panel below (one thread, Intel Xeon).
SHORT_K = 64


@numba.njit(**_JIT)
def tile_rows(M):
    """The tile height for ``M`` rows: the largest that covers them in as few tiles as any, so that
    M = 20 runs two tiles of 10 rather than 12 + 8."""
    tiles = max(1, -(-M // ROWS))
    return max(1, -(-M // tiles))


@numba.njit(**_JIT)
def rows_product(a, panels, C, out, first, last):
    """``out[first:last] = a[first:last] @ W`` on the calling thread (``a`` with contiguous rows or any
    strides, its tiles of ``tile_rows(last - first)`` rows), for a time loop split by rows."""
    block = a[first:last]
    rows = tile_rows(last - first)
    tiles = (rows * block.strides[0], block.strides[1], block.strides[0])
    _product(block, tiles, panels, C, out[first:last], rows, 0, panels.shape[0], 0, last - first)


@numba.njit(**_JIT)
def _product(a, a_tiles, panels, C, out, rows, p_first, p_last, r_first, r_last):
    """``out[r_first:r_last, panels p_first:p_last] = a[r_first:r_last] @ W`` (``C``: W's columns).
    ``a``'s data, with ``a_tiles = (tile, k, row strides in bytes)``, holds the rows: row ``r`` (a
    multiple of ``rows`` plus ``j < rows``), column ``k`` at ``r // rows * tile + k * k_stride +
    j * row_stride`` bytes in."""
    K = panels.shape[1]
    width = panels.shape[2]
    size = a.itemsize
    address = a.ctypes.data
    tile, sk, sr = a_tiles
    ldo = out.strides[0] // size
    if K <= SHORT_K:  # all panels stay in cache: each tile of rows sweeps them, writing its rows in order
        for r0 in range(r_first, r_last, rows):
            for p in range(p_first, p_last):
                _block(
                    min(rows, r_last - r0), a, address + r0 // rows * tile, sr // size, sk // size,
                    panels.ctypes.data + p * K * width * size, K, out.ctypes.data + (r0 * ldo + p * width) * size,
                    ldo, min(width, C - p * width), False,
                )  # fmt: skip
        return
    chunk = rows * M_TILES
    for c0 in range(r_first, r_last, chunk):  # K_BLOCK columns of a chunk of rows stay in the L2 cache
        c1 = min(r_last, c0 + chunk)
        for k0 in range(0, K, K_BLOCK):
            kn = min(K_BLOCK, K - k0)
            for p in range(p_first, p_last):
                panel = panels.ctypes.data + (p * K + k0) * width * size
                ncols = min(width, C - p * width)
                for r0 in range(c0, c1, rows):
                    _block(
                        min(rows, c1 - r0), a, address + r0 // rows * tile + k0 * sk, sr // size, sk // size,
                        panel, kn, out.ctypes.data + (r0 * ldo + p * width) * size, ldo, ncols, k0 > 0,
                    )  # fmt: skip


@numba.njit(parallel=True, **_JIT)
def _product_threads(a, M, a_tiles, panels, C, out, rows, threads, by_rows):
    """The same on ``threads`` threads, a static split: by panels, or (``by_rows``) by tiles of rows."""
    P = panels.shape[0]
    tiles = -(-M // rows)
    for part in numba.prange(threads):
        if by_rows:
            first, last = tiles * part // threads * rows, min(M, tiles * (part + 1) // threads * rows)
            _product(a, a_tiles, panels, C, out, rows, 0, P, first, last)
        else:
            _product(a, a_tiles, panels, C, out, rows, P * part // threads, P * (part + 1) // threads, 0, M)


@numba.njit(**_JIT)
def step_product(h, panels, C, out, rows, threads):
    """``product`` for jitted time loops: ``out = h @ W`` on ``threads`` threads, split by panels."""
    M = h.shape[0]
    h_tiles = (rows * h.strides[0], h.strides[1], h.strides[0])
    if threads > 1:
        _product_threads(h, M, h_tiles, panels, C, out, rows, threads, False)
    else:
        _product(h, h_tiles, panels, C, out, rows, 0, panels.shape[0], 0, M)


def _pack_row_tiles(a, tiles):
    """``tiles[i, k, j] = a[i * rows + j, k]`` (zero past ``a``'s rows), for ``tiles: (I, K, rows)``."""
    M, K = a.shape
    count, _, rows = tiles.shape
    for i in numba.prange(count):
        for k in range(K):
            for j in range(rows):  # contiguous in a transposed view's memory, and in the tiles
                r = i * rows + j
                tiles[i, k, j] = a[r, k] if r < M else 0


def _serial_and_parallel(func):
    """``func`` compiled twice: on the calling thread, and with ``parallel=True`` (its ``prange`` split
    over numba's threads). numba's disk cache names compiled code by the function's qualified name and
    line, not by its options, so each is compiled from a copy named apart: compiled from one function,
    the serial dispatcher loaded the parallel one's code from the cache (seen: every "serial" pack of
    a small weight woke numba's threads, which then spun against the calling thread)."""

    def named(suffix):
        name = func.__name__ + suffix
        copy = FunctionType(func.__code__, func.__globals__, name, func.__defaults__, func.__closure__)
        copy.__qualname__ = func.__qualname__ + suffix
        return copy

    return numba.njit(**_JIT)(named("_serial")), numba.njit(parallel=True, **_JIT)(named("_parallel"))


_pack_rows, _pack_rows_threads = _serial_and_parallel(_pack_row_tiles)


def _pack_panels(W, scale, panels):
    K, C = W.shape
    P, _, width = panels.shape
    for p in numba.prange(P):
        for k in range(K):
            for j in range(width):
                c = p * width + j
                panels[p, k, j] = W[k, c] * scale[c] if c < C else 0


# Rows of W per block of _pack_row_blocks. Measured against _pack_panels, one thread, Intel Xeon:
# (650, 2600) 3.9-5.4 -> 1.3-2.3 ms, (2600, 650) 3.8-4.8 -> 2.0-2.5 ms.
PACK_ROWS = 32


def _pack_row_blocks(W, scale, panels):
    """The same for a ``W`` whose rows are contiguous, a block of ``PACK_ROWS`` rows at a time: the pass per
    panel above reads one short piece of every row, a page apart for wide W (a TLB miss each); here a
    block's rows are read in order and written to every panel."""
    K, C = W.shape
    P, _, width = panels.shape
    full = C // width  # panels with all their columns; the last may be partial
    for block in numba.prange(-(-K // PACK_ROWS)):
        k0 = block * PACK_ROWS
        k1 = min(K, k0 + PACK_ROWS)
        for p in range(full):
            c0 = p * width
            s = scale[c0 : c0 + width]
            for k in range(k0, k1):
                out, row = panels[p, k], W[k, c0 : c0 + width]
                for j in range(width):
                    out[j] = row[j] * s[j]
        if full < P:
            c0 = full * width
            for k in range(k0, k1):
                out = panels[full, k]
                for j in range(width):
                    out[j] = W[k, c0 + j] * scale[c0 + j] if c0 + j < C else 0


_pack, _pack_threads = _serial_and_parallel(_pack_panels)
_pack_contiguous, _pack_contiguous_threads = _serial_and_parallel(_pack_row_blocks)
PARALLEL_PACK = 1 << 18  # elements: smaller matrices are packed on one thread
_scratch = threading.local()


SCRATCH_KEPT = 8  # buffers per thread and role: a model's layers pack a few shapes each step


def scratch(role, shape, dtype):
    """A buffer of this thread's for ``role`` and this shape, kept from call to call (the last
    ``SCRATCH_KEPT`` shapes of each role): a fresh one of megabytes costs a page fault per 4 KB on
    first use (~0.5 ms for the (650, 2600) panels)."""
    buffers = _scratch.__dict__.setdefault("buffers", {}).setdefault(role, {})
    key = (shape, np.dtype(dtype))
    buffer = buffers.pop(key, None)
    if buffer is None:
        buffer = np.empty(shape, dtype=dtype)
        if len(buffers) >= SCRATCH_KEPT:
            del buffers[next(iter(buffers))]  # the least recently used
    buffers[key] = buffer  # now the most recently used
    return buffer


def pack(W, scale=None, role=None):
    """``W: (K, C)`` (any strides) as column panels ``(P, K, WIDTH)``, zero past ``C``; ``scale: (C,)``
    multiplies the columns on the way. ``role``: pack into this thread's ``scratch`` buffer of it."""
    K, C = W.shape
    width = WIDTH[W.dtype]
    shape = (-(-C // width), K, width)
    panels = np.empty(shape, dtype=W.dtype) if role is None else scratch(role, shape, W.dtype)
    if W.strides[1] == W.itemsize:
        kernel = _pack_contiguous_threads if K * C >= PARALLEL_PACK else _pack_contiguous
    else:
        kernel = _pack_threads if K * C >= PARALLEL_PACK else _pack
    kernel(W, np.ones(C, W.dtype) if scale is None else scale, panels)
    return panels


def use_threads(M, K, C, cap=None):
    """How many threads the product ``(M, K) @ (K, C)`` runs on: from the sizes (and a cap) alone."""
    threads = numba.config.NUMBA_NUM_THREADS if cap in (None, 0) else min(cap, numba.config.NUMBA_NUM_THREADS)
    return 1 if 2 * M * K * C < PARALLEL_FLOPS else threads


def product(a, panels, C, out, threads=1):
    """``out = a @ W`` for ``panels = pack(W)`` and ``W: (K, C)``: ``a: (M, K)`` with any strides,
    ``out: (M, >= C)`` with contiguous rows, both of W's dtype. Splits by panels when there are enough
    of them for the threads, else by rows."""
    if a.dtype != panels.dtype or out.dtype != panels.dtype:
        raise TypeError(f"packed.product: dtypes differ: a {a.dtype}, W {panels.dtype}, out {out.dtype}")
    M, K = a.shape
    if M == 0 or C == 0:
        return out
    rows = tile_rows(M)
    count = -(-M // rows)
    if a.strides[1] != a.itemsize:
        # A transposed view (the weight gradients' x.T): copied tile by tile, a tile's rows interleaved,
        # so that its loads for one k are one cache line, not `rows` of them (measured: 217 -> 269
        # GFLOP/s on (650, 700) @ (700, 2600) for a plain copy; interleaving does not help other `a`s).
        tiles = scratch("a", (count, K, rows), a.dtype)
        (_pack_rows_threads if threads > 1 else _pack_rows)(a, tiles)
        a = tiles
        a_tiles = tiles.strides
    else:
        a_tiles = (rows * a.strides[0], a.strides[1], a.strides[0])
    if threads > 1:
        by_rows = panels.shape[0] < 4 * threads and count >= 2 * threads
        _product_threads(a, M, a_tiles, panels, C, out, rows, threads, by_rows)
    else:
        _product(a, a_tiles, panels, C, out, rows, 0, panels.shape[0], 0, M)
    return out


def matmul(a, b, out=None, cap=None):
    """``a @ b`` for 2-D float32 or float64 arrays of one dtype, on the packed kernels."""
    M, K = a.shape
    C = b.shape[1]
    if out is None:
        out = np.empty((M, C), dtype=a.dtype)
    if K == 0:
        out[...] = 0
        return out
    return product(a, pack(b, role="b"), C, out, use_threads(M, K, C, cap))


class Product:
    """``h @ W`` for every step of a time loop: ``W`` packed once, the output buffer allocated once.
    ``Product(W, N, scale=None, cap=None)(h)`` returns the output ``(N, C)``; ``cap`` limits the
    threads (``None`` or 0: numba's)."""

    def __init__(self, W, N, scale=None, cap=None):
        K, C = W.shape
        self.C = C
        self.panels = pack(W, scale, role="recurrent")
        self.out = np.zeros((N, C), dtype=W.dtype)
        self.rows = tile_rows(N)
        self.threads = use_threads(N, K, C, cap)

    def args(self):
        """What ``step_product`` takes after ``h``."""
        return self.panels, self.C, self.out, self.rows, self.threads

    def __call__(self, h):
        return product(h, self.panels, self.C, self.out, self.threads)
