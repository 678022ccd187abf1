"""The host fast paths of the NumPy-API primitives (``backends/xp_conv.py``,
``xp_pooling.py``, ``xp_batchnorm.py``) against float64 references: convolutions split into
many chunks of samples (a partial last chunk included), max pooling with disjoint windows
(NaN inputs and non-finite cotangents), and batch norm far from zero.
"""

from __future__ import annotations

import numpy as np
import pytest

import scitensor as st
import scitensor.backends.xp_conv as xp_conv
from scitensor.ops.batchnorm import batch_norm
from scitensor.ops.conv import conv2d, conv2d_weight, conv_transpose2d
from scitensor.ops.pooling import max_pool2d
from tests.ops.test_conv import ref_conv2d, ref_conv_transpose2d


@pytest.fixture
def tiny_chunks(monkeypatch):
    """Chunks of one or two samples, so a batch of 5 crosses several chunk boundaries."""
    monkeypatch.setattr(xp_conv, "_CHUNK_BYTES", 1)
    yield


GEOMETRIES = [  # stride, padding, dilation, groups
    ((1, 1), 1, (1, 1), 1),
    ((2, 1), (0, 2), (1, 2), 1),
    ((1, 2), 2, (2, 1), 2),
    ((3, 3), 0, (1, 1), 3),
    ((1, 1), (2, 0), (2, 3), 2),
    ((1, 1), (0, 2), (2, 3), 1),
    ((1, 1), (3, 1), (1, 1), 1),  # padding past the kernel's reach: the strided adjoint
]


