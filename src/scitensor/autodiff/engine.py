"""The reverse-mode engine: walk the recorded graph from outputs to inputs, calling pullbacks.

Every recorded tensor holds its parents and a pullback ``(g, out) -> cotangents``. The engine
visits tensors in reverse topological order, sums the cotangents reaching each one, reduces
broadcast cotangents back to the parent's shape and dtype, and either accumulates them into
``.grad`` of leaves (``backward``) or returns them for chosen inputs (``gradients``, used by
``grad``/``vjp``). Pullbacks are written with ops, so running the engine with graph recording
on (``create_graph=True``) yields differentiable gradients: gradients of gradients.
"""

from __future__ import annotations

from ..tensor import Tensor, _freed_pullback
from .mode import GRAD_ENABLED

__all__ = ["backward", "gradients", "sole_consumer"]

# One entry per backward pass in progress (innermost last): ``(consumers, want)`` where
# ``consumers`` counts, per tensor id, the pullbacks (and roots) that send it a cotangent;
# ``None`` while recording a differentiable backward (create_graph).
_RUNS: list = []


def sole_consumer(t: Tensor) -> bool:
    """Whether, in the backward pass now running, ``t``'s cotangent comes from exactly one
    place and goes nowhere but into ``t``'s own pullback.

    Then the one pullback that produces it may hand ``t``'s pullback a transformed cotangent
    that the two agree on (a fused linear layer passes the gradient *after* the producer's
    activation, computed in its own GEMM's epilogue: see :mod:`scitensor.ops.linear`). False
    outside a backward pass, while recording one (``create_graph=True``), for a tensor that
    keeps its ``.grad`` (``retain_grad``), for an input whose gradient is requested, and
    whenever more than one recorded op (or a root) feeds ``t``'s cotangent.
    """
    if not _RUNS:
        return False
    run_info = _RUNS[-1]
    if run_info is None:
        return False
    consumers, want = run_info
    k = id(t)
    return consumers.get(k) == 1 and k not in want and not t._retains_grad


def _topo_order(roots, stop_ids, consumers):
    """Tensors reachable from ``roots`` through recorded parents, outputs first.

    Counts into ``consumers`` how many expanded tensors (and roots) reference each tensor."""
    visited = set()
    post = []
    stack = [(r, False) for r in roots]
    for r in roots:
        consumers[id(r)] = consumers.get(id(r), 0) + 1
    while stack:
        t, expanded = stack.pop()
        if expanded:
            post.append(t)
            continue
        k = id(t)
        if k in visited:
            continue
        visited.add(k)
        stack.append((t, True))
        if k in stop_ids:
            continue
        for p in t._parents:
            if p is not None and p.requires_grad:
                pk = id(p)
                consumers[pk] = consumers.get(pk, 0) + 1
                if pk not in visited:
                    stack.append((p, False))
    post.reverse()
    return post


def _reduce_to(g: Tensor, p: Tensor, pullback) -> Tensor:
    """Fit a cotangent to ``p``: sum a broadcast one back to ``p``'s shape (or broadcast a
    smaller one up to it) and cast it to ``p``'s dtype."""
    from ..ops import reduction, shape, transfer

    if not isinstance(g, Tensor):
        raise TypeError(f"backward: the pullback {_name(pullback)} returned a "
                        f"{type(g).__name__} as a cotangent; pullbacks must return tensors")
    if g.shape != p.shape:
        g_shape = g.shape
        lead = g.ndim - p.ndim
        if lead >= 0:
            axes = tuple(range(lead)) + tuple(
                i + lead for i, n in enumerate(p.shape) if n == 1 and g.shape[i + lead] != 1)
            if axes:
                g = reduction.sum(g, axis=axes, keepdims=True)
            if lead:
                g = g.reshape(g.shape[lead:])
        if g.shape != p.shape:
            try:
                g = shape.broadcast_to(g, p.shape)
            except ValueError:
                raise ValueError(f"backward: the pullback {_name(pullback)} returned a cotangent "
                                 f"of shape {g_shape} for an input of shape {p.shape}") from None
    if g.data.dtype != p.data.dtype:
        g = transfer.to(g, dtype=p.dtype)
    return g


def _name(fn) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


