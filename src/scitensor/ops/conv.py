"""2-D convolutions (NCHW): ``conv2d``, ``conv_transpose2d`` and ``conv2d_weight``.

Three ops close under differentiation, so gradients of gradients work: conv2d's input
gradient is a transposed convolution, the transposed convolution's input gradient is a
convolution, and both weight gradients are ``conv2d_weight`` (bilinear in its two inputs;
its own pullback is a convolution and a transposed one). The backend primitives they call
are documented in :mod:`scitensor.backends.xp_conv`.
"""

from __future__ import annotations

import numbers

from .. import dtypes as dt
from ._core import (
    GRAD_ENABLED,
    Tensor,
    check_tensor,
    make_result,
    sync_if_requested,
    wrap,
)

__all__ = ["conv2d", "conv2d_weight", "conv_transpose2d"]

# geometry: (stride, (pad_top, pad_left), dilation, groups); sizes are passed explicitly, so
# padding past the bottom/right edge and output_padding need no extra state.


def _finish(data, dev, parents, pullback) -> Tensor:
    if GRAD_ENABLED[0] and any(p is not None and p.requires_grad for p in parents):
        out = make_result(data, dev, parents, pullback)
    else:
        out = wrap(data, dev)
    sync_if_requested(dev)
    return out


def _reduce_bias(g: Tensor) -> Tensor:
    return g.sum(axis=(0, 2, 3))


def _conv(x, w, b, out_hw, geo) -> Tensor:
    stride, pad, dil, groups = geo
    if x.dtype is not w.dtype:  # a cotangent of another dtype meets the weight
        x = x.astype(w.dtype)
    data = x.backend.conv2d(x.data, w.data, None if b is None else b.data, out_hw, stride, pad,
                            dil, groups)
    in_hw, k_hw = x.shape[2:], w.shape[2:]

    def pullback(g, out):
        return (_conv_t(g, w, None, in_hw, geo) if x.requires_grad else None,
                _conv_weight(x, g, k_hw, geo) if w.requires_grad else None,
                _reduce_bias(g) if b is not None and b.requires_grad else None)

    return _finish(data, x.device, (x, w, b), pullback)


def _conv_t(y, w, b, out_hw, geo) -> Tensor:
    stride, pad, dil, groups = geo
    if y.dtype is not w.dtype:
        y = y.astype(w.dtype)
    data = y.backend.conv_transpose2d(y.data, w.data, None if b is None else b.data, out_hw,
                                      stride, pad, dil, groups)
    in_hw, k_hw = y.shape[2:], w.shape[2:]

    def pullback(g, out):
        return (_conv(g, w, None, in_hw, geo) if y.requires_grad else None,
                _conv_weight(g, y, k_hw, geo) if w.requires_grad else None,
                _reduce_bias(g) if b is not None and b.requires_grad else None)

    return _finish(data, y.device, (y, w, b), pullback)


def _conv_weight(x, gy, k_hw, geo) -> Tensor:
    stride, pad, dil, groups = geo
    if gy.dtype is not x.dtype:
        gy = gy.astype(x.dtype)
    data = x.backend.conv2d_weight(x.data, gy.data, k_hw, stride, pad, dil, groups)
    x_hw, y_hw = x.shape[2:], gy.shape[2:]

    def pullback(g, out):  # <g, dW(x, gy)> = <gy, conv2d(x, g)>
        return (_conv_t(gy, g, None, x_hw, geo) if x.requires_grad else None,
                _conv(x, g, None, y_hw, geo) if gy.requires_grad else None)

    return _finish(data, x.device, (x, gy), pullback)


# ---- argument checking ----------------------------------------------------------------------
def _pair(v, op: str, name: str, minimum: int) -> tuple[int, int]:
    # fast paths (every call of every conv runs this three times): a plain int or a pair of
    # plain ints (type() is int excludes bool)
    if type(v) is int:
        if v >= minimum:
            return v, v
    elif type(v) is tuple and len(v) == 2:
        a, b = v
        if type(a) is int and type(b) is int and a >= minimum and b >= minimum:
            return v
    vals = (v, v) if isinstance(v, numbers.Integral) else tuple(v) if isinstance(
        v, tuple | list) else None
    if (vals is None or len(vals) != 2 or any(
            not isinstance(a, numbers.Integral) or isinstance(a, bool) or a < minimum
            for a in vals)):
        raise ValueError(f"{op}: {name} must be an int >= {minimum} or a pair of them, "
                         f"got {v!r}")
    return int(vals[0]), int(vals[1])


