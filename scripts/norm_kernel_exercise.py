"""Run every row kernel (layer/RMS norm, softmax, cross-entropy) once per dtype on the GPU.

Small odd shapes that reach every kernel variant (register `_v*`/`_s*`, loop, scalar loop,
misaligned rows, ignored labels, both cotangent strides); each result is checked against the
CPU backend's reference primitives. Meant to run under the sanitizer (racecheck keeps rows few):

    compute-sanitizer --tool memcheck --error-exitcode 9 python scripts/norm_kernel_exercise.py
    compute-sanitizer --tool racecheck --error-exitcode 9 python scripts/norm_kernel_exercise.py

Kernels the host dispatch never picks are launched directly with a valid plan (today
``st_norm_bwd_v1``: a backward plan of one vector per thread always fits 256 threads, so
``normalization.py`` runs ``st_norm_bwd_s1`` instead), so that every shipped row kernel runs
under the sanitizer.

Exits non-zero on a mismatch; prints the kernels it launched. ``--record FILE`` writes their
names for ``scripts/kernel_inventory.py --coverage``.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
for _p in (HERE.parent / "src", HERE):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import kernel_inventory  # noqa: E402

import scitensor as st  # noqa: E402

NORM_SHAPES = [(3, 16), (5, 768), (3, 4096), (2, 8192), (3, 1001), (2, 20000)]
SOFTMAX_SHAPES = [(3, 16), (4, 768), (2, 4096), (3, 1001), (2, 9000)]
CE_SHAPES = [(9, 10), (3, 1001), (2, 32000), (3, 50257)]
TOL = {"float32": 3e-6, "bfloat16": 8e-3, "float16": 1e-3}


def norm_bwd_direct(gpu, cpu, up, check, rng) -> None:
    """Layer-norm backward through ``st_norm_bwd_v1`` (register column sums, one 16-byte
    vector per thread), launched as ``normalization.py`` launches the other ``_v*`` kernels,
    parameter-gradient reduction included."""
    import cupy

    from scitensor.backends.cuda.row_kernels import DTYPE_CODE, pick_register

    for dt, rows, n in ((st.float32, 5, 256), (st.bfloat16, 7, 768), (st.float16, 3, 40)):
        vec = 16 // dt.itemsize
        plan = pick_register(n, vec)
        assert plan is not None and plan.kernel == "v1", (dt.name, n, plan)
        x = (rng.standard_normal((rows, n)) * 2 + 1).astype(dt.np)
        g = rng.standard_normal((rows, n)).astype(dt.np)
        w = rng.uniform(0.5, 1.5, n).astype(dt.np)
        b = rng.standard_normal(n).astype(dt.np)
        _, mu, rs = gpu.layer_norm_forward(up(x), up(w), up(b), 1e-5)
        _, mur, rsr = cpu.layer_norm_forward(x, w, b, 1e-5)
        dxr, dwr, dbr = cpu.layer_norm_backward(g, x, mur, rsr, w)
        xd, gd, wd = up(x), up(g), up(w)
        rk = gpu._rows()
        code = DTYPE_CODE[x.dtype]
        k = rk.get("layer_norm.cu", code, "st_norm_bwd_v1", "pppppippqiii")
        blocks = min(plan.blocks(rows), rk.resident_blocks(k, plan.threads))
        part = cupy.empty((2, blocks * plan.rows_per_block, n), dtype=np.float32)
        dx = gpu._ew._new((rows, n), x.dtype)
        stream = cupy.cuda.get_current_stream().ptr
        k(blocks, plan.threads, stream, gd.data.ptr, xd.data.ptr, mu.data.ptr, rs.data.ptr,
          wd.data.ptr, 0, dx.data.ptr, part.data.ptr, rows, n, plan.tpr, 0)
        out = gpu._ew._new((2, n), np.dtype(np.float32))
        red = rk.get("layer_norm.cu", code, "st_norm_param_reduce", "ppii")
        red(2 * ((n + 31) // 32), 256, stream, part.data.ptr, out.data.ptr, part.shape[1], n)
        tag = f"{dt.name} {rows}x{n} ln bwd v1 (direct)"
        check(tag + " dx", dx, dxr, 2 * TOL[dt.name])
        check(tag + " dw", out[0], dwr, 1e-5)
        check(tag + " db", out[1], dbr, 1e-5)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--record", metavar="FILE",
                    help="write the names of the kernels launched to FILE (kernel_inventory)")
    args = ap.parse_args(argv)
    rec = kernel_inventory.start_recording(args.record)
    gpu, cpu = st.Device("cuda").backend, st.Device("cpu").backend
    gpu._ew.poison = True  # NaN-filled outputs: an unwritten element fails the check
    rng = np.random.default_rng(0)
    bad, checks = [], 0

    def up(a):
        return gpu.asarray(a, st.dtypes.from_numpy_dtype(a.dtype))

    def check(tag, got, ref, tol):
        nonlocal checks
        checks += 1
        a = np.asarray(gpu.to_numpy(got) if not isinstance(got, np.ndarray) else got, np.float64)
        b = np.asarray(ref, np.float64)
        err = float("inf") if a.shape != b.shape or not np.all(np.isfinite(a)) else \
            float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))
        if not err <= tol:
            bad.append(f"{tag}: {err:.2e}")

    for dt in (st.float32, st.bfloat16, st.float16):
        tol = TOL[dt.name]
        for rows, n in NORM_SHAPES:
            x = (rng.standard_normal((rows, n)) * 2 + 1).astype(dt.np)
            g = rng.standard_normal((rows, n)).astype(dt.np)
            w = rng.uniform(0.5, 1.5, n).astype(dt.np)
            b = rng.standard_normal(n).astype(dt.np)
            tag = f"{dt.name} {rows}x{n}"
            y, mu, rs = gpu.layer_norm_forward(up(x), up(w), up(b), 1e-5)
            yr, mur, rsr = cpu.layer_norm_forward(x, w, b, 1e-5)
            dx, dw, db = gpu.layer_norm_backward(up(g), up(x), mu, rs, up(w))
            dxr, dwr, dbr = cpu.layer_norm_backward(g, x, mur, rsr, w)
            for name, got, ref, t in (("ln y", y, yr, tol), ("ln dx", dx, dxr, 2 * tol),
                                      ("ln dw", dw, dwr, 1e-5), ("ln db", db, dbr, 1e-5)):
                check(f"{tag} {name}", got, ref, t)
            y, rs = gpu.rms_norm_forward(up(x), None, 1e-6)
            yr, rsr = cpu.rms_norm_forward(x, None, 1e-6)
            dx, _ = gpu.rms_norm_backward(up(g), up(x), rs, None, False)
            dxr, _ = cpu.rms_norm_backward(g, x, rsr, None, False)
            check(f"{tag} rms y", y, yr, tol)
            check(f"{tag} rms dx", dx, dxr, 2 * tol)
        if dt is st.float16:
            continue
        for rows, n in SOFTMAX_SHAPES:
            x = (rng.standard_normal((rows, n)) * 3).astype(dt.np)
            g = rng.standard_normal((rows, n)).astype(dt.np)
            for f in ("softmax", "log_softmax"):
                yr = getattr(cpu, f)(x, 1)
                check(f"{dt.name} {rows}x{n} {f}", getattr(gpu, f)(up(x), 1), yr, tol)
                check(f"{dt.name} {rows}x{n} {f} bwd", getattr(gpu, f + "_backward")(
                    up(g), up(yr), 1), getattr(cpu, f + "_backward")(g, yr, 1), 2 * tol)
        for rows, c in CE_SHAPES:
            x = (rng.standard_normal((rows, c)) * 3).astype(dt.np)
            lab = np.where(rng.random(rows) < 0.3, -100, rng.integers(0, c, rows))
            valid = lab != -100
            for s, g in ((0.0, np.float32(0.5)), (0.1, rng.standard_normal(rows))):
                g = np.asarray(g, np.float32)
                loss, lse = gpu.cross_entropy_forward(up(x), up(lab), -100, s)
                lr, lser = cpu.cross_entropy_forward(x, lab, -100, s)
                dx = gpu.cross_entropy_backward(up(g), up(x), up(lab), lse, -100, s)
                dxr = cpu.cross_entropy_backward(g, x, lab, lser, -100, s)
                tag = f"{dt.name} {rows}x{c} ce s={s}"
                check(tag + " loss", loss, lr, 3e-6)
                check(tag + " lse", gpu.to_numpy(lse)[valid], lser[valid], 3e-6)
                check(tag + " dx", dx, dxr, 2 * tol)
    norm_bwd_direct(gpu, cpu, up, check, rng)
    gpu.synchronize()
    rk = gpu.__dict__.get("_row_kernels")
    names = sorted({k[2] for k in rk._kernels}) if rk is not None else []
    print(f"{checks} checks; kernels launched: {', '.join(names)}")
    if rec is not None:
        print(rec.summary())
    for line in bad:
        print("MISMATCH", line)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
