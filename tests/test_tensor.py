"""The Tensor type: properties, host access, NumPy protocols, repr, detach and grad flags."""

from __future__ import annotations

import numpy as np
import pytest

import scitensor as st


def test_properties(device):
    x = st.zeros(2, 3, 4, dtype=st.float64, device=device)
    assert x.shape == (2, 3, 4) and x.ndim == 3 and x.size == 24 and len(x) == 2
    assert x.dtype is st.float64 and x.device == device and x.device is st.Device(device)
    assert not x.requires_grad and x.grad is None and x.is_leaf
    s = st.tensor(1.0, device=device)
    assert s.shape == () and s.ndim == 0 and s.size == 1
    with pytest.raises(TypeError, match="len\\(\\) of a 0-d tensor"):
        len(s)


def test_numpy_item_tolist(device):
    x = st.tensor([[1.5, 2.0]], device=device)
    a = x.numpy()
    assert isinstance(a, np.ndarray) and a.dtype == np.float32 and a.shape == (1, 2)
    assert x.tolist() == [[1.5, 2.0]]
    assert st.ones(1, 1, 1, device=device).item() == 1.0
    assert isinstance(st.tensor(3, device=device).item(), int)
    assert st.tensor(True, device=device).item() is True
    assert st.tensor(2.5, dtype=st.bfloat16, device=device).item() == 2.5
    assert float(st.tensor([2.5], device=device)) == 2.5
    assert int(st.tensor(3.7, device=device)) == 3
    assert [10, 11, 12][st.tensor(1, device=device)] == 11
    with pytest.raises(ValueError, match=r"item\(\): tensor of shape \(2,\) has 2 elements"):
        st.ones(2, device=device).item()
    with pytest.raises(TypeError, match="only integer tensors can be used as an index"):
        [1, 2][st.tensor(1.0, device=device)]


def test_numpy_shares_memory_on_cpu_and_grad_tensors_export():
    x = st.ones(3)
    x.numpy()[0] = 7.0
    assert x.tolist() == [7.0, 1.0, 1.0]
    w = st.ones(2, requires_grad=True)
    assert w.numpy().tolist() == [1.0, 1.0]  # no .detach() needed to read values


def test_bool(device):
    assert bool(st.ones(1, device=device)) and not bool(st.zeros((), device=device))
    with pytest.raises(ValueError, match="truth value of a tensor with 2 elements is ambiguous"):
        bool(st.ones(2, device=device))


def test_iteration(device):
    rows = list(st.arange(6, device=device).reshape(3, 2))
    assert [r.tolist() for r in rows] == [[0, 1], [2, 3], [4, 5]]
    assert list(st.zeros(0, device=device)) == []
    with pytest.raises(TypeError, match="iteration over a 0-d tensor"):
        list(st.tensor(1, device=device))


def test_array_protocol_copy_semantics():
    x = st.arange(4.0)
    assert np.shares_memory(np.asarray(x), x.numpy())
    assert not np.shares_memory(np.array(x, copy=True), x.numpy())
    assert np.asarray(x, dtype=np.float64).dtype == np.float64
    with pytest.raises(ValueError, match=r"copy=False.*without a copy"):
        np.array(x, dtype=np.float64, copy=False)
    np.testing.assert_array_equal(np.asarray([st.tensor(1.0), st.tensor(2.0)]), [1.0, 2.0])
    np.testing.assert_array_equal(np.asarray(st.ones(2, dtype=st.bfloat16)).astype(np.float32),
                                  [1.0, 1.0])


def test_ndarray_operand_defers_to_tensor():
    # __array_priority__ makes ndarray + Tensor call Tensor.__radd__ instead of NumPy's loop
    with pytest.raises(TypeError, match=r"add: unsupported operand ndarray.*st.tensor"):
        np.ones(2) + st.ones(2)
    out = np.float64(2.0) + st.ones(2)  # NumPy scalars are weak like Python numbers
    assert isinstance(out, st.Tensor) and out.tolist() == [3.0, 3.0] and out.dtype is st.float32


def test_repr_shows_values_shape_dtype_device(device):
    x = st.tensor([[1.0, 2.0], [3.0, 4.5]], device=device)
    r = repr(x)
    assert r.startswith("tensor([[1. , 2. ],\n        [3. , 4.5]]")
    assert "shape=(2, 2)" in r and "dtype=float32" in r and f"device='{device}'" in r
    assert "requires_grad" not in r
    w = st.ones(2, requires_grad=True, device=device)
    assert repr(w).endswith("requires_grad=True)")
    assert str(st.tensor(3, device=device)) == \
        f"tensor(3, shape=(), dtype=int64, device='{device}')"
    assert "dtype=bfloat16" in repr(st.ones(2, dtype=st.bfloat16, device=device))
    assert "..." in repr(st.arange(1000, device=device))
    assert "shape=(0, 3)" in repr(st.zeros(0, 3, device=device))


def test_detach_shares_data_and_cuts_graph(device):
    w = st.ones(3, requires_grad=True, device=device)
    y = w * 2
    d = y.detach()
    assert not d.requires_grad and d.is_leaf and d.data is y.data
    assert (d * w).requires_grad
    (d * w).sum().backward()
    assert w.grad.tolist() == [2.0, 2.0, 2.0]  # no gradient through the detached path


def test_requires_grad_flag(device):
    x = st.ones(2, device=device)
    assert x.requires_grad_() is x and x.requires_grad
    x.requires_grad_(False)
    assert not x.requires_grad
    with pytest.raises(TypeError, match="requires_grad_: only floating tensors"):
        st.ones(2, dtype=st.int64, device=device).requires_grad_()
    y = st.ones(2, requires_grad=True, device=device) * 3
    with pytest.raises(RuntimeError, match=r"requires_grad_\(False\).*use .detach\(\)"):
        y.requires_grad_(False)
    with pytest.raises(RuntimeError, match="retain_grad: this tensor does not require grad"):
        st.ones(2, device=device).retain_grad()


def test_zero_grad_(device):
    w = st.ones(2, requires_grad=True, device=device)
    (w * w).sum().backward()
    assert w.grad is not None
    assert w.zero_grad_() is w and w.grad is None


def test_hash_is_identity():
    a, b = st.ones(1), st.ones(1)
    d = {a: 1, b: 2}
    assert d[a] == 1 and d[b] == 2 and hash(a) != hash(b)


def test_cuda_array_interface_only_on_cuda():
    assert not hasattr(st.ones(2), "__cuda_array_interface__")
    with pytest.raises(AttributeError, match="only for CUDA tensors"):
        st.ones(2).__cuda_array_interface__


def test_tensor_class_constructor(device):
    x = st.Tensor([[1, 2]], dtype=st.float64, device=device, requires_grad=True)
    assert isinstance(x, st.Tensor) and x.dtype is st.float64 and x.requires_grad
    assert x.device == device and x.is_leaf


def test_methods_and_properties_attached(device):
    x = st.arange(6.0, device=device).reshape(2, 3)
    assert x.T.shape == (3, 2) and x.mT.shape == (3, 2)
    assert x.sum().item() == 15.0 and x.view(3, 2).shape == (3, 2)
    assert [p.shape for p in x.split(2, axis=0)] == [(1, 3), (1, 3)]
    assert x.clamp(1, 2).tolist() == [[1, 1, 2], [2, 2, 2]]
    assert (+x) is x and (-x).tolist() == [[0, -1, -2], [-3, -4, -5]]
