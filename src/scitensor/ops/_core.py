"""Helpers shared by every op: operand coercion, device checks, axis normalisation.

The op pattern (design §4): compute the value with ``backend.<primitive>`` on raw arrays and
hand :func:`make_result` the parents and a pullback ``(g, out) -> cotangents`` written with ops.
"""

from __future__ import annotations

import numbers
import sys

import numpy as np

from .. import dtypes as dt
from ..autodiff.mode import GRAD_ENABLED
from ..runtime import CAPTURING, SYNC_EVERY_OP
from ..tensor import Tensor, make_result, wrap

__all__ = ["GRAD_ENABLED", "Tensor", "as_tensor", "differentiable", "make_result", "named",
           "norm_axes", "norm_axis", "operands", "wrap"]

_SCALAR_TYPES = (int, float, bool, np.number, np.bool_)
_getframe = sys._getframe

# GPU index -> the op last enqueued on that GPU: the code object of the function that dispatched
# it (its ``co_name`` is the op's name, see :func:`named`), or the name itself. One dict store
# per GPU op; read only when an asynchronous GPU error is reported (backends/cuda/errors.py).
LAST_OP: dict = {}


def describe(x) -> str:
    if isinstance(x, Tensor):
        return f"Tensor(shape={x.shape}, dtype={x.dtype.name}, device={x.device})"
    return f"{type(x).__name__} {x!r:.40}"


def device_mismatch(op: str, a: Tensor, b: Tensor) -> ValueError:
    return ValueError(
        f"{op}: operands are on different devices ({a.device} and {b.device}); move one with "
        f".to({str(a.device)!r}) — scitensor never copies between devices implicitly")


def operands(op: str, a, b):
    """Coerce a binary op's operands: ``(ta, tb, xa, xb, device)``.

    ``ta``/``tb`` are the tensor operands (``None`` for a Python scalar); ``xa``/``xb`` the raw
    operands cast to the common dtype (scalars converted with ``backend.scalar``).
    """
    if isinstance(a, Tensor):
        dev = a.device
        if isinstance(b, Tensor):
            if b.device is not dev:
                raise device_mismatch(op, a, b)
            xa, xb = a.data, b.data
            if xa.dtype != xb.dtype:
                d = dt._promote(a.dtype, b.dtype)
                be = dev.backend
                if xa.dtype != d.np:
                    xa = be.astype(xa, d)
                if xb.dtype != d.np:
                    xb = be.astype(xb, d)
            return a, b, xa, xb, dev
        if isinstance(b, _SCALAR_TYPES):
            d = dt.result_type(a, b)
            be = dev.backend
            xa = a.data if a.data.dtype == d.np else be.astype(a.data, d)
            try:
                xb = be.scalar(b, d)
            except OverflowError:
                raise _overflow(op, b, d) from None
            return a, None, xa, xb, dev
        raise TypeError(f"{op}: unsupported operand {describe(b)}; combine tensors with "
                        "tensors or Python numbers (wrap arrays with st.tensor(...))")
    if isinstance(b, Tensor):
        if isinstance(a, _SCALAR_TYPES):
            dev = b.device
            d = dt.result_type(b, a)
            be = dev.backend
            xb = b.data if b.data.dtype == d.np else be.astype(b.data, d)
            try:
                xa = be.scalar(a, d)
            except OverflowError:
                raise _overflow(op, a, d) from None
            return None, b, xa, xb, dev
        raise TypeError(f"{op}: unsupported operand {describe(a)}; combine tensors with "
                        "tensors or Python numbers (wrap arrays with st.tensor(...))")
    raise TypeError(f"{op}: expected at least one Tensor, got {describe(a)} and {describe(b)}")


def _overflow(op: str, value, d) -> ValueError:
    """A Python number the tensor's dtype cannot hold (NumPy raises a bare OverflowError)."""
    return ValueError(f"{op}: the Python number {value!r} does not fit the tensor's dtype "
                      f"{d.name}; cast the tensor first, e.g. .astype(st.int64) or "
                      ".astype(st.float64)")


def _scalar(be, value, d, op: str):
    """``value`` as a backend scalar of dtype ``d``, or a ValueError naming the op."""
    try:
        return be.scalar(value, d)
    except OverflowError:
        raise _overflow(op, value, d) from None


def as_tensor(x, op: str, like: Tensor | None = None) -> Tensor:
    """Accept a Tensor (returned as is) or a Python number/sequence (made on ``like``'s device)."""
    if isinstance(x, Tensor):
        return x
    from ..creation import tensor

    if like is not None:
        dtype = dt.result_type(like, x) if isinstance(x, _SCALAR_TYPES) else None
        return tensor(x, dtype=dtype, device=like.device)
    if isinstance(x, _SCALAR_TYPES | list | tuple | np.ndarray):
        return tensor(x)
    raise TypeError(f"{op}: expected a Tensor, got {describe(x)}")


def check_tensor(x, op: str, name: str = "input") -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: {name} must be a Tensor, got {describe(x)}")
    return x


def check_keepdims(keepdims, op: str) -> bool:
    """``keepdims`` as a bool (True/False, NumPy bools and the ints 0 and 1 are accepted)."""
    if keepdims is True or keepdims is False:
        return keepdims
    if isinstance(keepdims, np.bool_) or (isinstance(keepdims, numbers.Integral)
                                          and keepdims in (0, 1)):
        return bool(keepdims)
    raise TypeError(f"{op}: keepdims must be True or False, got {keepdims!r:.40}")


