"""Layers and models: ``Module``, ``Parameter``, ``Dense``/``Linear``, ``Sequential``,
activations, and :mod:`scitensor.nn.functional` (losses).

Example:
    >>> import scitensor as st
    >>> from scitensor import nn
    >>> from scitensor.nn import functional as F
    >>> model = nn.Sequential(nn.Dense(4, 16), nn.ReLU(), nn.Dense(16, 3))
    >>> loss = F.cross_entropy(model(st.randn(8, 4)), st.randint(0, 3, (8,)))
    >>> loss.backward()
    >>> model[0].weight.grad.shape
    (4, 16)
"""

from . import functional, init
from .layers import GELU, Dense, Flatten, Identity, Linear, ReLU, Sequential
from .module import LoadResult, Module
from .parameter import Parameter

__all__ = ["GELU", "Dense", "Flatten", "Identity", "Linear", "LoadResult", "Module",
           "Parameter", "ReLU", "Sequential", "functional", "init"]

# pooling, batch norm and dropout layers (issue 7)
from .dropout import Dropout
from .normalization import BatchNorm1d, BatchNorm2d
from .pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d

__all__ += ["AdaptiveAvgPool2d", "AvgPool2d", "BatchNorm1d", "BatchNorm2d", "Dropout",
            "MaxPool2d"]

# convolution layers (issue 8)
from .conv import Conv2d, ConvTranspose2d  # noqa: E402

__all__ += ["Conv2d", "ConvTranspose2d"]
