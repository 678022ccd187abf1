"""Optimizers (``SGD``, ``Adam``, ``AdamW``), gradient clipping and learning-rate schedules.

They update tensors that have a ``.grad``; nothing here depends on :mod:`scitensor.nn`. On a
CUDA device the updates are fused multi-tensor kernels that :func:`scitensor.jit` can capture
(see :mod:`scitensor.optim._fused`); on the CPU they are NumPy ufuncs.

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
from .clip import clip_grad_norm_
from .optimizer import Optimizer
from .schedulers import CosineAnnealingLR, LambdaLR, LinearWarmup, LRScheduler, StepLR
from .sgd import SGD

__all__ = ["SGD", "Adam", "AdamW", "CosineAnnealingLR", "LRScheduler", "LambdaLR",
           "LinearWarmup", "Optimizer", "StepLR", "clip_grad_norm_"]
