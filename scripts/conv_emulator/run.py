"""Check the implicit-GEMM conv kernels without a GPU, on the host emulator.

Runs the real host code of ``backends/cuda/conv_igemm.py`` (tile choice, split-K plan,
argument order, grids) on NumPy arrays, with ``kernels/conv_igemm.cu`` built by g++ against
the attention emulator's runtime (``scripts/attention_emulator/emu_runtime.h``: one thread per
CUDA thread, ldmatrix / mma.sync / cp.async emulated from the PTX fragment tables). Every
output and scratch buffer starts as NaN bytes, so an element a kernel forgets to write (or
reads before it is written) fails. Each pass (forward, input gradient, weight gradient) is
compared with float64 NumPy (the CPU backend's conv primitives on the rounded inputs) by
max |diff| / max |ref|.

Usage:
    python scripts/conv_emulator/run.py              # the default sweep
    python scripts/conv_emulator/run.py --quick      # a few cases
    python scripts/conv_emulator/run.py --types bf16 --tiles fwd=32,128,32,1,4
    python scripts/conv_emulator/run.py --variant v1 # the v1 (NCHW) kernels everywhere
    python scripts/conv_emulator/run.py --tiles "fwd2=64,128,32,2,4,2,4"  # v2 tiles, 4 stages
    EMU_CP_EAGER=1 python scripts/conv_emulator/run.py   # copies land at issue (WAR races)
    ASAN_OPTIONS=detect_leaks=0 LD_PRELOAD=$(g++ -print-file-name=libasan.so) \
        python scripts/conv_emulator/run.py --asan       # out-of-bounds gathers

Example output line:
    PASS bf16 fwd   g1 N2 C5 7x9 K6 k3x3 s(1, 1) p(1, 1) d(1, 1) bias  err 2.1e-03  tiles ...
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
KERNELS = ROOT / "src" / "scitensor" / "backends" / "cuda" / "kernels"
RUNTIME = ROOT / "scripts" / "attention_emulator"
BUILD = pathlib.Path(tempfile.gettempdir()) / "scitensor_conv_emulator"
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

import scitensor as st  # noqa: E402
from scitensor.backends.cuda import conv_igemm as ci  # noqa: E402

TYPES = {"bf16": (st.bfloat16, "highest", 1.2e-2), "f16": (st.float16, "highest", 2e-3),
         "tf32": (st.float32, "tf32", 4e-3), "f32x3": (st.float32, "highest", 2e-5)}
_CT = {"p": ctypes.c_void_p, "i": ctypes.c_int, "q": ctypes.c_longlong}
_libs: dict = {}


def build(options: tuple[str, ...], asan: bool = False) -> ctypes.CDLL:
    """g++ build of emu_conv.cpp with the module's -D options (cached by content)."""
    flags = ["-std=c++20", "-O1", "-shared", "-fPIC", "-pthread", *options, f"-I{KERNELS}",
             f"-I{RUNTIME}"]
    if asan:
        flags += ["-fsanitize=address", "-fno-omit-frame-pointer"]
    h = hashlib.sha256(" ".join(flags).encode())
    for p in (HERE / "emu_conv.cpp", RUNTIME / "emu_runtime.h", KERNELS / "conv_igemm.cu",
              KERNELS / "attention_common.cuh"):
        h.update(p.read_bytes())
    key = h.hexdigest()[:16]
    if key not in _libs:
        so = BUILD / f"emu_conv-{key}.so"
        if not so.exists():
            BUILD.mkdir(parents=True, exist_ok=True)
            tmp = so.with_suffix(f".{os.getpid()}.tmp")  # parallel test workers build too
            subprocess.run(["g++", *flags, str(HERE / "emu_conv.cpp"), "-o", str(tmp)],
                           check=True)
            tmp.replace(so)
        lib = ctypes.CDLL(str(so))
        lib.emu_launch_kernel.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_int,
                                          ctypes.c_int, ctypes.c_void_p]
        _libs[key] = lib
    return _libs[key]


