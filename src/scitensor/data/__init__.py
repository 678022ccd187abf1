"""Feeding data to a model: :class:`DataLoader` batches arrays or tensors onto a device.

Example:
    >>> import numpy as np
    >>> from scitensor.data import DataLoader
    >>> x, y = np.arange(10.0).reshape(5, 2), np.arange(5)
    >>> [b[1].tolist() for b in DataLoader(x, y, batch_size=2)]
    [[0, 1], [2, 3], [4]]
"""

from .loader import DataLoader

__all__ = ["DataLoader"]
