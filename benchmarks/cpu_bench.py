"""CPU benchmarks side by side with PyTorch (issue 2 §10), in one process on the same inputs.

- MLP 784→512→512→10 training step (batch 128, Adam, float32): forward, backward, update;
- Python overhead of a tiny elementwise op (4 elements), forward without grad;
- forward+backward of a tiny op.

Run: ``python -m benchmarks.cpu_bench [--out benchmarks/results]``. Prints a table and writes
``cpu_bench.json`` and ``cpu_bench.md``. PyTorch is optional (``pip install torch``).
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


def _median_time(fn, warmup: int, reps: int, inner: int = 1) -> float:
    """Median seconds per call over ``reps`` samples of ``inner`` calls each."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - t0) / inner)
    return statistics.median(samples)


def bench_scitensor(batches):
    st.manual_seed(0)
    model = nn.Sequential(nn.Dense(784, 512), nn.ReLU(), nn.Dense(512, 512), nn.ReLU(),
                          nn.Dense(512, 10))
    opt = optim.Adam(model.parameters(), lr=1e-3)
    data = [(st.tensor(x), st.tensor(y)) for x, y in batches]
    it = iter(range(1 << 30))

    def step():
        x, y = data[next(it) % len(data)]
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    a, b = st.ones(4), st.ones(4)
    ag = st.ones(4, requires_grad=True)

    def tiny_fb():
        (ag * ag).sum().backward()

    return {
        "mlp_step_s": _median_time(step, 5, 30),
        "tiny_op_s": _median_time(lambda: a + b, 1000, 20, 2000),
        "tiny_fwd_bwd_s": _median_time(tiny_fb, 200, 20, 500),
    }


def bench_torch(batches):
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(784, 512), torch.nn.ReLU(),
                                torch.nn.Linear(512, 512), torch.nn.ReLU(),
                                torch.nn.Linear(512, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    data = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in batches]
    it = iter(range(1 << 30))

    def step():
        x, y = data[next(it) % len(data)]
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    a, b = torch.ones(4), torch.ones(4)
    ag = torch.ones(4, requires_grad=True)

    def tiny_fb():
        (ag * ag).sum().backward()

    return {
        "mlp_step_s": _median_time(step, 5, 30),
        "tiny_op_s": _median_time(lambda: a + b, 1000, 20, 2000),
        "tiny_fwd_bwd_s": _median_time(tiny_fb, 200, 20, 500),
        "version": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    batches = [(rng.standard_normal((128, 784), dtype=np.float32),
                rng.integers(0, 10, 128).astype(np.int64)) for _ in range(8)]
    ours = bench_scitensor(batches)
    try:
        theirs = bench_torch(batches)
    except ImportError:
        theirs = None
    rows = [("MLP 784-512-512-10 train step, batch 128, Adam", "mlp_step_s", 1e3, "ms", 1.5),
            ("tiny elementwise op (4 floats), no grad", "tiny_op_s", 1e6, "µs", 2.0),
            ("tiny op forward+backward", "tiny_fwd_bwd_s", 1e6, "µs", None)]
    result = {
        "machine": {"cpu": platform.processor() or platform.machine(),
                    "cores": os.cpu_count(), "python": platform.python_version(),
                    "numpy": np.__version__, "scitensor": st.__version__,
                    "torch": theirs and theirs["version"],
                    "torch_threads": theirs and theirs["threads"]},
        "results": [],
    }
    lines = ["| benchmark | scitensor | PyTorch | ratio (ours/torch) | target |",
             "|---|---|---|---|---|"]
    for label, key, scale, unit, target in rows:
        o = ours[key] * scale
        t = theirs[key] * scale if theirs else None
        ratio = o / t if t else None
        result["results"].append({"name": label, "unit": unit, "scitensor": o, "torch": t,
                                  "ratio": ratio, "target_ratio": target})
        lines.append(f"| {label} | {o:.2f} {unit} | "
                     f"{f'{t:.2f} {unit}' if t else 'n/a'} | "
                     f"{f'{ratio:.2f}' if ratio else 'n/a'} | "
                     f"{f'≤ {target}' if target else '—'} |")
    m = result["machine"]
    header = (f"CPU: {m['cpu']} ({m['cores']} cores), Python {m['python']}, NumPy {m['numpy']}, "
              f"scitensor {m['scitensor']}, PyTorch {m['torch']} ({m['torch_threads']} threads)")
    table = header + "\n\n" + "\n".join(lines)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cpu_bench.json").write_text(json.dumps(result, indent=2))
    (out / "cpu_bench.md").write_text("# CPU benchmarks\n\n" + table + "\n")


if __name__ == "__main__":
    main()