class HostKernel:
    """A kernel of an emulator library, launched like ``launch.Kernel``."""

    def __init__(self, lib, name: str, signature: str, dynamic_smem: bool = False):
        self.lib, self.name, self.signature = lib, name, signature
        self.dynamic_smem = dynamic_smem
        self.launches: list = []

    def __call__(self, blocks: int, threads: int, *rest) -> None:
        smem, (stream, *args) = (rest[0], rest[1:]) if self.dynamic_smem else (0, rest)
        assert len(args) == len(self.signature), (self.name, len(args), self.signature)
        slots = [_CT[c](a) for c, a in zip(self.signature, args)]
        params = (ctypes.c_void_p * len(slots))(*[ctypes.addressof(s) for s in slots])
        self.launches.append((blocks, threads))
        rc = self.lib.emu_launch_kernel(self.name.encode(), blocks, threads, smem,
                                        ctypes.addressof(params))
        assert rc == 0, f"{self.name}: the emulator refused the launch ({rc})"


def poisoned(shape, dtype) -> np.ndarray:
    a = np.empty(shape, dtype)
    a.view(np.uint8)[...] = 0xFF
    return a


class HostIgemm(ci.IgemmConvPrimitives):
    """The implicit-GEMM host code on NumPy arrays and emulated kernels."""

    def __init__(self, sm_count: int = 2, asan: bool = False):
        self.sm_count, self.asan = sm_count, asan
        self.kernels: dict = {}

    def _ig_ptr(self, a) -> int:
        return 0 if a is None else a.ctypes.data

    def _ig_stream(self) -> int:
        return 0

    def _ig_out(self, shape, dtype):
        return poisoned(shape, dtype)

    _ig_tmp = _ig_out

    def _ig_sm_count(self) -> int:
        return self.sm_count

    def _ig_kernel(self, code, kind, tiles, name, signature, dynamic_smem=False):
        key = (code, kind, tiles, name)
        k = self.kernels.get(key)
        if k is None:
            lib = build(ci.igemm_options(code, kind, tiles), self.asan)
            k = self.kernels[key] = HostKernel(lib, name, signature, dynamic_smem)
        return k

    def _ig_kernel_smem(self, code, kind, tiles, name, signature):
        return self._ig_kernel(code, kind, tiles, name, signature, dynamic_smem=True)


# name, N, C, H, W, K, (kh, kw), stride, padding (top, left), dilation, groups, bias
CASES = [
    ("odd 3x3", 2, 5, 7, 9, 6, (3, 3), (1, 1), (1, 1), (1, 1), 1, True),
    ("stride 2", 1, 3, 11, 10, 8, (3, 3), (2, 2), (1, 1), (1, 1), 1, False),
    ("dilation 2", 2, 4, 9, 8, 5, (3, 2), (1, 1), (2, 1), (2, 2), 1, True),
    ("groups 2", 2, 6, 7, 7, 10, (3, 3), (1, 1), (1, 1), (1, 1), 2, True),
    ("groups 4", 1, 16, 6, 5, 12, (3, 3), (1, 2), (1, 0), (1, 1), 4, False),
    ("stem 7x7 s2", 1, 3, 19, 17, 9, (7, 7), (2, 2), (3, 3), (1, 1), 1, True),
    ("1x1", 2, 40, 5, 6, 70, (1, 1), (1, 1), (0, 0), (1, 1), 1, True),
    ("many tiles", 2, 36, 12, 13, 33, (3, 3), (1, 1), (1, 1), (1, 1), 1, True),
    ("pad > extent", 1, 9, 4, 5, 7, (2, 2), (1, 1), (3, 2), (1, 1), 1, False),
    # channels in 16-byte chunks: the v2 (NHWC) kernels run these under --variant auto
    ("v2 3x3", 2, 16, 9, 11, 24, (3, 3), (1, 1), (1, 1), (1, 1), 1, True),
    ("v2 groups 2", 2, 32, 7, 6, 48, (3, 3), (1, 1), (1, 1), (1, 1), 2, True),
    ("v2 s2 d2", 1, 24, 13, 12, 16, (3, 3), (2, 2), (2, 1), (2, 2), 1, False),
    ("v2 deep", 1, 72, 6, 7, 136, (3, 3), (1, 1), (1, 1), (1, 1), 1, True),
    ("v2 pad>ext", 1, 8, 4, 5, 8, (2, 2), (1, 1), (3, 2), (1, 1), 1, False),
    ("v2 1x1", 2, 40, 5, 6, 64, (1, 1), (1, 1), (0, 0), (1, 1), 1, True),
]
QUICK = [0, 2, 3, 9, 10]


