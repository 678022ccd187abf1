"""Parameter initialisation, drawn from scitensor's seeded generators (``st.manual_seed``).

``uniform`` makes a new tensor; the ``*_`` functions overwrite a tensor's values in place
(without recording gradients) and return it.

Example:
    >>> import scitensor as st
    >>> from scitensor import nn
    >>> layer = nn.Dense(3, 2)
    >>> _ = nn.init.zeros_(layer.bias)
    >>> layer.bias.tolist()
    [0.0, 0.0]
"""

from __future__ import annotations

import math

from ..autodiff.mode import no_grad
from ..creation import rand, randn
from ..tensor import Tensor

__all__ = ["constant_", "normal_", "ones_", "uniform", "uniform_", "xavier_uniform_",
           "zeros_"]


def uniform(shape, low: float, high: float, device=None, dtype=None,
            generator=None) -> Tensor:
    """A new tensor of numbers uniform in ``[low, high)``.

    Args:
        shape: the shape (a tuple of ints).
        low, high: the range.
        device, dtype: as for ``st.rand``.
        generator: an ``st.Generator`` (default: the global one).

    Returns:
        A tensor that does not require grad.

    Example:
        >>> import scitensor as st
        >>> from scitensor.nn import init
        >>> x = init.uniform((100,), -1.0, 1.0)
        >>> bool((x >= -1).all() and (x < 1).all())
        True
    """
    with no_grad():
        u = rand(*shape, device=device, dtype=dtype, generator=generator)
        return u * (high - low) + low


def _check(t, op: str) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{op}: expected a Tensor, got {type(t).__name__}")
    if not t.dtype.is_floating:
        raise TypeError(f"{op}: expected a floating tensor, got {t.dtype.name}")
    return t


def _assign(t: Tensor, value: Tensor) -> Tensor:
    with no_grad():
        t[...] = value
    return t


def uniform_(t: Tensor, low: float = 0.0, high: float = 1.0, generator=None) -> Tensor:
    """Fill ``t`` in place with numbers uniform in ``[low, high)``; returns ``t``."""
    _check(t, "uniform_")
    return _assign(t, uniform(t.shape, low, high, t.device, t.dtype, generator))


def normal_(t: Tensor, mean: float = 0.0, std: float = 1.0, generator=None) -> Tensor:
    """Fill ``t`` in place with normal numbers of the given mean and std; returns ``t``."""
    _check(t, "normal_")
    with no_grad():
        z = randn(*t.shape, device=t.device, dtype=t.dtype, generator=generator)
        return _assign(t, z * std + mean)


def constant_(t: Tensor, value: float) -> Tensor:
    """Fill ``t`` in place with ``value``; returns ``t``."""
    _check(t, "constant_")
    with no_grad():
        t[...] = value
    return t


def zeros_(t: Tensor) -> Tensor:
    """Fill ``t`` with zeros in place; returns ``t``."""
    return constant_(t, 0.0)


def ones_(t: Tensor) -> Tensor:
    """Fill ``t`` with ones in place; returns ``t``."""
    return constant_(t, 1.0)


def xavier_uniform_(t: Tensor, gain: float = 1.0, generator=None) -> Tensor:
    """Glorot uniform for a ``(fan_in, fan_out)`` weight: bound ``gain*sqrt(6/(in+out))``."""
    _check(t, "xavier_uniform_")
    if t.ndim < 2:
        raise ValueError(f"xavier_uniform_: needs a tensor with at least 2 dims, got shape "
                         f"{t.shape}")
    receptive = math.prod(t.shape[2:])
    fan_in, fan_out = t.shape[0] * receptive, t.shape[1] * receptive
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(t, -bound, bound, generator)
