"""``CudaClusterPrimitives``: the k-means primitives as fused kernels (``kernels/kmeans.cu``).

A mixin for :class:`~scitensor.backends.cuda.backend.CudaBackend` (listed before
``ArrayBackend`` in its bases) overriding :class:`~scitensor.backends.xp_cluster.ClusterPrimitives`:

- ``kmeans_assign``: ``st_kmeans_prep`` (centroids transposed and padded, half squared
  norms) then ``st_kmeans_assign_bk{4,8,16,32}``, one GEMM-shaped kernel with the argmin
  fused in; the dimension tile ``BK`` is chosen from ``D`` (:func:`pick_bk`);
- ``kmeans_update``: ``st_kmeans_update_partial`` (per chunk of points and range of
  clusters, sums and counts in shared memory), ``st_kmeans_reduce`` (the chunks summed in a
  fixed order) and ``st_kmeans_divide`` (means; an empty cluster keeps its centroid).

Deterministic mode (``st.set_deterministic(True)``) always selects the reproducible update,
whatever the caller passes; where the fused kernels do not apply (a cluster row too wide for
shared memory, other layouts) the xp composition runs with its scatter-adds on the
reproducible segmented sum (:mod:`.segment_sum`) instead of CuPy's atomic ``add.at``.

float16, bfloat16, float32 (float32 math) and float64 (float64 math), one NVRTC build per
dtype (``-DST_DTYPE=0..3``). Launch shapes depend only on ``(N, K, D, dtype,
deterministic)``, never on the GPU, so ``deterministic=True`` gives the same bits on any
device. Nothing here synchronizes or copies to the host: the primitives can be captured in a
CUDA graph. Design, floors and timings: ``docs/kernels/kmeans.md``.

Device plumbing goes through ``_km_*`` methods so a test can run this exact host code on
NumPy arrays with the kernels compiled for the host (``tests/cluster/host_kmeans.py``).
"""

from __future__ import annotations

import math

import numpy as np

from ... import dtypes as dt
from ...runtime import DETERMINISTIC
from ..xp_cluster import ClusterPrimitives, compute_dtype
from .segment_sum import DTYPE_CODE as SEGMENT_DTYPES

__all__ = ["CudaClusterPrimitives", "assign_plan", "pick_bk", "update_plan"]

DTYPE_CODE = {np.dtype(np.float16): 0, dt.bfloat16.np: 1, np.dtype(np.float32): 2,
              np.dtype(np.float64): 3}
_I64 = np.dtype(np.int64)
ASSIGN_THREADS = 256
SMEM_BYTES = 40960              # KM_UPDATE_SMEM in kmeans.cu
UPDATE_THREADS = 512            # atomics: one accumulator per CTA, 16 warps stream points
DETERMINISTIC_THREADS = 256     # one accumulator per warp: fewer warps, more clusters each
POINTS_PER_CHUNK = 4096         # points a CTA sums before writing its partial slab
MAX_CHUNKS = 1024
PARTIAL_BUDGET = 256 << 20      # bytes of partial sums at most
_BKS = (4, 8, 16, 32)


def pick_bk(d: int) -> int:
    """The dimension tile of the assign kernel for ``d`` dimensions.

    ``d <= 32``: the smallest tile that holds ``d`` (the point tile then stays in shared
    memory for every centroid tile). Larger ``d``: the tile that minimises padded work plus
    a per-tile cost of 8 dimensions' worth (loads and two barriers).

    Example:
        >>> [pick_bk(d) for d in (3, 8, 20, 32, 40, 64, 128)]
        [4, 8, 32, 32, 16, 32, 32]
    """
    if d <= 32:
        return next(b for b in _BKS if b >= d)
    return min(_BKS, key=lambda b: (math.ceil(d / b) * (b + 8), -b))


