"""scitensor.cluster: kmeans, assign and update against float64 NumPy references.

Runs on every device of the ``device`` fixture (CPU, and CUDA where usable: there the fused
kernels run, with poisoned outputs where results are compared with the CPU backend). The
same CUDA host code and kernels also run without a GPU in ``test_kmeans_emulated.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as hs

import scitensor as st
from tests.ops.helpers import PROPS, poisoned

from . import refs

F32_ATOL = 2e-4  # centroid coordinates of order 10, float32 sums of a few hundred points


def _t(a, device, dtype=None):
    return st.tensor(a, dtype=dtype, device=device)


def _f64(t) -> np.ndarray:
    return np.asarray(t.numpy()).astype(np.float64)


# ---- kmeans against Lloyd in float64 ------------------------------------------------------------
@pytest.mark.parametrize("dtype", [st.float32, st.float64], ids=lambda d: d.name)
def test_kmeans_matches_reference_on_blobs(device, dtype):
    n, d, k, iters, seed = 600, 5, 7, 6, 3
    x, _ = refs.blobs(n, d, k, seed=1, dtype=dtype.np)
    start = refs.random_start(n, k, seed)
    c_ref, lab_ref, inertia_ref = refs.lloyd(x, x[start], iters)
    res = st.cluster.kmeans(_t(x, device), k, iters=iters, seed=seed)
    assert isinstance(res, st.cluster.KMeansResult) and res.iters_run == iters
    assert res.centroids.dtype is dtype and res.centroids.shape == (k, d)
    assert res.labels.dtype is st.int64 and res.labels.shape == (n,)
    assert res.inertia.shape == () and res.inertia.device is device
    np.testing.assert_array_equal(res.labels.numpy(), lab_ref)
    atol = F32_ATOL if dtype is st.float32 else 1e-10
    np.testing.assert_allclose(_f64(res.centroids), c_ref, atol=atol, rtol=0)
    np.testing.assert_allclose(float(res.inertia.item()), inertia_ref,
                               rtol=1e-4 if dtype is st.float32 else 1e-10)


def test_kmeans_random_data_float64(device):
    """Uniform data (no cluster structure, many close calls) in float64: the same labels and
    centroids as the reference after several rounds."""
    rng = np.random.default_rng(5)
    n, d, k, iters = 400, 3, 9, 8
    x = rng.uniform(-1, 1, size=(n, d))
    c_ref, lab_ref, inertia_ref = refs.lloyd(x, x[refs.random_start(n, k, 11)], iters)
    res = st.cluster.kmeans(_t(x, device), k, iters=iters, seed=11)
    np.testing.assert_array_equal(res.labels.numpy(), lab_ref)
    np.testing.assert_allclose(res.centroids.numpy(), c_ref, atol=1e-12, rtol=0)
    np.testing.assert_allclose(res.inertia.item(), inertia_ref, rtol=1e-12)


def test_kmeans_random_data_float32_is_near_optimal(device):
    """float32 on unstructured data: a label may differ from the float64 reference only on
    a near-tie, and every point's distance equals its nearest centroid's."""
    rng = np.random.default_rng(6)
    n, d, k = 500, 6, 12
    x = rng.standard_normal((n, d)).astype(np.float32)
    res = st.cluster.kmeans(_t(x, device), k, iters=5, seed=2)
    c = _f64(res.centroids)
    lab = res.labels.numpy()
    dist = refs.sq_distances(x, c)
    best = dist.min(axis=1)
    assert np.all(dist[np.arange(n), lab] <= best + 1e-4 * (1 + best))
    assert np.mean(lab == dist.argmin(axis=1)) > 0.99
    np.testing.assert_allclose(float(res.inertia.item()), best.sum(), rtol=1e-4)


@pytest.mark.parametrize("dtype", [st.float16, st.bfloat16], ids=lambda d: d.name)
def test_kmeans_low_precision(device, dtype):
    """16-bit points compute in float32: labels and float32 distances of the rounded data."""
    x, truth = refs.blobs(300, 4, 5, seed=2, dtype=dtype.np)
    res = st.cluster.kmeans(_t(x, device), 5, iters=5, seed=0)
    assert res.centroids.dtype is dtype and res.inertia.dtype is st.float32
    c = _f64(res.centroids)
    lab_ref, d2_ref = refs.nearest(x, c)
    np.testing.assert_array_equal(res.labels.numpy(), lab_ref)
    np.testing.assert_allclose(float(res.inertia.item()), d2_ref.sum(), rtol=1e-4)
    # the blobs are found: one cluster per true centre
    pairs = set(zip(truth.tolist(), res.labels.numpy().tolist()))
    assert len(pairs) == 5


def test_kmeans_zero_iters_returns_the_start(device):
    x, _ = refs.blobs(50, 3, 4, seed=3)
    start = refs.random_start(50, 4, 9)
    res = st.cluster.kmeans(_t(x, device), 4, iters=0, seed=9)
    assert res.iters_run == 0
    np.testing.assert_array_equal(res.centroids.numpy(), x[start])
    np.testing.assert_array_equal(res.labels.numpy(), refs.nearest(x, x[start])[0])


def test_kmeans_k_equals_n_and_single_cluster(device):
    x, _ = refs.blobs(6, 2, 3, seed=4, dtype=np.float64)
    res = st.cluster.kmeans(_t(x, device), 6, iters=3)
    assert sorted(res.labels.numpy().tolist()) == list(range(6))
    assert res.inertia.item() == 0.0
    one = st.cluster.kmeans(_t(x, device), 1, iters=2)
    np.testing.assert_allclose(one.centroids.numpy()[0], x.mean(axis=0), rtol=1e-12)
    assert one.labels.numpy().tolist() == [0] * 6


def test_kmeans_explicit_init_tensor(device):
    x, _ = refs.blobs(200, 4, 3, seed=5, dtype=np.float64)
    c0 = x[[3, 50, 120]] + 0.5
    c_ref, lab_ref, _ = refs.lloyd(x, c0, 4)
    res = st.cluster.kmeans(_t(x, device), 3, iters=4, init=_t(c0, device))
    np.testing.assert_array_equal(res.labels.numpy(), lab_ref)
    np.testing.assert_allclose(res.centroids.numpy(), c_ref, atol=1e-12, rtol=0)


def test_kmeans_tol_stops_early_with_the_same_result(device):
    x, _ = refs.blobs(400, 3, 4, seed=6)
    # deterministic: with the GPU's atomic block sums, a converged round could still move a
    # centroid by a rounding error, and tol=0 would never be reached
    full = st.cluster.kmeans(_t(x, device), 4, iters=50, seed=1, tol=0.0, deterministic=True)
    assert 1 <= full.iters_run < 50  # blobs converge in a few rounds
    again = st.cluster.kmeans(_t(x, device), 4, iters=full.iters_run, seed=1,
                              deterministic=True)
    np.testing.assert_array_equal(full.centroids.numpy(), again.centroids.numpy())
    np.testing.assert_array_equal(full.labels.numpy(), again.labels.numpy())
    loose = st.cluster.kmeans(_t(x, device), 4, iters=50, seed=1, tol=1e6)
    assert loose.iters_run == 1


def test_kmeans_plus_plus(device):
    x, truth = refs.blobs(500, 3, 6, seed=7, spread=0.2)
    a = st.cluster.kmeans(_t(x, device), 6, iters=0, seed=4, init="k-means++")
    b = st.cluster.kmeans(_t(x, device), 6, iters=0, seed=4, init="k-means++")
    c0 = a.centroids.numpy()
    np.testing.assert_array_equal(c0, b.centroids.numpy())  # seeded
    rows = [int(np.flatnonzero((x == r).all(axis=1))[0]) for r in c0]  # every one a data point
    assert len(set(rows)) == 6
    # D^2 seeding on well-separated blobs: almost surely one start per blob
    assert len(set(truth[rows].tolist())) == 6
    res = st.cluster.kmeans(_t(x, device), 6, iters=10, seed=4, init="k-means++")
    assert len(set(zip(truth.tolist(), res.labels.numpy().tolist()))) == 6


# ---- assign ----------------------------------------------------------------------------------
def test_assign_ties_go_to_the_lowest_index(device):
    """Integer coordinates make every distance exact, so equal distances are real ties; the
    duplicates straddle the kernels' 64/128-centroid tiles and their per-thread columns."""
    rng = np.random.default_rng(8)
    k = 300
    c = rng.integers(-3, 4, size=(k, 2)).astype(np.float32)
    c[[5, 130, 299]] = [[0, 0], [0, 0], [0, 0]]
    c[[70, 200]] = [[9, 9], [9, 9]]
    x = np.concatenate([rng.integers(-4, 5, size=(100, 2)), [[0, 0], [9, 9], [8, 8]]])
    x = x.astype(np.float32)
    labels, d2 = st.cluster.assign(_t(x, device), _t(c, device))
    dist = refs.sq_distances(x, c)
    np.testing.assert_array_equal(labels.numpy(), dist.argmin(axis=1))  # first minimum
    assert labels.numpy()[-3:].tolist() == [int(dist[-3].argmin()), 70, 70]
    np.testing.assert_array_equal(d2.numpy(), dist.min(axis=1))


