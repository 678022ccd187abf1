"""Layer norm and RMS norm over the trailing ``normalized_shape`` axes, with fused backward.

The forward calls ``backend.layer_norm_forward`` / ``rms_norm_forward`` on the input viewed
as ``(rows, N)`` and saves the row statistics (``mean`` and ``rstd``); the pullback is one
call of ``backend.layer_norm_backward`` / ``rms_norm_backward`` giving ``dx`` and the
weight/bias gradients together (one fused kernel plus a small reduce on the GPU).

Gradients of gradients: the fused backward is not itself differentiable, so when the engine
records the backward pass (``create_graph=True``, i.e. ``GRAD_ENABLED`` is on inside the
pullback) the pullback computes the same gradients as a composition of differentiable ops
instead (slower, but any order of derivatives works).

float16/bfloat16 inputs compute in float32 and round once; weights of another floating dtype
(float32 parameters with bfloat16 activations) are accepted; the output has ``x``'s dtype.
"""

from __future__ import annotations

import math
import numbers

from .. import dtypes as dt
from ._core import GRAD_ENABLED, Tensor, check_tensor, make_result, sync_if_requested, wrap
from .elementwise import rsqrt
from .reduction import mean, sum

__all__ = ["layer_norm", "rms_norm"]


def _normalized_shape(normalized_shape, x: Tensor, op: str) -> tuple[int, ...]:
    if type(normalized_shape) is tuple and all(type(n) is int for n in normalized_shape):
        shape = normalized_shape  # the layers' (already checked) form: nothing to convert
    elif isinstance(normalized_shape, numbers.Integral) and not isinstance(normalized_shape,
                                                                             bool):
        shape = (int(normalized_shape),)
    else:
        try:
            if isinstance(normalized_shape, str):
                raise TypeError
            shape = tuple(int(n) for n in normalized_shape)
        except (TypeError, ValueError):
            raise TypeError(f"{op}: normalized_shape must be an int or a sequence of ints, got "
                            f"{normalized_shape!r}") from None
    xs = x.data.shape
    if not shape or len(shape) > len(xs) or xs[len(xs) - len(shape):] != shape:
        raise ValueError(f"{op}: normalized_shape {shape} must equal the trailing dimensions "
                         f"of the input of shape {x.shape}")
    if not x.dtype.is_floating:
        raise TypeError(f"{op}: input must be floating, got {x.dtype.name}; cast it with "
                        ".astype(st.float32)")
    return shape


def _param(p, shape, x: Tensor, op: str, name: str):
    if p is None:
        return None
    if not isinstance(p, Tensor):
        raise TypeError(f"{op}: {name} must be a Tensor or None, got {type(p).__name__}")
    data = p.data
    if data.shape != shape:
        raise ValueError(f"{op}: {name} of shape {p.shape} must have normalized_shape {shape}")
    if not p.dtype.is_floating:
        raise TypeError(f"{op}: {name} must be floating, got {p.dtype.name}")
    if p.device is not x.device:
        raise ValueError(f"{op}: {name} is on {p.device} but the input on {x.device}; move it "
                         f"with .to({str(x.device)!r})")
    return data if data.ndim == 1 else p.backend.reshape(data, (math.prod(shape),))


def _eps(eps, op: str) -> float:
    if type(eps) is not float and (isinstance(eps, bool) or not isinstance(eps, numbers.Real)):
        raise ValueError(f"{op}: eps must be a finite number >= 0, got {eps!r:.40}")
    if not 0 <= eps < math.inf:
        raise ValueError(f"{op}: eps must be a finite number >= 0, got {eps!r:.40}")
    return float(eps)


def _rows(be, x: Tensor, shape) -> object:
    """``x``'s data with the normalized axes as one last axis. The primitives take ``(..., N)``
    arrays, so with one normalized axis that is the data itself: no reshape on the way in or
    out (each is a backend call, a few µs of host time on a GPU)."""
    if len(shape) == 1:
        return x.data
    n = math.prod(shape)
    m = x.size // n if n else math.prod(x.shape[:x.ndim - len(shape)])
    return be.reshape(x.data, (m, n))


def _as_shape(be, a, shape):
    """``a`` reshaped to ``shape`` (no new view when it already has it)."""
    return a if a.shape == shape else be.reshape(a, shape)


def _needs(p) -> bool:
    return p is not None and p.requires_grad


