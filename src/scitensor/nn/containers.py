"""Containers of sub-modules: ``ModuleList`` and ``ModuleDict``.

A container is a :class:`~scitensor.nn.Module` whose members are its items (it overrides
``_members``, the hook :class:`~scitensor.nn.Module` uses to find children), so everything
that walks a model (``parameters()``, ``state_dict()``, ``to()``, ``train()``/``eval()``,
``apply``) sees the items under dotted names: ``blocks.0.weight`` for a list stored as
``self.blocks``, ``heads.cls.weight`` for a dict stored as ``self.heads``. Plain lists and
dicts of modules are discovered too (see :mod:`scitensor.nn.module`); the containers add type
checks, list/dict methods, slicing and a readable ``repr``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from .module import Module

__all__ = ["ModuleDict", "ModuleList"]


def _module(value, op: str) -> Module:
    if not isinstance(value, Module):
        raise TypeError(f"{op}: items must be nn.Module instances, got {type(value).__name__}; "
                        "wrap functions in a Module or keep them outside the container")
    return value


class ModuleList(Module):
    """A list of modules, registered as children named ``0``, ``1``, ...

    Not callable itself: iterate over it in the owner's ``forward``.

    Args:
        modules: an iterable of modules (optional).

    Example:
        >>> import scitensor as st
        >>> from scitensor import nn
        >>> class Stack(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.layers = nn.ModuleList([nn.Dense(3, 3) for _ in range(2)])
        ...     def forward(self, x):
        ...         for layer in self.layers:
        ...             x = layer(x).relu()
        ...         return x
        >>> m = Stack()
        >>> list(m.state_dict())
        ['layers.0.weight', 'layers.0.bias', 'layers.1.weight', 'layers.1.bias']
        >>> m(st.ones(2, 3)).shape, len(m.layers)
        ((2, 3), 2)
    """

    def __init__(self, modules: Iterable[Module] | None = None):
        super().__init__()
        self._items: list[Module] = []
        if modules is not None:
            self.extend(modules)

    def _members(self) -> Iterator[tuple[str, Any]]:
        return ((str(i), m) for i, m in enumerate(self._items))

    def forward(self, *args, **kwargs):
        raise NotImplementedError("ModuleList is not callable; iterate over it in the owning "
                                  "module's forward (for layer in self.layers: x = layer(x)), "
                                  "or use nn.Sequential for a plain chain")

    def append(self, module: Module) -> ModuleList:
        """Add ``module`` at the end; returns ``self``."""
        self._items.append(_module(module, "ModuleList.append"))
        return self

    def extend(self, modules: Iterable[Module]) -> ModuleList:
        """Add every module of ``modules`` at the end; returns ``self``."""
        if isinstance(modules, Module) or not isinstance(modules, Iterable):
            raise TypeError(f"ModuleList.extend: expected an iterable of modules, got "
                            f"{type(modules).__name__}")
        new = [_module(m, "ModuleList.extend") for m in modules]
        self._items.extend(new)
        return self

    def insert(self, index: int, module: Module) -> None:
        """Insert ``module`` before position ``index``."""
        self._items.insert(index, _module(module, "ModuleList.insert"))

    def _index(self, index: int) -> int:
        n = len(self._items)
        if not isinstance(index, int) or isinstance(index, bool):
            raise TypeError(f"ModuleList: indices must be ints or slices, got "
                            f"{type(index).__name__}")
        if not -n <= index < n:
            raise IndexError(f"ModuleList: index {index} is out of range for {n} modules")
        return index % n

    def __getitem__(self, index):
        if isinstance(index, slice):
            return ModuleList(self._items[index])
        return self._items[self._index(index)]

    def __setitem__(self, index: int, module: Module) -> None:
        self._items[self._index(index)] = _module(module, "ModuleList")

    def __delitem__(self, index) -> None:
        if isinstance(index, slice):
            del self._items[index]
        else:
            del self._items[self._index(index)]

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._items)

    def __add__(self, other: Iterable[Module]) -> ModuleList:
        return ModuleList(list(self._items) + list(other))


class ModuleDict(Module):
    """An ordered dict of modules, registered as children under their keys.

    Keys are strings without dots (they become parts of dotted parameter names); insertion
    order is kept.

    Args:
        modules: a mapping or an iterable of ``(key, module)`` pairs (optional).

    Example:
        >>> from scitensor import nn
        >>> heads = nn.ModuleDict({"cls": nn.Dense(4, 3), "box": nn.Dense(4, 2)})
        >>> [n for n, _ in heads.named_parameters()]
        ['cls.weight', 'cls.bias', 'box.weight', 'box.bias']
        >>> "box" in heads, list(heads.keys())
        (True, ['cls', 'box'])
    """

    def __init__(self, modules: Mapping[str, Module] | Iterable | None = None):
        super().__init__()
        self._items: dict[str, Module] = {}
        if modules is not None:
            self.update(modules)

    def _members(self) -> Iterator[tuple[str, Any]]:
        return iter(list(self._items.items()))

    def forward(self, *args, **kwargs):
        raise NotImplementedError("ModuleDict is not callable; pick a module by key in the "
                                  "owning module's forward (self.heads['cls'](x))")

    @staticmethod
    def _key(key) -> str:
        if not isinstance(key, str) or not key or "." in key:
            raise KeyError(f"ModuleDict: keys must be non-empty strings without '.', got "
                           f"{key!r}")
        return key

    def __getitem__(self, key: str) -> Module:
        try:
            return self._items[key]
        except KeyError:
            raise KeyError(f"ModuleDict: no module named {key!r}; keys are "
                           f"{list(self._items)}") from None

    def __setitem__(self, key: str, module: Module) -> None:
        self._items[self._key(key)] = _module(module, "ModuleDict")

    def __delitem__(self, key: str) -> None:
        self.pop(key)

    def __contains__(self, key) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def keys(self):
        """The keys, in insertion order."""
        return self._items.keys()

    def values(self):
        """The modules, in insertion order."""
        return self._items.values()

    def items(self):
        """``(key, module)`` pairs, in insertion order."""
        return self._items.items()

    def pop(self, key: str) -> Module:
        """Remove the module under ``key`` and return it."""
        module = self[key]
        del self._items[key]
        return module

    def update(self, modules: Mapping[str, Module] | Iterable) -> None:
        """Add or replace modules from a mapping or from ``(key, module)`` pairs."""
        pairs = modules.items() if isinstance(modules, Mapping) else modules
        if isinstance(modules, Module) or not isinstance(pairs, Iterable):
            raise TypeError(f"ModuleDict.update: expected a mapping or (key, module) pairs, "
                            f"got {type(modules).__name__}")
        staged = []
        for item in pairs:
            if not isinstance(item, tuple | list) or len(item) != 2:
                raise TypeError(f"ModuleDict.update: expected (key, module) pairs, got "
                                f"{item!r:.60}")
            staged.append((self._key(item[0]), _module(item[1], "ModuleDict")))
        self._items.update(staged)
