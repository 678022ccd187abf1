"""Attention primitives of the backend interface, written once against the NumPy API (``self.xp``).

Two primitives serve ``scitensor.ops.attention.scaled_dot_product_attention``:

- ``attention_forward(q, k, v, causal, scale, out=None) -> (out, lse)``
- ``attention_backward(g, q, k, v, out, lse, causal, scale, grads_out=None) -> (dq, dk, dv)``

Shapes: ``q`` is ``(B, H, Sq, D)``, ``k`` and ``v`` are ``(B, Hkv, Sk, D)`` with
``H % Hkv == 0`` (grouped-query attention: query head ``h`` reads key/value head
``h // (H // Hkv)``); ``out`` is ``(B, H, Sq, D)`` in the input dtype and ``lse`` the
per-row logsumexp of the scaled, masked scores, ``(B, H, Sq)``, in the compute dtype
(float32 for float16/bfloat16/float32 inputs, float64 for float64).

Operands may be strided views (e.g. heads of a packed ``(B, S, 3, H, D)`` projection, swapped to
``(B, H, S, D)``): nothing assumes contiguity. ``out=`` (forward) and ``grads_out=`` (backward)
name arrays, views included, that receive the results: every backend writes them there and
returns them, so a caller can let the kernels fill a slice of a larger buffer.

Conventions shared with the CUDA kernels (``backends/cuda/kernels/attention_*.cu``):

- causal masking is aligned to the bottom-right corner: query ``i`` sees keys
  ``j <= i + (Sk - Sq)``. With ``Sq == Sk`` this is PyTorch's ``is_causal``; when the lengths
  differ PyTorch's ``is_causal`` aligns top-left instead, and ours matches FlashAttention-2
  (the last query sees every key, as in decoding with a KV cache);
- a query row that sees no key (causal with ``Sq > Sk``, or ``Sk == 0``) gives a zero output
  row, zero gradients, and ``lse = +inf``: the backward's ``exp(s - lse)`` is then exactly 0;
- float16/bfloat16 compute in float32 and round once at the end.

How: the plain composition ``softmax(q kᵀ · scale) v`` with ``self.matmul``, in chunks of
query rows so that the score block stays under ``SCORE_BLOCK_ELEMENTS`` elements (peak extra
memory O(B·H·chunk·Sk), not O(B·H·Sq·Sk)). The backward recomputes the probabilities from
``q``, ``k`` and ``lse`` (FlashAttention-2 style) and uses ``D = rowsum(g ∘ out)``.
"""

from __future__ import annotations

import math

import numpy as np

# score elements per query chunk (float32: 256 MiB); the CPU path stays exact and bounded
SCORE_BLOCK_ELEMENTS = 1 << 26


def _compute_dtype(np_dtype):
    from .. import dtypes as dt

    if np_dtype == np.float16 or np_dtype == dt.bfloat16.np:
        return np.dtype(np.float32)
    return np.dtype(np_dtype)