def layer_norm(x, normalized_shape, weight=None, bias=None, eps: float = 1e-5) -> Tensor:
    """Normalise over the trailing ``normalized_shape`` axes: ``(x - mean) / sqrt(var + eps)
    * weight + bias`` (biased variance, as PyTorch's ``layer_norm``).

    Args:
        x: floating input ``(..., *normalized_shape)``.
        normalized_shape: an int or a tuple: the trailing dimensions to normalise over.
        weight: optional scale of shape ``normalized_shape``.
        bias: optional shift of shape ``normalized_shape``.
        eps: added to the variance.

    Returns:
        A tensor shaped and typed like ``x``.

    Example:
        >>> import scitensor as st
        >>> from scitensor.ops.normalization import layer_norm
        >>> y = layer_norm(st.tensor([[1.0, 3.0]]), 2, eps=0.0)
        >>> y.tolist()
        [[-1.0, 1.0]]
    """
    x = check_tensor(x, "layer_norm")
    shape = _normalized_shape(normalized_shape, x, "layer_norm")
    w = _param(weight, shape, x, "layer_norm", "weight")
    b = _param(bias, shape, x, "layer_norm", "bias")
    eps = _eps(eps, "layer_norm")
    be = x.backend
    x2 = _rows(be, x, shape)
    y, mu, rstd = be.layer_norm_forward(x2, w, b, eps)

    def pullback(g, out):
        if GRAD_ENABLED[0]:
            return _norm_grads_graph(g, x, weight, bias, shape, eps, rms=False)
        need_w, need_b = _needs(weight), _needs(bias)
        dx, dw, db = be.layer_norm_backward(_as_shape(be, g.data, x2.shape), x2, mu, rstd, w,
                                            need_param_grads=need_w or need_b)
        return (wrap(_as_shape(be, dx, x.shape), x.device),
                wrap(_as_shape(be, dw, shape), x.device) if need_w else None,
                wrap(_as_shape(be, db, shape), x.device) if need_b else None)

    out = make_result(_as_shape(be, y, x.shape), x.device, (x, weight, bias), pullback)
    sync_if_requested(x.device, "layer_norm")
    return out


def rms_norm(x, normalized_shape, weight=None, eps: float = 1e-6) -> Tensor:
    """Root-mean-square norm over the trailing axes: ``x / sqrt(mean(x**2) + eps) * weight``.

    Args:
        x: floating input ``(..., *normalized_shape)``.
        normalized_shape: an int or a tuple: the trailing dimensions to normalise over.
        weight: optional scale of shape ``normalized_shape``.
        eps: added to the mean square (PyTorch's default ``None`` means the dtype's machine
            epsilon there; pass it explicitly to match).

    Returns:
        A tensor shaped and typed like ``x``.

    Example:
        >>> import scitensor as st
        >>> from scitensor.ops.normalization import rms_norm
        >>> [round(v, 4) for v in rms_norm(st.tensor([[3.0, 4.0]]), 2, eps=0.0)[0].tolist()]
        [0.8485, 1.1314]
    """
    x = check_tensor(x, "rms_norm")
    shape = _normalized_shape(normalized_shape, x, "rms_norm")
    w = _param(weight, shape, x, "rms_norm", "weight")
    eps = _eps(eps, "rms_norm")
    be = x.backend
    x2 = _rows(be, x, shape)
    y, rstd = be.rms_norm_forward(x2, w, eps)

    def pullback(g, out):
        if GRAD_ENABLED[0]:
            return _norm_grads_graph(g, x, weight, None, shape, eps, rms=True)[:2]
        dx, dw = be.rms_norm_backward(_as_shape(be, g.data, x2.shape), x2, rstd, w,
                                      need_param_grads=_needs(weight))
        return (wrap(_as_shape(be, dx, x.shape), x.device),
                wrap(_as_shape(be, dw, shape), x.device) if _needs(weight) else None)

    out = make_result(_as_shape(be, y, x.shape), x.device, (x, weight), pullback)
    sync_if_requested(x.device, "rms_norm")
    return out


def _norm_grads_graph(g, x, weight, bias, shape, eps, rms):
    """The fused backward's formulas written with differentiable ops (``create_graph``).

    Recomputes the statistics from ``x`` so that the result is differentiable in ``x`` too.
    """
    cdt = dt.float64 if x.dtype is dt.float64 else dt.float32
    n = math.prod(shape)
    xc = x.astype(cdt).reshape(-1, n)
    gc = g.astype(cdt).reshape(-1, n)
    if rms:
        rstd = rsqrt(mean(xc * xc, -1, keepdims=True) + eps)
        xhat = xc * rstd
    else:
        d = xc - mean(xc, -1, keepdims=True)
        rstd = rsqrt(mean(d * d, -1, keepdims=True) + eps)
        xhat = d * rstd
    gw = gc * weight.astype(cdt).reshape(n) if weight is not None else gc
    proj = xhat * mean(gw * xhat, -1, keepdims=True)
    dx = rstd * (gw - proj if rms else gw - mean(gw, -1, keepdims=True) - proj)
    dw = sum(gc * xhat, 0).reshape(shape) if _needs(weight) else None
    db = sum(gc, 0).reshape(shape) if _needs(bias) else None
    return dx.reshape(x.shape).astype(x.dtype), dw, db
