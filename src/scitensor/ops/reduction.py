"""Reductions over any axes with ``keepdims``: sum, mean, var, std, max, min, argmax, argmin,
logsumexp, softmax, log_softmax, any, all.

``axis=None`` reduces over every axis; an int or a tuple selects axes (negative allowed).
"""

from __future__ import annotations

import builtins
import math
import numbers

from .. import dtypes as dt
from ._core import (
    GRAD_ENABLED,
    Tensor,
    check_keepdims,
    check_tensor,
    make_result,
    named,
    norm_axes,
    norm_axis,
    sync_if_requested,
    wrap,
)
from .elementwise import div, eq, exp, gt, mul, sub, where

__all__ = ["all", "any", "argmax", "argmin", "logsumexp", "log_softmax", "max", "mean", "min",
           "softmax", "std", "sum", "var"]


def _kept_shape(shape, axes):
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


def _expand_back(g: Tensor, x_shape, axes, keepdims) -> Tensor:
    """Broadcast a reduced cotangent back over the reduced axes of ``x``."""
    if not keepdims:
        g = g.reshape(_kept_shape(x_shape, axes))
    return g.broadcast_to(x_shape)


def _finish(data, x, pullback):
    if pullback is not None and GRAD_ENABLED[0] and x.requires_grad:
        out = make_result(data, x.device, (x,), pullback)
    else:
        out = wrap(data, x.device)
    sync_if_requested(x.device)
    return out


def sum(x, axis=None, keepdims: bool = False) -> Tensor:
    """Sum over ``axis`` (all axes by default). Bool and int32 inputs sum to int64.

    Example:
        >>> import scitensor as st
        >>> x = st.tensor([[1.0, 2.0], [3.0, 4.0]])
        >>> st.sum(x, axis=1, keepdims=True).tolist()
        [[3.0], [7.0]]
    """
    x = check_tensor(x, "sum")
    axes = norm_axes(axis, x.ndim, "sum")
    if keepdims is not False and keepdims is not True:
        keepdims = check_keepdims(keepdims, "sum")
    data = x.backend.sum(x.data, axes, keepdims)
    shape = x.shape
    return _finish(data, x, lambda g, out: (_expand_back(g, shape, axes, keepdims),))


_LOW_PRECISION = (dt.float16, dt.bfloat16)


def mean(x, axis=None, keepdims: bool = False) -> Tensor:
    """Arithmetic mean over ``axis``; integer inputs give the default float dtype.

    float16/bfloat16 inputs are summed and divided in float32, then rounded once (their sum
    alone may overflow float16).
    """
    x = check_tensor(x, "mean")
    axes = norm_axes(axis, x.ndim, "mean")
    if keepdims is not False and keepdims is not True:
        keepdims = check_keepdims(keepdims, "mean")
    n = math.prod(x.shape[a] for a in axes)
    if not x.dtype.is_floating:
        x = x.astype(dt.get_default_dtype())
    elif x.dtype in _LOW_PRECISION:
        return mean(x.astype(dt.float32), axes, keepdims).astype(x.dtype)
    return div(sum(x, axes, keepdims), n if n else float("nan"))


def var(x, axis=None, keepdims: bool = False, ddof: int = 0) -> Tensor:
    """Variance over ``axis`` with ``ddof`` delta degrees of freedom (two-pass, stable).

    Integer inputs give the default float dtype; float16/bfloat16 compute in float32.
    """
    x = check_tensor(x, "var")
    axes = norm_axes(axis, x.ndim, "var")
    if keepdims is not False and keepdims is not True:
        keepdims = check_keepdims(keepdims, "var")
    ddof = _ddof(ddof, "var")
    n = math.prod(x.shape[a] for a in axes)
    if not x.dtype.is_floating:
        x = x.astype(dt.get_default_dtype())
    elif x.dtype in _LOW_PRECISION:
        return var(x.astype(dt.float32), axes, keepdims, ddof).astype(x.dtype)
    d = sub(x, mean(x, axes, keepdims=True))
    denom = n - ddof
    return div(sum(mul(d, d), axes, keepdims), denom if denom > 0 else float("nan"))


def std(x, axis=None, keepdims: bool = False, ddof: int = 0) -> Tensor:
    """Standard deviation: ``sqrt(var(x, axis, keepdims, ddof))``.

    Where the deviation is 0 (constant values) the gradient is 0 rather than NaN, as for
    :func:`scitensor.norm`.
    """
    x = check_tensor(x, "std")
    v = var(x, norm_axes(axis, x.ndim, "std"), check_keepdims(keepdims, "std"),
            _ddof(ddof, "std"))
    return _finish(v.backend.sqrt(v.data), v, _std_pullback)


def _ddof(ddof, op: str):
    if not isinstance(ddof, numbers.Real) or ddof != ddof:
        raise TypeError(f"{op}: ddof must be a number (usually 0 or 1), got {ddof!r:.40}")
    return ddof


def _std_pullback(g, out):
    # d sqrt(v) = dv / (2 sqrt(v)); at v == 0 var's own pullback multiplies by x - mean = 0,
    # so a finite stand-in for 1 / out keeps the product 0 instead of 0 * inf = NaN
    return (div(mul(g, 0.5), where(gt(out, 0), out, 1.0)),)


