"""GPU fused linear layer (issue 5): ``act(x @ w + b)`` as cuBLASLt epilogues vs PyTorch.

scitensor's ``st.linear(x, w, b, activation)`` (one GEMM with a bias+activation epilogue
forward; backward: the activation's elementwise backward, the weight-gradient GEMM with the
bias gradient in its epilogue, the input-gradient GEMM) against PyTorch's
``act(F.linear(x, w_t, b))`` with ``w_t = wᵀ`` (PyTorch stores ``(out, in)``), in one CUDA
process on the same random inputs (rounded once to the dtype on the host, so the bits match):

- shapes ``8192x4096->4096`` and ``256x1024->1024`` (rows x in -> out), fp32 (exact IEEE on
  both sides: PyTorch's ``allow_tf32`` is checked to be off, ours is ``"highest"``) and bf16;
- activations ReLU and GELU (tanh approximation: cuBLASLt's, PyTorch ``approximate="tanh"``);
- ``fwd`` (no gradient recorded on either side) and ``fwd+bwd`` (gradients of x, w and b for a
  given upstream gradient: ``st.gradients`` / ``torch.autograd.grad``).

Timing: median CUDA-event milliseconds of one step after warm-up (``benchmarks/timing.py``
``event_ms``: what a Python loop sees, so host overhead counts at the small shape). Inputs
rotate among enough sets to exceed the 50 MB L2 cache. TFLOP/s: ``2·M·K·N`` forward,
``6·M·K·N`` forward+backward; ceilings from design.md §6 (bf16 747, fp32 51.3 TFLOP/s). The
target of every row is ``speed = torch_ms / scitensor_ms >= 1``. Each row also records the
kernels our step ran (``path``, from ``scitensor.backends.cuda.linear.TRACE``) and the largest
difference from PyTorch's output and gradients relative to their largest magnitude.

Run: ``python -m benchmarks.gpu_linear --out DIR [--quick]``; writes ``DIR/gpu_linear.json``
and ``DIR/gpu_linear.md`` and prints the table. ``--dry-run`` runs every step once on the CPU
at small shapes against PyTorch (checks this script, not speed).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
from pathlib import Path

import numpy as np

import scitensor as st
from scitensor.ops.linear import linear

try:  # run as `python -m benchmarks.gpu_linear` or as a script
    from .timing import event_ms
except ImportError:
    from timing import event_ms

L2_BYTES = 50 * 2**20
CEILING = {"fp32": 51.3, "bf16": 747.0}  # TFLOP/s, design.md §6
SHAPES = [(8192, 4096, 4096), (256, 1024, 1024)]
ISSUE_TORCH_MS = {  # PyTorch 2.11 on the H100, from the issue (relu)
    ("fp32", 8192, "fwd"): 5.61, ("fp32", 8192, "fwd+bwd"): 16.7,
    ("bf16", 8192, "fwd"): 0.444, ("bf16", 8192, "fwd+bwd"): 1.37,
    ("fp32", 256, "fwd"): 0.056, ("fp32", 256, "fwd+bwd"): 0.483,
}
TARGET = 1.0


def make_inputs(m, k, n, dname, sets, seed=0):
    """Host float32 arrays already rounded to the dtype: per set x and g; w (k, n), b (n,)."""
    import ml_dtypes

    r = np.random.default_rng(seed)

    def rounded(a):
        return a.astype(ml_dtypes.bfloat16).astype(np.float32) if dname == "bf16" else a

    xs = [rounded(r.standard_normal((m, k), dtype=np.float32)) for _ in range(sets)]
    gs = [rounded(r.standard_normal((m, n), dtype=np.float32)) for _ in range(sets)]
    ws = [rounded(r.standard_normal((k, n), dtype=np.float32) / math.sqrt(k))
          for _ in range(sets)]
    bs = [rounded(r.standard_normal(n, dtype=np.float32)) for _ in range(sets)]
    return xs, gs, ws, bs


def input_sets(m, k, n, itemsize) -> int:
    per_set = (2 * m * k + 2 * m * n + k * n) * itemsize
    return 1 if per_set >= 2 * L2_BYTES else min(16, math.ceil(2 * L2_BYTES / per_set))


def scitensor_step(inputs, dname, activation, mode, device="cuda"):
    xs, gs, ws, bs = inputs
    dtype = st.bfloat16 if dname == "bf16" else st.float32
    grad = mode != "fwd"

    def t(a, g=False):
        return st.tensor(a, dtype=dtype, device=device, requires_grad=g)

    sets = [(t(x, grad), t(w, grad), t(b, grad), t(g)) for x, g, w, b in zip(xs, gs, ws, bs)]

    def step(i):
        x, w, b, g = sets[i % len(sets)]
        if not grad:
            with st.no_grad():
                return [linear(x, w, b, activation)]
        y = linear(x, w, b, activation)
        return [y, *st.gradients(y, [x, w, b], g)]

    return step


def torch_step(inputs, dname, activation, mode, device="cuda"):
    import torch
    import torch.nn.functional as TF

    tdt = torch.bfloat16 if dname == "bf16" else torch.float32
    xs, gs, ws, bs = inputs
    grad = mode != "fwd"

    def t(a, g=False):
        return torch.from_numpy(np.ascontiguousarray(a)).to(device).to(tdt).requires_grad_(g)

    # PyTorch's weight is (out, in): the transpose of ours, made contiguous once
    sets = [(t(x, grad), t(w.T, grad), t(b, grad), t(g)) for x, g, w, b in zip(xs, gs, ws, bs)]
    act = torch.relu if activation == "relu" else (lambda v: TF.gelu(v, approximate="tanh"))

    def step(i):
        x, wt, b, g = sets[i % len(sets)]
        if not grad:
            with torch.no_grad():
                return [act(TF.linear(x, wt, b))]
        y = act(TF.linear(x, wt, b))
        dx, dwt, db = torch.autograd.grad(y, (x, wt, b), g)
        return [y, dx, dwt.T, db]

    return step


def _host(t) -> np.ndarray:
    if isinstance(t, st.Tensor):
        return t.astype(st.float32).numpy().astype(np.float64)
    return t.detach().float().cpu().numpy().astype(np.float64)  # torch


def max_err(ours, ref) -> float:
    """max |ours - ref| / max |ref| over the outputs (on the GPU through DLPack when it can)."""
    try:
        import torch

        errs = []
        for a, b in zip(ours, ref):
            a = (torch.from_dlpack(a.astype(st.float32)) if isinstance(a, st.Tensor)
                 else a.float())
            b = b.detach().float().to(a.device)
            errs.append(float((a - b).abs().max() / b.abs().max().clamp_min(1e-30)))
        return max(errs)
    except Exception:  # no torch on this device, or no DLPack exchange: on the host
        errs = [float(np.max(np.abs(_host(a) - _host(b)))
                      / max(np.max(np.abs(_host(b))), 1e-30)) for a, b in zip(ours, ref)]
        return max(errs)


def _path(step) -> str:
    """The kernels one scitensor step runs (the CUDA linear primitives' trace)."""
    from scitensor.backends.cuda import linear as cl

    trace: list = []
    cl.set_trace(trace)
    try:
        step(0)
    finally:
        cl.set_trace(None)
    return "; ".join(trace)


def run_case(m, k, n, dname, activation, mode, warmup, reps):
    import cupy
    import torch

    sets = input_sets(m, k, n, 4 if dname == "fp32" else 2)
    inputs = make_inputs(m, k, n, dname, sets)
    flops = (2 if mode == "fwd" else 6) * m * k * n
    ours = scitensor_step(inputs, dname, activation, mode)
    theirs = torch_step(inputs, dname, activation, mode)

    def record_cupy():
        e = cupy.cuda.Event()
        e.record(cupy.cuda.get_current_stream())
        return e

    def record_torch():
        e = torch.cuda.Event(enable_timing=True)
        e.record()
        return e

    st_ms = event_ms(ours, record_cupy, st.Device("cuda").backend.synchronize, warmup, reps)
    t_ms = event_ms(theirs, record_torch, torch.cuda.synchronize, warmup, reps)
    err = max_err(ours(0), theirs(0))
    path = _path(ours)
    speed = t_ms / st_ms
    return {
        "benchmark": "linear", "case": f"{m}x{k}->{n} {activation}", "dtype": dname,
        "pass": mode, "activation": activation, "shape": [m, k, n],
        "scitensor_ms": st_ms, "torch_ms": t_ms, "speed": speed, "unit": "TFLOP/s",
        "scitensor_rate": flops / st_ms / 1e9, "torch_rate": flops / t_ms / 1e9,
        "ceiling": CEILING[dname], "target": TARGET, "met": speed >= TARGET,
        "issue_torch_ms": ISSUE_TORCH_MS.get((dname, m, mode)) if activation == "relu" else None,
        "max_err_vs_torch": err, "input_sets": sets, "path": path,
    }


def markdown(rows, meta) -> str:
    lines = [f"# Fused linear (GEMM + bias + activation) — {meta['device']}", "",
             f"torch {meta['torch']}, CuPy {meta['cupy']}, scitensor {meta['scitensor']}; "
             f"median of {meta['reps']} CUDA-event timings after {meta['warmup']} warm-up "
             "steps; fp32 is exact IEEE on both sides (no TF32). speed = torch ms / ours ms "
             "(target >= 1).", "",
             "| case | dtype | pass | ours ms | torch ms | speed | ours TFLOP/s | torch TFLOP/s "
             "| ceiling | met | max err |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['dtype']} | {r['pass']} | {r['scitensor_ms']:.3f} | "
            f"{r['torch_ms']:.3f} | {r['speed']:.2f} | {r['scitensor_rate']:.1f} | "
            f"{r['torch_rate']:.1f} | {r['ceiling']} | {'yes' if r['met'] else 'NO'} | "
            f"{r['max_err_vs_torch']:.1e} |")
    lines += ["", "Kernels per step (scitensor):", ""]
    seen = set()
    for r in rows:
        key = (r["dtype"], r["activation"], r["pass"], r["path"])
        if key not in seen:
            seen.add(key)
            lines.append(f"- {r['dtype']} {r['activation']} {r['pass']}: {r['path']}")
    return "\n".join(lines) + "\n"


def dry_run() -> int:
    """Every step once on the CPU at small shapes against PyTorch (checks this script)."""
    worst = 0.0
    for dname in ("fp32", "bf16"):
        for activation in ("relu", "gelu"):
            for mode in ("fwd", "fwd+bwd"):
                inputs = make_inputs(33, 20, 17, dname, 2)
                ours = scitensor_step(inputs, dname, activation, mode, "cpu")(1)
                ref = torch_step(inputs, dname, activation, mode, "cpu")(1)
                err = max_err(ours, ref)
                if dname == "fp32":
                    worst = max(worst, err)
                print(f"dry run {dname} {activation} {mode}: {len(ours)} outputs, "
                      f"max err {err:.1e}")
    return 0 if worst < 1e-4 else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results", type=Path)
    ap.add_argument("--quick", action="store_true", help="few repetitions (~30 s)")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--dry-run", action="store_true",
                    help="run every step once on the CPU at small shapes and exit")
    ap.add_argument("--fuse", default="forward,bgrad,chain",
                    help="the fusions to keep on (scitensor.backends.cuda.linear.FUSE), e.g. "
                         "'forward,chain' times dW without the BGRADA epilogue")
    args = ap.parse_args(argv)
    if args.dry_run:
        return dry_run()
    from scitensor.backends.cuda import linear as cl

    keep = {f for f in args.fuse.split(",") if f}
    if keep - set(cl.FUSE):
        raise SystemExit(f"gpu_linear: --fuse takes a subset of {sorted(cl.FUSE)}")
    for key in cl.FUSE:
        cl.FUSE[key] = key in keep
    import cupy
    import torch

    reps = args.reps or (5 if args.quick else 20)
    warmup = args.warmup or (2 if args.quick else 5)
    torch.backends.cuda.matmul.allow_tf32 = False
    if torch.backends.cuda.matmul.allow_tf32 or st.get_matmul_precision() != "highest":
        raise SystemExit("gpu_linear: fp32 must be exact on both sides (TF32 is on)")
    props = cupy.cuda.runtime.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    meta = {"device": name, "torch": torch.__version__, "cupy": cupy.__version__,
            "scitensor": st.__version__, "python": platform.python_version(),
            "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(), "reps": reps,
            "warmup": warmup, "quick": args.quick,
            "torch_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "scitensor_matmul_precision": st.get_matmul_precision(),
            "flops": "fwd 2*M*K*N; fwd+bwd 6*M*K*N",
            "timing": "benchmarks/timing.py event_ms (host-inclusive CUDA events)",
            "fuse": dict(cl.FUSE)}
    try:
        from nvmath.bindings import cublasLt

        meta["cublaslt"] = int(cublasLt.get_version())
    except Exception as e:  # pragma: no cover - reported, not fatal
        meta["cublaslt"] = f"unavailable: {e}"
    rows = []
    for m, k, n in SHAPES:
        for dname in ("fp32", "bf16"):
            for activation in ("relu", "gelu"):
                for mode in ("fwd", "fwd+bwd"):
                    row = run_case(m, k, n, dname, activation, mode, warmup, reps)
                    rows.append(row)
                    print(f"{row['case']} {dname} {mode}: ours {row['scitensor_ms']:.3f} ms, "
                          f"torch {row['torch_ms']:.3f} ms, speed {row['speed']:.2f}, "
                          f"err {row['max_err_vs_torch']:.1e}", flush=True)
                    st.Device("cuda").backend.empty_cache()
                    torch.cuda.empty_cache()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_linear.json").write_text(json.dumps({"meta": meta, "rows": rows},
                                                         indent=2))
    md = markdown(rows, meta)
    (args.out / "gpu_linear.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
