"""Shape ops: reshape, transpose/permute/swapaxes, expand/broadcast_to, squeeze/unsqueeze,
flatten, concatenate, stack, split, pad, flip.

Views where the backend allows them (reshape of contiguous data, transpose, broadcast_to);
every op is differentiable.
"""

from __future__ import annotations

import math
import numbers

from ..runtime import SYNC_EVERY_OP
from ._core import (
    GRAD_ENABLED,
    Tensor,
    check_tensor,
    describe,
    make_result,
    norm_axes,
    norm_axis,
    sync_if_requested,
    wrap,
)

__all__ = ["broadcast_to", "concatenate", "expand", "flatten", "flip", "pad", "permute",
           "reshape", "split", "squeeze", "stack", "swapaxes", "transpose", "unsqueeze"]


def _finish(data, x, pullback):
    if GRAD_ENABLED[0] and x.requires_grad:
        out = make_result(data, x.device, (x,), pullback)
    else:
        out = wrap(data, x.device)
    if SYNC_EVERY_OP[0]:  # checked here first: most shape ops are views (host cost only)
        sync_if_requested(x.device)
    return out


def _shape_arg(shape):
    if len(shape) == 1 and isinstance(shape[0], tuple | list):
        return tuple(shape[0])
    return tuple(shape)


def reshape(x, *shape) -> Tensor:
    """A tensor with the same elements in a new shape (one entry may be -1).

    Example:
        >>> import scitensor as st
        >>> st.arange(6).reshape(2, -1).shape
        (2, 3)
    """
    x = check_tensor(x, "reshape")
    shape = _shape_arg(shape)
    known = 1  # the product of the entries other than -1
    for n in shape:
        if type(n) is not int and (not isinstance(n, numbers.Integral) or isinstance(n, bool)):
            raise ValueError(f"reshape: invalid shape {shape}; entries must be ints >= 0 or -1")
        if n < -1:
            raise ValueError(f"reshape: invalid shape {shape}; entries must be ints >= 0 or -1")
        if n != -1:
            known *= n
    size = x.data.size
    if -1 in shape:
        bad = shape.count(-1) > 1 or known == 0 or size % known
    else:
        bad = known != size
    if bad:
        raise ValueError(f"reshape: cannot reshape a tensor of shape {x.shape} "
                         f"({x.size} elements) into {shape}")
    in_shape = x.data.shape
    return _finish(x.device.backend.reshape(x.data, shape), x,
                   lambda g, out: (reshape(g, in_shape),))


def flatten(x, start_axis: int = 0, end_axis: int = -1) -> Tensor:
    """Merge axes ``start_axis..end_axis`` (inclusive) into one.

    Example:
        >>> import scitensor as st
        >>> st.zeros(2, 3, 4).flatten(1).shape
        (2, 12)
    """
    x = check_tensor(x, "flatten")
    if x.ndim == 0:
        return reshape(x, 1)
    s = norm_axis(start_axis, x.ndim, "flatten")
    e = norm_axis(end_axis, x.ndim, "flatten")
    if s > e:
        raise ValueError(f"flatten: start_axis {start_axis} comes after end_axis {end_axis}")
    shp = x.shape
    return reshape(x, shp[:s] + (math.prod(shp[s:e + 1]),) + shp[e + 1:])


def transpose(x, *axes) -> Tensor:
    """Permute axes (reverse them when none are given).

    Example:
        >>> import scitensor as st
        >>> st.zeros(2, 3, 4).transpose(2, 0, 1).shape
        (4, 2, 3)
    """
    x = check_tensor(x, "transpose")
    axes = _shape_arg(axes)
    if not axes:
        perm = tuple(range(x.ndim))[::-1]
    else:
        perm = tuple(norm_axis(a, x.ndim, "transpose") for a in axes)
        if sorted(perm) != list(range(x.ndim)):
            raise ValueError(f"transpose: {axes} is not a permutation of the {x.ndim} axes of "
                             f"shape {x.shape}")
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    inv = tuple(inv)
    return _finish(x.backend.transpose(x.data, perm), x, lambda g, out: (transpose(g, inv),))


permute = transpose


def swapaxes(x, axis1: int, axis2: int) -> Tensor:
    """Exchange two axes."""
    x = check_tensor(x, "swapaxes")
    if x.ndim == 0:
        raise IndexError("swapaxes: a 0-d tensor has no axes to swap")
    a = norm_axis(axis1, x.ndim, "swapaxes")
    b = norm_axis(axis2, x.ndim, "swapaxes")
    perm = list(range(x.ndim))
    perm[a], perm[b] = perm[b], perm[a]
    return transpose(x, perm)


