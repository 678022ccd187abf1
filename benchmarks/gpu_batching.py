"""Batched vs unbatched on the GPU (issue 4), side by side with PyTorch in one process.

1. A chain of 1,000 tiny elementwise ops: sync-every-op, asynchronous eager, ``st.jit``
   replay; PyTorch eager and a PyTorch CUDA graph. Reported per op.
2. MLP 784→512→512→10, batch 128, Adam, one whole training step (forward, backward, update):
   scitensor eager and jit; PyTorch eager and CUDA graph. scitensor's hidden layers are
   ``nn.Dense(..., activation="relu")`` (the fused cuBLASLt-epilogue linear op); PyTorch's
   are ``nn.Linear`` + ``nn.ReLU``, its idiomatic model.
3. The same MLP at batch 1024, hidden 2048.

Wall-clock per call after warm-up, with the device synchronised around each timed block (the
host cost is what batching removes, so host time is the measure here), median of repeats.

Run: ``python -m benchmarks.gpu_batching --out DIR``; writes ``gpu_batching.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

import scitensor as st
from scitensor import nn, optim
from scitensor.nn import functional as F

CHAIN = 1000


def _timed(fn, sync, reps=7, inner=5, warmup=3):
    for _ in range(warmup):
        fn()
    sync()
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        sync()
        samples.append((time.perf_counter() - t0) / inner)
    return statistics.median(samples)


def bench_chain(dev):
    x0 = st.randn(32, 32, device=dev)

    def chain(x):
        for _ in range(CHAIN // 2):
            x = x * 1.0001
            x = x + 0.0001
        return x

    def sync():
        st.gpu.synchronize(dev)

    res = {}
    with st.sync_mode(True):
        res["st_sync_every_op"] = _timed(lambda: chain(x0), sync, reps=3, inner=1) / CHAIN
    res["st_async_eager"] = _timed(lambda: chain(x0), sync, reps=5, inner=2) / CHAIN
    jchain = st.jit(chain)
    res["st_jit"] = _timed(lambda: jchain(x0), sync, reps=7, inner=10) / CHAIN
    try:
        import torch
    except ImportError:
        return res
    t0 = torch.randn(32, 32, device="cuda")

    def tchain(x):
        for _ in range(CHAIN // 2):
            x = x * 1.0001
            x = x + 0.0001
        return x

    tsync = torch.cuda.synchronize

    def tchain_synced(x):
        for _ in range(CHAIN // 2):
            x = x * 1.0001
            torch.cuda.synchronize()
            x = x + 0.0001
            torch.cuda.synchronize()
        return x

    res["torch_sync_every_op"] = _timed(lambda: tchain_synced(t0), tsync, 3, 1) / CHAIN
    res["torch_eager"] = _timed(lambda: tchain(t0), tsync, 5, 2) / CHAIN
    static = t0.clone()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        tchain(static)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        tchain(static)
    res["torch_graph"] = _timed(g.replay, tsync, 7, 10) / CHAIN
    return res


def _batches(batch, n_in, n_out, k=4):
    rng = np.random.default_rng(0)
    return [(rng.standard_normal((batch, n_in), dtype=np.float32),
             rng.integers(0, n_out, batch).astype(np.int64)) for _ in range(k)]


def bench_mlp(dev, batch, hidden):
    data = _batches(batch, 784, 10)
    st.manual_seed(0)
    # the fused layer: bias + ReLU in the GEMM epilogue, bias gradients and the ReLU backward
    # in the backward GEMMs' epilogues (PyTorch below runs the plain Linear + ReLU modules)
    model = nn.Sequential(nn.Dense(784, hidden, activation="relu"),
                          nn.Dense(hidden, hidden, activation="relu"),
                          nn.Dense(hidden, 10)).to(dev)
    opt = optim.Adam(model.parameters(), lr=1e-3)
    xs = [(st.tensor(x, device=dev), st.tensor(y, device=dev)) for x, y in data]

    def step(x, y):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    it = [0]

    def eager():
        x, y = xs[it[0] % len(xs)]
        it[0] += 1
        return step(x, y)

    jstep = st.jit(step)

    def jitted():
        x, y = xs[it[0] % len(xs)]
        it[0] += 1
        return jstep(x, y)

    def sync():
        st.gpu.synchronize(dev)

    res = {"st_eager": _timed(eager, sync), "st_jit": _timed(jitted, sync, inner=20)}
    res["st_jit_stats"] = dict(jstep.stats)
    try:
        import torch
    except ImportError:
        return res
    torch.manual_seed(0)
    tm = torch.nn.Sequential(torch.nn.Linear(784, hidden), torch.nn.ReLU(),
                             torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
                             torch.nn.Linear(hidden, 10)).cuda()
    topt = torch.optim.Adam(tm.parameters(), lr=1e-3, capturable=True)
    txs = [(torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda()) for x, y in data]

    def tstep(x, y):
        topt.zero_grad(set_to_none=False)
        loss = torch.nn.functional.cross_entropy(tm(x), y)
        loss.backward()
        topt.step()
        return loss

    def teager():
        x, y = txs[it[0] % len(txs)]
        it[0] += 1
        return tstep(x, y)

    tsync = torch.cuda.synchronize
    res["torch_eager"] = _timed(teager, tsync)
    sx, sy = txs[0][0].clone(), txs[0][1].clone()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            tstep(sx, sy)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        tstep(sx, sy)

    def tgraph():
        x, y = txs[it[0] % len(txs)]
        it[0] += 1
        sx.copy_(x)
        sy.copy_(y)
        g.replay()

    res["torch_graph"] = _timed(tgraph, tsync, inner=20)
    return res


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--tag", default="h100")
    args = p.parse_args(argv)
    dev = st.Device("cuda")
    results = {"chain_per_op_s": bench_chain(dev),
               "mlp_b128_h512_s": bench_mlp(dev, 128, 512),
               "mlp_b1024_h2048_s": bench_mlp(dev, 1024, 2048)}
    try:
        import torch

        results["torch"] = torch.__version__
        results["gpu"] = torch.cuda.get_device_name()
    except ImportError:
        pass
    lines = [f"# Batched vs unbatched — {results.get('gpu', 'GPU')} (PyTorch "
             f"{results.get('torch', 'n/a')}, scitensor {st.__version__})", "",
             "| workload | mode | scitensor | PyTorch | ratio |", "|---|---|---|---|---|"]
    c = results["chain_per_op_s"]
    for mode, ours, theirs in [("sync every op", "st_sync_every_op", "torch_sync_every_op"),
                               ("async eager", "st_async_eager", "torch_eager"),
                               ("jit / CUDA graph", "st_jit", "torch_graph")]:
        o, t = c[ours] * 1e6, c.get(theirs)
        lines.append(f"| chain of {CHAIN} tiny ops (per op) | {mode} | {o:.2f} µs | "
                     + (f"{t * 1e6:.2f} µs | {o / (t * 1e6):.2f}x |" if t else "n/a | |"))
    for key, label in [("mlp_b128_h512_s", "MLP step b128 h512 Adam"),
                       ("mlp_b1024_h2048_s", "MLP step b1024 h2048 Adam")]:
        r = results[key]
        for mode, ours, theirs in [("eager", "st_eager", "torch_eager"),
                                   ("jit / CUDA graph", "st_jit", "torch_graph")]:
            o, t = r[ours] * 1e3, r.get(theirs)
            lines.append(f"| {label} | {mode} | {o:.3f} ms | "
                         + (f"{t * 1e3:.3f} ms | {o / (t * 1e3):.2f}x |" if t else "n/a | |"))
        if "torch_eager" in r:
            lines.append(f"| {label} | st jit vs torch eager | {r['st_jit'] * 1e3:.3f} ms | "
                         f"{r['torch_eager'] * 1e3:.3f} ms | "
                         f"{r['st_jit'] / r['torch_eager']:.2f}x |")
    table = "\n".join(lines)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"gpu_batching_{args.tag}.json").write_text(json.dumps(results, indent=2))
    (out / f"gpu_batching_{args.tag}.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
