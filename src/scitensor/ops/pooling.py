"""2-D pooling over NCHW tensors: ``max_pool2d``, ``avg_pool2d``, ``adaptive_avg_pool2d``.

Inputs are ``(N, C, H, W)`` or unbatched ``(C, H, W)``. Semantics follow
``torch.nn.functional`` (output sizes, ``ceil_mode``, ``count_include_pad``, padding at most
half the kernel). Max pooling breaks ties by the first maximum in window order (row by row),
and NaN counts as the largest value.

Every pooling map here is linear in its input once the window maxima are fixed, so each
pullback is itself a differentiable op whose pullback is the forward map again: gradients of
gradients work.
"""

from __future__ import annotations

import numbers

from ..backends.xp_pooling import pool_output_size
from ._core import GRAD_ENABLED, check_tensor, make_result, sync_if_requested, wrap

__all__ = ["adaptive_avg_pool2d", "avg_pool2d", "max_pool2d"]


def _pair(value, op: str, name: str, minimum: int) -> tuple[int, int]:
    # fast paths (four calls per pooling op): a plain int or a pair of plain ints (type() is
    # int excludes bool)
    if type(value) is int:
        if value >= minimum:
            return value, value
    elif type(value) is tuple and len(value) == 2:
        a, b = value
        if type(a) is int and type(b) is int and a >= minimum and b >= minimum:
            return value
    vals = (value, value) if isinstance(value, numbers.Integral) else tuple(value)
    if (len(vals) != 2 or any(not isinstance(v, numbers.Integral) or isinstance(v, bool)
                              for v in vals)):
        raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    if any(v < minimum for v in vals):
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {value!r}")
    return int(vals[0]), int(vals[1])


def _as_batched(x, op: str):
    """``(x4, unbatched)``: a (C, H, W) input gets a batch axis of 1."""
    x = check_tensor(x, op)
    if x.ndim not in (3, 4):
        raise ValueError(f"{op}: expected an (N, C, H, W) or (C, H, W) input, got shape "
                         f"{x.shape}")
    if not x.dtype.is_floating:
        raise TypeError(f"{op}: expected a floating tensor, got {x.dtype.name}; convert with "
                        ".astype(st.float32)")
    if any(n == 0 for n in x.shape[-3:]):
        raise ValueError(f"{op}: channel and spatial sizes must be non-zero, got shape "
                         f"{x.shape} (only the batch may be empty)")
    return (x.reshape((1,) + x.shape), True) if x.ndim == 3 else (x, False)


def _geometry(x, op, kernel_size, stride, padding, dilation, ceil_mode):
    """Validated ``(kernel, stride, padding, dilation, out_hw)``."""
    k = _pair(kernel_size, op, "kernel_size", 1)
    s = k if stride is None or (not isinstance(stride, numbers.Integral)
                                and len(tuple(stride)) == 0) else _pair(stride, op, "stride", 1)
    p = _pair(padding, op, "padding", 0)
    d = _pair(dilation, op, "dilation", 1)
    if p[0] > k[0] // 2 or p[1] > k[1] // 2:
        raise ValueError(f"{op}: padding {p} must be at most half the kernel size {k}; use a "
                         "larger kernel or less padding")
    hw = x.shape[-2:]
    out = tuple(pool_output_size(hw[a], k[a], s[a], p[a], d[a], ceil_mode) for a in (0, 1))
    if out[0] < 1 or out[1] < 1:
        eff = tuple(d[a] * (k[a] - 1) + 1 for a in (0, 1))
        raise ValueError(f"{op}: kernel {k} (dilation {d}, spanning {eff}) is larger than the "
                         f"padded input {(hw[0] + 2 * p[0], hw[1] + 2 * p[1])} of input shape "
                         f"{x.shape} with padding {p}; the output would be {out}. Use a "
                         "smaller kernel or dilation, or more padding")
    return k, s, p, d, out


def _unbatch(out, unbatched):
    return out.reshape(out.shape[1:]) if unbatched else out


# ---- max pooling ---------------------------------------------------------------------------
def _max_scatter(g, argmax, geom, input_hw):
    """Cotangent of max pooling: ``g`` routed to the recorded maxima (a linear op)."""
    k, s, p, d = geom
    data = g.backend.max_pool2d_backward(g.data, argmax, input_hw, k, s, p, d)
    return make_result(data, g.device, (g,),
                       lambda gg, out: (_max_gather(gg, argmax, geom),))


def _max_gather(x, argmax, geom):
    """``x`` read at the recorded maxima: the adjoint of :func:`_max_scatter`."""
    k, s, p, d = geom
    data = x.backend.max_pool2d_gather(x.data, argmax, k, s, p, d)
    input_hw = x.shape[2:]
    return make_result(data, x.device, (x,),
                       lambda gg, out: (_max_scatter(gg, argmax, geom, input_hw),))


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False,
               return_indices: bool = False):
    """2-D max pooling.

    Args:
        x: ``(N, C, H, W)`` or ``(C, H, W)`` floating tensor.
        kernel_size: window size, an int or ``(kh, kw)``.
        stride: window step (default: ``kernel_size``).
        padding: implicit ``-inf`` padding on each side, at most half the kernel.
        dilation: spacing between window elements.
        ceil_mode: round the output size up (a last partial window is kept).
        return_indices: also return the int64 flat ``h * W + w`` index of each maximum.

    Returns:
        The pooled tensor, or ``(pooled, indices)`` with ``return_indices``.

    Example:
        >>> import scitensor as st
        >>> from scitensor.ops.pooling import max_pool2d
        >>> max_pool2d(st.arange(16.0).reshape(1, 1, 4, 4), 2).tolist()
        [[[[5.0, 7.0], [13.0, 15.0]]]]
    """
    x4, unbatched = _as_batched(x, "max_pool2d")
    k, s, p, d, _ = _geometry(x4, "max_pool2d", kernel_size, stride, padding, dilation,
                              ceil_mode)
    need_grad = GRAD_ENABLED[0] and x4.requires_grad
    be = x4.backend
    y, argmax = be.max_pool2d(x4.data, k, s, p, d, bool(ceil_mode),
                              need_grad or return_indices)
    geom, input_hw = (k, s, p, d), x4.shape[2:]
    out = make_result(y, x4.device, (x4,),
                      lambda g, o: (_max_scatter(g, argmax, geom, input_hw),))
    out = _unbatch(out, unbatched)
    sync_if_requested(x4.device)
    if not return_indices:
        return out
    idx = wrap(be.max_pool2d_indices(argmax, input_hw, k, s, p, d), x4.device)
    return out, _unbatch(idx, unbatched)


