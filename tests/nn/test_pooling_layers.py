"""The parameter-free layers: MaxPool2d, AvgPool2d, AdaptiveAvgPool2d and Dropout (which
honours train()/eval())."""

from __future__ import annotations

import numpy as np
import pytest

import scitensor as st
from scitensor.nn import Module, Sequential
from scitensor.nn.dropout import Dropout
from scitensor.nn.pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from scitensor.ops.pooling import adaptive_avg_pool2d, avg_pool2d, max_pool2d

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None


def x4(seed=0, shape=(2, 3, 9, 8)):
    return st.tensor(np.random.default_rng(seed).standard_normal(shape))


@pytest.mark.parametrize("layer,fn", [
    (MaxPool2d(3, 2, 1), lambda x: max_pool2d(x, 3, 2, 1)),
    (MaxPool2d((2, 3), dilation=(1, 2), ceil_mode=True),
     lambda x: max_pool2d(x, (2, 3), (2, 3), 0, (1, 2), True)),
    (AvgPool2d(3, 2, 1, count_include_pad=False),
     lambda x: avg_pool2d(x, 3, 2, 1, count_include_pad=False)),
    (AvgPool2d(2, divisor_override=3), lambda x: avg_pool2d(x, 2, divisor_override=3)),
    (AdaptiveAvgPool2d((2, 3)), lambda x: adaptive_avg_pool2d(x, (2, 3))),
    (AdaptiveAvgPool2d(1), lambda x: adaptive_avg_pool2d(x, 1)),
], ids=lambda v: type(v).__name__ if isinstance(v, Module) else "")
def test_layers_match_functions_in_both_modes(layer, fn):
    x = x4()
    ref = fn(x).numpy()
    assert isinstance(layer, Module) and list(layer.parameters()) == []
    for mode in (True, False):
        layer.train(mode)
        np.testing.assert_array_equal(layer(x).numpy(), ref)
    assert type(layer).__name__ in repr(layer)
    assert layer.state_dict() == {}


def test_max_pool_return_indices_and_unbatched():
    y, idx = MaxPool2d(2, return_indices=True)(x4())
    assert y.shape == (2, 3, 4, 4) and idx.dtype == st.int64
    assert MaxPool2d(2)(x4(shape=(3, 8, 8))).shape == (3, 4, 4)


@pytest.mark.skipif(torch is None, reason="torch is not installed")
def test_layers_match_torch():
    a = np.random.default_rng(1).standard_normal((2, 3, 11, 10))
    pairs = [(MaxPool2d(3, 2, 1), torch.nn.MaxPool2d(3, 2, 1)),
             (AvgPool2d(3, 2, 1, ceil_mode=True), torch.nn.AvgPool2d(3, 2, 1, ceil_mode=True)),
             (AdaptiveAvgPool2d((3, 4)), torch.nn.AdaptiveAvgPool2d((3, 4)))]
    for ours, theirs in pairs:
        np.testing.assert_allclose(ours(st.tensor(a)).numpy(),
                                   theirs(torch.tensor(a)).numpy(), rtol=1e-12)


def test_gradients_flow_through_a_model():
    model = Sequential(MaxPool2d(2), AvgPool2d(2), AdaptiveAvgPool2d(1))
    x = st.tensor(np.random.default_rng(2).standard_normal((2, 2, 8, 8)), requires_grad=True)
    model(x).sum().backward()
    g = x.grad.numpy()
    assert g.shape == (2, 2, 8, 8)
    # each 2x2 max contributes 1/4 (avg) * 1/4 (global): 16 nonzero cells of 1/16 per plane
    np.testing.assert_allclose(g.sum(axis=(2, 3)), 1.0)
    assert ((g != 0).sum(axis=(2, 3)) == 16).all()


# ---- Dropout ---------------------------------------------------------------------------------
def test_dropout_train_and_eval():
    layer = Dropout(0.5, generator=st.Generator(0))
    x = st.ones(1000)
    y = layer(x)
    assert set(np.unique(y.numpy()).tolist()) == {0.0, 2.0}
    assert layer.eval()(x) is x
    assert Sequential(Dropout(0.9)).eval()(x) is x
    assert layer.train()(x) is not x
    assert repr(Dropout(0.25)) == "Dropout(p=0.25)"


def test_dropout_seeded_by_manual_seed():
    layer = Dropout(0.3)
    x = st.ones(500)
    st.manual_seed(4)
    a = layer(x).numpy()
    st.manual_seed(4)
    np.testing.assert_array_equal(layer(x).numpy(), a)


@pytest.mark.parametrize("p", [-0.5, 1.5, "0.5", True])
def test_dropout_rejects_bad_p(p):
    with pytest.raises(ValueError, match="probability"):
        Dropout(p)
