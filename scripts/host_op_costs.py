"""Host microseconds per call of the GPT step's forward ops, scitensor next to PyTorch.

Each op (layer norm, the fused linear layers, a residual add, a reshape, the attention module,
one transformer block forward and forward+backward, cross-entropy, the embeddings) runs 40
times queued behind a GPU spin, so the host never waits for the device; the median of 5 rounds
is printed per library, then a cProfile of 100 calls of the costliest ops. The model is
``benchmarks/gpu_gpt.py``'s (weights copied into PyTorch's). Used for issue 9 (the eager GPT
step is host-bound on both sides).

Usage (GPU machine with PyTorch)::

    python scripts/host_op_costs.py
"""

from __future__ import annotations

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

PROFILED = ("layer_norm", "linear qkv", "linear fc+gelu", "cross_entropy", "embed+pos",
            "attention (MHA module)")


def build_cases():
    """``{name: (scitensor call, PyTorch call)}`` on the GPT benchmark's first block."""
    import torch
    import torch.nn.functional as tf

    from benchmarks import gpu_gpt as bg

    dev = st.Device("cuda")
    c = bg.Config()
    model = bg.GPT(c).to(dev)
    tmodel, _ = bg.build_torch(c, model, "cuda")
    b, t, d = c.batch, c.context, c.d_model
    x = st.randn(b, t, d, device=dev, requires_grad=True)
    tx = torch.randn(b, t, d, device="cuda", requires_grad=True)
    x2, tx2 = x.reshape(b * t, d), tx.reshape(b * t, d)
    blk, tblk = model.blocks[0], tmodel.blocks[0]
    ids, labels = bg.make_batches(c)[0]
    idx, tidx = st.tensor(ids, device=dev), torch.from_numpy(ids).cuda()
    y, ty = (st.tensor(labels, device=dev).reshape(-1),
             torch.from_numpy(labels).cuda().view(-1))
    logits = st.randn(b * t, c.vocab, device=dev, requires_grad=True)
    tlogits = torch.randn(b * t, c.vocab, device="cuda", requires_grad=True)

    def torch_attention():
        q, k, v = tblk.qkv(tx).view(b, t, 3, c.heads, d // c.heads).permute(
            2, 0, 3, 1, 4).unbind(0)
        a = tf.scaled_dot_product_attention(q, k, v, is_causal=True)
        return tblk.out(a.transpose(1, 2).reshape(b, t, d))

    return {
        "layer_norm": (lambda: blk.ln1(x), lambda: tblk.ln1(tx)),
        "linear qkv": (lambda: blk.attn.qkv_proj(x2), lambda: tblk.qkv(tx2)),
        "linear fc+gelu": (lambda: blk.fc(x2),
                           lambda: tf.gelu(tblk.fc(tx2), approximate="tanh")),
        "add": (lambda: x + x, lambda: tx + tx),
        "reshape": (lambda: x.reshape(b * t, d), lambda: tx.reshape(b * t, d)),
        "attention (MHA module)": (lambda: blk.attn(x), torch_attention),
        "block forward": (lambda: blk(x), lambda: tblk(tx)),
        "block fwd+bwd": (lambda: blk(x).sum().backward(), lambda: tblk(tx).sum().backward()),
        "cross_entropy": (lambda: F.cross_entropy(logits, y),
                          lambda: tf.cross_entropy(tlogits, ty)),
        "embed+pos": (lambda: model.tok(idx) + model.pos(model.positions[:t]),
                      lambda: tmodel.tok(tidx) + tmodel.pos(torch.arange(t, device="cuda"))),
    }


def main() -> int:
    import cupy
    import torch
    from benchmarks.timing import sleep_cycles_per_ms

    # one stream for both libraries: the spin holds back everything queued behind it
    stream = torch.cuda.ExternalStream(cupy.cuda.get_current_stream().ptr)
    cycles = sleep_cycles_per_ms()

    def spin(ms: float) -> None:
        torch.cuda._sleep(int(ms * cycles))

    def host_us(fn, n: int = 40, rounds: int = 5) -> float:
        res = []
        for _ in range(rounds):
            spin(60)
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            res.append((time.perf_counter() - t0) / n * 1e6)
            torch.cuda.synchronize()
        return statistics.median(res)

    with torch.cuda.stream(stream):
        cases = build_cases()
        for ours, theirs in cases.values():  # warm-up: kernels compiled, plans cached
            for fn in (ours, theirs, ours, theirs):
                fn()
        torch.cuda.synchronize()
        print(f"{'op':28s} {'scitensor us':>12s} {'torch us':>10s}")
        for name, (ours, theirs) in cases.items():
            print(f"{name:28s} {host_us(ours):12.1f} {host_us(theirs):10.1f}", flush=True)
        for name in PROFILED:
            spin(200)
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(100):
                cases[name][0]()
            prof.disable()
            torch.cuda.synchronize()
            s = io.StringIO()
            pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(14)
            print(f"\n===== cProfile {name} (100 calls)\n"
                  + "\n".join(s.getvalue().splitlines()[4:26]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
