"""Pooling ops: forward and gradients against float64 loop references (and PyTorch when it
imports), numerical gradient checks, Hypothesis over shapes and parameters, errors, and the
device (GPU) path against the CPU with poisoned outputs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

import scitensor as st
from scitensor.ops.pooling import adaptive_avg_pool2d, avg_pool2d, max_pool2d
from scitensor.testing import check_grad

from .helpers import poisoned
from .pooling_refs import (
    TF,
    ref_adaptive_avg_pool,
    ref_avg_pool,
    ref_max_pool,
    ref_max_pool_grad,
    torch,
)

HSET = settings(max_examples=25, deadline=None)


def arr(shape, seed=0, ties=False):
    a = np.random.default_rng(seed).standard_normal(shape)
    return np.round(a * 2) / 2 if ties else a


def t64(a, **kw):
    return st.tensor(a, dtype=st.float64, **kw)


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


# ---- max pooling ---------------------------------------------------------------------------
MAX_CASES = [  # shape, kernel, stride, padding, dilation, ceil_mode
    ((2, 3, 7, 9), 3, 2, 1, 1, False),
    ((2, 3, 7, 9), 3, 2, 1, 1, True),
    ((1, 2, 8, 8), 2, None, 0, 1, False),
    ((2, 1, 11, 6), (3, 2), (2, 1), (1, 0), (2, 1), True),
    ((1, 1, 5, 5), 5, 1, 2, 1, False),
    ((3, 2, 6, 7), (1, 3), (3, 2), (0, 1), 1, True),
]


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("case", MAX_CASES, ids=str)
def test_max_pool_forward_indices_and_grad(case, ties):
    shape, k, s, p, d, ceil = case
    x = arr(shape, ties=ties)
    xt = t64(x, requires_grad=True)
    y, idx = max_pool2d(xt, k, s, p, d, ceil, return_indices=True)
    y_ref, idx_ref = ref_max_pool(x, pair(k), pair(k if s is None else s), pair(p), pair(d),
                                  ceil)
    np.testing.assert_array_equal(y.numpy(), y_ref)
    np.testing.assert_array_equal(idx.numpy(), idx_ref)
    assert idx.dtype == st.int64
    g = arr(y.shape, seed=1)
    y.backward(st.tensor(g))
    np.testing.assert_allclose(xt.grad.numpy(), ref_max_pool_grad(g, idx_ref, shape),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.skipif(torch is None, reason="torch is not installed")
@pytest.mark.parametrize("case", MAX_CASES, ids=str)
def test_max_pool_matches_torch(case):
    shape, k, s, p, d, ceil = case
    x = arr(shape, seed=3)
    y, idx = max_pool2d(t64(x), k, s, p, d, ceil, return_indices=True)
    ty, ti = TF.max_pool2d(torch.tensor(x), k, s, p, d, ceil, return_indices=True)
    np.testing.assert_array_equal(y.numpy(), ty.numpy())
    np.testing.assert_array_equal(idx.numpy(), ti.numpy())


def test_max_pool_ties_nan_and_minus_inf():
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 1, 1] = np.nan
    x[0, 0, 3, 2] = x[0, 0, 3, 3] = 5.0
    x[0, 0, 0, 2:] = -np.inf
    x[0, 0, 1, 2:] = -np.inf
    y, idx = max_pool2d(t64(x), 2, return_indices=True)
    assert np.isnan(y.numpy()[0, 0, 0, 0])
    assert idx.numpy()[0, 0].tolist() == [[5, 2], [8, 14]]  # NaN, first -inf, first 0, first 5
    assert y.numpy()[0, 0, 0, 1] == -np.inf


def test_max_pool_grad_check():
    x = t64(arr((2, 2, 7, 6), seed=4))
    assert check_grad(lambda a: max_pool2d(a, 3, 2, 1), x)
    assert check_grad(lambda a: max_pool2d(a, (2, 3), (1, 2), (1, 1), 2, ceil_mode=True), x)


def test_max_pool_second_order():
    x = t64(arr((1, 2, 6, 6), seed=5))

    def grad_of(a):  # d/dx sum(maxpool(x)^2) = scatter(2 * maxpool(x)): linear in the maxima
        return st.grad(lambda b: (max_pool2d(b, 2) ** 2).sum())(a)

    assert check_grad(grad_of, x)


def test_max_pool_unbatched_and_strided_input():
    x = arr((3, 8, 10), seed=6)
    y = max_pool2d(t64(x), 3, 2, 1)
    np.testing.assert_array_equal(y.numpy(), ref_max_pool(x[None], (3, 3), (2, 2), (1, 1),
                                                           (1, 1), False)[0][0])
    big = t64(arr((2, 3, 9, 12), seed=7))
    view = big[:, :, ::2, 1::2]  # non-contiguous
    np.testing.assert_array_equal(max_pool2d(view, 2).numpy(),
                                  ref_max_pool(view.numpy(), (2, 2), (2, 2), (0, 0), (1, 1),
                                               False)[0])


# ---- average pooling -----------------------------------------------------------------------
AVG_CASES = [  # shape, kernel, stride, padding, ceil_mode, count_include_pad, divisor
    ((2, 3, 7, 9), 3, 2, 1, False, True, None),
    ((2, 3, 7, 9), 3, 2, 1, True, False, None),
    ((1, 2, 8, 8), 2, None, 0, False, True, None),
    ((2, 1, 11, 6), (3, 2), (2, 1), (1, 0), True, True, None),
    ((1, 2, 5, 5), 2, 2, 1, True, False, 3),
]


@pytest.mark.parametrize("case", AVG_CASES, ids=str)
def test_avg_pool_forward_and_grad(case):
    shape, k, s, p, ceil, cip, div = case
    x = arr(shape, seed=8)
    y = avg_pool2d(t64(x), k, s, p, ceil, cip, div)
    ref = ref_avg_pool(x, pair(k), pair(k if s is None else s), pair(p), ceil, cip, div)
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-12, atol=1e-14)
    assert check_grad(lambda a: avg_pool2d(a, k, s, p, ceil, cip, div), t64(x))
    if torch is not None:
        ty = TF.avg_pool2d(torch.tensor(x), k, s, p, ceil, cip, div)
        np.testing.assert_allclose(y.numpy(), ty.numpy(), rtol=1e-12, atol=1e-14)


def test_avg_pool_second_order():
    x = t64(arr((1, 2, 5, 7), seed=9))
    assert check_grad(lambda a: st.grad(lambda b: (avg_pool2d(b, 3, 2, 1) ** 2).sum())(a), x)


# ---- adaptive average pooling --------------------------------------------------------------
@pytest.mark.parametrize("shape,out", [((2, 3, 7, 9), (3, 4)), ((2, 3, 8, 8), 1),
                                       ((1, 2, 6, 6), (3, 2)), ((1, 1, 3, 5), (5, 7)),
                                       ((2, 2, 7, 5), (None, 2))])
def test_adaptive_avg_pool(shape, out):
    x = arr(shape, seed=10)
    y = adaptive_avg_pool2d(t64(x), out)
    size = (out, out) if isinstance(out, int) else tuple(
        shape[2 + a] if v is None else v for a, v in enumerate(out))
    np.testing.assert_allclose(y.numpy(), ref_adaptive_avg_pool(x, size), rtol=1e-12)
    assert check_grad(lambda a: adaptive_avg_pool2d(a, out), t64(x))
    assert check_grad(lambda a: st.grad(lambda b: (adaptive_avg_pool2d(b, out) ** 2).sum())(a),
                      t64(x))


# ---- dtypes, errors ------------------------------------------------------------------------
@pytest.mark.parametrize("dtype,tol", [(st.float32, 1e-6), (st.float16, 2e-3),
                                       (st.bfloat16, 1e-2)])
def test_low_precision(dtype, tol):
    x = arr((2, 3, 9, 8), seed=11)
    xd = st.tensor(x, dtype=dtype)
    x_rounded = xd.astype(st.float64).numpy()
    assert max_pool2d(xd, 3, 2, 1).dtype == dtype
    np.testing.assert_array_equal(max_pool2d(xd, 3, 2, 1).astype(st.float64).numpy(),
                                  ref_max_pool(x_rounded, (3, 3), (2, 2), (1, 1), (1, 1),
                                               False)[0])
    for got, ref in [(avg_pool2d(xd, 2), ref_avg_pool(x_rounded, (2, 2), (2, 2), (0, 0),
                                                      False, True, None)),
                     (adaptive_avg_pool2d(xd, (2, 3)), ref_adaptive_avg_pool(x_rounded,
                                                                              (2, 3)))]:
        assert got.dtype == dtype
        np.testing.assert_allclose(got.astype(st.float64).numpy(), ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("call,err,match", [
    (lambda x: max_pool2d(x, 5), ValueError, "larger than the padded input"),
    (lambda x: max_pool2d(x, 3, padding=2), ValueError, "at most half the kernel"),
    (lambda x: avg_pool2d(x, 3, stride=0), ValueError, "stride must be >= 1"),
    (lambda x: max_pool2d(x, (2, 2, 2)), TypeError, "pair of ints"),
    (lambda x: max_pool2d(x.reshape(-1), 2), ValueError, r"\(N, C, H, W\)"),
    (lambda x: max_pool2d(x.astype(st.int32), 2), TypeError, "floating"),
    (lambda x: avg_pool2d(x, 2, divisor_override=0), ValueError, "divisor_override"),
    (lambda x: adaptive_avg_pool2d(x, 0), ValueError, "output_size"),
])
def test_errors(call, err, match):
    with pytest.raises(err, match=match):
        call(st.ones(1, 2, 3, 4))


def test_empty_batch():
    y = max_pool2d(st.ones(0, 2, 6, 6), 2)
    assert y.shape == (0, 2, 3, 3)
    assert avg_pool2d(st.ones(0, 2, 6, 6), 3, 2, 1).shape == (0, 2, 3, 3)


# ---- properties ----------------------------------------------------------------------------
@st.no_grad()
@HSET
@given(h=hs.integers(1, 9), w=hs.integers(1, 9), k=hs.integers(1, 4), s=hs.integers(1, 3),
       p=hs.integers(0, 2), d=hs.integers(1, 2), ceil=hs.booleans(), ties=hs.booleans())
def test_max_pool_property(h, w, k, s, p, d, ceil, ties):
    if p > k // 2 or d * (k - 1) + 1 > h + 2 * p or d * (k - 1) + 1 > w + 2 * p:
        return
    x = arr((2, 2, h, w), seed=h * 10 + w, ties=ties)
    y, idx = max_pool2d(t64(x), k, s, p, d, ceil, return_indices=True)
    y_ref, idx_ref = ref_max_pool(x, (k, k), (s, s), (p, p), (d, d), ceil)
    np.testing.assert_array_equal(y.numpy(), y_ref)
    finite = np.isfinite(y_ref)  # windows of padding only have no meaningful index
    np.testing.assert_array_equal(idx.numpy()[finite], idx_ref[finite])


@HSET
@given(h=hs.integers(1, 8), w=hs.integers(1, 8), kh=hs.integers(1, 3), kw=hs.integers(1, 3),
       s=hs.integers(1, 3), p=hs.integers(0, 1), ceil=hs.booleans(), cip=hs.booleans())
def test_avg_pool_property(h, w, kh, kw, s, p, ceil, cip):
    if p > min(kh, kw) // 2 or kh > h + 2 * p or kw > w + 2 * p:
        return
    x = arr((1, 2, h, w), seed=h * 10 + w)
    y = avg_pool2d(t64(x), (kh, kw), s, p, ceil, cip)
    np.testing.assert_allclose(y.numpy(), ref_avg_pool(x, (kh, kw), (s, s), (p, p), ceil, cip,
                                                       None), rtol=1e-12, atol=1e-14)
    # linear map: <avg(x), g> == <x, avg^T(g)>
    g = arr(y.shape, seed=1)
    xt = t64(x, requires_grad=True)
    (avg_pool2d(xt, (kh, kw), s, p, ceil, cip) * st.tensor(g)).sum().backward()
    np.testing.assert_allclose((y.numpy() * g).sum(), (x * xt.grad.numpy()).sum(), rtol=1e-10)


# ---- device (GPU) against CPU --------------------------------------------------------------
DEVICE_CASES = [  # the GPU fast paths (3x3 s2 p1, 2x2 s2) and generic ones
    ("max", (2, 3, 16, 16), dict(kernel_size=3, stride=2, padding=1)),
    ("max", (2, 3, 8, 16), dict(kernel_size=2)),
    ("max", (2, 3, 9, 7), dict(kernel_size=(3, 2), stride=(2, 1), padding=1, dilation=(1, 2),
                               ceil_mode=True)),
    ("avg", (2, 3, 8, 16), dict(kernel_size=2)),
    # float32 2x2 s2 with 4 columns per thread: W % 4 == 0 but W % 8 != 0, an odd row left
    ("max", (2, 3, 7, 12), dict(kernel_size=2)),
    ("avg", (2, 3, 7, 12), dict(kernel_size=2)),
    ("avg", (2, 3, 9, 7), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True,
                               count_include_pad=False)),
    ("adaptive", (2, 3, 7, 7), dict(output_size=1)),
    ("adaptive", (2, 3, 7, 9), dict(output_size=(3, 4))),
]
OPS = {"max": max_pool2d, "avg": avg_pool2d, "adaptive": adaptive_avg_pool2d}


@pytest.mark.parametrize("dtype", [st.float32, st.bfloat16, st.float64])
@pytest.mark.parametrize("kind,shape,kw", DEVICE_CASES, ids=lambda v: str(v)[:40])
def test_device_matches_cpu(device, dtype, kind, shape, kw):
    x = st.tensor(arr(shape, seed=12, ties=kind == "max"), dtype=dtype)
    g = st.tensor(arr(OPS[kind](x, **kw).shape, seed=13), dtype=dtype)
    tol = {st.float32: 1e-5, st.bfloat16: 1e-2, st.float64: 1e-12}[dtype]
    results = []
    for dev in (st.Device("cpu"), device):
        xd = st.tensor(x.numpy(), dtype=dtype, device=dev, requires_grad=True)
        with poisoned(dev):
            y = OPS[kind](xd, **kw)
            y.backward(g.to(dev))
        results.append((y.astype(st.float64).numpy(), xd.grad.astype(st.float64).numpy()))
    (y_cpu, dx_cpu), (y_dev, dx_dev) = results
    if kind == "max":
        np.testing.assert_array_equal(y_dev, y_cpu)
    np.testing.assert_allclose(y_dev, y_cpu, rtol=tol, atol=tol)
    np.testing.assert_allclose(dx_dev, dx_cpu, rtol=tol, atol=tol)
