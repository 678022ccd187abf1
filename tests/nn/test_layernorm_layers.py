"""``nn.LayerNorm`` and ``nn.RMSNorm``: float64 NumPy references, parameters, gradients."""

from __future__ import annotations

import numpy as np
import pytest

import scitensor as st
from scitensor import nn

from ..ops.helpers import f64, grad_check, poisoned


def _ln_ref(x, shape, w, b, eps):
    axes = tuple(range(x.ndim - len(shape), x.ndim))
    mu = x.mean(axis=axes, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mu) / np.sqrt(var + eps)
    return y * (1 if w is None else w) + (0 if b is None else b)


def _rms_ref(x, shape, w, eps):
    axes = tuple(range(x.ndim - len(shape), x.ndim))
    y = x / np.sqrt((x * x).mean(axis=axes, keepdims=True) + eps)
    return y * (1 if w is None else w)


@pytest.mark.parametrize("shape", [8, (3, 4)])
@pytest.mark.parametrize("affine,bias", [(True, True), (True, False), (False, False)])
def test_layer_norm_matches_reference(device, rng, shape, affine, bias):
    ln = nn.LayerNorm(shape, eps=1e-3, elementwise_affine=affine, bias=bias, device=device)
    ns = ln.normalized_shape
    assert ns == ((shape,) if isinstance(shape, int) else shape)
    names = [n for n, _ in ln.named_parameters()]
    assert names == (["weight", "bias"] if bias else ["weight"] if affine else [])
    if affine:
        assert np.all(ln.weight.numpy() == 1)
        with st.no_grad():
            ln.weight[...] = st.tensor(rng.standard_normal(ns).astype(np.float32), device=device)
    if bias:
        assert np.all(ln.bias.numpy() == 0)
        with st.no_grad():
            ln.bias[...] = st.tensor(rng.standard_normal(ns).astype(np.float32), device=device)
    x = (rng.standard_normal((2, 5) + ns) * 3 + 1).astype(np.float32)
    with poisoned(device):
        y = ln(st.tensor(x, device=device))
    w = f64(ln.weight) if affine else None
    b = f64(ln.bias) if bias else None
    np.testing.assert_allclose(f64(y), _ln_ref(f64(x), ns, w, b, 1e-3), rtol=1e-5, atol=1e-5)


def test_layer_norm_gradients_float64(rng):
    ln = nn.LayerNorm((2, 3)).double()
    with st.no_grad():
        ln.weight[...] = st.tensor(rng.standard_normal((2, 3)))
    x = rng.standard_normal((4, 2, 3))

    def f(x, w, b):
        ln.weight, ln.bias = w, b
        return ln(x)

    grad_check(f, x, rng.standard_normal((2, 3)), rng.standard_normal((2, 3)),
               device=st.Device("cpu"))


@pytest.mark.parametrize("eps", [None, 1e-2])
def test_rms_norm_matches_reference(device, rng, eps):
    rms = nn.RMSNorm(6, eps=eps, device=device)
    assert [n for n, _ in rms.named_parameters()] == ["weight"]
    with st.no_grad():
        rms.weight[...] = st.tensor(rng.standard_normal(6).astype(np.float32), device=device)
    x = rng.standard_normal((3, 4, 6)).astype(np.float32) * 1e-3  # small: eps matters
    with poisoned(device):
        y = rms(st.tensor(x, device=device))
    want_eps = np.finfo(np.float32).eps if eps is None else eps
    np.testing.assert_allclose(f64(y), _rms_ref(f64(x), (6,), f64(rms.weight), want_eps),
                               rtol=1e-4, atol=1e-5)
    if eps is not None:  # and the eps makes a difference here
        assert not np.allclose(f64(y), _rms_ref(f64(x), (6,), f64(rms.weight), 1e-7), rtol=1e-2)


def test_rms_norm_default_eps_follows_dtype():
    x = np.full((1, 4), 1e-2)
    y = nn.RMSNorm(4, elementwise_affine=False)(st.tensor(x, dtype=st.bfloat16))
    eps = 2.0 ** -7  # bfloat16's machine epsilon, as PyTorch's eps=None
    np.testing.assert_allclose(f64(y), x / np.sqrt(1e-4 + eps), rtol=1e-2)


def test_rms_norm_gradients_float64(rng):
    rms = nn.RMSNorm(5, eps=1e-3).double()

    def f(x, w):
        rms.weight = w
        return rms(x)

    grad_check(f, rng.standard_normal((3, 5)), rng.standard_normal(5), device=st.Device("cpu"))


def test_train_a_layer_norm_and_dtype_moves():
    ln = nn.LayerNorm(4)
    assert ln.weight.dtype is st.float32
    ln.double()
    assert ln.weight.dtype is st.float64 and ln.bias.dtype is st.float64
    x = st.randn(8, 4, dtype=st.float64)
    (ln(x) * st.arange(4.0, dtype=st.float64)).sum().backward()
    assert ln.weight.grad is not None and ln.bias.grad.tolist() == [0.0, 8.0, 16.0, 24.0]


def test_errors_and_repr():
    with pytest.raises(ValueError, match="normalized_shape must be a positive int"):
        nn.LayerNorm(0)
    with pytest.raises(ValueError, match="normalized_shape"):
        nn.RMSNorm(())
    with pytest.raises(ValueError, match="normalized_shape"):
        nn.LayerNorm("4")
    with pytest.raises(ValueError, match="trailing dimensions"):
        nn.LayerNorm(4)(st.randn(4, 3))
    with pytest.raises(TypeError, match="expected a Tensor"):
        nn.RMSNorm(4)(np.ones(4))
    assert repr(nn.LayerNorm(4)) == "LayerNorm((4,), eps=1e-05, elementwise_affine=True, bias=True)"
    assert repr(nn.RMSNorm([2, 3], eps=1e-6)) == \
        "RMSNorm((2, 3), eps=1e-06, elementwise_affine=True)"
