"""Parameter initialisation, drawn from scitensor's seeded generators (``st.manual_seed``).

``uniform`` makes a new tensor; the ``*_`` functions overwrite a tensor's values in place
(without recording gradients) and return it.

Fans (for the Xavier/Glorot and Kaiming/He schemes) follow scitensor's layouts, which differ
by rank:

- a 2-D weight is read in :class:`~scitensor.nn.Dense`'s ``(in_features, out_features)``
  layout: ``fan_in = shape[0]``, ``fan_out = shape[1]`` (the transpose of PyTorch's
  ``nn.Linear``, so the same call gives the same distribution as PyTorch does for Linear);
- a weight with 3 or more dims is read in :class:`~scitensor.nn.Conv2d`'s ``(out_channels,
  in_channels / groups, *kernel)`` layout: ``fan_in = shape[1] * prod(kernel)``, ``fan_out =
  shape[0] * prod(kernel)`` (as PyTorch). ``ConvTranspose2d`` stores ``(in_channels,
  out_channels / groups, *kernel)``, so for it ``mode="fan_in"`` reads the output side:
  pass ``mode="fan_out"`` to scale by its input fan.

:func:`fans` returns the pair for a shape.

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

from .. import dtypes as dt
from ..autodiff.mode import no_grad
from ..creation import rand, randn
from ..tensor import Tensor

__all__ = ["calculate_gain", "constant_", "fans", "kaiming_normal_", "kaiming_uniform_",
           "normal_", "ones_", "trunc_normal_", "uniform", "uniform_", "xavier_normal_",
           "xavier_uniform_", "zeros_"]


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

    Raises:
        TypeError: ``dtype`` is not a floating dtype.

    Example:
        >>> import scitensor as st
        >>> from scitensor.nn import init
        >>> x = init.uniform((100,), -1.0, 1.0)
        >>> bool((x >= -1).all() and (x < 1).all())
        True
    """
    dtype = _floating_dtype(dtype, "uniform")
    with no_grad():
        u = rand(*shape, device=device, dtype=dtype, generator=generator)
        return u * (high - low) + low


def _floating_dtype(dtype, op: str) -> dt.DType:
    """``dtype`` (``None``: the default dtype) as a floating DType, or a TypeError naming ``op``
    (parameters must be floating to be trained); layers call it with their own name."""
    d = dt.get_default_dtype() if dtype is None else dt.as_dtype(dtype)
    if not d.is_floating:
        raise TypeError(f"{op}: dtype must be floating (float16, bfloat16, float32 or float64), "
                        f"got {d.name}")
    return d


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


def _fill(t: Tensor, value: float, op: str) -> Tensor:
    _check(t, op)
    with no_grad():
        t[...] = value
    return t


def constant_(t: Tensor, value: float) -> Tensor:
    """Fill ``t`` in place with ``value``; returns ``t``."""
    return _fill(t, value, "constant_")


def zeros_(t: Tensor) -> Tensor:
    """Fill ``t`` with zeros in place; returns ``t``."""
    return _fill(t, 0.0, "zeros_")


def ones_(t: Tensor) -> Tensor:
    """Fill ``t`` with ones in place; returns ``t``."""
    return _fill(t, 1.0, "ones_")


def xavier_uniform_(t: Tensor, gain: float = 1.0, generator=None) -> Tensor:
    """Glorot uniform: bound ``gain * sqrt(6 / (fan_in + fan_out))`` (fans: :func:`fans`)."""
    _check(t, "xavier_uniform_")
    fan_in, fan_out = fans(t.shape, "xavier_uniform_")
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(t, -bound, bound, generator)


def fans(shape, op: str = "fans") -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight of ``shape`` in scitensor's layouts (module docs).

    Args:
        shape: a tuple of at least 2 ints (or a Tensor, whose shape is used).
        op: the name used in error messages.

    Returns:
        ``(fan_in, fan_out)``.

    Example:
        >>> from scitensor.nn import init
        >>> init.fans((784, 128)), init.fans((16, 3, 5, 5))
        ((784, 128), (75, 400))
    """
    if isinstance(shape, Tensor):
        shape = shape.shape
    shape = tuple(shape)
    if len(shape) < 2:
        raise ValueError(f"{op}: fans are defined for weights with at least 2 dims, got shape "
                         f"{shape}; initialise a bias with uniform_/zeros_ instead")
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


_LINEAR = ("linear", "identity", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
           "conv_transpose2d", "conv_transpose3d", "sigmoid")


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The recommended gain for an activation (PyTorch's table): linear/conv/sigmoid 1,
    tanh 5/3, relu sqrt(2), leaky_relu ``sqrt(2 / (1 + slope**2))`` (slope ``param``, default
    0.01), selu 3/4, gelu and silu treated as relu (sqrt(2)).

    Example:
        >>> from scitensor.nn import init
        >>> round(init.calculate_gain("relu"), 4), init.calculate_gain("linear")
        (1.4142, 1.0)
    """
    name = str(nonlinearity).lower()
    if name in _LINEAR:
        return 1.0
    if name == "tanh":
        return 5.0 / 3.0
    if name in ("relu", "gelu", "silu"):
        return math.sqrt(2.0)
    if name == "leaky_relu":
        slope = 0.01 if param is None else float(param)
        return math.sqrt(2.0 / (1.0 + slope * slope))
    if name == "selu":
        return 0.75
    raise ValueError(f"calculate_gain: unknown nonlinearity {nonlinearity!r}; use one of "
                     f"{', '.join(_LINEAR)}, tanh, relu, gelu, silu, leaky_relu, selu")


