"""Stateless layer functions and losses (``from scitensor.nn import functional as F``).

Everything here is a composition of scitensor ops, so gradients flow through it.
"""

from __future__ import annotations

from .. import ops
from ..autodiff.mode import GRAD_ENABLED
from ..ops._core import checks_values, host_min_max, make_result, sync_if_requested, wrap
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


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None,
           activation: str | None = None) -> Tensor:
    """``act(x @ weight + bias)`` with ``weight`` of shape ``(in_features, out_features)``.

    One fused op (:func:`scitensor.ops.linear.linear`) on every device: on CUDA a single
    cuBLASLt GEMM whose epilogue adds the bias and applies the activation, and a backward of
    two GEMMs with the bias gradient fused in; on the CPU the plain composition.

    Note the layout: PyTorch's ``F.linear`` takes ``(out, in)`` and computes ``x @ w.T``.

    Args:
        x: input of shape ``(..., in_features)``.
        weight: ``(in_features, out_features)``.
        bias: ``(out_features,)`` or None.
        activation: ``None``, ``"relu"`` or ``"gelu"``. ``"gelu"`` is the **tanh
            approximation** (PyTorch's ``gelu(approximate="tanh")``, what cuBLASLt fuses);
            ``"gelu_tanh"`` is a synonym. For exact-erf GELU use ``F.gelu(F.linear(...))``.

    Returns:
        A tensor of shape ``(..., out_features)``.

    Example:
        >>> import scitensor as st
        >>> from scitensor.nn import functional as F
        >>> F.linear(st.ones(2, 3), st.ones(3, 4), st.zeros(4)).tolist()[0]
        [3.0, 3.0, 3.0, 3.0]
        >>> F.linear(st.ones(1, 3), -st.ones(3, 2), st.ones(2), activation="relu").tolist()
        [[0.0, 0.0]]
    """
    x = _tensor_arg(x, "linear", "x")
    weight = _tensor_arg(weight, "linear", "weight")
    if bias is not None:
        bias = _tensor_arg(bias, "linear", "bias")
    return ops.linear(x, weight, bias, activation)


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
    if not labels.size:
        return labels
    if labels.device.type == "cpu":
        data = labels.data if ignore_index is None else labels.data[labels.data != ignore_index]
        if not data.size:
            return labels
        lo, hi = int(data.min()), int(data.max())
    elif ignore_index is None and checks_values(labels.device):
        # a GPU in sync mode, where the host waits anyway: one more wait reads the range (a
        # label -1 would otherwise pick the last class silently). cross_entropy (the caller
        # with an ignore_index) leaves this to its fused op, which checks in sync mode itself.
        lo, hi = host_min_max(labels.data, labels.device)
    else:
        return labels
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


# ---- activations as functions, and embedding lookup ------------------------------------------
__all__ += ["embedding", "log_softmax", "sigmoid", "silu", "softmax", "tanh"]


def silu(x: Tensor) -> Tensor:
    """SiLU (swish): ``x * sigmoid(x)`` elementwise.

    Example:
        >>> import scitensor as st
        >>> from scitensor.nn import functional as F
        >>> round(F.silu(st.tensor(1.0)).item(), 4)
        0.7311
    """
    return ops.silu(x)


def tanh(x: Tensor) -> Tensor:
    """Hyperbolic tangent elementwise.

    Example:
        >>> import scitensor as st
        >>> from scitensor.nn import functional as F
        >>> F.tanh(st.tensor([0.0])).tolist()
        [0.0]
    """
    return ops.tanh(x)


def sigmoid(x: Tensor) -> Tensor:
    """Logistic sigmoid ``1 / (1 + exp(-x))`` elementwise.

    Example:
        >>> import scitensor as st
        >>> from scitensor.nn import functional as F
        >>> F.sigmoid(st.tensor([0.0])).tolist()
        [0.5]
    """
    return ops.sigmoid(x)


def softmax(x: Tensor, axis: int = -1) -> Tensor:
    """``exp(x) / sum(exp(x))`` along ``axis`` (one fused primitive forward and backward).

    Example:
        >>> import scitensor as st
        >>> from scitensor.nn import functional as F
        >>> F.softmax(st.tensor([[0.0, 0.0]])).tolist()
        [[0.5, 0.5]]
    """
    return ops.softmax(x, axis)


def log_softmax(x: Tensor, axis: int = -1) -> Tensor:
    """``x - logsumexp(x)`` along ``axis``.

    Example:
        >>> import scitensor as st
        >>> from scitensor.nn import functional as F
        >>> round(F.log_softmax(st.tensor([0.0, 0.0])).tolist()[0], 4)
        -0.6931
    """
    return ops.log_softmax(x, axis)


def _padding_index(padding_idx, num_embeddings: int, op: str) -> int | None:
    """``padding_idx`` as an index in ``[0, num_embeddings)`` (negative counts from the end)."""
    import numbers

    if padding_idx is None:
        return None
    if not isinstance(padding_idx, numbers.Integral) or isinstance(padding_idx, bool):
        raise TypeError(f"{op}: padding_idx must be an int or None, got {padding_idx!r}")
    if not -num_embeddings <= padding_idx < num_embeddings:
        raise ValueError(f"{op}: padding_idx {padding_idx} is out of range for "
                         f"{num_embeddings} embeddings (valid: {-num_embeddings}.."
                         f"{num_embeddings - 1})")
    return int(padding_idx) % num_embeddings


