"""Function transforms: grad, value_and_grad, vjp over pytrees; has_aux; gradients of
gradients (elementwise, reduction, shape, indexing and matmul ops) and Hessian-vector products."""

from __future__ import annotations

from collections import namedtuple

import numpy as np
import pytest

import scitensor as st
from scitensor.testing import check_grad


def f64(values, device="cpu"):
    return st.tensor(values, dtype=st.float64, device=device)


# ---- grad / value_and_grad -------------------------------------------------------------------
def test_grad_argnums(device):
    x, y = f64([1.0, 2.0], device), f64([3.0, 4.0], device)
    f = lambda a, b: (a * a * b).sum()
    assert st.grad(f)(x, y).tolist() == [6.0, 16.0]
    assert st.grad(f, argnums=1)(x, y).tolist() == [1.0, 4.0]
    assert st.grad(f, argnums=-1)(x, y).tolist() == [1.0, 4.0]
    gx, gy = st.grad(f, argnums=(0, 1))(x, y)
    assert gx.tolist() == [6.0, 16.0] and gy.tolist() == [1.0, 4.0]
    (gy_only,) = st.grad(f, argnums=(1,))(x, y)
    assert gy_only.tolist() == [1.0, 4.0]
    assert st.grad(lambda a, k=2: (a ** k).sum())(x, k=3).tolist() == [3.0, 12.0]
    assert x.grad is None and not x.requires_grad  # transforms leave inputs alone


def test_grad_over_pytrees(device):
    x, y = f64([1.0, 2.0], device), f64([3.0, 4.0], device)
    params = {"w": x, "b": [y, (f64([5.0], device),)]}

    def loss(p, scale):
        return (p["w"] * p["b"][0]).sum() * scale + (p["b"][1][0] ** 2).sum()

    g = st.grad(loss)(params, 2.0)
    assert set(g) == {"w", "b"} and isinstance(g["b"], list) and isinstance(g["b"][1], tuple)
    assert g["w"].tolist() == [6.0, 8.0] and g["b"][0].tolist() == [2.0, 4.0]
    assert g["b"][1][0].tolist() == [10.0]
    leaves, spec = st.tree_flatten(params)
    assert len(leaves) == 3 and st.tree_unflatten(spec, leaves)["b"][1][0] is leaves[2]
    Pair = namedtuple("Pair", "w b")
    g = st.grad(lambda p: (p.w * p.b).sum())(Pair(x, y))
    assert isinstance(g, Pair) and g.w.tolist() == [3.0, 4.0] and g.b.tolist() == [1.0, 2.0]


def test_unused_inputs_get_zeros(device):
    x, y = f64([1.0, 2.0], device), f64([3.0], device)
    gx, gy = st.grad(lambda a, b: a.sum(), argnums=(0, 1))(x, y)
    assert gx.tolist() == [1.0, 1.0] and gy.tolist() == [0.0] and gy.dtype is st.float64
    assert st.grad(lambda a: st.ones(1, device=device))(x).tolist() == [0.0, 0.0]


def test_value_and_grad_and_has_aux(device):
    x = f64([1.0, 2.0], device)
    v, g = st.value_and_grad(lambda a: (a ** 2).sum())(x)
    assert v.item() == 5.0 and g.tolist() == [2.0, 4.0] and not v.requires_grad
    (v, aux), g = st.value_and_grad(lambda a: ((a ** 2).sum(), {"double": a * 2, "n": 3}),
                                    has_aux=True)(x)
    assert v.item() == 5.0 and g.tolist() == [2.0, 4.0]
    assert aux["n"] == 3 and aux["double"].tolist() == [2.0, 4.0]
    assert not aux["double"].requires_grad  # aux is a value, not a graph
    g, aux = st.grad(lambda a: (a.sum(), "hello"), has_aux=True)(x)
    assert g.tolist() == [1.0, 1.0] and aux == "hello"


def test_grad_errors(device):
    x = f64([1.0, 2.0], device)
    with pytest.raises(TypeError, match=r"grad: the function must return a one-element floating "
                                        r"tensor, got a tensor of shape \(2,\)"):
        st.grad(lambda a: a)(x)
    with pytest.raises(TypeError, match="got float"):
        st.grad(lambda a: 3.0)(x)
    with pytest.raises(TypeError, match=r"dtype scitensor.int64"):
        st.grad(lambda a: (a > 0).sum())(x)
    with pytest.raises(ValueError, match="grad: argnums=2 but the function got 2 positional"):
        st.grad(lambda a, b: a.sum(), argnums=2)(x, x)
    with pytest.raises(TypeError, match="grad: argument 0 contains a int"):
        st.grad(lambda p: p[0].sum())((x, 3))
    with pytest.raises(TypeError, match=r"grad: argument 0 has dtype scitensor.int64"):
        st.grad(lambda a: a.sum())(st.ones(2, dtype=st.int64, device=device))
    with pytest.raises(TypeError, match=r"grad\(has_aux=True\): the function must return"):
        st.grad(lambda a: a.sum(), has_aux=True)(x)
    with pytest.raises(ValueError, match=r"grad: argnums \(0, -2\) name argument 0 twice"):
        st.grad(lambda a, b: (a * b).sum(), argnums=(0, -2))(x, x)
    for bad in ((1.5,), (), True):
        with pytest.raises(TypeError, match="grad: argnums must be an int or a non-empty tuple"):
            st.grad(lambda a: a.sum(), argnums=bad)


