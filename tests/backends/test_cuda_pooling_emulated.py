"""The CUDA pooling / batch-norm / dropout path on the host, against the CPU backend.

``host_cuda`` compiles ``kernels/pooling.cu``, ``batchnorm.cu`` and ``dropout.cu`` with g++
and runs :class:`~scitensor.backends.cuda.pooling.CudaPoolingPrimitives` (the real host code:
fast-path choice, argument order, grids) on NumPy arrays; warp shuffles and block barriers
run on real threads. Outputs are poisoned (NaN / 0xFF) so an unwritten element fails.
Runs without a GPU; skipped without g++.
"""

from __future__ import annotations

import numpy as np
import pytest

import scitensor as st
from scitensor import dtypes as dt

from . import host_cuda

pytestmark = pytest.mark.skipif(host_cuda.GXX is None, reason="g++ is not on PATH")

BF16 = dt.bfloat16.np


class _PoisonedNumpy:
    """``numpy`` whose ``empty`` fills new arrays with 0xFF bytes (NaN for floats)."""

    def __getattr__(self, name):
        return getattr(np, name)

    empty = staticmethod(host_cuda.poisoned_empty(np.empty))


@pytest.fixture(scope="module")
def gpu():
    cls = host_cuda.host_backend_class()
    be = cls(st.Device("cpu"))
    be.xp = _PoisonedNumpy()
    return be


@pytest.fixture(scope="module")
def cpu():
    return st.Device("cpu").backend


def _x(rng, shape, dtype=np.float32, scale=1.0, offset=0.0):
    return (rng.standard_normal(shape) * scale + offset).astype(dtype)


def _close(a, b, dtype=np.float32):
    tol = {np.dtype(np.float32): 1e-5, np.dtype(BF16): 1e-2, np.dtype(np.float16): 2e-3}
    r = tol[np.dtype(dtype)]
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=r,
                               atol=r)


MAX_CASES = [  # shape, kernel, stride, padding, dilation, ceil_mode, expected kernel
    ((2, 3, 16, 16), (3, 3), (2, 2), (1, 1), (1, 1), False, "st_max_pool2d_k3s2p1_fwd"),
    ((2, 3, 8, 16), (2, 2), (2, 2), (0, 0), (1, 1), False, "st_pool2d_k2s2_fwd"),
    ((2, 3, 7, 12), (2, 2), (2, 2), (0, 0), (1, 1), False, "st_pool2d_k2s2_fwd"),
    ((2, 3, 9, 7), (3, 2), (2, 1), (1, 0), (2, 1), True, "st_max_pool2d_fwd_u8"),
    ((1, 2, 7, 9), (3, 3), (2, 2), (1, 1), (1, 1), True, "st_max_pool2d_fwd_u8"),
    ((1, 1, 20, 20), (17, 17), (3, 3), (8, 8), (1, 1), False, "st_max_pool2d_fwd_i32"),
]


@pytest.mark.parametrize("dtype", [np.float32, BF16], ids=["f32", "bf16"])
@pytest.mark.parametrize("case", MAX_CASES, ids=lambda c: c[-1] + str(c[0]))
def test_max_pool(gpu, cpu, case, dtype):
    shape, k, s, p, d, ceil, kernel = case
    rng = np.random.default_rng(0)
    x = np.round(_x(rng, shape) * 2).astype(dtype)  # many ties
    x.reshape(-1)[5] = np.nan
    x[-1, -1, :3, :3] = -np.inf  # windows of -inf next to padding: padding must not win
    y, arg = gpu.max_pool2d(x, k, s, p, d, ceil, True)
    y_ref, arg_ref = cpu.max_pool2d(x, k, s, p, d, ceil, True)
    if kernel == "st_pool2d_k2s2_fwd" and dtype == np.float32:
        kernel += "_f32q"  # float32 takes the 4-columns-a-thread variant
    if kernel == "st_pool2d_k2s2_fwd" and shape[3] % 8:
        kernel = "st_max_pool2d_fwd_u8"  # the 16-bit variant needs W % 8 == 0
    assert kernel in gpu.launched()
    np.testing.assert_array_equal(y.astype(np.float32), y_ref.astype(np.float32))
    np.testing.assert_array_equal(arg, arg_ref)
    y2, none = gpu.max_pool2d(x, k, s, p, d, ceil, False)
    assert none is None
    np.testing.assert_array_equal(y2.astype(np.float32), y_ref.astype(np.float32))
    g = _x(rng, y.shape, dtype)
    dx = gpu.max_pool2d_backward(g, arg, shape[2:], k, s, p, d)
    _close(dx, cpu.max_pool2d_backward(g, arg_ref, shape[2:], k, s, p, d), dtype)


