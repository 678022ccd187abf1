"""Function transforms: ``grad``, ``value_and_grad``, ``vjp`` (JAX-style, over pytrees).

Arguments may be tensors or nested tuples/lists/dicts of tensors; gradients come back in the
same structure. Transforms nest: ``grad(grad(f))`` differentiates the first gradient, because
an inner transform records its backward pass whenever an outer one is tracing its inputs.
"""

from __future__ import annotations

import functools

from ..tensor import Tensor, make_result, wrap
from .engine import gradients
from .mode import GRAD_ENABLED

__all__ = ["grad", "tree_flatten", "tree_unflatten", "value_and_grad", "vjp"]


# ---- pytrees -------------------------------------------------------------------------------
def tree_flatten(tree):
    """Flatten nested tuples/lists/dicts into ``(leaves, spec)``; anything else is a leaf."""
    leaves = []

    def go(x):
        if isinstance(x, tuple | list):
            return (type(x), [go(v) for v in x])
        if isinstance(x, dict):
            keys = list(x.keys())
            return (dict, keys, [go(x[k]) for k in keys])
        leaves.append(x)
        return None

    spec = go(tree)
    return leaves, spec


def tree_unflatten(spec, leaves):
    """Inverse of :func:`tree_flatten`."""
    it = iter(leaves)

    def go(s):
        if s is None:
            return next(it)
        if s[0] is dict:
            return {k: go(c) for k, c in zip(s[1], s[2])}
        children = [go(c) for c in s[1]]
        if hasattr(s[0], "_fields"):  # a namedtuple takes its fields as arguments
            return s[0](*children)
        return s[0](children)

    try:
        tree = go(spec)
    except StopIteration:  # must not escape: it would silently end an enclosing generator
        raise ValueError("tree_unflatten: fewer leaves than the spec has places for") from None
    except (TypeError, IndexError):
        raise TypeError(f"tree_unflatten: {spec!r:.60} is not a spec made by tree_flatten"
                        ) from None
    if next(it, _END) is not _END:
        raise ValueError("tree_unflatten: more leaves than the spec has places for")
    return tree


_END = object()


def _alias(x: Tensor) -> Tensor:
    """A fresh differentiation target standing for ``x``.

    When ``x`` is itself being traced by an outer transform, the alias stays connected to it
    (identity op) so the outer transform can differentiate through this one.
    """
    if x.requires_grad and GRAD_ENABLED[0]:
        return make_result(x.data, x.device, (x,), lambda g, out: (g,))
    t = wrap(x.data, x.device)
    t.requires_grad = True
    return t


def _prepare(args, argnums, fname):
    args = list(args)
    targets, specs = [], []
    seen = set()
    for i in argnums:
        if not isinstance(i, int) or i >= len(args) or i < -len(args):
            raise ValueError(f"{fname}: argnums={i!r} but the function got {len(args)} "
                             "positional arguments")
        if i % len(args) in seen:
            raise ValueError(f"{fname}: argnums {tuple(argnums)} name argument "
                             f"{i % len(args)} twice")
        seen.add(i % len(args))
        leaves, spec = tree_flatten(args[i])
        new = []
        for leaf in leaves:
            if not isinstance(leaf, Tensor):
                raise TypeError(f"{fname}: argument {i} contains a {type(leaf).__name__}; only "
                                "tensors (or nested tuples/lists/dicts of them) can be "
                                "differentiated. Pass it through another argument")
            if not leaf.dtype.is_floating:
                raise TypeError(f"{fname}: argument {i} has dtype {leaf.dtype}; only floating "
                                "tensors can be differentiated")
            new.append(_alias(leaf))
        targets.append(new)
        specs.append(spec)
        args[i] = tree_unflatten(spec, new)
    return args, targets, specs


def _detach_tree(tree):
    """``tree`` with its tensors cut from the graph (aux outputs are values, not graphs)."""
    leaves, spec = tree_flatten(tree)
    if not any(isinstance(leaf, Tensor) for leaf in leaves):
        return tree
    return tree_unflatten(spec, [leaf.detach() if isinstance(leaf, Tensor) else leaf
                                 for leaf in leaves])


def _zeros_for(targets, grads):
    from ..creation import zeros_like

    return [g if g is not None else zeros_like(t) for t, g in zip(targets, grads)]


def _check_callable(fun, name: str) -> None:
    if not callable(fun):
        raise TypeError(f"{name}: expected a function, got {type(fun).__name__} {fun!r:.40}")


def _normalize_argnums(argnums, name: str = "grad"):
    try:
        nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    except TypeError:
        nums = None
    if not nums or any(not isinstance(i, int) or isinstance(i, bool) for i in nums):
        raise TypeError(f"{name}: argnums must be an int or a non-empty tuple of ints, got "
                        f"{argnums!r}")
    return nums


