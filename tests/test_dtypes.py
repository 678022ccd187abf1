"""dtypes: the promotion lattice (result_type and real ops), weak Python scalars, conversions,
and the default floating dtype."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import scitensor as st

B, I32, I64, F16, BF16, F32, F64 = (st.bool, st.int32, st.int64, st.float16, st.bfloat16,
                                    st.float32, st.float64)
ORDER = [B, I32, I64, F16, BF16, F32, F64]
# the documented table: row op column
TABLE = {
    B: [B, I32, I64, F16, BF16, F32, F64],
    I32: [I32, I32, I64, F16, BF16, F32, F64],
    I64: [I64, I64, I64, F16, BF16, F32, F64],
    F16: [F16, F16, F16, F16, F32, F32, F64],
    BF16: [BF16, BF16, BF16, F32, BF16, F32, F64],
    F32: [F32, F32, F32, F32, F32, F32, F64],
    F64: [F64] * 7,
}
PAIRS = [(a, b, TABLE[a][j]) for a in ORDER for j, b in enumerate(ORDER)]


@pytest.mark.parametrize("a,b,expected", PAIRS, ids=[f"{a.name}-{b.name}" for a, b, _ in PAIRS])
def test_result_type_table(a, b, expected):
    assert st.result_type(a, b) is expected
    assert st.result_type(b, a) is expected  # symmetric
    assert st.result_type(st.ones(1, dtype=a), b) is expected


@pytest.mark.parametrize("a,b,expected", PAIRS, ids=[f"{a.name}-{b.name}" for a, b, _ in PAIRS])
def test_ops_follow_the_table(device, a, b, expected):
    x, y = st.ones(2, dtype=a, device=device), st.ones(2, dtype=b, device=device)
    assert (x + y).dtype is expected
    assert (x * y).dtype is expected
    assert st.maximum(x, y).dtype is expected
    assert st.where(x > 0, x, y).dtype is expected
    assert st.concatenate([x, y]).dtype is expected
    assert st.stack([x, y]).dtype is expected
    assert (x == y).dtype is st.bool


def test_result_type_is_associative_over_many():
    assert st.result_type(B, I32, F16) is F16
    assert st.result_type(F16, I64, BF16) is F32
    assert st.result_type(I32, I64, st.ones(1, dtype=F64)) is F64


# ---- weak Python scalars -----------------------------------------------------------------------
SCALARS = {
    # tensor dtype: result with (bool, int, float) scalars
    B: (B, I64, F32), I32: (I32, I32, F32), I64: (I64, I64, F32), F16: (F16, F16, F16),
    BF16: (BF16, BF16, BF16), F32: (F32, F32, F32), F64: (F64, F64, F64),
}


@pytest.mark.parametrize("dtype", ORDER, ids=lambda d: d.name)
def test_python_scalars_are_weak(device, dtype):
    x = st.ones(2, dtype=dtype, device=device)
    for scalar, expected in zip((True, 2, 2.5), SCALARS[dtype]):
        assert st.result_type(x, scalar) is expected
        assert st.result_type(scalar, dtype) is expected
        assert (x + scalar).dtype is expected
        assert (scalar * x).dtype is expected
        assert st.where(x > 0, x, scalar).dtype is expected
    # NumPy scalars behave like the Python numbers they are
    assert (x + np.float64(2.5)).dtype is SCALARS[dtype][2]
    assert (x + np.int32(2)).dtype is SCALARS[dtype][1]


def test_scalar_only_result_types():
    assert st.result_type(True) is B
    assert st.result_type(1) is I64
    assert st.result_type(1, 2.0) is F32
    assert st.result_type(True, 1) is I64
    with pytest.raises(TypeError, match="result_type: cannot take the dtype of str"):
        st.result_type(F32, "a")


def test_float_scalar_follows_default_dtype(device):
    st.set_default_dtype(F64)
    assert st.result_type(I32, 1.5) is F64
    assert (st.ones(2, dtype=I64, device=device) * 0.5).dtype is F64
    assert (st.ones(2, dtype=F16, device=device) * 0.5).dtype is F16  # stays weak


def test_values_are_computed_in_the_promoted_dtype(device):
    big = st.tensor([2**40], dtype=I64, device=device)
    assert (big + st.tensor([1], dtype=I32, device=device)).item() == 2**40 + 1
    h = st.tensor([1000.0], dtype=F16, device=device)
    assert (h * st.tensor([1000.0], dtype=F32, device=device)).item() == 1e6  # no f16 overflow
    assert (st.tensor([3], dtype=I32, device=device) / 2).tolist() == [1.5]


# ---- default dtype ------------------------------------------------------------------------------
def test_default_dtype(device):
    assert st.get_default_dtype() is F32
    st.set_default_dtype("float64")
    assert st.get_default_dtype() is F64
    assert st.zeros(1, device=device).dtype is F64
    assert st.tensor(1.0, device=device).dtype is F64
    assert st.rand(2, device=device).dtype is F64
    assert st.tensor(1, device=device).dtype is I64
    st.set_default_dtype(BF16)
    assert st.ones(1, device=device).dtype is BF16
    for bad in (I32, B):
        with pytest.raises(TypeError, match=r"set_default_dtype: .* is not a floating dtype"):
            st.set_default_dtype(bad)
    assert st.get_default_dtype() is BF16


# ---- DType objects ---------------------------------------------------------------------------
def test_dtype_objects():
    assert [d.name for d in ORDER] == ["bool", "int32", "int64", "float16", "bfloat16",
                                       "float32", "float64"]
    assert repr(F32) == "scitensor.float32" and F32.itemsize == 4 and BF16.itemsize == 2
    assert B.is_bool and I32.is_integer and BF16.is_floating and not I64.is_floating
    for d in ORDER:
        assert pickle.loads(pickle.dumps(d)) is d
        assert st.as_dtype(d.name) is d and st.as_dtype(d.np) is d and st.as_dtype(d) is d


@pytest.mark.parametrize("spelling,expected", [
    ("half", F16), ("float", F32), ("double", F64), ("long", I64), ("int", I64),
    ("bool_", B), (np.float32, F32), (np.dtype("int32"), I32), (float, F32), (int, I64),
    (bool, B), (np.bool_, B)])
def test_as_dtype_spellings(spelling, expected):
    assert st.as_dtype(spelling) is expected


@pytest.mark.parametrize("bad,msg", [
    ("float8", "unknown dtype name 'float8'"), (np.uint8, "uint8 is not supported"),
    (3, "cannot interpret 3 as a scitensor dtype"), (None, "dtype is None"),
    (np.complex128, "complex128 is not supported")])
def test_as_dtype_errors(bad, msg):
    with pytest.raises(TypeError, match=msg):
        st.as_dtype(bad)
