"""k-means with ``st.cluster.kmeans`` on any device, checked against NumPy.

On a GPU each Lloyd round is two fused kernels (squared distances + argmin in one GEMM-shaped
kernel, centroid sums and counts in another); on the CPU the same API runs on NumPy.

    python examples/kmeans.py                      # best device, N=262,144, D=32, K=256
    python examples/kmeans.py --device cpu --tiny
"""

import argparse
import time

import numpy as np

import scitensor as st


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
    st.cluster.kmeans(x, args.k, iters=1)  # warm-up (kernels compile on the GPU)
    if dev.type != "cpu":
        dev.backend.synchronize()
    start = time.perf_counter()
    res = st.cluster.kmeans(x, args.k, iters=args.iters, seed=0)
    c_host = res.centroids.numpy()  # waits for the GPU
    seconds = time.perf_counter() - start
    ref = kmeans_numpy(data, args.k, args.iters, seed=0)  # the same starting points
    err = float(np.abs(c_host - ref).max())
    print(f"device {dev}: N={args.n} D={args.d} K={args.k}, {res.iters_run} iterations in "
          f"{1e3 * seconds:.1f} ms; mean squared distance {res.inertia.item() / args.n:.3f}; "
          f"max |centroid - NumPy| {err:.2e}")
    return err


if __name__ == "__main__":
    main()
