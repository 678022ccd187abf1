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
import math
import os
from dataclasses import dataclass

import numpy as np

from ... import dtypes as dt
from ...precision import MATMUL_PRECISION

__all__ = ["BF16", "F16", "TF32", "TF32X3", "IgemmConvPrimitives", "Tiles", "choose_path",
           "default_tiles", "fast_divider", "igemm_options", "igemm_variant", "set_conv_path",
           "set_igemm_tiles", "set_igemm_variant", "settings_key", "type_code"]

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
_SETTINGS_VERSION = [0]  # bumped by set_conv_path / set_igemm_variant / set_igemm_tiles
_ENV_KEYS = ("SCITENSOR_CONV_PATH", "SCITENSOR_CONV_VARIANT", "SCITENSOR_CONV_TILES")


def _env_reader():
    """A function returning the three override variables' raw values. Reads
    ``os.environ``'s own dict where CPython has one (0.1 us instead of 2 us for three
    ``os.environ.get`` calls, which encode each key): every conv call reads them."""
    data, encode = getattr(os.environ, "_data", None), getattr(os.environ, "encodekey", None)
    if isinstance(data, dict) and callable(encode):
        try:
            k0, k1, k2 = (encode(k) for k in _ENV_KEYS)
        except Exception:  # pragma: no cover - an unusual platform: the public API below
            pass
        else:
            get = data.get
            return lambda: (get(k0), get(k1), get(k2))
    return lambda: tuple(os.environ.get(k) for k in _ENV_KEYS)


_read_env = _env_reader()


def settings_key() -> tuple:
    """Everything besides the arguments that the cached path and launch decisions depend
    on: the matmul precision (float32's kernel type), the setters' state and the
    ``SCITENSOR_CONV_*`` environment variables (read on every call, so a changed variable
    takes effect at once).

    Example:
        >>> from scitensor.backends.cuda.conv_igemm import set_conv_path, settings_key
        >>> before = settings_key()
        >>> set_conv_path("im2col"); set_conv_path(None)
        >>> settings_key() != before
        True
    """
    return (MATMUL_PRECISION[0], _SETTINGS_VERSION[0], *_read_env())


def set_igemm_variant(variant: str | None) -> None:
    """Force the ``"v1"`` or ``"v2"`` igemm kernels where supported (``None``/``"auto"``:
    choose). v2 needs channel counts it can load in 16-byte chunks; elsewhere v1 runs."""
    if variant not in (None, *_VARIANTS):
        raise ValueError(f"set_igemm_variant: unknown variant {variant!r}; use one of "
                         f"{_VARIANTS}")
    _VARIANT[0] = None if variant == "auto" else variant
    _SETTINGS_VERSION[0] += 1


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
    _SETTINGS_VERSION[0] += 1


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
                 and max(math.prod(x_shape), math.prod(y_shape)) < _INT32
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
    _SETTINGS_VERSION[0] += 1


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
    reports 96-128 for these), 3-4 stages (76-80 KB of shared memory per CTA).

    More than 64 output channels (forward and input gradient): 128x128 CTAs of 4 warps with
    64x64 warp tiles (128 bytes of ldmatrix per mma; registers sized for one CTA per SM,
    ptxas fits two) instead of 8 warps of 64x32. Measured on the H100
    (``scripts/check_conv_gpu.py --time-only --sweep --only C128,C256``), forward / input
    gradient ms, new vs old: N128 C128 28x28 bf16 0.201 / 0.207 vs 0.233 / 0.232, tf32 0.333 /
    0.332 vs 0.405 / 0.377; N128 C256 14x14 bf16 0.182 / 0.190 vs 0.207 / 0.218, tf32 0.344 /
    0.338 vs 0.431 / 0.406. At 64 channels or fewer the 8-warp tiles stayed ahead (C64 56x56,
    N256 C32, grouped). 3xTF32 keeps the 8-warp tiles (unmeasured with 64x64 warp tiles)."""
    bk = 32 if code in (BF16, F16) else 16
    if kind == FWD2:
        if m <= 32:
            return Tiles(32, 256, bk, 1, 4, 2, 4)  # 32x64 warp tiles
        if m <= 64:  # 32x64; 3xTF32 needs 168 registers here (spills at 128)
            return Tiles(64, 256, bk, 2, 4, 1 if code == TF32X3 else 2, 3)
        if code != TF32X3:
            return Tiles(128, 128, bk, 2, 2, 1, 4)  # 64x64
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


_ALIGN = 256  # byte alignment of each region of a pass's scratch buffer
_CACHE_LIMIT = 4096  # cached plans per backend
_BYTES = np.dtype(np.uint8)


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def _regions(*sizes: int) -> tuple[list[int], int]:
    """Byte offsets of consecutive regions of ``sizes`` bytes, each ``_ALIGN``-aligned, and
    the total: a pass's temporaries share one scratch allocation."""
    offsets, total = [], 0
    for size in sizes:
        offsets.append(total)
        total += _ceil(size, _ALIGN) * _ALIGN
    return offsets, max(total, 1)


