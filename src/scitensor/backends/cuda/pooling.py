"""CUDA pooling, batch-norm and dropout primitives: our kernels over the xp (CuPy) fallbacks.

:class:`CudaPoolingPrimitives` overrides primitives of
:class:`~scitensor.backends.xp_pooling.PoolingPrimitives` with the kernels of
``kernels/pooling.cu``, ``kernels/batchnorm.cu`` and ``kernels/dropout.cu`` (one NVRTC build
per dtype, ``-DST_DTYPE=n``, compiled on first use through :mod:`.compiler`). It must come
before ``ArrayBackend`` in the CUDA backend's bases; anything the kernels do not cover
(float64, more than 2^30 elements) goes to the xp version through ``super()``.

Everything device-specific goes through :meth:`_ptr`, :meth:`_stream`, :meth:`_kernel` and
:meth:`_sm_count`, so a test can run this exact host code on NumPy arrays with the kernels
compiled for the host. Nothing here synchronizes or copies to the host, so it works inside
CUDA graph capture.
"""

from __future__ import annotations

import math

import numpy as np

from ... import dtypes as dt
from ..xp_pooling import PoolingPrimitives, pool_output_size

__all__ = ["CudaPoolingPrimitives"]

_DTYPE_CODE = {np.dtype(np.float16): 0, dt.bfloat16.np: 1, np.dtype(np.float32): 2}
_INT_LIMIT = 1 << 30  # kernels index with int


