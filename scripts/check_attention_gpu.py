"""Correctness check of the CUDA attention kernels against a float64 reference (needs a GPU).

For every element type (bf16, fp16, fp32 as 3xTF32 and as tf32), head dim (32, 64, 128),
causal and not, and lengths off the tiles (including seq_q > seq_k with causal, where the first
rows see no key, grouped-query attention and a length-1 edge), it draws fresh random inputs,
poisons every output buffer (NaN bytes) first, runs the backend's attention_forward and
attention_backward, and compares out, lse, dq, dk, dv with float64 NumPy. Prints the max
relative error per tensor (max |diff| / max |ref|) and fails on NaN or a tolerance breach.
The ``strided`` layout (on by default, ``--layouts``) passes q, k, v, dO as views of larger
buffers (heads of (B, S, heads + 1, D) arrays, spare heads NaN) and writes ``out=`` /
``grads_out=`` into views of poisoned buffers, as nn.MultiHeadAttention does; the spare heads
must keep their poison (``gaps``).

Meant to run under compute-sanitizer too (small shapes keep it quick):
    python scripts/check_attention_gpu.py
    compute-sanitizer --tool memcheck python scripts/check_attention_gpu.py --quick
    compute-sanitizer --tool racecheck python scripts/check_attention_gpu.py --quick
``--all-configs`` repeats the sweep with every alternative tile configuration.
"""

from __future__ import annotations

import argparse
import itertools
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import kernel_inventory

import scitensor as st

# max |diff| / max |ref| allowed (bf16/fp16 also round P and dS before their products)
TOL = {"bf16": 4e-2, "f16": 8e-3, "f32": 1e-4, "tf32": 5e-3}
SHAPES = [(1, 2, 1, 77, 77), (2, 4, 2, 130, 61), (1, 2, 2, 45, 200), (1, 1, 1, 1, 1),
          (1, 3, 1, 16, 300)]
QUICK = [(1, 2, 1, 77, 77), (1, 2, 2, 45, 130)]


