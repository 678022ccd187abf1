"""Elementwise ops: forward against float64 NumPy, gradient checks (first and second order),
Hypothesis properties over shapes, broadcasting, layouts and dtypes, and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as hs

import scitensor as st

from .helpers import (
    ALL_DTYPES,
    FEW,
    PROPS,
    assert_matches,
    broadcast_pairs,
    erf64,
    f64,
    float_dtypes,
    grad_check,
    layouts,
    make,
    second_order,
    seeds,
    shapes,
    unbroadcast,
    values,
)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# name -> (op, float64 reference, (low, high) domain, kink to keep away from or None)
UNARY = {
    "neg": (st.neg, np.negative, (-3, 3), None),
    "exp": (st.exp, np.exp, (-3, 3), None),
    "log": (st.log, np.log, (0.2, 4), None),
    "log1p": (st.log1p, np.log1p, (-0.8, 3), None),
    "sqrt": (st.sqrt, np.sqrt, (0.2, 4), None),
    "rsqrt": (st.rsqrt, lambda x: 1 / np.sqrt(x), (0.2, 4), None),
    "abs": (st.abs, np.abs, (-3, 3), 0.0),
    "sin": (st.sin, np.sin, (-3, 3), None),
    "cos": (st.cos, np.cos, (-3, 3), None),
    "tanh": (st.tanh, np.tanh, (-3, 3), None),
    "sigmoid": (st.sigmoid, _sigmoid, (-6, 6), None),
    "relu": (st.relu, lambda x: np.maximum(x, 0), (-3, 3), 0.0),
    "gelu": (st.gelu, lambda x: 0.5 * x * (1 + erf64(x / math.sqrt(2))), (-4, 4), None),
    "gelu_tanh": (lambda x: st.gelu(x, approximate="tanh"),
                  lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi)
                                                   * (x + 0.044715 * x**3))), (-4, 4), None),
    "silu": (st.silu, lambda x: x * _sigmoid(x), (-5, 5), None),
    "softplus": (st.softplus, lambda x: np.logaddexp(0, x), (-5, 5), None),
    "erf": (st.erf, erf64, (-3, 3), None),
    "expm1": (st.expm1, np.expm1, (-3, 3), None),
    "square": (st.square, np.square, (-3, 3), None),
    "reciprocal": (st.reciprocal, lambda x: 1 / x, (0.2, 4), None),
}
# ops that keep integer dtypes (the others compute integer inputs in the default float)
KEEPS_INT = {"neg", "abs", "relu", "square"}


def _unary_input(name, shape, dtype=st.float64, seed=0):
    _, _, (lo, hi), kink = UNARY[name]
    return values(shape, dtype, lo, hi, seed=seed, away_from=kink)


@pytest.mark.parametrize("name", sorted(UNARY))
@pytest.mark.parametrize("dtype", [st.float32, st.float64])
def test_unary_forward_matches_numpy(device, name, dtype):
    op, ref, _, _ = UNARY[name]
    a = _unary_input(name, (3, 5), dtype)
    assert_matches(op(make(a, device)), ref(f64(a)), dtype=dtype)


def test_sign_forward_and_no_gradient(device):
    a = np.array([-2.0, 0.0, 3.0])
    x = make(a, device, requires_grad=True)
    y = st.sign(x)
    assert_matches(y, np.sign(a), dtype=st.float64)
    assert not y.requires_grad
    assert st.grad(lambda v: st.sign(v).sum())(x).tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_gradient(device, name):
    op = UNARY[name][0]
    grad_check(op, _unary_input(name, (2, 3)), device=device)


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_second_derivative(device, name):
    op = UNARY[name][0]
    grad_check(second_order(op), _unary_input(name, (2, 3), seed=1), device=device)


def test_grad_of_grad_matches_analytic(device):
    x = make(np.array([0.3, -1.2, 2.0]), device)
    d2 = st.grad(lambda v: st.grad(lambda u: (u**3).sum())(v).sum())(x)
    assert_matches(d2, 6 * f64(x))
    d2 = st.grad(lambda v: st.grad(lambda u: st.sin(u).sum())(v).sum())(x)
    assert_matches(d2, -np.sin(f64(x)))
    d2 = st.grad(lambda v: st.grad(lambda u: st.tanh(u).sum())(v).sum())(x)
    t = np.tanh(f64(x))
    assert_matches(d2, -2 * t * (1 - t * t))


@pytest.mark.parametrize("name", sorted(UNARY))
@given(shape=shapes, dtype=hs.sampled_from(ALL_DTYPES), layout=layouts, seed=seeds)
@FEW
def test_unary_property(device, name, shape, dtype, layout, seed):
    op, ref, _, _ = UNARY[name]
    if dtype is st.bool:
        return  # bool has no negation and no floating functions worth testing
    a = _unary_input(name, shape, dtype, seed)
    out = op(make(a, device, layout))
    expect = dtype if dtype.is_floating or name in KEEPS_INT else st.get_default_dtype()
    assert_matches(out, ref(f64(a)), dtype=expect, msg=name)


def test_activations_are_stable_for_large_inputs(device):
    x = make(np.array([-1000.0, -50.0, 0.0, 50.0, 1000.0], np.float32), device)
    assert_matches(st.sigmoid(x), [0.0, _sigmoid(-50.0), 0.5, 1.0, 1.0])
    assert_matches(st.softplus(x), [0.0, np.logaddexp(0, -50.0), math.log(2), 50.0, 1000.0])
    assert_matches(st.silu(x), [0.0, -50.0 * _sigmoid(-50.0), 0.0, 50.0, 1000.0])
    assert_matches(st.gelu(x), [0.0, 0.0, 0.0, 50.0, 1000.0])
    g = st.grad(lambda v: st.softplus(v).sum())(x.astype(st.float64))
    assert np.isfinite(g.numpy()).all()


def test_integer_input_to_float_function_uses_default_dtype(device):
    x = make(np.array([0, 1, 2], np.int32), device)
    assert_matches(st.exp(x), np.exp([0.0, 1, 2]), dtype=st.float32)
    st.set_default_dtype(st.float64)
    assert st.sin(x).dtype is st.float64


# ---- binary arithmetic ----------------------------------------------------------------------
BINARY = {
    "add": (st.add, np.add, (-3, 3)),
    "sub": (st.sub, np.subtract, (-3, 3)),
    "mul": (st.mul, np.multiply, (-3, 3)),
    "div": (st.div, np.divide, (0.5, 3)),
    "pow": (st.pow, np.power, (0.5, 2)),
    "maximum": (st.maximum, np.maximum, (-3, 3)),
    "minimum": (st.minimum, np.minimum, (-3, 3)),
}
OPERATORS = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b,
             "mul": lambda a, b: a * b, "div": lambda a, b: a / b,
             "pow": lambda a, b: a**b}


@pytest.mark.parametrize("name", sorted(BINARY))
@pytest.mark.parametrize("shapes_ab", [((3, 4), (3, 4)), ((2, 1, 4), (3, 1)), ((4,), ()),
                                       ((), (2, 3)), ((1, 3), (2, 1))])
def test_binary_forward_and_broadcast_gradient(device, name, shapes_ab):
    op, ref, (lo, hi) = BINARY[name]
    a = values(shapes_ab[0], st.float64, lo, hi, seed=1)
    b = values(shapes_ab[1], st.float64, lo, hi, seed=2)
    assert_matches(op(make(a, device), make(b, device)), ref(a, b))
    grad_check(op, a, b, device=device)  # gradients sum back over broadcast axes
    ga, gb = st.grad(lambda x, y: op(x, y).sum(), argnums=(0, 1))(make(a, device),
                                                                  make(b, device))
    assert ga.shape == a.shape and gb.shape == b.shape


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_operators_and_reversed_python_scalars(device, name):
    fn, ref = OPERATORS[name], BINARY[name][1]
    a = values((2, 3), st.float64, 0.5, 2, seed=4)
    x = make(a, device)
    for s in (2, 0.5, True):
        assert_matches(fn(x, s), ref(a, float(s)), dtype=st.float64, msg=f"x {name} {s}")
        assert_matches(fn(s, x), ref(float(s), a), dtype=st.float64, msg=f"{s} {name} x")
        grad_check(lambda v, s=s: fn(v, s), a, device=device)
        grad_check(lambda v, s=s: fn(s, v), a, device=device)


def test_negation_operator_and_power_special_cases(device):
    a = values((4,), st.float64, 0.5, 2)
    x = make(a, device)
    assert_matches(-x, -a)
    for p in (0, 1, 2, 3, -1, 0.5, -2.5):
        assert_matches(x**p, a**p, msg=f"x ** {p}")
        grad_check(lambda v, p=p: v**p, a, device=device)
    # the exponent's gradient at a zero base is 0 (b > 0), not 0 * log(0) = nan
    g = st.grad(lambda e: (make(np.array([0.0, 2.0]), device) ** e).sum())(
        make(np.array([2.0, 2.0]), device))
    assert_matches(g, [0.0, 4 * math.log(2)])
    g = st.grad(lambda e: (0.0**e).sum())(make(np.array([2.0]), device))
    assert g.tolist() == [0.0]


@pytest.mark.parametrize("name", sorted(BINARY))
@pytest.mark.parametrize("argnum", [0, 1])
def test_binary_second_derivative(device, name, argnum):
    op, _, (lo, hi) = BINARY[name]
    a = values((2, 3), st.float64, lo, hi, seed=5)
    b = values((3,), st.float64, lo, hi, seed=6)
    grad_check(second_order(op, argnum), a, b, device=device)


@pytest.mark.parametrize("op", [st.maximum, st.minimum])
def test_maximum_minimum_split_gradient_on_ties(device, op):
    a = np.array([1.0, 2.0, 3.0])
    b = np.array([1.0, 5.0, 0.0])
    ga, gb = st.grad(lambda x, y: op(x, y).sum(), argnums=(0, 1))(make(a, device),
                                                                  make(b, device))
    first = [1.0, 0.0, 1.0] if op is st.minimum else [0.0, 1.0, 0.0]
    assert ga.tolist() == [0.5, 1 - first[1], 1 - first[2]]
    assert gb.tolist() == [0.5, first[1], first[2]]
    # at a tie the even split is what central differences see
    grad_check(op, a, b, device=device)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # x / False
@given(pair=broadcast_pairs, da=hs.sampled_from(ALL_DTYPES), db=hs.sampled_from(ALL_DTYPES),
       name=hs.sampled_from(["add", "sub", "mul", "div", "maximum", "minimum"]),
       la=layouts, lb=layouts, seed=seeds)
@PROPS
def test_binary_promotion_broadcasting_layouts(device, pair, da, db, name, la, lb, seed):
    (sa, sb), result_shape = pair
    if name == "sub" and da is st.bool and db is st.bool:
        return  # bool - bool is refused (tested below)
    op, ref, _ = BINARY[name]
    a = values(sa, da, 1, 4, seed=seed)
    b = values(sb, db, 1, 4, seed=seed + 1)
    out = op(make(a, device, la), make(b, device, lb))
    expect = st.result_type(da, db)
    if name == "div" and not expect.is_floating:
        expect = st.get_default_dtype()
    with np.errstate(all="ignore"):
        ref_out = ref(f64(a), f64(b))
    if expect is st.bool:
        ref_out = ref_out.astype(bool)  # bool + bool is logical or, bool * bool logical and
    assert_matches(out, ref_out, dtype=expect, msg=f"{name} {da} {db}")
    assert out.shape == result_shape


@given(pair=broadcast_pairs, la=layouts, lb=layouts, seed=seeds)
@PROPS
def test_broadcast_gradients_reduce_to_input_shapes(device, pair, la, lb, seed):
    (sa, sb), out_shape = pair
    a = values(sa, st.float64, seed=seed)
    b = values(sb, st.float64, seed=seed + 1)
    w = values(out_shape, st.float64, seed=seed + 2)
    ga, gb = st.grad(lambda x, y: (x * y * make(w, device)).sum(), argnums=(0, 1))(
        make(a, device, la), make(b, device, lb))
    assert_matches(ga, unbroadcast(w * b, sa))
    assert_matches(gb, unbroadcast(w * a, sb))
    ga, gb = st.grad(lambda x, y: ((x - y) * make(w, device)).sum(), argnums=(0, 1))(
        make(a, device, la), make(b, device, lb))
    assert_matches(ga, unbroadcast(w + 0 * b, sa))
    assert_matches(gb, unbroadcast(-w + 0 * a, sb))


@given(dtype=hs.sampled_from(ALL_DTYPES), scalar=hs.sampled_from([True, 3, 2.5]),
       name=hs.sampled_from(["add", "mul", "maximum"]), reverse=hs.booleans(), seed=seeds)
@PROPS
def test_python_scalars_are_weak(device, dtype, scalar, name, reverse, seed):
    op, ref, _ = BINARY[name]
    a = values((2, 3), dtype, 1, 4, seed=seed)
    x = make(a, device)
    out = op(scalar, x) if reverse else op(x, scalar)
    expect = st.result_type(x, scalar)
    ref_out = ref(f64(a), float(scalar))
    if expect is st.bool:
        ref_out = ref_out.astype(bool)
    assert_matches(out, ref_out, dtype=expect)


def test_integer_division_and_integer_arithmetic(device):
    a, b = np.array([7, -7, 4], np.int32), np.array([2, 2, 4], np.int32)
    x, y = make(a, device), make(b, device)
    assert_matches(x / y, a / b, dtype=st.float32)
    assert_matches(x / 2, a / 2, dtype=st.float32)
    assert_matches(3 / y, 3 / b, dtype=st.float32)
    assert_matches(x * y + 1, a * b + 1, dtype=st.int32)
    assert_matches(x**2, a**2, dtype=st.int32)


# ---- comparisons (no gradient) ------------------------------------------------------------
COMPARISONS = {"eq": (st.eq, np.equal), "ne": (st.ne, np.not_equal), "lt": (st.lt, np.less),
               "le": (st.le, np.less_equal), "gt": (st.gt, np.greater),
               "ge": (st.ge, np.greater_equal)}


@given(pair=broadcast_pairs, name=hs.sampled_from(sorted(COMPARISONS)), da=float_dtypes,
       db=hs.sampled_from(ALL_DTYPES), seed=seeds)
@PROPS
def test_comparisons_property(device, pair, name, da, db, seed):
    (sa, sb), result_shape = pair
    op, ref = COMPARISONS[name]
    a = np.round(values(sa, st.float64, -2, 2, seed=seed)).astype(da.np)  # ties happen
    b = values(sb, db, -2, 2, seed=seed + 1)
    out = op(make(a, device, requires_grad=True), make(b, device))
    assert_matches(out, ref(f64(a), f64(b)), dtype=st.bool)
    assert not out.requires_grad


def test_comparison_operators_with_scalars(device):
    a = np.array([1.0, 2.0, 3.0])
    x = make(a, device)
    assert (x == 2).tolist() == [False, True, False]
    assert (x != 2).tolist() == [True, False, True]
    assert (2 < x).tolist() == [False, False, True]  # noqa: SIM300 (reversed operands)
    assert (x <= 2).tolist() == [True, True, False]
    assert (2.5 > x).tolist() == [True, True, False]  # noqa: SIM300
    assert (x >= 2).tolist() == [False, True, True]


# ---- where and clip -----------------------------------------------------------------------
def test_where_forward_gradient_and_scalars(device):
    a = values((2, 3), st.float64, seed=7)
    b = values((3,), st.float64, seed=8)
    c = np.array([True, False, True])
    cond = make(c, device)
    assert_matches(st.where(cond, make(a, device), make(b, device)), np.where(c, a, b))
    grad_check(lambda x, y: st.where(cond, x, y), a, b, device=device)
    grad_check(second_order(lambda x, y: st.where(cond, x * x, y), 0), a, b, device=device)
    assert_matches(st.where(cond, make(a, device), 0.0), np.where(c, a, 0.0))
    assert_matches(st.where(cond, 1.0, 0.0), np.where(c, 1.0, 0.0), dtype=st.float32)
    assert_matches(st.where(make(np.array([2, 0, -1]), device), 1, 0), [1, 0, 1],
                   dtype=st.int64)


def test_clip_forward_gradients_and_bounds(device):
    a = np.array([-2.0, -1.0, 0.5, 1.0, 3.0])
    x = make(a, device, requires_grad=True)
    assert_matches(st.clip(x, -1, 1), np.clip(a, -1, 1))
    assert_matches(x.clamp(min=0.0), np.clip(a, 0, None))
    assert_matches(st.clip(x, max=0.0), np.clip(a, None, 0))
    # inside and on the bounds the gradient reaches x
    assert st.grad(lambda v: st.clip(v, -1, 1).sum())(x).tolist() == [0, 1, 1, 1, 0]
    inner = values((4, 3), st.float64, -3, 3, seed=9, away_from=1.0)
    inner = np.where(np.abs(inner + 1) < 0.1, 0.0, inner)
    grad_check(lambda v: st.clip(v, -1.0, 1.0), inner, device=device)
    grad_check(second_order(lambda v: st.clip(v * v, max=2.0)), inner, device=device)


def test_clip_with_tensor_bounds_differentiates_the_bounds(device):
    a = values((4, 3), st.float64, -3, 3, seed=10)
    lo = values((3,), st.float64, -2, -0.5, seed=11)
    hi = values((4, 1), st.float64, 0.5, 2, seed=12)
    ref = np.clip(a, lo, hi)
    assert_matches(st.clip(make(a, device), make(lo, device), make(hi, device)), ref)
    grad_check(lambda x, y, z: st.clip(x, y, z), a, lo, hi, device=device)


@pytest.mark.parametrize("dtype", [st.int32, st.int64])
def test_clip_promotes_like_arithmetic(device, dtype):
    x = make(np.array([1, 5, 9], dtype.np), device)
    assert_matches(st.clip(x, 2, 6), [2, 5, 6], dtype=dtype)
    assert_matches(st.clip(x, 2.5, 6), [2.5, 5, 6], dtype=st.float32)
    assert st.clip(make(np.ones(2, np.float16), device), 0.0, 0.5).dtype is st.float16


# ---- bad input ------------------------------------------------------------------------------
def test_shape_mismatch_names_op_and_shapes(device):
    x, y = make(np.ones((2, 3)), device), make(np.ones((4,)), device)
    for name in ("add", "sub", "mul", "div", "pow", "maximum", "minimum", "eq", "lt"):
        op = getattr(st, name)
        with pytest.raises(ValueError, match=rf"{name}: .*\(2, 3\).*\(4,\)"):
            op(x, y)
    with pytest.raises(ValueError, match=r"where: .*\(2, 3\)"):
        st.where(x > 0, x, y)


def test_wrong_types_name_the_op(device):
    x = make(np.ones(3), device)
    with pytest.raises(TypeError, match="add: unsupported operand"):
        x + "a"
    with pytest.raises(TypeError, match="mul: unsupported operand"):
        [1.0] * x
    with pytest.raises(TypeError, match="exp: expected a Tensor"):
        st.exp([1.0, 2.0])
    with pytest.raises(ValueError, match="gelu: approximate"):
        st.gelu(x, approximate="fast")
    with pytest.raises(ValueError, match="clip: give at least one"):
        st.clip(x)
    with pytest.raises(TypeError, match="clip: bounds must be numbers or tensors"):
        st.clip(x, "a", None)
    with pytest.raises(TypeError, match="neg: cannot negate a bool"):
        -make(np.array([True]), device)
    with pytest.raises(TypeError, match=r"sub: .*bool"):
        make(np.array([True]), device) - make(np.array([False]), device)
    with pytest.raises(ValueError, match=r"pow: .*negative integer powers"):
        make(np.array([2]), device) ** -1


def test_failed_op_leaves_inputs_untouched(device):
    a = values((2, 3), st.float64)
    x = make(a, device, requires_grad=True)
    y = make(np.ones(4), device)
    for bad in (lambda: x + y, lambda: x * y, lambda: st.maximum(x, y),
                lambda: st.where(x > 0, x, y), lambda: st.clip(x, y, None)):
        with pytest.raises(ValueError):
            bad()
    np.testing.assert_array_equal(x.numpy(), a)
    assert x.requires_grad and x.grad is None and x.is_leaf
    np.testing.assert_array_equal(y.numpy(), np.ones(4))

