"""Run every kernel of ours once per dtype on odd sizes (for ``compute-sanitizer memcheck``).

Covers ``kernels/elementwise.cu`` (every unary, binary, cast and fill kernel of every dtype),
``kernels/random.cu`` (every Philox kernel) and the cuBLASLt path (odd, transposed and
batched shapes). Results are spot-checked against the CPU backend; the sanitizer checks the
memory accesses. Exits non-zero on a mismatch. ``--record FILE`` writes the names of the
kernels launched (for ``scripts/kernel_inventory.py --coverage``).

Usage:
    compute-sanitizer --tool memcheck --error-exitcode 9 python scripts/cuda_kernel_exercise.py
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
for _p in (HERE.parent / "src", HERE):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import kernel_inventory  # noqa: E402

import scitensor as st  # noqa: E402
from scitensor.backends import PRIMITIVES  # noqa: E402

SIZES = (1, 3, 257, 4099)
DTYPES = (st.float16, st.bfloat16, st.float32, st.float64, st.int32, st.int64, st.bool)


def _host(rng, n, dtype):
    if dtype is st.bool:
        return rng.random(n) < 0.5
    if dtype.is_integer:
        return rng.integers(1, 9, size=n).astype(dtype.np)
    return (rng.random(n) * 4 + 0.25).astype(dtype.np)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--record", metavar="FILE",
                    help="write the names of the kernels launched to FILE (kernel_inventory)")
    args = ap.parse_args(argv)
    rec = kernel_inventory.start_recording(args.record)
    gpu, cpu = st.Device("cuda").backend, st.Device("cpu").backend
    rng = np.random.default_rng(0)
    launched, bad = 0, []
    for dtype in DTYPES:
        for n in SIZES:
            xa, xb = _host(rng, n, dtype), _host(rng, n, dtype)
            a, b = gpu.asarray(xa, dtype), gpu.asarray(xb, dtype)
            for name in PRIMITIVES["unary"]:
                if gpu._ew.kernel(name, dtype.np, "ppq") is not None:
                    gpu.to_numpy(getattr(gpu, name)(a))
                    launched += 1
            for name in PRIMITIVES["binary"]:
                if gpu._ew.kernel(name, dtype.np) is not None:
                    got = gpu.to_numpy(getattr(gpu, name)(a, b))
                    gpu.to_numpy(getattr(gpu, name)(a, cpu.scalar(1, dtype)))
                    gpu.to_numpy(getattr(gpu, name)(cpu.scalar(1, dtype), b))
                    launched += 3
                    if dtype is st.float32 and name in ("add", "mul", "lt"):
                        ref = getattr(cpu, name)(xa, xb)
                        if not np.array_equal(got, ref):
                            bad.append(f"{name} {dtype.name} n={n}")
            for dst in DTYPES:
                if dst is not dtype:
                    gpu.to_numpy(gpu.astype(a, dst))
                    launched += 1
            gpu.to_numpy(gpu.full((n,), 1, dtype))
            launched += 1
    for n in SIZES:
        for d in (st.float32, st.float64, st.float16):
            u = gpu.to_numpy(gpu.uniform((n,), d, 5, 1))
            if not np.array_equal(u, cpu.uniform((n,), d, 5, 1)):
                bad.append(f"uniform {d.name} n={n}")
            gpu.to_numpy(gpu.normal((n,), d, 5, 2))
        gpu.to_numpy(gpu.randint(0, 7, (n,), st.int32, 5, 3))
        gpu.to_numpy(gpu.bernoulli_mask((n,), 0.4, 5, 4))
        launched += 11
    for m, k, n in ((1, 1, 1), (3, 5, 7), (65, 129, 33), (257, 31, 1)):
        for d in (st.float32, st.float16, st.bfloat16, st.float64):
            xa = rng.standard_normal((2, m, k))
            xb = rng.standard_normal((k, n))
            got = gpu.to_numpy(gpu.matmul(gpu.asarray(xa, d), gpu.asarray(xb, d)))
            gt = gpu.to_numpy(gpu.matmul(gpu.transpose(gpu.asarray(xa[0].T, d), (1, 0)),
                                         gpu.asarray(xb, d)))
            ref = xa @ xb
            err = np.abs(got.astype(np.float64) - ref).max() / max(np.abs(ref).max(), 1e-9)
            err_t = np.abs(gt.astype(np.float64) - ref[0]).max() / max(np.abs(ref).max(), 1e-9)
            if max(err, err_t) > 3e-2:
                bad.append(f"matmul {d.name} {m}x{k}x{n}: {err:.1e} {err_t:.1e}")
            launched += 2
    gpu.synchronize()
    print(f"exercised {launched} kernel launches; mismatches: {bad or 'none'}")
    if rec is not None:
        print(rec.summary())
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
