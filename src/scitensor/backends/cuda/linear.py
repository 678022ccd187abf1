"""``CudaLinearPrimitives``: the linear layer as cuBLASLt GEMMs with epilogues.

A mixin for :class:`~scitensor.backends.cuda.backend.CudaBackend` (before ``ArrayBackend`` in
its bases) overriding :class:`~scitensor.backends.xp_linear.LinearPrimitives`. Row-major
``y = x @ w`` is cuBLASLt's column-major ``yᵀ = wᵀ xᵀ`` (:mod:`.cublaslt`): its output rows
are our output features, so the bias and every bias gradient run along ``out_features``.

What runs, per layer (``m`` rows, ``k`` in, ``n`` out features):

- forward: one GEMM, epilogue ``RELU_AUX_BIAS`` / ``GELU_AUX_BIAS`` (``BIAS`` without an
  activation; ``RELU_BIAS`` / ``GELU_BIAS`` / ``RELU`` / ``GELU`` when no gradient is
  recorded, ``*_AUX`` without a bias). The aux output is the ReLU bit-mask (``m`` rows of
  ``ceil(n / 128) * 16`` bytes) or the GELU input (``m x round_up(n, 8)`` elements);
- backward, given ``g = dL/dy``: one elementwise kernel ``dpre = g * act'(pre)`` from the aux
  (``kernels/linear.cu``), the weight-gradient GEMM ``dw = xᵀ dpre`` with epilogue ``BGRADA``
  (the bias gradient, ``dpre`` summed over rows, comes out of the same GEMM) and the input
  gradient GEMM ``dx = dpre wᵀ``;
- chained backward (``linear_act_backward_chain``: ``x`` is the output of another fused
  linear layer with an activation, see :mod:`scitensor.ops.linear`): the input-gradient GEMM
  runs with epilogue ``DRELU_BGRAD`` / ``DGELU_BGRAD`` (``DRELU`` / ``DGELU`` when the
  previous layer's bias needs no gradient) on the previous layer's aux, so it writes the
  previous layer's pre-activation gradient and bias gradient. That layer's own backward is
  then just its weight-gradient GEMM and its input-gradient GEMM: no elementwise kernel, no
  bias reduction.

float16/bfloat16/float32 (exact float32 unless ``set_matmul_precision("tf32")``); float64 and
anything else uses the composition of :class:`LinearPrimitives` (plain cuBLASLt GEMMs plus
elementwise ops), as does any combination cuBLASLt offers no algorithm for (``CublasLt.gemm``
returns False; such keys are remembered): the numbers are the same, only the kernel count
differs. Backward epilogues need more than one row and column (cuBLASLt rejects ``k = 1``
for DRELU/DGELU and degenerate BGRADA shapes); those fall back too.

:data:`FUSE` switches the three kinds of fusion off (checks and comparisons); when
:data:`TRACE` is a list, every step appends what ran (``"fwd gemm relu_aux_bias"``, ``"dpre
kernel drelu_bits"``, ``"dW gemm bgrada"``, ``"dX gemm drelu_bgrad"``, ``"... fallback"``).

Everything device-specific goes through ``_lin_*`` methods so a test can run this exact code
on NumPy arrays with the kernels compiled for the host and a stand-in for cuBLASLt.
"""

from __future__ import annotations

import numpy as np

from ... import dtypes as dt
from ..xp_linear import LinearAux, LinearPrimitives

__all__ = ["FUSE", "TRACE", "CudaLinearPrimitives", "set_trace"]

_DTYPE_CODE = {np.dtype(np.float16): 0, dt.bfloat16.np: 1, np.dtype(np.float32): 2}
_U8 = np.dtype(np.uint8)
_KERNEL_SIG = "pppqiii"
THREADS = 256
FUSE = {"forward": True, "bgrad": True, "chain": True}
TRACE: list | None = None
_current_stream = None  # cupy.cuda.get_current_stream, bound on first use
_FWD = {  # (activation, has bias, saves aux) -> epilogue
    (None, True, False): "bias",
    ("relu", True, True): "relu_aux_bias", ("relu", True, False): "relu_bias",
    ("relu", False, True): "relu_aux", ("relu", False, False): "relu",
    ("gelu", True, True): "gelu_aux_bias", ("gelu", True, False): "gelu_bias",
    ("gelu", False, True): "gelu_aux", ("gelu", False, False): "gelu",
}