@pytest.mark.parametrize("dtype", [st.float32, st.float64], ids=lambda d: d.name)
def test_assign_shapes_and_dtypes(device, dtype):
    rng = np.random.default_rng(9)
    x = rng.standard_normal((37, 40)).astype(dtype.np)  # D > 32: several dimension tiles
    c = rng.standard_normal((130, 40)).astype(np.float32)  # any float dtype for centroids
    labels, d2 = st.cluster.assign(_t(x, device), _t(c, device))
    assert labels.dtype is st.int64 and d2.dtype is (st.float64 if dtype is st.float64
                                                     else st.float32)
    lab_ref, d2_ref = refs.nearest(x, c)
    keep = refs.margin(x, c) > 1e-3
    np.testing.assert_array_equal(labels.numpy()[keep], lab_ref[keep])
    np.testing.assert_allclose(d2.numpy(), refs.sq_distances(x, c)[np.arange(37),
                                                                    labels.numpy()], rtol=1e-5)


def test_assign_empty_points(device):
    labels, d2 = st.cluster.assign(st.zeros(0, 3, device=device), st.ones(2, 3, device=device))
    assert labels.shape == (0,) and d2.shape == (0,)


# ---- update ----------------------------------------------------------------------------------
@pytest.mark.parametrize("deterministic", [False, True])
def test_update_means_and_empty_clusters(device, deterministic):
    rng = np.random.default_rng(10)
    n, d, k = 300, 4, 10
    x = rng.standard_normal((n, d)).astype(np.float32)
    labels = rng.choice([0, 2, 3, 7, 9], size=n)  # 1, 4, 5, 6, 8 stay empty
    old = rng.standard_normal((k, d)).astype(np.float32)
    new = st.cluster.update(_t(x, device), _t(labels, device), k, _t(old, device),
                            deterministic=deterministic)
    assert new.dtype is st.float32 and new.shape == (k, d)
    np.testing.assert_allclose(_f64(new), refs.means(x, labels, k, old), atol=1e-6, rtol=1e-5)
    empty = [1, 4, 5, 6, 8]
    np.testing.assert_array_equal(new.numpy()[empty], old[empty])  # kept bit for bit


