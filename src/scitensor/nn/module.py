"""``Module``: the base class of layers and models.

A module finds its parameters, buffers and sub-modules by looking at its attributes, including
attributes that are lists, tuples or dicts of them (nested containers too), so there is
nothing to register by hand except buffers::

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = [nn.Dense(4, 8), nn.Dense(8, 2)]   # found: layers.0.*, layers.1.*
            self.register_buffer("scale", st.ones(2))         # saved in state_dict, not trained

        def forward(self, x):
            return self.layers[1](self.layers[0](x).relu()) * self.scale

Names follow attribute order and are dotted paths (``layers.0.weight``), as in PyTorch.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np

from ..autodiff.mode import no_grad
from ..tensor import Tensor
from .parameter import Parameter

__all__ = ["LoadResult", "Module"]


class LoadResult(NamedTuple):
    """What :meth:`Module.load_state_dict` did not match (empty lists when strict)."""

    missing_keys: list[str]
    unexpected_keys: list[str]


def _walk(prefix: str, obj, out: list) -> None:
    """Collect ``(name, value)`` for Parameters and Modules inside lists/tuples/dicts."""
    if isinstance(obj, Parameter | Module):
        out.append((prefix, obj))
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            _walk(f"{prefix}.{i}", v, out)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _walk(f"{prefix}.{k}", v, out)


class Module:
    """Base class for layers and models: subclass it and define ``forward``.

    Calling a module calls ``forward``. Parameters (:class:`~scitensor.nn.Parameter`) and
    sub-modules stored as attributes, or inside list/tuple/dict attributes, are found
    automatically; plain tensors are not parameters (register them with
    :meth:`register_buffer` to save them in the state dict).

    Attributes:
        training: True in training mode (the default), False after :meth:`eval`.

    Example:
        >>> import scitensor as st
        >>> from scitensor import nn
        >>> class Affine(nn.Module):
        ...     def __init__(self, n):
        ...         super().__init__()
        ...         self.scale = nn.Parameter(st.ones(n))
        ...         self.shift = nn.Parameter(st.zeros(n))
        ...     def forward(self, x):
        ...         return x * self.scale + self.shift
        >>> m = Affine(3)
        >>> [name for name, _ in m.named_parameters()]
        ['scale', 'shift']
        >>> m(st.ones(2, 3)).shape
        (2, 3)
    """

    training: bool = True

    def __init__(self) -> None:
        self.training = True
        self._buffer_names: dict[str, bool] = {}  # name -> persistent (in state_dict)

    # ---- calling -----------------------------------------------------------------------
    def forward(self, *args, **kwargs):
        """The computation; subclasses must override it."""
        raise NotImplementedError(f"{type(self).__name__}.forward is not defined; subclasses "
                                  "of nn.Module must implement forward(...)")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ---- discovery ---------------------------------------------------------------------
    def _members(self) -> Iterator[tuple[str, Any]]:
        """Direct ``(name, Parameter | Module)`` members, in attribute order."""
        out: list = []
        for name, value in vars(self).items():
            _walk(name, value, out)
        return iter(out)

    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True):
        """Store a tensor that is part of the module's state but is not trained.

        Buffers move with :meth:`to` and (when ``persistent``) appear in :meth:`state_dict`.

        Args:
            name: the attribute name.
            tensor: a Tensor, or None for an empty slot.
            persistent: whether to include it in the state dict.

        Example:
            >>> import scitensor as st
            >>> from scitensor import nn
            >>> m = nn.Module(); m.register_buffer("mean", st.zeros(3))
            >>> list(m.state_dict())
            ['mean']
        """
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"register_buffer: name must be an identifier, got {name!r}")
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"register_buffer: {name!r} must be a Tensor or None, got "
                            f"{type(tensor).__name__}")
        if isinstance(tensor, Parameter):
            raise TypeError(f"register_buffer: {name!r} is a Parameter; assign it as an "
                            "attribute instead (buffers are not trained)")
        if "_buffer_names" not in vars(self):
            self._buffer_names = {}
        self._buffer_names[name] = bool(persistent)
        setattr(self, name, tensor)

    def named_children(self) -> Iterator[tuple[str, Module]]:
        """Direct sub-modules with their names."""
        seen = set()
        for name, v in self._members():
            if isinstance(v, Module) and id(v) not in seen:
                seen.add(id(v))
                yield name, v

    def children(self) -> Iterator[Module]:
        """Direct sub-modules."""
        for _, m in self.named_children():
            yield m

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """This module (name ``prefix``) and every sub-module, depth first, each once."""
        seen: set[int] = set()
        stack = [(prefix, self)]
        while stack:
            name, m = stack.pop()
            if id(m) in seen:
                continue
            seen.add(id(m))
            yield name, m
            kids = [(f"{name}.{n}" if name else n, c) for n, c in m.named_children()]
            stack.extend(reversed(kids))

    def modules(self) -> Iterator[Module]:
        """This module and every sub-module."""
        for _, m in self.named_modules():
            yield m

    def named_parameters(self, prefix: str = "",
                         recurse: bool = True) -> Iterator[tuple[str, Parameter]]:
        """``(dotted name, Parameter)`` pairs; a parameter shared by two layers appears once.

        Example:
            >>> from scitensor import nn
            >>> [n for n, _ in nn.Sequential(nn.Dense(2, 3), nn.ReLU()).named_parameters()]
            ['0.weight', '0.bias']
        """
        seen: set[int] = set()
        mods = self.named_modules(prefix) if recurse else iter([(prefix, self)])
        for mname, m in mods:
            for name, v in m._members():
                if isinstance(v, Parameter) and id(v) not in seen:
                    seen.add(id(v))
                    yield (f"{mname}.{name}" if mname else name), v

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        """Every parameter (each once): pass this to an optimizer."""
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def _own_buffers(self, persistent_only: bool = False):
        names = vars(self).get("_buffer_names", {})
        for name, persistent in names.items():
            t = vars(self).get(name)
            if t is not None and (persistent or not persistent_only):
                yield name, t

    def named_buffers(self, prefix: str = "", recurse: bool = True,
                      persistent_only: bool = False) -> Iterator[tuple[str, Tensor]]:
        """``(dotted name, Tensor)`` for every registered buffer."""
        mods = self.named_modules(prefix) if recurse else iter([(prefix, self)])
        for mname, m in mods:
            for name, t in m._own_buffers(persistent_only):
                yield (f"{mname}.{name}" if mname else name), t

    def buffers(self, recurse: bool = True) -> Iterator[Tensor]:
        """Every registered buffer."""
        for _, t in self.named_buffers(recurse=recurse):
            yield t

    def num_parameters(self) -> int:
        """The total number of scalar parameters."""
        return sum(p.size for p in self.parameters())

    # ---- modes and gradients -----------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        """Set training mode on this module and its sub-modules; returns ``self``."""
        for m in self.modules():
            m.training = bool(mode)
        return self

    def eval(self) -> Module:
        """Set evaluation mode (``train(False)``); returns ``self``."""
        return self.train(False)

    def zero_grad(self) -> None:
        """Drop every parameter's ``.grad`` (set it to None)."""
        for p in self.parameters():
            p.grad = None

    def requires_grad_(self, flag: bool = True) -> Module:
        """Turn gradient tracking on or off for every parameter (freezing); returns ``self``."""
        for p in self.parameters():
            p.requires_grad = bool(flag)
        return self

    def apply(self, fn) -> Module:
        """Call ``fn(module)`` on every sub-module and then this one; returns ``self``."""
        for m in reversed(list(self.modules())):
            fn(m)
        return self

    # ---- devices and dtypes ------------------------------------------------------------
    def to(self, device=None, dtype=None) -> Module:
        """Move parameters and buffers to ``device`` and/or cast floating ones to ``dtype``.

        Parameters are changed in place (same objects), so an optimizer made before the move
        still holds them. Integer and bool buffers keep their dtype.

        Args:
            device: a Device or a string such as ``"cpu"`` / ``"cuda:0"``.
            dtype: a floating dtype such as ``st.float64``.

        Returns:
            ``self``.

        Example:
            >>> import scitensor as st
            >>> from scitensor import nn
            >>> nn.Dense(2, 3).to(dtype=st.float64).weight.dtype
            scitensor.float64
        """
        from .. import dtypes as dt
        from ..device import Device

        dev = None if device is None else Device(device)
        d = None if dtype is None else dt.as_dtype(dtype)
        if d is not None and not d.is_floating:
            raise TypeError(f"Module.to: dtype must be floating, got {d.name}")

        def convert(t: Tensor) -> Tensor:
            cast = d if (d is not None and t.dtype.is_floating) else None
            return t.detach().to(device=dev, dtype=cast)

        with no_grad():
            for p in self.parameters():
                new = convert(p)
                p.data, p.device = new.data, new.device
                if p.grad is not None:
                    g = convert(p.grad)
                    p.grad = g
            for m in self.modules():
                for name, t in list(m._own_buffers()):
                    setattr(m, name, convert(t))
        return self

    def float(self) -> Module:
        """Cast floating parameters and buffers to float32."""
        from .. import dtypes as dt

        return self.to(dtype=dt.float32)

    def double(self) -> Module:
        """Cast floating parameters and buffers to float64."""
        from .. import dtypes as dt

        return self.to(dtype=dt.float64)

    # ---- state ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Tensor]:
        """Parameters and persistent buffers by dotted name (tensors share memory with the
        module: copy them, or save them to a file, to keep a snapshot).

        Returns:
            A dict ``{name: Tensor}`` (detached tensors), parameters then buffers per module.

        Example:
            >>> from scitensor import nn
            >>> list(nn.Dense(2, 3).state_dict())
            ['weight', 'bias']
        """
        out: dict[str, Tensor] = {}
        for name, p in self.named_parameters():
            out[name] = p.detach()
        for name, t in self.named_buffers(persistent_only=True):
            out[name] = t.detach()
        return out

    def load_state_dict(self, state_dict, strict: bool = True) -> LoadResult:
        """Copy values from ``state_dict`` into this module's parameters and buffers.

        Values may be Tensors (any device; cast to each parameter's dtype) or NumPy arrays.
        Every key and shape is checked before anything is written, so a failed load leaves
        the module unchanged. Parameters are updated in place.

        Args:
            state_dict: a mapping from dotted names to tensors, as :meth:`state_dict` gives.
            strict: raise on missing or unexpected keys (shape mismatches always raise).

        Returns:
            ``LoadResult(missing_keys, unexpected_keys)``.

        Raises:
            KeyError: ``strict`` and keys are missing or unexpected.
            ValueError: a value's shape differs from the parameter's.

        Example:
            >>> from scitensor import nn
            >>> a, b = nn.Dense(2, 3), nn.Dense(2, 3)
            >>> b.load_state_dict(a.state_dict())
            LoadResult(missing_keys=[], unexpected_keys=[])
        """
        if not hasattr(state_dict, "keys"):
            raise TypeError(f"load_state_dict: expected a dict of tensors, got "
                            f"{type(state_dict).__name__}")
        targets: dict[str, Tensor] = dict(self.named_parameters())
        targets.update(self.named_buffers(persistent_only=True))
        missing = [k for k in targets if k not in state_dict]
        unexpected = [k for k in state_dict if k not in targets]
        if strict and (missing or unexpected):
            parts = []
            if missing:
                parts.append(f"missing keys {missing}")
            if unexpected:
                parts.append(f"unexpected keys {unexpected}")
            raise KeyError(f"load_state_dict: {type(self).__name__} state does not match: "
                           f"{'; '.join(parts)}. Pass strict=False to load the keys that "
                           "match")
        staged = []
        for key, t in targets.items():
            if key not in state_dict:
                continue
            v = state_dict[key]
            shape = tuple(v.shape) if hasattr(v, "shape") else np.shape(v)
            if shape != t.shape:
                raise ValueError(f"load_state_dict: {key!r} has shape {shape} in the state "
                                 f"dict but {t.shape} in the module ({type(self).__name__}); "
                                 "was the model built with the same sizes?")
            staged.append((t, _as_array(v, t, key)))
        for t, arr in staged:
            _write_into(t, arr)
        return LoadResult(missing, unexpected)

    # ---- repr ----------------------------------------------------------------------------
    def extra_repr(self) -> str:
        """One line of configuration shown in the repr (e.g. ``in_features=2, ...``)."""
        return ""

    def __repr__(self) -> str:
        lines = []
        for name, child in self.named_children():
            body = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {body}")
        extra = self.extra_repr()
        if not lines:
            return f"{type(self).__name__}({extra})"
        head = f"{type(self).__name__}({extra}" if extra else f"{type(self).__name__}("
        return head + "\n" + "\n".join(lines) + "\n)"


def _as_array(value, like: Tensor, key: str):
    """``value`` as a backend array with ``like``'s device and dtype."""
    if isinstance(value, Tensor):
        with no_grad():
            return value.detach().to(device=like.device, dtype=like.dtype).data
    try:
        host = np.asarray(value)
    except Exception as e:
        raise TypeError(f"load_state_dict: {key!r} is a {type(value).__name__}, which cannot "
                        f"become a tensor ({e})") from None
    return like.device.backend.asarray(host, like.dtype)


def _write_into(p: Tensor, arr) -> None:
    """Copy ``arr`` into ``p``'s storage in place (a fresh copy if the storage is read-only),
    so the tensor object, and anything holding it (an optimizer), stays the same."""
    flags = getattr(p.data, "flags", None)
    if flags is not None and getattr(flags, "writeable", True) and arr is not p.data:
        p.data[...] = arr
    else:
        p.data = arr.copy()

