"""k-means from plain ops on any device: squared distances through one matmul, ``argmin`` for
the assignment, ``st.index_add`` for the centroid sums; checked against NumPy.

    python examples/kmeans.py                      # best device, N=262,144, D=32, K=256
    python examples/kmeans.py --device cpu --tiny
"""

import argparse
import time

import numpy as np

import scitensor as st


def kmeans(x, k: int, iters: int, seed: int = 0):
    """``(centroids (k, d), labels (n,))`` after ``iters`` Lloyd iterations, started from
    ``k`` distinct points picked with ``seed``; an empty cluster keeps its centroid."""
    n, d = x.shape
    start = np.random.default_rng(seed).choice(n, size=k, replace=False)
    c = x[st.tensor(start, device=x.device)]
    ones = st.ones(n, dtype=x.dtype, device=x.device)
    x_sq = (x * x).sum(axis=1, keepdims=True)  # (n, 1)
    for _ in range(iters):
        dist = x_sq - 2.0 * (x @ c.T) + (c * c).sum(axis=1)  # (n, k)
        labels = st.argmin(dist, axis=1)
        sums = st.index_add(st.zeros(k, d, dtype=x.dtype, device=x.device), 0, labels, x)
        counts = st.index_add(st.zeros(k, dtype=x.dtype, device=x.device), 0, labels, ones)
        c = st.where(counts[:, None] > 0, sums / st.maximum(counts, 1.0)[:, None], c)
    dist = x_sq - 2.0 * (x @ c.T) + (c * c).sum(axis=1)
    return c, st.argmin(dist, axis=1)


def kmeans_numpy(x: np.ndarray, k: int, iters: int, seed: int = 0):
    """The same algorithm in NumPy (float64), the reference."""
    n, _ = x.shape
    c = x[np.random.default_rng(seed).choice(n, size=k, replace=False)].astype(np.float64)
    x = x.astype(np.float64)
    for _ in range(iters):
        labels = ((x[:, None, :] - c[None]) ** 2).sum(-1).argmin(1) if n * k < 2**22 else \
            ((x * x).sum(1, keepdims=True) - 2 * x @ c.T + (c * c).sum(1)).argmin(1)
        counts = np.bincount(labels, minlength=k)
        sums = np.zeros_like(c)
        np.add.at(sums, labels, x)
        c = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], c)
    return c


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("-n", type=int, default=262_144)
    p.add_argument("-d", type=int, default=32)
    p.add_argument("-k", type=int, default=256)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--tiny", action="store_true", help="N=2,000, D=8, K=16")
    args = p.parse_args(argv)
    if args.tiny:
        args.n, args.d, args.k = 2000, 8, 16
    dev = st.best_device() if args.device == "auto" else st.Device(args.device)
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=4.0, size=(args.k, args.d))
    data = (centers[rng.integers(0, args.k, args.n)]
            + rng.normal(size=(args.n, args.d))).astype(np.float32)
    x = st.tensor(data, device=dev)
    kmeans(x, args.k, 1)  # warm-up (kernels compile on the GPU)
    if dev.type != "cpu":
        dev.backend.synchronize()
    start = time.perf_counter()
    c, labels = kmeans(x, args.k, args.iters)
    c_host = c.numpy()  # waits for the GPU
    seconds = time.perf_counter() - start
    ref = kmeans_numpy(data, args.k, args.iters)
    err = float(np.abs(c_host - ref).max())
    inertia = float(((data - c_host[labels.numpy()]) ** 2).sum() / args.n)
    print(f"device {dev}: N={args.n} D={args.d} K={args.k}, {args.iters} iterations in "
          f"{1e3 * seconds:.1f} ms; mean squared distance {inertia:.3f}; "
          f"max |centroid - NumPy| {err:.2e}")
    return err


if __name__ == "__main__":
    main()
