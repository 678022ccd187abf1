"""``CudaGatherPrimitives``: ``a[ids]`` with one integer index array as a row-gather kernel.

A mixin for :class:`~scitensor.backends.cuda.backend.CudaBackend` (listed before
``ArrayBackend`` in its bases). ``getitem(a, (ids,))`` with a C-contiguous ``a`` and an
int32/int64 ``ids`` (an embedding lookup, ``x[idx]`` on a batch) runs ``st_gather_rows_*`` of
``kernels/gather.cu``: an output allocation and one launch, where CuPy's integer-array
indexing costs ~30 µs of host time. The kernel copies rows as raw words, so every dtype takes
it, and ids outside ``[0, len(a))`` wrap around exactly as CuPy's indexing wraps them. Every
other key goes to CuPy (``super().getitem``).

Example:
    >>> import scitensor as st                                          # doctest: +SKIP
    >>> table = st.randn(65, 384, device="cuda")                         # doctest: +SKIP
    >>> rows = table[st.tensor([[3, 1, 4]], device="cuda")]  # one gather launch  # doctest: +SKIP
"""

from __future__ import annotations

import cupy
import numpy as np

__all__ = ["CudaGatherPrimitives"]

_ndarray = cupy.ndarray
_get_stream = cupy.cuda.get_current_stream
_ID_SUFFIX = {np.dtype(np.int64): "i64", np.dtype(np.int32): "i32"}
_WORD_BYTES = (16, 8, 4, 2, 1)  # widest first
_THREADS = 256


class CudaGatherPrimitives:
    """Integer-array row indexing as one kernel (see module docs)."""

    def getitem(self, a, key):
        if type(key) is tuple and len(key) == 1:
            ids = key[0]
            if (type(ids) is _ndarray and ids.dtype in _ID_SUFFIX and type(a) is _ndarray
                    and a.ndim and a.shape[0] and a._c_contiguous):
                return self._gather_rows(a, ids)
        return super().getitem(a, key)

    def _gather_rows(self, a, ids):
        """``a[ids]`` (rows of ``a`` along axis 0) for a non-empty C-contiguous ``a``."""
        if not ids._c_contiguous:
            ids = cupy.ascontiguousarray(ids)
        out = self._ew._new(ids.shape + a.shape[1:], a.dtype)
        n_ids = ids.size
        n_rows = a.shape[0]
        row_bytes = a.nbytes // n_rows
        if n_ids and row_bytes:
            src, dst = a.data.ptr, out.data.ptr
            aligned = row_bytes | src | dst
            word = next(w for w in _WORD_BYTES if aligned % w == 0)
            row_words = row_bytes // word
            total = n_ids * row_words
            blocks = min(-(-total // _THREADS), self.sm_count * 16)
            k = self._gather_kernel(word, ids.dtype)
            k(blocks, _THREADS, _get_stream(self.index).ptr, src, ids.data.ptr, dst, n_ids,
              n_rows, row_words)
        return out

    def _gather_kernel(self, word: int, id_dtype):
        table = self.__dict__.get("_gather_kernels")
        if table is None:
            table = self._gather_kernels = {}
        key = (word, id_dtype)
        k = table.get(key)
        if k is None:
            from .compiler import load_module

            mod = load_module("gather.cu", self.index, self.arch)
            k = table[key] = mod.function(f"st_gather_rows_w{word}_{_ID_SUFFIX[id_dtype]}",
                                          "pppqqq")
        return k