# ---- average pooling -----------------------------------------------------------------------
def _avg_params(op, kernel_size, stride, padding, ceil_mode, count_include_pad,
                divisor_override, x4):
    k, s, p, _, out = _geometry(x4, op, kernel_size, stride, padding, 1, ceil_mode)
    if divisor_override is not None and (not isinstance(divisor_override, numbers.Integral)
                                         or isinstance(divisor_override, bool)
                                         or divisor_override <= 0):
        raise ValueError(f"{op}: divisor_override must be a positive int or None, got "
                         f"{divisor_override!r}")
    div = None if divisor_override is None else int(divisor_override)
    return (k, s, p, bool(ceil_mode), bool(count_include_pad), div), out


def _avg_forward(x4, params):
    k, s, p, ceil_mode, cip, div = params
    data = x4.backend.avg_pool2d(x4.data, k, s, p, ceil_mode, cip, div)
    input_hw = x4.shape[2:]
    return make_result(data, x4.device, (x4,),
                       lambda g, out: (_avg_backward(g, params, input_hw),))


def _avg_backward(g, params, input_hw):
    k, s, p, _, cip, div = params
    data = g.backend.avg_pool2d_backward(g.data, input_hw, k, s, p, cip, div)
    return make_result(data, g.device, (g,), lambda gg, out: (_avg_forward(gg, params),))


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
               count_include_pad: bool = True, divisor_override: int | None = None):
    """2-D average pooling.

    Args:
        x: ``(N, C, H, W)`` or ``(C, H, W)`` floating tensor.
        kernel_size: window size, an int or ``(kh, kw)``.
        stride: window step (default: ``kernel_size``).
        padding: implicit zero padding on each side, at most half the kernel.
        ceil_mode: round the output size up (a last partial window is kept).
        count_include_pad: count padding zeros in the divisor.
        divisor_override: divide every window sum by this instead.

    Returns:
        The pooled tensor.

    Example:
        >>> import scitensor as st
        >>> from scitensor.ops.pooling import avg_pool2d
        >>> avg_pool2d(st.arange(16.0).reshape(1, 1, 4, 4), 2).tolist()
        [[[[2.5, 4.5], [10.5, 12.5]]]]
    """
    x4, unbatched = _as_batched(x, "avg_pool2d")
    params, _ = _avg_params("avg_pool2d", kernel_size, stride, padding, ceil_mode,
                            count_include_pad, divisor_override, x4)
    out = _unbatch(_avg_forward(x4, params), unbatched)
    sync_if_requested(x4.device)
    return out


# ---- adaptive average pooling ----------------------------------------------------------------
def _adaptive_forward(x4, out_hw):
    data = x4.backend.adaptive_avg_pool2d(x4.data, out_hw)
    input_hw = x4.shape[2:]
    return make_result(data, x4.device, (x4,),
                       lambda g, out: (_adaptive_backward(g, input_hw),))


def _adaptive_backward(g, input_hw):
    data = g.backend.adaptive_avg_pool2d_backward(g.data, input_hw)
    out_hw = g.shape[2:]
    return make_result(data, g.device, (g,),
                       lambda gg, out: (_adaptive_forward(gg, out_hw),))


def adaptive_avg_pool2d(x, output_size):
    """Average pooling to a fixed output size (windows as in PyTorch: ``floor(i*H/OH)`` to
    ``ceil((i+1)*H/OH)``); ``output_size=1`` is global average pooling.

    Args:
        x: ``(N, C, H, W)`` or ``(C, H, W)`` floating tensor.
        output_size: an int or ``(oh, ow)``; ``None`` in the pair keeps that input size.

    Returns:
        A ``(N, C, oh, ow)`` (or ``(C, oh, ow)``) tensor.

    Example:
        >>> import scitensor as st
        >>> from scitensor.ops.pooling import adaptive_avg_pool2d
        >>> adaptive_avg_pool2d(st.arange(16.0).reshape(1, 1, 4, 4), 1).tolist()
        [[[[7.5]]]]
    """
    x4, unbatched = _as_batched(x, "adaptive_avg_pool2d")
    size = output_size
    if not isinstance(size, numbers.Integral):
        size = tuple(size)
        if len(size) == 2:
            size = tuple(x4.shape[2 + a] if v is None else v for a, v in enumerate(size))
    out_hw = _pair(size, "adaptive_avg_pool2d", "output_size", 1)
    out = _unbatch(_adaptive_forward(x4, out_hw), unbatched)
    sync_if_requested(x4.device)
    return out
