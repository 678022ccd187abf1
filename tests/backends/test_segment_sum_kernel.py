"""``kernels/segment_sum.cu`` on the host: the reproducible scatter-add of deterministic mode.

The kernels are compiled with g++ against ``host_cuda``'s stand-in ``common.cuh`` and run by
:class:`~scitensor.backends.cuda.segment_sum.SegmentSumPrimitives` (the real host code: key
forms, sort passes, chunking, argument order) on NumPy arrays. The radix-sort kernels, which
use barriers, run each block's threads as real (C++) threads, blocks in a shuffled order;
the other kernels run their (block, thread) pairs one at a time in a shuffled order, so a
result that depended on thread order would change between seeds. Fresh arrays are poisoned
(0xFF bytes: NaN for floats), so a partial sum read before it is written fails. References:
``np.add.at`` in float64, and the exact summation order in float32/float64.
Runs without a GPU; skipped without g++.
"""

from __future__ import annotations

import ctypes
import threading

import numpy as np
import pytest

import scitensor as st
from scitensor import dtypes as dt
from scitensor.backends.cuda import segment_sum as seg

from . import host_cuda

pytestmark = pytest.mark.skipif(host_cuda.GXX is None, reason="g++ is not on PATH")

BF16 = dt.bfloat16.np
DTYPES = [np.float16, BF16, np.float32, np.float64]
IDS = ["f16", "bf16", "f32", "f64"]
SOURCE = "segment_sum.cu"
COOPERATIVE = {"st_seg_radix_count", "st_seg_radix_scan", "st_seg_radix_scatter"}

# a launcher: mode 0 runs each block's threads as std::threads (blocks one after another, in a
# shuffled order); mode 1 runs every (block, thread) pair alone, in a shuffled order
EXTRA = r"""
#include <algorithm>
#include <random>
#include <thread>
#include <utility>
#include <vector>
typedef unsigned long long emu_u64;
static void emu_call(void* f, int n, const emu_u64* a) {
  typedef emu_u64 U;
  switch (n) {
    case 2: reinterpret_cast<void (*)(U, U)>(f)(a[0], a[1]); break;
    case 4: reinterpret_cast<void (*)(U, U, U, U)>(f)(a[0], a[1], a[2], a[3]); break;
    case 5: reinterpret_cast<void (*)(U, U, U, U, U)>(f)(a[0], a[1], a[2], a[3], a[4]); break;
    case 7: reinterpret_cast<void (*)(U, U, U, U, U, U, U)>(f)(a[0], a[1], a[2], a[3], a[4],
                                                               a[5], a[6]); break;
    case 10: reinterpret_cast<void (*)(U, U, U, U, U, U, U, U, U, U)>(f)(
        a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9]); break;
    case 12: reinterpret_cast<void (*)(U, U, U, U, U, U, U, U, U, U, U, U)>(f)(
        a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11]); break;
    default: std::abort();
  }
}
extern "C" void emu_launch(void* f, unsigned grid, unsigned block, int n, const emu_u64* a,
                           int mode, unsigned seed) {
  emu_configure(grid, block);
  std::mt19937 rng(seed);
  if (mode == 0) {
    std::vector<unsigned> order(grid), threads(block);
    for (unsigned b = 0; b < grid; ++b) order[b] = b;
    for (unsigned t = 0; t < block; ++t) threads[t] = t;
    std::shuffle(order.begin(), order.end(), rng);
    for (unsigned b : order) {
      std::shuffle(threads.begin(), threads.end(), rng);
      std::vector<std::thread> pool;
      pool.reserve(block);
      for (unsigned t : threads)
        pool.emplace_back([=] { emu_set_thread(b, t); emu_call(f, n, a); });
      for (auto& th : pool) th.join();
    }
    return;
  }
  std::vector<std::pair<unsigned, unsigned>> all;
  all.reserve((size_t)grid * block);
  for (unsigned b = 0; b < grid; ++b)
    for (unsigned t = 0; t < block; ++t) all.emplace_back(b, t);
  std::shuffle(all.begin(), all.end(), rng);
  for (auto [b, t] : all) {
    emu_set_thread(b, t);
    emu_call(f, n, a);
  }
}
"""

def build(dtype_code: int) -> ctypes.CDLL:
    """Compile ``kernels/segment_sum.cu`` for the host with ``-DST_DTYPE=dtype_code``."""
    return host_cuda.build(SOURCE, dtype_code, EXTRA)


