"""Indexing: ``x[key]`` (basic and integer/bool-array indexing), ``x[key] = v`` on tensors
that need no gradient, and the differentiable scatters ``scatter_add``, ``index_add``,
``take_along_axis`` and ``one_hot``.

Out-of-range indices raise ``IndexError`` on the CPU. On a GPU, index *lists* (host data) are
checked too, but index *tensors* are checked only in sync-every-op mode (``st.sync_mode()``):
a check would make the host wait for the device, and CuPy, like CUDA itself, wraps an
out-of-range index around instead of failing. Debug suspicious indexing in sync mode.
"""

from __future__ import annotations

import numbers

import numpy as np

from .. import dtypes as dt
from ..runtime import DETERMINISTIC, check_deterministic
from ._core import (
    GRAD_ENABLED,
    Tensor,
    check_tensor,
    checks_values,
    describe,
    host_min_max,
    make_result,
    norm_axis,
    sync_if_requested,
    wrap,
)

__all__ = ["getitem", "index_add", "one_hot", "scatter_add", "setitem", "take_along_axis"]


def _convert_key(x: Tensor, key, op: str):
    """Turn Tensors/lists in an index into backend arrays; report whether it is advanced.

    On a GPU, integer index arrays are bounds-checked here: lists always (they are host
    data), tensors in sync mode only (see the module docstring)."""
    if not isinstance(key, tuple):
        key = (key,)
    k, advanced = _convert_entries(x, key, op)
    if advanced and x.device.type != "cpu":  # NumPy checks the CPU's own indices
        _check_array_bounds(x, key, k, op)
    return k, advanced


def _array_axes(x: Tensor, key):
    """``(position, first axis)`` of each entry of a converted ``key`` that consumes axes."""
    def width(k):
        if k is None or k is Ellipsis:
            return 0
        if getattr(k, "dtype", None) is not None and k.dtype == np.bool_:
            return k.ndim
        return 1

    used = sum(width(k) for k in key)
    dim = 0
    for i, k in enumerate(key):
        if k is Ellipsis:
            dim += max(x.ndim - used, 0)
            continue
        yield i, dim
        dim += width(k)


def _check_array_bounds(x: Tensor, user_key, key, op: str) -> None:
    for i, dim in _array_axes(x, key):
        k = key[i]
        if not hasattr(k, "dtype") or k.dtype == np.bool_ or k.size == 0 or dim >= x.ndim:
            continue
        user = user_key[i]
        if isinstance(user, Tensor):
            if not checks_values(x.device):
                continue
            lo, hi = host_min_max(k, x.device)
        else:  # a list or NumPy array: checked on the host before it went to the device
            host = np.asarray(user)
            lo, hi = int(host.min()), int(host.max())
        n = x.shape[dim]
        if lo < -n or hi >= n:
            bad = hi if hi >= n else lo
            raise IndexError(f"{op}: index {bad} is out of range for axis {dim} with size {n} "
                             f"(indexing a tensor of shape {x.shape})")


def _convert_entries(x: Tensor, key, op: str):
    be = x.backend
    out = []
    advanced = False
    for k in key:
        if isinstance(k, Tensor):
            if k.device is not x.device:
                raise ValueError(f"{op}: index tensor is on {k.device} but the tensor is on "
                                 f"{x.device}")
            if k.dtype.kind not in "ib":
                raise TypeError(f"{op}: index tensors must be integer or bool, got {k.dtype}")
            out.append(k.data)
            advanced = True
        elif isinstance(k, list | np.ndarray):
            arr = np.asarray(k)
            if arr.dtype.kind not in "iub" and arr.size:
                raise TypeError(f"{op}: index arrays must hold integers or bools, got "
                                f"{arr.dtype}")
            if arr.size == 0:
                arr = arr.astype(np.int64)
            out.append(arr if x.device.type == "cpu" else be.xp.asarray(arr))
            advanced = True
        elif k is None or k is Ellipsis or isinstance(k, slice):
            out.append(k)
        elif isinstance(k, numbers.Integral) and not isinstance(k, bool):
            out.append(int(k))
        else:
            raise TypeError(f"{op}: unsupported index {describe(k)}; use ints, slices, None, "
                            "..., or integer/bool tensors")
    return tuple(out), advanced


