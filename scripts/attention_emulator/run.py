"""Check the CUDA attention kernels without a GPU, on the host emulator (emu_runtime.h).

Builds ``harness.cpp`` with g++ for each kernel configuration (element type, head dim, tile
sizes), runs forward + backward on random inputs with lengths off the tiles, causal and not,
grouped-query attention, and compares out / dq / dk / dv with a float64 reference by
normwise relative error. A wrong fragment layout, ldmatrix address, mask or loop bound shows
up as an error of order 1 (or NaN from the 0xFF-poisoned shared memory and outputs).

Usage:
    python scripts/attention_emulator/run.py                # the default sweep
    python scripts/attention_emulator/run.py --quick        # one small case per config
    python scripts/attention_emulator/run.py --asan         # AddressSanitizer build (slower)
    EMU_CP_EAGER=1 python scripts/attention_emulator/run.py # copies land at issue (WAR races)
    EMU_LAZY=1 python scripts/attention_emulator/run.py     # lazy O rescale, every config

Example output line:
    bf16 D64 fwd(4w,1m,64) bwd(4w,64) B1 H2/1 Sq70 Sk45 causal  out 2.1e-03  dq 4.0e-03 ...
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pathlib
import subprocess
import sys
import tempfile

import ml_dtypes
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from check_attention_gpu import reference as _gpu_check_reference

HERE = pathlib.Path(__file__).resolve().parent
KERNELS = HERE.parents[1] / "src" / "scitensor" / "backends" / "cuda" / "kernels"
BUILD = pathlib.Path(tempfile.gettempdir()) / "scitensor_attention_emulator"
TYPES = {"bf16": (0, ml_dtypes.bfloat16, 3e-2), "f16": (1, np.float16, 6e-3),
         "tf32": (2, np.float32, 3e-3), "f32x3": (3, np.float32, 1e-5)}


def lazy_rescale(ty: str, d: int) -> int:
    """The forward's ST_ATTN_LAZY_RESCALE: EMU_LAZY=0|1 if set, else attention.py's default
    (1 for 16-bit types at D128)."""
    env = os.environ.get("EMU_LAZY")
    return int(env) if env else int(ty in ("bf16", "f16") and d == 128)


def build(ty: str, d: int, fwd: tuple[int, ...], bwd: tuple[int, ...], asan: bool) -> pathlib.Path:
    flags = ["-std=c++20", "-O1", "-g", "-pthread", f"-DST_ATTN_TYPE={TYPES[ty][0]}",
             f"-DST_ATTN_D={d}", f"-DEMU_FWD_WARPS={fwd[0]}", f"-DEMU_FWD_MW={fwd[1]}",
             f"-DEMU_FWD_BN={fwd[2]}",
             f"-DEMU_BWD_WARPS={bwd[0]}", f"-DEMU_BWD_BM={bwd[1]}",
             f"-DEMU_BWD_V={bwd[2] if len(bwd) > 2 else 1}",
             f"-I{KERNELS}", f"-I{HERE}", f"-DST_ATTN_LAZY_RESCALE={lazy_rescale(ty, d)}"]
    if asan:
        flags += ["-fsanitize=address", "-fno-omit-frame-pointer"]
    h = hashlib.sha256(" ".join(flags).encode())
    for p in (HERE / "harness.cpp", HERE / "emu_runtime.h", *sorted(KERNELS.glob("attention*"))):
        h.update(p.read_bytes())
    exe = BUILD / f"harness-{h.hexdigest()[:16]}"
    if not exe.exists():
        BUILD.mkdir(parents=True, exist_ok=True)
        subprocess.run(["g++", *flags, str(HERE / "harness.cpp"), "-o", str(exe)], check=True)
    return exe


def reference(q, k, v, g, causal, scale):
    """float64 out, dq, dk, dv: the GPU check's reference without its logsumexp."""
    out, _lse, dq, dk, dv = _gpu_check_reference(q, k, v, g, causal, scale)
    return out, dq, dk, dv


