"""Where does an eager training step spend its host time, and does it wait for the GPU?

Runs the CNN step of ``benchmarks/gpu_cnn.py`` or the GPT step of ``benchmarks/gpu_gpt.py``
on CUDA and reports three things:

1. **Host waits**: one step is queued behind a long GPU spin and traced with
   ``sys.setprofile``; any single call during which the host stood still for longer than
   ``--wait-ms`` (it was waiting for the spin to end, i.e. it synchronised with the device)
   is printed with its Python stack. An eager step should have none: a wait inside the step
   serialises host and device.
2. **Phases**: host milliseconds of zero_grad / forward+loss / backward / optimizer step,
   medians over ``--steps`` steps queued behind a spin (so no phase waits for the GPU).
3. **cProfile** of ``--steps`` steps: the top functions by own time and by cumulative time.

Usage (GPU machine)::

    python scripts/profile_step.py --model cnn|gpt [--steps 30] [--out DIR]

Writes ``DIR/profile_<model>.txt`` when ``--out`` is given, and prints the same report.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import scitensor as st
from scitensor import optim
from scitensor.nn import functional as F


def build(model_name: str, device: str = "cuda"):
    """``(phases, data, device)``: the step split into named phases, and rotating inputs."""
    dev = st.Device(device)
    if model_name == "cnn":
        from benchmarks import gpu_cnn as b

        st.set_matmul_precision("tf32")
        st.manual_seed(0)
        model = b.scitensor_model().to(dev)
        opt = optim.SGD(model.parameters(), lr=b.LR, momentum=b.MOMENTUM)
        data = [(st.tensor(x, device=dev), st.tensor(y, device=dev))
                for x, y in b.make_batches()]

        def loss_of(x, y):
            return F.cross_entropy(model(x), y)
    else:
        from benchmarks import gpu_gpt as b

        c = b.Config() if device == "cuda" else b.SMOKE
        model = b.GPT(c).to(dev)
        opt = optim.AdamW(model.parameters(), lr=b.LR, betas=b.BETAS, eps=b.EPS,
                          weight_decay=b.WD)
        data = [(st.tensor(x, device=dev), st.tensor(y, device=dev))
                for x, y in b.make_batches(c)]

        def loss_of(x, y):
            return F.cross_entropy(model(x), y.reshape(-1))

    state = {}

    def zero_grad(x, y):
        opt.zero_grad()

    def forward(x, y):
        state["loss"] = loss_of(x, y)

    def backward(x, y):
        state["loss"].backward()

    def update(x, y):
        opt.step()

    return [("zero_grad", zero_grad), ("forward+loss", forward), ("backward", backward),
            ("optimizer", update)], data, dev


SPIN = [True]


def spin(ms: float) -> None:
    """Queue about ``ms`` milliseconds of GPU spinning on the library's stream (no-op on the
    CPU, where ``--device cpu`` only smoke-tests this script)."""
    if not SPIN[0]:
        return
    import cupy
    import torch
    from benchmarks.timing import sleep_cycles_per_ms

    stream = torch.cuda.ExternalStream(cupy.cuda.get_current_stream().ptr)
    with torch.cuda.stream(stream):
        torch.cuda._sleep(int(ms * sleep_cycles_per_ms()))


def find_waits(phases, data, wait_ms: float) -> list[str]:
    """Trace one step queued behind a 2 s spin; report calls the host stood still in."""
    stack: list[str] = []
    last = [time.perf_counter()]
    found: list[str] = []

    def prof(frame, event, arg):
        now = time.perf_counter()
        gap = (now - last[0]) * 1e3
        if gap > wait_ms:
            where = list(stack[-12:])
            found.append(f"host stood still {gap:.1f} ms at event {event!r} "
                         f"({getattr(arg, '__qualname__', '') or frame.f_code.co_name}); "
                         "stack (innermost last):\n    " + "\n    ".join(where))
        if event == "call":
            stack.append(f"{frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}")
        elif event == "return" and stack:
            stack.pop()
        elif event == "c_call":
            stack.append(f"{frame.f_code.co_filename}:{frame.f_lineno} "
                         f"-> C {getattr(arg, '__qualname__', arg)}")
        elif event in ("c_return", "c_exception") and stack:
            stack.pop()
        last[0] = time.perf_counter()

    spin(2000.0)
    x, y = data[0]
    last[0] = time.perf_counter()  # after the spin's own calibration (which syncs)
    sys.setprofile(prof)
    try:
        for _, fn in phases:
            fn(x, y)
    finally:
        sys.setprofile(None)
    return found


def phase_times(phases, data, steps: int, be) -> dict:
    per = {name: [] for name, _ in phases}
    per["whole step"] = []
    for i in range(steps):
        spin(200.0)
        x, y = data[i % len(data)]
        t_start = time.perf_counter()
        for name, fn in phases:
            t0 = time.perf_counter()
            fn(x, y)
            per[name].append((time.perf_counter() - t0) * 1e3)
        per["whole step"].append((time.perf_counter() - t_start) * 1e3)
        be.synchronize()
    return {k: statistics.median(v) for k, v in per.items()}


def unqueued_times(phases, data, steps: int, be) -> tuple[float, float]:
    """``(host ms, wall ms)`` of whole steps run as the benchmark does (no spin ahead; a sync
    after each step): the host's enqueue time and the time until the device finished."""
    host, wall = [], []
    for i in range(steps):
        x, y = data[i % len(data)]
        t0 = time.perf_counter()
        for _, fn in phases:
            fn(x, y)
        t1 = time.perf_counter()
        be.synchronize()
        host.append((t1 - t0) * 1e3)
        wall.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(host), statistics.median(wall)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=["cnn", "gpt"], default="cnn")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--wait-ms", type=float, default=20.0)
    p.add_argument("--out", default=None)
    p.add_argument("--device", default="cuda", help="cpu: a local smoke test (no spin)")
    args = p.parse_args(argv)

    SPIN[0] = args.device != "cpu"
    phases, data, dev = build(args.model, args.device)
    be = dev.backend
    for i in range(5):  # warm-up: kernels compiled, autotuning done, pools grown
        for _, fn in phases:
            fn(*data[i % len(data)])
    be.synchronize()

    lines = [f"# host profile of the {args.model} eager step ({args.steps} steps)"]
    waits = find_waits(phases, data, args.wait_ms)
    be.synchronize()
    lines.append(f"\n## host waits longer than {args.wait_ms} ms inside one step: {len(waits)}")
    lines += waits
    lines.append("\n## host ms per phase (median, queued behind a spin)")
    for k, v in phase_times(phases, data, args.steps, be).items():
        lines.append(f"  {k:14s} {v:8.3f}")

    host, wall = unqueued_times(phases, data, args.steps, be)
    lines.append(f"\n## whole steps as the benchmark runs them (sync after each): host "
                 f"{host:.3f} ms to enqueue, {wall:.3f} ms until the device finished")

    prof = cProfile.Profile()
    prof.enable()
    for i in range(args.steps):
        for _, fn in phases:
            fn(*data[i % len(data)])
    prof.disable()
    be.synchronize()
    for key in ("tottime", "cumulative"):
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats(key).print_stats(45)
        lines.append(f"\n## cProfile by {key}\n" + s.getvalue())
    report = "\n".join(lines)
    print(report)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, f"profile_{args.model}.txt"), "w") as f:
            f.write(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
