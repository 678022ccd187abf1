"""Random numbers: counter-based Philox generators with explicit seeds.

A :class:`Generator` is a (seed, offset) pair: every draw uses the current offset and advances
it by one, so the same seed gives the same sequence on every device (the CPU and CUDA backends
run the same Philox4x32-10 stream). ``manual_seed`` reseeds the default generator.

Example:
    >>> import scitensor as st
    >>> _ = st.manual_seed(0); a = st.rand(3)
    >>> _ = st.manual_seed(0); b = st.rand(3)
    >>> bool((a == b).all())
    True
    >>> g = st.Generator(seed=42)
    >>> st.randn(2, generator=g).shape
    (2,)
"""

from __future__ import annotations

import threading

__all__ = ["CapturedOffset", "Generator", "default_generator", "manual_seed", "seed"]


class CapturedOffset:
    """An offset drawn while a CUDA graph is captured: the kernel adds ``*delta_ptr`` (a
    device counter the generator advances before every replay) to ``baked``."""

    __slots__ = ("baked", "delta_ptr")

    def __init__(self, baked: int, delta_ptr: int):
        self.baked = baked
        self.delta_ptr = delta_ptr

    def __int__(self) -> int:
        return self.baked


class Generator:
    """A counter-based random stream: ``seed`` selects the stream, ``offset`` the position.

    Args:
        seed: any integer in [0, 2**64).
    """

    __slots__ = ("seed", "offset", "_lock", "_deltas", "_captures")

    def __init__(self, seed: int = 0):
        self._lock = threading.Lock()
        self._deltas = {}  # device -> (cupy uint64[1] buffer, host staging array)
        self._captures = {}  # (id of a capture's hook list, device) -> [first, count]
        self.manual_seed(seed)

    def manual_seed(self, seed: int) -> Generator:
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise TypeError(f"manual_seed: seed must be an int, got {type(seed).__name__}")
        self.seed = seed % (1 << 64)
        self.offset = 0
        return self

    def next_offset(self, device=None):
        """Reserve the next counter block for one draw on ``device``.

        While ``scitensor.jit`` captures a CUDA graph, the offset returned is a
        :class:`CapturedOffset`: the graph's kernels read a device-side advance that this
        generator refreshes before every replay, so each replay draws fresh numbers.
        """
        with self._lock:
            off = self.offset
            self.offset += 1
        if device is not None and device.type == "cuda":
            from .runtime import REPLAY_HOOKS

            hooks = REPLAY_HOOKS[0]
            if hooks is not None:
                return self._captured(off, device, hooks)
        return off

    def _captured(self, off: int, device, hooks) -> CapturedOffset:
        import numpy as np

        buf = self._deltas.get(device)
        if buf is None:
            import cupy

            # allocated with cudaMalloc directly: it must outlive every graph that reads it
            mem = cupy.cuda.memory.UnownedMemory(cupy.cuda.runtime.malloc(8), 8, self)
            arr = cupy.ndarray((1,), np.uint64, cupy.cuda.MemoryPointer(mem, 0))
            buf = self._deltas[device] = (arr, np.zeros(1, np.uint64))
        key = (id(hooks), device)
        entry = self._captures.get(key)
        if entry is None:
            entry = self._captures[key] = [off, 0]
            import cupy

            arr, host = buf
            stream = device.backend.stream
            memcpy_async = cupy.cuda.runtime.memcpyAsync

            def refresh():
                # before a replay: advance past the offsets the graph uses, and tell it where
                host[0] = self.offset - entry[0]
                self.offset += entry[1]
                memcpy_async(arr.data.ptr, host.ctypes.data, 8, 1, stream.ptr)  # 1: H2D

            hooks.append(refresh)
        entry[1] = off - entry[0] + 1
        return CapturedOffset(off, buf[0].data.ptr)

    def get_state(self) -> tuple[int, int]:
        return (self.seed, self.offset)

    def set_state(self, state: tuple[int, int]) -> None:
        self.seed, self.offset = int(state[0]), int(state[1])

    def __repr__(self) -> str:
        return f"Generator(seed={self.seed}, offset={self.offset})"


default_generator = Generator(0)


def manual_seed(seed: int) -> Generator:
    """Reseed the default generator (used by every random op not given a generator)."""
    return default_generator.manual_seed(seed)


def seed() -> int:
    """The default generator's current seed."""
    return default_generator.seed