def set_trace(trace: list | None) -> None:
    """Record what the linear primitives run into ``trace`` (a list), or stop (None)."""
    global TRACE
    TRACE = trace


def _note(what: str) -> None:
    if TRACE is not None:
        TRACE.append(what)


def _round_up(v: int, m: int) -> int:
    return (v + m - 1) // m * m


class CudaLinearPrimitives(LinearPrimitives):
    """cuBLASLt-epilogue linear primitives (see module docs)."""

    _lin_modules: dict = {}  # (dtype code, device id) -> LoadedModule

    # ---- device plumbing (overridden by the host emulation in the tests) ----------------
    def _lin_blas(self):
        if self._blas is None:
            from .cublaslt import CublasLt

            self._blas = CublasLt(self.index)
        return self._blas

    def _lin_stream(self) -> int:
        global _current_stream
        if _current_stream is None:
            import cupy

            _current_stream = cupy.cuda.get_current_stream
        return _current_stream().ptr

    def _lin_new(self, shape, dtype):
        ew = getattr(self, "_ew", None)
        if ew is not None:
            return ew._new(shape, dtype)
        import cupy

        return cupy.empty(shape, dtype)

    def _lin_contig(self, a):
        if a is None:
            return None
        contiguous = getattr(a, "_c_contiguous", None)
        if contiguous is None:
            contiguous = a.flags.c_contiguous
        return a if contiguous else self.xp.ascontiguousarray(a)

    def _lin_ptr(self, a) -> int:
        return a.data.ptr

    def _lin_kernel(self, name: str, dtype):
        key = (_DTYPE_CODE[dtype], self.index)
        mod = self._lin_modules.get(key)
        if mod is None:
            from .compiler import load_module

            mod = self._lin_modules[key] = load_module(
                "linear.cu", self.index, getattr(self, "arch", None),
                options=(f"-DST_DTYPE={key[0]}",))
        return mod.function(name, _KERNEL_SIG)

    def _lin_blocks(self, items: int) -> int:
        return max(1, min(-(-items // THREADS), getattr(self, "sm_count", 132) * 16))

    @staticmethod
    def _lin_ok(x, w, b=None) -> bool:
        """Whether the epilogue path covers these operands."""
        d = x.dtype
        return (d in _DTYPE_CODE and w.dtype == d and (b is None or b.dtype == d)
                and x.ndim == 2 and w.ndim == 2 and x.size > 0 and w.size > 0)

    # ---- forward ---------------------------------------------------------------------------
    def linear_act(self, x, w, b, activation, need_aux):
        if not (FUSE["forward"] and self._lin_ok(x, w, b)):
            _note("fwd fallback")
            return super().linear_act(x, w, b, activation, need_aux)
        if activation is None and b is None:
            _note("fwd gemm default")
            return self.matmul(x, w), None
        m, n = x.shape[0], w.shape[1]
        y = self._lin_new((m, n), x.dtype)
        aux = None
        ld = 0
        if activation is not None and need_aux:
            if activation == "relu":
                ld = _round_up(n, 128)  # bits: cuBLASLt wants a multiple of 128
                aux = self._lin_new((m, ld // 8), _U8)
            else:
                ld = _round_up(n, 8)
                aux = self._lin_new((m, ld), x.dtype)
        epi = _FWD[(activation, b is not None, aux is not None)]
        bias = self._lin_contig(b)
        blas, stream = self._lin_blas(), self._lin_stream()
        ok = blas.gemm(x, w, y, stream, epi, bias, aux, ld)
        if not ok and x.strides[-1] != x.itemsize:  # a transposed input: try it row-major
            x = self.xp.ascontiguousarray(x)
            ok = blas.gemm(x, w, y, stream, epi, bias, aux, ld)
        if not ok:
            _note(f"fwd {epi} fallback")
            return super().linear_act(x, w, b, activation, need_aux)
        _note(f"fwd gemm {epi}")
        if aux is None:
            return y, None
        return y, LinearAux("bits" if activation == "relu" else "pre", aux, ld, n)

    # ---- backward --------------------------------------------------------------------------
    def _linear_act_grad(self, g, aux, activation):
        if activation is None:
            return g
        if g.dtype not in _DTYPE_CODE or aux.kind == "mask" or (
                aux.kind == "pre" and aux.data.dtype != g.dtype):
            _note("dpre fallback")
            return super()._linear_act_grad(g, aux, activation)
        g = self._lin_contig(g)
        rows, cols = g.shape
        out = self._lin_new((rows, cols), g.dtype)
        if rows == 0 or cols == 0:
            return out
        if aux.kind == "bits":
            name, ld = "st_linear_drelu_bits", aux.ld // 8
        else:
            name, ld = "st_linear_dgelu", aux.ld
        src = aux.data
        vec = int(cols % 8 == 0 and ld % 8 == 0 and not (
            self._lin_ptr(g) % 16 or self._lin_ptr(out) % 16
            or (aux.kind == "pre" and self._lin_ptr(src) % 16)))
        k = self._lin_kernel(name, g.dtype)
        groups = rows * ((cols + 7) // 8)
        k(self._lin_blocks(groups), THREADS, self._lin_stream(), self._lin_ptr(g),
          self._lin_ptr(src), self._lin_ptr(out), rows, cols, ld, vec)
        _note(f"dpre kernel {name[10:]}")
        return out

    def linear_act_backward(self, g, x, w, aux, activation, needs):
        if not self._lin_ok(x, w) or g.dtype != x.dtype:
            _note("bwd fallback")
            return super().linear_act_backward(g, x, w, aux, activation, needs)
        dx, dw, db, _ = self._linear_backward(g, x, w, aux, activation, needs, None, None,
                                              False)
        return dx, dw, db

    def linear_act_backward_chain(self, g, x, w, aux, activation, needs, prev_aux,
                                  prev_activation, need_prev_db):
        if not self._lin_ok(x, w) or g.dtype != x.dtype:
            _note("bwd fallback")
            return super().linear_act_backward_chain(g, x, w, aux, activation, needs,
                                                     prev_aux, prev_activation, need_prev_db)
        return self._linear_backward(g, x, w, aux, activation, (True, needs[1], needs[2]),
                                     prev_aux, prev_activation, need_prev_db)

    def _linear_backward(self, g, x, w, aux, activation, needs, prev_aux, prev_activation,
                         need_prev_db):
        need_dx, need_dw, need_db = needs
        m, n = g.shape
        k = x.shape[1]
        dpre = self._linear_act_grad(self._lin_contig(g), aux, activation)
        blas, stream = self._lin_blas(), self._lin_stream()
        dw = db = None
        if need_dw:
            if need_db and FUSE["bgrad"] and m > 1 and n > 1:
                dw, db = self._lin_new((k, n), x.dtype), self._lin_new((n,), x.dtype)
                if blas.gemm(x.T, dpre, dw, stream, "bgrada", db):
                    _note("dW gemm bgrada")
                else:
                    dw = db = None
            if dw is None:
                dw = self.matmul(x.T, dpre)
                _note("dW gemm default")
        if need_db and db is None:
            db = self.sum(dpre, (0,), False)
            _note("db reduce")
        dx = dprev_b = None
        if need_dx:
            if prev_activation is not None:
                dx, dprev_b = self._chain_dx(dpre, w, prev_aux, prev_activation, need_prev_db,
                                             blas, stream)
            else:
                dx = self.matmul(dpre, w.T)
                _note("dX gemm default")
        return dx, dw, db, dprev_b

    def _chain_dx(self, dpre, w, prev_aux, prev_activation, need_prev_db, blas, stream):
        """``dprev = act_prev'(pre_prev) * (dpre @ wᵀ)`` (+ its column sums) in one GEMM."""
        m, n = dpre.shape
        k = w.shape[0]
        epi = None
        if prev_aux.kind == "bits":
            epi = "drelu_bgrad" if need_prev_db else "drelu"
        elif prev_aux.kind == "pre" and prev_aux.ld % 8 == 0 and prev_aux.data.dtype == dpre.dtype:
            epi = "dgelu_bgrad" if need_prev_db else "dgelu"
        if epi is not None and FUSE["chain"] and n > 1 and m > 0:
            dx = self._lin_new((m, k), dpre.dtype)
            dprev_b = self._lin_new((k,), dpre.dtype) if need_prev_db else None
            if blas.gemm(dpre, w.T, dx, stream, epi, dprev_b, prev_aux.data, prev_aux.ld):
                _note(f"dX gemm {epi}")
                return dx, dprev_b
        dx = self.matmul(dpre, w.T)
        _note("dX gemm default (chain fallback)")
        dx = self._linear_act_grad(dx, prev_aux, prev_activation)
        dprev_b = None
        if need_prev_db:
            dprev_b = self.sum(dx, (0,), False)
            _note("db reduce")
        return dx, dprev_b
