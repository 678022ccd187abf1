"""Convolution layers: ``Conv2d`` and ``ConvTranspose2d`` (NCHW, PyTorch's conventions).

Weights and biases start as PyTorch's do: kaiming-uniform with ``a = sqrt(5)``, i.e.
``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, drawn from ``st.rand`` (seed with ``st.manual_seed``).
"""

from __future__ import annotations

import math
import numbers

from ..ops.conv import conv2d, conv_transpose2d
from ..tensor import Tensor
from . import init
from .module import Module
from .parameter import Parameter

__all__ = ["Conv2d", "ConvTranspose2d"]


def _pair(v, op: str, name: str, minimum: int) -> tuple[int, int]:
    vals = (v, v) if isinstance(v, numbers.Integral) else tuple(v) if isinstance(
        v, tuple | list) else ()
    if len(vals) != 2 or any(not isinstance(a, numbers.Integral) or isinstance(a, bool)
                             or a < minimum for a in vals):
        raise ValueError(f"{op}: {name} must be an int >= {minimum} or a pair of them, "
                         f"got {v!r}")
    return int(vals[0]), int(vals[1])


def _channels(op, in_channels, out_channels, groups):
    for name, v in (("in_channels", in_channels), ("out_channels", out_channels),
                    ("groups", groups)):
        if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v <= 0:
            raise ValueError(f"{op}: {name} must be a positive int, got {v!r}")
    if in_channels % groups or out_channels % groups:
        raise ValueError(f"{op}: groups={groups} must divide in_channels ({in_channels}) and "
                         f"out_channels ({out_channels})")


def _check_input(op, x, in_channels):
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: expected a Tensor input, got {type(x).__name__}")
    if x.ndim not in (3, 4) or x.shape[-3] != in_channels:
        raise ValueError(f"{op}: input of shape {x.shape} must be (N, {in_channels}, H, W) "
                         f"or ({in_channels}, H, W)")


def _uniform_params(layer, w_shape, fan_in, n_bias, bias, device, dtype):
    dtype = init._floating_dtype(dtype, type(layer).__name__)
    bound = 1.0 / math.sqrt(fan_in)
    layer.weight = Parameter(init.uniform(w_shape, -bound, bound, device=device, dtype=dtype))
    layer.bias = (Parameter(init.uniform((n_bias,), -bound, bound, device=device, dtype=dtype))
                  if bias else None)


class Conv2d(Module):
    """2-D convolution layer over NCHW input (see :func:`scitensor.ops.conv.conv2d`).

    Args:
        in_channels, out_channels: channel counts.
        kernel_size: an int or a pair ``(kh, kw)``.
        stride, dilation: an int or a pair.
        padding: ``"same"``, ``"valid"``, an int or a pair (zero padding).
        groups: channel groups (``groups == in_channels`` for depthwise).
        bias: whether to add a learned per-channel bias.
        device, dtype: where and in which floating dtype to create the parameters.

    Attributes:
        weight: ``(out_channels, in_channels // groups, kh, kw)``.
        bias: ``(out_channels,)`` or None.

    Example:
        >>> import scitensor as st
        >>> from scitensor.nn.conv import Conv2d
        >>> layer = Conv2d(3, 8, 3, padding=1)
        >>> layer.weight.shape, layer(st.ones(2, 3, 16, 16)).shape
        ((8, 3, 3, 3), (2, 8, 16, 16))
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, device=None, dtype=None):
        super().__init__()
        _channels("Conv2d", in_channels, out_channels, groups)
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = _pair(kernel_size, "Conv2d", "kernel_size", 1)
        self.stride = _pair(stride, "Conv2d", "stride", 1)
        self.dilation = _pair(dilation, "Conv2d", "dilation", 1)
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"Conv2d: padding must be 'same', 'valid', an int or a pair, "
                                 f"got {padding!r}")
            if padding == "same" and self.stride != (1, 1):
                raise ValueError("Conv2d: padding='same' needs stride 1, got stride "
                                 f"{self.stride}; pad with an int or pair instead")
            self.padding = padding
        else:
            self.padding = _pair(padding, "Conv2d", "padding", 0)
        kh, kw = self.kernel_size
        _uniform_params(self, (out_channels, in_channels // groups, kh, kw),
                        in_channels // groups * kh * kw, out_channels, bias, device, dtype)

    def forward(self, x: Tensor) -> Tensor:
        _check_input(f"Conv2d({self.in_channels}, {self.out_channels})", x, self.in_channels)
        return conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                      self.groups)

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding not in ((0, 0), "valid"):
            s += f", padding={self.padding!r}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        return s + ("" if self.bias is not None else ", bias=False")


class ConvTranspose2d(Module):
    """Transposed 2-D convolution layer (see :func:`scitensor.ops.conv.conv_transpose2d`).

    Args:
        in_channels, out_channels: channel counts.
        kernel_size: an int or a pair.
        stride, padding, output_padding, dilation: ints or pairs.
        groups: channel groups.
        bias: whether to add a learned per-channel bias.
        device, dtype: where and in which floating dtype to create the parameters.

    Attributes:
        weight: ``(in_channels, out_channels // groups, kh, kw)`` (PyTorch's layout).
        bias: ``(out_channels,)`` or None.

    Example:
        >>> import scitensor as st
        >>> from scitensor.nn.conv import ConvTranspose2d
        >>> up = ConvTranspose2d(8, 4, 3, stride=2, padding=1, output_padding=1)
        >>> up(st.ones(2, 8, 7, 7)).shape
        (2, 4, 14, 14)
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 output_padding=0, groups: int = 1, bias: bool = True, dilation=1,
                 device=None, dtype=None):
        super().__init__()
        op = "ConvTranspose2d"
        _channels(op, in_channels, out_channels, groups)
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = _pair(kernel_size, op, "kernel_size", 1)
        self.stride = _pair(stride, op, "stride", 1)
        self.padding = _pair(padding, op, "padding", 0)
        self.output_padding = _pair(output_padding, op, "output_padding", 0)
        self.dilation = _pair(dilation, op, "dilation", 1)
        for i in range(2):
            if self.output_padding[i] >= max(self.stride[i], self.dilation[i]):
                raise ValueError(f"{op}: output_padding {self.output_padding} must be smaller "
                                 f"than the stride {self.stride} or the dilation "
                                 f"{self.dilation}")
        kh, kw = self.kernel_size
        # PyTorch's fan_in for a (in, out/groups, kh, kw) weight is its dim 1 times kh*kw
        _uniform_params(self, (in_channels, out_channels // groups, kh, kw),
                        out_channels // groups * kh * kw, out_channels, bias, device, dtype)

    def forward(self, x: Tensor) -> Tensor:
        _check_input(f"ConvTranspose2d({self.in_channels}, {self.out_channels})", x,
                     self.in_channels)
        return conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding,
                                self.output_padding, self.groups, self.dilation)

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.output_padding != (0, 0):
            s += f", output_padding={self.output_padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        return s + ("" if self.bias is not None else ", bias=False")
