import numpy as np
import pytest

import scitensor as st
from scitensor import optim


def _params(device, dtype=st.float32, seed=0, n=5):
    rng = np.random.default_rng(seed)
    shapes = [(3, 4), (7,), (), (2, 3, 5), (0,)][:n]
    ps = []
    for s in shapes:
        p = st.zeros(*s, dtype=dtype, device=device, requires_grad=True) if s else \
            st.tensor(0.0, dtype=dtype, device=device, requires_grad=True)
        p.grad = st.tensor(rng.standard_normal(s).astype(np.float64) * 3, dtype=dtype,
                           device=device)
        ps.append(p)
    return ps


def _ref(grads, max_norm, norm_type=2.0):
    flat = np.concatenate([g.astype(np.float64).ravel() for g in grads])
    norm = np.abs(flat).max() if np.isinf(norm_type) else \
        (np.abs(flat) ** norm_type).sum() ** (1 / norm_type)
    return norm, min(1.0, max_norm / (norm + 1e-6))


@pytest.mark.parametrize("dtype", [st.float32, st.float64, st.float16, st.bfloat16])
@pytest.mark.parametrize("max_norm", [1.0, 1e6])
def test_clip_matches_reference(device, dtype, max_norm):
    ps = _params(device, dtype)
    before = [p.grad.numpy().astype(np.float64) for p in ps]
    norm, coef = _ref(before, max_norm)
    got = optim.clip_grad_norm_(ps, max_norm)
    assert got.device == ps[0].device and got.shape == ()
    assert got.dtype == (st.float64 if dtype == st.float64 else st.float32)
    tol = {"float16": 2e-3, "bfloat16": 1e-2}.get(dtype.name, 1e-6)
    np.testing.assert_allclose(got.item(), norm, rtol=1e-6)
    for p, b in zip(ps, before):
        assert p.grad.dtype == dtype
        np.testing.assert_allclose(p.grad.numpy().astype(np.float64), b * coef, rtol=tol,
                                   atol=tol * 1e-3)
    if max_norm == 1.0:
        after = [p.grad.numpy().astype(np.float64) for p in ps]
        assert _ref(after, 1.0)[0] == pytest.approx(1.0, rel=10 * tol)


def test_inf_norm_and_p_norm(device):
    for norm_type in (float("inf"), 1.0, 3.0):
        ps = _params(device, st.float64)
        before = [p.grad.numpy().copy() for p in ps]
        norm, coef = _ref(before, 0.5, norm_type)
        got = optim.clip_grad_norm_(ps, 0.5, norm_type=norm_type)
        np.testing.assert_allclose(got.item(), norm, rtol=1e-10)
        for p, b in zip(ps, before):
            np.testing.assert_allclose(p.grad.numpy(), b * coef, rtol=1e-10)


def test_skips_missing_grads_and_accepts_one_tensor(device):
    a = st.ones(3, device=device, requires_grad=True)
    b = st.ones(2, device=device, requires_grad=True)
    a.grad = st.tensor([3.0, 0.0, 4.0], device=device)
    got = optim.clip_grad_norm_([a, b], 2.5)
    assert got.item() == pytest.approx(5.0) and b.grad is None
    np.testing.assert_allclose(a.grad.numpy(), [1.5, 0.0, 2.0], rtol=1e-5)
    a.grad = st.tensor([3.0, 0.0, 4.0], device=device)
    assert optim.clip_grad_norm_(a, 10.0).item() == pytest.approx(5.0)
    assert optim.clip_grad_norm_([b], 1.0).item() == 0.0


def test_strided_gradient(device):
    w = st.zeros(4, 3, device=device, requires_grad=True)
    g = np.arange(12, dtype=np.float32).reshape(3, 4)
    w.grad = st.tensor(g, device=device).T  # a transposed (strided) view
    optim.clip_grad_norm_([w], 1.0)
    want = g.T / (np.sqrt((g.astype(np.float64) ** 2).sum()) + 1e-6)
    np.testing.assert_allclose(w.grad.numpy(), want, rtol=1e-5)


def test_nan_norm_propagates(device):
    w = st.ones(2, device=device, requires_grad=True)
    w.grad = st.tensor([float("nan"), 1.0], device=device)
    assert np.isnan(optim.clip_grad_norm_([w], 1.0).item())
    assert np.isnan(w.grad.numpy()).all()


def test_bad_norm_type():
    w = st.ones(2, requires_grad=True)
    w.grad = st.ones(2)
    with pytest.raises(ValueError, match="norm_type"):
        optim.clip_grad_norm_([w], 1.0, norm_type=0)
