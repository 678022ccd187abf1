"""Normalization primitives of the backend interface, written against the NumPy API (``xp``).

These are the reference compositions of the fused GPU kernels (layer norm, RMS norm, softmax
backward, softmax cross-entropy): the CUDA backend overrides them with single kernels and the
tests compare the two. Every primitive works over the last axis of its inputs.

Precision: float16/bfloat16 inputs compute in float32 and round once; float32 computes in
float32 and float64 in float64. Row statistics (``mean``, ``rstd``, ``lse``), per-row losses
and the parameter gradients (``dweight``, ``dbias``) come back in that compute dtype; the
ops cast them to their parameters' dtypes.
"""

from __future__ import annotations

import numpy as np

from .. import dtypes as dt

_LOW_PRECISION = (np.dtype(np.float16), dt.bfloat16.np)


def compute_dtype(np_dtype) -> np.dtype:
    """The dtype the normalization primitives compute in for inputs of ``np_dtype``."""
    return np.dtype(np.float64) if np.dtype(np_dtype) == np.float64 else np.dtype(np.float32)


class NormalizationPrimitives:
    """Mixin for :class:`~scitensor.backends.xp.ArrayBackend`.

    Example:
        >>> import numpy as np
        >>> import scitensor as st
        >>> be = st.Device("cpu").backend
        >>> y, mean, rstd = be.layer_norm_forward(np.array([[1.0, 3.0]]), None, None, 0.0)
        >>> y.tolist(), mean.tolist(), rstd.tolist()
        ([[-1.0, 1.0]], [2.0], [1.0])
    """

    # ---- layer norm ------------------------------------------------------------------------
    def layer_norm_forward(self, x, weight, bias, eps):
        """Normalise each row of ``x`` (over its last axis) to zero mean and unit variance.

        Args:
            x: array ``(..., N)``.
            weight, bias: arrays ``(N,)`` or ``None`` (``y = xhat * weight + bias``).
            eps: added to the (biased) variance.

        Returns:
            ``(y, mean, rstd)``: ``y`` like ``x`` in ``x``'s dtype; ``mean`` and
            ``rstd = 1 / sqrt(var + eps)`` of shape ``x.shape[:-1]`` in the compute dtype.
        """
        xp = self.xp
        cdt = compute_dtype(x.dtype)
        c = x.astype(cdt, copy=False)
        if x.size == 0:
            stat = xp.zeros(x.shape[:-1], dtype=cdt)
            return x.copy(), stat, xp.full(x.shape[:-1], 1.0 / np.sqrt(eps) if eps > 0
                                           else np.inf, dtype=cdt)
        mean = c.mean(axis=-1)
        d = c - mean[..., None]
        var = (d * d).mean(axis=-1)
        rstd = cdt.type(1) / xp.sqrt(var + cdt.type(eps))
        y = d * rstd[..., None]
        if weight is not None:
            y = y * weight.astype(cdt, copy=False)
        if bias is not None:
            y = y + bias.astype(cdt, copy=False)
        return y.astype(x.dtype, copy=False), mean, rstd

    def layer_norm_backward(self, g, x, mean, rstd, weight, need_param_grads=True):
        """Gradients of :meth:`layer_norm_forward` from the saved ``mean`` and ``rstd``.

        ``dx = rstd * (g w - mean(g w) - xhat * mean(g w xhat))`` with
        ``xhat = (x - mean) * rstd``; ``dweight = sum_rows(g xhat)``, ``dbias = sum_rows(g)``.

        Args:
            g: output cotangent, shaped like ``x``.
            x, mean, rstd, weight: the forward's input, statistics and weight (or ``None``).
            need_param_grads: when False, ``dweight`` and ``dbias`` are ``None``.

        Returns:
            ``(dx, dweight, dbias)``: ``dx`` in ``x``'s dtype; ``dweight``/``dbias`` of shape
            ``(N,)`` in the compute dtype (or ``None``).
        """
        cdt = compute_dtype(x.dtype)
        n = x.shape[-1]
        c = x.astype(cdt, copy=False)
        gc = g.astype(cdt, copy=False)
        r = rstd[..., None].astype(cdt, copy=False)
        xhat = (c - mean[..., None]) * r
        gw = gc * weight.astype(cdt, copy=False) if weight is not None else gc
        if x.size:
            a = gw.mean(axis=-1, keepdims=True)
            b = (gw * xhat).mean(axis=-1, keepdims=True)
            dx = (r * (gw - a - xhat * b)).astype(x.dtype, copy=False)
        else:
            dx = x.copy()
        if not need_param_grads:
            return dx, None, None
        dweight = (gc * xhat).reshape(-1, n).sum(axis=0)
        dbias = gc.reshape(-1, n).sum(axis=0)
        return dx, dweight, dbias

    # ---- RMS norm --------------------------------------------------------------------------
    def rms_norm_forward(self, x, weight, eps):
        """Scale each row of ``x`` by ``rstd = 1 / sqrt(mean(x**2) + eps)`` (then by weight).

        Args:
            x: array ``(..., N)``.
            weight: array ``(N,)`` or ``None``.
            eps: added to the mean square.

        Returns:
            ``(y, rstd)``: ``y`` in ``x``'s dtype; ``rstd`` of shape ``x.shape[:-1]`` in the
            compute dtype.
        """
        xp = self.xp
        cdt = compute_dtype(x.dtype)
        c = x.astype(cdt, copy=False)
        if x.size == 0:
            return x.copy(), xp.full(x.shape[:-1], 1.0 / np.sqrt(eps) if eps > 0 else np.inf,
                                     dtype=cdt)
        rstd = cdt.type(1) / xp.sqrt((c * c).mean(axis=-1) + cdt.type(eps))
        y = c * rstd[..., None]
        if weight is not None:
            y = y * weight.astype(cdt, copy=False)
        return y.astype(x.dtype, copy=False), rstd

    def rms_norm_backward(self, g, x, rstd, weight, need_param_grads=True):
        """Gradients of :meth:`rms_norm_forward` from the saved ``rstd``.

        ``dx = rstd * (g w - xhat * mean(g w xhat))`` with ``xhat = x * rstd``;
        ``dweight = sum_rows(g xhat)``.

        Returns:
            ``(dx, dweight)``: ``dx`` in ``x``'s dtype, ``dweight`` ``(N,)`` in the compute
            dtype (``None`` when ``need_param_grads`` is False).
        """
        cdt = compute_dtype(x.dtype)
        n = x.shape[-1]
        c = x.astype(cdt, copy=False)
        gc = g.astype(cdt, copy=False)
        r = rstd[..., None].astype(cdt, copy=False)
        xhat = c * r
        gw = gc * weight.astype(cdt, copy=False) if weight is not None else gc
        if x.size:
            b = (gw * xhat).mean(axis=-1, keepdims=True)
            dx = (r * (gw - xhat * b)).astype(x.dtype, copy=False)
        else:
            dx = x.copy()
        if not need_param_grads:
            return dx, None
        return dx, (gc * xhat).reshape(-1, n).sum(axis=0)

    # ---- softmax backward ------------------------------------------------------------------
    def softmax_backward(self, g, y, axis):
        """Cotangent of ``x`` for ``y = softmax(x, axis)``: ``y * (g - sum(g * y, axis))``."""
        cdt = compute_dtype(y.dtype)
        gc = g.astype(cdt, copy=False)
        yc = y.astype(cdt, copy=False)
        dx = yc * (gc - (gc * yc).sum(axis=axis, keepdims=True))
        return dx.astype(y.dtype, copy=False)

    def log_softmax_backward(self, g, y, axis):
        """Cotangent of ``x`` for ``y = log_softmax(x, axis)``: ``g - exp(y) * sum(g, axis)``."""
        cdt = compute_dtype(y.dtype)
        gc = g.astype(cdt, copy=False)
        yc = y.astype(cdt, copy=False)
        dx = gc - self.xp.exp(yc) * gc.sum(axis=axis, keepdims=True)
        return dx.astype(y.dtype, copy=False)

    # ---- softmax cross-entropy -------------------------------------------------------------
    def cross_entropy_forward(self, logits, labels, ignore_index, label_smoothing):
        """Per-row softmax cross-entropy of integer ``labels`` (classes on the last axis).

        ``loss = lse - (1 - s) * x[label] - s * mean(x)`` for label smoothing ``s``; rows whose
        label is ``ignore_index`` get 0. Labels must be in ``[0, C)`` otherwise (the GPU kernel
        writes NaN for a row with a bad label; this reference may raise or wrap).

        Args:
            logits: ``(M, C)`` floating array.
            labels: ``(M,)`` integer array.
            ignore_index: label value whose rows are skipped.
            label_smoothing: ``s`` in ``[0, 1]``.

        Returns:
            ``(loss, lse)``: both ``(M,)`` in the compute dtype; ``lse`` is the row's
            log-sum-exp, saved for the backward.
        """
        xp = self.xp
        cdt = compute_dtype(logits.dtype)
        c = logits.astype(cdt, copy=False)
        m_rows, n_cls = c.shape
        if m_rows == 0:
            return xp.zeros((0,), cdt), xp.zeros((0,), cdt)
        if n_cls == 0:
            lse = xp.full((m_rows,), -np.inf, dtype=cdt)
        else:
            mx = c.max(axis=-1)
            mx = xp.where(xp.isfinite(mx), mx, cdt.type(0))
            lse = xp.log(xp.exp(c - mx[:, None]).sum(axis=-1)) + mx
        valid = labels != ignore_index
        safe = xp.where(valid, labels, 0).astype(np.int64)
        picked = xp.take_along_axis(c, safe[:, None], axis=-1)[:, 0]
        s = cdt.type(label_smoothing)
        loss = lse - (cdt.type(1) - s) * picked
        if label_smoothing:
            loss = loss - s * c.mean(axis=-1)
        return xp.where(valid, loss, cdt.type(0)), lse

    def cross_entropy_reduce(self, loss, labels, ignore_index, mean):
        """The scalar loss from the per-row losses of :meth:`cross_entropy_forward`.

        Args:
            loss: ``(M,)`` per-row losses (0 on ignored rows).
            labels: ``(M,)`` integer labels.
            ignore_index: label value whose rows do not count.
            mean: divide the sum by the number of counted rows (NaN when there is none).

        Returns:
            ``(value, count)``: 0-d arrays of ``loss``' dtype, the sum (or mean) and the number
            of rows whose label is not ``ignore_index``.
        """
        xp = self.xp
        count = (labels.astype(np.int64, copy=False) != ignore_index).sum().astype(loss.dtype)
        total = loss.sum(dtype=loss.dtype)
        if mean:
            with np.errstate(invalid="ignore", divide="ignore"):
                total = xp.asarray(total / count, dtype=loss.dtype)
        return xp.asarray(total, dtype=loss.dtype), xp.asarray(count, dtype=loss.dtype)

    def cross_entropy_backward(self, g_rows, logits, labels, lse, ignore_index,
                               label_smoothing):
        """``dlogits = g_row * (softmax(x) - s / C - (1 - s) * onehot(label))``, 0 on ignored rows.

        Args:
            g_rows: per-row cotangent, any array broadcastable to ``(M,)`` (a scalar for a
                mean or sum reduction).
            logits, labels, lse: the forward's inputs and its saved log-sum-exp.
            ignore_index, label_smoothing: as in :meth:`cross_entropy_forward`.

        Returns:
            ``dlogits`` shaped and typed like ``logits``.
        """
        xp = self.xp
        cdt = compute_dtype(logits.dtype)
        c = logits.astype(cdt, copy=False)
        m_rows, n_cls = c.shape
        if c.size == 0:
            return logits.copy()
        s = cdt.type(label_smoothing)
        d = xp.exp(c - lse[:, None].astype(cdt, copy=False))
        if label_smoothing:
            d = d - s / cdt.type(n_cls)
        valid = labels != ignore_index
        safe = xp.where(valid, labels, 0).astype(np.int64)
        onehot = xp.zeros_like(d)
        xp.put_along_axis(onehot, safe[:, None], cdt.type(1) - s, axis=-1)
        scale = xp.broadcast_to(xp.asarray(g_rows).astype(cdt, copy=False), (m_rows,))
        scale = xp.where(valid, scale, cdt.type(0))
        return ((d - onehot) * scale[:, None]).astype(logits.dtype, copy=False)
