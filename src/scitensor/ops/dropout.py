"""Dropout: zero each element with probability ``p`` and scale the rest by ``1 / (1 - p)``.

The keep-mask comes from the backend's counter-based Philox stream
(``bernoulli_mask(shape, p_keep, seed, offset)``), so a seed reproduces it on every device and
the CUDA backend can draw it inside a captured graph. The mask (one byte per element) is the
only thing the pullback keeps.
"""

from __future__ import annotations

import numbers

from ..random import Generator, default_generator
from ._core import check_tensor, make_result, sync_if_requested
from .elementwise import mul

__all__ = ["dropout"]


def _masked_scale(x, mask, scale: float):
    """``x * mask * scale``: linear in ``x`` and its own adjoint."""
    data = x.backend.dropout_apply(x.data, mask, scale)
    return make_result(data, x.device, (x,),
                       lambda g, out: (_masked_scale(g, mask, scale),))


def dropout(x, p: float = 0.5, training: bool = True, generator: Generator | None = None):
    """Randomly zero elements of ``x`` with probability ``p`` (training mode only).

    Args:
        x: a floating tensor of any shape.
        p: drop probability in [0, 1]. ``p=0`` (or ``training=False``) returns ``x`` itself;
            ``p=1`` returns ``x * 0``.
        training: apply dropout (True) or return ``x`` unchanged (False).
        generator: a :class:`scitensor.Generator` (default: the global one); each call
            advances it by one draw.

    Returns:
        A tensor like ``x``: kept elements scaled by ``1 / (1 - p)``, dropped ones zero.

    Example:
        >>> import scitensor as st
        >>> from scitensor.ops.dropout import dropout
        >>> y = dropout(st.ones(1000), 0.5, generator=st.Generator(0))
        >>> sorted(set(y.tolist()))
        [0.0, 2.0]
    """
    x = check_tensor(x, "dropout")
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p must be a probability in [0, 1], got {p!r}")
    if not x.dtype.is_floating:
        raise TypeError(f"dropout: expected a floating tensor, got {x.dtype.name}; convert "
                        "with .astype(st.float32)")
    if generator is not None and not isinstance(generator, Generator):
        raise TypeError(f"dropout: generator must be a scitensor.Generator, got "
                        f"{type(generator).__name__}")
    if not training or p == 0:
        return x
    if p == 1:
        return mul(x, 0.0)
    gen = default_generator if generator is None else generator
    mask = x.backend.bernoulli_mask(x.shape, 1.0 - float(p), gen.seed,
                                    gen.next_offset(x.device))
    out = _masked_scale(x, mask, 1.0 / (1.0 - float(p)))
    sync_if_requested(x.device)
    return out
