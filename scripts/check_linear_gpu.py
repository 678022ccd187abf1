"""GPU self-check of the fused linear layer's cuBLASLt epilogue paths (needs a GPU).

Every path of ``scitensor.backends.cuda.linear`` against a float64 NumPy reference computed
from the same (dtype-rounded) inputs, with every GPU allocation poisoned (0xFF bytes, NaN
for floats) first, printing one PASS/FAIL line per case with the dtype, shape (rows x in ->
out), activation, bias, and the kernels that ran (the epilogue used, or the fallback):

1. forward (``linear_act``): BIAS / RELU(_AUX)(_BIAS) / GELU(_AUX)(_BIAS) epilogues, with and
   without the aux output; the ReLU bit-mask and the GELU aux are checked too;
2. backward (``linear_act_backward``): the elementwise dact kernel, dW with BGRADA, dX;
3. chained backward (``linear_act_backward_chain``): dX with DRELU(_BGRAD) / DGELU(_BGRAD)
   on the previous layer's aux;
4. the same with every fusion switched off (``FUSE``): the composition fallbacks;
5. op level: a 3-layer MLP through ``st.linear`` (chain fusion engaged) against float64,
   and an ``st.jit`` captured training step replayed against eager;
6. the kernels per layer of the issue-4 MLP training step (784-512-512-10, batch 128).

Exit status 1 if any case fails. ``--quick`` runs fewer shapes; ``--dry-run`` runs the same
checks on the CPU backend (no epilogues there: it checks this script, not the GPU).

    python scripts/check_linear_gpu.py [--quick]
    compute-sanitizer --tool memcheck python scripts/check_linear_gpu.py --quick
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys

import numpy as np

import scitensor as st
from scitensor.backends.cuda import linear as cl

TOL = {"f32": 3e-5, "bf16": 2.5e-2, "f16": 5e-3, "f64": 1e-10}
GELU_F32_TOL = 1e-4  # cuBLASLt's GELU need not evaluate tanh as NumPy does


def tol(kind, *activations):
    t = TOL[kind]
    return max(t, GELU_F32_TOL) if kind == "f32" and "gelu" in activations else t
NP = {"f32": np.float32, "bf16": st.bfloat16.np, "f16": np.float16, "f64": np.float64}
SHAPES = [(5, 7, 3), (1, 9, 4), (33, 17, 9), (64, 96, 40), (130, 129, 130), (3, 16, 1),
          (17, 24, 264), (256, 1024, 1024), (1000, 784, 512)]
QUICK = [(5, 7, 3), (33, 17, 9), (64, 96, 40), (130, 129, 130), (3, 16, 1)]
C = math.sqrt(2.0 / math.pi)
FAILS: list = []
DEVICE = ["cuda"]  # --dry-run: "cpu" (checks this script's logic; no epilogue runs there)


def act64(pre, activation):
    if activation is None:
        return pre, np.ones_like(pre)
    if activation == "relu":
        return np.maximum(pre, 0), (pre > 0).astype(np.float64)
    t = np.tanh(C * (pre + 0.044715 * pre**3))
    return (0.5 * pre * (1 + t),
            0.5 * (1 + t) + 0.5 * pre * (1 - t * t) * C * (1 + 3 * 0.044715 * pre**2))


def rel(got, ref) -> float:
    got = np.asarray(got, np.float64)
    ref = np.asarray(ref, np.float64)
    if got.shape != ref.shape or not np.all(np.isfinite(got)):
        return float("inf")
    return float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-30))


def report(ok: bool, what: str, errs: dict, path) -> None:
    status = "PASS" if ok else "FAIL"
    e = " ".join(f"{k}={v:.1e}" for k, v in errs.items())
    print(f"{status} {what} | {e} | {'; '.join(path)}", flush=True)
    if not ok:
        FAILS.append(what)


class Poison:
    """Fill every new GPU allocation with 0xFF bytes while active."""

    def __enter__(self):
        if DEVICE[0] != "cuda":
            return self
        import cupy

        self.be = st.Device("cuda").backend
        self.orig = cupy.cuda.get_allocator()
        self.flag = self.be._ew.poison
        self.be._ew.poison = True

        def alloc(size):
            mem = self.orig(size)
            if size:
                mem.memset_async(0xFF, size)
            return mem

        cupy.cuda.set_allocator(alloc)
        return self

    def __exit__(self, *exc):
        if DEVICE[0] != "cuda":
            return False
        import cupy

        cupy.cuda.set_allocator(self.orig)
        self.be._ew.poison = self.flag
        return False


def backend():
    return st.Device(DEVICE[0]).backend


def host(a):
    return np.asarray(backend().to_numpy(a)).astype(np.float64)


def dev(a, kind):
    return backend().asarray(np.asarray(a).astype(NP[kind]), st.as_dtype(NP[kind]))


def saved_mask(aux):
    """The ReLU decisions a forward saved: cuBLASLt's bit-mask, or the fallback's bool mask."""
    data = np.asarray(backend().to_numpy(aux.data))
    if aux.kind == "mask":
        return data.astype(bool)
    bits = np.unpackbits(data.reshape(-1), bitorder="little")
    return bits.reshape(aux.data.shape[0], -1)[:, :aux.n].astype(bool)


def inputs(m, k, n, kind, seed):
    r = np.random.default_rng(seed)
    x = r.standard_normal((m, k)).astype(NP[kind])
    w = (r.standard_normal((k, n)) / math.sqrt(k)).astype(NP[kind])
    b = r.standard_normal(n).astype(NP[kind])
    g = r.standard_normal((m, n)).astype(NP[kind])
    return x, w, b, g


def check_forward_backward(kind, shape, activation, bias, transposed=False, seed=0):
    be = backend()
    m, k, n = shape
    x, w, b, g = inputs(m, k, n, kind, seed)
    b = b if bias else None
    xd = dev(x, kind)
    if transposed:
        xd = dev(np.ascontiguousarray(x.T), kind).T
    wd, gd = dev(w, kind), dev(g, kind)
    bd = None if b is None else dev(b, kind)
    trace: list = []
    cl.set_trace(trace)
    try:
        with Poison():
            y_inference, no_aux = be.linear_act(xd, wd, bd, activation, False)  # *_BIAS
            y, aux = be.linear_act(xd, wd, bd, activation, True)
            dx, dw, db = be.linear_act_backward(gd, xd, wd, aux, activation, (True, True, bias))
            be.synchronize()
    finally:
        cl.set_trace(None)
    x64, w64, g64 = (np.asarray(a, np.float64) for a in (x, w, g))
    pre = x64 @ w64 + (0 if b is None else np.asarray(b, np.float64))
    y_ref, d = act64(pre, activation)
    t = tol(kind, activation)
    errs = {"y": rel(host(y), y_ref), "y_no_aux": rel(host(y_inference), y_ref)}
    ok = errs["y"] < t and errs["y_no_aux"] < t and no_aux is None
    if activation == "relu":
        mask = saved_mask(aux)
        near = np.abs(pre) < 4 * t * np.abs(pre).max()  # may round either way
        errs["mask_mismatch"] = float(np.count_nonzero((mask != (pre > 0)) & ~near))
        ok &= errs["mask_mismatch"] == 0
        d = mask.astype(np.float64)  # the backward must use what the forward saved
    elif activation == "gelu":
        saved = host(aux.data)[:, :n]
        errs["aux"] = rel(saved, pre)
        ok &= errs["aux"] < TOL[kind]
    dpre = g64 * d
    errs["dx"] = rel(host(dx), dpre @ w64.T)
    errs["dw"] = rel(host(dw), x64.T @ dpre)
    ok &= errs["dx"] < 2 * t and errs["dw"] < 2 * t
    if bias:
        errs["db"] = rel(host(db), dpre.sum(0))
        ok &= errs["db"] < 2 * t
    what = (f"fwd+bwd {kind} {m}x{k}->{n} {activation} bias={bias}"
            + (" x-transposed" if transposed else ""))
    report(bool(ok), what, errs, trace)


def check_chain(kind, shape, prev, activation, need_prev_db, seed=0):
    """Layer 1 (k0 -> k, ``prev``) then layer 2 (k -> n, ``activation``): layer 2's dX GEMM
    returns layer 1's pre-activation gradient (and bias gradient)."""
    be = backend()
    m, k0, k, n = shape
    x0, w0, b0, _ = inputs(m, k0, k, kind, seed)
    _, w, b, g = inputs(m, k, n, kind, seed + 1)
    x0d, w0d, b0d, wd, bd, gd = (dev(a, kind) for a in (x0, w0, b0, w, b, g))
    trace: list = []
    with Poison():
        h, prev_aux = be.linear_act(x0d, w0d, b0d, prev, True)
        _, aux = be.linear_act(h, wd, bd, activation, True)
        cl.set_trace(trace)
        try:
            dprev, dw, db, dprev_b = be.linear_act_backward_chain(
                gd, h, wd, aux, activation, (True, True, True), prev_aux, prev, need_prev_db)
            be.synchronize()
        finally:
            cl.set_trace(None)
    h64, w64, g64 = host(h), np.asarray(w, np.float64), np.asarray(g, np.float64)
    pre1 = h64 @ w64 + np.asarray(b, np.float64)
    _, d1 = act64(pre1, activation)
    if activation == "relu":
        d1 = saved_mask(aux).astype(np.float64)
    dpre1 = g64 * d1
    pre0 = np.asarray(x0, np.float64) @ np.asarray(w0, np.float64) + np.asarray(b0, np.float64)
    _, d0 = act64(pre0, prev)
    if prev == "relu":
        d0 = saved_mask(prev_aux).astype(np.float64)
    dprev_ref = (dpre1 @ w64.T) * d0
    errs = {"dprev": rel(host(dprev), dprev_ref), "dw": rel(host(dw), h64.T @ dpre1),
            "db": rel(host(db), dpre1.sum(0))}
    t = tol(kind, prev, activation)
    ok = all(v < 2 * t for v in errs.values())
    if need_prev_db:
        errs["dprev_b"] = rel(host(dprev_b), dprev_ref.sum(0))
        ok &= errs["dprev_b"] < 2 * t
    else:
        ok &= dprev_b is None
    what = (f"chain {kind} {m}x{k0}->{k}->{n} prev={prev} act={activation} "
            f"prev_db={need_prev_db}")
    report(bool(ok), what, errs, trace)