def _check_bounds(x, key, op):
    """Give a clear error for out-of-range integer indices (NumPy's message is terse)."""
    if Ellipsis in key:
        return
    dim = 0
    for k in key:
        if k is None:
            continue
        if dim >= x.ndim:
            raise IndexError(f"{op}: too many indices ({len(key)}) for a tensor of shape "
                             f"{x.shape}")
        if isinstance(k, int):
            n = x.shape[dim]
            if not -n <= k < n:
                raise IndexError(f"{op}: index {k} is out of range for axis {dim} with size {n}")
        dim += 1


def getitem(x, key) -> Tensor:
    """``x[key]``: ints, slices (any step), None, ..., integer and bool index tensors.

    The gradient scatters back into the indexed positions (repeated indices accumulate).

    Example:
        >>> import scitensor as st
        >>> x = st.arange(12).reshape(3, 4)
        >>> x[1:, ::2].tolist(), x[st.tensor([0, 2]), -1].tolist()
        ([[4, 6], [8, 10]], [3, 11])
    """
    x = check_tensor(x, "getitem")
    k, advanced = _convert_key(x, key, "getitem")
    if not advanced:
        _check_bounds(x, k, "getitem")
    try:
        data = x.backend.getitem(x.data, k)
    except IndexError as e:
        raise IndexError(f"getitem: {e} (indexing a tensor of shape {x.shape})") from None
    if GRAD_ENABLED[0] and x.requires_grad:
        shape, dtype = x.shape, x.dtype
        out = make_result(data, x.device, (x,),
                          lambda g, out: (_scatter_into(g, shape, dtype, k, key, advanced),))
    else:
        out = wrap(data, x.device)
    sync_if_requested(x.device, "getitem")
    return out


def _scatter_into(g: Tensor, shape, dtype, k, key, advanced) -> Tensor:
    """A zero tensor of ``shape`` with ``g`` added at ``k`` (the converted ``key``);
    differentiable in ``g`` (its pullback indexes with the user's ``key`` again)."""
    be = g.backend
    data = be.zeros(shape, dtype)
    gd = g.data if g.data.dtype == dtype.np else be.astype(g.data, dtype)
    if advanced:
        if DETERMINISTIC[0]:
            check_deterministic(be, "add_at", "getitem (backward of integer-array indexing)")
        be.add_at(data, k, gd)
    else:
        be.setitem(data, k, gd)
    if GRAD_ENABLED[0] and g.requires_grad:
        return make_result(data, g.device, (g,), lambda gg, out: (getitem(gg, key),))
    return wrap(data, g.device)


def setitem(x, key, value) -> None:
    """``x[key] = value`` in place, for tensors that need no gradient.

    Raises:
        RuntimeError: if ``x`` requires grad while recording (use ``st.where``, or do it under
            ``st.no_grad()`` to initialise a parameter).
    """
    x = check_tensor(x, "setitem")
    if GRAD_ENABLED[0] and x.requires_grad:
        raise RuntimeError(
            "setitem: cannot assign into a tensor that requires grad while gradients are "
            "recorded (it would corrupt the graph). Build a new tensor with st.where / "
            "scatter_add, or assign under `with st.no_grad():`")
    k, advanced = _convert_key(x, key, "setitem")
    if not advanced:
        _check_bounds(x, k, "setitem")
    if isinstance(value, Tensor):
        if value.device is not x.device:
            raise ValueError(f"setitem: value is on {value.device} but the tensor is on "
                             f"{x.device}")
        v = value.data
    elif isinstance(value, numbers.Number | np.bool_):
        v = value
    else:
        try:
            v = x.backend.asarray(np.asarray(value), x.dtype)
        except (TypeError, ValueError) as e:
            raise TypeError(f"setitem: cannot assign {describe(value)} to a {x.dtype.name} "
                            f"tensor ({e})") from None
    if not getattr(getattr(x.data, "flags", None), "writeable", True):  # CuPy: no such flag
        raise ValueError(f"setitem: this tensor of shape {x.shape} is a read-only view (from "
                         "broadcast_to/expand, or a read-only NumPy array); assign into a copy "
                         "made with .to(copy=True)")
    try:
        x.backend.setitem(x.data, k, v)
    except ValueError as e:
        raise ValueError(f"setitem: cannot assign a value of shape "
                         f"{getattr(v, 'shape', ())} to x[{key!r:.60}] of a tensor with "
                         f"shape {x.shape}: {e}") from None
    except IndexError as e:
        raise IndexError(f"setitem: {e} (indexing a tensor of shape {x.shape})") from None
    sync_if_requested(x.device)


