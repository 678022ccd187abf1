"""Reproducible scatter-adds for deterministic mode: a sorted segmented sum (``kernels/
segment_sum.cu``).

``cupy.add.at`` adds repeated indices with atomics, so float sums round differently from run
to run. With ``st.set_deterministic(True)`` the CUDA backend's ``add_at``, ``index_add`` and
``scatter_add`` (and the k-means fallback) come here instead (see ``compat.py``):

1. every addend gets the flat destination of its row: for a key of adjacent integer arrays
   among full slices (``x[idx]``, ``x[:, idx]``, ``x[i, j]``, ``index_add``) the index (the
   arrays' flat index into the axes they take), with the destination viewed as
   ``(pre, K, post)`` and the addends as ``(pre, n, post)``; ``scatter_add`` computes the
   linear index of every addend; any other key (ints, strided slices, bool masks) takes it
   from ``arange(a.size).reshape(a.shape)[key]`` (``pre = post = 1``, int64 of ``a``'s
   size);
2. a stable LSD radix sort of (destination, position), 4 bits a pass, written without atomics
   (``cupy.argsort`` is stable too, but Thrust waits for the GPU at its end, which a CUDA
   graph capture cannot do);
3. the addends of each destination summed in sorted (= index) order, in float32 for
   float16/bfloat16/float32 and float64 for float64, starting from the destination's value,
   so a destination whose addends fall in one chunk gets exactly NumPy's ``add.at`` rounding
   in float32/float64; runs longer than a chunk are summed chunk by chunk, then the chunk
   sums in order.

Every step is a kernel on the current stream (no host sync: capturable by ``st.jit``); the
launch shapes and the chunking come from the sizes only, so the bits are the same on every
run and on every GPU. Integer and bool dtypes never come here (their atomic sums are exact).
Indices outside ``[-K, K)`` are dropped (CuPy's ``add.at`` would wrap them).

Device plumbing goes through ``_seg_*`` methods so a test can run this exact host code on
NumPy arrays with the kernels compiled for the host (``tests/backends/
test_segment_sum_kernel.py``).
"""

from __future__ import annotations

import math

import numpy as np

from ... import dtypes as dt

__all__ = ["DTYPE_CODE", "SegmentSumPrimitives", "chunk_size", "row_form", "sort_passes"]

DTYPE_CODE = {np.dtype(np.float16): 0, dt.bfloat16.np: 1, np.dtype(np.float32): 2,
              np.dtype(np.float64): 3}
RADIX_BITS = 4          # SEG_RADIX_BITS in segment_sum.cu
RADIX = 1 << RADIX_BITS
RADIX_IPT = 8           # SEG_IPT: items per thread of the radix kernels
RADIX_THREADS = 256     # SEG_MAX_THREADS is the most the kernels take
SUM_THREADS = 256
TARGET_THREADS = 1 << 16  # the chunking aims at this many summing threads
MIN_CHUNK, MAX_CHUNK = 16, 1024
_I64 = np.dtype(np.int64)