class EmuKernel:
    """A host-built kernel launched like ``launch.Kernel`` (integer-class arguments only)."""

    def __init__(self, lib, name: str, signature: str, seed: int):
        declared = lib.signatures.get(name)
        if declared != signature:
            raise AssertionError(f"{name}: host code launches it with signature {signature!r}, "
                                 f"the kernel declares {declared!r}")
        self.lib, self.name, self.seed = lib, name, seed
        self.address = ctypes.cast(getattr(lib, name), ctypes.c_void_p).value
        self.launches: list = []

    def __call__(self, blocks: int, threads: int, stream: int, *args) -> None:
        self.launches.append((blocks, threads))
        slots = (ctypes.c_uint64 * len(args))(*[int(a) & (2**64 - 1) for a in args])
        mode = 0 if self.name in COOPERATIVE else 1
        self.seed += 1
        done = threading.Event()

        def run():
            self.lib.emu_launch(ctypes.c_void_p(self.address), blocks, threads, len(args), slots,
                                mode, ctypes.c_uint(self.seed))
            done.set()

        th = threading.Thread(target=run, daemon=True)
        th.start()
        if not done.wait(timeout=300):  # a barrier some thread never reaches
            raise RuntimeError(f"{self.name}: deadlocked in host emulation")


def host_backend(radix_threads: int = 64, seed: int = 0):
    """A CPU-device backend whose reproducible scatter-adds run the host-built kernels."""
    from scitensor.backends.cpu import CpuBackend

    poisoned = host_cuda.poisoned_empty(np.empty)

    class HostSegmentSum(seg.SegmentSumPrimitives, CpuBackend):
        sm_count = 2
        _seg_radix_threads = radix_threads

        def __init__(self, device):
            super().__init__(device)
            self.kernels: dict = {}

        def _seg_kernel(self, name, signature, code):
            key = (code, name)
            k = self.kernels.get(key)
            if k is None:
                k = self.kernels[key] = EmuKernel(build(code), name, signature,
                                                  seed * 1000 + len(self.kernels))
            return k

        def _seg_ptr(self, a) -> int:
            return a.ctypes.data

        def _seg_stream(self) -> int:
            return 0

        def _seg_new(self, shape, np_dtype):
            return poisoned(shape, dtype=np_dtype)

        def launched(self) -> set:
            return {name for (_, name), k in self.kernels.items() if k.launches}

    return HostSegmentSum(st.Device("cpu"))


@pytest.fixture(scope="module")
def gpu():
    return host_backend()


# ---- references ------------------------------------------------------------------------------
def _f64(a) -> np.ndarray:
    return np.asarray(a).astype(np.float64)


def _check_close(got, a0, key, values, dtype):
    """``got`` against ``np.add.at`` in float64, within the rounding a float32 (float64)
    sequential sum plus the final rounding to ``dtype`` can make."""
    ref = _f64(a0)
    np.add.at(ref, key, _f64(values))
    scale = np.abs(_f64(a0))
    np.add.at(scale, key, np.abs(_f64(values)))
    m = np.zeros(ref.shape)  # addends per destination
    np.add.at(m, key, 1.0)
    eps = {np.dtype(np.float16): 2.0**-11, np.dtype(BF16): 2.0**-8,
           np.dtype(np.float32): 0.0, np.dtype(np.float64): 0.0}[np.dtype(dtype)]
    unit = 2.0**-52 if np.dtype(dtype) == np.float64 else 2.0**-23
    tol = (eps + (m + 1) * unit) * scale + 1e-30
    err = np.abs(_f64(got) - ref)
    assert got.dtype == np.dtype(dtype)
    assert np.all(err <= tol), f"max error {err.max()} (tolerance there {tol.flat[err.argmax()]})"


def _values(rng, shape, dtype):
    return (rng.standard_normal(shape) * 3).astype(dtype)


