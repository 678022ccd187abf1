"""``MultiHeadAttention``: projections around the fused scaled-dot-product attention.

Inputs and outputs are ``(batch, seq, embed_dim)``. Self-attention runs one fused ``qkv``
projection (a :class:`~scitensor.nn.Dense` to ``(heads + 2 * kv_heads) * head_dim``
columns), the fused attention op and the output projection. The step between them, from the
projection's ``(batch, seq, heads, head_dim)`` layout to the kernels' ``(batch, heads, seq,
head_dim)`` and back, is one op here (:func:`_attention_seq_major`) that costs no copies: the
attention primitives take strided operands, so the kernels read the query, key and value heads
where the projection wrote them, write the output in the order the output projection reads,
and the pullback has them write the query, key and value gradients straight into one gradient
buffer per projection.

Dropout on the attention probabilities has no fused kernel: in training mode with
``dropout > 0`` the layer runs the plain composition (O(seq²) memory) instead.
"""

from __future__ import annotations

import math
import numbers

from .. import dtypes as dt
from ..autodiff.mode import GRAD_ENABLED
from ..ops._core import sync_if_requested
from ..ops.attention import attention_reference
from ..ops.dropout import dropout as dropout_op
from ..runtime import DETERMINISTIC, is_reproducible
from ..tensor import Tensor, make_result, wrap
from .layers import Dense
from .module import Module

__all__ = ["MultiHeadAttention"]

_ALL = slice(None)


def _heads_view(src: Tensor, h0: int, h1: int) -> Tensor:
    """Heads ``[h0, h1)`` of a ``(B, S, N, D)`` tensor as ``(B, h1 - h0, S, D)`` (ops)."""
    return src[:, :, h0:h1].permute(0, 2, 1, 3)


def _attention_seq_major(sources: tuple[Tensor, ...], roles, causal: bool, scale) -> Tensor:
    """Fused attention on sequence-major operands, differentiable in every source.

    The backend's attention primitives take strided operands, so nothing here is copied: the
    query, key and value heads are ``(B, heads, S, D)`` views of the sources, the output is
    written through such a view of a ``(B, Sq, H, D)`` array, and the pullback passes the
    incoming gradient the same way and has the kernels write the query, key and value
    gradients straight into views of one gradient buffer per source.

    Args:
        sources: distinct tensors shaped ``(B, S, N, D)`` (projection outputs).
        roles: three ``(source index, h0, h1)`` triples: where the query, key and value heads
            are (axis 2, half-open ranges; ranges within one source must not overlap).
        causal, scale: as for :func:`scitensor.nn.functional.scaled_dot_product_attention`.

    Returns:
        ``(B, Sq, H, D)``: each query position's heads side by side, ready to be reshaped to
        ``(B * Sq, H * D)`` for the output projection without a copy.

    The caller checks the shapes: :class:`MultiHeadAttention` makes the sources with its own
    projections (one device, whole heads of ``head_dim >= 1``, query heads a multiple of the
    key/value heads) and checks the batch and sequence sizes of its inputs; only the dtypes
    (inputs of different dtypes project to different ones) are checked here.
    """
    dev = sources[0].device
    be = sources[0].backend
    for src in sources[1:]:
        if src.dtype is not sources[0].dtype:
            raise TypeError(f"MultiHeadAttention: the query, key and value project to "
                            f"{', '.join(s.dtype.name for s in sources)}; pass inputs of one "
                            "dtype (cast with .astype(...))")

    def heads(datas, role):
        """Heads ``[h0, h1)`` of source ``i``'s ``(B, S, N, D)`` array as a ``(B, h1 - h0, S,
        D)`` view; ``datas`` holds the sources' arrays transposed to ``(B, N, S, D)``."""
        i, h0, h1 = role
        return be.getitem(datas[i], (_ALL, slice(h0, h1)))

    # one transpose per source, then a slice per role: the views are those of slicing heads
    # first and transposing each (same strides and offsets) in fewer backend calls
    seq_major = [be.transpose(src.data, _SWAP) for src in sources]
    q, k, v = [heads(seq_major, r) for r in roles]
    b, h, sq, d = q.shape
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    y = be.empty((b, sq, h, d), sources[0].dtype)
    o = be.transpose(y, _SWAP)  # the kernels write (B, H, Sq, D) into y's (B, Sq, H, D)
    res, lse = be.attention_forward(q, k, v, causal, scale, out=o)
    _into(be, o, res)
    sync_if_requested(dev)
    if not (GRAD_ENABLED[0] and any(s.requires_grad for s in sources)):
        return wrap(y, dev)

    def pullback(g, out):
        # create_graph, or deterministic mode on a backend whose fused backward accumulates
        # with atomics: differentiate the composition instead (as ops.attention does)
        if GRAD_ENABLED[0] or (DETERMINISTIC[0]
                               and not is_reproducible(be, "attention_backward")):
            from ..autodiff.functional import vjp

            def composed(*srcs):
                qs, ks, vs = (_heads_view(srcs[i], h0, h1) for i, h0, h1 in roles)
                return attention_reference(qs, ks, vs, causal, scale).permute(0, 2, 1, 3)

            return vjp(composed, *sources)[1](g)
        # one gradient buffer per source; zeros only where the roles leave heads uncovered
        bufs = []
        for i, src in enumerate(sources):
            covered = sum(h1 - h0 for j, h0, h1 in roles if j == i) == src.shape[2]
            make = be.empty if covered or not src.requires_grad else be.zeros
            bufs.append(make(src.shape, src.dtype))
        bufs_seq_major = [be.transpose(buf, _SWAP) for buf in bufs]
        dst = tuple(heads(bufs_seq_major, r) for r in roles)
        got = be.attention_backward(be.transpose(g.data, _SWAP), q, k, v, o, lse, causal, scale,
                                    grads_out=dst)
        for want, res in zip(dst, got):
            _into(be, want, res)
        return tuple(wrap(buf, dev) if src.requires_grad else None
                     for buf, src in zip(bufs, sources))

    return make_result(y, dev, tuple(sources), pullback)


