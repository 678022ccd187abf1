"""CUDA attention primitives: our FlashAttention-2 style kernels (``kernels/attention_*.cu``).

:class:`CudaAttentionPrimitives` overrides ``attention_forward`` / ``attention_backward`` of
:class:`~scitensor.backends.xp_attention.AttentionPrimitives` for float16, bfloat16 and
float32 inputs with head dim 32, 64 or 128; anything else (float64, other head dims) goes to
the xp composition. float32 runs on tf32 tensor cores: one tf32 product under
``st.set_matmul_precision("tf32")``, else 3xTF32 (a big + small split of each operand, about
float32 accuracy) for the default ``"highest"``.

Each (element type, head dim, tile configuration) is one NVRTC module compiled on first use
with ``-D`` options (cached on disk by :mod:`.compiler`); the forward and backward each hold
a causal and a non-causal kernel. Tiles come from :data:`DEFAULT_CONFIGS` (on an sm_90 GPU,
the H100/H200, :data:`HOPPER_CONFIGS` first: there the 16-bit forward of head dims 64 and 128
is ``attention_fwd_wgmma.cu``, on Hopper's warpgroup MMA, compiled for ``sm_90a``),
overridable per process with :func:`set_attention_config` (the benchmark's sweep uses it) or
the environment variable ``SCITENSOR_ATTENTION_CONFIG="fwd_warps,fwd_bn,bwd_warps,bwd_bm[,...]"``
(the :class:`AttentionConfig` fields in order).

Operands need not be contiguous: the kernels take each (B, heads, S, D) operand's batch, head
and row strides, so views (the heads of a packed ``(B, S, 3, H, D)`` projection, swapped to
``(B, H, S, D)``) are read and written in place, and ``out=`` / ``grads_out=`` let the caller
choose where the results land. An operand qualifies when its last axis is contiguous, its data
pointer is 16-byte aligned and each stride (in bytes) is a multiple of 16, as the kernels'
16-byte copies need (row strides also below 2 GiB); anything else is copied dense first, and an
output that does not qualify is computed dense and copied into place.

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
from ..xp_attention import _check_grads_out, _check_outputs
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
_ROW_THREADS = 256  # STA_ROW_THREADS: block size of the backward's pre and convert kernels
_ROW_LIMIT = 1 << 31  # row strides (bytes) must stay below: the kernels' row offsets are 32-bit
_GRID_Y = _GRID_Z = 65535  # grid y (heads), z (batch) limits: larger batches go in chunks


@dataclass(frozen=True)
class AttentionConfig:
    """Tile sizes: forward CTAs of ``fwd_warps`` warps with ``16 * fwd_mw`` query rows each,
    over key tiles of ``fwd_bn``; backward CTAs of ``bwd_warps`` warps (``16 * bwd_warps``
    keys) over query tiles of ``bwd_bm`` rows, with the dK/dV kernel ``bwd_version`` (1: each
    warp owns 16 keys in every product; 2: FlashAttention-2's per-product warp layouts, 16-bit
    types only, see ``attention_bwd.cu``; 3: the Hopper ``wgmma`` kernel of
    ``attention_bwd_wgmma.cu``, sm_90 only, 16-bit types, head dim 64 or 128, two warpgroups
    of 64 keys, ``bwd_bm`` 64); ``fwd_lazy_rescale`` 1 skips the forward's rescale
    of O on tiles where no row max of the warp moved. ``fwd_version`` 2 is the Hopper ``wgmma``
    forward (``attention_fwd_wgmma.cu``: sm_90 only, 16-bit types, head dim 64 or 128):
    ``fwd_warps / 4`` warpgroups of 64 query rows over key tiles of ``fwd_bn`` (64 or 128)."""

    fwd_warps: int = 4
    fwd_bn: int = 64
    bwd_warps: int = 4
    bwd_bm: int = 64
    fwd_mw: int = 1
    bwd_version: int = 1
    fwd_lazy_rescale: int = 0
    fwd_version: int = 1

    @property
    def fwd_bm(self) -> int:
        return 16 * self.fwd_mw * self.fwd_warps

    def check(self, d: int, code: int | None = None) -> None:
        """Raise ``ValueError`` unless the tiles fit head dim ``d`` (and type ``code``)."""
        mch = self.bwd_bm // 16
        if self.fwd_version == 2:  # mirrors attention_fwd_wgmma.cu
            # 3 warpgroups of D128 x 128-key tiles would need ~190 registers, over the 168
            # that 384 threads get: ptxas spills and serialises the wgmma, so it is refused
            fwd_ok = (code in (None, BF16, F16) and d in (64, 128) and self.fwd_mw == 1
                      and self.fwd_warps in (4, 8, 12) and self.fwd_bn in (64, 128)
                      and self.fwd_lazy_rescale == 0
                      and not (d == 128 and self.fwd_warps == 12 and self.fwd_bn == 128))
        else:
            fwd_ok = (self.fwd_version == 1 and self.fwd_warps in (1, 2, 4, 8)
                      and self.fwd_bn % 16 == 0 and self.fwd_bn > 0 and self.fwd_mw in (1, 2))
        ok = (fwd_ok
              and self.bwd_warps in (1, 2, 4, 8) and self.bwd_bm % 16 == 0 and mch >= 1
              and self.bwd_warps % mch == 0 and (d // (self.bwd_warps // mch)) % 16 == 0
              and self.bwd_version in (1, 2, 3) and self.fwd_lazy_rescale in (0, 1))
        if ok and self.bwd_version == 3:  # mirrors attention_bwd_wgmma.cu's static_assert
            ok = (code in (None, BF16, F16) and d in (64, 128) and self.bwd_warps == 8
                  and self.bwd_bm == 64)
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
# On sm_90 the 16-bit forward and backward of D64/D128 are the wgmma kernels (tiles measured
# on the H100: docs/kernels/attention.md, sessions 5 and 6).
HOPPER_CONFIGS: dict[tuple[int, int], AttentionConfig] = {}
for _code in (BF16, F16):
    HOPPER_CONFIGS[(_code, 64)] = AttentionConfig(4, 128, 8, 64, 1, 3, 0, 2)
    HOPPER_CONFIGS[(_code, 128)] = AttentionConfig(12, 64, 8, 64, 1, 3, 0, 2)
del _code
_OVERRIDES: dict[tuple[int, int], AttentionConfig] = {}


def set_attention_config(code: int, d: int, config: AttentionConfig | None) -> None:
    """Use ``config`` for element type ``code`` and head dim ``d`` (``None``: the default)."""
    if config is None:
        _OVERRIDES.pop((code, d), None)
    else:
        config.check(d, code)
        _OVERRIDES[(code, d)] = config


def config_for(code: int, d: int, arch: int | None = None) -> AttentionConfig:
    """The tiles for element type ``code`` and head dim ``d`` on a GPU of compute capability
    ``arch`` (e.g. 90; ``None``: the portable defaults): the environment variable, then
    :func:`set_attention_config`, then :data:`HOPPER_CONFIGS` on sm_90, then
    :data:`DEFAULT_CONFIGS`."""
    # fwd_warps,fwd_bn,bwd_warps,bwd_bm[,fwd_mw[,bwd_version[,fwd_lazy_rescale[,fwd_version]]]]
    env = os.environ.get("SCITENSOR_ATTENTION_CONFIG")
    if env:
        cfg = AttentionConfig(*(int(x) for x in env.split(",")))
        cfg.check(d, code)
        return cfg
    cfg = _OVERRIDES.get((code, d))
    if cfg is None and arch == 90:
        cfg = HOPPER_CONFIGS.get((code, d))
    return cfg or DEFAULT_CONFIGS[(code, d)]


def fwd_smem_bytes(es: int, d: int, warps: int, bn: int, mw: int = 1, version: int = 1) -> int:
    """Dynamic shared memory of the forward kernel (mirrors attention_fwd.cu; version 2:
    attention_fwd_wgmma.cu's unpadded swizzled tiles, plus 1024 bytes to align them)."""
    if version == 2:
        return (16 * warps + 4 * bn) * d * es + 1024
    return (16 * mw * warps + 4 * bn) * (d * es + 16)


def bwd_smem_bytes(es: int, d: int, warps: int, bm: int, version: int = 1) -> int:
    """Dynamic shared memory of the dK/dV kernel (mirrors attention_bwd.cu); version 2 keeps
    both P^T and dS^T in shared memory; version 3 (attention_bwd_wgmma.cu) unpadded swizzled
    tiles plus 1024 bytes to align them."""
    bn = 16 * warps
    if version == 3:
        return (2 * bn + 4 * bm) * d * es + bn * bm * es + 16 * bm + 1024
    return (2 * bn + 4 * bm) * (d * es + 16) + version * bn * (bm * es + 16) + 16 * bm


class _Launcher:
    """One kernel with typed parameter slots, a grid (an int, or an (x, y, z) tuple) and
    dynamic shared memory."""

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

    def __call__(self, grid, threads: int, smem: int, stream: int, *args) -> None:
        gx, gy, gz = grid if type(grid) is tuple else (grid, 1, 1)
        with self._lock:
            if smem > self._smem_limit:
                _driver.funcSetAttribute(self.ptr, _MAX_DYN_SMEM_ATTR, smem)
                self._smem_limit = smem
            for slot, value in zip(self._slots, args):
                slot.value = value
            try:
                _driver.launchKernel(self.ptr, gx, gy, gz, threads, 1, 1, smem, stream,
                                     ctypes.addressof(self._params), 0)
            except Exception as e:
                raise KernelLaunchError(f"launching {self.name} (grid {grid}, block {threads}, "
                                        f"shared memory {smem} B) failed: {e}") from e


class _Kernels:
    """The six kernels of one (type, head dim, tiles) configuration on one device."""

    def __init__(self, device_id: int, arch: int, code: int, d: int, cfg: AttentionConfig):
        base = (f"-DST_ATTN_TYPE={code}", f"-DST_ATTN_D={d}")
        if cfg.fwd_version == 2:
            fwd = load_module("attention_fwd_wgmma.cu", device_id, arch, options=(
                *base, f"-DST_WG_NWG={cfg.fwd_warps // 4}", f"-DST_WG_BN={cfg.fwd_bn}"),
                arch_specific=True)
            fwd_name = "st_attention_fwd_wgmma"
        else:
            fwd = load_module("attention_fwd.cu", device_id, arch, options=(
                *base, f"-DST_ATTN_WARPS={cfg.fwd_warps}", f"-DST_ATTN_BN={cfg.fwd_bn}",
                f"-DST_ATTN_MW={cfg.fwd_mw}", f"-DST_ATTN_LAZY_RESCALE={cfg.fwd_lazy_rescale}"))
            fwd_name = "st_attention_fwd"
        bwd_options = (*base, f"-DST_ATTN_WARPS={cfg.bwd_warps}", f"-DST_ATTN_BM={cfg.bwd_bm}")
        if cfg.bwd_version == 3:
            bwd = load_module("attention_bwd_wgmma.cu", device_id, arch, options=bwd_options,
                              arch_specific=True)
        else:
            bwd = load_module("attention_bwd.cu", device_id, arch, options=bwd_options)

        def get(mod, name, sig):
            return _Launcher(mod.function(name, sig))

        # every (B, heads, S, D) operand adds its batch, head and row strides: "qqi"
        fsig, bsig = "pppppiiiif" + 4 * "qqi", "pppppppppiiiiff" + 6 * "qqi"
        self.fwd = (get(fwd, fwd_name, fsig), get(fwd, fwd_name + "_causal", fsig))
        dkdv = {1: "st_attention_bwd_dkdv", 2: "st_attention_bwd_dkdv2",
                3: "st_attention_bwd_dkdv_wgmma"}[cfg.bwd_version]
        self.dkdv = (get(bwd, dkdv, bsig), get(bwd, dkdv + "_causal", bsig))
        self.pre = get(bwd, "st_attention_bwd_pre", "ppppii" + 2 * "qqi")
        self.convert = get(bwd, "st_attention_bwd_convert", "ppiif" + "qqi")


def _rows(x, es: int):
    """The kernel strides (batch, head, row; elements) of a (B, heads, S, D) array, or None
    when the kernels cannot address it in place: the D axis must be contiguous, the data
    pointer 16-byte aligned and every stride a multiple of 16 bytes (cp.async and the 16-byte
    vector accesses), the row stride below 2 GiB (32-bit row offsets). Axes of length 1 get
    stride 0 (never multiplied by a nonzero index, whatever the array says)."""
    n0, n1, n2, _ = x.shape
    s0, s1, s2, s3 = x.strides
    if s3 != es or x.data.ptr & 15:
        return None
    s0, s1, s2 = (s0 if n0 > 1 else 0), (s1 if n1 > 1 else 0), (s2 if n2 > 1 else 0)
    if (s0 | s1 | s2) & 15 or not -_ROW_LIMIT < s2 < _ROW_LIMIT:
        return None
    return s0 // es, s1 // es, s2 // es


def _disjoint(x, rows) -> bool:
    """Whether no two elements of ``x`` (with kernel strides ``rows``) share an address, so
    the kernels may write it: sorted by |stride|, each axis must step over the span of the
    smaller ones."""
    n0, n1, n2, span = x.shape  # span: elements of one row (stride 1)
    axes = [(abs(st), n) for st, n in zip(rows, (n0, n1, n2)) if n > 1]
    axes.sort()
    for st, n in axes:
        if st < span:
            return False
        span += st * (n - 1)
    return True


class CudaAttentionPrimitives:
    """Mixin for the CUDA backend (needs ``self.index``, ``self.arch`` and the array
    primitives ``empty``, ``ascontiguous``, ``copy``, ``setitem``); place it before
    ``ArrayBackend`` in the bases so it overrides the xp attention primitives and can fall
    back to them with ``super()``."""

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

    def _attention_operand(self, x, es):
        """``(array, strides)``: ``x`` as the kernels read it (itself, or a dense copy)."""
        rows = _rows(x, es)
        if rows is None:
            x = self.ascontiguous(x)
            rows = _rows(x, es)
            if rows is None:  # C-contiguous already, but at a misaligned address
                x = self.copy(x)
                rows = _rows(x, es)
        return x, rows

    def _attention_output(self, out, like, es):
        """``(array the kernels write, its strides, out)``: ``out`` itself when the kernels can
        write it, else a fresh dense array (copied into ``out`` afterwards); a fresh array when
        ``out`` is None."""
        if out is not None:
            rows = _rows(out, es)
            if rows is not None and _disjoint(out, rows):
                return out, rows, out
        dst = self.empty(like.shape, dt.from_numpy_dtype(like.dtype))
        return dst, _rows(dst, es), out

    def _attention_kernels(self, code: int, d: int):
        cfg = config_for(code, d, self.arch)
        if (cfg.fwd_version == 2 or cfg.bwd_version == 3) and self.arch != 90:
            raise ValueError(f"attention: tile configuration {cfg} uses a wgmma kernel (forward "
                             "version 2 or backward version 3), which needs an sm_90 GPU "
                             f"(H100/H200); this is sm_{self.arch}: use fwd_version=1 and "
                             "bwd_version 1 or 2")
        cache = self.__dict__.setdefault("_attention_cache", {})
        key = (code, d, cfg)
        kern = cache.get(key)
        if kern is None:
            kern = cache[key] = _Kernels(self.index, self.arch, code, d, cfg)
        return kern, cfg

    def attention_forward(self, q, k, v, causal, scale, out=None):
        with self._attention_device():
            return self._attention_forward(q, k, v, causal, scale, out)

    def attention_backward(self, g, q, k, v, out, lse, causal, scale, grads_out=None):
        with self._attention_device():
            return self._attention_backward(g, q, k, v, out, lse, causal, scale, grads_out)

    def _attention_device(self):
        """This backend's GPU as the current device (several GPUs: launches go to it)."""
        dev = getattr(self, "cp_device", None)
        return dev if dev is not None else contextlib.nullcontext()

    def _attention_forward(self, q, k, v, causal, scale, out=None):
        code = self._attention_code(q, k, v)
        b, h, sq, d = q.shape
        hkv, sk = k.shape[1], k.shape[2]
        if (code is None or sq == 0 or sk == 0 or b * h == 0 or h > _GRID_Y
                or not 0 < scale < np.inf):
            # the kernel folds a positive scale into its softmax (attention_fwd.cu)
            return super().attention_forward(q, k, v, causal, scale, out=out)
        if out is not None:
            _check_outputs("attention_forward", (out,), (q,), ("out",), ("q",))
        es = _ES[code]
        (q, lq), (k, lk), (v, lv) = (self._attention_operand(x, es) for x in (q, k, v))
        o, lo, out = self._attention_output(out, q, es)
        kern, cfg = self._attention_kernels(code, d)
        lse = self.empty((b, h, sq), dt.float32)
        smem = fwd_smem_bytes(es, d, cfg.fwd_warps, cfg.fwd_bn, cfg.fwd_mw, cfg.fwd_version)
        for b0, nb in _batches(b):  # one launch unless b > 65535
            kern.fwd[bool(causal)]((-(-sq // cfg.fwd_bm), h, nb), 32 * cfg.fwd_warps, smem,
                                   _stream(), *_at(b0, es, (q, lq), (k, lk), (v, lv), (o, lo)),
                                   lse.data.ptr + 4 * b0 * h * sq, h, hkv, sq, sk,
                                   float(scale) * _LOG2E, *lq, *lk, *lv, *lo)
        if out is None:
            return o, lse
        if o is not out:
            self.setitem(out, Ellipsis, o)
        return out, lse

    def _attention_backward(self, g, q, k, v, out, lse, causal, scale, grads_out=None):
        code = self._attention_code(q, k, v)
        b, h, sq, d = q.shape
        hkv, sk = k.shape[1], k.shape[2]
        if (code is None or sq == 0 or sk == 0 or b * h == 0 or h > _GRID_Y
                or g.dtype != q.dtype or out.dtype != q.dtype or lse.dtype != np.float32):
            return super().attention_backward(g, q, k, v, out, lse, causal, scale, grads_out)
        if grads_out is not None:
            _check_grads_out(grads_out, q, k, v)
        es = _ES[code]
        (q, lq), (k, lk), (v, lv), (g, lg), (out, lo) = (
            self._attention_operand(x, es) for x in (q, k, v, g, out))
        lse = lse if lse.flags.c_contiguous else self.ascontiguous(lse)
        dests = [self._attention_output(None if grads_out is None else grads_out[i], x, es)
                 for i, x in enumerate((q, k, v))]
        (dq, ldq, _), (dk, ldk, _), (dv, ldv, _) = dests
        kern, cfg = self._attention_kernels(code, d)
        delta = cupy.empty((b, h, sq), np.float32)
        acc = cupy.empty(q.shape, np.float32)
        stream = _stream()
        row_blocks = -(-sq // (_ROW_THREADS // (d // 8)))
        bn = 16 * cfg.bwd_warps
        smem = bwd_smem_bytes(es, d, cfg.bwd_warps, cfg.bwd_bm, cfg.bwd_version)
        for b0, nb in _batches(b):  # one launch each unless b > 65535
            dense = 4 * b0 * h * sq  # byte offset of batch b0 in lse, delta (and acc: * d)
            p_lse, p_delta, p_acc = (lse.data.ptr + dense, delta.data.ptr + dense,
                                     acc.data.ptr + dense * d)
            p_q, p_k, p_v, p_g, p_o, p_dq, p_dk, p_dv = _at(
                b0, es, (q, lq), (k, lk), (v, lv), (g, lg), (out, lo), (dq, ldq), (dk, ldk),
                (dv, ldv))
            kern.pre((row_blocks, h, nb), _ROW_THREADS, 0, stream, p_o, p_g, p_delta, p_acc,
                     h, sq, *lo, *lg)
            kern.dkdv[bool(causal)]((-(-sk // bn), hkv, nb), 32 * cfg.bwd_warps, smem, stream,
                                    p_q, p_k, p_v, p_g, p_lse, p_delta, p_dk, p_dv, p_acc,
                                    h, hkv, sq, sk, float(scale), float(scale) * _LOG2E,
                                    *lq, *lk, *lv, *lg, *ldk, *ldv)
            kern.convert((row_blocks, h, nb), _ROW_THREADS, 0, stream, p_acc, p_dq, h, sq,
                         float(scale), *ldq)
        if grads_out is None:
            return dq, dk, dv
        for dst, want in zip((dq, dk, dv), grads_out):
            if dst is not want:
                self.setitem(want, Ellipsis, dst)
        return tuple(grads_out)


def _batches(b: int):
    """``(first batch, count)`` per launch: gridDim.z holds at most 65535 batches."""
    return ((b0, min(b - b0, _GRID_Z)) for b0 in range(0, b, _GRID_Z))


def _at(b0: int, es: int, *operands):
    """Data pointers of (array, kernel strides) pairs, advanced to batch ``b0``."""
    return [x.data.ptr + b0 * rows[0] * es for x, rows in operands]


def _stream() -> int:
    return cupy.cuda.get_current_stream().ptr
