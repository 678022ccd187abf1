"""BatchNorm1d / BatchNorm2d: training vs evaluation, running statistics (momentum and the
cumulative average) against PyTorch, buffers and state dicts, options, errors, devices."""

from __future__ import annotations

import numpy as np
import pytest

import scitensor as st
from scitensor.nn.normalization import BatchNorm1d, BatchNorm2d

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None


def batches(shape, n=3, seed=0):
    r = np.random.default_rng(seed)
    return [r.standard_normal(shape) * (i + 1) + i for i in range(n)]


def test_defaults_buffers_and_state_dict():
    bn = BatchNorm2d(4)
    assert bn.weight.tolist() == [1.0] * 4 and bn.bias.tolist() == [0.0] * 4
    assert list(bn.state_dict()) == ["weight", "bias", "running_mean", "running_var",
                                     "num_batches_tracked"]
    assert [n for n, _ in bn.named_parameters()] == ["weight", "bias"]
    assert bn.num_batches_tracked.dtype == st.int64
    assert "BatchNorm2d(4, eps=1e-05, momentum=0.1" in repr(bn)


def test_training_updates_running_stats_and_eval_uses_them():
    bn = BatchNorm2d(3)
    for a in batches((4, 3, 5, 5)):
        y = bn(st.tensor(a, dtype=st.float32))
        axes = (0, 2, 3)
        np.testing.assert_allclose(y.numpy().mean(axis=axes), 0, atol=1e-5)
        np.testing.assert_allclose(y.numpy().std(axis=axes), 1, atol=1e-3)
    assert bn.num_batches_tracked.item() == 3
    bn.eval()
    x = st.tensor(batches((2, 3, 4, 4), 1, seed=9)[0], dtype=st.float32)
    rm = bn.running_mean.numpy()[None, :, None, None]
    rv = bn.running_var.numpy()[None, :, None, None]
    np.testing.assert_allclose(bn(x).numpy(), (x.numpy() - rm) / np.sqrt(rv + 1e-5),
                               rtol=1e-5, atol=1e-6)
    before = bn.running_mean.numpy().copy()
    bn(x)
    np.testing.assert_array_equal(bn.running_mean.numpy(), before)
    assert bn.num_batches_tracked.item() == 3


@pytest.mark.skipif(torch is None, reason="torch is not installed")
@pytest.mark.parametrize("cls,tcls,shape", [(BatchNorm2d, "BatchNorm2d", (4, 3, 5, 6)),
                                            (BatchNorm1d, "BatchNorm1d", (8, 3)),
                                            (BatchNorm1d, "BatchNorm1d", (4, 3, 7))])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_matches_torch_over_several_steps(cls, tcls, shape, momentum):
    ours = cls(3, momentum=momentum, dtype=st.float64)
    theirs = getattr(torch.nn, tcls)(3, momentum=momentum).double()
    r = np.random.default_rng(1)
    with torch.no_grad():
        theirs.weight.copy_(torch.tensor(r.standard_normal(3)))
        theirs.bias.copy_(torch.tensor(r.standard_normal(3)))
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    for a in batches(shape):
        x, tx = st.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
        y, ty = ours(x), theirs(tx)
        np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-10, atol=1e-12)
        (y * y).sum().backward()
        (ty * ty).sum().backward()
        np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ours.weight.grad.numpy(), theirs.weight.grad.numpy(), rtol=1e-9)
    np.testing.assert_allclose(ours.bias.grad.numpy(), theirs.bias.grad.numpy(), rtol=1e-9)
    for name in ("running_mean", "running_var"):
        np.testing.assert_allclose(getattr(ours, name).numpy(),
                                   getattr(theirs, name).numpy(), rtol=1e-10)
    assert ours.num_batches_tracked.item() == theirs.num_batches_tracked.item() == 3
    ours.eval()
    theirs.eval()
    a = batches(shape, 1, seed=5)[0]
    np.testing.assert_allclose(ours(st.tensor(a)).numpy(),
                               theirs(torch.tensor(a)).detach().numpy(), rtol=1e-10)


