"""Fused cross_entropy: forward and gradient against float64 NumPy references (and
torch.nn.functional.cross_entropy when torch imports) with every reduction, ignore_index and
label smoothing; numerical gradient checks and second order (create_graph fallback);
Hypothesis over shapes; the device (CUDA kernel) path with poisoned outputs.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as hs

import scitensor as st
from scitensor.nn import functional as F
from scitensor.ops.losses import cross_entropy

from .helpers import PROPS, f64, grad_check, poisoned, second_order

try:
    import torch
    import torch.nn.functional as TF
except ImportError:  # pragma: no cover - torch is optional
    torch = None

TOL = {st.float64: 1e-10, st.float32: 2e-5, st.float16: 2e-3, st.bfloat16: 1.6e-2}


def ce_ref(x, labels, reduction="mean", ignore_index=-100, smoothing=0.0):
    """Loss, d(loss)/d(logits), and the softmax term of the latter (which the target term
    cancels), in float64; classes on the last axis."""
    x = f64(x)
    c = x.shape[-1]
    m = x.max(-1, keepdims=True)
    lse = np.log(np.exp(x - m).sum(-1, keepdims=True)) + m
    logp = x - lse
    valid = labels != ignore_index
    safe = np.where(valid, labels, 0)
    onehot = np.zeros(x.shape)
    np.put_along_axis(onehot, safe[..., None], 1.0, axis=-1)
    target = (1 - smoothing) * onehot + smoothing / c
    rows = -(target * logp).sum(-1) * valid
    p = np.exp(logp) * valid[..., None]
    d = p - target * valid[..., None]
    if reduction == "none":
        return rows, d, p
    if reduction == "sum":
        return rows.sum(), d, p
    count = valid.sum()
    return rows.sum() / count, d / count, p / count


def rel_err(got, ref, scale=0.0) -> float:
    """||got - ref|| / max(||ref||, scale): ``scale`` is the size of the terms that cancel
    (one class gives an exactly-zero loss and gradient)."""
    got, ref = f64(got), np.asarray(ref, np.float64)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    if not np.all(np.isfinite(got)):
        return float("inf")
    return float(np.linalg.norm(got - ref) / max(np.linalg.norm(ref), scale, 1e-30))


def make_case(shape, dtype, seed=0, ignore_frac=0.0, ignore_index=-100, scale=3.0):
    r = np.random.default_rng(seed)
    x = (r.standard_normal(shape) * scale).astype(dtype.np)
    labels = r.integers(0, shape[-1], size=shape[:-1])
    labels = np.where(r.random(shape[:-1]) < ignore_frac, ignore_index, labels)
    return x, labels.astype(np.int64)


def run_ce(device, shape, dtype, reduction="mean", smoothing=0.0, ignore_frac=0.2, seed=0,
           ignore_index=-100, label_dtype=st.int64):
    x, labels = make_case(shape, dtype, seed, ignore_frac, ignore_index)
    if reduction == "mean" and labels.size and np.all(labels == ignore_index):
        labels.reshape(-1)[0] = 0  # an all-ignored mean is NaN: tested on its own
    xt = st.tensor(x, device=device, requires_grad=True)
    lt = st.tensor(labels, dtype=label_dtype, device=device)
    with poisoned(device):
        loss = cross_entropy(xt, lt, reduction=reduction, ignore_index=ignore_index,
                             label_smoothing=smoothing)
        g = np.random.default_rng(seed + 1).standard_normal(loss.shape)
        loss.backward(st.tensor(g, dtype=loss.dtype, device=device))
    ref, d, p = ce_ref(x, labels, reduction, ignore_index, smoothing)
    g64 = f64(st.tensor(g, dtype=loss.dtype))
    gb = g64[..., None] if reduction == "none" else g64
    ref_dx = d * gb
    assert loss.dtype is dtype and loss.shape == np.shape(ref)
    tol = TOL[dtype]
    # loss = lse - x[label] cancels: the size of those terms, reduced like the loss
    big = np.abs(f64(x)).max(-1) * (labels != ignore_index)
    lse_scale = float(np.linalg.norm(big) if reduction == "none" else
                      big.sum() / (max(1, (labels != ignore_index).sum())
                                   if reduction == "mean" else 1))
    assert rel_err(loss, ref, lse_scale) < tol, rel_err(loss, ref, lse_scale)
    assert xt.grad.dtype is dtype
    # dlogits is rounded to the dtype once per element: allow a few units of it, measured
    # against the softmax term (the target term cancels it when one class dominates)
    err = rel_err(xt.grad, ref_dx, float(np.linalg.norm(p * gb)))
    assert err < 4 * tol, err
    return loss, xt


# ---- forward and gradient on the device ----------
SHAPES = [(1, 5), (7, 10), (33, 128), (4, 1000), (3, 1001), (2, 32000), (5, 3, 17)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [st.float32, st.bfloat16], ids=str)
def test_matches_reference(device, shape, dtype):
    run_ce(device, shape, dtype)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1, 1.0])
def test_reductions_and_smoothing(device, reduction, smoothing):
    run_ce(device, (9, 37), st.float32, reduction=reduction, smoothing=smoothing, seed=2)


def test_float16_and_float64(device):
    run_ce(device, (6, 40), st.float16)
    run_ce(device, (6, 40), st.float64)


def test_int32_labels_and_custom_ignore_index(device):
    run_ce(device, (8, 12), st.float32, ignore_index=3, ignore_frac=0.3, label_dtype=st.int32)


def test_all_ignored(device):
    x = st.randn(3, 4, device=device, requires_grad=True)
    lab = st.tensor([-100, -100, -100], device=device)
    assert np.isnan(cross_entropy(x, lab).item())
    loss = cross_entropy(x, lab, reduction="sum")
    assert loss.item() == 0.0
    loss.backward()
    assert np.all(x.grad.numpy() == 0.0)


def test_class_axis_one_like_torch(device):
    # PyTorch's (N, C, d1) layout through axis=1
    x, _ = make_case((4, 6, 3), st.float32, seed=4)
    labels = np.random.default_rng(5).integers(0, 6, size=(4, 3))
    xt = st.tensor(x, device=device, requires_grad=True)
    loss = cross_entropy(xt, st.tensor(labels, device=device), axis=1, label_smoothing=0.2)
    loss.backward()
    ref, d, _ = ce_ref(np.moveaxis(x, 1, -1), labels, smoothing=0.2)
    assert rel_err(loss, ref) < 2e-5
    assert rel_err(xt.grad, np.moveaxis(d, -1, 1)) < 2e-5


def test_composite_functional_agrees(device):
    x, labels = make_case((16, 9), st.float32, seed=6)
    xt = st.tensor(x, device=device)
    lt = st.tensor(labels, device=device)
    for red in ("mean", "sum", "none"):
        a = cross_entropy(xt, lt, reduction=red).numpy()
        b = F.cross_entropy(xt, lt, reduction=red).numpy()
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not st.cuda_status()[0], reason="needs a CUDA device")
def test_bad_label_gives_nan_on_gpu():
    x = st.randn(2, 5, device="cuda")
    loss = cross_entropy(x, st.tensor([1, 7], device="cuda"), reduction="none").numpy()
    assert np.isfinite(loss[0]) and np.isnan(loss[1])


# ---- numerical gradients (float64, CPU), second order ----------
@pytest.mark.parametrize("smoothing", [0.0, 0.3])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_check_grad(reduction, smoothing):
    x, labels = make_case((5, 7), st.float64, seed=8, ignore_frac=0.3)
    lt = st.tensor(labels)
    f = lambda x: cross_entropy(x, lt, reduction=reduction, label_smoothing=smoothing)
    grad_check(f, st.tensor(x), device=st.Device("cpu"))


def test_second_order():
    x, labels = make_case((4, 6), st.float64, seed=9, ignore_frac=0.25)
    lt = st.tensor(labels)
    f = lambda x: cross_entropy(x, lt, reduction="none", label_smoothing=0.1)
    grad_check(second_order(f), st.tensor(x), device=st.Device("cpu"), rtol=1e-4)


# ---- torch cross-check ---------------------------------------------------------------------------
@pytest.mark.skipif(torch is None, reason="torch is not installed")
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_matches_torch(reduction):
    x, labels = make_case((12, 11), st.float64, seed=10, ignore_frac=0.25)
    tx = torch.tensor(x, requires_grad=True)
    tl = TF.cross_entropy(tx, torch.tensor(labels), reduction=reduction, ignore_index=-100,
                          label_smoothing=0.15)
    tl.backward(torch.ones_like(tl))
    sx = st.tensor(x, requires_grad=True)
    sl = cross_entropy(sx, st.tensor(labels), reduction=reduction, label_smoothing=0.15)
    sl.backward(st.ones(*sl.shape, dtype=st.float64))
    np.testing.assert_allclose(sl.numpy(), tl.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(sx.grad.numpy(), tx.grad.numpy(), rtol=1e-9, atol=1e-12)


# ---- Hypothesis over shapes ----------
@PROPS
@given(rows=hs.integers(1, 20), classes=hs.integers(1, 70),
       smoothing=hs.sampled_from([0.0, 0.05, 0.5]), ignore=hs.sampled_from([0.0, 0.3, 1.0]),
       reduction=hs.sampled_from(["mean", "sum", "none"]), seed=hs.integers(0, 2**31))
def test_property_shapes(device, rows, classes, smoothing, ignore, reduction, seed):
    run_ce(device, (rows, classes), st.float32, reduction, smoothing, ignore, seed)


# ---- errors ----------
def test_errors():
    x = st.randn(3, 4)
    with pytest.raises(IndexError, match="labels must be in"):
        cross_entropy(x, st.tensor([0, 4, 1]))
    with pytest.raises(ValueError, match="need labels of shape"):
        cross_entropy(x, st.tensor([0, 1]))
    with pytest.raises(TypeError, match="integer"):
        cross_entropy(x, st.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="reduction"):
        cross_entropy(x, st.tensor([0, 1, 2]), reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing"):
        cross_entropy(x, st.tensor([0, 1, 2]), label_smoothing=1.5)
    with pytest.raises(TypeError, match="floating"):
        cross_entropy(st.tensor([[1, 2]]), st.tensor([0]))


@pytest.mark.parametrize("mean", [True, False])
@pytest.mark.parametrize("rows", [0, 1, 3001])
def test_reduce_primitive(device, mean, rows):
    """The backend's one-call sum/count/mean of the per-row losses (one CUDA block walks every
    row) against float64, with int32 labels and ignored rows; no counted row -> NaN mean."""
    rng = np.random.default_rng(rows)
    loss = rng.random(rows).astype(np.float32)
    labels = rng.integers(-1, 5, rows).astype(np.int32)
    loss[labels == -1] = 0.0
    be = device.backend
    value, count = be.cross_entropy_reduce(be.asarray(loss, st.float32),
                                           be.asarray(labels, st.int32), -1, mean)
    n = int((labels != -1).sum())
    total = f64(loss).sum()
    assert float(be.to_numpy(count)) == n
    want = (total / n if n else np.nan) if mean else total
    got = float(be.to_numpy(value))
    if np.isnan(want):
        assert np.isnan(got)
    else:
        assert got == pytest.approx(want, rel=1e-6, abs=1e-6)
