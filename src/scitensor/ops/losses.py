"""Fused softmax cross-entropy over integer labels, with ignore index and label smoothing.

The forward is one call of ``backend.cross_entropy_forward`` (one pass over the logits on the
GPU: online max/sum per row) giving per-row losses and the row log-sum-exp; the backward is
one call of ``backend.cross_entropy_backward`` writing ``dlogits`` in one pass from the saved
log-sum-exp (no probabilities are materialised separately). The reduction over rows is done
with ordinary ops (the mean divides by the number of non-ignored rows, counted on the device,
so nothing waits for the GPU).

Gradients of gradients: when the engine records the backward (``create_graph=True``) the
pullback falls back to a composition of differentiable ops.
"""

from __future__ import annotations

import math
import numbers

from .. import dtypes as dt
from ._core import (
    GRAD_ENABLED,
    Tensor,
    check_tensor,
    checks_values,
    make_result,
    norm_axis,
    sync_if_requested,
    wrap,
)
from .reduction import softmax

__all__ = ["cross_entropy"]

_REDUCTIONS = ("mean", "sum", "none")


def cross_entropy(logits, labels, reduction: str = "mean", ignore_index: int = -100,
                  label_smoothing: float = 0.0, axis: int = -1) -> Tensor:
    """Softmax cross-entropy of integer class ``labels`` (PyTorch's ``cross_entropy`` with
    class-index targets), fused: one kernel forward, one kernel backward.

    Classes are on ``axis`` (the last axis by default, as scitensor's ``log_softmax`` and
    ``F.cross_entropy``; pass ``axis=1`` for PyTorch's ``(N, C, d1, ...)`` layout).

    Args:
        logits: floating scores ``(..., C)``.
        labels: integer class indices shaped like ``logits`` without the class axis.
        reduction: ``"mean"`` (over non-ignored elements), ``"sum"`` or ``"none"``.
        ignore_index: label value that contributes neither loss nor gradient.
        label_smoothing: ``s`` in ``[0, 1]``: the target is ``(1 - s) * onehot + s / C``.
        axis: the class axis.

    Returns:
        A scalar (``"mean"``, ``"sum"``) or per-element losses (``"none"``) in ``logits``'
        dtype. A mean over zero non-ignored elements is NaN, as in PyTorch.

    Example:
        >>> import scitensor as st
        >>> from scitensor.ops.losses import cross_entropy
        >>> logits = st.tensor([[2.0, 0.0], [0.0, 2.0]])
        >>> round(cross_entropy(logits, st.tensor([0, 1])).item(), 4)
        0.1269
    """
    logits = check_tensor(logits, "cross_entropy", "logits")
    labels = check_tensor(labels, "cross_entropy", "labels")
    if not logits.dtype.is_floating:
        raise TypeError(f"cross_entropy: logits must be floating, got {logits.dtype.name}")
    if labels.dtype.kind != "i":
        raise TypeError(f"cross_entropy: labels must be an integer tensor of class indices, "
                        f"got {labels.dtype.name}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"cross_entropy: reduction must be one of {_REDUCTIONS}, got "
                         f"{reduction!r}")
    if not ((type(label_smoothing) is float or isinstance(label_smoothing, numbers.Real))
            and 0.0 <= label_smoothing <= 1.0):
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got "
                         f"{label_smoothing!r}")
    if logits.ndim < 1:
        raise ValueError("cross_entropy: logits must have a class axis, got a 0-d tensor")
    ax = norm_axis(axis, logits.ndim, "cross_entropy")
    if ax != logits.ndim - 1:
        perm = [i for i in range(logits.ndim) if i != ax] + [ax]
        logits = logits.permute(*perm)
    n_cls = logits.shape[-1]
    if tuple(labels.shape) != tuple(logits.shape[:-1]):
        raise ValueError(f"cross_entropy: logits of shape {logits.shape} (classes moved last) "
                         f"need labels of shape {logits.shape[:-1]}, got {labels.shape}")
    if labels.device is not logits.device:
        raise ValueError(f"cross_entropy: labels are on {labels.device} but logits on "
                         f"{logits.device}; move them with .to({str(logits.device)!r})")
    if type(ignore_index) is not int and (isinstance(ignore_index, bool)
                                          or not isinstance(ignore_index, numbers.Integral)):
        raise TypeError(f"cross_entropy: ignore_index must be an int, got {ignore_index!r:.40}")
    ignore_index = int(ignore_index)
    # the GPU kernel writes NaN for a bad label; checking there needs a host wait (sync mode)
    if labels.size and checks_values(labels.device):
        lab = labels.data
        bad = (lab != ignore_index) & ((lab < 0) | (lab >= n_cls))
        if bool(bad.any()):
            first = lab[bad][:1]
            first = first if labels.device.type == "cpu" else labels.backend.to_numpy(first)
            raise IndexError(f"cross_entropy: labels must be in [0, {n_cls}) or equal "
                             f"ignore_index={ignore_index}, got {int(first[0])}")
    rows = math.prod(logits.shape[:-1])
    out = _fused(logits, labels, rows, n_cls, reduction, ignore_index, float(label_smoothing))
    sync_if_requested(logits.device, "cross_entropy")
    return out


