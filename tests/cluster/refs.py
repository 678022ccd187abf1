"""float64 NumPy references for k-means (Lloyd's algorithm) and test data."""

from __future__ import annotations

import numpy as np


def sq_distances(x, c) -> np.ndarray:
    """``(N, K)`` squared distances in float64, computed directly."""
    x = np.asarray(x, dtype=np.float64)
    c = np.asarray(c, dtype=np.float64)
    return ((x[:, None, :] - c[None, :, :]) ** 2).sum(-1)


def nearest(x, c) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, sq_dist)``: the first nearest centroid per point and the distance to it."""
    d = sq_distances(x, c)
    lab = d.argmin(axis=1)
    return lab, d[np.arange(len(lab)), lab]


def margin(x, c) -> np.ndarray:
    """Per point: second-smallest minus smallest squared distance (``inf`` when K == 1)."""
    d = np.sort(sq_distances(x, c), axis=1)
    return d[:, 1] - d[:, 0] if d.shape[1] > 1 else np.full(len(d), np.inf)


def means(x, labels, k, old) -> np.ndarray:
    """Cluster means in float64; a cluster without points keeps its ``old`` row."""
    x = np.asarray(x, dtype=np.float64)
    out = np.asarray(old, dtype=np.float64).copy()
    for j in range(k):
        sel = labels == j
        if sel.any():
            out[j] = x[sel].mean(axis=0)
    return out


def lloyd(x, c0, iters) -> tuple[np.ndarray, np.ndarray, float]:
    """``iters`` Lloyd rounds from ``c0`` then a final assignment: ``(centroids, labels,
    inertia)`` in float64."""
    c = np.asarray(c0, dtype=np.float64)
    for _ in range(iters):
        lab, _ = nearest(x, c)
        c = means(x, lab, len(c), c)
    lab, d2 = nearest(x, c)
    return c, lab, float(d2.sum())


def random_start(n, k, seed) -> np.ndarray:
    """The indices ``kmeans(init="random", seed=seed)`` starts from."""
    return np.random.default_rng(seed).choice(n, size=k, replace=False)


def blobs(n, d, k, seed=0, spread=0.3, scale=10.0, dtype=np.float32) -> tuple:
    """``(x, truth)``: ``n`` points around ``k`` well-separated centres (every centre used)."""
    r = np.random.default_rng(seed)
    centres = r.uniform(-scale, scale, size=(k, d))
    truth = np.concatenate([np.arange(k), r.integers(0, k, n - k)]) if n >= k else \
        r.integers(0, k, n)
    r.shuffle(truth)
    x = centres[truth] + spread * r.standard_normal((n, d))
    return x.astype(dtype), truth


def blob_start(x, truth, k, shift=0.1) -> np.ndarray:
    """float32 starting centroids near the true blob means (every point far from a tie)."""
    means_ = np.stack([x[truth == j].astype(np.float64).mean(axis=0) for j in range(k)])
    return (means_ + shift).astype(np.float32)
