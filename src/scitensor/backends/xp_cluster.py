"""k-means primitives of the backend interface, written once against the NumPy API (``xp``).

The reference compositions of the CUDA kernels in ``cuda/kernels/kmeans.cu`` (the tests
compare the two) and the CPU implementation of :mod:`scitensor.cluster`:

- :meth:`~ClusterPrimitives.kmeans_assign`: nearest centroid per point. Squared distances
  ``||x||^2 - 2 x c^T + ||c||^2`` need only ``||c||^2 / 2 - x c^T`` for the argmin (the point's
  own norm is the same for every centroid); they are computed with one matmul per chunk of
  points so the ``(chunk, K)`` score block stays below ~4M elements. Ties go to the lowest
  centroid index. The returned squared distance is recomputed directly as
  ``sum((x - c_label)^2)``: never negative, no cancellation.
- :meth:`~ClusterPrimitives.kmeans_update`: per-cluster means; an empty cluster keeps its
  old centroid; labels outside ``[0, k)`` are ignored. NumPy sums with ``bincount`` in float64
  (exact enough to be the test reference); other array modules scatter-add in the compute
  dtype through :meth:`~ClusterPrimitives._km_add_at` (``add.at``, whose atomic float sums
  vary from run to run on a GPU; with ``deterministic=True`` the CUDA backend overrides it
  with its reproducible segmented sum).

Precision: float16/bfloat16/float32 inputs compute in float32, float64 in float64; centroids
and distances come back in that compute dtype, labels as int64.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ClusterPrimitives", "compute_dtype"]

_SCORE_ELEMENTS = 1 << 22  # elements of one (points, centroids) score block


def compute_dtype(np_dtype) -> np.dtype:
    """The dtype the k-means primitives compute in for inputs of ``np_dtype``.

    Example:
        >>> compute_dtype(np.float16), compute_dtype(np.float64)
        (dtype('float32'), dtype('float64'))
    """
    return np.dtype(np.float64) if np.dtype(np_dtype) == np.float64 else np.dtype(np.float32)


class ClusterPrimitives:
    """Mixin for :class:`~scitensor.backends.xp.ArrayBackend`: the k-means building blocks.

    Example:
        >>> import numpy as np
        >>> import scitensor as st
        >>> be = st.Device("cpu").backend
        >>> x = np.array([[0.0, 0.0], [0.0, 1.0], [5.0, 5.0]], dtype=np.float32)
        >>> labels, d2 = be.kmeans_assign(x, np.array([[0.0, 0.0], [5.0, 5.0]]))
        >>> labels.tolist(), d2.tolist()
        ([0, 0, 1], [0.0, 1.0, 0.0])
        >>> be.kmeans_update(x, labels, 2, np.zeros((2, 2))).tolist()
        [[0.0, 0.5], [5.0, 5.0]]
    """

    def kmeans_assign(self, x, centroids):
        """Nearest centroid of every point.

        Args:
            x: ``(N, D)`` floating array.
            centroids: ``(K, D)`` floating array, ``K >= 1`` (any float dtype; used in the
                compute dtype).

        Returns:
            ``(labels, sq_dist)``: ``(N,)`` int64 indices of the nearest centroid (the lowest
            index on ties) and ``(N,)`` squared distances to it, in the compute dtype.
        """
        xp = self.xp
        cdt = compute_dtype(x.dtype)
        xc = x.astype(cdt, copy=False)
        cc = centroids.astype(cdt, copy=False)
        n, k = x.shape[0], cc.shape[0]
        half_norm = (cc * cc).sum(axis=1) * cdt.type(0.5)
        labels = xp.empty(n, dtype=np.int64)
        sq_dist = xp.empty(n, dtype=cdt)
        step = max(1, _SCORE_ELEMENTS // max(k, 1))
        for s in range(0, n, step):
            xb = xc[s:s + step]
            score = xp.matmul(xb, cc.T)  # maximise x.c - |c|^2 / 2 (the first maximum)
            score -= half_norm
            lab = xp.argmax(score, axis=1)
            diff = xb - cc[lab]
            labels[s:s + step] = lab
            sq_dist[s:s + step] = (diff * diff).sum(axis=1)
        return labels, sq_dist

    def kmeans_update(self, x, labels, k, old_centroids, deterministic=False):
        """Centroids moved to the mean of their points (one Lloyd update).

        Args:
            x: ``(N, D)`` floating array.
            labels: ``(N,)`` integer array of cluster indices; values outside ``[0, k)`` are
                ignored.
            k: number of clusters.
            old_centroids: ``(k, D)`` floating array: kept for clusters without points.
            deterministic: bitwise reproducible sums. NumPy's path always is; other array
                modules pass it to :meth:`_km_add_at`.

        Returns:
            ``(k, D)`` centroids in the compute dtype.
        """
        xp = self.xp
        cdt = compute_dtype(x.dtype)
        old = old_centroids.astype(cdt, copy=False)
        n, d = x.shape
        labels = labels.astype(np.int64, copy=False)
        valid = (labels >= 0) & (labels < k)
        if xp is np:
            lab = labels[valid]
            xv = x[valid]
            counts = np.bincount(lab, minlength=k).astype(np.float64)
            sums = np.empty((k, d), dtype=np.float64)
            for j in range(d):  # bincount sums its weights in float64
                sums[:, j] = np.bincount(lab, weights=xv[:, j].astype(np.float64), minlength=k)
        else:  # no host round trip (bincount would read the largest label back)
            lab = xp.where(valid, labels, 0)
            w = valid.astype(cdt)
            sums = xp.zeros((k, d), dtype=cdt)
            counts = xp.zeros(k, dtype=cdt)
            self._km_add_at(sums, lab, x.astype(cdt) * w[:, None], deterministic)
            self._km_add_at(counts, lab, w, deterministic)
        means = sums / xp.maximum(counts, 1)[:, None]
        return xp.where(counts[:, None] > 0, means, old).astype(cdt, copy=False)

    def _km_add_at(self, a, index, values, deterministic: bool) -> None:
        """``a[index] += values`` (rows, repeated indices accumulating) for
        :meth:`kmeans_update` on a non-NumPy array module. ``xp.add.at``; a backend whose
        ``add.at`` is not reproducible overrides this for ``deterministic=True`` (the CUDA
        backend does)."""
        self.xp.add.at(a, index, values)
