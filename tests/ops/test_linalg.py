"""Linear algebra (matmul, dot, inner, norm): forward against float64 NumPy, gradient checks,
second derivatives, Hypothesis properties over batched/broadcast shapes, dtypes and layouts,
and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as hs

import scitensor as st
from scitensor.testing import tolerance

from .helpers import (
    ALL_DTYPES,
    PROPS,
    assert_matches,
    axes_for,
    f64,
    grad_check,
    layouts,
    make,
    np_axes,
    second_order,
    seeds,
    values,
)

MATMUL_SHAPES = [
    ((3, 4), (4, 5)),
    ((4,), (4, 5)),  # 1-D first operand: a row vector, its axis removed
    ((3, 4), (4,)),  # 1-D second operand: a column vector
    ((4,), (4,)),  # two vectors: a scalar
    ((2, 3, 4), (4, 5)),
    ((3, 4), (2, 4, 5)),
    ((2, 1, 3, 4), (5, 4, 2)),  # batch axes broadcast both ways
    ((1, 3, 4), (2, 4, 5)),
    ((2, 3, 4), (4,)),
    ((4,), (2, 4, 5)),
    ((3, 0), (0, 2)),  # empty contraction: zeros
    ((0, 4), (4, 2)),
]


@pytest.mark.parametrize("sa, sb", MATMUL_SHAPES)
def test_matmul_forward_and_gradient(device, sa, sb):
    a = values(sa, st.float64, seed=1)
    b = values(sb, st.float64, seed=2)
    x, y = make(a, device), make(b, device)
    assert_matches(st.matmul(x, y), np.matmul(a, b), dtype=st.float64)
    assert_matches(x @ y, np.matmul(a, b))
    grad_check(st.matmul, a, b, device=device)
    ga, gb = st.grad(lambda p, q: (p @ q).sum(), argnums=(0, 1))(x, y)
    assert ga.shape == sa and gb.shape == sb  # reduced back over broadcast batch axes


@pytest.mark.parametrize("sa, sb", [((3, 4), (4, 5)), ((2, 3, 4), (4,)), ((4,), (4,)),
                                    ((2, 1, 3, 4), (5, 4, 2))])
def test_matmul_second_derivative(device, sa, sb):
    a = values(sa, st.float64, seed=3)
    b = values(sb, st.float64, seed=4)
    square = lambda p, q: (p @ q) ** 2
    grad_check(second_order(square, 0), a, b, device=device)
    grad_check(second_order(square, 1), a, b, device=device)
    # d/dB of grad_A sum(A @ B) = d/dB (ones @ B^T) is nonzero: mixed second derivative
    grad_check(second_order(st.matmul, 0), a, b, device=device)


def test_matmul_grad_of_grad_matches_analytic(device):
    a = values((2, 3), st.float64, seed=5)
    b = values((3, 4), st.float64, seed=6)
    x, y = make(a, device), make(b, device)
    # f(A) = sum((A B)^2): grad = 2 (A B) B^T, and d/dA sum(grad) = 2 ones(2,4) B B^T... summed
    hv = st.grad(lambda p: st.grad(lambda q: ((q @ y) ** 2).sum())(p).sum())(x)
    assert_matches(hv, 2 * np.ones((2, 3)) @ b @ b.T)


def _matmul_case(draw):
    """Shapes ``(sa, sb)`` that matmul accepts: 1-D operands, broadcast batch axes, zeros."""
    batch_a = draw(hs.lists(hs.integers(0, 3), max_size=2))
    batch_b = batch_a[len(batch_a) - draw(hs.integers(0, len(batch_a))):]
    batch_b = [1 if draw(hs.booleans()) else n for n in batch_b]
    if draw(hs.booleans()):
        batch_a, batch_b = batch_b, batch_a
    m, k, n = (draw(hs.integers(0, 4)) for _ in range(3))
    sa = (k,) if draw(hs.booleans()) and not batch_a else (*batch_a, m, k)
    sb = (k,) if draw(hs.booleans()) and not batch_b else (*batch_b, k, n)
    return sa, sb


@given(data=hs.data(), da=hs.sampled_from(ALL_DTYPES), db=hs.sampled_from(ALL_DTYPES),
       la=layouts, lb=layouts, seed=seeds)
@PROPS
def test_matmul_property(device, data, da, db, la, lb, seed):
    sa, sb = _matmul_case(data.draw)
    a = values(sa, da, -2, 2, seed=seed)
    b = values(sb, db, -2, 2, seed=seed + 1)
    out = st.matmul(make(a, device, la), make(b, device, lb))
    expect = st.result_type(da, db)
    expect = expect if expect.is_floating else st.get_default_dtype()
    k = sa[-1]
    rtol, _ = tolerance(expect)
    if expect is st.float32 and device.type == "cuda":
        rtol = 3e-4  # a GPU GEMM may round float32 inputs to TF32
    # accumulation in float32 (low precision) then one rounding: error grows with k
    assert_matches(out, np.matmul(f64(a), f64(b)), dtype=expect, atol=rtol * 4 * max(k, 1),
                   msg=f"{sa} @ {sb}")


@pytest.mark.parametrize("dtype", [st.float16, st.bfloat16])
def test_low_precision_matmul_accumulates_in_float32(device, dtype):
    # summing 4096 ones in float16 (bfloat16) stalls at 2048 (256); 4096 itself is exact
    a = np.ones((1, 4096), dtype.np)
    assert_matches(make(a, device) @ make(a.T, device), [[4096.0]], dtype=dtype)
    a = values((8, 64), dtype, -1, 1, seed=7)
    b = values((64, 8), dtype, -1, 1, seed=8)
    ref = f64(a) @ f64(b)
    out = make(a, device) @ make(b, device)
    # one rounding to the output dtype after float32 accumulation
    assert_matches(out, ref, dtype=dtype, rtol=tolerance(dtype)[0], atol=tolerance(dtype)[0])


# ---- dot and inner --------------------------------------------------------------------------
def test_dot_and_inner(device):
    a = values((5,), st.float64, seed=9)
    b = values((5,), st.float64, seed=10)
    x, y = make(a, device), make(b, device)
    assert_matches(st.dot(x, y), np.dot(a, b))
    assert st.dot(x, y).shape == ()
    grad_check(st.dot, a, b, device=device)
    m = values((3, 5), st.float64, seed=11)
    assert_matches(st.dot(make(m, device), y), m @ b)
    p = values((2, 3), st.float64, seed=12)
    q = values((2, 3), st.float64, seed=13)
    assert_matches(st.inner(make(p, device), make(q, device)), np.sum(p * q))
    grad_check(st.inner, p, q, device=device)
    grad_check(second_order(lambda u, v: st.inner(u * u, v), 0), p, q, device=device)


def test_inner_dot_promote_dtypes(device):
    x = make(np.array([1, 2, 3], np.int32), device)
    y = make(np.array([0.5, 1.0, 2.0], np.float16), device)
    assert_matches(st.inner(x, y), 8.5, dtype=st.float16)
    assert_matches(st.dot(x, x), 14.0, dtype=st.float32)


# ---- norm -----------------------------------------------------------------------------------
def _norm_ref(a, ord, axis, keepdims):
    kw = {"axis": axis, "keepdims": keepdims}
    if ord in (2, "fro", None):
        return np.sqrt(np.sum(a * a, **kw))
    if ord == 1:
        return np.sum(np.abs(a), **kw)
    if ord == math.inf:
        return np.max(np.abs(a), **kw)
    return np.min(np.abs(a), **kw)


ORDS = [1, 2, math.inf, -math.inf, "fro", None]


@pytest.mark.parametrize("ord", ORDS)
@pytest.mark.parametrize("axis", [None, 0, -1, (0, 1)])
@pytest.mark.parametrize("keepdims", [False, True])
def test_norm_forward_and_gradient(device, ord, axis, keepdims):
    a = values((3, 4), st.float64, seed=14, away_from=0.0)
    x = make(a, device)
    kwargs = {} if ord is None else {"ord": ord}
    out = st.norm(x, axis=axis, keepdims=keepdims, **kwargs)
    assert_matches(out, _norm_ref(a, ord, np_axes(axis, 2), keepdims), dtype=st.float64)
    grad_check(lambda v: st.norm(v, axis=axis, keepdims=keepdims, **kwargs), a,
               device=device)


def test_norm_matches_numpy_vector_norms(device):
    a = values((7,), st.float64, seed=15)
    x = make(a, device)
    for ord in (1, 2, math.inf, -math.inf):
        assert_matches(st.norm(x, ord), np.linalg.norm(a, ord))
    m = values((3, 4), st.float64, seed=16)
    assert_matches(st.norm(make(m, device), "fro"), np.linalg.norm(m, "fro"))


@pytest.mark.parametrize("ord", [2, "fro", 1])
def test_norm_second_derivative(device, ord):
    a = values((3, 4), st.float64, seed=17, away_from=0.0)
    grad_check(second_order(lambda v: st.norm(v, ord, axis=1) * v[:, 0]), a, device=device)


def test_norm_gradient_at_zero_is_zero_not_nan(device):
    x = make(np.zeros((2, 3)), device)
    assert st.grad(lambda v: st.norm(v))(x).tolist() == [[0.0] * 3] * 2
    g = st.grad(lambda v: st.norm(v, axis=1).sum())(make(np.array([[0.0, 0], [3, 4]]), device))
    assert_matches(g, [[0, 0], [0.6, 0.8]])


@given(shape=hs.lists(hs.integers(0, 4), max_size=3).map(tuple), data=hs.data(),
       dtype=hs.sampled_from(ALL_DTYPES), keepdims=hs.booleans(), layout=layouts,
       seed=seeds, ord=hs.sampled_from([1, 2, "fro"]))
@PROPS
def test_norm_property(device, shape, data, dtype, keepdims, layout, seed, ord):
    axis = data.draw(axes_for(len(shape)), label="axis")
    a = values(shape, dtype, -3, 3, seed=seed)
    out = st.norm(make(a, device, layout), ord, axis=axis, keepdims=keepdims)
    expect = dtype if dtype.is_floating else st.get_default_dtype()
    rtol, _ = tolerance(expect)
    assert_matches(out, _norm_ref(f64(a), ord, np_axes(axis, len(shape)), keepdims),
                   dtype=expect, atol=rtol * 3 * max(a.size, 1))


def test_low_precision_norm_does_not_overflow(device):
    for d in (st.float16, st.bfloat16):
        x = make(np.array([300.0, 400.0], d.np), device)
        assert_matches(st.norm(x), 500.0, dtype=d)


@pytest.mark.parametrize("dtype", [st.float32, st.float64])
def test_norm_layouts_agree(device, dtype):
    a = values((3, 4), dtype, seed=18)
    ref = _norm_ref(f64(a), 2, (1,), False)
    for layout in ("transposed", "strided", "reversed", "numpy_view"):
        assert_matches(st.norm(make(a, device, layout), axis=1), ref, msg=layout)


# ---- bad input ------------------------------------------------------------------------------
def test_matmul_misaligned_shapes_name_both_shapes(device):
    x, y = make(np.ones((3, 4)), device), make(np.ones((5, 6)), device)
    with pytest.raises(ValueError, match=r"matmul: shapes \(3, 4\) and \(5, 6\) do not align "
                                         r"\(4 != 5\)"):
        x @ y
    with pytest.raises(ValueError, match=r"matmul: .*\(2, 3, 4\) and \(3, 4, 2\).*broadcast"):
        make(np.ones((2, 3, 4)), device) @ make(np.ones((3, 4, 2)), device)
    with pytest.raises(ValueError, match=r"matmul: .*at least one dimension.*\(\) and \(4,\)"):
        st.matmul(make(np.array(2.0), device), make(np.ones(4), device))
    with pytest.raises(ValueError, match=r"matmul: shapes \(4,\) and \(3,\)"):
        make(np.ones(4), device) @ make(np.ones(3), device)


def test_linalg_wrong_arguments_name_the_op(device):
    x = make(np.ones(3), device)
    with pytest.raises(TypeError, match="matmul: second operand must be a Tensor"):
        st.matmul(x, np.ones(3))
    with pytest.raises(TypeError, match="matmul: first operand must be a Tensor"):
        np.ones((2, 3)).tolist() @ x
    with pytest.raises(ValueError, match=r"dot: vectors of different lengths \(3,\) and \(4,\)"):
        st.dot(x, make(np.ones(4), device))
    with pytest.raises(ValueError, match=r"dot: .*at least one dimension.*\(3,\) and \(\)"):
        st.dot(x, make(np.array(1.0), device))
    with pytest.raises(ValueError, match=r"inner: shapes \(3,\) and \(1, 3\) differ"):
        st.inner(x, make(np.ones((1, 3)), device))
    with pytest.raises(ValueError, match="norm: unsupported ord 'nuc'"):
        st.norm(x, "nuc")
    with pytest.raises(IndexError, match="norm: axis 1 is out of range"):
        st.norm(x, axis=1)


def test_failed_matmul_leaves_inputs_untouched(device):
    a = values((3, 4), st.float64, seed=19)
    x = make(a, device, requires_grad=True)
    y = make(np.ones((5, 2)), device, requires_grad=True)
    with pytest.raises(ValueError):
        x @ y
    with pytest.raises(ValueError):
        st.inner(x, y)
    np.testing.assert_array_equal(x.numpy(), a)
    np.testing.assert_array_equal(y.numpy(), np.ones((5, 2)))
    assert x.grad is None and y.grad is None and x.is_leaf and y.is_leaf


@given(dtype=hs.sampled_from([st.float16, st.bfloat16, st.float64]), seed=seeds)
@PROPS
def test_matmul_with_identity_is_exact(device, dtype, seed):
    # (float32 is left out: a GPU GEMM may round it to TF32)
    a = values((3, 4), dtype, seed=seed)
    eye = st.eye(4, dtype=dtype, device=device)
    np.testing.assert_array_equal(f64(make(a, device) @ eye), f64(a))
