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
    """Turn graph recording on or off: as a plain call, a context manager, or a decorator.

    As in PyTorch, calling ``st.set_grad_enabled(False)`` switches the mode at once; used with
    ``with`` the previous mode comes back at the end of the block, and used as a decorator it
    applies only while the decorated function runs.

    Example:
        >>> import scitensor as st
        >>> x = st.ones(2, requires_grad=True)
        >>> with st.set_grad_enabled(False):
        ...     (x * 2).requires_grad
        False
        >>> st.is_grad_enabled()
        True
    """

    def __init__(self, mode: bool):
        from ..runtime import _flag

        self.mode = _flag(mode, "set_grad_enabled")
        self._prev = []  # a stack: one instance may be entered again while active
        self._undo = None
        if type(self) is set_grad_enabled:  # the call itself takes effect (PyTorch semantics)
            self._undo = GRAD_ENABLED[0]
            GRAD_ENABLED[0] = self.mode

    def __enter__(self):
        undo, self._undo = self._undo, None
        self._prev.append(GRAD_ENABLED[0] if undo is None else undo)
        GRAD_ENABLED[0] = self.mode
        return self

    def __exit__(self, *exc):
        GRAD_ENABLED[0] = self._prev.pop()
        return False

    def __call__(self, fn):
        if self._undo is not None:  # used as a decorator: construction must not leak
            GRAD_ENABLED[0], self._undo = self._undo, None
        ctx = enable_grad if self.mode else no_grad

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with ctx():
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