def _operands(op, x, weight, bias):
    """Check devices/ranks, promote dtypes; returns (x, weight, bias, unbatched)."""
    x = check_tensor(x, op, "input")
    weight = check_tensor(weight, op, "weight")
    if bias is not None:
        check_tensor(bias, op, "bias")
    for t in (weight, bias):
        if t is not None and t.device is not x.device:
            raise ValueError(f"{op}: input is on {x.device} but a weight/bias is on "
                             f"{t.device}; move them to one device with .to(...)")
    if weight.ndim != 4:
        raise ValueError(f"{op}: weight must be 4-D (out, in/groups, kh, kw) for conv2d or "
                         f"(in, out/groups, kh, kw) for conv_transpose2d, got shape "
                         f"{weight.shape}")
    unbatched = x.ndim == 3
    if x.ndim not in (3, 4):
        raise ValueError(f"{op}: input must be 4-D (N, C, H, W) or 3-D (C, H, W), got shape "
                         f"{x.shape}")
    if unbatched:
        x = x.reshape((1,) + x.shape)
    d = x.dtype
    if d is weight.dtype and (bias is None or bias.dtype is d) and d.is_floating:
        return x, weight, bias, unbatched  # the common case: nothing to convert
    d = dt._promote(x.dtype, weight.dtype)
    if bias is not None:
        d = dt._promote(d, bias.dtype)
    if not d.is_floating:
        d = dt.get_default_dtype()
    x, weight = (t if t.dtype is d else t.astype(d) for t in (x, weight))
    if bias is not None and bias.dtype is not d:
        bias = bias.astype(d)
    return x, weight, bias, unbatched


def _check_groups(op, groups, c_in, c_out, x, weight, per_group_in):
    if ((type(groups) is not int and (not isinstance(groups, numbers.Integral)
                                      or isinstance(groups, bool))) or groups < 1):
        raise ValueError(f"{op}: groups must be a positive int, got {groups!r}")
    if c_in % groups or c_out % groups:
        raise ValueError(f"{op}: groups={groups} must divide both in_channels ({c_in}) and "
                         f"out_channels ({c_out}); input {x.shape}, weight {weight.shape}")
    if x.shape[1] != per_group_in * groups:
        raise ValueError(f"{op}: input {x.shape} has {x.shape[1]} channels but weight "
                         f"{weight.shape} with groups={groups} expects "
                         f"{per_group_in * groups}; check in_channels, the weight layout or "
                         "groups")


def _check_bias(op, bias, n):
    if bias is not None and bias.shape != (n,):
        raise ValueError(f"{op}: bias shape {bias.shape} must be ({n},), one per output "
                         "channel")


def _same_padding(op, k, d, s):
    if s != 1:
        raise ValueError(f"{op}: padding='same' needs stride 1, got stride {s}; pad "
                         "explicitly with an int or pair for strided convolutions")
    total = d * (k - 1)
    return total // 2, total - total // 2  # as PyTorch: any extra row goes at the end


