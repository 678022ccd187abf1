"""Linear-layer primitives (GEMM + bias + activation, and its backward) against the NumPy API.

Three primitives serve :func:`scitensor.ops.linear.linear`; every array is 2-D (the op folds
leading axes into the rows) and ``w`` is ``(in_features, out_features)``: ``y = x @ w + b``.

- ``linear_act(x, w, b, activation, need_aux) -> (y, aux)``: ``y = act(x @ w + b)``; ``aux``
  is what the backward of the activation needs (a :class:`LinearAux`, ``None`` when
  ``activation`` is ``None`` or ``need_aux`` is false).
- ``linear_act_backward(g, x, w, aux, activation, needs) -> (dx, dw, db)``: ``g`` is the
  cotangent of ``y``; ``needs = (need_dx, need_dw, need_db)`` (``None`` where not needed).
  With ``activation=None`` (and ``aux=None``) ``g`` is taken as the cotangent of ``x @ w + b``.
- ``linear_act_backward_chain(g, x, w, aux, activation, needs, prev_aux, prev_activation,
  need_prev_db) -> (dprev, dw, db, dprev_b)``: the same, when ``x`` is itself the output
  ``act_prev(pre_prev)`` of another linear layer whose saved ``prev_aux`` is given: instead of
  ``dx`` it returns ``dprev = act_prev'(pre_prev) * dx``, the cotangent of the previous
  layer's pre-activation, and ``dprev_b``, its bias gradient (the column sums of ``dprev``; or
  ``None`` when ``need_prev_db`` is false). The CUDA backend does this in the ``dx`` GEMM's
  epilogue (cuBLASLt ``DRELU_BGRAD`` / ``DGELU_BGRAD``), so the previous layer runs no
  activation-backward or bias-reduction kernel of its own.

Activations: ``"relu"`` and ``"gelu"``, the latter the **tanh approximation**
``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`` (what cuBLASLt's GELU epilogues compute;
PyTorch's ``gelu(approximate="tanh")``). The ReLU derivative at 0 is 0.

Precision: as the GPU epilogues, the bias add and the activation run in float32 for
float16/bfloat16 (on the product rounded once to the input dtype by ``self.matmul``), and the
result is rounded once. This composition is the reference the CUDA path is tested against.
"""

from __future__ import annotations

import math

import numpy as np

from .. import dtypes as dt

__all__ = ["ACTIVATIONS", "LinearAux", "LinearPrimitives", "gelu_tanh_grad"]

ACTIVATIONS = (None, "relu", "gelu")
_LOW = (np.dtype(np.float16), dt.bfloat16.np)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_A = 0.044715


class LinearAux:
    """What a linear layer's forward saved for the backward of its activation.

    ``kind`` is one of

    - ``"mask"``: ``data`` is a bool ``(rows, n)`` array, ``pre > 0``;
    - ``"bits"``: ``data`` is cuBLASLt's ReLU bit-mask, ``uint8`` ``(rows, ld // 8)``: bit
      ``j % 8`` (least significant first) of byte ``j // 8`` of a row is ``pre[row, j] > 0``;
      ``ld`` (in bits) is ``n`` rounded up to a multiple of 128;
    - ``"pre"``: ``data`` is the pre-activation ``x @ w + b`` in the layer's dtype,
      ``(rows, ld)`` with the first ``n`` columns used (cuBLASLt pads ``ld`` to a multiple
      of 8).

    A plain class, not a tuple, so that backend wrappers that walk tuples of arrays leave it
    alone.
    """

    __slots__ = ("kind", "data", "ld", "n")

    def __init__(self, kind: str, data, ld: int, n: int):
        self.kind, self.data, self.ld, self.n = kind, data, ld, n

    def __repr__(self) -> str:
        return (f"LinearAux({self.kind!r}, {self.data.dtype}{list(self.data.shape)}, "
                f"ld={self.ld}, n={self.n})")


def gelu_tanh_grad(xp, pre):
    """d/dx of the tanh-approximated GELU at ``pre`` (float32 or float64 array)."""
    c = pre.dtype.type(_SQRT_2_OVER_PI)
    a = pre.dtype.type(_GELU_A)
    half, one = pre.dtype.type(0.5), pre.dtype.type(1.0)
    x2 = pre * pre
    t = xp.tanh(c * (pre + a * x2 * pre))
    return half * (one + t) + half * pre * (one - t * t) * c * (one + pre.dtype.type(3) * a * x2)


class LinearPrimitives:
    """The linear primitives as a plain composition (``self.xp``, ``self.matmul``,
    ``self.astype``: on CUDA the casts are the backend's kernels, as CuPy's own ufuncs do
    not take bfloat16)."""

    def _lin_compute(self, a):
        return self.astype(a, dt.float32) if a.dtype in _LOW else a

    def linear_act(self, x, w, b, activation, need_aux):
        xp = self.xp
        pre = self.matmul(x, w)
        if b is None and activation is None:
            return pre, None
        c = self._lin_compute(pre)
        if b is not None:
            c = c + self._lin_compute(b)
        aux = None
        if activation is None:
            y = c
        elif activation == "relu":
            y = xp.maximum(c, c.dtype.type(0))
            if need_aux:
                aux = LinearAux("mask", c > 0, c.shape[1], c.shape[1])
        elif activation == "gelu":
            k = c.dtype.type(_SQRT_2_OVER_PI)
            y = c.dtype.type(0.5) * c * (c.dtype.type(1) + xp.tanh(
                k * (c + c.dtype.type(_GELU_A) * c * c * c)))
            if need_aux:
                aux = LinearAux("pre", self._lin_round(c, x.dtype), c.shape[1], c.shape[1])
        else:
            raise ValueError(f"linear_act: unknown activation {activation!r}")
        return self._lin_round(y, x.dtype), aux

    def _lin_round(self, a, np_dtype):
        return a if a.dtype == np_dtype else self.astype(a, dt.from_numpy_dtype(np_dtype))

    def _linear_act_grad(self, g, aux, activation):
        """``act'(pre) * g`` from the saved ``aux`` (``g`` when ``activation`` is None)."""
        if activation is None:
            return g
        xp = self.xp
        n = g.shape[1]
        if aux.kind == "bits":
            flat = xp.unpackbits(aux.data.reshape(-1), bitorder="little")
            mask = flat.reshape(aux.data.shape[0], -1)[:, :n].astype(bool)
        else:
            mask = aux.data
        gc = self._lin_compute(g)
        if aux.kind in ("mask", "bits"):
            out = xp.where(mask, gc, gc.dtype.type(0))
        else:
            out = gc * gelu_tanh_grad(xp, self._lin_compute(aux.data[:, :n]))
        return self._lin_round(out, g.dtype)

    def linear_act_backward(self, g, x, w, aux, activation, needs):
        need_dx, need_dw, need_db = needs
        dpre = self._linear_act_grad(g, aux, activation)
        dx = self.matmul(dpre, w.T) if need_dx else None
        dw = self.matmul(x.T, dpre) if need_dw else None
        db = self.sum(dpre, (0,), False) if need_db else None
        return dx, dw, db

    def linear_act_backward_chain(self, g, x, w, aux, activation, needs, prev_aux,
                                  prev_activation, need_prev_db):
        dx, dw, db = self.linear_act_backward(g, x, w, aux, activation,
                                              (True, needs[1], needs[2]))
        dprev = self._linear_act_grad(dx, prev_aux, prev_activation)
        dprev_b = self.sum(dprev, (0,), False) if need_prev_db else None
        return dprev, dw, db, dprev_b
