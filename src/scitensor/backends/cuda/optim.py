"""Launch helpers for the fused multi-tensor optimizer kernels (``kernels/optim.cu``).

Not a backend mixin: :mod:`scitensor.optim` calls these for parameters on a CUDA device.
A launch takes up to :data:`MT_MAX` tensors of one dtype; the tensor list is a kernel
parameter passed by value (a ``StMtList`` struct packed here), so a CUDA graph bakes in the
addresses it was captured with and no device-side pointer table has to be kept in sync.
Hyper-parameters live in a float64 device buffer (:class:`HyperBuffer`, one row of :data:`H`
values per parameter) that the host refreshes before every eager step and every graph replay.

Example:
    >>> from scitensor.backends.cuda import optim as cuda_optim           # doctest: +SKIP
    >>> buf = cuda_optim.HyperBuffer(device_index=0, rows=3)               # doctest: +SKIP
    >>> buf.host[0, :2] = 0.1, 0.9; buf.upload()                           # doctest: +SKIP
    >>> cuda_optim.sgd_step(0, [(p, g, buf_m, 0, 0, 0)], buf)              # doctest: +SKIP
"""

from __future__ import annotations

import ctypes
import struct
import threading

import cupy
import ml_dtypes
import numpy as np
from cupy_backends.cuda.api import driver as _driver

from .compiler import load_module
from .errors import KernelLaunchError

__all__ = ["CHUNK", "H", "MT_MAX", "HyperBuffer", "adam_step", "clip_grad_norm", "sgd_step",
           "state_dtype"]

MT_MAX = 48      # tensors per launch (ST_MT_MAX)
CHUNK = 2048     # elements per block (ST_MT_CHUNK)
H = 12           # float64 values per hyper-parameter row (ST_H)
THREADS = 256
_LIST = struct.Struct("<" + f"{MT_MAX}Q" * 5 + f"{MT_MAX}q" * 3 + "i4x")
_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64",
           np.dtype(np.float16): "f16", np.dtype(ml_dtypes.bfloat16): "bf16"}
_get_stream = cupy.cuda.get_current_stream
_H2D = 1  # cudaMemcpyHostToDevice


def state_dtype(np_dtype) -> np.dtype:
    """The dtype of optimizer state (and of the update math) for a parameter dtype."""
    return np.dtype(np.float64) if np.dtype(np_dtype) == np.float64 else np.dtype(np.float32)


def supported(np_dtype) -> bool:
    """Whether the fused kernels handle parameters of this dtype."""
    return np.dtype(np_dtype) in _SUFFIX


class HyperBuffer:
    """A float64 ``[rows, H]`` array on the host and its device copy.

    ``upload()`` copies the host rows to the device with one ``cudaMemcpyAsync`` on the
    current stream (the pageable source is staged by the driver before the call returns, so
    the host array may change right after). Never call it while a stream is capturing.
    """

    def __init__(self, device_index: int, rows: int):
        self.device_index = device_index
        self.host = np.zeros((max(rows, 1), H), dtype=np.float64)
        with cupy.cuda.Device(device_index):
            # no memset: were this created inside a capture, a captured memset would wipe
            # the rows uploaded before each replay; every row is written before it is read
            self.dev = cupy.empty(self.host.shape, dtype=np.float64)
        self.ptr = self.dev.data.ptr

    def upload(self) -> None:
        with cupy.cuda.Device(self.device_index):
            cupy.cuda.runtime.memcpyAsync(self.ptr, self.host.ctypes.data, self.host.nbytes,
                                          _H2D, _get_stream(self.device_index).ptr)


class _MtKernel:
    """One multi-tensor kernel: ``(StMtList list, <extra params>)`` with 8-byte extra slots."""

    def __init__(self, name: str, ptr: int, extra: str, owner):
        self.name = name
        self.ptr = ptr
        self._owner = owner
        self._list = ctypes.create_string_buffer(_LIST.size)
        self._extra = (ctypes.c_uint64 * max(len(extra), 1))()
        self._pack_extra = struct.Struct(
            "<" + "".join({"p": "Q", "i": "i4x", "d": "d", "q": "q"}[c] for c in extra)).pack_into
        slots = [ctypes.addressof(self._list)]
        slots += [ctypes.addressof(self._extra) + 8 * i for i in range(len(extra))]
        self._params = (ctypes.c_void_p * len(slots))(*slots)
        self._lock = threading.Lock()

    def __call__(self, stream: int, items, *extra) -> int:
        """Launch over ``items`` (``(p, g, s0, s1, s2, n, row)`` tuples, at most MT_MAX).

        Returns the number of blocks launched.
        """
        cols = list(zip(*items))
        k = len(items)
        pad = [0] * (MT_MAX - k)
        starts, blocks = [], 0
        for n in cols[5]:
            starts.append(blocks)
            blocks += (n + CHUNK - 1) // CHUNK
        if blocks == 0:
            return 0
        with self._lock:
            _LIST.pack_into(self._list, 0, *cols[0], *pad, *cols[1], *pad, *cols[2], *pad,
                            *cols[3], *pad, *cols[4], *pad, *cols[5], *pad, *starts, *pad,
                            *cols[6], *pad, k)
            self._pack_extra(self._extra, 0, *extra)
            try:
                _driver.launchKernel(self.ptr, blocks, 1, 1, THREADS, 1, 1, 0, stream,
                                     ctypes.addressof(self._params), 0)
            except Exception as e:
                raise KernelLaunchError(f"launching CUDA kernel {self.name} (grid {blocks}, "
                                        f"{k} tensors) failed: {e}") from e
        return blocks