def run(roots, cotangents, *, inputs=None, accumulate=True, retain_graph=False,
        create_graph=False):
    """Propagate ``cotangents`` from ``roots``. Returns cotangents for ``inputs`` (if given)."""
    want = {} if inputs is None else {id(x): i for i, x in enumerate(inputs)}
    results = [None] * (0 if inputs is None else len(inputs))
    consumers: dict[int, int] = {}
    order = _topo_order(roots, want, consumers)
    grads: dict[int, Tensor] = {}
    for r, g in zip(roots, cotangents):
        k = id(r)
        grads[k] = g if k not in grads else grads[k] + g
    # tensors handed out as a .grad or a result: pullbacks such as add's pass ``g`` through
    # unchanged, so one object could become the gradient of two tensors (or be the caller's
    # cotangent); such a second hand-out gets a copy, so in-place edits stay local
    handed_out = {id(g) for g in cotangents}
    prev = GRAD_ENABLED[0]
    GRAD_ENABLED[0] = create_graph
    _RUNS.append(None if create_graph else (consumers, want))
    try:
        for t in order:
            g = grads.pop(id(t), None)
            if g is None:
                continue
            i = want.get(id(t))
            if i is not None:
                results[i] = _own(g, handed_out)
                continue
            pullback = t._pullback
            if pullback is None or t._retains_grad:
                if accumulate:
                    t.grad = _own(g, handed_out) if t.grad is None else t.grad + g
                if pullback is None:
                    continue
            cts = pullback(g, t)
            for p, c in zip(t._parents, cts):
                if p is None or c is None or not p.requires_grad:
                    continue
                if type(c) is not Tensor or c.shape != p.shape or c.data.dtype != p.data.dtype:
                    c = _reduce_to(c, p, pullback)
                k = id(p)
                prev_g = grads.get(k)
                grads[k] = c if prev_g is None else prev_g + c
            if not retain_graph:
                t._pullback = _freed_pullback
                t._parents = ()
    finally:
        GRAD_ENABLED[0] = prev
        _RUNS.pop()
    return results


def _own(g: Tensor, handed_out: set) -> Tensor:
    """``g``, or a (differentiable) copy if that object was already handed out or is a
    read-only view (the broadcast cotangent of a sum, say): gradients are writable arrays."""
    # CuPy arrays have flags but no ``writeable`` (they are always writable)
    if id(g) in handed_out or not getattr(getattr(g.data, "flags", None), "writeable", True):
        from ..ops import transfer

        g = transfer.to(g, copy=True)
    handed_out.add(id(g))
    return g


def _as_cotangent(out: Tensor, cotangent, op: str) -> Tensor:
    from ..creation import ones_like, tensor

    if cotangent is None:
        if out.size != 1:
            raise RuntimeError(
                f"{op}: the output has shape {out.shape}; gradients can be created implicitly "
                "only for one-element outputs. Pass a cotangent of the same shape, e.g. "
                "y.backward(st.ones_like(y)), or reduce first (y.sum().backward())")
        return ones_like(out)
    if not isinstance(cotangent, Tensor):
        cotangent = tensor(cotangent, dtype=out.dtype, device=out.device)
    if cotangent.shape != out.shape:
        raise ValueError(f"{op}: cotangent shape {cotangent.shape} does not match the output "
                         f"shape {out.shape}")
    if cotangent.device is not out.device:
        raise ValueError(f"{op}: cotangent is on {cotangent.device} but the output is on "
                         f"{out.device}; move it with .to({str(out.device)!r})")
    return cotangent


def backward(out: Tensor, cotangent=None, *, retain_graph=False, create_graph=False) -> None:
    """Accumulate gradients of ``out`` into ``.grad`` of the leaves that require grad."""
    if not out.requires_grad:
        raise RuntimeError(
            "backward: this tensor does not require grad: none of the tensors it was computed "
            "from has requires_grad=True (or it was computed under no_grad). Create inputs "
            "with requires_grad=True, or call .requires_grad_() on them")
    g = _as_cotangent(out, cotangent, "backward")
    run([out], [g], retain_graph=retain_graph or create_graph, create_graph=create_graph)


def gradients(outputs, inputs, cotangents=None, *, retain_graph=False, create_graph=False,
              allow_unused=True):
    """Cotangents of ``outputs`` with respect to ``inputs`` without touching ``.grad``.

    Args:
        outputs: a Tensor or a sequence of Tensors.
        inputs: a sequence of Tensors that require grad.
        cotangents: matching output cotangents (``None`` = ones, for one-element outputs).
        retain_graph: keep the graph for further passes.
        create_graph: record this pass so its results can be differentiated again.
        allow_unused: return ``None`` for inputs the outputs do not depend on (else raise).

    Returns:
        A list with one cotangent (or ``None``) per input.
    """
    outs = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    if cotangents is None:
        cts = [None] * len(outs)
    elif isinstance(cotangents, Tensor):
        cts = [cotangents]
    else:
        cts = list(cotangents)
    roots, root_cts = [], []
    for o, c in zip(outs, cts):
        if o.requires_grad:
            roots.append(o)
            root_cts.append(_as_cotangent(o, c, "gradients"))
    res = run(roots, root_cts, inputs=list(inputs), accumulate=False,
              retain_graph=retain_graph or create_graph, create_graph=create_graph)
    if not allow_unused and any(r is None for r in res):
        raise RuntimeError("gradients: an input does not contribute to the outputs")
    return res