def test_max_pool_fast_backward_kernels(gpu, cpu):
    rng = np.random.default_rng(1)
    for shape, k, s, p, name in [((2, 2, 11, 12), (3, 3), (2, 2), (1, 1),
                                  "st_max_pool2d_k3s2p1_bwd"),
                                 ((2, 2, 9, 12), (2, 2), (2, 2), (0, 0), "st_pool2d_k2s2_bwd")]:
        for ceil in (False, True):
            x = np.round(_x(rng, shape) * 2).astype(np.float32)
            y, arg = cpu.max_pool2d(x, k, s, p, (1, 1), ceil, True)
            g = _x(rng, y.shape)
            dx = gpu.max_pool2d_backward(g, arg, shape[2:], k, s, p, (1, 1))
            assert name in gpu.launched()
            _close(dx, cpu.max_pool2d_backward(g, arg, shape[2:], k, s, p, (1, 1)))


AVG_CASES = [  # shape, kernel, stride, padding, ceil_mode, count_include_pad, divisor
    ((2, 3, 8, 16), (2, 2), (2, 2), (0, 0), False, True, None),
    ((2, 3, 9, 16), (2, 2), (2, 2), (0, 0), False, False, 3),
    ((2, 3, 7, 12), (2, 2), (2, 2), (0, 0), False, True, None),
    ((2, 3, 9, 7), (3, 2), (2, 1), (1, 1), True, True, None),
    ((2, 3, 9, 7), (3, 3), (2, 2), (1, 1), True, False, None),
    ((1, 2, 5, 6), (2, 2), (2, 2), (0, 0), True, True, None),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["f32", "f16"])
@pytest.mark.parametrize("case", AVG_CASES, ids=str)
def test_avg_pool(gpu, cpu, case, dtype):
    shape, k, s, p, ceil, cip, div = case
    rng = np.random.default_rng(2)
    x = _x(rng, shape, dtype)
    y = gpu.avg_pool2d(x, k, s, p, ceil, cip, div)
    _close(y, cpu.avg_pool2d(x, k, s, p, ceil, cip, div), dtype)
    if k == (2, 2) and s == (2, 2) and shape[3] % 4 == 0 and dtype == np.float32:
        assert "st_pool2d_k2s2_fwd_f32q" in gpu.launched()
    g = _x(rng, y.shape, dtype)
    dx = gpu.avg_pool2d_backward(g, shape[2:], k, s, p, cip, div)
    _close(dx, cpu.avg_pool2d_backward(g, shape[2:], k, s, p, cip, div), dtype)


@pytest.mark.parametrize("shape,out", [((2, 3, 7, 9), (3, 4)), ((2, 3, 8, 8), (1, 1)),
                                       ((3, 5, 5, 3), (1, 1)), ((1, 2, 3, 3), (5, 7))])
def test_adaptive_avg_pool(gpu, cpu, shape, out):
    rng = np.random.default_rng(3)
    x = _x(rng, shape)
    y = gpu.adaptive_avg_pool2d(x, out)
    _close(y, cpu.adaptive_avg_pool2d(x, out))
    g = _x(rng, y.shape)
    _close(gpu.adaptive_avg_pool2d_backward(g, shape[2:]),
           cpu.adaptive_avg_pool2d_backward(g, shape[2:]))


BN_SHAPES = [(4, 3, 8, 8), (5, 2, 3, 7), (16, 4), (3, 2, 37)]


@pytest.mark.parametrize("dtype", [np.float32, BF16], ids=["f32", "bf16"])
@pytest.mark.parametrize("shape", BN_SHAPES, ids=str)
def test_batch_norm_train(gpu, cpu, shape, dtype):
    rng = np.random.default_rng(4)
    x = _x(rng, shape, dtype, scale=2.0, offset=3.0)
    c = shape[1]
    w, b = _x(rng, (c,)), _x(rng, (c,))
    for weight, bias in ((w, b), (None, None)):
        y, mean, var, invstd = gpu.batch_norm_train_forward(x, weight, bias, 1e-5)
        y_r, mean_r, var_r, invstd_r = cpu.batch_norm_train_forward(x, weight, bias, 1e-5)
        for a, r in ((y, y_r), (mean, mean_r), (var, var_r), (invstd, invstd_r)):
            _close(a, r, dtype if a is y else np.float32)
        g = _x(rng, shape, dtype)
        got = gpu.batch_norm_backward(g, x, mean, invstd, weight)
        ref = cpu.batch_norm_backward(g, x, mean_r, invstd_r, weight)
        for a, r in zip(got, ref):
            _close(a, r, dtype if a is got[0] else np.float32)
    assert {"st_bn_stats_partial", "st_bn_bwd_apply"} <= gpu.launched()


