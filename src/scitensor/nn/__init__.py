"""Layers and models: ``Module``, ``Parameter``, ``Dense``/``Linear``, ``Sequential``,
``ModuleList``/``ModuleDict``, normalization, ``Embedding``, ``MultiHeadAttention``,
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
from .activations import Sigmoid, SiLU, Softmax, Tanh
from .attention import MultiHeadAttention
from .containers import ModuleDict, ModuleList
from .conv import Conv2d, ConvTranspose2d
from .dropout import Dropout
from .embedding import Embedding
from .layers import GELU, Dense, Flatten, Identity, Linear, ReLU, Sequential
from .module import LoadResult, Module
from .normalization import BatchNorm1d, BatchNorm2d, LayerNorm, RMSNorm
from .parameter import Parameter
from .pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d

__all__ = ["GELU", "AdaptiveAvgPool2d", "AvgPool2d", "BatchNorm1d", "BatchNorm2d", "Conv2d",
           "ConvTranspose2d", "Dense", "Dropout", "Embedding", "Flatten", "Identity",
           "LayerNorm", "Linear", "LoadResult", "MaxPool2d", "Module", "ModuleDict",
           "ModuleList", "MultiHeadAttention", "Parameter", "RMSNorm", "ReLU", "Sequential",
           "SiLU", "Sigmoid", "Softmax", "Tanh", "functional", "init"]
