"""GPU CNN training step (issue 8): scitensor eager and ``st.jit`` against PyTorch, one process.

The model (built identically in both libraries, from the same initial weights: PyTorch's,
copied over; scitensor's ``Dense`` weight is ``(in, out)``, PyTorch's ``Linear`` weight
transposed; conv weights are ``(out, in, kh, kw)`` in both): three blocks of conv 3x3
(padding 1, no bias) - batch norm - ReLU - 2x2 max pooling, with 32/64/128 channels, then
global average pooling, flatten and a dense head to 10 classes. Batch 256 of 3x32x32 random
images with random labels, cross-entropy, SGD with momentum 0.9. One step = forward, backward
and the update.

Precision: fp32 tensors. PyTorch runs its defaults (cuDNN convolutions may use TF32,
``torch.backends.cudnn.allow_tf32 = True``; its matmuls are exact fp32); scitensor runs
``st.set_matmul_precision("tf32")`` (convolutions and matmuls may use TF32), or exact fp32
with ``--fp32-precision highest``. Both first losses (same weights, same batch) are printed
and recorded to show the two models agree.

Timing: medians of CUDA-event timings of whole steps after warm-up (``benchmarks/timing.py``
``event_ms``: events around each step, so the host's enqueue cost counts, as a user sees it),
inputs rotated over two batches. The two eager steps are host-bound, and a shared machine's
host speed drifts by 10-30 % over seconds, so they are timed in alternating rounds
(``interleaved_event_ms``, 2 x reps steps each) rather than one after the other.
Rows: scitensor eager vs PyTorch eager (target: at most 1.2x
PyTorch's time, i.e. speed >= 1/1.2); scitensor ``st.jit`` (the step captured once as a CUDA
graph and replayed) vs PyTorch eager (target: at most 0.6x, speed >= 1/0.6); for reference,
``st.jit`` vs a PyTorch CUDA graph of the same step, and the eager steps' device time alone
(``queued_ms``: steps queued behind a GPU spin, so the host's enqueue cost is hidden), no
targets. The meta also records the host time to enqueue one eager step (device idle): with
the device time it says whether an eager gap is kernels or Python. Rates are the
convolutions' TFLOP/s (forward, weight gradients and the input gradients that are needed: none
for the first layer) against the design.md §6 TF32 (or fp32) GEMM ceiling.

Run: ``python -m benchmarks.gpu_cnn --out DIR [--quick] [--fp32-precision tf32|highest]``.
Writes ``DIR/gpu_cnn.json`` (``{"meta", "rows"}``) and ``DIR/gpu_cnn.md`` and prints the
table. Needs CuPy and PyTorch with CUDA; the module itself imports without either.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np

import scitensor as st
from scitensor import nn, optim
from scitensor.nn import functional as F

try:  # run as `python -m benchmarks.X` or as a script
    from .timing import cupy_stream_spin, event_ms, interleaved_event_ms, queued_ms, torch_spin
except ImportError:
    from timing import cupy_stream_spin, event_ms, interleaved_event_ms, queued_ms, torch_spin

CHANNELS = (32, 64, 128)
BATCH, IMAGE, CLASSES, LR, MOMENTUM = 256, 32, 10, 0.05, 0.9
ROTATE = 2
CASE = "CNN conv-BN-ReLU-maxpool x3 (32/64/128), batch 256 3x32x32, SGD momentum"
TORCH_ISSUE_MS = 2.89  # PyTorch 2.11 eager step on the H100, from the issue
TARGET_EAGER = 1 / 1.2  # eager step at most 1.2x PyTorch eager's time
TARGET_JIT = 1 / 0.6  # jit step at most 0.6x PyTorch eager's time
CEILING_TFLOPS = {"tf32": 384.0, "highest": 51.3}  # design.md §6


def scitensor_model() -> nn.Sequential:
    """The CNN in scitensor (random initial weights; see :func:`copy_weights`)."""
    layers, c_in = [], 3
    for c in CHANNELS:
        layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
                   nn.MaxPool2d(2)]
        c_in = c
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dense(c_in, CLASSES)]
    return nn.Sequential(*layers)


def torch_model():
    """The same CNN in PyTorch."""
    import torch

    layers, c_in = [], 3
    for c in CHANNELS:
        layers += [torch.nn.Conv2d(c_in, c, 3, padding=1, bias=False), torch.nn.BatchNorm2d(c),
                   torch.nn.ReLU(), torch.nn.MaxPool2d(2)]
        c_in = c
    layers += [torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
               torch.nn.Linear(c_in, CLASSES)]
    return torch.nn.Sequential(*layers)


def copy_weights(src, dst) -> None:
    """PyTorch parameters -> scitensor's, in order (on the host; dense weights transposed)."""
    names = [name for name, _ in dst.named_parameters()]
    params = list(src.parameters())
    if len(names) != len(params):
        raise ValueError(f"gpu_cnn: {len(names)} scitensor parameters but {len(params)} "
                         "PyTorch ones; the two models differ")
    state = {}
    for name, q in zip(names, params):
        arr = q.detach().cpu().numpy()
        state[name] = arr.T.copy() if arr.ndim == 2 else arr
    dst.load_state_dict(state, strict=False)


