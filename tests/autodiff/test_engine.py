"""The reverse-mode engine: backward(), .grad accumulation, grad modes, retain/create graph,
retain_grad, st.gradients, broadcast and dtype reduction, and freeing the graph."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

import scitensor as st


def leaf(values, device, dtype=st.float32):
    return st.tensor(values, dtype=dtype, device=device, requires_grad=True)


# ---- backward ------------------------------------------------------------------------------
def test_backward_scalar_uses_ones(device):
    x = leaf([1.0, 2.0, 3.0], device)
    (x * x).sum().backward()
    assert x.grad.tolist() == [2.0, 4.0, 6.0]
    assert x.grad.device == device and x.grad.dtype is st.float32 and not x.grad.requires_grad
    y = leaf([3.0], device)
    (y * 2).backward()  # one-element, not 0-d: still implicit
    assert y.grad.tolist() == [2.0]


def test_backward_with_explicit_cotangent(device):
    x = leaf([1.0, 2.0], device)
    (x * x).backward(st.tensor([1.0, 0.5], device=device))
    assert x.grad.tolist() == [2.0, 2.0]
    x.grad = None
    (x * 3).backward([1.0, -1.0])  # Python data is converted on the output's device
    assert x.grad.tolist() == [3.0, -3.0]
    x.grad = None
    (x * x).backward(st.ones(2, dtype=st.float64, device=device))
    assert x.grad.dtype is st.float32 and x.grad.tolist() == [2.0, 4.0]


def test_backward_errors(device):
    x = leaf([1.0, 2.0], device)
    with pytest.raises(RuntimeError, match=r"backward: the output has shape \(2,\); gradients "
                                           r"can be created implicitly only for one-element"):
        (x * x).backward()
    with pytest.raises(RuntimeError, match="backward: this tensor does not require grad"):
        st.ones(2, device=device).sum().backward()
    with st.no_grad():
        y = (x * x).sum()
    with pytest.raises(RuntimeError, match=r"does not require grad.*no_grad"):
        y.backward()
    with pytest.raises(ValueError, match=r"cotangent shape \(3,\) does not match the output "
                                         r"shape \(2,\)"):
        (x * x).backward(st.ones(3, device=device))
    assert x.grad is None  # failed calls leave .grad untouched


def test_second_backward_through_freed_graph_errors(device):
    x = leaf([1.0, 2.0], device)
    z = (x * 3).sum()
    z.backward()
    with pytest.raises(RuntimeError, match=r"already freed.*retain_graph=True"):
        z.backward()
    # a shared intermediate is freed by the first backward through it
    h = x * 2
    a, b = h.sum(), (h * h).sum()
    a.backward()
    with pytest.raises(RuntimeError, match="already freed"):
        b.backward()


def test_retain_graph_and_accumulation(device):
    x = leaf([1.0, 2.0], device)
    z = (x * 3).sum()
    z.backward(retain_graph=True)
    z.backward(retain_graph=True)
    assert x.grad.tolist() == [6.0, 6.0]
    (x * x).sum().backward()  # a new graph accumulates too
    assert x.grad.tolist() == [8.0, 10.0]
    x.grad = None
    z.backward()
    assert x.grad.tolist() == [3.0, 3.0]


def test_leaf_used_many_times_and_diamond(device):
    x = leaf([2.0], device)
    a = x * 3
    b = x * x
    y = a * b + a + x  # 3x^3 + 3x + x
    y.backward()
    assert x.grad.tolist() == [9 * 4 + 3 + 1]


def test_grads_are_never_shared_objects(device):
    a, b = leaf([1.0, 2.0], device), leaf([3.0, 4.0], device)
    (a + b).sum().backward()  # add's pullback passes one cotangent to both operands
    assert a.grad is not b.grad
    a.grad[0] = 100.0  # an in-place edit of one gradient stays local
    assert b.grad.tolist() == [1.0, 1.0]
    ct = st.tensor([5.0, 6.0], device=device)
    x = leaf([0.0, 0.0], device)
    (x + 0.0).backward(ct)
    assert x.grad is not ct and x.grad.tolist() == [5.0, 6.0]
    gx, gy = st.grad(lambda u, v: (u - v).sum() + (u + v).sum(), argnums=(0, 1))(a, b)
    assert gx is not gy


def test_backward_on_a_leaf(device):
    x = leaf([1.0, 2.0], device)
    x.backward(st.tensor([5.0, 6.0], device=device))
    assert x.grad.tolist() == [5.0, 6.0]


def test_only_leaves_requiring_grad_get_grad(device):
    x = leaf([1.0], device)
    c = st.tensor([2.0], device=device)
    h = x * c
    (h * h).backward()
    assert c.grad is None and h.grad is None and x.grad.tolist() == [8.0]


def test_retain_grad_keeps_intermediate_grads(device):
    x = leaf([1.0, 2.0], device)
    h = x * 2
    assert h.retain_grad() is h
    (h * h).sum().backward()
    assert h.grad.tolist() == [4.0, 8.0] and x.grad.tolist() == [8.0, 16.0]


def test_create_graph_gives_differentiable_grads(device):
    x = leaf([1.0, 2.0], device)
    (x ** 3).sum().backward(create_graph=True)
    g = x.grad
    assert g.requires_grad and g.tolist() == [3.0, 12.0]
    x.grad = None
    g.sum().backward()
    assert x.grad.tolist() == [6.0, 12.0]


# ---- grad modes ------------------------------------------------------------------------------
def test_no_grad_enable_grad_set_grad_enabled_contexts(device):
    x = leaf([1.0], device)
    assert st.is_grad_enabled()
    with st.no_grad():
        assert not st.is_grad_enabled() and not (x * 2).requires_grad
        with st.enable_grad():
            assert st.is_grad_enabled() and (x * 2).requires_grad
        assert not st.is_grad_enabled()
    with st.set_grad_enabled(False):
        assert not (x * 2).requires_grad
    with st.set_grad_enabled(True):
        assert (x * 2).requires_grad
    assert st.is_grad_enabled()


def test_grad_modes_as_decorators_and_restored_on_error(device):
    x = leaf([1.0], device)

    @st.no_grad()
    def f(v):
        assert not st.is_grad_enabled()
        return v * 2

    @st.set_grad_enabled(False)
    def g(v):
        raise KeyError

    assert f.__name__ == "f" and not f(x).requires_grad
    with pytest.raises(KeyError):
        g(x)
    assert st.is_grad_enabled()
    with st.no_grad():
        assert st.enable_grad()(lambda v: v * 2)(x).requires_grad
    with pytest.raises(KeyError), st.no_grad():
        raise KeyError
    assert st.is_grad_enabled()


def test_set_grad_enabled_as_a_plain_call_and_reentrant_contexts(device):
    x = leaf([1.0], device)
    try:
        st.set_grad_enabled(False)  # PyTorch semantics: the call switches the mode
        assert not st.is_grad_enabled() and not (x * 2).requires_grad
    finally:
        st.set_grad_enabled(True)
    assert st.is_grad_enabled()
    ng = st.no_grad()
    with ng:
        with ng:  # one instance entered twice restores the right mode each time
            pass
        assert not st.is_grad_enabled()
    assert st.is_grad_enabled()


def test_no_grad_ops_record_nothing(device):
    x = leaf([1.0, 2.0], device)
    with st.no_grad():
        y = st.concatenate([x[::-1], x.reshape(2)]).T * 2
    assert not y.requires_grad and y.is_leaf and y._parents == ()


# ---- gradients(): the engine's functional entry point ---------------------------------------
def test_gradients_does_not_touch_grad(device):
    x, y = leaf([1.0, 2.0], device), leaf([3.0, 4.0], device)
    z = leaf([0.0], device)
    gx, gy, gz = st.gradients((x * y).sum(), [x, y, z])
    assert gx.tolist() == [3.0, 4.0] and gy.tolist() == [1.0, 2.0] and gz is None
    assert x.grad is None and y.grad is None
    with pytest.raises(RuntimeError, match="gradients: an input does not contribute"):
        st.gradients((x * 2).sum(), [x, z], allow_unused=False)
    outs = [x * 2, (y * y).sum()]
    gx, gy = st.gradients(outs, [x, y], [st.ones(2, device=device), None])
    assert gx.tolist() == [2.0, 2.0] and gy.tolist() == [6.0, 8.0]


def test_gradients_stop_at_intermediate_inputs(device):
    x = leaf([2.0], device)
    h = x * x
    (gh,) = st.gradients((h * 3).sum(), [h])
    assert gh.tolist() == [3.0] and x.grad is None


# ---- reduction of cotangents -----------------------------------------------------------------
@pytest.mark.parametrize("shape_a,shape_b", [((3, 1), (1, 4)), ((), (2, 3)), ((1,), (5, 2, 1)),
                                             ((2, 1, 3), (4, 3)), ((0, 3), (1, 3))])
def test_broadcast_gradients_reduce_to_input_shape(device, shape_a, shape_b):
    a = st.tensor(np.ones(shape_a), device=device, requires_grad=True)
    b = st.tensor(np.full(shape_b, 2.0), device=device, requires_grad=True)
    out = a * b
    out.backward(st.ones_like(out))
    n = out.size
    assert a.grad.shape == a.shape and b.grad.shape == b.shape
    np.testing.assert_allclose(a.grad.numpy(), np.full(shape_a, 2.0 * n / max(a.size, 1)))
    np.testing.assert_allclose(b.grad.numpy(), np.full(shape_b, 1.0 * n / max(b.size, 1)))


@pytest.mark.parametrize("da", [st.float16, st.bfloat16, st.float32, st.float64],
                         ids=lambda d: d.name)
@pytest.mark.parametrize("db", [st.float16, st.float32, st.float64], ids=lambda d: d.name)
def test_mixed_dtype_gradients_come_back_in_input_dtype(device, da, db):
    a = st.tensor([1.0, 2.0], dtype=da, device=device, requires_grad=True)
    b = st.tensor([[3.0], [4.0]], dtype=db, device=device, requires_grad=True)
    (a * b).sum().backward()
    assert a.grad.dtype is da and b.grad.dtype is db
    assert a.grad.numpy().astype(np.float64).tolist() == [7.0, 7.0]
    assert b.grad.numpy().astype(np.float64).tolist() == [[3.0], [3.0]]


def test_integer_inputs_get_no_gradient(device):
    x = leaf([1.0, 2.0], device)
    i = st.tensor([3, 4], device=device)
    (x * i).sum().backward()
    assert x.grad.tolist() == [3.0, 4.0] and i.grad is None


# ---- memory: the graph is freed ----------------------------------------------------------------
def _graph(x):
    h = st.exp(x) * x
    h = st.concatenate([h, h[::-1]]).reshape(2, -1).T @ st.ones(2, 3, dtype=x.dtype,
                                                                  device=x.device)
    return st.softmax(h, axis=-1).max(1).sum(), h


def test_no_reference_cycles_keep_graphs_alive(device):
    gc.collect()
    gc.disable()
    try:
        x = leaf([0.5, -1.0, 2.0], device)
        for create_graph in (False, True):
            out, h = _graph(x)
            refs = [weakref.ref(out), weakref.ref(h)]
            out.backward(create_graph=create_graph)
            x.grad = None
            del out, h
            assert all(r() is None for r in refs), create_graph  # freed by refcounting alone
        out, h = _graph(x)  # never differentiated: also freed
        refs = [weakref.ref(out), weakref.ref(h)]
        del out, h
        assert all(r() is None for r in refs)
    finally:
        gc.enable()


def test_backward_frees_pullbacks_without_retain_graph(device):
    x = leaf([1.0, 2.0], device)
    big = st.ones(1000, device=device)
    y = (x.sum() * big).sum()
    ref = weakref.ref(big)
    del big
    assert ref() is not None  # held by the recorded pullback of the product
    y.backward()
    assert ref() is None  # freed with the graph
