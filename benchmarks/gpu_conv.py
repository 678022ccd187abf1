"""GPU conv2d benchmark (issue 8): scitensor and PyTorch/cuDNN side by side, in one process.

Each shape runs forward + backward (input and weight gradients) on the same random inputs,
fp32 (PyTorch with its default TF32 convolutions, scitensor with
``st.set_matmul_precision("tf32")``) and bf16. Reported: median CUDA-event milliseconds after
warm-up, PyTorch's time divided by ours (the speed ratio: >= 1 means we are as fast), TFLOP/s
(forward + both gradients = 3x the forward's 2*N*K*Ho*Wo*C/g*kh*kw), and the largest error of
our forward relative to PyTorch's (max |diff| / max |torch|). Inputs rotate between two sets so
the L2 cache does not flatter small shapes. With ``--jit`` scitensor's step is also captured
as a CUDA graph (``st.jit``) and replayed.

Run: ``python -m benchmarks.gpu_conv --out DIR [--dtypes fp32,bf16] [--reps 30] [--jit]``.
Writes ``DIR/gpu_conv.json`` and ``DIR/gpu_conv.md`` and prints the table.
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
ROTATE = 2


def _flops(n, c, h, k, ks, stride, pad, groups):
    ho = (h + 2 * pad - ks) // stride + 1
    return 3 * 2 * n * k * ho * ho * (c // groups) * ks * ks






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
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--jit", action="store_true", help="also time st.jit-captured steps")
    ap.add_argument("--only", default="", help="run shapes whose name contains this")
    args = ap.parse_args(argv)
    import cupy
    import torch

    if not torch.cuda.is_available() or not st.cuda_status()[0]:
        print("gpu_conv: needs a CUDA GPU for both PyTorch and scitensor:",
              st.cuda_status()[1])
        return 1
    st.set_matmul_precision("tf32")  # fp32 compared with cuDNN's default TF32 convolutions
    torch.backends.cudnn.allow_tf32 = True
    props = cupy.cuda.runtime.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    meta = {"gpu": name, "torch": torch.__version__, "cudnn": torch.backends.cudnn.version(),
            "cupy": cupy.__version__, "scitensor": st.__version__,
            "python": platform.python_version(), "matmul_precision": "tf32",
            "warmup": args.warmup, "reps": args.reps}
    rows = []
    rng = np.random.default_rng(0)
    for shape in SHAPES:
        sname, n, c, h, k, ks, stride, pad, groups, ref_ms = shape
        if args.only and args.only not in sname:
            continue
        ho = (h + 2 * pad - ks) // stride + 1
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
            row = {"shape": sname, "dtype": dname, "torch_ms": t_ms,
                   "scitensor_ms": ours["eager_ms"], "speed_vs_torch": t_ms / ours["eager_ms"],
                   "torch_tflops": flops / t_ms / 1e9,
                   "scitensor_tflops": flops / ours["eager_ms"] / 1e9, "max_rel_err": err,
                   "issue_torch_fp32_ms": ref_ms}
            row.update({key: v for key, v in ours.items() if key != "eager_ms"})
            if "jit_ms" in row:
                row["jit_speed_vs_torch"] = t_ms / row["jit_ms"]
            rows.append(row)
            print(f"{sname:38s} {dname}: torch {t_ms:7.3f} ms  scitensor {ours['eager_ms']:7.3f}"
                  f" ms  ratio {row['speed_vs_torch']:.2f}  err {err:.1e}", flush=True)
            torch.cuda.empty_cache()
            st.Device("cuda").backend.empty_cache()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_conv.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = [f"# conv2d forward+backward on {name}", "",
             f"torch {meta['torch']} (cuDNN {meta['cudnn']}), CuPy {meta['cupy']}, "
             f"scitensor {meta['scitensor']}; median of {args.reps} CUDA-event timings; fp32 = "
             "TF32 on both sides. Speed = torch ms / scitensor ms.", "",
             "| shape | dtype | torch ms | scitensor ms | speed | torch TFLOP/s | ours TFLOP/s "
             "| jit ms | max rel err |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        jit = f"{r['jit_ms']:.3f}" if "jit_ms" in r else r.get("jit_error", "-")[:40]
        lines.append(f"| {r['shape']} | {r['dtype']} | {r['torch_ms']:.3f} | "
                     f"{r['scitensor_ms']:.3f} | {r['speed_vs_torch']:.2f} | "
                     f"{r['torch_tflops']:.1f} | {r['scitensor_tflops']:.1f} | {jit} | "
                     f"{r['max_rel_err']:.1e} |")
    (args.out / "gpu_conv.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