@dataclass(frozen=True)
class _GemmPlan:
    """Everything but the pointers of one forward-kernel pass (conv2d, or its input gradient
    as a forward pass over dy): the output shape, the scratch bytes, and per launch the
    kernel, grid, block (and dynamic shared memory) and the scalar arguments. ``prep``:
    ``(kernel, blocks, taps offset, packed-weight offset, args)``; ``nhwc`` (v2): ``(kernel,
    blocks, offset, args)`` or None; ``gemm``: ``(kernel, blocks, threads, smem or None,
    args)``."""

    out_shape: tuple
    scratch: int
    prep: tuple
    nhwc: tuple | None
    gemm: tuple


@dataclass(frozen=True)
class _WgradPlan:
    """The weight-gradient pass: ``prep`` ``(kernel, blocks, taps offset, args)``; ``nhwc_x``
    / ``nhwc_gy`` (v2) ``(kernel, blocks, offset, args)`` or None; ``main`` ``(kernel,
    blocks, threads, smem or None, partial offset or None, args)``; ``reduce`` ``(kernel,
    blocks, args)`` or None (a single split writes dw itself)."""

    out_shape: tuple
    scratch: int
    prep: tuple
    nhwc_x: tuple | None
    nhwc_gy: tuple | None
    main: tuple
    reduce: tuple | None


