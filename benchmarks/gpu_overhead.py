"""Per-op overhead and GEMM speed of scitensor's CUDA backend, side by side with PyTorch.

One process, one GPU, the same shapes for both libraries. Times are medians over repeats of
CUDA-event timings after warm-up; loops of tiny ops measure the per-op cost (host-bound:
the GPU waits for the host). Large GEMM inputs are random, never zeros.

Usage:
    python benchmarks/gpu_overhead.py --out benchmarks/results --tag h100

Writes ``gpu_overhead_<tag>.json`` and ``gpu_overhead_<tag>.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import pathlib
import platform
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "src"))

import cupy

import scitensor as st

try:
    import torch
except ImportError:  # the table then has scitensor's column only
    torch = None

TINY = (32, 32)
TARGETS = {"tiny_forward": ("<=", 1.0), "tiny_forward_backward": ("<=", 1.0),
           "matmul_256x1024x1024_fp32": ("<=", 1.2), "gemm_8192_fp32": (">=", 0.95),
           "gemm_8192_tf32": (">=", 0.95), "gemm_8192_bf16": (">=", 0.95)}


def _median_us(run, n, reps, sync, event_pair):
    """Median microseconds per call of ``run`` (called ``n`` times per timed repeat)."""
    for _ in range(max(3, n // 10)):
        run()
    sync()
    times = []
    for _ in range(reps):
        start, end, elapsed_ms = event_pair()
        start()
        for _ in range(n):
            run()
        end()
        times.append(elapsed_ms() * 1000.0 / n)
    return statistics.median(times)


def _cupy_events():
    a, b = cupy.cuda.Event(), cupy.cuda.Event()

    def elapsed():
        b.synchronize()
        return cupy.cuda.get_elapsed_time(a, b)

    return a.record, b.record, elapsed


def _torch_events():
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def elapsed():
        b.synchronize()
        return a.elapsed_time(b)

    return a.record, b.record, elapsed


def _st_sync():
    st.Device("cuda").backend.synchronize()


def _host_us(run, n):
    """Host microseconds per call (no device sync inside the loop)."""
    for _ in range(max(3, n // 10)):
        run()
    t = time.perf_counter()
    for _ in range(n):
        run()
    return (time.perf_counter() - t) * 1e6 / n


def bench_tiny(n, reps):
    rng = np.random.default_rng(0)
    a_np, b_np, g_np = (rng.standard_normal(TINY).astype(np.float32) for _ in range(3))
    res = {}
    a, b = st.tensor(a_np, device="cuda"), st.tensor(b_np, device="cuda")
    with st.no_grad():
        res["st_fwd"] = _median_us(lambda: a + b, n, reps, _st_sync, _cupy_events)
    x = st.tensor(a_np, device="cuda", requires_grad=True)
    w = st.tensor(b_np, device="cuda", requires_grad=True)
    g = st.tensor(g_np, device="cuda")

    def st_step():
        x.grad = None
        w.grad = None
        (x * w).backward(g)

    res["st_fwd_bwd"] = _median_us(st_step, n // 4, reps, _st_sync, _cupy_events)
    with st.sync_mode():
        res["st_fwd_sync"] = _median_us(lambda: a + b, n // 4, reps, _st_sync, _cupy_events)
    # where the time goes (host µs per call)
    be = st.Device("cuda").backend
    ca, cb = a.data, b.data
    res["host_st_op"] = _host_us(lambda: a + b, n)
    res["host_backend_add"] = _host_us(lambda: be.add(ca, cb), n)
    res["host_cupy_add"] = _host_us(lambda: ca + cb, n)
    res["host_cupy_empty"] = _host_us(lambda: cupy.empty(TINY, np.float32), n)
    res["host_cupy_ndarray"] = _host_us(lambda: cupy.ndarray(TINY, np.float32), n)
    from scitensor.backends.cuda.elementwise import new_array

    res["host_new_array"] = _host_us(lambda: new_array(TINY, np.float32), n)
    res["host_get_stream"] = _host_us(lambda: cupy.cuda.get_current_stream(0).ptr, n)
    out = cupy.empty(TINY, np.float32)
    k = be._ew.kernel("add", np.dtype(np.float32))
    sp = cupy.cuda.get_current_stream().ptr
    res["host_kernel_launch"] = _host_us(
        lambda: k(4, 256, sp, ca.data.ptr, cb.data.ptr, 0, 0, out.data.ptr, ca.size, 0), n)
    raw = cupy.RawKernel('extern "C" __global__ void f(const float* a, const float* b, '
                         'float* o, long long n) { long long i = blockIdx.x * 256ll + '
                         'threadIdx.x; if (i < n) o[i] = a[i] + b[i]; }', "f")
    res["host_cupy_rawkernel"] = _host_us(lambda: raw((4,), (256,), (ca, cb, out, ca.size)), n)
    from scitensor.backends.cuda import memory

    with memory.capture_allocator(0):
        res["host_cupy_ndarray_async_pool"] = _host_us(lambda: cupy.ndarray(TINY, np.float32),
                                                       n)
    xm = st.randn(256, 1024, device="cuda")
    wm = st.randn(1024, 1024, device="cuda")
    with st.no_grad():
        xm @ wm
        res["host_st_matmul_256x1024x1024"] = _host_us(lambda: xm @ wm, 50)
        res["host_backend_matmul_256x1024x1024"] = _host_us(lambda: be.matmul(xm.data, wm.data),
                                                            50)
    _st_sync()
    if torch is not None:
        ta, tb, tg = (torch.tensor(v, device="cuda") for v in (a_np, b_np, g_np))
        with torch.no_grad():
            res["torch_fwd"] = _median_us(lambda: ta + tb, n, reps, torch.cuda.synchronize,
                                          _torch_events)
            res["host_torch_op"] = _host_us(lambda: ta + tb, n)

            def torch_sync_op():
                ta + tb
                torch.cuda.synchronize()

            res["torch_fwd_sync"] = _median_us(torch_sync_op, n // 4, reps,
                                               torch.cuda.synchronize, _torch_events)
        tx = ta.clone().requires_grad_(True)
        tw = tb.clone().requires_grad_(True)

        def torch_step():
            tx.grad = None
            tw.grad = None
            (tx * tw).backward(tg)

        res["torch_fwd_bwd"] = _median_us(torch_step, n // 4, reps, torch.cuda.synchronize,
                                          _torch_events)
    return res


def bench_matmul(m, k, n, precision, dtype, reps, calls):
    """(scitensor µs, torch µs) per ``(m,k) @ (k,n)``, inputs rotating over 3 sets."""
    rng = np.random.default_rng(1)
    sets = [(rng.standard_normal((m, k), dtype=np.float32),
             rng.standard_normal((k, n), dtype=np.float32)) for _ in range(3)]
    st.set_matmul_precision(precision)
    try:
        xs = [(st.tensor(a, device="cuda").astype(dtype), st.tensor(b, device="cuda")
               .astype(dtype)) for a, b in sets]
        cyc = itertools.cycle(xs)

        def st_call():
            a, b = next(cyc)
            return a @ b

        st_us = _median_us(st_call, calls, reps, _st_sync, _cupy_events)
        del xs
        _st_sync()
        st.Device("cuda").backend.empty_cache()
    finally:
        st.set_matmul_precision("highest")
    torch_us = None
    if torch is not None:
        tdt = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype.name]
        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
        ts = [(torch.tensor(a, device="cuda").to(tdt), torch.tensor(b, device="cuda").to(tdt))
              for a, b in sets]
        tcyc = itertools.cycle(ts)

        def torch_call():
            a, b = next(tcyc)
            return a @ b

        torch_us = _median_us(torch_call, calls, reps, torch.cuda.synchronize, _torch_events)
        torch.backends.cuda.matmul.allow_tf32 = False
        del ts
        torch.cuda.empty_cache()
    return st_us, torch_us


def versions():
    props = cupy.cuda.runtime.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    info = {"gpu": name, "python": platform.python_version(), "numpy": np.__version__,
            "cupy": cupy.__version__, "scitensor": st.__version__,
            "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(),
            "cuda_driver": cupy.cuda.runtime.driverGetVersion(),
            "memory_pool": __import__("scitensor.backends.cuda.memory",
                                      fromlist=["x"]).pool_kind(),
            "fast_alloc": __import__("scitensor.backends.cuda.elementwise",
                                     fromlist=["x"]).FAST_ALLOC[0]}
    try:
        import nvmath

        info["nvmath"] = nvmath.__version__
    except ImportError:
        info["nvmath"] = None
    info["torch"] = torch.__version__ if torch is not None else None
    return info


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--tag", default="gpu")
    ap.add_argument("--quick", action="store_true", help="fewer repeats (smoke run)")
    args = ap.parse_args(argv)
    reps = 3 if args.quick else 7
    st.Device("cuda").backend  # noqa: B018 - create the backend (pool, stream)
    tiny = bench_tiny(200 if args.quick else 2000, reps)
    rows = []

    def row(key, what, st_v, torch_v, unit):
        ratio = st_v / torch_v if torch_v else None  # time: lower is better; TFLOP/s: higher
        rows.append({"key": key, "what": what, "scitensor": st_v, "torch": torch_v,
                     "unit": unit, "ratio": ratio, "target": TARGETS.get(key)})

    row("tiny_forward", f"tiny add {TINY} fp32, no grad, per op", tiny["st_fwd"],
        tiny.get("torch_fwd"), "us")
    row("tiny_forward_backward", f"tiny mul {TINY} fwd+bwd (2 grads), per step",
        tiny["st_fwd_bwd"], tiny.get("torch_fwd_bwd"), "us")
    row("tiny_forward_sync", "tiny add, synchronizing after each op", tiny["st_fwd_sync"],
        tiny.get("torch_fwd_sync"), "us")
    st_us, t_us = bench_matmul(256, 1024, 1024, "highest", st.float32, reps, 50)
    row("matmul_256x1024x1024_fp32", "matmul 256x1024 @ 1024x1024 fp32", st_us, t_us, "us")
    flop = 2 * 8192**3
    for prec, dtype, key in (("highest", st.float32, "gemm_8192_fp32"),
                             ("tf32", st.float32, "gemm_8192_tf32"),
                             ("highest", st.bfloat16, "gemm_8192_bf16")):
        st_us, t_us = bench_matmul(8192, 8192, 8192, prec, dtype, 3 if args.quick else 5,
                                   2 if prec == "highest" and dtype is st.float32 else 5)
        row(key, f"GEMM 8192^3 {key.split('_')[-1]}", flop / st_us / 1e6,
            flop / t_us / 1e6 if t_us else None, "TFLOP/s")
    info = versions()
    result = {"machine": info, "rows": rows, "host_us": {k: v for k, v in tiny.items()
                                                         if k.startswith("host_")}}
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"gpu_overhead_{args.tag}.json").write_text(json.dumps(result, indent=2))
    md = [f"# scitensor CUDA overhead and GEMM vs PyTorch — {info['gpu']}", "",
          "Versions: " + ", ".join(f"{k} {v}" for k, v in info.items() if k != "gpu"), "",
          "| benchmark | scitensor | PyTorch | unit | ratio | target |",
          "|---|---|---|---|---|---|"]
    for r in rows:
        tv = f"{r['torch']:.2f}" if r["torch"] else "-"
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] else "-"
        tgt = f"{r['target'][0]} {r['target'][1]}x" if r["target"] else ""
        md.append(f"| {r['what']} | {r['scitensor']:.2f} | {tv} | {r['unit']} | {ratio} | "
                  f"{tgt} |")
    md += ["", "Host µs per call (where the per-op time goes):", ""]
    md += [f"- {k[5:]}: {v:.2f}" for k, v in result["host_us"].items()]
    (out / f"gpu_overhead_{args.tag}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
