"""Stochastic gradient descent with momentum, Nesterov momentum and weight decay."""

from __future__ import annotations

import math
from typing import Any

from .optimizer import Optimizer, _real

__all__ = ["SGD"]


class SGD(Optimizer):
    """SGD with PyTorch's update rule, applied in place.

    With gradient ``g`` of parameter ``p`` (``torch.optim.SGD`` exactly)::

        g = g + weight_decay * p                       # if weight_decay
        buf = g  (first step)  |  buf = momentum * buf + (1 - dampening) * g
        g = g + momentum * buf  (nesterov)  |  g = buf   # if momentum
        p = p - lr * g

    Args:
        params: tensors or parameter groups (see :class:`Optimizer`).
        lr: learning rate.
        momentum: momentum factor (0 = plain SGD).
        dampening: dampening of the momentum's gradient term.
        nesterov: use Nesterov momentum (needs ``momentum > 0`` and ``dampening == 0``).
        weight_decay: L2 penalty added to the gradient.
        fused: on CUDA, update all parameters with the fused multi-tensor kernel (default;
            fp32 math and fp32 momentum for fp16/bf16 parameters); see
            :mod:`scitensor.optim._fused`.

    Example:
        >>> import scitensor as st
        >>> from scitensor import optim
        >>> w = st.tensor([1.0, 2.0], requires_grad=True)
        >>> opt = optim.SGD([w], lr=0.1)
        >>> (w * w).sum().backward(); opt.step()
        >>> [round(v, 4) for v in w.tolist()]
        [0.8, 1.6]
    """

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0,
                 dampening: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0,
                 fused: bool = True):
        super().__init__(params, {"lr": lr, "momentum": momentum, "dampening": dampening,
                                  "nesterov": nesterov, "weight_decay": weight_decay}, fused)
        # parameters whose (uninitialised) momentum buffer the next executed step must set
        self._fresh: set[int] = set()

    def _check_hyper(self, group: dict[str, Any]) -> None:
        super()._check_hyper(group)
        for name in ("momentum", "dampening"):
            v = group[name]
            if not _real(v) or not 0 <= v < math.inf:
                raise ValueError(f"SGD: {name} must be a finite number >= 0, got {v!r}")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("SGD: nesterov=True needs momentum > 0 and dampening == 0, got "
                             f"momentum={group['momentum']}, dampening={group['dampening']}")

    # ---- fused CUDA path (see _fused.py and kernels/optim.cu) --------------------------
    def _fused_state(self, p, group, capturing: bool):
        if not group["momentum"]:
            return None, None, None
        state = self.state.get(p)
        if state is None:
            state = self.state[p] = {}
        if state.get("momentum_buffer") is None:
            self._fresh.add(id(p))  # the first executed step copies the gradient into it
        return self._state_array(p, state, "momentum_buffer", capturing), None, None

    def _fused_row(self, group, p, row) -> None:
        first = id(p) in self._fresh
        self._fresh.discard(id(p))
        row[:6] = (group["lr"], group["momentum"], 1.0 - group["dampening"],
                   group["weight_decay"], 1.0 if group["nesterov"] else 0.0,
                   1.0 if first else 0.0)

    def _fused_launch(self, device_index: int, items, hyper) -> None:
        from ..backends.cuda.optim import sgd_step

        sgd_step(device_index, items, hyper)

    # ---- ufunc path (CPU, or fused=False) ------------------------------------------------
    def _update_group(self, group: dict[str, Any], params) -> None:
        lr, mom, damp = group["lr"], group["momentum"], group["dampening"]
        nesterov, wd = group["nesterov"], group["weight_decay"]
        for p in params:
            g = self._grad_array(p, "SGD")
            if g is None:
                continue
            d = self._writable(p)
            xp = p.backend.xp
            if wd:
                decayed = self._scratch_array(p, d, 1)
                xp.multiply(d, wd, out=decayed)
                decayed += g
                g = decayed
            if mom:
                state = self.state.get(p)
                if state is None:
                    state = self.state[p] = {}
                buf = state.get("momentum_buffer")
                if buf is not None:
                    self._state_arrays_on(p, (buf,), "SGD")
                if buf is None:
                    buf = state["momentum_buffer"] = g.copy()
                else:
                    buf *= mom
                    if damp:
                        buf += (1.0 - damp) * g
                    else:
                        buf += g
                if nesterov:
                    out = self._scratch_array(p, d, 0)
                    xp.multiply(buf, mom, out=out)
                    out += g
                    g = out
                else:
                    g = buf
            step = self._scratch_array(p, d, 0)
            xp.multiply(g, lr, out=step)
            d -= step
