"""Constructors: tensor, zeros/ones/full/empty, arange, linspace, eye, *_like, from_numpy,
from_dlpack — values, dtypes, devices and errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs
from hypothesis.extra import numpy as hnp

import scitensor as st

FLOATS = [st.float16, st.bfloat16, st.float32, st.float64]
ALL = [st.bool, st.int32, st.int64, *FLOATS]


def check(x, shape, dtype, device, values=None):
    assert isinstance(x, st.Tensor)
    assert x.shape == shape and x.dtype is dtype and x.device == device
    if values is not None:
        np.testing.assert_array_equal(x.numpy(), np.asarray(values, dtype=dtype.np))


def test_tensor_infers_dtypes(device):
    check(st.tensor([[1, 2], [3, 4]], device=device), (2, 2), st.int64, device, [[1, 2], [3, 4]])
    check(st.tensor(1.5, device=device), (), st.float32, device, 1.5)
    check(st.tensor([True, False], device=device), (2,), st.bool, device, [True, False])
    check(st.tensor([1, 2.5], device=device), (2,), st.float32, device, [1, 2.5])
    check(st.tensor([], device=device), (0,), st.float32, device)
    check(st.tensor([[]], device=device), (1, 0), st.float32, device)
    check(st.tensor([st.tensor(1.0), st.tensor(2.0)], device=device), (2,), st.float32, device)


@pytest.mark.parametrize("np_dtype,expected", [
    (np.float64, st.float64), (np.float16, st.float16), (np.int32, st.int32),
    (np.int64, st.int64), (np.bool_, st.bool), (np.uint8, st.int64), (np.int16, st.int64),
    (st.bfloat16.np, st.bfloat16)])
def test_tensor_keeps_numpy_dtypes(device, np_dtype, expected):
    a = np.arange(3).astype(np_dtype)
    check(st.tensor(a, device=device), (3,), expected, device, a.astype(expected.np))
    check(st.tensor(a[1], device=device), (), expected, device)  # NumPy scalars too


def test_tensor_copies_and_converts(device):
    a = np.zeros(3, np.float32)
    x = st.tensor(a, device=device)
    a[0] = 1.0
    assert x.tolist() == [0.0, 0.0, 0.0]
    check(st.tensor([1.7, -1.2], dtype=st.int32, device=device), (2,), st.int32, device, [1, -1])
    w = st.ones(2, requires_grad=True)
    c = st.tensor(w, dtype=st.float64)
    assert not c.requires_grad and c.dtype is st.float64
    check(st.Tensor([1.0, 2.0], device=device), (2,), st.float32, device, [1, 2])
    assert st.tensor([1.0], requires_grad=True).requires_grad


def test_tensor_errors():
    with pytest.raises(ValueError, match=r"tensor: cannot make a tensor .*ragged"):
        st.tensor([[1, 2], [3]])
    with pytest.raises(TypeError, match="tensor: cannot make a tensor from data of NumPy kind"):
        st.tensor(["a"])
    with pytest.raises(TypeError, match="complex64 is not supported"):
        st.tensor(np.ones(2, np.complex64))
    with pytest.raises(TypeError, match="tensor: only floating tensors can require gradients"):
        st.tensor([1, 2], requires_grad=True)
    with pytest.raises(TypeError, match="unknown dtype name"):
        st.tensor([1], dtype="float128")


@pytest.mark.parametrize("dtype", ALL, ids=lambda d: d.name)
def test_filled_constructors(device, dtype):
    check(st.zeros(2, 3, dtype=dtype, device=device), (2, 3), dtype, device, np.zeros((2, 3)))
    check(st.zeros((2, 3), dtype=dtype, device=device), (2, 3), dtype, device)
    check(st.ones([4], dtype=dtype, device=device), (4,), dtype, device, np.ones(4))
    check(st.full((2,), 1, dtype=dtype, device=device), (2,), dtype, device, [1, 1])
    check(st.empty(0, 2, dtype=dtype, device=device), (0, 2), dtype, device)
    check(st.eye(2, 3, dtype=dtype, device=device), (2, 3), dtype, device, np.eye(2, 3))
    base = st.ones(3, 1, dtype=dtype, device=device)
    check(st.zeros_like(base), (3, 1), dtype, device, np.zeros((3, 1)))
    check(st.ones_like(base), (3, 1), dtype, device, np.ones((3, 1)))
    check(st.full_like(base, 1), (3, 1), dtype, device, np.ones((3, 1)))
    check(st.empty_like(base), (3, 1), dtype, device)
    check(st.zeros_like(base, dtype=st.float64), (3, 1), st.float64, device)


def test_default_dtypes_and_inference(device):
    check(st.zeros(device=device), (), st.float32, device, 0)
    check(st.full((2,), 7, device=device), (2,), st.int64, device, [7, 7])
    check(st.full(3, True, device=device), (3,), st.bool, device, [True] * 3)
    check(st.full((2,), 2.5, device=device), (2,), st.float32, device, [2.5, 2.5])
    check(st.full_like(st.ones(2, dtype=st.int64, device=device), 3.7), (2,), st.int64, device,
          [3, 3])
    st.set_default_dtype(st.float64)
    check(st.ones(2, device=device), (2,), st.float64, device)
    check(st.tensor([0.5], device=device), (1,), st.float64, device)
    check(st.arange(0, 1, 0.5, device=device), (2,), st.float64, device, [0, 0.5])


@pytest.mark.parametrize("args,kw", [
    ((5,), {}), ((1, 7, 2), {}), ((5, 0, -2), {}), ((0, 1, 0.25), {}), ((3,), {"dtype": "float64"}),
    ((-2.5, 2.5, 0.5), {}), ((4, 2), {}), ((0, 10, 3), {"dtype": st.int32})])
def test_arange_matches_numpy(device, args, kw):
    x = st.arange(*args, device=device, **kw)
    ref = np.arange(*args)
    assert x.shape == ref.shape and x.device == device
    np.testing.assert_allclose(x.numpy().astype(np.float64), ref)
    ints = all(isinstance(a, int) for a in args)
    assert x.dtype is (st.as_dtype(kw["dtype"]) if kw else st.int64 if ints else st.float32)


@pytest.mark.parametrize("start,stop,num", [(0, 1, 5), (0, 1, 0), (2, 2, 1), (-1, 3, 9),
                                            (1, 0, 4)])
def test_linspace_matches_numpy(device, start, stop, num):
    x = st.linspace(start, stop, num, device=device)
    check(x, (num,), st.float32, device)
    np.testing.assert_allclose(x.numpy(), np.linspace(start, stop, num), rtol=1e-6)
    assert st.linspace(0, 1, 3, dtype=st.float64).dtype is st.float64


def test_eye(device):
    check(st.eye(3, device=device), (3, 3), st.float32, device, np.eye(3))
    check(st.eye(0, device=device), (0, 0), st.float32, device)
    check(st.eye(2, 4, dtype=st.int64, device=device), (2, 4), st.int64, device, np.eye(2, 4))


def test_constructor_errors():
    with pytest.raises(ValueError, match=r"zeros: negative dimension -1 in shape \(-1,\)"):
        st.zeros(-1)
    with pytest.raises(TypeError, match=r"ones: shape entries must be ints, got 2.0"):
        st.ones(2.0)
    with pytest.raises(ValueError, match="eye: negative dimension"):
        st.eye(-1)
    with pytest.raises(ValueError, match="arange: step must not be zero"):
        st.arange(0, 10, 0)
    with pytest.raises(ValueError, match="linspace: num must be a non-negative int"):
        st.linspace(0, 1, -1)
    with pytest.raises(TypeError, match="full: cannot make a tensor from data of NumPy kind"):
        st.full((2,), "a")
    with pytest.raises(TypeError, match="zeros: only floating tensors can require gradients"):
        st.zeros(2, dtype=st.int64, requires_grad=True)
    with pytest.raises(TypeError, match="zeros_like: expected a Tensor, got ndarray"):
        st.zeros_like(np.ones(2))
    with pytest.raises(ValueError, match="Device: unknown device type"):
        st.ones(2, device="tpu")


def test_requires_grad_constructors():
    for x in (st.zeros(2, requires_grad=True), st.ones(2, requires_grad=True),
              st.full((2,), 1.0, requires_grad=True), st.randn(2, requires_grad=True),
              st.zeros_like(st.ones(2), requires_grad=True)):
        assert x.requires_grad and x.is_leaf and x.grad is None


def test_from_numpy_shares_memory():
    a = np.zeros(3, np.float32)
    x = st.from_numpy(a)
    a[0] = 5.0
    assert x.tolist() == [5.0, 0.0, 0.0]
    x[1] = 2.0
    assert a[1] == 2.0
    assert np.shares_memory(x.numpy(), a)
    v = np.arange(12.0).reshape(3, 4)[::2, ::-1]  # non-contiguous view is wrapped as is
    assert st.from_numpy(v).tolist() == v.tolist()
    with pytest.raises(TypeError, match=r"from_numpy: expected a numpy.ndarray, got list"):
        st.from_numpy([1, 2])
    with pytest.raises(TypeError, match="uint8 is not supported"):
        st.from_numpy(np.zeros(2, np.uint8))


@pytest.mark.parametrize("np_dtype", [np.float16, np.float32, np.float64, np.int32, np.int64,
                                      np.bool_])
def test_dlpack_round_trip_with_numpy(np_dtype):
    a = (np.arange(6) % 2 if np_dtype is np.bool_ else np.arange(6)).astype(np_dtype)
    a = a.reshape(2, 3)
    x = st.from_dlpack(a)
    assert x.device == "cpu" and x.dtype is st.as_dtype(np.dtype(np_dtype))
    assert np.shares_memory(x.numpy(), a)  # zero-copy
    b = np.from_dlpack(x)
    assert np.shares_memory(a, b)
    np.testing.assert_array_equal(b, a)
    assert st.from_dlpack(x).tolist() == a.tolist()  # a tensor is a DLPack producer too
    assert x.__dlpack_device__()[0] == 1  # kDLCPU


def test_dlpack_errors():
    with pytest.raises(TypeError, match="NumPy cannot export bfloat16 through DLPack"):
        np.from_dlpack(st.ones(2, dtype=st.bfloat16))
    with pytest.raises(TypeError, match="from_dlpack: list does not implement the DLPack"):
        st.from_dlpack([1])
    with pytest.raises(TypeError, match="uint8 is not supported"):
        st.from_dlpack(np.ones(2, np.uint8))


@settings(max_examples=30, deadline=None)
@given(a=hnp.arrays(hs.sampled_from([np.float32, np.float64, np.int32, np.int64, np.bool_]),
                    hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)))
def test_tensor_numpy_round_trip(a):
    x = st.tensor(a)
    assert x.shape == a.shape and x.dtype.np == a.dtype
    np.testing.assert_array_equal(x.numpy(), a)
    if a.size:  # nested lists lose the shape of empty arrays
        np.testing.assert_array_equal(st.tensor(a.tolist(), dtype=x.dtype).numpy(), a)
    np.testing.assert_array_equal(np.asarray(st.from_numpy(a)), a)
