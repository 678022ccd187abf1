"""Where the host time of one tiny scitensor op goes on the GPU (issue 3's overhead target).

Times, per call, each layer of ``x + y`` on a 32x32 float32 tensor, from the outside in:
the public op, the backend primitive, the elementwise fast path's pieces (output
allocation, the stream lookup, our launcher, CuPy's raw driver call) and PyTorch's
``x + y`` for reference. Host time only (``time.perf_counter`` over many calls; the GPU
queue is drained every 2,000 calls so it never fills). Prints one line per layer.

Run on a GPU machine: ``python scripts/overhead_breakdown.py [--calls 20000]``.
"""

from __future__ import annotations

import argparse
import statistics
import time


def per_call_us(fn, calls: int, sync, reps: int = 5) -> float:
    """Median over ``reps`` of the mean host microseconds per ``fn()`` call."""
    chunk = 2000
    for _ in range(chunk):
        fn()
    sync()
    out = []
    for _ in range(reps):
        total = 0.0
        done = 0
        while done < calls:
            t0 = time.perf_counter()
            for _ in range(chunk):
                fn()
            total += time.perf_counter() - t0
            sync()
            done += chunk
        out.append(1e6 * total / done)
    return statistics.median(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=20000)
    args = ap.parse_args(argv)
    import cupy
    from cupy_backends.cuda.api import driver

    import scitensor as st
    from scitensor.backends.cuda import elementwise as ew

    dev = st.Device("cuda")
    be = dev.backend
    x = st.randn(32, 32, device=dev)
    y = st.randn(32, 32, device=dev)
    a, b = x.data, y.data
    sync = be.synchronize
    kern = be._ew.kernel("add", a.dtype)
    stream = cupy.cuda.get_current_stream().ptr
    out = be._ew.binary("add", a, b)
    n = a.size
    rows = []

    def add_op():
        return x + y

    rows.append(("st: x + y (Tensor op, no grad)", per_call_us(add_op, args.calls, sync)))
    rows.append(("st.add(x, y)", per_call_us(lambda: st.add(x, y), args.calls, sync)))
    rows.append(("backend.add(a, b)", per_call_us(lambda: be.add(a, b), args.calls, sync)))
    rows.append(("elementwise.binary('add', a, b)",
                 per_call_us(lambda: be._ew.binary("add", a, b), args.calls, sync)))
    rows.append(("new_array((32, 32), float32)",
                 per_call_us(lambda: ew.new_array((32, 32), a.dtype), args.calls, sync)))
    rows.append(("cupy.cuda.get_current_stream().ptr",
                 per_call_us(lambda: cupy.cuda.get_current_stream().ptr, args.calls, sync)))
    rows.append(("Kernel.__call__ (pack + launch)",
                 per_call_us(lambda: kern(4, 256, stream, a.data.ptr, b.data.ptr, 0.0, 0.0,
                                          out.data.ptr, n, 0), args.calls, sync)))
    params = kern._params_ptr
    rows.append(("driver.launchKernel (prepacked)",
                 per_call_us(lambda: driver.launchKernel(kern.ptr, 4, 1, 1, 256, 1, 1, 0,
                                                         stream, params, 0),
                             args.calls, sync)))
    try:
        import torch

        tx = torch.randn(32, 32, device="cuda")
        ty = torch.randn(32, 32, device="cuda")
        rows.append(("torch: x + y", per_call_us(lambda: tx + ty, args.calls,
                                                 torch.cuda.synchronize)))
        with torch.no_grad():
            rows.append(("torch: x + y under no_grad",
                         per_call_us(lambda: tx + ty, args.calls, torch.cuda.synchronize)))
    except ImportError:
        pass
    width = max(len(r[0]) for r in rows)
    print("host microseconds per call (median of 5 x", args.calls, "calls)")
    for name, us in rows:
        print(f"{name:{width}s}  {us:6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
