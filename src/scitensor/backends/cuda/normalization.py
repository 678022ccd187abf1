"""``CudaNormalizationPrimitives``: layer/RMS norm, softmax and cross-entropy as single kernels.

A mixin for :class:`~scitensor.backends.cuda.backend.CudaBackend` (listed before
``ArrayBackend`` in its bases). It overrides the primitives of
:class:`~scitensor.backends.xp_normalization.NormalizationPrimitives` and ``softmax`` /
``log_softmax`` over the last axis with the kernels of ``kernels/layer_norm.cu``,
``softmax.cu`` and ``cross_entropy.cu`` (float32, float16, bfloat16; float32 math) and
defers to the CuPy reference (``super()``) for float64 and for other axes.

Kernel shapes and the byte floors they run against: ``docs/kernels/normalization.md``.
It uses the backend's ``index``, ``arch``, ``sm_count`` and ``_ew._new`` (output allocation,
NaN-poisoned in tests).

Example:
    >>> import scitensor as st                                         # doctest: +SKIP
    >>> x = st.randn(32768, 4096, device="cuda")                        # doctest: +SKIP
    >>> y = st.layer_norm(x, 4096)   # one kernel: st_norm_fwd_v4        # doctest: +SKIP
"""

from __future__ import annotations

import cupy
import numpy as np

from ..xp_normalization import NormalizationPrimitives
from .row_kernels import DTYPE_CODE, RowKernels, pick_register, pick_stream

__all__ = ["CudaNormalizationPrimitives"]

_F32 = np.dtype(np.float32)
_ROWS_PER_GROUP = 4  # layer-norm backward: fewest rows per group when partial sums are written
_I64 = np.dtype(np.int64)
# cross_entropy_reduce sums the rows in one block (one launch, where CuPy's sum, the count and
# the division took four): beyond this many rows the multi-block reductions of the xp path win
_CE_REDUCE_ROWS = 1 << 20
_ndarray = cupy.ndarray
_stream = cupy.cuda.get_current_stream
_NORM_FWD_SIG = "pppipppqiifi"
_NORM_BWD_SIG = "pppppippqiii"
_SM_SIG = "ppqiii"
_SM_BWD_SIG = "pppqiii"


def _aligned(a) -> bool:
    return a.data.ptr % 16 == 0


def _prep(a, dtype=None):
    """``a`` as a C-contiguous, 16-byte aligned array (of ``dtype`` when given)."""
    if dtype is not None and a.dtype != dtype:
        a = a.astype(dtype)
    contiguous = getattr(a, "_c_contiguous", None)  # CuPy's cheap flag; .flags builds an object
    if contiguous is None:
        contiguous = a.flags.c_contiguous
    if not contiguous or not _aligned(a):
        a = cupy.array(a, copy=True, order="C")
    return a


def _contig(a, dtype):
    """``a`` as a C-contiguous array of ``dtype`` (for arrays the kernels read per element)."""
    if a.dtype != dtype:
        a = a.astype(dtype)
    contiguous = getattr(a, "_c_contiguous", None)
    if contiguous is None:
        contiguous = a.flags.c_contiguous
    return a if contiguous else cupy.array(a, copy=True, order="C")


def _ptr(a) -> int:
    return 0 if a is None else a.data.ptr


