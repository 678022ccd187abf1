"""The 8x8 handwritten-digits data set, bundled with scitensor.

Source: the test set of the UCI Machine Learning Repository's "Optical Recognition of
Handwritten Digits" (E. Alpaydin, C. Kaynak, 1998; https://doi.org/10.24432/C50P49), in the
1,797-sample copy that scikit-learn ships as ``sklearn/datasets/data/digits.csv.gz``.
Licence: Creative Commons Attribution 4.0 International (CC BY 4.0). See
``scitensor/datasets/README.md``.
"""

from __future__ import annotations

import functools
import gzip
import importlib.resources
import numbers

import numpy as np

from ..creation import from_numpy, tensor
from ..dtypes import as_dtype, get_default_dtype
from ..tensor import Tensor

__all__ = ["load_digits"]

N_SAMPLES = 1797
N_FEATURES = 64
N_CLASSES = 10


@functools.cache
def _raw() -> tuple[np.ndarray, np.ndarray]:
    """Pixels (1797, 64) uint8 in 0..16 and labels (1797,) int64, read once per process."""
    ref = importlib.resources.files("scitensor.datasets").joinpath("digits.csv.gz")
    with ref.open("rb") as f, gzip.open(f, "rt") as text:
        table = np.loadtxt(text, delimiter=",", dtype=np.int64)
    if table.shape != (N_SAMPLES, N_FEATURES + 1):
        raise RuntimeError(f"load_digits: the bundled digits.csv.gz has shape {table.shape}, "
                           f"expected {(N_SAMPLES, N_FEATURES + 1)}; reinstall scitensor")
    pixels = table[:, :N_FEATURES].astype(np.uint8)
    labels = table[:, N_FEATURES].copy()
    pixels.flags.writeable = False
    labels.flags.writeable = False
    return pixels, labels


def _split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split: from every class, ``round(n_class * test_fraction)`` go to test."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in range(N_CLASSES):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(idx.size)]
        n_test = round(idx.size * test_fraction)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    # shuffle across classes too, so a split is not sorted by label
    train_idx = np.concatenate(train)
    test_idx = np.concatenate(test)
    return train_idx[rng.permutation(train_idx.size)], test_idx[rng.permutation(test_idx.size)]


def load_digits(split: str = "train", test_fraction: float = 0.2, seed: int = 0,
                device=None, dtype=None) -> tuple[Tensor, Tensor]:
    """Load the bundled 8x8 handwritten digits (1,797 images, 10 classes), offline.

    The train/test split is stratified by class and fixed by ``seed``: the same arguments
    always give the same tensors, and train and test never share an image.

    Args:
        split: ``"train"``, ``"test"`` or ``"all"`` (every image, in file order).
        test_fraction: the share of each class held out for ``"test"`` (0 < f < 1).
        seed: seeds the split.
        device: where to put the tensors (default: the default device).
        dtype: floating dtype of the images (default: the default dtype, float32).

    Returns:
        ``(x, y)``: images ``x`` of shape ``(n, 64)`` scaled to ``[0, 1]`` (pixel / 16) and
        integer labels ``y`` (int64) of shape ``(n,)``.

    Example:
        >>> from scitensor.datasets import load_digits
        >>> x, y = load_digits("train")
        >>> x.shape, y.shape, float(x.max())
        ((1438, 64), (1438,), 1.0)
        >>> load_digits("test")[0].shape
        (359, 64)
    """
    if split not in ("train", "test", "all"):
        raise ValueError(f"load_digits: split must be 'train', 'test' or 'all', got {split!r}")
    if not isinstance(test_fraction, numbers.Real) or not 0.0 < test_fraction < 1.0:
        raise ValueError(f"load_digits: test_fraction must be in (0, 1), got {test_fraction!r}")
    if not isinstance(seed, numbers.Integral):
        raise TypeError(f"load_digits: seed must be an int, got {type(seed).__name__}")
    pixels, labels = _raw()
    if split == "all":
        idx = np.arange(N_SAMPLES)
    else:
        train_idx, test_idx = _split(labels, float(test_fraction), int(seed))
        idx = train_idx if split == "train" else test_idx
    d = get_default_dtype() if dtype is None else as_dtype(dtype)
    if not d.is_floating:
        raise TypeError(f"load_digits: dtype must be floating, got {d.name}")
    x = tensor(pixels[idx].astype(np.float64) / 16.0, dtype=d, device=device)
    y = from_numpy(labels[idx].copy(), device=device)
    return x, y
