"""Fast paths for elementwise primitives: our ``kernels/elementwise.cu`` on contiguous arrays.

CuPy's ufunc machinery costs ~22 µs of host time for a tiny add; these paths check a few
attributes, allocate the output and launch one kernel through :class:`~.launch.Kernel`.
Binary operands may be two arrays of one shape, an array and a scalar, or two arrays where
one repeats whole along the other (its shape, leading 1s aside, is the other's trailing
axes: a bias row added to a batch). They return ``None`` when the inputs are outside what
the kernels cover (other broadcasting, non-contiguous binary operands, mixed dtypes, a dtype
without the kernel), and the backend then falls back to CuPy.
"""

from __future__ import annotations

import cupy
import numpy as np

from ... import dtypes as dt
from .compiler import load_module
from .launch import Kernel

__all__ = ["DTYPE_CODE", "ElementwiseKernels", "check_fast_alloc", "new_array",
           "repeats_along"]

# np dtype -> code compiled into elementwise.cu (-DST_DTYPE)
DTYPE_CODE = {
    np.dtype(np.float16): 0, dt.bfloat16.np: 1, np.dtype(np.float32): 2,
    np.dtype(np.float64): 3, np.dtype(np.int32): 4, np.dtype(np.int64): 5,
    np.dtype(np.bool_): 6,
}
_SCALAR_SIG = "fffdiqi"  # kernel scalar parameter type per code
_BOOL = np.dtype(np.bool_)
_BF16 = dt.bfloat16.np
_F32 = np.dtype(np.float32)
BOOL_OUT = {"eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "logical_xor",
            "logical_not", "isnan", "isinf", "isfinite"}
_INT_RANGE = {4: (-(1 << 31), 1 << 31), 5: (-(1 << 63), 1 << 63)}
_ndarray = cupy.ndarray
_get_stream = cupy.cuda.get_current_stream
THREADS = 256
# cupy.ndarray(shape, dtype) runs a Python __new__ (which calls these two) and a Python
# no-op __init__; calling the two directly skips both frames. Checked once per process by
# check_fast_alloc(); FAST_ALLOC stays False if this CuPy does not behave as expected.
_base_new = cupy._core.core._ndarray_base.__new__
FAST_ALLOC = [False]


def check_fast_alloc() -> bool:
    """Enable the direct array construction if it yields a normal CuPy array here."""
    try:
        x = _base_new(_ndarray)
        x._init((3,), np.float32)
        ok = type(x) is _ndarray and x.shape == (3,) and x.dtype == np.float32 \
            and x.data.ptr != 0 and x._c_contiguous
    except Exception:
        ok = False
    FAST_ALLOC[0] = ok
    return ok


def new_array(shape, dtype):
    """An uninitialised C-contiguous CuPy array (the fast construction when enabled)."""
    if FAST_ALLOC[0]:
        x = _base_new(_ndarray)
        x._init(shape, dtype)
        return x
    return _ndarray(shape, dtype)


