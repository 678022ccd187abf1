"""Elementwise ops: arithmetic with broadcasting, math functions, activations, comparisons.

Each op computes its value with one backend primitive and returns a pullback written with
ops (so gradients of gradients work). Integer inputs to floating functions (``exp``, ``sin``,
...) are promoted to the default float dtype first.
"""

from __future__ import annotations

import math

from .. import dtypes as dt
from ._core import (
    GRAD_ENABLED,
    Tensor,
    check_tensor,
    make_result,
    operands,
    sync_if_requested,
    wrap,
)

__all__ = [
    "abs", "add", "ceil", "clip", "cos", "div", "eq", "erf", "exp", "expm1", "floor",
    "floordiv", "ge", "gelu", "gt", "isfinite", "isinf", "isnan", "le", "log", "log1p",
    "logical_and", "logical_not", "logical_or", "logical_xor", "lt", "maximum", "minimum",
    "mod", "mul", "ne", "neg", "pow", "reciprocal", "relu", "round", "rsqrt", "sigmoid",
    "sign", "silu", "sin", "softplus", "sqrt", "square", "sub", "tanh", "where",
]

# ---- binary arithmetic ----------------------------------------------------------------------
def _result2(op, data, dev, ta, tb, pullback):
    if GRAD_ENABLED[0] and ((ta is not None and ta.requires_grad) or
                            (tb is not None and tb.requires_grad)):
        out = make_result(data, dev, (ta, tb), pullback)
    else:
        out = wrap(data, dev)
    sync_if_requested(dev)
    return out


def add(a, b) -> Tensor:
    """``a + b`` with broadcasting and dtype promotion.

    Example:
        >>> import scitensor as st
        >>> (st.tensor([1.0, 2.0]) + 1).tolist()
        [2.0, 3.0]
    """
    ta, tb, xa, xb, dev = operands("add", a, b)
    return _result2("add", dev.backend.add(xa, xb), dev, ta, tb, lambda g, out: (g, g))


def sub(a, b) -> Tensor:
    """``a - b`` with broadcasting."""
    ta, tb, xa, xb, dev = operands("sub", a, b)
    return _result2("sub", dev.backend.sub(xa, xb), dev, ta, tb, lambda g, out: (g, neg(g)))


def mul(a, b) -> Tensor:
    """``a * b`` with broadcasting."""
    ta, tb, xa, xb, dev = operands("mul", a, b)

    def pullback(g, out):
        return (mul(g, b) if ta is not None and ta.requires_grad else None,
                mul(g, a) if tb is not None and tb.requires_grad else None)

    return _result2("mul", dev.backend.mul(xa, xb), dev, ta, tb, pullback)


def div(a, b) -> Tensor:
    """``a / b`` (true division; integer inputs give the default float dtype)."""
    ta, tb, xa, xb, dev = operands("div", a, b)
    if not dt.from_numpy_dtype(getattr(xa, "dtype", None) or xb.dtype).is_floating:
        d = dt.get_default_dtype()
        be = dev.backend
        xa = be.astype(xa, d) if hasattr(xa, "shape") else be.scalar(xa, d)
        xb = be.astype(xb, d) if hasattr(xb, "shape") else be.scalar(xb, d)

    def pullback(g, out):
        ga = div(g, b) if ta is not None and ta.requires_grad else None
        gb = neg(div(mul(g, out), b)) if tb is not None and tb.requires_grad else None
        return ga, gb

    return _result2("div", dev.backend.div(xa, xb), dev, ta, tb, pullback)


def floordiv(a, b) -> Tensor:
    """``a // b`` (no gradient)."""
    ta, tb, xa, xb, dev = operands("floordiv", a, b)
    return wrap(dev.backend.floordiv(xa, xb), dev)


def mod(a, b) -> Tensor:
    """``a % b`` (Python semantics; gradient 1 for ``a``)."""
    ta, tb, xa, xb, dev = operands("mod", a, b)
    return _result2("mod", dev.backend.mod(xa, xb), dev, ta, tb,
                    lambda g, out: (g, neg(mul(g, floordiv(a, b)))))


def pow(a, b) -> Tensor:
    """``a ** b``; the gradient for ``b`` uses ``log(a)`` (defined for ``a > 0``).

    Example:
        >>> import scitensor as st
        >>> (st.tensor([2.0, 3.0]) ** 2).tolist()
        [4.0, 9.0]
    """
    ta, tb, xa, xb, dev = operands("pow", a, b)

    def pullback(g, out):
        ga = gb = None
        if ta is not None and ta.requires_grad:
            if tb is None:
                if b == 0:
                    ga = mul(g, 0.0)
                elif b == 1:
                    ga = g
                elif b == 2:
                    ga = mul(g, mul(a, 2.0))
                else:
                    ga = mul(g, mul(pow(a, b - 1), b))
            else:
                ga = mul(g, mul(b, pow(a, sub(b, 1))))
        if tb is not None and tb.requires_grad:
            gb = mul(g, mul(out, log(a)))
        return ga, gb

    return _result2("pow", dev.backend.pow(xa, xb), dev, ta, tb, pullback)


