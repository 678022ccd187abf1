"""GPU pooling / batch-norm / dropout benchmark (issue 7): scitensor and PyTorch side by side.

Both libraries run in one process on the same random inputs (two input sets, alternated so
the L2 cache does not flatter the result). For every case and dtype (fp32, bf16) it times the
forward alone and forward + backward: medians of CUDA-event timings after warm-up.

Bandwidth counts each tensor the pass must touch once (the same formula for both libraries,
so the GB/s ratio is the speed ratio):

- pooling forward: read x, write y; forward + backward adds read dy, write dx (max pooling's
  saved indices are not counted: PyTorch writes int64 indices, we write one byte each);
- batch norm (training) forward: read x, write y; forward + backward adds read dy, read x,
  write dx (5 tensor-sizes in all; per-channel vectors are negligible);
- dropout: read x, write y (+ read dy, write dx); the mask is not counted.

GB/s are compared with the H100's device copy ceiling (2,966 GB/s, read + write). The issue's
targets (PyTorch 2.11 on the H100): max_pool2d 3x3 s2 p1 and avg_pool2d 2x2 s2 on
128x64x112x112 >= 1.5x PyTorch, batch norm training forward+backward on 128x64x56x56 >= 2x.

Run: ``python -m benchmarks.gpu_pooling_bn --out DIR [--dtypes fp32,bf16] [--reps 30]
[--only NAME]``. Writes ``DIR/gpu_pooling_bn.json`` and ``DIR/gpu_pooling_bn.md`` and prints
the table.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np

import scitensor as st
from scitensor.ops.batchnorm import batch_norm
from scitensor.ops.dropout import dropout
from scitensor.ops.pooling import adaptive_avg_pool2d, avg_pool2d, max_pool2d

try:  # run as `python -m benchmarks.X` or as a script
    from .timing import cupy_stream_spin, event_ms, queued_ms, torch_spin
except ImportError:
    from timing import cupy_stream_spin, event_ms, queued_ms, torch_spin

COPY_CEILING_GBS = 2966.0
ROTATE = 2
# name, input shape, target speed-up over PyTorch (and the passes it is for), kind
CASES = [
    ("max_pool2d 3x3 s2 p1", (128, 64, 112, 112), (1.5, ("fwd", "fwd+bwd")), "max"),
    ("avg_pool2d 2x2 s2", (128, 64, 112, 112), (1.5, ("fwd", "fwd+bwd")), "avg"),
    ("batch_norm train", (128, 64, 56, 56), (2.0, ("fwd+bwd",)), "bn"),
    ("adaptive_avg_pool2d 1x1", (128, 512, 7, 7), None, "gap"),
    ("dropout p=0.1", (128, 64, 56, 56), None, "drop"),
]


def out_shape(kind, shape):
    n, c, h, w = shape
    if kind == "max":
        return (n, c, (h - 1) // 2 + 1, (w - 1) // 2 + 1)
    if kind == "avg":
        return (n, c, h // 2, w // 2)
    if kind == "gap":
        return (n, c, 1, 1)
    return shape


def pass_bytes(kind, shape, itemsize):
    """Bytes touched once by the forward and by forward + backward."""
    x = int(np.prod(shape)) * itemsize
    y = int(np.prod(out_shape(kind, shape))) * itemsize
    fwd = x + y
    bwd = y + x + (x if kind == "bn" else 0)  # read dy, write dx (+ read x for batch norm)
    return {"fwd": fwd, "fwd+bwd": fwd + bwd}






def torch_fn(kind):
    import torch.nn.functional as F

    return {"max": lambda x, p: F.max_pool2d(x, 3, 2, 1),
            "avg": lambda x, p: F.avg_pool2d(x, 2, 2),
            "gap": lambda x, p: F.adaptive_avg_pool2d(x, 1),
            "drop": lambda x, p: F.dropout(x, 0.1, True),
            "bn": lambda x, p: F.batch_norm(x, p["rm"], p["rv"], p["w"], p["b"], True, 0.1,
                                            1e-5)}[kind]


def ours_fn(kind):
    return {"max": lambda x, p: max_pool2d(x, 3, 2, 1),
            "avg": lambda x, p: avg_pool2d(x, 2, 2),
            "gap": lambda x, p: adaptive_avg_pool2d(x, 1),
            "drop": lambda x, p: dropout(x, 0.1, True),
            "bn": lambda x, p: batch_norm(x, p["rm"], p["rv"], p["w"], p["b"], True, 0.1,
                                          1e-5)}[kind]


def bench_torch(kind, dname, inputs, warmup, reps):
    import torch

    tdt = torch.float32 if dname == "fp32" else torch.bfloat16
    xs = [torch.from_numpy(x).cuda().to(tdt).requires_grad_() for x, _ in inputs]
    gs = [torch.from_numpy(g).cuda().to(tdt) for _, g in inputs]
    c = xs[0].shape[1]
    p = {"rm": torch.zeros(c, device="cuda"), "rv": torch.ones(c, device="cuda"),
         "w": torch.ones(c, device="cuda", requires_grad=True),
         "b": torch.zeros(c, device="cuda", requires_grad=True)}
    fn = torch_fn(kind)

    def fwd(i):
        with torch.no_grad():
            fn(xs[i % ROTATE], p)

    def fwd_bwd(i):
        j = i % ROTATE
        xs[j].grad = p["w"].grad = p["b"].grad = None
        fn(xs[j], p).backward(gs[j])

    def record():
        e = torch.cuda.Event(enable_timing=True)
        e.record()
        return e

    spin = torch_spin()
    out = {"fwd": event_ms(fwd, record, torch.cuda.synchronize, warmup, reps),
           "fwd+bwd": event_ms(fwd_bwd, record, torch.cuda.synchronize, warmup, reps),
           "fwd device": queued_ms(fwd, record, spin, warmup, reps),
           "fwd+bwd device": queued_ms(fwd_bwd, record, spin, warmup, reps)}
    xs[0].grad = None
    torch.manual_seed(0)
    y = fn(xs[0], p)
    y.backward(gs[0])
    return out, y.detach().float().cpu().numpy(), xs[0].grad.float().cpu().numpy()


def bench_scitensor(kind, dname, inputs, warmup, reps):
    import cupy

    sdt = st.float32 if dname == "fp32" else st.bfloat16
    dev = st.Device("cuda")
    xs = [st.tensor(x, dtype=sdt, device=dev, requires_grad=True) for x, _ in inputs]
    gs = [st.tensor(g, dtype=sdt, device=dev) for _, g in inputs]
    c = xs[0].shape[1]
    p = {"rm": st.zeros(c, device=dev), "rv": st.ones(c, device=dev),
         "w": st.ones(c, device=dev, requires_grad=True),
         "b": st.zeros(c, device=dev, requires_grad=True)}
    fn = ours_fn(kind)

    def fwd(i):
        with st.no_grad():
            fn(xs[i % ROTATE], p)

    def fwd_bwd(i):
        j = i % ROTATE
        xs[j].grad = p["w"].grad = p["b"].grad = None
        fn(xs[j], p).backward(gs[j])

    def record():
        e = cupy.cuda.Event()
        e.record(cupy.cuda.get_current_stream())
        return e

    sync = dev.backend.synchronize
    spin = cupy_stream_spin()
    out = {"fwd": event_ms(fwd, record, sync, warmup, reps),
           "fwd+bwd": event_ms(fwd_bwd, record, sync, warmup, reps),
           "fwd device": queued_ms(fwd, record, spin, warmup, reps),
           "fwd+bwd device": queued_ms(fwd_bwd, record, spin, warmup, reps)}
    xs[0].grad = None
    y = fn(xs[0], p)
    y.backward(gs[0])
    return out, y.astype(st.float32).numpy(), xs[0].grad.astype(st.float32).numpy()


def rel_err(ours, ref) -> float:
    return float(np.abs(ours - ref).max() / max(np.abs(ref).max(), 1e-30))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--only", default="", help="run cases whose name contains this")
    args = ap.parse_args(argv)
    import cupy
    import torch

    if not torch.cuda.is_available() or not st.cuda_status()[0]:
        print("gpu_pooling_bn: needs a CUDA GPU for both PyTorch and scitensor:",
              st.cuda_status()[1])
        return 1
    props = cupy.cuda.runtime.getDeviceProperties(0)
    gpu = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    meta = {"gpu": gpu, "torch": torch.__version__, "cupy": cupy.__version__,
            "scitensor": st.__version__, "python": platform.python_version(),
            "warmup": args.warmup, "reps": args.reps, "copy_ceiling_gbs": COPY_CEILING_GBS}
    rows = []
    rng = np.random.default_rng(0)
    for name, shape, target, kind in CASES:
        if args.only and args.only not in name:
            continue
        inputs = [(rng.standard_normal(shape, dtype=np.float32),
                   rng.standard_normal(out_shape(kind, shape), dtype=np.float32))
                  for _ in range(ROTATE)]
        for dname in args.dtypes.split(","):
            itemsize = 4 if dname == "fp32" else 2
            t_ms, ty, tdx = bench_torch(kind, dname, inputs, args.warmup, args.reps)
            o_ms, oy, odx = bench_scitensor(kind, dname, inputs, args.warmup, args.reps)
            # dropout masks differ between the libraries: compare the kept values only
            errs = ((rel_err(oy * (ty != 0), ty * (oy != 0)), rel_err(odx * (tdx != 0),
                                                                       tdx * (odx != 0)))
                    if kind == "drop" else (rel_err(oy, ty), rel_err(odx, tdx)))
            nbytes = pass_bytes(kind, shape, itemsize)
            for pas in ("fwd", "fwd+bwd"):
                speed = t_ms[pas] / o_ms[pas]
                row = {"case": name, "shape": list(shape), "dtype": dname, "pass": pas,
                       "bytes": nbytes[pas], "torch_ms": t_ms[pas],
                       "scitensor_ms": o_ms[pas],
                       "torch_gbs": nbytes[pas] / t_ms[pas] / 1e6,
                       "scitensor_gbs": nbytes[pas] / o_ms[pas] / 1e6,
                       "speed_vs_torch": speed, "y_rel_err": errs[0], "dx_rel_err": errs[1],
                       "torch_device_ms": t_ms[pas + " device"],
                       "scitensor_device_ms": o_ms[pas + " device"]}
                dspeed = t_ms[pas + " device"] / o_ms[pas + " device"]
                row["device_speed_vs_torch"] = dspeed
                row["scitensor_device_gbs"] = nbytes[pas] / o_ms[pas + " device"] / 1e6
                row["scitensor_pct_ceiling"] = (100 * row["scitensor_device_gbs"]
                                                / COPY_CEILING_GBS)
                if target is not None and pas in target[1]:
                    row["target"] = target[0]
                    row["target_met"] = dspeed >= target[0]
                rows.append(row)
                print(f"{name:26s} {dname} {pas:8s} torch {t_ms[pas]:7.3f} ms "
                      f"({row['torch_gbs']:6.0f} GB/s)  scitensor {o_ms[pas]:7.3f} ms "
                      f"({row['scitensor_gbs']:6.0f} GB/s)  x{speed:.2f}", flush=True)
            torch.cuda.empty_cache()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_pooling_bn.json").write_text(json.dumps({"meta": meta, "rows": rows},
                                                             indent=2))
    lines = [f"# Pooling, batch norm and dropout on {gpu}", "",
             f"torch {meta['torch']}, CuPy {meta['cupy']}, scitensor {meta['scitensor']}; "
             f"median of {args.reps} CUDA-event timings after {args.warmup} warm-up runs. "
             "Two timings per pass: *eager* (events around each call, host enqueue cost "
             "included) and *device* (every call queued behind a GPU spin, events between "
             "calls: the kernels' time alone, `benchmarks/timing.py:queued_ms`). GB/s = "
             "tensor bytes touched once / device time (see the script's docstring); "
             f"ceiling = {COPY_CEILING_GBS:.0f} GB/s device copy. Speed = torch ms / "
             "scitensor ms; the kernel targets are judged on device time.", "",
             "| case | shape | dtype | pass | torch eager ms | ours eager ms | eager speed "
             "| torch device ms | ours device ms | ours GB/s | % ceiling | device speed "
             "| target | y err | dx err |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        tgt = (f"{r['target']:.1f}x {'met' if r['target_met'] else 'MISSED'}"
               if "target" in r else "-")
        lines.append(f"| {r['case']} | {'x'.join(map(str, r['shape']))} | {r['dtype']} | "
                     f"{r['pass']} | {r['torch_ms']:.3f} | {r['scitensor_ms']:.3f} | "
                     f"{r['speed_vs_torch']:.2f} | {r['torch_device_ms']:.3f} | "
                     f"{r['scitensor_device_ms']:.3f} | {r['scitensor_device_gbs']:.0f} | "
                     f"{r['scitensor_pct_ceiling']:.0f}% | {r['device_speed_vs_torch']:.2f} | "
                     f"{tgt} | {r['y_rel_err']:.1e} | {r['dx_rel_err']:.1e} |")
    (args.out / "gpu_pooling_bn.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
