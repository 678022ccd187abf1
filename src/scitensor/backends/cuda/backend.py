"""``CudaBackend``: the backend interface on one NVIDIA GPU (CuPy arrays as buffers).

What runs where:

- elementwise unary/binary primitives, casts and fills: our kernels (``kernels/
  elementwise.cu``) launched with low host overhead, for every dtype; CuPy for the cases
  they do not cover (broadcasting, mixed layouts);
- random numbers: our Philox kernels (``kernels/random.cu``), the CPU backend's stream;
- matmul: cuBLASLt (``cublaslt.py``), capturable in CUDA graphs;
- the linear layer (GEMM + bias + activation and its backward): cuBLASLt epilogues
  (``linear.py``);
- ``a[ids]`` with one integer index array (embedding lookups): a row-gather kernel
  (``gather.py``);
- everything else: :class:`~scitensor.backends.xp.ArrayBackend` with ``xp = cupy``.
  float16/bfloat16 inputs CuPy cannot handle are computed in float32 and rounded back.

Execution is asynchronous on the calling thread's current CuPy stream; on creation the
backend makes its own per-device stream current (a blocking stream, so the legacy default
stream other libraries use stays ordered with it). Memory comes from CuPy's caching pool in
eager mode and from the stream-ordered pool during graph capture (:mod:`.memory`); running
out raises :class:`~.errors.CudaOutOfMemoryError`, leaving existing tensors intact.
"""

from __future__ import annotations

import functools
import math

import cupy
import numpy as np

from ... import dtypes as dt
from ..base import PRIMITIVES
from ..xp import ArrayBackend
from . import memory
from .attention import CudaAttentionPrimitives
from .cluster import CudaClusterPrimitives
from .compat import NumpyCompatPrimitives
from .compiler import load_module
from .conv import CudaConvPrimitives
from .cublaslt import CublasLt
from .elementwise import DTYPE_CODE, ElementwiseKernels, check_fast_alloc, new_array
from .errors import queued_failure
from .gather import CudaGatherPrimitives
from .graphs import CudaGraphPrimitives
from .linear import CudaLinearPrimitives
from .normalization import CudaNormalizationPrimitives
from .pooling import CudaPoolingPrimitives

__all__ = ["CudaBackend"]

_ndarray = cupy.ndarray
_get_stream = cupy.cuda.get_current_stream
_LOW = (np.dtype(np.float16), dt.bfloat16.np)
_F32 = np.dtype(np.float32)
_F64 = np.dtype(np.float64)
_RETRYABLE = (TypeError, NotImplementedError, cupy.cuda.compiler.CompileException)
_GUARDED = (MemoryError, cupy.cuda.runtime.CUDARuntimeError, *_RETRYABLE)
_INPLACE = {"setitem", "add_at", "batch_norm_update_running_inplace"}
_OUTPUT_KWARGS = ("out", "grads_out")  # keyword arguments naming arrays a primitive writes
_CREATION = {"empty", "zeros", "full"}
_UNARY_KERNELS = set(PRIMITIVES["unary"])
_BINARY_KERNELS = {"add", "sub", "mul", "div", "pow", "maximum", "minimum", "eq", "ne", "lt",
                   "le", "gt", "ge", "logical_and", "logical_or", "logical_xor"}


def _has_low(args, kwargs) -> bool:
    for x in (*args, *kwargs.values()):
        if isinstance(x, _ndarray | np.generic) and x.dtype in _LOW:
            return True
        if isinstance(x, dt.DType) and x.np in _LOW:
            return True
        if isinstance(x, list | tuple) and any(isinstance(y, _ndarray) and y.dtype in _LOW
                                               for y in x):
            return True
    return False


def _guard(name: str, fn):
    """Wrap primitive ``fn``: translate OOM, retry low-precision dtypes through float32."""

    @functools.wraps(fn)
    def method(self, *args, **kwargs):
        try:
            return fn(self, *args, **kwargs)
        except _GUARDED as e:
            return self._recover(e, name, fn, args, kwargs)

    return method


def _fast_unary(name: str):
    fallback = getattr(ArrayBackend, name)

    def method(self, a):
        try:
            out = self._ew.unary(name, a)
            return fallback(self, a) if out is None else out
        except _GUARDED as e:
            return self._recover(e, name, fallback, (a,), {})

    method.__name__ = name
    method.__doc__ = fallback.__doc__
    return method


