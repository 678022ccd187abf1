"""``custom_vjp``: register your own forward (any kernel) with a hand-written pullback."""

from __future__ import annotations

import functools

from ..tensor import Tensor, make_result
from .mode import GRAD_ENABLED, no_grad

__all__ = ["custom_vjp"]


class custom_vjp:
    """Decorator: a function whose gradient is given by the user (JAX-style).

    Define the plain function, then attach ``fwd(*args) -> (out, residuals)`` and
    ``bwd(residuals, g) -> tuple of cotangents`` (one per positional argument, ``None`` for
    non-differentiable ones) with :meth:`defvjp`. ``fwd`` runs without recording; ``bwd`` is
    written with scitensor ops, so it is itself differentiable. ``out`` may be a tensor or a
    tuple (or list) of tensors; ``bwd`` then receives a tuple (list) of cotangents with zeros
    for the outputs not being differentiated, once per output that receives a gradient.
    Keyword arguments are passed to ``fun`` and ``fwd`` and get no cotangent.

    Example:
        >>> import scitensor as st
        >>> @st.custom_vjp
        ... def square(x):
        ...     return x * x
        >>> square.defvjp(lambda x: (x * x, x), lambda x, g: (2 * x * g,))  # doctest: +ELLIPSIS
        <...custom_vjp...>
        >>> st.grad(lambda x: square(x).sum())(st.tensor([3.0])).tolist()
        [6.0]
    """

    def __init__(self, fun):
        self.fun = fun
        self.fwd = None
        self.bwd = None
        functools.update_wrapper(self, fun)

    def defvjp(self, fwd, bwd):
        """Attach the forward (returning residuals) and backward rules; returns ``self``."""
        self.fwd, self.bwd = fwd, bwd
        return self

    def __call__(self, *args, **kwargs):
        name = getattr(self.fun, "__name__", "custom_vjp")
        if self.fwd is None:
            raise RuntimeError(f"custom_vjp {name}: call .defvjp(fwd, bwd) before using it")
        needs = GRAD_ENABLED[0] and any(isinstance(a, Tensor) and a.requires_grad for a in args)
        if not needs:
            return self.fun(*args, **kwargs)
        with no_grad():
            res = self.fwd(*args, **kwargs)
        if not (isinstance(res, tuple) and len(res) == 2):
            raise TypeError(f"custom_vjp {name}: fwd must return a pair (output, residuals), "
                            f"got {type(res).__name__}")
        out, residuals = res
        parents = tuple(a if isinstance(a, Tensor) else None for a in args)
        bwd = self.bwd
        n_args = len(args)

        def call_bwd(g):
            cts = bwd(residuals, g)
            if not isinstance(cts, tuple | list) or len(cts) != n_args:
                raise TypeError(f"custom_vjp {name}: bwd must return a tuple with one cotangent "
                                f"per positional argument ({n_args}), got {cts!r:.80}")
            for i, c in enumerate(cts):
                if c is not None and not isinstance(c, Tensor):
                    raise TypeError(f"custom_vjp {name}: bwd returned a "
                                    f"{type(c).__name__} for argument {i}; cotangents must be "
                                    "tensors (or None)")
            return tuple(cts)

        if isinstance(out, Tensor):
            def pullback(g, o):
                return call_bwd(g)

            pullback.__qualname__ = f"custom_vjp({name}).bwd"
            return make_result(out.data, out.device, parents, pullback)
        if isinstance(out, tuple | list) and out and all(isinstance(o, Tensor) for o in out):
            from ..creation import zeros_like

            kind = type(out)

            def pullback_for(k):
                def pb(g, o):
                    gs = kind(g if j == k else zeros_like(out[j]) for j in range(len(out)))
                    return call_bwd(gs)

                pb.__qualname__ = f"custom_vjp({name}).bwd"
                return pb

            return kind(make_result(o.data, o.device, parents, pullback_for(k))
                        for k, o in enumerate(out))
        raise TypeError(f"custom_vjp {name}: fwd must return (tensor or tuple/list of tensors, "
                        "residuals)")
