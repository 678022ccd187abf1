"""Batch-norm and dropout primitives, written once against the NumPy API (``self.xp``).

Layout: channels on axis 1, any number of trailing (spatial) axes: ``(N, C)``, ``(N, C, L)``,
``(N, C, H, W)``. Low-precision inputs compute in float32 and round once; per-channel
statistics (mean, variance, inverse std) are float32, or float64 for float64 inputs.

Batch statistics use the corrected two-pass algorithm: the mean (pairwise sums per ``(n, c)``
plane, then over the batch), then the sums and squares of the centred values (the sum
corrects the mean's rounding error); the forward goes on to scale and shift the centred array
in place into its result. Stable when the mean is far from zero, and one large allocation per
forward and per backward. (The CUDA kernel instead makes one pass with per-thread shifts
merged by Chan et al.'s parallel formula.)
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
        """Per-channel ``(mean, biased variance)`` of ``x`` over every axis but 1 (two
        passes: the mean, then the sum of squares of ``x - mean``)."""
        return self._centered(self._planes(x, _cdt(x.dtype)))[:2]

    def _centered(self, x3):
        """``(mean, var, xc, corr)`` for ``x3`` (N, C, L), by the corrected two-pass
        algorithm: ``xc = x3 - mean0`` for a first estimate ``mean0`` of the mean (a fresh
        array of ours: the forward writes its result into it), ``corr = mean(xc)``, the
        mean ``mean0 + corr`` and the variance ``mean(xc^2) - corr^2``."""
        xp = self.xp
        cdt = x3.dtype
        count = cdt.type(x3.shape[0] * x3.shape[2])
        mean0 = x3.sum(axis=2).sum(axis=0) / count
        xc = xp.subtract(x3, mean0[:, None])
        corr = xc.sum(axis=2).sum(axis=0) / count  # the rounding error of mean0
        var = xp.maximum(self._rowdot(xc, xc).sum(axis=0) / count - corr * corr, cdt.type(0))
        return mean0 + corr, var, xc, corr

    def _rowdot(self, a, b):
        """``(a * b).sum(axis=-1)`` without the product temporary (``vecdot`` where the
        array module has it: one BLAS dot per row on NumPy)."""
        xp = self.xp
        vecdot = getattr(xp, "vecdot", None)
        if vecdot is not None:
            return vecdot(a, b)
        return xp.einsum("...l,...l->...", a, b)

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
        x3 = self._planes(x, cdt)
        mean, var, y, corr = self._centered(x3)
        invstd = cdt.type(1) / xp.sqrt(var + cdt.type(eps))
        scale = invstd * self._per_channel(weight, c, cdt, 1)
        shift = self._per_channel(bias, c, cdt, 0)
        # (x - mean) * scale + bias = xc * scale + (bias - corr * scale), in place in the
        # centred array (one allocation in all); corr is tiny, so nothing cancels
        y *= scale[:, None]
        y += (shift - corr * scale)[:, None]
        return self._cast(y.reshape(x.shape), x.dtype), mean, var, invstd

    def batch_norm_backward(self, g, x, mean, invstd, weight):
        """Gradients of training-mode batch norm.

        Returns:
            ``(dx, dweight, dbias)``: ``dx`` in ``g``'s dtype, the (C,) others in the compute
            dtype (``dweight = sum(g * xhat)``, ``dbias = sum(g)``, even when there is no
            weight or bias).
        """
        xp = self.xp
        cdt = _cdt(x.dtype)
        c = x.shape[1]
        g3, x3 = self._planes(g, cdt), self._planes(x, cdt)
        count = cdt.type(x3.shape[0] * x3.shape[2])
        xmu = xp.subtract(x3, mean[:, None])
        dbias = g3.sum(axis=2).sum(axis=0)
        dot = self._rowdot(g3, xmu).sum(axis=0)  # sum(g * (x - mean))
        k = invstd * self._per_channel(weight, c, cdt, 1)
        # dx = k * (g - dbias / count - xmu * invstd^2 * dot / count), in place in xmu's
        # array (one allocation in all)
        dx = xmu
        dx *= (-(invstd * invstd * dot / count))[:, None]
        dx += g3
        dx -= (dbias / count)[:, None]
        dx *= k[:, None]
        return self._cast(dx.reshape(g.shape), g.dtype), dot * invstd, dbias

    def batch_norm_update_running_inplace(self, running_mean, running_var, mean, var,
                                          momentum, count, num_batches=None):
        """``running = (1 - momentum) * running + momentum * batch`` in place, with the
        unbiased variance ``var * count / (count - 1)`` (PyTorch's rule), computed in float32
        (float64 for float64 arrays). Either running array may be None; ``num_batches`` (an
        integer scalar array, or None) is incremented by one. Nothing is written unless every
        new value was computed."""
        m = float(momentum)
        new_mean = new_var = None
        if running_mean is not None:
            cdt = _cdt(running_mean.dtype)
            new = (self._cast(running_mean, cdt) * cdt.type(1 - m)
                   + self._cast(mean, cdt) * cdt.type(m))
            new_mean = self._cast(new, running_mean.dtype)
        if running_var is not None:
            cdt = _cdt(running_var.dtype)
            unbiased = self._cast(var, cdt) * cdt.type(count / (count - 1))
            new = self._cast(running_var, cdt) * cdt.type(1 - m) + unbiased * cdt.type(m)
            new_var = self._cast(new, running_var.dtype)
        if new_mean is not None:
            running_mean[...] = new_mean
        if new_var is not None:
            running_var[...] = new_var
        if num_batches is not None:
            self.xp.add(num_batches, num_batches.dtype.type(1), out=num_batches)

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
