"""``Optimizer``: the base class holding parameter groups and per-parameter state.

Optimizers need tensors and their ``.grad``, nothing from :mod:`scitensor.nn` (design §3).
Updates are written on the backend arrays in place, so a parameter keeps its storage across
steps. On the CPU (and for CUDA parameters with ``fused=False``) they are NumPy/CuPy ufuncs
with ``out=``. On a CUDA device they are fused multi-tensor kernels (:mod:`._fused`): a few
launches for all parameters, reading the hyper-parameters from a device buffer that is
refreshed before every step and before every replay of a :func:`scitensor.jit` graph, so
changing ``group["lr"]`` between (jitted) steps always takes effect.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import dtypes as dt
from ..autodiff.mode import no_grad
from ..tensor import Tensor, wrap
from ._fused import FusedMixin

__all__ = ["Optimizer"]


class Optimizer(FusedMixin):
    """Base class: parameter groups, ``zero_grad``, ``step`` and a state dict.

    Subclasses define ``defaults`` (hyper-parameters), ``_update_group(group, params)``, which
    updates the given parameters of one group with backend ufuncs, and the fused-kernel hooks
    of :class:`~scitensor.optim._fused.FusedMixin`.

    Args:
        params: an iterable of tensors, or of dicts ``{"params": [...], "lr": ..., ...}``
            (parameter groups whose entries override ``defaults``).
        defaults: the default hyper-parameters.
        fused: update CUDA parameters with the fused kernels (default). ``False`` uses the
            CuPy ufunc path (many small kernels; not for :func:`scitensor.jit`).

    Attributes:
        param_groups: list of dicts, each with ``"params"`` and its hyper-parameters; change
            ``group["lr"]`` between steps to schedule the learning rate.
        state: per-parameter state (``{param: {"step": int, name: array, ...}}``).
    """

    def __init__(self, params, defaults: dict[str, Any], fused: bool = True):
        self.defaults = dict(defaults)
        self.fused = bool(fused)
        self._init_fused()
        self.param_groups: list[dict[str, Any]] = []
        self.state: dict[Tensor, dict[str, Any]] = {}
        self._scratch: dict[tuple[int, int], Any] = {}
        if isinstance(params, Tensor):
            raise TypeError(f"{self._name}: params must be an iterable of tensors (e.g. "
                            "model.parameters() or [w, b]), got a single Tensor; wrap it in "
                            "a list")
        groups = list(params)
        if not groups:
            raise ValueError(f"{self._name}: got an empty parameter list; did the model "
                             "define any nn.Parameter?")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for g in groups:
            self.add_param_group(g)

    @property
    def _name(self) -> str:
        return type(self).__name__

    def add_param_group(self, group: dict[str, Any]) -> None:
        """Add a group ``{"params": [...], <hyper-parameter overrides>}``.

        Example:
            >>> import scitensor as st
            >>> from scitensor import optim
            >>> a, b = st.ones(2, requires_grad=True), st.ones(3, requires_grad=True)
            >>> opt = optim.SGD([a], lr=0.1)
            >>> opt.add_param_group({"params": [b], "lr": 0.01})
            >>> [g["lr"] for g in opt.param_groups]
            [0.1, 0.01]
        """
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError(f"{self._name}: a parameter group must be a dict with a 'params' "
                            f"key, got {type(group).__name__}")
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        for i, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise TypeError(f"{self._name}: parameter {i} is a {type(p).__name__}, not a "
                                "Tensor")
            if not p.dtype.is_floating:
                raise TypeError(f"{self._name}: parameter {i} has dtype {p.dtype.name}; only "
                                "floating tensors can be optimised")
            if not p.is_leaf:
                raise ValueError(f"{self._name}: parameter {i} (shape {p.shape}) is the "
                                 "result of an op, not a leaf tensor; optimise the tensors "
                                 "you created (requires_grad=True) instead")
            if id(p) in seen:
                raise ValueError(f"{self._name}: parameter {i} (shape {p.shape}) appears in "
                                 "more than one group, or twice")
            seen.add(id(p))
        unknown = set(group) - set(self.defaults) - {"params"}
        if unknown:
            raise TypeError(f"{self._name}: unknown hyper-parameter(s) {sorted(unknown)} in a "
                            f"parameter group; known: {sorted(self.defaults)}")
        new = {**self.defaults, **group, "params": params}
        self._check_hyper(new)
        self.param_groups.append(new)

    def _check_hyper(self, group: dict[str, Any]) -> None:
        """Validate one group's hyper-parameters (subclasses extend this)."""
        lr = group.get("lr")
        if lr is not None and (not isinstance(lr, int | float) or not lr >= 0
                               or math.isinf(lr)):
            raise ValueError(f"{self._name}: lr must be a finite number >= 0, got {lr!r}")
        wd = group.get("weight_decay", 0.0)
        if not _real(wd) or not wd >= 0 or math.isinf(wd):
            raise ValueError(f"{self._name}: weight_decay must be a finite number >= 0, got "
                             f"{wd!r}")

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients of every parameter (``None``, or zeros in place)."""
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none or p.grad is None:
                    p.grad = None
                else:
                    p.grad = wrap(p.backend.zeros(p.shape, p.dtype), p.device)

    def step(self) -> None:
        """Update every parameter that has a ``.grad`` (no graph is recorded).

        CUDA parameters go through the fused kernels (grouped per device), the others
        through ``_update_group``.
        """
        with no_grad():
            fused: dict = {}
            for group in self.param_groups:
                rest = []
                for p in group["params"]:
                    if p.grad is not None and self._use_fused(p):
                        fused.setdefault(p.device, []).append((group, p))
                    else:
                        rest.append(p)
                if rest:
                    self._update_group(group, rest)
            for device, items in fused.items():
                self._fused_step(device, items)

    def _update_group(self, group: dict[str, Any], params) -> None:
        raise NotImplementedError(f"{self._name} must implement _update_group(group, params)")

    # ---- helpers for subclasses ------------------------------------------------------
    @staticmethod
    def _grad_array(p: Tensor, name: str):
        """``p.grad``'s backend array, checked against ``p`` (None when there is none)."""
        g = p.grad
        if g is None:
            return None
        if g.shape != p.shape or g.device is not p.device:
            raise ValueError(f"{name}: gradient of shape {g.shape} on {g.device} does not "
                             f"match its parameter of shape {p.shape} on {p.device}")
        if g.data.dtype != p.data.dtype:
            return p.backend.astype(g.data, p.dtype)
        return g.data

    @staticmethod
    def _writable(p: Tensor):
        """``p``'s array, replaced by a private copy first if it cannot be written in place."""
        flags = getattr(p.data, "flags", None)
        if flags is not None and not getattr(flags, "writeable", True):
            p.data = p.data.copy()
        return p.data

    def _scratch_array(self, p: Tensor, like, slot: int):
        """A reusable work array shaped like ``like`` (not part of the saved state): reusing
        it avoids allocating (and page-faulting) fresh memory on every step."""
        key = (id(p), slot)
        t = self._scratch.get(key)
        if t is None or t.dtype != like.dtype or type(t) is not type(like):
            t = self._scratch[key] = p.backend.xp.empty_like(like)
        return t

    def _state_arrays_on(self, p: Tensor, arrays, name: str) -> None:
        """Raise clearly when state arrays live elsewhere than ``p`` (moved after creation)."""
        for a in arrays:
            if type(a) is not type(p.data) or a.dtype != p.data.dtype:
                raise RuntimeError(
                    f"{name}: optimizer state for a parameter of shape {p.shape} is a "
                    f"{type(a).__module__}.{type(a).__name__} of {a.dtype} but the parameter "
                    f"is {p.dtype.name} on {p.device}; move or cast the model before creating "
                    "the optimizer (or load its state_dict into a new one)")

    # ---- state dict ------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The optimizer state, with parameters referred to by position (as in PyTorch).

        Returns:
            ``{"state": {index: {"step": int, name: Tensor, ...}}, "param_groups": [{...,
            "params": [indices]}]}``. State tensors share memory with the optimizer.
        """
        index = {}
        groups = []
        for g in self.param_groups:
            ids = []
            for p in g["params"]:
                index[id(p)] = len(index)
                ids.append(index[id(p)])
            groups.append({**{k: v for k, v in g.items() if k != "params"}, "params": ids})
        state = {}
        for p, s in self.state.items():
            if id(p) in index:
                state[index[id(p)]] = {k: (wrap(v, p.device) if _is_array(v) else v)
                                       for k, v in s.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore state saved by :meth:`state_dict` for the same parameters (in order).

        Raises:
            ValueError: the number of groups or of parameters per group differs, or a state
                array's shape does not match its parameter.
        """
        groups = state_dict.get("param_groups") if isinstance(state_dict, dict) else None
        if groups is None or "state" not in state_dict:
            raise TypeError(f"{self._name}.load_state_dict: expected a dict with 'state' and "
                            "'param_groups' as returned by state_dict()")
        if len(groups) != len(self.param_groups):
            raise ValueError(f"{self._name}.load_state_dict: {len(groups)} parameter group(s) "
                             f"saved but this optimizer has {len(self.param_groups)}")
        params = []
        for i, (saved, mine) in enumerate(zip(groups, self.param_groups)):
            if len(saved["params"]) != len(mine["params"]):
                raise ValueError(f"{self._name}.load_state_dict: group {i} has "
                                 f"{len(saved['params'])} parameter(s) saved but "
                                 f"{len(mine['params'])} here")
            params.extend(zip(saved["params"], mine["params"]))
        new_state = {}
        for key, p in params:
            s = state_dict["state"].get(key)
            if s is None:
                continue
            entry = {}
            for k, v in s.items():
                if isinstance(v, Tensor) or _is_array(v):
                    entry[k] = _to_array(v, p, f"{self._name}.load_state_dict: state {k!r}",
                                         self._state_dtype(p))
                else:
                    entry[k] = v
            new_state[p] = entry
        for mine, saved in zip(self.param_groups, groups):
            for k, v in saved.items():
                if k != "params":
                    mine[k] = v
        self.state = new_state

    def __repr__(self) -> str:
        lines = [f"{self._name} ("]
        for i, g in enumerate(self.param_groups):
            hyper = ", ".join(f"{k}={v}" for k, v in g.items() if k != "params")
            lines.append(f"  group {i}: {len(g['params'])} params, {hyper}")
        return "\n".join(lines) + "\n)"


def _real(v) -> bool:
    """A real number (bools excluded), for hyper-parameter checks."""
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)


def _is_array(v) -> bool:
    return hasattr(v, "shape") and hasattr(v, "dtype") and not isinstance(v, Tensor)


def _to_array(v, p: Tensor, what: str, dtype: dt.DType | None = None):
    """A fresh backend array on ``p``'s device holding ``v``, of ``dtype`` (``p``'s)."""
    if isinstance(v, Tensor):
        host = v.numpy()
    else:
        host = v.get() if hasattr(v, "get") and not isinstance(v, np.ndarray) else v
    host = np.asarray(host)
    if host.shape != p.shape and host.shape != ():
        raise ValueError(f"{what} has shape {host.shape} but its parameter has shape {p.shape}")
    arr = p.backend.asarray(host, dtype or p.dtype)
    return arr.copy() if arr is host else arr

