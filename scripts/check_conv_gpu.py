"""GPU self-check of the conv2d paths (needs a CUDA GPU): correctness, then optional timings.

Correctness (default): for odd shapes, stride 2, padding, dilation 2, groups 2/4, 1x1, a
7x7 stem, depthwise and bias, every pass (``fwd`` = conv2d, ``dgrad`` = conv_transpose2d,
``wgrad`` = conv2d_weight) runs through the CUDA backend's primitives on every path
(``igemm`` and ``im2col`` forced, and ``auto``) for bf16, fp16, fp32 at the default
precision (exact: 3xTF32 in igemm) and fp32 under ``st.set_matmul_precision("tf32")``. Outputs
are poisoned first (NaN bytes), and each result is compared with float64 NumPy on the same
rounded inputs. One line per check:

    PASS bf16   fwd   igemm  odd 3x3          err 2.1e-03 (tol 1.5e-02)

The igemm path runs once per kernel variant in ``--variants`` (default ``v1,v2``: the NCHW
element gather and the NHWC cp.async pipeline, docs/kernels/conv.md §8; v2 only where the
channels allow it, labelled ``igemm/v1``, ``igemm/v2``).

``--time`` then prints milliseconds per pass, path and dtype on the benchmark shapes
(benchmarks/gpu_conv.py), median of CUDA-event timings with inputs rotated, and the path
``auto`` picks, with both igemm variants side by side and a fwd+bwd total per shape, dtype and
variant; ``--sweep`` adds igemm tile configurations (compiled on first use) so the defaults in
``backends/cuda/conv_igemm.py`` can be tuned from the table.

Usage:
    python scripts/check_conv_gpu.py                 # correctness, every case
    python scripts/check_conv_gpu.py --quick         # fewer cases (also under compute-sanitizer)
    python scripts/check_conv_gpu.py --time [--sweep] [--only C64] [--reps 20]
    python scripts/check_conv_gpu.py --time-only --variants v1,v2 --dtypes bf16,tf32
    compute-sanitizer --tool memcheck python scripts/check_conv_gpu.py --quick --paths igemm
Exits 1 on any FAIL.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from dataclasses import astuple, replace

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
for _p in (ROOT / "src", ROOT):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import scitensor as st  # noqa: E402
from scitensor.backends.cuda import conv_igemm as ci  # noqa: E402

# name -> (scitensor dtype, matmul precision, max |diff| / max |ref| allowed)
MODES = {"bf16": (st.bfloat16, "highest", 1.5e-2), "fp16": (st.float16, "highest", 2e-3),
         "fp32": (st.float32, "highest", 2e-5), "tf32": (st.float32, "tf32", 5e-3)}
# name, N, C, H, W, K, (kh, kw), stride, padding (top, left), dilation, groups, bias
CASES = [
    ("odd 3x3", 3, 5, 13, 11, 7, (3, 3), (1, 1), (1, 1), (1, 1), 1, True),
    ("stride 2", 2, 8, 15, 14, 16, (3, 3), (2, 2), (1, 1), (1, 1), 1, True),
    ("dilation 2", 2, 6, 12, 13, 9, (3, 3), (1, 1), (2, 2), (2, 2), 1, False),
    ("groups 2", 2, 10, 9, 9, 14, (3, 3), (1, 1), (1, 1), (1, 1), 2, True),
    ("groups 4", 2, 32, 10, 10, 32, (3, 3), (1, 1), (1, 1), (1, 1), 4, True),
    ("asymmetric", 1, 4, 10, 7, 6, (2, 4), (1, 2), (1, 0), (2, 1), 2, True),
    ("stem 7x7 s2", 2, 3, 33, 31, 64, (7, 7), (2, 2), (3, 3), (1, 1), 1, True),
    ("1x1 wide", 2, 96, 7, 9, 160, (1, 1), (1, 1), (0, 0), (1, 1), 1, True),
    ("deep", 2, 200, 8, 8, 130, (3, 3), (1, 1), (1, 1), (1, 1), 1, False),
    ("one pixel", 1, 8, 1, 1, 8, (1, 1), (1, 1), (0, 0), (1, 1), 1, True),
    ("wgrad splits", 8, 32, 28, 28, 64, (3, 3), (1, 1), (1, 1), (1, 1), 1, True),
    ("depthwise", 2, 16, 9, 9, 16, (3, 3), (1, 1), (1, 1), (1, 1), 16, True),
]
QUICK = ["odd 3x3", "stride 2", "groups 2", "stem 7x7 s2", "1x1 wide"]
PASSES = ("fwd", "dgrad", "wgrad")
# candidate tiles for --sweep: (kind, Tiles)
SWEEP = [("fwd", ci.Tiles(64, 128, 32, 2, 4)), ("fwd", ci.Tiles(128, 128, 32, 2, 4)),
         ("fwd", ci.Tiles(128, 64, 32, 4, 2)), ("fwd", ci.Tiles(64, 256, 32, 2, 4)),
         ("fwd", ci.Tiles(128, 128, 32, 2, 4, 2)), ("fwd", ci.Tiles(64, 128, 16, 2, 4)),
         ("fwd", ci.Tiles(128, 128, 16, 2, 4)), ("wgrad", ci.Tiles(64, 128, 32, 2, 4)),
         ("wgrad", ci.Tiles(128, 128, 32, 2, 4)), ("wgrad", ci.Tiles(64, 64, 32, 2, 2)),
         ("wgrad", ci.Tiles(64, 128, 16, 2, 4)), ("wgrad", ci.Tiles(128, 128, 16, 2, 4))]
# v2 candidates (bk is replaced by the type's: 32 for 16-bit, 16 for float32)
SWEEP2 = [("fwd2", ci.Tiles(*t)) for t in (
    (64, 128, 32, 2, 4, 2, 3), (64, 128, 32, 2, 2, 2, 4), (64, 256, 32, 2, 4, 2, 3),
    (64, 256, 32, 2, 4, 1, 4), (128, 128, 32, 2, 4, 2, 3), (128, 128, 32, 2, 4, 2, 4),
    (128, 128, 32, 2, 2, 1, 4), (128, 256, 32, 2, 4, 1, 3), (128, 64, 32, 4, 2, 2, 4),
    (128, 64, 32, 2, 2, 3, 4), (64, 128, 32, 2, 2, 3, 4))] + [
    ("wgrad2", ci.Tiles(*t)) for t in (
        (64, 128, 32, 2, 4, 2, 3), (64, 128, 32, 2, 4, 2, 5), (64, 128, 32, 2, 2, 2, 4),
        (128, 128, 32, 2, 4, 2, 3), (128, 128, 32, 2, 2, 1, 4), (64, 64, 32, 2, 2, 2, 4))]


def out_hw(h, w, k, s, p, d):
    return tuple((n + 2 * pp - dd * (kk - 1) - 1) // ss + 1 for n, kk, ss, pp, dd in
                 zip((h, w), k, s, p, d))


def max_rel(got, ref) -> float:
    got = np.asarray(got, np.float64)
    if got.shape != ref.shape or not np.isfinite(got).all():
        return float("inf")
    return float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-30))


def make_inputs(case, dtype, seed):
    """Host arrays rounded to ``dtype``: x, w, gy, bias (K), bias (C)."""
    _, n, c, h, w, k, kern, stride, pad, dil, groups, has_bias = case
    ho, wo = out_hw(h, w, kern, stride, pad, dil)
    r = np.random.default_rng(seed)

    def rnd(shape):
        return r.standard_normal(shape).astype(np.float32).astype(dtype.np)

    arrays = [rnd((n, c, h, w)), rnd((k, c // groups, *kern)), rnd((n, k, ho, wo))]
    arrays += [rnd((k,)), rnd((c,))] if has_bias else [None, None]
    return arrays


def run_pass(be, pass_, case, dev_arrays):
    _, n, c, h, w, k, kern, stride, pad, dil, groups, _ = case
    x, wt, gy, b, bc = dev_arrays
    geo = (stride, pad, dil, groups)
    if pass_ == "fwd":
        return be.conv2d(x, wt, b, out_hw(h, w, kern, stride, pad, dil), *geo)
    if pass_ == "dgrad":
        return be.conv_transpose2d(gy, wt, bc, (h, w), *geo)
    return be.conv2d_weight(x, gy, kern, *geo)


def taken(be, pass_, case, dtype) -> str:
    _, n, c, h, w, k, kern, stride, pad, dil, groups, _ = case
    ho, wo = out_hw(h, w, kern, stride, pad, dil)
    return ci.choose_path(pass_, dtype.np, be.arch, (n, c, h, w), (k, c // groups, *kern),
                          (n, k, ho, wo), stride, dil, groups)


def variant_of(pass_, case, dtype) -> str:
    """The igemm kernel variant this pass runs under the current override."""
    _, n, c, h, w, k, kern, stride, pad, dil, groups, _ = case
    code = ci.type_code(dtype.np)
    if pass_ == "dgrad":
        return ci.igemm_variant(pass_, code, k // groups, c // groups)
    return ci.igemm_variant(pass_, code, c // groups, k // groups)


def check(args) -> int:
    import cupy

    dev = st.Device("cuda")
    be, cpu = dev.backend, st.Device("cpu").backend
    cases = [c for c in CASES if not args.quick or c[0] in QUICK]
    failed = 0
    be._ew.poison = True
    try:
        for case in cases:
            for mode in args.dtypes.split(","):
                dtype, prec, tol = MODES[mode]
                host = make_inputs(case, dtype, seed=len(case[0]))
                f64 = [None if a is None else a.astype(np.float64) for a in host]
                refs = {p: run_pass(cpu, p, case, f64) for p in PASSES}
                dev_arrays = [None if a is None else cupy.asarray(a) for a in host]
                runs = [(path, v) for path in args.paths.split(",")
                        for v in (args.variants.split(",") if path == "igemm" else ("auto",))]
                for path, variant in runs:
                    ci.set_conv_path(path)
                    ci.set_igemm_variant(variant)
                    st.set_matmul_precision(prec)
                    try:
                        for p in PASSES:
                            used = taken(be, p, case, dtype)
                            if path != "auto" and used != path:
                                continue  # not supported there (dgrad of stride 2, depthwise)
                            label = path + ("=" + used if path == "auto" else "")
                            if path == "igemm":
                                got_v = variant_of(p, case, dtype)
                                if got_v != variant:
                                    continue  # v2 does not cover these channels: v1 ran above
                                label += "/" + got_v
                            got = cupy.asnumpy(run_pass(be, p, case, dev_arrays))
                            err = max_rel(got, refs[p])
                            bad = not err <= tol
                            failed += bad
                            print(f"{'FAIL' if bad else 'PASS'} {mode:5} {p:5} {label:15} "
                                  f"{case[0]:14} err {err:.1e} (tol {tol:.1e})", flush=True)
                    finally:
                        ci.set_conv_path(None)
                        ci.set_igemm_variant(None)
                        st.set_matmul_precision("highest")
        # determinism of the split weight gradient: two runs, same bits
        case = next(c for c in CASES if c[0] == "wgrad splits")
        arrs = [None if a is None else cupy.asarray(a)
                for a in make_inputs(case, st.bfloat16, 1)]
        for variant in args.variants.split(","):
            ci.set_conv_path("igemm")
            ci.set_igemm_variant(variant)
            try:
                a, b = (cupy.asnumpy(run_pass(be, "wgrad", case, arrs)).view(np.uint16)
                        for _ in range(2))
            finally:
                ci.set_conv_path(None)
                ci.set_igemm_variant(None)
            same = bool((a == b).all())
            failed += not same
            print(f"{'PASS' if same else 'FAIL'} wgrad/{variant} bitwise deterministic over two "
                  "runs")
    finally:
        be._ew.poison = False
    print("check_conv_gpu:", "all passed" if not failed else f"{failed} FAILED")
    return 1 if failed else 0


def _time_pass(be, pass_, case, sets, warmup, reps) -> float:
    import cupy
    from benchmarks.timing import event_ms

    def step(i):
        run_pass(be, pass_, case, sets[i % len(sets)])

    def record():
        e = cupy.cuda.Event()
        e.record(cupy.cuda.get_current_stream())
        return e

    return event_ms(step, record, be.synchronize, warmup, reps)


def timings(args) -> int:
    import cupy
    from benchmarks.gpu_conv import SHAPES

    be = st.Device("cuda").backend
    print(f"# ms per pass on {be.device_name} (median of {args.reps}, inputs rotated); "
          "auto = the path choose_path picks; TFLOP/s = 2*N*K*P*Q*C/g*kh*kw / time")
    print(f"{'shape':38} {'dtype':5} {'pass':5} {'path':28} {'ms':>8} {'TFLOP/s':>8}")
    for shape in SHAPES:
        name, n, c, h, k, ks, stride, pad, groups, _ = shape
        if args.only and not any(o in name for o in args.only.split(",")):
            continue
        case = (name, n, c, h, h, k, (ks, ks), (stride,) * 2, (pad,) * 2, (1, 1), groups, False)
        ho = out_hw(h, h, (ks, ks), (stride,) * 2, (pad,) * 2, (1, 1))[0]
        flops = 2 * n * k * ho * ho * (c // groups) * ks * ks
        for mode in args.dtypes.split(","):
            dtype, prec, _ = MODES[mode]
            st.set_matmul_precision(prec)
            sets = [[None if a is None else cupy.asarray(a)
                     for a in make_inputs(case, dtype, seed=s)] for s in range(2)]
            totals: dict = {}
            bk = 32 if mode in ("bf16", "fp16") else 16
            try:
                for p in PASSES:
                    auto = taken(be, p, case, dtype)
                    auto_variant = variant_of(p, case, dtype)
                    configs = [("im2col", None, None)]
                    configs += [("igemm", v, None) for v in args.variants.split(",")]
                    if auto == "depthwise":
                        configs = [("depthwise", None, None)]
                    elif args.sweep:
                        base = "wgrad" if p == "wgrad" else "fwd"
                        configs += [("igemm", "v1", t) for kind, t in SWEEP if kind == base]
                        configs += [("igemm", "v2", replace(t, bk=bk)) for kind, t in SWEEP2
                                    if kind == base + "2"]
                    for path, variant, tiles in configs:
                        label = path + ("" if variant is None else "/" + variant) + (
                            "" if tiles is None else " " + ",".join(str(v) for v in astuple(tiles)))
                        ci.set_conv_path(None if path == "depthwise" else path)
                        ci.set_igemm_variant(variant)
                        if tiles is not None:
                            ci.set_igemm_tiles(("wgrad" if p == "wgrad" else "fwd")
                                               + ("2" if variant == "v2" else ""), tiles)
                        try:
                            if path != "depthwise" and taken(be, p, case, dtype) != path:
                                continue
                            if variant is not None and variant_of(p, case, dtype) != variant:
                                continue  # v2 does not cover these channels
                            ms = _time_pass(be, p, case, sets, args.warmup, args.reps)
                        except ValueError as e:  # tiles that do not fit this type
                            print(f"{name:38} {mode:5} {p:5} {label:28} skipped: {e}")
                            continue
                        finally:
                            ci.set_conv_path(None)
                            ci.set_igemm_variant(None)
                            for kind in ("fwd", "wgrad", "fwd2", "wgrad2"):
                                ci.set_igemm_tiles(kind, None)
                        is_auto = path == auto and tiles is None and variant in (None,
                                                                                 auto_variant)
                        if tiles is None:
                            key = path + ("" if variant is None else "/" + variant)
                            totals.setdefault(key, {})[p] = ms
                            if is_auto:
                                totals.setdefault("auto", {})[p] = ms
                        mark = " <- auto" if is_auto else ""
                        print(f"{name:38} {mode:5} {p:5} {label:28} {ms:8.3f} "
                              f"{flops / ms / 1e9:8.1f}{mark}", flush=True)
                for key, per in totals.items():
                    if len(per) == len(PASSES) or key == "auto":
                        # a variant that skipped a pass runs the auto choice there
                        ms = sum(per.get(p, totals.get("auto", {}).get(p, float("nan")))
                                 for p in PASSES)
                        print(f"{name:38} {mode:5} {'total':5} {key:28} {ms:8.3f} "
                              f"{3 * flops / ms / 1e9:8.1f}", flush=True)
            finally:
                st.set_matmul_precision("highest")
            be.empty_cache()
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--dtypes", default="bf16,fp16,fp32,tf32")
    ap.add_argument("--paths", default="igemm,im2col,auto")
    ap.add_argument("--variants", default="v1,v2",
                    help="igemm kernel variants to check and time (v1: NCHW gather, v2: NHWC)")
    ap.add_argument("--time", action="store_true", help="time the benchmark shapes too")
    ap.add_argument("--time-only", action="store_true", help="skip the correctness checks")
    ap.add_argument("--sweep", action="store_true", help="with --time: igemm tile variants")
    ap.add_argument("--only", default="",
                    help="benchmark shapes whose name contains this (comma list: any of them)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args(argv)
    if not st.cuda_status()[0]:
        print("check_conv_gpu: needs a CUDA GPU:", st.cuda_status()[1])
        return 1
    rc = 0 if args.time_only else check(args)
    if args.time or args.time_only:
        if args.dtypes == ap.get_default("dtypes"):
            args.dtypes = "bf16,tf32,fp32"
        timings(args)
    return rc


if __name__ == "__main__":
    sys.exit(main())