def test_grad_works_under_no_grad_and_with_grad_inputs(device):
    x = f64([1.0, 2.0], device)
    with st.no_grad():
        assert st.grad(lambda a: (a ** 2).sum())(x).tolist() == [2.0, 4.0]
        assert not st.is_grad_enabled()
    w = st.tensor([1.0, 2.0], dtype=st.float64, device=device, requires_grad=True)
    g = st.grad(lambda a: (a ** 2).sum())(w)
    assert g.tolist() == [2.0, 4.0] and w.grad is None
    g.sum().backward()  # the gradient stays connected to w: d/dw sum(2w) = 2
    assert w.grad.tolist() == [2.0, 2.0]


# ---- vjp ---------------------------------------------------------------------------------------
def test_vjp_pytrees_and_repeated_pullback(device):
    x, y = f64([1.0, 2.0], device), f64([3.0, 4.0], device)
    out, pullback = st.vjp(lambda a, b: (a * b, {"s": a.sum()}), x, y)
    assert out[0].tolist() == [3.0, 8.0] and out[1]["s"].item() == 3.0
    assert not out[0].requires_grad
    one = st.ones(2, dtype=st.float64, device=device)
    gx, gy = pullback((one, {"s": f64(2.0, device)}))
    assert gx.tolist() == [5.0, 6.0] and gy.tolist() == [1.0, 2.0]
    gx, gy = pullback((one * 2, {"s": f64(0.0, device)}))  # callable again
    assert gx.tolist() == [6.0, 8.0] and gy.tolist() == [2.0, 4.0]
    (g_list,) = st.vjp(lambda p: p[0] * p[1], [x, y])[1](one)
    assert isinstance(g_list, list) and g_list[0].tolist() == [3.0, 4.0]
    out, pb, aux = st.vjp(lambda a: (st.exp(a), "aux"), f64([0.0, 0.0], device), has_aux=True)
    assert aux == "aux" and pb(one)[0].tolist() == [1.0, 1.0]
    assert st.vjp(lambda a: a.sum(), x)[1](1.0)[0].tolist() == [1.0, 1.0]


def test_vjp_errors(device):
    x = f64([1.0, 2.0], device)
    with pytest.raises(TypeError, match="vjp: the function returned a int"):
        st.vjp(lambda a: 3, x)
    _, pb = st.vjp(lambda a: (a, a * 2), x)
    with pytest.raises(ValueError, match="vjp pullback: the cotangent has 1 tensors but the "
                                         "output has 2"):
        pb(st.ones(2, dtype=st.float64, device=device))
    with pytest.raises(TypeError, match=r"vjp\(has_aux=True\): the function must return"):
        st.vjp(lambda a: a * 2, x, has_aux=True)
    with pytest.raises(ValueError, match=r"cotangent shape \(3,\) does not match"):
        st.vjp(lambda a: a * 2, x)[1](st.ones(3, dtype=st.float64, device=device))


# ---- gradients of gradients ---------------------------------------------------------------------
def test_grad_of_grad_matches_analytic(device):
    x = f64(2.0, device)
    assert st.grad(st.grad(lambda a: a ** 3))(x).item() == 12.0
    assert st.grad(st.grad(st.grad(lambda a: a ** 4)))(x).item() == 48.0
    v = f64([0.3, -1.2, 2.0], device)
    d2 = st.grad(lambda a: st.grad(lambda b: st.sin(b).sum())(a).sum())(v)
    np.testing.assert_allclose(d2.numpy(), -np.sin(v.numpy()))
    d2 = st.grad(lambda a: st.grad(lambda b: (st.exp(b) * b).sum())(a).sum())(v)
    np.testing.assert_allclose(d2.numpy(), np.exp(v.numpy()) * (v.numpy() + 2))


def _a(seed, shape):
    return np.random.default_rng(seed).uniform(0.5, 1.5, shape)


