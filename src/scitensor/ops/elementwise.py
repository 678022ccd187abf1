"""Elementwise ops: arithmetic with broadcasting, math functions, activations, comparisons.

Each op computes its value with one backend primitive and returns a pullback written with
ops (so gradients of gradients work). Integer inputs to floating functions (``exp``, ``sin``,
...) are promoted to the default float dtype first.
"""

from __future__ import annotations

import math

from .. import dtypes as dt
from ._core import (
    _SCALAR_TYPES,
    GRAD_ENABLED,
    Tensor,
    _scalar,
    check_tensor,
    describe,
    make_result,
    named,
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
def _result2(data, dev, ta, tb, pullback):
    if GRAD_ENABLED[0] and ((ta is not None and ta.requires_grad) or
                            (tb is not None and tb.requires_grad)):
        out = make_result(data, dev, (ta, tb), pullback)
    else:
        out = wrap(data, dev)
    sync_if_requested(dev)
    return out


def _binary_error(op, a, b, e):
    """Re-raise a backend failure (shapes that do not broadcast, a dtype with no kernel)
    naming the op and its operands; called only on the error path."""
    sa, sb = getattr(a, "shape", ()), getattr(b, "shape", ())
    if isinstance(e, ValueError) and "broadcast" in str(e):
        return ValueError(f"{op}: shapes {sa} and {sb} do not broadcast together "
                          f"({describe(a)} and {describe(b)})")
    cls = TypeError if isinstance(e, TypeError) else ValueError
    return cls(f"{op}: {e} (operands: {describe(a)} and {describe(b)})")


_BOOL = dt.bool_.np


def _bool_error(op, a, b):
    """Two bool operands: NumPy would answer in int8, a dtype scitensor does not have."""
    return TypeError(f"{op}: not defined for two bool operands ({describe(a)} and "
                     f"{describe(b)}); cast one with .astype(st.int64) first")


def _add_pullback(g, out):
    return g, g


def _sub_pullback(g, out):
    b = out._parents[1]
    return g, (neg(g) if b is not None and b.requires_grad else None)


def add(a, b) -> Tensor:
    """``a + b`` with broadcasting and dtype promotion.

    Example:
        >>> import scitensor as st
        >>> (st.tensor([1.0, 2.0]) + 1).tolist()
        [2.0, 3.0]
    """
    ta, tb, xa, xb, dev = operands("add", a, b)
    try:
        data = dev.backend.add(xa, xb)
    except (ValueError, TypeError) as e:
        raise _binary_error("add", a, b, e) from None
    return _result2(data, dev, ta, tb, _add_pullback)


def sub(a, b) -> Tensor:
    """``a - b`` with broadcasting."""
    ta, tb, xa, xb, dev = operands("sub", a, b)
    try:
        data = dev.backend.sub(xa, xb)
    except (ValueError, TypeError) as e:
        raise _binary_error("sub", a, b, e) from None
    return _result2(data, dev, ta, tb, _sub_pullback)


def mul(a, b) -> Tensor:
    """``a * b`` with broadcasting."""
    ta, tb, xa, xb, dev = operands("mul", a, b)
    try:
        data = dev.backend.mul(xa, xb)
    except (ValueError, TypeError) as e:
        raise _binary_error("mul", a, b, e) from None

    def pullback(g, out):
        return (mul(g, b) if ta is not None and ta.requires_grad else None,
                mul(g, a) if tb is not None and tb.requires_grad else None)

    return _result2(data, dev, ta, tb, pullback)


def div(a, b) -> Tensor:
    """``a / b`` (true division; integer inputs give the default float dtype)."""
    ta, tb, xa, xb, dev = operands("div", a, b)
    if xb.dtype.kind in "biu":  # both operands share one dtype after operands()
        d = dt.get_default_dtype()
        be = dev.backend
        xa = be.astype(xa, d) if ta is not None else be.scalar(a, d)
        xb = be.astype(xb, d) if tb is not None else be.scalar(b, d)
    try:
        data = dev.backend.div(xa, xb)
    except (ValueError, TypeError) as e:
        raise _binary_error("div", a, b, e) from None

    def pullback(g, out):
        ga = div(g, b) if ta is not None and ta.requires_grad else None
        gb = neg(div(mul(g, out), b)) if tb is not None and tb.requires_grad else None
        return ga, gb

    return _result2(data, dev, ta, tb, pullback)


def floordiv(a, b) -> Tensor:
    """``a // b`` (no gradient)."""
    ta, tb, xa, xb, dev = operands("floordiv", a, b)
    if xa.dtype == _BOOL:
        raise _bool_error("floordiv", a, b)
    try:
        data = dev.backend.floordiv(xa, xb)
    except (ValueError, TypeError) as e:
        raise _binary_error("floordiv", a, b, e) from None
    out = wrap(data, dev)
    sync_if_requested(dev)
    return out


def mod(a, b) -> Tensor:
    """``a % b`` (Python semantics; gradient 1 for ``a``)."""
    ta, tb, xa, xb, dev = operands("mod", a, b)
    if xa.dtype == _BOOL:
        raise _bool_error("mod", a, b)
    try:
        data = dev.backend.mod(xa, xb)
    except (ValueError, TypeError) as e:
        raise _binary_error("mod", a, b, e) from None
    return _result2(data, dev, ta, tb, lambda g, out: (g, neg(mul(g, floordiv(a, b)))))


def pow(a, b) -> Tensor:
    """``a ** b``; the gradient for ``b`` is ``a ** b * log(a)`` (0 where ``a == 0``).

    Example:
        >>> import scitensor as st
        >>> (st.tensor([2.0, 3.0]) ** 2).tolist()
        [4.0, 9.0]
    """
    ta, tb, xa, xb, dev = operands("pow", a, b)
    if xa.dtype == _BOOL:
        raise _bool_error("pow", a, b)
    try:
        data = dev.backend.pow(xa, xb)
    except (ValueError, TypeError) as e:
        raise _binary_error("pow", a, b, e) from None

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
            if ta is None:  # a Python number as the base: log(a) is a constant
                log_a = math.log(a) if a > 0 else 0.0 if a == 0 else math.nan
                gb = mul(g, mul(out, log_a))
            else:
                # 0 ** b: the b-derivative is 0 (for b > 0), not 0 * log(0) = nan
                log_a = log(where(eq(a, 0), 1.0, a))
                gb = mul(g, mul(out, log_a))
        return ga, gb

    return _result2(data, dev, ta, tb, pullback)


def maximum(a, b) -> Tensor:
    """Elementwise maximum; on ties the gradient is split evenly between the operands."""
    ta, tb, xa, xb, dev = operands("maximum", a, b)
    try:
        data = dev.backend.maximum(xa, xb)
    except (ValueError, TypeError) as e:
        raise _binary_error("maximum", a, b, e) from None

    def pullback(g, out):
        w = add(gt(a, b), mul(eq(a, b), 0.5))  # ties: half each
        return (mul(g, w) if ta is not None and ta.requires_grad else None,
                mul(g, sub(1.0, w)) if tb is not None and tb.requires_grad else None)

    return _result2(data, dev, ta, tb, pullback)


def minimum(a, b) -> Tensor:
    """Elementwise minimum; on ties the gradient is split evenly between the operands."""
    ta, tb, xa, xb, dev = operands("minimum", a, b)
    try:
        data = dev.backend.minimum(xa, xb)
    except (ValueError, TypeError) as e:
        raise _binary_error("minimum", a, b, e) from None

    def pullback(g, out):
        w = add(lt(a, b), mul(eq(a, b), 0.5))  # ties: half each
        return (mul(g, w) if ta is not None and ta.requires_grad else None,
                mul(g, sub(1.0, w)) if tb is not None and tb.requires_grad else None)

    return _result2(data, dev, ta, tb, pullback)


# ---- comparisons and logic (no gradient) ------------------------------------------------
def _compare(name):
    def op(a, b) -> Tensor:
        ta, tb, xa, xb, dev = operands(name, a, b)
        try:
            data = getattr(dev.backend, name)(xa, xb)
        except (ValueError, TypeError) as e:
            raise _binary_error(name, a, b, e) from None
        out = wrap(data, dev)
        sync_if_requested(dev)
        return out

    op.__doc__ = f"Elementwise ``{name}`` comparison with broadcasting; returns a bool tensor."
    return named(op, name)


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
    out = wrap(x.backend.logical_not(x.data), x.device)
    sync_if_requested(x.device)
    return out


def isnan(x) -> Tensor:
    """Elementwise NaN test."""
    x = check_tensor(x, "isnan")
    out = wrap(x.backend.isnan(x.data), x.device)
    sync_if_requested(x.device)
    return out


def isinf(x) -> Tensor:
    """Elementwise infinity test."""
    x = check_tensor(x, "isinf")
    out = wrap(x.backend.isinf(x.data), x.device)
    sync_if_requested(x.device)
    return out


def isfinite(x) -> Tensor:
    """Elementwise finiteness test."""
    x = check_tensor(x, "isfinite")
    out = wrap(x.backend.isfinite(x.data), x.device)
    sync_if_requested(x.device)
    return out


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
        try:
            out_data = getattr(be, name)(data)
        except TypeError as e:
            raise TypeError(f"{name}: not supported for {x.dtype.name} tensors ({e})") from None
        if derivative is not None and GRAD_ENABLED[0] and x.requires_grad:
            out = make_result(out_data, x.device, (x,),
                              lambda g, y: (derivative(g, x, y),))
        else:
            out = wrap(out_data, x.device)
        sync_if_requested(x.device)
        return out

    op.__doc__ = doc or f"Elementwise ``{name}``."
    return named(op, name)


def _neg_pullback(g, y):
    return (neg(g),)


def neg(x) -> Tensor:
    """``-x``."""
    if not isinstance(x, Tensor):
        raise TypeError(f"neg: expected a Tensor, got {type(x).__name__}")
    try:
        out_data = x.device.backend.neg(x.data)
    except TypeError:
        raise TypeError(f"neg: cannot negate a {x.dtype.name} tensor; use ~x (logical_not) "
                        "for bool tensors") from None
    if GRAD_ENABLED[0] and x.requires_grad:
        out = make_result(out_data, x.device, (x,), _neg_pullback)
    else:
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
        >>> print(f"{st.gelu(st.tensor(1.0)).item():.4f}")
        0.8413
    """
    x = check_tensor(x, "gelu")
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
    if not isinstance(a, Tensor) and not isinstance(b, Tensor) and isinstance(a, _SCALAR_TYPES):
        # two numbers: the values live on cond's device, with the numbers' dtype
        from ..creation import tensor

        a = tensor(a, dtype=dt.result_type(a, b) if isinstance(b, _SCALAR_TYPES) else None,
                   device=cond.device)
    ta, tb, xa, xb, dev = operands("where", a, b)
    if cond.device is not dev:
        raise ValueError(f"where: cond is on {cond.device} but the values are on {dev}")
    try:
        data = dev.backend.where(cond.data, xa, xb)
    except ValueError:
        raise ValueError(f"where: shapes {cond.shape} (cond), {getattr(a, 'shape', ())} and "
                         f"{getattr(b, 'shape', ())} do not broadcast together") from None
    if GRAD_ENABLED[0] and ((ta is not None and ta.requires_grad) or
                            (tb is not None and tb.requires_grad)):
        def pullback(g, out):
            zero = mul(g, 0.0)
            return (None, where(cond, g, zero) if ta is not None and ta.requires_grad else None,
                    where(cond, zero, g) if tb is not None and tb.requires_grad else None)

        out = make_result(data, dev, (None, ta, tb), pullback)
    else:
        out = wrap(data, dev)
    sync_if_requested(dev)
    return out


def _bound_data(v, d, x, be):
    if v is None:
        return None
    if isinstance(v, Tensor):
        if v.device is not x.device:
            raise ValueError(f"clip: a bound is on {v.device} but the tensor is on {x.device}")
        return v.data if v.data.dtype == d.np else be.astype(v.data, d)
    return _scalar(be, v, d, "clip")


def _clip_dtype(x, lo, hi):
    try:
        return dt.result_type(x, *(v for v in (lo, hi) if v is not None))
    except TypeError:
        raise TypeError(f"clip: bounds must be numbers or tensors, got {describe(lo)} and "
                        f"{describe(hi)}") from None


def clip(x, min=None, max=None) -> Tensor:
    """Clamp values into ``[min, max]`` (NumPy order: ``min`` first, then ``max``).

    Bounds may be numbers or tensors (broadcasting; tensor bounds get gradients too). The
    result dtype follows the promotion rules (a float bound turns an integer tensor into
    float32). At a bound the gradient goes to ``x`` (inclusive interval).

    Example:
        >>> import scitensor as st
        >>> st.clip(st.tensor([-2.0, 0.5, 3.0]), -1, 1).tolist()
        [-1.0, 0.5, 1.0]
    """
    x = check_tensor(x, "clip")
    if min is None and max is None:
        raise ValueError("clip: give at least one of min and max")
    be = x.backend
    d = x.dtype
    if not (d.is_floating and isinstance(min, float | int | None)
            and isinstance(max, float | int | None)):  # numbers never widen a float tensor
        d = _clip_dtype(x, min, max)
    xd = x.data if x.data.dtype == d.np else be.astype(x.data, d)
    lo, hi = _bound_data(min, d, x, be), _bound_data(max, d, x, be)
    try:
        data = be.clip(xd, lo, hi)
    except ValueError:
        raise ValueError(f"clip: shapes {x.shape}, {getattr(min, 'shape', ())} (min) and "
                         f"{getattr(max, 'shape', ())} (max) do not broadcast together"
                         ) from None
    tmin = min if isinstance(min, Tensor) else None
    tmax = max if isinstance(max, Tensor) else None
    if not (GRAD_ENABLED[0] and (x.requires_grad or (tmin is not None and tmin.requires_grad)
                                 or (tmax is not None and tmax.requires_grad))):
        out = wrap(data, x.device)
        sync_if_requested(x.device)
        return out

    def pullback(g, out):
        # clip(x) = minimum(maximum(x, min), max), with ties going to x
        t = x if min is None else maximum(x, min)
        below_max = None if max is None else le(t, max)
        gx = g if min is None else mul(g, ge(x, min))
        gmin = None if tmin is None else mul(g, lt(x, min))
        if below_max is not None:
            gx = mul(gx, below_max)
            gmin = None if gmin is None else mul(gmin, below_max)
        gmax = None if tmax is None else mul(g, gt(t, max))
        return gx, gmin, gmax

    out = make_result(data, x.device, (x, tmin, tmax), pullback)
    sync_if_requested(x.device)
    return out
