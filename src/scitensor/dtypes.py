"""Data types and the promotion rules between them.

scitensor has seven dtypes: ``bool``, ``int32``, ``int64``, ``float16``, ``bfloat16``,
``float32`` (the default floating type) and ``float64``.

Promotion (``result_type``) follows one lattice::

    bool < int32 < int64 < {float16, bfloat16} < float32 < float64

- two tensors promote to the higher of the two; ``float16`` with ``bfloat16`` gives ``float32``
  (neither holds the other);
- integer with floating gives the floating type (``int64 + float16 -> float16``);
- a Python scalar is *weak*: it never widens a tensor of its own kind. ``int`` and ``bool``
  scalars keep the tensor's dtype (a bool tensor plus an int becomes ``int64``); a ``float``
  scalar keeps a floating tensor's dtype and turns an integer or bool tensor into ``float32``.

Example:
    >>> import scitensor as st
    >>> st.result_type(st.int32, st.float16)
    scitensor.float16
    >>> (st.ones(2, dtype=st.int32) * 2.5).dtype
    scitensor.float32
"""

from __future__ import annotations

import builtins

import ml_dtypes
import numpy as np

__all__ = [
    "DType",
    "bfloat16",
    "bool_",
    "float16",
    "float32",
    "float64",
    "int32",
    "int64",
    "as_dtype",
    "result_type",
    "get_default_dtype",
    "set_default_dtype",
]


class DType:
    """A scitensor data type: a name, its NumPy dtype, and its kind.

    Instances are unique; compare them with ``==`` or ``is``.

    Example:
        >>> import scitensor as st
        >>> st.float32.itemsize, st.float32.is_floating
        (4, True)
    """

    __slots__ = ("name", "np", "itemsize", "kind", "rank")

    def __init__(self, name: str, np_dtype, kind: str, rank: int):
        self.name = name
        self.np = np.dtype(np_dtype)
        self.itemsize = self.np.itemsize
        self.kind = kind  # "b" bool, "i" integer, "f" floating
        self.rank = rank

    @property
    def is_floating(self) -> bool:
        return self.kind == "f"

    @property
    def is_integer(self) -> bool:
        return self.kind == "i"

    @property
    def is_bool(self) -> bool:
        return self.kind == "b"

    def __repr__(self) -> str:
        return f"scitensor.{self.name}"

    def __reduce__(self):
        return (as_dtype, (self.name,))


bool_ = DType("bool", np.bool_, "b", 0)
int32 = DType("int32", np.int32, "i", 1)
int64 = DType("int64", np.int64, "i", 2)
float16 = DType("float16", np.float16, "f", 3)
bfloat16 = DType("bfloat16", ml_dtypes.bfloat16, "f", 3)
float32 = DType("float32", np.float32, "f", 4)
float64 = DType("float64", np.float64, "f", 5)

ALL_DTYPES = (bool_, int32, int64, float16, bfloat16, float32, float64)
FLOATING_DTYPES = (float16, bfloat16, float32, float64)

_BY_NP = {d.np: d for d in ALL_DTYPES}
_BY_NAME = {d.name: d for d in ALL_DTYPES}
_BY_NAME.update({"bool_": bool_, "half": float16, "float": float32, "double": float64,
                 "long": int64, "int": int64})
_default_float = [float32]


def get_default_dtype() -> DType:
    """Return the dtype that floating constructors use when none is given (float32)."""
    return _default_float[0]


def set_default_dtype(dtype) -> None:
    """Set the default floating dtype; it must be a floating dtype.

    Example:
        >>> import scitensor as st
        >>> st.set_default_dtype(st.float64); st.zeros(1).dtype
        scitensor.float64
        >>> st.set_default_dtype(st.float32)
    """
    d = as_dtype(dtype)
    if not d.is_floating:
        raise TypeError(f"set_default_dtype: {d} is not a floating dtype; use float16, "
                        "bfloat16, float32 or float64")
    _default_float[0] = d


def from_numpy_dtype(np_dtype) -> DType:
    """Map a NumPy (or CuPy) dtype to the scitensor dtype, or raise a clear TypeError."""
    d = _BY_NP.get(np_dtype)
    if d is None:
        d = _BY_NP.get(np.dtype(np_dtype))
    if d is None:
        raise TypeError(
            f"dtype {np.dtype(np_dtype)} is not supported by scitensor; convert the array to "
            "one of bool, int32, int64, float16, bfloat16, float32, float64 first")
    return d


def as_dtype(dtype) -> DType:
    """Turn a DType, a name (``"float32"``), a NumPy dtype or a Python type into a DType.

    Example:
        >>> import scitensor as st
        >>> st.as_dtype("bfloat16") is st.bfloat16
        True
    """
    if isinstance(dtype, DType):
        return dtype
    if isinstance(dtype, str):
        d = _BY_NAME.get(dtype)
        if d is None:
            raise TypeError(f"unknown dtype name {dtype!r}; expected one of "
                            f"{sorted(x.name for x in ALL_DTYPES)}")
        return d
    if dtype is None:  # np.dtype(None) would silently mean float64
        raise TypeError("as_dtype: dtype is None; give a dtype such as st.float32")
    if dtype is builtins.float:
        return get_default_dtype()
    if dtype is builtins.int:
        return int64
    if dtype is builtins.bool:
        return bool_
    try:
        return from_numpy_dtype(np.dtype(dtype))
    except TypeError as e:
        if "not supported" in str(e):
            raise
        raise TypeError(f"cannot interpret {dtype!r} as a scitensor dtype") from None


def result_type(*items) -> DType:
    """The dtype an operation over ``items`` (dtypes, tensors or Python scalars) produces.

    Tensors and dtypes are strong; Python scalars are weak (see the module docstring).
    """
    strong = None
    weak_kind = None  # highest weak scalar kind seen: "b", "i" or "f"
    for it in items:
        d = getattr(it, "dtype", None)
        if isinstance(d, DType):
            strong = d if strong is None else _promote(strong, d)
        elif isinstance(it, DType):
            strong = it if strong is None else _promote(strong, it)
        elif isinstance(it, builtins.bool | np.bool_):
            weak_kind = weak_kind or "b"
        elif isinstance(it, builtins.int | np.integer):
            weak_kind = "i" if weak_kind in (None, "b") else weak_kind
        elif isinstance(it, builtins.float | np.floating):
            weak_kind = "f"
        else:
            raise TypeError(f"result_type: cannot take the dtype of {type(it).__name__}")
    if strong is None:
        return {None: get_default_dtype(), "b": bool_, "i": int64,
                "f": get_default_dtype()}[weak_kind]
    if weak_kind == "f" and not strong.is_floating:
        return get_default_dtype()
    if weak_kind == "i" and strong.is_bool:
        return int64
    return strong


def _promote(a: DType, b: DType) -> DType:
    if a is b:
        return a
    if a.rank == b.rank:  # float16 with bfloat16
        return float32
    return a if a.rank > b.rank else b
