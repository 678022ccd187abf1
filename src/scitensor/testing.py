"""Testing kit: numerical gradient checks and tolerance-aware comparisons.

Example:
    >>> import scitensor as st
    >>> from scitensor.testing import check_grad
    >>> check_grad(lambda x: (x.sin() * x).sum(), st.randn(3, 4))
    True
"""

from __future__ import annotations

import numpy as np

from . import dtypes as dt
from .autodiff.functional import vjp
from .autodiff.mode import no_grad
from .tensor import Tensor

__all__ = ["assert_close", "check_grad", "tolerance"]

_TOL = {
    "float64": (1e-10, 1e-12),
    "float32": (1e-5, 1e-6),
    "float16": (2e-3, 1e-3),
    "bfloat16": (1.6e-2, 1e-2),
}


def tolerance(dtype) -> tuple[float, float]:
    """``(rtol, atol)`` suited to ``dtype`` for elementwise results."""
    return _TOL.get(dt.as_dtype(dtype).name, (0.0, 0.0))


def _np(x):
    if isinstance(x, Tensor):
        x = x.numpy()
    a = np.asarray(x)
    if a.dtype == dt.bfloat16.np or a.dtype == np.float16:
        a = a.astype(np.float32)
    return a


def assert_close(actual, expected, rtol=None, atol=None, msg: str = "") -> None:
    """Assert ``actual`` matches ``expected`` elementwise; NaNs must match positions.

    Tolerances default to :func:`tolerance` of ``actual``'s dtype (for tensors).
    """
    if (rtol is None or atol is None) and isinstance(actual, Tensor):
        r, a = tolerance(actual.dtype)
        rtol = r if rtol is None else rtol
        atol = a if atol is None else atol
    rtol = 1e-7 if rtol is None else rtol
    atol = 0.0 if atol is None else atol
    act, exp = _np(actual), _np(expected)
    if act.shape != exp.shape:
        raise AssertionError(f"{msg} shape mismatch: {act.shape} vs {exp.shape}")
    np.testing.assert_allclose(act, exp, rtol=rtol, atol=atol, equal_nan=True, err_msg=msg)


def check_grad(f, *inputs, eps: float = 1e-6, rtol: float = 1e-5, atol: float = 1e-8,
               seed: int = 0) -> bool:
    """Compare ``f``'s reverse-mode gradient with central differences, in float64.

    Along one random direction ``v`` (over all inputs) and a random output cotangent ``u``,
    checks ``<u, J v>`` computed by ``vjp`` against ``<u, (f(x + eps v) - f(x - eps v)) / 2eps>``.

    Args:
        f: a function of the tensors in ``inputs`` returning one tensor.
        inputs: floating tensors (copied to float64 on the CPU for the check).
        eps: the finite-difference step.
        rtol, atol: tolerances on the directional derivative.
        seed: seeds the random direction and cotangent.

    Returns:
        True; raises ``AssertionError`` with both values when they differ.
    """
    rng = np.random.default_rng(seed)
    xs = [Tensor(np.asarray(x.numpy() if isinstance(x, Tensor) else x, dtype=np.float64))
          for x in inputs]
    out, pullback = vjp(f, *xs)
    if not isinstance(out, Tensor):
        raise TypeError("check_grad: f must return a single Tensor")
    u = Tensor(rng.standard_normal(out.shape))
    vs = [rng.standard_normal(x.shape) for x in xs]
    cts = pullback(u)
    analytic = sum(float(np.sum(c.numpy().astype(np.float64) * v)) for c, v in zip(cts, vs))
    with no_grad():
        plus = f(*[Tensor(x.numpy() + eps * v) for x, v in zip(xs, vs)]).numpy()
        minus = f(*[Tensor(x.numpy() - eps * v) for x, v in zip(xs, vs)]).numpy()
    numeric = float(np.sum(u.numpy() * (plus.astype(np.float64) - minus) / (2 * eps)))
    if not np.isclose(analytic, numeric, rtol=rtol, atol=atol):
        raise AssertionError(f"check_grad: analytic directional derivative {analytic!r} != "
                             f"numerical {numeric!r} (rtol={rtol}, atol={atol})")
    return True
