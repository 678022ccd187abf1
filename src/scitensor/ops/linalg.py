"""Linear algebra: ``matmul`` (batched, broadcasting, 1-D cases), ``dot``, ``inner``, ``norm``.

``inner`` and ``norm`` make tensors an inner-product space (the seed's ``AdjointSpace``):
``inner(a, b)`` contracts every element, ``norm(x)`` is ``sqrt(inner(x, x))`` by default.
"""

from __future__ import annotations

import math

from .. import dtypes as dt
from ._core import (
    GRAD_ENABLED,
    Tensor,
    check_tensor,
    device_mismatch,
    make_result,
    norm_axes,
    sync_if_requested,
    wrap,
)
from .elementwise import abs as abs_
from .elementwise import div, gt, mul, where
from .reduction import max as max_
from .reduction import min as min_
from .reduction import sum as sum_

__all__ = ["dot", "inner", "matmul", "norm"]


def _mT(x: Tensor) -> Tensor:
    return x.swapaxes(-1, -2)


def matmul(a, b) -> Tensor:
    """Matrix product with NumPy semantics: batched over leading axes with broadcasting; a 1-D
    first (second) operand is a row (column) vector whose axis is removed from the result.

    Example:
        >>> import scitensor as st
        >>> (st.ones(2, 3) @ st.ones(3, 4)).shape, (st.ones(5, 2, 3) @ st.ones(3)).shape
        ((2, 4), (5, 2))
    """
    a = check_tensor(a, "matmul", "first operand")
    b = check_tensor(b, "matmul", "second operand")
    if a.device is not b.device:
        raise device_mismatch("matmul", a, b)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: operands must have at least one dimension, got shapes "
                         f"{a.shape} and {b.shape}; use * for scalars")
    ka = a.shape[-1]
    kb = b.shape[-2] if b.ndim > 1 else b.shape[0]
    if ka != kb:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not align "
                         f"({ka} != {kb})")
    if a.ndim == 1:
        if b.ndim == 1:
            return matmul(a.reshape(1, ka), b.reshape(kb, 1)).reshape(())
        return matmul(a.reshape(1, ka), b).squeeze(-2)
    if b.ndim == 1:
        return matmul(a, b.reshape(kb, 1)).squeeze(-1)
    batch_a, batch_b = a.shape[:-2], b.shape[:-2]
    n = max(len(batch_a), len(batch_b))
    pa = (1,) * (n - len(batch_a)) + batch_a
    pb = (1,) * (n - len(batch_b)) + batch_b
    if any(x != y and x != 1 and y != 1 for x, y in zip(pa, pb)):
        raise ValueError(f"matmul: batch dimensions of {a.shape} and {b.shape} do not "
                         "broadcast")
    if a.dtype is not b.dtype:
        d = dt._promote(a.dtype, b.dtype)
        a, b = a.astype(d), b.astype(d)
    if not a.dtype.is_floating:
        d = dt.get_default_dtype()
        a, b = a.astype(d), b.astype(d)
    data = a.backend.matmul(a.data, b.data)
    if GRAD_ENABLED[0] and (a.requires_grad or b.requires_grad):
        def pullback(g, out):
            return (matmul(g, _mT(b)) if a.requires_grad else None,
                    matmul(_mT(a), g) if b.requires_grad else None)

        out = make_result(data, a.device, (a, b), pullback)
    else:
        out = wrap(data, a.device)
    sync_if_requested(a.device)
    return out


def dot(a, b) -> Tensor:
    """Dot product of two 1-D tensors (a scalar); for higher dimensions, :func:`matmul`."""
    a = check_tensor(a, "dot", "first operand")
    b = check_tensor(b, "dot", "second operand")
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"dot: operands must have at least one dimension, got shapes "
                         f"{a.shape} and {b.shape}; use * for scalars")
    if a.ndim == 1 and b.ndim == 1 and a.shape != b.shape:
        raise ValueError(f"dot: vectors of different lengths {a.shape} and {b.shape}")
    return matmul(a, b)


def inner(a, b) -> Tensor:
    """The inner product ``sum(a * b)`` over every element (shapes must match).

    Example:
        >>> import scitensor as st
        >>> st.inner(st.tensor([[1.0, 2.0]]), st.tensor([[3.0, 4.0]])).item()
        11.0
    """
    a = check_tensor(a, "inner", "first operand")
    b = check_tensor(b, "inner", "second operand")
    if a.shape != b.shape:
        raise ValueError(f"inner: shapes {a.shape} and {b.shape} differ; the inner product "
                         "needs tensors of one shape")
    return sum_(mul(a, b))


def _norm2(x: Tensor, axes, keepdims) -> Tensor:
    """sqrt(sum(x^2)) with a zero (sub)gradient where the norm is 0.

    float16/bfloat16 square and sum in float32 (300**2 already overflows float16).
    """
    be = x.backend
    c = x.data if x.dtype.itemsize >= 4 else be.astype(x.data, dt.float32)
    y = be.sqrt(be.sum(be.mul(c, c), axes, keepdims))
    if c is not x.data:
        y = be.astype(y, x.dtype)
    if not (GRAD_ENABLED[0] and x.requires_grad):
        out = wrap(y, x.device)
        sync_if_requested(x.device)
        return out

    shape = x.shape

    def pullback(g, out):
        o = out if keepdims else out.reshape(tuple(1 if i in axes else n
                                                   for i, n in enumerate(shape)))
        gk = g if keepdims else g.reshape(o.shape)
        safe = where(gt(o, 0), o, 1.0)
        return (mul(x, div(gk, safe)),)

    return make_result(y, x.device, (x,), pullback)


def norm(x, ord=2, axis=None, keepdims: bool = False) -> Tensor:
    """Vector norm of ``x`` (over every element, or over ``axis``).

    Args:
        ord: ``2`` (Euclidean, the default), ``1``, ``inf``, ``-inf`` or ``"fro"`` (the
            Euclidean norm of all entries, i.e. Frobenius for matrices).
        axis: the axes to reduce (default: all).
        keepdims: keep reduced axes with size 1.

    Example:
        >>> import scitensor as st
        >>> st.norm(st.tensor([3.0, 4.0])).item(), st.norm(st.tensor([3.0, -4.0]), 1).item()
        (5.0, 7.0)
    """
    x = check_tensor(x, "norm")
    if not x.dtype.is_floating:
        x = x.astype(dt.get_default_dtype())
    axes = norm_axes(axis, x.ndim, "norm")
    if ord in (2, "fro", None):
        return _norm2(x, axes, keepdims)
    if ord == 1:
        return sum_(abs_(x), axes, keepdims)
    if ord == math.inf:
        return max_(abs_(x), axes, keepdims)
    if ord == -math.inf:
        return min_(abs_(x), axes, keepdims)
    raise ValueError(f"norm: unsupported ord {ord!r}; use 1, 2, inf, -inf or 'fro'")
