"""CPU CNN training step (issue 8 §5), scitensor and PyTorch side by side in one process.

The model: three conv3x3(bias=False)-batchnorm-relu blocks with 32/64/128 channels, 2x2 max
pooling after the first two, global average pooling, a dense head to 10 classes; batch 256 of
3x32x32 random images with random labels; cross-entropy; SGD with momentum 0.9. Both models
start from the same weights (PyTorch's, copied), so the first losses must agree.

Timing alternates rounds of scitensor and PyTorch steps (other processes on a small machine
then disturb both alike) and reports the median wall-clock step time of each, and the median
CPU time the process used per step (all threads; less sensitive to a busy machine, and with
``OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1`` a measure of the work each library does).
Target: scitensor within 2x of PyTorch.

Run: ``python -m benchmarks.cpu_conv [--out DIR] [--steps 8] [--rounds 3]``; writes
``DIR/cpu_conv.json`` and ``DIR/cpu_conv.md`` when ``--out`` is given (the part of an existing
``cpu_conv.md`` below the line ``<!-- notes -->`` is kept: measurements written by hand).
``--breakdown`` instead times scitensor's CPU backend primitives inside a few steps (wall ms
per step and primitive, with calls per step), the profile that guides the CPU work.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

import scitensor as st
from scitensor import nn, optim
from scitensor.nn import functional as F
from scitensor.nn.conv import Conv2d
from scitensor.nn.normalization import BatchNorm2d
from scitensor.nn.pooling import AdaptiveAvgPool2d, MaxPool2d

NOTES_MARK = "<!-- notes -->"
CHANNELS = (32, 64, 128)
BATCH, CLASSES, LR, MOMENTUM = 256, 10, 0.05, 0.9


def scitensor_model():
    layers, c_in = [], 3
    for i, c in enumerate(CHANNELS):
        layers += [Conv2d(c_in, c, 3, padding=1, bias=False), BatchNorm2d(c), nn.ReLU()]
        if i < len(CHANNELS) - 1:
            layers.append(MaxPool2d(2))
        c_in = c
    layers += [AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dense(c_in, CLASSES)]
    return nn.Sequential(*layers)


def torch_model():
    import torch

    layers, c_in = [], 3
    for i, c in enumerate(CHANNELS):
        layers += [torch.nn.Conv2d(c_in, c, 3, padding=1, bias=False),
                   torch.nn.BatchNorm2d(c), torch.nn.ReLU()]
        if i < len(CHANNELS) - 1:
            layers.append(torch.nn.MaxPool2d(2))
        c_in = c
    layers += [torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(c_in, CLASSES)]
    return torch.nn.Sequential(*layers)


def copy_weights(src, dst) -> None:
    """PyTorch parameters -> scitensor's, in order (dense weights transposed)."""
    state = {}
    for (name, _), q in zip(dst.named_parameters(), src.parameters()):
        arr = q.detach().numpy()
        state[name] = arr.T.copy() if arr.ndim == 2 else arr
    dst.load_state_dict(state, strict=False)


def make_steps(data):
    x_np, y_np = data
    st.manual_seed(0)
    ours = scitensor_model()
    out = {"scitensor": None, "torch": None, "first_loss": {}}
    try:
        import torch

        torch.manual_seed(0)
        ref = torch_model()
        copy_weights(ref, ours)
        topt = torch.optim.SGD(ref.parameters(), lr=LR, momentum=MOMENTUM)
        tx, ty = torch.from_numpy(x_np), torch.from_numpy(y_np)

        def torch_step():
            loss = torch.nn.functional.cross_entropy(ref(tx), ty)
            topt.zero_grad()
            loss.backward()
            topt.step()
            return loss.item()

        out["torch"] = torch_step
    except ImportError:
        pass
    opt = optim.SGD(ours.parameters(), lr=LR, momentum=MOMENTUM)
    sx, sy = st.tensor(x_np), st.tensor(y_np)

    def scitensor_step():
        loss = F.cross_entropy(ours(sx), sy)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    out["scitensor"] = scitensor_step
    return out