def maximum(a, b) -> Tensor:
    """Elementwise maximum; on ties the gradient is split evenly between the operands."""
    ta, tb, xa, xb, dev = operands("maximum", a, b)

    def pullback(g, out):
        w = add(gt(a, b), mul(eq(a, b), 0.5))
        return mul(g, w), mul(g, sub(1.0, w))

    return _result2("maximum", dev.backend.maximum(xa, xb), dev, ta, tb, pullback)


def minimum(a, b) -> Tensor:
    """Elementwise minimum; on ties the gradient is split evenly between the operands."""
    ta, tb, xa, xb, dev = operands("minimum", a, b)

    def pullback(g, out):
        w = add(lt(a, b), mul(eq(a, b), 0.5))
        return mul(g, w), mul(g, sub(1.0, w))

    return _result2("minimum", dev.backend.minimum(xa, xb), dev, ta, tb, pullback)


# ---- comparisons and logic (no gradient) ------------------------------------------------
def _compare(name):
    def op(a, b) -> Tensor:
        ta, tb, xa, xb, dev = operands(name, a, b)
        out = wrap(getattr(dev.backend, name)(xa, xb), dev)
        sync_if_requested(dev)
        return out

    op.__name__ = name
    op.__doc__ = f"Elementwise ``{name}`` comparison with broadcasting; returns a bool tensor."
    return op


eq = _compare("eq")
ne = _compare("ne")
lt = _compare("lt")
le = _compare("le")
gt = _compare("gt")
ge = _compare("ge")
logical_and = _compare("logical_and")
logical_or = _compare("logical_or")
logical_xor = _compare("logical_xor")


def logical_not(x) -> Tensor:
    """Elementwise logical not (bool result)."""
    x = check_tensor(x, "logical_not")
    return wrap(x.backend.logical_not(x.data), x.device)


def isnan(x) -> Tensor:
    """Elementwise NaN test."""
    x = check_tensor(x, "isnan")
    return wrap(x.backend.isnan(x.data), x.device)


def isinf(x) -> Tensor:
    """Elementwise infinity test."""
    x = check_tensor(x, "isinf")
    return wrap(x.backend.isinf(x.data), x.device)


def isfinite(x) -> Tensor:
    """Elementwise finiteness test."""
    x = check_tensor(x, "isfinite")
    return wrap(x.backend.isfinite(x.data), x.device)


# ---- unary math -------------------------------------------------------------------------
def _unary(name, derivative, floating=True, doc=""):
    """Build a unary op from its primitive and ``derivative(g, x, y) -> cotangent``."""

    def op(x) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"{name}: expected a Tensor, got {type(x).__name__}")
        be = x.device.backend
        data = x.data
        if floating and data.dtype.kind in "biu":
            data = be.astype(data, dt.get_default_dtype())
        out_data = getattr(be, name)(data)
        if derivative is not None and GRAD_ENABLED[0] and x.requires_grad:
            out = make_result(out_data, x.device, (x,),
                              lambda g, y: (derivative(g, x, y),))
        else:
            out = wrap(out_data, x.device)
        sync_if_requested(x.device)
        return out

    op.__name__ = name
    op.__qualname__ = name
    op.__doc__ = doc or f"Elementwise ``{name}``."
    return op


def neg(x) -> Tensor:
    """``-x``."""
    if not isinstance(x, Tensor):
        raise TypeError(f"neg: expected a Tensor, got {type(x).__name__}")
    out_data = x.device.backend.neg(x.data)
    if GRAD_ENABLED[0] and x.requires_grad:
        return make_result(out_data, x.device, (x,), lambda g, y: (neg(g),))
    out = wrap(out_data, x.device)
    sync_if_requested(x.device)
    return out


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)


def _d_gelu_tanh(g, x, y):
    x2 = mul(x, x)
    t = tanh(mul(add(x, mul(mul(x2, x), 0.044715)), _SQRT_2_OVER_PI))
    dt_ = mul(sub(1.0, mul(t, t)), mul(add(1.0, mul(x2, 3 * 0.044715)), _SQRT_2_OVER_PI))
    return mul(g, add(mul(add(1.0, t), 0.5), mul(mul(x, dt_), 0.5)))


def _d_gelu_erf(g, x, y):
    cdf = mul(add(erf(mul(x, 1 / math.sqrt(2.0))), 1.0), 0.5)
    pdf = mul(exp(mul(mul(x, x), -0.5)), _INV_SQRT_2PI)
    return mul(g, add(cdf, mul(x, pdf)))


def _d_silu(g, x, y):
    s = sigmoid(x)
    return mul(g, mul(s, add(1.0, mul(x, sub(1.0, s)))))


exp = _unary("exp", lambda g, x, y: mul(g, y), doc="Elementwise ``e**x``.")
log = _unary("log", lambda g, x, y: div(g, x), doc="Natural logarithm.")
log1p = _unary("log1p", lambda g, x, y: div(g, add(x, 1.0)), doc="``log(1 + x)``, accurate "
               "near 0.")