def _check_ids_range(ids: Tensor, n: int) -> None:
    """Raise IndexError for ids outside ``[0, n)``.

    On the CPU always (NumPy would wrap a negative id around silently). On a GPU only in
    sync-every-op mode outside capture: anywhere else, reading the ids' range would make the
    host wait for the GPU every step (and cannot be captured), so CUDA lookups are unchecked
    there and an out-of-range id wraps around (CuPy's indexing rule). Run a step under
    ``st.sync_mode()`` or on the CPU to check data.
    """
    if ids.size == 0 or not checks_values(ids.device):
        return
    lo, hi = host_min_max(ids.data, ids.device)  # one host wait on a GPU
    if lo < 0 or hi >= n:
        bad = hi if hi >= n else lo
        raise IndexError(f"embedding: id {bad} is out of range for a table of {n} rows (ids "
                         f"of shape {ids.shape} must be in [0, {n}); ids seen in [{lo}, {hi}])")


def embedding(ids: Tensor, weight: Tensor, padding_idx: int | None = None) -> Tensor:
    """Look up rows of ``weight``: ``out[..., :] = weight[ids[...], :]``.

    The forward is one row gather; the gradient is a scatter-add of the output gradient into
    the rows of ``weight`` (repeated ids accumulate; float16/bfloat16 accumulate in float32).
    The row ``padding_idx`` receives no gradient. On the CPU, ids outside ``[0, num_embeddings)``
    raise IndexError; on a GPU they are checked only in sync-every-op mode (``st.sync_mode()``),
    since checking would make the host wait for the GPU each step.

    Args:
        ids: an integer tensor of any shape (token ids).
        weight: ``(num_embeddings, embedding_dim)``, on the ids' device.
        padding_idx: a row that gets no gradient (negative counts from the end), or None.

    Returns:
        A tensor of shape ``ids.shape + (embedding_dim,)`` with ``weight``'s dtype.

    Raises:
        IndexError: an id out of range (see above).

    Example:
        >>> import scitensor as st
        >>> from scitensor.nn import functional as F
        >>> w = st.tensor([[0.0, 0.0], [1.0, 2.0], [3.0, 4.0]], requires_grad=True)
        >>> out = F.embedding(st.tensor([[2, 1, 2]]), w, padding_idx=1)
        >>> out.tolist()
        [[[3.0, 4.0], [1.0, 2.0], [3.0, 4.0]]]
        >>> out.sum().backward(); w.grad.tolist()
        [[0.0, 0.0], [0.0, 0.0], [2.0, 2.0]]
    """
    ids = _tensor_arg(ids, "embedding", "ids")
    weight = _tensor_arg(weight, "embedding", "weight")
    if ids.dtype.kind != "i":
        raise TypeError(f"embedding: ids must be an integer tensor, got {ids.dtype.name} of "
                        f"shape {ids.shape}; convert with .astype(st.int64)")
    if weight.ndim != 2:
        raise ValueError(f"embedding: weight must be (num_embeddings, embedding_dim), got "
                         f"shape {weight.shape}")
    if ids.device is not weight.device:
        raise ValueError(f"embedding: ids are on {ids.device} but the weight on "
                         f"{weight.device}; move them with ids.to({str(weight.device)!r})")
    n, d = weight.shape
    pad = _padding_index(padding_idx, n, "embedding")
    _check_ids_range(ids, n)
    be = weight.backend
    data = be.getitem(weight.data, (ids.data,))
    shape, wdtype = weight.shape, weight.dtype

    def pullback(g, out):
        return (None, _embedding_grad(g, ids, shape, wdtype, pad))

    if GRAD_ENABLED[0] and weight.requires_grad:
        out = make_result(data, weight.device, (None, weight), pullback)
    else:
        out = wrap(data, weight.device)
    sync_if_requested(weight.device, "embedding")
    return out


def _embedding_grad(g: Tensor, ids: Tensor, shape, dtype, pad) -> Tensor:
    """The weight's cotangent: ``g``'s rows added at ``ids`` (row ``pad`` left at zero)."""
    from .. import dtypes as dt
    from ..creation import zeros
    from ..runtime import DETERMINISTIC, check_deterministic

    n, d = shape
    if GRAD_ENABLED[0]:  # create_graph: the same with differentiable ops
        if DETERMINISTIC[0] and dtype.is_floating:
            check_deterministic(g.backend, "index_add", "embedding (backward, create_graph)")
        gm = g.reshape(-1, d)
        flat = ids.reshape(-1)
        if pad is not None:
            gm = ops.where(ops.unsqueeze(flat != pad, -1), gm, 0.0)
        return ops.index_add(zeros(n, d, dtype=dtype, device=g.device), 0, flat, gm)
    be = g.backend
    acc = dtype if dtype.itemsize >= 4 else dt.float32
    if DETERMINISTIC[0] and acc.is_floating:  # integer sums are exact in any order
        check_deterministic(be, "add_at", "embedding")
    dw = be.zeros((n, d), acc)
    gd = be.reshape(g.data, (-1, d))
    if gd.dtype != acc.np:
        gd = be.astype(gd, acc)
    be.add_at(dw, (be.reshape(ids.data, (-1,)),), gd)
    if pad is not None:
        be.setitem(dw, (pad,), 0)
    if acc is not dtype:
        dw = be.astype(dw, dtype)
    return wrap(dw, g.device)
