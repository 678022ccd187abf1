import math

import numpy as np
import pytest

import scitensor as st
from scitensor import nn
from scitensor.testing import assert_close, check_grad


def test_dense_forward_matches_numpy(device, rng):
    layer = nn.Dense(5, 3, device=device)
    x = rng.standard_normal((4, 5))
    y = layer(st.tensor(x, dtype=st.float32, device=device))
    w = layer.weight.numpy().astype(np.float64)
    b = layer.bias.numpy().astype(np.float64)
    assert y.shape == (4, 3) and y.dtype == st.float32 and y.device == device
    assert_close(y, x.astype(np.float32).astype(np.float64) @ w + b, rtol=1e-5, atol=1e-6)


def test_dense_batched_input_and_no_bias(device, rng):
    layer = nn.Dense(4, 2, bias=False, device=device, dtype=st.float64)
    assert layer.bias is None and [n for n, _ in layer.named_parameters()] == ["weight"]
    x = rng.standard_normal((2, 3, 4))
    y = layer(st.tensor(x, device=device))
    assert_close(y, x @ layer.weight.numpy(), rtol=1e-12, atol=1e-12)


def test_dense_weight_layout_and_init_bounds():
    layer = nn.Dense(100, 30)
    assert layer.weight.shape == (100, 30) and layer.bias.shape == (30,)
    bound = 1 / math.sqrt(100)
    for p in (layer.weight, layer.bias):
        a = p.numpy()
        assert a.min() >= -bound and a.max() <= bound
    # roughly uniform: the std of U(-b, b) is b / sqrt(3)
    assert abs(layer.weight.numpy().std() - bound / math.sqrt(3)) < 0.1 * bound


def test_dense_init_is_seeded():
    st.manual_seed(7)
    a = nn.Dense(3, 4)
    st.manual_seed(7)
    b = nn.Dense(3, 4)
    c = nn.Dense(3, 4)
    np.testing.assert_array_equal(a.weight.numpy(), b.weight.numpy())
    assert not np.array_equal(b.weight.numpy(), c.weight.numpy())


def test_dense_gradients(rng):
    layer = nn.Dense(3, 2).double()
    x = st.tensor(rng.standard_normal((4, 3)), requires_grad=True)
    g = rng.standard_normal((4, 2))
    layer(x).backward(st.tensor(g))
    np.testing.assert_allclose(layer.weight.grad.numpy(), x.numpy().T @ g, rtol=1e-12)
    np.testing.assert_allclose(layer.bias.grad.numpy(), g.sum(0), rtol=1e-12)
    np.testing.assert_allclose(x.grad.numpy(), g @ layer.weight.numpy().T, rtol=1e-12)


def test_dense_errors():
    with pytest.raises(ValueError, match="in_features must be a positive int"):
        nn.Dense(0, 3)
    with pytest.raises(ValueError, match="out_features"):
        nn.Dense(2, 2.5)
    with pytest.raises(ValueError, match=r"Dense\(4, 2\): input of shape \(3, 5\) must have "
                                         "last axis 4"):
        nn.Dense(4, 2)(st.ones(3, 5))
    with pytest.raises(TypeError, match="Tensor"):
        nn.Dense(4, 2)(np.ones((3, 4)))


def test_linear_is_dense():
    assert nn.Linear is nn.Dense


def test_sequential_container():
    a, b = nn.Dense(4, 8), nn.Dense(8, 2)
    model = nn.Sequential(a, nn.ReLU(), b)
    assert len(model) == 3 and model[0] is a and model[-1] is b
    assert list(model) == model.layers
    assert isinstance(model[1:], nn.Sequential) and len(model[1:]) == 2
    assert [n for n, _ in model.named_parameters()] == ["0.weight", "0.bias", "2.weight",
                                                        "2.bias"]
    x = st.randn(5, 4)
    np.testing.assert_allclose(model(x).numpy(), b(a(x).relu()).numpy(), rtol=1e-6)
    model.append(nn.Identity())
    assert len(model) == 4
    assert nn.Sequential([a, b])[1] is b  # a list works too
    assert nn.Sequential(lambda t: t * 2)(st.ones(1)).tolist() == [2.0]
    with pytest.raises(TypeError, match="layer 1 is a int"):
        nn.Sequential(a, 3)


def test_relu_gelu(device, rng):
    x = rng.standard_normal(50) * 3
    t = st.tensor(x, device=device, dtype=st.float64)
    assert_close(nn.ReLU()(t), np.maximum(x, 0))
    erf = np.vectorize(math.erf)
    exact = 0.5 * x * (1 + erf(x / math.sqrt(2)))
    assert_close(nn.GELU()(t), exact, rtol=1e-7, atol=1e-7)
    tanh_form = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    assert_close(nn.GELU(approximate="tanh")(t), tanh_form, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="approximate"):
        nn.GELU("fast")


def test_flatten_identity():
    x = st.randn(2, 3, 4, 5)
    assert nn.Flatten()(x).shape == (2, 60)
    assert nn.Flatten(0, 1)(x).shape == (6, 4, 5)
    assert nn.Flatten(start_axis=2)(x).shape == (2, 3, 20)
    assert nn.Identity()(x) is x


def test_mlp_input_gradient_check():
    st.manual_seed(3)
    model = nn.Sequential(nn.Dense(4, 6), nn.GELU(), nn.Dense(6, 3), nn.ReLU(),
                          nn.Dense(3, 2)).double()
    check_grad(lambda x: model(x), st.randn(5, 4))
