"""Launch geometry and kernel lookup for the row-wise kernels (layer/RMS norm, softmax,
cross-entropy): ``kernels/layer_norm.cu``, ``softmax.cu``, ``cross_entropy.cu``.

Every row kernel gives each row a *group* of ``tpr`` threads (a power of two up to 32, or a
multiple of 32) and packs ``rows_per_block`` groups in a block. Two families:

- register kernels (``*_v1``, ``*_v2``, ``*_v4``): each thread keeps ``VPT`` 16-byte vectors
  of its row in registers, so the row is read once; the row needs ``n % vec == 0``
  (``vec`` = 4 float32 or 8 float16/bfloat16 elements) and at most 512 threads;
- loop kernels: any ``n``; they stream the row (twice where a statistic comes first).

Example:
    >>> from scitensor.backends.cuda.row_kernels import pick_register, pick_stream
    >>> pick_register(4096, 4)     # float32 rows of 4096: 256 threads x 4 float4 each
    RowPlan(kernel='v4', tpr=256, rows_per_block=1)
    >>> pick_register(768, 8)      # bfloat16 rows of 768: 96 threads x one 8-element vector
    RowPlan(kernel='v1', tpr=96, rows_per_block=2)
    >>> pick_stream(32000, 4)
    RowPlan(kernel='loop', tpr=512, rows_per_block=1)
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from ... import dtypes as dt

__all__ = ["DTYPE_CODE", "RowKernels", "RowPlan", "pick_register", "pick_stream"]

# the row kernels' -DST_DTYPE codes (the same numbering as elementwise.cu)
DTYPE_CODE = {np.dtype(np.float16): 0, dt.bfloat16.np: 1, np.dtype(np.float32): 2}

_MAX_TPR = 512        # the kernels' __launch_bounds__
_BLOCK_TARGET = 256   # threads per block when several rows share one
_REG_TARGET_TPR = 128  # prefer fewer values per thread while the row needs <= this many


class RowPlan(NamedTuple):
    """How a row kernel is launched: kernel suffix, threads per row, rows per block."""

    kernel: str
    tpr: int
    rows_per_block: int

    @property
    def threads(self) -> int:
        return self.tpr * self.rows_per_block

    def blocks(self, rows: int) -> int:
        return (rows + self.rows_per_block - 1) // self.rows_per_block


def _group_size(units: int) -> int:
    """Threads for ``units`` work items: a power of two up to 32, else a multiple of 32."""
    if units <= 32:
        p = 1
        while p < units:
            p *= 2
        return p
    return (units + 31) // 32 * 32


def _plan(kernel: str, tpr: int) -> RowPlan:
    return RowPlan(kernel, tpr, max(1, _BLOCK_TARGET // tpr))


@functools.lru_cache(maxsize=256)
def pick_register(n: int, vec: int, max_values: int = 16) -> RowPlan | None:
    """Register-kernel plan for rows of ``n`` elements (``vec`` per 16-byte vector), or
    ``None`` when the row does not fit (then use :func:`pick_stream`).

    Picks the fewest vectors per thread (1, 2, 4) that keeps a row within 128 threads; past
    that, the most vectors per thread allowed (``max_values`` elements) and up to 512
    threads.
    """
    if n <= 0 or n % vec:
        return None
    nvec = n // vec
    vpts = [v for v in (1, 2, 4) if v * vec <= max_values] or [1]
    for vpt in vpts:
        need = -(-nvec // vpt)
        if need <= _REG_TARGET_TPR:
            return _plan(f"v{vpt}", _group_size(need))
    need = -(-nvec // vpts[-1])
    if need <= _MAX_TPR:
        return _plan(f"v{vpts[-1]}", _group_size(need))
    return None


@functools.lru_cache(maxsize=256)
def pick_stream(n: int, vec: int, kernel: str = "loop", per_thread: int = 8) -> RowPlan:
    """Loop-kernel plan: about ``per_thread`` vectors per thread, at most 512 threads a row."""
    units = max(1, -(-n // vec))
    return _plan(kernel, min(_MAX_TPR, _group_size(-(-units // per_thread))))


class RowKernels:
    """Per-device table of the row kernels, compiled per (source, dtype) on first use."""

    def __init__(self, device_id: int, arch: int, sm_count: int):
        self.device_id = device_id
        self.arch = arch
        self.sm_count = sm_count
        self._modules: dict = {}
        self._kernels: dict = {}
        self._occupancy: dict = {}

    def get(self, source: str, code: int, name: str, signature: str):
        """The kernel ``name`` of ``kernels/<source>`` compiled with ``-DST_DTYPE=code``."""
        key = (source, code, name)
        k = self._kernels.get(key)
        if k is None:
            from .compiler import load_module

            mod = self._modules.get((source, code))
            if mod is None:
                mod = self._modules[(source, code)] = load_module(
                    source, self.device_id, self.arch, options=(f"-DST_DTYPE={code}",))
            k = self._kernels[key] = mod.function(name, signature)
        return k

    def resident_blocks(self, kernel, threads: int) -> int:
        """Blocks of ``threads`` that fit on the whole GPU at once (for persistent grids)."""
        key = (kernel.ptr, threads)
        n = self._occupancy.get(key)
        if n is None:
            try:
                from cupy_backends.cuda.api import driver

                per_sm = driver.occupancyMaxActiveBlocksPerMultiprocessor(kernel.ptr, threads, 0)
            except Exception:  # the query is an optimisation: assume full occupancy
                per_sm = max(1, 2048 // threads)
            n = self._occupancy[key] = max(1, int(per_sm)) * self.sm_count
        return n
