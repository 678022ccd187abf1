"""layer_norm, rms_norm and the fused softmax backward: forward and every gradient against
float64 NumPy references (and torch.nn.functional when torch imports), numerical gradient
checks, gradients of gradients (the create_graph fallback), Hypothesis over shapes, and the
device (CUDA kernel) path against the references with poisoned outputs.

Shapes cover every kernel family on the GPU: register rows (n % vec == 0, up to 8192),
loop rows (odd n, n > 8192), one row, rows that leave a block partly empty.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as hs

import scitensor as st
from scitensor.ops.normalization import layer_norm, rms_norm

from .helpers import PROPS, f64, grad_check, poisoned, second_order

try:
    import torch
    import torch.nn.functional as TF
except ImportError:  # pragma: no cover - torch is optional
    torch = None

TOL = {st.float64: 1e-10, st.float32: 2e-5, st.float16: 2e-3, st.bfloat16: 1.6e-2}


# ---- float64 references ----------
def ln_ref(x, w, b, eps, rms=False):
    """Forward and the backward closure in float64 over the last axis."""
    x = f64(x)
    mu = np.zeros(x.shape[:-1] + (1,)) if rms else x.mean(-1, keepdims=True)
    d = x - mu
    rstd = 1.0 / np.sqrt((d * d).mean(-1, keepdims=True) + eps)
    xhat = d * rstd
    y = xhat * (1.0 if w is None else f64(w)) + (0.0 if b is None else f64(b))

    def grads(g):
        g = f64(g)
        gw = g * (1.0 if w is None else f64(w))
        n = x.shape[-1]
        proj = xhat * (gw * xhat).sum(-1, keepdims=True) / n
        dx = rstd * (gw - proj - (0.0 if rms else gw.sum(-1, keepdims=True) / n))
        red = tuple(range(x.ndim - 1))
        # dx can cancel to ~0 (n == 1): measure its error against the size of its terms
        return dx, (g * xhat).sum(red), g.sum(red), float(np.linalg.norm(rstd * gw))

    return y, grads


def rel_err(got, ref, scale=0.0) -> float:
    """||got - ref|| / max(||ref||, scale); inf when ``got`` has a NaN or inf."""
    got, ref = f64(got), np.asarray(ref, np.float64)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    if not np.all(np.isfinite(got)):
        return float("inf")
    return float(np.linalg.norm(got - ref) / max(np.linalg.norm(ref), scale, 1e-30))


def run_norm(device, shape, dtype, affine=True, rms=False, eps=1e-5, seed=0, wdtype=None,
             layout_scale=3.0):
    """Run forward + backward on ``device``; check every output against ln_ref."""
    r = np.random.default_rng(seed)
    x = (r.standard_normal(shape) * layout_scale + 1.5).astype(dtype.np)
    n = shape[-1]
    wd = wdtype or dtype
    w = r.uniform(0.5, 1.5, n).astype(wd.np) if affine else None
    b = r.standard_normal(n).astype(wd.np) if affine and not rms else None
    g = r.standard_normal(shape).astype(dtype.np)
    xt = st.tensor(x, device=device, requires_grad=True)
    wt = None if w is None else st.tensor(w, device=device, requires_grad=True)
    bt = None if b is None else st.tensor(b, device=device, requires_grad=True)
    with poisoned(device):
        y = rms_norm(xt, n, wt, eps=eps) if rms else layer_norm(xt, n, wt, bt, eps=eps)
        y.backward(st.tensor(g, device=device))
    ref_y, grads = ln_ref(x, w, b, eps, rms)
    ref_dx, ref_dw, ref_db, dx_scale = grads(g)
    tol = TOL[dtype]
    assert y.dtype is dtype and y.shape == tuple(shape)
    assert rel_err(y, ref_y) < tol, rel_err(y, ref_y)
    assert xt.grad.dtype is dtype
    err = rel_err(xt.grad, ref_dx, dx_scale)
    assert err < 4 * tol, err
    if wt is not None:
        assert wt.grad.dtype is wd and wt.grad.shape == (n,)
        assert rel_err(wt.grad, ref_dw) < 4 * TOL[wd] + 1e-5, rel_err(wt.grad, ref_dw)
    if bt is not None:
        assert rel_err(bt.grad, ref_db) < 4 * TOL[wd] + 1e-5, rel_err(bt.grad, ref_db)
    return y, xt, wt, bt


# ---- forward and gradients on the device ----------
SHAPES = [(1, 8), (3, 5), (2, 3, 64), (33, 768), (5, 1024), (2, 4096), (3, 1001), (1, 8192),
          (2, 20000), (130, 16)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [st.float32, st.bfloat16, st.float16], ids=str)
def test_layer_norm_matches_reference(device, shape, dtype):
    run_norm(device, shape, dtype, affine=True)


@pytest.mark.parametrize("shape", [(3, 5), (4, 768), (2, 3000)], ids=str)
def test_layer_norm_without_affine(device, shape):
    run_norm(device, shape, st.float32, affine=False)


@pytest.mark.parametrize("shape", SHAPES[:6] + [(3, 1001)], ids=str)
@pytest.mark.parametrize("dtype", [st.float32, st.bfloat16], ids=str)
def test_rms_norm_matches_reference(device, shape, dtype):
    run_norm(device, shape, dtype, rms=True, eps=1e-6)


def test_rms_norm_without_weight(device):
    run_norm(device, (6, 96), st.float32, affine=False, rms=True)


@pytest.mark.parametrize("shape", [(4, 768), (3, 7)], ids=str)
def test_low_precision_input_with_float32_params(device, shape):
    # mixed precision: bfloat16 activations, float32 weights; grads come back in float32
    run_norm(device, shape, st.bfloat16, wdtype=st.float32)


def test_float64_on_device(device):
    run_norm(device, (5, 12), st.float64)


@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
def test_norm_primitives_take_arrays_of_any_rank(device, layout):
    """The primitives work over the last axis of ``(..., N)`` arrays (layer_norm hands them
    the input as it is): statistics shaped ``x.shape[:-1]``, ``dx`` shaped like ``x``, on a
    strided input too; checked against the 2-D call and the float64 reference."""
    r = np.random.default_rng(3)
    be = device.backend
    x = r.standard_normal((3, 5, 64)).astype(np.float32)
    if layout == "transposed":  # (3, 5, 64) values with strides of a (5, 3, 64) array
        x_dev = be.transpose(be.asarray(np.ascontiguousarray(x.transpose(1, 0, 2)),
                                        st.float32), (1, 0, 2))
    else:
        x_dev = be.asarray(x, st.float32)
    w = r.uniform(0.5, 1.5, 64).astype(np.float32)
    b = r.standard_normal(64).astype(np.float32)
    g = r.standard_normal((3, 5, 64)).astype(np.float32)
    w_dev, b_dev, g_dev = (be.asarray(a, st.float32) for a in (w, b, g))
    ref_y, grads = ln_ref(x, w, b, 1e-5)
    ref_dx, ref_dw, ref_db, dx_scale = grads(g)
    with poisoned(device):
        y, mean, rstd = be.layer_norm_forward(x_dev, w_dev, b_dev, 1e-5)
        dx, dw, db = be.layer_norm_backward(g_dev, x_dev, mean, rstd, w_dev)
        y2, _, rstd2 = be.layer_norm_forward(be.reshape(be.ascontiguous(x_dev), (15, 64)),
                                             w_dev, b_dev, 1e-5)
        yr, rstd_r = be.rms_norm_forward(x_dev, w_dev, 1e-5)
        dxr, dwr = be.rms_norm_backward(g_dev, x_dev, rstd_r, w_dev)
    host = be.to_numpy
    assert y.shape == dx.shape == x.shape and mean.shape == rstd.shape == (3, 5)
    assert yr.shape == dxr.shape == x.shape and rstd_r.shape == (3, 5) and dwr.shape == (64,)
    assert rel_err(host(y), ref_y) < TOL[st.float32]
    np.testing.assert_array_equal(host(y).reshape(15, 64), host(y2))
    np.testing.assert_array_equal(host(rstd).reshape(15), host(rstd2))
    np.testing.assert_allclose(host(mean), f64(x).mean(-1), rtol=1e-5, atol=1e-6)
    assert rel_err(host(dx), ref_dx, dx_scale) < 4 * TOL[st.float32]
    assert rel_err(host(dw), ref_dw) < 4 * TOL[st.float32]
    assert rel_err(host(db), ref_db) < 4 * TOL[st.float32]
    ref_yr, grads_r = ln_ref(x, w, None, 1e-5, rms=True)
    ref_dxr, ref_dwr, _, scale_r = grads_r(g)
    assert rel_err(host(yr), ref_yr) < TOL[st.float32]
    assert rel_err(host(dxr), ref_dxr, scale_r) < 4 * TOL[st.float32]
    assert rel_err(host(dwr), ref_dwr) < 4 * TOL[st.float32]


def test_multi_axis_normalized_shape(device):
    r = np.random.default_rng(1)
    x = r.standard_normal((2, 3, 4, 5))
    w = r.standard_normal((4, 5))
    b = r.standard_normal((4, 5))
    y = layer_norm(st.tensor(x, device=device), (4, 5), st.tensor(w, device=device),
                   st.tensor(b, device=device))
    ref, _ = ln_ref(x.reshape(6, 20), w.reshape(20), b.reshape(20), 1e-5)
    np.testing.assert_allclose(y.numpy(), ref.reshape(x.shape), rtol=1e-10, atol=1e-10)


def test_weight_grads_deterministic(device):
    shape = (257, 512)
    runs = [run_norm(device, shape, st.float32, seed=5) for _ in range(2)]
    (_, x1, w1, b1), (_, x2, w2, b2) = runs
    for a, b in ((x1.grad, x2.grad), (w1.grad, w2.grad), (b1.grad, b2.grad)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_non_contiguous_input(device):
    r = np.random.default_rng(2)
    x = r.standard_normal((16, 6)).astype(np.float32)
    xt = st.tensor(x, device=device).T  # (6, 16), a transposed view
    y = layer_norm(xt, 16)
    ref, _ = ln_ref(x.T, None, None, 1e-5)
    assert rel_err(y, ref) < 1e-5


def test_empty_rows(device):
    x = st.zeros(0, 8, device=device, requires_grad=True)
    y = layer_norm(x, 8, st.ones(8, device=device), st.zeros(8, device=device))
    assert y.shape == (0, 8)
    y.sum().backward()
    assert x.grad.shape == (0, 8)


# ---- numerical gradients (float64, CPU), second order ----------
@pytest.mark.parametrize("shape", [(3, 5), (2, 2, 4), (1, 1)], ids=str)
def test_layer_norm_check_grad(shape):
    r = np.random.default_rng(0)
    n = shape[-1]
    args = [r.standard_normal(shape), r.uniform(0.5, 1.5, n), r.standard_normal(n)]
    grad_check(lambda x, w, b: layer_norm(x, n, w, b), *[st.tensor(a) for a in args],
               device=st.Device("cpu"))


def test_rms_norm_check_grad():
    r = np.random.default_rng(0)
    x, w = st.tensor(r.standard_normal((4, 6))), st.tensor(r.uniform(0.5, 1.5, 6))
    grad_check(lambda x, w: rms_norm(x, 6, w), x, w, device=st.Device("cpu"))


@pytest.mark.parametrize("rms", [False, True])
def test_second_order(rms):
    r = np.random.default_rng(4)
    x = st.tensor(r.standard_normal((3, 5)))
    w = st.tensor(r.uniform(0.5, 1.5, 5))
    f = (lambda x, w: rms_norm(x, 5, w)) if rms else (lambda x, w: layer_norm(x, 5, w))
    for argnum in (0, 1):
        g = second_order(f, argnum=argnum)
        grad_check(lambda x, w, g=g: g(x, w), x, w, device=st.Device("cpu"), rtol=1e-4)


# ---- torch.nn.functional cross-check ----------------------------------------------------------
@pytest.mark.skipif(torch is None, reason="torch is not installed")
def test_matches_torch():
    r = np.random.default_rng(7)
    x, w, b, g = (r.standard_normal(s) for s in ((4, 3, 10), (10,), (10,), (4, 3, 10)))
    ts = [torch.tensor(a, requires_grad=True) for a in (x, w, b)]
    TF.layer_norm(ts[0], (10,), ts[1], ts[2], eps=1e-5).backward(torch.tensor(g))
    ss = [st.tensor(a, requires_grad=True) for a in (x, w, b)]
    layer_norm(ss[0], 10, ss[1], ss[2]).backward(st.tensor(g))
    for s_, t_ in zip(ss, ts):
        np.testing.assert_allclose(s_.grad.numpy(), t_.grad.numpy(), rtol=1e-9, atol=1e-12)
    if hasattr(TF, "rms_norm"):
        tx = torch.tensor(x, requires_grad=True)
        TF.rms_norm(tx, (10,), torch.tensor(w), eps=1e-6).backward(torch.tensor(g))
        sx = st.tensor(x, requires_grad=True)
        rms_norm(sx, 10, st.tensor(w), eps=1e-6).backward(st.tensor(g))
        np.testing.assert_allclose(sx.grad.numpy(), tx.grad.numpy(), rtol=1e-9, atol=1e-12)


# ---- Hypothesis over shapes ----------
@PROPS
@given(lead=hs.lists(hs.integers(1, 5), min_size=0, max_size=2), n=hs.integers(1, 40),
       rms=hs.booleans(), affine=hs.booleans(), seed=hs.integers(0, 2**31))
def test_property_shapes(device, lead, n, rms, affine, seed):
    run_norm(device, (*lead, n), st.float32, affine=affine, rms=rms, seed=seed)


# ---- errors ----------
def test_errors():
    x = st.randn(2, 3)
    with pytest.raises(ValueError, match="trailing dimensions"):
        layer_norm(x, 4)
    with pytest.raises(ValueError, match="normalized_shape"):
        layer_norm(x, 3, st.ones(4))
    with pytest.raises(TypeError, match="floating"):
        rms_norm(st.tensor([[1, 2]]), 2)
    with pytest.raises(TypeError, match="normalized_shape"):
        layer_norm(x, "3")


# ---- fused softmax / log_softmax backward ----------
SOFTMAX_SHAPES = [(1, 8), (3, 5), (4, 768), (2, 4096), (2, 3, 33), (2, 20000), (130, 16)]


@pytest.mark.parametrize("shape", SOFTMAX_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [st.float32, st.bfloat16], ids=str)
@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
def test_softmax_fused(device, shape, dtype, log):
    r = np.random.default_rng(3)
    x = (r.standard_normal(shape) * 4).astype(dtype.np)
    g = r.standard_normal(shape).astype(dtype.np)
    xt = st.tensor(x, device=device, requires_grad=True)
    with poisoned(device):
        y = (st.log_softmax if log else st.softmax)(xt, axis=-1)
        y.backward(st.tensor(g, device=device))
    x64, g64 = f64(x), f64(g)
    lse = np.log(np.exp(x64 - x64.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
        + x64.max(-1, keepdims=True)
    p = np.exp(x64 - lse)
    ref_y = x64 - lse if log else p
    # the backward sees y rounded to the dtype: the reference does too
    yr = f64(y)
    ref_dx = g64 - np.exp(yr) * g64.sum(-1, keepdims=True) if log else \
        yr * (g64 - (g64 * yr).sum(-1, keepdims=True))
    scale = float(np.linalg.norm(np.exp(yr) * g64 if log else yr * g64))
    tol = TOL[dtype]
    assert rel_err(y, ref_y) < tol, rel_err(y, ref_y)
    assert rel_err(xt.grad, ref_dx, scale) < 4 * tol, rel_err(xt.grad, ref_dx, scale)


def test_softmax_other_axis_and_second_order():
    r = np.random.default_rng(5)
    x = st.tensor(r.standard_normal((3, 4, 5)))
    for log in (False, True):
        f = (lambda x, log=log: (st.log_softmax if log else st.softmax)(x, axis=1))
        grad_check(f, x, device=st.Device("cpu"))
        grad_check(second_order(f), x, device=st.Device("cpu"), rtol=1e-4)


def test_softmax_all_masked_row_is_nan(device):
    x = st.tensor(np.array([[-np.inf] * 8, [0.0] * 8], np.float32), device=device)
    y = st.softmax(x, axis=-1).numpy()
    assert np.isnan(y[0]).all() and np.allclose(y[1], 0.125)
