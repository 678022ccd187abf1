"""Pooling primitives of the backend interface, written once against the NumPy API (``self.xp``).

Arrays are NCHW. Windows are visited with one strided slice per kernel position (a Python loop
over the ``kh * kw`` kernel offsets, never over pixels or the batch), so the same code runs
with NumPy and, as a fallback, with CuPy. Geometry arguments are pairs ``(h, w)`` already
validated by the op (:mod:`scitensor.ops.pooling`).

Max pooling records, per output, the position of its maximum *inside the window*
(``argmax = i * kw + j`` for kernel row ``i`` and column ``j``; uint8 when the window has at
most 256 positions, else int32): one byte per output instead of an int64 flat index, and
enough for the backward. Ties go to the first maximum in window order; NaN counts as the
largest value (the first NaN wins); padding never wins (a window of ``-inf`` values points at
its first real element, as in PyTorch).

Batch-norm and dropout primitives live in :mod:`.xp_batchnorm` (mixed in below).
"""

from __future__ import annotations

import numpy as np

from .. import dtypes as dt
from .xp_batchnorm import BatchNormPrimitives

__all__ = ["PoolingPrimitives", "adaptive_windows", "pool_output_size"]

_LOW_PRECISION = (np.dtype(np.float16), dt.bfloat16.np)


def _cdt(np_dtype):
    """Compute dtype: float32 for float16/bfloat16, else the dtype itself."""
    return np.dtype(np.float32) if np_dtype in _LOW_PRECISION else np.dtype(np_dtype)