def test_update_more_clusters_than_points(device):
    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    old = np.arange(10.0).reshape(5, 2)
    new = st.cluster.update(_t(x, device), _t([4, 4], device), 5, _t(old, device))
    np.testing.assert_array_equal(new.numpy(), np.concatenate([old[:4], [[2.0, 3.0]]]))


def test_update_int32_labels(device):
    x = np.array([[1.0], [3.0], [10.0]], dtype=np.float32)
    new = st.cluster.update(_t(x, device), _t([1, 1, 0], device, st.int32), 2,
                            st.zeros(2, 1, device=device))
    assert new.numpy().ravel().tolist() == [10.0, 2.0]


def test_deterministic_mode_is_bitwise_reproducible(device):
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((3000, 8)) * 100).astype(np.float32)  # rounding-sensitive sums
    xt = _t(x, device)
    runs = [st.cluster.kmeans(xt, 20, iters=4, seed=1, deterministic=True) for _ in range(3)]
    for r in runs[1:]:
        assert np.array_equal(r.centroids.numpy().view(np.uint32),
                              runs[0].centroids.numpy().view(np.uint32))
        assert np.array_equal(r.labels.numpy(), runs[0].labels.numpy())
        assert r.inertia.numpy().tobytes() == runs[0].inertia.numpy().tobytes()
    fast = st.cluster.kmeans(xt, 20, iters=4, seed=1, deterministic=False)
    np.testing.assert_allclose(fast.centroids.numpy(), runs[0].centroids.numpy(), rtol=1e-4,
                               atol=1e-3)