_SWAP = (0, 2, 1, 3)  # (B, S, heads, D) <-> (B, heads, S, D)


def _into(be, dst, res) -> None:
    """Make sure ``res``, a primitive's result for its ``out=``/``grads_out=`` array ``dst``,
    is in ``dst``: backends return ``dst`` itself; anything else (a backend that computed
    elsewhere, e.g. a low-precision retry in float32) is copied in."""
    if res is not dst:
        be.setitem(dst, Ellipsis, res)


def _attention_composed(q: Tensor, k: Tensor, v: Tensor, causal: bool, scale: float,
                        p: float) -> Tensor:
    """``dropout(softmax(q kᵀ · scale [+ mask]), p) v`` with ops, on ``(B, H, S, D)`` operands
    (grouped-query heads and bottom-right causal alignment as the fused op). The mask is made
    on the device, so this is capturable by ``st.jit``."""
    from ..creation import arange
    from ..ops.elementwise import where
    from ..ops.reduction import softmax

    in_dtype = q.dtype
    if in_dtype.itemsize < 4:
        q, k, v = q.astype(dt.float32), k.astype(dt.float32), v.astype(dt.float32)
    b, h, sq, d = q.shape
    hkv, sk = k.shape[1], k.shape[2]
    q5 = q.reshape(b, hkv, h // hkv, sq, d)
    s = (q5 @ k.reshape(b, hkv, 1, sk, d).swapaxes(-1, -2)) * scale
    if causal and sq and sk:
        rows = arange(sq, device=q.device).reshape(sq, 1) + (sk - sq)
        visible = arange(sk, device=q.device).reshape(1, sk) <= rows
        # a large finite fill keeps rows that see nothing finite (they are zeroed below)
        probs = softmax(where(visible, s, -0.25 * float(_finfo_max(q.dtype))), axis=-1)
        if sq > sk:
            probs = probs * visible.any(axis=-1, keepdims=True).astype(q.dtype)
    else:
        probs = softmax(s, axis=-1)
    probs = dropout_op(probs, p, True)
    out = (probs @ v.reshape(b, hkv, 1, sk, d)).reshape(b, h, sq, d)
    return out if out.dtype is in_dtype else out.astype(in_dtype)


def _finfo_max(dtype) -> float:
    import numpy as np

    return float(np.finfo(dtype.np).max)


def _positive(value, name: str) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"MultiHeadAttention: {name} must be a positive int, got {value!r}")
    return int(value)


