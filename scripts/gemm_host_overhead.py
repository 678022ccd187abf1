"""Host microseconds per small GEMM call: where does a matmul's host time go?

Times, per call on a tiny product (the GPU is never the limit: every loop runs queued behind
a GPU spin), our cuBLASLt path (``backend.matmul`` and the bare ``cublasLtMatmul`` call with
its cached plan), CuPy's ``cupy.matmul`` (cuBLAS), a bare ``cublasSgemm``/``cublasGemmEx``
through CuPy's bindings, and ``torch.mm``.

Usage (GPU machine): ``python scripts/gemm_host_overhead.py [--n 64] [--calls 2000]``
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def per_call_us(fn, calls: int, spin) -> float:
    for _ in range(50):
        fn()
    best = float("inf")
    for _ in range(3):
        spin(1.5 * calls * 0.05)  # generous: ~50 us of GPU time per call queued ahead
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t0) / calls * 1e6)
        sync()
    return best


def sync():
    import cupy
    import torch

    cupy.cuda.get_current_stream().synchronize()
    torch.cuda.synchronize()


def main(argv=None) -> int:
    import cupy
    import numpy as np
    import torch
    from benchmarks.timing import torch_spin
    from cupy_backends.cuda.libs import cublas

    import scitensor as st

    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--calls", type=int, default=400,
                   help="calls per timing (the launch queue holds ~1000 pending kernels)")
    args = p.parse_args(argv)
    n = args.n

    dev = st.Device("cuda")
    be = dev.backend
    spin = torch_spin(torch.cuda.ExternalStream(cupy.cuda.get_current_stream().ptr))
    a = cupy.random.standard_normal((n, n), dtype=np.float32)
    b = cupy.random.standard_normal((n, n), dtype=np.float32)
    ta, tb = torch.randn(n, n, device="cuda"), torch.randn(n, n, device="cuda")
    stream = cupy.cuda.get_current_stream()
    rows = {}
    rows["scitensor backend.matmul (cuBLASLt, fast path)"] = per_call_us(
        lambda: be.matmul(a, b), args.calls, spin)
    blas = be._blas
    hit = next(iter(blas._fast.values()))
    plan = hit[0]
    out = cupy.empty((n, n), np.float32)
    pa, pb, pc, sp = a.data.ptr, b.data.ptr, out.data.ptr, stream.ptr
    rows["bare cublasLtMatmul with the cached plan"] = per_call_us(
        lambda: blas._run(plan, pa, pb, pc, sp, a, b), args.calls, spin)
    rows["cupy.empty((n, n))"] = per_call_us(lambda: cupy.empty((n, n), np.float32),
                                            args.calls, spin)
    rows["cupy.matmul (cuBLAS)"] = per_call_us(lambda: cupy.matmul(a, b), args.calls, spin)
    handle = cupy.cuda.device.get_cublas_handle()
    one = np.array(1.0, np.float32)
    zero = np.array(0.0, np.float32)
    cublas.setStream(handle, sp)

    def sgemm():
        cublas.sgemm(handle, 0, 0, n, n, n, one.ctypes.data, pb, n, pa, n, zero.ctypes.data,
                     pc, n)
    cublas.setPointerMode(handle, cublas.CUBLAS_POINTER_MODE_HOST)
    rows["bare cublasSgemm (CuPy bindings)"] = per_call_us(sgemm, args.calls, spin)
    rows["torch.mm"] = per_call_us(lambda: torch.mm(ta, tb), args.calls, spin)
    ones = cupy.ones(16, np.float32)
    rows["scitensor tiny add (backend.add)"] = per_call_us(lambda: be.add(ones, ones),
                                                          args.calls, spin)
    tones = torch.ones(16, device="cuda")
    rows["torch tiny add"] = per_call_us(lambda: torch.add(tones, tones), args.calls, spin)
    print(f"host us per call, {n}x{n} fp32 ({torch.cuda.get_device_name()}):")
    for k, v in rows.items():
        print(f"  {k:50s} {v:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
