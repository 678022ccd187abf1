"""Run every layer kernel family forward and backward on small odd shapes (for compute-sanitizer).

The companion of ``cuda_kernel_exercise.py`` (elementwise, random, cuBLASLt),
``norm_kernel_exercise.py`` (row kernels) and ``check_attention_gpu.py --quick``: together
they launch every kernel of ``backends/cuda/kernels/*.cu`` (``kernel_inventory.py
--coverage`` checks that). Each section calls the CUDA backend's primitives (or the public op,
where the op's own plumbing is part of what runs) on a few small shapes chosen to reach every
host path, and compares the result with the CPU backend on float64 copies of the same rounded
inputs (max |diff| / max |ref|). Fresh outputs are NaN-poisoned, so an element a kernel
forgets to write fails the comparison; the sanitizer checks the memory accesses.

Sections (``--only a,b``; ``--list`` prints them):

- ``pool``: max pooling (general kernels with uint8 and int32 window indices, the 3x3/s2/p1
  and 2x2/s2 fast paths, float32 ``_f32q``), average pooling (general, count_include_pad,
  divisor_override, 2x2/s2 fast paths), adaptive and global average pooling; forward,
  inference forward (no argmax) and backward; float32, bfloat16, float16;
- ``batchnorm``: training forward and backward on 2-d, 3-d and 4-d inputs (vector and scalar
  paths, a misaligned input, with and without affine parameters), the running-statistics
  update, evaluation (``channel_affine``); then ``nn.BatchNorm1d``/``2d`` layers (two
  training steps, momentum and cumulative averages, then evaluation);
- ``dropout``: ``dropout_apply`` (vector and scalar paths, misaligned) and the public op's
  forward and backward;
- ``linear``: ``linear_act`` with every cuBLASLt epilogue (bias, relu/gelu with and without
  bias and aux), ``linear_act_backward`` (``linear.cu``: drelu bits, dgelu; vector and scalar
  paths; BGRADA) and ``linear_act_backward_chain`` (DRELU/DGELU with and without BGRAD); the
  inputs are multiples of 1/4, so pre-activations are exact and ReLU masks agree with the
  reference;
- ``loss``: the public ``F.cross_entropy`` forward and backward (ignore_index, smoothing);
- ``embedding``: ``F.embedding`` forward and backward, with and without ``padding_idx``;
- ``scatter``: deterministic mode (``st.deterministic()``): ``index_add``, ``scatter_add``,
  embedding and integer-index backward (reproducible scatter-add; skipped with a note while
  the backend has none);
- ``conv``: conv2d forward, input gradient (``conv_transpose2d``) and weight gradient on the
  im2col path (``conv.cu``: im2col batch- and channel-major, col2im, swap01, channel bias;
  groups, stride, dilation, asymmetric kernels), float64 (``auto`` = im2col);
- ``depthwise``: the direct depthwise kernels (3x3, 5x5, 7x7 weight gradients, channel
  multiplier, stride, dilation; 9x9 weight gradient off the depthwise path), every dtype;
- ``igemm16`` / ``igemm32``: the implicit-GEMM kernels (``conv_igemm.cu``) forced on, v1 and
  v2 (``set_igemm_variant``), bf16/fp16 and fp32 (3xTF32) / tf32: prep, NHWC transpose,
  forward, weight gradient with and without split-K reduction, input gradient; tile
  configurations for M <= 32 and M > 64; the split weight gradient is checked bitwise
  reproducible;
- ``conv_transpose``: the public ``F.conv_transpose2d`` forward and backward (output padding,
  groups, depthwise, dilation) against the CPU;
- ``kmeans``: ``kmeans_assign`` (every dimension tile BK = 4, 8, 16, 32) and ``kmeans_update``
  (deterministic and not, several chunks and cluster ranges, an empty cluster, ignored
  labels) for float32, float64, bfloat16, float16;
- ``optim``: fused SGD (plain, momentum, Nesterov, dampening, weight decay, more than 48
  tensors), Adam (amsgrad, weight decay), AdamW and ``clip_grad_norm_`` on float32, float64,
  float16 and bfloat16 parameters, against the CPU optimizers in float64.

Usage:
    python scripts/layer_kernel_exercise.py [--only pool,batchnorm] [--record FILE]
    compute-sanitizer --tool racecheck --error-exitcode 9 \\
        python scripts/layer_kernel_exercise.py --only igemm16
    python scripts/layer_kernel_exercise.py --device cpu     # dry run of the script itself

Exits 1 when a section raised (its name and traceback are printed) or a comparison failed.
"""

from __future__ import annotations

import argparse
import math
import pathlib
import sys
import time
import traceback
from typing import NamedTuple

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
for _p in (HERE.parent / "src", HERE):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import kernel_inventory  # noqa: E402

import scitensor as st  # noqa: E402
from scitensor.backends.cuda import conv_igemm as ci  # noqa: E402
from scitensor.nn import functional as F  # noqa: E402

F32, F64, BF16, F16 = st.float32, st.float64, st.bfloat16, st.float16
LOW3 = (F32, BF16, F16)
# max |diff| / max |ref| allowed, by dtype name ("tf32": float32 under tf32 precision)
TOL = {"float32": 2e-5, "bfloat16": 1.5e-2, "float16": 2e-3, "float64": 1e-9, "tf32": 5e-3}
SECTIONS: dict = {}


def section(name):
    def register(fn):
        SECTIONS[name] = fn
        return fn
    return register


