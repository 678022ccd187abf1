"""Moving tensors between devices and dtypes (differentiable)."""

from __future__ import annotations

import numpy as np

from .. import dtypes as dt
from ..device import Device
from ._core import GRAD_ENABLED, check_tensor, make_result, sync_if_requested, wrap

__all__ = ["to"]


def _move(data, src: Device, dst: Device):
    if src is dst:
        return data
    if dst.type == "cpu":
        from ..runtime import check_host_sync

        check_host_sync(f"copying a tensor from {src} to the CPU")
        return src.backend.to_numpy(data)
    host = data if src.type == "cpu" else src.backend.to_numpy(data)
    return dst.backend.asarray(np.asarray(host), dt.from_numpy_dtype(host.dtype))


def to(x, device=None, dtype=None, copy: bool = False):
    """Return ``x`` on ``device`` with ``dtype`` (the same tensor when nothing changes and
    ``copy`` is False). Gradients flow back across the move or cast. A dtype may also be given
    as the first argument: ``x.to(st.float16)``.

    Example:
        >>> import scitensor as st
        >>> st.ones(2).to("cpu", dtype=st.float16).dtype
        scitensor.float16
    """
    x = check_tensor(x, "to")
    if dtype is None and (isinstance(device, dt.DType)
                          or (isinstance(device, str) and device in dt._BY_NAME)):
        device, dtype = None, device  # x.to(st.float16), as in PyTorch
    dev = x.device if device is None else Device(device)
    d = x.dtype if dtype is None else dt.as_dtype(dtype)
    if dev is x.device and d is x.dtype and not copy:
        return x
    data = _move(x.data, x.device, dev)
    if d.np != data.dtype:
        data = dev.backend.astype(data, d)
    elif copy and data is x.data:
        data = dev.backend.copy(data)
    src_dev, src_dtype = x.device, x.dtype
    if GRAD_ENABLED[0] and x.requires_grad and d.is_floating:
        out = make_result(data, dev, (x,),
                          lambda g, out: (to(g, device=src_dev, dtype=src_dtype),))
    else:
        out = wrap(data, dev)
    sync_if_requested(dev)
    return out
