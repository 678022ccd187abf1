"""Batch normalization over axis 1 (``(N, C)``, ``(N, C, L)``, ``(N, C, H, W)``, ...).

Training mode normalizes with the batch statistics (one fused backend pass: one-pass stable
per-channel mean and variance, then the affine map) and updates the running statistics in
place with PyTorch's rule (unbiased variance, ``momentum`` weighting the new batch). The
pullback calls the fused ``batch_norm_backward`` primitive, or, when the backward pass is
itself recorded (``create_graph=True``), the same formula written with ops so it can be
differentiated again. Evaluation mode is a per-channel affine map built from the running
statistics.
"""

from __future__ import annotations

import numbers

from .. import dtypes as dt
from ._core import GRAD_ENABLED, Tensor, check_tensor, make_result, sync_if_requested, wrap
from .elementwise import mul, neg, rsqrt, sub
from .reduction import mean as _mean
from .reduction import sum as _sum

__all__ = ["batch_norm"]

_LOW_PRECISION = (dt.float16, dt.bfloat16)
_INF = float("inf")


def _check_param(v, name: str, x: Tensor, c: int):
    if v is None:
        return None
    if not isinstance(v, Tensor):
        raise TypeError(f"batch_norm: {name} must be a Tensor or None, got {type(v).__name__}")
    if v.shape != (c,):
        raise ValueError(f"batch_norm: {name} has shape {v.shape} but the input {x.shape} "
                         f"has {c} channels on axis 1; expected shape ({c},)")
    if v.device is not x.device:
        raise ValueError(f"batch_norm: {name} is on {v.device} but the input is on "
                         f"{x.device}; move it with .to({str(x.device)!r})")
    if not v.dtype.is_floating:
        raise TypeError(f"batch_norm: {name} must be floating, got {v.dtype.name}")
    return v


def _check_counter(v, x: Tensor):
    """``num_batches_tracked``'s array (or None) after checking it is an integer scalar."""
    if v is None:
        return None
    if not isinstance(v, Tensor):
        raise TypeError(f"batch_norm: num_batches_tracked must be a Tensor or None, got "
                        f"{type(v).__name__}")
    if v.size != 1 or v.dtype.kind not in "iu":
        raise ValueError(f"batch_norm: num_batches_tracked must be an integer scalar tensor, "
                         f"got shape {v.shape} and dtype {v.dtype.name}")
    if v.device is not x.device:
        raise ValueError(f"batch_norm: num_batches_tracked is on {v.device} but the input is "
                         f"on {x.device}; move it with .to({str(x.device)!r})")
    return v.data


def _axes_and_shape(x):
    axes = (0,) + tuple(range(2, x.ndim))
    return axes, (1, x.shape[1]) + (1,) * (x.ndim - 2)


def _composed_backward(g, x, weight, eps):
    """``(dx, dweight, dbias)`` of training-mode batch norm, written with ops."""
    if x.dtype in _LOW_PRECISION:
        x, g = x.astype(dt.float32), g.astype(dt.float32)
    axes, bshape = _axes_and_shape(x)
    count = x.size // x.shape[1]
    xmu = sub(x, _mean(x, axes, keepdims=True))
    invstd = rsqrt(_mean(mul(xmu, xmu), axes, keepdims=True) + eps)
    xhat = mul(xmu, invstd)
    dbias = _sum(g, axes)
    dweight = _sum(mul(g, xhat), axes)
    k = invstd if weight is None else mul(invstd, weight.reshape(bshape))
    inner = g - dbias.reshape(bshape) / count - xhat * (dweight.reshape(bshape) / count)
    return mul(k, inner), dweight, dbias


def _channel_affine(x, scale, shift):
    """``x * scale[c] + shift[c]`` along axis 1 (one fused pass), differentiable in all three."""
    data = x.backend.channel_affine(x.data, scale.data, shift.data)

    def pullback(g, out):
        gc, xc = (g.astype(dt.float32), x.astype(dt.float32)) \
            if x.dtype in _LOW_PRECISION else (g, x)
        axes, bshape = _axes_and_shape(x)
        dx = mul(gc, scale.reshape(bshape))
        dscale = _sum(mul(gc, xc), axes) if scale.requires_grad else None
        dshift = _sum(gc, axes) if shift.requires_grad else None
        return dx, dscale, dshift

    return make_result(data, x.device, (x, scale, shift), pullback)