class Ctx:
    """The device under test, the CPU reference backend and the bookkeeping of checks."""

    def __init__(self, device: str):
        self.dev = st.Device(device)
        self.be = self.dev.backend
        self.cpu_dev = st.Device("cpu")
        self.cpu = self.cpu_dev.backend
        self.arch = getattr(self.be, "arch", 90)
        self.rng = np.random.default_rng(0)
        self.checks = 0
        self.bad: list[str] = []
        self.name = ""

    # ---- data --------------------------------------------------------------------------------
    def rnd(self, shape, dt, scale=1.0, shift=0.0):
        """Normal numbers rounded to ``dt`` (a host array of ``dt.np``)."""
        a = self.rng.standard_normal(shape) * scale + shift
        return a.astype(dt.np) if dt is F64 else a.astype(np.float32).astype(dt.np)

    def quarters(self, shape, dt, offset=0.0):
        """Multiples of 1/4 in [-1, 1] (+ ``offset``): GEMMs over them are exact in fp32."""
        return (self.rng.integers(-4, 5, shape) / 4.0 + offset).astype(dt.np)

    def distinct(self, shape, dt):
        """Values with no ties within a plane (last two axes): max pooling's argmax is then
        the same on any backend."""
        if dt is F32 or dt is F64:
            return self.rnd(shape, dt)
        lo, hi = (0x3F00, 0x4280) if dt is BF16 else (0x3800, 0x5400)  # [0.5, 64)
        plane = shape[-2] * shape[-1]
        planes = math.prod(shape[:-2])
        bits = np.stack([self.rng.choice(np.arange(lo, hi, dtype=np.uint16), plane,
                                         replace=False) for _ in range(planes)])
        bits |= (self.rng.random(bits.shape) < 0.5).astype(np.uint16) << 15  # signs
        return bits.reshape(shape).view(dt.np)

    def up(self, a, dt=None):
        """Host array -> device array (of ``dt``, default its own dtype)."""
        if a is None:
            return None
        dt = dt or st.dtypes.from_numpy_dtype(a.dtype)
        return self.be.asarray(np.asarray(a, dtype=dt.np), dt)

    def misaligned(self, a, dt):
        """``a`` on the device as a contiguous view one element past an allocation's start."""
        flat = np.concatenate([np.zeros(1, a.dtype), a.reshape(-1)])
        return self.up(flat, dt)[1:].reshape(a.shape)

    def host(self, a):
        if a is None:
            return None
        if isinstance(a, st.Tensor):
            return a.numpy()
        # the CPU backend keeps 0-d results as NumPy scalars
        return a if isinstance(a, np.ndarray | np.generic) else self.be.to_numpy(a)

    def tensor(self, a, dt=None, requires_grad=False, device=None):
        dt = dt or st.dtypes.from_numpy_dtype(np.asarray(a).dtype)
        return st.tensor(np.asarray(a).astype(dt.np), dtype=dt, device=device or self.dev,
                         requires_grad=requires_grad)

    # ---- checks ------------------------------------------------------------------------------
    def check(self, tag, got, ref, tol):
        """``max |got - ref| / max |ref| <= tol`` (shapes equal, every value finite)."""
        self.checks += 1
        g = np.asarray(self.host(got), np.float64)
        r = np.asarray(self.host(ref), np.float64)
        if g.shape != r.shape:
            self.bad.append(f"{self.name}: {tag}: shape {g.shape} != reference {r.shape}")
            return
        if not np.isfinite(g).all():
            self.bad.append(f"{self.name}: {tag}: {int((~np.isfinite(g)).sum())} non-finite "
                            "values (unwritten outputs are NaN)")
            return
        if g.size == 0:
            return
        err = float(np.abs(g - r).max() / max(float(np.abs(r).max()), 1e-30))
        if not err <= tol:
            self.bad.append(f"{self.name}: {tag}: err {err:.2e} > tol {tol:.1e}")

    def same_bits(self, tag, a, b):
        self.checks += 1
        a, b = self.host(a), self.host(b)
        if a.tobytes() != b.tobytes():
            self.bad.append(f"{self.name}: {tag}: two runs differ (not reproducible)")

    def expect(self, tag, ok: bool, detail=""):
        self.checks += 1
        if not ok:
            self.bad.append(f"{self.name}: {tag}: {detail or 'failed'}")


def f64(a):
    return None if a is None else np.asarray(a).astype(np.float64)


def tol_of(dt, precision="highest"):
    return TOL["tf32" if dt is F32 and precision == "tf32" else dt.name]


# ---- pooling ------------------------------------------------------------------------------
# name, shape, kernel, stride, padding, dilation, ceil_mode
MAX_CASES = [
    ("general", (2, 3, 9, 11), (3, 3), (2, 2), (1, 1), (1, 1), False),
    ("dilated ceil", (1, 2, 10, 9), (3, 2), (2, 1), (1, 1), (2, 1), True),
    ("i32 17x16", (1, 2, 18, 17), (17, 16), (1, 1), (0, 0), (1, 1), False),
    ("k3s2p1", (2, 3, 7, 16), (3, 3), (2, 2), (1, 1), (1, 1), False),
    ("k2s2 w16", (2, 3, 9, 16), (2, 2), (2, 2), (0, 0), (1, 1), False),
    ("k2s2 w12", (1, 2, 6, 12), (2, 2), (2, 2), (0, 0), (1, 1), False),
    ("k2s2 w9", (1, 2, 5, 9), (2, 2), (2, 2), (0, 0), (1, 1), False),
]
# name, shape, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override
AVG_CASES = [
    ("general ceil", (2, 3, 9, 11), (3, 3), (2, 2), (1, 1), True, False, None),
    ("include pad", (1, 2, 7, 8), (3, 2), (1, 2), (1, 1), False, True, None),
    ("divisor", (1, 2, 7, 8), (2, 3), (2, 2), (0, 1), False, True, 5),
    ("k2s2 w16", (2, 3, 9, 16), (2, 2), (2, 2), (0, 0), False, True, None),
    ("k2s2 w12 div", (1, 2, 6, 12), (2, 2), (2, 2), (0, 0), False, False, 3),
]
ADAPTIVE_CASES = [((2, 3, 4, 6), (1, 1)), ((2, 3, 5, 7), (1, 1)), ((2, 3, 7, 9), (3, 4)),
                  ((1, 2, 5, 5), (7, 6))]


