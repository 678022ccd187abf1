"""Matrix products through cuBLASLt (``nvmath.bindings.cublasLt``), capturable in CUDA graphs.

Row-major ``y = a @ b`` is the column-major ``yᵀ = bᵀ · aᵀ``: cuBLASLt's operand A is our
``b`` and its B is our ``a``, so no operand is ever copied for a transpose. A row-contiguous
matrix is used as is (op N); a column-contiguous one (the transpose view of a contiguous
matrix) is passed with op T. Batches use strided-batch layouts (stride 0 broadcasts a
shared operand; a batch of row-major ``a`` against one ``b`` becomes one tall GEMM). Only
layouts no stride describes (e.g. partial broadcasts, negative strides) are copied first.

Per (shapes, strides, dtype, precision, alignment) the matmul descriptor, the layouts and
the heuristic's algorithm are cached, so a call costs one dict lookup and one cuBLASLt call;
the workspace is preallocated with plain ``cudaMalloc`` (a fixed address, as graphs need).
Among the heuristic's candidates the fastest is picked by timing them once on the first
call (:meth:`CublasLt._autotune`), except in deterministic mode (below).

Deterministic mode (``st.set_deterministic(True)``): timing can pick another algorithm in
another process, and two algorithms round differently. There the plan keeps the heuristic's
first candidate, which depends only on the GPU, the library version, the shapes, the
alignments and the preference, and its preference excludes the in-place split-K reduction
(see :data:`DETERMINISTIC_REDUCTIONS`). Plans are keyed by the mode, so a deterministic plan
and an autotuned one never mix.

float32 is exact IEEE by default; ``scitensor.set_matmul_precision("tf32")`` opts into TF32.
float16/bfloat16 accumulate in float32; float64 in float64.

:meth:`CublasLt.gemm` runs one 2-D product with a cuBLASLt *epilogue* (bias, ReLU/GELU with
the auxiliary output their backward needs, DRELU/DGELU, bias gradients: the linear layer's
fused forward and backward, :mod:`.linear`). Its plans are cached like the plain ones (the
epilogue, the auxiliary leading dimension and the bias/aux pointer alignments join the key);
the bias and aux pointers are set on the cached descriptor before each call. A combination
cuBLASLt has no algorithm for is remembered, and ``gemm`` returns False so that the caller
composes the result instead.
"""

from __future__ import annotations

import math

import cupy
import numpy as np

from ... import dtypes as dt
from ...precision import MATMUL_PRECISION
from ...runtime import DETERMINISTIC
from .elementwise import new_array
from .errors import CudaError

__all__ = ["DETERMINISTIC_REDUCTIONS", "EPILOGUES", "CublasLt"]

WORKSPACE_BYTES = 32 * 1024 * 1024  # what cuBLAS recommends on Hopper
CANDIDATES = 8  # heuristic results timed once per geometry (autotuning)
AUTOTUNE_MIN_MACS = 1 << 24  # below this the launch overhead dominates: take the first
AUTOTUNE_MAX_MS = 2.0  # a first candidate this slow means a big GEMM: the heuristic is fine
_OP_N, _OP_T = 0, 1
# cublasLtReductionScheme_t: NONE 0, INPLACE 1, COMPUTE_TYPE 2, OUTPUT_TYPE 4 (MASK 7).
# The cuBLAS guide ("Results reproducibility") says every cuBLAS routine of one toolkit
# version gives the same bits on every run on GPUs of the same architecture and SM count
# (for several concurrent streams it names cublasLtMatmul with a workspace the caller owns,
# as here); that holds for a given algorithm, so deterministic mode pins the algorithm
# instead of timing the candidates, which can pick another one in another process.
# For split-K ("cublasLtReductionScheme_t": portions of the dot product computed in
# parallel) the guide documents NONE as "performed in one sequence" and COMPUTE_TYPE /
# OUTPUT_TYPE as partials stored in the workspace and "reduced in a separate step"; INPLACE
# adds the parts "in place" in the output buffer, in the output type, with "counters that
# guarantee sequentiality" but no documented order. Deterministic mode masks INPLACE out with
# CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, so the heuristic never returns an algorithm
# that accumulates into the output in an order the documentation does not fix.
DETERMINISTIC_REDUCTIONS = 0 | 2 | 4  # NONE | COMPUTE_TYPE | OUTPUT_TYPE
# np dtype -> (cudaDataType, compute type exact, compute type tf32, scale numpy dtype)
_R_16F, _R_16BF, _R_32F, _R_64F = 2, 14, 0, 1
_C_32F, _C_32F_TF32, _C_64F = 68, 77, 70
# epilogue name (lower case of cublasLtEpilogue_t's) -> (reads/writes the bias vector, has aux)
EPILOGUES = {
    "bias": (True, False), "relu_bias": (True, False), "gelu_bias": (True, False),
    "relu_aux": (False, True), "gelu_aux": (False, True),
    "relu_aux_bias": (True, True), "gelu_aux_bias": (True, True),
    "drelu": (False, True), "dgelu": (False, True),
    "drelu_bgrad": (True, True), "dgelu_bgrad": (True, True),
    "bgrada": (True, False), "bgradb": (True, False),
    "relu": (False, False), "gelu": (False, False), "default": (False, False),
}
_TYPES = {
    np.dtype(np.float16): (_R_16F, _C_32F, _C_32F, np.float32),
    dt.bfloat16.np: (_R_16BF, _C_32F, _C_32F, np.float32),
    np.dtype(np.float32): (_R_32F, _C_32F, _C_32F_TF32, np.float32),
    np.dtype(np.float64): (_R_64F, _C_64F, _C_64F, np.float64),
}


