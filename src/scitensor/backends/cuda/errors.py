"""Exceptions raised by the CUDA backend (importable without CuPy)."""

from __future__ import annotations

__all__ = ["CudaError", "CudaOutOfMemoryError", "KernelCompileError", "KernelLaunchError"]


class CudaError(RuntimeError):
    """A CUDA operation failed (the message names the operation, shapes and dtypes)."""


class CudaOutOfMemoryError(MemoryError):
    """The GPU ran out of memory; existing tensors are intact and the process stays usable.

    Attributes:
        requested: the size in bytes of the allocation that failed (``None`` if unknown).
        device: the device name (``"cuda:0"``).
    """

    def __init__(self, message: str, requested: int | None = None, device: str = ""):
        super().__init__(message)
        self.requested = requested
        self.device = device


class KernelCompileError(RuntimeError):
    """NVRTC could not compile one of our kernel sources; the message holds the compiler log.

    Attributes:
        kernel: the source (file) name, e.g. ``"elementwise.cu"``.
        log: the compiler log.
    """

    def __init__(self, kernel: str, log: str, options=()):
        super().__init__(f"compiling CUDA kernel source {kernel!r} with options "
                         f"{list(options)} failed; NVRTC log:\n{log.strip()}")
        self.kernel = kernel
        self.log = log


class KernelLaunchError(CudaError):
    """A kernel launch was refused by the driver."""


def format_bytes(n: int) -> str:
    """``1536`` -> ``'1.50 KiB'``."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.2f} {unit}"
        size /= 1024
    return f"{n} B"