def _resolve_padding(op, padding, k_hw, dil, stride):
    """-> ((top, bottom), (left, right))."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0), (0, 0)
        if padding == "same":
            return tuple(_same_padding(op, k_hw[i], dil[i], stride[i]) for i in range(2))
        raise ValueError(f"{op}: padding must be 'same', 'valid', an int or a pair, got "
                         f"{padding!r}")
    ph, pw = _pair(padding, op, "padding", 0)
    return (ph, ph), (pw, pw)


# ---- public ops -------------------------------------------------------------------------------
def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups: int = 1) -> Tensor:
    """2-D convolution (cross-correlation, as PyTorch) over NCHW input.

    Args:
        x: ``(N, C, H, W)`` (or unbatched ``(C, H, W)``).
        weight: ``(K, C // groups, kh, kw)``.
        bias: ``(K,)`` or None.
        stride, dilation: an int or a pair ``(h, w)``.
        padding: ``"valid"`` (none), ``"same"`` (output size = input size; stride 1 only),
            an int or a pair ``(h, w)`` of zero padding on both sides.
        groups: split channels into this many independent groups (``groups == C`` is a
            depthwise convolution).

    Returns:
        ``(N, K, Ho, Wo)`` with ``Ho = (H + 2*ph - dh*(kh - 1) - 1) // sh + 1``.

    Example:
        >>> import scitensor as st
        >>> from scitensor.ops.conv import conv2d
        >>> y = conv2d(st.ones(1, 2, 5, 5), st.ones(4, 2, 3, 3), padding="same")
        >>> y.shape, y[0, 0, 2, 2].item(), y[0, 0, 0, 0].item()
        ((1, 4, 5, 5), 18.0, 8.0)
    """
    op = "conv2d"
    x, weight, bias, unbatched = _operands(op, x, weight, bias)
    k, cg, kh, kw = weight.shape
    _check_groups(op, groups, cg * groups, k, x, weight, cg)
    _check_bias(op, bias, k)
    stride = _pair(stride, op, "stride", 1)
    dil = _pair(dilation, op, "dilation", 1)
    (pt, pb), (pl, pr) = _resolve_padding(op, padding, (kh, kw), dil, stride)
    h, w = x.shape[2:]
    eh, ew = dil[0] * (kh - 1) + 1, dil[1] * (kw - 1) + 1
    if h + pt + pb < eh or w + pl + pr < ew:
        raise ValueError(f"{op}: kernel {kh}x{kw} (dilated extent {eh}x{ew}) is larger than "
                         f"the padded input {h + pt + pb}x{w + pl + pr} (input {x.shape}, "
                         f"padding {padding!r}); pad more or use a smaller kernel/dilation")
    out_hw = ((h + pt + pb - eh) // stride[0] + 1, (w + pl + pr - ew) // stride[1] + 1)
    y = _conv(x, weight, bias, out_hw, (stride, (pt, pl), dil, int(groups)))
    return y.reshape(y.shape[1:]) if unbatched else y


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0,
                     groups: int = 1, dilation=1) -> Tensor:
    """Transposed 2-D convolution (the adjoint of :func:`conv2d`; "deconvolution").

    Args:
        x: ``(N, C_in, H, W)`` (or unbatched ``(C_in, H, W)``).
        weight: ``(C_in, C_out // groups, kh, kw)`` (PyTorch's layout).
        bias: ``(C_out,)`` or None.
        stride, padding, dilation: the geometry of the convolution this inverts in shape
            (ints or pairs); ``padding`` removes rows/columns from the output.
        output_padding: extra rows/columns at the bottom/right (int or pair), each below the
            stride or the dilation, to pick among the input sizes a strided conv maps to ``H``.
        groups: channel groups, as for :func:`conv2d`.

    Returns:
        ``(N, C_out, Ho, Wo)`` with ``Ho = (H - 1)*sh - 2*ph + dh*(kh - 1) + oph + 1``.

    Example:
        >>> import scitensor as st
        >>> from scitensor.ops.conv import conv_transpose2d
        >>> conv_transpose2d(st.ones(1, 4, 5, 5), st.ones(4, 2, 3, 3), stride=2, padding=1,
        ...                  output_padding=1).shape
        (1, 2, 10, 10)
    """
    op = "conv_transpose2d"
    x, weight, bias, unbatched = _operands(op, x, weight, bias)
    c_in, cg, kh, kw = weight.shape
    if not isinstance(groups, numbers.Integral) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"{op}: groups must be a positive int, got {groups!r}")
    if c_in % groups:
        raise ValueError(f"{op}: groups={groups} must divide in_channels ({c_in}); weight "
                         f"{weight.shape}")
    if x.shape[1] != c_in:
        raise ValueError(f"{op}: input {x.shape} has {x.shape[1]} channels but weight "
                         f"{weight.shape} expects {c_in} (weight layout is (in_channels, "
                         "out_channels // groups, kh, kw))")
    _check_bias(op, bias, cg * groups)
    stride = _pair(stride, op, "stride", 1)
    dil = _pair(dilation, op, "dilation", 1)
    if isinstance(padding, str):
        raise ValueError(f"{op}: padding must be an int or a pair, got {padding!r}")
    pad = _pair(padding, op, "padding", 0)
    opad = _pair(output_padding, op, "output_padding", 0)
    for i in range(2):
        if opad[i] >= max(stride[i], dil[i]):
            raise ValueError(f"{op}: output_padding {opad} must be smaller than the stride "
                             f"{stride} or the dilation {dil} in each dimension")
    h, w = x.shape[2:]
    out_hw = tuple((n - 1) * s - 2 * p + d * (k - 1) + o + 1 for n, s, p, d, k, o in zip(
        (h, w), stride, pad, dil, (kh, kw), opad))
    if min(out_hw) < 1:
        raise ValueError(f"{op}: output size {out_hw} is empty for input {x.shape}, weight "
                         f"{weight.shape}, stride {stride}, padding {pad}; reduce padding")
    y = _conv_t(x, weight, bias, out_hw, (stride, pad, dil, int(groups)))
    return y.reshape(y.shape[1:]) if unbatched else y


def conv2d_weight(x, grad_output, kernel_size, stride=1, padding=0, dilation=1,
                  groups: int = 1) -> Tensor:
    """The gradient of :func:`conv2d` with respect to its weight (differentiable).

    Args:
        x: the convolution's input ``(N, C, H, W)``.
        grad_output: the cotangent of its output ``(N, K, Ho, Wo)``.
        kernel_size: ``(kh, kw)`` (or an int); stride, padding, dilation, groups: as given
            to :func:`conv2d` (padding ``"same"`` included).

    Returns:
        ``(K, C // groups, kh, kw)``.

    Example:
        >>> import scitensor as st
        >>> from scitensor.ops.conv import conv2d_weight
        >>> conv2d_weight(st.ones(2, 3, 5, 5), st.ones(2, 4, 3, 3), 3).shape
        (4, 3, 3, 3)
    """
    op = "conv2d_weight"
    x = check_tensor(x, op, "input")
    gy = check_tensor(grad_output, op, "grad_output")
    if x.ndim != 4 or gy.ndim != 4 or x.shape[0] != gy.shape[0]:
        raise ValueError(f"{op}: input {x.shape} and grad_output {gy.shape} must be 4-D "
                         "NCHW with the same batch size")
    if gy.device is not x.device:
        raise ValueError(f"{op}: input is on {x.device}, grad_output on {gy.device}")
    k_hw = _pair(kernel_size, op, "kernel_size", 1)
    stride = _pair(stride, op, "stride", 1)
    dil = _pair(dilation, op, "dilation", 1)
    (pt, pb), (pl, pr) = _resolve_padding(op, padding, k_hw, dil, stride)
    if not isinstance(groups, numbers.Integral) or groups < 1 or x.shape[1] % groups or \
            gy.shape[1] % groups:
        raise ValueError(f"{op}: groups={groups!r} must divide the channels of input "
                         f"{x.shape} and grad_output {gy.shape}")
    expect = tuple((n + a + b - d * (k - 1) - 1) // s + 1 for n, a, b, d, k, s in zip(
        x.shape[2:], (pt, pl), (pb, pr), dil, k_hw, stride))
    if gy.shape[2:] != expect:
        raise ValueError(f"{op}: grad_output {gy.shape} does not match the output size "
                         f"{expect} of a conv2d of input {x.shape} with this geometry")
    d = dt._promote(x.dtype, gy.dtype)
    d = d if d.is_floating else dt.get_default_dtype()
    x, gy = (t if t.dtype is d else t.astype(d) for t in (x, gy))
    return _conv_weight(x, gy, k_hw, (stride, (pt, pl), dil, int(groups)))
