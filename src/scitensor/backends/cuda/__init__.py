"""The CUDA backend: CuPy arrays as buffers, our NVRTC-compiled kernels and cuBLASLt.

Importing this package imports nothing heavy; :mod:`.backend` (which imports CuPy) loads
when a CUDA device is first used. Modules:

- ``backend``: :class:`CudaBackend`, the backend interface on one GPU;
- ``elementwise`` / ``launch`` / ``compiler``: low-overhead kernels from ``kernels/*.cu``;
- ``cublaslt``: GEMMs through ``nvmath.bindings.cublasLt``;
- ``memory``: the stream-ordered pool and out-of-memory errors;
- ``errors``: exceptions (importable without CuPy).
"""

from __future__ import annotations

from .errors import CudaError, CudaOutOfMemoryError, KernelCompileError, KernelLaunchError

__all__ = ["CudaError", "CudaOutOfMemoryError", "KernelCompileError", "KernelLaunchError"]