def pool_output_size(size: int, kernel: int, stride: int, pad: int, dilation: int,
                     ceil_mode: bool) -> int:
    """Output length of a pooling window sliding over ``size`` (PyTorch's rule).

    With ``ceil_mode`` a last partial window counts if it starts inside the input or the
    left padding.

    Example:
        >>> pool_output_size(112, 3, 2, 1, 1, False)
        56
    """
    eff = dilation * (kernel - 1) + 1
    out = (size + 2 * pad - eff + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and out > 0 and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def adaptive_windows(size: int, out: int) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive) of adaptive pooling windows: ``floor(i*size/out)`` to
    ``ceil((i+1)*size/out)``.

    Example:
        >>> [a.tolist() for a in adaptive_windows(5, 3)]
        [[0, 1, 3], [2, 4, 5]]
    """
    i = np.arange(out)
    return (i * size) // out, ((i + 1) * size + out - 1) // out


def _windows_inside(input_hw, kernel, stride, padding, dilation, out_hw) -> bool:
    """True when there is no padding and every window lies wholly inside the input."""
    return padding[0] == 0 and padding[1] == 0 and all(
        (out_hw[a] - 1) * stride[a] + (kernel[a] - 1) * dilation[a] + 1 <= input_hw[a]
        for a in (0, 1))


def _argmax_dtype(kernel) -> np.dtype:
    return np.dtype(np.uint8) if kernel[0] * kernel[1] <= 256 else np.dtype(np.int32)


class PoolingPrimitives(BatchNormPrimitives):
    """Mixin for :class:`~scitensor.backends.xp.ArrayBackend`: max/avg/adaptive pooling."""

    # ---- shared window machinery ---------------------------------------------------------
    def _padded(self, x, kernel, stride, padding, dilation, out_hw, fill):
        """``x`` padded (with ``fill``) so every window of the output fits, and trimmed of
        rows/columns no window reaches."""
        xp = self.xp
        pads = [(0, 0), (0, 0)]
        for ax in (0, 1):
            size, p = x.shape[2 + ax], padding[ax]
            need = (out_hw[ax] - 1) * stride[ax] + (kernel[ax] - 1) * dilation[ax] + 1
            pads.append((p, max(0, need - size - p)))
        if any(a or b for a, b in pads):
            x = xp.pad(x, pads, constant_values=fill)
        return x

    @staticmethod
    def _window(a, i, j, stride, dilation, out_hw):
        """The strided view of ``a`` (padded NCHW) read by kernel position (i, j)."""
        r0, c0 = i * dilation[0], j * dilation[1]
        return a[:, :, r0:r0 + (out_hw[0] - 1) * stride[0] + 1:stride[0],
                 c0:c0 + (out_hw[1] - 1) * stride[1] + 1:stride[1]]

    def _scatter_windows(self, shape_hw, padding, kernel, stride, dilation, out_hw, lead,
                         dtype, contribution):
        """Sum ``contribution(i, j)`` (an output-shaped array) into the input positions read
        by kernel position (i, j); returns the unpadded input-shaped result."""
        xp = self.xp
        ph, pw = padding
        rows = max(shape_hw[0] + ph, (out_hw[0] - 1) * stride[0]
                   + (kernel[0] - 1) * dilation[0] + 1)
        cols = max(shape_hw[1] + pw, (out_hw[1] - 1) * stride[1]
                   + (kernel[1] - 1) * dilation[1] + 1)
        acc = xp.zeros(lead + (rows, cols), dtype=dtype)
        for i in range(kernel[0]):
            for j in range(kernel[1]):
                # one kernel position touches distinct input positions: += on the view is safe
                self._window(acc, i, j, stride, dilation, out_hw)[...] += contribution(i, j)
        return acc[:, :, ph:ph + shape_hw[0], pw:pw + shape_hw[1]]

    # ---- max pooling ---------------------------------------------------------------------
    def max_pool2d(self, x, kernel, stride, padding, dilation, ceil_mode, with_argmax):
        """Max over windows. Returns ``(y, argmax)``; ``argmax`` (window positions) is None
        unless ``with_argmax``."""
        xp = self.xp
        out_hw = tuple(pool_output_size(x.shape[2 + a], kernel[a], stride[a], padding[a],
                                        dilation[a], ceil_mode) for a in (0, 1))
        c = self._cast(x, _cdt(x.dtype))
        if _windows_inside(x.shape[2:], kernel, stride, padding, dilation, out_hw):
            return self._max_pool_inside(c, kernel, stride, dilation, out_hw, with_argmax,
                                         x.dtype)
        xpad = self._padded(c, kernel, stride, padding, dilation, out_hw, -np.inf)
        # which kernel rows/columns read real input (not padding) at each output position
        inside = [[(o >= 0) & (o < x.shape[2 + a]) for o in
                   (xp.arange(out_hw[a]) * stride[a] - padding[a] + i * dilation[a]
                    for i in range(kernel[a]))] for a in (0, 1)]
        best = xp.full(x.shape[:2] + out_hw, -np.inf, dtype=c.dtype)
        arg = xp.zeros(best.shape, dtype=_argmax_dtype(kernel))
        best_is_nan = xp.zeros(best.shape, dtype=bool)
        seen = xp.zeros(best.shape, dtype=bool)  # a real element was read
        for k in range(kernel[0] * kernel[1]):
            i, j = divmod(k, kernel[1])
            v = self._window(xpad, i, j, stride, dilation, out_hw)
            valid = inside[0][i][:, None] & inside[1][j][None, :]
            v_is_nan = xp.isnan(v)
            take = valid & (~seen | (v > best) | (v_is_nan & ~best_is_nan))
            xp.copyto(best, v, where=take)
            xp.copyto(arg, k, where=take, casting="unsafe")
            best_is_nan |= v_is_nan & valid
            seen |= valid
        return self._cast(best, x.dtype), (arg if with_argmax else None)

    def _all_finite(self, a) -> bool:
        """True when ``a`` is known to hold only finite values (checked on the host only:
        other array modules answer False rather than synchronise)."""
        return self.xp is np and bool(np.isfinite(a).all())

    def _max_pool_inside(self, c, kernel, stride, dilation, out_hw, with_argmax, dtype):
        """Max pooling when every window lies inside the input (no padding, no partial
        windows): the maximum by ``maximum`` over the kernel positions, then the argmax as
        the first position equal to it (NaN propagates through ``maximum``, and then the
        first NaN is the argmax; the NaN test is skipped on the host when the result holds
        no NaN)."""
        xp = self.xp
        views = [self._window(c, k // kernel[1], k % kernel[1], stride, dilation, out_hw)
                 for k in range(kernel[0] * kernel[1])]
        if len(views) == 1:
            best = views[0].copy()
        else:
            best = xp.maximum(views[0], views[1])
            for v in views[2:]:
                xp.maximum(best, v, out=best)
        arg = None
        if with_argmax:
            # the argmax is the first k with views[k] == best (or NaN): count the leading
            # positions that are not, with a running AND of "not yet found" masks
            arg = xp.zeros(best.shape, dtype=_argmax_dtype(kernel))
            nan_free = xp is np and not bool(np.isnan(best).any())
            before = None
            for v in views[:-1]:
                miss = xp.not_equal(v, best)
                if not nan_free:
                    miss &= xp.equal(v, v)  # a NaN is the maximum of its window
                if before is None:
                    before = miss
                else:
                    before &= miss
                arg += before
        return self._cast(best, dtype), arg

    def max_pool2d_backward(self, g, argmax, input_hw, kernel, stride, padding, dilation):
        """Gradient of max pooling: each output's cotangent goes to its window's maximum."""
        xp = self.xp
        gc = self._cast(g, _cdt(g.dtype))
        zero = gc.dtype.type(0)
        kw = kernel[1]
        out_hw = g.shape[2:]
        if (_windows_inside(input_hw, kernel, stride, padding, dilation, out_hw)
                and tuple(dilation) == (1, 1) and stride[0] >= kernel[0]
                and stride[1] >= kernel[1]):
            # disjoint windows: each input position receives from at most one output, so
            # every kernel position writes its strided view once (no accumulation)
            full = all(stride[a] == kernel[a] and out_hw[a] * stride[a] == input_hw[a]
                       for a in (0, 1))
            shape = g.shape[:2] + tuple(input_hw)
            dx = xp.empty(shape, dtype=gc.dtype) if full else xp.zeros(shape, dtype=gc.dtype)
            finite = self._all_finite(gc)
            for k in range(kernel[0] * kernel[1]):
                view = self._window(dx, k // kw, k % kw, stride, dilation, out_hw)
                if finite:  # g * (argmax == k): one pass straight into the strided view
                    xp.multiply(gc, argmax == k, out=view)
                else:  # keep NaN/inf cotangents out of the positions that did not win
                    view[...] = xp.where(argmax == k, gc, zero)
            return self._cast(dx, g.dtype)
        dx = self._scatter_windows(
            input_hw, padding, kernel, stride, dilation, g.shape[2:], g.shape[:2], gc.dtype,
            lambda i, j: xp.where(argmax == i * kw + j, gc, zero))
        return self._cast(dx, g.dtype)

    def max_pool2d_gather(self, x, argmax, kernel, stride, padding, dilation):
        """``x`` read at the recorded maxima (the adjoint of :meth:`max_pool2d_backward`)."""
        xp = self.xp
        out_hw = argmax.shape[2:]
        c = self._cast(x, _cdt(x.dtype))
        xpad = self._padded(c, kernel, stride, padding, dilation, out_hw, 0)
        out = xp.zeros(argmax.shape, dtype=c.dtype)
        for k in range(kernel[0] * kernel[1]):
            v = self._window(xpad, k // kernel[1], k % kernel[1], stride, dilation, out_hw)
            xp.copyto(out, v, where=argmax == k)
        return self._cast(out, x.dtype)

    def max_pool2d_indices(self, argmax, input_hw, kernel, stride, padding, dilation):
        """Flat ``h * W + w`` input indices (int64, PyTorch's ``return_indices`` layout)."""
        xp = self.xp
        oh, ow = argmax.shape[2:]
        k = argmax.astype(np.int64)
        h = xp.arange(oh, dtype=np.int64)[:, None] * stride[0] - padding[0] \
            + (k // kernel[1]) * dilation[0]
        w = xp.arange(ow, dtype=np.int64)[None, :] * stride[1] - padding[1] \
            + (k % kernel[1]) * dilation[1]
        return h * input_hw[1] + w

    # ---- average pooling -----------------------------------------------------------------
    def _avg_divisor(self, input_hw, out_hw, kernel, stride, padding, count_include_pad,
                     divisor_override, dtype):
        """Per-output divisors (OH, OW), PyTorch's rule: windows clipped to the padded input
        (count_include_pad) or to the input itself."""
        xp = self.xp
        if divisor_override:
            return xp.full(out_hw, divisor_override, dtype=dtype)
        counts = []
        for a in (0, 1):
            start = xp.arange(out_hw[a], dtype=np.int64) * stride[a] - padding[a]
            end = xp.minimum(start + kernel[a], input_hw[a] + padding[a])
            if count_include_pad:
                counts.append(end - start)
            else:
                counts.append(xp.minimum(end, input_hw[a]) - xp.maximum(start, 0))
        return (counts[0][:, None] * counts[1][None, :]).astype(dtype)

    def avg_pool2d(self, x, kernel, stride, padding, ceil_mode, count_include_pad,
                   divisor_override):
        """Mean over windows (no dilation). ``divisor_override`` (int or None) replaces the
        window size as divisor."""
        xp = self.xp
        out_hw = tuple(pool_output_size(x.shape[2 + a], kernel[a], stride[a], padding[a],
                                        1, ceil_mode) for a in (0, 1))
        cdt = _cdt(x.dtype)
        xpad = self._padded(self._cast(x, cdt), kernel, stride, padding, (1, 1),
                            out_hw, 0)
        acc = xp.zeros(x.shape[:2] + out_hw, dtype=cdt)
        for i in range(kernel[0]):
            for j in range(kernel[1]):
                acc += self._window(xpad, i, j, stride, (1, 1), out_hw)
        div = self._avg_divisor(x.shape[2:], out_hw, kernel, stride, padding,
                                count_include_pad, divisor_override, cdt)
        return self._cast(acc / div, x.dtype)

    def avg_pool2d_backward(self, g, input_hw, kernel, stride, padding, count_include_pad,
                            divisor_override):
        """Gradient of average pooling: each window spreads ``g / divisor`` over itself."""
        cdt = _cdt(g.dtype)
        div = self._avg_divisor(input_hw, g.shape[2:], kernel, stride, padding,
                                count_include_pad, divisor_override, cdt)
        share = self._cast(g, cdt) / div
        dx = self._scatter_windows(input_hw, padding, kernel, stride, (1, 1), g.shape[2:],
                                   g.shape[:2], cdt, lambda i, j: share)
        return self._cast(dx, g.dtype)

    # ---- adaptive average pooling ----------------------------------------------------------
    def _adaptive_matrices(self, input_hw, out_hw, dtype):
        """0/1 window matrices (OH, H) and (OW, W) and the (OH, OW) window sizes."""
        xp = self.xp
        mats, sizes = [], []
        for a in (0, 1):
            size, out = input_hw[a], out_hw[a]
            i = xp.arange(out, dtype=np.int64)[:, None]
            start, end = (i * size) // out, ((i + 1) * size + out - 1) // out
            pos = xp.arange(size, dtype=np.int64)[None, :]
            mats.append(((pos >= start) & (pos < end)).astype(dtype))
            sizes.append(end - start)
        return mats[0], mats[1], (sizes[0] * sizes[1].T).astype(dtype)

    def adaptive_avg_pool2d(self, x, out_hw):
        """Mean over PyTorch's adaptive windows, giving an (N, C, *out_hw) result."""
        n, c, h, w = x.shape
        oh, ow = out_hw
        cdt = _cdt(x.dtype)
        xc = self._cast(x, cdt)
        if h % oh == 0 and w % ow == 0:  # equal windows: a reshape and a mean
            y = xc.reshape(n, c, oh, h // oh, ow, w // ow).mean(axis=(3, 5))
        else:
            a_h, a_w, size = self._adaptive_matrices((h, w), out_hw, cdt)
            y = ((a_h @ xc) @ a_w.T) / size
        return self._cast(y, x.dtype)

    def adaptive_avg_pool2d_backward(self, g, input_hw):
        """Gradient of adaptive average pooling (spreads each mean over its window)."""
        xp = self.xp
        n, c, oh, ow = g.shape
        h, w = input_hw
        cdt = _cdt(g.dtype)
        gc = self._cast(g, cdt)
        if h % oh == 0 and w % ow == 0:
            kh, kw = h // oh, w // ow
            share = (gc / cdt.type(kh * kw)).reshape(n, c, oh, 1, ow, 1)
            dx = xp.broadcast_to(share, (n, c, oh, kh, ow, kw)).reshape(n, c, h, w)
        else:
            a_h, a_w, size = self._adaptive_matrices(input_hw, (oh, ow), cdt)
            dx = (a_h.T @ (gc / size)) @ a_w
        return xp.ascontiguousarray(self._cast(dx, g.dtype))