def _extreme(name):
    def op(x, axis=None, keepdims: bool = False) -> Tensor:
        x = check_tensor(x, name)
        axes = norm_axes(axis, x.ndim, name)
        if keepdims is not False and keepdims is not True:
            keepdims = check_keepdims(keepdims, name)
        if x.size == 0 and builtins.any(x.shape[a] == 0 for a in axes):
            raise ValueError(f"{name}: cannot reduce an empty axis of shape {x.shape}")
        data = getattr(x.backend, name)(x.data, axes, keepdims)
        shape = x.shape

        def pullback(g, out):
            # ties share the gradient equally
            y = _expand_back(out, shape, axes, keepdims)
            mask = eq(x, y).astype(g.dtype)
            count = sum(mask, axes, keepdims=True)
            return (mul(_expand_back(g, shape, axes, keepdims), div(mask, count)),)

        return _finish(data, x, pullback if x.dtype.is_floating else None)

    named(op, name)
    op.__doc__ = (f"``{name}`` over ``axis``; ties share the gradient equally.\n\n"
                  "    Example:\n        >>> import scitensor as st\n"
                  f"        >>> st.{name}(st.tensor([[1, 5], [7, 2]]), axis=0).tolist()\n"
                  f"        {[7, 5] if name == 'max' else [1, 2]}\n")
    return op


max = _extreme("max")
min = _extreme("min")


def _arg(name):
    def op(x, axis=None, keepdims: bool = False) -> Tensor:
        x = check_tensor(x, name)
        if keepdims is not False and keepdims is not True:
            keepdims = check_keepdims(keepdims, name)
        if axis is None:
            if x.size == 0:
                raise ValueError(f"{name}: empty tensor of shape {x.shape} has no {name[3:]}imum")
            data = getattr(x.backend, name)(x.data.reshape(-1), 0, False)
            if keepdims:
                data = data.reshape((1,) * x.ndim)
        else:
            ax = norm_axis(axis, x.ndim, name)
            if x.ndim == 0:  # the one element is its own arg-extreme
                data = getattr(x.backend, name)(x.data.reshape(-1), 0, False)
            elif x.shape[ax] == 0:
                raise ValueError(f"{name}: axis {axis} of shape {x.shape} is empty")
            else:
                data = getattr(x.backend, name)(x.data, ax, keepdims)
        out = wrap(data, x.device)
        sync_if_requested(x.device)
        return out

    named(op, name)
    op.__doc__ = (f"Index of the first {name[3:]}imum along ``axis`` (of the flattened tensor "
                  "when ``axis`` is None); int64, no gradient.")
    return op


argmax = _arg("argmax")
argmin = _arg("argmin")


def logsumexp(x, axis=None, keepdims: bool = False) -> Tensor:
    """``log(sum(exp(x)))`` over ``axis``, computed stably (max-shifted).

    Example:
        >>> import scitensor as st
        >>> round(st.logsumexp(st.tensor([0.0, 0.0])).item(), 4)
        0.6931
    """
    x = check_tensor(x, "logsumexp")
    if not x.dtype.is_floating:
        x = x.astype(dt.get_default_dtype())
    axes = norm_axes(axis, x.ndim, "logsumexp")
    if keepdims is not False and keepdims is not True:
        keepdims = check_keepdims(keepdims, "logsumexp")
    data = x.backend.logsumexp(x.data, axes, keepdims)
    shape = x.shape

    def pullback(g, out):
        y = _expand_back(out, shape, axes, keepdims)
        return (mul(_expand_back(g, shape, axes, keepdims), exp(sub(x, y))),)

    return _finish(data, x, pullback)


def softmax(x, axis: int = -1) -> Tensor:
    """``exp(x) / sum(exp(x))`` along ``axis``, max-shifted for stability.

    Example:
        >>> import scitensor as st
        >>> st.softmax(st.tensor([0.0, 0.0]), axis=-1).tolist()
        [0.5, 0.5]
    """
    x = check_tensor(x, "softmax")
    if not x.dtype.is_floating:
        x = x.astype(dt.get_default_dtype())
    ax = norm_axis(axis, x.ndim, "softmax")
    data = x.backend.softmax(x.data, ax)

    def pullback(g, y):
        if not GRAD_ENABLED[0]:  # one fused primitive; the composition stays differentiable
            return (wrap(x.backend.softmax_backward(g.data, y.data, ax), x.device),)
        return (mul(y, sub(g, sum(mul(g, y), ax, keepdims=True))),)

    return _finish(data, x, pullback)


def log_softmax(x, axis: int = -1) -> Tensor:
    """``x - logsumexp(x)`` along ``axis``."""
    x = check_tensor(x, "log_softmax")
    if not x.dtype.is_floating:
        x = x.astype(dt.get_default_dtype())
    ax = norm_axis(axis, x.ndim, "log_softmax")
    data = x.backend.log_softmax(x.data, ax)

    def pullback(g, y):
        if not GRAD_ENABLED[0]:  # one fused primitive; the composition stays differentiable
            return (wrap(x.backend.log_softmax_backward(g.data, y.data, ax), x.device),)
        return (sub(g, mul(exp(y), sum(g, ax, keepdims=True))),)

    return _finish(data, x, pullback)


def any(x, axis=None, keepdims: bool = False) -> Tensor:
    """Whether any element along ``axis`` is non-zero (bool)."""
    x = check_tensor(x, "any")
    axes = norm_axes(axis, x.ndim, "any")
    out = wrap(x.backend.any(x.data, axes, check_keepdims(keepdims, "any")), x.device)
    sync_if_requested(x.device)
    return out


def all(x, axis=None, keepdims: bool = False) -> Tensor:
    """Whether every element along ``axis`` is non-zero (bool)."""
    x = check_tensor(x, "all")
    axes = norm_axes(axis, x.ndim, "all")
    out = wrap(x.backend.all(x.data, axes, check_keepdims(keepdims, "all")), x.device)
    sync_if_requested(x.device)
    return out
