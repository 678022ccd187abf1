"""``DataLoader``: batches of rows of one or more arrays, on a device, optionally shuffled.

On the CPU a batch is just ``source[indices]``. On a CUDA device each batch is gathered on the
host into a page-locked (pinned) buffer and copied to the GPU asynchronously on the current
stream, and the next batch is gathered and its copy queued before the current one is handed
out, so the host's gathering overlaps the GPU's work on the previous step. Sources that
already live on the GPU are indexed there.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from .. import dtypes as dt
from ..creation import from_dlpack, from_numpy, tensor
from ..device import Device, get_default_device
from ..tensor import Tensor

__all__ = ["DataLoader"]

_RING = 3  # pinned buffers per source: one being filled, one in flight, one handed out


class DataLoader:
    """Iterate over ``(batch_of_a, batch_of_b, ...)`` tuples of tensors on ``device``.

    Args:
        *arrays: NumPy arrays or tensors with the same first dimension (the samples).
        batch_size: samples per batch (> 0).
        shuffle: visit the samples in a fresh random order every epoch. The order depends only
            on ``seed`` and the epoch number (0 for the first pass, then 1, 2, ...; see
            :meth:`set_epoch`), so runs are reproducible.
        seed: seeds the shuffle.
        drop_last: drop the last batch when it has fewer than ``batch_size`` samples.
        device: where the batches go (default: the default device).

    Batches keep the source's dtype (``tensor`` rules: unsigned integers widen to int64). With
    a single source the iterator still yields 1-tuples, so ``for (x,) in loader`` works.

    Example:
        >>> import numpy as np
        >>> from scitensor.data import DataLoader
        >>> loader = DataLoader(np.zeros((10, 3)), np.arange(10), batch_size=4, shuffle=True)
        >>> len(loader), [tuple(xb.shape) for xb, yb in loader]
        (3, [(4, 3), (4, 3), (2, 3)])
    """

    def __init__(self, *arrays, batch_size: int, shuffle: bool = False, seed: int = 0,
                 drop_last: bool = False, device=None):
        if not arrays:
            raise ValueError("DataLoader: give at least one array or tensor")
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) \
                or batch_size <= 0:
            raise ValueError(f"DataLoader: batch_size must be a positive int, got {batch_size!r}")
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise TypeError(f"DataLoader: seed must be an int, got {type(seed).__name__}")
        if seed < 0:
            raise ValueError(f"DataLoader: seed must be >= 0, got {seed}")
        self.device = get_default_device() if device is None else Device(device)
        self.sources = [_source(a, i) for i, a in enumerate(arrays)]
        lengths = [len(s) if isinstance(s, np.ndarray) else s.shape[0] for s in self.sources]
        if len(set(lengths)) != 1:
            raise ValueError("DataLoader: all arrays must have the same number of samples "
                             f"(first dimension), got {lengths}")
        self.n = lengths[0]
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        self._pinned = None  # per source: a ring of pinned host buffers (CUDA only)

    def __len__(self) -> int:
        if self.drop_last:
            return self.n // self.batch_size
        return math.ceil(self.n / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose shuffled order the next pass uses (passes count up from it)."""
        self.epoch = _epoch(epoch)

    def order(self, epoch: int | None = None) -> np.ndarray:
        """The sample indices, in the order epoch ``epoch`` (default: the next) visits them."""
        epoch = self.epoch if epoch is None else _epoch(epoch)
        if not self.shuffle:
            return np.arange(self.n)
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def __iter__(self):
        order = self.order()
        self.epoch += 1
        bounds = [(i, min(i + self.batch_size, self.n))
                  for i in range(0, self.n, self.batch_size)]
        if self.drop_last and bounds and bounds[-1][1] - bounds[-1][0] < self.batch_size:
            bounds.pop()
        batches = (order[a:b] for a, b in bounds)
        if self.device.type == "cpu":
            for idx in batches:
                yield tuple(self._cpu_batch(s, idx) for s in self.sources)
        else:
            yield from self._cuda_batches(batches)

    def _cpu_batch(self, src, idx):
        if isinstance(src, np.ndarray):
            return _host_tensor(np.take(src, idx, axis=0), self.device)
        return src[from_numpy(idx, device=src.device)].to(self.device)

    # -- CUDA: host gather into pinned memory, asynchronous copy, one batch of look-ahead --

    def _cuda_batches(self, batches):
        import cupy  # a CUDA device was asked for, so CuPy is installed

        if self._pinned is None:
            self._pinned = [None if not isinstance(s, np.ndarray) else
                            [_pinned_like(cupy, s, self.batch_size) for _ in range(_RING)]
                            for s in self.sources]
        slot = 0
        pending = None
        for idx in batches:
            nxt = self._launch(cupy, idx, slot)
            slot = (slot + 1) % _RING
            if pending is not None:
                yield pending
            pending = nxt
        if pending is not None:
            yield pending

    def _launch(self, cupy, idx, slot):
        """Gather batch ``idx`` into pinned buffers ``slot`` and queue its copies to the GPU."""
        out = []
        with cupy.cuda.Device(self.device.index):
            stream = cupy.cuda.get_current_stream()
            for s, ring in zip(self.sources, self._pinned):
                if ring is None:  # a tensor already on a GPU: index it there
                    key = tensor(idx, device=s.device)
                    out.append(s[key].to(self.device))
                    continue
                host, event = ring[slot]
                if event is not None:  # the copy that last read this buffer must be done
                    event.synchronize()
                b = len(idx)
                np.take(s, idx, axis=0, out=host[:b])
                dev = cupy.empty(host[:b].shape, dtype=host.dtype)
                dev.set(host[:b], stream=stream)  # asynchronous: the buffer is pinned
                event = cupy.cuda.Event(block=False, disable_timing=True)
                event.record(stream)
                ring[slot] = (host, event)
                out.append(_device_tensor(dev, self.device))
        return tuple(out)


