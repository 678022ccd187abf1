"""Convolution primitives on CUDA: our implicit-GEMM kernel, direct depthwise kernels, and
im2col + cuBLASLt where the measurements favour it.

Which path runs each pass is :func:`.conv_igemm.choose_path` (a small function of shape, dtype
and precision, documented there; the floors and measurements behind it are in
``docs/kernels/conv.md``):

- ``igemm`` (``kernels/conv_igemm.cu``, :mod:`.conv_igemm`): forward, the input gradient of
  stride-1 convolutions and the weight gradient gather the convolution windows straight from
  NCHW into shared memory and multiply on tensor cores (bf16/fp16; float32 as TF32 under
  ``st.set_matmul_precision("tf32")``, else 3xTF32 at about float32 accuracy). Why: im2col
  writes and reads a column matrix kh*kw times the input per pass, and on the benchmark's 3x3
  shapes that traffic, the layout swaps around it and the extra launches cost 3-7x cuDNN's
  time, while the arithmetic itself is the same.
- ``depthwise`` (``kernels/conv.cu``): one input channel per output channel; a GEMM with one
  row per group would waste the tensor cores, and the op is memory-bound anyway.
- ``im2col`` + one cuBLASLt GEMM (this module): float64, the input gradient of strided
  convolutions (the gather would multiply mostly zeros) or with few channels per group, and
  whatever the kernels do not cover (int32 index limits, sm < 80).

im2col layouts, chosen so no extra transpose pass is needed where it can be avoided:

- groups == 1: the column matrix is batch-major ``(N, C*kh*kw, Ho*Wo)``; the forward GEMM
  broadcasts the weight over the batch (one strided-batched cuBLASLt call) and writes NCHW
  directly; the input gradient is the same GEMM transposed followed by ``st_col2im``.
- groups > 1: channel-major ``(groups, C/g*kh*kw, N*Ho*Wo)``, one GEMM batched over groups,
  then ``st_swap01`` back to NCHW.
- weight gradient: the reduction runs over samples *and* pixels, so both operands must be
  channel-major (one ``st_swap01`` of the output gradient), then one GEMM (split-K is
  cuBLASLt's choice).

cuDNN is not a dependency (CuPy 14 has none). Graph capture: no host synchronisation, sizes
come from shapes only, temporaries come from the stream-ordered pool, GEMMs go through
cuBLASLt (never ``cupy.matmul``), the weight-gradient split reduction is deterministic.

The mixin needs from its backend: ``index``, ``arch``, ``sm_count``, ``_ew._new(shape,
np_dtype)`` (allocation that honours the tests' NaN poisoning) and ``matmul(a, b)``.
"""

from __future__ import annotations

import cupy
import numpy as np

from ... import dtypes as dt
from ..xp_conv import ConvPrimitives
from .attention import _Launcher
from .compiler import load_module
from .conv_igemm import IgemmConvPrimitives, choose_path, igemm_options, settings_key
from .launch import grid_for

__all__ = ["CudaConvPrimitives"]

_CODES = {np.dtype(np.float16): 0, dt.bfloat16.np: 1, np.dtype(np.float32): 2,
          np.dtype(np.float64): 3}
THREADS = 256
_INT32_MAX = (1 << 31) - 1
_CACHE_LIMIT = 4096  # cached path decisions per backend
_GEO = "i" * 8  # kh, kw, sh, sw, pt, pl, dh, dw
_SIGS = {
    "st_im2col": "pp" + "i" * 6 + _GEO + "ii",  # x, cols, N, C, H, W, Ho, Wo, geo, layout, bpr
    "st_col2im": "ppp" + "i" * 6 + _GEO + "ii",
    "st_swap01": "ppp" + "iiii",
    "st_add_channel_bias": "pp" + "iii",
    "st_depthwise_fwd": "pppp" + "i" * 7 + _GEO + "i",
    "st_depthwise_bwd_input": "pppp" + "i" * 7 + _GEO + "i",
    "st_depthwise_bwd_weight_finish": "ppii",
}
for _k in (3, 5, 7):
    _SIGS[f"st_depthwise_bwd_weight_k{_k}"] = "ppp" + "i" * 7 + _GEO + "i"


def _ptr(a) -> int:
    return 0 if a is None else a.data.ptr


def _stream() -> int:
    return cupy.cuda.get_current_stream().ptr


def _contiguous(a):
    return a if a is None or a._c_contiguous else cupy.ascontiguousarray(a)


