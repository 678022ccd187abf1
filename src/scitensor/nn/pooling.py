"""Pooling layers: ``MaxPool2d``, ``AvgPool2d``, ``AdaptiveAvgPool2d`` (NCHW).

Each layer holds its configuration and calls the op in :mod:`scitensor.ops.pooling`; none has
parameters or behaves differently in training and evaluation mode.
"""

from __future__ import annotations

from ..ops import pooling as P
from ..tensor import Tensor
from .module import Module

__all__ = ["AdaptiveAvgPool2d", "AvgPool2d", "MaxPool2d"]


class MaxPool2d(Module):
    """2-D max pooling (see :func:`scitensor.ops.pooling.max_pool2d`).

    Args:
        kernel_size: window size, an int or ``(kh, kw)``.
        stride: window step (default: ``kernel_size``).
        padding: implicit ``-inf`` padding, at most half the kernel.
        dilation: spacing between window elements.
        return_indices: also return the flat indices of the maxima.
        ceil_mode: round the output size up.

    Example:
        >>> import scitensor as st
        >>> from scitensor.nn.pooling import MaxPool2d
        >>> MaxPool2d(3, stride=2, padding=1)(st.ones(1, 2, 8, 8)).shape
        (1, 2, 4, 4)
    """

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1,
                 return_indices: bool = False, ceil_mode: bool = False):
        super().__init__()
        _check_geometry("MaxPool2d", kernel_size, stride, padding, dilation)
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding
        self.dilation = dilation
        self.return_indices = return_indices
        self.ceil_mode = ceil_mode

    def forward(self, x: Tensor):
        return P.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation,
                            self.ceil_mode, self.return_indices)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, "
                f"ceil_mode={self.ceil_mode}")


class AvgPool2d(Module):
    """2-D average pooling (see :func:`scitensor.ops.pooling.avg_pool2d`).

    Args:
        kernel_size: window size, an int or ``(kh, kw)``.
        stride: window step (default: ``kernel_size``).
        padding: implicit zero padding, at most half the kernel.
        ceil_mode: round the output size up.
        count_include_pad: count padding zeros in the divisor.
        divisor_override: divide every window sum by this instead.

    Example:
        >>> import scitensor as st
        >>> from scitensor.nn.pooling import AvgPool2d
        >>> AvgPool2d(2)(st.ones(1, 1, 4, 4)).tolist()
        [[[[1.0, 1.0], [1.0, 1.0]]]]
    """

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
                 count_include_pad: bool = True, divisor_override: int | None = None):
        super().__init__()
        _check_geometry("AvgPool2d", kernel_size, stride, padding, 1)
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding
        self.ceil_mode = ceil_mode
        self.count_include_pad = count_include_pad
        self.divisor_override = divisor_override

    def forward(self, x: Tensor) -> Tensor:
        return P.avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad, self.divisor_override)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}")


class AdaptiveAvgPool2d(Module):
    """Average pooling to a fixed output size; ``AdaptiveAvgPool2d(1)`` is global pooling.

    Args:
        output_size: an int or ``(oh, ow)`` (``None`` keeps that input size).

    Example:
        >>> import scitensor as st
        >>> from scitensor.nn.pooling import AdaptiveAvgPool2d
        >>> AdaptiveAvgPool2d(1)(st.ones(2, 3, 7, 7)).shape
        (2, 3, 1, 1)
    """

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, x: Tensor) -> Tensor:
        return P.adaptive_avg_pool2d(x, self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


def _check_geometry(op: str, kernel_size, stride, padding, dilation) -> None:
    """Reject bad window settings when the layer is built, not at its first call."""
    from ..ops.pooling import _pair

    k = _pair(kernel_size, op, "kernel_size", 1)
    if stride is not None and not (isinstance(stride, tuple | list) and not stride):
        _pair(stride, op, "stride", 1)
    p = _pair(padding, op, "padding", 0)
    _pair(dilation, op, "dilation", 1)
    if p[0] > k[0] // 2 or p[1] > k[1] // 2:
        raise ValueError(f"{op}: padding {p} must be at most half the kernel size {k}; use a "
                         "larger kernel or less padding")