@section("pool")
def pool(c: Ctx):
    be, cpu = c.be, c.cpu
    for dt in LOW3:
        tol = tol_of(dt)
        for name, shape, k, s, p, d, ceil in MAX_CASES:
            xh = c.distinct(shape, dt)
            x = c.up(xh)
            y, arg = be.max_pool2d(x, k, s, p, d, ceil, True)
            yr, argr = cpu.max_pool2d(f64(xh), k, s, p, d, ceil, True)
            c.check(f"max {name} {dt.name} fwd", y, yr, 0.0)
            y2, none = be.max_pool2d(x, k, s, p, d, ceil, False)
            c.check(f"max {name} {dt.name} fwd (no argmax)", y2, yr, 0.0)
            c.expect(f"max {name} {dt.name} no argmax", none is None)
            gh = c.rnd(yr.shape, dt)
            dx = be.max_pool2d_backward(c.up(gh), arg, shape[2:], k, s, p, d)
            dxr = cpu.max_pool2d_backward(f64(gh), argr, shape[2:], k, s, p, d)
            c.check(f"max {name} {dt.name} bwd", dx, dxr, tol)
        for name, shape, k, s, p, ceil, cip, div in AVG_CASES:
            xh = c.rnd(shape, dt)
            y = be.avg_pool2d(c.up(xh), k, s, p, ceil, cip, div)
            yr = cpu.avg_pool2d(f64(xh), k, s, p, ceil, cip, div)
            c.check(f"avg {name} {dt.name} fwd", y, yr, tol)
            gh = c.rnd(yr.shape, dt)
            dx = be.avg_pool2d_backward(c.up(gh), shape[2:], k, s, p, cip, div)
            dxr = cpu.avg_pool2d_backward(f64(gh), shape[2:], k, s, p, cip, div)
            c.check(f"avg {name} {dt.name} bwd", dx, dxr, tol)
        for shape, out in ADAPTIVE_CASES:
            xh = c.rnd(shape, dt)
            y = be.adaptive_avg_pool2d(c.up(xh), out)
            yr = cpu.adaptive_avg_pool2d(f64(xh), out)
            c.check(f"adaptive {shape}->{out} {dt.name} fwd", y, yr, tol)
            gh = c.rnd(yr.shape, dt)
            dx = be.adaptive_avg_pool2d_backward(c.up(gh), shape[2:])
            dxr = cpu.adaptive_avg_pool2d_backward(f64(gh), shape[2:])
            c.check(f"adaptive {shape}->{out} {dt.name} bwd", dx, dxr, tol)


# ---- batch norm -----------------------------------------------------------------------------
BN_CASES = [  # name, shape, affine, misaligned
    ("2d", (5, 7), True, False), ("3d", (3, 5, 9), False, False),
    ("4d odd", (2, 6, 5, 7), True, False), ("4d vec", (4, 3, 8, 8), True, False),
    ("4d misaligned", (2, 4, 4, 4), True, True),
]


@section("batchnorm")
def batchnorm(c: Ctx):
    be, cpu = c.be, c.cpu
    for dt in LOW3:
        tol = tol_of(dt)
        for name, shape, affine, mis in BN_CASES:
            ch = shape[1]
            xh = c.rnd(shape, dt, 2.0, 0.5)
            wh = c.rng.uniform(0.5, 1.5, ch).astype(dt.np) if affine else None
            bh = c.rnd((ch,), dt) if affine else None
            x = c.misaligned(xh, dt) if mis else c.up(xh)
            tag = f"{name} {dt.name}"
            y, mean, var, invstd = be.batch_norm_train_forward(x, c.up(wh), c.up(bh), 1e-5)
            yr, meanr, varr, invstdr = cpu.batch_norm_train_forward(f64(xh), f64(wh), f64(bh),
                                                                    1e-5)
            c.check(f"{tag} y", y, yr, tol)
            c.check(f"{tag} mean", mean, meanr, 1e-4)
            c.check(f"{tag} var", var, varr, 1e-4)
            c.check(f"{tag} invstd", invstd, invstdr, 1e-4)
            gh = c.rnd(shape, dt)
            g = c.misaligned(gh, dt) if mis else c.up(gh)
            dx, dw, db = be.batch_norm_backward(g, x, mean, invstd, c.up(wh))
            dxr, dwr, dbr = cpu.batch_norm_backward(f64(gh), f64(xh), meanr, invstdr, f64(wh))
            c.check(f"{tag} dx", dx, dxr, 2 * tol)
            c.check(f"{tag} dweight", dw, dwr, 1e-4)
            c.check(f"{tag} dbias", db, dbr, 1e-4)
            # running statistics updated in place (the mean left out without affine)
            rmh, rvh = c.rnd((ch,), dt), c.rng.uniform(0.5, 2.0, ch).astype(dt.np)
            rm, rv = (c.up(rmh) if affine else None), c.up(rvh)
            rmr, rvr = (f64(rmh) if affine else None), f64(rvh)
            count = math.prod(shape) // ch
            be.batch_norm_update_running_inplace(rm, rv, mean, var, 0.1, count)
            cpu.batch_norm_update_running_inplace(rmr, rvr, meanr, varr, 0.1, count)
            if affine:
                c.check(f"{tag} running mean", rm, rmr, tol)
            c.check(f"{tag} running var", rv, rvr, tol)
            # evaluation mode: y = x * scale[c] + shift[c]
            sh = c.rng.uniform(0.5, 1.5, ch).astype(np.float32)
            th = c.rnd((ch,), F32)
            y = be.channel_affine(x, c.up(sh), c.up(th))
            c.check(f"{tag} eval", y, cpu.channel_affine(f64(xh), f64(sh), f64(th)), tol)
    # the layers: training steps (forward, backward, running statistics and batch count
    # updated in place), then evaluation with the running statistics
    from scitensor import nn

    for dt in LOW3:
        tol = tol_of(dt)
        for cls, shape, momentum in ((nn.BatchNorm1d, (6, 5), 0.1),
                                     (nn.BatchNorm1d, (3, 4, 7), None),
                                     (nn.BatchNorm2d, (2, 3, 5, 7), 0.3)):
            xs = [c.rnd(shape, dt, 2.0, 0.5) for _ in range(2)]
            gh = c.rnd(shape, dt)
            res = []
            for dev, d in ((c.dev, dt), (c.cpu_dev, F64)):
                layer = cls(shape[1], momentum=momentum, device=dev, dtype=d)
                for xh in xs:
                    xt = c.tensor(xh, d, requires_grad=True, device=dev)
                    layer(xt).backward(gh if d is dt else f64(gh))
                layer.eval()
                ye = layer(c.tensor(xs[0], d, device=dev))
                res.append([layer.running_mean.numpy(), layer.running_var.numpy(),
                            layer.num_batches_tracked.numpy(), ye.numpy(), xt.grad.numpy(),
                            layer.weight.grad.numpy(), layer.bias.grad.numpy()])
            tag = f"{cls.__name__}{shape} momentum={momentum} {dt.name}"
            for what, a, r, t in zip(
                    ("running_mean", "running_var", "num_batches", "eval y", "dx", "dweight",
                     "dbias"), res[0], res[1], (tol, tol, 0.0, 2 * tol, 2 * tol, tol, tol)):
                c.check(f"{tag} {what}", a, r, t)


