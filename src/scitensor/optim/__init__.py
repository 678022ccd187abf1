"""Optimizers: ``SGD`` (momentum, Nesterov, weight decay), ``Adam`` and ``AdamW``.

They update tensors that have a ``.grad``; nothing here depends on :mod:`scitensor.nn`.

Example:
    >>> import scitensor as st
    >>> from scitensor import optim
    >>> w = st.tensor([3.0], requires_grad=True)
    >>> opt = optim.SGD([w], lr=0.25)
    >>> for _ in range(3):
    ...     opt.zero_grad(); (w * w).sum().backward(); opt.step()
    >>> w.item()
    0.375
"""

from .adam import Adam, AdamW
from .optimizer import Optimizer
from .sgd import SGD

__all__ = ["SGD", "Adam", "AdamW", "Optimizer"]
