"""custom_vjp: user ops with their own pullback, single and multiple outputs, differentiable
bwd, non-tensor arguments, and the errors for malformed rules."""

from __future__ import annotations

import numpy as np
import pytest

import scitensor as st
from scitensor.testing import check_grad


def make_cube(calls):
    @st.custom_vjp
    def cube(x):
        """x ** 3 with a hand-written rule."""
        return x * x * x

    def fwd(x):
        calls.append("fwd")
        assert not st.is_grad_enabled()  # fwd runs unrecorded
        return x * x * x, x

    def bwd(x, g):
        calls.append("bwd")
        return (3 * x * x * g,)

    return cube.defvjp(fwd, bwd)


def test_single_output(device):
    calls = []
    cube = make_cube(calls)
    assert cube.__name__ == "cube" and "hand-written" in cube.__doc__
    x = st.tensor([1.0, 2.0], dtype=st.float64, device=device)
    assert cube(x).tolist() == [1.0, 8.0] and calls == []  # no gradient needed: plain fun
    assert st.grad(lambda v: cube(v).sum())(x).tolist() == [3.0, 12.0]
    assert calls == ["fwd", "bwd"]
    w = st.tensor([1.0, 2.0], device=device, requires_grad=True)
    y = cube(w)
    assert y.requires_grad and not y.is_leaf
    y.sum().backward()
    assert w.grad.tolist() == [3.0, 12.0] and w.grad.dtype is st.float32
    assert check_grad(cube, st.tensor([0.5, -1.5]))


def test_bwd_is_differentiable():
    cube = make_cube([])
    x = st.tensor([1.0, 2.0], dtype=st.float64)
    d2 = st.grad(lambda v: st.grad(lambda u: cube(u).sum())(v).sum())(x)
    assert d2.tolist() == [6.0, 12.0]
    assert check_grad(lambda v: st.grad(lambda u: cube(u).sum())(v), x)


def test_rule_is_used_instead_of_the_function():
    @st.custom_vjp
    def clipped_identity(x):
        return x

    # straight-through estimator with gradient clipping: a rule autodiff would not find
    clipped_identity.defvjp(lambda x: (x, None), lambda r, g: (st.clip(g, -1.0, 1.0),))
    g = st.grad(lambda v: (clipped_identity(v) * st.tensor([5.0, 0.5])).sum())(st.ones(2))
    assert g.tolist() == [1.0, 0.5]


def make_sincos():
    @st.custom_vjp
    def sincos(x, scale):
        return st.sin(x) * scale, st.cos(x) * scale

    def fwd(x, scale):
        return (st.sin(x) * scale, st.cos(x) * scale), (x, scale)

    def bwd(res, g):
        x, scale = res
        gs, gc = g
        return (gs * st.cos(x) * scale - gc * st.sin(x) * scale, None)

    return sincos.defvjp(fwd, bwd)


def test_tuple_outputs():
    sincos = make_sincos()
    x = st.tensor([1.0, 2.0], dtype=st.float64)
    a = x.numpy()
    s, c = sincos(x, 2.0)
    np.testing.assert_allclose(s.numpy(), 2 * np.sin(a))
    g = st.grad(lambda v: (sincos(v, 2.0)[0] + 3 * sincos(v, 2.0)[1]).sum())(x)
    np.testing.assert_allclose(g.numpy(), 2 * np.cos(a) - 6 * np.sin(a))
    g = st.grad(lambda v: (sincos(v, 2.0)[1]).sum())(x)  # one output unused: zeros for it
    np.testing.assert_allclose(g.numpy(), -2 * np.sin(a))

    def both(v):
        s, c = sincos(v, 2.0)
        return (s * c).sum()  # 2 sin(2x)

    np.testing.assert_allclose(st.grad(both)(x).numpy(), 4 * np.cos(2 * a))
    assert check_grad(lambda v: sincos(v, 2.0)[1], x)
    assert check_grad(lambda v: st.grad(both)(v), x)


def test_list_outputs_and_keyword_arguments():
    @st.custom_vjp
    def scaled(x, *, k=2.0):
        return [x * k, x * (k + 1)]

    scaled.defvjp(lambda x, k=2.0: ([x * k, x * (k + 1)], k),
                  lambda k, g: (g[0] * k + g[1] * (k + 1),))
    x = st.tensor([1.0, 2.0])
    out = scaled(x, k=3.0)
    assert isinstance(out, list) and out[1].tolist() == [4.0, 8.0]
    g = st.grad(lambda v: (scaled(v, k=3.0)[0] + scaled(v, k=3.0)[1]).sum())(x)
    assert g.tolist() == [7.0, 7.0]


def test_multiple_tensor_arguments_and_broadcast_cotangents():
    @st.custom_vjp
    def affine(x, w, b):
        return x * w + b

    # bwd returns broadcast cotangents; the engine reduces them to each input's shape
    affine.defvjp(lambda x, w, b: (x * w + b, (x, w)),
                  lambda r, g: (g * r[1], g * r[0], g))
    x, w, b = st.ones(3, 2), st.tensor([2.0, 3.0]), st.tensor(0.5)
    gx, gw, gb = st.grad(lambda *a: affine(*a).sum(), argnums=(0, 1, 2))(x, w, b)
    assert gx.shape == (3, 2) and gw.tolist() == [3.0, 3.0] and gb.item() == 6.0
    assert check_grad(affine, st.randn(3, 2), st.randn(2), st.randn(()))


def test_smaller_cotangent_is_broadcast_up():
    @st.custom_vjp
    def total(x):
        return x.sum()

    total.defvjp(lambda x: (x.sum(), None), lambda r, g: (g,))  # scalar g for a (2, 3) input
    assert st.grad(total)(st.ones(2, 3)).tolist() == [[1.0] * 3] * 2


def test_errors():
    @st.custom_vjp
    def no_rule(x):
        return x

    with pytest.raises(RuntimeError, match=r"custom_vjp no_rule: call .defvjp"):
        no_rule(st.ones(1, requires_grad=True))

    @st.custom_vjp
    def two(x, y):
        return x * y

    two.defvjp(lambda x, y: (x * y, (x, y)), lambda r, g: (g * r[1],))
    with pytest.raises(TypeError, match=r"custom_vjp two: bwd must return a tuple with one "
                                        r"cotangent per positional argument \(2\)"):
        st.grad(lambda v: two(v, v).sum())(st.ones(2))
    two.defvjp(lambda x, y: (x * y, None), lambda r, g: (np.ones(2), None))
    with pytest.raises(TypeError, match="custom_vjp two: bwd returned a ndarray for argument 0"):
        st.grad(lambda v: two(v, v).sum())(st.ones(2))
    two.defvjp(lambda x, y: (x * y, None), lambda r, g: (st.ones(2, 3), None))
    with pytest.raises(ValueError, match=r"backward: the pullback custom_vjp\(two\).bwd returned "
                                         r"a cotangent of shape \(2, 3\) for an input of shape "
                                         r"\(2,\)"):
        st.grad(lambda v: two(v, v).sum())(st.ones(2))
    two.defvjp(lambda x, y: x * y, lambda r, g: (g, g))
    with pytest.raises(TypeError, match="custom_vjp two: fwd must return a pair"):
        two(st.ones(2, requires_grad=True), st.ones(2))
    two.defvjp(lambda x, y: (3, None), lambda r, g: (g, g))
    with pytest.raises(TypeError, match="custom_vjp two: fwd must return"):
        two(st.ones(2, requires_grad=True), st.ones(2))