def sort_passes(k: int) -> int:
    """Radix passes that sort keys in ``[0, k]`` (``k`` marks a dropped index).

    Example:
        >>> [sort_passes(k) for k in (1, 8, 15, 16, 1000, 1 << 20)]
        [1, 1, 1, 2, 3, 6]
    """
    return -(-int(k).bit_length() // RADIX_BITS)


def chunk_size(n: int, pre: int, post: int) -> int:
    """Sorted items one summing thread walks: a power of two in ``[16, 1024]`` that gives
    about :data:`TARGET_THREADS` threads (``pre * post`` columns times ``n / chunk`` chunks).

    Example:
        >>> chunk_size(4096, 1, 16), chunk_size(16384, 1, 1024), chunk_size(10, 1, 1)
        (16, 256, 16)
    """
    want = -(-(n * pre * post) // TARGET_THREADS)
    chunk = MIN_CHUNK
    while chunk < want and chunk < MAX_CHUNK:
        chunk *= 2
    return chunk


def _full_slice(k) -> bool:
    return isinstance(k, slice) and k.start is None and k.stop is None and k.step is None


def _int_array(k) -> bool:
    kind = getattr(getattr(k, "dtype", None), "kind", None)
    return kind in ("i", "u") and hasattr(k, "shape")


def row_form(shape, key):
    """``(axis, arrays)`` when ``key`` is integer arrays at adjacent positions from ``axis``
    among full slices (``a[idx]``, ``a[:, idx]``, ``a[i, j]``, ``a[:, i, j, :]``), else None.
    NumPy then puts the arrays' broadcast shape in place of the axes they index.

    Example:
        >>> import numpy as np
        >>> i = np.array([1, 0])
        >>> row_form((3, 4), (i,))[0], row_form((3, 4), (slice(None), i))[0]
        (0, 1)
        >>> len(row_form((3, 4), (i, i))[1])
        2
        >>> row_form((3, 4), (0, i)) is None, row_form((3, 4, 5), (i, slice(None), i)) is None
        (True, True)
    """
    if not isinstance(key, tuple) or len(key) > len(shape):
        return None
    arrays = [i for i, k in enumerate(key) if _int_array(k)]
    if not arrays or arrays[-1] - arrays[0] + 1 != len(arrays):
        return None
    if not all(_full_slice(k) for i, k in enumerate(key) if i not in arrays):
        return None
    return arrays[0], [key[i] for i in arrays]


class SegmentSumPrimitives:
    """Mixin: reproducible ``add_at``/``index_add``/``scatter_add`` for floating arrays (see
    module docs). The CUDA backend's ``compat`` mixin calls them in deterministic mode."""

    _seg_modules: dict = {}  # (dtype code, device id) -> LoadedModule
    _seg_radix_threads = RADIX_THREADS

    # ---- device plumbing (overridden by the host emulation in the tests) ----------------------
    def _seg_kernel(self, name: str, signature: str, code: int):
        key = (code, self.index)
        mod = self._seg_modules.get(key)
        if mod is None:
            from .compiler import load_module

            mod = self._seg_modules[key] = load_module("segment_sum.cu", self.index, self.arch,
                                                       options=(f"-DST_DTYPE={code}",))
        return mod.function(name, signature)

    def _seg_ptr(self, a) -> int:
        return a.data.ptr

    def _seg_stream(self) -> int:
        import cupy

        return cupy.cuda.get_current_stream().ptr

    def _seg_new(self, shape, np_dtype):
        """A fresh array (NaN/0xFF-poisoned in the tests)."""
        return self._ew._new(shape, np.dtype(np_dtype))

    def _seg_launch(self, name, signature, code, blocks, threads, *args):
        self._seg_kernel(name, signature, code)(blocks, threads, self._seg_stream(), *args)

    def _seg_grid(self, total: int) -> int:
        """Blocks for a grid-stride loop over ``total`` items (any count gives the same bits)."""
        return max(1, min(-(-total // SUM_THREADS), self.sm_count * 32))

    def _seg_sort(self, index, k: int, code: int):
        """``(keys, pos)``: the flattened ``index`` (negatives wrapped, outside ``[-k, k)``
        replaced by ``k``) sorted stably, and the original position of each key."""
        n = int(math.prod(index.shape))
        idx = self.ascontiguous(self.astype(self.reshape(index, (n,)), dt.int64))
        keys, pos = self._seg_new((n,), _I64), self._seg_new((n,), _I64)
        keys2, pos2 = self._seg_new((n,), _I64), self._seg_new((n,), _I64)
        self._seg_launch("st_seg_prep", "pppqq", code, self._seg_grid(n), SUM_THREADS,
                         self._seg_ptr(idx), self._seg_ptr(keys), self._seg_ptr(pos), n, k)
        threads = self._seg_radix_threads
        blocks = -(-n // (threads * RADIX_IPT))
        hist = self._seg_new((RADIX * blocks,), _I64)
        for p in range(sort_passes(k)):
            shift = RADIX_BITS * p
            self._seg_launch("st_seg_radix_count", "ppqi", code, blocks, threads,
                             self._seg_ptr(keys), self._seg_ptr(hist), n, shift)
            self._seg_launch("st_seg_radix_scan", "pq", code, 1, threads, self._seg_ptr(hist),
                             RADIX * blocks)
            self._seg_launch("st_seg_radix_scatter", "pppppqi", code, blocks, threads,
                             self._seg_ptr(keys), self._seg_ptr(pos), self._seg_ptr(keys2),
                             self._seg_ptr(pos2), self._seg_ptr(hist), n, shift)
            keys, keys2, pos, pos2 = keys2, keys, pos2, pos
        return keys, pos

    # ---- the segmented sum ---------------------------------------------------------------------
    def segment_add(self, out, index, vals, pre: int, k: int, post: int) -> None:
        """``out[p, index[j], q] += vals[p, j, q]`` in place, reproducibly.

        Args:
            out: C-contiguous floating array (a dtype of :data:`DTYPE_CODE`) of
                ``pre * k * post`` elements, viewed as ``(pre, k, post)``.
            index: ``n`` integers (any shape, flattened); negative ones count from the end,
                ones outside ``[-k, k)`` are dropped.
            vals: C-contiguous array of ``out``'s dtype with ``pre * n * post`` elements.
            pre, k, post: the view of ``out``.
        """
        n = int(math.prod(index.shape))
        if n == 0 or pre * post == 0 or k == 0:
            return
        code = DTYPE_CODE[out.dtype]
        keys, pos = self._seg_sort(index, k, code)
        chunk = chunk_size(n, pre, post)
        nchunks = -(-n // chunk)
        acc = np.float64 if out.dtype == np.float64 else np.float32
        head = self._seg_new((pre * nchunks * post,), acc)
        tail = self._seg_new((pre * nchunks * post,), acc)
        self._seg_launch("st_seg_sum_chunks", "ppppppqqqqqq", code,
                         self._seg_grid(pre * nchunks * post), SUM_THREADS,
                         self._seg_ptr(out), self._seg_ptr(vals), self._seg_ptr(keys),
                         self._seg_ptr(pos), self._seg_ptr(head), self._seg_ptr(tail), n, k,
                         pre, post, chunk, nchunks)
        if nchunks > 1:
            self._seg_launch("st_seg_sum_merge", "ppppqqqqqq", code,
                             self._seg_grid(pre * (nchunks - 1) * post), SUM_THREADS,
                             self._seg_ptr(out), self._seg_ptr(keys), self._seg_ptr(head),
                             self._seg_ptr(tail), n, k, pre, post, chunk, nchunks)

    def _seg_values(self, values, shape, np_dtype):
        """``values`` broadcast to ``shape`` as a C-contiguous array of ``np_dtype``."""
        xp = self.xp
        dtype = dt.from_numpy_dtype(np_dtype)
        if not isinstance(values, xp.ndarray):  # a Python or NumPy scalar
            v = float(values) if isinstance(values, np.generic) else values
            return self.full(tuple(shape), v, dtype)
        if values.dtype != np_dtype:
            values = self.astype(values, dtype)
        if tuple(values.shape) != tuple(shape):
            values = xp.broadcast_to(values, tuple(shape))
        if np_dtype.itemsize == 2:  # copy bits: copy kernels need not know bfloat16
            return xp.ascontiguousarray(values.view(np.uint16)).view(np_dtype)
        return xp.ascontiguousarray(values)

    def _seg_into(self, a, fn) -> None:
        """Run ``fn(work)`` on a C-contiguous ``work`` holding ``a`` and leave the result in
        ``a``."""
        if a.flags.c_contiguous:
            fn(a)
            return
        work = self.copy(a)
        fn(work)
        if a.dtype.itemsize == 2:
            a.view(np.uint16)[...] = work.view(np.uint16)
        else:
            a[...] = work

    # ---- the primitives --------------------------------------------------------------------
    def deterministic_add_at(self, a, key, values) -> None:
        """``a[key] += values`` with repeated indices accumulating, in place, reproducibly.

        Args:
            a: floating array (float16, bfloat16, float32, float64).
            key: a NumPy-style index (tuple or single entry).
            values: an array or scalar broadcastable to ``a[key]``'s shape (cast to ``a``'s
                dtype first).
        """
        if a.size == 0:
            return
        rows = row_form(a.shape, key if isinstance(key, tuple) else (key,))
        if rows is not None:
            axis, arrays = rows
            end = axis + len(arrays)
            pre, post = math.prod(a.shape[:axis]), math.prod(a.shape[end:])
            k = math.prod(a.shape[axis:end])
            idx = arrays[0] if len(arrays) == 1 else self._seg_ravel(arrays,
                                                                     a.shape[axis:end])
            shape = a.shape[:axis] + tuple(idx.shape) + a.shape[end:]
        else:  # any other key: the linear index of every addend
            idx = self.xp.arange(a.size, dtype=np.int64).reshape(a.shape)[key]
            pre, k, post, shape = 1, a.size, 1, idx.shape
        if math.prod(shape) == 0:
            return
        vals = self._seg_values(values, shape, a.dtype)
        self._seg_into(a, lambda w: self.segment_add(w, idx, vals, pre, k, post))

    def _seg_ravel(self, arrays, dims):
        """The flat index into the block ``dims`` of the broadcast integer ``arrays`` (one
        per dimension; negatives wrapped, any entry out of range makes it -1 - size: the
        kernels drop it)."""
        xp = self.xp
        flat, bad = None, None
        for arr, n in zip(arrays, dims):
            ix = self.astype(arr, dt.int64)
            out = (ix < -n) | (ix >= n)
            ix = xp.where(ix < 0, ix + n, ix)
            flat = ix if flat is None else flat * n + ix
            bad = out if bad is None else bad | out
        return xp.where(bad, -1 - math.prod(dims), flat)

    def deterministic_index_add(self, a, axis: int, index, src):
        """``index_add``: a copy of ``a`` with ``src`` slices added at ``index`` along
        ``axis`` (repeated indices accumulate), reproducibly."""
        out = self.copy(a)
        if out.size == 0:
            return out
        shape = a.shape[:axis] + (index.size,) + a.shape[axis + 1:]
        if math.prod(shape) == 0:
            return out
        vals = self._seg_values(src, shape, a.dtype)
        self.segment_add(out, index, vals, math.prod(a.shape[:axis]), a.shape[axis],
                         math.prod(a.shape[axis + 1:]))
        return out

    def deterministic_scatter_add(self, a, axis: int, index, src):
        """``scatter_add``: a copy of ``a`` with ``src[i]`` added at ``i`` with ``index[i]``
        in place of its ``axis`` coordinate, reproducibly."""
        xp = self.xp
        out = self.copy(a)
        if out.size == 0 or index.size == 0:
            return out
        n = a.shape[axis]
        strides = [math.prod(a.shape[d + 1:]) for d in range(a.ndim)]
        ix = self.astype(index, dt.int64)
        valid = (ix >= -n) & (ix < n)
        lin = xp.where(ix < 0, ix + n, ix) * strides[axis]
        for d, m in enumerate(index.shape):
            if d != axis:
                grid = xp.arange(m, dtype=np.int64) * strides[d]
                lin = lin + grid.reshape((1,) * d + (m,) + (1,) * (index.ndim - d - 1))
        lin = xp.where(valid, lin, -1 - a.size)  # wraps to -1 in the kernel: dropped
        vals = self._seg_values(src, index.shape, a.dtype)
        self.segment_add(out, lin, vals, 1, a.size, 1)
        return out