def check_ops_mlp(kind):
    """A 3-layer MLP through st.linear (chain fusion engaged) against float64 NumPy."""
    dtype = st.as_dtype(NP[kind])
    r = np.random.default_rng(5)
    dims, acts = [40, 64, 48, 10], ["relu", "gelu", None]
    x = r.standard_normal((24, dims[0])).astype(NP[kind])
    ws = [(r.standard_normal((a, c)) / math.sqrt(a)).astype(NP[kind])
          for a, c in itertools.pairwise(dims)]
    bs = [r.standard_normal(c).astype(NP[kind]) for c in dims[1:]]
    g = r.standard_normal((24, dims[-1])).astype(NP[kind])
    xt = st.tensor(x, device=DEVICE[0], requires_grad=True)
    wt = [st.tensor(w, device=DEVICE[0], requires_grad=True) for w in ws]
    bt = [st.tensor(b, device=DEVICE[0], requires_grad=True) for b in bs]
    trace: list = []
    cl.set_trace(trace)
    try:
        with Poison():
            hs = [xt]
            for w, b, a in zip(wt, bt, acts):
                hs.append(st.linear(hs[-1], w, b, a))
            hs[-1].backward(st.tensor(g, device=DEVICE[0], dtype=dtype))
    finally:
        cl.set_trace(None)
    # reference with the GPU's own ReLU decisions (h > 0)
    h64 = [np.asarray(x, np.float64)]
    ds = []
    for i, (w, b, a) in enumerate(zip(ws, bs, acts)):
        pre = h64[-1] @ np.asarray(w, np.float64) + np.asarray(b, np.float64)
        y, d = act64(pre, a)
        if a == "relu":
            d = (hs[i + 1].astype(st.float32).numpy() > 0).astype(np.float64)
        h64.append(y)
        ds.append(d)
    gy = np.asarray(g, np.float64)
    errs = {}
    for i in range(2, -1, -1):
        dpre = gy * ds[i]
        errs[f"dw{i}"] = rel(wt[i].grad.astype(st.float32).numpy(), h64[i].T @ dpre)
        errs[f"db{i}"] = rel(bt[i].grad.astype(st.float32).numpy(), dpre.sum(0))
        gy = dpre @ np.asarray(ws[i], np.float64).T
    errs["dx"] = rel(xt.grad.astype(st.float32).numpy(), gy)
    errs["y"] = rel(hs[-1].astype(st.float32).numpy(), h64[-1])
    ok = all(v < 4 * tol(kind, *acts) for v in errs.values())
    fused = sum("drelu" in t or "dgelu" in t for t in trace)
    if DEVICE[0] != "cuda":
        fused = 2  # the CPU runs the composition: there is no epilogue to count
    report(ok and fused == 2, f"ops MLP {kind} 40-64-48-10 relu,gelu (chain GEMMs: {fused}/2)",
           errs, trace)


