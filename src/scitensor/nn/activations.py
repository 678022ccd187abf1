"""Activation layers: ``SiLU``, ``Tanh``, ``Sigmoid`` and ``Softmax`` (``ReLU`` and ``GELU``
live in :mod:`scitensor.nn.layers`). Each wraps the op of the same name, so gradients flow.
"""

from __future__ import annotations

import numbers

from ..tensor import Tensor
from . import functional as F
from .module import Module

__all__ = ["SiLU", "Sigmoid", "Softmax", "Tanh"]


def _tensor(x, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a Tensor input, got {type(x).__name__}")
    return x


class SiLU(Module):
    """SiLU (swish) ``x * sigmoid(x)`` elementwise.

    Example:
        >>> import scitensor as st
        >>> from scitensor import nn
        >>> [round(v, 4) for v in nn.SiLU()(st.tensor([-1.0, 0.0, 1.0])).tolist()]
        [-0.2689, 0.0, 0.7311]
    """

    def forward(self, x: Tensor) -> Tensor:
        return F.silu(_tensor(x, "SiLU"))


class Tanh(Module):
    """Hyperbolic tangent elementwise.

    Example:
        >>> import scitensor as st
        >>> from scitensor import nn
        >>> round(nn.Tanh()(st.tensor(0.5)).item(), 4)
        0.4621
    """

    def forward(self, x: Tensor) -> Tensor:
        return F.tanh(_tensor(x, "Tanh"))


class Sigmoid(Module):
    """Logistic sigmoid ``1 / (1 + exp(-x))`` elementwise.

    Example:
        >>> import scitensor as st
        >>> from scitensor import nn
        >>> nn.Sigmoid()(st.tensor([0.0])).tolist()
        [0.5]
    """

    def forward(self, x: Tensor) -> Tensor:
        return F.sigmoid(_tensor(x, "Sigmoid"))


class Softmax(Module):
    """Softmax along ``axis`` (default: the last).

    Args:
        axis: the axis whose entries sum to one.

    Example:
        >>> import scitensor as st
        >>> from scitensor import nn
        >>> nn.Softmax(axis=0)(st.tensor([[0.0], [0.0]])).tolist()
        [[0.5], [0.5]]
    """

    def __init__(self, axis: int = -1):
        super().__init__()
        if not isinstance(axis, numbers.Integral) or isinstance(axis, bool):
            raise TypeError(f"Softmax: axis must be an int, got {axis!r}")
        self.axis = int(axis)

    def forward(self, x: Tensor) -> Tensor:
        return F.softmax(_tensor(x, "Softmax"), self.axis)

    def extra_repr(self) -> str:
        return f"axis={self.axis}"
