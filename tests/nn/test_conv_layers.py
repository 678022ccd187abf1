"""Conv2d / ConvTranspose2d layers: shapes, PyTorch's initialisation, seeding, parameters,
agreement with the functional ops and with PyTorch's layers, and a training step."""

from __future__ import annotations

import math

import numpy as np
import pytest

import scitensor as st
from scitensor import optim
from scitensor.nn.conv import Conv2d, ConvTranspose2d
from scitensor.ops.conv import conv2d, conv_transpose2d

try:
    import torch
except Exception:
    torch = None


def test_conv2d_shapes_and_parameters(device):
    layer = Conv2d(4, 6, (3, 5), stride=2, padding=(1, 2), groups=2, device=device)
    assert layer.weight.shape == (6, 2, 3, 5) and layer.bias.shape == (6,)
    assert [n for n, _ in layer.named_parameters()] == ["weight", "bias"]
    assert set(layer.state_dict()) == {"weight", "bias"}
    y = layer(st.randn(2, 4, 9, 10, device=device))
    assert y.shape == (2, 6, 5, 5) and y.device == device
    assert Conv2d(3, 8, 3, bias=False).bias is None
    assert Conv2d(3, 8, 3, padding="same")(st.ones(1, 3, 7, 6)).shape == (1, 8, 7, 6)
    assert "groups=2" in repr(layer)


@pytest.mark.parametrize("cls,w_shape,fan_in", [
    (lambda: Conv2d(8, 16, 3, groups=2), (16, 4, 3, 3), 4 * 9),
    (lambda: ConvTranspose2d(8, 12, (2, 3), groups=4), (8, 3, 2, 3), 3 * 6),
])
def test_default_init_is_pytorchs(cls, w_shape, fan_in):
    """kaiming_uniform(a=sqrt(5)) for weights and U(-1/sqrt(fan_in), ..) for the bias, i.e.
    both uniform with bound 1/sqrt(fan_in); fan_in as PyTorch computes it."""
    st.manual_seed(3)
    layer = cls()
    bound = 1 / math.sqrt(fan_in)
    w, b = layer.weight.numpy(), layer.bias.numpy()
    assert w.shape == w_shape
    assert np.abs(w).max() <= bound and np.abs(b).max() <= bound
    assert np.abs(w).max() > 0.8 * bound  # spread over the range, not a narrower one
    assert abs(w.std() - bound / math.sqrt(3)) < 0.25 * bound
    st.manual_seed(3)
    again = cls()
    np.testing.assert_array_equal(again.weight.numpy(), w)  # st.manual_seed governs it


def test_layer_matches_functional_op():
    layer = Conv2d(3, 5, 3, stride=(2, 1), padding=1, dilation=(1, 2))
    x = st.randn(2, 3, 8, 9)
    np.testing.assert_allclose(
        layer(x).numpy(), conv2d(x, layer.weight, layer.bias, (2, 1), 1, (1, 2)).numpy())
    up = ConvTranspose2d(5, 3, 3, stride=2, padding=1, output_padding=1)
    z = st.randn(2, 5, 4, 4)
    np.testing.assert_allclose(
        up(z).numpy(), conv_transpose2d(z, up.weight, up.bias, 2, 1, 1).numpy())
    assert up(z).shape == (2, 3, 8, 8)


@pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
def test_layers_match_pytorch_with_copied_weights():
    tconv = torch.nn.Conv2d(6, 4, 3, stride=2, padding=1, groups=2).double()
    tup = torch.nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1,
                                   groups=2).double()
    conv = Conv2d(6, 4, 3, stride=2, padding=1, groups=2, dtype=st.float64)
    up = ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2,
                         dtype=st.float64)
    conv.load_state_dict({k: v.detach().numpy() for k, v in tconv.state_dict().items()})
    up.load_state_dict({k: v.detach().numpy() for k, v in tup.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((2, 6, 9, 7))
    tx = torch.tensor(x, requires_grad=True)
    ty = tup(tconv(tx))
    ty.square().sum().backward()
    sx = st.tensor(x, requires_grad=True)
    sy = up(conv(sx))
    sy.square().sum().backward()
    np.testing.assert_allclose(sy.numpy(), ty.detach().numpy(), rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(sx.grad.numpy(), tx.grad.numpy(), rtol=1e-10, atol=1e-11)
    np.testing.assert_allclose(conv.weight.grad.numpy(), tconv.weight.grad.numpy(),
                               rtol=1e-10, atol=1e-11)
    np.testing.assert_allclose(up.bias.grad.numpy(), tup.bias.grad.numpy(), rtol=1e-10)


def test_training_steps_reduce_the_loss(device):
    st.manual_seed(0)
    conv = Conv2d(2, 4, 3, padding="same", device=device)
    x = st.randn(8, 2, 6, 6, device=device)
    target = st.randn(8, 4, 6, 6, device=device)
    opt = optim.SGD(conv.parameters(), lr=0.2, momentum=0.9)
    losses = []
    for _ in range(5):
        loss = ((conv(x) - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("make,match", [
    (lambda: Conv2d(4, 6, 3, groups=4), "groups=4 must divide"),
    (lambda: Conv2d(0, 6, 3), "in_channels must be a positive int"),
    (lambda: Conv2d(3, 6, 0), "kernel_size must be"),
    (lambda: Conv2d(3, 6, 3, stride=2, padding="same"), "needs stride 1"),
    (lambda: ConvTranspose2d(3, 6, 3, stride=2, output_padding=2), "output_padding"),
    (lambda: Conv2d(3, 6, 3)(st.ones(1, 4, 8, 8)), r"must be \(N, 3, H, W\)"),
])
def test_layer_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()
