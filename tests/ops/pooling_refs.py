"""Float64 references for pooling and batch norm (plain loops over output positions), and a
context manager that poisons new GPU allocations.

The references follow PyTorch's definitions directly and share no code with scitensor.
"""

from __future__ import annotations

import math

import numpy as np

try:
    import torch
    import torch.nn.functional as TF
except ImportError:  # pragma: no cover - torch is optional
    torch = TF = None


def out_size(size, k, s, p, d, ceil):
    span = d * (k - 1) + 1
    num = size + 2 * p - span
    out = (-(-num // s) if ceil else num // s) + 1
    if ceil and (out - 1) * s >= size + p:
        out -= 1
    return out


def ref_max_pool(x, k, s, p, d, ceil):
    """``(y, flat_indices)``; ties: first maximum in window order; NaN wins (first NaN)."""
    x = np.asarray(x, dtype=np.float64)
    n, c, h, w = x.shape
    oh, ow = (out_size(x.shape[2 + a], k[a], s[a], p[a], d[a], ceil) for a in (0, 1))
    y = np.full((n, c, oh, ow), -np.inf)
    idx = np.zeros((n, c, oh, ow), dtype=np.int64)
    for r in range(oh):
        for q in range(ow):
            best = np.full((n, c), -np.inf)
            arg = np.full((n, c), -1, dtype=np.int64)
            for i in range(k[0]):
                for j in range(k[1]):
                    hh, ww = r * s[0] - p[0] + i * d[0], q * s[1] - p[1] + j * d[1]
                    if not (0 <= hh < h and 0 <= ww < w):
                        continue
                    v = x[:, :, hh, ww]
                    take = (v > best) | (np.isnan(v) & ~np.isnan(best)) | (arg < 0)
                    take &= ~np.isnan(best) | (arg < 0)
                    best = np.where(take, v, best)
                    arg = np.where(take, hh * w + ww, arg)
            y[:, :, r, q], idx[:, :, r, q] = best, arg
    return y, idx


def ref_max_pool_grad(g, idx, input_shape):
    dx = np.zeros(input_shape).reshape(input_shape[0], input_shape[1], -1)
    n, c = input_shape[:2]
    for a in range(n):
        for b in range(c):
            np.add.at(dx[a, b], idx[a, b].reshape(-1), np.asarray(g, np.float64)[a, b].reshape(-1))
    return dx.reshape(input_shape)


def ref_avg_pool(x, k, s, p, ceil, cip, div):
    x = np.asarray(x, dtype=np.float64)
    n, c, h, w = x.shape
    oh, ow = (out_size(x.shape[2 + a], k[a], s[a], p[a], 1, ceil) for a in (0, 1))
    y = np.zeros((n, c, oh, ow))
    for r in range(oh):
        for q in range(ow):
            h0, w0 = r * s[0] - p[0], q * s[1] - p[1]
            h1, w1 = min(h0 + k[0], h + p[0]), min(w0 + k[1], w + p[1])
            pool = (h1 - h0) * (w1 - w0)
            h0c, w0c, h1c, w1c = max(h0, 0), max(w0, 0), min(h1, h), min(w1, w)
            total = x[:, :, h0c:h1c, w0c:w1c].sum(axis=(2, 3))
            divisor = div if div else (pool if cip else (h1c - h0c) * (w1c - w0c))
            y[:, :, r, q] = total / divisor
    return y


def ref_adaptive_avg_pool(x, out):
    x = np.asarray(x, dtype=np.float64)
    h, w = x.shape[2:]
    y = np.zeros(x.shape[:2] + tuple(out))
    for r in range(out[0]):
        h0, h1 = (r * h) // out[0], math.ceil((r + 1) * h / out[0])
        for q in range(out[1]):
            w0, w1 = (q * w) // out[1], math.ceil((q + 1) * w / out[1])
            y[:, :, r, q] = x[:, :, h0:h1, w0:w1].mean(axis=(2, 3))
    return y


def ref_batch_norm_train(x, w, b, eps):
    """``(y, mean, biased var)`` over every axis but 1, in float64."""
    x = np.asarray(x, dtype=np.float64)
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    mean, var = x.mean(axis=axes), x.var(axis=axes)
    xhat = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
    w = np.ones(x.shape[1]) if w is None else np.asarray(w, np.float64)
    b = np.zeros(x.shape[1]) if b is None else np.asarray(b, np.float64)
    return xhat * w.reshape(shape) + b.reshape(shape), mean, var


def ref_batch_norm_grads(g, x, w, eps):
    """``(dx, dweight, dbias)`` of training-mode batch norm, float64."""
    x, g = np.asarray(x, np.float64), np.asarray(g, np.float64)
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    m = x.size // x.shape[1]
    mean, var = x.mean(axis=axes).reshape(shape), x.var(axis=axes).reshape(shape)
    invstd = 1 / np.sqrt(var + eps)
    xhat = (x - mean) * invstd
    w = np.ones(x.shape[1]) if w is None else np.asarray(w, np.float64)
    db = g.sum(axis=axes)
    dw = (g * xhat).sum(axis=axes)
    dx = w.reshape(shape) * invstd * (g - db.reshape(shape) / m - xhat * dw.reshape(shape) / m)
    return dx, dw, db