def norm_axis(axis, ndim: int, op: str) -> int:
    if type(axis) is not int and (not isinstance(axis, numbers.Integral)
                                  or isinstance(axis, bool)):
        raise TypeError(f"{op}: axis must be an int, got {type(axis).__name__}")
    if not -max(ndim, 1) <= axis < max(ndim, 1):
        raise IndexError(f"{op}: axis {axis} is out of range for a tensor with {ndim} "
                         f"dimension(s) (valid: {-max(ndim, 1)}..{max(ndim, 1) - 1})")
    return axis % max(ndim, 1)


def norm_axes(axis, ndim: int, op: str) -> tuple[int, ...]:
    """``None`` -> all axes; an int or a sequence -> sorted unique non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, numbers.Integral) and not isinstance(axis, bool):
        if ndim == 0 and axis in (0, -1):
            return ()
        return (norm_axis(axis, ndim, op),)
    if not isinstance(axis, tuple | list):
        raise TypeError(f"{op}: axis must be an int, a tuple of ints or None, got "
                        f"{type(axis).__name__}")
    axes = tuple(norm_axis(a, ndim, op) for a in axis)
    if len(set(axes)) != len(axes):
        raise ValueError(f"{op}: repeated axis in {tuple(axis)}")
    if ndim == 0:  # axis 0 (or -1) of a 0-d tensor is the tensor itself, as for an int axis
        return ()
    return tuple(sorted(axes))


def checks_values(device) -> bool:
    """Whether value checks that read the data on the host (index bounds) run on ``device``:
    always on the CPU; on a GPU only in sync-every-op mode outside graph capture, where the
    host waits for the device anyway (elsewhere CuPy wraps out-of-range indices around)."""
    if device.type == "cpu":
        return True
    return SYNC_EVERY_OP[0] and CAPTURING[0] is None


def host_min_max(data, device) -> tuple:
    """``(min, max)`` of a non-empty backend array as Python numbers (one host wait)."""
    xp = device.backend.xp
    lo_hi = xp.stack([data.min(), data.max()])
    arr = lo_hi if device.type == "cpu" else device.backend.to_numpy(lo_hi)
    return arr[0].item(), arr[1].item()


def named(fn, name: str):
    """``fn`` with ``name`` as its ``__name__`` and its code object's name: ops made by a
    factory (``_unary("exp", ...)``) then show their own name in tracebacks and in the CUDA
    backend's sync-mode error report, which names the op from the calling frames."""
    fn.__name__ = name
    fn.__qualname__ = name
    fn.__code__ = fn.__code__.replace(co_name=name, co_qualname=name)
    return fn


def sync_if_requested(device, op: str | None = None) -> None:
    """Called by every op once its work is queued: on a GPU, note the op as the last one
    enqueued there (what an asynchronous error report names) and, in sync-every-op mode, wait
    for the device. A no-op on the CPU.

    Args:
        device: the op's device.
        op: the op's name. Without it the calling function's code object is recorded (the
            op's, or that of the op behind the ``_helpers`` that finish it), a frame lookup of
            0.15-0.25 µs per GPU op; with it, one dict store (about 0.03 µs).
    """
    if device.type != "cpu":
        if op is None:
            f = _getframe(1)
            op = f.f_code
            while op.co_name[0] == "_":  # helpers finishing the op for it (_result2, _finish)
                f = f.f_back
                if f is None:
                    break
                op = f.f_code
        LAST_OP[device.index] = op
        if SYNC_EVERY_OP[0]:
            device.backend.synchronize()


def differentiable(fn):
    """Decorator for ops written as ``fn(*tensors, **static) -> (array, pullback)``.

    Positional Tensor arguments are the op's parents (other positional arguments get no
    cotangent); the decorator wraps the array into a Tensor on the first tensor's device and
    records the node when a parent needs a gradient. The pullback has the signature
    ``(g, out) -> tuple of cotangents`` aligned with the positional arguments.

    Example:
        >>> import scitensor as st
        >>> from scitensor.ops._core import differentiable
        >>> @differentiable
        ... def cube(x):
        ...     y = x.backend.mul(x.backend.mul(x.data, x.data), x.data)
        ...     return y, lambda g, out: (3 * x * x * g,)
        >>> st.grad(lambda x: cube(x).sum())(st.tensor([2.0])).tolist()
        [12.0]
    """
    import functools

    name = fn.__name__

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        dev = None
        for a in args:
            if isinstance(a, Tensor):
                if dev is None:
                    dev = a.device
                elif a.device is not dev:
                    raise ValueError(f"{fn.__name__}: tensors on different devices "
                                     f"({dev} and {a.device}); move them to one device first")
        if dev is None:
            raise TypeError(f"{fn.__name__}: expected at least one Tensor argument")
        data, pullback = fn(*args, **kwargs)
        parents = tuple(a if isinstance(a, Tensor) else None for a in args)
        out = make_result(data, dev, parents, pullback)
        if dev.type != "cpu":  # sync_if_requested, with the name at hand
            LAST_OP[dev.index] = name
            if SYNC_EVERY_OP[0]:
                dev.backend.synchronize()
        return out

    wrapper.__code__ = wrapper.__code__.replace(co_name=fn.__name__)
    return wrapper