def conv_flops(batch: int = BATCH) -> float:
    """FLOPs of the convolutions in one step: forward, weight gradient, and the input gradient
    of every layer but the first (whose input needs none)."""
    total, c_in, hw = 0.0, 3, IMAGE
    for i, c in enumerate(CHANNELS):
        one = 2.0 * batch * c * hw * hw * c_in * 9
        total += one * (2 if i == 0 else 3)
        c_in, hw = c, hw // 2
    return total


def make_batches(batch: int = BATCH, k: int = ROTATE):
    """``k`` (images, labels) pairs of random host data."""
    rng = np.random.default_rng(0)
    return [(rng.standard_normal((batch, 3, IMAGE, IMAGE), dtype=np.float32),
             rng.integers(0, CLASSES, batch).astype(np.int64)) for _ in range(k)]


def scitensor_step_fn(model, device):
    """``(step, opt)``: one SGD-momentum training step on ``model`` (already on ``device``)."""
    opt = optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)

    def step(x, y):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    return step, opt


def host_ms(step, sync, reps) -> float:
    """Median wall milliseconds the host spends enqueuing one ``step(i)`` (the device is idle
    and the queue empty when each starts)."""
    times = []
    for i in range(reps):
        sync()
        t0 = time.perf_counter()
        step(i)
        times.append(1e3 * (time.perf_counter() - t0))
    sync()
    return statistics.median(times)


def bench_scitensor(src_torch, batches, warmup, reps, use_jit=True):
    """Eager and jit step times (ms) and the first loss, on CUDA."""
    import cupy

    dev = st.Device("cuda")
    st.manual_seed(0)
    model = scitensor_model()
    copy_weights(src_torch, model)
    model.to(dev)
    step, _ = scitensor_step_fn(model, dev)
    xs = [(st.tensor(x, device=dev), st.tensor(y, device=dev)) for x, y in batches]
    first_loss = step(*xs[0]).item()

    def record():
        e = cupy.cuda.Event()
        e.record(cupy.cuda.get_current_stream())
        return e

    sync = dev.backend.synchronize
    out = {"first_loss": first_loss,
           "eager": (lambda i: step(*xs[i % ROTATE]), record, sync),  # timed in main()
           "eager_device_ms": queued_ms(lambda i: step(*xs[i % ROTATE]), record,
                                        cupy_stream_spin(), warmup, reps),
           "host_ms": host_ms(lambda i: step(*xs[i % ROTATE]), sync, reps)}
    if use_jit:
        jstep = st.jit(step)
        try:
            out["jit_ms"] = event_ms(lambda i: jstep(*xs[i % ROTATE]), record, sync,
                                     warmup + 2, reps)
            out["jit_stats"] = dict(jstep.stats)
        except Exception as e:  # report, keep benchmarking
            out["jit_error"] = f"{type(e).__name__}: {e}"
    return out


def bench_torch(model, batches, warmup, reps, use_graph=True):
    """Eager and CUDA-graph step times (ms) and the first loss; ``model`` is on CUDA."""
    import torch

    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    txs = [(torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda()) for x, y in batches]

    def step(x, y, set_to_none=True):
        opt.zero_grad(set_to_none=set_to_none)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    first_loss = step(*txs[0]).item()

    def record():
        e = torch.cuda.Event(enable_timing=True)
        e.record()
        return e

    out = {"first_loss": first_loss,
           "eager": (lambda i: step(*txs[i % ROTATE]), record, torch.cuda.synchronize),
           "eager_device_ms": queued_ms(lambda i: step(*txs[i % ROTATE]), record,
                                        torch_spin(), warmup, reps),
           "host_ms": host_ms(lambda i: step(*txs[i % ROTATE]), torch.cuda.synchronize, reps)}
    if use_graph:
        try:
            sx, sy = txs[0][0].clone(), txs[0][1].clone()
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):
                    step(sx, sy, set_to_none=False)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                step(sx, sy, set_to_none=False)

            def replay(i):
                x, y = txs[i % ROTATE]
                sx.copy_(x)
                sy.copy_(y)
                graph.replay()

            out["graph_ms"] = event_ms(replay, record, torch.cuda.synchronize, warmup, reps)
        except Exception as e:  # optional row
            out["graph_error"] = f"{type(e).__name__}: {e}"
    return out


def _row(pass_, scitensor_ms, torch_ms, target, flops, precision, **extra):
    speed = torch_ms / scitensor_ms
    return {"benchmark": "cnn", "case": CASE, "dtype": "fp32", "pass": pass_,
            "scitensor_ms": scitensor_ms, "torch_ms": torch_ms, "speed": speed,
            "unit": "TFLOP/s", "scitensor_rate": flops / scitensor_ms / 1e9,
            "torch_rate": flops / torch_ms / 1e9, "ceiling": CEILING_TFLOPS[precision],
            "target": target, "met": None if target is None else speed >= target,
            "precision": precision, **extra}


