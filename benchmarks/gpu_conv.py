"""GPU conv2d benchmark (issue 8): scitensor and PyTorch/cuDNN side by side, in one process.

Each shape runs forward + backward (input and weight gradients) on the same random inputs, in
bf16 and fp32. fp32 precision, stated in every row (``precision``) and in the meta: PyTorch
runs its default (cuDNN may use TF32, ``torch.backends.cudnn.allow_tf32 = True``); scitensor
runs ``st.set_matmul_precision("tf32")`` by default so both sides may use TF32, or exact fp32
with ``--fp32-precision highest`` (3xTF32 in our implicit-GEMM kernel). Reported per row:
median CUDA-event milliseconds after warm-up (inputs rotate between two sets so the L2 cache
does not flatter small shapes), ``speed`` = torch ms / scitensor ms (>= 1: we are as fast),
TFLOP/s (forward + both gradients = 3x the forward's 2*N*K*Ho*Wo*C/g*kh*kw) against the
design.md §6 GEMM ceiling of the precision used, the issue's target (0.5x PyTorch), the path
each pass took (``backends/cuda/conv_igemm.py: choose_path``) and the largest error of our
forward relative to PyTorch's (max |diff| / max |torch|). With ``--jit`` scitensor's step is
also captured as a CUDA graph (``st.jit``) and replayed: extra rows with pass
``fwd+bwd jit``.

Run: ``python -m benchmarks.gpu_conv --out DIR [--quick] [--dtypes fp32,bf16] [--jit]
[--fp32-precision tf32|highest] [--only SUBSTRING]``. Writes ``DIR/gpu_conv.json`` (``{"meta",
"rows"}``) and ``DIR/gpu_conv.md`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np

import scitensor as st
from scitensor.ops.conv import conv2d

try:  # run as `python -m benchmarks.X` or as a script
    from .timing import event_ms
except ImportError:
    from timing import event_ms

# name, N, C, H(=W), K, kernel, stride, padding, groups, PyTorch 2.11 fp32 fwd+bwd on the H100
# from the issue (ms; None where the issue gives none)
SHAPES = [
    ("N128 C64 56x56 K64 3x3", 128, 64, 56, 64, 3, 1, 1, 1, 1.27),
    ("N128 C128 28x28 K128 3x3", 128, 128, 28, 128, 3, 1, 1, 1, 0.72),
    ("N128 C256 14x14 K256 3x3", 128, 256, 14, 256, 3, 1, 1, 1, 0.77),
    ("N128 C3 224x224 K64 7x7 s2 p3", 128, 3, 224, 64, 7, 2, 3, 1, 4.53),
    ("N256 C32 32x32 K64 3x3", 256, 32, 32, 64, 3, 1, 1, 1, 0.83),
    ("N128 C128 56x56 depthwise 3x3", 128, 128, 56, 128, 3, 1, 1, 128, None),
    ("N128 C128 28x28 K128 3x3 groups=4", 128, 128, 28, 128, 3, 1, 1, 4, None),
]
QUICK = ("N128 C64 56x56 K64 3x3", "N128 C128 28x28 K128 3x3 groups=4")
ROTATE = 2
TARGET = 0.5  # issue 8: at least half of PyTorch's speed on every shape
CEILING_TFLOPS = {"bf16": 747.0, "tf32": 384.0, "fp32": 51.3}  # design.md §6


def _out_size(h, ks, stride, pad):
    return (h + 2 * pad - ks) // stride + 1


def _flops(n, c, h, k, ks, stride, pad, groups):
    ho = _out_size(h, ks, stride, pad)
    return 3 * 2 * n * k * ho * ho * (c // groups) * ks * ks


def _paths(shape, sdt):
    """The path each pass takes on this GPU (conv_igemm.choose_path)."""
    from scitensor.backends.cuda.conv_igemm import choose_path

    _, n, c, h, k, ks, stride, pad, groups, _ = shape
    ho = _out_size(h, ks, stride, pad)
    arch = st.Device("cuda").backend.arch
    args = ((n, c, h, h), (k, c // groups, ks, ks), (n, k, ho, ho), (stride, stride), (1, 1),
            groups)
    return {p: choose_path(p, sdt.np, arch, *args) for p in ("fwd", "dgrad", "wgrad")}


def bench_torch(shape, dtype_name, inputs, warmup, reps):
    import torch

    _, n, c, h, k, ks, stride, pad, groups, _ = shape
    tdt = torch.float32 if dtype_name == "fp32" else torch.bfloat16
    xs = [torch.from_numpy(x).cuda().to(tdt).requires_grad_() for x, _, _ in inputs]
    ws = [torch.from_numpy(w).cuda().to(tdt).requires_grad_() for _, w, _ in inputs]
    gs = [torch.from_numpy(g).cuda().to(tdt) for _, _, g in inputs]

    def step(i):
        j = i % ROTATE
        xs[j].grad = ws[j].grad = None
        y = torch.nn.functional.conv2d(xs[j], ws[j], None, stride, pad, 1, groups)
        y.backward(gs[j])

    def record():
        e = torch.cuda.Event(enable_timing=True)
        e.record()
        return e

    ms = event_ms(step, record, torch.cuda.synchronize, warmup, reps)
    with torch.no_grad():
        y = torch.nn.functional.conv2d(xs[0], ws[0], None, stride, pad, 1, groups)
    return ms, y.float().cpu().numpy()


def bench_scitensor(shape, dtype_name, inputs, warmup, reps, use_jit):
    import cupy

    _, n, c, h, k, ks, stride, pad, groups, _ = shape
    sdt = st.float32 if dtype_name == "fp32" else st.bfloat16
    dev = st.Device("cuda")
    xs = [st.tensor(x, dtype=sdt, device=dev, requires_grad=True) for x, _, _ in inputs]
    ws = [st.tensor(w, dtype=sdt, device=dev, requires_grad=True) for _, w, _ in inputs]
    gs = [st.tensor(g, dtype=sdt, device=dev) for _, _, g in inputs]

    def eager(i):
        j = i % ROTATE
        xs[j].grad = ws[j].grad = None
        conv2d(xs[j], ws[j], None, stride, pad, 1, groups).backward(gs[j])

    def record():
        e = cupy.cuda.Event()
        e.record(cupy.cuda.get_current_stream())
        return e

    sync = dev.backend.synchronize
    out = {"eager_ms": event_ms(eager, record, sync, warmup, reps)}
    if use_jit:
        try:
            @st.jit
            def fwd_bwd(x, w, g):
                _, pullback = st.vjp(lambda a, b: conv2d(a, b, None, stride, pad, 1, groups),
                                     x, w)
                return pullback(g)

            def captured(i):
                j = i % ROTATE
                fwd_bwd(xs[j].detach(), ws[j].detach(), gs[j])

            out["jit_ms"] = event_ms(captured, record, sync, warmup + 2, reps)
        except Exception as e:  # report, keep benchmarking
            out["jit_error"] = f"{type(e).__name__}: {e}"
    with st.no_grad():
        y = conv2d(xs[0], ws[0], None, stride, pad, 1, groups)
    out["y"] = y.astype(st.float32).numpy()
    out["paths"] = _paths(shape, sdt)
    return out


def _row(sname, dname, precision, flops, scitensor_ms, torch_ms, pass_, **extra):
    ceil_key = "bf16" if dname == "bf16" else precision if precision == "tf32" else "fp32"
    ours = flops / scitensor_ms / 1e9
    theirs = flops / torch_ms / 1e9
    speed = torch_ms / scitensor_ms
    return {"benchmark": "conv", "case": sname, "dtype": dname, "pass": pass_,
            "scitensor_ms": scitensor_ms, "torch_ms": torch_ms, "speed": speed,
            "unit": "TFLOP/s", "scitensor_rate": ours, "torch_rate": theirs,
            "ceiling": CEILING_TFLOPS[ceil_key], "target": TARGET, "met": speed >= TARGET,
            "precision": precision if dname == "fp32" else "bf16", **extra}


def _markdown(meta, rows) -> str:
    lines = [f"# conv2d forward+backward on {meta['gpu']}", "",
             f"torch {meta['torch']} (cuDNN {meta['cudnn']}), CuPy {meta['cupy']}, scitensor "
             f"{meta['scitensor']}; median of {meta['reps']} CUDA-event timings. fp32: PyTorch "
             f"with TF32 allowed (its default), scitensor at matmul precision "
             f"'{meta['fp32_precision']}'. Speed = torch ms / scitensor ms; target "
             f"{TARGET}x; paths: forward / input gradient / weight gradient.", "",
             "| shape | dtype | pass | torch ms | scitensor ms | speed | met | torch TFLOP/s "
             "| ours TFLOP/s | % ceiling | paths | max rel err |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        paths = "/".join(r["paths"][p] for p in ("fwd", "dgrad", "wgrad"))
        lines.append(f"| {r['case']} | {r['dtype']} ({r['precision']}) | {r['pass']} | "
                     f"{r['torch_ms']:.3f} | {r['scitensor_ms']:.3f} | {r['speed']:.2f} | "
                     f"{'yes' if r['met'] else 'NO'} | {r['torch_rate']:.1f} | "
                     f"{r['scitensor_rate']:.1f} | "
                     f"{100 * r['scitensor_rate'] / r['ceiling']:.0f}% | {paths} | "
                     f"{r['max_rel_err']:.1e} |")
    errors = [r for r in rows if r.get("jit_error")]
    for r in errors:
        lines.append(f"\njit failed for {r['case']} {r['dtype']}: {r['jit_error']}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--quick", action="store_true", help="two shapes, few repetitions")
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--fp32-precision", default="tf32", choices=("tf32", "highest"))
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--jit", action="store_true", help="also time st.jit-captured steps")
    ap.add_argument("--only", default="", help="run shapes whose name contains this")
    args = ap.parse_args(argv)
    if args.quick:
        args.warmup, args.reps = min(args.warmup, 2), min(args.reps, 5)
    import cupy
    import torch

    if not torch.cuda.is_available() or not st.cuda_status()[0]:
        print("gpu_conv: needs a CUDA GPU for both PyTorch and scitensor:",
              st.cuda_status()[1])
        return 1
    st.set_matmul_precision(args.fp32_precision)
    torch.backends.cudnn.allow_tf32 = True  # PyTorch's default, stated explicitly
    props = cupy.cuda.runtime.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    meta = {"gpu": name, "torch": torch.__version__, "cudnn": torch.backends.cudnn.version(),
            "cupy": cupy.__version__, "scitensor": st.__version__,
            "python": platform.python_version(), "fp32_precision": args.fp32_precision,
            "torch_fp32": "TF32 allowed (torch.backends.cudnn.allow_tf32 = True)",
            "warmup": args.warmup, "reps": args.reps, "quick": args.quick}
    rows = []
    rng = np.random.default_rng(0)
    for shape in SHAPES:
        sname, n, c, h, k, ks, stride, pad, groups, ref_ms = shape
        if (args.only and args.only not in sname) or (args.quick and sname not in QUICK):
            continue
        ho = _out_size(h, ks, stride, pad)
        inputs = [(rng.standard_normal((n, c, h, h), dtype=np.float32),
                   rng.standard_normal((k, c // groups, ks, ks), dtype=np.float32)
                   * np.float32((c // groups * ks * ks) ** -0.5),
                   rng.standard_normal((n, k, ho, ho), dtype=np.float32))
                  for _ in range(ROTATE)]
        flops = _flops(n, c, h, k, ks, stride, pad, groups)
        for dname in args.dtypes.split(","):
            t_ms, ty = bench_torch(shape, dname, inputs, args.warmup, args.reps)
            ours = bench_scitensor(shape, dname, inputs, args.warmup, args.reps, args.jit)
            err = float(np.abs(ours.pop("y") - ty).max() / max(np.abs(ty).max(), 1e-30))
            extra = {"max_rel_err": err, "paths": ours["paths"], "issue_torch_fp32_ms": ref_ms}
            if "jit_error" in ours:
                extra["jit_error"] = ours["jit_error"]
            row = _row(sname, dname, args.fp32_precision, flops, ours["eager_ms"], t_ms,
                       "fwd+bwd", **extra)
            rows.append(row)
            print(f"{sname:38s} {dname}: torch {t_ms:7.3f} ms  scitensor {ours['eager_ms']:7.3f}"
                  f" ms  speed {row['speed']:.2f}  err {err:.1e}  paths "
                  f"{'/'.join(ours['paths'].values())}", flush=True)
            if "jit_ms" in ours:
                rows.append(_row(sname, dname, args.fp32_precision, flops, ours["jit_ms"], t_ms,
                                 "fwd+bwd jit", **extra))
            torch.cuda.empty_cache()
            st.Device("cuda").backend.empty_cache()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_conv.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    text = _markdown(meta, rows)
    (args.out / "gpu_conv.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
