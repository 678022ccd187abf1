"""Conv primitives of the backend interface, written once against the NumPy API (``self.xp``).

Layout is NCHW; weights are ``(K, C // groups, kh, kw)``. Three primitives cover conv2d, its
adjoint and its weight gradient (``scitensor.ops.conv`` builds every derivative from them):

- ``conv2d(x, w, bias, out_hw, stride, padding, dilation, groups)``: ``x (N, C, H, W)`` ->
  ``(N, K, *out_hw)``;
- ``conv_transpose2d(y, w, bias, out_hw, stride, padding, dilation, groups)``: the adjoint of
  conv2d with the same geometry, ``y (N, K, Ho, Wo)`` -> ``(N, C, *out_hw)`` (conv2d's input
  gradient; ``bias`` has C entries);
- ``conv2d_weight(x, gy, kernel_hw, stride, padding, dilation, groups)``: conv2d's weight
  gradient, ``(K, C // groups, kh, kw)``.

``stride``, ``dilation`` are ``(sh, sw)``; ``padding`` is ``(top, left)``: the op resolves
"same"/"valid" and asymmetric padding into it and into the explicit output size, and
positions past the bottom/right edge read zeros. ``bias`` may be ``None``.

How (CPU, and CuPy as a fallback): im2col as one strided-view copy into a column matrix
``(groups, C/g*kh*kw, N*Ho*Wo)``, then one batched matmul (one BLAS call per group). col2im
for the adjoint loops over the kh*kw kernel offsets only, adding strided slices. float16 and
bfloat16 compute in float32 and round once, as GPU kernels do.
"""

from __future__ import annotations

import numpy as np


def _compute_dtype(np_dtype):
    from .. import dtypes as dt

    if np_dtype == np.float16 or np_dtype == dt.bfloat16.np:
        return np.dtype(np.float32)
    return np.dtype(np_dtype)


def _span(n_out, stride, dilation, k):
    """Rows (or columns) of padded input that ``n_out`` windows touch."""
    return (n_out - 1) * stride + dilation * (k - 1) + 1 if n_out > 0 else 0