def _fused(logits: Tensor, labels: Tensor, rows: int, n_cls: int, reduction: str,
           ignore_index: int, smoothing: float) -> Tensor:
    """The loss as one graph node over ``logits`` (classes last): the backend's per-row
    kernel, then the reduction on raw arrays (a mean divides by the number of non-ignored
    rows, counted on the device: nothing waits for the GPU). The pullback is one call of
    ``cross_entropy_backward`` with the scalar cotangent (``g / count`` for a mean) shared by
    every row."""
    be = logits.backend
    x = _as_shape(be, logits.data, (rows, n_cls))
    lab = _as_shape(be, labels.data, (rows,))
    loss, lse = be.cross_entropy_forward(x, lab, ignore_index, smoothing)
    out_dt = logits.dtype
    count = None
    if reduction == "none":
        value = _as_shape(be, loss, labels.shape)
    else:  # the sum, the count of non-ignored rows and the mean in one backend call
        value, count = be.cross_entropy_reduce(loss, lab, ignore_index, reduction == "mean")
        if reduction == "sum":
            count = None
    if value.dtype != out_dt.np:
        value = be.astype(value, out_dt)

    def pullback(g, out):
        if GRAD_ENABLED[0]:  # create_graph: differentiable ops all the way
            gr = g.astype(dt.float64 if logits.dtype is dt.float64 else dt.float32)
            if reduction == "none":
                gr = gr.reshape(rows)
            elif count is not None:
                gr = gr / wrap(count, logits.device)
            d = _cross_entropy_grad_graph(gr, logits.reshape(rows, n_cls), labels.reshape(rows),
                                          ignore_index, smoothing)
            return (d.reshape(logits.shape),)
        gd = g.data
        if gd.dtype != loss.dtype:
            gd = be.astype(gd, dt.from_numpy_dtype(loss.dtype))
        if reduction == "none":
            gd = _as_shape(be, gd, (rows,))
        elif count is not None:
            gd = be.div(gd, count)
        dx = be.cross_entropy_backward(gd, x, lab, lse, ignore_index, smoothing)
        return (wrap(_as_shape(be, dx, logits.shape), logits.device),)

    return make_result(value, logits.device, (logits,), pullback)


def _as_shape(be, a, shape):
    """``a`` reshaped to ``shape``, or ``a`` itself when it has that shape already (a reshape
    is a backend call: a few µs of host time on a GPU)."""
    return a if a.shape == shape else be.reshape(a, shape)


def _cross_entropy_grad_graph(g, x, labels, ignore_index, smoothing):
    """``dlogits`` of ``(M, C)`` logits with differentiable ops, for gradients of gradients
    (``g``: the per-row cotangent, ``(M,)`` or a scalar shared by every row)."""
    cdt = dt.float64 if x.dtype is dt.float64 else dt.float32
    n_cls = x.shape[-1]
    valid = labels != ignore_index
    safe = wrap(x.backend.where(valid.data, labels.data, labels.data.dtype.type(0)), x.device)
    target = wrap(x.backend.one_hot(safe.data, n_cls, cdt), x.device) * (1.0 - smoothing)
    d = softmax(x.astype(cdt), -1) - target
    if smoothing:
        d = d - smoothing / n_cls
    scale = g.astype(cdt) * valid.astype(cdt)
    return (d * scale.reshape(-1, 1)).astype(x.dtype)