W = _a(1, (4, 2))
SECOND_ORDER = {
    "tanh_sigmoid": lambda v: (st.tanh(v) * st.sigmoid(v)).sum(),
    "gelu_silu_softplus": lambda v: (st.gelu(v) + st.silu(v) * st.softplus(v)).sum(),
    "div_pow_log": lambda v: (1.0 / v + v ** 2.5 + st.log(v) * v).sum(),
    "mean_var": lambda v: (v.mean(0) ** 2).sum() + v.var(1).sum() * v.std(),
    "max_logsumexp": lambda v: (v.max(1) ** 2).sum() + st.logsumexp(2 * v, 1).sum(),
    "softmax": lambda v: (st.softmax(v, 1) ** 2).sum() + (st.log_softmax(v, 0) ** 2).sum(),
    "norm": lambda v: st.norm(v) ** 3 + st.norm(v, axis=1).sum(),
    "matmul": lambda v: ((v @ st.tensor(W)) ** 2).sum() + ((v.T @ v) ** 2).sum(),
    "shape": lambda v: (v.reshape(2, 6).T.flip(0)[::2] ** 3).sum()
    + (st.pad(v, 1) ** 3).sum(),
    "concat_stack": lambda v: (st.concatenate([v, v.T.reshape(3, 4)], 1) ** 3).sum()
    + (st.stack([v, v * v], -1) ** 2).sum(),
    "broadcast": lambda v: (st.broadcast_to(v[:1], (2, 3, 4)) ** 3).sum()
    + (v.unsqueeze(0).expand(2, -1, -1) ** 3).sum(),
    "indexing": lambda v: (v[st.tensor([0, 0, 2])] ** 3).sum()
    + (st.take_along_axis(v, st.tensor([[0], [1], [1]]), 1) ** 3).sum(),
    "where_clip_maximum": lambda v: st.where(v > 1, v * v, v ** 3).sum()
    + (st.clip(v, 0.7, 1.2) ** 3).sum() + (st.maximum(v, 1.0) ** 3).sum(),
    "split_swapaxes": lambda v: sum((p.swapaxes(0, 1) ** 3).sum() for p in st.split(v, [1], 1)),
}


@pytest.mark.parametrize("name", list(SECOND_ORDER))
def test_second_order_gradient_check(name):
    f = SECOND_ORDER[name]
    assert check_grad(lambda v: st.grad(f)(v), st.tensor(_a(0, (3, 4))), rtol=1e-4)


def test_hessian_vector_products():
    rng = np.random.default_rng(3)
    X, V = rng.standard_normal((5, 4)), rng.standard_normal((4, 2))
    Wt = st.tensor(rng.standard_normal((4, 2)))
    f = lambda w: ((st.tensor(X) @ w) ** 2).sum()  # Hessian: 2 X^T X (per column)
    hvp = st.grad(lambda w: st.inner(st.grad(f)(w), st.tensor(V)))(Wt)
    np.testing.assert_allclose(hvp.numpy(), 2 * X.T @ X @ V, rtol=1e-10)
    # forward-over-reverse free: HVP of a non-quadratic vs central differences of the gradient
    g = lambda w: st.grad(lambda u: (st.tanh(u) ** 2).sum() * st.norm(u))(w)
    w0, v = rng.standard_normal(6), rng.standard_normal(6)
    hvp = st.grad(lambda w: st.inner(g(w), st.tensor(v)))(st.tensor(w0)).numpy()
    eps = 1e-6
    fd = (g(st.tensor(w0 + eps * v)).numpy() - g(st.tensor(w0 - eps * v)).numpy()) / (2 * eps)
    np.testing.assert_allclose(hvp, fd, rtol=1e-6, atol=1e-8)


def test_vjp_of_grad_and_grad_of_vjp():
    x = st.tensor([0.5, 1.5])
    out, pb = st.vjp(st.grad(lambda a: (a ** 3).sum()), x)
    assert out.tolist() == [0.75, 6.75]
    assert pb(st.ones(2))[0].tolist() == [3.0, 9.0]  # diag Hessian 6x
    f = lambda a: st.vjp(lambda b: b ** 2, a)[1](st.ones(2))[0].sum() * a.sum()
    # f(a) = sum(2a) * sum(a): gradient 2 sum(a) + sum(2a) per element
    assert st.grad(f)(x).tolist() == [8.0, 8.0]


def test_outer_transform_sees_through_inner_value():
    # value_and_grad inside grad: the inner value stays differentiable for the outer transform
    def f(a):
        v, g = st.value_and_grad(lambda b: (b ** 2).sum())(a)
        return v + g.sum()  # sum(a^2) + sum(2a)

    assert st.grad(f)(st.tensor([1.0, 3.0])).tolist() == [4.0, 8.0]
