"""GPU layer norm, RMS norm, softmax and cross-entropy: scitensor and PyTorch side by side.

Both libraries run in one CUDA process on the same random inputs (rounded once to the dtype
on the host, so the bits match). For each case and library:

- ``device_ms``: median CUDA-event time of one step with the queue pre-filled (a GPU sleep
  is enqueued first and every step is queued behind it, so host launch overhead is hidden:
  this is the kernels' own time, the number compared with the byte floor);
- ``eager_ms``: median CUDA-event time of one step run alone, synchronised each time (what a
  Python loop sees; small shapes are host-bound here);
- ``GB/s``: the byte floor of the step (each input read once, each output written once:
  docs/kernels/normalization.md) over ``device_ms``, and its share of the 2,966 GB/s
  device-to-device copy ceiling (design.md §6, H100);
- ``speedup``: PyTorch's ``device_ms`` over ours (>= 1: we are faster);
- ``max_err``: largest |ours - PyTorch| / max |PyTorch| over the step's outputs.

Large inputs are used once per step; small ones rotate among enough copies to exceed the L2
cache four times over. Run on a GPU machine:

    python -m benchmarks.gpu_norm_softmax --out DIR [--reps 50] [--only layer_norm,softmax]

``--dry-run`` runs every step once on the CPU at small shapes against PyTorch (no GPU).

Writes ``DIR/gpu_norm_softmax.json`` and ``DIR/gpu_norm_softmax.md`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from pathlib import Path

import numpy as np

import scitensor as st
from scitensor.ops.losses import cross_entropy
from scitensor.ops.normalization import layer_norm, rms_norm

try:  # run as `python -m benchmarks.X` or as a script
    from .timing import sleep_cycles_per_ms
except ImportError:
    from timing import sleep_cycles_per_ms

COPY_CEILING_GBS = 2966.0  # H100 device-to-device copy, read + write (design.md §6)
L2_BYTES = 50 * 2**20
# (op, mode, rows, cols): the target shapes
CASES = [
    ("layer_norm", "fwd", 32768, 4096), ("layer_norm", "fwd+bwd", 32768, 4096),
    ("layer_norm", "fwd", 4096, 768), ("layer_norm", "fwd+bwd", 4096, 768),
    ("rms_norm", "fwd", 32768, 4096), ("rms_norm", "fwd+bwd", 32768, 4096),
    ("rms_norm", "fwd+bwd", 4096, 768),
    ("softmax", "fwd", 32768, 4096), ("softmax", "fwd+bwd", 32768, 4096),
    ("softmax", "fwd", 8192, 32000), ("log_softmax", "fwd+bwd", 8192, 32000),
    ("cross_entropy", "fwd", 8192, 32000), ("cross_entropy", "fwd+bwd", 8192, 32000),
]
DTYPES = {"fp32": ("float32", 4), "bf16": ("bfloat16", 2)}


def floor_bytes(op: str, mode: str, rows: int, cols: int, itemsize: int) -> int:
    """Fewest bytes the step must move (see docs/kernels/normalization.md)."""
    big = rows * cols * itemsize
    stats = rows * 4
    if op in ("layer_norm", "rms_norm"):
        nstat = 2 if op == "layer_norm" else 1
        params = cols * itemsize * (2 if op == "layer_norm" else 1)
        fwd = 2 * big + params + nstat * stats
        # backward: read g and x (+ stats, weight), write dx and the parameter gradients
        return fwd if mode == "fwd" else fwd + 3 * big + nstat * stats + 2 * params
    if op in ("softmax", "log_softmax"):
        return 2 * big if mode == "fwd" else 5 * big  # bwd: read g, y; write dx
    # cross-entropy: fwd reads the logits once; bwd reads them again and writes dlogits
    labels = rows * 8
    return big + labels + 2 * stats if mode == "fwd" else 3 * big + 2 * labels + 3 * stats


# ---- timing ---------------------------------------------------------------------------------
class Timer:
    """Per-library event recording, synchronisation and a GPU sleep on its stream."""

    def __init__(self, lib: str, cycles_per_ms: float):
        import cupy
        import torch

        self.lib, self.cycles_per_ms = lib, cycles_per_ms
        self.torch, self.cupy = torch, cupy
        if lib == "scitensor":
            self.tstream = torch.cuda.ExternalStream(cupy.cuda.get_current_stream().ptr)
        else:
            self.tstream = torch.cuda.current_stream()

    def record(self):
        if self.lib == "scitensor":
            e = self.cupy.cuda.Event()
            e.record(self.cupy.cuda.get_current_stream())
            return e
        e = self.torch.cuda.Event(enable_timing=True)
        e.record()
        return e

    def ms(self, a, b) -> float:
        if self.lib == "scitensor":
            return self.cupy.cuda.get_elapsed_time(a, b)
        return a.elapsed_time(b)

    def sleep(self, ms: float) -> None:
        with self.torch.cuda.stream(self.tstream):
            self.torch.cuda._sleep(int(ms * self.cycles_per_ms))

    def run(self, step, warmup: int, reps: int) -> dict:
        for i in range(warmup):
            step(i)
        self.record().synchronize()
        eager, host = [], []
        for i in range(reps):
            t0 = time.perf_counter()
            a = self.record()
            step(i)
            b = self.record()
            host.append(time.perf_counter() - t0)
            b.synchronize()
            eager.append(self.ms(a, b))
        # queue every step behind a sleep long enough to cover enqueuing them all
        self.sleep(1.0 + 1.5e3 * sum(host))
        evs = [self.record()]
        for i in range(reps):
            step(i)
            evs.append(self.record())
        evs[-1].synchronize()
        device = [self.ms(evs[i], evs[i + 1]) for i in range(reps)]
        return {"device_ms": statistics.median(device), "eager_ms": statistics.median(eager),
                "device_ms_min": min(device), "host_ms": 1e3 * statistics.median(host)}


def calibrate_sleep() -> float:
    """GPU clock cycles per millisecond of ``torch.cuda._sleep``."""
    return sleep_cycles_per_ms()


# ---- the steps -----------------------------------------------------------------------------
def make_inputs(op, mode, rows, cols, dtype_name, sets, seed=0):
    """Host arrays rounded to the dtype: x, g (the cotangent, when the step has a backward
    that takes one), labels per set; weight and bias."""
    import ml_dtypes

    np_dt = np.float32 if dtype_name == "float32" else ml_dtypes.bfloat16
    r = np.random.default_rng(seed)
    out = []
    for _ in range(sets):
        x = r.standard_normal((rows, cols), dtype=np.float32)
        if op in ("softmax", "log_softmax", "cross_entropy"):
            x *= 3.0
        needs_g = mode != "fwd" and op != "cross_entropy"
        g = r.standard_normal((rows, cols), dtype=np.float32).astype(np_dt) if needs_g else None
        labels = r.integers(0, cols, rows)
        out.append({"x": x.astype(np_dt), "g": g, "labels": labels})
    params = {"w": r.uniform(0.5, 1.5, cols).astype(np_dt),
              "b": r.standard_normal(cols).astype(np.float32).astype(np_dt)}
    return out, params


def scitensor_step(op, mode, sets, params, device="cuda"):
    dev = st.Device(device)
    xs = [st.tensor(s["x"], device=dev, requires_grad=mode != "fwd") for s in sets]
    gs = [None if s["g"] is None else st.tensor(s["g"], device=dev) for s in sets]
    ls = [st.tensor(s["labels"], device=dev) for s in sets]
    w = st.tensor(params["w"], device=dev, requires_grad=mode != "fwd")
    b = st.tensor(params["b"], device=dev, requires_grad=mode != "fwd")
    n = xs[0].shape[-1]
    fns = {
        "layer_norm": lambda x, j: layer_norm(x, n, w, b),
        "rms_norm": lambda x, j: rms_norm(x, n, w),
        "softmax": lambda x, j: st.softmax(x, axis=-1),
        "log_softmax": lambda x, j: st.log_softmax(x, axis=-1),
        "cross_entropy": lambda x, j: cross_entropy(x, ls[j]),
    }
    return _step(fns[op], mode, xs, gs, (w, b), op, no_grad=st.no_grad)


def torch_step(op, mode, sets, params, device="cuda"):
    import torch
    import torch.nn.functional as TF

    def t(a):
        return torch.from_numpy(np.asarray(a, np.float32)).to(device).to(
            torch.bfloat16 if a.dtype.itemsize == 2 else torch.float32)

    xs = [t(s["x"]).requires_grad_(mode != "fwd") for s in sets]
    gs = [None if s["g"] is None else t(s["g"]) for s in sets]
    ls = [torch.from_numpy(s["labels"]).to(device) for s in sets]
    w, b = (t(params[k]).requires_grad_(mode != "fwd") for k in ("w", "b"))
    n = xs[0].shape[-1]
    fns = {
        "layer_norm": lambda x, j: TF.layer_norm(x, (n,), w, b),
        "rms_norm": lambda x, j: TF.rms_norm(x, (n,), w, eps=1e-6),
        "softmax": lambda x, j: torch.softmax(x, -1),
        "log_softmax": lambda x, j: torch.log_softmax(x, -1),
        "cross_entropy": lambda x, j: TF.cross_entropy(x, ls[j]),
    }
    return _step(fns[op], mode, xs, gs, (w, b), op, no_grad=torch.no_grad)


def _step(fn, mode, xs, gs, params, op, no_grad):
    """``step(i)`` running forward (and backward) on input set ``i % len(xs)``; ``outputs()``
    returns the first set's results as float32 host arrays for the error check."""
    is_loss = op == "cross_entropy"

    def step(i):
        j = i % len(xs)
        if mode == "fwd":
            with no_grad():
                return fn(xs[j], j)
        x = xs[j]
        x.grad = None
        for p in params:
            p.grad = None
        y = fn(x, j)
        if is_loss:
            y.backward()
        else:
            y.backward(gs[j])
        return y

    def outputs():
        y = step(0)
        res = [y]
        if mode != "fwd":
            res.append(xs[0].grad)
            if op in ("layer_norm", "rms_norm"):
                res += [p.grad for p in params if p.grad is not None]
        return [_host(r) for r in res]

    return step, outputs