# ---- dropout --------------------------------------------------------------------------------
@section("dropout")
def dropout(c: Ctx):
    be = c.be
    for dt in LOW3:
        tol = tol_of(dt)
        for i, (shape, mis) in enumerate((((3, 5, 7), False), ((4, 16), False), ((1000,), False),
                                          ((64,), True))):
            xh = c.rnd(shape, dt)
            x = c.misaligned(xh, dt) if mis else c.up(xh)
            mask = be.bernoulli_mask(shape, 0.6, 7, 100 * i)
            y = be.dropout_apply(x, mask, 1 / 0.6)
            ref = f64(xh) * c.host(mask) / 0.6
            c.check(f"apply {shape}{' misaligned' if mis else ''} {dt.name}", y, ref, tol)
        # the public op: forward, then backward through the same kernel
        xh = c.rnd((5, 37), dt)
        xt = c.tensor(xh, dt, requires_grad=True)
        y = F.dropout(xt, 0.3, generator=st.Generator(3))
        y.sum().backward()
        grad = f64(xt.grad.numpy())
        scale = f64(np.asarray(1 / 0.7, dt.np))
        c.expect(f"op {dt.name} grad values", bool(np.all((grad == 0) | (grad == scale))),
                 f"gradient values {np.unique(grad)[:5]} are not 0 or 1/(1-p)")
        c.check(f"op {dt.name} y = x * grad", y.numpy(), f64(xh) * grad, tol)


# ---- fused linear -----------------------------------------------------------------------------
@section("linear")
def linear(c: Ctx):
    be, cpu = c.be, c.cpu
    trace: list = []
    try:
        from scitensor.backends.cuda import linear as cuda_linear
    except ImportError:  # pragma: no cover
        cuda_linear = None
    if cuda_linear is not None:
        cuda_linear.set_trace(trace)
    m = 7
    try:
        for dt in LOW3:
            tol = 1e-4 if dt is F32 else 2 * tol_of(dt)
            for k, n in ((5, 13), (12, 24)):  # n = 24: the vector path of linear.cu
                xh, wh = c.quarters((m, k), dt), c.quarters((k, n), dt)
                bh = c.quarters((n,), dt, offset=1 / 32)  # pre-activations never exactly 0
                gh = c.quarters((m, n), dt)
                x, w = c.up(xh), c.up(wh)
                for act in (None, "relu", "gelu"):
                    for has_b in (True, False):
                        for need_aux in ((False, True) if act else (False,)):
                            if act is None and not has_b:
                                continue
                            b = c.up(bh) if has_b else None
                            tag = f"{dt.name} {k}x{n} {act} bias={has_b} aux={need_aux}"
                            y, aux = be.linear_act(x, w, b, act, need_aux)
                            yr, auxr = cpu.linear_act(f64(xh), f64(wh), f64(bh) if has_b else
                                                      None, act, need_aux)
                            c.check(tag + " y", y, yr, tol)
                            if act is not None and not need_aux:
                                continue
                            needs = (True, True, has_b)
                            gu = gh
                            if act == "relu" and not has_b:
                                # quarter-valued inputs without a bias give pre-activations of
                                # exactly 0, where ReLU's derivative is a convention (cuBLASLt's
                                # DRELU mask and ours may differ): no cotangent there
                                gu = gh.copy()
                                gu[f64(xh) @ f64(wh) == 0] = 0
                            dx, dw, db = be.linear_act_backward(c.up(gu), x, w, aux, act, needs)
                            dxr, dwr, dbr = cpu.linear_act_backward(f64(gu), f64(xh), f64(wh),
                                                                    auxr, act, needs)
                            c.check(tag + " dx", dx, dxr, tol)
                            c.check(tag + " dw", dw, dwr, tol)
                            if has_b:
                                c.check(tag + " db", db, dbr, tol)
            # two chained layers: the second's input gradient applies the first's activation
            # in the GEMM epilogue (DRELU/DGELU, with or without the first's bias gradient)
            for k1 in (13, 24):
                x0h, w1h = c.quarters((m, 9), dt), c.quarters((9, k1), dt)
                b1h = c.quarters((k1,), dt, offset=1 / 32)
                w2h, b2h = c.quarters((k1, 11), dt), c.quarters((11,), dt, offset=1 / 32)
                gh = c.quarters((m, 11), dt)
                # the reference's second layer reads the device's (rounded) first-layer output,
                # so the second ReLU's mask is the same on both sides; after a GELU that input
                # is not exact in float32, so the second layer has no activation there
                for act1, act2 in (("relu", None), ("relu", "relu"), ("gelu", None)):
                    y1, aux1 = be.linear_act(c.up(x0h), c.up(w1h), c.up(b1h), act1, True)
                    _, aux1r = cpu.linear_act(f64(x0h), f64(w1h), f64(b1h), act1, True)
                    y1r = f64(c.host(y1))
                    _, aux2 = be.linear_act(y1, c.up(w2h), c.up(b2h), act2, act2 is not None)
                    _, aux2r = cpu.linear_act(y1r, f64(w2h), f64(b2h), act2, act2 is not None)
                    for need_prev_db in (True, False):
                        tag = f"{dt.name} chain {act1}->{act2} k1={k1} prev_db={need_prev_db}"
                        got = be.linear_act_backward_chain(
                            c.up(gh), y1, c.up(w2h), aux2, act2, (True, True, True), aux1,
                            act1, need_prev_db)
                        ref = cpu.linear_act_backward_chain(
                            f64(gh), y1r, f64(w2h), aux2r, act2, (True, True, True), aux1r,
                            act1, need_prev_db)
                        for name, a, r in zip(("dprev", "dw", "db", "dprev_b"), got, ref):
                            if r is not None:
                                c.check(f"{tag} {name}", a, r, 2 * tol)
    finally:
        if cuda_linear is not None:
            cuda_linear.set_trace(None)
    if trace:
        falls = sorted({t for t in trace if "fallback" in t})
        print(f"   linear: {len(trace)} traced steps; fallbacks: {falls or 'none'}")


