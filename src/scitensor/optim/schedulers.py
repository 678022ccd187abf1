"""Learning-rate schedules: ``StepLR``, ``CosineAnnealingLR``, ``LinearWarmup``, ``LambdaLR``.

A scheduler sets ``group["lr"]`` of its optimizer's parameter groups on the host, from the
group's base rate and the number of ``step()`` calls so far (closed forms, so the rate after
``n`` steps never depends on rounding accumulated over earlier steps). Under
:func:`scitensor.jit`, call ``scheduler.step()`` *outside* the jitted training step (between
calls): the optimizer's replay hook carries the new rate to the device before each replay.

Example:
    >>> import scitensor as st
    >>> from scitensor import optim
    >>> w = st.ones(2, requires_grad=True)
    >>> opt = optim.SGD([w], lr=1.0)
    >>> sched = optim.StepLR(opt, step_size=2, gamma=0.5)
    >>> lrs = []
    >>> for _ in range(5):
    ...     lrs.append(opt.param_groups[0]["lr"]); sched.step()
    >>> lrs
    [1.0, 1.0, 0.5, 0.5, 0.25]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

__all__ = ["CosineAnnealingLR", "LRScheduler", "LambdaLR", "LinearWarmup", "StepLR"]


class LRScheduler:
    """Base class: ``lr = factor(epoch) * base_lr`` per group (subclasses define ``get_lr``).

    Args:
        optimizer: any :class:`~scitensor.optim.Optimizer`.
        last_epoch: the index of the last step taken (``-1``: a fresh schedule; the
            constructor then sets every group's rate for epoch 0).

    Attributes:
        base_lrs: each group's rate when the scheduler was created.
        last_epoch: how many times ``step()`` has run (0 right after construction).
    """

    def __init__(self, optimizer, last_epoch: int = -1):
        if not hasattr(optimizer, "param_groups"):
            raise TypeError(f"{type(self).__name__}: expected an optimizer, got "
                            f"{type(optimizer).__name__}")
        self.optimizer = optimizer
        self.base_lrs = [float(g["lr"]) for g in optimizer.param_groups]
        self.last_epoch = int(last_epoch)
        self.step()

    def get_lr(self) -> list[float]:
        """The rates of every group at ``self.last_epoch``."""
        raise NotImplementedError

    def step(self) -> None:
        """Advance one epoch (or iteration) and write the new rates into the groups."""
        self.last_epoch += 1
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr

    def get_last_lr(self) -> list[float]:
        """The rates set by the last ``step()``."""
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        """``{"last_epoch": int, "base_lrs": [...]}`` plus the scheduler's settings."""
        return {k: v for k, v in self.__dict__.items()
                if k != "optimizer" and not callable(v)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` and re-apply the rate of its epoch."""
        self.__dict__.update(state)
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr


class StepLR(LRScheduler):
    """Multiply the rate by ``gamma`` every ``step_size`` epochs: ``base * gamma**(e // s)``.

    Example:
        >>> import scitensor as st
        >>> opt = st.optim.SGD([st.ones(1, requires_grad=True)], lr=0.1)
        >>> sched = st.optim.StepLR(opt, step_size=10, gamma=0.1)
        >>> for _ in range(10): sched.step()
        >>> round(opt.param_groups[0]["lr"], 6)
        0.01
    """

    def __init__(self, optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1):
        if int(step_size) < 1:
            raise ValueError(f"StepLR: step_size must be >= 1, got {step_size}")
        self.step_size = int(step_size)
        self.gamma = float(gamma)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        f = self.gamma ** (self.last_epoch // self.step_size)
        return [base * f for base in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    """Cosine decay from the base rate to ``eta_min`` over ``T_max`` epochs (then it stays at
    ``eta_min``): ``eta_min + (base - eta_min) * (1 + cos(pi * e / T_max)) / 2``.

    Example:
        >>> import scitensor as st
        >>> opt = st.optim.SGD([st.ones(1, requires_grad=True)], lr=1.0)
        >>> sched = st.optim.CosineAnnealingLR(opt, T_max=4)
        >>> for _ in range(2): sched.step()
        >>> round(opt.param_groups[0]["lr"], 6)
        0.5
    """

    def __init__(self, optimizer, T_max: int, eta_min: float = 0.0,
                 last_epoch: int = -1):
        if int(T_max) < 1:
            raise ValueError(f"CosineAnnealingLR: T_max must be >= 1, got {T_max}")
        self.T_max = int(T_max)
        self.eta_min = float(eta_min)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        e = min(self.last_epoch, self.T_max)
        c = (1.0 + math.cos(math.pi * e / self.T_max)) / 2.0
        return [self.eta_min + (base - self.eta_min) * c for base in self.base_lrs]


class LinearWarmup(LRScheduler):
    """Ramp the rate linearly from ``start_factor * base`` to ``base`` over ``warmup_steps``
    steps, then hold it (PyTorch's ``LinearLR`` with ``end_factor=1``).

    Example:
        >>> import scitensor as st
        >>> opt = st.optim.SGD([st.ones(1, requires_grad=True)], lr=1.0)
        >>> sched = st.optim.LinearWarmup(opt, warmup_steps=4)
        >>> lrs = []
        >>> for _ in range(6):
        ...     lrs.append(opt.param_groups[0]["lr"]); sched.step()
        >>> lrs
        [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    """

    def __init__(self, optimizer, warmup_steps: int, start_factor: float = 0.0,
                 last_epoch: int = -1):
        if int(warmup_steps) < 1:
            raise ValueError(f"LinearWarmup: warmup_steps must be >= 1, got {warmup_steps}")
        if not 0.0 <= start_factor <= 1.0:
            raise ValueError(f"LinearWarmup: start_factor must be in [0, 1], got {start_factor}")
        self.warmup_steps = int(warmup_steps)
        self.start_factor = float(start_factor)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        e = min(self.last_epoch, self.warmup_steps)
        f = self.start_factor + (1.0 - self.start_factor) * e / self.warmup_steps
        return [base * f for base in self.base_lrs]


class LambdaLR(LRScheduler):
    """``lr = base * lr_lambda(epoch)``, one function for all groups or one per group.

    Example (warm-up then cosine decay, a common transformer schedule):
        >>> import math
        >>> import scitensor as st
        >>> opt = st.optim.AdamW([st.ones(1, requires_grad=True)], lr=1e-3)
        >>> warm, total = 10, 100
        >>> f = lambda e: (e + 1) / warm if e < warm else \\
        ...     0.5 * (1 + math.cos(math.pi * (e - warm) / (total - warm)))
        >>> sched = st.optim.LambdaLR(opt, f)
        >>> round(opt.param_groups[0]["lr"], 6)
        0.0001
    """

    def __init__(self, optimizer, lr_lambda: Callable[[int], float] | list,
                 last_epoch: int = -1):
        n = len(optimizer.param_groups)
        fns = list(lr_lambda) if isinstance(lr_lambda, list | tuple) else [lr_lambda] * n
        if len(fns) != n or not all(callable(f) for f in fns):
            raise ValueError(f"LambdaLR: need one callable, or one per group ({n}), got "
                             f"{lr_lambda!r}")
        self.lr_lambdas = fns
        super().__init__(optimizer, last_epoch)

    def state_dict(self) -> dict[str, Any]:
        """As :meth:`LRScheduler.state_dict`, without the (unpicklable) functions."""
        return {k: v for k, v in super().state_dict().items() if k != "lr_lambdas"}

    def get_lr(self) -> list[float]:
        return [base * float(f(self.last_epoch)) for base, f in zip(self.base_lrs,
                                                                     self.lr_lambdas)]