def batch_norm(x, running_mean=None, running_var=None, weight=None, bias=None,
               training: bool = False, momentum: float = 0.1, eps: float = 1e-5,
               num_batches_tracked=None) -> Tensor:
    """Batch normalization: ``(x - mean) / sqrt(var + eps) * weight + bias`` per channel.

    Args:
        x: ``(N, C, ...)`` floating tensor; channels on axis 1.
        running_mean, running_var: ``(C,)`` running statistics, updated in place in
            training mode (``running = (1 - momentum) * running + momentum * batch``, with
            the unbiased batch variance); required in evaluation mode.
        weight, bias: ``(C,)`` affine parameters or None.
        training: normalize with the batch statistics (else with the running ones).
        momentum: weight of the new batch in the running statistics.
        eps: added to the variance for stability.
        num_batches_tracked: an int64 scalar tensor (the layers' batch counter) incremented
            by one in place in training mode, in the same launch as the running statistics
            on a GPU; None (the default) leaves counting to the caller.

    Returns:
        A tensor shaped and typed like ``x``.

    Example:
        >>> import scitensor as st
        >>> from scitensor.ops.batchnorm import batch_norm
        >>> x = st.tensor([[1.0], [3.0]])
        >>> rm, rv = st.zeros(1), st.ones(1)
        >>> [round(v, 3) for v in batch_norm(x, rm, rv, training=True).reshape(-1).tolist()]
        [-1.0, 1.0]
        >>> round(rm.item(), 4), round(rv.item(), 4)  # unbiased batch variance 2.0
        (0.2, 1.1)
        >>> seen = st.zeros((), dtype=st.int64)
        >>> _ = batch_norm(x, rm, rv, training=True, num_batches_tracked=seen)
        >>> seen.item()
        1
    """
    x = check_tensor(x, "batch_norm")
    if x.ndim < 2:
        raise ValueError(f"batch_norm: expected an input of shape (N, C, ...), got {x.shape}")
    if not x.dtype.is_floating:
        raise TypeError(f"batch_norm: expected a floating input, got {x.dtype.name}; "
                        "convert with .astype(st.float32)")
    c = x.shape[1]
    running_mean = _check_param(running_mean, "running_mean", x, c)
    running_var = _check_param(running_var, "running_var", x, c)
    weight = _check_param(weight, "weight", x, c)
    bias = _check_param(bias, "bias", x, c)
    # (type(v) is float: skips the slower ABC check in the common case)
    if not ((type(eps) is float or isinstance(eps, numbers.Real)) and 0 <= eps < _INF):
        raise ValueError(f"batch_norm: eps must be a finite non-negative number, got {eps!r}")
    if not ((type(momentum) is float or isinstance(momentum, numbers.Real))
            and 0 <= momentum <= 1):
        raise ValueError(f"batch_norm: momentum must be a number in [0, 1], got {momentum!r}")
    counter = _check_counter(num_batches_tracked, x) if training else None
    be = x.backend
    if training:
        count = x.size // c if c else 0
        if count <= 1:
            raise ValueError(f"batch_norm: expected more than 1 value per channel when "
                             f"training, got input of shape {x.shape}; use a larger batch or "
                             "evaluation mode")
        y, mean, var, invstd = be.batch_norm_train_forward(
            x.data, None if weight is None else weight.data,
            None if bias is None else bias.data, float(eps))
        if running_mean is not None or running_var is not None or counter is not None:
            be.batch_norm_update_running_inplace(
                None if running_mean is None else running_mean.data,
                None if running_var is None else running_var.data, mean, var,
                float(momentum), count, counter)

        def pullback(g, out):
            if GRAD_ENABLED[0]:  # create_graph: the backward must be differentiable itself
                dx, dw, db = _composed_backward(g, x, weight, float(eps))
            else:
                dx, dw, db = (wrap(a, x.device) for a in be.batch_norm_backward(
                    g.data, x.data, mean, invstd, None if weight is None else weight.data))
            return dx, (dw if weight is not None else None), (db if bias is not None else None)

        out = make_result(y, x.device, (x, weight, bias), pullback)
        sync_if_requested(x.device)
        return out
    if running_mean is None or running_var is None:
        raise ValueError("batch_norm: running_mean and running_var are required in "
                         "evaluation mode (training=False); pass them or use training=True")
    scale = rsqrt(running_var + float(eps))
    if weight is not None:
        scale = mul(scale, weight)
    shift = neg(mul(running_mean, scale)) if bias is None else sub(bias,
                                                                    mul(running_mean, scale))
    out = _channel_affine(x, scale, shift)
    sync_if_requested(x.device)
    return out