# ---- losses and embedding ------------------------------------------------------------------
def _grads(outputs_and_inputs):
    return [None if t.grad is None else t.grad.numpy() for t in outputs_and_inputs]


@section("loss")
def loss(c: Ctx):
    for dt in LOW3:
        for rows, classes, smoothing, reduction in ((9, 13, 0.0, "mean"), (5, 1001, 0.1, "sum"),
                                                    (4, 7, 0.2, "none")):
            xh = c.rnd((rows, classes), dt, 3.0)
            lab = c.rng.integers(0, classes, rows)
            lab[::3] = -100
            res = []
            for dev, d in ((c.dev, dt), (c.cpu_dev, F64)):
                xt = c.tensor(xh, d, requires_grad=True, device=dev)
                out = F.cross_entropy(xt, c.tensor(lab, st.int64, device=dev), reduction,
                                      ignore_index=-100, label_smoothing=smoothing)
                # exact in every dtype; converted to the output's dtype by backward
                gh = (0.5 + 0.25 * (np.arange(out.size) % 4)).reshape(out.shape)
                out.backward(gh)
                res.append((out.numpy(), xt.grad.numpy()))
            tag = f"{dt.name} {rows}x{classes} s={smoothing} {reduction}"
            c.check(tag + " loss", res[0][0], res[1][0], 1e-5 if dt is F32 else tol_of(dt))
            c.check(tag + " dlogits", res[0][1], res[1][1], 2 * tol_of(dt))


@section("embedding")
def embedding(c: Ctx):
    ids = np.array([[2, 5, 2, 10, 0], [3, 3, 3, 1, 2], [9, 8, 7, 6, 5]], np.int64)
    for dt in LOW3:
        wh = c.rnd((11, 7), dt)
        gh = c.rnd(ids.shape + (7,), dt)
        for pad in (None, 2, -1):
            res = []
            for dev, d in ((c.dev, dt), (c.cpu_dev, F64)):
                wt = c.tensor(wh, d, requires_grad=True, device=dev)
                out = F.embedding(c.tensor(ids, st.int64, device=dev), wt, padding_idx=pad)
                out.backward(c.tensor(gh, d, device=dev))
                res.append((out.numpy(), wt.grad.numpy()))
            c.check(f"{dt.name} pad={pad} out", res[0][0], res[1][0], 0.0)
            c.check(f"{dt.name} pad={pad} dweight", res[0][1], res[1][1], tol_of(dt))


@section("scatter")
def scatter(c: Ctx):
    """Deterministic mode: reproducible scatter-adds (index_add, scatter_add, add_at)."""
    try:
        with st.deterministic():
            _scatter_cases(c)
    except RuntimeError as e:
        if "determinis" not in str(e).lower():
            raise
        print(f"   scatter: SKIPPED, no reproducible scatter-add on {c.dev}: {e}")


def _scatter_cases(c: Ctx):
    for dt in (F32, F64, BF16, F16):
        tol = 1e-4 if dt is F32 else 4 * tol_of(dt)  # long sums rounded to 16 bits
        # (rows K, addends n): three radix passes; long runs over chunk boundaries; one addend
        for k, n in ((300, 3000), (3, 2500), (17, 1)):
            xh, srch = c.rnd((k, 7), dt), c.rnd((n, 7), dt)
            idx = c.rng.integers(0, k, n)
            outs = []
            for dev, d in ((c.dev, dt), (c.dev, dt), (c.cpu_dev, F64)):
                outs.append(st.index_add(c.tensor(xh, d, device=dev), 0,
                                         c.tensor(idx, st.int64, device=dev),
                                         c.tensor(srch, d, device=dev)).numpy())
            c.check(f"index_add {dt.name} K={k} n={n}", outs[0], outs[2], tol)
            c.same_bits(f"index_add {dt.name} K={k} n={n}", outs[0], outs[1])
        # scatter_add along axis 1: out[i, index[i, j]] += src[i, j]
        xh, srch = c.rnd((5, 40), dt), c.rnd((5, 333), dt)
        idx = c.rng.integers(0, 40, (5, 333))
        outs = [st.scatter_add(c.tensor(xh, d, device=dev), 1,
                               c.tensor(idx, st.int64, device=dev),
                               c.tensor(srch, d, device=dev)).numpy()
                for dev, d in ((c.dev, dt), (c.cpu_dev, F64))]
        c.check(f"scatter_add {dt.name}", outs[0], outs[1], tol)
        # backward of integer-array indexing (negative indices too) and of embedding
        xh = c.rnd((50, 6), dt)
        idx = c.rng.integers(-50, 50, 700)
        gh = c.rnd((700, 6), dt)
        ids = c.rng.integers(0, 50, (7, 30))
        gh2 = c.rnd((7, 30, 6), dt)
        grads = []
        for dev, d in ((c.dev, dt), (c.cpu_dev, F64)):
            xt = c.tensor(xh, d, requires_grad=True, device=dev)
            xt[c.tensor(idx, st.int64, device=dev)].backward(c.tensor(gh, d, device=dev))
            wt = c.tensor(xh, d, requires_grad=True, device=dev)
            F.embedding(c.tensor(ids, st.int64, device=dev), wt).backward(
                c.tensor(gh2, d, device=dev))
            grads.append((xt.grad.numpy(), wt.grad.numpy()))
        c.check(f"getitem backward {dt.name}", grads[0][0], grads[1][0], tol)
        c.check(f"embedding backward {dt.name}", grads[0][1], grads[1][1], tol)


