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

__all__ = ["Generator", "default_generator", "manual_seed", "seed"]


class Generator:
    """A counter-based random stream: ``seed`` selects the stream, ``offset`` the position.

    Args:
        seed: any integer in [0, 2**64).
    """

    __slots__ = ("seed", "offset", "_lock")

    def __init__(self, seed: int = 0):
        self._lock = threading.Lock()
        self.manual_seed(seed)

    def manual_seed(self, seed: int) -> Generator:
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise TypeError(f"manual_seed: seed must be an int, got {type(seed).__name__}")
        self.seed = seed % (1 << 64)
        self.offset = 0
        return self

    def next_offset(self) -> int:
        """Reserve the next counter block for one draw."""
        with self._lock:
            off = self.offset
            self.offset += 1
            return off

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
