"""``linear``: ``act(x @ w + b)`` as one fused op (on CUDA: cuBLASLt GEMMs with epilogues).

The forward is one ``backend.linear_act`` call: on the GPU a single GEMM whose epilogue adds
the bias, applies the activation and saves what its backward needs (a ReLU bit-mask or the
GELU input). The pullback is one ``backend.linear_act_backward`` call: the activation's
backward (one small elementwise kernel), the weight-gradient GEMM whose epilogue also sums
the bias gradient (``BGRADA``), and the input-gradient GEMM.

Layer chains: when this layer's input ``x`` is the output of another ``linear`` with an
activation, and that output feeds nothing else (no other op, not a requested input, no
``retain_grad``: :func:`scitensor.autodiff.engine.sole_consumer`), the input-gradient GEMM
also applies the *previous* layer's activation backward and computes its bias gradient
(``backend.linear_act_backward_chain``, cuBLASLt ``DRELU_BGRAD`` / ``DGELU_BGRAD``). The
previous layer's pullback then receives the gradient of its pre-activation (recognised by
identity, stashed on its pullback object) and runs just its weight-gradient GEMM and its own
input-gradient GEMM: two GEMMs per hidden layer and no other kernel.

Gradients of gradients: when the engine records the backward pass (``create_graph=True``),
the pullback instead computes the same gradients as a composition of differentiable ops.

``activation="gelu"`` is the **tanh approximation** of GELU (as cuBLASLt computes it, and as
PyTorch's ``gelu(x, approximate="tanh")``); ``"gelu_tanh"`` is accepted as a synonym.
"""

from __future__ import annotations

import math

from .. import dtypes as dt
from ..autodiff.engine import sole_consumer
from ._core import GRAD_ENABLED, Tensor, check_tensor, make_result, sync_if_requested, wrap
from .elementwise import _d_gelu_tanh, gt, mul
from .linalg import matmul
from .reduction import sum as sum_

__all__ = ["linear"]

_ACTIVATIONS = {None: None, "relu": "relu", "gelu": "gelu", "gelu_tanh": "gelu"}
_ACT_TYPES = (str, type(None))
_BAD = object()


def _activation(activation) -> str | None:
    try:
        return _ACTIVATIONS[activation]
    except (KeyError, TypeError):
        raise ValueError(f"linear: activation must be None, 'relu' or 'gelu' (tanh "
                         f"approximation; 'gelu_tanh' is a synonym), got {activation!r}") from None


class _LinearPullback:
    """The pullback of one ``linear`` node, with the forward's saved state.

    ``pre_g``/``pre_db``: set by the consumer layer when it computed this layer's
    pre-activation gradient (and bias gradient) in its own input-gradient GEMM; the engine
    then hands exactly that tensor to this pullback.
    """

    __slots__ = ("x", "w", "b", "x2", "aux", "activation", "rows", "pre_g", "pre_db")

    def __init__(self, x, w, b, x2, aux, activation, rows):
        self.x, self.w, self.b, self.x2 = x, w, b, x2
        self.aux, self.activation, self.rows = aux, activation, rows
        self.pre_g = self.pre_db = None

    def needs_db(self) -> bool:
        return self.b is not None and self.b.requires_grad

    def __call__(self, g, out):
        x, w, b = self.x, self.w, self.b
        if GRAD_ENABLED[0]:
            return _grads_as_ops(g, x, w, b, self.activation)
        be = x.backend
        dev = x.device
        need_dx, need_dw, need_db = x.requires_grad, w.requires_grad, self.needs_db()
        g2 = g.data
        if g2.ndim != 2:
            g2 = be.reshape(g2, (self.rows, w.shape[1]))
        if g2.dtype != self.x2.dtype:
            g2 = be.astype(g2, x.dtype)
        activation, aux, db = self.activation, self.aux, None
        if self.pre_g is not None and g is self.pre_g:
            # our consumer already applied our activation's backward (and summed our bias)
            activation, aux, db = None, None, self.pre_db
            need_db = False
        self.pre_g = self.pre_db = None
        producer = x._pullback
        if (need_dx and type(producer) is _LinearPullback and producer.activation is not None
                and producer.aux is not None and sole_consumer(x)):
            dprev, dw, db2, dprev_b = be.linear_act_backward_chain(
                g2, self.x2, w.data, aux, activation, (True, need_dw, need_db), producer.aux,
                producer.activation, producer.needs_db())
            dx = wrap(dprev if x.ndim == 2 else be.reshape(dprev, x.shape), dev)
            producer.pre_g, producer.pre_db = dx, dprev_b
        else:
            dx, dw, db2 = be.linear_act_backward(g2, self.x2, w.data, aux, activation,
                                                 (need_dx, need_dw, need_db))
            if need_dx:
                dx = wrap(dx if x.ndim == 2 else be.reshape(dx, x.shape), dev)
        if db is None:
            db = db2
        return (dx,
                wrap(dw, dev) if need_dw else None,
                wrap(db, dev) if self.needs_db() else None)