def _host(t) -> np.ndarray:
    if isinstance(t, st.Tensor):
        return t.astype(st.float32).numpy()
    return t.detach().float().cpu().numpy()  # torch


def max_err(ours, ref) -> float:
    errs = [float(np.max(np.abs(a.astype(np.float64) - b)) / max(np.max(np.abs(b)), 1e-30))
            for a, b in zip(ours, ref)]
    return max(errs) if errs else float("nan")


# ---- driver -----------------------------------------------------------------------------------
def run_case(op, mode, rows, cols, dname, args, cycles_per_ms):
    dtype_name, itemsize = DTYPES[dname]
    nbytes = floor_bytes(op, mode, rows, cols, itemsize)
    per_set = rows * cols * itemsize * (2 if mode == "fwd" else 4)
    sets = 1 if per_set >= 4 * L2_BYTES else min(16, math.ceil(4 * L2_BYTES / per_set))
    inputs, params = make_inputs(op, mode, rows, cols, dtype_name, sets)
    row = {"op": op, "mode": mode, "shape": [rows, cols], "dtype": dname,
           "floor_bytes": nbytes, "input_sets": sets}
    step, outputs = scitensor_step(op, mode, inputs, params)
    row["scitensor"] = Timer("scitensor", cycles_per_ms).run(step, args.warmup, args.reps)
    ours = outputs()
    del step, outputs
    try:
        tstep, toutputs = torch_step(op, mode, inputs, params)
        row["torch"] = Timer("torch", cycles_per_ms).run(tstep, args.warmup, args.reps)
        row["max_err"] = max_err(ours, toutputs())
        row["speedup"] = row["torch"]["device_ms"] / row["scitensor"]["device_ms"]
        row["speedup_eager"] = row["torch"]["eager_ms"] / row["scitensor"]["eager_ms"]
    except Exception as e:  # report, keep benchmarking
        row["torch_error"] = f"{type(e).__name__}: {e}"
    for lib in ("scitensor", "torch"):
        if lib in row:
            gbs = nbytes / (row[lib]["device_ms"] * 1e-3) / 1e9
            row[lib]["GBps"] = gbs
            row[lib]["ceiling_frac"] = gbs / COPY_CEILING_GBS
    return row