def test_global_deterministic_mode_is_honoured(device, monkeypatch):
    """``deterministic=None`` follows ``st.set_deterministic`` where the runtime has it."""
    from scitensor import runtime

    seen = []
    be = device.backend
    real = be.kmeans_update

    def spy(x, labels, k, old, deterministic=False):
        seen.append(deterministic)
        return real(x, labels, k, old, deterministic)

    monkeypatch.setattr(be, "kmeans_update", spy)
    x = _t(np.arange(12.0).reshape(6, 2), device)
    st.cluster.update(x, _t([0, 1, 0, 1, 0, 1], device), 2, x[:2])
    st.cluster.update(x, _t([0, 1, 0, 1, 0, 1], device), 2, x[:2], deterministic=True)
    monkeypatch.setattr(runtime, "is_deterministic", lambda: True, raising=False)
    st.cluster.update(x, _t([0, 1, 0, 1, 0, 1], device), 2, x[:2])
    assert seen == [False, True, True]


def test_kmeans_rounds_capture_in_jit(device):
    """With an explicit start and no tol, the whole loop has no host sync: st.jit captures it
    (on CUDA: eager run, capture, replays) and gives the eager result."""
    x, _ = refs.blobs(500, 4, 6, seed=13)
    xt, c0 = _t(x, device), _t(x[:6] + 0.25, device)

    @st.jit
    def rounds(x, c):
        res = st.cluster.kmeans(x, 6, iters=3, init=c, deterministic=True)
        return res.centroids, res.labels, res.inertia

    eager = st.cluster.kmeans(xt, 6, iters=3, init=c0, deterministic=True)
    for _ in range(3):
        c, lab, inertia = rounds(xt, c0)
        assert c.numpy().tobytes() == eager.centroids.numpy().tobytes()
        np.testing.assert_array_equal(lab.numpy(), eager.labels.numpy())
        assert inertia.numpy().tobytes() == eager.inertia.numpy().tobytes()


# ---- GPU against the CPU backend ---------------------------------------------------------------
@pytest.mark.parametrize("dtype", [st.float32, st.bfloat16, st.float64], ids=lambda d: d.name)
def test_device_matches_cpu_backend(device, dtype):
    """The fused kernels (on CUDA, outputs poisoned first) against the CPU composition. The
    start is near the blob means, so no point is near a tie and the labels must agree."""
    x, truth = refs.blobs(2000, 33, 40, seed=12, dtype=dtype.np)  # D = 33: two dimension tiles
    cpu = st.Device("cpu")
    c0 = refs.blob_start(x, truth, 40)
    with poisoned(device):
        res = st.cluster.kmeans(_t(x, device), 40, iters=3, init=_t(c0, device))
        lab, d2 = st.cluster.assign(_t(x, device), _t(c0, device))
        new = st.cluster.update(_t(x, device), lab, 40, _t(c0, device), deterministic=True)
    ref = st.cluster.kmeans(_t(x, cpu), 40, iters=3, init=_t(c0, cpu))
    lab_r, d2_r = st.cluster.assign(_t(x, cpu), _t(c0, cpu))
    new_r = st.cluster.update(_t(x, cpu), lab_r, 40, _t(c0, cpu))
    np.testing.assert_array_equal(lab.numpy(), lab_r.numpy())
    np.testing.assert_array_equal(lab.numpy(), truth)
    np.testing.assert_allclose(d2.numpy(), d2_r.numpy(), rtol=1e-5, atol=1e-5)
    atol = 1e-10 if dtype is st.float64 else 2e-4 if dtype is st.float32 else 0.1
    np.testing.assert_allclose(_f64(new), _f64(new_r), atol=atol, rtol=0)
    np.testing.assert_array_equal(res.labels.numpy(), ref.labels.numpy())
    np.testing.assert_allclose(_f64(res.centroids), _f64(ref.centroids), atol=atol, rtol=0)


