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
from .conv import Conv2d, ConvTranspose2d
from .dropout import Dropout
from .layers import GELU, Dense, Flatten, Identity, Linear, ReLU, Sequential
from .module import LoadResult, Module
from .normalization import BatchNorm1d, BatchNorm2d
from .parameter import Parameter
from .pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d

__all__ = ["GELU", "AdaptiveAvgPool2d", "AvgPool2d", "BatchNorm1d", "BatchNorm2d", "Conv2d",
           "ConvTranspose2d", "Dense", "Dropout", "Flatten", "Identity", "Linear",
           "LoadResult", "MaxPool2d", "Module", "Parameter", "ReLU", "Sequential", "functional",
           "init"]
