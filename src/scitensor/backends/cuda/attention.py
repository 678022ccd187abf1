"""CUDA attention primitives: our FlashAttention-2 style kernels (``kernels/attention_*.cu``).

:class:`CudaAttentionPrimitives` overrides ``attention_forward`` / ``attention_backward`` of
:class:`~scitensor.backends.xp_attention.AttentionPrimitives` for float16, bfloat16 and
float32 inputs with head dim 32, 64 or 128; anything else (float64, other head dims) goes to
the xp composition. float32 runs on tf32 tensor cores: one tf32 product under
``st.set_matmul_precision("tf32")``, else 3xTF32 (a big + small split of each operand, about
float32 accuracy) for the default ``"highest"``.

Each (element type, head dim, tile configuration) is one NVRTC module compiled on first use
with ``-D`` options (cached on disk by :mod:`.compiler`); the forward and backward each hold
a causal and a non-causal kernel. Tiles come from :data:`DEFAULT_CONFIGS`, overridable per
process with :func:`set_attention_config` (the benchmark's sweep uses it) or the environment
variable ``SCITENSOR_ATTENTION_CONFIG="fwd_warps,fwd_bn,bwd_warps,bwd_bm[,fwd_mw]"``.

Extra device memory: the forward keeps ``lse`` (B·H·Sq float32); the backward allocates
``delta`` (B·H·Sq float32) and a float32 dQ accumulator (the size of q in float32).

Example:
    >>> import scitensor as st                                   # doctest: +SKIP
    >>> from scitensor.ops.attention import scaled_dot_product_attention
    >>> q = st.randn(2, 8, 1024, 64, device="cuda", dtype=st.bfloat16)   # doctest: +SKIP
    >>> scaled_dot_product_attention(q, q, q, causal=True).shape   # doctest: +SKIP
    (2, 8, 1024, 64)
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from dataclasses import dataclass

import cupy
import numpy as np
from cupy_backends.cuda.api import driver as _driver

from ... import dtypes as dt
from .compiler import load_module
from .errors import KernelLaunchError

__all__ = ["DEFAULT_CONFIGS", "HEAD_DIMS", "AttentionConfig", "CudaAttentionPrimitives",
           "bwd_smem_bytes", "fwd_smem_bytes", "set_attention_config"]

HEAD_DIMS = (32, 64, 128)
# kernel element-type codes (ST_ATTN_TYPE): bf16, f16, f32 as one tf32 product, f32 as 3xTF32
BF16, F16, TF32, TF32X3 = 0, 1, 2, 3
_ES = {BF16: 2, F16: 2, TF32: 4, TF32X3: 4}
_MAX_DYN_SMEM_ATTR = 8  # CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
_LOG2E = 1.4426950408889634


@dataclass(frozen=True)
class AttentionConfig:
    """Tile sizes: forward CTAs of ``fwd_warps`` warps with ``16 * fwd_mw`` query rows each,
    over key tiles of ``fwd_bn``; backward CTAs of ``bwd_warps`` warps (``16 * bwd_warps``
    keys) over query tiles of ``bwd_bm`` rows, with the dK/dV kernel ``bwd_version`` (1: each
    warp owns 16 keys in every product; 2: FlashAttention-2's per-product warp layouts, 16-bit
    types only, see ``attention_bwd.cu``); ``fwd_lazy_rescale`` 1 skips the forward's rescale
    of O on tiles where no row max of the warp moved."""

    fwd_warps: int = 4
    fwd_bn: int = 64
    bwd_warps: int = 4
    bwd_bm: int = 64
    fwd_mw: int = 1
    bwd_version: int = 1
    fwd_lazy_rescale: int = 0

    @property
    def fwd_bm(self) -> int:
        return 16 * self.fwd_mw * self.fwd_warps

    def check(self, d: int, code: int | None = None) -> None:
        """Raise ``ValueError`` unless the tiles fit head dim ``d`` (and type ``code``)."""
        mch = self.bwd_bm // 16
        ok = (self.fwd_warps in (1, 2, 4, 8) and self.fwd_bn % 16 == 0 and self.fwd_bn > 0
              and self.fwd_mw in (1, 2)
              and self.bwd_warps in (1, 2, 4, 8) and self.bwd_bm % 16 == 0 and mch >= 1
              and self.bwd_warps % mch == 0 and (d // (self.bwd_warps // mch)) % 16 == 0
              and self.bwd_version in (1, 2) and self.fwd_lazy_rescale in (0, 1))
        if ok and self.bwd_version == 2:  # mirrors STA_BWD2_DQW in attention_bwd.cu
            mq = self.bwd_bm // 32
            dqw = d * self.bwd_bm // (32 * self.bwd_warps)
            ok = (code in (None, BF16, F16) and self.bwd_bm % 32 == 0 and self.bwd_warps % 2 == 0
                  and self.bwd_warps % mq == 0 and dqw >= 16 and dqw % 16 == 0)
        if not ok:
            raise ValueError(f"attention: tile configuration {self} does not fit head_dim {d}"
                             + ("" if code is None else f" and element type code {code}"))


# (type code, head dim) -> tiles. Registers (ptxas, sm_90) stay under 255 without spills for
# these; see docs/kernels/attention.md for the reasoning and the measured alternatives.
DEFAULT_CONFIGS: dict[tuple[int, int], AttentionConfig] = {}
for _code in (BF16, F16):
    DEFAULT_CONFIGS[(_code, 32)] = AttentionConfig(8, 64, 8, 64, 1)
    DEFAULT_CONFIGS[(_code, 64)] = AttentionConfig(4, 64, 8, 64, 2)
    DEFAULT_CONFIGS[(_code, 128)] = AttentionConfig(4, 64, 8, 64, 2, 2, 1)
for _code in (TF32, TF32X3):
    DEFAULT_CONFIGS[(_code, 32)] = AttentionConfig(4, 64, 4, 64)
    DEFAULT_CONFIGS[(_code, 64)] = AttentionConfig(4, 64, 4, 32)
    DEFAULT_CONFIGS[(_code, 128)] = AttentionConfig(4, 32, 4, 32)
del _code
_OVERRIDES: dict[tuple[int, int], AttentionConfig] = {}


def set_attention_config(code: int, d: int, config: AttentionConfig | None) -> None:
    """Use ``config`` for element type ``code`` and head dim ``d`` (``None``: the default)."""
    if config is None:
        _OVERRIDES.pop((code, d), None)
    else:
        config.check(d, code)
        _OVERRIDES[(code, d)] = config


def config_for(code: int, d: int) -> AttentionConfig:
    # fwd_warps,fwd_bn,bwd_warps,bwd_bm[,fwd_mw[,bwd_version[,fwd_lazy_rescale]]]
    env = os.environ.get("SCITENSOR_ATTENTION_CONFIG")
    if env:
        cfg = AttentionConfig(*(int(x) for x in env.split(",")))
        cfg.check(d, code)
        return cfg
    return _OVERRIDES.get((code, d)) or DEFAULT_CONFIGS[(code, d)]


def fwd_smem_bytes(es: int, d: int, warps: int, bn: int, mw: int = 1) -> int:
    """Dynamic shared memory of the forward kernel (mirrors attention_fwd.cu)."""
    return (16 * mw * warps + 4 * bn) * (d * es + 16)


def bwd_smem_bytes(es: int, d: int, warps: int, bm: int, version: int = 1) -> int:
    """Dynamic shared memory of the dK/dV kernel (mirrors attention_bwd.cu); version 2 keeps
    both P^T and dS^T in shared memory."""
    bn = 16 * warps
    return (2 * bn + 4 * bm) * (d * es + 16) + version * bn * (bm * es + 16) + 16 * bm


class _Launcher:
    """One kernel with typed parameter slots, a 1-D grid and dynamic shared memory."""

    _CT = {"p": ctypes.c_void_p, "i": ctypes.c_int, "q": ctypes.c_longlong, "f": ctypes.c_float}

    def __init__(self, kernel):
        self.name = kernel.name
        self._kernel = kernel  # a launch.Kernel: keeps the CUDA function and module alive
        self.ptr = kernel.ptr
        signature = kernel.signature
        self._slots = tuple(self._CT[c]() for c in signature)
        self._params = (ctypes.c_void_p * len(signature))(
            *[ctypes.addressof(s) for s in self._slots])
        self._smem_limit = 48 * 1024
        self._lock = threading.Lock()

    def __call__(self, grid: int, threads: int, smem: int, stream: int, *args) -> None:
        with self._lock:
            if smem > self._smem_limit:
                _driver.funcSetAttribute(self.ptr, _MAX_DYN_SMEM_ATTR, smem)
                self._smem_limit = smem
            for slot, value in zip(self._slots, args):
                slot.value = value
            try:
                _driver.launchKernel(self.ptr, grid, 1, 1, threads, 1, 1, smem, stream,
                                     ctypes.addressof(self._params), 0)
            except Exception as e:
                raise KernelLaunchError(f"launching {self.name} (grid {grid}, block {threads}, "
                                        f"shared memory {smem} B) failed: {e}") from e


class _Kernels:
    """The six kernels of one (type, head dim, tiles) configuration on one device."""

    def __init__(self, device_id: int, arch: int, code: int, d: int, cfg: AttentionConfig):
        base = (f"-DST_ATTN_TYPE={code}", f"-DST_ATTN_D={d}")
        fwd = load_module("attention_fwd.cu", device_id, arch, options=(
            *base, f"-DST_ATTN_WARPS={cfg.fwd_warps}", f"-DST_ATTN_BN={cfg.fwd_bn}",
            f"-DST_ATTN_MW={cfg.fwd_mw}", f"-DST_ATTN_LAZY_RESCALE={cfg.fwd_lazy_rescale}"))
        bwd = load_module("attention_bwd.cu", device_id, arch, options=(
            *base, f"-DST_ATTN_WARPS={cfg.bwd_warps}", f"-DST_ATTN_BM={cfg.bwd_bm}"))

        def get(mod, name, sig):
            return _Launcher(mod.function(name, sig))

        fsig, bsig = "pppppiiiif", "pppppppppiiiiff"
        self.fwd = (get(fwd, "st_attention_fwd", fsig), get(fwd, "st_attention_fwd_causal", fsig))
        dkdv = "st_attention_bwd_dkdv2" if cfg.bwd_version == 2 else "st_attention_bwd_dkdv"
        self.dkdv = (get(bwd, dkdv, bsig), get(bwd, dkdv + "_causal", bsig))
        self.pre = get(bwd, "st_attention_bwd_pre", "ppppq")
        self.convert = get(bwd, "st_attention_bwd_convert", "ppqf")


class CudaAttentionPrimitives:
    """Mixin for the CUDA backend (needs ``self.index``, ``self.arch``, ``self.sm_count``,
    ``self.empty``); place it before ``ArrayBackend`` in the bases so it overrides the
    xp attention primitives and can fall back to them with ``super()``."""

    def _attention_code(self, q, k, v):
        """The kernel type code for these inputs, or ``None`` for the xp fallback."""
        d = q.shape[-1]
        if d not in HEAD_DIMS or not (q.dtype == k.dtype == v.dtype):
            return None
        if q.dtype == dt.bfloat16.np:
            return BF16
        if q.dtype == np.float16:
            return F16
        if q.dtype == np.float32:
            from ...precision import MATMUL_PRECISION

            return TF32 if MATMUL_PRECISION[0] == "tf32" else TF32X3
        return None

    def _attention_dense(self, x):
        """``x`` as a C-contiguous array (the kernels index rows of D elements)."""
        return x if x.flags.c_contiguous else self.ascontiguous(x)

    def _attention_kernels(self, code: int, d: int):
        cfg = config_for(code, d)
        cache = self.__dict__.setdefault("_attention_cache", {})
        key = (code, d, cfg)
        kern = cache.get(key)
        if kern is None:
            kern = cache[key] = _Kernels(self.index, self.arch, code, d, cfg)
        return kern, cfg

    def attention_forward(self, q, k, v, causal, scale):
        with self._attention_device():
            return self._attention_forward(q, k, v, causal, scale)

    def attention_backward(self, g, q, k, v, out, lse, causal, scale, grads_out=None):
        with self._attention_device():
            return self._attention_backward(g, q, k, v, out, lse, causal, scale, grads_out)

    def _attention_device(self):
        """This backend's GPU as the current device (several GPUs: launches go to it)."""
        dev = getattr(self, "cp_device", None)
        return dev if dev is not None else contextlib.nullcontext()

    def _attention_forward(self, q, k, v, causal, scale):
        code = self._attention_code(q, k, v)
        b, h, sq, d = q.shape
        hkv, sk = k.shape[1], k.shape[2]
        if code is None or sq == 0 or sk == 0 or b * h == 0 or not 0 < scale < np.inf:
            # the kernel folds a positive scale into its softmax (attention_fwd.cu)
            return super().attention_forward(q, k, v, causal, scale)
        q, k, v = (self._attention_dense(x) for x in (q, k, v))
        kern, cfg = self._attention_kernels(code, d)
        out = self.empty(q.shape, dt.from_numpy_dtype(q.dtype))
        lse = self.empty((b, h, sq), dt.float32)
        grid = -(-sq // cfg.fwd_bm) * b * h
        smem = fwd_smem_bytes(_ES[code], d, cfg.fwd_warps, cfg.fwd_bn, cfg.fwd_mw)
        kern.fwd[bool(causal)](grid, 32 * cfg.fwd_warps, smem, _stream(),
                               q.data.ptr, k.data.ptr, v.data.ptr, out.data.ptr, lse.data.ptr,
                               h, hkv, sq, sk, float(scale) * _LOG2E)
        return out, lse

    def _attention_backward(self, g, q, k, v, out, lse, causal, scale, grads_out=None):
        code = self._attention_code(q, k, v)
        b, h, sq, d = q.shape
        hkv, sk = k.shape[1], k.shape[2]
        if (code is None or sq == 0 or sk == 0 or b * h == 0 or g.dtype != q.dtype
                or out.dtype != q.dtype or lse.dtype != np.float32):
            return super().attention_backward(g, q, k, v, out, lse, causal, scale, grads_out)
        q, k, v, g, out, lse = (self._attention_dense(x) for x in (q, k, v, g, out, lse))
        kern, cfg = self._attention_kernels(code, d)
        if grads_out is not None and all(
                o.shape == x.shape and o.dtype == x.dtype and o.flags.c_contiguous
                for o, x in zip(grads_out, (q, k, v))):
            dq, dk, dv = grads_out
        else:
            if grads_out is not None:
                raise ValueError("attention_backward: grads_out must be three C-contiguous "
                                 f"arrays shaped and typed like q {q.shape}, k {k.shape}, v "
                                 f"{v.shape} ({q.dtype}), got "
                                 f"{[(o.shape, str(o.dtype)) for o in grads_out]}")
            tdt = dt.from_numpy_dtype(q.dtype)
            dq, dk, dv = (self.empty(q.shape, tdt), self.empty(k.shape, tdt),
                          self.empty(v.shape, tdt))
        delta = cupy.empty((b, h, sq), np.float32)
        acc = cupy.empty(q.shape, np.float32)
        stream = _stream()
        rows = b * h * sq
        kern.pre(-(-rows * (d // 8) // 256), 256, 0, stream,
                 out.data.ptr, g.data.ptr, delta.data.ptr, acc.data.ptr, rows)
        bn = 16 * cfg.bwd_warps
        grid = -(-sk // bn) * b * hkv
        smem = bwd_smem_bytes(_ES[code], d, cfg.bwd_warps, cfg.bwd_bm, cfg.bwd_version)
        kern.dkdv[bool(causal)](grid, 32 * cfg.bwd_warps, smem, stream,
                                q.data.ptr, k.data.ptr, v.data.ptr, g.data.ptr, lse.data.ptr,
                                delta.data.ptr, dk.data.ptr, dv.data.ptr, acc.data.ptr,
                                h, hkv, sq, sk, float(scale), float(scale) * _LOG2E)
        n8 = q.size // 8
        kern.convert(min(-(-n8 // 256), self.sm_count * 16), 256, 0, stream,
                     acc.data.ptr, dq.data.ptr, n8, float(scale))
        return dq, dk, dv


def _stream() -> int:
    return cupy.cuda.get_current_stream().ptr