def test_no_affine_and_no_running_stats():
    bn = BatchNorm1d(2, affine=False, track_running_stats=False)
    assert bn.weight is None and list(bn.parameters()) == []
    assert list(bn.state_dict()) == []
    x = st.tensor(batches((6, 2), 1)[0])
    y_train = bn(x).numpy()
    y_eval = bn.eval()(x).numpy()  # no running stats: batch statistics in both modes
    np.testing.assert_allclose(y_eval, y_train)
    np.testing.assert_allclose(y_eval.mean(axis=0), 0, atol=1e-12)
    bn.reset_running_stats()


def test_reset_and_to_float64():
    bn = BatchNorm2d(2)
    bn(st.randn(3, 2, 2, 2))
    bn.reset_running_stats()
    assert bn.running_mean.tolist() == [0, 0] and bn.running_var.tolist() == [1, 1]
    assert bn.num_batches_tracked.item() == 0
    bn.double()
    assert bn.running_mean.dtype == st.float64 and bn.weight.dtype == st.float64
    assert bn.num_batches_tracked.dtype == st.int64
    assert bn(st.randn(3, 2, 2, 2, dtype=st.float64)).dtype == st.float64


def test_mixed_precision_input():
    bn = BatchNorm2d(3)  # float32 parameters and buffers
    y = bn(st.randn(4, 3, 4, 4).astype(st.bfloat16))
    assert y.dtype == st.bfloat16 and bn.running_mean.dtype == st.float32


@pytest.mark.parametrize("layer,shape,match", [
    (BatchNorm2d(3), (4, 3, 5), "4D input"),
    (BatchNorm1d(3), (4, 3, 5, 5), "2D or 3D"),
    (BatchNorm2d(3), (4, 2, 5, 5), "2 channels on axis 1, expected 3"),
    (BatchNorm1d(3), (1, 3), "more than 1 value per channel"),
])
def test_errors(layer, shape, match):
    with pytest.raises(ValueError, match=match):
        layer(st.ones(*shape))


@pytest.mark.parametrize("kwargs,match", [(dict(num_features=0), "positive int"),
                                          (dict(num_features=2, momentum=1.5), "momentum")])
def test_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BatchNorm2d(**kwargs)


def test_on_device(device):
    bn = BatchNorm2d(3, device=device)
    x = st.tensor(batches((4, 3, 4, 4), 1)[0], dtype=st.float32, device=device)
    y = bn(x)
    y.sum().backward()
    assert y.device == device and bn.running_mean.device == device
    ref = BatchNorm2d(3)
    y_cpu = ref(st.tensor(x.numpy()))
    np.testing.assert_allclose(y.numpy(), y_cpu.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn.running_var.numpy(), ref.running_var.numpy(), rtol=1e-5)


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("dtype", [st.float32, st.bfloat16])
def test_on_device_over_several_steps(device, dtype, momentum):
    """Running statistics and the batch counter on the device match the CPU (the counter
    is bumped by the running-statistics kernel on CUDA; momentum=None reads it instead)."""
    layers = [BatchNorm2d(3, momentum=momentum, device=d, dtype=dtype)
              for d in (st.Device("cpu"), device)]
    for a in batches((4, 3, 4, 4)):
        for bn in layers:
            bn(st.tensor(a, dtype=dtype, device=bn.running_mean.device))
    tol = 1e-5 if dtype == st.float32 else 2e-2
    cpu, dev = layers
    assert cpu.num_batches_tracked.item() == dev.num_batches_tracked.item() == 3
    for name in ("running_mean", "running_var"):
        np.testing.assert_allclose(getattr(dev, name).astype(st.float64).numpy(),
                                   getattr(cpu, name).astype(st.float64).numpy(),
                                   rtol=tol, atol=tol)
    dev.eval()
    dev(st.tensor(batches((4, 3, 4, 4), 1)[0], dtype=dtype, device=device))
    assert dev.num_batches_tracked.item() == 3
