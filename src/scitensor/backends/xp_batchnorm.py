"""Batch-norm and dropout primitives, written once against the NumPy API (``self.xp``).

Layout: channels on axis 1, any number of trailing (spatial) axes: ``(N, C)``, ``(N, C, L)``,
``(N, C, H, W)``. Low-precision inputs compute in float32 and round once; per-channel
statistics (mean, variance, inverse std) are float32, or float64 for float64 inputs.

Batch statistics use one pass over the data with a per-plane shift (each ``(n, c)`` plane's
first value), merged across the batch with Chan et al.'s parallel formula: the same scheme
the CUDA kernel uses per thread and per block, stable when the mean is far from zero.
"""

from __future__ import annotations

import math

import numpy as np

from .. import dtypes as dt

__all__ = ["BatchNormPrimitives"]

_LOW_PRECISION = (np.dtype(np.float16), dt.bfloat16.np)


def _cdt(np_dtype):
    return np.dtype(np.float32) if np_dtype in _LOW_PRECISION else np.dtype(np_dtype)


class BatchNormPrimitives:
    """Mixin for :class:`~scitensor.backends.xp.ArrayBackend` (through ``PoolingPrimitives``)."""

    def _cast(self, a, np_dtype):
        """``a`` as ``np_dtype`` through the backend's ``astype`` (the CUDA backend converts
        float16/bfloat16 with its own kernels); ``a`` itself when it already is."""
        np_dtype = np.dtype(np_dtype)
        return a if a.dtype == np_dtype else self.astype(a, dt.from_numpy_dtype(np_dtype))

    def _planes(self, x, cdt):
        """``x`` as (N, C, L) in the compute dtype."""
        n, c = x.shape[:2]
        return self._cast(x, cdt).reshape(n, c, math.prod(x.shape[2:]))

    def _per_channel(self, v, c, cdt, fill):
        """A (C,) parameter (or None -> ``fill``) in the compute dtype."""
        if v is None:
            return self.xp.full((c,), fill, dtype=cdt)
        return self._cast(v, cdt)

    def batch_norm_stats(self, x):
        """Per-channel ``(mean, biased variance)`` of ``x`` over every axis but 1.

        One pass: shifted sums per (n, c) plane, then Chan's merge across n.
        """
        xp = self.xp
        cdt = _cdt(x.dtype)
        x3 = self._planes(x, cdt)
        length = x3.shape[2]
        shift = x3[:, :, :1]
        d = x3 - shift
        s = d.sum(axis=2)
        q = (d * d).sum(axis=2)
        plane_mean = shift[:, :, 0] + s / cdt.type(length)
        plane_m2 = xp.maximum(q - s * s / cdt.type(length), cdt.type(0))
        mean = plane_mean.mean(axis=0)
        spread = plane_mean - mean
        m2 = plane_m2.sum(axis=0) + cdt.type(length) * (spread * spread).sum(axis=0)
        return mean, m2 / cdt.type(x3.shape[0] * length)

    def batch_norm_train_forward(self, x, weight, bias, eps):
        """Training-mode batch norm with batch statistics.

        Args:
            x: (N, C, ...) input.
            weight, bias: (C,) arrays or None (scale 1, shift 0).
            eps: added to the variance.

        Returns:
            ``(y, mean, var, invstd)``: ``y`` in ``x``'s dtype; per-channel mean, biased
            variance and ``1 / sqrt(var + eps)`` in the compute dtype.
        """
        xp = self.xp
        cdt = _cdt(x.dtype)
        c = x.shape[1]
        mean, var = self.batch_norm_stats(x)
        invstd = cdt.type(1) / xp.sqrt(var + cdt.type(eps))
        scale = invstd * self._per_channel(weight, c, cdt, 1)
        shift = self._per_channel(bias, c, cdt, 0)
        x3 = self._planes(x, cdt)
        # centre first: x * scale + (bias - mean * scale) cancels badly when |mean| >> std
        y = (x3 - mean[:, None]) * scale[:, None] + shift[:, None]
        return self._cast(y.reshape(x.shape), x.dtype), mean, var, invstd

    def batch_norm_backward(self, g, x, mean, invstd, weight):
        """Gradients of training-mode batch norm.

        Returns:
            ``(dx, dweight, dbias)``: ``dx`` in ``g``'s dtype, the (C,) others in the compute
            dtype (``dweight = sum(g * xhat)``, ``dbias = sum(g)``, even when there is no
            weight or bias).
        """
        cdt = _cdt(x.dtype)
        c = x.shape[1]
        g3, x3 = self._planes(g, cdt), self._planes(x, cdt)
        count = cdt.type(x3.shape[0] * x3.shape[2])
        xmu = x3 - mean[:, None]
        dbias = g3.sum(axis=(0, 2))
        dot = (g3 * xmu).sum(axis=(0, 2))  # sum(g * (x - mean))
        k = invstd * self._per_channel(weight, c, cdt, 1)
        dx = k[:, None] * (g3 - (dbias / count)[:, None]
                           - xmu * (invstd * invstd * dot / count)[:, None])
        return self._cast(dx.reshape(g.shape), g.dtype), dot * invstd, dbias

    def batch_norm_update_running_inplace(self, running_mean, running_var, mean, var,
                                          momentum, count):
        """``running = (1 - momentum) * running + momentum * batch`` in place, with the
        unbiased variance ``var * count / (count - 1)`` (PyTorch's rule). Either running
        array may be None."""
        m = float(momentum)
        if running_mean is not None:
            cdt = _cdt(running_mean.dtype)
            new = (self._cast(running_mean, cdt) * cdt.type(1 - m)
                   + self._cast(mean, cdt) * cdt.type(m))
            running_mean[...] = self._cast(new, running_mean.dtype)
        if running_var is not None:
            cdt = _cdt(running_var.dtype)
            unbiased = self._cast(var, cdt) * cdt.type(count / (count - 1))
            new = self._cast(running_var, cdt) * cdt.type(1 - m) + unbiased * cdt.type(m)
            running_var[...] = self._cast(new, running_var.dtype)

    def channel_affine(self, x, scale, shift):
        """``x * scale[c] + shift[c]`` along axis 1 (evaluation-mode batch norm)."""
        cdt = _cdt(x.dtype)
        bshape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
        y = (self._cast(x, cdt) * self._cast(scale, cdt).reshape(bshape)
             + self._cast(shift, cdt).reshape(bshape))
        return self._cast(y, x.dtype)

    def dropout_apply(self, x, mask, scale):
        """``x * mask * scale`` (``mask`` bool, same shape); NaNs in dropped places stay NaN
        as in PyTorch's multiply."""
        cdt = _cdt(x.dtype)
        keep = mask.astype(cdt) * cdt.type(scale)
        return self._cast(self._cast(x, cdt) * keep, x.dtype)
