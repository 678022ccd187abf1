"""The implicit-GEMM conv path: ``backends/cuda/conv_igemm.py`` + ``kernels/conv_igemm.cu``.

Without a GPU: the fast division the kernels use, the path choice, the tile checks (against
the kernels' static_asserts through nvcc, and no register spills in the default tiles), and
the kernels themselves on the host emulator (``scripts/conv_emulator``: the real host code,
ldmatrix / mma.sync / cp.async emulated, NaN-poisoned buffers) against float64 NumPy. With a
GPU: every pass on the forced igemm path against float64, igemm against im2col, the split
weight gradient's determinism and graph capture.
"""

from __future__ import annotations

import doctest
import importlib.util
import pathlib
import shutil
import subprocess
import tempfile

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as hs

import scitensor as st
from scitensor.backends.cuda import conv_igemm as ci

from ..ops.helpers import PROPS

ROOT = pathlib.Path(__file__).parents[2]
KERNELS = ROOT / "src" / "scitensor" / "backends" / "cuda" / "kernels"
SOURCE = KERNELS / "conv_igemm.cu"
NVCC = shutil.which("nvcc")
CODES = (ci.BF16, ci.F16, ci.TF32, ci.TF32X3)


@pytest.fixture(autouse=True)
def _restore():
    yield
    ci.set_conv_path(None)
    ci.set_igemm_variant(None)
    for kind in ("fwd", "wgrad", "fwd2", "wgrad2"):
        ci.set_igemm_tiles(kind, None)
    st.set_matmul_precision("highest")


def test_module_examples():
    res = doctest.testmod(ci, optionflags=doctest.ELLIPSIS)
    assert res.attempted > 0 and res.failed == 0


# ---- fast division -------------------------------------------------------------------------
def _div(n: int, d: int) -> int:
    mul, shift = ci.fast_divider(d)
    mul &= 0xFFFFFFFF  # the kernel reads the slot as unsigned
    t = (n * mul) >> 32
    assert t + n < 1 << 32  # the kernel's 32-bit sum cannot overflow
    return (t + n) >> shift