def _alignment(ptr: int, *more: int) -> int:
    """Largest power of two (<= 256) dividing ``ptr`` and every byte offset in ``more``."""
    v = ptr | 256
    for m in more:
        if m:
            v |= m
    return v & -v


def _geometry(x, batch, nb):
    """``(order, rows, cols, ld, batch_stride)`` in elements for the matrices of ``x``
    broadcast to ``batch``, or ``None`` when no single stride/ld describes them."""
    item = x.itemsize
    shape = x.shape
    strides = tuple(0 if n == 1 else s for n, s in zip(shape, x.strides))  # size 1: any
    if any(s < 0 or s % item for s in strides):
        return None
    R, C = shape[-2], shape[-1]
    sr, sc = strides[-2] // item, strides[-1] // item
    bs = 0
    if nb > 1:
        lead = len(batch) - (len(shape) - 2)
        expected = None
        for i in range(len(batch) - 1, -1, -1):  # innermost batch dimension first
            size = batch[i]
            if size == 1:
                continue
            j = i - lead
            st = strides[j] // item if j >= 0 and shape[j] != 1 else 0
            if expected is None:
                bs, expected = st, st * size
            elif st != expected:
                return None
            else:
                expected = st * size
    if (sc == 1 or C == 1) and (R == 1 or sr >= C):
        return ("row", R, C, sr if R > 1 else C, bs)
    if (sr == 1 or R == 1) and (C == 1 or sc >= R):
        return ("col", R, C, sc if C > 1 else R, bs)
    return None


class _Plan:
    """Cached descriptor, layouts and the chosen algorithm of one GEMM geometry."""

    __slots__ = ("desc", "layouts", "candidates", "algo", "algo_ptr", "ws_size", "tuned",
                 "deterministic", "alpha_beta", "bias_attr", "aux_attr", "ptrs", "ptrs_addr")

    def choose(self, i: int) -> None:
        self.algo = self.candidates[i:i + 1].copy()
        self.algo_ptr = self.algo.ctypes.data  # 'algo' is the struct's first field
        self.ws_size = int(self.algo["workspace_size"][0])


