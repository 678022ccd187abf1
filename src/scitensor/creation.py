"""Tensor constructors: ``tensor``, ``zeros``, ``ones``, ``full``, ``arange``, ``linspace``,
``eye``, ``*_like``, ``rand``, ``randn``, ``randint``, ``from_numpy``, ``from_dlpack``.

Constructors put tensors on the default device (the CPU unless changed with
``st.set_default_device`` or ``with st.default_device(...)``) and use float32 for floating data
unless told otherwise.
"""

from __future__ import annotations

import math
import numbers

import ml_dtypes
import numpy as np

from . import dtypes as dt
from .device import Device, get_default_device
from .random import Generator, default_generator
from .tensor import Tensor, wrap

__all__ = ["arange", "empty", "eye", "from_dlpack", "from_numpy", "full", "full_like",
           "linspace", "ones", "ones_like", "rand", "rand_like", "randint", "randn",
           "randn_like", "tensor", "zeros", "zeros_like", "empty_like"]


def _device(device) -> Device:
    return get_default_device() if device is None else Device(device)


def _shape(shape, op: str) -> tuple[int, ...]:
    if len(shape) == 1 and isinstance(shape[0], tuple | list):
        shape = tuple(shape[0])
    out = []
    for n in shape:
        if not isinstance(n, numbers.Integral) or isinstance(n, bool):
            raise TypeError(f"{op}: shape entries must be ints, got {n!r} in {tuple(shape)}")
        if n < 0:
            raise ValueError(f"{op}: negative dimension {n} in shape {tuple(shape)}")
        out.append(int(n))
    return tuple(out)


def _finish(data, device: Device, requires_grad: bool, op: str) -> Tensor:
    t = wrap(data, device)
    if requires_grad:
        if data.dtype.kind != "f" and data.dtype != dt.bfloat16.np:
            raise TypeError(f"{op}: only floating tensors can require gradients, got "
                            f"{dt.from_numpy_dtype(data.dtype)}")
        t.requires_grad = True
    return t


def _infer_dtype(data, op: str = "tensor") -> dt.DType:
    """dtype for Python data: bools -> bool, ints -> int64, floats -> default float."""
    if isinstance(data, bool | np.bool_):
        return dt.bool_
    if isinstance(data, numbers.Integral):
        return dt.int64
    if isinstance(data, numbers.Real):
        return dt.get_default_dtype()
    try:
        arr = np.asarray(data)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{op}: cannot make a tensor from this {type(data).__name__} (ragged "
                         f"nested sequences or mixed types?): {e}") from None
    if arr.dtype == np.bool_:
        return dt.bool_
    if arr.dtype.kind in "iu":
        return dt.int64
    if arr.dtype.kind == "f" or arr.dtype == dt.bfloat16.np:
        return dt.get_default_dtype()
    if arr.dtype == object or arr.dtype.kind in "UOSc":
        raise TypeError(f"{op}: cannot make a tensor from data of NumPy kind {arr.dtype} "
                        f"(first element: {arr.flat[0] if arr.size else None!r}); give numbers")
    raise TypeError(f"{op}: unsupported data dtype {arr.dtype}")


_INT_NP = (np.dtype(np.int32), np.dtype(np.int64))


