"""``jit``: capture a whole step once as a CUDA graph and replay it (the seed's command-buffer
batching and GPU monad).

On the GPU the first call with a new *signature* runs eagerly (kernels compile, GEMM plans are
made, optimizer state is allocated); the second call captures the function into a CUDA graph
whose memory is its own; later calls copy the inputs into the graph's input buffers, replay it
with one launch, and copy the outputs out. On the CPU the function simply runs.

Semantics (the same on every device):

- The signature (cache key) covers the argument structure, each tensor's shape, dtype, device
  and ``requires_grad``, every non-tensor argument's value, the grad mode and the
  deterministic mode; a new signature captures a new graph (the cache keeps the ``max_cache``
  most recent).
- Returned tensors are fresh copies: they stay valid after later calls (copy-out ownership).
  They carry no autodiff history: differentiate *inside* the function (``backward()``,
  ``st.grad``), as a training step does.
- State the function reaches through closures (model parameters, optimizer moments) is used in
  place: parameters updated in place by an optimizer are updated on every replay. Leaf tensors
  with ``requires_grad=True`` passed as *arguments* are treated the same way (bound by
  identity: passing another parameter captures another graph); every other tensor argument is
  an input, copied into the graph's own buffer on each call, so in-place changes the function
  makes to such an argument are not seen by the caller.
- Inside capture, anything that needs the host to wait for the GPU (``item()``, ``numpy()``,
  printing a tensor, ``if tensor:``) raises :class:`scitensor.HostSyncInCaptureError`.
- Random ops draw from a device-side Philox counter, so every replay gets fresh numbers.
- Host values read by captured code through a :class:`DeviceScalar` (an optimizer's learning
  rate, its step count) are refreshed before every replay, so changing them between calls works.

Example:
    >>> import scitensor as st
    >>> @st.jit
    ... def f(x):
    ...     return (x * 2).sum()
    >>> f(st.ones(3)).item(), f(st.ones(3)).item()
    (6.0, 6.0)
"""

from __future__ import annotations

import collections
import functools
import numbers

from .autodiff.functional import tree_flatten, tree_unflatten
from .autodiff.mode import GRAD_ENABLED
from .device import get_default_device
from .runtime import CAPTURING, DETERMINISTIC, REPLAY_HOOKS, HostSyncInCaptureError
from .tensor import Tensor, wrap

__all__ = ["JitFunction", "jit"]


_ABSENT = object()  # signature never seen
_WARM = object()  # signature ran eagerly once: the next call captures


class JitFunction:
    """A function compiled by :func:`jit` (see the module docstring for the semantics)."""

    def __init__(self, fn, max_cache: int = 8):
        if not callable(fn):
            raise TypeError(f"jit: expected a function to compile, got {type(fn).__name__} "
                            f"{fn!r:.40}")
        if isinstance(max_cache, bool) or not isinstance(max_cache, numbers.Integral) \
                or max_cache < 1:
            raise ValueError(f"jit: max_cache must be a positive int, got {max_cache!r}")
        self.fn = fn
        self.max_cache = max_cache
        self.cache: collections.OrderedDict = collections.OrderedDict()
        self.stats = {"eager": 0, "captures": 0, "replays": 0}
        functools.update_wrapper(self, fn)

    def _signature(self, leaves, spec):
        parts = []
        device = None
        for leaf in leaves:
            if isinstance(leaf, Tensor):
                if leaf.requires_grad and leaf.is_leaf:
                    # state (a parameter): bound by identity, used in place by the graph
                    parts.append(("P", id(leaf), leaf.shape, leaf.dtype.name))
                else:
                    parts.append(("T", leaf.shape, leaf.dtype.name, str(leaf.device),
                                  leaf.requires_grad))
                device = device or leaf.device
            elif leaf is None or isinstance(leaf, numbers.Number | str | bytes | bool):
                parts.append(("V", type(leaf).__name__, leaf))
            else:
                try:
                    hash(leaf)
                except TypeError:
                    raise TypeError(
                        f"jit({self.__name__}): argument of type {type(leaf).__name__} is not "
                        "hashable, so it cannot be part of the cache key; pass tensors, "
                        "numbers, strings or hashable objects") from None
                parts.append(("O", id(type(leaf)), leaf))
        return (repr(spec), tuple(parts), GRAD_ENABLED[0], DETERMINISTIC[0]), device

    def __call__(self, *args, **kwargs):
        leaves, spec = tree_flatten((args, kwargs))
        key, device = self._signature(leaves, spec)
        device = device or get_default_device()
        if device.type == "cpu" or CAPTURING[0] is not None:
            self.stats["eager"] += 1
            return self.fn(*args, **kwargs)
        entry = self.cache.get(key, _ABSENT)
        if entry is _ABSENT:
            # first call: run eagerly so kernels compile and state is allocated
            self.stats["eager"] += 1
            out = self.fn(*args, **kwargs)
            self.cache[key] = _WARM
            if len(self.cache) > self.max_cache:
                self.cache.popitem(last=False)
            return out
        self.cache.move_to_end(key)
        if entry is False:  # capture failed before: stay eager for this signature
            self.stats["eager"] += 1
            return self.fn(*args, **kwargs)
        if entry is _WARM:
            try:
                entry = _capture(self, device, leaves, spec)
            except HostSyncInCaptureError:
                self.cache[key] = False
                raise
            except Exception as e:
                self.cache[key] = False  # later calls with this signature run eagerly
                raise RuntimeError(
                    f"jit({self.__name__}): capturing the CUDA graph failed ({type(e).__name__}:"
                    f" {e}). Later calls with these argument shapes run eagerly; state the "
                    "function changed during the failed capture (e.g. .grad) may be stale, so "
                    "zero gradients before the next step") from e
            self.cache[key] = entry
            self.stats["captures"] += 1
        else:
            self.stats["replays"] += 1
        return entry.run(leaves)

    def clear(self) -> None:
        """Drop every captured graph (and the memory it owns)."""
        self.cache.clear()