def _fast_binary(name: str):
    fallback = getattr(ArrayBackend, name)

    def method(self, a, b):
        try:
            out = self._ew.binary(name, a, b)
            return fallback(self, a, b) if out is None else out
        except _GUARDED as e:
            return self._recover(e, name, fallback, (a, b), {})

    method.__name__ = name
    method.__doc__ = fallback.__doc__
    return method


class CudaBackend(CudaAttentionPrimitives, CudaConvPrimitives, CudaNormalizationPrimitives,
                  CudaPoolingPrimitives, CudaClusterPrimitives, CudaGraphPrimitives,
                  CudaLinearPrimitives, CudaGatherPrimitives, NumpyCompatPrimitives,
                  ArrayBackend):
    """Runs every primitive on one CUDA device. Work is asynchronous (see module docs)."""

    name = "cuda"
    xp = cupy

    def __init__(self, device):
        self.device = device
        self.index = device.index
        self.cp_device = cupy.cuda.Device(device.index)
        with self.cp_device:
            self.pool = memory.install_pool(device.index)
            self.stream = cupy.cuda.Stream(non_blocking=False)
            self.stream.use()
            props = cupy.cuda.runtime.getDeviceProperties(device.index)
        self.arch = int(self.cp_device.compute_capability)
        self.sm_count = int(props["multiProcessorCount"])
        name = props["name"]
        self.device_name = name.decode() if isinstance(name, bytes) else str(name)
        self._ew = ElementwiseKernels(device.index, self.arch, self.sm_count)
        with self.cp_device:
            check_fast_alloc()
            # random kernels add *offset_delta to their offset; eager launches read this zero
            self._zero_delta = cupy.zeros(1, dtype=np.uint64)
        self._random = None
        self._blas = None
        if cupy.cuda.runtime.getDeviceCount() > 1:
            self._bind_device()

    def __repr__(self) -> str:
        return f"CudaBackend({self.device}, {self.device_name}, sm_{self.arch})"

    def _bind_device(self) -> None:
        """With several GPUs, make each primitive switch to this backend's device."""
        dev = self.cp_device
        for names in PRIMITIVES.values():
            for n in names:
                fn = getattr(self, n)

                def on_device(*args, _fn=fn, **kwargs):
                    with dev:
                        return _fn(*args, **kwargs)

                setattr(self, n, on_device)

    # ---- error recovery ----------------------------------------------------------------------
    def _recover(self, e, name, fn, args, kwargs):
        if memory.is_oom(e):
            if name not in _INPLACE:
                memory.empty_cache()
                try:
                    return fn(self, *args, **kwargs)
                except _GUARDED as e2:
                    if not memory.is_oom(e2):
                        raise
                    e = e2
            raise memory.oom_error(e, self.device, name, self._requested(name, args),
                                   _describe(args)) from None
        if isinstance(e, _RETRYABLE) and _has_low(args, kwargs):
            return self._via_float32(name, fn, args, kwargs)
        raise e

    @staticmethod
    def _requested(name, args):
        if name in _CREATION and len(args) >= 2:
            shape, dtype = args[0], args[-1]
            shape = (shape,) if isinstance(shape, int) else shape
            if isinstance(dtype, dt.DType):
                return math.prod(shape) * dtype.itemsize
        return None

    def _via_float32(self, name, fn, args, kwargs):
        """Run ``fn`` with float16/bfloat16 arrays as float32 and round results back."""
        low = []

        def up(x):
            if isinstance(x, _ndarray) and x.dtype in _LOW:
                low.append(x.dtype)
                return self.astype(x, dt.float32)
            if isinstance(x, np.generic) and x.dtype in _LOW:
                return np.float32(x)
            if isinstance(x, dt.DType) and x.np in _LOW:
                low.append(x.np)
                return dt.float32
            if isinstance(x, list | tuple) and any(isinstance(y, _ndarray) for y in x):
                return type(x)(up(y) for y in x)
            return x

        new_args = [up(x) for x in args]
        new_kwargs = {k: up(v) for k, v in kwargs.items()}
        target = dt.from_numpy_dtype(low[0]) if low else dt.float32

        def down(r):
            if isinstance(r, _ndarray) and r.dtype == _F32:
                return self.astype(r, target)
            if isinstance(r, list | tuple):
                return type(r)(down(y) for y in r)
            return r

        if name in _INPLACE:  # write the float32 result back into the caller's array
            a = args[0]
            a32 = new_args[0] if isinstance(new_args[0], _ndarray) else a
            fn(self, a32, *new_args[1:], **new_kwargs)
            if a32 is not a:
                a[...] = self.astype(a32, dt.from_numpy_dtype(a.dtype))
            return None
        # output destinations (attention's out= / grads_out=): the float32 stand-ins the
        # primitive wrote are copied into the caller's arrays, which are what it returns
        dests = {}
        for key in _OUTPUT_KWARGS:
            orig, new = kwargs.get(key), new_kwargs.get(key)
            if orig is None:
                continue
            pairs = zip(orig, new) if isinstance(orig, list | tuple) else [(orig, new)]
            dests.update({id(n): (o, n) for o, n in pairs if n is not o})
        res = fn(self, *new_args, **new_kwargs)
        for o, n in dests.values():
            o[...] = self.astype(n, dt.from_numpy_dtype(o.dtype))

        def back(r):
            hit = dests.get(id(r))
            if hit is not None:
                return hit[0]
            if isinstance(r, list | tuple):
                return type(r)(back(y) for y in r)
            return down(r)

        return back(res)

    # ---- IO and creation -----------------------------------------------------------------------
    def asarray(self, obj, dtype):
        if isinstance(obj, _ndarray):
            return self.astype(obj, dtype)
        host = np.asarray(obj, dtype=dtype.np)
        if host.dtype == dt.bfloat16.np:  # upload the bits: no conversion on the way
            return cupy.asarray(host.view(np.uint16)).view(host.dtype)
        return cupy.asarray(host)

    def to_numpy(self, a):
        # the copy waits for the queued work: a failure in it surfaces here, reported as
        # synchronize reports it (out of memory is left to the primitive guard)
        try:
            if a.dtype == dt.bfloat16.np:  # copy the bits (ascontiguousarray: 0-d -> 1-d)
                c = a if a._c_contiguous else cupy.ascontiguousarray(a)
                return c.view(np.uint16).get().view(a.dtype).reshape(a.shape)
            return a.get()
        except cupy.cuda.runtime.CUDARuntimeError as e:
            if memory.is_oom(e):
                raise
            raise queued_failure(self.device, e) from e

    def from_dlpack(self, obj):
        arr = cupy.from_dlpack(obj)
        if arr.device.id != self.index:
            raise ValueError(f"from_dlpack: the array lives on cuda:{arr.device.id}, not on "
                             f"{self.device}; import it with device='cuda:{arr.device.id}'")
        return arr

    def empty(self, shape, dtype):
        return self._ew._new(shape, dtype.np)

    def zeros(self, shape, dtype):
        out = new_array(shape, dtype.np)
        if out.nbytes:
            out.data.memset_async(0, out.nbytes)
        return out

    def full(self, shape, value, dtype):
        out = self._ew.fill(shape, value, dtype.np)
        return super().full(shape, value, dtype) if out is None else out

    def astype(self, a, dtype):
        if a.dtype == dtype.np:
            return a
        out = self._ew.cast(a, dtype.np)
        if out is None:
            if a.dtype in DTYPE_CODE and dtype.np in DTYPE_CODE:
                out = self._ew.cast(cupy.ascontiguousarray(a), dtype.np)
            else:
                out = a.astype(dtype.np)
        return out

    def synchronize(self):
        try:
            _get_stream(self.index).synchronize()
        except cupy.cuda.runtime.CUDARuntimeError as e:
            raise queued_failure(self.device, e) from e

    def empty_cache(self) -> None:
        """Return unused cached GPU memory to the driver."""
        memory.empty_cache()

    # ---- random (Philox kernels) ----------------------------------------------------------------
    def _rand_kernel(self, name, signature):
        if self._random is None:
            self._random = load_module("random.cu", self.index, self.arch)
        return self._random.function(name, signature)

    def _rand_launch(self, kname, signature, shape, np_dtype, per_thread, *args):
        out = self._ew._new(shape, np_dtype)
        n = out.size
        if n:
            k = self._rand_kernel(kname, signature)
            work = (n + per_thread - 1) // per_thread
            blocks = min((work + 255) // 256, self.sm_count * 32)
            k(blocks, 256, _get_stream(self.index).ptr, out.data.ptr, n, *args)
        return out

    def _offset_args(self, offset):
        """``(offset, delta_ptr)``: a plain offset reads a device zero; a captured one
        (:class:`scitensor.random.CapturedOffset`) reads its generator's replay delta."""
        ptr = getattr(offset, "delta_ptr", None)
        if ptr is None:
            return int(offset), self._zero_delta.data.ptr
        return int(offset.baked), ptr

    def uniform(self, shape, dtype, seed, offset):
        offset, delta = self._offset_args(offset)
        if dtype.np == _F64:
            return self._rand_launch("st_uniform_f64", "pqQQp", shape, _F64, 2, seed, offset,
                                     delta)
        out = self._rand_launch("st_uniform_f32", "pqQQp", shape, _F32, 4, seed, offset, delta)
        return self.astype(out, dtype)

    def normal(self, shape, dtype, seed, offset):
        offset, delta = self._offset_args(offset)
        if dtype.np == _F64:
            return self._rand_launch("st_normal_f64", "pqQQp", shape, _F64, 2, seed, offset,
                                     delta)
        out = self._rand_launch("st_normal_f32", "pqQQp", shape, _F32, 2, seed, offset, delta)
        return self.astype(out, dtype)

    def randint(self, low, high, shape, dtype, seed, offset):
        offset, delta = self._offset_args(offset)
        span = int(high) - int(low)
        if not 0 < span < (1 << 64):
            raise ValueError(f"randint: need low < high, got low={low}, high={high}")
        out = self._rand_launch("st_randint_i64", "pqQQqQp", shape, np.dtype(np.int64), 2,
                                seed, offset, int(low), span, delta)
        return self.astype(out, dtype)

    def bernoulli_mask(self, shape, p_keep, seed, offset):
        offset, delta = self._offset_args(offset)
        return self._rand_launch("st_bernoulli", "pqQQfp", shape, np.dtype(np.bool_), 4,
                                 seed, offset, float(p_keep), delta)

    # ---- linear algebra -------------------------------------------------------------------
    def matmul(self, a, b):
        if self._blas is None:
            self._blas = CublasLt(self.index)
        if a.dtype != b.dtype or a.dtype.kind in "biu":
            # integers (and mixed dtypes) through float64: exact while |sums| < 2**53
            d = _F64 if a.dtype.kind in "biu" and b.dtype.kind in "biu" else \
                np.result_type(a.dtype, b.dtype)
            res_dtype = np.result_type(a.dtype, b.dtype)
            out = self._blas.matmul(self.astype(a, dt.from_numpy_dtype(d)),
                                    self.astype(b, dt.from_numpy_dtype(d)),
                                    _get_stream(self.index).ptr)
            return self.astype(out, dt.from_numpy_dtype(res_dtype))
        return self._blas.matmul(a, b, _get_stream(self.index).ptr)

    # ---- where CuPy differs from NumPy (more in compat.py) -----------------------------------
    def pow(self, a, b):
        if _integer(a) and _integer(b) and _any_negative(b):
            raise ValueError("Integers to negative integer powers are not allowed.")
        return _POW(self, a, b)


def _integer(x) -> bool:
    kind = getattr(x, "dtype", None)
    if kind is None:
        return isinstance(x, int) and not isinstance(x, bool)
    return x.dtype.kind in "iu"


def _any_negative(b) -> bool:
    if isinstance(b, _ndarray):  # NumPy checks every element too (this waits for the GPU)
        return b.size > 0 and bool((b < 0).any())
    return b < 0


def _describe(args) -> str:
    parts = []
    for x in args:
        if isinstance(x, _ndarray):
            parts.append(f"{x.dtype}{list(x.shape)}")
    return f" on {', '.join(parts)}" if parts else ""


# fast elementwise methods, then the guard around every other primitive
for _n in _UNARY_KERNELS:
    setattr(CudaBackend, _n, _fast_unary(_n))
for _n in _BINARY_KERNELS:
    if _n == "pow":
        _POW = _fast_binary(_n)
        continue
    setattr(CudaBackend, _n, _fast_binary(_n))
_fast_round = CudaBackend.round


def _round(self, a):
    """Round half to even; NumPy rounds bool to float16."""
    if type(a) is _ndarray and a.dtype == np.bool_:
        return self.astype(a, dt.float16)
    return _fast_round(self, a)


CudaBackend.round = _round
for _group in PRIMITIVES.values():
    for _n in _group:
        if _n in _UNARY_KERNELS or _n in _BINARY_KERNELS or _n in ("synchronize", "scalar"):
            continue
        setattr(CudaBackend, _n, _guard(_n, getattr(CudaBackend, _n)))
del _n, _group