def _epoch(epoch) -> int:
    if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or epoch < 0:
        raise ValueError(f"DataLoader: epoch must be a non-negative int, got {epoch!r:.40}")
    return int(epoch)


def _source(a, i):
    if isinstance(a, Tensor):
        return a.numpy() if a.device.type == "cpu" else a.detach()
    if not isinstance(a, np.ndarray) and (hasattr(a, "__cuda_array_interface__")
                                          or hasattr(a, "__dlpack_device__")):
        t = from_dlpack(a)  # e.g. a CuPy array or a PyTorch tensor
        a = t.numpy() if t.device.type == "cpu" else t
        if isinstance(a, Tensor):
            return a
    try:
        arr = np.asarray(a)
    except (TypeError, ValueError) as e:
        raise TypeError(f"DataLoader: argument {i} ({type(a).__name__}) is not an array or "
                        f"tensor: {e}") from None
    if arr.dtype.kind not in "biuf" and arr.dtype != dt.bfloat16.np:
        raise TypeError(f"DataLoader: argument {i} has dtype {arr.dtype}; give numbers (bool, "
                        "integer or floating data)")
    if arr.ndim == 0:
        raise ValueError(f"DataLoader: argument {i} is a scalar; it needs a first (sample) "
                         "dimension")
    if arr.dtype == np.uint64 and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
        raise ValueError(f"DataLoader: argument {i} holds uint64 values up to {int(arr.max())}, "
                         "beyond int64 (the largest integer dtype); convert it to float64")
    if arr.dtype.kind == "u" or arr.dtype in (np.int8, np.int16):
        arr = arr.astype(np.int64)  # scitensor has no unsigned or narrow integer dtypes
    else:
        dt.from_numpy_dtype(arr.dtype)  # float128 and the like: a clear TypeError now
    return arr


def _host_tensor(arr: np.ndarray, device):
    return from_numpy(np.ascontiguousarray(arr), device=device)


def _pinned_like(cupy, src: np.ndarray, batch_size: int):
    shape = (min(batch_size, len(src)),) + src.shape[1:]
    count = int(np.prod(shape))
    mem = cupy.cuda.alloc_pinned_memory(max(count * src.dtype.itemsize, 1))
    host = np.frombuffer(mem, dtype=src.dtype, count=count).reshape(shape)
    return host, None


def _device_tensor(arr, device):
    try:
        return from_dlpack(arr)
    except (TypeError, ValueError, BufferError):  # e.g. bfloat16, which DLPack may refuse
        return tensor(arr, device=device)
