"""CUDA pooling, batch-norm and dropout primitives: our kernels over the xp (CuPy) fallbacks.

:class:`CudaPoolingPrimitives` overrides primitives of
:class:`~scitensor.backends.xp_pooling.PoolingPrimitives` with the kernels of
``kernels/pooling.cu``, ``kernels/batchnorm.cu`` and ``kernels/dropout.cu`` (one NVRTC build
per dtype, ``-DST_DTYPE=n``, compiled on first use through :mod:`.compiler`). It must come
before ``ArrayBackend`` in the CUDA backend's bases; anything the kernels do not cover
(float64, more than 2^30 elements) goes to the xp version through ``super()``.

Everything device-specific goes through :meth:`_ptr`, :meth:`_stream`, :meth:`_kernel`,
:meth:`_sm_count` and :meth:`_empty`, so a test can run this exact host code on NumPy arrays
with the kernels compiled for the host. Nothing here synchronizes or copies to the host, so it
works inside CUDA graph capture.

Host cost matters here (a CNN step makes ~30 of these launches): outputs come from the
backend's direct array construction, each pass's small float32 temporaries share one
allocation (addressed by pointer, returned statistics as views), and the running statistics
and batch counter of a training step are one launch.
"""

from __future__ import annotations

import math

import numpy as np

from ... import dtypes as dt
from ..xp_pooling import PoolingPrimitives, pool_output_size

__all__ = ["CudaPoolingPrimitives"]

_DTYPE_CODE = {np.dtype(np.float16): 0, dt.bfloat16.np: 1, np.dtype(np.float32): 2}
_F32 = np.dtype(np.float32)
_I64 = np.dtype(np.int64)
_U8 = np.dtype(np.uint8)
_I32 = np.dtype(np.int32)
_INT_LIMIT = 1 << 30  # kernels index with int


