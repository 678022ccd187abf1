"""Why does a benchmark's eager step take longer than the same step timed on its own?

Builds the GPT (or CNN) step exactly as ``benchmarks/gpu_gpt.py`` (``gpu_cnn.py``) does and
times it in one process several ways: the benchmark's ``event_ms`` (CUDA events around each
step, a sync after it), host enqueue time and wall time per step, the same with Python's
garbage collector off, and with PyTorch's model built first (as the benchmark's loss check
does). Python's garbage-collection time during each measurement is reported (``gc.callbacks``).

Usage (GPU machine): ``python scripts/step_timing_probe.py [--model gpt|cnn] [--reps 30]``
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


class GcClock:
    """Total seconds and count of garbage collections per generation while active."""

    def __init__(self):
        self.seconds = 0.0
        self.count = [0, 0, 0]
        self._t0 = None

    def __call__(self, phase, info):
        if phase == "start":
            self._t0 = time.perf_counter()
        elif self._t0 is not None:
            self.seconds += time.perf_counter() - self._t0
            self.count[info["generation"]] += 1

    def __enter__(self):
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc):
        gc.callbacks.remove(self)


def main(argv=None) -> int:
    import cupy
    from benchmarks.timing import event_ms

    import scitensor as st

    p = argparse.ArgumentParser()
    p.add_argument("--model", choices=["gpt", "cnn"], default="gpt")
    p.add_argument("--reps", type=int, default=30)
    args = p.parse_args(argv)
    dev = st.Device("cuda")
    if args.model == "gpt":
        from benchmarks import gpu_gpt as b

        c = b.Config()
        st.set_matmul_precision("highest")
        model, step = b.build_scitensor(c, dev)
        data = [(st.tensor(x, device=dev), st.tensor(y, device=dev))
                for x, y in b.make_batches(c, seed=1)]
    else:
        from benchmarks import gpu_cnn as b

        st.set_matmul_precision("tf32")
        st.manual_seed(0)
        model = b.scitensor_model().to(dev)
        step, _ = b.scitensor_step_fn(model, dev)
        data = [(st.tensor(x, device=dev), st.tensor(y, device=dev))
                for x, y in b.make_batches()]
    be = dev.backend

    def record():
        e = cupy.cuda.Event()
        e.record(cupy.cuda.get_current_stream())
        return e

    def run(i):
        step(*data[i % len(data)])

    def host_wall(reps):
        host, wall = [], []
        for i in range(reps):
            t0 = time.perf_counter()
            run(i)
            t1 = time.perf_counter()
            be.synchronize()
            host.append((t1 - t0) * 1e3)
            wall.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(host), statistics.median(wall), max(wall)

    def report(label):
        with GcClock() as clock:
            ev = event_ms(run, record, be.synchronize, 10, args.reps)
            h, w, wmax = host_wall(args.reps)
        print(f"{label:42s} event_ms {ev:7.3f} | host {h:7.3f} wall {w:7.3f} (max {wmax:7.3f})"
              f" | gc {clock.seconds * 1e3:7.1f} ms over both, collections {clock.count}",
              flush=True)

    report("as built")
    report("again")
    gc.disable()
    report("gc disabled")
    gc.enable()
    gc.collect()
    gc.freeze()
    report("gc.freeze() after a collect")
    gc.unfreeze()
    import torch  # noqa: F401  (the benchmark has PyTorch imported and a model built)

    if args.model == "gpt":
        b.build_torch(c, model, "cuda")
    report("PyTorch model built in the process")
    print(f"gc thresholds {gc.get_threshold()}, tracked objects {len(gc.get_objects())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