def breakdown(step, steps: int = 3) -> dict:
    """Wall milliseconds per step spent in each CPU backend primitive (outermost calls only)
    over ``steps`` calls of ``step``, with the calls per step: ``{name: (ms, calls)}``."""
    from scitensor.backends.cpu import CpuBackend

    spent, calls, depth = {}, {}, [0]
    originals = {}

    def timed(name, fn):
        def wrapper(*a, **k):
            depth[0] += 1
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                depth[0] -= 1
                if depth[0] == 0:
                    spent[name] = spent.get(name, 0.0) + time.perf_counter() - t0
                    calls[name] = calls.get(name, 0) + 1
        return wrapper

    for klass in CpuBackend.__mro__:
        for name, fn in vars(klass).items():
            if name.startswith("_") or name in originals or not callable(fn) \
                    or isinstance(fn, staticmethod | classmethod | type):
                continue
            originals[name] = getattr(CpuBackend, name)
    own = {name: vars(CpuBackend)[name] for name in originals if name in vars(CpuBackend)}
    try:
        for name, fn in originals.items():
            setattr(CpuBackend, name, timed(name, fn))
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        total = (time.perf_counter() - t0) / steps * 1e3
    finally:  # put the class back as it was
        for name in originals:
            if name in own:
                setattr(CpuBackend, name, own[name])
            else:
                delattr(CpuBackend, name)
    rows = {n: (spent[n] / steps * 1e3, calls[n] // steps) for n in spent}
    rows["(step total)"] = (total, 1)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--steps", type=int, default=8, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--breakdown", action="store_true",
                    help="time scitensor's backend primitives per step instead")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    data = (rng.standard_normal((BATCH, 3, 32, 32), dtype=np.float32),
            rng.integers(0, CLASSES, BATCH).astype(np.int64))
    steps = make_steps(data)
    if args.breakdown:
        steps["scitensor"]()  # warm-up
        rows = breakdown(steps["scitensor"], max(1, args.steps))
        print("| primitive | ms per step | calls per step |\n|---|---|---|")
        for name, (ms, n) in sorted(rows.items(), key=lambda kv: -kv[1][0]):
            if ms >= 0.05:
                print(f"| {name} | {ms:.1f} | {n} |")
        return 0
    names = [n for n in ("scitensor", "torch") if steps[n] is not None]
    first = {n: steps[n]() for n in names}  # also the warm-up
    for n in names:
        steps[n]()
    times = {n: [] for n in names}
    cpu = {n: [] for n in names}
    for _ in range(args.rounds):
        for n in names:
            for _ in range(args.steps):
                t0, c0 = time.perf_counter(), time.process_time()
                steps[n]()
                times[n].append(time.perf_counter() - t0)
                cpu[n].append(time.process_time() - c0)
    med = {n: statistics.median(times[n]) * 1e3 for n in names}
    med_cpu = {n: statistics.median(cpu[n]) * 1e3 for n in names}
    result = {"meta": {"python": platform.python_version(), "numpy": np.__version__,
                       "cpus": os.cpu_count(), "machine": platform.machine(),
                       "scitensor": st.__version__},
              "step_ms": med, "step_cpu_ms": med_cpu, "first_loss": first,
              "load_average": os.getloadavg()}
    if "torch" in med:
        import torch

        result["meta"]["torch"] = torch.__version__
        result["meta"]["torch_threads"] = torch.get_num_threads()
        result["slowdown_vs_torch"] = med["scitensor"] / med["torch"]
        result["cpu_time_ratio_vs_torch"] = med_cpu["scitensor"] / med_cpu["torch"]
    lines = ["# CPU CNN training step (batch 256, 3x32x32, convs 32/64/128, SGD momentum)", "",
             f"load average {result['load_average'][0]:.1f} on {os.cpu_count()} CPUs", "",
             "| library | median step ms (wall) | median CPU ms | first loss |",
             "|---|---|---|---|"]
    lines += [f"| {n} | {med[n]:.1f} | {med_cpu[n]:.1f} | {first[n]:.4f} |" for n in names]
    if "slowdown_vs_torch" in result:
        lines += ["", f"scitensor / PyTorch: {result['slowdown_vs_torch']:.2f}x wall, "
                  f"{result['cpu_time_ratio_vs_torch']:.2f}x CPU time (target <= 2x)"]
    print("\n".join(lines))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "cpu_conv.json").write_text(json.dumps(result, indent=2))
        md = args.out / "cpu_conv.md"
        notes = ""
        if md.exists() and NOTES_MARK in md.read_text():
            notes = "\n" + NOTES_MARK + md.read_text().split(NOTES_MARK, 1)[1]
        md.write_text("\n".join(lines) + "\n" + notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