class IgemmConvPrimitives:
    """The three implicit-GEMM passes over raw device arrays (mixin; see module docs).

    Hooks a host class provides: ``_ig_ptr(a)``, ``_ig_stream()``, ``_ig_out(shape, dtype)``
    (an output; poisoned in tests), ``_ig_tmp(shape, dtype)`` (scratch), ``_ig_kernel(code,
    kind, tiles, name, signature)`` (a launcher ``k(blocks, threads, stream, *args)``),
    ``_ig_kernel_smem(...)`` (the same with dynamic shared memory: ``k(blocks, threads, smem,
    stream, *args)``) and ``_ig_sm_count()`` (constant per instance).

    Host cost: every decision (variant, tiles, grids, split plan, fast dividers, scratch
    layout, the kernel launchers) is a pure function of the shapes, dtype, geometry and
    :func:`settings_key`, so it is made once per distinct call and cached on the instance
    (:meth:`_ig_plan`); a call then allocates the output and one scratch buffer and packs
    pointers into 2-5 launches.
    """

    # weight gradient: at least this many k tiles per split (the fixed cost of a split is its
    # prologue and its partial tile); splits are chosen to give about two CTAs per SM
    _ig_min_ktiles = 8

    # ---- plans ---------------------------------------------------------------------------
    def _ig_plan(self, pass_: str, dtype, shapes: tuple, geo: tuple):
        """The cached plan of one pass: ``"fwd"`` (shapes ``(x, w, out_hw)``, geo ``(stride,
        padding, dilation, groups)``), ``"dgrad"`` (``(dy, w, out_hw)``, ``(padding,
        dilation, groups)``) or ``"wgrad"`` (``(x, dy, kernel_hw)``, ``(stride, padding,
        dilation, groups)``)."""
        plans = self.__dict__.get("_ig_plans")
        if plans is None:
            plans = self.__dict__["_ig_plans"] = {}
        key = (pass_, dtype, shapes, geo, settings_key(), self._ig_min_ktiles)
        plan = plans.get(key)
        if plan is None:
            if pass_ == "wgrad":
                plan = self._ig_wgrad_plan(dtype, *shapes, *geo)
            elif pass_ == "fwd":
                (x_shape, w_shape, out_hw), (stride, padding, dilation, groups) = shapes, geo
                k, cg = w_shape[:2]
                code = type_code(dtype)
                v2 = igemm_variant("fwd", code, cg, k // groups) == "v2"
                plan = self._ig_gemm_plan(code, v2, dtype, x_shape, w_shape, 0, groups,
                                          k // groups, cg, dilation, out_hw, stride, padding)
            else:
                (y_shape, w_shape, out_hw), (padding, dilation, groups) = shapes, geo
                k, cg, kh, kw = w_shape
                code = type_code(dtype)
                pads = (dilation[0] * (kh - 1) - padding[0], dilation[1] * (kw - 1) - padding[1])
                v2 = igemm_variant("dgrad", code, k // groups, cg) == "v2"
                plan = self._ig_gemm_plan(code, v2, dtype, y_shape, w_shape, 1, groups, cg,
                                          k // groups, dilation, out_hw, (1, 1), pads)
            if len(plans) >= _CACHE_LIMIT:  # many distinct shapes: start over
                plans.clear()
            plans[key] = plan
        return plan

    def _ig_prep_args(self, taps_geo, ntaps, pack=None, chunks=(0, 1, 1)):
        """``(blocks, args)`` of st_igemm_prep: the tap table of ``ntaps`` rows over
        ``taps_geo = (kgemm, in_hw, in_w, kh, kw, dh, dw)`` of the gathered tensor, and when
        ``pack = (mode, groups, M, Mpad, Kpad, Cgw, Kgw)`` the packed weight too. ``chunks =
        (tapmode, cgath, vec)``: tapmode 1 is v2's table (one row per ``vec`` reduction
        indices ordered (r, s, c) over ``cgath`` channels; ``in_hw`` is then the NHWC channel
        count)."""
        kgemm, in_hw, in_w, kh, kw, dh, dw = taps_geo
        mode, groups, m, mpad, kpad, cgw, kgw = pack or (0, 1, 0, 0, 0, 0, 0)
        total = max(ntaps, groups * mpad * kpad) if pack is not None else ntaps
        blocks = max(1, min(_ceil(total, 256), 8 * self._ig_sm_count()))
        return blocks, (mode, groups, m, mpad, kgemm, kpad, cgw, kgw, kh, kw, in_hw, in_w, dh,
                        dw, ntaps, *chunks)

    def _ig_nhwc_plan(self, code, kind, tiles, shape, offset):
        """st_igemm_nhwc of an (N, C, H, W) tensor into the scratch region at ``offset``."""
        n, c, h, wd = shape
        tc, thw = _ceil(c, 32), _ceil(h * wd, 32)
        return (self._ig_kernel(code, kind, tiles, "st_igemm_nhwc", SIG_NHWC), n * tc * thw,
                offset, (c, h * wd, tc, thw))

    def _ig_gemm_plan(self, code, v2, dtype, src_shape, w_shape, pack_mode, groups, m, cg_src,
                      in_geo, out_hw, stride, pads) -> _GemmPlan:
        """The forward kernel's pass: ``out (N, groups*m, P, Q)`` from ``src (N, C, H, W)``.

        ``w_shape``: the conv weight's; ``pack_mode`` 0 packs it as is (forward), 1
        transposed and flipped (input gradient); ``cg_src``: gathered channels per group;
        ``in_geo = (dh, dw)``; ``pads = (pt, pl)`` of the gathered tensor. ``v2``: transpose
        ``src`` to NHWC first and run st_igemm_fwd2 (reduction ordered (r, s, c), every tile
        by 16-byte cp.async); else st_igemm_fwd on NCHW.
        """
        n, c, h, wd = src_shape
        p, q = out_hw
        kh, kw = w_shape[2:]
        es = np.dtype(dtype).itemsize
        kind = FWD2 if v2 else FWD
        kgemm = cg_src * kh * kw
        tiles = default_tiles(kind, code, m)
        kpad, tiles_m = _ceil(kgemm, tiles.bk) * tiles.bk, _ceil(m, tiles.bm)
        mpad = tiles_m * tiles.bm
        pack = (pack_mode + (2 if v2 else 0), groups, m, mpad, kpad, w_shape[1],
                w_shape[0] // groups)
        if v2:
            vec = 16 // (2 if code in (BF16, F16) else 4)
            taps_geo, ntaps, chunks = (kgemm, c, wd, kh, kw, *in_geo), kpad // vec, (1, cg_src,
                                                                                   vec)
        else:
            taps_geo, ntaps, chunks = (kgemm, h * wd, wd, kh, kw, *in_geo), kpad, (0, 1, 1)
        (taps_off, wp_off, src_off), scratch = _regions(
            ntaps * _TAP_INTS * 4, groups * mpad * kpad * es, n * c * h * wd * es if v2 else 0)
        blocks, args = self._ig_prep_args(taps_geo, ntaps, pack, chunks)
        prep = (self._ig_kernel(code, kind, tiles, "st_igemm_prep", SIG_PREP), blocks, taps_off,
                wp_off, args)
        nhwc = self._ig_nhwc_plan(code, kind, tiles, src_shape, src_off) if v2 else None
        ngemm = n * p * q
        tiles_n = _ceil(ngemm, tiles.bn)
        args = (c, h, wd, cg_src, m, mpad, groups * m, p, q, stride[0], stride[1], pads[0],
                pads[1], kpad, ngemm, tiles_m, tiles_n, *fast_divider(p * q), *fast_divider(q))
        blocks = tiles_m * tiles_n * groups
        if v2:
            gemm = (self._ig_kernel_smem(code, kind, tiles, "st_igemm_fwd2", SIG_FWD), blocks,
                    tiles.threads, tiles.smem_bytes(kind, es), args)
        else:
            gemm = (self._ig_kernel(code, kind, tiles, "st_igemm_fwd", SIG_FWD), blocks,
                    tiles.threads, None, args)
        return _GemmPlan((n, groups * m, p, q), scratch, prep, nhwc, gemm)

    def _ig_wgrad_plan(self, dtype, x_shape, gy_shape, kernel_hw, stride, padding, dilation,
                       groups) -> _WgradPlan:
        """conv2d's weight gradient: split reduction over pixels, then a fixed-order sum."""
        n, c, h, wd = x_shape
        ktot, p, q = gy_shape[1:]
        kh, kw = kernel_hw
        cg, m = c // groups, ktot // groups
        code = type_code(dtype)
        ncols = cg * kh * kw
        v2 = igemm_variant("wgrad", code, cg, m) == "v2"
        kind = WGRAD2 if v2 else WGRAD
        tiles = default_tiles(kind, code, m, ncols)
        es = np.dtype(dtype).itemsize
        tiles_m, tiles_n = _ceil(m, tiles.bm), _ceil(ncols, tiles.bn)
        npq = n * p * q
        base = tiles_m * tiles_n * groups
        splits = max(1, min(_ceil(2 * self._ig_sm_count(), base),
                            npq // (self._ig_min_ktiles * tiles.bk)))
        chunk = _ceil(_ceil(npq, splits), tiles.bk) * tiles.bk
        splits = _ceil(npq, chunk)  # no empty split
        if v2:
            vec = 16 // (2 if code in (BF16, F16) else 4)
            ntaps = tiles_n * tiles.bn // vec
            taps_geo, chunks = (ncols, c, wd, kh, kw, *dilation), (1, cg, vec)
        else:
            ntaps = tiles_n * tiles.bn
            taps_geo, chunks = (ncols, h * wd, wd, kh, kw, *dilation), (0, 1, 1)
        (taps_off, x_off, gy_off, part_off), scratch = _regions(
            ntaps * _TAP_INTS * 4, n * c * h * wd * es if v2 else 0,
            n * ktot * p * q * es if v2 else 0, splits * ktot * ncols * 4 if splits > 1 else 0)
        blocks, args = self._ig_prep_args(taps_geo, ntaps, None, chunks)
        prep = (self._ig_kernel(code, kind, tiles, "st_igemm_prep", SIG_PREP), blocks, taps_off,
                args)
        nhwc_x = self._ig_nhwc_plan(code, kind, tiles, x_shape, x_off) if v2 else None
        nhwc_gy = self._ig_nhwc_plan(code, kind, tiles, gy_shape, gy_off) if v2 else None
        args = (c, h, wd, cg, ktot, m, ncols, p, q, stride[0], stride[1], padding[0],
                padding[1], npq, chunk, groups, tiles_m, tiles_n, *fast_divider(p * q),
                *fast_divider(q))
        if v2:
            main = (self._ig_kernel_smem(code, kind, tiles, "st_igemm_wgrad2", SIG_WGRAD),
                    base * splits, tiles.threads, tiles.smem_bytes(kind, es), part_off, args)
        else:
            main = (self._ig_kernel(code, kind, tiles, "st_igemm_wgrad", SIG_WGRAD),
                    base * splits, tiles.threads, None, part_off, args)
        reduce = None
        if splits > 1:
            total = ktot * ncols
            reduce = (self._ig_kernel(code, kind, tiles, "st_igemm_wgrad_reduce", SIG_REDUCE),
                      max(1, min(_ceil(total, 256), 8 * self._ig_sm_count())), (splits, total))
        else:
            main = main[:4] + (None,) + main[5:]
        return _WgradPlan((ktot, cg, kh, kw), scratch, prep, nhwc_x, nhwc_gy, main, reduce)

    # ---- launches ------------------------------------------------------------------------
    def _ig_run_gemm(self, plan: _GemmPlan, src, w, bias, dtype):
        out = self._ig_out(plan.out_shape, dtype)
        scratch = self._ig_tmp((plan.scratch,), _BYTES)  # every byte read is written first
        base = self._ig_ptr(scratch)
        stream = self._ig_stream()
        kern, blocks, taps_off, wp_off, args = plan.prep
        taps, wp = base + taps_off, base + wp_off
        kern(blocks, 256, stream, self._ig_ptr(w), wp, taps, *args)
        src_ptr = self._ig_ptr(src)
        if plan.nhwc is not None:
            kern, blocks, off, args = plan.nhwc
            kern(blocks, 256, stream, src_ptr, base + off, *args)
            src_ptr = base + off
        kern, blocks, threads, smem, args = plan.gemm
        if smem is None:
            kern(blocks, threads, stream, src_ptr, wp, taps, self._ig_ptr(bias),
                 self._ig_ptr(out), *args)
        else:
            kern(blocks, threads, smem, stream, src_ptr, wp, taps, self._ig_ptr(bias),
                 self._ig_ptr(out), *args)
        return out

    def _ig_run_wgrad(self, plan: _WgradPlan, x, gy):
        dw = self._ig_out(plan.out_shape, x.dtype)
        scratch = self._ig_tmp((plan.scratch,), _BYTES)
        base = self._ig_ptr(scratch)
        stream = self._ig_stream()
        kern, blocks, taps_off, args = plan.prep
        taps = base + taps_off
        kern(blocks, 256, stream, 0, 0, taps, *args)
        x_ptr, gy_ptr, dw_ptr = self._ig_ptr(x), self._ig_ptr(gy), self._ig_ptr(dw)
        if plan.nhwc_x is not None:
            kern, blocks, off, args = plan.nhwc_x
            kern(blocks, 256, stream, x_ptr, base + off, *args)
            x_ptr = base + off
            kern, blocks, off, args = plan.nhwc_gy
            kern(blocks, 256, stream, gy_ptr, base + off, *args)
            gy_ptr = base + off
        kern, blocks, threads, smem, part_off, args = plan.main
        part = 0 if part_off is None else base + part_off
        if smem is None:
            kern(blocks, threads, stream, x_ptr, gy_ptr, taps, part, dw_ptr, *args)
        else:
            kern(blocks, threads, smem, stream, x_ptr, gy_ptr, taps, part, dw_ptr, *args)
        if plan.reduce is not None:
            kern, blocks, args = plan.reduce
            kern(blocks, 256, stream, part, dw_ptr, *args)
        return dw

    # ---- the three passes (contiguous arrays) ----------------------------------------------
    def _igemm_conv2d(self, x, w, bias, out_hw, stride, padding, dilation, groups):
        """conv2d on the implicit-GEMM kernel (contiguous ``x``, ``w``, ``bias``)."""
        plan = self._ig_plan("fwd", x.dtype, (x.shape, w.shape, tuple(out_hw)),
                             (tuple(stride), tuple(padding), tuple(dilation), groups))
        return self._ig_run_gemm(plan, x, w, bias, x.dtype)

    def _igemm_conv_transpose2d(self, y, w, bias, out_hw, padding, dilation, groups):
        """conv2d's input gradient for stride 1: a forward pass over ``y`` with the weight
        transposed per group and flipped, and padding ``d*(k-1) - p`` (may be negative)."""
        plan = self._ig_plan("dgrad", y.dtype, (y.shape, w.shape, tuple(out_hw)),
                             (tuple(padding), tuple(dilation), groups))
        return self._ig_run_gemm(plan, y, w, bias, y.dtype)

    def _igemm_conv2d_weight(self, x, gy, kernel_hw, stride, padding, dilation, groups):
        """conv2d's weight gradient: split reduction over pixels, then a fixed-order sum."""
        plan = self._ig_plan("wgrad", x.dtype, (x.shape, gy.shape, tuple(kernel_hw)),
                             (tuple(stride), tuple(padding), tuple(dilation), groups))
        return self._ig_run_wgrad(plan, x, gy)
