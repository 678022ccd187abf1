"""Fused multi-tensor updates of CUDA parameters, capturable by :func:`scitensor.jit`.

How one ``step()`` runs on a CUDA device:

1. Every parameter with a gradient is listed with its gradient (C-contiguous, in the
   parameter's dtype), its state arrays (float32 for fp16/bf16/fp32 parameters, float64 for
   fp64; created *uninitialised* and marked "first step", so no memset is ever captured) and its
   row in the optimizer's hyper-parameter buffer (one row per parameter, float64, per device).
2. ``_host_update`` advances the host state (step counts), writes each row (learning rate,
   bias corrections, betas, ...) and copies the buffer to the device with one
   ``cudaMemcpyAsync``. Eagerly it runs right away. While :func:`scitensor.jit` captures, it
   is registered with :func:`scitensor.runtime.register_replay_hook` instead (a pageable copy
   cannot be captured, and the captured call is not itself a step): the jit runs it before
   every replay, so step counts advance and a changed ``group["lr"]`` reaches the graph.
3. The kernels (``backends/cuda/kernels/optim.cu``) are launched: one per dtype per 48
   parameters, each thread block updating a 2048-element chunk of one parameter.

Why multi-tensor rather than one kernel per parameter: a transformer has ~100 parameters;
one launch per parameter would cost ~100 launches per step (7.6 µs of host time each eagerly,
about 1.1 µs each in a graph). The tensor list travels by value as a kernel parameter, so
a graph bakes in the (fixed) addresses it captured and no device pointer table has to be
refreshed between replays.

Example:
    >>> import scitensor as st                                       # doctest: +SKIP
    >>> w = st.ones(4, device="cuda", requires_grad=True)            # doctest: +SKIP
    >>> opt = st.optim.Adam([w], lr=0.1)                             # doctest: +SKIP
    >>> (w * w).sum().backward(); opt.step()    # one fused kernel   # doctest: +SKIP
"""

from __future__ import annotations

import functools

import numpy as np

from .. import dtypes as dt
from .. import runtime

__all__ = ["FusedMixin"]

_HALF = ("float16", "bfloat16")


def _c_contiguous(a) -> bool:
    """Whether ``a`` is C-contiguous, from CuPy's cached flag when there is one (``.flags``
    builds a new object on every access: about a microsecond, on every parameter)."""
    flag = getattr(a, "_c_contiguous", None)
    return a.flags.c_contiguous if flag is None else flag


class FusedMixin:
    """The CUDA fused-update machinery of :class:`~scitensor.optim.Optimizer`.

    Subclasses implement ``_fused_state(p, group, capturing)`` (the state arrays, created as
    needed), ``_fused_row(group, p, row)`` (advance ``p``'s host state, fill its float64
    hyper-parameter row) and ``_fused_launch(device_index, items, hyper)``.
    """

    def _init_fused(self) -> None:
        self._hyper: dict = {}       # device index -> HyperBuffer
        self._rows: dict = {}        # id(param) -> row in the hyper buffer
        self._rows_n = -1            # parameter count the rows were built for

    def _use_fused(self, p) -> bool:
        """Whether ``p`` is updated by the fused kernels."""
        if not self.fused or p.device.type != "cuda":
            return False
        from ..backends.cuda.optim import supported

        return supported(p.data.dtype) and _c_contiguous(p.data)

    def _state_dtype(self, p) -> dt.DType:
        """dtype of ``p``'s optimizer state: float32 for half parameters on the fused path."""
        if p.dtype.name in _HALF and self.fused and p.device.type == "cuda":
            return dt.float32
        return p.dtype

    def _fused_state_np(self, p):
        """The NumPy dtype object of ``p``'s fused state (cached per parameter dtype, so the
        fast check in :meth:`_state_array` is an identity test)."""
        cache = self.__dict__.setdefault("_state_np", {})
        key = p.data.dtype
        np_dtype = cache.get(key)
        if np_dtype is None:
            np_dtype = cache[key] = np.dtype(self._state_dtype(p).np)
        return np_dtype

    def _state_array(self, p, state: dict, key: str, capturing: bool):
        """``state[key]`` as a C-contiguous array of the fused state dtype on ``p``'s device
        (created uninitialised when missing: the kernel reads it as zero on the first step)."""
        a = state.get(key)
        if (a is not None and type(a) is type(p.data) and a.shape == p.data.shape
                and a.dtype is self._fused_state_np(p) and _c_contiguous(a)):
            return a  # the usual case after the first step: nothing to convert
        want = self._state_dtype(p)
        if a is None:
            a = state[key] = p.backend.empty(p.shape, want)
            return a
        if type(a) is not type(p.data) or a.shape != p.data.shape:
            raise RuntimeError(
                f"{self._name}: optimizer state {key!r} for a parameter of shape {p.shape} is "
                f"a {type(a).__module__}.{type(a).__name__} of shape {a.shape}, but the "
                f"parameter is on {p.device}; move or cast the model before creating the "
                "optimizer (or load its state_dict into a new one)")
        if a.dtype != want.np or not a.flags.c_contiguous:
            if capturing:
                raise RuntimeError(
                    f"{self._name}: optimizer state {key!r} must be converted to "
                    f"{want.name} inside scitensor.jit capture; run one eager step first")
            a = state[key] = p.backend.xp.ascontiguousarray(p.backend.astype(a, want))
        return a

    def _layout(self, device):
        """The hyper buffer of ``device`` (rebuilt when parameters were added)."""
        n = sum(len(g["params"]) for g in self.param_groups)
        if n != self._rows_n:
            self._rows = {id(p): i for i, p in
                          enumerate(p for g in self.param_groups for p in g["params"])}
            self._rows_n = n
            self._hyper = {}
        buf = self._hyper.get(device.index)
        if buf is None:
            from ..backends.cuda.optim import HyperBuffer

            buf = self._hyper[device.index] = HyperBuffer(device.index, n)
        return buf

    def _fused_step(self, device, items) -> None:
        """Update ``items`` (``(group, param)`` pairs on ``device``) with the fused kernels."""
        capturing = runtime.is_capturing()
        hyper = self._layout(device)
        launch, entries = [], []
        for group, p in items:
            g = self._grad_array(p, self._name)
            if not _c_contiguous(g):
                g = p.backend.xp.ascontiguousarray(g)
            state = self._fused_state(p, group, capturing)
            row = self._rows[id(p)]
            launch.append((p.data, g, *state, row))  # CuPy arrays are always writable
            entries.append((group, p, row))
        update = functools.partial(self._host_update, hyper, tuple(entries))
        if capturing:
            runtime.register_replay_hook(update)
        else:
            update()
        self._fused_launch(device.index, launch, hyper)

    def _host_update(self, hyper, entries) -> None:
        """Advance host state and upload the hyper-parameter rows of ``entries``."""
        host = hyper.host
        rows_of = getattr(self, "_fused_rows", None)
        if rows_of is None:
            for group, p, row in entries:
                self._fused_row(group, p, host[row])
        else:  # one row computed per group and step count, written to all its rows at once
            by_group: dict = {}
            for group, p, row in entries:
                by_group.setdefault(id(group), (group, []))[1].append((p, row))
            for group, members in by_group.values():
                rows_of(group, members, host)
        hyper.upload()

    # ---- subclass hooks ----------------------------------------------------------------
    def _fused_state(self, p, group, capturing: bool):
        raise NotImplementedError

    def _fused_row(self, group, p, row: np.ndarray) -> None:
        raise NotImplementedError

    def _fused_launch(self, device_index: int, items, hyper) -> None:
        raise NotImplementedError
