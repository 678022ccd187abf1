"""Reductions (sum mean var std max min argmax argmin logsumexp softmax log_softmax): forward
against float64 NumPy over any axes with keepdims, gradient checks (ties included), second
derivatives, Hypothesis properties over shapes/axes/dtypes/layouts, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as hs

import scitensor as st
from scitensor.testing import tolerance

from .helpers import (
    ALL_DTYPES,
    FEW,
    PROPS,
    assert_matches,
    axes_for,
    f64,
    float_dtypes,
    grad_check,
    layouts,
    make,
    np_axes,
    second_order,
    seeds,
    shapes,
    values,
)


def _logsumexp(a, axis=None, keepdims=False):
    m = np.max(a, axis=axis, keepdims=True, initial=-np.inf)
    m = np.where(np.isfinite(m), m, 0.0)
    out = np.log(np.sum(np.exp(a - m), axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axis)


def _softmax(a, axis):
    e = np.exp(a - a.max(axis=axis, keepdims=True, initial=-np.inf))
    return e / e.sum(axis=axis, keepdims=True)


# name -> (op, float64 reference(a, axis, keepdims))
REDUCTIONS = {
    "sum": (st.sum, lambda a, ax, k: np.sum(a, axis=ax, keepdims=k)),
    "mean": (st.mean, lambda a, ax, k: np.mean(a, axis=ax, keepdims=k)),
    "var": (st.var, lambda a, ax, k: np.var(a, axis=ax, keepdims=k)),
    "var_ddof1": (lambda x, axis=None, keepdims=False: st.var(x, axis, keepdims, ddof=1),
                  lambda a, ax, k: np.var(a, axis=ax, keepdims=k, ddof=1)),
    "std": (st.std, lambda a, ax, k: np.std(a, axis=ax, keepdims=k)),
    "max": (st.max, lambda a, ax, k: np.max(a, axis=ax, keepdims=k)),
    "min": (st.min, lambda a, ax, k: np.min(a, axis=ax, keepdims=k)),
    "logsumexp": (st.logsumexp, _logsumexp),
}
AXES = [None, 0, -1, (0, 2), (-1, 0), ()]


def _result_dtype(name, dtype):
    if name == "sum":
        return dtype if dtype.is_floating or dtype is st.int64 else st.int64
    if name in ("max", "min"):
        return dtype
    return dtype if dtype.is_floating else st.get_default_dtype()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy: empty slices, log(0)
@pytest.mark.parametrize("name", sorted(REDUCTIONS))
@pytest.mark.parametrize("axis", AXES)
@pytest.mark.parametrize("keepdims", [False, True])
def test_reduction_forward_and_gradient(device, name, axis, keepdims):
    op, ref = REDUCTIONS[name]
    a = values((2, 3, 4), st.float64, seed=1)
    out = op(make(a, device), axis=axis, keepdims=keepdims)
    assert_matches(out, ref(a, np_axes(axis, 3), keepdims), dtype=st.float64)
    if name == "var_ddof1" and axis == ():
        return  # one element per reduction: ddof=1 gives nan
    grad_check(lambda x: op(x, axis=axis, keepdims=keepdims), a, device=device)


@pytest.mark.parametrize("name", sorted(REDUCTIONS))
def test_reduction_second_derivative(device, name):
    op = REDUCTIONS[name][0]
    a = values((3, 4), st.float64, seed=2)
    grad_check(second_order(lambda x: op(x * x, axis=-1) * x[:, 0]), a, device=device)
    grad_check(second_order(lambda x: op(x * x, axis=None, keepdims=True)), a, device=device)


def test_methods_match_functions(device):
    a = values((3, 4), st.float64, seed=3)
    x = make(a, device)
    assert_matches(x.sum(axis=0), a.sum(0))
    assert_matches(x.mean(1, keepdims=True), a.mean(1, keepdims=True))
    assert_matches(x.var(), a.var())
    assert_matches(x.std(axis=-1, ddof=1), a.std(-1, ddof=1))
    assert_matches(x.max(axis=1), a.max(1))
    assert_matches(x.min(), a.min())
    assert_matches(x.logsumexp(axis=0), _logsumexp(a, 0))
    assert x.argmax().item() == a.argmax()
    assert_matches(x.softmax(axis=0), _softmax(a, 0))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy: empty slices, log(0)
@pytest.mark.parametrize("name", sorted(REDUCTIONS))
@given(shape=shapes, data=hs.data(), keepdims=hs.booleans(),
       dtype=hs.sampled_from(ALL_DTYPES), layout=layouts, seed=seeds)
@FEW
def test_reduction_property(device, name, shape, data, keepdims, dtype, layout, seed):
    op, ref = REDUCTIONS[name]
    axis = data.draw(axes_for(len(shape)), label="axis")
    a = values(shape, dtype, -3, 3, seed=seed)
    x = make(a, device, layout)
    ax = np_axes(axis, len(shape))
    reduced = [shape[i] for i in (range(len(shape)) if ax is None else ax)]
    if name in ("max", "min") and 0 in reduced:
        with pytest.raises(ValueError, match=f"{name}: cannot reduce an empty axis"):
            op(x, axis=axis, keepdims=keepdims)
        return
    out = op(x, axis=axis, keepdims=keepdims)
    expect = ref(f64(a), ax, keepdims)
    dtype_out = _result_dtype(name, dtype)
    rtol, _ = tolerance(dtype_out)
    n = int(np.prod(reduced))
    # accumulated rounding grows with the number of reduced elements (values within +-3)
    assert_matches(out, expect, dtype=dtype_out, atol=rtol * 30 * max(n, 1))


def test_empty_reductions(device):
    x = make(np.zeros((0, 3)), device)
    assert_matches(st.sum(x, axis=0), np.zeros(3))
    assert_matches(st.mean(x, axis=0), np.full(3, np.nan))
    assert_matches(st.logsumexp(x, axis=0), np.full(3, -np.inf))
    assert_matches(st.max(x, axis=1), np.zeros(0))
    assert st.argmax(x, axis=1).shape == (0,)
    assert st.softmax(x.T, axis=-1).shape == (3, 0)
    assert st.log_softmax(x, axis=0).shape == (0, 3)


# ---- max/min ties -----------------------------------------------------------------------------
@pytest.mark.parametrize("op", [st.max, st.min])
def test_max_min_ties_share_the_gradient(device, op):
    sign = 1.0 if op is st.max else -1.0
    a = sign * np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]])
    g = st.grad(lambda x: op(x, axis=1).sum())(make(a, device))
    assert_matches(g, [[0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3]])
    g = st.grad(lambda x: op(x))(make(a, device))
    assert_matches(g, [[0, 0.5, 0.5], [0, 0, 0]])
    # two-way ties: the even split is what central differences measure
    two = sign * np.array([[1.0, 3.0, 3.0], [5.0, 2.0, 5.0]])
    grad_check(lambda x: op(x, axis=-1, keepdims=True), two, device=device)


@pytest.mark.parametrize("dtype", [st.int32, st.int64, st.bool])
def test_max_min_sum_of_integers_and_bools(device, dtype):
    a = values((3, 4), dtype, -5, 5, seed=4)
    x = make(a, device)
    assert_matches(st.max(x, axis=0), a.max(0), dtype=dtype)
    assert_matches(st.min(x), a.min(), dtype=dtype)
    assert_matches(st.sum(x, axis=1), a.sum(1), dtype=st.int64 if dtype is not st.int64
                   else dtype)
    assert_matches(st.mean(x), f64(a).mean(), dtype=st.float32)


# ---- argmax / argmin ------------------------------------------------------------------------
@given(shape=shapes, data=hs.data(), keepdims=hs.booleans(),
       dtype=hs.sampled_from(ALL_DTYPES), layout=layouts, seed=seeds,
       which=hs.sampled_from(["argmax", "argmin"]))
@PROPS
def test_argmax_argmin_property(device, shape, data, keepdims, dtype, layout, seed, which):
    ndim = len(shape)
    axis = data.draw(hs.none() | (hs.integers(-ndim, ndim - 1) if ndim else hs.just(0)))
    a = np.round(values(shape, st.float64, -2, 2, seed=seed)).astype(dtype.np)  # many ties
    x = make(a, device, layout, requires_grad=dtype.is_floating)
    op, ref = getattr(st, which), getattr(np, which)
    if (axis is None and a.size == 0) or (ndim and axis is not None and shape[axis] == 0):
        with pytest.raises(ValueError, match=which):
            op(x, axis=axis, keepdims=keepdims)
        return
    out = op(x, axis=axis, keepdims=keepdims)
    if axis is None:
        expect = ref(f64(a))
        expect = np.reshape(expect, (1,) * ndim) if keepdims else expect
    else:
        expect = ref(f64(a), axis=axis, keepdims=keepdims) if ndim else 0
    assert out.dtype is st.int64 and not out.requires_grad
    np.testing.assert_array_equal(out.numpy(), expect)  # ties: the first index


# ---- softmax / log_softmax ------------------------------------------------------------------
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_softmax_log_softmax_forward_gradient_second_order(device, axis):
    a = values((3, 4, 2), st.float64, seed=5)
    x = make(a, device)
    assert_matches(st.softmax(x, axis=axis), _softmax(a, axis))
    assert_matches(st.log_softmax(x, axis=axis), np.log(_softmax(a, axis)))
    for op in (st.softmax, st.log_softmax):
        grad_check(lambda v, op=op: op(v, axis=axis), a, device=device)
        grad_check(second_order(lambda v, op=op: op(v, axis=axis)), a, device=device)


@given(shape=shapes, data=hs.data(), dtype=float_dtypes, layout=layouts, seed=seeds,
       shift=hs.sampled_from([0.0, 100.0, -1000.0]))
@PROPS
def test_softmax_property(device, shape, data, dtype, layout, seed, shift):
    ndim = len(shape)
    axis = data.draw(hs.integers(-ndim, ndim - 1) if ndim else hs.just(-1))
    a = values(shape, dtype, -4, 4, seed=seed)
    x = make(a, device, layout)
    ref = _softmax(f64(a), axis if ndim else None)
    y = st.softmax(x, axis=axis)
    assert_matches(y, ref, dtype=dtype)
    assert_matches(st.log_softmax(x, axis=axis), np.log(ref), dtype=dtype,
                   atol=2 * tolerance(dtype)[0])
    if dtype is st.float32:  # large shifts stay finite and accurate (max-shifted)
        xs = x + shift
        ax = axis if ndim else None
        assert_matches(st.softmax(xs, axis=axis), _softmax(f64(xs), ax))
        with np.errstate(divide="ignore"):
            assert_matches(st.logsumexp(xs, axis=axis), _logsumexp(f64(xs), ax))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy: empty slices, log(0)
def test_logsumexp_handles_infinities(device):
    a = np.array([[-np.inf, -np.inf], [np.inf, 0.0], [1000.0, 1000.0]])
    out = st.logsumexp(make(a, device), axis=1)
    assert_matches(out, [-np.inf, np.inf, 1000.0 + np.log(2)])


def test_low_precision_mean_and_var_do_not_overflow(device):
    for d in (st.float16, st.bfloat16):
        x = make(np.full((1000,), 100.0, d.np), device)
        assert_matches(st.mean(x), 100.0, dtype=d)
        assert_matches(st.var(x), 0.0, dtype=d)
        y = make(values((4, 50), d, 200, 300, seed=6), device)
        assert_matches(st.std(y, axis=1), np.std(f64(y), axis=1), dtype=d, rtol=2e-2)


# ---- bad input ------------------------------------------------------------------------------
OPS_WITH_AXES = ["sum", "mean", "var", "std", "max", "min", "logsumexp", "argmax", "argmin",
                 "softmax", "log_softmax"]


@pytest.mark.parametrize("name", OPS_WITH_AXES)
def test_axis_out_of_range_names_the_op(device, name):
    x = make(np.ones((2, 3)), device)
    op = getattr(st, name)
    with pytest.raises(IndexError, match=rf"{name}: axis 2 is out of range .* 2 dimension"):
        op(x, axis=2)
    with pytest.raises(IndexError, match=rf"{name}: axis -3"):
        op(x, axis=-3)
    with pytest.raises(TypeError, match=rf"{name}: axis must be an int"):
        op(x, axis=1.0)


@pytest.mark.parametrize("name", ["sum", "mean", "var", "max", "logsumexp"])
def test_repeated_axes_and_non_tensors_are_refused(device, name):
    op = getattr(st, name)
    x = make(np.ones((2, 3)), device)
    with pytest.raises(ValueError, match=rf"{name}: repeated axis"):
        op(x, axis=(1, -1))
    with pytest.raises(TypeError, match=rf"{name}: .*Tensor"):
        op([1.0, 2.0])


def test_empty_max_and_argmax_errors_name_the_op(device):
    x = make(np.zeros((2, 0)), device)
    with pytest.raises(ValueError, match=r"max: cannot reduce an empty axis of shape \(2, 0\)"):
        st.max(x)
    with pytest.raises(ValueError, match=r"min: .*\(2, 0\)"):
        st.min(x, axis=1)
    with pytest.raises(ValueError, match=r"argmax: empty tensor of shape \(2, 0\)"):
        st.argmax(x)
    with pytest.raises(ValueError, match=r"argmin: axis 1 of shape \(2, 0\) is empty"):
        st.argmin(x, axis=1)


def test_failed_reduction_leaves_input_untouched(device):
    a = values((2, 3), st.float64, seed=7)
    x = make(a, device, requires_grad=True)
    for bad in (lambda: st.sum(x, axis=5), lambda: st.softmax(x, axis=2),
                lambda: st.var(x, axis=(0, 0))):
        with pytest.raises((IndexError, ValueError)):
            bad()
    np.testing.assert_array_equal(x.numpy(), a)
    assert x.requires_grad and x.grad is None and x.is_leaf
