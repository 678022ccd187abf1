"""Implicit-GEMM convolutions on tensor cores (``kernels/conv_igemm.cu``): path choice, tiles,
launches.

Which path runs a convolution pass on the GPU is :func:`choose_path`, a small function of the
shape, dtype and precision; ``docs/kernels/conv.md`` has the floors and measurements behind it:

- ``"depthwise"``: one input channel per output channel (``groups > 1``): the direct kernels of
  ``conv.cu`` (a GEMM with one row per group would leave the tensor cores idle);
- ``"igemm"``: our implicit-GEMM kernel, which gathers the convolution windows from NCHW into
  shared memory and multiplies on tensor cores (bf16/fp16 m16n8k16; float32 as one TF32 product
  under ``st.set_matmul_precision("tf32")``, else as 3xTF32, about float32 accuracy). No column
  matrix is written, which is what im2col pays for (kh*kw times the input, written and read);
- ``"im2col"``: im2col + cuBLASLt (``conv.py``): float64, GPUs without ``mma.sync`` bf16
  (sm < 80), tensors of 2^31 elements or more, the input gradient of strided convolutions
  (gathering there would multiply zeros: 3/4 of the taps at stride 2), and input gradients with
  fewer than ``MIN_DGRAD_CHANNELS`` channels per group (a 16-row tensor-core tile would be
  mostly padding; the column matrix is small there).

Two kernel variants implement ``"igemm"`` (``docs/kernels/conv.md`` §8): ``v1`` gathers
element by element from NCHW (any shape); ``v2`` first transposes the gathered tensor to NHWC
(``st_igemm_nhwc``) so every operand tile loads with 16-byte ``cp.async`` through a
``stages``-deep pipeline. :func:`igemm_variant` picks ``v2`` where the channels allow it
(gathered channels per group, and for the weight gradient output channels per group, a
multiple of 8 for 16-bit types, 4 for float32); ``SCITENSOR_CONV_VARIANT=v1|v2|auto`` (or
:func:`set_igemm_variant`) overrides that for A/B measurements.

``SCITENSOR_CONV_PATH=igemm|im2col`` (or :func:`set_conv_path`) forces a path where it is
supported, for measurements; ``SCITENSOR_CONV_TILES="fwd=64,128,32,2,4;wgrad=...;fwd2=...;
wgrad2=..."`` (or :func:`set_igemm_tiles`) overrides the tile configuration (BM, BN, BK, warps
along M, warps along N[, CTAs per SM for ``__launch_bounds__``[, pipeline stages (v2)]]) for
tuning; ``fwd``/``wgrad`` are v1's, ``fwd2``/``wgrad2`` v2's. Every tile configuration is one
NVRTC module, compiled on first use.

The mixin :class:`IgemmConvPrimitives` reaches the device only through ``_ig_*`` hooks, which
``conv.py`` implements with CuPy and the host emulator test with NumPy, so the same host code
(tiles, splits, argument order, grids) runs in both. Nothing here synchronizes the host:
launches go to the current stream and temporaries come from the stream-ordered pool, so the
passes are graph-capturable.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import numpy as np

from ... import dtypes as dt
from ...precision import MATMUL_PRECISION

__all__ = ["BF16", "F16", "TF32", "TF32X3", "IgemmConvPrimitives", "Tiles", "choose_path",
           "default_tiles", "fast_divider", "igemm_options", "igemm_variant", "set_conv_path",
           "set_igemm_tiles", "set_igemm_variant", "type_code"]

BF16, F16, TF32, TF32X3 = 0, 1, 2, 3  # ST_IGEMM_TYPE
FWD, WGRAD = 0, 1  # ST_IGEMM_KIND (the input gradient runs the forward kernel)
FWD2, WGRAD2 = 2, 3  # the v2 (NHWC, cp.async pipeline) kernels
_KIND_NAMES = {FWD: "fwd", WGRAD: "wgrad", FWD2: "fwd2", WGRAD2: "wgrad2"}
_MAX_DYN_SMEM = 227 * 1024  # sm_90 opt-in shared memory per block
_INT32 = 1 << 31
_COORD = 1 << 20  # image sizes and shifts the kernels' out-of-image sentinel allows
MIN_DGRAD_CHANNELS = 8
_PATHS = ("auto", "igemm", "im2col")
_FORCED: list = [None]
_VARIANTS = ("auto", "v1", "v2")
_VARIANT: list = [None]


def set_igemm_variant(variant: str | None) -> None:
    """Force the ``"v1"`` or ``"v2"`` igemm kernels where supported (``None``/``"auto"``:
    choose). v2 needs channel counts it can load in 16-byte chunks; elsewhere v1 runs."""
    if variant not in (None, *_VARIANTS):
        raise ValueError(f"set_igemm_variant: unknown variant {variant!r}; use one of "
                         f"{_VARIANTS}")
    _VARIANT[0] = None if variant == "auto" else variant


def igemm_variant(pass_: str, code: int, gathered: int, m: int) -> str:
    """``"v1"`` or ``"v2"`` for one igemm pass.

    Args:
        pass_: ``"fwd"``, ``"dgrad"`` or ``"wgrad"``.
        code: the element type (``BF16``, ``F16``, ``TF32``, ``TF32X3``).
        gathered: channels per group of the gathered tensor (x for ``fwd`` and ``wgrad``, dy
            for ``dgrad``).
        m: GEMM rows per group (output channels; input channels for ``dgrad``).

    Returns:
        ``"v2"`` where its 16-byte chunks fit the channels (and it is not forced off), else
        ``"v1"``.

    Example:
        >>> from scitensor.backends.cuda.conv_igemm import BF16, igemm_variant
        >>> igemm_variant("fwd", BF16, 64, 64), igemm_variant("fwd", BF16, 3, 64)
        ('v2', 'v1')
    """
    forced = _VARIANT[0]
    if forced is None:
        env = os.environ.get("SCITENSOR_CONV_VARIANT", "auto").lower()
        if env not in _VARIANTS:
            raise ValueError(f"SCITENSOR_CONV_VARIANT={env!r}: use one of {_VARIANTS}")
        forced = None if env == "auto" else env
    vec = 8 if code in (BF16, F16) else 4
    ok = gathered % vec == 0 and (pass_ != "wgrad" or m % vec == 0)
    return "v2" if ok and forced != "v1" else "v1"


def set_conv_path(path: str | None) -> None:
    """Force ``"igemm"`` or ``"im2col"`` where supported (``None``/``"auto"``: choose)."""
    if path not in (None, *_PATHS):
        raise ValueError(f"set_conv_path: unknown path {path!r}; use one of {_PATHS}")
    _FORCED[0] = None if path == "auto" else path


def _forced() -> str | None:
    if _FORCED[0] is not None:
        return _FORCED[0]
    env = os.environ.get("SCITENSOR_CONV_PATH", "auto").lower()
    if env not in _PATHS:
        raise ValueError(f"SCITENSOR_CONV_PATH={env!r}: use one of {_PATHS}")
    return None if env == "auto" else env


def type_code(np_dtype) -> int | None:
    """The kernel element type for arrays of ``np_dtype`` at the current matmul precision."""
    if np_dtype == dt.bfloat16.np:
        return BF16
    if np_dtype == np.float16:
        return F16
    if np_dtype == np.float32:
        return TF32 if MATMUL_PRECISION[0] == "tf32" else TF32X3
    return None


def choose_path(pass_: str, np_dtype, arch: int, x_shape, w_shape, y_shape, stride,
                dilation, groups: int) -> str:
    """``"depthwise"``, ``"igemm"`` or ``"im2col"`` for one pass of a convolution.

    Args:
        pass_: ``"fwd"`` (conv2d), ``"dgrad"`` (conv_transpose2d, conv2d's input gradient) or
            ``"wgrad"`` (conv2d_weight).
        np_dtype: the arrays' dtype; arch: compute capability as an int (90 for sm_90).
        x_shape, w_shape, y_shape: conv2d's input ``(N, C, H, W)``, weight ``(K, C/g, kh,
            kw)`` and output ``(N, K, Ho, Wo)`` (the same three for every pass).
        stride, dilation: pairs; groups: channel groups.

    Returns:
        The path's name.

    Example:
        >>> import numpy as np
        >>> from scitensor.backends.cuda.conv_igemm import choose_path
        >>> choose_path("fwd", np.dtype(np.float16), 90, (8, 64, 28, 28), (64, 64, 3, 3),
        ...             (8, 64, 28, 28), (1, 1), (1, 1), 1)
        'igemm'
        >>> choose_path("dgrad", np.dtype(np.float16), 90, (8, 64, 28, 28), (64, 64, 3, 3),
        ...             (8, 64, 14, 14), (2, 2), (1, 1), 1)
        'im2col'
    """
    k, cg, kh, kw = w_shape
    if cg == 1 and groups > 1 and (pass_ != "wgrad" or max(kh, kw) <= 7):
        return "depthwise"
    supported = (type_code(np_dtype) is not None and arch >= 80
                 and max(int(np.prod(x_shape)), int(np.prod(y_shape))) < _INT32
                 and max(*x_shape[2:], *y_shape[2:]) < _COORD
                 and max(stride) * max(y_shape[2:]) < _COORD  # bounds the padding too
                 and max((kh - 1) * dilation[0], (kw - 1) * dilation[1]) < _COORD)
    if pass_ == "dgrad":
        supported = supported and tuple(stride) == (1, 1)
    forced = _forced()
    if not supported or forced == "im2col":
        return "im2col"
    if forced == "igemm":
        return "igemm"
    if pass_ == "dgrad" and cg < MIN_DGRAD_CHANNELS:
        return "im2col"
    return "igemm"


@dataclass(frozen=True)
class Tiles:
    """A CTA tile ``bm x bn`` with reduction step ``bk``, computed by ``wm x wn`` warps;
    ``minb``: CTAs per SM the register allocation must allow (``__launch_bounds__``);
    ``stages``: shared-memory pipeline depth of the v2 kernels (v1 always has 2)."""

    bm: int
    bn: int
    bk: int
    wm: int
    wn: int
    minb: int = 1
    stages: int = 3

    @property
    def threads(self) -> int:
        return 32 * self.wm * self.wn

    def smem_bytes(self, kind: int, es: int) -> int:
        """Shared memory of the kernel (mirrors IgFwdShape / IgWgradShape, static; and
        IgFwd2Shape / IgWgrad2Shape, dynamic)."""
        if kind == FWD2:
            return self.stages * (self.bm + self.bn) * (self.bk * es + 16)
        if kind == WGRAD2:
            return self.stages * self.bk * ((self.bm + self.bn) * es + 32)
        if kind == FWD:
            return 2 * (self.bm * (self.bk * es + 16) + self.bk * (self.bn * es + (16 if es == 2
                                                                                   else 32)))
        return 2 * (self.bm + self.bn) * (self.bk * es + 16)

    def check(self, kind: int, code: int) -> None:
        """Raise ValueError unless the kernel's static_asserts accept these tiles."""
        es, ks = (2, 16) if code in (BF16, F16) else (4, 8)
        nt = self.threads
        wtm, wtn = self.bm // max(self.wm, 1), self.bn // max(self.wn, 1)
        limit = 48 * 1024 if kind in (FWD, WGRAD) else _MAX_DYN_SMEM
        ok = (self.wm >= 1 and self.wn >= 1 and self.bm % self.wm == 0
              and self.bn % self.wn == 0 and wtm % 16 == 0 and wtn % 16 == 0
              and self.bk % ks == 0 and nt <= 1024 and 1 <= self.minb <= 8
              and self.smem_bytes(kind, es) <= limit)
        if ok and kind == FWD2:
            cpr = self.bk * es // 16
            ok = ((self.bk * es) % 32 == 0 and 2 <= self.stages <= 8 and nt % cpr == 0
                  and (self.bm * cpr) % nt == 0 and (self.bn * cpr) % nt == 0)
        elif ok and kind == WGRAD2:
            cprb = self.bn * es // 16
            ok = (2 <= self.stages <= 8 and (self.bm * es) % 16 == 0 and nt % cprb == 0
                  and (self.bk * cprb) % nt == 0)
        elif ok and kind == FWD:
            tpr = self.bn // 4
            cpr = self.bk * es // 16
            ok = (self.bn % 4 == 0 and nt % tpr == 0 and self.bk % (nt // tpr) == 0
                  and (self.bm * cpr) % nt == 0)
        elif ok:
            tpr = self.bk // 2
            ok = nt % tpr == 0 and self.bm % (nt // tpr) == 0 and self.bn % (nt // tpr) == 0
        if not ok:
            what = {FWD: "forward", WGRAD: "weight-gradient", FWD2: "v2 forward",
                    WGRAD2: "v2 weight-gradient"}[kind]
            raise ValueError(f"conv igemm: tiles {self} do not fit the {what} kernel for "
                             f"type {code}")


_OVERRIDES: dict = {}


def set_igemm_tiles(kind: str, tiles: Tiles | None) -> None:
    """Use ``tiles`` for every ``"fwd"`` (forward and input gradient) or ``"wgrad"`` launch
    of the v1 kernels, ``"fwd2"`` / ``"wgrad2"`` of the v2 kernels (``None``: the defaults).
    Checked against each type when it is used."""
    if kind not in _KIND_NAMES.values():
        raise ValueError(f"set_igemm_tiles: kind must be one of {tuple(_KIND_NAMES.values())}, "
                         f"got {kind!r}")
    if tiles is None:
        _OVERRIDES.pop(kind, None)
    else:
        _OVERRIDES[kind] = tiles


def _env_tiles(kind: str) -> Tiles | None:
    env = os.environ.get("SCITENSOR_CONV_TILES", "")
    for part in filter(None, (p.strip() for p in env.split(";"))):
        name, _, vals = part.partition("=")
        if name.strip() == kind:
            return Tiles(*(int(v) for v in vals.split(",")))
    return None


def default_tiles(kind: int, code: int, m: int, ncols: int = 0) -> Tiles:
    """The tile configuration for a GEMM with ``m`` rows per group (and, for the weight
    gradient, ``ncols`` columns), unless overridden; checked against the kernel.

    Args:
        kind: ``FWD`` (forward and input gradient) or ``WGRAD`` (v1), ``FWD2`` or ``WGRAD2``
            (v2); code: the element type.
        m: GEMM rows per group (output channels; input channels for the input gradient).
        ncols: weight-gradient columns (``C/g*kh*kw``).

    Returns:
        A :class:`Tiles`.

    Example:
        >>> from scitensor.backends.cuda.conv_igemm import BF16, FWD, default_tiles
        >>> default_tiles(FWD, BF16, 64)
        Tiles(bm=64, bn=128, bk=32, wm=2, wn=4, minb=2, stages=3)
    """
    name = _KIND_NAMES[kind]
    tiles = _env_tiles(name) or _OVERRIDES.get(name)
    if tiles is None and kind in (FWD2, WGRAD2):
        tiles = _default_tiles2(kind, code, m, ncols)
    if tiles is None:
        bk = 32 if code in (BF16, F16) else 16
        bm, wm, wn = (32, 1, 4) if m <= 32 else (64, 2, 4) if m <= 64 else (128, 2, 4)
        # weight gradient: both operands are gathered, so wide tiles amortise the gather best
        bn = 64 if kind == WGRAD and ncols <= 64 else 128
        tiles = Tiles(bm, bn, bk, wm, wn, _min_blocks(kind, code, bm, bn))
    _checked(tiles, kind, code)
    return tiles


def _default_tiles2(kind: int, code: int, m: int, ncols: int) -> Tiles:
    """v2 defaults (docs/kernels/conv.md §8): warp tiles of 32x64 or 64x32 (192 bytes of
    ldmatrix per mma instead of 32x32's 256), 8 warps, 2 CTAs per SM (<= 128 registers: ptxas
    reports 96-128 for these), 3-4 stages (76-80 KB of shared memory per CTA)."""
    bk = 32 if code in (BF16, F16) else 16
    if kind == FWD2:
        if m <= 32:
            return Tiles(32, 256, bk, 1, 4, 2, 4)  # 32x64 warp tiles
        if m <= 64:  # 32x64; 3xTF32 needs 168 registers here (spills at 128)
            return Tiles(64, 256, bk, 2, 4, 1 if code == TF32X3 else 2, 3)
        return Tiles(128, 128, bk, 2, 4, 2, 4)  # 64x32
    bn = 64 if ncols <= 64 else 128
    if m <= 32:
        return Tiles(32, bn, bk, 1, 4, 2, 4)
    if m <= 64:
        return Tiles(64, bn, bk, 2, 4, 2, 4)
    return Tiles(128, bn, bk, 2, 4, 1 if code == TF32X3 and bn == 128 else 2, 4)  # spills


def _min_blocks(kind: int, code: int, bm: int, bn: int) -> int:
    """CTAs per SM to size registers for: as many as fit without spills (ptxas, sm_90, CUDA
    13; tests/backends/test_cuda_conv_igemm.py checks the defaults do not spill)."""
    if bm == 32:  # 128 threads: 4 CTAs at <= 128 registers
        return 2 if kind == WGRAD and bn == 128 and code in (BF16, F16) else 4
    if bm == 128 and bn == 128 and (kind == WGRAD or code in (TF32, TF32X3)):
        return 1  # 140-200 registers: capping at 128 would spill
    return 2


@functools.lru_cache(maxsize=256)
def _checked(tiles: Tiles, kind: int, code: int) -> bool:
    tiles.check(kind, code)
    return True


def igemm_options(code: int, kind: int, tiles: Tiles) -> tuple[str, ...]:
    """The NVRTC ``-D`` options of one module."""
    return (f"-DST_IGEMM_TYPE={code}", f"-DST_IGEMM_KIND={kind}", f"-DST_IGEMM_BM={tiles.bm}",
            f"-DST_IGEMM_BN={tiles.bn}", f"-DST_IGEMM_BK={tiles.bk}",
            f"-DST_IGEMM_WM={tiles.wm}", f"-DST_IGEMM_WN={tiles.wn}",
            f"-DST_IGEMM_MINB={tiles.minb}", f"-DST_IGEMM_STAGES={tiles.stages}")


def fast_divider(d: int) -> tuple[int, int]:
    """``(mul, shift)`` with ``n // d == (umulhi(n, mul) + n) >> shift`` for ``0 <= n <
    2**31`` (mul as a signed int32, the launch slot type): the kernels' division by a
    run-time constant without a divide instruction.

    Args:
        d: the divisor, ``1 <= d < 2**31``.

    Returns:
        ``(mul, shift)``.

    Example:
        >>> from scitensor.backends.cuda.conv_igemm import fast_divider
        >>> mul, shift = fast_divider(56)
        >>> n = 1000
        >>> ((n * (mul & 0xFFFFFFFF) >> 32) + n) >> shift, n // 56
        (17, 17)
    """
    if d < 1 or d >= _INT32:
        raise ValueError(f"fast_divider: divisor {d} out of range")
    shift = (d - 1).bit_length()
    mul = ((1 << 32) * ((1 << shift) - d)) // d + 1
    return (mul - (1 << 32) if mul >= _INT32 else mul), shift


# kernel signatures (launch.Kernel characters)
SIG_PREP = "ppp" + "i" * 18
SIG_NHWC = "pp" + "i" * 4
SIG_FWD = "ppppp" + "i" * 21
SIG_WGRAD = "ppppp" + "i" * 22
SIG_REDUCE = "ppiq"
_TAP_INTS = 4  # IgTap: delta, dr, ds, pad


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


class IgemmConvPrimitives:
    """The three implicit-GEMM passes over raw device arrays (mixin; see module docs).

    Hooks a host class provides: ``_ig_ptr(a)``, ``_ig_stream()``, ``_ig_out(shape, dtype)``
    (an output; poisoned in tests), ``_ig_tmp(shape, dtype)`` (scratch), ``_ig_kernel(code,
    kind, tiles, name, signature)`` (a launcher ``k(blocks, threads, stream, *args)``),
    ``_ig_kernel_smem(...)`` (the same with dynamic shared memory: ``k(blocks, threads, smem,
    stream, *args)``) and ``_ig_sm_count()``.
    """

    # weight gradient: at least this many k tiles per split (the fixed cost of a split is its
    # prologue and its partial tile); splits are chosen to give about two CTAs per SM
    _ig_min_ktiles = 8

    def _ig_prep(self, code, kind, tiles, w, taps_geo, ntaps, pack=None, chunks=(0, 1, 1)):
        """Launch st_igemm_prep: the tap table of ``ntaps`` rows over ``taps_geo = (kgemm,
        in_hw, in_w, kh, kw, dh, dw)`` of the gathered tensor, and when ``pack = (mode, groups,
        M, Mpad, Kpad, Cgw, Kgw)`` the packed weight too. ``chunks = (tapmode, cgath, vec)``:
        tapmode 1 is v2's table (one row per ``vec`` reduction indices ordered (r, s, c) over
        ``cgath`` channels; ``in_hw`` is then the NHWC channel count). Returns ``(taps,
        wp)``."""
        kgemm, in_hw, in_w, kh, kw, dh, dw = taps_geo
        taps = self._ig_tmp((ntaps, _TAP_INTS), np.int32)
        wp, total = None, ntaps
        mode, groups, m, mpad, kpad, cgw, kgw = pack or (0, 1, 0, 0, 0, 0, 0)
        if pack is not None:
            wp = self._ig_tmp((groups, mpad, kpad), w.dtype)
            total = max(ntaps, groups * mpad * kpad)
        threads = 256
        blocks = max(1, min(_ceil(total, threads), 8 * self._ig_sm_count()))
        self._ig_kernel(code, kind, tiles, "st_igemm_prep", SIG_PREP)(
            blocks, threads, self._ig_stream(), self._ig_ptr(w if wp is not None else None),
            self._ig_ptr(wp), self._ig_ptr(taps), mode, groups, m, mpad, kgemm, kpad, cgw, kgw,
            kh, kw, in_hw, in_w, dh, dw, ntaps, *chunks)
        return taps, wp

    def _ig_nhwc(self, code, kind, tiles, a):
        """``a`` (N, C, H, W) as a contiguous (N, H, W, C) scratch array (st_igemm_nhwc)."""
        n, c, h, wd = a.shape
        out = self._ig_tmp((n, h, wd, c), a.dtype)
        tc, thw = _ceil(c, 32), _ceil(h * wd, 32)
        self._ig_kernel(code, kind, tiles, "st_igemm_nhwc", SIG_NHWC)(
            n * tc * thw, 256, self._ig_stream(), self._ig_ptr(a), self._ig_ptr(out), c, h * wd,
            tc, thw)
        return out

    def _ig_gemm2(self, code, src, wmat, bias, out, pack_mode, groups, m, cg_src, rs, in_geo,
                  out_hw, stride, pads):
        """``_ig_gemm`` on the v2 kernel: ``src`` transposed to NHWC, reduction ordered
        (r, s, c), every tile by 16-byte cp.async."""
        n, c, h, wd = src.shape
        p, q = out_hw
        kh, kw = rs
        es = 2 if code in (BF16, F16) else 4
        vec = 16 // es
        kgemm = cg_src * kh * kw
        tiles = default_tiles(FWD2, code, m)
        kpad, tiles_m = _ceil(kgemm, tiles.bk) * tiles.bk, _ceil(m, tiles.bm)
        mpad = tiles_m * tiles.bm
        kg_w = wmat.shape[0] // groups
        taps, wp = self._ig_prep(code, FWD2, tiles, wmat,
                                 (kgemm, c, wd, kh, kw, in_geo[0], in_geo[1]), kpad // vec,
                                 (pack_mode + 2, groups, m, mpad, kpad, wmat.shape[1], kg_w),
                                 (1, cg_src, vec))
        src_t = self._ig_nhwc(code, FWD2, tiles, src)
        ngemm = n * p * q
        tiles_n = _ceil(ngemm, tiles.bn)
        mp, sp = fast_divider(p * q)
        mq, sq = fast_divider(q)
        self._ig_kernel_smem(code, FWD2, tiles, "st_igemm_fwd2", SIG_FWD)(
            tiles_m * tiles_n * groups, tiles.threads, tiles.smem_bytes(FWD2, es),
            self._ig_stream(), self._ig_ptr(src_t), self._ig_ptr(wp), self._ig_ptr(taps),
            self._ig_ptr(bias), self._ig_ptr(out), c, h, wd, cg_src, m, mpad, groups * m, p, q,
            stride[0], stride[1], pads[0], pads[1], kpad, ngemm, tiles_m, tiles_n, mp, sp, mq,
            sq)
        return out

    def _ig_gemm(self, code, src, wmat, bias, out, pack_mode, groups, m, cg_src, rs, in_geo,
                 out_hw, stride, pads):
        """The forward kernel: ``out (N, groups*m, P, Q)`` from ``src (N, C, H, W)``.

        ``wmat``: the conv weight; ``pack_mode`` 0 packs it as is (forward), 1 transposed and
        flipped (input gradient); ``cg_src``: gathered channels per group; ``rs = (kh, kw)``;
        ``in_geo = (dh, dw)``; ``pads = (pt, pl)`` of the gathered tensor.
        """
        n, c, h, wd = src.shape
        p, q = out_hw
        kh, kw = rs
        kgemm = cg_src * kh * kw
        tiles = default_tiles(FWD, code, m)
        kpad, tiles_m = _ceil(kgemm, tiles.bk) * tiles.bk, _ceil(m, tiles.bm)
        mpad = tiles_m * tiles.bm
        kg_w = wmat.shape[0] // groups
        taps, wp = self._ig_prep(code, FWD, tiles, wmat,
                                 (kgemm, h * wd, wd, kh, kw, in_geo[0], in_geo[1]), kpad,
                                 (pack_mode, groups, m, mpad, kpad, wmat.shape[1], kg_w))
        ngemm = n * p * q
        tiles_n = _ceil(ngemm, tiles.bn)
        mp, sp = fast_divider(p * q)
        mq, sq = fast_divider(q)
        self._ig_kernel(code, FWD, tiles, "st_igemm_fwd", SIG_FWD)(
            tiles_m * tiles_n * groups, tiles.threads, self._ig_stream(), self._ig_ptr(src),
            self._ig_ptr(wp), self._ig_ptr(taps), self._ig_ptr(bias), self._ig_ptr(out), c, h,
            wd, cg_src, m, mpad, groups * m, p, q, stride[0], stride[1], pads[0], pads[1], kpad,
            ngemm, tiles_m, tiles_n, mp, sp, mq, sq)
        return out

    def _igemm_conv2d(self, x, w, bias, out_hw, stride, padding, dilation, groups):
        """conv2d on the implicit-GEMM kernel (contiguous ``x``, ``w``, ``bias``)."""
        k, cg, kh, kw = w.shape
        code = type_code(x.dtype)
        out = self._ig_out((x.shape[0], k, *out_hw), x.dtype)
        gemm = self._ig_gemm2 if igemm_variant("fwd", code, cg, k // groups) == "v2" else \
            self._ig_gemm
        return gemm(code, x, w, bias, out, 0, groups, k // groups, cg, (kh, kw), dilation,
                    out_hw, stride, padding)

    def _igemm_conv_transpose2d(self, y, w, bias, out_hw, padding, dilation, groups):
        """conv2d's input gradient for stride 1: a forward pass over ``y`` with the weight
        transposed per group and flipped, and padding ``d*(k-1) - p`` (may be negative)."""
        k, cg, kh, kw = w.shape
        code = type_code(y.dtype)
        out = self._ig_out((y.shape[0], cg * groups, *out_hw), y.dtype)
        pads = (dilation[0] * (kh - 1) - padding[0], dilation[1] * (kw - 1) - padding[1])
        gemm = self._ig_gemm2 if igemm_variant("dgrad", code, k // groups, cg) == "v2" else \
            self._ig_gemm
        return gemm(code, y, w, bias, out, 1, groups, cg, k // groups, (kh, kw), dilation,
                    out_hw, (1, 1), pads)

    def _igemm_conv2d_weight(self, x, gy, kernel_hw, stride, padding, dilation, groups):
        """conv2d's weight gradient: split reduction over pixels, then a fixed-order sum."""
        n, c, h, wd = x.shape
        ktot, p, q = gy.shape[1:]
        kh, kw = kernel_hw
        cg, m = c // groups, ktot // groups
        code = type_code(x.dtype)
        ncols = cg * kh * kw
        v2 = igemm_variant("wgrad", code, cg, m) == "v2"
        kind = WGRAD2 if v2 else WGRAD
        tiles = default_tiles(kind, code, m, ncols)
        es = 2 if code in (BF16, F16) else 4
        tiles_m, tiles_n = _ceil(m, tiles.bm), _ceil(ncols, tiles.bn)
        if v2:
            vec = 16 // es
            taps, _ = self._ig_prep(code, kind, tiles, None,
                                    (ncols, c, wd, kh, kw, dilation[0], dilation[1]),
                                    tiles_n * tiles.bn // vec, None, (1, cg, vec))
            x = self._ig_nhwc(code, kind, tiles, x)
            gy = self._ig_nhwc(code, kind, tiles, gy)
        else:
            taps, _ = self._ig_prep(code, WGRAD, tiles, None,
                                    (ncols, h * wd, wd, kh, kw, dilation[0], dilation[1]),
                                    tiles_n * tiles.bn)
        npq = n * p * q
        base = tiles_m * tiles_n * groups
        splits = max(1, min(_ceil(2 * self._ig_sm_count(), base),
                            npq // (self._ig_min_ktiles * tiles.bk)))
        chunk = _ceil(_ceil(npq, splits), tiles.bk) * tiles.bk
        splits = _ceil(npq, chunk)  # no empty split
        dw = self._ig_out((ktot, cg, kh, kw), x.dtype)
        partial = self._ig_tmp((splits, ktot, ncols), np.float32) if splits > 1 else None
        mp, sp = fast_divider(p * q)
        mq, sq = fast_divider(q)
        stream = self._ig_stream()
        if v2:
            launch = functools.partial(
                self._ig_kernel_smem(code, kind, tiles, "st_igemm_wgrad2", SIG_WGRAD),
                base * splits, tiles.threads, tiles.smem_bytes(kind, es))
        else:
            launch = functools.partial(
                self._ig_kernel(code, kind, tiles, "st_igemm_wgrad", SIG_WGRAD), base * splits,
                tiles.threads)
        launch(stream, self._ig_ptr(x), self._ig_ptr(gy), self._ig_ptr(taps),
               self._ig_ptr(partial), self._ig_ptr(dw), c, h, wd, cg, ktot, m, ncols, p, q,
               stride[0], stride[1], padding[0], padding[1], npq, chunk, groups, tiles_m,
               tiles_n, mp, sp, mq, sq)
        if partial is not None:
            total = ktot * ncols
            threads = 256
            self._ig_kernel(code, kind, tiles, "st_igemm_wgrad_reduce", SIG_REDUCE)(
                max(1, min(_ceil(total, threads), 8 * self._ig_sm_count())), threads, stream,
                self._ig_ptr(partial), self._ig_ptr(dw), splits, total)
        return dw
