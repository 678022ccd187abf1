import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st_h

import scitensor as st
from scitensor.nn import functional as F
from scitensor.testing import assert_close, check_grad


def _log_softmax(z):
    m = z.max(axis=-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


def _ce_ref(z, labels):
    lp = _log_softmax(z)
    return -np.take_along_axis(lp, labels[..., None], axis=-1)[..., 0]


# ---- linear ---------------------------------------------------------------------------
def test_linear_forward(device, rng):
    x, w, b = rng.standard_normal((3, 4)), rng.standard_normal((4, 5)), rng.standard_normal(5)
    T = lambda a: st.tensor(a, device=device)
    assert_close(F.linear(T(x), T(w), T(b)), x @ w + b, rtol=1e-12, atol=1e-12)
    assert_close(F.linear(T(x), T(w)), x @ w, rtol=1e-12, atol=1e-12)


def test_linear_grad(rng):
    x, w, b = rng.standard_normal((3, 4)), rng.standard_normal((4, 5)), rng.standard_normal(5)
    check_grad(F.linear, st.tensor(x), st.tensor(w), st.tensor(b))
    check_grad(lambda x, w: F.linear(x, w), st.tensor(x), st.tensor(w))


def test_linear_errors():
    with pytest.raises(ValueError, match=r"input \(3, 4\) and weight \(5, 2\)"):
        F.linear(st.ones(3, 4), st.ones(5, 2))
    with pytest.raises(ValueError, match=r"bias shape \(3,\) must be \(2,\)"):
        F.linear(st.ones(3, 4), st.ones(4, 2), st.ones(3))
    with pytest.raises(TypeError, match="weight must be a Tensor"):
        F.linear(st.ones(3, 4), np.ones((4, 2)))


def test_relu_gelu_functional():
    x = st.tensor([-1.0, 0.5])
    assert F.relu(x).tolist() == [0.0, 0.5]
    np.testing.assert_allclose(F.gelu(x).numpy(), st.gelu(x).numpy())
    np.testing.assert_allclose(F.gelu(x, "tanh").numpy(), st.gelu(x, "tanh").numpy())


# ---- cross_entropy --------------------------------------------------------------------
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_forward(device, rng, reduction):
    z = rng.standard_normal((6, 5)) * 3
    labels = rng.integers(0, 5, 6)
    out = F.cross_entropy(st.tensor(z, device=device), st.tensor(labels, device=device),
                          reduction=reduction)
    ref = _ce_ref(z, labels)
    ref = {"mean": ref.mean(), "sum": ref.sum(), "none": ref}[reduction]
    assert out.device == device
    assert_close(out, np.asarray(ref), rtol=1e-12, atol=1e-12)


def test_cross_entropy_float32_and_leading_axes(rng):
    z = rng.standard_normal((2, 3, 4))
    labels = rng.integers(0, 4, (2, 3))
    out = F.cross_entropy(st.tensor(z, dtype=st.float32), st.tensor(labels), reduction="none")
    assert out.shape == (2, 3) and out.dtype == st.float32
    assert_close(out, _ce_ref(z, labels), rtol=1e-5, atol=1e-6)


def test_cross_entropy_is_stable_for_huge_logits():
    z = st.tensor([[1e4, 0.0, -1e4], [-1e4, 1e4, 3e4]], requires_grad=True)
    loss = F.cross_entropy(z, st.tensor([0, 1]), reduction="none")
    assert np.allclose(loss.numpy(), [0.0, 2e4])
    loss.sum().backward()
    g = z.grad.numpy()
    assert np.isfinite(g).all()
    np.testing.assert_allclose(g, [[0, 0, 0], [0, -1, 1]], atol=1e-6)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_grad(rng, reduction):
    labels = st.tensor(rng.integers(0, 4, 5))
    check_grad(lambda z: F.cross_entropy(z, labels, reduction=reduction),
               st.tensor(rng.standard_normal((5, 4))))


def test_cross_entropy_gradient_formula(rng):
    z = rng.standard_normal((3, 4))
    labels = np.array([0, 3, 1])
    t = st.tensor(z, requires_grad=True)
    F.cross_entropy(t, st.tensor(labels)).backward()
    p = np.exp(_log_softmax(z))
    p[np.arange(3), labels] -= 1
    np.testing.assert_allclose(t.grad.numpy(), p / 3, rtol=1e-12, atol=1e-14)


def test_cross_entropy_matches_torch(rng):
    torch = pytest.importorskip("torch")
    z = rng.standard_normal((8, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 8)
    t = st.tensor(z, requires_grad=True)
    loss = F.cross_entropy(t, st.tensor(labels))
    loss.backward()
    tz = torch.tensor(z, requires_grad=True)
    tl = torch.nn.functional.cross_entropy(tz, torch.tensor(labels))
    tl.backward()
    np.testing.assert_allclose(loss.item(), tl.item(), rtol=1e-6)
    np.testing.assert_allclose(t.grad.numpy(), tz.grad.numpy(), rtol=1e-5, atol=1e-7)


def test_cross_entropy_errors():
    z = st.zeros(4, 3)
    with pytest.raises(TypeError, match=r"labels must be an integer tensor.*float32"):
        F.cross_entropy(z, st.zeros(4))
    with pytest.raises(ValueError, match=r"logits of shape \(4, 3\) need labels of shape "
                                         r"\(4,\).*got \(3,\)"):
        F.cross_entropy(z, st.tensor([0, 1, 2]))
    with pytest.raises(IndexError, match=r"labels must be in \[0, 3\).*\[0, 3\]"):
        F.cross_entropy(z, st.tensor([0, 1, 2, 3]))
    with pytest.raises(IndexError, match=r"\[-1, 0\]"):
        F.cross_entropy(z, st.tensor([0, 0, -1, 0]))
    with pytest.raises(ValueError, match="reduction must be one of"):
        F.cross_entropy(z, st.tensor([0, 1, 2, 0]), reduction="avg")
    with pytest.raises(TypeError, match="logits must be floating"):
        F.cross_entropy(st.zeros(4, 3, dtype=st.int64), st.tensor([0, 1, 2, 0]))
    with pytest.raises(TypeError, match="labels must be a Tensor"):
        F.cross_entropy(z, [0, 1, 2, 0])


def test_nll_loss(rng):
    z = rng.standard_normal((4, 3))
    labels = rng.integers(0, 3, 4)
    lp = st.log_softmax(st.tensor(z), axis=-1)
    assert_close(F.nll_loss(lp, st.tensor(labels)), np.asarray(_ce_ref(z, labels).mean()),
                 rtol=1e-12, atol=1e-12)


# ---- mse_loss -------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_loss(device, rng, reduction):
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    out = F.mse_loss(st.tensor(a, device=device), st.tensor(b, device=device), reduction)
    ref = (a - b) ** 2
    ref = {"mean": ref.mean(), "sum": ref.sum(), "none": ref}[reduction]
    assert_close(out, np.asarray(ref), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_loss_grad(rng, reduction):
    check_grad(lambda a, b: F.mse_loss(a, b, reduction), st.tensor(rng.standard_normal((3, 2))),
               st.tensor(rng.standard_normal((3, 2))))


def test_mse_loss_errors():
    with pytest.raises(ValueError, match=r"input shape \(3,\) and target shape \(3, 1\)"):
        F.mse_loss(st.ones(3), st.ones(3, 1))
    with pytest.raises(ValueError, match="reduction"):
        F.mse_loss(st.ones(3), st.ones(3), reduction="max")


@settings(max_examples=40, deadline=None)
@given(n=st_h.integers(0, 6), c=st_h.integers(1, 7), seed=st_h.integers(0, 2**16),
       scale=st_h.sampled_from([1e-3, 1.0, 50.0]))
def test_cross_entropy_property(n, c, seed, scale):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, c)) * scale
    labels = rng.integers(0, c, n)
    t = st.tensor(z, requires_grad=True)
    loss = F.cross_entropy(t, st.tensor(labels, dtype=st.int64), reduction="sum")
    assert_close(loss, np.asarray(_ce_ref(z, labels).sum()), rtol=1e-10, atol=1e-10)
    assert loss.item() >= 0
    loss.backward()
    # each row of the gradient is softmax - onehot: it sums to zero
    np.testing.assert_allclose(t.grad.numpy().sum(axis=-1), 0.0, atol=1e-12)