def _label_out_of_range(labels: Tensor, n: int):
    """A label outside ``[0, n)``, or None. Checked on the CPU and, in sync mode, on a GPU
    (elsewhere the check would make the host wait): NumPy would wrap a negative label around
    silently, and a GPU would leave its row empty."""
    if labels.data.size == 0 or not checks_values(labels.device):
        return None
    lo, hi = host_min_max(labels.data, labels.device)
    return hi if hi >= n else lo if lo < 0 else None


def _index_out_of_range(index: Tensor, n: int, op: str, axis: int, x: Tensor) -> None:
    """On a GPU in sync mode, raise for an index outside ``[-n, n)`` (CuPy would wrap it
    around); NumPy raises on the CPU by itself."""
    if index.device.type == "cpu" or index.data.size == 0 or not checks_values(index.device):
        return
    lo, hi = host_min_max(index.data, index.device)
    if lo < -n or hi >= n:
        raise IndexError(f"{op}: index {hi if hi >= n else lo} is out of bounds for axis {axis} "
                         f"with size {n} (x of shape {x.shape})")


def _gather_scatter(op: str, fn, *args):
    """Run a backend gather/scatter, naming the op in an out-of-range error (NumPy's message
    names the index, axis and size; nothing is checked up front, so success costs nothing)."""
    try:
        return fn(*args)
    except IndexError as e:
        raise IndexError(f"{op}: {e}") from None


def _index_tensor(index, x, op):
    if not isinstance(index, Tensor):
        index = wrap(x.backend.asarray(np.asarray(index), dt.int64), x.device)
    if index.dtype.kind != "i":
        raise TypeError(f"{op}: index must be an integer tensor, got {index.dtype}")
    if index.device is not x.device:
        raise ValueError(f"{op}: index is on {index.device} but the tensor is on {x.device}")
    return index


def take_along_axis(x, index, axis: int) -> Tensor:
    """Gather ``x`` values at ``index`` along ``axis`` (NumPy ``take_along_axis``).

    Example:
        >>> import scitensor as st
        >>> x = st.tensor([[1.0, 2.0], [3.0, 4.0]])
        >>> st.take_along_axis(x, st.tensor([[1], [0]]), axis=1).tolist()
        [[2.0], [3.0]]
    """
    x = check_tensor(x, "take_along_axis")
    ax = norm_axis(axis, x.ndim, "take_along_axis")
    index = _index_tensor(index, x, "take_along_axis")
    if index.ndim != x.ndim:
        raise ValueError(f"take_along_axis: index has {index.ndim} dims but x has {x.ndim}")
    _index_out_of_range(index, x.shape[ax], "take_along_axis", ax, x)
    data = _gather_scatter("take_along_axis", x.backend.take_along_axis, x.data, index.data, ax)
    if GRAD_ENABLED[0] and x.requires_grad:
        shape, dtype = x.shape, x.dtype

        def pullback(g, out):
            from ..creation import zeros

            return (scatter_add(zeros(shape, dtype=dtype, device=g.device), ax, index, g),)

        out = make_result(data, x.device, (x,), pullback)
    else:
        out = wrap(data, x.device)
    sync_if_requested(x.device)
    return out


