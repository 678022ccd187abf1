"""Stateless layer functions and losses (``from scitensor.nn import functional as F``).

Everything here is a composition of scitensor ops, so gradients flow through it.
"""

from __future__ import annotations

from .. import ops
from ..ops.attention import scaled_dot_product_attention
from ..ops.batchnorm import batch_norm
from ..ops.conv import conv2d, conv2d_weight, conv_transpose2d
from ..ops.dropout import dropout
from ..ops.losses import cross_entropy as _fused_cross_entropy
from ..ops.normalization import layer_norm, rms_norm
from ..ops.pooling import adaptive_avg_pool2d, avg_pool2d, max_pool2d
from ..tensor import Tensor

__all__ = ["adaptive_avg_pool2d", "avg_pool2d", "batch_norm", "conv2d", "conv2d_weight",
           "conv_transpose2d", "cross_entropy", "dropout", "gelu", "layer_norm", "linear",
           "max_pool2d", "rms_norm",
           "mse_loss", "nll_loss", "relu", "scaled_dot_product_attention"]

_REDUCTIONS = ("mean", "sum", "none")


def _tensor_arg(x, op: str, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: {name} must be a Tensor, got {type(x).__name__}")
    return x


def _reduce(loss: Tensor, reduction: str, op: str) -> Tensor:
    if reduction == "mean":
        return ops.mean(loss)
    if reduction == "sum":
        return ops.sum(loss)
    if reduction == "none":
        return loss
    raise ValueError(f"{op}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``x @ weight + bias`` with ``weight`` of shape ``(in_features, out_features)``.

    Note the layout: PyTorch's ``F.linear`` takes ``(out, in)`` and computes ``x @ w.T``.

    Args:
        x: input of shape ``(..., in_features)``.
        weight: ``(in_features, out_features)``.
        bias: ``(out_features,)`` or None.

    Returns:
        A tensor of shape ``(..., out_features)``.

    Example:
        >>> import scitensor as st
        >>> from scitensor.nn import functional as F
        >>> F.linear(st.ones(2, 3), st.ones(3, 4), st.zeros(4)).tolist()[0]
        [3.0, 3.0, 3.0, 3.0]
    """
    x = _tensor_arg(x, "linear", "x")
    weight = _tensor_arg(weight, "linear", "weight")
    if weight.ndim != 2 or x.ndim == 0 or x.shape[-1] != weight.shape[0]:
        raise ValueError(f"linear: input {x.shape} and weight {weight.shape} do not fit; the "
                         "weight must be (in_features, out_features) with in_features == "
                         "x.shape[-1]")
    y = x @ weight
    if bias is None:
        return y
    bias = _tensor_arg(bias, "linear", "bias")
    if bias.shape != (weight.shape[1],):
        raise ValueError(f"linear: bias shape {bias.shape} must be ({weight.shape[1]},) for a "
                         f"weight of shape {weight.shape}")
    return y + bias


def relu(x: Tensor) -> Tensor:
    """``max(x, 0)`` elementwise.

    Example:
        >>> import scitensor as st
        >>> from scitensor.nn import functional as F
        >>> F.relu(st.tensor([-2.0, 3.0])).tolist()
        [0.0, 3.0]
    """
    return ops.relu(x)


def gelu(x: Tensor, approximate: str = "none") -> Tensor:
    """GELU, exact (``"none"``, via erf) or with the ``"tanh"`` approximation.

    Example:
        >>> import scitensor as st
        >>> from scitensor.nn import functional as F
        >>> round(F.gelu(st.tensor(1.0), approximate="tanh").item(), 4)
        0.8412
    """
    return ops.gelu(x, approximate=approximate)


def _check_labels(logits: Tensor, labels, op: str, ignore_index: int | None = None) -> Tensor:
    labels = _tensor_arg(labels, op, "labels")
    if labels.dtype.kind != "i":
        raise TypeError(f"{op}: labels must be an integer tensor of class indices, got "
                        f"{labels.dtype.name}; for probability targets use "
                        "-(targets * st.log_softmax(logits, axis=-1)).sum(axis=-1)")
    if logits.ndim < 1 or labels.shape != logits.shape[:-1]:
        raise ValueError(f"{op}: logits of shape {logits.shape} need labels of shape "
                         f"{logits.shape[:-1]} (classes on the last axis), got {labels.shape}")
    if labels.device is not logits.device:
        raise ValueError(f"{op}: labels are on {labels.device} but logits on {logits.device}; "
                         f"move them with labels.to({str(logits.device)!r})")
    if labels.device.type == "cpu" and labels.size:
        data = labels.data if ignore_index is None else labels.data[labels.data != ignore_index]
        if not data.size:
            return labels
        lo, hi = int(data.min()), int(data.max())
        if lo < 0 or hi >= logits.shape[-1]:
            raise IndexError(f"{op}: labels must be in [0, {logits.shape[-1]}) for "
                             f"{logits.shape[-1]} classes, got values in [{lo}, {hi}]")
    return labels


def nll_loss(log_probs: Tensor, labels: Tensor, reduction: str = "mean") -> Tensor:
    """Negative log-likelihood of integer ``labels`` under ``log_probs`` (classes last).

    Args:
        log_probs: ``(..., C)`` log-probabilities (e.g. from ``st.log_softmax``).
        labels: integer class indices of shape ``(...)``.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.

    Returns:
        A scalar, or per-example losses of shape ``(...)`` for ``"none"``.
    """
    log_probs = _tensor_arg(log_probs, "nll_loss", "log_probs")
    labels = _check_labels(log_probs, labels, "nll_loss")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"nll_loss: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    return _nll(log_probs, labels, reduction)


def _nll(log_probs: Tensor, labels: Tensor, reduction: str) -> Tensor:
    picked = ops.take_along_axis(log_probs, ops.unsqueeze(labels, -1), axis=-1)
    return _reduce(-ops.squeeze(picked, -1), reduction, "nll_loss")


def cross_entropy(logits: Tensor, labels: Tensor, reduction: str = "mean",
                  ignore_index: int = -100, label_smoothing: float = 0.0) -> Tensor:
    """Softmax cross-entropy of integer ``labels``: the fused op
    :func:`scitensor.ops.losses.cross_entropy` (one kernel forward, one backward on the GPU).

    Classes are on the last axis (PyTorch puts them on axis 1; for 2-D input it is the same).

    Args:
        logits: unnormalised scores of shape ``(..., C)``.
        labels: integer class indices in ``[0, C)`` of shape ``(...)``.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.
        ignore_index: labels equal to this contribute no loss and no gradient.
        label_smoothing: mix the one-hot target with the uniform distribution.

    Returns:
        A scalar tensor, or per-example losses of shape ``(...)`` for ``"none"``.

    Example:
        >>> import scitensor as st
        >>> from scitensor.nn import functional as F
        >>> logits = st.tensor([[2.0, 0.0], [0.0, 2.0]])
        >>> round(F.cross_entropy(logits, st.tensor([0, 1])).item(), 4)
        0.1269
    """
    logits = _tensor_arg(logits, "cross_entropy", "logits")
    if not logits.dtype.is_floating:
        raise TypeError(f"cross_entropy: logits must be floating, got {logits.dtype.name}")
    _check_labels(logits, labels, "cross_entropy", ignore_index)
    if reduction not in _REDUCTIONS:
        raise ValueError(f"cross_entropy: reduction must be one of {_REDUCTIONS}, got "
                         f"{reduction!r}")
    return _fused_cross_entropy(logits, labels, reduction=reduction, ignore_index=ignore_index,
                                label_smoothing=label_smoothing)


def mse_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """Mean squared error ``mean((input - target) ** 2)`` (shapes must match).

    Args:
        input: predictions.
        target: targets of the same shape (a tensor that needs no gradient, usually).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.

    Returns:
        A scalar, or elementwise squared errors for ``"none"``.

    Example:
        >>> import scitensor as st
        >>> from scitensor.nn import functional as F
        >>> F.mse_loss(st.tensor([1.0, 3.0]), st.tensor([0.0, 1.0])).item()
        2.5
    """
    input = _tensor_arg(input, "mse_loss", "input")
    target = _tensor_arg(target, "mse_loss", "target")
    if input.shape != target.shape:
        raise ValueError(f"mse_loss: input shape {input.shape} and target shape "
                         f"{target.shape} differ; reshape one so they match")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"mse_loss: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    d = input - target
    return _reduce(d * d, reduction, "mse_loss")