def markdown(rows, env) -> str:
    lines = [f"# GPU norm / softmax / cross-entropy — {env['gpu']}", "",
             f"torch {env['torch']}, cupy {env['cupy']}, scitensor {env['scitensor']}; "
             f"device time with a pre-filled queue; GB/s against the byte floor; copy ceiling "
             f"{COPY_CEILING_GBS:.0f} GB/s.", "",
             "| op | mode | shape | dtype | ours ms | torch ms | speedup | ours GB/s (% ceil) | "
             "torch GB/s | ours eager ms | torch eager ms | max err |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s, t = r["scitensor"], r.get("torch", {})
        lines.append(
            f"| {r['op']} | {r['mode']} | {r['shape'][0]}×{r['shape'][1]} | {r['dtype']} | "
            f"{s['device_ms']:.3f} | {t.get('device_ms', float('nan')):.3f} | "
            f"{r.get('speedup', float('nan')):.2f} | {s['GBps']:.0f} "
            f"({100 * s['ceiling_frac']:.0f}%) | {t.get('GBps', float('nan')):.0f} | "
            f"{s['eager_ms']:.3f} | {t.get('eager_ms', float('nan')):.3f} | "
            f"{r.get('max_err', float('nan')):.1e} |")
    return "\n".join(lines) + "\n"


def dry_run(dtypes) -> int:
    """Every case's steps once on the CPU at small shapes (checks this script, not speed)."""
    worst = 0.0
    for op, mode, _, c in CASES:
        for dname in dtypes:
            inputs, params = make_inputs(op, mode, 16, min(c, 300), DTYPES[dname][0], 2)
            ours = scitensor_step(op, mode, inputs, params, "cpu")[1]()
            ref = torch_step(op, mode, inputs, params, "cpu")[1]()
            err = max_err(ours, ref)
            worst = max(worst, err if dname == "fp32" else 0.0)
            print(f"dry run {op:14s} {mode:8s} {dname}: {len(ours)} outputs, max err {err:.1e}")
    return 0 if worst < 1e-4 else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder for the JSON and Markdown results")
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--only", default="", help="comma-separated ops to run (default: all)")
    ap.add_argument("--dry-run", action="store_true",
                    help="run every step once on the CPU at small shapes and exit")
    args = ap.parse_args(argv)
    if args.dry_run:
        return dry_run(args.dtypes.split(","))
    import cupy
    import torch

    dev = st.Device("cuda")
    dev.backend.synchronize()  # creates the backend (and makes its stream current)
    env = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
           "cupy": cupy.__version__, "scitensor": st.__version__,
           "python": platform.python_version()}
    cycles_per_ms = calibrate_sleep()
    only = {s for s in args.only.split(",") if s}
    rows = []
    for op, mode, r, c in CASES:
        if only and op not in only:
            continue
        for dname in args.dtypes.split(","):
            row = run_case(op, mode, r, c, dname, args, cycles_per_ms)
            rows.append(row)
            s, t = row["scitensor"], row.get("torch", {})
            print(f"{op:14s} {mode:8s} {r:6d}x{c:<6d} {dname}  ours {s['device_ms']:.3f} ms "
                  f"({s['GBps']:.0f} GB/s)  torch {t.get('device_ms', float('nan')):.3f} ms  "
                  f"x{row.get('speedup', float('nan')):.2f}  err "
                  f"{row.get('max_err', float('nan')):.1e}", flush=True)
            torch.cuda.empty_cache()
            dev.backend.empty_cache()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_norm_softmax.json").write_text(json.dumps({"env": env, "rows": rows}, indent=1))
    md = markdown(rows, env)
    (out / "gpu_norm_softmax.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
