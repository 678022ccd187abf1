"""The CPU backend: NumPy arrays and NumPy's BLAS."""

from __future__ import annotations

import numpy as np

from .xp import ArrayBackend


class CpuBackend(ArrayBackend):
    """Runs every primitive with NumPy on the host. Work is synchronous."""

    name = "cpu"
    xp = np

    def __init__(self, device):
        self.device = device

    def to_numpy(self, a):
        return a

    def from_dlpack(self, obj):
        return np.from_dlpack(obj)
