"""The CUDA k-means path on the host, against the CPU backend and float64 references.

``host_kmeans`` compiles ``kernels/kmeans.cu`` with g++ and runs
:class:`~scitensor.backends.cuda.cluster.CudaClusterPrimitives` (the real host code: plans,
argument order, grids) on NumPy arrays, each block's threads as real threads (barriers, warp
shuffles, ballots and shared-memory atomics included). Outputs and temporaries are poisoned,
so an element no kernel writes fails. Runs without a GPU; skipped without g++.
"""

from __future__ import annotations

import numpy as np
import pytest

import scitensor as st
from scitensor import dtypes as dt
from scitensor.backends.cuda import cluster as cc

from . import host_kmeans, refs

pytestmark = pytest.mark.skipif(host_kmeans.GXX is None, reason="g++ is not on PATH")

BF16 = dt.bfloat16.np


@pytest.fixture(scope="module")
def gpu():
    return host_kmeans.host_cluster_backend()


@pytest.fixture(scope="module")
def cpu():
    return st.Device("cpu").backend


def test_plans():
    assert [cc.pick_bk(d) for d in (1, 4, 5, 9, 17, 32, 33, 48, 64, 100)] == \
        [4, 4, 8, 16, 32, 32, 16, 16, 32, 32]
    p = cc.assign_plan(1000, 300, 40, np.float32)
    assert (p["bm"], p["bn"], p["bk"], p["dpad"], p["kpad"], p["blocks"]) == \
        (128, 128, 16, 48, 384, 8)
    assert cc.assign_plan(1000, 300, 40, np.float64)["kpad"] == 320
    for n, k, d, dtype, det in [(1 << 20, 256, 32, np.float32, False),
                                (1 << 20, 256, 32, np.float32, True),
                                (5000, 150, 8, np.float64, True), (1, 1, 1, np.float16, False),
                                (10**7, 4096, 128, np.float32, False)]:
        p = cc.update_plan(n, k, d, dtype, det)
        cap = cc.SMEM_BYTES // (8 if dtype == np.float64 else 4)
        warps = p["threads"] // 32 if det else 1
        assert p["kr"] * (d + 1) * warps <= cap
        assert p["n_ranges"] * p["kr"] >= k > (p["n_ranges"] - 1) * p["kr"]
        assert p["n_chunks"] * p["chunk"] >= n > (p["n_chunks"] - 1) * p["chunk"]
        item = 8 if dtype == np.float64 else 4
        assert p["n_chunks"] == 1 or p["n_chunks"] * k * (d + 1) * item <= cc.PARTIAL_BUDGET
    # the shape: one cluster range, 256 chunks of 4096 points
    p = cc.update_plan(1 << 20, 256, 32, np.float32, False)
    assert (p["n_ranges"], p["n_chunks"], p["chunk"], p["threads"]) == (1, 256, 4096, 512)
    assert cc.update_plan(10, 3, 20_000, np.float32, False) is None  # a row does not fit


ASSIGN_CASES = [  # dtype, n, d, k: dimension tile, resident point tile or not, centroid tiles
    (np.float32, 300, 5, 7),     # bk8, 3 point tiles, the last one partial
    (np.float32, 150, 40, 130),  # bk16 x 3 (not resident), 2 centroid tiles
    (np.float16, 140, 32, 9),    # bk32
    (BF16, 130, 16, 20),         # bk16 resident
    (np.float64, 100, 3, 70),    # bk4, float64 tiles of 64: 2 centroid tiles, 2 point tiles
    (np.float64, 65, 33, 5),     # float64 bk16 x 3
]


@pytest.mark.parametrize("case", ASSIGN_CASES, ids=lambda c: f"{np.dtype(c[0]).name}-{c[1:]}")
def test_assign(gpu, cpu, case):
    dtype, n, d, k = case
    rng = np.random.default_rng(n + d + k)
    x = rng.standard_normal((n, d)).astype(dtype)
    c = rng.standard_normal((k, d)).astype(np.float64 if dtype == np.float64 else np.float32)
    labels, d2 = gpu.kmeans_assign(x, c)
    assert f"st_kmeans_assign_bk{cc.pick_bk(d)}" in gpu.launched()
    lab_r, d2_r = cpu.kmeans_assign(x, c)
    assert labels.dtype == np.int64 and d2.dtype == d2_r.dtype
    keep = refs.margin(x, c) > 1e-4
    assert keep.mean() > 0.9
    np.testing.assert_array_equal(labels[keep], lab_r[keep])
    xr = x.astype(np.float64)
    exact = refs.sq_distances(xr, c)[np.arange(n), labels]
    np.testing.assert_allclose(d2, exact, rtol=1e-12 if dtype == np.float64 else 1e-5)
    assert np.all(exact <= refs.sq_distances(xr, c).min(axis=1) * (1 + 1e-5) + 1e-5)


