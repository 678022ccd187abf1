"""Adam and AdamW (decoupled weight decay), with PyTorch's update rules, applied in place."""

from __future__ import annotations

import math
from typing import Any

from .optimizer import Optimizer, _real

__all__ = ["Adam", "AdamW"]


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015), matching ``torch.optim.Adam``.

    For each parameter ``p`` with gradient ``g``, at step ``t``::

        g = g + weight_decay * p                      # L2 penalty (Adam only)
        m = m + (1 - beta1) * (g - m)                 # = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        v_max = max(v_max, v)                         # amsgrad only; used instead of v
        p = p - lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

    Args:
        params: tensors or parameter groups (see :class:`Optimizer`).
        lr: learning rate.
        betas: ``(beta1, beta2)`` decay rates of the moment estimates.
        eps: added to the denominator for numerical stability.
        weight_decay: L2 penalty added to the gradient (see :class:`AdamW` for decoupled).
        amsgrad: use the running maximum of ``v`` (Reddi et al., 2018).
        fused: on CUDA, update all parameters with the fused multi-tensor kernel (default;
            fp32 math and fp32 state for fp16/bf16 parameters, amsgrad included); see
            :mod:`scitensor.optim._fused`.

    Example:
        >>> import scitensor as st
        >>> from scitensor import optim
        >>> w = st.tensor([1.0, -1.0], requires_grad=True)
        >>> opt = optim.Adam([w], lr=0.1)
        >>> (w * w).sum().backward(); opt.step()
        >>> [round(v, 4) for v in w.tolist()]
        [0.9, -0.9]
    """

    _decoupled = False

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False,
                 fused: bool = True):
        super().__init__(params, {"lr": lr, "betas": _pair(betas), "eps": eps,
                                  "weight_decay": weight_decay, "amsgrad": amsgrad}, fused)

    def _check_hyper(self, group: dict[str, Any]) -> None:
        super()._check_hyper(group)
        betas = group["betas"]
        if (not isinstance(betas, tuple | list) or len(betas) != 2
                or not all(_real(b) and 0.0 <= b < 1.0 for b in betas)):
            raise ValueError(f"{self._name}: betas must be two numbers in [0, 1), got {betas!r}")
        eps = group["eps"]
        if not _real(eps) or not eps >= 0 or math.isinf(eps):
            raise ValueError(f"{self._name}: eps must be a finite number >= 0, got {eps!r}")

    # ---- fused CUDA path (see _fused.py and kernels/optim.cu) --------------------------
    def _fused_state(self, p, group, capturing: bool):
        state = self.state.get(p)
        if state is None:
            state = self.state[p] = {"step": 0}
        elif group["amsgrad"] and "max_exp_avg_sq" not in state and state["step"]:
            # amsgrad switched on after some steps: start the running maximum at zero
            if capturing:
                raise RuntimeError(f"{self._name}: amsgrad was switched on inside "
                                   "scitensor.jit capture; run one eager step first")
            state["max_exp_avg_sq"] = p.backend.zeros(p.shape, self._state_dtype(p))
        m = self._state_array(p, state, "exp_avg", capturing)
        v = self._state_array(p, state, "exp_avg_sq", capturing)
        vmax = (self._state_array(p, state, "max_exp_avg_sq", capturing)
                if group["amsgrad"] else None)
        return m, v, vmax

    def _fused_row(self, group, p, row) -> None:
        state = self.state[p]
        state["step"] = t = state["step"] + 1
        lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        row[:9] = (-(lr / (1.0 - b1**t)), math.sqrt(1.0 - b2**t), 1.0 - b1, b2, 1.0 - b2, eps,
                   wd, 1.0 - lr * wd, 1.0 if t == 1 else 0.0)

    def _fused_rows(self, group, members, host) -> None:
        """:meth:`_fused_row` for many parameters of ``group``: one row per step count,
        written to all their rows with one NumPy assignment."""
        by_step: dict = {}
        state = self.state
        for p, row in members:
            s = state[p]
            s["step"] = t = s["step"] + 1
            by_step.setdefault(t, []).append(row)
        lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        for t, rows in by_step.items():
            host[rows, :9] = (-(lr / (1.0 - b1**t)), math.sqrt(1.0 - b2**t), 1.0 - b1, b2,
                              1.0 - b2, eps, wd, 1.0 - lr * wd, 1.0 if t == 1 else 0.0)

    def _fused_launch(self, device_index: int, items, hyper) -> None:
        from ..backends.cuda.optim import adam_step

        adam_step(device_index, items, hyper, self._decoupled)

    # ---- ufunc path (CPU, or fused=False) ------------------------------------------------
    def _update_group(self, group: dict[str, Any], params) -> None:
        lr, (b1, b2), eps = group["lr"], group["betas"], group["eps"]
        wd, amsgrad = group["weight_decay"], group["amsgrad"]
        decoupled = self._decoupled
        name = self._name
        for p in params:
            g = self._grad_array(p, name)
            if g is None:
                continue
            d = self._writable(p)
            xp = p.backend.xp
            state = self.state.get(p)
            if state is None:
                state = self.state[p] = {"step": 0, "exp_avg": xp.zeros_like(d),
                                         "exp_avg_sq": xp.zeros_like(d)}
                if amsgrad:
                    state["max_exp_avg_sq"] = xp.zeros_like(d)
            m, v = state["exp_avg"], state["exp_avg_sq"]
            self._state_arrays_on(p, (m, v), name)
            state["step"] = t = state["step"] + 1
            if wd:
                if decoupled:
                    d *= 1.0 - lr * wd
                else:
                    decayed = self._scratch_array(p, d, 1)
                    xp.multiply(d, wd, out=decayed)
                    decayed += g
                    g = decayed
            tmp = self._scratch_array(p, d, 0)
            # m.lerp_(g, 1 - b1) as PyTorch computes it: m + w * (g - m)
            xp.subtract(g, m, out=tmp)
            tmp *= 1.0 - b1
            m += tmp
            # v.mul_(b2).addcmul_(g, g, value=1 - b2)
            v *= b2
            xp.multiply(g, 1.0 - b2, out=tmp)
            tmp *= g
            v += tmp
            if amsgrad:
                vmax = state["max_exp_avg_sq"]
                xp.maximum(vmax, v, out=vmax)
                v = vmax
            step_size = lr / (1.0 - b1**t)
            xp.sqrt(v, out=tmp)
            tmp /= math.sqrt(1.0 - b2**t)
            tmp += eps
            # p.addcdiv_(m, denom, value=-step_size)
            xp.divide(m, tmp, out=tmp)
            tmp *= -step_size
            d += tmp


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019), as ``torch.optim.AdamW``.

    Each step first shrinks the parameter, ``p = p * (1 - lr * weight_decay)``, then applies
    the Adam update without any L2 term in the gradient.

    Args:
        params: tensors or parameter groups (see :class:`Optimizer`).
        lr: learning rate.
        betas: ``(beta1, beta2)``.
        eps: denominator term.
        weight_decay: decoupled decay rate (default 0.01, as in PyTorch).
        amsgrad: use the running maximum of the second moment.
        fused: fused multi-tensor CUDA update (see :class:`Adam`).

    Example:
        >>> import scitensor as st
        >>> from scitensor import optim
        >>> w = st.tensor([1.0], requires_grad=True)
        >>> opt = optim.AdamW([w], lr=0.1, weight_decay=0.5)
        >>> (w * 0.0).sum().backward(); opt.step()
        >>> round(w.item(), 4)
        0.95
    """

    _decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False,
                 fused: bool = True):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, fused=fused)


def _pair(betas):
    """``betas`` as a tuple when it is a sequence (anything else fails the hyper check)."""
    return tuple(betas) if isinstance(betas, tuple | list) else betas