class CudaNormalizationPrimitives(NormalizationPrimitives):
    """Fused row kernels for the normalization primitives (see module docs)."""

    # ---- plumbing ------------------------------------------------------------------------------
    def _rows(self) -> RowKernels:
        k = self.__dict__.get("_row_kernels")
        if k is None:
            k = self._row_kernels = RowKernels(self.index, self.arch, self.sm_count)
        return k

    def _new(self, shape, np_dtype):
        ew = getattr(self, "_ew", None)
        return ew._new(shape, np_dtype) if ew is not None else _ndarray(shape, np_dtype)

    def _params(self, x_dtype, *params):
        """Weight/bias as one kind: all of ``x_dtype`` (flag 0) or all float32 (flag 1)."""
        pf32 = 0
        for p in params:
            if p is not None and p.dtype != x_dtype:
                pf32 = 1
        want = _F32 if pf32 else x_dtype
        return [None if p is None else _prep(p, want) for p in params], pf32

    # ---- layer norm and RMS norm -----------------------------------------------------------------
    # The kernels see rows of n contiguous elements, so arrays of any rank are used as they
    # are: no reshapes in (x, g, the statistics) or out (y, dx), each a CuPy call.
    def _norm_forward(self, x, weight, bias, eps, rms):
        n = x.shape[-1]
        rows = x.size // n
        x2 = _prep(x)
        (w, b), pf32 = self._params(x.dtype, weight, bias)
        y = self._new(x.shape, x.dtype)
        # one allocation for rstd (and mean), each of shape x.shape[:-1]
        stats = self._new((1 if rms else 2, *x.shape[:-1]), _F32)
        rstd, mean = stats[0], None if rms else stats[1]
        vec = 16 // x.dtype.itemsize
        # 16-bit rows may hold 32 values a thread (v4): 64 bytes in flight, as float32's v4
        plan = pick_register(n, vec, max_values=16 if vec == 4 else 32) or pick_stream(
            n, vec if n % vec == 0 else 1, "loop" if n % vec == 0 else "loop1")
        k = self._rows().get("layer_norm.cu", DTYPE_CODE[x.dtype], "st_norm_fwd_" + plan.kernel,
                             _NORM_FWD_SIG)
        k(plan.blocks(rows), plan.threads, _stream().ptr, x2.data.ptr, _ptr(w), _ptr(b), pf32,
          y.data.ptr, _ptr(mean), rstd.data.ptr, rows, n, plan.tpr, float(eps), int(rms))
        return y, mean, rstd

    def _norm_backward(self, g, x, mean, rstd, weight, need_param_grads, rms):
        n = x.shape[-1]
        rows = x.size // n
        x2 = _prep(x)
        g2 = _prep(g, x.dtype)  # shaped like x, or any array of its rows
        (w,), pf32 = self._params(x.dtype, weight)
        mean = None if rms else _contig(mean, _F32)
        rstd = _contig(rstd, _F32)
        dx = self._new(x.shape, x.dtype)
        vec = 16 // x.dtype.itemsize
        plan = pick_register(n, vec)
        if plan is None:
            plan = pick_stream(n, vec if n % vec == 0 else 1, "loop" if n % vec == 0 else "loop1")
        elif plan.threads <= 256:  # column sums in shared memory: more rows in flight
            plan = plan._replace(kernel="s" + plan.kernel[1:])
        rk = self._rows()
        k = rk.get("layer_norm.cu", DTYPE_CODE[x.dtype], "st_norm_bwd_" + plan.kernel,
                   _NORM_BWD_SIG)
        blocks = min(plan.blocks(rows), rk.resident_blocks(k, plan.threads))
        if need_param_grads:
            # Every group writes a partial row of column sums that st_norm_param_reduce (only
            # n/32 blocks per set) reads back: with few rows per group (4096 x 768 gave ~1.5)
            # that traffic rivals the data's. At least _ROWS_PER_GROUP rows each, while
            # keeping every SM busy.
            blocks = min(blocks, max(self.sm_count, -(-rows // (
                _ROWS_PER_GROUP * plan.rows_per_block))))
        sets = 1 if rms else 2
        part = None
        if need_param_grads:
            part = cupy.empty((sets, blocks * plan.rows_per_block, n), dtype=_F32)
        k(blocks, plan.threads, _stream().ptr, g2.data.ptr, x2.data.ptr, _ptr(mean),
          rstd.data.ptr, _ptr(w), pf32, dx.data.ptr, _ptr(part), rows, n, plan.tpr, int(rms))
        if not need_param_grads:
            return dx, None, None
        out = self._new((sets, n), _F32)
        red = rk.get("layer_norm.cu", DTYPE_CODE[x.dtype], "st_norm_param_reduce", "ppii")
        red(sets * ((n + 31) // 32), 256, _stream().ptr, part.data.ptr, out.data.ptr,
            part.shape[1], n)
        return dx, out[0], None if rms else out[1]

    @staticmethod
    def _norm_ok(x) -> bool:
        return isinstance(x, _ndarray) and x.dtype in DTYPE_CODE and x.ndim >= 1 and \
            x.size > 0

    def layer_norm_forward(self, x, weight, bias, eps):
        if not self._norm_ok(x):
            return super().layer_norm_forward(x, weight, bias, eps)
        return self._norm_forward(x, weight, bias, eps, rms=False)

    def layer_norm_backward(self, g, x, mean, rstd, weight, need_param_grads=True):
        if not self._norm_ok(x):
            return super().layer_norm_backward(g, x, mean, rstd, weight, need_param_grads)
        return self._norm_backward(g, x, mean, rstd, weight, need_param_grads, rms=False)

    def rms_norm_forward(self, x, weight, eps):
        if not self._norm_ok(x):
            return super().rms_norm_forward(x, weight, eps)
        y, _, rstd = self._norm_forward(x, weight, None, eps, rms=True)
        return y, rstd

    def rms_norm_backward(self, g, x, rstd, weight, need_param_grads=True):
        if not self._norm_ok(x):
            return super().rms_norm_backward(g, x, rstd, weight, need_param_grads)
        dx, dw, _ = self._norm_backward(g, x, None, rstd, weight, need_param_grads, rms=True)
        return dx, dw

    # ---- softmax and log-softmax over the last axis ---------------------------------------
    def _softmax_ok(self, a, axis) -> bool:
        return self._norm_ok(a) and axis in (-1, a.ndim - 1)

    def _softmax_plan(self, n, itemsize):
        vec = 16 // itemsize
        return pick_register(n, vec) or pick_stream(n, vec)

    def _softmax_forward(self, a, log):
        n = a.shape[-1]
        rows = a.size // n
        x2 = _prep(a.reshape(rows, n))
        y = self._new(x2.shape, a.dtype)
        plan = self._softmax_plan(n, a.dtype.itemsize)
        k = self._rows().get("softmax.cu", DTYPE_CODE[a.dtype], "st_softmax_fwd_" + plan.kernel,
                             _SM_SIG)
        k(plan.blocks(rows), plan.threads, _stream().ptr, x2.data.ptr, y.data.ptr, rows, n,
          plan.tpr, int(log))
        return y.reshape(a.shape)

    def _softmax_backward(self, g, y, log):
        n = y.shape[-1]
        rows = y.size // n
        y2 = _prep(y.reshape(rows, n))
        g2 = _prep(g.reshape(rows, n), y.dtype)
        dx = self._new(y2.shape, y.dtype)
        plan = self._softmax_plan(n, y.dtype.itemsize)
        k = self._rows().get("softmax.cu", DTYPE_CODE[y.dtype], "st_softmax_bwd_" + plan.kernel,
                             _SM_BWD_SIG)
        k(plan.blocks(rows), plan.threads, _stream().ptr, g2.data.ptr, y2.data.ptr,
          dx.data.ptr, rows, n, plan.tpr, int(log))
        return dx.reshape(y.shape)

    def softmax(self, a, axis):
        if not self._softmax_ok(a, axis):
            return super().softmax(a, axis)
        return self._softmax_forward(a, log=False)

    def log_softmax(self, a, axis):
        if not self._softmax_ok(a, axis):
            return super().log_softmax(a, axis)
        return self._softmax_forward(a, log=True)

    def softmax_backward(self, g, y, axis):
        if not self._softmax_ok(y, axis):
            return super().softmax_backward(g, y, axis)
        return self._softmax_backward(g, y, log=False)

    def log_softmax_backward(self, g, y, axis):
        if not self._softmax_ok(y, axis):
            return super().log_softmax_backward(g, y, axis)
        return self._softmax_backward(g, y, log=True)

    # ---- softmax cross-entropy ------------------------------------------------------------------
    def cross_entropy_forward(self, logits, labels, ignore_index, label_smoothing):
        if not (self._norm_ok(logits) and logits.ndim == 2):
            return super().cross_entropy_forward(logits, labels, ignore_index, label_smoothing)
        rows, c = logits.shape
        x = _prep(logits)
        lab = _contig(labels, _I64)
        out = self._new((2, rows), _F32)  # one allocation: loss and lse
        loss, lse = out[0], out[1]
        plan = pick_stream(c, 16 // x.dtype.itemsize)
        k = self._rows().get("cross_entropy.cu", DTYPE_CODE[x.dtype], "st_cross_entropy_fwd",
                             "ppppqiiqf")
        k(plan.blocks(rows), plan.threads, _stream().ptr, x.data.ptr, lab.data.ptr,
          loss.data.ptr, lse.data.ptr, rows, c, plan.tpr, int(ignore_index),
          float(label_smoothing))
        return loss, lse

    def cross_entropy_reduce(self, loss, labels, ignore_index, mean):
        rows = loss.shape[0] if loss.ndim == 1 else -1
        if (loss.dtype != _F32 or loss.ndim != 1 or labels.shape != (rows,)
                or labels.dtype.kind != "i" or rows > _CE_REDUCE_ROWS):
            return super().cross_entropy_reduce(loss, labels, ignore_index, mean)
        loss = _contig(loss, _F32)
        lab = _contig(labels, _I64)
        out = self._new((2,), _F32)
        k = self._rows().get("cross_entropy.cu", DTYPE_CODE[_F32], "st_cross_entropy_reduce",
                             "pppqqi")
        k(1, 1024, _stream().ptr, loss.data.ptr, lab.data.ptr, out.data.ptr, rows,
          int(ignore_index), int(bool(mean)))
        return out[0], out[1]

    def cross_entropy_backward(self, g_rows, logits, labels, lse, ignore_index,
                               label_smoothing):
        if not (self._norm_ok(logits) and logits.ndim == 2):
            return super().cross_entropy_backward(g_rows, logits, labels, lse, ignore_index,
                                                  label_smoothing)
        rows, c = logits.shape
        g = g_rows if isinstance(g_rows, _ndarray) else cupy.asarray(g_rows)
        if g.dtype != _F32:
            g = g.astype(_F32)
        if g.size == 1 or (g.ndim == 1 and g.strides == (0,)):
            g_stride = 0  # one cotangent for every row (mean/sum reductions)
            g = g.reshape(-1)[:1]
        else:
            g = _contig(cupy.broadcast_to(g, (rows,)), _F32)
            g_stride = 1
        x = _prep(logits)
        lab = _contig(labels, _I64)
        lse = _contig(lse, _F32)
        dx = self._new(x.shape, x.dtype)
        plan = pick_stream(c, 16 // x.dtype.itemsize)
        k = self._rows().get("cross_entropy.cu", DTYPE_CODE[x.dtype], "st_cross_entropy_bwd",
                             "pqppppqiiqf")
        k(plan.blocks(rows), plan.threads, _stream().ptr, g.data.ptr, g_stride, x.data.ptr,
          lab.data.ptr, lse.data.ptr, dx.data.ptr, rows, c, plan.tpr, int(ignore_index),
          float(label_smoothing))
        return dx
