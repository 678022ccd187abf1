"""Backends: the CPU (NumPy) one always, the CUDA one when CuPy and a GPU are usable.

Nothing here imports CuPy or touches a GPU until a CUDA device is first used or probed.
"""

from __future__ import annotations

import functools

from .base import PRIMITIVES, Backend

__all__ = ["PRIMITIVES", "Backend", "backend_for", "cuda_device_count", "cuda_probe"]


def backend_for(device):
    """Create the backend object serving ``device`` (called once per device)."""
    if device.type == "cpu":
        from .cpu import CpuBackend

        return CpuBackend(device)
    ok, why = cuda_probe()
    if not ok:
        raise RuntimeError(f"device {device} is not usable: {why}. Use st.best_device() to fall "
                           "back to the CPU, or see `scitensor info`")
    if device.index >= cuda_device_count():
        raise RuntimeError(f"device {device} does not exist: this machine has "
                           f"{cuda_device_count()} CUDA device(s)")
    from .cuda.backend import CudaBackend

    return CudaBackend(device)


@functools.cache
def cuda_probe() -> tuple[bool, str]:
    """Whether a CUDA kernel launches here, and a human-readable reason. Cached."""
    try:
        import cupy
    except ImportError:
        return False, ("CuPy is not installed (pip install 'scitensor[cuda12]' or "
                       "'scitensor[cuda13]')")
    except Exception as e:  # a broken CuPy install must not break scitensor
        return False, f"CuPy failed to import: {type(e).__name__}: {e}"
    try:
        import cupy

        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:
        return False, f"no usable CUDA driver or device ({type(e).__name__}: {e})"
    if n == 0:
        return False, "the CUDA driver reports no devices"
    try:
        x = cupy.arange(4, dtype=cupy.float32)
        y = float((x * 2).sum())
        if y != 12.0:
            return False, f"a test kernel on cuda:0 returned {y} instead of 12.0"
    except Exception as e:
        return False, f"a test kernel failed to launch on cuda:0 ({type(e).__name__}: {e})"
    name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
    if isinstance(name, bytes):
        name = name.decode()
    return True, f"{n} CUDA device(s), cuda:0 is {name}"


def cuda_device_count() -> int:
    ok, _ = cuda_probe()
    if not ok:
        return 0
    import cupy

    return cupy.cuda.runtime.getDeviceCount()