def out_hw(h, w, k, s, p, d):
    return tuple((n + 2 * pp - dd * (kk - 1) - 1) // ss + 1 for n, kk, ss, pp, dd in
                 zip((h, w), k, s, p, d))


def max_rel(got, want) -> float:
    got = np.asarray(got, np.float64)
    if not np.isfinite(got).all():
        return np.inf
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))


def run_case(be, case, ty, seed=0, passes=("fwd", "dgrad", "wgrad")) -> dict:
    """Errors per pass for one case (inf where an output has NaN: an unwritten element)."""
    _, n, c, h, w, k, kern, stride, pad, dil, groups, has_bias = case
    sdt, prec, _ = TYPES[ty]
    st.set_matmul_precision(prec)
    cpu = st.Device("cpu").backend
    r = np.random.default_rng(seed)
    ho, wo = out_hw(h, w, kern, stride, pad, dil)

    def rounded(shape):
        return r.standard_normal(shape).astype(np.float32).astype(sdt.np)

    x, wt = rounded((n, c, h, w)), rounded((k, c // groups, *kern))
    gy = rounded((n, k, ho, wo))
    b, bc = (rounded((k,)), rounded((c,))) if has_bias else (None, None)
    f64 = [None if a is None else a.astype(np.float64) for a in (x, wt, gy, b, bc)]
    geo = (stride, pad, dil, groups)
    errs = {}
    try:
        if "fwd" in passes:
            got = be._igemm_conv2d(x, wt, b, (ho, wo), *geo)
            errs["fwd"] = max_rel(got, cpu.conv2d(f64[0], f64[1], f64[3], (ho, wo), *geo))
        if "dgrad" in passes and stride == (1, 1):
            got = be._igemm_conv_transpose2d(gy, wt, bc, (h, w), pad, dil, groups)
            errs["dgrad"] = max_rel(got, cpu.conv_transpose2d(f64[2], f64[1], f64[4], (h, w),
                                                              *geo))
        if "wgrad" in passes:
            got = be._igemm_conv2d_weight(x, gy, kern, *geo)
            errs["wgrad"] = max_rel(got, cpu.conv2d_weight(f64[0], f64[2], kern, *geo))
    finally:
        st.set_matmul_precision("highest")
    return errs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--asan", action="store_true")
    ap.add_argument("--types", default="bf16,f16,tf32,f32x3")
    ap.add_argument("--tiles", default="", help='e.g. "fwd=32,128,32,1,4;wgrad=64,64,32,2,4"')
    ap.add_argument("--variant", default="auto", choices=("auto", "v1", "v2"),
                    help="igemm kernels: v2 wherever the channels allow it (auto/v2), or v1")
    ap.add_argument("--sm", type=int, default=2, help="SM count the split plan assumes")
    ap.add_argument("--min-ktiles", type=int, default=1,
                    help="k tiles per weight-gradient split (the GPU uses 8); 1 splits more")
    args = ap.parse_args(argv)
    for part in filter(None, args.tiles.split(";")):
        kind, _, vals = part.partition("=")
        ci.set_igemm_tiles(kind.strip(), ci.Tiles(*(int(v) for v in vals.split(","))))
    ci.set_igemm_variant(args.variant)
    be = HostIgemm(args.sm, args.asan)
    be._ig_min_ktiles = args.min_ktiles
    cases = [CASES[i] for i in QUICK] if args.quick else CASES
    failed = 0
    for ty in args.types.split(","):
        tol = TYPES[ty][2]
        for i, case in enumerate(cases):
            errs = run_case(be, case, ty, seed=i)
            for pass_, e in errs.items():
                bad = not e <= tol
                failed += bad
                name, n, c, h, w, k, kern, stride, pad, dil, groups, bias = case
                print(f"{'FAIL' if bad else 'PASS'} {ty:5} {pass_:5} {name:12} g{groups} N{n} C{c} "
                      f"{h}x{w} K{k} k{kern[0]}x{kern[1]} s{stride} p{pad} d{dil}"
                      f"{' bias' if bias else ''}  err {e:.1e}", flush=True)
    print("conv emulator:", "all passed" if not failed else f"{failed} FAILED")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