def _promoted(x, w, b):
    """The operands cast to one floating dtype (integers compute in the default dtype)."""
    d = dt._promote(x.dtype, w.dtype)
    if b is not None:
        d = dt._promote(d, b.dtype)
    if not d.is_floating:
        d = dt.get_default_dtype()
    return (x if x.dtype is d else x.astype(d), w if w.dtype is d else w.astype(d),
            None if b is None or b.dtype is d else b.astype(d))


def _grads_as_ops(g, x, w, b, activation):
    """The pullback as differentiable ops (``create_graph``): recomputes the pre-activation."""
    n = w.shape[1]
    x2 = x.reshape(-1, x.shape[-1]) if x.ndim != 2 else x
    g2 = g.reshape(-1, n) if g.ndim != 2 else g
    dpre = g2
    if activation is not None:
        pre = matmul(x2, w)
        if b is not None:
            pre = pre + b
        dpre = mul(g2, gt(pre, 0)) if activation == "relu" else _d_gelu_tanh(g2, pre, None)
    dx = matmul(dpre, w.swapaxes(0, 1)).reshape(x.shape) if x.requires_grad else None
    dw = matmul(x2.swapaxes(0, 1), dpre) if w.requires_grad else None
    db = sum_(dpre, 0) if b is not None and b.requires_grad else None
    return dx, dw, db


def linear(x, w, b=None, activation=None) -> Tensor:
    """``act(x @ w + b)`` in one fused op, with ``w`` of shape ``(in_features, out_features)``.

    On CUDA the forward is one cuBLASLt GEMM with a bias/activation epilogue and the backward
    two GEMMs (the bias gradient comes out of the weight-gradient GEMM); see the module docs
    for chains of layers. On the CPU it is the plain composition.

    Args:
        x: input of shape ``(..., in_features)`` (leading axes are batch axes).
        w: weight ``(in_features, out_features)`` (PyTorch's ``nn.Linear`` stores ``w.T``).
        b: bias ``(out_features,)`` or ``None``.
        activation: ``None``, ``"relu"`` or ``"gelu"`` (the **tanh approximation**
            ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``; ``"gelu_tanh"`` is a
            synonym). Exact-erf GELU is ``st.gelu(linear(x, w, b))``.

    Returns:
        A tensor of shape ``(..., out_features)``. Operands of different floating dtypes are
        promoted to one; integer inputs compute in the default dtype.

    Example:
        >>> import scitensor as st
        >>> x = st.tensor([[1.0, -2.0]])
        >>> w = st.tensor([[1.0, 0.5], [1.0, 0.5]])
        >>> b = st.tensor([2.0, 0.0])
        >>> st.linear(x, w, b).tolist(), st.linear(x, w, b, activation="relu").tolist()
        ([[1.0, -0.5]], [[1.0, 0.0]])
    """
    if not (isinstance(x, Tensor) and isinstance(w, Tensor)
            and (b is None or isinstance(b, Tensor))):
        x = check_tensor(x, "linear", "input")
        w = check_tensor(w, "linear", "weight")
        b = None if b is None else check_tensor(b, "linear", "bias")
    act = _ACTIVATIONS.get(activation, _BAD) if type(activation) in _ACT_TYPES else _BAD
    if act is _BAD:
        act = _activation(activation)  # a str subclass, or raises with the accepted values
    xd, wd = x.data, w.data
    if wd.ndim != 2 or xd.ndim == 0 or xd.shape[-1] != wd.shape[0]:
        raise ValueError(f"linear: input {x.shape} and weight {w.shape} do not fit; the "
                         "weight must be (in_features, out_features) with in_features == "
                         "x.shape[-1]")
    k, n = wd.shape
    dev = x.device
    if b is not None and b.data.shape != (n,):
        raise ValueError(f"linear: bias shape {b.shape} must be ({n},) for a weight of "
                         f"shape {w.shape}")
    if w.device is not dev or (b is not None and b.device is not dev):
        other, name = (w, "weight") if w.device is not dev else (b, "bias")
        raise ValueError(f"linear: the {name} is on {other.device} but the input on {dev}; "
                         f"move it with .to({str(dev)!r})")
    if (xd.dtype != wd.dtype or (b is not None and b.data.dtype != xd.dtype)
            or not x.dtype.is_floating):
        x, w, b = _promoted(x, w, b)
        xd, wd = x.data, w.data
    be = dev.backend
    lead = xd.shape[:-1]
    rows = math.prod(lead)
    x2 = xd if xd.ndim == 2 else be.reshape(xd, (rows, k))
    record = GRAD_ENABLED[0] and (x.requires_grad or w.requires_grad
                                  or (b is not None and b.requires_grad))
    y, aux = be.linear_act(x2, wd, None if b is None else b.data, act,
                           record and act is not None)
    if xd.ndim != 2:
        y = be.reshape(y, (*lead, n))
    if record:
        out = make_result(y, dev, (x, w, b), _LinearPullback(x, w, b, x2, aux, act, rows))
    else:
        out = wrap(y, dev)
    sync_if_requested(dev)
    return out
