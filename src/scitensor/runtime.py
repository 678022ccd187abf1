"""Execution state shared by ops: host-sync guards (for graph capture), sync-every-op mode and
deterministic mode.

GPU work is asynchronous by default: the host waits only where the user reads data
(``numpy()``, ``item()``, ``repr``, ``bool()``). ``set_sync_mode(True)`` makes every op on a
GPU wait for its kernels, the unbatched baseline and a debugging aid that pins an asynchronous
error to the op that caused it.

``set_deterministic(True)`` asks for bitwise run-to-run reproducible results: the same seed
and inputs give the same bits every time. The CPU backend always is. On CUDA most kernels are
(no atomics, fixed reduction orders); the few primitives that are not (listed in
:data:`NONDETERMINISTIC_PRIMITIVES`, see ``docs/determinism.md``) switch to a reproducible
implementation where the backend provides one (its ``deterministic_primitives``) and raise a
``RuntimeError`` otherwise, so deterministic mode never silently gives varying results.
"""

from __future__ import annotations

import contextlib

__all__ = ["HostSyncInCaptureError", "check_deterministic", "check_host_sync", "deterministic",
           "get_sync_mode", "is_capturing", "is_deterministic", "is_reproducible",
           "register_replay_hook",
           "set_deterministic", "set_sync_mode", "sync_mode"]

# the name of the jit function being captured, or None; set by scitensor.jit
CAPTURING: list = [None]
SYNC_EVERY_OP = [False]
DETERMINISTIC = [False]
# backend name -> primitives whose results may differ from run to run on that backend
# (atomic accumulation in an order that varies); see docs/determinism.md
NONDETERMINISTIC_PRIMITIVES: dict[str, frozenset] = {
    "cuda": frozenset({"add_at", "index_add", "scatter_add", "attention_backward"}),
}
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


def _flag(value, op: str) -> bool:
    """``value`` as a bool: True/False, NumPy bools and the ints 0 and 1 (anything else, such
    as the string ``"false"``, is a TypeError rather than a silent ``True``)."""
    if value is True or value is False:
        return value
    if type(value).__name__ == "bool_" or (isinstance(value, int) and value in (0, 1)):
        return bool(value)
    raise TypeError(f"{op}: expected True or False, got {value!r:.40}")


def set_sync_mode(enabled: bool) -> None:
    """Make every GPU op wait for completion (True) or run asynchronously (False, default)."""
    SYNC_EVERY_OP[0] = _flag(enabled, "set_sync_mode")


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
    SYNC_EVERY_OP[0] = _flag(enabled, "sync_mode")
    try:
        yield
    finally:
        SYNC_EVERY_OP[0] = prev


def set_deterministic(enabled: bool) -> None:
    """Ask for bitwise reproducible results (True) or allow faster atomics (False, default).

    In deterministic mode every op either gives the same bits on every run (same seed, same
    inputs, same device and library versions) or raises ``RuntimeError`` naming the op, when
    its backend has no reproducible implementation of it (see ``docs/determinism.md``).

    Args:
        enabled: a bool.

    Example:
        >>> import scitensor as st
        >>> st.set_deterministic(True); st.is_deterministic()
        True
        >>> st.set_deterministic(False)
    """
    DETERMINISTIC[0] = _flag(enabled, "set_deterministic")


def is_deterministic() -> bool:
    """Whether deterministic mode is on (see :func:`set_deterministic`).

    Example:
        >>> import scitensor as st
        >>> st.is_deterministic()
        False
    """
    return DETERMINISTIC[0]


@contextlib.contextmanager
def deterministic(enabled: bool = True):
    """Context manager form of :func:`set_deterministic`; the previous mode comes back after.

    Example:
        >>> import scitensor as st
        >>> with st.deterministic():
        ...     st.is_deterministic()
        True
        >>> st.is_deterministic()
        False
    """
    prev = DETERMINISTIC[0]
    set_deterministic(enabled)
    try:
        yield
    finally:
        DETERMINISTIC[0] = prev


def is_reproducible(backend, primitive: str) -> bool:
    """Whether ``backend.<primitive>`` gives the same bits on every run (in deterministic
    mode, where the backend switches to its reproducible implementation).

    Args:
        backend: a backend object (``device.backend``).
        primitive: a primitive's name, e.g. ``"index_add"``.

    Returns:
        False for the primitives in :data:`NONDETERMINISTIC_PRIMITIVES` that the backend does
        not list in its ``deterministic_primitives``; True otherwise.

    Example:
        >>> import scitensor as st
        >>> from scitensor import runtime
        >>> runtime.is_reproducible(st.Device("cpu").backend, "index_add")
        True
    """
    return (primitive not in NONDETERMINISTIC_PRIMITIVES.get(backend.name, ())
            or primitive in getattr(backend, "deterministic_primitives", ()))


def check_deterministic(backend, primitive: str, op: str) -> None:
    """In deterministic mode, raise if ``backend.<primitive>`` (called by ``op``) is not
    reproducible there.

    Raises:
        RuntimeError: deterministic mode is on and the primitive is not reproducible.

    Example:
        >>> import scitensor as st
        >>> from scitensor import runtime
        >>> with st.deterministic():
        ...     runtime.check_deterministic(st.Device("cpu").backend, "add_at", "getitem")
    """
    if DETERMINISTIC[0] and not is_reproducible(backend, primitive):
        raise RuntimeError(
            f"{op}: deterministic mode is on, but the {backend.name} backend has no "
            f"reproducible {primitive} yet (it accumulates with atomics, so results can differ "
            "in the last bits from run to run). Run this op on the CPU, or turn deterministic "
            "mode off with st.set_deterministic(False) (docs/determinism.md lists the ops)")