def test_batch_norm_stats_are_stable_far_from_zero(gpu):
    rng = np.random.default_rng(5)
    x = _x(rng, (32, 2, 9, 16), scale=0.01, offset=1000.0)
    _, mean, var, _ = gpu.batch_norm_train_forward(x, None, None, 0.0)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(mean, x64.mean(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(var, x64.var(axis=(0, 2, 3)), rtol=1e-3)


def test_channel_affine_and_dropout(gpu, cpu):
    rng = np.random.default_rng(6)
    for shape in [(2, 3, 4, 4), (3, 5, 7)]:
        x = _x(rng, shape)
        scale, shift = _x(rng, (shape[1],)), _x(rng, (shape[1],))
        _close(gpu.channel_affine(x, scale, shift), cpu.channel_affine(x, scale, shift))
        mask = rng.random(shape) < 0.7
        x.reshape(-1)[0] = np.nan
        _close(gpu.dropout_apply(x, mask, 1 / 0.7), cpu.dropout_apply(x, mask, 1 / 0.7))
    assert {"st_bn_apply", "st_dropout_apply"} <= gpu.launched()


def test_float64_falls_back_to_xp(gpu, cpu):
    x = np.random.default_rng(7).standard_normal((1, 2, 6, 6))
    np.testing.assert_array_equal(gpu.avg_pool2d(x, (2, 2), (2, 2), (0, 0), False, True, None),
                                  cpu.avg_pool2d(x, (2, 2), (2, 2), (0, 0), False, True, None))


@pytest.mark.parametrize("rdtype", [np.float32, BF16, np.float16], ids=["f32", "bf16", "f16"])
def test_batch_norm_update_running_one_launch(gpu, cpu, rdtype):
    rng = np.random.default_rng(8)
    c, count, m = 37, 50, 0.3
    x = _x(rng, (10, c, 5), scale=2.0, offset=1.0)
    _, mean, var, _ = gpu.batch_norm_train_forward(x, None, None, 1e-5)
    rm0 = _x(rng, (c,)).astype(rdtype)
    rv0 = (np.abs(_x(rng, (c,))) + 0.5).astype(rdtype)
    got = {"rm": rm0.copy(), "rv": rv0.copy(), "n": np.array(4, np.int64)}
    ref = {"rm": rm0.copy(), "rv": rv0.copy(), "n": np.array(4, np.int64)}
    kernel = gpu.kernels.get(("batchnorm.cu", 2, "st_bn_update_running"))
    before = len(kernel.launches) if kernel else 0
    gpu.batch_norm_update_running_inplace(got["rm"], got["rv"], mean, var, m, count, got["n"])
    cpu.batch_norm_update_running_inplace(ref["rm"], ref["rv"], mean, var, m, count, ref["n"])
    assert len(gpu.kernels[("batchnorm.cu", 2, "st_bn_update_running")].launches) == before + 1
    assert got["n"] == ref["n"] == 5
    # the CPU primitive's arithmetic (float32, one rounding per operation): equal up to the
    # GPU's fused multiply-add (one float32 ulp, one ulp of a 16-bit type after rounding)
    ulp = {np.dtype(np.float32): 2e-7, np.dtype(BF16): 8e-3, np.dtype(np.float16): 1e-3}
    tol = ulp[np.dtype(rdtype)]
    for k in ("rm", "rv"):
        np.testing.assert_allclose(got[k].astype(np.float64), ref[k].astype(np.float64),
                                   rtol=tol, atol=0)
    # and the rule itself, in float64
    m64, v64 = mean.astype(np.float64), var.astype(np.float64) * count / (count - 1)
    np.testing.assert_allclose(got["rm"].astype(np.float64),
                               (1 - m) * rm0.astype(np.float64) + m * m64, rtol=2 * tol,
                               atol=1e-6)
    np.testing.assert_allclose(got["rv"].astype(np.float64),
                               (1 - m) * rv0.astype(np.float64) + m * v64, rtol=2 * tol)


def test_batch_norm_update_running_partial_and_fallbacks(gpu, cpu):
    rng = np.random.default_rng(9)
    c = 6
    x = _x(rng, (4, c, 3))
    _, mean, var, _ = gpu.batch_norm_train_forward(x, None, None, 1e-5)
    # only the variance, no counter; only the counter
    rv, rv_ref = np.ones(c, np.float32), np.ones(c, np.float32)
    gpu.batch_norm_update_running_inplace(None, rv, mean, var, 0.1, 12)
    cpu.batch_norm_update_running_inplace(None, rv_ref, mean, var, 0.1, 12)
    np.testing.assert_allclose(rv, rv_ref, rtol=2e-7)
    n = np.array(7, np.int64)
    gpu.batch_norm_update_running_inplace(None, None, mean, var, 0.1, 12, n)
    assert n == 8
    # float64 and strided running arrays take the CPU-style path, still in place
    rm64 = np.zeros(c)
    strided = np.zeros(2 * c, np.float32)[::2]
    gpu.batch_norm_update_running_inplace(rm64, strided, mean, var, 0.5, 12, n)
    np.testing.assert_allclose(rm64, 0.5 * mean.astype(np.float64), rtol=1e-7)
    np.testing.assert_allclose(strided, 0.5 * var * (12 / 11), rtol=1e-6)
    assert n == 9