expm1 = _unary("expm1", lambda g, x, y: mul(g, add(y, 1.0)), doc="``exp(x) - 1``.")
sqrt = _unary("sqrt", lambda g, x, y: div(mul(g, 0.5), y), doc="Square root.")
rsqrt = _unary("rsqrt", lambda g, x, y: mul(g, mul(mul(mul(y, y), y), -0.5)),
               doc="``1 / sqrt(x)``.")
abs = _unary("abs", lambda g, x, y: mul(g, sign(x)), floating=False,
             doc="Absolute value (gradient ``sign(x)``, 0 at 0).")
sign = _unary("sign", None, floating=False, doc="Sign (-1, 0, 1); no gradient.")
sin = _unary("sin", lambda g, x, y: mul(g, cos(x)), doc="Sine.")
cos = _unary("cos", lambda g, x, y: neg(mul(g, sin(x))), doc="Cosine.")
tanh = _unary("tanh", lambda g, x, y: mul(g, sub(1.0, mul(y, y))), doc="Hyperbolic tangent.")
sigmoid = _unary("sigmoid", lambda g, x, y: mul(g, mul(y, sub(1.0, y))),
                 doc="Logistic sigmoid ``1 / (1 + exp(-x))``, stable for large ``|x|``.")
relu = _unary("relu", lambda g, x, y: mul(g, gt(y, 0)), floating=False,
              doc="``max(x, 0)``.")
silu = _unary("silu", _d_silu, doc="``x * sigmoid(x)`` (swish).")
softplus = _unary("softplus", lambda g, x, y: mul(g, sigmoid(x)),
                  doc="``log(1 + exp(x))``, stable for large ``|x|``.")
erf = _unary("erf", lambda g, x, y: mul(g, mul(exp(neg(mul(x, x))), _TWO_OVER_SQRT_PI)),
             doc="The error function.")
square = _unary("square", lambda g, x, y: mul(g, mul(x, 2.0)), floating=False,
                doc="``x * x``.")
reciprocal = _unary("reciprocal", lambda g, x, y: neg(mul(g, mul(y, y))), doc="``1 / x``.")
floor = _unary("floor", None, doc="Round down (no gradient).")
ceil = _unary("ceil", None, doc="Round up (no gradient).")
round = _unary("round", None, doc="Round half to even (no gradient).")
_gelu_tanh = _unary("gelu_tanh", _d_gelu_tanh)
_gelu_erf = _unary("gelu_erf", _d_gelu_erf)


def gelu(x, approximate: str = "none") -> Tensor:
    """Gaussian error linear unit: ``x * Phi(x)`` (``approximate="tanh"`` for the tanh form).

    Example:
        >>> import scitensor as st
        >>> round(st.gelu(st.tensor(1.0)).item(), 4)
        0.8413
    """
    if approximate == "none":
        return _gelu_erf(x)
    if approximate == "tanh":
        return _gelu_tanh(x)
    raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


# ---- selection --------------------------------------------------------------------------
def where(cond, a, b) -> Tensor:
    """``a`` where ``cond`` is true, else ``b`` (broadcasting; ``a``/``b`` may be numbers).

    Example:
        >>> import scitensor as st
        >>> x = st.tensor([-1.0, 2.0])
        >>> st.where(x > 0, x, 0.0).tolist()
        [0.0, 2.0]
    """
    cond = check_tensor(cond, "where", "cond")
    if cond.dtype is not dt.bool_:
        cond = ne(cond, 0)
    ta, tb, xa, xb, dev = operands("where", a, b)
    if cond.device is not dev:
        raise ValueError(f"where: cond is on {cond.device} but the values are on {dev}")
    data = dev.backend.where(cond.data, xa, xb)

    def pullback(g, out):
        zero = mul(g, 0.0)
        return (None, where(cond, g, zero) if ta is not None else None,
                where(cond, zero, g) if tb is not None else None)

    if GRAD_ENABLED[0] and ((ta is not None and ta.requires_grad) or
                            (tb is not None and tb.requires_grad)):
        return make_result(data, dev, (None, ta, tb), pullback)
    return wrap(data, dev)


def clip(x, min=None, max=None) -> Tensor:
    """Clamp values into ``[min, max]`` (either bound may be None); gradient 1 inside.

    Example:
        >>> import scitensor as st
        >>> st.clip(st.tensor([-2.0, 0.5, 3.0]), -1, 1).tolist()
        [-1.0, 0.5, 1.0]
    """
    x = check_tensor(x, "clip")
    if min is None and max is None:
        raise ValueError("clip: give at least one of min and max")
    out = x
    with_grad = GRAD_ENABLED[0] and x.requires_grad
    lo = min.data if isinstance(min, Tensor) else min
    hi = max.data if isinstance(max, Tensor) else max
    data = x.backend.clip(x.data, lo, hi)
    if not with_grad:
        return wrap(data, x.device)

    def pullback(g, o):
        inside = None
        if min is not None:
            inside = ge(x, min)
        if max is not None:
            m = le(x, max)
            inside = m if inside is None else logical_and(inside, m)
        return (mul(g, inside),)

    out = make_result(data, x.device, (x,), pullback)
    return out

