"""dropout: statistics, scaling, determinism by seed, p=0 / p=1 / evaluation, gradients,
errors, and the same mask on every device for the same seed."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

import scitensor as st
from scitensor.ops.dropout import dropout
from scitensor.testing import check_grad

from .helpers import poisoned


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_statistics_and_scaling(p):
    y = dropout(st.ones(200_000), p, generator=st.Generator(3)).numpy()
    kept = y != 0
    np.testing.assert_allclose(y[kept], 1 / (1 - p), rtol=1e-6)
    # binomial standard deviation of the kept fraction is < 0.0012 here: 5 sigma
    assert abs(kept.mean() - (1 - p)) < 0.006
    assert abs(y.mean() - 1.0) < 0.006 / (1 - p)


def test_determinism_by_seed_and_fresh_masks():
    x = st.randn(64, 32)
    a = dropout(x, 0.5, generator=st.Generator(7))
    b = dropout(x, 0.5, generator=st.Generator(7))
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    g = st.Generator(7)
    first, second = dropout(x, 0.5, generator=g), dropout(x, 0.5, generator=g)
    assert g.offset == 2
    assert (first.numpy() != second.numpy()).any()
    st.manual_seed(11)
    c = dropout(x, 0.5)
    st.manual_seed(11)
    np.testing.assert_array_equal(c.numpy(), dropout(x, 0.5).numpy())


def test_identity_cases_and_p_one():
    x = st.tensor([[1.0, float("nan")], [3.0, -4.0]], requires_grad=True)
    g = st.Generator(0)
    assert dropout(x, 0.0, generator=g) is x
    assert dropout(x, 0.7, training=False, generator=g) is x
    assert g.offset == 0  # no random numbers drawn
    y = dropout(x, 1.0)
    assert y.numpy()[0, 0] == 0 and np.isnan(y.numpy()[0, 1])  # x * 0, as PyTorch
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.zeros((2, 2)))


def test_gradient_is_the_mask_scaled():
    x = st.randn(50, 20, dtype=st.float64, requires_grad=True)
    y = dropout(x, 0.3, generator=st.Generator(5))
    y.backward(st.ones_like(y))
    kept = y.numpy() != 0
    np.testing.assert_allclose(x.grad.numpy(), kept / 0.7, rtol=1e-12)
    # a fresh generator per call: the same mask in every evaluation of check_grad
    assert check_grad(lambda a: dropout(a, 0.3, generator=st.Generator(5)) * a,
                      st.randn(6, 5))
    assert check_grad(lambda a: st.grad(lambda b: (dropout(b, 0.3, generator=st.Generator(5))
                                                   ** 2).sum())(a), st.randn(6, 5))


@pytest.mark.parametrize("dtype", [st.float16, st.bfloat16, st.float64])
def test_dtypes(dtype):
    y = dropout(st.ones(1000, dtype=dtype), 0.5, generator=st.Generator(1))
    assert y.dtype == dtype
    assert set(np.unique(y.astype(st.float32).numpy()).tolist()) <= {0.0, 2.0}


@pytest.mark.parametrize("call,err,match", [
    (lambda x: dropout(x, 1.5), ValueError, "probability"),
    (lambda x: dropout(x, -0.1), ValueError, "probability"),
    (lambda x: dropout(x.astype(st.int32), 0.5), TypeError, "floating"),
    (lambda x: dropout(x, 0.5, generator=3), TypeError, "Generator"),
])
def test_errors(call, err, match):
    with pytest.raises(err, match=match):
        call(st.ones(4))


@settings(max_examples=20, deadline=None)
@given(shape=hs.lists(hs.integers(0, 7), min_size=0, max_size=3), p=hs.floats(0.0, 1.0),
       seed=hs.integers(0, 2**32))
def test_property_values(shape, p, seed):
    x = st.randn(*shape, generator=st.Generator(seed))
    y = dropout(x, p, generator=st.Generator(seed + 1)).numpy()
    xs = x.numpy()
    assert y.shape == xs.shape
    scale = 0.0 if p == 1 else 1 / (1 - p)
    ok = np.isclose(y, xs * scale, rtol=1e-6) | (y == 0)
    assert ok.all()


@pytest.mark.parametrize("dtype", [st.float32, st.bfloat16])
def test_device_matches_cpu(device, dtype):
    """Philox is the same stream on every device: the same seed gives the same mask."""
    x = np.random.default_rng(0).standard_normal((33, 17)).astype(np.float32)
    results = []
    for dev in (st.Device("cpu"), device):
        xd = st.tensor(x, dtype=dtype, device=dev, requires_grad=True)
        with poisoned(dev):
            y = dropout(xd, 0.25, generator=st.Generator(42))
            y.backward(st.ones_like(y))
        results.append((y.astype(st.float32).numpy(), xd.grad.astype(st.float32).numpy()))
    np.testing.assert_array_equal(results[1][0], results[0][0])
    np.testing.assert_array_equal(results[1][1], results[0][1])
