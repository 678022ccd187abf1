"""Stochastic gradient descent with momentum, Nesterov momentum and weight decay."""

from __future__ import annotations

from typing import Any

from .optimizer import Optimizer

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
                 dampening: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "momentum": momentum, "dampening": dampening,
                                  "nesterov": nesterov, "weight_decay": weight_decay})

    def _check_hyper(self, group: dict[str, Any]) -> None:
        super()._check_hyper(group)
        if not group["momentum"] >= 0:
            raise ValueError(f"SGD: momentum must be >= 0, got {group['momentum']!r}")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("SGD: nesterov=True needs momentum > 0 and dampening == 0, got "
                             f"momentum={group['momentum']}, dampening={group['dampening']}")

    def _update_group(self, group: dict[str, Any]) -> None:
        lr, mom, damp = group["lr"], group["momentum"], group["dampening"]
        nesterov, wd = group["nesterov"], group["weight_decay"]
        for p in group["params"]:
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
