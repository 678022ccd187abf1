"""k-means (Lloyd's algorithm) on any device: :func:`kmeans` and its two steps.

- :func:`assign`: the nearest centroid of every point (and the squared distance to it);
- :func:`update`: every centroid moved to the mean of its points;
- :func:`kmeans`: an initialisation, ``iters`` rounds of assign + update, a final assign.

On a GPU each step is a fused kernel (distances + argmin in one GEMM-shaped kernel; sums and
counts in shared memory, then one pass to divide): ``docs/kernels/kmeans.md``. On the CPU the
same primitives run as NumPy compositions (:mod:`scitensor.backends.xp_cluster`).

Precision: float16/bfloat16/float32 points compute in float32, float64 in float64. The
iteration keeps its centroids in that compute dtype; results come back in ``x``'s dtype.
Nothing here is differentiable (results carry no gradient history).
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import numpy as np

# autodiff before tensor: scitensor imports this package ahead of its core modules
from .. import autodiff as _autodiff  # noqa: F401
from .. import dtypes as dt
from .. import runtime
from ..backends.xp_cluster import compute_dtype
from ..ops._core import describe, sync_if_requested
from ..tensor import Tensor, wrap

__all__ = ["KMeansResult", "assign", "kmeans", "update"]

INITS = ("random", "k-means++")


class KMeansResult(NamedTuple):
    """What :func:`kmeans` returns.

    Attributes:
        centroids: ``(k, D)`` tensor in ``x``'s dtype.
        labels: ``(N,)`` int64 tensor: each point's nearest centroid among ``centroids``.
        inertia: 0-d tensor (float32, float64 for float64 input): the sum over points of the
            squared distance to their centroid. Stays on the device (no host sync).
        iters_run: number of update steps performed (``iters``, or fewer with ``tol``).
    """

    centroids: Tensor
    labels: Tensor
    inertia: Tensor
    iters_run: int


# ---- argument checks --------------------------------------------------------------------------
def _points(op: str, x) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: x must be a Tensor of shape (N, D), got {describe(x)}")
    if x.ndim != 2:
        hint = f"x.reshape(-1, {x.shape[-1]})" if x.ndim else "x.reshape(-1, 1)"
        raise ValueError(f"{op}: x must have shape (N, D) (points in rows), got shape "
                         f"{x.shape}; reshape it, e.g. {hint}")
    if not x.dtype.is_floating:
        raise TypeError(f"{op}: x must be a floating tensor, got dtype {x.dtype.name}; convert "
                        "it with x.astype(st.float32)")
    if x.shape[1] < 1:
        raise ValueError(f"{op}: x has shape {x.shape}: points need at least one dimension")
    return x


def _centroids(op: str, name: str, c, x: Tensor, k: int | None = None) -> Tensor:
    if not isinstance(c, Tensor):
        raise TypeError(f"{op}: {name} must be a Tensor of shape (K, D), got {describe(c)}")
    if c.device is not x.device:
        raise ValueError(f"{op}: {name} is on {c.device} but x is on {x.device}; move one "
                         f"with .to({str(x.device)!r})")
    if not c.dtype.is_floating:
        raise TypeError(f"{op}: {name} must be a floating tensor, got dtype {c.dtype.name}")
    want = f"({'K' if k is None else k}, {x.shape[1]})"
    if c.ndim != 2 or c.shape[1] != x.shape[1] or (k is not None and c.shape[0] != k) \
            or c.shape[0] < 1:
        raise ValueError(f"{op}: {name} must have shape {want} for x of shape {x.shape}, got "
                         f"shape {c.shape}")
    return c


def _count(op: str, name: str, v, minimum: int) -> int:
    if not isinstance(v, numbers.Integral) or isinstance(v, bool):
        raise TypeError(f"{op}: {name} must be an int, got {type(v).__name__} {v!r}")
    if v < minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {v}")
    return int(v)


def _deterministic(flag) -> bool:
    """True when the global mode (``st.set_deterministic``) is on, whatever ``flag`` says
    (deterministic mode promises reproducible results); otherwise ``flag``, False for None."""
    mode = getattr(runtime, "is_deterministic", None)
    if mode is not None and mode():
        return True
    return bool(flag)


def _labels(op: str, labels, x: Tensor, k: int) -> Tensor:
    if not isinstance(labels, Tensor):
        raise TypeError(f"{op}: labels must be an integer Tensor of shape (N,), got "
                        f"{describe(labels)}")
    if labels.device is not x.device:
        raise ValueError(f"{op}: labels are on {labels.device} but x is on {x.device}")
    if not labels.dtype.is_integer:
        raise TypeError(f"{op}: labels must be integers, got dtype {labels.dtype.name}")
    if labels.shape != (x.shape[0],):
        raise ValueError(f"{op}: labels must have shape ({x.shape[0]},) for x of shape "
                         f"{x.shape}, got {labels.shape}")
    if labels.device.type == "cpu" and labels.data.size:  # free here; a GPU would have to wait
        lo, hi = int(labels.data.min()), int(labels.data.max())
        if lo < 0 or hi >= k:
            raise IndexError(f"{op}: label {lo if lo < 0 else hi} is out of range for k={k} "
                             f"(labels must be in [0, {k}))")
    return labels


# ---- the two steps ----------------------------------------------------------------------------
def assign(x: Tensor, centroids: Tensor) -> tuple[Tensor, Tensor]:
    """The nearest centroid of every point.

    Args:
        x: ``(N, D)`` floating tensor of points.
        centroids: ``(K, D)`` floating tensor on ``x``'s device (any float dtype).

    Returns:
        ``(labels, sq_dist)``: ``(N,)`` int64 indices into ``centroids`` (the lowest index on
        exact ties; points with NaN coordinates get an unspecified label) and the ``(N,)``
        squared Euclidean distances to the chosen centroid, float32 (float64 for float64
        ``x``), computed directly as ``sum((x - c)**2)``.

    Example:
        >>> import scitensor as st
        >>> x = st.tensor([[0.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
        >>> labels, d2 = st.cluster.assign(x, st.tensor([[0.0, 0.0], [5.0, 5.0]]))
        >>> labels.tolist(), d2.tolist()
        ([0, 0, 1], [0.0, 1.0, 0.0])
    """
    x = _points("assign", x)
    c = _centroids("assign", "centroids", centroids, x)
    labels, sq = x.backend.kmeans_assign(x.data, c.data)
    sync_if_requested(x.device)
    return wrap(labels, x.device), wrap(sq, x.device)


def update(x: Tensor, labels: Tensor, k: int, old_centroids: Tensor, *,
           deterministic: bool | None = None) -> Tensor:
    """Each centroid moved to the mean of the points labelled with it.

    A cluster without points keeps its old centroid (so ``k`` may exceed the number of
    points). On a GPU the sums are accumulated with shared-memory atomics, so float sums
    depend on the order threads arrive in and may differ in the last bits from run to run;
    ``deterministic=True`` uses one accumulator per warp merged in a fixed order instead
    (bitwise reproducible on any GPU, somewhat slower, more so when ``k * D`` is large).
    The global deterministic mode (``st.set_deterministic(True)``; off by default) always
    selects the reproducible sums, whatever ``deterministic`` says. The CPU is always
    deterministic.

    Args:
        x: ``(N, D)`` floating tensor of points.
        labels: ``(N,)`` integer tensor with values in ``[0, k)`` (checked on the CPU; on a GPU
            values outside are ignored, since checking would make the host wait).
        k: number of clusters.
        old_centroids: ``(k, D)`` floating tensor: the centroids kept for empty clusters.
        deterministic: bitwise reproducible sums on the GPU (see above); None or False:
            only when the global mode is on.

    Returns:
        ``(k, D)`` centroids in ``x``'s dtype.

    Example:
        >>> import scitensor as st
        >>> x = st.tensor([[0.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
        >>> old = st.tensor([[9.0, 9.0], [9.0, 9.0], [7.0, 7.0]])
        >>> st.cluster.update(x, st.tensor([0, 0, 1]), 3, old).tolist()
        [[0.0, 0.5], [5.0, 5.0], [7.0, 7.0]]
    """
    x = _points("update", x)
    k = _count("update", "k", k, 1)
    old = _centroids("update", "old_centroids", old_centroids, x, k)
    labels = _labels("update", labels, x, k)
    be = x.backend
    new = be.kmeans_update(x.data, labels.data, k, old.data, _deterministic(deterministic))
    out = be.astype(new, x.dtype)
    sync_if_requested(x.device)
    return wrap(out, x.device)


# ---- initialisation ---------------------------------------------------------------------------
def _kmeans_plus_plus(be, xc, k: int, rng: np.random.Generator):
    """k-means++ seeding (Arthur & Vassilvitskii 2007) on the device: each next centroid is a
    point drawn with probability proportional to its squared distance to the nearest centroid
    so far. Uniform numbers come from ``rng`` on the host; nothing is read back."""
    n, d = xc.shape
    cdt = dt.from_numpy_dtype(xc.dtype)
    norms = be.sum(be.mul(xc, xc), (1,), False)

    def sq_dist_to(c):  # (n,) squared distances to the one-row array c, clamped at 0
        dot = be.reshape(be.matmul(xc, be.reshape(c, (d, 1))), (n,))
        sq = be.add(be.sub(norms, be.mul(dot, be.scalar(2.0, cdt))),
                    be.sum(be.mul(c, c), (0, 1), False))
        return be.maximum(sq, be.scalar(0.0, cdt))

    first = int(rng.integers(n))
    c = be.getitem(xc, (slice(first, first + 1),))
    rows = [c]
    d2 = sq_dist_to(c)
    last = be.asarray(np.array([n - 1]), dt.int64)
    for _ in range(1, k):
        cum = be.cumsum(d2, 0)
        target = be.mul(be.getitem(cum, (slice(n - 1, n),)), be.scalar(rng.random(), cdt))
        # the first index whose running sum exceeds the target (never a zero-distance point)
        j = be.minimum(be.sum(be.le(cum, target), (0,), True), last)
        c = be.getitem(xc, (j,))
        rows.append(c)
        d2 = be.minimum(d2, sq_dist_to(c))
    return be.concatenate(rows, 0)


def _initial_centroids(x: Tensor, k: int, seed, init, cdt):
    be = x.backend
    if isinstance(init, Tensor):
        return be.astype(_centroids("kmeans", "init", init, x, k).data, cdt)
    if not isinstance(init, str) or init not in INITS:
        raise ValueError(f"kmeans: init must be one of {INITS} or a ({k}, {x.shape[1]}) Tensor "
                         f"of starting centroids, got {init!r}")
    rng = np.random.default_rng(seed)
    xc = be.astype(x.data, cdt)
    if init == "random":
        start = rng.choice(x.shape[0], size=k, replace=False)
        return be.getitem(xc, (be.asarray(start, dt.int64),))
    return _kmeans_plus_plus(be, xc, k, rng)


def kmeans(x: Tensor, k: int, iters: int = 20, seed: int = 0, init="random",
           tol: float | None = None, *, deterministic: bool | None = None) -> KMeansResult:
    """Cluster the rows of ``x`` into ``k`` groups with Lloyd's algorithm.

    Starts from ``init`` centroids, then runs ``iters`` rounds of :func:`assign` and
    :func:`update`, and finally assigns every point to the final centroids (so ``labels`` and
    ``inertia`` describe the returned ``centroids``). With ``tol=None`` (default) the loop never
    reads a value back from the GPU, so its work queues asynchronously (and can be captured by
    ``st.jit``); with ``tol`` the loop reads one number per round (the largest centroid move)
    and stops early once it is ``<= tol``.

    Args:
        x: ``(N, D)`` floating tensor of points, on any device.
        k: number of clusters, ``1 <= k <= N``.
        iters: maximum number of update rounds (``0``: only the initial centroids).
        seed: seeds the NumPy ``Generator`` that picks the initial points (an int, or
            anything ``numpy.random.default_rng`` accepts).
        init: ``"random"``: ``k`` distinct points drawn uniformly; ``"k-means++"``: D²-weighted
            seeding (``k`` small steps on the device, slower to start but fewer rounds);
            or a ``(k, D)`` tensor of starting centroids.
        tol: stop once no centroid moves farther than ``tol`` (Euclidean) in a round.
        deterministic: bitwise reproducible centroid sums on the GPU (see :func:`update`);
            None or False: only when the global mode (``st.set_deterministic``) is on.

    Returns:
        A :class:`KMeansResult` ``(centroids, labels, inertia, iters_run)`` on ``x``'s device.

    Example:
        >>> import scitensor as st
        >>> x = st.tensor([[0.0, 0.0], [0.0, 1.0], [10.0, 10.0], [10.0, 11.0]])
        >>> res = st.cluster.kmeans(x, 2, iters=5, seed=0)
        >>> sorted(res.centroids.tolist()), res.inertia.item()
        ([[0.0, 0.5], [10.0, 10.5]], 1.0)
    """
    x = _points("kmeans", x)
    n = x.shape[0]
    k = _count("kmeans", "k", k, 1)
    if k > n:
        raise ValueError(f"kmeans: k={k} clusters need at least {k} points, but x has "
                         f"N={n} (shape {x.shape}); lower k")
    iters = _count("kmeans", "iters", iters, 0)
    if tol is not None and (not isinstance(tol, numbers.Real) or isinstance(tol, bool)
                            or not tol >= 0):
        raise ValueError(f"kmeans: tol must be None or a number >= 0, got {tol!r}")
    be = x.backend
    cdt = dt.from_numpy_dtype(compute_dtype(x.dtype.np))
    det = _deterministic(deterministic)
    xa = be.ascontiguous(x.data)
    c = _initial_centroids(x, k, seed, init, cdt)
    rounds = 0
    for _ in range(iters):
        labels, _ = be.kmeans_assign(xa, c)
        new = be.kmeans_update(xa, labels, k, c, det)
        rounds += 1
        if tol is None:
            c = new
            continue
        runtime.check_host_sync("kmeans(tol=...)")
        diff = be.sub(new, c)
        moved = be.max(be.sum(be.mul(diff, diff), (1,), False), (0,), False)
        c = new
        if float(be.to_numpy(moved)) <= float(tol) ** 2:
            break
    centroids = be.astype(c, x.dtype)
    labels, sq = be.kmeans_assign(xa, centroids)
    inertia = be.sum(sq, (0,), False)
    dev = x.device
    sync_if_requested(dev)
    return KMeansResult(wrap(centroids, dev), wrap(labels, dev), wrap(inertia, dev), rounds)