# ---- convolutions ---------------------------------------------------------------------------
# name, N, C, H, W, K, (kh, kw), stride, padding, dilation, groups, bias
CONV_CASES = [
    ("g1 odd", 2, 3, 7, 9, 5, (3, 3), (1, 1), (1, 1), (1, 1), 1, True),
    ("g2 s2 d2", 2, 4, 9, 8, 6, (3, 3), (2, 2), (1, 1), (2, 2), 2, True),
    ("asym g2", 1, 4, 10, 7, 6, (2, 4), (1, 2), (1, 0), (2, 1), 2, True),
    ("1x1", 1, 6, 5, 3, 4, (1, 1), (1, 1), (0, 0), (1, 1), 1, False),
]
DW_CASES = [
    ("dw3", 2, 6, 9, 11, 6, (3, 3), (1, 1), (1, 1), (1, 1), 6, True),
    ("dw5x4 x2 s2", 2, 4, 8, 7, 8, (5, 4), (2, 2), (2, 2), (1, 1), 4, True),
    ("dw7", 1, 3, 9, 9, 3, (7, 7), (1, 1), (3, 3), (1, 1), 3, False),
    ("dw3 d2", 1, 5, 8, 9, 5, (3, 3), (1, 1), (2, 2), (2, 2), 5, True),
    ("dw9", 1, 2, 10, 10, 2, (9, 9), (1, 1), (4, 4), (1, 1), 2, True),  # wgrad: not depthwise
]
IG_CASES = [
    ("small", 1, 8, 9, 11, 8, (3, 3), (1, 1), (1, 1), (1, 1), 1, True),  # one split
    ("splits", 2, 8, 17, 17, 16, (3, 3), (1, 1), (1, 1), (1, 1), 1, False),  # split-K wgrad
    ("g2 s2 d2", 2, 8, 13, 12, 16, (3, 3), (2, 2), (2, 2), (2, 2), 2, True),
    ("odd C", 2, 5, 7, 9, 7, (3, 3), (1, 1), (1, 1), (1, 1), 1, True),  # v1 only
    ("asym g2", 1, 4, 10, 7, 6, (2, 4), (1, 2), (1, 0), (2, 1), 2, True),
    ("wide K", 1, 8, 5, 6, 72, (1, 1), (1, 1), (0, 0), (1, 1), 1, True),  # M > 64 tiles
]
PASSES = ("fwd", "dgrad", "wgrad")


def conv_out_hw(case):
    _, _, _, h, w, _, kern, stride, pad, dil, _, _ = case
    return tuple((n + 2 * p - d * (k - 1) - 1) // s + 1
                 for n, k, s, p, d in zip((h, w), kern, stride, pad, dil))


