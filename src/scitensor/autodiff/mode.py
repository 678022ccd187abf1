"""Gradient-recording mode: ``no_grad``, ``enable_grad``, ``set_grad_enabled``.

The flag is process-wide (one list cell, read on every op, so it must be cheap).
"""

from __future__ import annotations

import functools

__all__ = ["enable_grad", "is_grad_enabled", "no_grad", "set_grad_enabled"]

GRAD_ENABLED = [True]


def is_grad_enabled() -> bool:
    """Whether ops currently record the graph for autodiff."""
    return GRAD_ENABLED[0]


class set_grad_enabled:
    """Context manager (and decorator) that turns graph recording on or off.

    Example:
        >>> import scitensor as st
        >>> x = st.ones(2, requires_grad=True)
        >>> with st.set_grad_enabled(False):
        ...     (x * 2).requires_grad
        False
    """

    def __init__(self, mode: bool):
        self.mode = bool(mode)
        self.prev = None

    def __enter__(self):
        self.prev = GRAD_ENABLED[0]
        GRAD_ENABLED[0] = self.mode
        return self

    def __exit__(self, *exc):
        GRAD_ENABLED[0] = self.prev
        return False

    def __call__(self, fn):
        mode = self.mode

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with set_grad_enabled(mode):
                return fn(*args, **kwargs)

        return wrapper


class no_grad(set_grad_enabled):
    """Context manager / decorator: ops inside record nothing (inference, optimizer updates).

    Example:
        >>> import scitensor as st
        >>> w = st.ones(3, requires_grad=True)
        >>> with st.no_grad():
        ...     y = w * 2
        >>> y.requires_grad
        False
    """

    def __init__(self):
        super().__init__(False)


class enable_grad(set_grad_enabled):
    """Context manager / decorator: record the graph even inside ``no_grad``."""

    def __init__(self):
        super().__init__(True)
