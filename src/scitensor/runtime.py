"""Execution state shared by ops: host-sync guards (for graph capture) and sync-every-op mode.

GPU work is asynchronous by default: the host waits only where the user reads data
(``numpy()``, ``item()``, ``repr``, ``bool()``). ``set_sync_mode(True)`` makes every op on a
GPU wait for its kernels, the unbatched baseline and a debugging aid that pins an asynchronous
error to the op that caused it.
"""

from __future__ import annotations

import contextlib

__all__ = ["HostSyncInCaptureError", "check_host_sync", "get_sync_mode", "is_capturing",
           "register_replay_hook", "set_sync_mode", "sync_mode"]

# the name of the jit function being captured, or None; set by scitensor.jit
CAPTURING: list = [None]
SYNC_EVERY_OP = [False]
# while capturing: the list of callables to run before every replay of the graph
REPLAY_HOOKS: list = [None]


class HostSyncInCaptureError(RuntimeError):
    """Raised when code being captured by ``scitensor.jit`` tries to read a value on the host."""


def check_host_sync(what: str) -> None:
    """Raise if a CUDA graph is being captured: ``what`` would need the host to wait."""
    fn = CAPTURING[0]
    if fn is not None:
        raise HostSyncInCaptureError(
            f"{what} inside scitensor.jit({fn}) needs the host to wait for the GPU, which a "
            "captured graph cannot do. Return the tensor from the function and read it after "
            "the call, or move the branch outside the jitted function")


def is_capturing() -> bool:
    """Whether a ``scitensor.jit`` capture is in progress."""
    return CAPTURING[0] is not None


def register_replay_hook(hook) -> None:
    """During capture, run ``hook()`` before every replay of the graph being captured.

    Captured code reads host values (a learning rate, a random-number offset) through device
    buffers; the hook refreshes those buffers so replays see the current values.
    """
    hooks = REPLAY_HOOKS[0]
    if hooks is not None:
        hooks.append(hook)


def set_sync_mode(enabled: bool) -> None:
    """Make every GPU op wait for completion (True) or run asynchronously (False, default)."""
    SYNC_EVERY_OP[0] = bool(enabled)


def get_sync_mode() -> bool:
    return SYNC_EVERY_OP[0]


@contextlib.contextmanager
def sync_mode(enabled: bool = True):
    """Context manager form of :func:`set_sync_mode`.

    Example:
        >>> import scitensor as st
        >>> with st.sync_mode():
        ...     y = st.ones(3) * 2
    """
    prev = SYNC_EVERY_OP[0]
    SYNC_EVERY_OP[0] = bool(enabled)
    try:
        yield
    finally:
        SYNC_EVERY_OP[0] = prev
