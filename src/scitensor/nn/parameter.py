"""``Parameter``: a tensor that a :class:`~scitensor.nn.Module` owns and an optimizer updates."""

from __future__ import annotations

import numpy as np

from ..tensor import Tensor

__all__ = ["Parameter"]


class Parameter(Tensor):
    """A leaf tensor with ``requires_grad=True`` that modules register automatically.

    ``Parameter(t)`` shares ``t``'s backend array (no copy) and device; any other input goes
    through :func:`scitensor.tensor` first. Ops on a parameter return plain tensors.

    Args:
        data: a Tensor (its storage is shared) or data accepted by ``st.tensor``.
        requires_grad: whether gradients accumulate into ``.grad`` (default True).

    Example:
        >>> import scitensor as st
        >>> from scitensor import nn
        >>> w = nn.Parameter(st.zeros(2, 3))
        >>> w.requires_grad, w.shape
        (True, (2, 3))
    """

    __slots__ = ()

    def __init__(self, data, requires_grad: bool = True):
        if not isinstance(data, Tensor):
            from ..creation import tensor

            data = tensor(data)
        if requires_grad and not data.dtype.is_floating:
            raise TypeError(f"Parameter: only floating tensors can require gradients, got "
                            f"{data.dtype.name} of shape {data.shape}; pass a float tensor "
                            "or requires_grad=False")
        self.data = data.data
        self.device = data.device
        self.requires_grad = bool(requires_grad)
        self.grad = None
        self._parents = ()
        self._pullback = None
        self._retains_grad = False

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()

    def __reduce__(self):
        return (_rebuild, (np.asarray(self.numpy()), str(self.device), self.requires_grad))


def _rebuild(array, device, requires_grad):
    from ..creation import tensor

    return Parameter(tensor(array, device=device), requires_grad=requires_grad)