class ConvPrimitives:
    """Mixin for :class:`~scitensor.backends.xp.ArrayBackend` (needs ``self.xp``)."""

    # ---- helpers ------------------------------------------------------------------------
    def _conv_padded(self, x, padding, need_hw, cdt):
        """``x`` in ``cdt``, zero-padded by ``padding`` at the top/left and to at least
        ``need_hw`` rows/columns in total (cropped when more is present), C-contiguous."""
        xp = self.xp
        n, c, h, w = x.shape
        pt, pl = padding
        hp, wp = max(need_hw[0], 1), max(need_hw[1], 1)
        if pt == 0 and pl == 0 and h >= hp and w >= wp:
            out = x[:, :, :hp, :wp]
            return xp.ascontiguousarray(out, dtype=cdt)
        out = xp.zeros((n, c, max(hp, pt + h), max(wp, pl + w)), dtype=cdt)
        out[:, :, pt:pt + h, pl:pl + w] = x
        return out

    def _im2col(self, xpad, kernel_hw, out_hw, stride, dilation, groups):
        """Column matrix ``(groups, C/g*kh*kw, N*Ho*Wo)`` of the windows of ``xpad``."""
        xp = self.xp
        n, c, _, _ = xpad.shape
        kh, kw = kernel_hw
        ho, wo = out_hw
        cg = c // groups
        sn, sc, sh, sw = xpad.strides
        view = xp.lib.stride_tricks.as_strided(
            xpad, (groups, cg, kh, kw, n, ho, wo),
            (cg * sc, sc, dilation[0] * sh, dilation[1] * sw, sn, stride[0] * sh,
             stride[1] * sw))
        cols = xp.empty((groups, cg, kh, kw, n, ho, wo), dtype=xpad.dtype)
        cols[...] = view
        return cols.reshape(groups, cg * kh * kw, n * ho * wo)

    def _channels_first(self, y, groups, cdt):
        """``(N, K, Ho, Wo)`` -> ``(groups, K/g, N*Ho*Wo)`` in ``cdt`` (one transposing copy)."""
        xp = self.xp
        n, k, ho, wo = y.shape
        out = xp.empty((k, n, ho, wo), dtype=cdt)
        out[...] = y.transpose(1, 0, 2, 3)
        return out.reshape(groups, k // groups, n * ho * wo)

    # ---- primitives ---------------------------------------------------------------------
    def conv2d(self, x, w, bias, out_hw, stride, padding, dilation, groups):
        """2-D cross-correlation (PyTorch's conv2d), NCHW.

        Args:
            x: ``(N, C, H, W)``; w: ``(K, C // groups, kh, kw)``; bias: ``(K,)`` or None.
            out_hw: ``(Ho, Wo)``; stride, dilation: pairs; padding: ``(top, left)``.
            groups: channel groups (``groups == C`` with ``K == C`` is depthwise).

        Returns:
            ``(N, K, Ho, Wo)`` in ``x``'s dtype.
        """
        xp = self.xp
        n, c, _, _ = x.shape
        k, cg, kh, kw = w.shape
        ho, wo = out_hw
        cdt = _compute_dtype(x.dtype)
        need = (_span(ho, stride[0], dilation[0], kh), _span(wo, stride[1], dilation[1], kw))
        xpad = self._conv_padded(x, padding, need, cdt)
        cols = self._im2col(xpad, (kh, kw), out_hw, stride, dilation, groups)
        wm = w.astype(cdt, copy=False).reshape(groups, k // groups, cg * kh * kw)
        prod = xp.matmul(wm, cols).reshape(k, n, ho, wo).transpose(1, 0, 2, 3)
        out = xp.empty((n, k, ho, wo), dtype=x.dtype)
        if bias is None:
            out[...] = prod
        else:
            xp.add(prod, bias.astype(cdt, copy=False).reshape(1, k, 1, 1), out=out,
                   casting="unsafe")
        return out

    def conv_transpose2d(self, y, w, bias, out_hw, stride, padding, dilation, groups):
        """Adjoint of :meth:`conv2d` in its input (transposed convolution), NCHW.

        Args:
            y: ``(N, K, Ho, Wo)``; w: ``(K, C // groups, kh, kw)`` (PyTorch's layout for
                ``conv_transpose2d`` weights); bias: ``(C,)`` or None.
            out_hw: ``(H, W)`` of the result; stride, padding, dilation, groups: the geometry
                of the conv2d this is the adjoint of.

        Returns:
            ``(N, C, H, W)`` in ``y``'s dtype.
        """
        xp = self.xp
        n, k, ho, wo = y.shape
        _, cg, kh, kw = w.shape
        c = cg * groups
        h, wd = out_hw
        pt, pl = padding
        cdt = _compute_dtype(y.dtype)
        ym = self._channels_first(y, groups, cdt)
        wm = w.astype(cdt, copy=False).reshape(groups, k // groups, cg * kh * kw)
        cols = xp.matmul(wm.transpose(0, 2, 1), ym).reshape(c, kh, kw, n, ho, wo)
        span_h = _span(ho, stride[0], dilation[0], kh)
        span_w = _span(wo, stride[1], dilation[1], kw)
        acc = xp.zeros((c, n, max(span_h, pt + h), max(span_w, pl + wd)), dtype=cdt)
        eh, ew = (ho - 1) * stride[0] + 1, (wo - 1) * stride[1] + 1
        for i in range(kh):  # col2im: loop over kernel offsets only, not pixels
            r = i * dilation[0]
            for j in range(kw):
                s = j * dilation[1]
                acc[:, :, r:r + eh:stride[0], s:s + ew:stride[1]] += cols[:, i, j]
        crop = acc[:, :, pt:pt + h, pl:pl + wd].transpose(1, 0, 2, 3)
        out = xp.empty((n, c, h, wd), dtype=y.dtype)
        if bias is None:
            out[...] = crop
        else:
            xp.add(crop, bias.astype(cdt, copy=False).reshape(1, c, 1, 1), out=out,
                   casting="unsafe")
        return out

    def conv2d_weight(self, x, gy, kernel_hw, stride, padding, dilation, groups):
        """Gradient of :meth:`conv2d` with respect to its weight.

        Args:
            x: the conv input ``(N, C, H, W)``; gy: the output cotangent ``(N, K, Ho, Wo)``.
            kernel_hw: ``(kh, kw)``; stride, padding, dilation, groups: conv2d's geometry.

        Returns:
            ``(K, C // groups, kh, kw)`` in ``x``'s dtype.
        """
        xp = self.xp
        c = x.shape[1]
        k, ho, wo = gy.shape[1], gy.shape[2], gy.shape[3]
        kh, kw = kernel_hw
        cdt = _compute_dtype(x.dtype)
        need = (_span(ho, stride[0], dilation[0], kh), _span(wo, stride[1], dilation[1], kw))
        xpad = self._conv_padded(x, padding, need, cdt)
        cols = self._im2col(xpad, kernel_hw, (ho, wo), stride, dilation, groups)
        gm = self._channels_first(gy, groups, cdt)
        # dWᵀ = cols · gyᵀ: OpenBLAS runs this orientation of the long-reduction GEMM faster
        dwt = xp.matmul(cols, gm.transpose(0, 2, 1))  # (groups, C/g*kh*kw, K/g)
        dw = xp.ascontiguousarray(dwt.transpose(0, 2, 1), dtype=x.dtype)
        return dw.reshape(k, c // groups, kh, kw)
