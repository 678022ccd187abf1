"""Devices: where a tensor's memory lives and which backend runs its ops.

A :class:`Device` is ``cpu`` or ``cuda:N``. Every tensor knows its device; an op over tensors
on two devices is an error, never an implicit copy. Nothing here touches the GPU until asked:
importing scitensor never probes CUDA.

Example:
    >>> import scitensor as st
    >>> st.Device("cpu"), st.Device("cuda:1").index
    (Device('cpu'), 1)
    >>> with st.default_device("cpu"):
    ...     st.zeros(2).device
    Device('cpu')
"""

from __future__ import annotations

import contextlib
import logging
import numbers
import threading

__all__ = [
    "Device",
    "best_device",
    "cuda_status",
    "default_device",
    "devices",
    "get_default_device",
    "set_default_device",
]

log = logging.getLogger("scitensor")


class Device:
    """A device: ``Device("cpu")``, ``Device("cuda")`` (= ``cuda:0``), ``Device("cuda", 1)``.

    Devices are interned, so ``Device("cuda") is Device("cuda:0")``.

    Args:
        spec: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, or another Device.
        index: the GPU index when ``spec`` is ``"cuda"``.
    """

    __slots__ = ("type", "index", "_backend", "__weakref__")
    _cache: dict = {}

    def __new__(cls, spec="cpu", index: int | None = None):
        if isinstance(spec, Device):
            return spec
        if index is not None and type(index) is not int:
            if isinstance(index, bool) or not isinstance(index, numbers.Integral):
                raise TypeError(f"Device: index must be an int, got {index!r}")
            index = int(index)
        key = (spec, index)
        dev = cls._cache.get(key)
        if dev is not None:
            return dev
        if not isinstance(spec, str):
            raise TypeError(f"Device: expected a string like 'cpu' or 'cuda:0', got "
                            f"{type(spec).__name__}")
        kind, _, idx = spec.strip().lower().partition(":")
        if kind not in ("cpu", "cuda"):
            raise ValueError(f"Device: unknown device type {spec!r}; use 'cpu' or 'cuda[:N]'")
        if idx:
            if index is not None:
                raise ValueError(f"Device: index given twice ({spec!r} and index={index})")
            if not idx.isdigit():
                raise ValueError(f"Device: bad device index in {spec!r}; use e.g. 'cuda:0'")
            index = int(idx)
        if kind == "cpu":
            if index not in (None, 0):
                raise ValueError(f"Device: the CPU has no index (got {spec!r}, index={index})")
            index = None
        elif index is None:
            index = 0
        elif index < 0:
            raise ValueError(f"Device: negative CUDA index {index}")
        canonical = (kind, index)
        dev = cls._cache.get(canonical)
        if dev is None:
            dev = object.__new__(cls)
            dev.type = kind
            dev.index = index
            dev._backend = None
            cls._cache[canonical] = dev
        cls._cache[key] = dev
        return dev

    @property
    def backend(self):
        """The backend object that runs ops on this device (created on first use)."""
        b = self._backend
        if b is None:
            from .backends import backend_for

            b = self._backend = backend_for(self)
        return b

    def __repr__(self) -> str:
        return f"Device({str(self)!r})"

    def __str__(self) -> str:
        return "cpu" if self.type == "cpu" else f"cuda:{self.index}"

    def __eq__(self, other) -> bool:
        if isinstance(other, str):
            try:
                other = Device(other)
            except (ValueError, TypeError):
                return False
        return self is other

    def __hash__(self) -> int:
        return hash((self.type, self.index))

    def __reduce__(self):
        return (Device, (str(self),))


CPU = Device("cpu")

_state = threading.local()
_global_default = [CPU]


def get_default_device() -> Device:
    """The device constructors use when none is given (the CPU unless changed)."""
    stack = getattr(_state, "stack", None)
    return stack[-1] if stack else _global_default[0]


def set_default_device(device) -> None:
    """Set the process-wide default device, e.g. ``st.set_default_device(st.best_device())``.

    Raises:
        RuntimeError: if the device is not usable here (checked now rather than at the next
            constructor).
    """
    dev = Device(device)
    dev.backend  # noqa: B018 - fail now if the device cannot be used
    _global_default[0] = dev


@contextlib.contextmanager
def default_device(device):
    """Context manager: constructors inside the block put tensors on ``device``.

    Example:
        >>> import scitensor as st
        >>> with st.default_device("cpu"):
        ...     x = st.ones(3)
        >>> x.device
        Device('cpu')
    """
    dev = Device(device)
    dev.backend  # noqa: B018 - fail now if the device cannot be used
    stack = getattr(_state, "stack", None)
    if stack is None:
        stack = _state.stack = []
    stack.append(dev)
    try:
        yield dev
    finally:
        stack.pop()


def cuda_status() -> tuple[bool, str]:
    """``(usable, reason)``: whether a CUDA device can run a kernel here, and why (not).

    The first call imports CuPy and launches a tiny kernel; the answer is cached.
    """
    from .backends import cuda_probe

    return cuda_probe()


def devices() -> list[Device]:
    """All usable devices: the CPU first, then each CUDA device that can run a kernel."""
    out = [CPU]
    ok, _ = cuda_status()
    if ok:
        from .backends import cuda_device_count

        out += [Device("cuda", i) for i in range(cuda_device_count())]
    return out


def best_device() -> Device:
    """The best usable device: ``cuda:0`` if a kernel launches there, else the CPU.

    The reason for choosing the CPU is logged at INFO level on the ``scitensor`` logger
    (``scitensor info`` prints it too).

    Example:
        >>> import scitensor as st
        >>> st.best_device() in st.devices()
        True
    """
    ok, why = cuda_status()
    if ok:
        return Device("cuda", 0)
    log.info("best_device: using the CPU because %s", why)
    return CPU