def check_jit_replay():
    """A captured training step with fused layers replays like the eager step."""
    from scitensor import nn, optim
    from scitensor.nn import functional as F

    def build():
        st.manual_seed(0)
        model = nn.Sequential(nn.Dense(32, 64, activation="relu", device=DEVICE[0]),
                              nn.Dense(64, 64, activation="gelu", device=DEVICE[0]),
                              nn.Dense(64, 10, device=DEVICE[0]))
        return model, optim.Adam(model.parameters(), lr=1e-2)

    r = np.random.default_rng(6)
    batches = [(st.tensor(r.standard_normal((16, 32)).astype(np.float32), device=DEVICE[0]),
                st.tensor(r.integers(0, 10, 16), device=DEVICE[0])) for _ in range(5)]
    losses = []
    for use_jit in (False, True):
        model, opt = build()

        def step(x, y, model=model, opt=opt):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            return loss

        fn = st.jit(step) if use_jit else step
        losses.append([float(fn(x, y).item()) for x, y in batches])
        if use_jit:
            stats = dict(fn.stats)
    err = max(abs(a - b) for a, b in zip(*losses))
    replayed = stats["replays"] >= 1 or DEVICE[0] != "cuda"  # the CPU runs jit eagerly
    report(err < 1e-5 and replayed, "jit capture/replay of fused MLP step",
           {"max_loss_diff": err, "replays": float(stats["replays"])}, [])


