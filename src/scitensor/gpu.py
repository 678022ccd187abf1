"""Running a block of GPU work as one submission (the seed's ``GPU.exec``).

Example:
    >>> import scitensor as st
    >>> out = st.gpu.run(lambda x: (x * 2).sum(), st.ones(3))
    >>> out.item()
    6.0
"""

from __future__ import annotations

from .autodiff.functional import tree_flatten
from .device import Device, get_default_device
from .runtime import sync_mode
from .tensor import Tensor

__all__ = ["run", "synchronize"]


def synchronize(device=None) -> None:
    """Wait until every operation queued on ``device`` (default: the default device) is done."""
    dev = get_default_device() if device is None else Device(device)
    dev.backend.synchronize()


def run(fn, *args, **kwargs):
    """Run ``fn(*args, **kwargs)`` as one unit of GPU work and wait once for all of it.

    Inside, ops are queued asynchronously even when sync-every-op mode is on; the host waits
    once at the end, on every device the arguments and results live on. On the CPU this just
    calls ``fn``. For a block that runs many times, :func:`scitensor.jit` goes further and
    replays it as one CUDA graph launch.

    Returns:
        Whatever ``fn`` returns, with its GPU work complete.
    """
    with sync_mode(False):
        out = fn(*args, **kwargs)
    devices = {leaf.device for leaf in tree_flatten((args, kwargs, out))[0]
               if isinstance(leaf, Tensor)}
    devices.add(get_default_device())
    for dev in devices:
        if dev.type != "cpu":
            dev.backend.synchronize()
    return out