def _chunks(b, h, sq, sk):
    """Query-row ranges whose score block holds at most ``SCORE_BLOCK_ELEMENTS`` values."""
    per_row = max(1, b * h * sk)
    step = max(1, min(sq, SCORE_BLOCK_ELEMENTS // per_row))
    return [(i, min(i + step, sq)) for i in range(0, sq, step)]


def _check_outputs(op: str, outs, likes, names, like_names) -> None:
    """Raise ``ValueError`` unless each of ``outs`` is shaped and typed like its ``likes``."""
    for o, x, n, ln in zip(outs, likes, names, like_names):
        shape, dtype = getattr(o, "shape", None), getattr(o, "dtype", None)
        if shape is None or tuple(shape) != tuple(x.shape) or dtype != x.dtype:
            raise ValueError(f"{op}: {n} must be an array shaped {tuple(x.shape)} with dtype "
                             f"{x.dtype} like {ln}, got {type(o).__name__} of shape {shape} and "
                             f"dtype {dtype}; pass an array (or view) of that shape and dtype, "
                             "or None to allocate one")


def _check_grads_out(grads_out, q, k, v) -> None:
    """Raise ``ValueError`` unless ``grads_out`` is three arrays shaped and typed like q, k, v."""
    if len(grads_out) != 3:
        raise ValueError("attention_backward: grads_out must be three arrays (dq, dk, dv), got "
                         f"{len(grads_out)}")
    _check_outputs("attention_backward", grads_out, (q, k, v),
                   ("grads_out[0] (dq)", "grads_out[1] (dk)", "grads_out[2] (dv)"),
                   ("q", "k", "v"))


class AttentionPrimitives:
    """Mixin for :class:`~scitensor.backends.xp.ArrayBackend` (needs ``self.xp``,
    ``self.matmul`` and ``self.setitem``)."""

    def _attn_cast(self, a, np_dtype):
        """``a`` in ``np_dtype`` through the backend's cast (CuPy cannot cast bfloat16 itself)."""
        if a.dtype == np_dtype:
            return a
        from .. import dtypes as dt

        return self.astype(a, dt.from_numpy_dtype(np_dtype))

    def _attention_scores(self, q5, kt, i0, i1, sq, sk, causal, scale):
        """Scaled, masked scores for query rows ``[i0, i1)``: ``(B, Hkv, G, i1 - i0, Sk)``."""
        xp = self.xp
        s = self.matmul(q5[:, :, :, i0:i1], kt) * q5.dtype.type(scale)
        if causal:
            rows = xp.arange(i0, i1).reshape(-1, 1) + (sk - sq)
            hidden = xp.arange(sk).reshape(1, -1) > rows
            s = xp.where(hidden, q5.dtype.type(-np.inf), s)
        return s

    def attention_forward(self, q, k, v, causal, scale, out=None):
        """Scaled-dot-product attention and its per-row logsumexp.

        Args:
            q: ``(B, H, Sq, D)``; k, v: ``(B, Hkv, Sk, D)``, one floating dtype; any strides.
            causal: mask key ``j`` for query ``i`` when ``j > i + Sk - Sq``.
            scale: the factor on ``q kᵀ`` (the op passes ``1/sqrt(D)`` by default).
            out: optional array (a view is fine) shaped and typed like ``q`` that receives the
                output; it is also what is returned.

        Returns:
            ``(out, lse)``: ``out`` ``(B, H, Sq, D)`` in ``q``'s dtype, ``lse`` ``(B, H, Sq)``
            in the compute dtype (``+inf`` for rows that see no key).

        Example:
            >>> from scitensor.backends.cpu import CpuBackend
            >>> import numpy as np
            >>> q = np.ones((1, 1, 2, 4), np.float32)
            >>> out, lse = CpuBackend(None).attention_forward(q, q, q, False, 0.5)
            >>> out.shape, lse.shape, round(float(lse[0, 0, 0]), 4)
            ((1, 1, 2, 4), (1, 1, 2), 2.6931)
            >>> y = np.zeros((1, 2, 1, 4), np.float32)  # (B, S, H, D), filled as (B, H, S, D)
            >>> o, _ = CpuBackend(None).attention_forward(q, q, q, False, 0.5,
            ...                                           out=y.transpose(0, 2, 1, 3))
            >>> o.base is y, bool(np.all(y == 1))
            (True, True)
        """
        if out is not None:
            _check_outputs("attention_forward", (out,), (q,), ("out",), ("q",))
        res, lse = self._attention_forward_xp(q, k, v, causal, scale)
        if out is None:
            return res, lse
        self.setitem(out, Ellipsis, res)
        return out, lse

    def _attention_forward_xp(self, q, k, v, causal, scale):
        xp = self.xp
        b, h, sq, d = q.shape
        hkv, sk = k.shape[1], k.shape[2]
        cdt = _compute_dtype(q.dtype)
        out = xp.zeros((b, h, sq, d), dtype=cdt)
        lse = xp.full((b, h, sq), np.inf, dtype=cdt)
        if sk == 0 or q.size == 0:
            return self._attn_cast(out, q.dtype), lse
        g = h // hkv
        q5 = self._attn_cast(q, cdt).reshape(b, hkv, g, sq, d)
        kt = self._attn_cast(k, cdt).reshape(b, hkv, 1, sk, d).swapaxes(-1, -2)
        v5 = self._attn_cast(v, cdt).reshape(b, hkv, 1, sk, d)
        out5 = out.reshape(b, hkv, g, sq, d)
        lse5 = lse.reshape(b, hkv, g, sq)
        for i0, i1 in _chunks(b, h, sq, sk):
            s = self._attention_scores(q5, kt, i0, i1, sq, sk, causal, scale)
            m = s.max(axis=-1, keepdims=True)
            m = xp.where(xp.isfinite(m), m, cdt.type(0))
            e = xp.exp(s - m)
            l = e.sum(axis=-1, keepdims=True)  # noqa: E741 (the softmax denominator)
            seen = l > 0
            inv = xp.where(seen, cdt.type(1) / xp.where(seen, l, cdt.type(1)), cdt.type(0))
            out5[:, :, :, i0:i1] = self.matmul(e, v5) * inv
            lse5[:, :, :, i0:i1] = xp.where(seen, xp.log(xp.where(seen, l, cdt.type(1))) + m,
                                             cdt.type(np.inf))[..., 0]
        return self._attn_cast(out, q.dtype), lse

    def attention_backward(self, g, q, k, v, out, lse, causal, scale, grads_out=None):
        """Gradients of :meth:`attention_forward` for the output cotangent ``g``.

        Args:
            g: ``(B, H, Sq, D)`` cotangent of ``out``.
            q, k, v, causal, scale: as given to :meth:`attention_forward`.
            out, lse: what :meth:`attention_forward` returned.
            grads_out: optional ``(dq, dk, dv)``: arrays or views shaped and typed like ``q``,
                ``k``, ``v`` that receive the gradients (e.g. views of the packed projection's
                gradient buffer); they are also returned.

        Returns:
            ``(dq, dk, dv)`` in the dtypes and shapes of ``q``, ``k`` and ``v`` (``dk``/``dv``
            summed over the query heads that share a key/value head).

        Example:
            >>> from scitensor.backends.cpu import CpuBackend
            >>> import numpy as np
            >>> be = CpuBackend(None)
            >>> q = np.ones((1, 2, 3, 4)); kv = np.ones((1, 1, 3, 4))
            >>> out, lse = be.attention_forward(q, kv, kv, True, 0.5)
            >>> [x.shape for x in be.attention_backward(out, q, kv, kv, out, lse, True, 0.5)]
            [(1, 2, 3, 4), (1, 1, 3, 4), (1, 1, 3, 4)]
        """
        if grads_out is not None:
            _check_grads_out(grads_out, q, k, v)
        xp = self.xp
        b, h, sq, d = q.shape
        hkv, sk = k.shape[1], k.shape[2]
        cdt = _compute_dtype(q.dtype)
        dq = xp.zeros((b, h, sq, d), dtype=cdt)
        dk = xp.zeros((b, hkv, sk, d), dtype=cdt)
        dv = xp.zeros((b, hkv, sk, d), dtype=cdt)
        if sk > 0 and q.size > 0:
            grp = h // hkv
            q5 = self._attn_cast(q, cdt).reshape(b, hkv, grp, sq, d)
            k5 = self._attn_cast(k, cdt).reshape(b, hkv, 1, sk, d)
            kt = k5.swapaxes(-1, -2)
            vt = self._attn_cast(v, cdt).reshape(b, hkv, 1, sk, d).swapaxes(-1, -2)
            g5 = self._attn_cast(g, cdt).reshape(b, hkv, grp, sq, d)
            o5 = self._attn_cast(out, cdt).reshape(b, hkv, grp, sq, d)
            l5 = self._attn_cast(lse, cdt).reshape(b, hkv, grp, sq, 1)
            dq5 = dq.reshape(b, hkv, grp, sq, d)
            sc = cdt.type(scale)
            for i0, i1 in _chunks(b, h, sq, sk):
                s = self._attention_scores(q5, kt, i0, i1, sq, sk, causal, scale)
                p = xp.exp(s - l5[:, :, :, i0:i1])  # 0 where masked or the row sees nothing
                gc = g5[:, :, :, i0:i1]
                delta = (gc * o5[:, :, :, i0:i1]).sum(axis=-1, keepdims=True)
                ds = p * (self.matmul(gc, vt) - delta)
                dq5[:, :, :, i0:i1] = self.matmul(ds, k5) * sc
                dk += (self.matmul(ds.swapaxes(-1, -2), q5[:, :, :, i0:i1]) * sc).sum(axis=2)
                dv += self.matmul(p.swapaxes(-1, -2), gc).sum(axis=2)
        grads = (self._attn_cast(dq, q.dtype), self._attn_cast(dk, k.dtype),
                 self._attn_cast(dv, v.dtype))
        if grads_out is None:
            return grads
        for dst, src in zip(grads_out, grads):
            self.setitem(dst, Ellipsis, src)
        return tuple(grads_out)


def default_scale(head_dim: int) -> float:
    """``1 / sqrt(head_dim)``, the scale PyTorch and the paper use."""
    return 1.0 / math.sqrt(head_dim)