def value_and_grad(fun, argnums=0, has_aux: bool = False):
    """Transform ``fun`` into one returning ``(value, gradient)``.

    ``fun`` must return a one-element floating tensor (or ``(value, aux)`` with
    ``has_aux=True``). The gradient has the structure of argument ``argnums`` (a tuple of them
    when ``argnums`` is a tuple).

    Example:
        >>> import scitensor as st
        >>> v, g = st.value_and_grad(lambda x: (x * x).sum())(st.tensor([1.0, 2.0]))
        >>> v.item(), g.tolist()
        (5.0, [2.0, 4.0])
    """
    _check_callable(fun, "value_and_grad")
    nums = _normalize_argnums(argnums, "value_and_grad")

    @functools.wraps(fun)
    def wrapped(*args, **kwargs):
        outer = GRAD_ENABLED[0] and any(
            isinstance(leaf, Tensor) and leaf.requires_grad
            for i in nums if -len(args) <= i < len(args) for leaf in tree_flatten(args[i])[0])
        new_args, targets, specs = _prepare(args, nums, "grad")
        prev = GRAD_ENABLED[0]
        GRAD_ENABLED[0] = True
        try:
            out = fun(*new_args, **kwargs)
        finally:
            GRAD_ENABLED[0] = prev
        aux = None
        if has_aux:
            if not (isinstance(out, tuple) and len(out) == 2):
                raise TypeError("grad(has_aux=True): the function must return (value, aux)")
            out, aux = out
        if not isinstance(out, Tensor) or out.size != 1 or not out.dtype.is_floating:
            desc = (f"a tensor of shape {out.shape} and dtype {out.dtype}"
                    if isinstance(out, Tensor) else type(out).__name__)
            raise TypeError(f"grad: the function must return a one-element floating tensor, "
                            f"got {desc}; use vjp for non-scalar outputs")
        flat_targets = [t for group in targets for t in group]
        if out.requires_grad:
            flat = gradients([out], flat_targets, create_graph=outer)
        else:
            flat = [None] * len(flat_targets)
        flat = _zeros_for(flat_targets, flat)
        grads, pos = [], 0
        for group, spec in zip(targets, specs):
            grads.append(tree_unflatten(spec, flat[pos:pos + len(group)]))
            pos += len(group)
        g = grads[0] if isinstance(argnums, int) else tuple(grads)
        if outer:
            return ((out, aux), g) if has_aux else (out, g)
        value = out.detach()
        return ((value, _detach_tree(aux)), g) if has_aux else (value, g)

    return wrapped


def grad(fun, argnums=0, has_aux: bool = False):
    """Transform ``fun`` into its gradient function (see :func:`value_and_grad`).

    Example:
        >>> import scitensor as st
        >>> st.grad(lambda x: (x ** 3).sum())(st.tensor([2.0])).tolist()
        [12.0]
        >>> st.grad(st.grad(lambda x: (x ** 3).sum()))(st.tensor(2.0)).item()  # 6x
        12.0
    """
    _check_callable(fun, "grad")
    vg = value_and_grad(fun, argnums=argnums, has_aux=has_aux)

    @functools.wraps(fun)
    def wrapped(*args, **kwargs):
        (value_aux, g) = vg(*args, **kwargs)
        if has_aux:
            return g, value_aux[1]
        return g

    return wrapped


def vjp(fun, *primals, has_aux: bool = False):
    """Evaluate ``fun(*primals)`` and return ``(out, pullback)``.

    ``pullback(cotangent)`` takes a cotangent with the structure of ``out`` and returns a tuple
    with one cotangent per primal (same structures). It may be called several times.

    Example:
        >>> import scitensor as st
        >>> out, pullback = st.vjp(st.exp, st.zeros(2))
        >>> pullback(st.ones(2))[0].tolist()
        [1.0, 1.0]
    """
    _check_callable(fun, "vjp")
    nums = tuple(range(len(primals)))
    outer = GRAD_ENABLED[0] and any(
        isinstance(leaf, Tensor) and leaf.requires_grad
        for p in primals for leaf in tree_flatten(p)[0])
    new_args, targets, specs = _prepare(primals, nums, "vjp")
    prev = GRAD_ENABLED[0]
    GRAD_ENABLED[0] = True
    try:
        out = fun(*new_args)
    finally:
        GRAD_ENABLED[0] = prev
    aux = None
    if has_aux:
        if not (isinstance(out, tuple) and len(out) == 2):
            raise TypeError("vjp(has_aux=True): the function must return (output, aux)")
        out, aux = out
    out_leaves, out_spec = tree_flatten(out)
    for leaf in out_leaves:
        if not isinstance(leaf, Tensor):
            raise TypeError(f"vjp: the function returned a {type(leaf).__name__}; outputs must "
                            "be tensors or nested tuples/lists/dicts of tensors")
    flat_targets = [t for group in targets for t in group]

    def pullback(cotangent):
        ct_leaves, ct_spec = tree_flatten(cotangent)
        if len(ct_leaves) != len(out_leaves):
            raise ValueError(f"vjp pullback: the cotangent has {len(ct_leaves)} tensors but the "
                             f"output has {len(out_leaves)}; give one per output tensor")
        for i, (o, c) in enumerate(zip(out_leaves, ct_leaves)):
            shape = getattr(c, "shape", None)
            if shape is not None and tuple(shape) != o.shape:
                raise ValueError(f"vjp pullback: cotangent shape {tuple(shape)} does not match "
                                 f"the output shape {o.shape} (output {i})")
        flat = gradients(out_leaves, flat_targets, ct_leaves, retain_graph=True,
                         create_graph=outer)
        flat = _zeros_for(flat_targets, flat)
        res, pos = [], 0
        for group, spec in zip(targets, specs):
            res.append(tree_unflatten(spec, flat[pos:pos + len(group)]))
            pos += len(group)
        return tuple(res)

    if not outer:
        out = tree_unflatten(out_spec, [leaf.detach() for leaf in out_leaves])
        aux = _detach_tree(aux)
    return (out, pullback, aux) if has_aux else (out, pullback)
