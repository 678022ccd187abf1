"""GPU attention benchmark (issue 6): our fused kernels and PyTorch's SDPA side by side.

One CUDA process, the same random inputs (normal, rotating between two sets so the L2 cache
does not flatter the numbers) for both libraries:

- bf16 forward and forward+backward at B4 H16 S4096 D128 and B8 H16 S2048 D64, causal and not;
- fp32 forward at B8 H16 S2048 D64 (ours at the default "highest" precision = 3xTF32, and
  with ``st.set_matmul_precision("tf32")``);
- seq 32,768 (B2 H16 D128 bf16): ours runs forward+backward, peak memory reported, while the
  plain composition needs the B·H·S² score matrix (its allocation is tried and fails).

Reported: median CUDA-event milliseconds after warm-up, TFLOP/s, the ratio ours/PyTorch in
TFLOP/s (>= 1: we are as fast), and our error relative to PyTorch (max |diff| / max |torch|).
FLOPs: forward 4·B·H·Sq·Sk·D (halved for causal), forward+backward 3.5x the forward (the
backward's five matmuls are 2.5x the forward's two), the FlashAttention convention.

Run: ``python -m benchmarks.gpu_attention --out DIR [--reps 20] [--sweep] [--skip-memory]``.
Writes ``DIR/gpu_attention.json`` and ``DIR/gpu_attention.md`` and prints the table last.
``--sweep`` also times other tile configurations of the bf16 kernels (tuning data).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

import scitensor as st
from scitensor.ops.attention import attention_reference, scaled_dot_product_attention

try:  # run as `python -m benchmarks.X` or as a script
    from .timing import event_ms
except ImportError:
    from timing import event_ms

ROTATE = 2
# (name, dtype, B, H, S, D, causal, mode, PyTorch 2.11 TFLOP/s on the H100 from the issue)
CASES = [
    ("bf16 B4 H16 S4096 D128", "bf16", 4, 16, 4096, 128, False, "fwd", 641),
    ("bf16 B4 H16 S4096 D128", "bf16", 4, 16, 4096, 128, True, "fwd", 524),
    ("bf16 B8 H16 S2048 D64", "bf16", 8, 16, 2048, 64, False, "fwd", 401),
    ("bf16 B8 H16 S2048 D64", "bf16", 8, 16, 2048, 64, True, "fwd", 307),
    ("bf16 B4 H16 S4096 D128", "bf16", 4, 16, 4096, 128, False, "fwd+bwd", 529),
    ("bf16 B4 H16 S4096 D128", "bf16", 4, 16, 4096, 128, True, "fwd+bwd", 430),
    ("bf16 B8 H16 S2048 D64", "bf16", 8, 16, 2048, 64, False, "fwd+bwd", 353),
    ("bf16 B8 H16 S2048 D64", "bf16", 8, 16, 2048, 64, True, "fwd+bwd", 266),
    ("fp32 B8 H16 S2048 D64", "fp32", 8, 16, 2048, 64, False, "fwd", 33.7),
    ("fp32 B8 H16 S2048 D64", "fp32", 8, 16, 2048, 64, True, "fwd", None),
    ("fp32(tf32) B8 H16 S2048 D64", "tf32", 8, 16, 2048, 64, False, "fwd", 33.7),
]
TARGET = {"fwd": 0.5, "fwd+bwd": 0.5}  # ratio goals; fp32 forward: 1.0


def flops(b, h, s, d, causal, mode) -> float:
    f = 4.0 * b * h * s * s * d / (2 if causal else 1)
    return f if mode == "fwd" else 3.5 * f






def make_inputs(b, h, s, d, seed):
    r = np.random.default_rng(seed)
    return [tuple(r.standard_normal((b, h, s, d), dtype=np.float32) for _ in range(4))
            for _ in range(ROTATE)]


def bench_torch(case, inputs, warmup, reps):
    import torch
    import torch.nn.functional as tf

    _, dname, b, h, s, d, causal, mode, _ = case
    tdt = torch.bfloat16 if dname == "bf16" else torch.float32
    sets = [[torch.from_numpy(x).cuda().to(tdt) for x in xs] for xs in inputs]
    if mode != "fwd":
        for xs in sets:
            for x in xs[:3]:
                x.requires_grad_()

    def step(i):
        q, k, v, g = sets[i % ROTATE]
        if mode == "fwd":
            with torch.no_grad():
                tf.scaled_dot_product_attention(q, k, v, is_causal=causal)
        else:
            out = tf.scaled_dot_product_attention(q, k, v, is_causal=causal)
            torch.autograd.grad(out, (q, k, v), g)

    def record():
        e = torch.cuda.Event(enable_timing=True)
        e.record()
        return e

    ms = event_ms(step, record, torch.cuda.synchronize, warmup, reps)
    q, k, v, _ = sets[0]
    with torch.no_grad():
        out = tf.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return ms, out.float().cpu().numpy()


def bench_ours(case, inputs, warmup, reps):
    import cupy

    _, dname, b, h, s, d, causal, mode, _ = case
    sdt = st.bfloat16 if dname == "bf16" else st.float32
    dev = st.Device("cuda")
    st.set_matmul_precision("tf32" if dname == "tf32" else "highest")
    sets = [[st.tensor(x, dtype=sdt, device=dev) for x in xs] for xs in inputs]
    if mode != "fwd":
        for xs in sets:
            for x in xs[:3]:
                x.requires_grad_()

    def step(i):
        q, k, v, g = sets[i % ROTATE]
        if mode == "fwd":
            with st.no_grad():
                scaled_dot_product_attention(q, k, v, causal=causal)
        else:
            q.grad = k.grad = v.grad = None
            scaled_dot_product_attention(q, k, v, causal=causal).backward(g)

    def record():
        e = cupy.cuda.Event()
        e.record(cupy.cuda.get_current_stream())
        return e

    try:
        ms = event_ms(step, record, dev.backend.synchronize, warmup, reps)
        q, k, v, _ = sets[0]
        with st.no_grad():
            out = scaled_dot_product_attention(q, k, v, causal=causal).astype(st.float32).numpy()
    finally:
        st.set_matmul_precision("highest")
    return ms, out


def memory_demo(reps):
    """seq 32,768: ours runs forward+backward; the composition's score matrix cannot fit."""
    import cupy

    b, h, s, d = 2, 16, 32768, 128
    dev = st.Device("cuda")
    rt = cupy.cuda.runtime
    attr_high = getattr(rt, "cudaMemPoolAttrUsedMemHigh", 8)
    attr_cur = getattr(rt, "cudaMemPoolAttrUsedMemCurrent", 7)
    pool = rt.deviceGetMemPool(dev.index)
    r = np.random.default_rng(0)
    q, k, v, g = (st.tensor(r.standard_normal((b, h, s, d), dtype=np.float32), dtype=st.bfloat16,
                            device=dev) for _ in range(4))
    for x in (q, k, v):
        x.requires_grad_()
    dev.backend.synchronize()
    before = rt.memPoolGetAttribute(pool, attr_cur)
    rt.memPoolSetAttribute(pool, attr_high, 0)
    t0 = time.perf_counter()
    for _ in range(max(1, reps // 5)):
        q.grad = k.grad = v.grad = None
        scaled_dot_product_attention(q, k, v, causal=True).backward(g)
    dev.backend.synchronize()
    sec = (time.perf_counter() - t0) / max(1, reps // 5)
    peak = rt.memPoolGetAttribute(pool, attr_high)
    res = {"shape": f"B{b} H{h} S{s} D{d} bf16 causal", "ours_fwd_bwd_s": sec,
           "inputs_bytes": 4 * b * h * s * d * 2, "pool_in_use_before_bytes": int(before),
           "ours_peak_bytes": int(peak), "ours_extra_peak_bytes": int(peak - before),
           "naive_scores_bytes_fp32": b * h * s * s * 4,
           "device_total_bytes": rt.memGetInfo()[1]}
    q.grad = k.grad = v.grad = None
    try:
        with st.no_grad():
            attention_reference(q, k, v, causal=True)
        dev.backend.synchronize()
        res["naive"] = "ran (unexpected)"
    except MemoryError as e:
        res["naive"] = f"out of memory: {str(e)[:160]}"
    return res


def sweep(warmup, reps):
    """Time alternative tile configurations of the bf16 kernels (tuning data)."""
    from scitensor.backends.cuda import attention as ca

    rows = []
    for b, h, s, d in ((4, 16, 4096, 128), (8, 16, 2048, 64)):
        inputs = make_inputs(b, h, s, d, 1)
        base = ca.config_for(ca.BF16, d, getattr(st.Device("cuda").backend, "arch", None))
        # forward alternatives: (warps, m16 tiles per warp, keys per tile, kernel version);
        # version 2 is the sm_90 wgmma kernel (warps = 4 x warpgroups)
        fwd_alts = [(8, 1, 64, 1), (4, 1, 64, 1), (4, 1, 128, 1), (8, 1, 128, 1),
                    (4, 2, 32, 1), (4, 2, 64, 1), (8, 2, 64, 1),
                    (4, 1, 64, 2), (4, 1, 128, 2), (8, 1, 64, 2), (8, 1, 128, 2), (12, 1, 64, 2)]
        bwd_alts = ([(w, m, 1) for w in (4, 8) for m in (16, 32, 64)]
                    + [(8, 32, 2), (8, 64, 2), (8, 64, 3)])
        for causal in (False, True):
            for kind, alts in (("fwd", fwd_alts), ("fwd+bwd", bwd_alts)):
                for alt in alts:
                    cfg = (ca.AttentionConfig(alt[0], alt[2], base.bwd_warps, base.bwd_bm, alt[1],
                                              base.bwd_version, 0, alt[3])
                           if kind == "fwd" else
                           ca.AttentionConfig(base.fwd_warps, base.fwd_bn, alt[0], alt[1],
                                              base.fwd_mw, alt[2], base.fwd_lazy_rescale,
                                              base.fwd_version))
                    try:
                        ca.set_attention_config(ca.BF16, d, cfg)
                        case = ("sweep", "bf16", b, h, s, d, causal, kind, None)
                        ms, _ = bench_ours(case, inputs, warmup, reps)
                        rows.append({"shape": f"B{b} H{h} S{s} D{d}", "causal": causal,
                                     "mode": kind, "config": cfg.__dict__, "ms": ms,
                                     "tflops": flops(b, h, s, d, causal, kind) / ms / 1e9})
                        print(f"sweep {rows[-1]}", flush=True)
                    except Exception as e:  # an invalid or failing config is data too
                        rows.append({"shape": f"B{b} H{h} S{s} D{d}", "causal": causal,
                                     "mode": kind, "config": cfg.__dict__,
                                     "error": f"{type(e).__name__}: {e}"[:200]})
                    finally:
                        ca.set_attention_config(ca.BF16, d, None)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    args = ap.parse_args()
    import cupy

    try:
        import torch
        torch_version = torch.__version__
    except ImportError:
        torch, torch_version = None, None
    props = cupy.cuda.runtime.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    meta = {"device": name, "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(),
            "cupy": cupy.__version__, "torch": torch_version, "python": platform.python_version(),
            "scitensor": st.__version__, "reps": args.reps, "warmup": args.warmup,
            "flops": "fwd 4*B*H*S*S*D (/2 causal); fwd+bwd 3.5x fwd"}
    from scitensor.backends.cuda.attention import CudaAttentionPrimitives

    meta["kernels_wired"] = isinstance(st.Device("cuda").backend, CudaAttentionPrimitives)
    if not meta["kernels_wired"]:
        print("WARNING: CudaBackend lacks CudaAttentionPrimitives: timing the xp composition")
    results = []
    for i, case in enumerate(CASES):
        label, dname, b, h, s, d, causal, mode, issue_tflops = case
        inputs = make_inputs(b, h, s, d, i)
        fl = flops(b, h, s, d, causal, mode)
        row = {"case": label, "causal": causal, "mode": mode, "issue_torch_tflops": issue_tflops}
        ours_ms, ours_out = bench_ours(case, inputs, args.warmup, args.reps)
        row.update(ours_ms=ours_ms, ours_tflops=fl / ours_ms / 1e9)
        if torch is not None:
            torch_ms, torch_out = bench_torch(case, inputs, args.warmup, args.reps)
            row.update(torch_ms=torch_ms, torch_tflops=fl / torch_ms / 1e9,
                       ratio=torch_ms / ours_ms,
                       rel_err=float(np.abs(ours_out - torch_out).max()
                                     / max(np.abs(torch_out).max(), 1e-30)))
        goal = 1.0 if dname == "fp32" else TARGET[mode]
        row["goal_ratio"] = goal
        results.append(row)
        print(f"{label} {'causal' if causal else 'full'} {mode}: ours {ours_ms:.3f} ms "
              f"({row['ours_tflops']:.1f} TFLOP/s)"
              + (f", torch {row['torch_ms']:.3f} ms, ratio {row['ratio']:.2f}" if torch else ""),
              flush=True)
    mem = None if args.skip_memory else memory_demo(args.reps)
    sweep_rows = sweep(args.warmup, max(5, args.reps // 2)) if args.sweep else None
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_attention.json").write_text(json.dumps(
        {"meta": meta, "results": results, "memory": mem, "sweep": sweep_rows}, indent=2))
    md = [f"# Attention: scitensor vs PyTorch SDPA on {name}", "",
          f"torch {torch_version}, CuPy {cupy.__version__}; median of {args.reps} CUDA-event "
          "timings after warm-up; FLOPs: fwd 4·B·H·S²·D (/2 causal), fwd+bwd 3.5× fwd.", "",
          "| case | causal | mode | ours ms | ours TFLOP/s | torch ms | torch TFLOP/s | ratio "
          "| goal | rel err |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        md.append(f"| {r['case']} | {r['causal']} | {r['mode']} | {r['ours_ms']:.3f} | "
                  f"{r['ours_tflops']:.1f} | {r.get('torch_ms', float('nan')):.3f} | "
                  f"{r.get('torch_tflops', float('nan')):.1f} | {r.get('ratio', float('nan')):.2f}"
                  f" | {r['goal_ratio']} | {r.get('rel_err', float('nan')):.1e} |")
    if mem:
        gib = 1 << 30
        md += ["", f"Memory, {mem['shape']}: ours forward+backward {mem['ours_fwd_bwd_s']:.3f} s, "
               f"peak pool use {mem['ours_peak_bytes'] / gib:.2f} GiB "
               f"({mem['ours_extra_peak_bytes'] / gib:.2f} GiB above the inputs' "
               f"{mem['pool_in_use_before_bytes'] / gib:.2f} GiB); the composition's fp32 score "
               f"matrix alone is {mem['naive_scores_bytes_fp32'] / gib:.0f} GiB of the device's "
               f"{mem['device_total_bytes'] / gib:.0f} GiB: {mem['naive']}"]
    if sweep_rows:
        md += ["", "| sweep shape | causal | mode | config | ms | TFLOP/s |",
               "|---|---|---|---|---|---|"]
        for r in sweep_rows:
            md.append(f"| {r['shape']} | {r['causal']} | {r['mode']} | {r['config']} | "
                      f"{r.get('ms', float('nan')):.3f} | {r.get('tflops', float('nan')):.1f} |"
                      + (f" {r['error']}" if "error" in r else ""))
    (args.out / "gpu_attention.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
