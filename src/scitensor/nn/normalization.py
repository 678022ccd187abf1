"""Batch normalization layers: ``BatchNorm1d`` and ``BatchNorm2d`` (PyTorch semantics).

In training mode the layer normalizes with the batch statistics and updates its running
statistics in place; in evaluation mode (``.eval()``) it uses the running statistics.
"""

from __future__ import annotations

import numbers

from .. import dtypes as dt
from ..autodiff.mode import no_grad
from ..creation import ones, zeros
from ..ops.batchnorm import batch_norm
from ..ops.normalization import layer_norm, rms_norm
from ..tensor import Tensor
from .module import Module
from .parameter import Parameter

__all__ = ["BatchNorm1d", "BatchNorm2d"]


class _BatchNorm(Module):
    """Shared implementation; subclasses name the accepted input ranks."""

    _ranks: tuple[int, ...] = ()
    _layout = ""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, device=None,
                 dtype=None):
        super().__init__()
        name = type(self).__name__
        if (not isinstance(num_features, numbers.Integral) or isinstance(num_features, bool)
                or num_features <= 0):
            raise ValueError(f"{name}: num_features must be a positive int, got "
                             f"{num_features!r}")
        if momentum is not None and not 0.0 <= float(momentum) <= 1.0:
            raise ValueError(f"{name}: momentum must be in [0, 1] or None, got {momentum!r}")
        self.num_features = int(num_features)
        self.eps = float(eps)
        self.momentum = momentum
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        n = self.num_features
        self.weight = Parameter(ones(n, device=device, dtype=dtype)) if affine else None
        self.bias = Parameter(zeros(n, device=device, dtype=dtype)) if affine else None
        if self.track_running_stats:
            self.register_buffer("running_mean", zeros(n, device=device, dtype=dtype))
            self.register_buffer("running_var", ones(n, device=device, dtype=dtype))
            self.register_buffer("num_batches_tracked",
                                 zeros((), device=device, dtype=dt.int64))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self) -> None:
        """Running mean 0, running variance 1, batch count 0."""
        if self.track_running_stats:
            with no_grad():
                self.running_mean[...] = 0.0
                self.running_var[...] = 1.0
                self.num_batches_tracked[...] = 0

    def _check_input(self, x) -> None:
        name = type(self).__name__
        if not isinstance(x, Tensor):
            raise TypeError(f"{name}: expected a Tensor input, got {type(x).__name__}")
        if x.ndim not in self._ranks:
            raise ValueError(f"{name}: expected a {' or '.join(f'{r}D' for r in self._ranks)} "
                             f"input {self._layout}, got shape {x.shape}")
        if x.shape[1] != self.num_features:
            raise ValueError(f"{name}({self.num_features}): input of shape {x.shape} has "
                             f"{x.shape[1]} channels on axis 1, expected {self.num_features}")

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        counter = None
        if self.training and self.track_running_stats:
            if self.momentum is None:  # cumulative moving average: reads the new count
                with no_grad():
                    self.num_batches_tracked[...] = self.num_batches_tracked + 1
                factor = 1.0 / float(self.num_batches_tracked.item())
            else:  # counted by the op, in the running statistics' launch
                counter = self.num_batches_tracked
                factor = float(self.momentum)
        else:
            factor = 0.0 if self.momentum is None else float(self.momentum)
        use_batch_stats = self.training or self.running_mean is None
        track = not self.training or self.track_running_stats
        return batch_norm(x, self.running_mean if track else None,
                          self.running_var if track else None, self.weight, self.bias,
                          use_batch_stats, factor, self.eps, num_batches_tracked=counter)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch normalization over ``(N, C)`` or ``(N, C, L)`` inputs.

    Args:
        num_features: C, the number of channels.
        eps: added to the variance.
        momentum: weight of each new batch in the running statistics (None: a cumulative
            average over all batches seen).
        affine: learn a per-channel ``weight`` (ones) and ``bias`` (zeros).
        track_running_stats: keep running statistics (else always use batch statistics).
        device, dtype: where and in which floating dtype to create parameters and buffers.

    Example:
        >>> import scitensor as st
        >>> from scitensor.nn.normalization import BatchNorm1d
        >>> bn = BatchNorm1d(3)
        >>> bn(st.randn(8, 3)).shape, bn.num_batches_tracked.item()
        ((8, 3), 1)
    """

    _ranks = (2, 3)
    _layout = "(N, C) or (N, C, L)"


class BatchNorm2d(_BatchNorm):
    """Batch normalization over ``(N, C, H, W)`` inputs (arguments as :class:`BatchNorm1d`).

    Example:
        >>> import scitensor as st
        >>> from scitensor.nn.normalization import BatchNorm2d
        >>> bn = BatchNorm2d(4)
        >>> y = bn(st.randn(2, 4, 5, 5))
        >>> bn.eval()(st.randn(2, 4, 5, 5)).shape
        (2, 4, 5, 5)
    """

    _ranks = (4,)
    _layout = "(N, C, H, W)"


# ---- layer norm and RMS norm -----------------------------------------------------------------
__all__ += ["LayerNorm", "RMSNorm"]


def _norm_shape(normalized_shape, name: str) -> tuple[int, ...]:
    if isinstance(normalized_shape, numbers.Integral) and not isinstance(normalized_shape, bool):
        shape = (int(normalized_shape),)
    elif isinstance(normalized_shape, tuple | list):
        shape = tuple(normalized_shape)
    else:
        shape = None
    if (not shape or any(not isinstance(n, numbers.Integral) or isinstance(n, bool) or n <= 0
                         for n in shape)):
        raise ValueError(f"{name}: normalized_shape must be a positive int or a non-empty "
                         f"tuple of positive ints, got {normalized_shape!r}")
    return tuple(int(n) for n in shape)


def _machine_eps(dtype) -> float:
    """The dtype's machine epsilon (float32: 1.19e-7; bfloat16: 7.8e-3)."""
    import ml_dtypes
    import numpy as np

    try:
        return float(np.finfo(dtype.np).eps)
    except ValueError:
        return float(ml_dtypes.finfo(dtype.np).eps)


