"""Shared helpers for the op tests: float64 references, tensor builders with different memory
layouts, dtype-aware comparisons and Hypothesis strategies.

Tests build inputs as NumPy arrays already rounded to the tested dtype, run the op on the
``device`` fixture's device, and compare ``.numpy()`` with a float64 NumPy reference computed
from the same rounded inputs.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as hs
from hypothesis.extra import numpy as hnp

import scitensor as st
from scitensor.testing import check_grad, tolerance

# modest runs: the whole suite must stay fast on a 2-core CI machine
PROPS = settings(max_examples=30, deadline=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture,
                                        HealthCheck.too_slow])

# for properties parametrized over many ops: fewer examples each
FEW = settings(PROPS, max_examples=12)

FLOAT_DTYPES = (st.float16, st.bfloat16, st.float32, st.float64)
INT_DTYPES = (st.int32, st.int64)
ALL_DTYPES = (*FLOAT_DTYPES, *INT_DTYPES, st.bool)
LAYOUTS = ("contiguous", "transposed", "strided", "reversed", "numpy_view")

erf64 = np.vectorize(math.erf, otypes=[np.float64])


def rng_for(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def values(shape, dtype, low=-3.0, high=3.0, seed=0, away_from=None) -> np.ndarray:
    """Random values of ``dtype`` (a scitensor dtype) in ``[low, high)`` as a NumPy array.

    ``away_from``: keep floats at least 0.1 from that point (kinks of abs, relu, ...).
    """
    r = rng_for(seed)
    if dtype is st.bool:
        return r.random(shape) < 0.5
    if dtype.is_integer:
        return r.integers(math.ceil(low), math.floor(high) + 1, size=shape).astype(dtype.np)
    x = r.uniform(low, high, size=shape)
    if away_from is not None:
        d = x - away_from
        x = np.where(np.abs(d) < 0.1, away_from + np.copysign(0.1, d) + d, x)
    return np.asarray(x).astype(dtype.np)


def f64(a) -> np.ndarray:
    """Any array or tensor as float64 NumPy values (bfloat16 included)."""
    if isinstance(a, st.Tensor):
        a = a.numpy()
    return np.asarray(a).astype(np.float64)


def make(a: np.ndarray, device, layout: str = "contiguous", requires_grad=False) -> st.Tensor:
    """A tensor with ``a``'s values and dtype on ``device``, in the given memory layout.

    ``transposed``/``strided``/``reversed`` build views through tensor ops (non-contiguous on
    every backend, negative strides for ``reversed``); ``numpy_view`` wraps a strided NumPy
    view with ``st.from_numpy`` (zero-copy on the CPU).
    """
    a = np.asarray(a)
    if a.ndim == 0 or layout == "contiguous":
        t = st.tensor(a, device=device)
    elif layout == "transposed":
        t = st.tensor(np.ascontiguousarray(a.T), device=device).T
    elif layout == "strided":
        t = st.tensor(np.repeat(a, 2, axis=-1), device=device)[..., ::2]
    elif layout == "reversed":
        t = st.tensor(np.ascontiguousarray(a[..., ::-1]), device=device)[..., ::-1]
    elif layout == "numpy_view":
        t = st.from_numpy(np.repeat(a, 2, axis=-1)[..., 1::2], device=device)
    else:
        raise ValueError(layout)
    assert t.shape == a.shape and t.dtype.np == a.dtype
    if requires_grad:
        t = t.detach().requires_grad_()
    return t


def assert_matches(actual: st.Tensor, expected, dtype=None, rtol=None, atol=None, msg=""):
    """Check dtype, shape and values of ``actual`` against a float64 reference.

    Tolerances default to :func:`scitensor.testing.tolerance` of the result dtype (exact for
    integer and bool results).
    """
    if dtype is not None:
        assert actual.dtype is dtype, f"{msg} dtype {actual.dtype} != {dtype}"
    r, a = tolerance(actual.dtype)
    rtol = r if rtol is None else rtol
    atol = a if atol is None else atol
    got = f64(actual)
    exp = np.asarray(expected, dtype=np.float64)
    assert got.shape == exp.shape, f"{msg} shape {got.shape} != {exp.shape}"
    np.testing.assert_allclose(got, exp, rtol=rtol, atol=atol, equal_nan=True, err_msg=msg)


def grad_check(f, *inputs, device, **kw) -> None:
    """``check_grad`` (float64 central differences) run on ``device``."""
    with st.default_device(device):
        assert check_grad(f, *inputs, **kw)


def second_order(f, argnum=0, weight_seed=3):
    """``x -> grad(sum(w * f(x)))``: its own gradient checks the second derivative of ``f``."""

    def g(*args):
        out_shape = f(*[a.detach() for a in args]).shape
        w = st.tensor(rng_for(weight_seed).standard_normal(out_shape), dtype=st.float64,
                      device=args[0].device)
        return st.grad(lambda *a: (f(*a) * w).sum(), argnums=argnum)(*args)

    return g


def unbroadcast(g: np.ndarray, shape) -> np.ndarray:
    """Sum ``g`` down to ``shape`` (the reference for broadcast gradients)."""
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape)
                                      if n == 1 and g.shape[lead + i] != 1)
    return np.sum(g, axis=axes, keepdims=True).reshape(shape) if axes else g.reshape(shape)


# ---- Hypothesis strategies --------------------------------------------------------------
shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)
nonempty_shapes = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4)
broadcast_pairs = hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3,
                                                    min_side=0, max_side=4)
seeds = hs.integers(0, 2**32 - 1)
layouts = hs.sampled_from(LAYOUTS)
float_dtypes = hs.sampled_from(FLOAT_DTYPES)
all_dtypes = hs.sampled_from(ALL_DTYPES)


@hs.composite
def axes_for(draw, ndim: int):
    """``None``, an int or a tuple of distinct axes (possibly negative) for ``ndim`` dims."""
    if ndim == 0:
        return draw(hs.sampled_from([None, 0, -1, ()]))
    kind = draw(hs.sampled_from(["none", "int", "tuple"]))
    if kind == "none":
        return None
    if kind == "int":
        return draw(hs.integers(-ndim, ndim - 1))
    chosen = draw(hs.lists(hs.integers(0, ndim - 1), unique=True, max_size=ndim))
    return tuple(a - ndim if draw(hs.booleans()) else a for a in chosen)


def np_axes(axis, ndim: int):
    """The axis argument in NumPy form (a tuple of non-negative axes, or None)."""
    if axis is None:
        return None
    if isinstance(axis, int):
        return () if ndim == 0 else (axis % ndim,)
    return tuple(a % ndim for a in axis)


@contextlib.contextmanager
def poisoned(device):
    """While active on CUDA, every fresh output is filled with 0xFF bytes first (NaN for
    floats, -1 for ints, True for bools): the backend's own fast allocations through its
    ``poison`` switch, and everything else through a poisoning CuPy allocator. An element a
    kernel forgets to write then fails the comparison. No-op on the CPU."""
    if device.type != "cuda":
        yield
        return
    import cupy

    ew = getattr(device.backend, "_ew", None)
    old_flag = getattr(ew, "poison", None)
    if ew is not None:
        ew.poison = True
    orig = cupy.cuda.get_allocator()

    def alloc(size):
        mem = orig(size)
        if size:
            mem.memset_async(0xFF, size)
        return mem

    cupy.cuda.set_allocator(alloc)
    try:
        yield
    finally:
        cupy.cuda.set_allocator(orig)
        if ew is not None:
            ew.poison = old_flag