# ---- properties -------------------------------------------------------------------------------
@PROPS
@given(n=hs.integers(1, 70), d=hs.integers(1, 36), k=hs.integers(1, 20),
       seed=hs.integers(0, 2**31 - 1), f64=hs.booleans())
def test_assign_update_properties(device, n, d, k, seed, f64):
    rng = np.random.default_rng(seed)
    dtype = np.float64 if f64 else np.float32
    x = rng.standard_normal((n, d)).astype(dtype)
    c = rng.standard_normal((k, d)).astype(dtype)
    labels, d2 = st.cluster.assign(_t(x, device), _t(c, device))
    lab = labels.numpy()
    assert lab.shape == (n,) and lab.min() >= 0 and lab.max() < k
    dist = refs.sq_distances(x, c)
    rtol = 1e-12 if f64 else 1e-5
    # the chosen centroid is a nearest one (exactly, away from near-ties)
    assert np.all(dist[np.arange(n), lab] <= dist.min(axis=1) * (1 + 10 * rtol) + 10 * rtol)
    keep = refs.margin(x, c) > 1e-3
    np.testing.assert_array_equal(lab[keep], dist.argmin(axis=1)[keep])
    np.testing.assert_allclose(d2.numpy(), dist[np.arange(n), lab], rtol=rtol, atol=rtol)
    new = st.cluster.update(_t(x, device), labels, k, _t(c, device))
    np.testing.assert_allclose(new.numpy(), refs.means(x, lab, k, c), rtol=rtol, atol=rtol)
    if k <= n:
        res = st.cluster.kmeans(_t(x, device), k, iters=2, seed=seed)
        c_res = _f64(res.centroids)
        assert np.isfinite(c_res).all()
        np.testing.assert_allclose(res.inertia.item(),
                                   refs.nearest(x, c_res)[1].sum(), rtol=1e-4, atol=1e-4)


# ---- errors -----------------------------------------------------------------------------------
def test_errors(device):
    x = st.ones(5, 2, device=device)
    with pytest.raises(ValueError, match=r"k=6 clusters need at least 6 points.*N=5"):
        st.cluster.kmeans(x, 6)
    with pytest.raises(ValueError, match="k must be >= 1"):
        st.cluster.kmeans(x, 0)
    with pytest.raises(TypeError, match="k must be an int"):
        st.cluster.kmeans(x, 2.0)
    with pytest.raises(ValueError, match="iters must be >= 0"):
        st.cluster.kmeans(x, 2, iters=-1)
    with pytest.raises(ValueError, match="tol must be None or a number >= 0"):
        st.cluster.kmeans(x, 2, tol=-1.0)
    with pytest.raises(ValueError, match="init must be one of"):
        st.cluster.kmeans(x, 2, init="kmeans||")
    with pytest.raises(ValueError, match=r"init must have shape \(2, 2\)"):
        st.cluster.kmeans(x, 2, init=st.ones(3, 2, device=device))
    with pytest.raises(ValueError, match=r"shape \(N, D\).*got shape \(5,\)"):
        st.cluster.kmeans(st.ones(5, device=device), 2)
    with pytest.raises(TypeError, match="floating tensor, got dtype int64"):
        st.cluster.kmeans(st.ones(5, 2, dtype=st.int64, device=device), 2)
    with pytest.raises(TypeError, match="x must be a Tensor"):
        st.cluster.kmeans(np.ones((5, 2)), 2)
    with pytest.raises(ValueError, match="at least one dimension"):
        st.cluster.assign(st.ones(5, 0, device=device), st.ones(1, 0, device=device))
    with pytest.raises(ValueError, match=r"centroids must have shape \(K, 2\).*got shape \(3, 4\)"):
        st.cluster.assign(x, st.ones(3, 4, device=device))
    with pytest.raises(ValueError, match=r"centroids must have shape"):
        st.cluster.assign(x, st.ones(0, 2, device=device))
    with pytest.raises(TypeError, match="labels must be integers"):
        st.cluster.update(x, st.zeros(5, device=device), 2, st.ones(2, 2, device=device))
    with pytest.raises(ValueError, match=r"labels must have shape \(5,\)"):
        st.cluster.update(x, st.zeros(4, dtype=st.int64, device=device), 2,
                          st.ones(2, 2, device=device))
    with pytest.raises(ValueError, match=r"old_centroids must have shape \(3, 2\)"):
        st.cluster.update(x, st.zeros(5, dtype=st.int64, device=device), 3,
                          st.ones(2, 2, device=device))