def tensor(data, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """Make a tensor from Python data, a NumPy array or another tensor (always copies).

    Python floats become the default float dtype (float32), ints int64, bools bool; NumPy
    arrays and NumPy scalars keep their dtype (float64 stays float64; unsigned integers become
    int64) unless ``dtype`` is given.

    Args:
        data: nested lists of numbers, a scalar, a NumPy array, or a Tensor.
        dtype: the dtype to use (default: inferred).
        device: the device (default: the default device).
        requires_grad: track gradients for this (floating) tensor.

    Example:
        >>> import scitensor as st
        >>> st.tensor([[1, 2], [3, 4]]).dtype, st.tensor(1.5).shape
        (scitensor.int64, ())
    """
    dev = _device(device)
    if isinstance(data, Tensor):
        d = data.dtype if dtype is None else dt.as_dtype(dtype)
        src = data.numpy() if data.device is not dev else data.data
        if data.device is not dev:
            arr = dev.backend.asarray(np.asarray(src), d)
        else:
            arr = dev.backend.astype(dev.backend.copy(src), d)
        return _finish(arr, dev, requires_grad, "tensor")
    gpu_array = hasattr(data, "__cuda_array_interface__")
    if gpu_array and dev.type != "cuda":  # a CuPy array for a CPU tensor: copy to the host
        data = data.get() if hasattr(data, "get") else np.asarray(data)
        gpu_array = False
    if dtype is None:
        if (gpu_array or isinstance(data, np.ndarray | np.generic)) and data.dtype != object:
            # int8/int16 and unsigned integers (uint8 images...) widen to int64
            d = dt.int64 if data.dtype.kind in "iu" and data.dtype not in _INT_NP else \
                dt.from_numpy_dtype(data.dtype.newbyteorder("="))
        else:
            d = _infer_dtype(data)
    else:
        d = dt.as_dtype(dtype)
    if gpu_array:
        arr = dev.backend.astype(dev.backend.copy(dev.backend.xp.asarray(data)), d)
        return _finish(arr, dev, requires_grad, "tensor")
    _check_fits(data, d)
    try:
        host = np.array(data, dtype=d.np)
    except TypeError as e:
        raise TypeError(f"tensor: cannot convert {type(data).__name__} to a {d.name} tensor "
                        f"({e})") from None
    except (ValueError, OverflowError) as e:
        raise ValueError(f"tensor: cannot convert {type(data).__name__} to a {d.name} tensor "
                         f"({e}); ragged nested lists, NaN or values outside the dtype's "
                         "range?") from None
    arr = host if dev.type == "cpu" else dev.backend.asarray(host, d)
    return _finish(arr, dev, requires_grad, "tensor")


def _check_fits(data, d: dt.DType) -> None:
    """Unsigned 64-bit data beyond int64 would wrap around when made int64: refuse it."""
    if (d is dt.int64 and isinstance(data, np.ndarray | np.generic)
            and data.dtype == np.uint64 and data.size and int(data.max()) > _INT64_MAX):
        raise ValueError(f"tensor: uint64 value {int(data.max())} does not fit int64 (the "
                         "largest integer dtype); convert the data to float64 first")


_INT64_MAX = int(np.iinfo(np.int64).max)


def from_numpy(array: np.ndarray, device=None) -> Tensor:
    """Wrap a NumPy array without copying (on the CPU); the tensor shares its memory.

    Example:
        >>> import numpy as np, scitensor as st
        >>> a = np.zeros(2, np.float32); t = st.from_numpy(a); a[0] = 5
        >>> t.tolist()
        [5.0, 0.0]
    """
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy: expected a numpy.ndarray, got {type(array).__name__}")
    try:
        d = dt.from_numpy_dtype(array.dtype)
    except TypeError as e:
        raise TypeError(f"from_numpy: {e}") from None
    dev = _device(device)
    if dev.type == "cpu":
        return wrap(array, dev)
    return wrap(dev.backend.asarray(array, d), dev)


def from_dlpack(obj) -> Tensor:
    """Zero-copy import of a DLPack producer (NumPy, CuPy, PyTorch tensors...).

    The device is taken from the producer (``__dlpack_device__``): CPU arrays stay on the CPU,
    CUDA arrays on their GPU.

    Example:
        >>> import numpy as np, scitensor as st
        >>> st.from_dlpack(np.arange(3.0)).tolist()
        [0.0, 1.0, 2.0]
    """
    if not hasattr(obj, "__dlpack_device__"):
        raise TypeError(f"from_dlpack: {type(obj).__name__} does not implement the DLPack "
                        "protocol (__dlpack__ / __dlpack_device__)")
    kind, index = obj.__dlpack_device__()
    kind = int(kind)
    if kind == 1:  # kDLCPU
        dev = Device("cpu")
    elif kind in (2, 3):  # kDLCUDA, kDLCUDAHost
        dev = Device("cuda", int(index)) if kind == 2 else Device("cpu")
    else:
        raise TypeError(f"from_dlpack: unsupported DLPack device type {kind}")
    data = dev.backend.from_dlpack(obj)
    dt.from_numpy_dtype(data.dtype)  # reject unsupported dtypes clearly
    return wrap(data, dev)


def _float_dtype(dtype):
    return dt.get_default_dtype() if dtype is None else dt.as_dtype(dtype)


def empty(*shape, dtype=None, device=None, requires_grad=False) -> Tensor:
    """An uninitialised tensor (its values are whatever memory held)."""
    dev = _device(device)
    return _finish(dev.backend.empty(_shape(shape, "empty"), _float_dtype(dtype)), dev,
                   requires_grad, "empty")


def zeros(*shape, dtype=None, device=None, requires_grad=False) -> Tensor:
    """A tensor of zeros: ``st.zeros(2, 3)`` or ``st.zeros((2, 3))``.

    Example:
        >>> import scitensor as st
        >>> st.zeros(2, 3).shape
        (2, 3)
    """
    dev = _device(device)
    return _finish(dev.backend.zeros(_shape(shape, "zeros"), _float_dtype(dtype)), dev,
                   requires_grad, "zeros")


def ones(*shape, dtype=None, device=None, requires_grad=False) -> Tensor:
    """A tensor of ones (same arguments as :func:`zeros`)."""
    dev = _device(device)
    return _finish(dev.backend.full(_shape(shape, "ones"), 1, _float_dtype(dtype)), dev,
                   requires_grad, "ones")


def full(shape, fill_value, dtype=None, device=None, requires_grad=False) -> Tensor:
    """A tensor filled with ``fill_value`` (dtype inferred from the value when not given).

    Example:
        >>> import scitensor as st
        >>> st.full((2,), 7).tolist()
        [7, 7]
    """
    if isinstance(shape, numbers.Integral):
        shape = (shape,)
    d = _infer_dtype(fill_value, "full") if dtype is None else dt.as_dtype(dtype)
    _check_fill(fill_value, d, "full")
    dev = _device(device)
    return _finish(dev.backend.full(_shape(tuple(shape), "full"), fill_value, d), dev,
                   requires_grad, "full")


def arange(start, stop=None, step=1, dtype=None, device=None) -> Tensor:
    """Evenly spaced values in ``[start, stop)``; int64 for integer arguments.

    Example:
        >>> import scitensor as st
        >>> st.arange(1, 7, 2).tolist()
        [1, 3, 5]
    """
    if stop is None:
        start, stop = 0, start
    if step is None:  # as in NumPy
        step = 1
    for name, v in (("start", start), ("stop", stop), ("step", step)):
        if not isinstance(v, numbers.Real):
            raise TypeError(f"arange: {name} must be a real number, got {v!r:.40}")
        if not math.isfinite(v):
            raise ValueError(f"arange: {name} must be finite, got {v}")
    if step == 0:
        raise ValueError("arange: step must not be zero")
    if dtype is None:
        ints = all(isinstance(v, numbers.Integral) for v in (start, stop, step))
        d = dt.int64 if ints else dt.get_default_dtype()
    else:
        d = dt.as_dtype(dtype)
    dev = _device(device)
    length = math.ceil((stop - start) / step)
    if length > _MAX_ELEMENTS:
        raise ValueError(f"arange: [{start}, {stop}) with step {step} would have {length} "
                         "elements, more than any device can hold")
    if length <= 0:  # empty (NumPy refuses some of these, e.g. a tiny step the wrong way)
        start, stop, step = 0, 0, 1
    return wrap(dev.backend.arange(start, stop, step, d), dev)


_MAX_ELEMENTS = 2**62


def linspace(start, stop, num: int, dtype=None, device=None) -> Tensor:
    """``num`` evenly spaced values from ``start`` to ``stop`` inclusive."""
    if not isinstance(num, numbers.Integral) or num < 0:
        raise ValueError(f"linspace: num must be a non-negative int, got {num!r}")
    for name, v in (("start", start), ("stop", stop)):
        if not isinstance(v, numbers.Real):
            raise TypeError(f"linspace: {name} must be a real number, got {v!r:.40}")
        if not math.isfinite(v):
            raise ValueError(f"linspace: {name} must be finite, got {v}")
    dev = _device(device)
    return wrap(dev.backend.linspace(start, stop, int(num), _float_dtype(dtype)), dev)


def eye(n: int, m: int | None = None, dtype=None, device=None) -> Tensor:
    """The ``n`` by ``m`` (default ``n``) identity matrix."""
    dev = _device(device)
    m = n if m is None else m
    _shape((n, m), "eye")
    return wrap(dev.backend.eye(n, m, _float_dtype(dtype)), dev)


def _like(x: Tensor, dtype, device, op: str):
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: expected a Tensor, got {type(x).__name__}")
    return (x.shape, x.dtype if dtype is None else dt.as_dtype(dtype),
            x.device if device is None else Device(device))


def _check_fill(value, d: dt.DType, op: str) -> None:
    """A fill value must be a number that ``d`` holds (NaN and inf only in floating dtypes)."""
    if isinstance(value, Tensor):
        raise TypeError(f"{op}: fill_value must be a Python number, got a Tensor; use "
                        "value.item() or st.zeros(...) + value")
    if not isinstance(value, numbers.Real):
        raise TypeError(f"{op}: fill_value must be a number, got {type(value).__name__} "
                        f"{value!r:.40}")
    if d.is_floating:
        return
    if not math.isfinite(value):
        raise ValueError(f"{op}: fill_value {value} cannot be stored in a {d.name} tensor; use "
                         "a floating dtype")
    if d.is_integer:
        info = np.iinfo(d.np)
        if not info.min <= value <= info.max:
            raise ValueError(f"{op}: fill_value {value} does not fit {d.name} (range "
                             f"[{info.min}, {info.max}])")


def zeros_like(x: Tensor, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Zeros with ``x``'s shape, dtype and device (each overridable)."""
    shape, d, dev = _like(x, dtype, device, "zeros_like")
    return _finish(dev.backend.zeros(shape, d), dev, requires_grad, "zeros_like")


def ones_like(x: Tensor, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Ones with ``x``'s shape, dtype and device (each overridable)."""
    shape, d, dev = _like(x, dtype, device, "ones_like")
    return _finish(dev.backend.full(shape, 1, d), dev, requires_grad, "ones_like")


def full_like(x: Tensor, fill_value, dtype=None, device=None, requires_grad=False) -> Tensor:
    """``fill_value`` with ``x``'s shape, dtype and device (each overridable)."""
    shape, d, dev = _like(x, dtype, device, "full_like")
    _check_fill(fill_value, d, "full_like")
    return _finish(dev.backend.full(shape, fill_value, d), dev, requires_grad, "full_like")


def empty_like(x: Tensor, dtype=None, device=None) -> Tensor:
    shape, d, dev = _like(x, dtype, device, "empty_like")
    return wrap(dev.backend.empty(shape, d), dev)


def _gen(generator, op: str):
    if generator is None:
        return default_generator
    if not isinstance(generator, Generator):
        raise TypeError(f"{op}: generator must be a scitensor.Generator, got "
                        f"{type(generator).__name__}")
    return generator


# the largest value below 1 in each low-precision dtype: rand rounds float32 draws to these
# dtypes and must not round up to 1.0
_BELOW_ONE = {dt.float16: 1 - 2.0**-11, dt.bfloat16: 1 - 2.0**-8}


def rand(*shape, dtype=None, device=None, generator=None, requires_grad=False) -> Tensor:
    """Uniform numbers in [0, 1).

    Example:
        >>> import scitensor as st
        >>> x = st.rand(1000, generator=st.Generator(1))
        >>> 0.4 < x.mean().item() < 0.6
        True
    """
    d = _float_dtype(dtype)
    if not d.is_floating:
        raise TypeError(f"rand: dtype must be floating, got {d}")
    dev = _device(device)
    g = _gen(generator, "rand")
    be = dev.backend
    data = be.uniform(_shape(shape, "rand"), d, g.seed, g.next_offset(dev))
    below_one = _BELOW_ONE.get(d)
    if below_one is not None:
        data = be.minimum(data, be.scalar(below_one, d))
    return _finish(data, dev, requires_grad, "rand")


def randn(*shape, dtype=None, device=None, generator=None, requires_grad=False) -> Tensor:
    """Standard normal numbers (mean 0, variance 1)."""
    d = _float_dtype(dtype)
    if not d.is_floating:
        raise TypeError(f"randn: dtype must be floating, got {d}")
    dev = _device(device)
    g = _gen(generator, "randn")
    data = dev.backend.normal(_shape(shape, "randn"), d, g.seed, g.next_offset(dev))
    return _finish(data, dev, requires_grad, "randn")


def randint(low: int, high: int | None = None, size=(), dtype=None, device=None,
            generator=None) -> Tensor:
    """Integers uniform in ``[low, high)`` (``randint(high, size=...)`` means ``low = 0``).

    Example:
        >>> import scitensor as st
        >>> x = st.randint(0, 10, (5,))
        >>> bool(((x >= 0) & (x < 10)).all())
        True
    """
    if high is None:
        low, high = 0, low
    for name, v in (("low", low), ("high", high)):
        if not isinstance(v, numbers.Integral) or isinstance(v, bool):
            raise TypeError(f"randint: {name} must be an int, got {v!r}")
    if high <= low:
        raise ValueError(f"randint: need low < high, got low={low}, high={high}")
    d = dt.int64 if dtype is None else dt.as_dtype(dtype)
    if d.is_bool:
        lo_ok, hi_ok = 0, 2
    elif d.is_integer:
        info = np.iinfo(d.np)
        lo_ok, hi_ok = int(info.min), int(info.max) + 1
    else:  # integers drawn in int64, then rounded to d: they must stay finite there
        lo_ok, hi_ok = -(2**63), 2**63 - 1
        big = int(float(ml_dtypes.finfo(d.np).max))
        lo_ok, hi_ok = max(lo_ok, -big), min(hi_ok, big + 1)
    if low < lo_ok or high > hi_ok:
        raise ValueError(f"randint: [{low}, {high}) does not fit dtype {d.name} "
                         f"(valid range [{lo_ok}, {hi_ok}))")
    if high - low >= 2**64:
        raise ValueError(f"randint: [{low}, {high}) spans more than 2**64 - 1 values")
    if isinstance(size, numbers.Integral):
        size = (size,)
    dev = _device(device)
    g = _gen(generator, "randint")
    return wrap(dev.backend.randint(int(low), int(high), _shape(tuple(size), "randint"), d,
                                    g.seed, g.next_offset(dev)), dev)


def rand_like(x: Tensor, dtype=None, device=None, generator=None) -> Tensor:
    shape, d, dev = _like(x, dtype, device, "rand_like")
    return rand(*shape, dtype=d, device=dev, generator=generator)


def randn_like(x: Tensor, dtype=None, device=None, generator=None) -> Tensor:
    shape, d, dev = _like(x, dtype, device, "randn_like")
    return randn(*shape, dtype=d, device=dev, generator=generator)


def _prod(shape):
    return math.prod(shape)
