"""``Dropout``: zero elements at random in training mode, the identity in evaluation mode."""

from __future__ import annotations

import numbers

from ..ops.dropout import dropout
from ..random import Generator
from ..tensor import Tensor
from .module import Module

__all__ = ["Dropout"]


class Dropout(Module):
    """Zero each element with probability ``p`` while training; scale the rest by
    ``1 / (1 - p)``. In evaluation mode (``.eval()``) the input passes through unchanged.

    Args:
        p: drop probability in [0, 1].
        generator: a :class:`scitensor.Generator` for the masks (default: the global one,
            seeded by ``st.manual_seed``).

    Example:
        >>> import scitensor as st
        >>> from scitensor.nn.dropout import Dropout
        >>> layer = Dropout(0.5)
        >>> x = st.ones(4)
        >>> layer.eval()(x) is x
        True
    """

    def __init__(self, p: float = 0.5, generator: Generator | None = None):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p must be a probability in [0, 1], got {p!r}")
        self.p = float(p)
        self.generator = generator

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training, self.generator)

    def extra_repr(self) -> str:
        return f"p={self.p}"