class CublasLt:
    """cuBLASLt GEMMs for one device: a handle, a workspace and the plan cache."""

    def __init__(self, device_id: int):
        from nvmath.bindings import cublasLt

        self.lt = cublasLt
        self.device_id = device_id
        with cupy.cuda.Device(device_id):
            self.handle = cublasLt.create()
            self._ws = cupy.cuda.Memory(WORKSPACE_BYTES)  # plain cudaMalloc: a fixed address
        self.ws_ptr = self._ws.ptr
        self.plans: dict = {}
        self._fast: dict = {}  # (shapes, strides, dtypes, precision) -> plan and alignments
        self._epi_fast: dict = {}  # the same for gemm() with an epilogue
        self.unsupported: set = set()  # epilogue plan keys cuBLASLt has no algorithm for
        D = cublasLt.MatmulDescAttribute
        self._bias_attr, self._aux_attr = int(D.BIAS_POINTER), int(D.EPILOGUE_AUX_POINTER)
        # host scalars alpha = 1, beta = 0 per scale type, and their addresses
        self._scalars = [np.ones(1, np.float32), np.zeros(1, np.float32),
                         np.ones(1, np.float64), np.zeros(1, np.float64)]
        p = [s.ctypes.data for s in self._scalars]
        self._alpha_beta = {np.float32: (p[0], p[1]), np.float64: (p[2], p[3])}

    # ---- descriptors ---------------------------------------------------------------------
    def _set(self, setter, dtype_of, obj, attr, value):
        v = np.array(value, dtype=dtype_of(attr))
        setter(obj, attr, v.ctypes.data, v.itemsize)

    def _layout(self, cuda_type, rows, cols, ld, nb, bs):
        lt = self.lt
        lay = lt.matrix_layout_create(cuda_type, rows, cols, ld)
        if nb > 1:
            A = lt.MatrixLayoutAttribute
            self._set(lt.matrix_layout_set_attribute, lt.get_matrix_layout_attribute_dtype,
                      lay, A.BATCH_COUNT, nb)
            self._set(lt.matrix_layout_set_attribute, lt.get_matrix_layout_attribute_dtype,
                      lay, A.STRIDED_BATCH_OFFSET, bs)
        return lay

    def _plan(self, key, epi=None):
        """Descriptor, layouts and heuristic candidates for ``key``; ``epi`` is ``(name,
        bias_ptr, aux_ptr, aux_ld)`` for an epilogue (pointers the heuristic reads for their
        alignment). ``None`` when cuBLASLt offers no algorithm. The key's last entry is the
        deterministic-mode flag: then the preference excludes the in-place split-K reduction
        and the plan keeps the heuristic's first candidate (never autotuned)."""
        (dtype, tf32, m, n, k, nb, ga, gb, al_a, al_b, al_c) = key[:11]
        deterministic = key[-1]
        nb_macs = max(nb, 1)
        lt = self.lt
        cuda_type, c_exact, c_tf32, scale = _TYPES[dtype]
        scale_type = _R_64F if scale is np.float64 else _R_32F
        desc = lt.matmul_desc_create(c_tf32 if tf32 else c_exact, scale_type)
        D = lt.MatmulDescAttribute
        sd = lambda attr, v: self._set(lt.matmul_desc_set_attribute,
                                       lt.get_matmul_desc_attribute_dtype, desc, attr, v)
        # cuBLASLt A = our b (N x K column-major view), B = our a (K x M)
        b_order, b_rows, b_cols, b_ld, b_bs = gb
        a_order, a_rows, a_cols, a_ld, a_bs = ga
        if b_order == "row":
            sd(D.TRANSA, _OP_N)
            la = self._layout(cuda_type, b_cols, b_rows, b_ld, nb, b_bs)
        else:
            sd(D.TRANSA, _OP_T)
            la = self._layout(cuda_type, b_rows, b_cols, b_ld, nb, b_bs)
        if a_order == "row":
            sd(D.TRANSB, _OP_N)
            lb = self._layout(cuda_type, a_cols, a_rows, a_ld, nb, a_bs)
        else:
            sd(D.TRANSB, _OP_T)
            lb = self._layout(cuda_type, a_rows, a_cols, a_ld, nb, a_bs)
        uses_bias = uses_aux = False
        if epi is not None:
            name, bias_ptr, aux_ptr, aux_ld = epi
            uses_bias, uses_aux = EPILOGUES[name]
            sd(D.EPILOGUE, int(lt.Epilogue[name.upper()]))
            if uses_bias:
                sd(D.BIAS_POINTER, bias_ptr)
            if uses_aux:
                sd(D.EPILOGUE_AUX_POINTER, aux_ptr)
                sd(D.EPILOGUE_AUX_LD, aux_ld)
        lc = self._layout(cuda_type, n, m, n, nb, m * n)
        pref = lt.matmul_preference_create()
        P = lt.MatmulPreferenceAttribute
        sp = lambda attr, v: self._set(lt.matmul_preference_set_attribute,
                                       lt.get_matmul_preference_attribute_dtype, pref, attr, v)
        sp(P.MAX_WORKSPACE_BYTES, WORKSPACE_BYTES)
        sp(P.MIN_ALIGNMENT_A_BYTES, al_b)
        sp(P.MIN_ALIGNMENT_B_BYTES, al_a)
        sp(P.MIN_ALIGNMENT_C_BYTES, al_c)
        sp(P.MIN_ALIGNMENT_D_BYTES, al_c)
        if deterministic:
            sp(P.REDUCTION_SCHEME_MASK, DETERMINISTIC_REDUCTIONS)
        results = np.zeros(CANDIDATES, dtype=lt.matmul_heuristic_result_dtype)
        count = np.zeros(1, dtype=np.int32)
        try:
            lt.matmul_algo_get_heuristic(self.handle, desc, la, lb, lc, lc, pref, CANDIDATES,
                                         results.ctypes.data, count.ctypes.data)
        except Exception:
            count[0] = 0
        finally:
            lt.matmul_preference_destroy(pref)
        if count[0] == 0:
            for lay in (la, lb, lc):
                lt.matrix_layout_destroy(lay)
            lt.matmul_desc_destroy(desc)
            return None
        plan = _Plan()
        plan.desc, plan.layouts = desc, (la, lb, lc)
        plan.alpha_beta = self._alpha_beta[scale]
        plan.candidates = results[:int(count[0])].copy()
        plan.bias_attr, plan.aux_attr = uses_bias, uses_aux
        plan.ptrs = np.zeros(2, dtype=np.int64)  # bias and aux pointers, set before each call
        plan.ptrs_addr = plan.ptrs.ctypes.data
        plan.choose(0)
        plan.deterministic = deterministic
        plan.tuned = (deterministic or len(plan.candidates) == 1
                      or nb_macs * m * n * k < AUTOTUNE_MIN_MACS)
        self.plans[key] = plan
        return plan

    def _autotune(self, plan, run) -> None:
        """Time the heuristic's candidates on the real operands once; keep the fastest.

        Skipped while a CUDA graph is being captured (timing needs a host wait); the plan is
        then tuned by the first eager call. A deterministic-mode plan is never timed: it keeps
        the heuristic's first candidate (see module docs)."""
        if plan.deterministic:
            plan.choose(0)
            plan.tuned = True
            return
        stream = cupy.cuda.get_current_stream(self.device_id)
        if stream.is_capturing():
            return
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        best, best_ms = 0, float("inf")
        for i in range(len(plan.candidates)):
            plan.choose(i)
            try:
                run()  # warm-up
                start.record(stream)
                run()
                end.record(stream)
                end.synchronize()
            except Exception:  # a candidate that fails to launch is just not chosen
                continue
            ms = cupy.cuda.get_elapsed_time(start, end)
            if ms < best_ms:
                best, best_ms = i, ms
            if i == 0 and ms > AUTOTUNE_MAX_MS:  # big GEMMs: the heuristic's pick is fine
                break
        plan.choose(best)
        plan.tuned = True

    # ---- the product -------------------------------------------------------------------------
    def matmul(self, a, b, stream_ptr: int):
        """``a @ b`` for float arrays of one dtype with ndim >= 2 (NumPy broadcasting)."""
        dtype = a.dtype
        # fast path: a geometry seen before (shapes, strides, dtype, precision) whose plan
        # still fits the pointers' alignment; one dict lookup, no Python layout work
        det = DETERMINISTIC[0]
        fkey = (a.shape, a.strides, b.shape, b.strides, dtype, b.dtype, MATMUL_PRECISION[0],
                det)
        hit = self._fast.get(fkey)
        if hit is not None:
            plan, out_shape, al_a, al_b, al_c = hit
            out = new_array(out_shape, dtype)
            pa, pb, pc = a.data.ptr, b.data.ptr, out.data.ptr
            if not (pa % al_a or pb % al_b or pc % al_c):
                self._run(plan, pa, pb, pc, stream_ptr, a, b)
                return out
        if dtype not in _TYPES or b.dtype != dtype:
            raise TypeError(f"matmul: cuBLASLt path needs two arrays of one float dtype, got "
                            f"{dtype} and {b.dtype}")
        m, k = a.shape[-2], a.shape[-1]
        n = b.shape[-1]
        if b.shape[-2] != k:
            raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not align "
                             f"({k} != {b.shape[-2]})")
        if a.ndim == 2 and b.ndim == 2:
            batch = ()
        else:
            batch = tuple(np.broadcast_shapes(a.shape[:-2], b.shape[:-2]))
        nb = math.prod(batch)
        out = new_array(batch + (m, n), dtype)
        if out.size == 0:
            return out
        if k == 0:
            out.fill(0)
            return out
        copied = False
        ga = _geometry(a, batch, nb)
        if ga is None:
            a, copied = cupy.broadcast_to(a, batch + (m, k)).copy(order="C"), True
            ga = _geometry(a, batch, nb)
        gb = _geometry(b, batch, nb)
        if gb is None:
            b, copied = cupy.broadcast_to(b, batch + (k, n)).copy(order="C"), True
            gb = _geometry(b, batch, nb)
        if ga is None or gb is None:
            raise CudaError(f"matmul: no cuBLASLt layout for shapes {a.shape} x {b.shape} "
                            f"(strides {a.strides}, {b.strides})")
        mm, nbb = m, nb
        if nb > 1 and gb[4] == 0 and ga[0] == "row" and ga[4] == m * ga[3]:
            # a batch of row-major matrices times one shared b: one (nb*m) x k GEMM
            mm, nbb = nb * m, 1
            ga = ("row", mm, k, ga[3], 0)
        tf32 = dtype == np.float32 and MATMUL_PRECISION[0] == "tf32"
        item = a.itemsize
        pa, pb, pc = a.data.ptr, b.data.ptr, out.data.ptr
        key = (dtype, tf32, mm, n, k, nbb, ga, gb,
               _alignment(pa, ga[4] * item if nbb > 1 else 0),
               _alignment(pb, gb[4] * item if nbb > 1 else 0),
               _alignment(pc, mm * n * item if nbb > 1 else 0), det)
        plan = self.plans.get(key)
        if plan is None:
            plan = self._plan(key)
            if plan is None:
                mode = (" with deterministic mode's reduction schemes (st.set_deterministic"
                        "(False) allows all)") if det else ""
                raise CudaError(
                    f"matmul: cuBLASLt found no algorithm{mode} for shapes {a.shape} x "
                    f"{b.shape} (strides {a.strides}, {b.strides}), dtype {dtype}; make the "
                    "operands contiguous (x.contiguous()) or use float32")
        self._run(plan, pa, pb, pc, stream_ptr, a, b)
        if not copied and plan.tuned:
            self._fast[fkey] = (plan, out.shape, key[8], key[9], key[10])
        return out

    # ---- a 2-D product with an epilogue ------------------------------------------------------
    def gemm(self, a, b, out, stream_ptr: int, epilogue: str, bias=None, aux=None,
             aux_ld: int = 0) -> bool:
        """``out = epilogue(a @ b)`` with one cuBLASLt call; False (nothing run) when
        cuBLASLt has no algorithm for this epilogue, layout and dtype.

        Args:
            a, b: 2-D arrays ``(m, k)`` and ``(k, n)`` of one float dtype, each row- or
                column-contiguous (a transpose view is fine).
            out: C-contiguous ``(m, n)`` array of that dtype, written.
            stream_ptr: the CUDA stream.
            epilogue: a key of :data:`EPILOGUES`. In row-major terms the "rows of D" of
                cuBLASLt's documentation are ``out``'s columns: a bias (read by ``*bias``,
                written by ``drelu_bgrad``/``dgelu_bgrad``/``bgrada``) has ``n`` elements,
                and ``bgrada`` sums ``b`` over its ``k`` rows.
            bias: the contiguous bias vector (``n`` elements of the dtype), or None.
            aux: the contiguous auxiliary array (ReLU bit-mask or GELU input), or None;
                ``(m, aux_ld / 8)`` bytes for ReLU, ``(m, aux_ld)`` elements for GELU.
            aux_ld: the aux leading dimension in elements (bits for the ReLU mask): a
                multiple of 128 for ReLU, of 8 for GELU, at least ``n``.
        """
        dtype = a.dtype
        pa, pb, pc = a.data.ptr, b.data.ptr, out.data.ptr
        pbias = 0 if bias is None else bias.data.ptr
        paux = 0 if aux is None else aux.data.ptr
        det = DETERMINISTIC[0]
        fkey = (a.shape, a.strides, b.shape, b.strides, dtype, MATMUL_PRECISION[0], epilogue,
                aux_ld, det)
        hit = self._epi_fast.get(fkey)
        if hit is not None:
            plan, al_a, al_b, al_c, al_bias, al_aux = hit
            if not (pa % al_a or pb % al_b or pc % al_c or pbias % al_bias or paux % al_aux):
                self._run_epilogue(plan, pa, pb, pc, pbias, paux, stream_ptr, a, b)
                return True
        if (a.ndim != 2 or b.ndim != 2 or dtype not in _TYPES or b.dtype != dtype
                or out.dtype != dtype or epilogue not in EPILOGUES):
            return False
        m, k = a.shape
        n = b.shape[1]
        if b.shape[0] != k or out.shape != (m, n) or not out.flags.c_contiguous:
            return False
        if m == 0 or n == 0 or k == 0:
            return False
        ga, gb = _geometry(a, (), 1), _geometry(b, (), 1)
        if ga is None or gb is None:
            return False
        tf32 = dtype == np.float32 and MATMUL_PRECISION[0] == "tf32"
        key = (dtype, tf32, m, n, k, 1, ga, gb, _alignment(pa), _alignment(pb),
               _alignment(pc), epilogue, aux_ld, _alignment(pbias), _alignment(paux), det)
        if key in self.unsupported:
            return False
        plan = self.plans.get(key)
        fresh = plan is None
        if fresh:
            plan = self._plan(key, (epilogue, pbias, paux, aux_ld))
            if plan is None:
                self.unsupported.add(key)
                return False
        try:
            self._run_epilogue(plan, pa, pb, pc, pbias, paux, stream_ptr, a, b)
        except CudaError:
            if not fresh:  # this plan ran before: a real failure
                raise
            # the heuristic offered an algorithm that then refused these operands
            self.unsupported.add(key)
            del self.plans[key]
            for lay in plan.layouts:
                self.lt.matrix_layout_destroy(lay)
            self.lt.matmul_desc_destroy(plan.desc)
            return False
        if plan.tuned:
            self._epi_fast[fkey] = (plan, key[8], key[9], key[10], key[13], key[14])
        return True

    def _run_epilogue(self, plan, pa, pb, pc, pbias, paux, stream_ptr, a, b) -> None:
        lt, desc = self.lt, plan.desc
        if plan.bias_attr:
            plan.ptrs[0] = pbias
            lt.matmul_desc_set_attribute(desc, self._bias_attr, plan.ptrs_addr, 8)
        if plan.aux_attr:
            plan.ptrs[1] = paux
            lt.matmul_desc_set_attribute(desc, self._aux_attr, plan.ptrs_addr + 8, 8)
        self._run(plan, pa, pb, pc, stream_ptr, a, b)

    def _run(self, plan, pa, pb, pc, stream_ptr, a, b) -> None:
        alpha, beta = plan.alpha_beta
        la, lb, lc = plan.layouts
        lt, handle, desc, ws = self.lt, self.handle, plan.desc, self.ws_ptr
        try:
            if not plan.tuned:
                self._autotune(plan, lambda: lt.matmul(
                    handle, desc, alpha, pb, la, pa, lb, beta, pc, lc, pc, lc, plan.algo_ptr, ws,
                    plan.ws_size, stream_ptr))
            lt.matmul(handle, desc, alpha, pb, la, pa, lb, beta, pc, lc, pc, lc, plan.algo_ptr,
                      ws, plan.ws_size, stream_ptr)
        except Exception as e:
            raise CudaError(f"matmul: cuBLASLt failed for shapes {a.shape} x {b.shape}, dtype "
                            f"{a.dtype}: {e}") from e

    def close(self) -> None:
        """Destroy every cached descriptor and the handle (tests; process exit does it too)."""
        lt = self.lt
        for plan in self.plans.values():
            for lay in plan.layouts:
                lt.matrix_layout_destroy(lay)
            lt.matmul_desc_destroy(plan.desc)
        self.plans.clear()
        self._fast.clear()
        lt.destroy(self.handle)