class CudaPoolingPrimitives(PoolingPrimitives):
    """Mixin for the CUDA backend (``self.xp`` is CuPy)."""

    _threads = 256
    _modules: dict = {}  # (source, dtype code, device id) -> LoadedModule
    _launchers: dict = {}  # (source, kernel, dtype, device id) -> Kernel
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
        if dev is None:
            dev = like.device.id
        key = (source, name, like.dtype, dev)
        k = self._launchers.get(key)  # one lookup per launch once warm
        if k is None:
            code = _DTYPE_CODE[like.dtype]
            mod = self._modules.get((source, code, dev))
            if mod is None:
                from .compiler import load_module

                mod = self._modules[(source, code, dev)] = load_module(
                    source, dev, getattr(self, "arch", None), options=(f"-DST_DTYPE={code}",))
            k = self._launchers[key] = mod.function(name, signature)
        return k

    def _empty(self, shape, dtype):
        """An uninitialised C-contiguous array: the CUDA backend's direct construction
        (cheaper than ``cupy.empty``; the tests' NaN poisoning covers it), else ``xp.empty``."""
        ew = getattr(self, "_ew", None)
        if ew is None:
            return self.xp.empty(shape, dtype=dtype)
        return ew._new(shape, dtype)

    # ---- helpers ---------------------------------------------------------------------------
    def _launch(self, source, like, name, signature, items, *args, blocks=None):
        k = self._kernel(source, like, name, signature)
        if blocks is None:
            blocks = -(-items // self._threads)
            cap = self._sm_count(like) * 16
            if blocks > cap:
                blocks = cap
            elif blocks < 1:
                blocks = 1
        k(blocks, self._threads, self._stream(), *args)

    @staticmethod
    def _ok(*arrays) -> bool:
        """Whether the kernels cover these arrays (dtype and int-indexable sizes)."""
        return all(a.dtype in _DTYPE_CODE and a.size < _INT_LIMIT for a in arrays)

    def _aligned(self, *arrays, to: int = 16) -> bool:
        return all(self._ptr(a) % to == 0 for a in arrays)

    def _contiguous(self, a):
        """``a`` itself when C-contiguous, else a contiguous copy."""
        return a if a.flags.c_contiguous else self.xp.ascontiguousarray(a)

    def _k2s2_f32(self, x, h, w, oh, ow) -> bool:
        """Whether the float32 2x2-stride-2 kernel (4 input columns per thread) applies."""
        return (x.dtype == _F32 and w % 4 == 0 and w == 2 * ow and h >= 2 * oh
                and self._aligned(x))

    def _f32(self, a):
        """A (C,) parameter as contiguous float32 (None stays None)."""
        if a is None:
            return None
        if a.dtype != _F32:
            a = self._cast(a, _F32)
        return self._contiguous(a)

    # ---- max pooling ---------------------------------------------------------------------
    def max_pool2d(self, x, kernel, stride, padding, dilation, ceil_mode, with_argmax):
        if not self._ok(x):
            return super().max_pool2d(x, kernel, stride, padding, dilation, ceil_mode,
                                      with_argmax)
        x = self._contiguous(x)
        n, c, h, w = x.shape
        oh, ow = (pool_output_size(x.shape[2 + a], kernel[a], stride[a], padding[a],
                                   dilation[a], ceil_mode) for a in (0, 1))
        y = self._empty((n, c, oh, ow), x.dtype)
        small = kernel[0] * kernel[1] <= 256
        arg = (self._empty(y.shape, _U8 if small else _I32)
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
        g, argmax = self._contiguous(g), self._contiguous(argmax)
        h, w = input_hw
        oh, ow = g.shape[2:]
        dx = self._empty((n, c, h, w), g.dtype)
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
        x = self._contiguous(x)
        n, c, h, w = x.shape
        oh, ow = (pool_output_size(x.shape[2 + a], kernel[a], stride[a], padding[a], 1,
                                   ceil_mode) for a in (0, 1))
        y = self._empty((n, c, oh, ow), x.dtype)
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
        g = self._contiguous(g)
        h, w = input_hw
        oh, ow = g.shape[2:]
        dx = self._empty((n, c, h, w), g.dtype)
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
        x = self._contiguous(x)
        n, c, h, w = x.shape
        y = self._empty((n, c) + tuple(out_hw), x.dtype)
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
        g = self._contiguous(g)
        dx = self._empty((n, c) + tuple(input_hw), g.dtype)
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
        x = self._contiguous(x)
        w, b = self._f32(weight), self._f32(bias)
        n, c, length, vec, splits = self._bn_layout(x)
        # one float32 scratch array: mean, var, invstd, scale (C each), then the 3*C*S
        # partials; the first three are returned (views), the rest is read by pointer only
        stats = self._empty((4 * c + 3 * c * splits,), _F32)
        y = self._empty(x.shape, x.dtype)
        base = self._ptr(stats)
        scale, part = base + 12 * c, base + 16 * c
        self._launch("batchnorm.cu", x, "st_bn_stats_partial", "ppiiiii", 0, self._ptr(x),
                     part, n, c, length, splits, vec, blocks=c * splits)
        self._launch("batchnorm.cu", x, "st_bn_stats_finalize", "piifppppp", c, part, splits,
                     c, float(eps), self._ptr(w), base, base + 4 * c, base + 8 * c, scale)
        self._launch("batchnorm.cu", x, "st_bn_apply", "pppppiiii",
                     x.size // (16 // x.dtype.itemsize) if vec else x.size, self._ptr(x),
                     self._ptr(y), base, scale, self._ptr(b), c, length, x.size, vec)
        return y, stats[:c], stats[c:2 * c], stats[2 * c:3 * c]

    def batch_norm_backward(self, g, x, mean, invstd, weight):
        if not self._ok(x, g) or x.size == 0 or mean.dtype != _F32:
            return super().batch_norm_backward(g, x, mean, invstd, weight)
        x = self._contiguous(x)
        g = self._contiguous(g if g.dtype == x.dtype else self._cast(g, x.dtype))
        mean, invstd, w = self._f32(mean), self._f32(invstd), self._f32(weight)
        n, c, length, vec, splits = self._bn_layout(x, g)
        # one float32 scratch array: dweight, dbias (returned), the coefficients a, b, d
        # (C each), then the 2*C*S partials
        work = self._empty((5 * c + 2 * c * splits,), _F32)
        dx = self._empty(x.shape, x.dtype)
        base = self._ptr(work)
        coef_a, coef_b, coef_d, part = (base + 4 * c * i for i in (2, 3, 4, 5))
        self._launch("batchnorm.cu", x, "st_bn_bwd_partial", "ppppiiiii", 0, self._ptr(g),
                     self._ptr(x), self._ptr(mean), part, n, c, length, splits, vec,
                     blocks=c * splits)
        self._launch("batchnorm.cu", x, "st_bn_bwd_finalize", "piifppppppp", c, part, splits,
                     c, float(n * length), self._ptr(invstd), self._ptr(w), base,
                     base + 4 * c, coef_a, coef_b, coef_d)
        self._launch("batchnorm.cu", x, "st_bn_bwd_apply", "pppppppiiii",
                     x.size // (16 // x.dtype.itemsize) if vec else x.size, self._ptr(g),
                     self._ptr(x), self._ptr(dx), self._ptr(mean), coef_a, coef_b, coef_d, c,
                     length, x.size, vec)
        return dx, work[:c], work[c:2 * c]

    def batch_norm_update_running_inplace(self, running_mean, running_var, mean, var,
                                          momentum, count, num_batches=None):
        """One launch (``st_bn_update_running``) for both running statistics and the batch
        counter; float64 running arrays, non-float32 statistics and non-contiguous arrays
        take the xp path."""
        running = [a for a in (running_mean, running_var) if a is not None]
        if not (mean.dtype == _F32 and var.dtype == _F32 and mean.flags.c_contiguous
                and var.flags.c_contiguous
                and all(a.dtype in _DTYPE_CODE and a.flags.c_contiguous for a in running)
                and (num_batches is None or (num_batches.dtype == _I64
                                             and num_batches.size == 1
                                             and num_batches.flags.c_contiguous))):
            return super().batch_norm_update_running_inplace(
                running_mean, running_var, mean, var, momentum, count, num_batches)
        c = mean.size
        m = float(momentum)
        self._launch("batchnorm.cu", mean, "st_bn_update_running", "ppppiiifffp", c,
                     self._ptr(running_mean), self._ptr(running_var), self._ptr(mean),
                     self._ptr(var), c,
                     2 if running_mean is None else _DTYPE_CODE[running_mean.dtype],
                     2 if running_var is None else _DTYPE_CODE[running_var.dtype],
                     1.0 - m, m, count / (count - 1), self._ptr(num_batches))
        return None

    def channel_affine(self, x, scale, shift):
        if not self._ok(x) or x.size == 0:
            return super().channel_affine(x, scale, shift)
        x = self._contiguous(x)
        scale, shift = self._f32(scale), self._f32(shift)
        c, length = x.shape[1], math.prod(x.shape[2:])
        per_vec = 16 // x.dtype.itemsize
        vec = int(length % per_vec == 0 and self._aligned(x))
        y = self._empty(x.shape, x.dtype)
        self._launch("batchnorm.cu", x, "st_bn_apply", "pppppiiii",
                     x.size // per_vec if vec else x.size, self._ptr(x), self._ptr(y), 0,
                     self._ptr(scale), self._ptr(shift), c, length, x.size, vec)
        return y

    # ---- dropout ----------------------------------------------------------------------------
    def dropout_apply(self, x, mask, scale):
        if not self._ok(x) or x.size == 0:
            return super().dropout_apply(x, mask, scale)
        x, mask = self._contiguous(x), self._contiguous(mask)
        per_vec = 16 // x.dtype.itemsize
        vec = int(x.size % per_vec == 0 and self._aligned(x)
                  and self._aligned(mask, to=per_vec))
        y = self._empty(x.shape, x.dtype)
        self._launch("dropout.cu", x, "st_dropout_apply", "pppfii",
                     x.size // per_vec if vec else x.size, self._ptr(x), self._ptr(mask),
                     self._ptr(y), float(scale), x.size, vec)
        return y
