"""Host microseconds per call of the GPT step's forward ops on the CPU, at a tiny size.

The framework's own Python overhead (Tensor wrapping, dispatch, autodiff recording, shape
checks, module calls, views) is the same on both backends; on the CPU at batch 1, sequence 8,
width 64 the NumPy compute is small, so this measures that overhead without a GPU. Each op
runs ``--n`` times per round, the median of ``--rounds`` rounds is printed in µs per call,
along with the Python function calls per op (from cProfile); ``--profile NAME`` prints the
cProfile of one op. The model is ``benchmarks/gpu_gpt.py``'s. Used for issue 9 (the eager
GPT step's forward is host-bound).

Usage::

    python scripts/host_forward_costs_cpu.py [--n 2000] [--rounds 7] [--profile "block forward"]
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
from scitensor.nn import functional as F


def build_cases():
    """``{name: call}`` on a tiny GPT benchmark model's first block, inputs requiring grad."""
    from benchmarks import gpu_gpt as bg

    c = bg.Config(vocab=65, layers=1, d_model=64, heads=2, context=8, batch=1)
    st.manual_seed(0)
    model = bg.GPT(c)
    b, t, d = c.batch, c.context, c.d_model
    x = st.randn(b, t, d, requires_grad=True)
    x2 = x.reshape(b * t, d)
    blk = model.blocks[0]
    ids, labels = bg.make_batches(c)[0]
    idx = st.tensor(ids)
    y = st.tensor(labels).reshape(-1)
    logits = st.randn(b * t, c.vocab, requires_grad=True)
    return {
        "layer_norm": lambda: blk.ln1(x),
        "linear qkv": lambda: blk.attn.qkv_proj(x2),
        "linear fc+gelu": lambda: blk.fc(x2),
        "add": lambda: x + x,
        "reshape": lambda: x.reshape(b * t, d),
        "attention (MHA module)": lambda: blk.attn(x),
        "block forward": lambda: blk(x),
        "block fwd+bwd": lambda: blk(x).sum().backward(),
        "cross_entropy": lambda: F.cross_entropy(logits, y),
        "embed+pos": lambda: model.tok(idx) + model.pos(model.positions[:t]),
        "model forward": lambda: model(idx),
    }


def host_us(fn, n: int, rounds: int) -> float:
    res = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        res.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(res)


def calls_per_op(fn, n: int = 50) -> float:
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(n):
        fn()
    prof.disable()
    return pstats.Stats(prof).total_calls / n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--profile", action="append", default=[],
                    help="print a cProfile of this op (repeatable)")
    args = ap.parse_args()
    cases = build_cases()
    for fn in cases.values():  # warm-up
        fn()
        fn()
    print(f"{'op':28s} {'us/call':>9s} {'py calls':>9s}")
    for name, fn in cases.items():
        n = max(args.n // 10, 20) if "model" in name or "bwd" in name else args.n
        print(f"{name:28s} {host_us(fn, n, args.rounds):9.1f} {calls_per_op(fn):9.0f}",
              flush=True)
    for name in args.profile:
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(200):
            cases[name]()
        prof.disable()
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(30)
        print(f"\n===== cProfile {name} (200 calls)\n" + s.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