def reference(q, k, v, g, causal, scale):
    q, k, v, g = (np.asarray(x, np.float64) for x in (q, k, v, g))
    b, h, sq, d = q.shape
    hkv, sk = k.shape[1], k.shape[2]
    grp = h // hkv
    kk, vv = np.repeat(k, grp, axis=1), np.repeat(v, grp, axis=1)
    s = q @ kk.swapaxes(-1, -2) * scale
    if causal:
        s = np.where(np.arange(sk)[None] <= np.arange(sq)[:, None] + sk - sq, s, -np.inf)
    m = np.max(s, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(s - m)
    den = e.sum(-1, keepdims=True)
    p = np.where(den > 0, e / np.where(den > 0, den, 1), 0)
    lse = np.where(den[..., 0] > 0, np.log(np.where(den > 0, den, 1))[..., 0] + m[..., 0], np.inf)
    out = p @ vv
    dp = g @ vv.swapaxes(-1, -2)
    ds = p * (dp - (dp * p).sum(-1, keepdims=True))
    dq = ds @ kk * scale
    dk = (ds.swapaxes(-1, -2) @ q * scale).reshape(b, hkv, grp, sk, d).sum(2)
    dv = (p.swapaxes(-1, -2) @ g).reshape(b, hkv, grp, sk, d).sum(2)
    return out, lse, dq, dk, dv


def max_rel(got, ref) -> float:
    got = np.asarray(got, np.float64)
    if got.shape != ref.shape:
        return float("inf")
    fin = np.isfinite(ref)
    if not np.array_equal(np.isfinite(got), fin) or not np.array_equal(got[~fin], ref[~fin]):
        return float("inf")  # NaN (unwritten), or an lse of +inf where it should be finite
    if not fin.any():
        return 0.0
    scale = np.abs(ref[fin]).max()
    if scale == 0.0:  # an exactly-zero gradient (e.g. one key): inputs are O(1), so compare
        scale = 1.0   # the rounding residue absolutely
    return float(np.abs(got[fin] - ref[fin]).max() / scale)


def _swap(x):
    return x.transpose(0, 2, 1, 3)  # (B, S, heads, D) <-> (B, heads, S, D), a view


def _nan_buffer(be, shape, tdt):
    """A device buffer of 0xFF bytes (NaN) and its host copy."""
    host = np.empty(shape, tdt.np)
    host.view(np.uint8)[...] = 0xFF
    return be.asarray(host, tdt)


def run(be, kind, b, h, hkv, sq, sk, d, causal, seed, layout="dense"):
    import cupy

    np_dt = {"bf16": st.bfloat16.np, "f16": np.float16}.get(kind, np.float32)
    tdt = st.dtypes.from_numpy_dtype(np_dt)
    r = np.random.default_rng(seed)
    host = [r.standard_normal(s).astype(np_dt) for s in
            ((b, h, sq, d), (b, hkv, sk, d), (b, hkv, sk, d), (b, h, sq, d))]
    scale = 1.0 / np.sqrt(d)
    st.set_matmul_precision("tf32" if kind == "tf32" else "highest")
    gaps = []
    try:
        if layout == "dense":
            q, k, v, g = (be.asarray(x, tdt) for x in host)
            out_to = grads_to = None
        else:  # views: q heads 1..h of (B, Sq, H + 1, D); k, v around a spare head
            qb, kvb, gy = (_nan_buffer(be, s, tdt) for s in
                           ((b, sq, h + 1, d), (b, sk, 2 * hkv + 1, d), (b, sq, h, d)))
            q, k, v, g = (_swap(qb[:, :, 1:]), _swap(kvb[:, :, :hkv]),
                          _swap(kvb[:, :, hkv + 1:]), _swap(gy))
            for dst, x in zip((q, k, v, g), host):
                be.setitem(dst, Ellipsis, be.asarray(x, tdt))
            y, gq, gkv = (_nan_buffer(be, s, tdt) for s in
                          ((b, sq, h + 1, d), (b, sq, h + 1, d), (b, sk, 2 * hkv + 1, d)))
            out_to = _swap(y[:, :, 1:])
            grads_to = (_swap(gq[:, :, 1:]), _swap(gkv[:, :, :hkv]), _swap(gkv[:, :, hkv + 1:]))
            gaps = [y[:, :, 0], gq[:, :, 0], gkv[:, :, hkv]]
        out, lse = be.attention_forward(q, k, v, causal, scale, out=out_to)
        dq, dk, dv = be.attention_backward(g, q, k, v, out, lse, causal, scale, grads_to)
        cupy.cuda.get_current_stream().synchronize()
    finally:
        st.set_matmul_precision("highest")
    got = [be.to_numpy(x).astype(np.float64) for x in (out, lse, dq, dk, dv)]
    ref = reference(*host, causal, scale)
    errs = {n: max_rel(a, e) for n, a, e in zip(("out", "lse", "dq", "dk", "dv"), got, ref)}
    if layout != "dense":
        kept = all(np.all(be.to_numpy(x).view(np.uint8) == 0xFF) for x in gaps)
        same = out is out_to and all(x is t for x, t in zip((dq, dk, dv), grads_to))
        errs["gaps"] = 0.0 if kept and same else float("inf")
    return errs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="two shapes (for the sanitizers)")
    ap.add_argument("--all-configs", action="store_true")
    ap.add_argument("--kinds", default="bf16,f16,f32,tf32")
    ap.add_argument("--layouts", default="dense,strided",
                    help="dense arrays and/or strided views with out= / grads_out=")
    ap.add_argument("--record", metavar="FILE",
                    help="write the names of the kernels launched to FILE (kernel_inventory)")
    args = ap.parse_args()
    rec = kernel_inventory.start_recording(args.record)
    dev = st.Device("cuda")
    be = dev.backend
    ew = getattr(be, "_ew", None)
    if ew is not None:
        ew.poison = True  # fresh outputs start as NaN
    from scitensor.backends.cuda import attention as ca

    if not isinstance(be, ca.CudaAttentionPrimitives):
        print("check_attention_gpu: the CUDA backend does not include CudaAttentionPrimitives; "
              "add it to CudaBackend's bases (before ArrayBackend) to test the kernels")
        return 2
    code_of = {"bf16": ca.BF16, "f16": ca.F16, "f32": ca.TF32X3, "tf32": ca.TF32}
    configs = [None]
    if args.all_configs:
        configs += [ca.AttentionConfig(fw, bn, bw, bm, mw, bv) for fw, bn, bw, bm, mw, bv in
                    itertools.product((4, 8), (32, 64, 128), (4, 8), (16, 32, 64), (1, 2),
                                      (1, 2))]
        if getattr(be, "arch", None) == 90:  # the wgmma forward's tiles (sm_90 only)
            configs += [ca.AttentionConfig(fw, bn, 8, 64, 1, 1, 0, 2)
                        for fw, bn in itertools.product((4, 8, 12), (64, 128))]
    shapes = QUICK if args.quick else SHAPES
    failures = 0
    for cfg, kind, d in itertools.product(configs, args.kinds.split(","), (32, 64, 128)):
        if cfg is not None:
            try:
                ca.set_attention_config(code_of[kind], d, cfg)
            except ValueError:
                continue
        try:
            for i, (b, h, hkv, sq, sk) in enumerate(shapes):
                for layout, causal in itertools.product(args.layouts.split(","),
                                                        (False, True)):
                    errs = run(be, kind, b, h, hkv, sq, sk, d, causal, seed=1000 * d + 10 * i,
                               layout=layout)
                    bad = [n for n, e in errs.items() if not e <= TOL[kind]]
                    failures += bool(bad)
                    print(f"{kind:4} D{d:<3} {cfg or 'default'!s:58.58} {layout:7} B{b} H{h}/{hkv} "
                          f"Sq{sq:<3} Sk{sk:<3} {'causal' if causal else 'full  '} "
                          + " ".join(f"{n} {e:.1e}" for n, e in errs.items())
                          + (f"  FAIL {bad}" if bad else ""), flush=True)
        finally:
            if cfg is not None:
                ca.set_attention_config(code_of[kind], d, None)
    print("check_attention_gpu:", "all passed" if not failures else f"{failures} FAILED")
    if rec is not None:
        print(rec.summary())
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