class ElementwiseKernels:
    """Per-device table of elementwise kernels, compiled per dtype on first use."""

    def __init__(self, device_id: int, arch: int, sm_count: int):
        self.device_id = device_id
        self.arch = arch
        self.max_blocks = sm_count * 16
        self._modules: dict = {}
        self._tables: dict = {}  # kernel name -> {np dtype: Kernel or False}
        self.poison = False  # tests: fill fresh outputs with 0xFF bytes (NaN / -1 / True)

    # ---- kernel lookup ---------------------------------------------------------------------
    def module(self, code: int):
        mod = self._modules.get(code)
        if mod is None:
            mod = self._modules[code] = load_module(
                "elementwise.cu", self.device_id, self.arch, options=(f"-DST_DTYPE={code}",))
        return mod

    def kernel(self, name: str, dtype, signature: str | None = None) -> Kernel | None:
        """The kernel ``st_<name>`` for arrays of ``dtype``, or ``None`` if there is none."""
        table = self._tables.get(name)
        if table is None:
            table = self._tables[name] = {}
        k = table.get(dtype)
        if k is None:
            code = DTYPE_CODE.get(dtype)
            k = False
            if code is not None:
                mod = self.module(code)
                if mod.has("st_" + name):
                    sig = signature or self._signature(name, code)
                    k = mod.function("st_" + name, sig)
            table[dtype] = k
        return k or None

    @staticmethod
    def _signature(name: str, code: int) -> str:
        if name.startswith("cast_"):
            return "ppq"
        if name == "fill":
            return "p" + _SCALAR_SIG[code] + "q"
        return "pp" + 2 * _SCALAR_SIG[code] + "pqiq"  # binary; unary kernels pass "ppq"

    def _new(self, shape, dtype):
        out = new_array(shape, dtype)
        if self.poison and out.nbytes:
            out.data.memset_async(0xFF, out.nbytes)
        return out

    # ---- launches ------------------------------------------------------------------------
    def binary(self, name: str, a, b):
        """``name(a, b)`` for arrays of one dtype and shape, or an array and a scalar."""
        if type(a) is _ndarray:
            dtype = a.dtype
            if not a._c_contiguous:
                return None
            period = 0
            if type(b) is _ndarray:
                if b.dtype != dtype or not b._c_contiguous:
                    return None
                shape = a.shape
                mode, pa, pb, sa, sb = 0, a.data.ptr, b.data.ptr, 0, 0
                if b.shape != shape:
                    if repeats_along(b.shape, shape):
                        mode, period = 3, b.size
                    elif repeats_along(shape, b.shape):
                        mode, period, shape = 4, a.size, b.shape
                    else:
                        return None
            else:
                sb = _scalar(b, dtype)
                if sb is None:
                    if type(b) is float and dtype == _BF16:  # ml_dtypes: bf16 + float -> f32
                        return self.binary(name, self.cast(a, _F32), b)
                    return None
                shape = a.shape
                mode, pa, pb, sa = 1, a.data.ptr, 0, 0
            n = b.size if mode == 4 else a.size
        elif type(b) is _ndarray:
            dtype = b.dtype
            sa = _scalar(a, dtype)
            if sa is None or not b._c_contiguous:
                if type(a) is float and dtype == _BF16 and b._c_contiguous:
                    return self.binary(name, a, self.cast(b, _F32))
                return None
            shape = b.shape
            mode, pa, pb, sb, period = 2, 0, b.data.ptr, 0, 0
            n = b.size
        else:
            return None
        table = self._tables.get(name)
        k = table.get(dtype) if table is not None else None
        if not k:
            if k is False or self.kernel(name, dtype) is None:
                return None
            k = self._tables[name][dtype]
        if FAST_ALLOC[0]:
            out = _base_new(_ndarray)
            out._init(shape, _BOOL if name in BOOL_OUT else dtype)
        else:
            out = _ndarray(shape, _BOOL if name in BOOL_OUT else dtype)
        if n:
            if self.poison:
                out.data.memset_async(0xFF, out.nbytes)
            blocks = (n + THREADS - 1) // THREADS
            k(blocks if blocks < self.max_blocks else self.max_blocks, THREADS,
              _get_stream(self.device_id).ptr, pa, pb, sa, sb, out.data.ptr, n, mode, period)
        return out

    def unary(self, name: str, a):
        """``name(a)`` for any array of a dtype with the kernel (made contiguous first)."""
        if type(a) is not _ndarray:
            return None
        dtype = a.dtype
        k = self.kernel(name, dtype, "ppq")
        if k is None:
            return None
        if not a._c_contiguous:
            a = cupy.ascontiguousarray(a)
        out = self._new(a.shape, _BOOL if name in BOOL_OUT else dtype)
        n = a.size
        if n:
            blocks = (n + THREADS - 1) // THREADS
            k(blocks if blocks < self.max_blocks else self.max_blocks, THREADS,
              _get_stream(self.device_id).ptr, a.data.ptr, out.data.ptr, n)
        return out

    def cast(self, a, dtype):
        """``a`` converted to the np dtype ``dtype`` (contiguous ``a`` only)."""
        if type(a) is not _ndarray or not a._c_contiguous or dtype not in DTYPE_CODE:
            return None
        k = self.kernel("cast_" + dt.from_numpy_dtype(dtype).name, a.dtype)
        if k is None:
            return None
        out = self._new(a.shape, dtype)
        n = a.size
        if n:
            blocks = (n + THREADS - 1) // THREADS
            k(blocks if blocks < self.max_blocks else self.max_blocks, THREADS,
              _get_stream(self.device_id).ptr, a.data.ptr, out.data.ptr, n)
        return out

    def fill(self, shape, value, dtype):
        """A new array of ``shape`` filled with ``value`` (``None`` if not representable)."""
        code = DTYPE_CODE.get(dtype)
        if code is None:
            return None
        if code <= 3:
            v = float(value)
        elif code == 6:
            v = int(bool(value))
        else:
            if isinstance(value, float) and not value.is_integer():
                return None
            v = int(value)
            lo, hi = _INT_RANGE[code]
            if not lo <= v < hi:
                return None
        k = self.kernel("fill", dtype)
        out = new_array(shape, dtype)
        n = out.size
        if n:
            blocks = (n + THREADS - 1) // THREADS
            k(blocks if blocks < self.max_blocks else self.max_blocks, THREADS,
              _get_stream(self.device_id).ptr, out.data.ptr, v, n)
        return out


def repeats_along(small: tuple, big: tuple) -> bool:
    """Whether an array of shape ``small`` broadcast to ``big`` is itself repeated whole: its
    shape, leading 1s aside, is ``big``'s trailing axes (and it has no more axes than ``big``,
    so the result has ``big``'s shape). Element ``i`` of the result then pairs with element
    ``i % small.size``.

    Example:
        >>> repeats_along((1, 384), (16, 256, 384)), repeats_along((256, 1), (4, 256, 384))
        (True, False)
    """
    k = len(small)
    if k > len(big):
        return False
    lead = 0
    while lead < k and small[lead] == 1:
        lead += 1
    return small[lead:] == big[len(big) - (k - lead):]


def _scalar(s, dtype):
    """The kernel scalar for ``s`` combined with an array of ``dtype`` (NumPy 2 rules), or
    ``None`` when NumPy would promote or the value does not fit."""
    code = DTYPE_CODE.get(dtype)
    if code is None:
        return None
    t = type(s)
    if t is bool:
        return int(s)
    if t is float:
        if code > 3 or code == 1:  # ml_dtypes promotes bfloat16 with a float to float32
            return None
        return float(dtype.type(s)) if code == 0 else s  # weak scalar: rounded to float16
    if t is int:
        if code == 6:
            return None
        if code in _INT_RANGE:
            lo, hi = _INT_RANGE[code]
            if not lo <= s < hi:
                return None
        return s
    if isinstance(s, np.generic) and s.dtype == dtype:
        return float(s) if code <= 3 else int(s)
    return None