@pytest.mark.parametrize("chunk_bytes", [1, 3 * 4 * 9 * 4 * 4 * 2])
@pytest.mark.parametrize("geo", GEOMETRIES)
def test_conv_chunks_match_reference(monkeypatch, chunk_bytes, geo):
    monkeypatch.setattr(xp_conv, "_CHUNK_BYTES", chunk_bytes)
    stride, padding, dil, groups = geo
    r = np.random.default_rng(7)
    x = r.standard_normal((5, 6, 9, 8))
    w = r.standard_normal((6, 6 // groups, 3, 3))
    b = r.standard_normal(6)
    y = conv2d(st.tensor(x), st.tensor(w), st.tensor(b), stride, padding, dil, groups)
    y_ref = ref_conv2d(x, w, b, stride, padding, dil, groups)
    np.testing.assert_allclose(y.numpy(), y_ref, rtol=1e-10, atol=1e-10)
    # weight gradient: <gy, conv2d(x, dW)> is linear in dW; check against the reference's
    # directional derivatives through an explicit sum over samples and pixels
    gy = r.standard_normal(y_ref.shape)
    dw = conv2d_weight(st.tensor(x), st.tensor(gy), 3, stride, padding, dil, groups).numpy()
    dw_ref = np.zeros_like(w)
    for idx in np.ndindex(*w.shape):
        e = np.zeros_like(w)
        e[idx] = 1.0
        dw_ref[idx] = (ref_conv2d(x, e, None, stride, padding, dil, groups) * gy).sum()
    np.testing.assert_allclose(dw, dw_ref, rtol=1e-10, atol=1e-10)
    # input gradient = the transposed convolution of gy
    xt = st.tensor(x, requires_grad=True)
    (conv2d(xt, st.tensor(w), None, stride, padding, dil, groups) * st.tensor(gy)).sum().backward()
    dx_ref = np.zeros_like(x)
    for idx in np.ndindex(*x.shape[1:]):
        e = np.zeros((1,) + x.shape[1:])
        e[(0,) + idx] = 1.0
        dx_ref[(slice(None),) + idx] = (ref_conv2d(e, w, None, stride, padding, dil, groups)
                                        * gy).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(xt.grad.numpy(), dx_ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", [st.float32, st.float16])
def test_conv_transpose_chunks_with_bias(tiny_chunks, dtype):
    r = np.random.default_rng(8)
    x = r.standard_normal((5, 4, 4, 5)).astype(dtype.np)
    w = r.standard_normal((4, 3, 3, 2)).astype(dtype.np)
    b = r.standard_normal(3).astype(dtype.np)
    for stride, opad, dil in (((2, 2), (1, 1), (1, 1)), ((1, 1), (1, 0), (2, 1))):
        y = conv_transpose2d(st.tensor(x), st.tensor(w), st.tensor(b), stride, 1, opad,
                             dilation=dil)
        ref = ref_conv_transpose2d(x.astype(np.float64), w.astype(np.float64),
                                   b.astype(np.float64), stride, (1, 1), opad, dil, 1)
        assert y.dtype is dtype
        tol = 1e-5 if dtype is st.float32 else 1e-2
        np.testing.assert_allclose(y.numpy().astype(np.float64), ref, rtol=tol, atol=tol * 10)


def test_conv_empty_batch_weight_grad(tiny_chunks):
    x = st.zeros(0, 3, 5, 5, requires_grad=True)
    w = st.ones(4, 3, 3, 3, requires_grad=True)
    conv2d(x, w, padding=1).sum().backward()
    assert x.grad.shape == (0, 3, 5, 5)
    assert w.grad.shape == (4, 3, 3, 3) and not w.grad.numpy().any()


def _max_pool_ref(x, k):
    """Values and within-window argmax (first maximum, NaN largest) of disjoint k x k
    windows."""
    n, c, h, w = x.shape
    oh, ow = h // k, w // k
    win = x[:, :, :oh * k, :ow * k].reshape(n, c, oh, k, ow, k).transpose(0, 1, 2, 4, 3, 5)
    win = win.reshape(n, c, oh, ow, k * k)
    arg = np.argmax(np.where(np.isnan(win), np.inf, win), axis=-1)
    nan_first = np.argmax(np.isnan(win), axis=-1)
    arg = np.where(np.isnan(win).any(axis=-1), nan_first, arg)
    return np.take_along_axis(win, arg[..., None], -1)[..., 0], arg


@pytest.mark.parametrize("k", [2, 3])
def test_max_pool_disjoint_windows_nan_and_grad(k):
    r = np.random.default_rng(9)
    x = r.integers(-3, 3, size=(2, 3, 7, 8)).astype(np.float64)  # many ties
    x[0, 0, 0, 1] = np.nan
    x[1, 2, 4:6, 3] = np.nan
    xt = st.tensor(x, requires_grad=True)
    y, idx = max_pool2d(xt, k, return_indices=True)
    y_ref, arg = _max_pool_ref(x, k)
    np.testing.assert_array_equal(y.numpy(), y_ref)
    oh, ow = y_ref.shape[2:]
    rows = np.arange(oh)[:, None] * k + arg // k
    cols = np.arange(ow)[None, :] * k + arg % k
    np.testing.assert_array_equal(idx.numpy(), rows * x.shape[3] + cols)
    # cotangents with inf and NaN: each goes to its window's maximum only
    g = r.standard_normal(y_ref.shape)
    g[0, 1, 0, 0] = np.inf
    g[1, 0, 1, 1] = np.nan
    (y * st.tensor(g)).sum().backward()
    dx = np.zeros_like(x)
    flat = dx.reshape(2, 3, -1)
    np.put_along_axis(flat, (rows * x.shape[3] + cols).reshape(2, 3, -1), g.reshape(2, 3, -1),
                      axis=-1)
    np.testing.assert_array_equal(xt.grad.numpy(), dx)


def test_max_pool_float32_without_grad_matches_reference():
    r = np.random.default_rng(10)
    x = r.standard_normal((3, 2, 8, 6)).astype(np.float32)
    with st.no_grad():
        y = max_pool2d(st.tensor(x), 2)
    np.testing.assert_array_equal(y.numpy(), _max_pool_ref(x, 2)[0])


@pytest.mark.parametrize("offset", [0.0, 1e3])
def test_batch_norm_two_pass_statistics(offset):
    r = np.random.default_rng(11)
    x = (r.standard_normal((4, 3, 5, 6)) * 0.5 + offset).astype(np.float32)
    w = r.standard_normal(3).astype(np.float32)
    b = r.standard_normal(3).astype(np.float32)
    xt = st.tensor(x, requires_grad=True)
    wt, bt = st.tensor(w, requires_grad=True), st.tensor(b, requires_grad=True)
    y = batch_norm(xt, None, None, wt, bt, training=True, eps=1e-5)
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=(0, 2, 3), keepdims=True)
    var = x64.var(axis=(0, 2, 3), keepdims=True)
    xhat = (x64 - mean) / np.sqrt(var + 1e-5)
    ref = xhat * w.reshape(1, -1, 1, 1) + b.reshape(1, -1, 1, 1)
    # at offset 1e3 one float32 ulp of the mean is 6e-5 (1.2e-4 std); E[x^2] - E[x]^2 in
    # float32 would lose the variance (0.25 against an ulp of 0.06 for 1e6) entirely
    tol = 1e-4 if offset == 0 else 1e-3
    np.testing.assert_allclose(y.numpy(), ref, rtol=tol, atol=tol)
    g = r.standard_normal(x.shape)
    (y * st.tensor(g.astype(np.float32))).sum().backward()
    m = x.size // 3
    gs = g.sum(axis=(0, 2, 3), keepdims=True)
    gx = (g * xhat).sum(axis=(0, 2, 3), keepdims=True)
    dx = w.reshape(1, -1, 1, 1) / np.sqrt(var + 1e-5) * (g - gs / m - xhat * gx / m)
    np.testing.assert_allclose(xt.grad.numpy(), dx, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(wt.grad.numpy(), gx.ravel(), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(bt.grad.numpy(), gs.ravel(), rtol=1e-5, atol=1e-4)