def assign_plan(n: int, k: int, d: int, np_dtype) -> dict:
    """Tile sizes and grid of the assign kernel (``BM``/``BN`` points/centroids per tile)."""
    f64 = np.dtype(np_dtype) == np.float64
    bm = bn = 64 if f64 else 128
    bk = pick_bk(d)
    return {"bm": bm, "bn": bn, "bk": bk, "dpad": -(-d // bk) * bk, "kpad": -(-k // bn) * bn,
            "blocks": -(-n // bm)}


def update_plan(n: int, k: int, d: int, np_dtype, deterministic: bool) -> dict | None:
    """Launch shape of the update kernels, or None when one cluster row does not fit in the
    shared accumulator (then the xp composition runs)."""
    itemsize = compute_dtype(np_dtype).itemsize
    cap = SMEM_BYTES // itemsize
    threads = DETERMINISTIC_THREADS if deterministic else UPDATE_THREADS
    per_cluster = (d + 1) * (threads // 32 if deterministic else 1)
    if per_cluster > cap:
        return None
    kr = min(k, cap // per_cluster)
    n_ranges = -(-k // kr)
    n_chunks = min(-(-n // POINTS_PER_CHUNK), MAX_CHUNKS,
                   max(1, PARTIAL_BUDGET // (k * (d + 1) * itemsize)))
    chunk = max(1, -(-n // max(1, n_chunks)))
    n_chunks = max(1, -(-n // chunk))
    return {"threads": threads, "kr": kr, "n_ranges": n_ranges, "n_chunks": n_chunks,
            "chunk": chunk}


class CudaClusterPrimitives(ClusterPrimitives):
    """Fused k-means kernels for the cluster primitives (see module docs)."""

    _km_modules: dict = {}  # (dtype code, device id) -> LoadedModule

    # ---- device plumbing (overridden by the host emulation in the tests) ----------------------
    def _km_kernel(self, name: str, signature: str, code: int):
        key = (code, self.index)
        mod = self._km_modules.get(key)
        if mod is None:
            from .compiler import load_module

            mod = self._km_modules[key] = load_module("kmeans.cu", self.index, self.arch,
                                                      options=(f"-DST_DTYPE={code}",))
        return mod.function(name, signature)

    def _km_ptr(self, a) -> int:
        return a.data.ptr

    def _km_stream(self) -> int:
        import cupy

        return cupy.cuda.get_current_stream().ptr

    def _km_new(self, shape, np_dtype):
        """A fresh array (NaN-poisoned in the tests through the backend's ``_ew``)."""
        return self._ew._new(shape, np.dtype(np_dtype))

    def _km_ok(self, x, *others) -> bool:
        return (x.ndim == 2 and x.dtype in DTYPE_CODE and x.shape[1] >= 1
                and all(o.ndim >= 1 for o in others))

    def _km_launch(self, name, signature, code, blocks, threads, *args):
        self._km_kernel(name, signature, code)(blocks, threads, self._km_stream(), *args)

    def _km_add_at(self, a, index, values, deterministic: bool) -> None:
        """The xp fallback's scatter-add: reproducible (the segmented sum of
        :mod:`.segment_sum`) when ``deterministic``, CuPy's atomic ``add.at`` otherwise."""
        if deterministic and a.dtype in SEGMENT_DTYPES:
            self.deterministic_add_at(a, (index,), values)
        else:
            super()._km_add_at(a, index, values, deterministic)

    # ---- assign ---------------------------------------------------------------------------------
    def kmeans_assign(self, x, centroids):
        if not self._km_ok(x, centroids) or centroids.ndim != 2 or centroids.shape[0] < 1:
            return super().kmeans_assign(x, centroids)
        code = DTYPE_CODE[x.dtype]
        cdt = compute_dtype(x.dtype)
        n, d = x.shape
        k = centroids.shape[0]
        labels = self._km_new((n,), _I64)
        sq_dist = self._km_new((n,), cdt)
        if n == 0:
            return labels, sq_dist
        x = self.ascontiguous(x)
        c = self.ascontiguous(self.astype(centroids, dt.from_numpy_dtype(cdt)))
        p = assign_plan(n, k, d, x.dtype)
        ct = self._km_new((p["dpad"], p["kpad"]), cdt)
        half_norm = self._km_new((p["kpad"],), cdt)
        work = p["dpad"] * p["kpad"]
        self._km_launch("st_kmeans_prep", "pppiiii", code, max(1, min(-(-work // 256), 1024)),
                        256, self._km_ptr(c), self._km_ptr(ct), self._km_ptr(half_norm), k, d,
                        p["kpad"], p["dpad"])
        self._km_launch(f"st_kmeans_assign_bk{p['bk']}", "ppppppqiii", code, p["blocks"],
                        ASSIGN_THREADS, self._km_ptr(x), self._km_ptr(c), self._km_ptr(ct),
                        self._km_ptr(half_norm), self._km_ptr(labels), self._km_ptr(sq_dist), n,
                        d, p["kpad"], p["dpad"])
        return labels, sq_dist

    # ---- update ---------------------------------------------------------------------------------
    def kmeans_update(self, x, labels, k, old_centroids, deterministic=False):
        deterministic = bool(deterministic) or DETERMINISTIC[0]
        if not self._km_ok(x, labels, old_centroids) or k < 1:
            return super().kmeans_update(x, labels, k, old_centroids, deterministic)
        n, d = x.shape
        plan = update_plan(n, k, d, x.dtype, bool(deterministic))
        if plan is None:
            return super().kmeans_update(x, labels, k, old_centroids, deterministic)
        code = DTYPE_CODE[x.dtype]
        cdt = compute_dtype(x.dtype)
        old = self.ascontiguous(self.astype(old_centroids, dt.from_numpy_dtype(cdt)))
        new = self._km_new((k, d), cdt)
        if n == 0:
            totals = self.zeros((k, d + 1), dt.from_numpy_dtype(cdt))
        else:
            x = self.ascontiguous(x)
            labels = self.ascontiguous(self.astype(labels, dt.int64))
            partial = self._km_new((plan["n_chunks"], k, d + 1), cdt)
            self._km_launch("st_kmeans_update_partial", "pppqiiiiqi", code,
                            plan["n_chunks"] * plan["n_ranges"], plan["threads"],
                            self._km_ptr(x), self._km_ptr(labels), self._km_ptr(partial), n, d,
                            k, plan["kr"], plan["n_ranges"], plan["chunk"],
                            int(bool(deterministic)))
            totals = self._km_new((k, d + 1), cdt)
            e_total = k * (d + 1)
            self._km_launch("st_kmeans_reduce", "ppqi", code,
                            max(1, min(-(-e_total // 32), 4096)), 256, self._km_ptr(partial),
                            self._km_ptr(totals), e_total, plan["n_chunks"])
        self._km_launch("st_kmeans_divide", "pppii", code,
                        max(1, min(-(-(k * d) // 256), 1024)), 256, self._km_ptr(totals),
                        self._km_ptr(old), self._km_ptr(new), k, d)
        return new
