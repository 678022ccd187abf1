"""Check the row kernels (layer/RMS norm, softmax, cross-entropy) without a GPU.

Builds ``layer_norm.cu``, ``softmax.cu`` and ``cross_entropy.cu`` with g++ for every dtype
against ``cuda_shim.h`` (one std::thread per GPU thread), then drives them through the real
``CudaNormalizationPrimitives`` (backends/cuda/normalization.py: plan choice, argument packing,
two-stage reductions) on NumPy arrays, and compares every output with the CPU reference
primitives (backends/xp_normalization.py) by normwise relative error. Outputs start NaN, so an
unwritten element fails. Persistent grids are limited to 3 blocks, so the backward's row
loops run several rows per group.

Usage:
    python scripts/norm_emulator/run.py            # every kernel variant, fp32/bf16/fp16
    python scripts/norm_emulator/run.py --quick    # a few cases per op
    python scripts/norm_emulator/run.py --asan     # AddressSanitizer build (catches OOB reads)

Prints one line per failing check and ``FAILS <n>``; exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import os
import pathlib
import shutil
import struct
import subprocess
import sys
import tempfile
import types

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
KERNELS = ROOT / "src" / "scitensor" / "backends" / "cuda" / "kernels"
SHIM = pathlib.Path(__file__).with_name("cuda_shim.h")
SOURCES = {"ln": "layer_norm.cu", "sm": "softmax.cu", "ce": "cross_entropy.cu"}
EXPORTS = {
    "ln": ["st_norm_fwd_v1", "st_norm_fwd_v2", "st_norm_fwd_v4", "st_norm_fwd_loop",
           "st_norm_fwd_loop1",
           "st_norm_bwd_v1", "st_norm_bwd_v2", "st_norm_bwd_s1", "st_norm_bwd_s2",
           "st_norm_bwd_loop", "st_norm_bwd_loop1", "st_norm_param_reduce"],
    "sm": ["st_softmax_fwd_v1", "st_softmax_fwd_v2", "st_softmax_bwd_v1", "st_softmax_bwd_v2",
           "st_softmax_fwd_loop", "st_softmax_bwd_loop"],
    "ce": ["st_cross_entropy_fwd", "st_cross_entropy_bwd"],
}
FP32_ONLY = {"ln": ["st_norm_bwd_v4", "st_norm_bwd_s4"],
             "sm": ["st_softmax_fwd_v4", "st_softmax_bwd_v4"], "ce": []}


def build(asan: bool) -> pathlib.Path:
    files = [SHIM] + [KERNELS / n for n in ("rowwise.cuh", *SOURCES.values())]
    exports = repr((EXPORTS, FP32_ONLY)).encode()  # the export list changes the build too
    key = hashlib.sha256(b"".join(f.read_bytes() for f in files) + exports
                         + bytes([asan])).hexdigest()
    out = pathlib.Path(tempfile.gettempdir()) / "scitensor_norm_emulator" / key[:16]
    if (out / "done").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(SHIM, out / "common.cuh")
    for f in files[1:]:
        shutil.copy(f, out / f.name)
    flags = ["-std=c++20", "-O1", "-w", "-fPIC", "-shared", "-fno-gnu-unique",
             "-fvisibility=hidden", "-pthread"] + (["-g", "-fsanitize=address"] if asan else [])
    procs = []
    for code in (0, 1, 2):
        for short, src in SOURCES.items():
            names = EXPORTS[short] + (FP32_ONLY[short] if code == 2 else [])
            cpp = out / f"h_{short}_{code}.cpp"
            cpp.write_text(f'#include "{src}"\n' + "".join(f"EXPORT({n})\n" for n in names))
            procs.append(subprocess.Popen(["g++", *flags, f"-DST_DTYPE={code}", f"-I{out}",
                                           str(cpp), "-o", str(out / f"lib_{short}_{code}.so")]))
    if any(p.wait() for p in procs):
        raise SystemExit("g++ failed")
    (out / "done").write_text("")
    return out


# ---- the real launcher, on NumPy arrays ------------------------------------------------------
class FakeArray(np.ndarray):
    """A NumPy array that answers ``.data.ptr`` as a CuPy array does."""

    @property
    def data(self):
        return types.SimpleNamespace(ptr=self.ctypes.data)


def fa(a):
    return np.asarray(a).view(FakeArray)


def _nan(shape, dtype):
    a = np.empty(shape, dtype)
    a.fill(np.nan)
    return a.view(FakeArray)


def make_backends(libdir: pathlib.Path):
    import scitensor.backends.cuda.normalization as nm
    import scitensor.backends.cuda.row_kernels as rk
    from scitensor.backends.xp import ArrayBackend

    nm.cupy = types.SimpleNamespace(
        ndarray=FakeArray, empty=lambda s, dtype: np.empty(s, dtype).view(FakeArray),
        array=lambda a, copy=True, order="C": np.array(np.asarray(a), order="C").view(FakeArray),
        asarray=fa, broadcast_to=lambda a, s: np.broadcast_to(a, s).view(FakeArray))
    nm._ndarray = FakeArray
    nm._stream = lambda: types.SimpleNamespace(ptr=0)
    libs, short = {}, {v: k for k, v in SOURCES.items()}

    class Kernel:
        def __init__(self, src, code, name, sig):
            key = (short[src], code)
            if key not in libs:
                libs[key] = ctypes.CDLL(str(libdir / f"lib_{key[0]}_{code}.so"))
            self.fn = getattr(libs[key], "run_" + name)
            self.fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_uint64)]
            self.name, self.sig, self.ptr = name, sig, id(self)

        def __call__(self, blocks, threads, stream, *args):
            assert len(args) == len(self.sig), (self.name, args, self.sig)
            assert threads % 32 == 0 and 32 <= threads <= 512 and blocks >= 1, (blocks, threads)
            slots = [struct.unpack("<I", struct.pack("<f", a))[0] if c == "f"
                     else int(a) & (2**64 - 1) for c, a in zip(self.sig, args)]
            self.fn(blocks, threads, (ctypes.c_uint64 * len(slots))(*slots))

    rk.RowKernels.get = lambda self, src, code, name, sig: Kernel(src, code, name, sig)
    rk.RowKernels.resident_blocks = lambda self, kernel, threads: 3

    class EmuBackend(nm.CudaNormalizationPrimitives, ArrayBackend):
        xp = np
        index, arch, sm_count = 0, 90, 4
        _ew = types.SimpleNamespace(_new=_nan)

    class CpuBackend(ArrayBackend):
        xp = np

    return EmuBackend(), CpuBackend()


# ---- checks ----------------------------------------------------------------------------------
class Checker:
    def __init__(self, emu, cpu):
        import ml_dtypes

        self.emu, self.cpu, self.fails, self.count = emu, cpu, 0, 0
        self.bf16 = np.dtype(ml_dtypes.bfloat16)
        self.tol = {np.dtype(np.float32): 3e-6, self.bf16: 8e-3, np.dtype(np.float16): 1e-3}

    def check(self, tag, got, ref, tol):
        self.count += 1
        a, b = np.asarray(got, np.float64), np.asarray(ref, np.float64)
        err = float("inf") if a.shape != b.shape or not np.all(np.isfinite(a)) else \
            float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))
        if not err <= tol:
            self.fails += 1
            print(f"FAIL {tag}: relative error {err:.2e} > {tol:.0e}", flush=True)

    def norm(self, rows, n, dtype, affine=True, rms=False, wdt=None, misalign=False):
        r = np.random.default_rng(rows * 7919 + n)
        x = (r.standard_normal((rows, n)) * 2 + 1).astype(dtype)
        g = r.standard_normal((rows, n)).astype(dtype)
        wdt = wdt or dtype
        w = r.uniform(0.5, 1.5, n).astype(wdt) if affine else None
        b = r.standard_normal(n).astype(wdt) if affine and not rms else None
        xe = fa(x)
        if misalign:  # a view one element into a buffer: the launcher must copy it
            xe = fa(np.concatenate([np.zeros(1, dtype), x.reshape(-1)]))[1:].reshape(rows, n)
        we, be = (None if p is None else fa(p) for p in (w, b))
        tol, tag = self.tol[np.dtype(dtype)], f"{'rms' if rms else 'ln'} {rows}x{n} " \
            f"{np.dtype(dtype).name} w={None if w is None else np.dtype(wdt).name}"
        if rms:
            y, rs = self.emu.rms_norm_forward(xe, we, 1e-6)
            yr, rsr = self.cpu.rms_norm_forward(x, w, 1e-6)
            dx, dw = self.emu.rms_norm_backward(fa(g), xe, rs, we, True)
            dxr, dwr = self.cpu.rms_norm_backward(g, x, rsr, w, True)
            pairs = [("y", y, yr, tol), ("rstd", rs, rsr, 3e-6), ("dx", dx, dxr, 2 * tol),
                     ("dw", dw, dwr, 1e-5)]
        else:
            y, mu, rs = self.emu.layer_norm_forward(xe, we, be, 1e-5)
            yr, mur, rsr = self.cpu.layer_norm_forward(x, w, b, 1e-5)
            dx, dw, db = self.emu.layer_norm_backward(fa(g), xe, mu, rs, we, True)
            dxr, dwr, dbr = self.cpu.layer_norm_backward(g, x, mur, rsr, w, True)
            dx2, dw2, _ = self.emu.layer_norm_backward(fa(g), xe, mu, rs, we, False)
            assert dw2 is None
            pairs = [("y", y, yr, tol), ("mean", mu, mur, 3e-6), ("rstd", rs, rsr, 3e-6),
                     ("dx", dx, dxr, 2 * tol), ("dw", dw, dwr, 1e-5), ("db", db, dbr, 1e-5),
                     ("dx without param grads", dx2, dxr, 2 * tol)]
        for name, got, ref, t in pairs:
            self.check(f"{tag} {name}", got, ref, t)

    def softmax(self, rows, n, dtype):
        r = np.random.default_rng(rows * 31 + n)
        x = (r.standard_normal((rows, n)) * 3).astype(dtype)
        g = r.standard_normal((rows, n)).astype(dtype)
        tol = self.tol[np.dtype(dtype)]
        for f in ("softmax", "log_softmax"):
            tag = f"{f} {rows}x{n} {np.dtype(dtype).name}"
            yr = getattr(self.cpu, f)(x, 1)
            self.check(tag + " y", getattr(self.emu, f)(fa(x), 1), yr, tol)
            self.check(tag + " dx", getattr(self.emu, f + "_backward")(fa(g), fa(yr), 1),
                       getattr(self.cpu, f + "_backward")(g, yr, 1), 2 * tol)

    def cross_entropy(self, rows, c, dtype, smoothing=0.0, scalar_g=True, ii=-100):
        r = np.random.default_rng(rows * 131 + c)
        x = (r.standard_normal((rows, c)) * 3).astype(dtype)
        lab = np.where(r.random(rows) < 0.25, ii, r.integers(0, c, rows)).astype(np.int64)
        tag = f"ce {rows}x{c} {np.dtype(dtype).name} s={smoothing}"
        loss, lse = self.emu.cross_entropy_forward(fa(x), fa(lab), ii, smoothing)
        lr, lser = self.cpu.cross_entropy_forward(x, lab, ii, smoothing)
        valid = lab != ii
        self.check(tag + " loss", loss, lr, 3e-6)
        self.check(tag + " lse", np.asarray(lse)[valid], lser[valid], 3e-6)
        g = fa(np.broadcast_to(np.float32(0.37), (rows,)) if scalar_g
               else r.standard_normal(rows).astype(np.float32))
        dx = self.emu.cross_entropy_backward(g, fa(x), fa(lab), lse, ii, smoothing)
        dxr = self.cpu.cross_entropy_backward(np.asarray(g), x, lab, lser, ii, smoothing)
        self.check(tag + " dx", dx, dxr, 2 * self.tol[np.dtype(dtype)])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--asan", action="store_true")
    args = ap.parse_args(argv)
    if args.asan and "libasan" not in os.environ.get("LD_PRELOAD", ""):
        lib = subprocess.run(["g++", "-print-file-name=libasan.so"], capture_output=True,
                             text=True).stdout.strip()
        env = dict(os.environ, LD_PRELOAD=lib, ASAN_OPTIONS="detect_leaks=0")
        return subprocess.call([sys.executable, *sys.argv], env=env)
    ck = Checker(*make_backends(build(args.asan)))
    f32, f16, bf16 = np.dtype(np.float32), np.dtype(np.float16), ck.bf16
    dtypes = (f32, bf16) if args.quick else (f32, bf16, f16)
    norm_shapes = [(3, 16), (33, 768), (3, 1001)] if args.quick else \
        [(1, 8), (3, 16), (5, 64), (33, 768), (9, 4096), (2, 8192), (3, 1001), (2, 20000),
         (70, 24), (1, 3)]
    for dt in dtypes:
        for rows, n in norm_shapes:
            ck.norm(rows, n, dt)
        ck.norm(9, 96, dt, rms=True)
        ck.norm(4, 1003, dt, rms=True)
        ck.norm(5, 40, dt, affine=False)
    ck.norm(7, 768, bf16, wdt=f32)
    ck.norm(6, 256, f32, misalign=True)
    sm_shapes = [(4, 768), (3, 1001)] if args.quick else \
        [(1, 8), (4, 768), (3, 4096), (2, 8192), (3, 1001), (2, 9000), (70, 16), (5, 7)]
    for dt in (f32, bf16):
        for rows, n in sm_shapes:
            ck.softmax(rows, n, dt)
    ce_shapes = [(9, 10), (3, 1001)] if args.quick else \
        [(1, 5), (9, 10), (33, 128), (4, 1000), (3, 1001), (2, 32000), (5, 50257)]
    for dt in dtypes:
        for rows, c in ce_shapes:
            ck.cross_entropy(rows, c, dt)
        ck.cross_entropy(8, 37, dt, smoothing=0.1, scalar_g=False)
        ck.cross_entropy(8, 1003, dt, smoothing=1.0, scalar_g=False, ii=3)
    print(f"{ck.count} checks, FAILS {ck.fails}")
    return 1 if ck.fails else 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    raise SystemExit(main())