def test_labels_out_of_range_raise_on_cpu():
    x = st.ones(3, 2)
    with pytest.raises(IndexError, match="label 2 is out of range for k=2"):
        st.cluster.update(x, st.tensor([0, 2, 1]), 2, st.ones(2, 2))
    with pytest.raises(IndexError, match="label -1 is out of range"):
        st.cluster.update(x, st.tensor([0, -1, 1]), 2, st.ones(2, 2))


@pytest.mark.skipif(not st.cuda_status()[0], reason="needs CUDA and the CPU")
def test_mixed_devices_raise():
    x = st.ones(4, 2, device="cuda")
    with pytest.raises(ValueError, match="centroids is on cpu but x is on cuda"):
        st.cluster.assign(x, st.ones(2, 2))
    with pytest.raises(ValueError, match="labels are on cpu but x is on cuda"):
        st.cluster.update(x, st.zeros(4, dtype=st.int64), 2, st.ones(2, 2, device="cuda"))


@pytest.mark.skipif(not st.cuda_status()[0], reason="needs CUDA")
def test_cuda_runs_the_fused_kernels_at_scale(monkeypatch):
    """On CUDA the primitives never fall back to the CuPy composition, and at a size with many
    point tiles, chunks and both centroid tiles they agree with the CPU backend."""
    from scitensor.backends.xp_cluster import ClusterPrimitives

    def fallback(*args, **kwargs):
        raise AssertionError("the CUDA backend fell back to the CuPy composition")

    monkeypatch.setattr(ClusterPrimitives, "kmeans_assign", fallback)
    monkeypatch.setattr(ClusterPrimitives, "kmeans_update", fallback)
    cuda, cpu = st.Device("cuda"), st.Device("cpu")
    for dtype in (st.float16, st.bfloat16, st.float64):
        x, _ = refs.blobs(3000, 5, 7, seed=14, dtype=dtype.np)
        st.cluster.kmeans(_t(x, cuda), 7, iters=2, seed=0)
    n, d, k = 100_000, 32, 256
    x, truth = refs.blobs(n, d, k, seed=15, spread=1.0)
    c0 = refs.blob_start(x, truth, k)
    with poisoned(cuda):
        lab, d2 = st.cluster.assign(_t(x, cuda), _t(c0, cuda))
        fast = st.cluster.update(_t(x, cuda), lab, k, _t(c0, cuda))
        det = [st.cluster.update(_t(x, cuda), lab, k, _t(c0, cuda), deterministic=True)
               for _ in range(2)]
    monkeypatch.undo()
    lab_r, d2_r = cpu.backend.kmeans_assign(x, c0)
    np.testing.assert_array_equal(lab.numpy(), lab_r)
    np.testing.assert_array_equal(lab_r, truth)
    np.testing.assert_allclose(d2.numpy(), d2_r, rtol=1e-5, atol=1e-4)
    ref = refs.means(x, truth, k, c0)
    np.testing.assert_allclose(_f64(fast), ref, rtol=0, atol=1e-4)
    np.testing.assert_allclose(_f64(det[0]), ref, rtol=0, atol=1e-4)
    assert det[0].numpy().tobytes() == det[1].numpy().tobytes()