def conv_inputs(c: Ctx, case, dt):
    """Host arrays rounded to ``dt``: x, w, gy, bias (K), bias (C) (the input gradient's)."""
    _, n, ch, h, w, k, kern, _, _, _, groups, has_bias = case
    ho, wo = conv_out_hw(case)
    arrays = [c.rnd((n, ch, h, w), dt), c.rnd((k, ch // groups, *kern), dt),
              c.rnd((n, k, ho, wo), dt)]
    return arrays + ([c.rnd((k,), dt), c.rnd((ch,), dt)] if has_bias else [None, None])


def conv_pass(be, pass_, case, arrays):
    _, _, _, h, w, _, kern, stride, pad, dil, groups, _ = case
    x, wt, gy, b, bc = arrays
    geo = (stride, pad, dil, groups)
    if pass_ == "fwd":
        return be.conv2d(x, wt, b, conv_out_hw(case), *geo)
    if pass_ == "dgrad":
        return be.conv_transpose2d(gy, wt, bc, (h, w), *geo)
    return be.conv2d_weight(x, gy, kern, *geo)


def conv_route(arch: int, pass_, case, dt) -> str:
    """The path (and igemm variant) this pass takes under the current overrides."""
    _, n, ch, h, w, k, kern, stride, _, dil, groups, _ = case
    path = ci.choose_path(pass_, dt.np, arch, (n, ch, h, w), (k, ch // groups, *kern),
                          (n, k, *conv_out_hw(case)), stride, dil, groups)
    if path != "igemm":
        return path
    code = ci.type_code(dt.np)
    if pass_ == "dgrad":
        return "igemm/" + ci.igemm_variant(pass_, code, k // groups, ch // groups)
    return "igemm/" + ci.igemm_variant(pass_, code, ch // groups, k // groups)


class ConvRun(NamedTuple):
    """One case of a conv section: every pass, with the path and igemm variants forced."""

    case: tuple
    dt: object
    precision: str = "highest"
    path: str = "auto"
    variants: tuple = ("auto",)


def _case(cases, name):
    return next(cs for cs in cases if cs[0] == name)


IG = ("v1", "v2")
CONV_RUNS = {
    "conv": [ConvRun(cs, dt, path="im2col") for cs in CONV_CASES for dt in (F32, BF16)]
    + [ConvRun(CONV_CASES[0], F16, path="im2col"),
       ConvRun(CONV_CASES[1], F32, "tf32", path="im2col")]
    + [ConvRun(cs, F64) for cs in CONV_CASES[:2]],  # float64: im2col whatever is asked
    "depthwise": [ConvRun(cs, dt) for cs in DW_CASES for dt in (F32, BF16, F16, F64)],
    "igemm16": [ConvRun(cs, BF16, path="igemm", variants=IG) for cs in IG_CASES]
    + [ConvRun(_case(IG_CASES, n), F16, path="igemm", variants=IG)
       for n in ("small", "g2 s2 d2")],
    "igemm32": [ConvRun(_case(IG_CASES, n), F32, path="igemm", variants=IG)
                for n in ("small", "splits", "g2 s2 d2", "odd C")]
    + [ConvRun(_case(IG_CASES, n), F32, "tf32", path="igemm", variants=IG)
       for n in ("small", "splits")],
}


def conv_plan(run: ConvRun, arch: int = 90, passes=PASSES):
    """``[(variant, pass, route)]`` that :func:`run_conv` executes for ``run`` (each route of
    a pass once: where v2 does not cover the channels, the v2 run would repeat v1's)."""
    plan, done = [], set()
    for variant in run.variants:
        ci.set_conv_path(run.path)
        ci.set_igemm_variant(variant)
        st.set_matmul_precision(run.precision)
        try:
            for p in passes:
                route = conv_route(arch, p, run.case, run.dt)
                if (p, route) not in done:
                    done.add((p, route))
                    plan.append((variant, p, route))
        finally:
            ci.set_conv_path(None)
            ci.set_igemm_variant(None)
            st.set_matmul_precision("highest")
    return plan


def run_conv(c: Ctx, run: ConvRun, passes=PASSES):
    case, dt, precision = run.case, run.dt, run.precision
    host = conv_inputs(c, case, dt)
    refs = {p: conv_pass(c.cpu, p, case, [f64(a) for a in host]) for p in passes}
    arrays = [c.up(a, dt) for a in host]
    tol = tol_of(dt, precision)
    for variant, p, route in conv_plan(run, c.arch, passes):
        ci.set_conv_path(run.path)
        ci.set_igemm_variant(variant)
        st.set_matmul_precision(precision)
        try:
            got_route = conv_route(c.arch, p, case, dt)
            got = conv_pass(c.be, p, case, arrays)
        finally:
            ci.set_conv_path(None)
            ci.set_igemm_variant(None)
            st.set_matmul_precision("highest")
        c.check(f"{case[0]} {dt.name}{'/tf32' if precision == 'tf32' else ''} {p} {route}",
                got, refs[p], tol)
        c.expect(f"{case[0]} {dt.name} {p} route", got_route == route, got_route)


def _conv_section(c: Ctx, name):
    for run in CONV_RUNS[name]:
        run_conv(c, run)


@section("conv")
def conv(c: Ctx):
    _conv_section(c, "conv")


@section("depthwise")
def depthwise(c: Ctx):
    _conv_section(c, "depthwise")


@section("igemm16")
def igemm16(c: Ctx):
    _conv_section(c, "igemm16")
    # the split weight gradient sums its partials in a fixed order: same bits every run
    case = next(cs for cs in IG_CASES if cs[0] == "splits")
    arrays = [c.up(a, BF16) for a in conv_inputs(c, case, BF16)]
    for variant in ("v1", "v2"):
        ci.set_conv_path("igemm")
        ci.set_igemm_variant(variant)
        try:
            a, b = (conv_pass(c.be, "wgrad", case, arrays) for _ in range(2))
        finally:
            ci.set_conv_path(None)
            ci.set_igemm_variant(None)
        c.same_bits(f"splits bf16 wgrad {variant}", a, b)


@section("igemm32")
def igemm32(c: Ctx):
    _conv_section(c, "igemm32")


# name, x shape, weight shape (C_in, C_out/g, kh, kw), stride, padding, output_padding,
# groups, dilation, bias
CT_CASES = [
    ("s2 outpad", (2, 4, 5, 6), (4, 3, 3, 3), 2, 1, 1, 1, 1, True),
    ("g3 dil", (1, 6, 7, 5), (6, 2, 3, 2), 1, (1, 0), 0, 3, (1, 2), True),
    ("depthwise s2", (2, 4, 6, 6), (4, 1, 3, 3), 2, 1, 1, 4, 1, True),
    ("C8 igemm", (1, 8, 9, 7), (8, 8, 3, 3), 1, 1, 0, 1, 1, False),
]


@section("conv_transpose")
def conv_transpose(c: Ctx):
    for name, xs, ws, stride, pad, opad, groups, dil, has_b in CT_CASES:
        for dt in (F32, BF16):
            xh, wh = c.rnd(xs, dt), c.rnd(ws, dt)
            bh = c.rnd((ws[1] * groups,), dt) if has_b else None
            res = []
            for dev, d in ((c.dev, dt), (c.cpu_dev, F64)):
                ts = [c.tensor(a, d, requires_grad=True, device=dev) if a is not None else None
                      for a in (xh, wh, bh)]
                out = F.conv_transpose2d(ts[0], ts[1], ts[2], stride=stride, padding=pad,
                                         output_padding=opad, groups=groups, dilation=dil)
                if not res:
                    gh = c.rnd(out.shape, dt)
                out.backward(c.tensor(gh, d, device=dev))
                res.append([out.numpy()] + _grads([t for t in ts if t is not None]))
            tol = tol_of(dt)
            for what, a, r in zip(("out", "dx", "dweight", "dbias"), res[0], res[1]):
                c.check(f"{name} {dt.name} {what}", a, r, tol)


# ---- k-means ----------------------------------------------------------------------------------
KM_CASES = [(300, 5, 3), (257, 70, 20), (4100, 9, 8), (129, 17, 13)]  # n, k, d: BK 4/32/8/16


@section("kmeans")
def kmeans(c: Ctx):
    be, cpu = c.be, c.cpu
    for dt in (F32, F64, BF16, F16):
        tol = 1e-9 if dt is F64 else 1e-4
        for n, k, d in KM_CASES:
            tag = f"{dt.name} n={n} k={k} d={d}"
            xh, ch = c.rnd((n, d), dt), c.rnd((k, d), dt)
            labels, dist = be.kmeans_assign(c.up(xh), c.up(ch))
            _, distr = cpu.kmeans_assign(f64(xh), f64(ch))
            c.check(tag + " sq_dist", dist, distr, tol)
            lab = c.host(labels)
            c.expect(tag + " labels in range", bool(((lab >= 0) & (lab < k)).all()),
                     f"labels outside [0, {k}): {lab[(lab < 0) | (lab >= k)][:5]}")
            chosen = ((f64(xh) - f64(ch)[np.clip(lab, 0, k - 1)]) ** 2).sum(axis=1)
            c.check(tag + " labels' distance", chosen, distr, tol)
            # update: the last cluster gets no point (keeps its centroid), some labels ignored
            labs = c.rng.integers(0, k - 1, n)
            labs[::11] = -1
            old = c.rnd((k, d), dt)
            ref = cpu.kmeans_update(f64(xh), labs, k, f64(old), False)
            runs = []
            for det in (False, True, True):
                new = be.kmeans_update(c.up(xh), c.up(labs), k, c.up(old), det)
                c.check(f"{tag} update det={det}", new, ref, tol)
                runs.append(new)
            c.same_bits(f"{tag} deterministic update", runs[1], runs[2])


# ---- optimizers -----------------------------------------------------------------------------
OPT_SHAPES = ((1,), (3, 5), (2049,), (4099,))  # CHUNK = 2048 elements per block
OPT_TOL = {"float64": 1e-9, "float32": 1e-4, "float16": 2e-2, "bfloat16": 1e-1}


def _run_optimizer(c: Ctx, name, make, steps, many=False):
    from scitensor import optim

    # (the CPU dry run leaves out 16-bit parameters: the CPU optimizers keep 16-bit state)
    dts = (F32, F64, F16, BF16) if c.dev.type == "cuda" else (F32, F64)
    specs = [(dt, shape) for dt in dts for shape in OPT_SHAPES]
    if many:  # more than MT_MAX = 48 tensors of one dtype: several launches
        specs += [(F32, (3,))] * 50
    p0 = [c.rng.uniform(0.5, 1.5, shape).astype(dt.np) for dt, shape in specs]
    gs = [[c.rnd(shape, dt) for dt, shape in specs] for _ in range(steps)]
    params = []
    for dev, as_f64 in ((c.dev, False), (c.cpu_dev, True)):
        ps = [c.tensor(p, F64 if as_f64 else dt, requires_grad=True, device=dev)
              for p, (dt, _) in zip(p0, specs)]
        opt = make(optim, ps)
        for step in range(steps):
            for p, g, (dt, _) in zip(ps, gs[step], specs):
                p.grad = c.tensor(g, F64 if as_f64 else dt, device=dev)
            opt.step()
        params.append(ps)
    # max |diff| / max |ref| of the parameter updates over all tensors of one dtype (a small
    # update of a one-element tensor is not measured against its own rounding alone)
    diff: dict = {}
    scale: dict = {}
    for i, (dt, _) in enumerate(specs):
        got = f64(params[0][i].numpy()) - f64(p0[i])
        ref = f64(params[1][i].numpy()) - f64(p0[i])
        d = float(np.abs(got - ref).max()) if np.isfinite(got).all() else float("inf")
        diff[dt.name] = max(diff.get(dt.name, 0.0), d)
        scale[dt.name] = max(scale.get(dt.name, 0.0), float(np.abs(ref).max()))
    for dname, d in diff.items():
        err = d / max(scale[dname], 1e-30)
        c.checks += 1
        if not err <= OPT_TOL[dname]:
            c.bad.append(f"{c.name}: {name} {dname}: parameter update err {err:.2e} > tol "
                         f"{OPT_TOL[dname]:.1e}")


def _clip(c: Ctx, dts, max_norm):
    from scitensor import optim

    gs = [c.rnd(shape, dt, 2.0) for dt in dts for shape in OPT_SHAPES]
    ps = [c.tensor(np.zeros(g.shape, g.dtype), requires_grad=True) for g in gs]
    for p, g in zip(ps, gs):
        p.grad = c.tensor(g)
    norm = optim.clip_grad_norm_(ps, max_norm)
    ref = math.sqrt(sum(float((f64(g) ** 2).sum()) for g in gs))
    tag = f"clip {'/'.join(d.name for d in dts)} max_norm={max_norm}"
    want = np.float64 if F64 in dts else np.float32
    c.expect(tag + " norm dtype", norm.numpy().dtype == want, f"norm is {norm.numpy().dtype}")
    c.check(tag + " norm", np.asarray(norm.numpy()), np.asarray(ref), 1e-6)
    coef = min(1.0, max_norm / (ref + 1e-6))
    for p, g in zip(ps, gs):
        dt = st.dtypes.from_numpy_dtype(g.dtype)
        c.check(f"{tag} grad {dt.name}{g.shape}", p.grad.numpy(), f64(g) * coef,
                max(tol_of(dt), 1e-6))


@section("optim")
def optimizers(c: Ctx):
    runs = [
        ("sgd momentum nesterov wd", lambda o, ps: o.SGD(ps, lr=0.1, momentum=0.9,
                                                         nesterov=True, weight_decay=0.01), 3,
         True),
        ("sgd plain", lambda o, ps: o.SGD(ps, lr=0.1), 1, False),
        ("sgd dampening", lambda o, ps: o.SGD(ps, lr=0.05, momentum=0.5, dampening=0.3), 2,
         False),
        ("adam", lambda o, ps: o.Adam(ps, lr=0.1), 2, False),
        ("adam amsgrad wd", lambda o, ps: o.Adam(ps, lr=0.1, weight_decay=0.01, amsgrad=True),
         3, False),
        ("adamw", lambda o, ps: o.AdamW(ps, lr=0.1, weight_decay=0.1), 2, False),
    ]
    for name, make, steps, many in runs:
        _run_optimizer(c, name, make, steps, many)
    _clip(c, (F32, F64, F16, BF16), 1.0)   # float64 norm
    _clip(c, (F32, F16, BF16), 0.5)        # float32 norm
    _clip(c, (F32,), 1e6)                  # no scaling


# ---- driver -------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="", help="comma-separated sections (default: all)")
    ap.add_argument("--record", metavar="FILE",
                    help="write the names of the kernels launched to FILE (kernel_inventory)")
    ap.add_argument("--device", default="cuda", help="cuda (default), or cpu for a dry run")
    ap.add_argument("--list", action="store_true", help="print the sections and exit")
    args = ap.parse_args(argv)
    if args.list:
        print(" ".join(SECTIONS))
        return 0
    names = [s.strip() for s in args.only.split(",") if s.strip()] or list(SECTIONS)
    unknown = [s for s in names if s not in SECTIONS]
    if unknown:
        print(f"layer_kernel_exercise: unknown section(s) {unknown}; sections: "
              f"{' '.join(SECTIONS)}")
        return 2
    rec = None
    if args.device.startswith("cuda"):
        rec = kernel_inventory.start_recording(args.record)
    c = Ctx(args.device)
    ew = getattr(c.be, "_ew", None)
    if ew is not None:
        ew.poison = True  # fresh outputs start as NaN
    failed = []
    t_all = time.perf_counter()
    for name in names:
        c.name = name
        checks, bad = c.checks, len(c.bad)
        t0 = time.perf_counter()
        try:
            SECTIONS[name](c)
            c.be.synchronize()
        except Exception:
            traceback.print_exc()
            failed.append(name)
            print(f"SECTION {name} RAISED (see the traceback above)", flush=True)
        for line in c.bad[bad:]:
            print("MISMATCH", line)
        print(f"== {name}: {c.checks - checks} checks, {len(c.bad) - bad} mismatches, "
              f"{time.perf_counter() - t0:.1f}s", flush=True)
    print(f"layer_kernel_exercise: {c.checks} checks in {time.perf_counter() - t_all:.1f}s; "
          f"raised: {failed or 'none'}; mismatches: {len(c.bad)}")
    if rec is not None:
        print(rec.summary())
    return 1 if failed or c.bad else 0


if __name__ == "__main__":
    sys.exit(main())
