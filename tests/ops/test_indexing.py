"""Indexing: basic and advanced getitem, setitem, scatter_add, index_add, take_along_axis,
one_hot — forward against NumPy, gradients (repeated indices accumulate), errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs
from hypothesis.extra import numpy as hnp

import scitensor as st
from scitensor.testing import check_grad

A = np.arange(24.0).reshape(2, 3, 4)
M = A > 10

BASIC_KEYS = [
    1, -1, (slice(None), 2), (Ellipsis, -1), (None, 1, None), (slice(None, None, -1),),
    (slice(3, 0, -2),), (0, slice(None, None, -1), 1), (slice(1, 1),), (..., None),
    (slice(None), slice(None, None, 2), slice(-1, None, -3)), (1, 2, 3), (),
]
ADVANCED_KEYS = [
    ([0, 1, 1],), (slice(None), [2, 0]), ([0, 1], [1, 2]), ([[0], [1]], [0, 2]),
    (Ellipsis, [3, 3, -1]), (M[..., 0],), (M,), (slice(None), None, [0, 0], 1),
    ([True, False],), (np.array([], dtype=np.int64),), (1, [2, 0, 2], slice(None, None, -1)),
]


def to_tensor_key(key, device):
    key = key if isinstance(key, tuple) else (key,)
    return tuple(st.tensor(np.asarray(k), device=device) if isinstance(k, list | np.ndarray)
                 else k for k in key)


@pytest.mark.parametrize("key", BASIC_KEYS + ADVANCED_KEYS, ids=repr)
def test_getitem_matches_numpy(device, key):
    x = st.tensor(A, device=device)
    for k in (key, to_tensor_key(key, device)):
        got = x[k].numpy()
        ref = A[key]
        assert got.shape == ref.shape
        np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("key", BASIC_KEYS + ADVANCED_KEYS, ids=repr)
def test_getitem_gradient(key):
    assert check_grad(lambda v: v[key] * 1.0, st.tensor(np.sin(A)))


def test_repeated_indices_accumulate(device):
    x = st.zeros(4, dtype=st.float64, device=device, requires_grad=True)
    idx = st.tensor([0, 2, 0, 0], device=device)
    (x[idx] * st.tensor([1.0, 2.0, 3.0, 4.0], dtype=st.float64, device=device)).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [8.0, 0.0, 2.0, 0.0])


def test_getitem_gradient_of_gradient():
    # f(x) = sum(x[idx]^3) with a repeated index: d2f/dx2 = 6 * count * x (diagonal)
    x = st.tensor([1.0, 2.0, 3.0], dtype=st.float64)
    idx = st.tensor([2, 0, 2])
    f = lambda v: (v[idx] ** 3).sum()
    hvp = st.grad(lambda v: st.inner(st.grad(f)(v), st.ones(3, dtype=st.float64)))(x)
    np.testing.assert_allclose(hvp.numpy(), [6.0, 0.0, 36.0])
    g2 = st.grad(lambda v: st.grad(lambda w: (w[1:, None][::-1] ** 3).sum())(v).sum())(x)
    np.testing.assert_allclose(g2.numpy(), [0.0, 12.0, 18.0])


def test_getitem_keeps_views_on_cpu():
    a = np.zeros(5)
    x = st.from_numpy(a)
    v = x[1::2]
    v[0] = 3.0
    assert a[1] == 3.0


def test_getitem_mixed_dtype_gradient_dtype():
    x = st.tensor([1.0, 2.0], dtype=st.float16, requires_grad=True)
    y = x[st.tensor([1, 1])].astype(st.float64)
    (y * y).sum().backward()
    assert x.grad.dtype is st.float16
    np.testing.assert_allclose(x.grad.numpy().astype(np.float64), [0.0, 8.0])


@settings(max_examples=30, deadline=None)
@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=5), data=hs.data())
def test_basic_and_integer_indexing_properties(shape, data):
    a = np.random.default_rng(0).standard_normal(shape)
    x = st.tensor(a)
    key = data.draw(hnp.basic_indices(shape, allow_newaxis=True, allow_ellipsis=True))
    np.testing.assert_array_equal(x[key].numpy(), a[key])
    if shape[0]:
        idx = data.draw(hs.lists(hs.integers(-shape[0], shape[0] - 1), max_size=6))
        idx = np.asarray(idx, dtype=np.int64)
        np.testing.assert_array_equal(x[st.tensor(idx)].numpy(), a[idx])
        xg = st.tensor(a, requires_grad=True)
        g = np.random.default_rng(1).standard_normal(a[idx].shape)
        xg[st.tensor(idx)].backward(st.tensor(g))
        expected = np.zeros_like(a)
        np.add.at(expected, idx, g)
        np.testing.assert_allclose(xg.grad.numpy(), expected)
    mask = a > 0
    np.testing.assert_array_equal(x[st.tensor(mask)].numpy(), a[mask])


def test_index_errors_name_op_axis_and_size(device):
    x = st.zeros(3, 4, device=device)
    with pytest.raises(IndexError, match="getitem: index 5 is out of range for axis 0 with "
                                         "size 3"):
        x[5]
    with pytest.raises(IndexError, match="getitem: index -5 is out of range for axis 1 with "
                                         "size 4"):
        x[:, -5]
    with pytest.raises(IndexError, match="getitem: too many indices"):
        x[0, 0, 0]
    with pytest.raises(TypeError, match="getitem: unsupported index"):
        x["a"]
    with pytest.raises(TypeError, match="getitem: index tensors must be integer or bool"):
        x[st.tensor([0.0], device=device)]
    if device.type == "cpu":  # bounds of index tensors are checked on the host
        with pytest.raises(IndexError, match=r"getitem: index 7 is out of bounds for axis 1 "
                                             r"with size 4 \(indexing a tensor of shape"):
            x[:, st.tensor([0, 7])]


# ---- setitem ----------------------------------------------------------------------------------
def test_setitem_matches_numpy(device):
    x = st.zeros(3, 4, device=device)
    a = np.zeros((3, 4), np.float32)
    for key, val in [(0, 1.0), ((1, slice(None, None, 2)), [2.0, 3.0]), ((slice(None), -1), 7),
                     ((Ellipsis, 1), np.array([4.0, 5.0, 6.0])), ([2, 2], 5)]:
        x[key] = val
        a[key] = val
    x[x > 6.5] = -1.0
    a[a > 6.5] = -1.0
    x[st.tensor([0, 1], device=device), 2] = st.tensor([8.0, 9.0], device=device)
    a[[0, 1], 2] = [8.0, 9.0]
    np.testing.assert_array_equal(x.numpy(), a)


def test_setitem_on_grad_tensor_errors_clearly():
    w = st.ones(3, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"setitem: cannot assign into a tensor that requires "
                                           r"grad.*no_grad"):
        w[0] = 2.0
    assert w.tolist() == [1.0, 1.0, 1.0]  # a failed op leaves its input untouched
    with pytest.raises(RuntimeError, match="setitem"):
        (w * 2)[0] = 1.0
    with st.no_grad():
        w[0] = 2.0
    assert w.tolist() == [2.0, 1.0, 1.0] and w.requires_grad


def test_setitem_errors(device):
    x = st.zeros(3, 4, device=device)
    with pytest.raises(IndexError, match="setitem: index 5 is out of range for axis 0"):
        x[5] = 1.0
    with pytest.raises(ValueError, match=r"setitem: cannot assign a value of shape \(5,\)"):
        x[0] = st.ones(5, device=device)
    with pytest.raises(TypeError, match="setitem: cannot assign"):
        x[0] = "abc"
    assert not x.numpy().any()
    b = st.broadcast_to(st.zeros(4, device=device), (3, 4))
    if device.type == "cpu":
        with pytest.raises(ValueError, match=r"setitem: .* read-only view .*to\(copy=True\)"):
            b[0, 0] = 1.0
    c = b.to(copy=True)
    c[0, 0] = 1.0
    assert c.numpy()[0].tolist() == [1, 0, 0, 0] and not b.numpy().any()


# ---- gathers and scatters -----------------------------------------------------------------------
def test_take_along_axis(device):
    a = np.random.default_rng(0).standard_normal((3, 4))
    idx = np.array([[0, 0], [3, 1], [2, -1]])
    x = st.tensor(a, device=device)
    got = st.take_along_axis(x, st.tensor(idx, device=device), axis=1)
    np.testing.assert_array_equal(got.numpy(), np.take_along_axis(a, idx, 1))
    rows = np.array([[2, 0, 1, 2]])
    np.testing.assert_array_equal(x.take_along_axis(st.tensor(rows, device=device), 0).numpy(),
                                  np.take_along_axis(a, rows, 0))
    assert check_grad(lambda v: st.take_along_axis(v, st.tensor(idx), -1), st.tensor(a))


def test_scatter_add(device):
    a = np.random.default_rng(0).standard_normal((3, 4))
    src = np.random.default_rng(1).standard_normal((2, 4))
    idx = np.array([[0, 1, 2, 0], [2, 2, 1, 0]])
    got = st.scatter_add(st.tensor(a, device=device), 0, st.tensor(idx, device=device),
                         st.tensor(src, device=device))
    ref = a.copy()
    for i in range(2):
        for j in range(4):
            ref[idx[i, j], j] += src[i, j]
    np.testing.assert_allclose(got.numpy(), ref)
    assert check_grad(lambda x, s: st.scatter_add(x, 0, st.tensor(idx), s),
                      st.tensor(a), st.tensor(src))
    # gradient of gradient through scatter_add and take_along_axis
    s0 = st.tensor(src)
    f = lambda s: (st.scatter_add(st.tensor(a), 0, st.tensor(idx), s) ** 2).sum()
    assert check_grad(lambda s: st.grad(f)(s), s0)


def test_index_add(device):
    a = np.random.default_rng(0).standard_normal((3, 4))
    src = np.random.default_rng(1).standard_normal((3, 3))
    idx = np.array([0, 0, 3])
    got = st.index_add(st.tensor(a, device=device), 1, st.tensor(idx, device=device),
                       st.tensor(src, device=device))
    ref = a.copy()
    np.add.at(ref, (slice(None), idx), src)
    np.testing.assert_allclose(got.numpy(), ref)
    assert check_grad(lambda x, s: st.index_add(x, -1, st.tensor(idx), s),
                      st.tensor(a), st.tensor(src))
    x = st.zeros(2, 2, device=device)
    assert st.index_add(x, 0, [1, 1], st.ones(2, 2, device=device)).tolist() == [[0, 0], [2, 2]]


def test_scatter_ops_promote_src_and_return_grad_in_src_dtype():
    x = st.zeros(3, dtype=st.float32, requires_grad=True)
    src = st.ones(2, dtype=st.float64, requires_grad=True)
    y = st.scatter_add(x, 0, st.tensor([1, 1]), src)
    assert y.dtype is st.float32
    (y * st.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert src.grad.dtype is st.float64 and src.grad.tolist() == [2.0, 2.0]
    assert x.grad.tolist() == [1.0, 2.0, 3.0]


def test_one_hot(device):
    labels = st.tensor([[0, 2], [1, 1]], dtype=st.int32, device=device)
    got = st.one_hot(labels, 3)
    np.testing.assert_array_equal(got.numpy(), np.eye(3, dtype=np.float32)[[[0, 2], [1, 1]]])
    assert got.dtype is st.float32 and got.device == device
    assert st.one_hot(labels, 3, dtype=st.int64).dtype is st.int64
    assert st.one_hot(st.zeros(0, dtype=st.int64, device=device), 4).shape == (0, 4)
    with pytest.raises(ValueError, match="one_hot: num_classes must be a positive int"):
        st.one_hot(labels, 0)
    with pytest.raises(TypeError, match="one_hot: labels must be integers"):
        st.one_hot(st.tensor([0.0], device=device), 2)


def test_gather_scatter_errors_name_op_axis_and_size():
    x = st.zeros(3, 4)
    with pytest.raises(IndexError, match="take_along_axis: index 9 is out of bounds for axis 1 "
                                         "with size 4"):
        st.take_along_axis(x, st.tensor([[0, 9]]), 1)
    with pytest.raises(IndexError, match="scatter_add: index 5 is out of bounds for axis 0 "
                                         "with size 3"):
        st.scatter_add(x, 0, st.tensor([[5, 0, 0, 0]]), st.ones(1, 4))
    with pytest.raises(IndexError, match="index_add: index 3 is out of bounds for axis 0"):
        st.index_add(x, 0, st.tensor([3]), st.ones(1, 4))
    with pytest.raises(IndexError, match="one_hot: label 3 is out of range for num_classes=3"):
        st.one_hot(st.tensor([0, 3]), 3)
    with pytest.raises(IndexError, match="one_hot: label -1"):
        st.one_hot(st.tensor([0, -1]), 3)
    with pytest.raises(ValueError, match="scatter_add: index shape"):
        st.scatter_add(x, 0, st.tensor([0, 1]), st.ones(2))
    with pytest.raises(ValueError, match="index_add: x"):
        st.index_add(x, 0, st.tensor([0]), st.ones(2, 4))
    with pytest.raises(TypeError, match="take_along_axis: index must be an integer tensor"):
        st.take_along_axis(x, st.tensor([[0.0]]), 1)
    with pytest.raises(ValueError, match="take_along_axis: index has 1 dims"):
        st.take_along_axis(x, st.tensor([0]), 1)