def run_case(exe, ty, b, h, hkv, sq, sk, d, causal, seed) -> dict:
    _, npdt, _ = TYPES[ty]
    r = np.random.default_rng(seed)
    shapes = {"q": (b, h, sq, d), "k": (b, hkv, sk, d), "v": (b, hkv, sk, d),
              "dout": (b, h, sq, d)}
    arrs = {n: r.standard_normal(s).astype(npdt) for n, s in shapes.items()}
    scale = 1.0 / np.sqrt(d)
    with tempfile.TemporaryDirectory() as tmp:
        for n, a in arrs.items():
            a.tofile(f"{tmp}/{n}.bin")
        subprocess.run([str(exe), tmp, str(b), str(h), str(hkv), str(sq), str(sk),
                        str(int(causal)), repr(float(scale))], check=True)
        got = {n: np.fromfile(f"{tmp}/{n}.bin", dtype=npdt).reshape(shapes["q" if n in
                                                                         ("out", "dq") else "k"])
               for n in ("out", "dq", "dk", "dv")}
        lse = np.fromfile(f"{tmp}/lse.bin", dtype=np.float32)
    ref = reference(arrs["q"], arrs["k"], arrs["v"], arrs["dout"], causal, scale)
    errs = {}
    for n, want in zip(("out", "dq", "dk", "dv"), ref):
        x = got[n].astype(np.float64)
        errs[n] = (np.inf if not np.all(np.isfinite(x)) else
                   float(np.linalg.norm(x - want)
                                 / max(np.linalg.norm(want), 1e-2 * np.sqrt(want.size))))
    errs["lse_nan"] = bool(np.isnan(lse).any())
    return errs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--asan", action="store_true")
    ap.add_argument("--types", default="bf16,f16,tf32,f32x3")
    ap.add_argument("--dims", default="32,64,128")
    ap.add_argument("--configs", default="4x1x64:4x64",
                    help="comma list of FWDWARPSxMWxBN:BWDWARPSxBM[v2] (v2: the FA2-layout "
                         "dK/dV kernel, 16-bit types)")
    args = ap.parse_args()
    cases = [(1, 2, 1, 70, 45), (1, 2, 2, 33, 97), (2, 4, 2, 64, 64), (1, 1, 1, 1, 5),
             (1, 1, 1, 200, 333)]
    if args.quick:
        cases = cases[:1]
    failed = 0
    for cfg in args.configs.split(","):
        f, bw = cfg.split(":")
        fwd = tuple(int(x) for x in f.split("x"))
        version = 2 if bw.endswith("v2") else 1
        bwd = (*(int(x) for x in bw.removesuffix("v2").split("x")), version)
        for ty in args.types.split(","):
            if version == 2 and ty not in ("bf16", "f16"):
                continue
            tol = TYPES[ty][2]
            for d in (int(x) for x in args.dims.split(",")):
                if d // max(1, (bwd[0] // (bwd[1] // 16))) < 16:
                    continue
                if version == 2 and (d * bwd[1] // (32 * bwd[0])) % 16:
                    continue
                exe = build(ty, d, fwd, bwd, args.asan)
                for i, (b, h, hkv, sq, sk) in enumerate(cases):
                    for causal in (False, True):
                        e = run_case(exe, ty, b, h, hkv, sq, sk, d, causal, seed=i * 7 + d)
                        bad = e["lse_nan"] or any(e[n] > tol for n in ("out", "dq", "dk", "dv"))
                        failed += bad
                        print(f"{ty:5} D{d:<3} fwd({fwd[0]}w,{fwd[1]}m,{fwd[2]}) "
                              f"bwd({bwd[0]}w,{bwd[1]}{'v2' if version == 2 else ''}) "
                              f"B{b} H{h}/{hkv} Sq{sq} Sk{sk} {'causal' if causal else 'full  '}"
                              + "".join(f"  {n} {e[n]:.1e}" for n in ("out", "dq", "dk", "dv"))
                              + ("  FAIL" if bad else ""), flush=True)
    print("emulator:", "all passed" if not failed else f"{failed} case(s) FAILED")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
