"""The ops: one module per family, each op a forward plus its pullback.

Importing this package also attaches operators and methods (``+``, ``@``, ``x.sum()``, ...)
to :class:`scitensor.Tensor`.
"""

from __future__ import annotations

from ..tensor import Tensor
from . import elementwise, indexing, linalg, reduction, shape
from .elementwise import *  # noqa: F403
from .indexing import *  # noqa: F403
from .linalg import *  # noqa: F403
from .linear import linear
from .reduction import *  # noqa: F403
from .shape import *  # noqa: F403
from .transfer import to

__all__ = (elementwise.__all__ + indexing.__all__ + linalg.__all__ + reduction.__all__
           + shape.__all__ + ["linear", "to"])

E = elementwise


def _install(cls):
    def r(fn):
        return lambda self, other: fn(other, self)

    ops = {
        "__add__": E.add, "__radd__": r(E.add), "__sub__": E.sub, "__rsub__": r(E.sub),
        "__mul__": E.mul, "__rmul__": r(E.mul), "__truediv__": E.div,
        "__rtruediv__": r(E.div), "__floordiv__": E.floordiv, "__rfloordiv__": r(E.floordiv),
        "__mod__": E.mod, "__rmod__": r(E.mod), "__pow__": E.pow, "__rpow__": r(E.pow),
        "__matmul__": linalg.matmul, "__rmatmul__": r(linalg.matmul), "__neg__": E.neg,
        "__pos__": lambda self: self, "__abs__": E.abs, "__eq__": E.eq, "__ne__": E.ne,
        "__lt__": E.lt, "__le__": E.le, "__gt__": E.gt, "__ge__": E.ge,
        "__and__": E.logical_and, "__rand__": r(E.logical_and), "__or__": E.logical_or,
        "__ror__": r(E.logical_or), "__xor__": E.logical_xor, "__rxor__": r(E.logical_xor),
        "__invert__": E.logical_not, "__getitem__": indexing.getitem,
        "__setitem__": indexing.setitem,
    }
    methods = {
        name: getattr(mod, name)
        for mod in (elementwise, reduction, shape, linalg)
        for name in mod.__all__
    }
    methods.update(ops)
    methods.update({
        "clamp": E.clip, "view": shape.reshape, "take_along_axis": indexing.take_along_axis,
        "scatter_add": indexing.scatter_add, "index_add": indexing.index_add,
    })
    for name, fn in methods.items():
        if name in ("concatenate", "stack", "where", "split"):
            continue
        setattr(cls, name, fn)
    cls.split = lambda self, indices_or_sections, axis=0: shape.split(
        self, indices_or_sections, axis)
    cls.T = property(lambda self: shape.transpose(self))
    cls.mT = property(lambda self: shape.swapaxes(self, -1, -2))


_install(Tensor)