def _markdown(meta, rows) -> str:
    lines = [f"# CNN training step on {meta['gpu']}", "",
             f"{CASE}. torch {meta['torch']} (cuDNN {meta['cudnn']}, TF32 convolutions "
             f"allowed: its default), CuPy {meta['cupy']}, scitensor {meta['scitensor']} at "
             f"matmul precision '{meta['fp32_precision']}'; median of {meta['reps']} CUDA-event "
             f"timings of whole steps ({2 * meta['reps']} for the eager steps, in alternating "
             f"rounds). First loss: scitensor {meta['first_loss']['scitensor']:.6f}"
             f", PyTorch {meta['first_loss']['torch']:.6f}. Host time to enqueue one eager "
             f"step: scitensor {meta['host_ms']['scitensor']:.3f} ms, PyTorch "
             f"{meta['host_ms']['torch']:.3f} ms. Speed = torch ms / scitensor ms; "
             "rates: the convolutions' TFLOP/s.", "",
             "| pass | scitensor ms | torch ms | speed | target | met | ours TFLOP/s "
             "| torch TFLOP/s |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        target = "—" if r["target"] is None else f">= {r['target']:.2f}"
        met = "—" if r["met"] is None else ("yes" if r["met"] else "**no**")
        lines.append(f"| {r['pass']} | {r['scitensor_ms']:.3f} | {r['torch_ms']:.3f} | "
                     f"{r['speed']:.2f} | {target} | {met} | {r['scitensor_rate']:.1f} | "
                     f"{r['torch_rate']:.1f} |")
    for key in ("jit_error", "graph_error"):
        if meta.get(key):
            lines.append(f"\n{key}: {meta[key]}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--quick", action="store_true", help="few repetitions")
    ap.add_argument("--fp32-precision", default="tf32", choices=("tf32", "highest"))
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--no-graph", action="store_true", help="skip the PyTorch CUDA graph")
    args = ap.parse_args(argv)
    if args.quick:
        args.warmup, args.reps = min(args.warmup, 3), min(args.reps, 5)
    try:
        import cupy
        import torch
    except ImportError as e:
        print(f"gpu_cnn: needs CuPy and PyTorch with CUDA ({e})")
        return 1
    if not torch.cuda.is_available() or not st.cuda_status()[0]:
        print("gpu_cnn: needs a CUDA GPU for both PyTorch and scitensor:",
              st.cuda_status()[1])
        return 1
    st.set_matmul_precision(args.fp32_precision)
    torch.backends.cudnn.allow_tf32 = True  # PyTorch's default, stated explicitly
    batches = make_batches()
    torch.manual_seed(0)
    tmodel = torch_model()  # initial weights on the host, copied to scitensor's model
    ours = bench_scitensor(tmodel, batches, args.warmup, args.reps)
    theirs = bench_torch(tmodel.cuda(), batches, args.warmup, args.reps, not args.no_graph)
    # the eager steps are host-bound: timed in alternating rounds (timing.interleaved_event_ms)
    eager = interleaved_event_ms({"scitensor": ours.pop("eager"), "torch": theirs.pop("eager")},
                                 args.warmup, 2 * args.reps)
    ours["eager_ms"], theirs["eager_ms"] = eager["scitensor"], eager["torch"]
    props = cupy.cuda.runtime.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    meta = {"gpu": name, "torch": torch.__version__, "cudnn": torch.backends.cudnn.version(),
            "cupy": cupy.__version__, "scitensor": st.__version__,
            "python": platform.python_version(), "fp32_precision": args.fp32_precision,
            "torch_fp32": "TF32 convolutions allowed (torch.backends.cudnn.allow_tf32 = True), "
                          "fp32 matmuls (torch.backends.cuda.matmul.allow_tf32 = "
                          f"{torch.backends.cuda.matmul.allow_tf32})",
            "first_loss": {"scitensor": ours["first_loss"], "torch": theirs["first_loss"]},
            "torch_issue_eager_ms": TORCH_ISSUE_MS, "warmup": args.warmup, "reps": args.reps,
            "quick": args.quick, "jit_stats": ours.get("jit_stats"),
            "host_ms": {"scitensor": ours["host_ms"], "torch": theirs["host_ms"]},
            "jit_error": ours.get("jit_error"), "graph_error": theirs.get("graph_error")}
    flops = conv_flops()
    prec = args.fp32_precision
    rows = [_row("step (eager vs eager)", ours["eager_ms"], theirs["eager_ms"], TARGET_EAGER,
                 flops, prec)]
    if "jit_ms" in ours:
        rows.append(_row("step (st.jit vs torch eager)", ours["jit_ms"], theirs["eager_ms"],
                         TARGET_JIT, flops, prec))
        if "graph_ms" in theirs:
            rows.append(_row("step (st.jit vs torch CUDA graph)", ours["jit_ms"],
                             theirs["graph_ms"], None, flops, prec))
    rows.append(_row("eager step device time (host hidden)", ours["eager_device_ms"],
                     theirs["eager_device_ms"], None, flops, prec))
    print(f"first loss: scitensor {ours['first_loss']:.6f}  PyTorch {theirs['first_loss']:.6f}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_cnn.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    text = _markdown(meta, rows)
    (args.out / "gpu_cnn.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