# ---- the primitives against np.add.at ----------------------------------------------------------
ADD_AT_CASES = {  # name -> (shape of a, key builder(rng))
    "rows_repeated": ((7, 5), lambda r: (r.integers(0, 7, 300),)),
    "rows_unique": ((37, 3), lambda r: (r.permutation(37),)),
    "rows_negative": ((9, 4), lambda r: (r.integers(-9, 9, 77),)),
    "axis1_pre": ((3, 11, 2), lambda r: (slice(None), r.integers(0, 11, 41))),
    "index_2d": ((13,), lambda r: (r.integers(0, 13, (6, 19)),)),
    "one_row_long_run": ((4, 3), lambda r: (np.full(1500, 2),)),
    "two_arrays": ((6, 8), lambda r: (r.integers(0, 6, 250), r.integers(-8, 8, 250))),
    "two_arrays_broadcast": ((3, 5, 4, 2), lambda r: (slice(None), r.integers(-5, 5, (30, 1)),
                                                      r.integers(0, 4, (1, 7)))),
    "split_arrays": ((5, 3, 4), lambda r: (r.integers(0, 5, 40), slice(None),
                                           r.integers(0, 4, 40))),
    "int_and_array": ((4, 6), lambda r: (2, r.integers(0, 6, 50))),
    "mixed_slice": ((5, 6, 3), lambda r: (r.integers(0, 5, 60), slice(1, 4))),
    "bool_mask": ((4, 6), lambda r: (r.random((4, 6)) < 0.5,)),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
@pytest.mark.parametrize("case", sorted(ADD_AT_CASES))
def test_add_at_matches_numpy(gpu, case, dtype):
    shape, make_key = ADD_AT_CASES[case]
    rng = np.random.default_rng(sorted(ADD_AT_CASES).index(case))
    key = make_key(rng)
    a0 = _values(rng, shape, dtype)
    values = _values(rng, a0[key].shape, dtype)
    a = a0.copy()
    gpu.deterministic_add_at(a, key, values)
    _check_close(a, a0, key, values, dtype)
    untouched = np.ones(shape, bool)
    untouched[key] = False
    assert a[untouched].tobytes() == a0[untouched].tobytes()


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
def test_index_add_matches_numpy(gpu, dtype):
    rng = np.random.default_rng(1)
    for shape, axis, n in [((5, 9), 0, 123), ((4, 6, 3), 1, 31), ((3, 2, 7), 2, 500)]:
        idx = rng.integers(-shape[axis], shape[axis], n)
        a0 = _values(rng, shape, dtype)
        src = _values(rng, shape[:axis] + (n,) + shape[axis + 1:], dtype)
        got = gpu.deterministic_index_add(a0, axis, idx, src)
        key = (slice(None),) * axis + (idx,)
        _check_close(got, a0, key, src, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
def test_scatter_add_matches_numpy(gpu, dtype):
    rng = np.random.default_rng(2)
    for shape, ishape, axis in [((6, 5), (40, 5), 0), ((4, 7, 3), (3, 30, 2), 1),
                                ((5, 3), (5, 1), 1)]:
        index = rng.integers(-shape[axis], shape[axis], ishape)
        a0 = _values(rng, shape, dtype)
        src = _values(rng, ishape, dtype)
        got = gpu.deterministic_scatter_add(a0, axis, index, src)
        grids = list(np.indices(ishape, sparse=True))
        grids[axis] = index
        _check_close(got, a0, tuple(grids), src, dtype)


def test_float32_and_float64_follow_numpy_order_within_a_chunk(gpu):
    """Runs that fit one chunk are summed like np.add.at: destination first, then the
    addends in index order, rounding after every add (bit for bit in float32/float64)."""
    rng = np.random.default_rng(3)
    for dtype in (np.float32, np.float64):
        idx = rng.integers(0, 5, 16)  # 16 addends: one chunk
        a0 = (rng.standard_normal(5) * 1e3).astype(dtype)
        vals = (rng.standard_normal(16) * 10.0 ** rng.integers(-4, 4, 16)).astype(dtype)
        got = a0.copy()
        gpu.deterministic_add_at(got, (idx,), vals)
        ref = a0.copy()
        np.add.at(ref, idx, vals)
        assert got.tobytes() == ref.tobytes()


@pytest.mark.parametrize("n,k,post", [(16, 3, 1), (17, 3, 1), (1000, 4, 1), (3000, 1, 1),
                                      (700, 50, 3), (2049, 2000, 1)])
def test_exact_summation_order(gpu, n, k, post):
    """The float32 bits equal a NumPy model of the algorithm: each destination's addends in
    index order, in pieces of at most one chunk (the first piece starting from the
    destination), the pieces then added in order."""
    rng = np.random.default_rng(n + k)
    idx = rng.integers(0, k, n)
    a0 = rng.standard_normal((k, post)).astype(np.float32)
    vals = (rng.standard_normal((n, post)) * 10.0 ** rng.integers(-3, 3, (n, 1))).astype(
        np.float32)
    got = a0.copy()
    gpu.deterministic_add_at(got, (idx,), vals)
    chunk = seg.chunk_size(n, 1, post)
    order = np.argsort(idx, kind="stable")
    ref = a0.copy()
    for key in range(k):
        where = np.flatnonzero(idx[order] == key)
        if where.size == 0:
            continue
        first = True
        total = None
        for c in np.unique(where // chunk):
            piece = order[where[where // chunk == c]]
            acc = ref[key].copy() if first else np.zeros(post, np.float32)
            for j in piece:
                acc = acc + vals[j]
            total = acc if first else total + acc
            first = False
        ref[key] = total
    assert got.tobytes() == ref.tobytes()


# ---- the sort --------------------------------------------------------------------------------
@pytest.mark.parametrize("n,k", [(1, 1), (5, 3), (511, 16), (512, 17), (3001, 70000),
                                 (1000, 1)])
def test_radix_sort_is_stable(gpu, n, k):
    rng = np.random.default_rng(n)
    index = rng.integers(-k, k, n)
    index[::7] = k + 3  # out of range: sorted last as k
    index[1::11] = -k - 1
    keys, pos = gpu._seg_sort(index, k, 2)
    want = np.where(index < 0, index + k, index)
    want = np.where((want < 0) | (want >= k), k, want)
    order = np.argsort(want, kind="stable")
    np.testing.assert_array_equal(pos, order)
    np.testing.assert_array_equal(keys, want[order])


# ---- edge cases ------------------------------------------------------------------------------
def test_empty_inputs_do_nothing(gpu):
    a = np.ones((3, 2), np.float32)
    gpu.deterministic_add_at(a, (np.zeros(0, np.int64),), np.ones((0, 2), np.float32))
    assert np.array_equal(a, np.ones((3, 2)))
    z = np.ones((0, 4), np.float32)
    gpu.deterministic_add_at(z, (slice(None), np.array([1, 1])), np.ones((0, 2), np.float32))
    assert z.shape == (0, 4)
    out = gpu.deterministic_index_add(np.ones((3, 0), np.float32), 0, np.array([0, 2]),
                                      np.ones((2, 0), np.float32))
    assert out.shape == (3, 0)
    out = gpu.deterministic_scatter_add(np.ones(4, np.float64), 0, np.zeros(0, np.int64),
                                        np.zeros(0))
    assert np.array_equal(out, np.ones(4))


def test_empty_inputs_launch_nothing():
    be = host_backend()
    be.deterministic_add_at(np.ones(3, np.float32), (np.zeros(0, np.int64),),
                            np.zeros(0, np.float32))
    be.deterministic_index_add(np.ones((3, 0), np.float32), 0, np.array([1]),
                               np.ones((1, 0), np.float32))
    assert be.launched() == set()


def test_out_of_range_indices_are_dropped(gpu):
    a = np.zeros(4, np.float32)
    gpu.deterministic_add_at(a, (np.array([0, 4, -5, 3, 100, -1]),), np.arange(1, 7,
                                                                               dtype=np.float32))
    assert a.tolist() == [1.0, 0.0, 0.0, 10.0]
    b = np.zeros((2, 3), np.float32)  # two arrays: out of range in either drops the addend
    gpu.deterministic_add_at(b, (np.array([0, 2, 1, -1, 0]), np.array([3, 0, -1, 1, -4])),
                             np.arange(1, 6, dtype=np.float32))
    assert b.tolist() == [[0.0, 0.0, 0.0], [0.0, 4.0, 3.0]]


def test_scalar_values_and_non_contiguous_destination(gpu):
    base = np.zeros((6, 4), np.float32)
    view = base.T  # (4, 6), not C-contiguous
    gpu.deterministic_add_at(view, (np.array([1, 1, 3]),), 0.5)
    want = np.zeros((4, 6), np.float32)
    np.add.at(want, np.array([1, 1, 3]), np.float32(0.5))
    assert np.array_equal(view, want) and np.array_equal(base, want.T)
    bf = np.zeros((3, 5), BF16)[:, ::2]
    gpu.deterministic_add_at(bf, (np.array([0, 0, 2]),), np.ones(3, np.float32))
    assert _f64(bf).tolist() == [[2.0] * 3, [0.0] * 3, [1.0] * 3]


def test_nan_and_inf_propagate(gpu):
    a = np.zeros(3, np.float32)
    gpu.deterministic_add_at(a, (np.array([0, 0, 1, 1, 2]),),
                             np.array([np.nan, 1, np.inf, -np.inf, np.inf], np.float32))
    assert np.isnan(a[0]) and np.isnan(a[1]) and a[2] == np.inf


# ---- reproducibility -------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, BF16, np.float64], ids=["f32", "bf16", "f64"])
def test_bits_do_not_depend_on_thread_order_or_block_size(dtype):
    """Other shuffles of the thread order and other radix block sizes give the same bits."""
    rng = np.random.default_rng(9)
    idx = rng.integers(0, 6, 3000)  # heavy repetition: runs cross many chunks
    a0 = _values(rng, (6, 5), dtype)
    vals = (rng.standard_normal((3000, 5)) * 10.0 ** rng.integers(-3, 4, (3000, 1))).astype(
        dtype)
    lin = np.arange(30).reshape(6, 5)[idx[:500], rng.integers(0, 5, 500)]
    rows, flat = set(), set()
    for threads, seed in [(32, 1), (64, 2), (256, 3), (64, 4)]:
        be = host_backend(threads, seed)
        a = a0.copy()
        be.deterministic_add_at(a, (idx,), vals)
        rows.add(a.tobytes())
        flat.add(be.deterministic_scatter_add(a0.reshape(-1), 0, lin, vals[:500, 0]).tobytes())
    assert len(rows) == 1 and len(flat) == 1
    assert be.launched() >= {"st_seg_prep", "st_seg_radix_count", "st_seg_radix_scan",
                             "st_seg_radix_scatter", "st_seg_sum_chunks", "st_seg_sum_merge"}


def test_plan_helpers():
    assert seg.sort_passes(8) == 1 and seg.sort_passes(16) == 2 and seg.sort_passes(70000) == 5
    assert seg.chunk_size(10**7, 1, 1) == 256 and seg.chunk_size(10**9, 1, 1) == 1024
    assert seg.row_form((3, 4), (slice(None), np.array([0]), slice(None))) is None
    assert seg.row_form((3, 4, 2), (slice(None), np.array([0]), slice(None)))[0] == 1
    assert seg.row_form((3,), (np.array([True]),)) is None
    assert seg.row_form((3, 4, 2), (slice(None), np.array([0]), np.array([1])))[0] == 1
    assert seg.row_form((3, 4, 2), (np.array([0]), slice(None), np.array([1]))) is None


# ---- the k-means fallback --------------------------------------------------------------------
class _NotNumpy:
    """NumPy under another name: the cluster fallback takes its non-NumPy (GPU) branch."""

    def __getattr__(self, name):
        return getattr(np, name)


def test_kmeans_fallback_sums_with_the_segmented_sum():
    """The CUDA cluster mixin's xp fallback (a centroid row too wide for the fused kernel)
    scatter-adds with the segmented sum when deterministic, which the global mode forces
    even for deterministic=False; otherwise with add.at."""
    from scitensor.backends.cuda.cluster import CudaClusterPrimitives, update_plan
    from scitensor.backends.xp_cluster import ClusterPrimitives

    base = type(host_backend())

    class HostCluster(CudaClusterPrimitives, base):
        xp = _NotNumpy()

    rng = np.random.default_rng(4)
    n, d, k = 300, 1300, 5
    assert update_plan(n, k, d, np.float32, True) is None  # the fallback runs
    x = (rng.standard_normal((n, d)) * 50).astype(np.float32)
    labels = rng.integers(0, k - 1, n)  # cluster k - 1 stays empty
    old = rng.standard_normal((k, d)).astype(np.float32)
    want = np.stack([x[labels == c].astype(np.float64).mean(0) for c in range(k - 1)]
                    + [old[k - 1]])
    runs = []
    for det, mode in [(True, False), (False, True), (True, True)]:
        be = HostCluster(st.Device("cpu"))
        with st.deterministic(mode):
            got = be.kmeans_update(x, labels, k, old, det)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
        assert got[k - 1].tobytes() == old[k - 1].tobytes()
        assert "st_seg_sum_chunks" in be.launched()
        runs.append(got.tobytes())
    assert runs[0] == runs[1] == runs[2]
    be = HostCluster(st.Device("cpu"))  # the fallback itself, not deterministic: add.at
    got = ClusterPrimitives.kmeans_update(be, x, labels, k, old, False)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    assert be.launched() == set()
