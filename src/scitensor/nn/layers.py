"""Layers: ``Dense`` (alias ``Linear``), ``Sequential``, ``ReLU``, ``GELU``, ``Flatten``,
``Identity``.
"""

from __future__ import annotations

import numbers

from .. import ops
from ..tensor import Tensor
from . import functional as F
from . import init
from .module import Module
from .parameter import Parameter

__all__ = ["GELU", "Dense", "Flatten", "Identity", "Linear", "ReLU", "Sequential"]


def _positive_int(value, op: str, name: str) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{op}: {name} must be a positive int, got {value!r}")
    return int(value)


class Dense(Module):
    """A fully connected layer: ``y = act(x @ weight + bias)``.

    ``weight`` has shape ``(in_features, out_features)``, so the forward pass is one matmul
    with no transpose (PyTorch's ``nn.Linear`` stores the transpose: load its weights with
    ``weight.T``). Both weight and bias start uniform in ``(-1/sqrt(in_features),
    1/sqrt(in_features))`` as in PyTorch, drawn from ``st.rand`` (seed with
    ``st.manual_seed``).

    The layer is one fused op (:func:`scitensor.nn.functional.linear`): with an
    ``activation``, ``Dense(a, b, activation="relu")`` computes what ``Dense(a, b)`` followed
    by ``ReLU()`` does, but on CUDA as one GEMM with the bias and the activation in its
    epilogue, and a backward of two GEMMs (stacked fused layers pass the activation's
    backward and the bias gradient through the GEMM epilogues too).

    Args:
        in_features: size of the last axis of the input.
        out_features: size of the last axis of the output.
        bias: whether to add a learned bias.
        device: where to create the parameters (default: the default device).
        dtype: the parameters' floating dtype (default: the default dtype).
        activation: ``None`` (default), ``"relu"`` or ``"gelu"`` (the tanh approximation,
            as ``nn.GELU(approximate="tanh")``; ``"gelu_tanh"`` is a synonym).

    Example:
        >>> import scitensor as st
        >>> from scitensor import nn
        >>> layer = nn.Dense(4, 2)
        >>> layer.weight.shape, layer(st.ones(8, 4)).shape
        ((4, 2), (8, 2))
        >>> hidden = nn.Dense(4, 3, activation="relu")
        >>> bool((hidden(st.randn(5, 4)) >= 0).all())
        True
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 device=None, dtype=None, activation: str | None = None):
        super().__init__()
        self.in_features = _positive_int(in_features, "Dense", "in_features")
        self.out_features = _positive_int(out_features, "Dense", "out_features")
        if activation not in (None, "relu", "gelu", "gelu_tanh"):
            raise ValueError(f"Dense: activation must be None, 'relu' or 'gelu' (tanh "
                             f"approximation), got {activation!r}")
        self.activation = "gelu" if activation == "gelu_tanh" else activation
        dtype = init._floating_dtype(dtype, "Dense")
        bound = 1.0 / self.in_features ** 0.5
        self.weight = Parameter(init.uniform((self.in_features, self.out_features), -bound,
                                             bound, device=device, dtype=dtype))
        self.bias = (Parameter(init.uniform((self.out_features,), -bound, bound,
                                            device=device, dtype=dtype))
                     if bias else None)

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"Dense: expected a Tensor input, got {type(x).__name__}")
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"Dense({self.in_features}, {self.out_features}): input of shape "
                             f"{x.shape} must have last axis {self.in_features}")
        return ops.linear(x, self.weight, self.bias, self.activation)  # F.linear's op

    def extra_repr(self) -> str:
        act = "" if self.activation is None else f", activation={self.activation!r}"
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}{act}")


Linear = Dense


class Sequential(Module):
    """Modules (or functions) applied one after the other.

    Sub-modules are named ``0``, ``1``, ... (so state dicts read ``0.weight``).

    Args:
        *layers: modules or callables taking and returning one tensor.

    Example:
        >>> import scitensor as st
        >>> from scitensor import nn
        >>> model = nn.Sequential(nn.Dense(4, 8), nn.ReLU(), nn.Dense(8, 2))
        >>> model(st.ones(3, 4)).shape, len(model), type(model[1]).__name__
        ((3, 2), 3, 'ReLU')
    """

    def __init__(self, *layers):
        super().__init__()
        if len(layers) == 1 and isinstance(layers[0], list | tuple):
            layers = tuple(layers[0])
        for i, layer in enumerate(layers):
            if not callable(layer):
                raise TypeError(f"Sequential: layer {i} is a {type(layer).__name__}, which is "
                                "not callable; pass modules such as nn.Dense(...)")
        self.layers = list(layers)

    def _members(self):
        for i, layer in enumerate(self.layers):
            if isinstance(layer, Module):
                yield str(i), layer

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x

    def append(self, layer) -> Sequential:
        """Add a layer at the end; returns ``self``."""
        if not callable(layer):
            raise TypeError(f"Sequential.append: {type(layer).__name__} is not callable")
        self.layers.append(layer)
        return self

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Sequential(*self.layers[index])
        return self.layers[index]

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)


class ReLU(Module):
    """``max(x, 0)`` elementwise.

    Example:
        >>> import scitensor as st
        >>> from scitensor import nn
        >>> nn.ReLU()(st.tensor([-1.0, 2.0])).tolist()
        [0.0, 2.0]
    """

    def forward(self, x: Tensor) -> Tensor:
        return ops.relu(x)


class GELU(Module):
    """Gaussian error linear unit, exact (``approximate="none"``) or tanh form.

    Example:
        >>> import scitensor as st
        >>> from scitensor import nn
        >>> round(nn.GELU()(st.tensor(1.0)).item(), 4)
        0.8413
    """

    def __init__(self, approximate: str = "none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(x, approximate=self.approximate)

    def extra_repr(self) -> str:
        return "" if self.approximate == "none" else f"approximate={self.approximate!r}"


class Flatten(Module):
    """Flatten axes ``start_axis..end_axis`` into one (default: all but the batch axis).

    Example:
        >>> import scitensor as st
        >>> from scitensor import nn
        >>> nn.Flatten()(st.ones(2, 8, 8)).shape
        (2, 64)
    """

    def __init__(self, start_axis: int = 1, end_axis: int = -1):
        super().__init__()
        self.start_axis = start_axis
        self.end_axis = end_axis

    def forward(self, x: Tensor) -> Tensor:
        return ops.flatten(x, self.start_axis, self.end_axis)

    def extra_repr(self) -> str:
        return f"start_axis={self.start_axis}, end_axis={self.end_axis}"


class Identity(Module):
    """Returns its input unchanged (a placeholder layer)."""

    def forward(self, x):
        return x