def broadcast_to(x, *shape) -> Tensor:
    """Broadcast to ``shape`` (NumPy rules); the gradient sums over broadcast axes.

    Example:
        >>> import scitensor as st
        >>> st.ones(3).broadcast_to(2, 3).shape
        (2, 3)
    """
    x = check_tensor(x, "broadcast_to")
    shape = _shape_arg(shape)
    if shape == x.shape:
        return x
    lead = len(shape) - x.ndim
    ok = lead >= 0 and all(n == m or n == 1 for n, m in zip(x.shape, shape[lead:]))
    if not ok:
        raise ValueError(f"broadcast_to: cannot broadcast shape {x.shape} to {shape}")
    return _finish(x.backend.broadcast_to(x.data, shape), x, lambda g, out: (g,))


def expand(x, *shape) -> Tensor:
    """Like :func:`broadcast_to`, with -1 meaning "keep this size" (PyTorch style)."""
    x = check_tensor(x, "expand")
    shape = list(_shape_arg(shape))
    lead = len(shape) - x.ndim
    for i, n in enumerate(shape):
        if n == -1:
            if i < lead:
                raise ValueError(f"expand: -1 is not allowed for new leading axis {i}")
            shape[i] = x.shape[i - lead]
    return broadcast_to(x, tuple(shape))


def squeeze(x, axis=None) -> Tensor:
    """Remove size-1 axes (all of them, or the given ones, which must have size 1)."""
    x = check_tensor(x, "squeeze")
    if axis is None:
        axes = tuple(i for i, n in enumerate(x.shape) if n == 1)
    else:
        axes = norm_axes(axis, x.ndim, "squeeze")
        for a in axes:
            if x.shape[a] != 1:
                raise ValueError(f"squeeze: axis {a} of shape {x.shape} has size {x.shape[a]}, "
                                 "not 1")
    return reshape(x, tuple(n for i, n in enumerate(x.shape) if i not in axes))


def unsqueeze(x, axis: int) -> Tensor:
    """Insert a size-1 axis at position ``axis`` (``-1`` appends)."""
    x = check_tensor(x, "unsqueeze")
    a = norm_axis(axis, x.ndim + 1, "unsqueeze")
    return reshape(x, x.shape[:a] + (1,) + x.shape[a:])


def _tensors(tensors, op):
    if isinstance(tensors, Tensor) or not isinstance(tensors, list | tuple):
        raise TypeError(f"{op}: expected a list or tuple of tensors, got "
                        f"{type(tensors).__name__}")
    if not tensors:
        raise ValueError(f"{op}: needs at least one tensor")
    for t in tensors:
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: every element must be a Tensor, got {describe(t)}")
        if t.device is not tensors[0].device:
            raise ValueError(f"{op}: tensors on different devices ({tensors[0].device} and "
                             f"{t.device}); move them to one device first")
    from .. import dtypes as dt

    d = tensors[0].dtype
    for t in tensors[1:]:
        d = dt._promote(d, t.dtype)
    return [t if t.dtype is d else t.astype(d) for t in tensors]


def _many_result(data, tensors, pullback):
    dev = tensors[0].device
    if GRAD_ENABLED[0] and any(t.requires_grad for t in tensors):
        out = make_result(data, dev, tuple(tensors), pullback)
    else:
        out = wrap(data, dev)
    if SYNC_EVERY_OP[0]:
        sync_if_requested(dev)
    return out


def concatenate(tensors, axis: int = 0) -> Tensor:
    """Join tensors along an existing axis (shapes must match elsewhere).

    Example:
        >>> import scitensor as st
        >>> st.concatenate([st.zeros(2, 3), st.ones(1, 3)]).shape
        (3, 3)
    """
    tensors = _tensors(tensors, "concatenate")
    nd = tensors[0].ndim
    if nd == 0:
        raise ValueError("concatenate: zero-dimensional tensors cannot be concatenated; use "
                         "stack")
    ax = norm_axis(axis, nd, "concatenate")
    for t in tensors:
        if t.ndim != nd or any(t.shape[i] != tensors[0].shape[i] for i in range(nd) if i != ax):
            raise ValueError(f"concatenate: shapes {[t.shape for t in tensors]} differ outside "
                             f"axis {ax}")
    sizes = [t.shape[ax] for t in tensors]
    data = tensors[0].backend.concatenate([t.data for t in tensors], ax)

    def pullback(g, out):
        bounds = [0]
        for s in sizes:
            bounds.append(bounds[-1] + s)
        return tuple(g[(slice(None),) * ax + (slice(bounds[i], bounds[i + 1]),)]
                     for i in range(len(sizes)))

    return _many_result(data, tensors, pullback)