@PROPS
@given(d=hs.integers(1, 2**31 - 1), n=hs.integers(0, 2**31 - 1))
def test_fast_divider_matches_integer_division(d, n):
    assert _div(n, d) == n // d
    for m in (0, d - 1, d, 2**31 - 1, (2**31 - 1) // d * d - 1):
        if 0 <= m < 2**31:
            assert _div(m, d) == m // d


def test_fast_divider_small_divisors_exhaustively():
    ns = np.concatenate([np.arange(0, 700), np.array([2**31 - 1, 2**31 - 2, 2**30, 12345678])])
    for d in range(1, 130):
        assert all(_div(int(n), d) == int(n) // d for n in ns), d


def test_fast_divider_rejects_out_of_range():
    for d in (0, -3, 2**31):
        with pytest.raises(ValueError, match="divisor"):
            ci.fast_divider(d)


# ---- path choice -----------------------------------------------------------------------------
BF16 = st.bfloat16.np
F32 = np.dtype(np.float32)


def _path(pass_, dtype=BF16, arch=90, n=8, c=64, h=28, k=64, ks=3, stride=1, groups=1, dil=1):
    ho = (h + 2 * (ks // 2) - dil * (ks - 1) - 1) // stride + 1
    return ci.choose_path(pass_, dtype, arch, (n, c, h, h), (k, c // groups, ks, ks),
                          (n, k, ho, ho), (stride, stride), (dil, dil), groups)


@pytest.mark.parametrize("pass_,kwargs,expected", [
    ("fwd", {}, "igemm"),
    ("dgrad", {}, "igemm"),
    ("wgrad", {}, "igemm"),
    ("fwd", {"dtype": F32}, "igemm"),
    ("fwd", {"dtype": np.dtype(np.float16)}, "igemm"),
    ("fwd", {"dtype": np.dtype(np.float64)}, "im2col"),
    ("wgrad", {"arch": 75}, "im2col"),
    ("fwd", {"c": 3, "ks": 7, "stride": 2}, "igemm"),  # the stem's forward
    ("dgrad", {"c": 3, "ks": 7, "stride": 2}, "im2col"),  # strided input gradient
    ("dgrad", {"stride": 2}, "im2col"),
    ("dgrad", {"c": 4}, "im2col"),  # too few channels per group for a tensor-core tile
    ("dgrad", {"dil": 2}, "igemm"),
    ("fwd", {"groups": 64, "k": 64}, "depthwise"),
    ("dgrad", {"groups": 64, "k": 128}, "depthwise"),  # channel multiplier 2
    ("wgrad", {"groups": 64, "k": 64}, "depthwise"),
    ("wgrad", {"groups": 64, "k": 64, "ks": 9}, "igemm"),  # no direct kernel past 7x7
    ("fwd", {"groups": 4}, "igemm"),
    ("fwd", {"n": 4096, "c": 512, "h": 64}, "im2col"),  # 2^33 elements: int32 indices
])
def test_choose_path(pass_, kwargs, expected):
    assert _path(pass_, **kwargs) == expected


def test_forced_paths(monkeypatch):
    ci.set_conv_path("im2col")
    assert _path("fwd") == "im2col"
    assert _path("fwd", groups=64, k=64) == "depthwise"  # forcing never replaces depthwise
    ci.set_conv_path("igemm")
    assert _path("dgrad", c=4) == "igemm"  # a heuristic is overridden ...
    assert _path("dgrad", stride=2) == "im2col"  # ... an unsupported case is not
    assert _path("fwd", dtype=np.dtype(np.float64)) == "im2col"
    ci.set_conv_path("auto")
    monkeypatch.setenv("SCITENSOR_CONV_PATH", "im2col")
    assert _path("fwd") == "im2col"
    monkeypatch.setenv("SCITENSOR_CONV_PATH", "sideways")
    with pytest.raises(ValueError, match="SCITENSOR_CONV_PATH"):
        _path("fwd")
    with pytest.raises(ValueError, match="unknown path"):
        ci.set_conv_path("fast")


@pytest.mark.parametrize("pass_,code,gathered,m,expected", [
    ("fwd", ci.BF16, 64, 64, "v2"),
    ("fwd", ci.BF16, 3, 64, "v1"),  # the stem: 3 channels are no 16-byte chunk
    ("fwd", ci.BF16, 12, 64, "v1"),
    ("fwd", ci.TF32, 12, 64, "v2"),  # float32: chunks of 4
    ("dgrad", ci.F16, 64, 3, "v2"),  # only the gathered (dy) channels matter
    ("wgrad", ci.BF16, 64, 12, "v1"),  # ... but the weight gradient reads dy rows in chunks too
    ("wgrad", ci.TF32X3, 64, 12, "v2"),
])
def test_igemm_variant(pass_, code, gathered, m, expected):
    assert ci.igemm_variant(pass_, code, gathered, m) == expected


def test_igemm_variant_overrides(monkeypatch):
    ci.set_igemm_variant("v1")
    assert ci.igemm_variant("fwd", ci.BF16, 64, 64) == "v1"
    ci.set_igemm_variant("v2")
    assert ci.igemm_variant("fwd", ci.BF16, 64, 64) == "v2"
    assert ci.igemm_variant("fwd", ci.BF16, 3, 64) == "v1"  # unsupported: never forced
    ci.set_igemm_variant(None)
    monkeypatch.setenv("SCITENSOR_CONV_VARIANT", "v1")
    assert ci.igemm_variant("fwd", ci.BF16, 64, 64) == "v1"
    monkeypatch.setenv("SCITENSOR_CONV_VARIANT", "v3")
    with pytest.raises(ValueError, match="SCITENSOR_CONV_VARIANT"):
        ci.igemm_variant("fwd", ci.BF16, 64, 64)
    with pytest.raises(ValueError, match="unknown variant"):
        ci.set_igemm_variant("fast")


def test_type_code_follows_matmul_precision():
    assert ci.type_code(BF16) == ci.BF16
    assert ci.type_code(np.dtype(np.float16)) == ci.F16
    assert ci.type_code(F32) == ci.TF32X3
    st.set_matmul_precision("tf32")
    assert ci.type_code(F32) == ci.TF32
    assert ci.type_code(np.dtype(np.float64)) is None


# ---- tiles -----------------------------------------------------------------------------------
@pytest.mark.parametrize("code", CODES)
def test_default_tiles_fit(code):
    seen = set()
    es = 2 if code in (ci.BF16, ci.F16) else 4
    for fwd, wgrad, limit in ((ci.FWD, ci.WGRAD, 48 * 1024), (ci.FWD2, ci.WGRAD2, 227 * 1024)):
        seen = set()
        for m in (1, 16, 32, 33, 64, 65, 128, 1000):
            seen.add((fwd, ci.default_tiles(fwd, code, m)))
            for ncols in (1, 27, 64, 65, 147, 4608):
                seen.add((wgrad, ci.default_tiles(wgrad, code, m, ncols)))
        assert {t.bm for _, t in seen} == {32, 64, 128}
        for kind, t in seen:
            assert t.smem_bytes(kind, es) <= limit
            if kind in (ci.FWD2, ci.WGRAD2):  # two CTAs per SM fit (228 KB per SM)
                assert t.minb * (t.smem_bytes(kind, es) + 1024) <= 228 * 1024


@pytest.mark.parametrize("tiles,kind", [
    (ci.Tiles(64, 128, 32, 2, 3), ci.FWD),  # warp tile not a multiple of 16
    (ci.Tiles(48, 128, 32, 1, 4), ci.FWD),  # weight chunks do not divide the threads
    (ci.Tiles(128, 256, 32, 2, 4), ci.FWD),  # 53 KiB of shared memory
    (ci.Tiles(64, 128, 24, 2, 4), ci.WGRAD),  # BK not a multiple of the k step
    (ci.Tiles(64, 128, 32, 2, 4, 0), ci.WGRAD),  # minb
])
def test_tiles_check_rejects(tiles, kind):
    with pytest.raises(ValueError, match="do not fit"):
        tiles.check(kind, ci.BF16)


def test_tile_overrides(monkeypatch):
    t = ci.Tiles(128, 64, 32, 4, 2)
    ci.set_igemm_tiles("fwd", t)
    assert ci.default_tiles(ci.FWD, ci.BF16, 8) == t
    monkeypatch.setenv("SCITENSOR_CONV_TILES", "wgrad=32,64,32,1,4,2; fwd=64,64,16,2,2")
    assert ci.default_tiles(ci.WGRAD, ci.BF16, 500, 9) == ci.Tiles(32, 64, 32, 1, 4, 2)
    assert ci.default_tiles(ci.FWD, ci.TF32, 8) == ci.Tiles(64, 64, 16, 2, 2)
    assert ci.default_tiles(ci.FWD, ci.BF16, 8) == ci.Tiles(64, 64, 16, 2, 2)
    monkeypatch.setenv("SCITENSOR_CONV_TILES", "fwd=64,128,24,2,4")
    with pytest.raises(ValueError, match="do not fit"):  # 24 is no multiple of bf16's k16
        ci.default_tiles(ci.FWD, ci.BF16, 8)
    with pytest.raises(ValueError, match="kind"):
        ci.set_igemm_tiles("bwd", t)
    monkeypatch.setenv("SCITENSOR_CONV_TILES", "fwd2=64,128,32,2,2,2,5")
    assert ci.default_tiles(ci.FWD2, ci.BF16, 8) == ci.Tiles(64, 128, 32, 2, 2, 2, 5)
    assert ci.default_tiles(ci.FWD, ci.BF16, 8) == ci.default_tiles(ci.FWD, ci.BF16, 8, 0)
    monkeypatch.setenv("SCITENSOR_CONV_TILES", "wgrad2=64,128,32,2,4,2,9")
    with pytest.raises(ValueError, match="v2 weight-gradient"):  # 9 stages
        ci.default_tiles(ci.WGRAD2, ci.BF16, 64, 576)


# ---- cached plans ----------------------------------------------------------------------------
class _PlanOnly(ci.IgemmConvPrimitives):
    """Plans without a device: a 'kernel' is its (code, kind, tiles, name)."""

    def _ig_kernel(self, code, kind, tiles, name, signature):
        return (code, kind, tiles, name)

    _ig_kernel_smem = _ig_kernel

    def _ig_sm_count(self) -> int:
        return 132


FWD_ARGS = ("fwd", F32, ((8, 64, 16, 16), (64, 64, 3, 3), (16, 16)),
            ((1, 1), (1, 1), (1, 1), 1))


def test_plans_are_cached_per_call_and_settings(monkeypatch):
    be = _PlanOnly()
    monkeypatch.delenv("SCITENSOR_CONV_VARIANT", raising=False)
    monkeypatch.delenv("SCITENSOR_CONV_TILES", raising=False)
    plan = be._ig_plan(*FWD_ARGS)
    assert be._ig_plan(*FWD_ARGS) is plan  # decided once
    assert plan.gemm[0][3] == "st_igemm_fwd2" and plan.nhwc is not None
    assert plan.gemm[0][0] == ci.TF32X3 and plan.out_shape == (8, 64, 16, 16)
    # every setting the decisions depend on is part of the key
    monkeypatch.setenv("SCITENSOR_CONV_VARIANT", "v1")
    v1 = be._ig_plan(*FWD_ARGS)
    assert v1.gemm[0][3] == "st_igemm_fwd" and v1.nhwc is None
    monkeypatch.setenv("SCITENSOR_CONV_VARIANT", "v3")
    with pytest.raises(ValueError, match="SCITENSOR_CONV_VARIANT"):
        be._ig_plan(*FWD_ARGS)
    monkeypatch.delenv("SCITENSOR_CONV_VARIANT")
    assert be._ig_plan(*FWD_ARGS) is plan
    ci.set_igemm_variant("v1")
    assert be._ig_plan(*FWD_ARGS).gemm[0][3] == "st_igemm_fwd"
    ci.set_igemm_variant(None)
    tiles = ci.Tiles(64, 128, 16, 2, 2, 1, 3)
    ci.set_igemm_tiles("fwd2", tiles)
    assert be._ig_plan(*FWD_ARGS).gemm[0][2] == tiles
    ci.set_igemm_tiles("fwd2", None)
    monkeypatch.setenv("SCITENSOR_CONV_TILES", "fwd2=32,128,16,1,2,1,3")
    assert be._ig_plan(*FWD_ARGS).gemm[0][2] == ci.Tiles(32, 128, 16, 1, 2, 1, 3)
    monkeypatch.delenv("SCITENSOR_CONV_TILES")
    st.set_matmul_precision("tf32")
    assert be._ig_plan(*FWD_ARGS).gemm[0][0] == ci.TF32
    st.set_matmul_precision("highest")
    assert be._ig_plan(*FWD_ARGS) == plan  # the same decisions (a new key: setters ran)


def test_plan_scratch_regions_hold_every_temporary():
    be = _PlanOnly()
    n, c, h, k = 8, 64, 16, 64
    plan = be._ig_plan(*FWD_ARGS)
    _, _, taps_off, wp_off, args = plan.prep
    tiles = plan.gemm[0][2]
    mpad, kpad, ntaps = args[3], args[5], args[14]
    assert mpad % tiles.bm == 0 and kpad % tiles.bk == 0
    regions = sorted([(taps_off, ntaps * 16), (wp_off, mpad * kpad * 4),
                      (plan.nhwc[2], n * c * h * h * 4)])
    for (off, size), (nxt, _) in zip(regions, regions[1:] + [(plan.scratch, 0)]):
        assert off % 256 == 0 and off + size <= nxt
    wplan = be._ig_plan("wgrad", F32, ((n, c, h, h), (n, k, h, h), (3, 3)),
                        ((1, 1), (1, 1), (1, 1), 1))
    assert wplan.out_shape == (k, c, 3, 3) and wplan.reduce is not None
    splits = wplan.reduce[2][0]
    regions = sorted([(wplan.prep[2], wplan.prep[3][14] * 16),
                      (wplan.nhwc_x[2], n * c * h * h * 4), (wplan.nhwc_gy[2], n * k * h * h * 4),
                      (wplan.main[4], splits * k * c * 9 * 4)])
    for (off, size), (nxt, _) in zip(regions, regions[1:] + [(wplan.scratch, 0)]):
        assert off % 256 == 0 and off + size <= nxt


def _nvcc(options, tmp_path, cubin=False):
    out = tmp_path / ("k.cubin" if cubin else "k.ptx")
    cmd = [NVCC, "-arch=sm_90", "-cubin" if cubin else "--ptx", "-std=c++17", f"-I{KERNELS}",
           *options, str(SOURCE), "-o", str(out)]
    if cubin:
        cmd[1:1] = ["-Xptxas", "-v"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def _default_configs():
    """(code, kind, tiles) of every default tile choice (float16 compiles like bfloat16)."""
    out = []
    for code in (ci.BF16, ci.TF32, ci.TF32X3):
        for m in (32, 64, 128):
            for fwd, wgrad in ((ci.FWD, ci.WGRAD), (ci.FWD2, ci.WGRAD2)):
                out.append((code, fwd, ci.default_tiles(fwd, code, m)))
                for ncols in (64, 128):
                    out.append((code, wgrad, ci.default_tiles(wgrad, code, m, ncols)))
    return sorted(set(out), key=str)


@pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH")
@pytest.mark.parametrize("code,kind,tiles", _default_configs(),
                         ids=lambda v: str(v) if not isinstance(v, ci.Tiles) else
                         "x".join(str(x) for x in (v.bm, v.bn, v.bk, v.wm, v.wn, v.minb,
                                                   v.stages)))
def test_default_modules_compile_without_spills(code, kind, tiles, tmp_path):
    res = _nvcc(ci.igemm_options(code, kind, tiles), tmp_path, cubin=True)
    assert res.returncode == 0, res.stderr
    name = {ci.FWD: "st_igemm_fwd", ci.WGRAD: "st_igemm_wgrad", ci.FWD2: "st_igemm_fwd2",
            ci.WGRAD2: "st_igemm_wgrad2"}[kind]
    info = res.stderr[res.stderr.index(f"Function properties for {name}"):]
    assert "0 bytes spill stores, 0 bytes spill loads" in info.splitlines()[1], info


@pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH")
@pytest.mark.parametrize("tiles", [ci.Tiles(64, 128, 32, 2, 3), ci.Tiles(128, 256, 32, 2, 4)])
def test_kernel_static_asserts_agree_with_check(tiles, tmp_path):
    with pytest.raises(ValueError):
        tiles.check(ci.FWD, ci.BF16)
    res = _nvcc(ci.igemm_options(ci.BF16, ci.FWD, tiles), tmp_path)
    assert res.returncode != 0 and "static assertion failed" in res.stderr, res.stderr


# ---- host emulator ---------------------------------------------------------------------------
def _emulator():
    """scripts/conv_emulator/run.py as a module, or None without g++ / C++20 <barrier>."""
    if shutil.which("g++") is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        src = pathlib.Path(tmp) / "probe.cpp"
        src.write_text("#include <barrier>\nint main() { std::barrier<> b(1); }\n")
        probe = subprocess.run(["g++", "-std=c++20", "-pthread", str(src), "-o", f"{tmp}/p"],
                               capture_output=True)
    if probe.returncode:
        return None
    path = ROOT / "scripts" / "conv_emulator" / "run.py"
    spec = importlib.util.spec_from_file_location("conv_emulator_run", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


EMU_CASES = [("odd 3x3", "bf16"), ("groups 2", "f16"), ("dilation 2", "tf32"),
             ("stem 7x7 s2", "f32x3"), ("1x1", "bf16"), ("pad > extent", "f32x3"),
             ("v2 3x3", "bf16"), ("v2 groups 2", "tf32"), ("v2 s2 d2", "f16"),
             ("v2 pad>ext", "f32x3")]


@pytest.fixture(scope="module")
def emulator():
    emu = _emulator()
    if emu is None:
        pytest.skip("g++ with C++20 <barrier> is not available")
    be = emu.HostIgemm(sm_count=2)
    be._ig_min_ktiles = 1  # small problems: still several weight-gradient splits
    return emu, be


@pytest.mark.parametrize("name,ty", EMU_CASES)
def test_kernels_on_host_emulator(emulator, name, ty):
    emu, be = emulator
    case = next(c for c in emu.CASES if c[0] == name)
    errs = emu.run_case(be, case, ty, seed=7)
    tol = emu.TYPES[ty][2]
    expected = {"fwd", "wgrad"} | ({"dgrad"} if case[7] == (1, 1) else set())
    assert set(errs) == expected
    assert all(e <= tol for e in errs.values()), errs


@pytest.mark.parametrize("variant,names", [
    ("v1", {"st_igemm_fwd", "st_igemm_wgrad"}),
    ("v2", {"st_igemm_fwd2", "st_igemm_wgrad2", "st_igemm_nhwc"}),
])
def test_emulated_variants_run_their_kernels(emulator, variant, names):
    emu, be = emulator
    case = next(c for c in emu.CASES if c[0] == "v2 deep")  # 2 m tiles, 21 k tiles
    ci.set_igemm_variant(variant)
    before = {k: len(v.launches) for k, v in be.kernels.items()}
    errs = emu.run_case(be, case, "bf16", seed=5)
    assert set(errs) == {"fwd", "dgrad", "wgrad"}
    assert all(e <= emu.TYPES["bf16"][2] for e in errs.values()), errs
    launched = {k[3] for k, v in be.kernels.items() if len(v.launches) > before.get(k, 0)}
    assert names <= launched and not ({"st_igemm_fwd2", "st_igemm_fwd"} - names) & launched


def test_emulated_v2_with_other_tiles_and_stages(emulator):
    emu, be = emulator
    ci.set_igemm_tiles("fwd2", ci.Tiles(32, 64, 32, 1, 2, 1, 2))
    ci.set_igemm_tiles("wgrad2", ci.Tiles(32, 64, 32, 2, 2, 1, 5))
    case = next(c for c in emu.CASES if c[0] == "v2 groups 2")
    errs = emu.run_case(be, case, "bf16", seed=9)
    assert all(e <= emu.TYPES["bf16"][2] for e in errs.values()), errs


def test_emulated_weight_gradient_splits_the_reduction(emulator):
    emu, be = emulator
    case = next(c for c in emu.CASES if c[0] == "many tiles")
    before = {k: len(v.launches) for k, v in be.kernels.items()}
    errs = emu.run_case(be, case, "bf16", seed=3, passes=("wgrad",))
    assert errs["wgrad"] <= emu.TYPES["bf16"][2]
    launched = {k[3] for k, v in be.kernels.items() if len(v.launches) > before.get(k, 0)}
    assert {"st_igemm_prep", "st_igemm_wgrad", "st_igemm_wgrad_reduce"} <= launched
    case = next(c for c in emu.CASES if c[0] == "v2 3x3")  # the v2 kernel, split too
    before = {k: len(v.launches) for k, v in be.kernels.items()}
    errs = emu.run_case(be, case, "bf16", seed=4, passes=("wgrad",))
    assert errs["wgrad"] <= emu.TYPES["bf16"][2]
    launched = {k[3] for k, v in be.kernels.items() if len(v.launches) > before.get(k, 0)}
    assert {"st_igemm_wgrad2", "st_igemm_wgrad_reduce"} <= launched


# ---- on the GPU ------------------------------------------------------------------------------
cuda = pytest.mark.skipif(not st.cuda_status()[0],
                          reason=f"CUDA not usable: {st.cuda_status()[1]}")
MODES = {"bf16": (st.bfloat16, "highest", 1.5e-2), "f16": (st.float16, "highest", 2e-3),
         "f32": (st.float32, "highest", 2e-5), "tf32": (st.float32, "tf32", 5e-3)}
# N, C, H, W, K, (kh, kw), stride, padding, dilation, groups, bias
GPU_CASES = [
    (2, 5, 13, 11, 7, (3, 3), (1, 1), (1, 1), (1, 1), 1, True),
    (2, 8, 15, 14, 16, (3, 3), (2, 2), (1, 1), (1, 1), 1, True),
    (2, 6, 12, 13, 9, (3, 3), (1, 1), (2, 2), (2, 2), 1, False),
    (2, 32, 10, 10, 32, (3, 3), (1, 1), (1, 1), (1, 1), 4, True),
    (1, 3, 33, 31, 64, (7, 7), (2, 2), (3, 3), (1, 1), 1, True),
    (2, 96, 7, 9, 160, (1, 1), (1, 1), (0, 0), (1, 1), 1, True),
]


def _gpu_inputs(case, dtype, seed=0):
    import cupy

    n, c, h, w, k, kern, stride, pad, dil, groups, bias = case
    ho, wo = ((s + 2 * p - d * (kk - 1) - 1) // t + 1
              for s, p, d, kk, t in zip((h, w), pad, dil, kern, stride))
    r = np.random.default_rng(seed)

    def rnd(shape):
        return r.standard_normal(shape).astype(np.float32).astype(dtype.np)

    host = [rnd((n, c, h, w)), rnd((k, c // groups, *kern)), rnd((n, k, ho, wo)),
            rnd((k,)) if bias else None, rnd((c,)) if bias else None]
    return host, [None if a is None else cupy.asarray(a) for a in host], (ho, wo)


def _passes(be, case, arrays, out_hw):
    n, c, h, w, k, kern, stride, pad, dil, groups, _ = case
    x, wt, gy, b, bc = arrays
    geo = (stride, pad, dil, groups)
    out = {"fwd": be.conv2d(x, wt, b, out_hw, *geo), "wgrad": be.conv2d_weight(x, gy, kern, *geo)}
    out["dgrad"] = be.conv_transpose2d(gy, wt, bc, (h, w), *geo)
    return out


@cuda
@pytest.mark.parametrize("variant", ["v1", "auto"])
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("case", GPU_CASES, ids=lambda c: f"N{c[0]}C{c[1]}K{c[4]}k{c[5][0]}"
                         f"s{c[6][0]}d{c[8][0]}g{c[9]}")
def test_igemm_matches_float64_on_gpu(case, mode, variant):
    import cupy

    be, cpu = st.Device("cuda").backend, st.Device("cpu").backend
    dtype, prec, tol = MODES[mode]
    host, dev, out_hw = _gpu_inputs(case, dtype)
    want = _passes(cpu, case, [None if a is None else a.astype(np.float64) for a in host],
                   out_hw)
    ci.set_conv_path("igemm")
    ci.set_igemm_variant(variant)
    st.set_matmul_precision(prec)
    be._ew.poison = True
    try:
        got = _passes(be, case, dev, out_hw)
    finally:
        be._ew.poison = False
    for name, g in got.items():
        g = cupy.asnumpy(g).astype(np.float64)
        assert np.isfinite(g).all(), f"{name}: unwritten (NaN) elements"
        err = np.abs(g - want[name]).max() / np.abs(want[name]).max()
        assert err <= tol, (name, err)


@cuda
@pytest.mark.parametrize("case", GPU_CASES[:4])
def test_igemm_agrees_with_im2col(case):
    import cupy

    be = st.Device("cuda").backend
    _, dev, out_hw = _gpu_inputs(case, st.float32, seed=1)
    results = {}
    for path in ("igemm", "im2col"):
        ci.set_conv_path(path)
        results[path] = {k: cupy.asnumpy(v) for k, v in _passes(be, case, dev, out_hw).items()}
    for name, a in results["igemm"].items():
        b = results["im2col"][name]
        np.testing.assert_allclose(a, b, atol=2e-5 * np.abs(b).max(), rtol=0, err_msg=name)


@cuda
@pytest.mark.parametrize("variant", ["v1", "v2"])
def test_split_weight_gradient_is_deterministic(variant):
    import cupy

    be = st.Device("cuda").backend
    case = (16, 32, 28, 28, 64, (3, 3), (1, 1), (1, 1), (1, 1), 1, False)
    _, dev, out_hw = _gpu_inputs(case, st.bfloat16, seed=2)
    ci.set_conv_path("igemm")
    ci.set_igemm_variant(variant)
    x, _, gy, _, _ = dev
    runs = [cupy.asnumpy(be.conv2d_weight(x, gy, (3, 3), (1, 1), (1, 1), (1, 1), 1))
            for _ in range(3)]
    assert all((r.view(np.uint16) == runs[0].view(np.uint16)).all() for r in runs[1:])


@cuda
def test_igemm_graph_capture_matches_eager():
    from scitensor.ops.conv import conv2d

    dev = st.Device("cuda")
    ci.set_conv_path("igemm")
    r = np.random.default_rng(5)
    x = st.tensor(r.standard_normal((4, 16, 12, 12)), dtype=st.bfloat16, device=dev)
    w = st.tensor(r.standard_normal((24, 16, 3, 3)), dtype=st.bfloat16, device=dev)
    g = st.tensor(r.standard_normal((4, 24, 12, 12)), dtype=st.bfloat16, device=dev)

    def fwd_bwd(a, b, gg):
        out, pullback = st.vjp(lambda a_, b_: conv2d(a_, b_, None, 1, 1), a, b)
        return (out, *pullback(gg))

    want = [t.astype(st.float32).numpy() for t in fwd_bwd(x, w, g)]
    step = st.jit(fwd_bwd)
    for _ in range(3):  # eager, capture, replay
        got = [t.astype(st.float32).numpy() for t in step(x, w, g)]
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)