def test_assign_ties_across_threads_and_tiles(gpu):
    rng = np.random.default_rng(1)
    k = 300
    c = rng.integers(-3, 4, size=(k, 2)).astype(np.float32)
    c[[5, 130, 299]] = 0.0     # tied: different centroid tiles
    c[[71, 67, 200]] = 9.0     # tied: columns of different threads of one tile, then a later tile
    x = np.concatenate([rng.integers(-4, 5, size=(60, 2)), [[0, 0], [9, 9], [8, 9]]])
    x = x.astype(np.float32)
    labels, d2 = gpu.kmeans_assign(x, c)
    dist = refs.sq_distances(x, c)
    np.testing.assert_array_equal(labels, dist.argmin(axis=1))
    assert labels[-2] == 67
    np.testing.assert_array_equal(d2, dist.min(axis=1))


def test_assign_one_point_many_centroids(gpu):
    c = np.zeros((129, 1), dtype=np.float32)
    c[128] = -1.0
    labels, d2 = gpu.kmeans_assign(np.array([[-2.0]], dtype=np.float32), c)
    assert labels.tolist() == [128] and d2.tolist() == [1.0]


UPDATE_CASES = [  # dtype, n, d, k, deterministic
    (np.float32, 300, 5, 7, False),
    (np.float32, 300, 5, 7, True),
    (BF16, 200, 16, 12, False),
    (np.float16, 200, 3, 4, True),
    (np.float64, 300, 8, 150, True),    # 3 cluster ranges (one accumulator per warp)
    (np.float32, 120, 40, 40, True),    # 2 ranges, D > 32: two dimension passes per row
    (np.float64, 90, 100, 52, False),   # 2 ranges with the shared atomics
    (np.float32, 4500, 2, 3, False),    # 2 chunks of points, reduced in order
]


@pytest.mark.parametrize("case", UPDATE_CASES, ids=lambda c: f"{np.dtype(c[0]).name}-{c[1:]}")
def test_update(gpu, cpu, case):
    dtype, n, d, k, det = case
    rng = np.random.default_rng(n * d + k)
    x = (rng.standard_normal((n, d)) * 3).astype(dtype)
    labels = rng.integers(0, k, size=n)
    labels[rng.random(n) < 0.05] = -1      # ignored
    labels[:3] = [k, k + 5, -7]             # ignored too
    labels[labels == 1] = 0                 # cluster 1 stays empty
    cdt = np.float64 if dtype == np.float64 else np.float32
    old = rng.standard_normal((k, d)).astype(cdt)
    new = gpu.kmeans_update(x, labels, k, old, det)
    assert new.dtype == cdt and new.shape == (k, d)
    plan = cc.update_plan(n, k, d, dtype, det)
    partial = gpu.launched()["st_kmeans_update_partial"]
    assert partial == (plan["n_chunks"] * plan["n_ranges"], plan["threads"])
    ref = refs.means(x, labels, k, old)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(new, ref, rtol=tol, atol=tol)
    np.testing.assert_array_equal(new[1], old[1])
    np.testing.assert_allclose(new, cpu.kmeans_update(x, labels, k, old), rtol=tol, atol=tol)
    if det:  # the same bits again
        assert new.tobytes() == gpu.kmeans_update(x, labels, k, old, True).tobytes()


def test_update_without_points(gpu):
    old = np.arange(6.0, dtype=np.float32).reshape(3, 2)
    new = gpu.kmeans_update(np.zeros((0, 2), np.float32), np.zeros(0, np.int64), 3, old)
    np.testing.assert_array_equal(new, old)


def test_kmeans_loop_on_the_emulated_kernels(gpu, cpu, monkeypatch):
    """The public API with the CPU device's cluster primitives replaced by the CUDA path."""
    x, _ = refs.blobs(260, 4, 5, seed=3)
    ref = st.cluster.kmeans(st.tensor(x), 5, iters=3, seed=2)
    det_ref = st.cluster.kmeans(st.tensor(x), 5, iters=3, seed=2, deterministic=True)
    be_type = type(cpu)
    monkeypatch.setattr(be_type, "kmeans_assign", lambda self, *a: gpu.kmeans_assign(*a))
    monkeypatch.setattr(be_type, "kmeans_update", lambda self, *a: gpu.kmeans_update(*a))
    res = st.cluster.kmeans(st.tensor(x), 5, iters=3, seed=2, deterministic=True)
    np.testing.assert_array_equal(res.labels.numpy(), ref.labels.numpy())
    np.testing.assert_allclose(res.centroids.numpy(), ref.centroids.numpy(), atol=1e-5)
    np.testing.assert_allclose(res.inertia.item(), ref.inertia.item(), rtol=1e-5)
    np.testing.assert_array_equal(det_ref.labels.numpy(), ref.labels.numpy())