class MultiHeadAttention(Module):
    """Multi-head attention over ``(batch, seq, embed_dim)`` inputs, on the fused
    :func:`scitensor.nn.functional.scaled_dot_product_attention`.

    Parameters: ``qkv_proj`` (a :class:`~scitensor.nn.Dense` from ``embed_dim`` to the query,
    key and value heads side by side: columns ``[0, E)`` are the queries, then ``kv_heads *
    head_dim`` key columns, then as many value columns) and ``out_proj`` (``Dense(E, E)``);
    both start like ``Dense`` (uniform in ``±1/sqrt(embed_dim)``). Weights are
    ``(in, out)`` as in ``Dense``: PyTorch's ``in_proj_weight`` is the transpose.

    ``forward(x)`` is self-attention (one fused projection GEMM). ``forward(query, key,
    value)`` is cross-attention: the query, key and value columns of ``qkv_proj`` project
    their own inputs (key and value may have another length than the query; ``value``
    defaults to ``key``). Causal masking is aligned to the bottom-right corner (query ``i``
    sees keys ``j <= i + Sk - Sq``: PyTorch's ``is_causal`` when the lengths are equal).

    Args:
        embed_dim: E, the model width (the inputs' last axis).
        num_heads: query heads H; ``head_dim = E // H`` (the CUDA kernels take head_dim 32,
            64 or 128; others run the plain composition).
        bias: learn biases in both projections.
        causal: mask future keys by default (override per call with ``causal=``).
        dropout: drop probability on the attention weights in training mode (runs the unfused
            composition when > 0; see the module docs).
        kv_heads: key/value heads (grouped-query attention; must divide ``num_heads``);
            default ``num_heads``.
        device, dtype: where and in which floating dtype to create the parameters.

    Example:
        >>> import scitensor as st
        >>> from scitensor import nn
        >>> mha = nn.MultiHeadAttention(16, 4, causal=True)
        >>> x = st.randn(2, 5, 16)
        >>> mha(x).shape, mha(x, st.randn(2, 7, 16), causal=False).shape
        ((2, 5, 16), (2, 5, 16))
        >>> [n for n, _ in mha.named_parameters()]
        ['qkv_proj.weight', 'qkv_proj.bias', 'out_proj.weight', 'out_proj.bias']
    """

    def __init__(self, embed_dim: int, num_heads: int, bias: bool = True, causal: bool = False,
                 dropout: float = 0.0, kv_heads: int | None = None, device=None, dtype=None):
        super().__init__()
        self.embed_dim = _positive(embed_dim, "embed_dim")
        self.num_heads = _positive(num_heads, "num_heads")
        self.kv_heads = self.num_heads if kv_heads is None else _positive(kv_heads, "kv_heads")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"MultiHeadAttention: embed_dim {embed_dim} is not divisible by "
                             f"num_heads {num_heads}")
        if self.num_heads % self.kv_heads:
            raise ValueError(f"MultiHeadAttention: num_heads {num_heads} must be a multiple "
                             f"of kv_heads {self.kv_heads} (grouped-query attention)")
        if (isinstance(dropout, bool) or not isinstance(dropout, numbers.Real)
                or not 0.0 <= dropout < 1.0):
            raise ValueError(f"MultiHeadAttention: dropout must be in [0, 1), got {dropout!r}")
        self.head_dim = self.embed_dim // self.num_heads
        self.causal = bool(causal)
        self.dropout = float(dropout)
        width = (self.num_heads + 2 * self.kv_heads) * self.head_dim
        self.qkv_proj = Dense(self.embed_dim, width, bias=bias, device=device, dtype=dtype)
        self.out_proj = Dense(self.embed_dim, self.embed_dim, bias=bias, device=device,
                              dtype=dtype)

    def _check(self, x, name: str) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"MultiHeadAttention: {name} must be a Tensor, got "
                            f"{type(x).__name__}")
        if x.ndim != 3 or x.shape[-1] != self.embed_dim:
            raise ValueError(f"MultiHeadAttention(embed_dim={self.embed_dim}): {name} must be "
                             f"(batch, seq, {self.embed_dim}), got shape {x.shape}"
                             + ("; add a batch axis with x.unsqueeze(0)" if x.ndim == 2 else ""))
        return x

    def _project(self, x: Tensor, c0: int, c1: int) -> Tensor:
        """``x`` through columns ``[c0, c1)`` of ``qkv_proj``, as ``(B, S, heads, D)``."""
        b, s, e = x.shape
        w, bias = self.qkv_proj.weight, self.qkv_proj.bias
        y = x.reshape(b * s, e) @ w[:, c0:c1]
        if bias is not None:
            y = y + bias[c0:c1]
        return y.reshape(b, s, (c1 - c0) // self.head_dim, self.head_dim)

    def forward(self, query: Tensor, key: Tensor | None = None, value: Tensor | None = None,
                causal: bool | None = None) -> Tensor:
        """Attend from ``query`` to ``key``/``value`` (self-attention when both are None).

        Args:
            query: ``(batch, seq_q, embed_dim)``.
            key: ``(batch, seq_k, embed_dim)`` or None (self-attention).
            value: like ``key``; None means ``key``.
            causal: override the layer's ``causal`` for this call.

        Returns:
            ``(batch, seq_q, embed_dim)``.
        """
        causal = self.causal if causal is None else bool(causal)
        query = self._check(query, "query")
        b, sq, e = query.shape
        h, hkv, d = self.num_heads, self.kv_heads, self.head_dim
        if key is None and value is not None:
            raise ValueError("MultiHeadAttention: value given without key; pass key too (or "
                             "neither for self-attention)")
        if key is None or (key is query and (value is None or value is query)):
            packed = self.qkv_proj(query.reshape(b * sq, e)).reshape(b, sq, h + 2 * hkv, d)
            sources = (packed,)
            roles = ((0, 0, h), (0, h, h + hkv), (0, h + hkv, h + 2 * hkv))
        else:
            key = self._check(key, "key")
            value = key if value is None else self._check(value, "value")
            if key.shape[:2] != value.shape[:2] or key.shape[0] != b:
                raise ValueError(f"MultiHeadAttention: query {query.shape}, key {key.shape} "
                                 f"and value {value.shape} must share the batch size, and key "
                                 "and value the sequence length")
            ekv = hkv * d
            q = self._project(query, 0, e)
            if value is key:
                sources = (q, self._project(key, e, e + 2 * ekv))
                roles = ((0, 0, h), (1, 0, hkv), (1, hkv, 2 * hkv))
            else:
                sources = (q, self._project(key, e, e + ekv),
                           self._project(value, e + ekv, e + 2 * ekv))
                roles = ((0, 0, h), (1, 0, hkv), (2, 0, hkv))
        if self.training and self.dropout > 0:
            qs, ks, vs = (_heads_view(sources[i], h0, h1) for i, h0, h1 in roles)
            att = _attention_composed(qs, ks, vs, causal, 1.0 / math.sqrt(d), self.dropout)
            att = att.permute(0, 2, 1, 3)
        else:
            att = _attention_seq_major(sources, roles, causal, None)
        return self.out_proj(att.reshape(b * sq, e)).reshape(b, sq, e)

    def extra_repr(self) -> str:
        kv = "" if self.kv_heads == self.num_heads else f", kv_heads={self.kv_heads}"
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}{kv}, "
                f"causal={self.causal}, dropout={self.dropout}")