def mlp_kernels():
    """The kernels per layer of the issue-4 MLP training step (forward + backward)."""
    from scitensor import nn
    from scitensor.nn import functional as F

    st.manual_seed(0)
    model = nn.Sequential(nn.Dense(784, 512, activation="relu", device=DEVICE[0]),
                          nn.Dense(512, 512, activation="relu", device=DEVICE[0]),
                          nn.Dense(512, 10, device=DEVICE[0]))
    x = st.randn(128, 784, device=DEVICE[0])
    y = st.randint(0, 10, (128,), device=DEVICE[0])
    F.cross_entropy(model(x), y).backward()  # plans and kernels ready
    trace: list = []
    cl.set_trace(trace)
    try:
        for p in model.parameters():
            p.grad = None
        F.cross_entropy(model(x), y).backward()
    finally:
        cl.set_trace(None)
    print("MLP 784-512-512-10 b128 training step, linear-layer kernels in order:")
    for t in trace:
        print("   ", t)
    gemms = sum("gemm" in t for t in trace)
    others = [t for t in trace if "gemm" not in t]
    if DEVICE[0] != "cuda":
        return
    report(gemms == 8 and not others, "MLP step: 3 forward + 5 backward GEMMs, nothing else",
           {"gemms": float(gemms), "other": float(len(others))}, [])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--dry-run", action="store_true",
                    help="run the checks on the CPU backend (checks this script only)")
    args = ap.parse_args()
    if args.dry_run:
        DEVICE[0] = "cpu"
        args.quick = True
    elif not st.cuda_status()[0]:
        print(f"no usable GPU: {st.cuda_status()[1]}")
        return 2
    be = backend()
    if DEVICE[0] == "cuda":
        from nvmath.bindings import cublasLt

        print(f"device: {be.device_name}; cuBLASLt {cublasLt.get_version()}")
    shapes = QUICK if args.quick else SHAPES
    kinds = ["f32", "bf16"] if args.quick else ["f32", "bf16", "f16", "f64"]
    for fuse in (True, False):
        for key in cl.FUSE:
            cl.FUSE[key] = fuse
        print(f"==== fusion {'on' if fuse else 'off (fallback compositions)'}")
        for kind in kinds:
            for shape in shapes if fuse else shapes[:3]:
                for activation in (None, "relu", "gelu"):
                    for bias in (True, False):
                        check_forward_backward(kind, shape, activation, bias)
            for activation in (None, "relu", "gelu"):
                check_forward_backward(kind, (12, 20, 8), activation, True, transposed=True)
            for shape in [(5, 7, 3, 4), (33, 40, 24, 16), (6, 9, 1, 3), (6, 3, 9, 1),
                          (130, 129, 130, 20)]:
                for prev in ("relu", "gelu"):
                    for activation in (None, "relu", "gelu"):
                        for need_prev_db in (True, False):
                            check_chain(kind, shape, prev, activation, need_prev_db)
    for key in cl.FUSE:
        cl.FUSE[key] = True
    print("==== op level")
    for kind in ("f32", "bf16"):
        check_ops_mlp(kind)
    check_jit_replay()
    mlp_kernels()
    blas = getattr(be, "_blas", None)
    if blas is not None and blas.unsupported:
        print("cuBLASLt offered no algorithm for (dtype, m, n, k, geometry a, geometry b, "
              "epilogue):")
        for key in sorted(blas.unsupported, key=str):
            print("   ", key[0], key[2:5], key[6][0], key[7][0], key[11])
    print(f"{len(FAILS)} failure(s)" if FAILS else "all passed")
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