class CudaPoolingPrimitives(PoolingPrimitives):
    """Mixin for the CUDA backend (``self.xp`` is CuPy)."""

    _threads = 256
    _modules: dict = {}  # (source, dtype code, device id) -> LoadedModule
    _sms: dict = {}

    # ---- device plumbing (overridden by the host emulation in the tests) ----------------
    def _ptr(self, a) -> int:
        return 0 if a is None else a.data.ptr

    def _stream(self) -> int:
        import cupy

        return cupy.cuda.get_current_stream().ptr

    def _sm_count(self, a) -> int:
        n = getattr(self, "sm_count", None)  # set by CudaBackend
        if n is None:
            dev = a.device.id
            n = self._sms.get(dev)
            if n is None:
                import cupy

                n = self._sms[dev] = int(
                    cupy.cuda.Device(dev).attributes["MultiProcessorCount"])
        return n

    def _kernel(self, source: str, like, name: str, signature: str):
        dev = getattr(self, "index", None)
        key = (source, _DTYPE_CODE[like.dtype], like.device.id if dev is None else dev)
        mod = self._modules.get(key)
        if mod is None:
            from .compiler import load_module

            mod = self._modules[key] = load_module(source, key[2], getattr(self, "arch", None),
                                                   options=(f"-DST_DTYPE={key[1]}",))
        return mod.function(name, signature)

    # ---- helpers ---------------------------------------------------------------------------
    def _launch(self, source, like, name, signature, items, *args, blocks=None):
        k = self._kernel(source, like, name, signature)
        if blocks is None:
            blocks = max(1, min(-(-items // self._threads), self._sm_count(like) * 16))
        k(blocks, self._threads, self._stream(), *args)

    @staticmethod
    def _ok(*arrays) -> bool:
        """Whether the kernels cover these arrays (dtype and int-indexable sizes)."""
        return all(a.dtype in _DTYPE_CODE and a.size < _INT_LIMIT for a in arrays)

    def _aligned(self, *arrays, to: int = 16) -> bool:
        return all(self._ptr(a) % to == 0 for a in arrays)

    def _k2s2_f32(self, x, h, w, oh, ow) -> bool:
        """Whether the float32 2x2-stride-2 kernel (4 input columns per thread) applies."""
        return (x.dtype == np.float32 and w % 4 == 0 and w == 2 * ow and h >= 2 * oh
                and self._aligned(x))

    def _f32(self, a):
        return None if a is None else self.xp.ascontiguousarray(self._cast(a, np.float32))

    # ---- max pooling ---------------------------------------------------------------------
    def max_pool2d(self, x, kernel, stride, padding, dilation, ceil_mode, with_argmax):
        if not self._ok(x):
            return super().max_pool2d(x, kernel, stride, padding, dilation, ceil_mode,
                                      with_argmax)
        xp = self.xp
        x = xp.ascontiguousarray(x)
        n, c, h, w = x.shape
        oh, ow = (pool_output_size(x.shape[2 + a], kernel[a], stride[a], padding[a],
                                   dilation[a], ceil_mode) for a in (0, 1))
        y = xp.empty((n, c, oh, ow), dtype=x.dtype)
        small = kernel[0] * kernel[1] <= 256
        arg = (xp.empty(y.shape, dtype=np.uint8 if small else np.int32)
               if with_argmax else None)
        planes = n * c
        if y.size == 0:
            return y, arg
        geom = (kernel, stride, padding, dilation)
        whole_rows = w % 8 == 0 and w == 2 * ow and self._aligned(x)
        if geom == ((3, 3), (2, 2), (1, 1), (1, 1)) and whole_rows:
            self._launch("pooling.cu", x, "st_max_pool2d_k3s2p1_fwd", "pppiiiii",
                         planes * oh * (ow // 4), self._ptr(x), self._ptr(y), self._ptr(arg),
                         planes, h, w, oh, ow)
        elif (geom == ((2, 2), (2, 2), (0, 0), (1, 1)) and self._k2s2_f32(x, h, w, oh, ow)
              and small):
            self._launch("pooling.cu", x, "st_pool2d_k2s2_fwd_f32q", "pppiiiiiif",
                         y.size // 2, self._ptr(x), self._ptr(y), self._ptr(arg), planes, h,
                         w, oh, ow, 0, 1.0)
        elif geom == ((2, 2), (2, 2), (0, 0), (1, 1)) and whole_rows and h >= 2 * oh:
            self._launch("pooling.cu", x, "st_pool2d_k2s2_fwd", "pppiiiiiif",
                         planes * oh * (ow // 4), self._ptr(x), self._ptr(y), self._ptr(arg),
                         planes, h, w, oh, ow, 0, 1.0)
        else:
            self._launch("pooling.cu", x, "st_max_pool2d_fwd_" + ("u8" if small else "i32"),
                         "ppp" + "i" * 13, y.size, self._ptr(x), self._ptr(y),
                         self._ptr(arg), planes, h, w, oh, ow, *kernel, *stride, *padding,
                         *dilation)
        return y, arg

    def max_pool2d_backward(self, g, argmax, input_hw, kernel, stride, padding, dilation):
        n, c = g.shape[:2]
        if not self._ok(g) or n * c * input_hw[0] * input_hw[1] >= _INT_LIMIT:
            return super().max_pool2d_backward(g, argmax, input_hw, kernel, stride, padding,
                                               dilation)
        xp = self.xp
        g, argmax = xp.ascontiguousarray(g), xp.ascontiguousarray(argmax)
        h, w = input_hw
        oh, ow = g.shape[2:]
        dx = xp.empty((n, c, h, w), dtype=g.dtype)
        planes = n * c
        if dx.size == 0:
            return dx
        geom = (kernel, stride, padding, dilation)
        small = argmax.dtype == np.uint8
        if small and geom == ((3, 3), (2, 2), (1, 1), (1, 1)) and w % 4 == 0:
            self._launch("pooling.cu", g, "st_max_pool2d_k3s2p1_bwd", "pppiiiii",
                         dx.size // 4, self._ptr(g), self._ptr(argmax), self._ptr(dx), planes,
                         h, w, oh, ow)
        elif small and geom == ((2, 2), (2, 2), (0, 0), (1, 1)) and w % 4 == 0:
            self._launch("pooling.cu", g, "st_pool2d_k2s2_bwd", "pppiiiiiif", dx.size // 4,
                         self._ptr(g), self._ptr(argmax), self._ptr(dx), planes, h, w, oh, ow,
                         0, 1.0)
        else:
            self._launch("pooling.cu", g, "st_max_pool2d_bwd_" + ("u8" if small else "i32"),
                         "ppp" + "i" * 13, dx.size, self._ptr(g), self._ptr(argmax),
                         self._ptr(dx), planes, h, w, oh, ow, *kernel, *stride, *padding,
                         *dilation)
        return dx

    # ---- average pooling -------------------------------------------------------------------
    @staticmethod
    def _avg_fast(kernel, stride, padding, h, w, oh, ow) -> bool:
        """2x2 stride 2 windows that are all whole (divisor 4 whatever count_include_pad)."""
        return (kernel == (2, 2) and stride == (2, 2) and padding == (0, 0)
                and w == 2 * ow and h >= 2 * oh)

    def avg_pool2d(self, x, kernel, stride, padding, ceil_mode, count_include_pad,
                   divisor_override):
        if not self._ok(x):
            return super().avg_pool2d(x, kernel, stride, padding, ceil_mode,
                                      count_include_pad, divisor_override)
        xp = self.xp
        x = xp.ascontiguousarray(x)
        n, c, h, w = x.shape
        oh, ow = (pool_output_size(x.shape[2 + a], kernel[a], stride[a], padding[a], 1,
                                   ceil_mode) for a in (0, 1))
        y = xp.empty((n, c, oh, ow), dtype=x.dtype)
        if y.size == 0:
            return y
        div = int(divisor_override or 0)
        if (self._avg_fast(kernel, stride, padding, h, w, oh, ow)
                and self._k2s2_f32(x, h, w, oh, ow)):
            self._launch("pooling.cu", x, "st_pool2d_k2s2_fwd_f32q", "pppiiiiiif",
                         y.size // 2, self._ptr(x), self._ptr(y), 0, n * c, h, w, oh, ow, 1,
                         float(div or 4))
        elif (self._avg_fast(kernel, stride, padding, h, w, oh, ow) and w % 8 == 0
                and self._aligned(x)):
            self._launch("pooling.cu", x, "st_pool2d_k2s2_fwd", "pppiiiiiif",
                         y.size // 4, self._ptr(x), self._ptr(y), 0, n * c, h, w, oh, ow, 1,
                         float(div or 4))
        else:
            self._launch("pooling.cu", x, "st_avg_pool2d_fwd", "pp" + "i" * 13, y.size,
                         self._ptr(x), self._ptr(y), n * c, h, w, oh, ow, *kernel, *stride,
                         *padding, int(bool(count_include_pad)), div)
        return y

    def avg_pool2d_backward(self, g, input_hw, kernel, stride, padding, count_include_pad,
                            divisor_override):
        n, c = g.shape[:2]
        if not self._ok(g) or n * c * input_hw[0] * input_hw[1] >= _INT_LIMIT:
            return super().avg_pool2d_backward(g, input_hw, kernel, stride, padding,
                                               count_include_pad, divisor_override)
        xp = self.xp
        g = xp.ascontiguousarray(g)
        h, w = input_hw
        oh, ow = g.shape[2:]
        dx = xp.empty((n, c, h, w), dtype=g.dtype)
        if dx.size == 0:
            return dx
        div = int(divisor_override or 0)
        if self._avg_fast(kernel, stride, padding, h, w, oh, ow) and w % 4 == 0:
            self._launch("pooling.cu", g, "st_pool2d_k2s2_bwd", "pppiiiiiif", dx.size // 4,
                         self._ptr(g), 0, self._ptr(dx), n * c, h, w, oh, ow, 1,
                         float(div or 4))
        else:
            self._launch("pooling.cu", g, "st_avg_pool2d_bwd", "pp" + "i" * 13, dx.size,
                         self._ptr(g), self._ptr(dx), n * c, h, w, oh, ow, *kernel, *stride,
                         *padding, int(bool(count_include_pad)), div)
        return dx

    # ---- adaptive average pooling ----------------------------------------------------------
    def adaptive_avg_pool2d(self, x, out_hw):
        if not self._ok(x):
            return super().adaptive_avg_pool2d(x, out_hw)
        xp = self.xp
        x = xp.ascontiguousarray(x)
        n, c, h, w = x.shape
        y = xp.empty((n, c) + tuple(out_hw), dtype=x.dtype)
        if y.size == 0:
            return y
        if tuple(out_hw) == (1, 1):  # global pooling: one warp per plane
            vec8 = int((h * w) % 8 == 0 and self._aligned(x))
            self._launch("pooling.cu", x, "st_global_avg_pool2d_fwd", "ppiii", n * c * 32,
                         self._ptr(x), self._ptr(y), n * c, h * w, vec8)
        else:
            self._launch("pooling.cu", x, "st_adaptive_avg_pool2d_fwd", "ppiiiii", y.size,
                         self._ptr(x), self._ptr(y), n * c, h, w, *out_hw)
        return y

    def adaptive_avg_pool2d_backward(self, g, input_hw):
        n, c = g.shape[:2]
        if not self._ok(g) or n * c * input_hw[0] * input_hw[1] >= _INT_LIMIT:
            return super().adaptive_avg_pool2d_backward(g, input_hw)
        xp = self.xp
        g = xp.ascontiguousarray(g)
        dx = xp.empty((n, c) + tuple(input_hw), dtype=g.dtype)
        if dx.size:
            self._launch("pooling.cu", g, "st_adaptive_avg_pool2d_bwd", "ppiiiii", dx.size,
                         self._ptr(g), self._ptr(dx), n * c, *input_hw, *g.shape[2:])
        return dx

    # ---- batch norm ------------------------------------------------------------------------
    def _bn_layout(self, x, *others):
        """``(N, C, L, vec, S)``: vec when L splits into 16-byte vectors on aligned arrays;
        S blocks per channel, enough for a full wave of the GPU."""
        n, c = x.shape[:2]
        length = math.prod(x.shape[2:])
        per_vec = 16 // x.dtype.itemsize
        vec = int(length % per_vec == 0 and self._aligned(x, *others))
        items = n * (length // per_vec if vec else length)
        target = self._sm_count(x) * (2048 // self._threads)
        splits = max(1, min(-(-target // c), -(-items // (self._threads * 4)), 1024))
        return n, c, length, vec, splits

    def batch_norm_train_forward(self, x, weight, bias, eps):
        if not self._ok(x) or x.size == 0:
            return super().batch_norm_train_forward(x, weight, bias, eps)
        xp = self.xp
        x = xp.ascontiguousarray(x)
        w, b = self._f32(weight), self._f32(bias)
        n, c, length, vec, splits = self._bn_layout(x)
        f32 = np.float32
        part = xp.empty(3 * c * splits, dtype=f32)
        self._launch("batchnorm.cu", x, "st_bn_stats_partial", "ppiiiii", 0, self._ptr(x),
                     self._ptr(part), n, c, length, splits, vec, blocks=c * splits)
        mean, var, invstd, scale = (xp.empty(c, dtype=f32) for _ in range(4))
        self._launch("batchnorm.cu", x, "st_bn_stats_finalize", "piifppppp", c,
                     self._ptr(part), splits, c, float(eps), self._ptr(w), self._ptr(mean),
                     self._ptr(var), self._ptr(invstd), self._ptr(scale))
        y = xp.empty(x.shape, dtype=x.dtype)
        self._launch("batchnorm.cu", x, "st_bn_apply", "pppppiiii",
                     x.size // (16 // x.dtype.itemsize) if vec else x.size, self._ptr(x),
                     self._ptr(y), self._ptr(mean), self._ptr(scale), self._ptr(b), c, length,
                     x.size, vec)
        return y, mean, var, invstd

    def batch_norm_backward(self, g, x, mean, invstd, weight):
        if not self._ok(x, g) or x.size == 0 or mean.dtype != np.float32:
            return super().batch_norm_backward(g, x, mean, invstd, weight)
        xp = self.xp
        x = xp.ascontiguousarray(x)
        g = xp.ascontiguousarray(self._cast(g, x.dtype))
        mean, invstd, w = self._f32(mean), self._f32(invstd), self._f32(weight)
        n, c, length, vec, splits = self._bn_layout(x, g)
        f32 = np.float32
        part = xp.empty(2 * c * splits, dtype=f32)
        self._launch("batchnorm.cu", x, "st_bn_bwd_partial", "ppppiiiii", 0, self._ptr(g),
                     self._ptr(x), self._ptr(mean), self._ptr(part), n, c, length, splits, vec,
                     blocks=c * splits)
        dweight, dbias, coef_a, coef_b, coef_d = (xp.empty(c, dtype=f32) for _ in range(5))
        self._launch("batchnorm.cu", x, "st_bn_bwd_finalize", "piifppppppp", c,
                     self._ptr(part), splits, c, float(n * length), self._ptr(invstd),
                     self._ptr(w), self._ptr(dweight), self._ptr(dbias), self._ptr(coef_a),
                     self._ptr(coef_b), self._ptr(coef_d))
        dx = xp.empty(x.shape, dtype=x.dtype)
        self._launch("batchnorm.cu", x, "st_bn_bwd_apply", "pppppppiiii",
                     x.size // (16 // x.dtype.itemsize) if vec else x.size, self._ptr(g),
                     self._ptr(x), self._ptr(dx), self._ptr(mean), self._ptr(coef_a),
                     self._ptr(coef_b), self._ptr(coef_d), c, length, x.size, vec)
        return dx, dweight, dbias

    def channel_affine(self, x, scale, shift):
        if not self._ok(x) or x.size == 0:
            return super().channel_affine(x, scale, shift)
        xp = self.xp
        x = xp.ascontiguousarray(x)
        scale, shift = self._f32(scale), self._f32(shift)
        c, length = x.shape[1], math.prod(x.shape[2:])
        per_vec = 16 // x.dtype.itemsize
        vec = int(length % per_vec == 0 and self._aligned(x))
        y = xp.empty(x.shape, dtype=x.dtype)
        self._launch("batchnorm.cu", x, "st_bn_apply", "pppppiiii",
                     x.size // per_vec if vec else x.size, self._ptr(x), self._ptr(y), 0,
                     self._ptr(scale), self._ptr(shift), c, length, x.size, vec)
        return y

    # ---- dropout ----------------------------------------------------------------------------
    def dropout_apply(self, x, mask, scale):
        if not self._ok(x) or x.size == 0:
            return super().dropout_apply(x, mask, scale)
        xp = self.xp
        x, mask = xp.ascontiguousarray(x), xp.ascontiguousarray(mask)
        per_vec = 16 // x.dtype.itemsize
        vec = int(x.size % per_vec == 0 and self._aligned(x)
                  and self._aligned(mask, to=per_vec))
        y = xp.empty(x.shape, dtype=x.dtype)
        self._launch("dropout.cu", x, "st_dropout_apply", "pppfii",
                     x.size // per_vec if vec else x.size, self._ptr(x), self._ptr(mask),
                     self._ptr(y), float(scale), x.size, vec)
        return y
