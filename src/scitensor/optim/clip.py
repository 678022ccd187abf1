"""Gradient clipping by global norm, without a host sync on the GPU (capturable by ``jit``)."""

from __future__ import annotations

import math

import numpy as np

from ..autodiff.mode import no_grad
from ..tensor import Tensor, wrap
from .optimizer import _real

__all__ = ["clip_grad_norm_"]


def clip_grad_norm_(parameters, max_norm: float, norm_type: float = 2.0) -> Tensor:
    """Scale the gradients of ``parameters`` in place so that their global norm is at most
    ``max_norm``, as ``torch.nn.utils.clip_grad_norm_``.

    The norm is taken over all gradients together (parameters without ``.grad`` are
    skipped); every gradient is multiplied by ``min(1, max_norm / (norm + 1e-6))`` (a NaN
    norm gives NaN gradients, as in PyTorch). On a CUDA device the norm (float64 sums of
    squares, deterministic) and the factor stay on the device: no host sync, so it works
    inside :func:`scitensor.jit`; the 2-norm takes three fused kernels in all. ``max_norm``
    is baked into a captured graph (pass it as a ``jit`` argument to change it).

    Args:
        parameters: a tensor or an iterable of tensors.
        max_norm: the largest allowed norm.
        norm_type: the p of the p-norm (``2.0`` default, ``float("inf")`` for the max-norm).

    Returns:
        The global norm before clipping, a 0-d tensor on the gradients' device (float64 if a
        gradient is float64, else float32).

    Example:
        >>> import scitensor as st
        >>> from scitensor import optim
        >>> w = st.tensor([3.0, 4.0], requires_grad=True)
        >>> (w * w).sum().backward()             # grad = [6, 8], norm 10
        >>> round(optim.clip_grad_norm_([w], 1.0).item(), 4)
        10.0
        >>> [round(v, 4) for v in w.grad.tolist()]
        [0.6, 0.8]
    """
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    for i, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise TypeError(f"clip_grad_norm_: parameter {i} is a {type(p).__name__}, not a "
                            "Tensor; pass model.parameters() or a list of tensors")
    with_grad = [p for p in params if p.grad is not None]
    if not _real(max_norm) or not 0 <= max_norm < math.inf:
        raise ValueError(f"clip_grad_norm_: max_norm must be a finite number >= 0, got "
                         f"{max_norm!r:.40}")
    if not _real(norm_type) or not norm_type > 0:
        raise ValueError(f"clip_grad_norm_: norm_type must be a number > 0 (or inf), got "
                         f"{norm_type!r:.40}")
    norm_type = float(norm_type)
    if not with_grad:
        from ..creation import tensor

        return tensor(0.0)
    device = with_grad[0].grad.device
    for p in with_grad:
        if p.grad.device is not device:
            raise ValueError(f"clip_grad_norm_: gradients on different devices ({device} "
                             f"and {p.grad.device}); clip each device's parameters "
                             "separately")
    out_f64 = any(p.grad.data.dtype == np.float64 for p in with_grad)
    with no_grad():
        if device.type == "cuda" and norm_type == 2.0:
            from ..backends.cuda import optim as cuda_optim

            if all(cuda_optim.supported(p.grad.data.dtype) for p in with_grad):
                grads = _contiguous_grads(with_grad, device)
                norm = cuda_optim.clip_grad_norm(device.index, grads, max_norm, out_f64)
                return wrap(norm, device)
        return _clip_xp(with_grad, device, float(max_norm), norm_type, out_f64)


def _contiguous_grads(params, device):
    """Each distinct gradient array once, C-contiguous (a strided gradient is replaced)."""
    xp = device.backend.xp
    seen, out = set(), []
    for p in params:
        g = p.grad.data
        if not g.flags.c_contiguous:
            g = xp.ascontiguousarray(g)
            p.grad = wrap(g, device)
        key = g.data.ptr if g.size else id(g)
        if key not in seen:
            seen.add(key)
            out.append(g)
    return out


def _clip_xp(params, device, max_norm: float, norm_type: float, out_f64: bool) -> Tensor:
    """The backend-ufunc version (the CPU, and other norms on the GPU): device-side only."""
    be = device.backend
    xp = be.xp
    f64 = np.dtype(np.float64)
    grads, seen = [], set()
    for p in params:
        if id(p.grad.data) not in seen:
            seen.add(id(p.grad.data))
            grads.append(p)
    if math.isinf(norm_type):
        parts = [xp.max(xp.abs(p.grad.data)).astype(f64) for p in grads if p.grad.size]
        total = xp.max(xp.stack(parts)) if parts else xp.zeros((), f64)
    else:
        total = xp.zeros((), f64)
        for p in grads:
            a = xp.abs(p.grad.data.astype(f64))
            total = total + xp.sum(a * a if norm_type == 2.0 else a**norm_type)
        total = xp.sqrt(total) if norm_type == 2.0 else total ** (1.0 / norm_type)
    coef = xp.minimum(max_norm / (total + 1e-6), 1.0)  # NaN propagates, like torch's clamp
    for p in grads:
        g = p.grad.data
        work = f64 if g.dtype == f64 else np.dtype(np.float32)
        scaled = (g.astype(work) * coef.astype(work)).astype(g.dtype)
        if getattr(getattr(g, "flags", None), "writeable", True):
            g[...] = scaled
        else:
            p.grad = wrap(scaled, device)
    return wrap(xp.asarray(total, dtype=f64 if out_f64 else np.float32), device)
