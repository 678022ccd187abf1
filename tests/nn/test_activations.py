"""Activation modules (``SiLU``, ``Tanh``, ``Sigmoid``, ``Softmax``) and their functions."""

from __future__ import annotations

import numpy as np
import pytest

import scitensor as st
from scitensor import nn
from scitensor.nn import functional as F

from ..ops.helpers import f64, grad_check, poisoned


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


CASES = [
    (nn.SiLU(), F.silu, lambda x: x * _sigmoid(x)),
    (nn.Tanh(), F.tanh, np.tanh),
    (nn.Sigmoid(), F.sigmoid, _sigmoid),
    (nn.Softmax(), F.softmax, lambda x: _softmax(x, -1)),
    (nn.Softmax(axis=0), lambda x: F.softmax(x, 0), lambda x: _softmax(x, 0)),
]
IDS = ["silu", "tanh", "sigmoid", "softmax", "softmax_axis0"]


@pytest.mark.parametrize("layer,fn,ref", CASES, ids=IDS)
def test_forward_matches_numpy(device, rng, layer, fn, ref):
    x = (rng.standard_normal((4, 5)) * 3).astype(np.float32)
    with poisoned(device):
        y = layer(st.tensor(x, device=device))
        z = fn(st.tensor(x, device=device))
    assert y.shape == x.shape and y.dtype is st.float32 and y.device == device
    np.testing.assert_allclose(f64(y), ref(f64(x)), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(y.numpy(), z.numpy())


@pytest.mark.parametrize("layer,fn,ref", CASES, ids=IDS)
def test_gradients_float64(rng, layer, fn, ref):
    grad_check(lambda x: layer(x), rng.standard_normal((3, 4)), device=st.Device("cpu"))


def test_log_softmax_function(rng):
    x = rng.standard_normal((2, 6))
    np.testing.assert_allclose(F.log_softmax(st.tensor(x), axis=-1).numpy(),
                               np.log(_softmax(x, -1)), rtol=1e-12)


def test_modules_have_no_parameters_and_check_inputs():
    for layer in (nn.SiLU(), nn.Tanh(), nn.Sigmoid(), nn.Softmax()):
        assert list(layer.parameters()) == []
        with pytest.raises(TypeError, match=f"{type(layer).__name__}: expected a Tensor"):
            layer([1.0])
    assert repr(nn.Softmax(axis=1)) == "Softmax(axis=1)" and repr(nn.SiLU()) == "SiLU()"
    with pytest.raises(TypeError, match="axis must be an int"):
        nn.Softmax(axis=None)
    with pytest.raises(IndexError, match="axis 2"):
        nn.Softmax(axis=2)(st.ones(3, 3))


def test_in_a_sequential():
    model = nn.Sequential(nn.Dense(3, 4), nn.SiLU(), nn.Dense(4, 2), nn.Softmax())
    out = model(st.randn(5, 3))
    np.testing.assert_allclose(out.sum(axis=-1).numpy(), np.ones(5), rtol=1e-6)