class LayerNorm(Module):
    """Layer normalization over the trailing ``normalized_shape`` axes (PyTorch semantics):
    ``(x - mean) / sqrt(var + eps) * weight + bias`` with the biased variance, computed by the
    fused :func:`scitensor.nn.functional.layer_norm` (one kernel forward, one backward on a
    GPU).

    Args:
        normalized_shape: an int or a tuple: the trailing dimensions to normalize over.
        eps: added to the variance.
        elementwise_affine: learn a ``weight`` (starts at ones) and, with ``bias``, a ``bias``
            (starts at zeros), both of shape ``normalized_shape``.
        bias: whether to learn the bias (only with ``elementwise_affine``).
        device, dtype: where and in which floating dtype to create the parameters.

    Example:
        >>> import scitensor as st
        >>> from scitensor import nn
        >>> ln = nn.LayerNorm(4)
        >>> y = ln(st.tensor([[1.0, 2.0, 3.0, 4.0]]))
        >>> round(y.mean().item(), 6), [n for n, _ in ln.named_parameters()]
        (0.0, ['weight', 'bias'])
    """

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True,
                 bias: bool = True, device=None, dtype=None):
        super().__init__()
        self.normalized_shape = _norm_shape(normalized_shape, "LayerNorm")
        self.eps = float(eps)
        self.elementwise_affine = bool(elementwise_affine)
        shape = self.normalized_shape
        self.weight = (Parameter(ones(*shape, device=device, dtype=dtype))
                       if elementwise_affine else None)
        self.bias = (Parameter(zeros(*shape, device=device, dtype=dtype))
                     if elementwise_affine and bias else None)

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"LayerNorm: expected a Tensor input, got {type(x).__name__}")
        return layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}")


class RMSNorm(Module):
    """Root-mean-square normalization over the trailing ``normalized_shape`` axes (PyTorch
    semantics): ``x / sqrt(mean(x**2) + eps) * weight``, by the fused
    :func:`scitensor.nn.functional.rms_norm`.

    Args:
        normalized_shape: an int or a tuple: the trailing dimensions to normalize over.
        eps: added to the mean square; None (the default, as in PyTorch) uses the input
            dtype's machine epsilon (float32: 1.19e-7).
        elementwise_affine: learn a ``weight`` of shape ``normalized_shape`` (starts at ones).
        device, dtype: where and in which floating dtype to create the weight.

    Example:
        >>> import scitensor as st
        >>> from scitensor import nn
        >>> y = nn.RMSNorm(2, eps=0.0)(st.tensor([[3.0, 4.0]]))
        >>> [round(v, 4) for v in y[0].tolist()]
        [0.8485, 1.1314]
    """

    def __init__(self, normalized_shape, eps: float | None = None,
                 elementwise_affine: bool = True, device=None, dtype=None):
        super().__init__()
        self.normalized_shape = _norm_shape(normalized_shape, "RMSNorm")
        self.eps = None if eps is None else float(eps)
        self.elementwise_affine = bool(elementwise_affine)
        self.weight = (Parameter(ones(*self.normalized_shape, device=device, dtype=dtype))
                       if elementwise_affine else None)

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"RMSNorm: expected a Tensor input, got {type(x).__name__}")
        eps = self.eps
        if eps is None:
            eps = _machine_eps(x.dtype) if x.dtype.is_floating else 0.0
        return rms_norm(x, self.normalized_shape, self.weight, eps)

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}")
