"""Transfers between devices and dtypes: ``to``, ``astype``, ``cpu``, and their gradients."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

import scitensor as st
from scitensor.testing import check_grad

DTYPES = [st.bool, st.int32, st.int64, st.float16, st.bfloat16, st.float32, st.float64]


def test_to_same_device_and_dtype_returns_self(device):
    x = st.ones(3, device=device)
    assert x.to(device) is x
    assert x.to(dtype=st.float32) is x
    assert x.to(device=str(device), dtype="float32") is x


def test_to_copy_gives_independent_storage(device):
    x = st.ones(3, device=device)
    y = x.to(copy=True)
    assert y is not x and y.device == device
    y[0] = 5.0
    assert x.tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("src", DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("dst", DTYPES, ids=lambda d: d.name)
def test_cast_matches_numpy(device, src, dst):
    vals = np.array([0.0, 1.0, -2.0, 3.5, 100.0])
    if src.is_bool:
        vals = vals != 0
    elif src.is_integer:
        vals = vals.astype(np.int64)
    a = vals.astype(src.np)
    x = st.tensor(a, device=device)
    y = x.astype(dst)
    assert y.dtype is dst and y.device == device
    np.testing.assert_array_equal(y.numpy(), a.astype(dst.np))


def test_to_accepts_dtype_spellings(device):
    x = st.ones(2, device=device)
    assert x.to(dtype="float16").dtype is st.float16
    assert x.to(dtype=np.float64).dtype is st.float64
    assert x.to(st.bfloat16).dtype is st.bfloat16  # dtype as the first argument
    assert x.to("int32").dtype is st.int32
    assert x.astype(float).dtype is st.float32
    assert x.astype(int).dtype is st.int64
    assert x.astype(bool).dtype is st.bool
    assert st.to(x, device, st.float64).dtype is st.float64


def test_cast_gradient_comes_back_in_input_dtype():
    w = st.tensor([1.5, -2.5], requires_grad=True)
    z = w.astype(st.bfloat16)
    assert z.requires_grad and z.dtype is st.bfloat16
    (z.astype(st.float64) * 3).sum().backward()
    assert w.grad.dtype is st.float32
    assert w.grad.tolist() == [3.0, 3.0]


def test_cast_to_integer_cuts_the_graph():
    w = st.tensor([1.5, -2.5], requires_grad=True)
    y = w.to(dtype=st.int64)
    assert y.tolist() == [1, -2] and not y.requires_grad


def test_cast_gradient_check_and_second_order():
    assert check_grad(lambda v: v.astype(st.float32).astype(st.float64) ** 2,
                      st.tensor([0.5, -1.0, 2.0], dtype=st.float64), eps=1e-2, rtol=1e-4)
    x = st.tensor([0.5, 2.0], dtype=st.float64)
    g2 = st.grad(lambda v: st.grad(lambda u: (u.to(dtype=st.float32) ** 3).sum())(v).sum())(x)
    assert g2.dtype is st.float64
    np.testing.assert_allclose(g2.numpy(), 6 * x.numpy(), rtol=1e-6)


def test_cpu_method_and_unusable_cuda():
    x = st.ones(2)
    assert x.cpu() is x
    if not st.cuda_status()[0]:
        with pytest.raises(RuntimeError, match="cuda:0 is not usable"):
            x.cuda()
        with pytest.raises(RuntimeError, match="not usable"):
            x.to("cuda:1")


def test_to_bad_arguments():
    x = st.ones(2)
    with pytest.raises(ValueError, match="Device: unknown device type 'gpu'"):
        x.to("gpu")
    with pytest.raises(TypeError, match="unknown dtype name 'float8'"):
        x.to(dtype="float8")
    with pytest.raises(TypeError, match="to: input must be a Tensor"):
        st.to(np.ones(2), dtype=st.float64)


@settings(max_examples=30, deadline=None)
@given(values=hs.lists(hs.floats(-1e3, 1e3, width=32), max_size=8),
       dst=hs.sampled_from([st.float16, st.bfloat16, st.float32, st.float64]))
def test_round_trip_through_wider_dtype_is_exact(values, dst):
    a = np.asarray(values, dtype=np.float32).astype(dst.np)
    x = st.tensor(a)
    back = x.astype(st.float64).astype(dst)
    np.testing.assert_array_equal(back.numpy(), a)


def test_device_move_round_trip(device):
    a = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    x = st.tensor(a, device=device, requires_grad=True)
    y = x.to("cpu").to(device)
    np.testing.assert_array_equal(y.numpy(), a)
    (y * 2).sum().backward()
    assert x.grad.device == device
    np.testing.assert_array_equal(x.grad.numpy(), np.full((2, 3), 2.0, np.float32))
