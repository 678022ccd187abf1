"""``ArrayBackend``: the whole backend interface written once against the NumPy API.

``xp`` is ``numpy`` for the CPU backend and ``cupy`` for the CUDA backend (Chainer's pattern:
one code path, two array modules). Backends override what they do better.
"""

from __future__ import annotations

import math

import numpy as np

from .. import dtypes as dt
from .base import Backend
from .philox import philox_words, uniform_from_words, words_needed
from .xp_attention import AttentionPrimitives
from .xp_cluster import ClusterPrimitives
from .xp_conv import ConvPrimitives
from .xp_linear import LinearPrimitives
from .xp_normalization import NormalizationPrimitives
from .xp_pooling import PoolingPrimitives

_LOW_PRECISION = (np.dtype(np.float16), dt.bfloat16.np)


def _compute_dtype(np_dtype):
    """Low-precision floats compute in float32 (as GPU kernels do), then round once."""
    return np.float32 if np_dtype in _LOW_PRECISION else np_dtype


class ArrayBackend(PoolingPrimitives, ConvPrimitives, NormalizationPrimitives, AttentionPrimitives,
                   LinearPrimitives, ClusterPrimitives, Backend):
    """Backend over an array module ``xp`` with the NumPy API."""

    xp = np

    # ---- IO and creation -------------------------------------------------------------
    def asarray(self, obj, dtype):
        return self.xp.asarray(obj, dtype=dtype.np)

    def to_numpy(self, a):
        return np.asarray(a)

    def from_dlpack(self, obj):
        return self.xp.from_dlpack(obj)

    def scalar(self, value, dtype):
        return dtype.np.type(value)

    def empty(self, shape, dtype):
        return self.xp.empty(shape, dtype=dtype.np)

    def zeros(self, shape, dtype):
        return self.xp.zeros(shape, dtype=dtype.np)

    def full(self, shape, value, dtype):
        return self.xp.full(shape, value, dtype=dtype.np)

    def arange(self, start, stop, step, dtype):
        return self.xp.arange(start, stop, step).astype(dtype.np, copy=False)

    def linspace(self, start, stop, num, dtype):
        return self.xp.linspace(start, stop, num).astype(dtype.np, copy=False)

    def eye(self, n, m, dtype):
        return self.xp.eye(n, m, dtype=dtype.np)

    def astype(self, a, dtype):
        return a.astype(dtype.np, copy=False)

    def copy(self, a):
        return a.copy()

    def synchronize(self):
        return None

    # ---- random ------------------------------------------------------------------------
    def _uniform_compute(self, shape, np_dtype, seed, offset):
        n = math.prod(shape)
        words = philox_words(self.xp, words_needed(n, np_dtype), seed, offset)
        return uniform_from_words(self.xp, words, np_dtype).reshape(shape)

    def uniform(self, shape, dtype, seed, offset):
        cdt = np.float64 if dtype.np == np.float64 else np.float32
        return self._uniform_compute(shape, cdt, seed, offset).astype(dtype.np, copy=False)

    def normal(self, shape, dtype, seed, offset):
        xp = self.xp
        n = math.prod(shape)
        cdt = np.float64 if dtype.np == np.float64 else np.float32
        m = (n + 1) // 2
        u = self._uniform_compute((2 * m,), cdt, seed, offset)
        u1 = 1.0 - u[:m]  # (0, 1]: log is finite
        u2 = u[m:]
        r = xp.sqrt(-2.0 * xp.log(u1))
        theta = (2.0 * math.pi) * u2
        z = xp.concatenate([r * xp.cos(theta), r * xp.sin(theta)])[:n]
        return z.astype(dtype.np, copy=False).reshape(shape)

    def randint(self, low, high, shape, dtype, seed, offset):
        n = math.prod(shape)
        w = philox_words(self.xp, 2 * n, seed, offset).astype(np.uint64)
        x = (w[0::2] << np.uint64(32)) | w[1::2]
        span = np.uint64(high - low)
        return ((x % span).astype(np.int64) + low).astype(dtype.np).reshape(shape)

    def bernoulli_mask(self, shape, p_keep, seed, offset):
        return self._uniform_compute(shape, np.float32, seed, offset) < np.float32(p_keep)

    # ---- unary -------------------------------------------------------------------------
    def neg(self, a):
        return -a  # NumPy and CuPy refuse bool: the op reports it

    def exp(self, a):
        return self.xp.exp(a)

    def log(self, a):
        return self.xp.log(a)

    def log1p(self, a):
        return self.xp.log1p(a)

    def expm1(self, a):
        return self.xp.expm1(a)

    def sqrt(self, a):
        return self.xp.sqrt(a)

    def rsqrt(self, a):
        one = a.dtype.type(1)
        return one / self.xp.sqrt(a)

    def abs(self, a):
        return self.xp.abs(a)

    def sign(self, a):
        if a.dtype == np.bool_:  # NumPy refuses; CuPy would return int8 (not a scitensor dtype)
            raise TypeError("sign is not defined for bool tensors: cast to an integer or "
                            "float dtype first")
        return self.xp.sign(a)

    def sin(self, a):
        return self.xp.sin(a)

    def cos(self, a):
        return self.xp.cos(a)

    def tanh(self, a):
        return self.xp.tanh(a)

    def sigmoid(self, a):
        xp = self.xp
        c = a.astype(_compute_dtype(a.dtype), copy=False)
        # exp of a non-positive number only: no overflow for large |x|
        e = xp.exp(-xp.abs(c))
        one = c.dtype.type(1)
        out = xp.where(c >= 0, one / (one + e), e / (one + e))
        return out.astype(a.dtype, copy=False)

    def relu(self, a):
        return self.xp.maximum(a, a.dtype.type(0))

    def gelu_tanh(self, a):
        xp = self.xp
        c = a.astype(_compute_dtype(a.dtype), copy=False)
        k = c.dtype.type(math.sqrt(2.0 / math.pi))
        half = c.dtype.type(0.5)
        inner = k * (c + c.dtype.type(0.044715) * c * c * c)
        return (half * c * (c.dtype.type(1) + xp.tanh(inner))).astype(a.dtype, copy=False)

    def erf(self, a):
        c = a.astype(_compute_dtype(a.dtype), copy=False)
        return _erf(self.xp, c).astype(a.dtype, copy=False)

    def gelu_erf(self, a):
        c = a.astype(_compute_dtype(a.dtype), copy=False)
        half = c.dtype.type(0.5)
        out = half * c * (c.dtype.type(1) + _erf(self.xp, c * c.dtype.type(1 / math.sqrt(2))))
        return out.astype(a.dtype, copy=False)

    def silu(self, a):
        c = a.astype(_compute_dtype(a.dtype), copy=False)
        return (c * self.sigmoid(c)).astype(a.dtype, copy=False)

    def softplus(self, a):
        xp = self.xp
        c = a.astype(_compute_dtype(a.dtype), copy=False)
        out = xp.maximum(c, c.dtype.type(0)) + xp.log1p(xp.exp(-xp.abs(c)))
        return out.astype(a.dtype, copy=False)

    def logical_not(self, a):
        return self.xp.logical_not(a)

    def isnan(self, a):
        return self.xp.isnan(a)

    def isinf(self, a):
        return self.xp.isinf(a)

    def isfinite(self, a):
        return self.xp.isfinite(a)

    def floor(self, a):
        return self.xp.floor(a)

    def ceil(self, a):
        return self.xp.ceil(a)

    def round(self, a):
        return self.xp.round(a)

    def square(self, a):
        return a * a

    def reciprocal(self, a):
        return a.dtype.type(1) / a

    # ---- binary ------------------------------------------------------------------------
    def add(self, a, b):
        return a + b

    def sub(self, a, b):
        return a - b

    def mul(self, a, b):
        return a * b

    def div(self, a, b):
        return a / b

    def floordiv(self, a, b):
        return a // b

    def mod(self, a, b):
        return a % b

    def pow(self, a, b):
        return a**b

    def maximum(self, a, b):
        return self.xp.maximum(a, b)

    def minimum(self, a, b):
        return self.xp.minimum(a, b)

    def eq(self, a, b):
        return a == b

    def ne(self, a, b):
        return a != b

    def lt(self, a, b):
        return a < b

    def le(self, a, b):
        return a <= b

    def gt(self, a, b):
        return a > b

    def ge(self, a, b):
        return a >= b

    def logical_and(self, a, b):
        return self.xp.logical_and(a, b)

    def logical_or(self, a, b):
        return self.xp.logical_or(a, b)

    def logical_xor(self, a, b):
        return self.xp.logical_xor(a, b)

    def where(self, cond, a, b):
        return self.xp.where(cond, a, b)

    def clip(self, a, lo, hi):
        # maximum/minimum: NumPy's order (min first, then max), 3x less overhead than clip()
        if lo is not None:
            a = self.xp.maximum(a, lo)
        if hi is not None:
            a = self.xp.minimum(a, hi)
        return a

    # ---- reductions ------------------------------------------------------------------------
    def sum(self, a, axes, keepdims):
        if a.dtype in _LOW_PRECISION:
            return a.astype(np.float32).sum(axis=axes, keepdims=keepdims).astype(a.dtype)
        if a.dtype == np.bool_ or a.dtype == np.int32:
            return a.sum(axis=axes, keepdims=keepdims, dtype=np.int64)
        return a.sum(axis=axes, keepdims=keepdims)

    def prod(self, a, axes, keepdims):
        return a.prod(axis=axes, keepdims=keepdims)

    def max(self, a, axes, keepdims):
        return a.max(axis=axes, keepdims=keepdims)

    def min(self, a, axes, keepdims):
        return a.min(axis=axes, keepdims=keepdims)

    def argmax(self, a, axis, keepdims):
        return self.xp.argmax(a, axis=axis, keepdims=keepdims).astype(np.int64, copy=False)

    def argmin(self, a, axis, keepdims):
        return self.xp.argmin(a, axis=axis, keepdims=keepdims).astype(np.int64, copy=False)

    def any(self, a, axes, keepdims):
        return self.xp.any(a, axis=axes, keepdims=keepdims)

    def all(self, a, axes, keepdims):
        return self.xp.all(a, axis=axes, keepdims=keepdims)

    def cumsum(self, a, axis):
        return self.xp.cumsum(a, axis=axis, dtype=a.dtype)

    def logsumexp(self, a, axes, keepdims):
        xp = self.xp
        if a.size == 0:  # empty sums are 0, their log -inf (max() would refuse them)
            s = xp.zeros(a.shape, dtype=a.dtype).sum(axis=axes, keepdims=keepdims)
            return xp.full_like(s, -np.inf)
        c = a.astype(_compute_dtype(a.dtype), copy=False)
        m = c.max(axis=axes, keepdims=True)
        m = xp.where(xp.isfinite(m), m, c.dtype.type(0))
        s = xp.exp(c - m).sum(axis=axes, keepdims=True)
        out = xp.log(s) + m
        if not keepdims:
            out = out.reshape([n for i, n in enumerate(a.shape) if i not in axes])
        return out.astype(a.dtype, copy=False)

    def softmax(self, a, axis):
        xp = self.xp
        if a.ndim == 0:
            return xp.ones_like(a)
        if a.size == 0:
            return a.copy()
        c = a.astype(_compute_dtype(a.dtype), copy=False)
        m = c.max(axis=axis, keepdims=True)
        m = xp.where(xp.isfinite(m), m, c.dtype.type(0))
        e = xp.exp(c - m)
        return (e / e.sum(axis=axis, keepdims=True)).astype(a.dtype, copy=False)

    def log_softmax(self, a, axis):
        if a.ndim == 0:
            return self.xp.zeros_like(a)
        if a.size == 0:
            return a.copy()
        c = a.astype(_compute_dtype(a.dtype), copy=False)
        lse = self.logsumexp(c, (axis,), True)
        return (c - lse).astype(a.dtype, copy=False)

    # ---- shape ---------------------------------------------------------------------------
    def reshape(self, a, shape):
        return a.reshape(shape)

    def transpose(self, a, perm):
        return a.transpose(perm)

    def broadcast_to(self, a, shape):
        return self.xp.broadcast_to(a, shape)

    def concatenate(self, arrays, axis):
        return self.xp.concatenate(arrays, axis=axis)

    def stack(self, arrays, axis):
        return self.xp.stack(arrays, axis=axis)

    def split(self, a, indices, axis):
        return self.xp.split(a, indices, axis=axis)

    def pad(self, a, pad_width, value):
        return self.xp.pad(a, pad_width, constant_values=value)

    def flip(self, a, axes):
        return self.xp.flip(a, axis=axes)

    def repeat(self, a, repeats, axis):
        return self.xp.repeat(a, repeats, axis=axis)

    def tile(self, a, reps):
        return self.xp.tile(a, reps)

    def ascontiguous(self, a):
        return self.xp.ascontiguousarray(a)

    # ---- indexing ------------------------------------------------------------------------
    def getitem(self, a, key):
        return a[key]

    def setitem(self, a, key, value):
        a[key] = value

    def add_at(self, a, key, values):
        """``a[key] += values`` with repeated indices accumulating (in place)."""
        self.xp.add.at(a, key, values)

    def take_along_axis(self, a, indices, axis):
        return self.xp.take_along_axis(a, indices, axis=axis)

    def index_add(self, a, axis, index, src):
        out = a.copy()
        key = (slice(None),) * axis + (index,)
        self.xp.add.at(out, key, src)
        return out

    def scatter_add(self, a, axis, index, src):
        out = a.copy()
        grids = list(self.xp.indices(index.shape, sparse=True))
        grids[axis] = index
        self.xp.add.at(out, tuple(grids), src)
        return out

    def one_hot(self, labels, num_classes, dtype):
        out = self.xp.zeros(labels.shape + (num_classes,), dtype=dtype.np)
        self.xp.put_along_axis(out, labels[..., None].astype(np.int64), 1, axis=-1)
        return out

    def sort(self, a, axis):
        return self.xp.sort(a, axis=axis, kind="stable")

    def argsort(self, a, axis):
        return self.xp.argsort(a, axis=axis, kind="stable").astype(np.int64, copy=False)

    # ---- linear algebra --------------------------------------------------------------------
    def matmul(self, a, b):
        if a.dtype in _LOW_PRECISION:
            # accumulate in float32 as tensor cores do, round once
            return self.xp.matmul(a.astype(np.float32), b.astype(np.float32)).astype(a.dtype)
        return self.xp.matmul(a, b)


def _erf(xp, x):
    """erf via the Abramowitz-Stegun 7.1.26-style rational approximation is too coarse for
    float64 gradients checks, so use math.erf elementwise where xp has no erf."""
    f = getattr(xp, "erf", None)
    if f is not None:
        return f(x)
    if xp is not np:  # CuPy: its own scipy.special (SciPy would pull the data to the host)
        from cupyx.scipy.special import erf as cupy_erf

        return cupy_erf(x)
    try:
        from scipy.special import erf as scipy_erf  # optional, faster when present

        return scipy_erf(x).astype(x.dtype, copy=False)
    except ImportError:
        return np.vectorize(math.erf, otypes=[x.dtype])(x) if x.size else x.copy()