def _kaiming_std(t: Tensor, a: float, mode: str, nonlinearity: str, op: str) -> float:
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"{op}: mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = fans(t.shape, op)
    fan = fan_in if mode == "fan_in" else fan_out
    return calculate_gain(nonlinearity, a) / math.sqrt(fan)


def kaiming_uniform_(t: Tensor, a: float = 0.0, mode: str = "fan_in",
                     nonlinearity: str = "leaky_relu", generator=None) -> Tensor:
    """He uniform: ``U(-b, b)`` with ``b = gain * sqrt(3 / fan)`` (std ``gain / sqrt(fan)``).

    Args:
        t: the weight (at least 2 dims; fans as in the module docs).
        a: the negative slope for ``nonlinearity="leaky_relu"``.
        mode: ``"fan_in"`` (keeps forward variance) or ``"fan_out"`` (backward variance).
        nonlinearity: as for :func:`calculate_gain`.
        generator: an ``st.Generator`` (default: the global one).

    Returns:
        ``t``, filled in place.

    Example:
        >>> import scitensor as st
        >>> from scitensor.nn import init
        >>> w = init.kaiming_uniform_(st.empty(300, 200), nonlinearity="relu")
        >>> bool(w.abs().max().item() <= (6 / 300) ** 0.5)
        True
    """
    _check(t, "kaiming_uniform_")
    bound = math.sqrt(3.0) * _kaiming_std(t, a, mode, nonlinearity, "kaiming_uniform_")
    return uniform_(t, -bound, bound, generator)


def kaiming_normal_(t: Tensor, a: float = 0.0, mode: str = "fan_in",
                    nonlinearity: str = "leaky_relu", generator=None) -> Tensor:
    """He normal: ``N(0, std**2)`` with ``std = gain / sqrt(fan)`` (arguments as
    :func:`kaiming_uniform_`).

    Example:
        >>> import scitensor as st
        >>> from scitensor.nn import init
        >>> w = init.kaiming_normal_(st.empty(512, 512), mode="fan_out", nonlinearity="relu")
        >>> round(float(w.numpy().std()) * 512 ** 0.5, 1)
        1.4
    """
    _check(t, "kaiming_normal_")
    return normal_(t, 0.0, _kaiming_std(t, a, mode, nonlinearity, "kaiming_normal_"), generator)


def xavier_normal_(t: Tensor, gain: float = 1.0, generator=None) -> Tensor:
    """Glorot normal: ``N(0, std**2)`` with ``std = gain * sqrt(2 / (fan_in + fan_out))``.

    Example:
        >>> import scitensor as st
        >>> from scitensor.nn import init
        >>> w = init.xavier_normal_(st.empty(400, 400))
        >>> round(float(w.numpy().std()) * 400 ** 0.5, 1)  # std sqrt(2 / (400 + 400))
        1.0
    """
    _check(t, "xavier_normal_")
    fan_in, fan_out = fans(t.shape, "xavier_normal_")
    return normal_(t, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), generator)


def trunc_normal_(t: Tensor, mean: float = 0.0, std: float = 1.0, a: float = -2.0,
                  b: float = 2.0, generator=None) -> Tensor:
    """Fill ``t`` with ``N(mean, std**2)`` numbers conditioned on ``[a, b]`` (absolute bounds,
    as PyTorch's ``trunc_normal_``), by rejection: out-of-range draws are redrawn, in
    batches sized from the interval's probability mass, until every element is in range.

    The loop reads counts on the host (fine for initialisation; not for captured code).

    Args:
        t: the tensor to fill.
        mean, std: of the untruncated normal (``std > 0``).
        a, b: the bounds (``a < b``, holding probability mass of at least 1e-4).
        generator: an ``st.Generator`` (default: the global one).

    Returns:
        ``t``, filled in place.

    Example:
        >>> import scitensor as st
        >>> from scitensor.nn import init
        >>> w = init.trunc_normal_(st.empty(1000), std=0.02, a=-0.04, b=0.04)
        >>> bool(w.abs().max().item() <= 0.04)
        True
    """
    _check(t, "trunc_normal_")
    if not std > 0 or not a < b:
        raise ValueError(f"trunc_normal_: need std > 0 and a < b, got std={std}, a={a}, b={b}")

    def cdf(z: float) -> float:
        return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))

    mass = cdf((b - mean) / std) - cdf((a - mean) / std)
    if mass < 1e-4:
        raise ValueError(f"trunc_normal_: [{a}, {b}] holds only {mass:.2e} of N({mean}, "
                         f"{std}**2); rejection sampling would take too long — widen the "
                         "interval or move the mean inside it")
    from ..ops.shape import concatenate

    with no_grad():
        z = randn(*t.shape, device=t.device, dtype=t.dtype, generator=generator) * std + mean
        bad = (z < a) | (z > b)
        count = int(bad.sum().item())
        goods, have = [], 0
        while have < count:  # redraw the out-of-range ones, in batches sized by the mass
            draw = randn(int((count - have) / mass * 1.25) + 16, device=t.device,
                         dtype=t.dtype, generator=generator) * std + mean
            goods.append(draw[(draw >= a) & (draw <= b)])
            have += goods[-1].shape[0]
        if count:
            z[bad] = (goods[0] if len(goods) == 1 else concatenate(goods))[:count]
        return _assign(t, z)