_kernels: dict = {}


def _kernel(device_index: int, name: str, extra: str | None):
    """A multi-tensor kernel (``extra``: its other parameters), or with ``extra=None`` a
    plain :class:`~scitensor.backends.cuda.launch.Kernel` (signature ``"pqdpip"``)."""
    key = (device_index, name)
    k = _kernels.get(key)
    if k is None:
        mod = load_module("optim.cu", device_index)
        if extra is None:
            k = _kernels[key] = mod.function(name, "pqdpip")
        else:
            raw = mod.function(name, "p")  # only its CUfunction handle is used
            k = _kernels[key] = _MtKernel(f"optim.cu:{name}", raw.ptr, extra, raw)
    return k


def _launch_all(device_index: int, base: str, extra: str, items_by_dtype, *args) -> None:
    with cupy.cuda.Device(device_index):
        stream = _get_stream(device_index).ptr
        for np_dtype, items in items_by_dtype.items():
            k = _kernel(device_index, f"{base}_{_SUFFIX[np.dtype(np_dtype)]}", extra)
            for i in range(0, len(items), MT_MAX):
                k(stream, items[i:i + MT_MAX], *args)


def _by_dtype(items):
    """``{param dtype: [(p_ptr, g_ptr, s0, s1, s2, n, row)]}`` from ``(p, g, s0, s1, s2, row)``
    arrays (state arrays may be None); empty tensors are left out."""
    out: dict = {}
    for p, g, s0, s1, s2, row in items:
        if p.size == 0:
            continue
        out.setdefault(p.dtype, []).append((
            p.data.ptr, g.data.ptr, 0 if s0 is None else s0.data.ptr,
            0 if s1 is None else s1.data.ptr, 0 if s2 is None else s2.data.ptr, p.size, row))
    return out


def adam_step(device_index: int, items, hyper: HyperBuffer, decoupled: bool) -> None:
    """Adam/AdamW update of ``items``: ``(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq or
    None, row)`` with C-contiguous CuPy arrays (grad in the param's dtype, state in
    :func:`state_dtype`), reading row ``row`` of ``hyper`` (see ``kernels/optim.cu``)."""
    _launch_all(device_index, "st_adam_mt", "pi", _by_dtype(items), hyper.ptr, int(decoupled))


def sgd_step(device_index: int, items, hyper: HyperBuffer) -> None:
    """SGD update of ``items``: ``(param, grad, momentum_buffer or None, None, None, row)``."""
    _launch_all(device_index, "st_sgd_mt", "p", _by_dtype(items), hyper.ptr)


def clip_grad_norm(device_index: int, grads, max_norm: float, out_f64: bool):
    """Scale C-contiguous CuPy ``grads`` in place so their global L2 norm is at most
    ``max_norm``; returns the norm (before clipping) as a 0-d CuPy array. No host sync: the
    norm and the scale factor stay on the device. Three kernels per dtype group at most:
    sums of squares per block, one deterministic finalize block, the in-place scale."""
    by_dtype: dict = {}
    total_blocks = 0
    for g in grads:
        if g.size:
            by_dtype.setdefault(g.dtype, []).append((g.data.ptr, 0, 0, 0, 0, g.size, 0))
            total_blocks += (g.size + CHUNK - 1) // CHUNK
    out_dtype = np.float64 if out_f64 else np.float32
    with cupy.cuda.Device(device_index):
        if total_blocks == 0:
            return cupy.zeros((), dtype=out_dtype)
        norm = cupy.empty((), dtype=out_dtype)
        partials = cupy.empty(total_blocks, dtype=np.float64)
        coef = cupy.empty(1, dtype=np.float64)
        stream = _get_stream(device_index).ptr
        offset = 0
        for np_dtype, items in by_dtype.items():
            k = _kernel(device_index, f"st_sumsq_mt_{_SUFFIX[np.dtype(np_dtype)]}", "p")
            for i in range(0, len(items), MT_MAX):
                offset += k(stream, items[i:i + MT_MAX], partials.data.ptr + 8 * offset)
        fin = _kernel(device_index, "st_clip_finalize", None)
        fin(1, THREADS, stream, partials.data.ptr, total_blocks, float(max_norm),
            norm.data.ptr, int(out_f64), coef.data.ptr)
    _launch_all(device_index, "st_scale_mt", "p", by_dtype, coef.data.ptr)
    return norm