def stack(tensors, axis: int = 0) -> Tensor:
    """Join same-shape tensors along a new axis.

    Example:
        >>> import scitensor as st
        >>> st.stack([st.zeros(3), st.ones(3)], axis=1).shape
        (3, 2)
    """
    tensors = _tensors(tensors, "stack")
    shape = tensors[0].shape
    for t in tensors:
        if t.shape != shape:
            raise ValueError(f"stack: all tensors must have the same shape, got "
                             f"{[t.shape for t in tensors]}")
    ax = norm_axis(axis, len(shape) + 1, "stack")
    data = tensors[0].backend.stack([t.data for t in tensors], ax)

    def pullback(g, out):
        return tuple(g[(slice(None),) * ax + (i,)] for i in range(len(tensors)))

    return _many_result(data, tensors, pullback)


def split(x, indices_or_sections, axis: int = 0) -> list[Tensor]:
    """Split into equal sections (an int) or at the given indices (a list), NumPy style.

    Example:
        >>> import scitensor as st
        >>> [t.shape for t in st.split(st.arange(5), [2])]
        [(2,), (3,)]
    """
    x = check_tensor(x, "split")
    if x.ndim == 0:
        raise ValueError("split: a 0-d tensor cannot be split")
    ax = norm_axis(axis, x.ndim, "split")
    n = x.shape[ax]
    if isinstance(indices_or_sections, numbers.Integral):
        k = int(indices_or_sections)
        if k <= 0 or n % k:
            raise ValueError(f"split: axis {ax} of size {n} cannot be split into {k} equal "
                             "sections; give split indices instead")
        bounds = [i * (n // k) for i in range(k + 1)]
    else:
        if hasattr(indices_or_sections, "tolist"):  # a NumPy array of indices
            indices_or_sections = indices_or_sections.tolist()
        if not isinstance(indices_or_sections, list | tuple) or not all(
                isinstance(i, numbers.Integral) and not isinstance(i, bool)
                for i in indices_or_sections):
            raise TypeError(f"split: indices_or_sections must be an int or a list of ints, got "
                            f"{indices_or_sections!r:.60}")
        idx = [int(i) for i in indices_or_sections]
        # NumPy semantics: negative indices count from the end, then clamp to [0, n]
        bounds = [0] + [min(max(i + n if i < 0 else i, 0), n) for i in idx] + [n]
    pre = (slice(None),) * ax
    return [x[pre + (slice(bounds[i], max(bounds[i], bounds[i + 1])),)]
            for i in range(len(bounds) - 1)]


def pad(x, pad_width, value=0) -> Tensor:
    """Constant padding; ``pad_width`` is NumPy style: ``((before, after), ...)`` per axis, or
    one pair / one int for every axis.

    Example:
        >>> import scitensor as st
        >>> st.pad(st.ones(2), (1, 2)).tolist()
        [0.0, 1.0, 1.0, 0.0, 0.0]
    """
    x = check_tensor(x, "pad")
    if isinstance(pad_width, numbers.Integral):
        if pad_width < 0:
            raise ValueError(f"pad: pad_width {pad_width} is negative (tensor of shape "
                             f"{x.shape}); widths are non-negative")
        pw = ((int(pad_width), int(pad_width)),) * x.ndim
    else:
        pw = tuple(pad_width)
        if len(pw) == 2 and all(isinstance(p, numbers.Integral) for p in pw):
            pw = (tuple(pw),) * x.ndim
        elif len(pw) == 1 and x.ndim != 1:  # one pair for every axis, as in NumPy
            pw = tuple(pw) * x.ndim
        try:
            pw = tuple((int(a), int(b)) for a, b in pw)
        except (TypeError, ValueError):
            raise ValueError(f"pad: pad_width {pad_width!r:.60} is not an int, a (before, after) "
                             "pair, or one pair per axis") from None
    if len(pw) != x.ndim or any(a < 0 or b < 0 for a, b in pw):
        raise ValueError(f"pad: pad_width {pad_width} does not fit a tensor of shape {x.shape} "
                         "(one non-negative (before, after) pair per axis)")
    # nothing to pad (e.g. a 0-d tensor): NumPy's pad rejects an empty pad_width
    data = (x.backend.pad(x.data, pw, value) if any(a or b for a, b in pw)
            else x.backend.copy(x.data))
    key = tuple(slice(a, a + n) for (a, _), n in zip(pw, x.shape))
    return _finish(data, x, lambda g, out: (g[key],))


def flip(x, axis=None) -> Tensor:
    """Reverse the order of elements along ``axis`` (all axes by default)."""
    x = check_tensor(x, "flip")
    axes = norm_axes(axis, x.ndim, "flip")
    return _finish(x.backend.flip(x.data, axes), x, lambda g, out: (flip(g, axes),))
