"""``nn.init``: fans per layout, gains, and the statistics of each scheme (tolerances a few
standard errors wide, so a wrong fan or gain fails)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import scitensor as st
from scitensor import nn
from scitensor.nn import init


def _std_ok(a: np.ndarray, want: float, rel: float = 0.03) -> bool:
    return abs(float(a.std()) / want - 1) < rel and abs(float(a.mean())) < 5 * want / a.size ** .5


def test_fans_follow_scitensor_layouts():
    assert init.fans((784, 128)) == (784, 128)  # Dense: (in_features, out_features)
    assert init.fans(nn.Dense(3, 7).weight) == (3, 7)
    conv = nn.Conv2d(3, 16, 5)  # (out, in, kh, kw)
    assert init.fans(conv.weight) == (3 * 25, 16 * 25)
    assert init.fans((4, 6, 2)) == (12, 8)
    with pytest.raises(ValueError, match="at least 2 dims"):
        init.fans((5,))


def test_calculate_gain():
    assert init.calculate_gain("linear") == init.calculate_gain("conv2d") == 1.0
    assert init.calculate_gain("relu") == pytest.approx(math.sqrt(2))
    assert init.calculate_gain("tanh") == pytest.approx(5 / 3)
    assert init.calculate_gain("leaky_relu", 0.2) == pytest.approx(math.sqrt(2 / 1.04))
    assert init.calculate_gain("leaky_relu") == pytest.approx(math.sqrt(2 / 1.0001))
    with pytest.raises(ValueError, match="unknown nonlinearity 'swish'"):
        init.calculate_gain("swish")


@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
def test_kaiming_uniform_and_normal(device, mode):
    t = st.empty(600, 150, device=device)  # Dense layout: fan_in 600, fan_out 150
    fan = 600 if mode == "fan_in" else 150
    std = math.sqrt(2) / math.sqrt(fan)
    u = init.kaiming_uniform_(t, mode=mode, nonlinearity="relu").numpy()
    assert u.max() <= math.sqrt(3) * std and u.min() >= -math.sqrt(3) * std
    assert _std_ok(u, std)
    n = init.kaiming_normal_(st.empty(600, 150, device=device), mode=mode,
                             nonlinearity="relu").numpy()
    assert _std_ok(n, std)
    assert np.abs(n).max() > 3 * std  # normal tails, not uniform


def test_kaiming_default_is_leaky_relu_gain_and_conv_layout():
    w = init.kaiming_normal_(st.empty(64, 32, 3, 3)).numpy()  # fan_in = 32 * 9
    assert _std_ok(w, math.sqrt(2 / (1 + 0.01 ** 2)) / math.sqrt(288))
    with pytest.raises(ValueError, match="mode must be 'fan_in' or 'fan_out'"):
        init.kaiming_uniform_(st.empty(3, 3), mode="in")


def test_xavier_normal_and_uniform():
    w = init.xavier_normal_(st.empty(300, 500), gain=2.0).numpy()
    assert _std_ok(w, 2.0 * math.sqrt(2 / 800))
    u = init.xavier_uniform_(st.empty(300, 500)).numpy()
    bound = math.sqrt(6 / 800)
    assert u.max() <= bound and u.min() >= -bound and _std_ok(u, bound / math.sqrt(3))


def _truncnorm_moments(mean, std, a, b):
    alpha, beta = (a - mean) / std, (b - mean) / std
    pdf = lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)
    cdf = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))
    zmass = cdf(beta) - cdf(alpha)
    m = mean + std * (pdf(alpha) - pdf(beta)) / zmass
    var = std ** 2 * (1 + (alpha * pdf(alpha) - beta * pdf(beta)) / zmass
                      - ((pdf(alpha) - pdf(beta)) / zmass) ** 2)
    return m, math.sqrt(var)


@pytest.mark.parametrize("mean,std,a,b", [(0.0, 0.02, -0.04, 0.04), (1.0, 1.0, 0.5, 3.0),
                                          (0.0, 1.0, 2.0, 3.0)])
def test_trunc_normal(device, mean, std, a, b):
    st.manual_seed(0)
    x = init.trunc_normal_(st.empty(200, 200, device=device), mean, std, a, b).numpy()
    assert x.min() >= a and x.max() <= b
    m, s = _truncnorm_moments(mean, std, a, b)
    assert abs(float(x.mean()) - m) < 5 * s / 200 and abs(float(x.std()) / s - 1) < 0.02


def test_trunc_normal_errors_and_seeding():
    with pytest.raises(ValueError, match="a < b"):
        init.trunc_normal_(st.empty(3), a=1.0, b=0.0)
    with pytest.raises(ValueError, match="holds only"):
        init.trunc_normal_(st.empty(3), a=10.0, b=11.0)
    st.manual_seed(4)
    a = init.trunc_normal_(st.empty(50)).numpy()
    st.manual_seed(4)
    assert np.array_equal(a, init.trunc_normal_(st.empty(50)).numpy())


def test_in_place_on_parameters_without_recording():
    layer = nn.Dense(20, 30)
    w = layer.weight
    out = init.kaiming_uniform_(layer.weight, nonlinearity="relu")
    assert out is w and w.requires_grad and w.grad is None and w.is_leaf
    with pytest.raises(TypeError, match="floating"):
        init.xavier_normal_(st.zeros(3, 3, dtype=st.int64))


def test_layer_defaults():
    st.manual_seed(0)
    ln = nn.LayerNorm(8)
    assert np.all(ln.weight.numpy() == 1) and np.all(ln.bias.numpy() == 0)
    assert np.all(nn.RMSNorm(8).weight.numpy() == 1)
    assert _std_ok(nn.Embedding(500, 100).weight.numpy(), 1.0)
    mha = nn.MultiHeadAttention(256, 4)
    bound = 1 / math.sqrt(256)  # like Dense: U(-1/sqrt(in), 1/sqrt(in))
    for p in mha.parameters():
        a = p.numpy()
        assert a.min() >= -bound and a.max() <= bound
    assert _std_ok(mha.qkv_proj.weight.numpy(), bound / math.sqrt(3))
