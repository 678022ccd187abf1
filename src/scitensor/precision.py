"""Matrix-product precision for float32: exact IEEE fp32 (default) or TF32 tensor cores.

TF32 keeps float32's range but rounds operands to 10 mantissa bits (relative error about
3e-4) and runs about 7x faster on an H100. It affects float32 GEMMs on CUDA only; the CPU,
float64 and the half-precision dtypes (which always accumulate in float32) are unchanged.

Example:
    >>> import scitensor as st
    >>> st.get_matmul_precision()
    'highest'
    >>> st.set_matmul_precision("tf32"); st.get_matmul_precision()
    'tf32'
    >>> st.set_matmul_precision("highest")
"""

from __future__ import annotations

__all__ = ["get_matmul_precision", "set_matmul_precision"]

_ALIASES = {"highest": "highest", "fp32": "highest", "ieee": "highest",
            "tf32": "tf32", "high": "tf32"}
# read by the CUDA backend at every matmul
MATMUL_PRECISION = ["highest"]


def set_matmul_precision(precision: str) -> None:
    """Choose float32 GEMM precision: ``"highest"`` (exact fp32, default) or ``"tf32"``.

    ``"fp32"``/``"ieee"`` are accepted for ``"highest"`` and ``"high"`` for ``"tf32"``.
    """
    key = str(precision).lower()
    if key not in _ALIASES:
        raise ValueError(f"set_matmul_precision: unknown precision {precision!r}; use "
                         "'highest' (exact float32, the default) or 'tf32'")
    MATMUL_PRECISION[0] = _ALIASES[key]


def get_matmul_precision() -> str:
    """The current float32 GEMM precision: ``"highest"`` or ``"tf32"``."""
    return MATMUL_PRECISION[0]