def scatter_add(x, axis: int, index, src) -> Tensor:
    """``out = x.copy(); out[..., index[i,j,...], ...] += src[i,j,...]`` along ``axis``
    (PyTorch ``scatter_add``; ``index`` has ``src``'s shape). Differentiable in ``x`` and ``src``.

    Example:
        >>> import scitensor as st
        >>> st.scatter_add(st.zeros(3), 0, st.tensor([0, 0, 2]), st.ones(3)).tolist()
        [2.0, 0.0, 1.0]
    """
    x = check_tensor(x, "scatter_add")
    src = check_tensor(src, "scatter_add", "src")
    ax = norm_axis(axis, x.ndim, "scatter_add")
    index = _index_tensor(index, x, "scatter_add")
    if index.shape != src.shape or index.ndim != x.ndim or any(
            index.shape[i] > x.shape[i] for i in range(x.ndim) if i != ax):
        raise ValueError(f"scatter_add: index shape {index.shape} must equal src shape "
                         f"{src.shape}, with x's number of dims and no larger than x "
                         f"{x.shape} outside axis {ax}")
    if src.device is not x.device:
        raise ValueError(f"scatter_add: src is on {src.device} but x is on {x.device}")
    _index_out_of_range(index, x.shape[ax], "scatter_add", ax, x)
    if DETERMINISTIC[0] and x.dtype.is_floating:
        check_deterministic(x.backend, "scatter_add", "scatter_add")
    s = src.data if src.dtype is x.dtype else x.backend.astype(src.data, x.dtype)
    data = _gather_scatter("scatter_add", x.backend.scatter_add, x.data, ax, index.data, s)
    if GRAD_ENABLED[0] and (x.requires_grad or src.requires_grad):
        out = make_result(data, x.device, (x, src),
                          lambda g, out: (g, take_along_axis(g, index, ax)))
    else:
        out = wrap(data, x.device)
    sync_if_requested(x.device)
    return out


def index_add(x, axis: int, index, src) -> Tensor:
    """``out = x.copy(); out.index(axis, index[i]) += src.index(axis, i)`` (PyTorch
    ``index_add``); repeated indices accumulate. Differentiable in ``x`` and ``src``.

    Example:
        >>> import scitensor as st
        >>> st.index_add(st.zeros(2, 2), 0, st.tensor([1, 1]), st.ones(2, 2)).tolist()
        [[0.0, 0.0], [2.0, 2.0]]
    """
    x = check_tensor(x, "index_add")
    src = check_tensor(src, "index_add", "src")
    ax = norm_axis(axis, x.ndim, "index_add")
    index = _index_tensor(index, x, "index_add")
    if index.ndim != 1 or src.ndim != x.ndim or src.shape[ax] != index.shape[0] or any(
            src.shape[i] != x.shape[i] for i in range(x.ndim) if i != ax):
        raise ValueError(f"index_add: x {x.shape}, index {index.shape}, src {src.shape} do not "
                         f"fit along axis {ax} (src must be x's shape with axis {ax} of size "
                         "len(index))")
    if src.device is not x.device:
        raise ValueError(f"index_add: src is on {src.device} but x is on {x.device}")
    _index_out_of_range(index, x.shape[ax], "index_add", ax, x)
    if DETERMINISTIC[0] and x.dtype.is_floating:
        check_deterministic(x.backend, "index_add", "index_add")
    s = src.data if src.dtype is x.dtype else x.backend.astype(src.data, x.dtype)
    data = _gather_scatter("index_add", x.backend.index_add, x.data, ax, index.data, s)
    if GRAD_ENABLED[0] and (x.requires_grad or src.requires_grad):
        key = (slice(None),) * ax + (index,)
        out = make_result(data, x.device, (x, src), lambda g, out: (g, g[key]))
    else:
        out = wrap(data, x.device)
    sync_if_requested(x.device)
    return out


def one_hot(labels, num_classes: int, dtype=None) -> Tensor:
    """One-hot encoding of integer ``labels`` (a new last axis of size ``num_classes``).

    Example:
        >>> import scitensor as st
        >>> st.one_hot(st.tensor([0, 2]), 3).tolist()
        [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    """
    labels = check_tensor(labels, "one_hot", "labels")
    if labels.dtype.kind != "i":
        raise TypeError(f"one_hot: labels must be integers, got {labels.dtype}")
    if not isinstance(num_classes, numbers.Integral) or num_classes < 1:
        raise ValueError(f"one_hot: num_classes must be a positive int, got {num_classes!r}")
    d = dt.get_default_dtype() if dtype is None else dt.as_dtype(dtype)
    bad = _label_out_of_range(labels, int(num_classes))
    if bad is not None:
        raise IndexError(f"one_hot: label {bad} is out of range for num_classes={num_classes} "
                         f"(labels must be in [0, {num_classes}))")
    out = wrap(labels.backend.one_hot(labels.data, int(num_classes), d), labels.device)
    sync_if_requested(labels.device)
    return out
