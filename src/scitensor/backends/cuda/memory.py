"""GPU memory: the pools CUDA allocations come from, and out-of-memory errors.

Two pools, chosen by measurement (H100 machine, ``benchmarks/gpu_overhead.py``): creating a
small CuPy array costs 1.8 µs of host time from CuPy's caching pool (a stream-aware free
list, no driver call) but 3.3 µs from the stream-ordered :class:`cupy.cuda.MemoryAsyncPool`
(``cudaMallocFromPoolAsync`` and ``cudaFreeAsync`` per array). So eager work uses CuPy's pool,
and :func:`capture_allocator` switches the calling thread to the stream-ordered pool while a
CUDA graph is captured: there every allocation becomes a memory node the graph owns, which
is what capture needs. The stream-ordered pool keeps freed memory (release threshold =
unlimited), so its steady-state allocations never reach the driver's page allocator.

``SCITENSOR_CUDA_POOL=async`` makes the stream-ordered pool the allocator everywhere.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading

import cupy

from .errors import CudaOutOfMemoryError, format_bytes

__all__ = ["async_pool", "capture_allocator", "empty_cache", "install_pool", "is_oom",
           "oom_error", "pool_kind"]

_state = {"pool": None, "kind": None, "async": None}
_lock = threading.Lock()
_UINT64_MAX = (1 << 64) - 1
_CUDA_ERROR_MEMORY_ALLOCATION = 2


def install_pool(device_id: int):
    """Make the process-wide CuPy allocator our pool (once); returns it."""
    with _lock:
        if _state["pool"] is None:
            kind = os.environ.get("SCITENSOR_CUDA_POOL", "cupy").lower()
            pool = async_pool(device_id) if kind == "async" else None
            if pool is None:
                kind, pool = "cupy", cupy.get_default_memory_pool()
            cupy.cuda.set_allocator(pool.malloc)
            _state["pool"], _state["kind"] = pool, kind
        return _state["pool"]


def async_pool(device_id: int):
    """The stream-ordered pool (created once), or ``None`` where the platform has none."""
    pool = _state["async"]
    if pool is None:
        try:
            pool = _state["async"] = cupy.cuda.MemoryAsyncPool()
        except Exception:  # no stream-ordered allocator on this platform
            return None
    with contextlib.suppress(Exception):  # keeping memory cached is an optimisation only
        rt = cupy.cuda.runtime
        handle = rt.deviceGetMemPool(device_id)
        rt.memPoolSetAttribute(handle, rt.cudaMemPoolAttrReleaseThreshold, _UINT64_MAX)
    return pool


@contextlib.contextmanager
def capture_allocator(device_id: int):
    """Allocate from the stream-ordered pool in this thread (for CUDA graph capture)."""
    pool = async_pool(device_id)
    if pool is None:
        raise RuntimeError("CUDA graph capture needs the stream-ordered allocator "
                           "(cudaMallocAsync), which this platform does not provide")
    with cupy.cuda.using_allocator(pool.malloc):
        yield pool


def pool_kind() -> str | None:
    """``"async"`` (stream-ordered, capturable), ``"cupy"``, or ``None`` before first use."""
    return _state["kind"]


def empty_cache() -> None:
    """Return cached, unused blocks of both pools to the driver."""
    for pool in {id(p): p for p in (_state["pool"], _state["async"]) if p is not None}.values():
        with contextlib.suppress(Exception):
            pool.free_all_blocks()


def is_oom(e: BaseException) -> bool:
    """Whether ``e`` is an out-of-memory failure of CuPy or the CUDA runtime."""
    if isinstance(e, CudaOutOfMemoryError | cupy.cuda.memory.OutOfMemoryError):
        return True
    if isinstance(e, cupy.cuda.runtime.CUDARuntimeError):
        return getattr(e, "status", None) == _CUDA_ERROR_MEMORY_ALLOCATION
    return isinstance(e, MemoryError)


def _requested_bytes(e: BaseException) -> int | None:
    m = re.search(r"allocating ([\d,]+) bytes", str(e))
    return int(m.group(1).replace(",", "")) if m else None


def oom_error(e: BaseException, device, op: str, requested: int | None = None,
              detail: str = "") -> CudaOutOfMemoryError:
    """A :class:`CudaOutOfMemoryError` naming the op, the size and the device's free memory."""
    if isinstance(e, CudaOutOfMemoryError):
        return e
    size = requested if requested is not None else _requested_bytes(e)
    what = format_bytes(size) if size is not None else "memory"
    try:
        free, total = cupy.cuda.runtime.memGetInfo()
        mem = f"{format_bytes(free)} free of {format_bytes(total)}"
    except Exception:
        mem = "free memory unknown"
    if size is not None:
        what = f"{what} ({size} bytes)"
    return CudaOutOfMemoryError(
        f"CUDA out of memory on {device}: {op}{detail} could not allocate {what} ({mem}). "
        "Existing tensors are intact. Free tensors you no longer need (del x), use smaller "
        "batches, or move work to the CPU", requested=size, device=str(device))