class CudaConvPrimitives(IgemmConvPrimitives, ConvPrimitives):
    """Overrides the NumPy-API conv primitives with kernels + cuBLASLt (same signatures)."""

    # ---- plumbing ---------------------------------------------------------------------
    def _ig_ptr(self, a) -> int:
        return _ptr(a)

    def _ig_stream(self) -> int:
        return _stream()

    def _ig_out(self, shape, dtype):
        return self._ew._new(shape, dtype)

    def _ig_tmp(self, shape, dtype):
        return self._ew._new(shape, dtype)  # every byte read is written first (poisoned in tests)

    def _ig_sm_count(self) -> int:
        return self.sm_count

    def _ig_kernel(self, code, kind, tiles, name, signature):
        mods = self.__dict__.setdefault("_ig_modules", {})
        key = (code, kind, tiles)
        mod = mods.get(key)
        if mod is None:
            mod = mods[key] = load_module("conv_igemm.cu", self.index, self.arch,
                                          options=igemm_options(code, kind, tiles))
        return mod.function(name, signature)

    def _ig_kernel_smem(self, code, kind, tiles, name, signature):
        table = self.__dict__.setdefault("_ig_launchers", {})
        key = (code, kind, tiles, name)
        k = table.get(key)
        if k is None:  # dynamic shared memory beyond 48 KiB: attention's launcher opts in
            k = table[key] = _Launcher(self._ig_kernel(code, kind, tiles, name, signature))
        return k

    def _path(self, pass_, dtype, x_shape, w_shape, y_shape, stride, dilation, groups) -> str:
        return choose_path(pass_, dtype, self.arch, x_shape, w_shape, y_shape, stride,
                           dilation, groups)

    def _route(self, key, decide):
        """``(path, igemm plan or None)`` for one call, cached on the instance by ``key``
        (every argument but the data, and :func:`~.conv_igemm.settings_key`); ``decide()``
        makes the decision on a miss. ``path`` None: the NumPy-API fallback."""
        routes = self.__dict__.get("_conv_routes")
        if routes is None:
            routes = self.__dict__["_conv_routes"] = {}
        route = routes.get(key)
        if route is None:
            if len(routes) >= _CACHE_LIMIT:  # many distinct shapes: start over
                routes.clear()
            route = routes[key] = decide()
        return route

    def _conv_kernel(self, name: str, dtype):
        table = self.__dict__.setdefault("_conv_kernels", {})
        k = table.get((name, dtype))
        if k is None:
            mods = self.__dict__.setdefault("_conv_modules", {})
            code = _CODES[dtype]
            mod = mods.get(code)
            if mod is None:
                mod = mods[code] = load_module("conv.cu", self.index, self.arch,
                                               options=(f"-DST_DTYPE={code}",))
            k = table[(name, dtype)] = mod.function(name, _SIGS[name])
        return k

    def _conv_rows(self, name, dtype, rows, count, *args):
        """Launch a row kernel over ``rows`` rows of ``count`` pixels each."""
        threads = min(THREADS, -(-count // 32) * 32)
        bpr = -(-count // threads)
        self._conv_kernel(name, dtype)(rows * bpr, threads, _stream(), *args, bpr)

    @staticmethod
    def _gpu_ok(arrays, *launches) -> bool:
        """Whether the kernels cover these arrays: one supported dtype, nothing empty and
        int32-sized grids for the ``(rows, pixels)`` launches (else the NumPy-API path)."""
        dtype = arrays[0].dtype
        if dtype not in _CODES or any(a is not None and (a.dtype != dtype or a.size == 0)
                                      for a in arrays):
            return False
        for rows, count in launches:
            threads = min(THREADS, -(-count // 32) * 32)
            if rows * -(-count // threads) > _INT32_MAX:
                return False
        return True

    def _im2col_gpu(self, x, kernel_hw, out_hw, geo, batch_major):
        n, c, h, w = x.shape
        kh, kw = kernel_hw
        ho, wo = out_hw
        r = c * kh * kw
        shape = (n, r, ho * wo) if batch_major else (r, n, ho * wo)
        cols = cupy.ndarray(shape, x.dtype)  # every element is written
        self._conv_rows("st_im2col", x.dtype, n * r, ho * wo, _ptr(x), _ptr(cols), n, c, h, w,
                   ho, wo, *geo, int(batch_major))
        return cols

    def _swap01(self, src, bias, a, b, p):
        """``(a, b, p)`` -> ``(b, a, p)``, adding ``bias[a]`` when given."""
        dst = self._ew._new((b, a, p), src.dtype)
        self._conv_rows("st_swap01", src.dtype, a * b, p, _ptr(src), _ptr(bias), _ptr(dst), a, b, p)
        return dst

    @staticmethod
    def _geo(kernel_hw, stride, padding, dilation):
        return (*kernel_hw, *stride, *padding, *dilation)

    # ---- path decisions (made once per distinct call: see _route) -----------------------
    def _conv2d_route(self, x, w, bias, out_hw, stride, padding, dilation, groups):
        n, c = x.shape[:2]
        k, _, kh, kw = w.shape
        ho, wo = out_hw
        if not self._gpu_ok((x, w, bias), (n * c * kh * kw, ho * wo), (n * k, ho * wo)):
            return None, None
        path = self._path("fwd", x.dtype, x.shape, w.shape, (n, k, ho, wo), stride, dilation,
                          groups)
        if path != "igemm":
            return path, None
        return path, self._ig_plan("fwd", x.dtype, (x.shape, w.shape, out_hw),
                                   (stride, padding, dilation, groups))

    def _conv_transpose2d_route(self, y, w, bias, out_hw, stride, padding, dilation, groups):
        n, k, ho, wo = y.shape
        cg = w.shape[1]
        c = cg * groups
        h, wd = out_hw
        if not self._gpu_ok((y, w, bias), (n * c, h * wd), (n * k, ho * wo)):
            return None, None
        path = self._path("dgrad", y.dtype, (n, c, h, wd), w.shape, y.shape, stride, dilation,
                          groups)
        if path != "igemm":
            return path, None
        return path, self._ig_plan("dgrad", y.dtype, (y.shape, w.shape, out_hw),
                                   (padding, dilation, groups))

    def _conv2d_weight_route(self, x, gy, kernel_hw, stride, padding, dilation, groups):
        n, c = x.shape[:2]
        k, ho, wo = gy.shape[1:]
        kh, kw = kernel_hw
        if not self._gpu_ok((x, gy), (n * c * kh * kw, ho * wo), (n * k, ho * wo)):
            return None, None
        path = self._path("wgrad", x.dtype, x.shape, (k, c // groups, kh, kw), gy.shape,
                          stride, dilation, groups)
        if path != "igemm":
            return path, None
        return path, self._ig_plan("wgrad", x.dtype, (x.shape, gy.shape, kernel_hw),
                                   (stride, padding, dilation, groups))

    # ---- primitives -------------------------------------------------------------------
    def conv2d(self, x, w, bias, out_hw, stride, padding, dilation, groups):
        out_hw, stride, padding, dilation = (tuple(out_hw), tuple(stride), tuple(padding),
                                             tuple(dilation))
        key = ("fwd", x.dtype, w.dtype, None if bias is None else bias.dtype, x.shape,
               w.shape, out_hw, stride, padding, dilation, groups, settings_key())
        path, plan = self._route(key, lambda: self._conv2d_route(
            x, w, bias, out_hw, stride, padding, dilation, groups))
        if path is None:
            return super().conv2d(x, w, bias, out_hw, stride, padding, dilation, groups)
        x, w, bias = _contiguous(x), _contiguous(w), _contiguous(bias)
        if plan is not None:
            return self._ig_run_gemm(plan, x, w, bias, x.dtype)
        n, c, h, wd = x.shape
        k, cg, kh, kw = w.shape
        ho, wo = out_hw
        geo = self._geo((kh, kw), stride, padding, dilation)
        p, dtype = ho * wo, x.dtype
        if path == "depthwise":
            y = self._ew._new((n, k, ho, wo), dtype)
            self._conv_rows("st_depthwise_fwd", dtype, n * k, p, _ptr(x), _ptr(w), _ptr(bias),
                       _ptr(y), n, c, h, wd, k, ho, wo, *geo)
            return y
        r = c * kh * kw
        if groups == 1:
            cols = self._im2col_gpu(x, (kh, kw), out_hw, geo, True)
            y = self.matmul(w.reshape(k, r), cols)  # (N, K, P): NCHW already
            if bias is not None:
                self._conv_rows("st_add_channel_bias", dtype, n * k, p, _ptr(y), _ptr(bias), k, p)
            return y.reshape(n, k, ho, wo)
        cols = self._im2col_gpu(x, (kh, kw), out_hw, geo, False)
        yc = self.matmul(w.reshape(groups, k // groups, r // groups),
                         cols.reshape(groups, r // groups, n * p))  # (K, N, P)
        return self._swap01(yc, bias, k, n, p).reshape(n, k, ho, wo)

    def conv_transpose2d(self, y, w, bias, out_hw, stride, padding, dilation, groups):
        out_hw, stride, padding, dilation = (tuple(out_hw), tuple(stride), tuple(padding),
                                             tuple(dilation))
        key = ("dgrad", y.dtype, w.dtype, None if bias is None else bias.dtype, y.shape,
               w.shape, out_hw, stride, padding, dilation, groups, settings_key())
        path, plan = self._route(key, lambda: self._conv_transpose2d_route(
            y, w, bias, out_hw, stride, padding, dilation, groups))
        if path is None:
            return super().conv_transpose2d(y, w, bias, out_hw, stride, padding, dilation,
                                            groups)
        y, w, bias = _contiguous(y), _contiguous(w), _contiguous(bias)
        if plan is not None:
            return self._ig_run_gemm(plan, y, w, bias, y.dtype)
        n, k, ho, wo = y.shape
        _, cg, kh, kw = w.shape
        c = cg * groups
        h, wd = out_hw
        geo = self._geo((kh, kw), stride, padding, dilation)
        p, dtype = ho * wo, y.dtype
        dx = self._ew._new((n, c, h, wd), dtype)
        if path == "depthwise":
            self._conv_rows("st_depthwise_bwd_input", dtype, n * c, h * wd, _ptr(y), _ptr(w),
                       _ptr(bias), _ptr(dx), n, c, h, wd, k, ho, wo, *geo)
            return dx
        r = c * kh * kw
        if groups == 1:
            cols = self.matmul(w.reshape(k, r).T, y.reshape(n, k, p))  # (N, R, P)
            batch_major = 1
        else:
            yc = self._swap01(y, None, n, k, p)  # (K, N, P)
            cols = self.matmul(w.reshape(groups, k // groups, r // groups).transpose(0, 2, 1),
                               yc.reshape(groups, k // groups, n * p))  # (R, N, P)
            batch_major = 0
        self._conv_rows("st_col2im", dtype, n * c, h * wd, _ptr(cols), _ptr(bias), _ptr(dx), n, c,
                   h, wd, ho, wo, *geo, batch_major)
        return dx

    def conv2d_weight(self, x, gy, kernel_hw, stride, padding, dilation, groups):
        kernel_hw, stride, padding, dilation = (tuple(kernel_hw), tuple(stride),
                                                tuple(padding), tuple(dilation))
        key = ("wgrad", x.dtype, gy.dtype, x.shape, gy.shape, kernel_hw, stride, padding,
               dilation, groups, settings_key())
        path, plan = self._route(key, lambda: self._conv2d_weight_route(
            x, gy, kernel_hw, stride, padding, dilation, groups))
        if path is None:
            return super().conv2d_weight(x, gy, kernel_hw, stride, padding, dilation, groups)
        x, gy = _contiguous(x), _contiguous(gy)
        if plan is not None:
            return self._ig_run_wgrad(plan, x, gy)
        n, c, h, wd = x.shape
        k, ho, wo = gy.shape[1:]
        kh, kw = kernel_hw
        cg = c // groups
        geo = self._geo(kernel_hw, stride, padding, dilation)
        p = ho * wo
        if path == "depthwise":
            return self._depthwise_weight(x, gy, kernel_hw, geo)
        r = c * kh * kw
        cols = self._im2col_gpu(x, kernel_hw, (ho, wo), geo, False)  # (R, N, P)
        gyc = self._swap01(gy, None, n, k, p)  # (K, N, P)
        if groups == 1:
            dw = self.matmul(gyc.reshape(k, n * p), cols.reshape(r, n * p).T)
        else:
            dw = self.matmul(gyc.reshape(groups, k // groups, n * p),
                             cols.reshape(groups, r // groups, n * p).transpose(0, 2, 1))
        return dw.reshape(k, cg, kh, kw)

    def _depthwise_weight(self, x, gy, kernel_hw, geo):
        n, c, h, wd = x.shape
        k, ho, wo = gy.shape[1:]
        kh, kw = kernel_hw
        dtype = x.dtype
        maxk = 3 if max(kh, kw) <= 3 else 5 if max(kh, kw) <= 5 else 7
        # enough blocks to fill the GPU: chunks of the batch per output channel
        chunks = max(1, min(n, -(-4 * self.sm_count // k)))
        acc = np.float64 if dtype == np.float64 else np.float32
        partial = cupy.ndarray((chunks, k, kh * kw), acc)
        kern = self._conv_kernel(f"st_depthwise_bwd_weight_k{maxk}", dtype)
        kern(k * chunks, THREADS, _stream(), _ptr(x), _ptr(gy), _ptr(partial), n, c, h, wd, k,
             ho, wo, *geo, chunks)
        dw = self._ew._new((k, 1, kh, kw), dtype)
        count = k * kh * kw
        self._conv_kernel("st_depthwise_bwd_weight_finish", dtype)(
            grid_for(count, THREADS, self.sm_count * 8), THREADS, _stream(), _ptr(partial),
            _ptr(dw), chunks, count)
        return dw
