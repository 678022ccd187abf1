"""Exceptions raised by the CUDA backend (importable without CuPy), and the report of a queued
GPU operation that failed (:func:`queued_failure`)."""

from __future__ import annotations

import os
import sys

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


# where ops are defined, and the functions there that are not ops (they wait for the GPU on
# an op's behalf)
_OP_FILES = (os.path.join("scitensor", "ops", ""), os.path.join("scitensor", "nn", "functional.py"))
_NOT_OPS = frozenset({"sync_if_requested", "host_min_max", "checks_values", "wrapper"})


def _waiting_op() -> str | None:
    """The innermost scitensor op on the calling stack (the op that asked for the wait), or
    None when the wait came from outside the ops (``numpy()``, ``st.gpu.synchronize()``)."""
    f = sys._getframe(2)
    while f is not None:
        code = f.f_code
        if code.co_name[0] != "_" and code.co_name not in _NOT_OPS \
                and any(p in code.co_filename for p in _OP_FILES):
            return code.co_name
        f = f.f_back
    return None


def op_name(record) -> str | None:
    """The op's name from a ``scitensor.ops._core.LAST_OP`` entry: a name, or the code object
    of the function that dispatched the op (a nested ``pullback`` reads as its op's backward).

    Example:
        >>> from scitensor.backends.cuda.errors import op_name
        >>> def exp(): pass
        >>> op_name(exp.__code__), op_name("matmul"), op_name(None)
        ('exp', 'matmul', None)
    """
    if record is None or isinstance(record, str):
        return record
    name = record.co_name
    if name in ("pullback", "<lambda>"):
        parts = record.co_qualname.split(".<locals>.")
        if len(parts) > 1:  # the function it is defined in
            outer = parts[-2].lstrip("_")
            return f"{outer} (backward)" if name == "pullback" else outer
    return name


def queued_failure(device, error: BaseException) -> CudaError:
    """The :class:`CudaError` for a queued GPU operation that failed, found when the host
    waited for ``device`` (a synchronization or a device-to-host copy).

    In sync-every-op mode every op waits for its own kernels, so the op that waited is the one
    that failed and the message names it (``failed (after op 'exp')``). In asynchronous mode
    the failure surfaces at a later wait: the message names the last op enqueued on the device
    before it (the failing kernel ran in that op or an earlier one) and says how to find the
    op exactly.

    Args:
        device: the device (``cuda:N``) whose queued work failed.
        error: the CUDA runtime error that reported it.

    Returns:
        A CudaError to raise (``raise queued_failure(dev, e) from e``).

    Example:
        >>> import scitensor as st
        >>> from scitensor.backends.cuda.errors import queued_failure
        >>> e = queued_failure(st.Device("cuda:0"), RuntimeError("illegal address"))
        >>> "illegal address" in str(e) and "set_sync_mode(True)" in str(e)
        True
    """
    from ...ops._core import LAST_OP
    from ...runtime import SYNC_EVERY_OP

    waiting = _waiting_op()
    if waiting is not None and SYNC_EVERY_OP[0]:
        return CudaError(f"a queued GPU operation on {device} failed (after op {waiting!r}): "
                         f"{error}. Sync mode is on, so each op waits for its own kernels: the "
                         "failing kernel is this op's (or from work queued since the last op "
                         "outside any op, such as tensor creation or an optimizer step)")
    where = "" if waiting is None else f" in op {waiting!r}, which waited for the GPU"
    last = op_name(LAST_OP.get(getattr(device, "index", None)))
    before = (f"the last op enqueued on {device} before it was {last!r} (the failing kernel "
              "ran in it or earlier, or in work outside the ops such as tensor creation or an "
              "optimizer step)" if last is not None else
              f"no scitensor op had been enqueued on {device} before it")
    return CudaError(f"a queued GPU operation on {device} failed: {error}. It was raised at "
                     f"synchronization{where}; {before}. Run with st.set_sync_mode(True) to "
                     "name the op that caused it exactly")
