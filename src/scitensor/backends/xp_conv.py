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

How (CPU, and CuPy as a fallback): im2col as a strided-view copy into a column matrix, then
one matmul; col2im for the adjoint loops over the kh*kw kernel offsets only (never over
pixels), adding strided slices. float16 and bfloat16 compute in float32 and round once, as
GPU kernels do. On the host the batch goes in chunks of samples whose column matrix is about
``_CHUNK_BYTES`` (other array modules take the whole batch as one chunk), into buffers reused
from chunk to chunk: the columns are written and read while still in cache, no batch-sized
column matrix is allocated, and each chunk is one large GEMM (few BLAS calls: a multi-threaded
BLAS pays a fork-join per call, which a busy machine turns into a scheduling delay; one GEMM
per sample was as fast on an idle machine but many times slower on a loaded one). Per
primitive:

- ``conv2d``: the chunk's columns are channel-major ``(groups, C/g*kh*kw, nb*Ho*Wo)``; one
  matmul gives ``(K, nb, Ho*Wo)``, copied (transposed, in cache) into the NCHW output.
- ``conv_transpose2d``: for stride 1 (and padding within the kernel's reach) it is a
  ``conv2d`` of the output cotangent with the flipped, transposed weight and padding
  ``dilation*(k-1) - padding`` (no col2im at all); otherwise per chunk one matmul of the
  transposed weight with the channel-major cotangent, then col2im into a zeroed padded chunk
  whose interior is copied to the output.
- ``conv2d_weight``: channel-major columns and the chunk's cotangent transposed to
  ``(groups, K/g, nb*Ho*Wo)`` (in cache); one matmul per chunk accumulates the transposed
  weight gradient (``dWᵀ = cols · gyᵀ``: OpenBLAS runs this orientation faster).
"""

from __future__ import annotations

import numpy as np

# Column-matrix bytes per chunk on the host: small enough to stay in L2/L3 between the
# im2col copy and the GEMM that reads it, large enough that each GEMM is one big BLAS call.
_CHUNK_BYTES = 4 << 20


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
        ``need_hw`` rows/columns in total (cropped when more is present)."""
        xp = self.xp
        n, c, h, w = x.shape
        pt, pl = padding
        hp, wp = max(need_hw[0], 1), max(need_hw[1], 1)
        if pt == 0 and pl == 0 and h >= hp and w >= wp:
            return x[:, :, :hp, :wp].astype(cdt, copy=False)
        out = xp.zeros((n, c, max(hp, pt + h), max(wp, pl + w)), dtype=cdt)
        out[:, :, pt:pt + h, pl:pl + w] = x
        return out

    def _chunk(self, n, per_sample):
        """Samples per chunk for a column matrix of ``per_sample`` elements (4-byte units)
        per sample: the whole batch except on the host."""
        if self.xp is not np:
            return max(n, 1)
        return max(1, min(n, _CHUNK_BYTES // max(4 * per_sample, 1)))

    def _columns(self, x, kernel_hw, out_hw, stride, padding, dilation, cdt):
        """``fill(buf, n0, m)``: copies the windows of samples ``n0:n0+m`` of ``x`` (padded),
        channel-major, into ``buf[..., :m*Ho*Wo]`` (a ``(C, kh, kw, nb*Ho*Wo)`` buffer) and
        returns them as ``(C*kh*kw, m*Ho*Wo)``."""
        kh, kw = kernel_hw
        ho, wo = out_hw
        need = (_span(ho, stride[0], dilation[0], kh), _span(wo, stride[1], dilation[1], kw))
        xpad = self._conv_padded(x, padding, need, cdt)
        sn, sc, sh, sw = xpad.strides
        n, c = xpad.shape[:2]
        wins = self.xp.lib.stride_tricks.as_strided(
            xpad, (c, kh, kw, n, ho, wo),
            (sc, dilation[0] * sh, dilation[1] * sw, sn, stride[0] * sh, stride[1] * sw))

        def fill(buf, n0, m):
            cols = buf[..., :m * ho * wo].reshape(c, kh, kw, m, ho, wo)
            cols[...] = wins[:, :, :, n0:n0 + m]
            return cols.reshape(c * kh * kw, m * ho * wo)

        return fill

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
        p = ho * wo
        r = cg * kh * kw
        cdt = _compute_dtype(x.dtype)
        fill = self._columns(x, (kh, kw), out_hw, stride, padding, dilation, cdt)
        wm = w.astype(cdt, copy=False).reshape(groups, k // groups, r)
        bm = None if bias is None else bias.astype(cdt, copy=False).reshape(1, k, 1)
        out = xp.empty((n, k, p), dtype=cdt)
        nb = self._chunk(n, c * kh * kw * p)
        nb0 = min(nb, n)
        cols_buf = xp.empty((c, kh, kw, nb0 * p), dtype=cdt)
        prod_buf = xp.empty((groups, k // groups, nb0 * p), dtype=cdt)
        for n0 in range(0, n, nb):
            m = min(nb, n - n0)
            cols = fill(cols_buf, n0, m).reshape(groups, r, m * p)
            prod = prod_buf[..., :m * p]
            xp.matmul(wm, cols, out=prod)
            dst = out[n0:n0 + m]
            dst[...] = prod.reshape(k, m, p).transpose(1, 0, 2)
            if bm is not None:
                dst += bm
        return out.reshape(n, k, ho, wo).astype(x.dtype, copy=False)

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
        kg = k // groups
        h, wd = out_hw
        pt, pl = padding
        cdt = _compute_dtype(y.dtype)
        reach = (dilation[0] * (kh - 1), dilation[1] * (kw - 1))
        if tuple(stride) == (1, 1) and pt <= reach[0] and pl <= reach[1]:
            # a correlation of y with the flipped kernel, channels swapped within each group
            wf = w.astype(cdt, copy=False).reshape(groups, kg, cg, kh, kw)
            wf = xp.ascontiguousarray(
                wf.transpose(0, 2, 1, 3, 4)[..., ::-1, ::-1]).reshape(c, kg, kh, kw)
            out = self.conv2d(y.astype(cdt, copy=False), wf, bias, out_hw, (1, 1),
                              (reach[0] - pt, reach[1] - pl), dilation, groups)
            return out.astype(y.dtype, copy=False)
        p = ho * wo
        r = cg * kh * kw
        wt = w.astype(cdt, copy=False).reshape(groups, kg, r).transpose(0, 2, 1)
        ym = y.astype(cdt, copy=False).reshape(n, k, p)
        hp = max(_span(ho, stride[0], dilation[0], kh), pt + h)
        wp = max(_span(wo, stride[1], dilation[1], kw), pl + wd)
        eh, ew = (ho - 1) * stride[0] + 1, (wo - 1) * stride[1] + 1
        out = xp.empty((n, c, h, wd), dtype=cdt)
        nb = self._chunk(n, c * kh * kw * p)
        nb0 = min(nb, n)
        yt_buf = xp.empty((k, nb0 * p), dtype=cdt)
        cols_buf = xp.empty((groups, r, nb0 * p), dtype=cdt)
        acc_buf = xp.empty((nb0, c, hp, wp), dtype=cdt)
        for n0 in range(0, n, nb):
            m = min(nb, n - n0)
            yt = yt_buf[:, :m * p]
            yt.reshape(k, m, p)[...] = ym[n0:n0 + m].transpose(1, 0, 2)
            cols = cols_buf[..., :m * p]
            xp.matmul(wt, yt.reshape(groups, kg, m * p), out=cols)
            cols = cols.reshape(c, kh, kw, m, ho, wo)
            acc = acc_buf[:m]
            acc[...] = 0
            for i in range(kh):  # col2im: loop over kernel offsets only, not pixels
                top = i * dilation[0]
                for j in range(kw):
                    left = j * dilation[1]
                    acc[:, :, top:top + eh:stride[0], left:left + ew:stride[1]] += \
                        cols[:, i, j].transpose(1, 0, 2, 3)
            out[n0:n0 + m] = acc[:, :, pt:pt + h, pl:pl + wd]
        if bias is not None:
            out += bias.astype(cdt, copy=False).reshape(1, c, 1, 1)
        return out.astype(y.dtype, copy=False)

    def conv2d_weight(self, x, gy, kernel_hw, stride, padding, dilation, groups):
        """Gradient of :meth:`conv2d` with respect to its weight.

        Args:
            x: the conv input ``(N, C, H, W)``; gy: the output cotangent ``(N, K, Ho, Wo)``.
            kernel_hw: ``(kh, kw)``; stride, padding, dilation, groups: conv2d's geometry.

        Returns:
            ``(K, C // groups, kh, kw)`` in ``x``'s dtype.
        """
        xp = self.xp
        n, c = x.shape[:2]
        k, ho, wo = gy.shape[1], gy.shape[2], gy.shape[3]
        kh, kw = kernel_hw
        p = ho * wo
        r = c // groups * kh * kw
        cdt = _compute_dtype(x.dtype)
        fill = self._columns(x, kernel_hw, (ho, wo), stride, padding, dilation, cdt)
        gyc = gy.astype(cdt, copy=False).reshape(n, k, p)
        nb = self._chunk(n, c * kh * kw * p)
        nb0 = min(nb, n)
        cols_buf = xp.empty((c, kh, kw, nb0 * p), dtype=cdt)
        gt_buf = xp.empty((k, nb0 * p), dtype=cdt)
        dwt = None
        for n0 in range(0, n, nb):
            m = min(nb, n - n0)
            cols = fill(cols_buf, n0, m).reshape(groups, r, m * p)
            gt = gt_buf[:, :m * p]
            gt.reshape(k, m, p)[...] = gyc[n0:n0 + m].transpose(1, 0, 2)
            # dWᵀ = cols · gyᵀ per group, reducing over the chunk's samples and pixels
            part = xp.matmul(cols, gt.reshape(groups, k // groups, m * p).transpose(0, 2, 1))
            if dwt is None:
                dwt = part
            else:
                dwt += part
        if dwt is None:  # an empty batch
            dwt = xp.zeros((groups, r, k // groups), dtype=cdt)
        dw = xp.ascontiguousarray(dwt.transpose(0, 2, 1), dtype=x.dtype)
        return dw.reshape(k, c // groups, kh, kw)
