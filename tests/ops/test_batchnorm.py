"""batch_norm: training and evaluation forward, gradients (fused and composed/second order),
running statistics against float64 references and PyTorch, stability, errors, Hypothesis over
shapes, and the device (GPU) path against the CPU with poisoned outputs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

import scitensor as st
from scitensor.ops.batchnorm import batch_norm
from scitensor.testing import check_grad

from .helpers import poisoned
from .pooling_refs import TF, ref_batch_norm_grads, ref_batch_norm_train, torch

HSET = settings(max_examples=25, deadline=None)
SHAPES = [(4, 3), (5, 2, 7), (3, 4, 5, 6), (2, 3, 1, 1), (2, 2, 3, 2, 2)]


def arr(shape, seed=0, scale=1.0, offset=0.0):
    return np.random.default_rng(seed).standard_normal(shape) * scale + offset


def t64(a, **kw):
    return st.tensor(a, dtype=st.float64, **kw)


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_training_forward_backward_and_running_stats(shape, affine):
    c = shape[1]
    x = arr(shape, scale=2.0, offset=1.5)
    w, b = (arr((c,), seed=1), arr((c,), seed=2)) if affine else (None, None)
    rm0, rv0 = arr((c,), seed=3), np.abs(arr((c,), seed=4)) + 0.5
    rm, rv = t64(rm0), t64(rv0)
    xt = t64(x, requires_grad=True)
    wt = None if w is None else t64(w, requires_grad=True)
    bt = None if b is None else t64(b, requires_grad=True)
    y = batch_norm(xt, rm, rv, wt, bt, training=True, momentum=0.2, eps=1e-3)
    y_ref, mean, var = ref_batch_norm_train(x, w, b, 1e-3)
    np.testing.assert_allclose(y.numpy(), y_ref, rtol=1e-10, atol=1e-12)
    n = x.size // c
    np.testing.assert_allclose(rm.numpy(), 0.8 * rm0 + 0.2 * mean, rtol=1e-12)
    np.testing.assert_allclose(rv.numpy(), 0.8 * rv0 + 0.2 * var * n / (n - 1), rtol=1e-12)
    g = arr(shape, seed=5)
    y.backward(st.tensor(g))
    dx, dw, db = ref_batch_norm_grads(g, x, w, 1e-3)
    np.testing.assert_allclose(xt.grad.numpy(), dx, rtol=1e-8, atol=1e-10)
    if affine:
        np.testing.assert_allclose(wt.grad.numpy(), dw, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(bt.grad.numpy(), db, rtol=1e-10, atol=1e-12)


def test_grad_check_training_and_eval():
    x, w, b = t64(arr((4, 3, 2, 3), seed=6)), t64(arr((3,), seed=7)), t64(arr((3,), seed=8))
    rm, rv = t64(arr((3,), seed=9)), t64(np.abs(arr((3,), seed=10)) + 0.5)

    def train(x, w, b):
        return batch_norm(x, None, None, w, b, training=True, eps=1e-3)

    def evaluate(x, w, b):
        return batch_norm(x, rm, rv, w, b, training=False, eps=1e-3)

    assert check_grad(train, x, w, b)
    assert check_grad(evaluate, x, w, b)
    assert check_grad(lambda x: batch_norm(x, None, None, training=True), x)


def test_second_order_through_composed_backward():
    x, w = t64(arr((3, 2, 4), seed=11)), t64(arr((2,), seed=12))
    cot = t64(arr((3, 2, 4), seed=13))

    def grad_x(x, w):
        return st.grad(lambda a, b: (batch_norm(a, None, None, b, None, True) * cot).sum(),
                       argnums=(0, 1))(x, w)[0]

    assert check_grad(grad_x, x, w, rtol=1e-4)


@pytest.mark.skipif(torch is None, reason="torch is not installed")
@pytest.mark.parametrize("training", [True, False])
def test_matches_torch(training):
    x = arr((4, 3, 5, 5), seed=14)
    w, b = arr((3,), seed=15), arr((3,), seed=16)
    rm0, rv0 = arr((3,), seed=17), np.abs(arr((3,), seed=18)) + 0.5
    rm, rv = t64(rm0), t64(rv0)
    xt, wt, bt = (t64(a, requires_grad=True) for a in (x, w, b))
    y = batch_norm(xt, rm, rv, wt, bt, training, 0.3, 1e-4)
    g = arr(y.shape, seed=19)
    y.backward(st.tensor(g))
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    trm, trv = torch.tensor(rm0), torch.tensor(rv0)
    ty = TF.batch_norm(tx, trm, trv, tw, tb, training, 0.3, 1e-4)
    ty.backward(torch.tensor(g))
    for ours, theirs in [(y, ty), (rm, trm), (rv, trv), (xt.grad, tx.grad), (wt.grad, tw.grad),
                         (bt.grad, tb.grad)]:
        np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), rtol=1e-9,
                                   atol=1e-11)


def test_evaluation_uses_running_stats():
    x = arr((2, 3, 4), seed=20)
    rm, rv = arr((3,), seed=21), np.abs(arr((3,), seed=22)) + 0.5
    y = batch_norm(t64(x), t64(rm), t64(rv), training=False, eps=1e-5)
    ref = (x - rm[None, :, None]) / np.sqrt(rv[None, :, None] + 1e-5)
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-12)


@pytest.mark.parametrize("dtype,tol", [(st.float32, 1e-3), (st.float16, 5e-3),
                                       (st.bfloat16, 3e-2)])
def test_low_precision_and_stability(dtype, tol):
    # mean far from zero: one float32 ulp of the mean (7.6e-6) is 1.5e-4 std here, while a
    # naive E[x^2] - E[x]^2 would lose the variance (0.0025) entirely
    x = arr((16, 3, 6, 6), seed=23, scale=0.05, offset=100.0)
    xd = st.tensor(x, dtype=dtype)
    x_rounded = xd.astype(st.float64).numpy()
    rm, rv = st.zeros(3), st.ones(3)
    y = batch_norm(xd, rm, rv, training=True)
    assert y.dtype == dtype and rm.dtype == st.float32
    y_ref, mean, var = ref_batch_norm_train(x_rounded, None, None, 1e-5)
    np.testing.assert_allclose(y.astype(st.float64).numpy(), y_ref, rtol=tol, atol=tol)
    np.testing.assert_allclose(rm.numpy(), 0.1 * mean, rtol=1e-5)


@pytest.mark.parametrize("call,err,match", [
    (lambda x: batch_norm(x[:1, :, :1, :1], None, None, training=True), ValueError,
     "more than 1 value per channel"),
    (lambda x: batch_norm(x, None, None), ValueError, "required in evaluation mode"),
    (lambda x: batch_norm(x, st.zeros(4), st.ones(3), training=True), ValueError,
     r"expected shape \(3,\)"),
    (lambda x: batch_norm(x.reshape(-1), None, None, training=True), ValueError, r"\(N, C"),
    (lambda x: batch_norm(x.astype(st.int64), None, None, training=True), TypeError,
     "floating"),
    (lambda x: batch_norm(x, None, None, weight=[1.0], training=True), TypeError,
     "Tensor or None"),
])
def test_errors(call, err, match):
    with pytest.raises(err, match=match):
        call(st.ones(2, 3, 2, 2))


@HSET
@given(n=hs.integers(1, 4), c=hs.integers(1, 3), spatial=hs.lists(hs.integers(1, 4),
                                                                    max_size=2),
       offset=hs.sampled_from([0.0, 50.0]), momentum=hs.floats(0.0, 1.0))
def test_property_normalized_output(n, c, spatial, offset, momentum):
    shape = (n, c, *spatial)
    if np.prod(shape) // c < 2:
        return
    x = arr(shape, seed=n * 7 + c, offset=offset)
    rm, rv = t64(np.zeros(c)), t64(np.ones(c))
    y = batch_norm(t64(x), rm, rv, training=True, momentum=momentum, eps=1e-5).numpy()
    y_ref, mean, var = ref_batch_norm_train(x, None, None, 1e-5)
    np.testing.assert_allclose(y, y_ref, rtol=1e-8, atol=1e-8)
    m = x.size // c
    np.testing.assert_allclose(rm.numpy(), momentum * mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(rv.numpy(), (1 - momentum) + momentum * var * m / (m - 1),
                               rtol=1e-10)


@pytest.mark.parametrize("dtype", [st.float32, st.bfloat16, st.float16, st.float64])
@pytest.mark.parametrize("shape", [(8, 4, 8, 8), (5, 3, 3, 7), (16, 6)], ids=str)
def test_device_matches_cpu(device, dtype, shape):
    c = shape[1]
    x = st.tensor(arr(shape, seed=24, scale=2.0, offset=1.0), dtype=dtype)
    g = st.tensor(arr(shape, seed=25), dtype=dtype)
    w, b = arr((c,), seed=26), arr((c,), seed=27)
    tol = {st.float32: 1e-4, st.float64: 1e-10, st.float16: 1e-2, st.bfloat16: 5e-2}[dtype]
    results = []
    for dev in (st.Device("cpu"), device):
        xd = st.tensor(x.numpy(), dtype=dtype, device=dev, requires_grad=True)
        wd = st.tensor(w, device=dev, requires_grad=True)
        bd = st.tensor(b, device=dev, requires_grad=True)
        rm, rv = st.zeros(c, device=dev), st.ones(c, device=dev)
        with poisoned(dev):
            y = batch_norm(xd, rm, rv, wd, bd, training=True)
            y.backward(g.to(dev))
            y_eval = batch_norm(xd, rm, rv, wd, bd, training=False)
        results.append([a.astype(st.float64).numpy() for a in
                        (y, xd.grad, wd.grad, bd.grad, rm, rv, y_eval)])
    for cpu_val, dev_val in zip(*results):
        np.testing.assert_allclose(dev_val, cpu_val, rtol=tol, atol=tol)


def test_num_batches_tracked_counts_training_steps_only():
    x = t64(arr((4, 3, 2), seed=28))
    rm, rv = t64(np.zeros(3)), t64(np.ones(3))
    seen = st.zeros((), dtype=st.int64)
    for _ in range(3):
        batch_norm(x, rm, rv, training=True, num_batches_tracked=seen)
    batch_norm(x, rm, rv, training=False, num_batches_tracked=seen)
    batch_norm(x, None, None, training=True, num_batches_tracked=seen)  # counts alone
    assert seen.item() == 4
    m = x.numpy().mean(axis=(0, 2))
    np.testing.assert_allclose(rm.numpy(), (1 - 0.9 ** 3) * m, rtol=1e-12)


@pytest.mark.parametrize("counter,err,match", [
    (3, TypeError, "Tensor or None"),
    (st.zeros(()), ValueError, "integer scalar"),
    (st.zeros(2, dtype=st.int64), ValueError, "integer scalar"),
])
def test_num_batches_tracked_errors(counter, err, match):
    with pytest.raises(err, match=match):
        batch_norm(st.ones(2, 3), None, None, training=True, num_batches_tracked=counter)


@pytest.mark.parametrize("rdtype", [st.float32, st.bfloat16, st.float64])
@pytest.mark.parametrize("dtype", [st.float32, st.bfloat16])
def test_device_running_stats_and_counter_over_steps(device, dtype, rdtype):
    """The running-statistics update (one kernel on CUDA for 16/32-bit running arrays, the
    CPU-style path for float64 ones) and the counter agree with the CPU over several steps."""
    c = 5
    xs = [arr((6, c, 3, 4), seed=30 + i, scale=1.0 + i, offset=i) for i in range(3)]
    tol = max({st.float32: 1e-4, st.bfloat16: 3e-2}[dtype],
              {st.float32: 1e-4, st.float64: 1e-4, st.bfloat16: 1e-2}[rdtype])
    out = []
    for dev in (st.Device("cpu"), device):
        rm = st.tensor(arr((c,), seed=29), dtype=rdtype, device=dev)
        rv = st.ones(c, dtype=rdtype, device=dev)
        seen = st.zeros((), dtype=st.int64, device=dev)
        for a in xs:
            batch_norm(st.tensor(a, dtype=dtype, device=dev), rm, rv, training=True,
                       momentum=0.25, num_batches_tracked=seen)
        assert rm.dtype == rdtype and seen.item() == 3
        out.append([rm.astype(st.float64).numpy(), rv.astype(st.float64).numpy()])
    for cpu_val, dev_val in zip(*out):
        np.testing.assert_allclose(dev_val, cpu_val, rtol=tol, atol=tol)
