"""The one ``Tensor`` type: a backend array, its device, and its place in the autodiff graph.

Operators and math methods (``+``, ``@``, ``.sum()``, ``.reshape()``, ...) are attached by
:mod:`scitensor.ops`; this module holds what a tensor *is*.
"""

from __future__ import annotations

import numpy as np

from . import dtypes as dt
from .autodiff.mode import GRAD_ENABLED
from .device import CPU, Device

__all__ = ["Tensor", "wrap", "make_result"]

_DTYPE_OF = {d.np: d for d in dt.ALL_DTYPES}


def _freed_pullback(g, out):
    raise RuntimeError(
        "backward: this part of the graph was already freed by an earlier backward(); call "
        "backward(retain_graph=True) the first time if you need to differentiate it again")


class Tensor:
    """An n-dimensional array on one device, optionally tracked for reverse-mode autodiff.

    Make tensors with :func:`scitensor.tensor` and the other constructors rather than calling
    this class; ``Tensor(data, ...)`` does the same as ``scitensor.tensor(data, ...)``.

    Attributes:
        data: the backend array (``numpy.ndarray`` on the CPU, ``cupy.ndarray`` on CUDA).
        device: the :class:`~scitensor.Device` holding it.
        requires_grad: whether gradients flow to (and through) this tensor.
        grad: the accumulated gradient after ``backward()`` (leaf tensors), else ``None``.

    Example:
        >>> import scitensor as st
        >>> x = st.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
        >>> y = (x * x).sum()
        >>> y.backward()
        >>> x.grad.tolist()
        [[2.0, 4.0], [6.0, 8.0]]
    """

    __slots__ = ("data", "device", "requires_grad", "grad", "_parents", "_pullback",
                 "_retains_grad", "__weakref__")
    __array_priority__ = 1000  # make ndarray + Tensor defer to Tensor.__radd__

    def __init__(self, data, dtype=None, device=None, requires_grad=False):
        from .creation import tensor as _tensor

        t = _tensor(data, dtype=dtype, device=device, requires_grad=requires_grad)
        self.data = t.data
        self.device = t.device
        self.requires_grad = t.requires_grad
        self.grad = None
        self._parents = ()
        self._pullback = None
        self._retains_grad = False

    # ---- basic properties ------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> dt.DType:
        return _DTYPE_OF[self.data.dtype]

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return self.data.size

    @property
    def backend(self):
        return self.device.backend

    @property
    def is_leaf(self) -> bool:
        """True for tensors not produced by a recorded op (user-created parameters)."""
        return self._pullback is None

    def __len__(self) -> int:
        if self.data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.data.shape[0]

    # ---- host access (these wait for the device) ---------------------------------------
    def numpy(self) -> np.ndarray:
        """A host ``numpy.ndarray`` with the values (a copy on CUDA; shares memory on CPU).

        Example:
            >>> import scitensor as st
            >>> st.arange(3).numpy()
            array([0, 1, 2])
        """
        from .runtime import check_host_sync

        check_host_sync("Tensor.numpy()")
        return self.device.backend.to_numpy(self.data)

    def item(self):
        """The single value of a one-element tensor as a Python number."""
        if self.data.size != 1:
            raise ValueError(f"item(): tensor of shape {self.shape} has {self.size} elements; "
                             "only one-element tensors convert to a Python number")
        return self.numpy().reshape(()).item()

    def tolist(self):
        """Nested Python lists of the values."""
        return self.numpy().tolist()

    def __array__(self, dtype=None, copy=None):
        # NumPy 2 protocol: copy=True must return fresh memory, copy=False must not copy
        a = self.numpy()
        needs_copy = self.device.type != "cpu" or (dtype is not None and a.dtype != dtype)
        if copy is False and needs_copy:
            raise ValueError(f"__array__(copy=False): a {self.dtype.name} tensor on "
                             f"{self.device} cannot become a NumPy array"
                             f"{'' if dtype is None else f' of dtype {np.dtype(dtype)}'} "
                             "without a copy")
        if dtype is not None and a.dtype != dtype:
            return a.astype(dtype)
        if copy and a is self.data:
            return a.copy()
        return a

    def __iter__(self):
        if self.data.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        for i in range(self.data.shape[0]):
            yield self[i]

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __index__(self) -> int:
        if self.dtype.kind not in "ib":
            raise TypeError(f"only integer tensors can be used as an index, not {self.dtype}")
        return int(self.item())

    def __bool__(self) -> bool:
        from .runtime import check_host_sync

        check_host_sync("bool(Tensor) (Python branching on a tensor value)")
        if self.data.size != 1:
            raise ValueError(f"the truth value of a tensor with {self.size} elements is "
                             "ambiguous; use .any() or .all()")
        return bool(self.item())

    def __repr__(self) -> str:
        from .runtime import check_host_sync

        check_host_sync("repr(Tensor) / print")
        body = np.array2string(np.asarray(self.numpy(), dtype=self._repr_np_dtype()),
                               separator=", ", prefix="tensor(", threshold=200, edgeitems=3,
                               precision=4)
        extras = [f"shape={self.shape}", f"dtype={self.dtype.name}", f"device='{self.device}'"]
        if self.requires_grad:
            extras.append("requires_grad=True")
        return f"tensor({body}, {', '.join(extras)})"

    def _repr_np_dtype(self):
        return np.float32 if self.dtype is dt.bfloat16 else None

    # ---- DLPack and CUDA array interface ---------------------------------------------
    def __dlpack__(self, *args, **kwargs):
        if self.dtype is dt.bfloat16 and self.device.type == "cpu":
            raise TypeError("__dlpack__: NumPy cannot export bfloat16 through DLPack; convert "
                            "with .astype(st.float32) first")
        return self.data.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        return self.data.__dlpack_device__()

    @property
    def __cuda_array_interface__(self):
        if self.device.type != "cuda":
            raise AttributeError("__cuda_array_interface__ exists only for CUDA tensors; this "
                                 f"tensor is on {self.device}")
        return self.data.__cuda_array_interface__

    # ---- device and dtype conversion ---------------------------------------------------
    def to(self, device=None, dtype=None, copy: bool = False) -> Tensor:
        """Move to ``device`` and/or cast to ``dtype`` (differentiable).

        Example:
            >>> import scitensor as st
            >>> st.ones(2).to(dtype=st.float64).dtype
            scitensor.float64
        """
        from .ops.transfer import to

        return to(self, device=device, dtype=dtype, copy=copy)

    def cpu(self) -> Tensor:
        return self.to(CPU)

    def cuda(self, index: int = 0) -> Tensor:
        return self.to(Device("cuda", index))

    def astype(self, dtype) -> Tensor:
        """Cast to ``dtype`` (differentiable for floating dtypes)."""
        from .ops.transfer import to

        return to(self, dtype=dt.as_dtype(dtype))

    def detach(self) -> Tensor:
        """A tensor sharing the data but cut from the graph (``requires_grad=False``)."""
        return wrap(self.data, self.device)

    def requires_grad_(self, flag: bool = True) -> Tensor:
        """Mark this leaf tensor as needing gradients (in place); returns ``self``."""
        if flag and not self.dtype.is_floating:
            raise TypeError(f"requires_grad_: only floating tensors can require gradients, "
                            f"this one is {self.dtype}")
        if not flag and self._pullback is not None:
            raise RuntimeError("requires_grad_(False): this tensor is the output of a recorded "
                               "op; use .detach() instead")
        self.requires_grad = bool(flag)
        return self

    def retain_grad(self) -> Tensor:
        """Keep ``.grad`` for this non-leaf tensor after ``backward()``."""
        if not self.requires_grad:
            raise RuntimeError("retain_grad: this tensor does not require grad")
        self._retains_grad = True
        return self

    def zero_grad_(self) -> Tensor:
        self.grad = None
        return self

    def backward(self, cotangent=None, retain_graph: bool = False,
                 create_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into ``.grad`` of every leaf that requires grad.

        Args:
            cotangent: the output gradient; may be omitted for one-element tensors (ones).
            retain_graph: keep the graph for another backward pass.
            create_graph: record the backward pass itself (gradients of gradients).
        """
        from .autodiff.engine import backward

        backward(self, cotangent, retain_graph=retain_graph, create_graph=create_graph)

    # hashing by identity: tensors are used as dict keys (optimizer state)
    __hash__ = object.__hash__


def wrap(data, device) -> Tensor:
    """A Tensor around a backend array, with no autodiff history (internal, fast)."""
    t = object.__new__(Tensor)
    t.data = data
    t.device = device
    t.requires_grad = False
    t.grad = None
    t._parents = ()
    t._pullback = None
    t._retains_grad = False
    return t


def make_result(data, device, parents, pullback) -> Tensor:
    """Wrap an op's output and record its node when a parent needs a gradient.

    ``parents`` is a tuple of the op's tensor inputs (``None`` for scalars); ``pullback(g,
    out)`` maps the output cotangent ``g`` to a tuple of cotangents aligned with ``parents``
    (``None`` where there is none). The engine reduces broadcast cotangents back to each
    parent's shape and dtype, so pullbacks may return them broadcast.
    """
    t = object.__new__(Tensor)
    t.data = data
    t.device = device
    t.grad = None
    t._retains_grad = False
    if GRAD_ENABLED[0]:
        for p in parents:
            if p is not None and p.requires_grad:
                t.requires_grad = True
                t._parents = parents
                t._pullback = pullback
                return t
    t.requires_grad = False
    t._parents = ()
    t._pullback = None
    return t


Tensor.freed_pullback = staticmethod(_freed_pullback)
