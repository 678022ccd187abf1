"""Fused scaled-dot-product attention: ``softmax(q kᵀ · scale) v`` without the score matrix.

The forward calls ``backend.attention_forward`` (CUDA: our FlashAttention-2 style kernels;
CPU: the plain composition in query chunks) and keeps the per-row logsumexp; the pullback
calls ``backend.attention_backward``, which recomputes the probabilities from ``q``, ``k``
and the logsumexp. Conventions (bottom-right causal alignment, rows that see no key) are
those of :mod:`scitensor.backends.xp_attention`.

Second derivatives: when the pullback itself is being recorded (``create_graph=True``, i.e.
graph recording is on inside the pullback), it differentiates the plain composition
:func:`attention_reference` written with scitensor ops instead, so gradients of gradients
work (at the composition's O(Sq·Sk) memory).
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from .. import dtypes as dt
from ..runtime import DETERMINISTIC, is_reproducible
from ._core import GRAD_ENABLED, Tensor, check_tensor, make_result, sync_if_requested, wrap

__all__ = ["attention_reference", "scaled_dot_product_attention"]

_OP = "scaled_dot_product_attention"


def _check(q, k, v, scale):
    q = check_tensor(q, _OP, "q")
    k = check_tensor(k, _OP, "k")
    v = check_tensor(v, _OP, "v")
    if not (q.device is k.device is v.device):
        raise ValueError(f"{_OP}: q, k, v are on {q.device}, {k.device}, {v.device}; move them "
                         "to one device first")
    if not (q.dtype is k.dtype is v.dtype) or not q.dtype.is_floating:
        raise TypeError(f"{_OP}: q, k, v must share one floating dtype, got {q.dtype.name}, "
                        f"{k.dtype.name}, {v.dtype.name}; cast them with .astype(...)")
    if q.ndim != 4 or k.ndim != 4 or v.shape != k.shape:
        raise ValueError(f"{_OP}: expected q (batch, heads, seq_q, head_dim) and k, v (batch, "
                         f"kv_heads, seq_k, head_dim) of one shape; got q {q.shape}, k "
                         f"{k.shape}, v {v.shape}")
    b, h, _, d = q.shape
    if k.shape[0] != b or k.shape[3] != d:
        raise ValueError(f"{_OP}: batch and head_dim of q {q.shape} and k {k.shape} differ")
    hkv = k.shape[1]
    if hkv == 0 or h % hkv:
        raise ValueError(f"{_OP}: q has {h} heads and k/v {hkv}; the query heads must be a "
                         "multiple of the key/value heads (grouped-query attention)")
    if d == 0:
        raise ValueError(f"{_OP}: head_dim is 0 (q {q.shape}); attention needs head_dim >= 1")
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, numbers.Real)):
        raise TypeError(f"{_OP}: scale must be a number or None, got {scale!r:.40}")
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    if not math.isfinite(scale):
        raise ValueError(f"{_OP}: scale must be finite, got {scale}")
    return q, k, v, scale


def scaled_dot_product_attention(q, k, v, causal: bool = False, scale=None) -> Tensor:
    """Attention ``softmax(q kᵀ · scale [+ causal mask]) v``, fused and differentiable.

    Args:
        q: ``(batch, heads, seq_q, head_dim)``.
        k, v: ``(batch, kv_heads, seq_k, head_dim)``; ``heads`` must be a multiple of
            ``kv_heads`` (grouped-query attention; ``kv_heads == heads`` is plain MHA).
        causal: hide key ``j`` from query ``i`` when ``j > i + seq_k - seq_q`` (bottom-right
            aligned: PyTorch's ``is_causal`` when ``seq_q == seq_k``). Query rows that see no
            key output zeros.
        scale: factor on the scores; default ``1 / sqrt(head_dim)``.

    Returns:
        ``(batch, heads, seq_q, head_dim)`` in the inputs' dtype. float16/bfloat16 compute in
        float32; on CUDA float32 follows :func:`scitensor.set_matmul_precision`.

    Example:
        >>> import scitensor as st
        >>> from scitensor.ops.attention import scaled_dot_product_attention
        >>> q = st.ones(1, 2, 3, 4); kv = st.ones(1, 1, 5, 4)
        >>> scaled_dot_product_attention(q, kv, kv, causal=True).shape
        (1, 2, 3, 4)
    """
    q, k, v, scale = _check(q, k, v, scale)
    causal = bool(causal)
    be = q.backend
    out_data, lse = be.attention_forward(q.data, k.data, v.data, causal, scale)
    if not (GRAD_ENABLED[0] and (q.requires_grad or k.requires_grad or v.requires_grad)):
        out = wrap(out_data, q.device)
        sync_if_requested(q.device)
        return out

    def pullback(g, out):
        # create_graph: differentiate the composition (see module docs); deterministic mode on
        # a backend whose fused backward accumulates with atomics: the same, which is
        # reproducible (at O(Sq * Sk) memory)
        if GRAD_ENABLED[0] or (DETERMINISTIC[0]
                               and not is_reproducible(be, "attention_backward")):
            from ..autodiff.functional import vjp

            _, back = vjp(lambda a, b, c: attention_reference(a, b, c, causal, scale), q, k, v)
            return back(g)
        dq, dk, dv = be.attention_backward(g.data, q.data, k.data, v.data, out.data, lse,
                                           causal, scale)
        dev = q.device
        return (wrap(dq, dev) if q.requires_grad else None,
                wrap(dk, dev) if k.requires_grad else None,
                wrap(dv, dev) if v.requires_grad else None)

    out = make_result(out_data, q.device, (q, k, v), pullback)
    sync_if_requested(q.device)
    return out


def attention_reference(q, k, v, causal: bool = False, scale=None) -> Tensor:
    """The plain composition ``softmax(q kᵀ · scale) v`` with scitensor ops (O(Sq·Sk) memory).

    Same arguments, conventions and result as :func:`scaled_dot_product_attention`; every step
    is an op, so it can be differentiated any number of times. float16/bfloat16 compute in
    float32.

    Example:
        >>> import scitensor as st
        >>> from scitensor.ops.attention import attention_reference, scaled_dot_product_attention
        >>> q = st.randn(1, 1, 3, 4)
        >>> a = scaled_dot_product_attention(q, q, q, causal=True)
        >>> b = attention_reference(q, q, q, causal=True)
        >>> bool(((a - b).abs() < 1e-5).all())
        True
    """
    from ..creation import tensor
    from .elementwise import mul, where
    from .linalg import matmul
    from .reduction import softmax

    q, k, v, scale = _check(q, k, v, scale)
    b, h, sq, d = q.shape
    hkv, sk = k.shape[1], k.shape[2]
    in_dtype = q.dtype
    if in_dtype.itemsize < 4:
        q, k, v = q.astype(dt.float32), k.astype(dt.float32), v.astype(dt.float32)
    q5 = q.reshape(b, hkv, h // hkv, sq, d)
    k5 = k.reshape(b, hkv, 1, sk, d)
    v5 = v.reshape(b, hkv, 1, sk, d)
    s = mul(matmul(q5, k5.swapaxes(-1, -2)), scale)
    if sk == 0:
        p = s  # no keys: (..., Sq, 0) probabilities and a zero output
    elif causal and sq:
        rows = np.arange(sq).reshape(-1, 1) + (sk - sq)
        visible = np.arange(sk).reshape(1, -1) <= rows
        # a large finite fill keeps rows that see nothing finite (they are zeroed below)
        fill = -0.5 * float(np.finfo(q.dtype.np).max)
        p = softmax(where(tensor(visible, device=q.device), s, fill), axis=-1)
        if sq > sk:
            seen = visible.any(axis=1, keepdims=True).astype(q.dtype.np)
            p = mul(p, tensor(seen, device=q.device))
    else:
        p = softmax(s, axis=-1)
    out = matmul(p, v5).reshape(b, h, sq, d)
    return out if out.dtype is in_dtype else out.astype(in_dtype)