class _Captured:
    """One captured graph: its static inputs, its outputs, its replay hooks."""

    def __init__(self, device, graph, static_leaves, out_leaves, out_spec, hooks, pool):
        self.device = device
        self.graph = graph
        self.static_leaves = static_leaves
        self.out_leaves = out_leaves
        self.out_spec = out_spec
        self.hooks = hooks
        self.pool = pool  # keeps the graph's private memory alive

    def run(self, leaves):
        be = self.device.backend
        for static, new in zip(self.static_leaves, leaves):
            if isinstance(static, Tensor) and static is not new:
                be.copy_into(static.data, new.data)
        for hook in self.hooks:
            hook()
        be.graph_launch(self.graph)
        outs = [wrap(be.copy(o.data), o.device) if isinstance(o, Tensor) else o
                for o in self.out_leaves]
        return tree_unflatten(self.out_spec, outs)


def _capture(jf: JitFunction, device, leaves, spec):
    be = device.backend
    static_leaves = []
    for leaf in leaves:
        if isinstance(leaf, Tensor):
            if leaf.device is not device:
                raise ValueError(f"jit({jf.__name__}): arguments on different devices "
                                 f"({device} and {leaf.device})")
            if leaf.requires_grad and leaf.is_leaf:
                static_leaves.append(leaf)  # a parameter: the graph updates it in place
                continue
            s = wrap(be.copy(leaf.data), device)
            s.requires_grad = leaf.requires_grad
            static_leaves.append(s)
        else:
            static_leaves.append(leaf)
    args, kwargs = tree_unflatten(spec, static_leaves)
    hooks: list = []
    prev_hooks = REPLAY_HOOKS[0]
    REPLAY_HOOKS[0] = hooks
    CAPTURING[0] = jf.__name__
    try:
        graph, pool, out = be.capture(lambda: jf.fn(*args, **kwargs))
    finally:
        CAPTURING[0] = None
        REPLAY_HOOKS[0] = prev_hooks
    out_leaves, out_spec = tree_flatten(out)
    entry = _Captured(device, graph, static_leaves, out_leaves, out_spec, hooks, pool)
    return entry


def jit(fn=None, *, max_cache: int = 8):
    """Compile ``fn`` into a replayable step: ``@st.jit`` or ``st.jit(fn, max_cache=4)``.

    Args:
        fn: the function; tensors (or pytrees of them) and hashable values as arguments.
        max_cache: how many signatures keep a captured graph.

    Returns:
        A :class:`JitFunction` that behaves like ``fn``.
    """
    if fn is None:
        return lambda f: JitFunction(f, max_cache=max_cache)
    return JitFunction(fn, max_cache=max_cache)
