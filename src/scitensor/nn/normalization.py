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
        factor = 0.0 if self.momentum is None else float(self.momentum)
        if self.training and self.track_running_stats:
            with no_grad():
                self.num_batches_tracked[...] = self.num_batches_tracked + 1
            if self.momentum is None:  # cumulative moving average (reads the count)
                factor = 1.0 / float(self.num_batches_tracked.item())
        use_batch_stats = self.training or self.running_mean is None
        track = not self.training or self.track_running_stats
        return batch_norm(x, self.running_mean if track else None,
                          self.running_var if track else None, self.weight, self.bias,
                          use_batch_stats, factor, self.eps)

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
