"""Primitives where CuPy's result differs from NumPy's (the CPU backend's reference).

A mixin for :class:`~scitensor.backends.cuda.backend.CudaBackend`:

- ``where`` returns float32 for bfloat16 operands in CuPy: we restore NumPy's dtype;
- ``cumsum`` of float16/bfloat16 accumulates in float32 and rounds once;
- ``add_at`` (and ``index_add``/``scatter_add`` built on it): ``cupy.add.at`` has no bool or
  bfloat16, so those (and float16, for accuracy) go through int32/float32; CuPy's
  ``indices()`` has no ``sparse=``, so ``scatter_add`` builds its index grids itself.

``cupy.add.at`` accumulates with atomics, so floating sums over repeated indices round
differently from run to run. In deterministic mode (``runtime.DETERMINISTIC[0]``) floating
``add_at``, ``index_add`` and ``scatter_add`` run the sorted segmented sum of
:mod:`.segment_sum` instead (reproducible, capturable); integer and bool sums are exact in
any order and keep the atomic path. :attr:`NumpyCompatPrimitives.deterministic_primitives`
declares them, and ``matmul`` (cuBLASLt's algorithm is pinned in deterministic mode, see
:mod:`.cublaslt`), to ``runtime.is_reproducible``.
"""

from __future__ import annotations

import cupy
import numpy as np

from ... import dtypes as dt
from ...runtime import DETERMINISTIC
from ..xp import ArrayBackend
from .segment_sum import DTYPE_CODE as _SEGMENT_DTYPES
from .segment_sum import SegmentSumPrimitives

__all__ = ["NumpyCompatPrimitives"]

_ndarray = cupy.ndarray
_LOW = (np.dtype(np.float16), dt.bfloat16.np)


class NumpyCompatPrimitives(SegmentSumPrimitives, ArrayBackend):
    """Overrides that make CuPy follow NumPy, and reproducible scatter-adds in deterministic
    mode (see module docs)."""

    # primitives of runtime.NONDETERMINISTIC_PRIMITIVES (and matmul, whose cuBLASLt algorithm
    # would otherwise be autotuned by timing) that are reproducible in deterministic mode here
    deterministic_primitives = frozenset({"add_at", "index_add", "scatter_add", "matmul"})

    def where(self, cond, a, b):
        if _is_bf16(a) or _is_bf16(b):  # CuPy's where returns float32 for bfloat16
            want = np.where(True, _proto(a), _proto(b)).dtype
            out = super().where(cond, _f32(self, a), _f32(self, b))
            return self.astype(out, dt.from_numpy_dtype(want))
        return super().where(cond, a, b)

    def cumsum(self, a, axis):
        if a.dtype in _LOW:
            return self.astype(cupy.cumsum(self.astype(a, dt.float32), axis=axis),
                               dt.from_numpy_dtype(a.dtype))
        return super().cumsum(a, axis)

    def add_at(self, a, key, values):
        if DETERMINISTIC[0] and a.dtype in _SEGMENT_DTYPES:
            return self.deterministic_add_at(a, key, values)
        wide = _WIDE.get(a.dtype)
        if wide is None:
            return cupy.add.at(a, key, values)
        a_wide = self.astype(a, wide)
        if isinstance(values, _ndarray):
            values = self.astype(values, wide)
        cupy.add.at(a_wide, key, values)
        narrow = _narrow(self, a_wide, a.dtype)
        if a.dtype.itemsize == 2:  # copy bits: CuPy's copy kernels need not know bfloat16
            a.view(np.uint16)[...] = narrow.view(np.uint16)
        else:
            a[...] = narrow
        return None

    def index_add(self, a, axis, index, src):
        if DETERMINISTIC[0] and a.dtype in _SEGMENT_DTYPES:
            return self.deterministic_index_add(a, axis, index, src)
        out = self.copy(a)
        self.add_at(out, (slice(None),) * axis + (index,), src)
        return out

    def scatter_add(self, a, axis, index, src):
        if DETERMINISTIC[0] and a.dtype in _SEGMENT_DTYPES:
            return self.deterministic_scatter_add(a, axis, index, src)
        out = self.copy(a)
        grids = [cupy.arange(n).reshape((1,) * i + (n,) + (1,) * (index.ndim - i - 1))
                 for i, n in enumerate(index.shape)]
        grids[axis] = index
        self.add_at(out, tuple(grids), src)
        return out


_WIDE = {np.dtype(np.bool_): dt.int32, np.dtype(np.float16): dt.float32,
         dt.bfloat16.np: dt.float32}


def _narrow(backend, wide, np_dtype):
    if np_dtype == np.bool_:
        return wide != 0
    return backend.astype(wide, dt.from_numpy_dtype(np_dtype))


def _is_bf16(x) -> bool:
    return isinstance(x, _ndarray | np.generic) and x.dtype == dt.bfloat16.np


def _proto(x):
    """A NumPy stand-in with ``x``'s dtype for result-type rules (scalars stay as they are)."""
    return np.zeros((), x.dtype) if isinstance(x, _ndarray) else x


def _f32(backend, x):
    if isinstance(x, _ndarray) and x.dtype == dt.bfloat16.np:
        return backend.astype(x, dt.float32)
    if isinstance(x, np.generic) and x.dtype == dt.bfloat16.np:
        return np.float32(x)
    return x
