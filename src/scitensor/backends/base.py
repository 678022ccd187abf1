"""The backend interface: every primitive an op may call (the seed's TensorOps / TensorOpsIO).

A backend works on raw arrays (``numpy.ndarray`` on the CPU, ``cupy.ndarray`` on CUDA); it
knows nothing of Tensors or gradients. Ops in :mod:`scitensor.ops` compute values with these
primitives and express their pullbacks with other ops.

Conventions shared by every primitive:

- ``dtype`` arguments are :class:`scitensor.dtypes.DType` objects;
- ``axes`` is a tuple of non-negative axis numbers (already normalised by the op);
- binary primitives get two arrays of the same dtype, or an array and a scalar already
  converted with :meth:`Backend.scalar`; broadcasting follows NumPy;
- a primitive never modifies its inputs, except the ones named ``*_inplace`` / ``setitem`` /
  ``add_at``, which modify their first argument and return nothing.

:class:`scitensor.backends.xp.ArrayBackend` implements all of it once against the NumPy API
(``xp`` = ``numpy`` or ``cupy``); a backend overrides what it does better (CUDA: cuBLASLt
matmul, its own kernels, Philox random numbers on the device).
"""

from __future__ import annotations

PRIMITIVES = {
    "io": ["asarray", "to_numpy", "from_dlpack", "scalar", "empty", "zeros", "full", "arange",
           "linspace", "eye", "astype", "copy", "synchronize"],
    "random": ["uniform", "normal", "randint", "bernoulli_mask"],
    "unary": ["neg", "exp", "log", "log1p", "expm1", "sqrt", "rsqrt", "abs", "sign", "sin",
              "cos", "tanh", "sigmoid", "relu", "gelu_tanh", "gelu_erf", "erf", "silu",
              "softplus", "logical_not", "isnan", "isinf", "isfinite", "floor", "ceil",
              "round", "square", "reciprocal"],
    "binary": ["add", "sub", "mul", "div", "floordiv", "mod", "pow", "maximum", "minimum",
               "eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "logical_xor"],
    "ternary": ["where", "clip"],
    "reduction": ["sum", "prod", "max", "min", "argmax", "argmin", "logsumexp", "softmax",
                  "log_softmax", "any", "all", "cumsum"],
    "shape": ["reshape", "transpose", "broadcast_to", "concatenate", "stack", "split", "pad",
              "flip", "repeat", "tile", "ascontiguous"],
    "indexing": ["getitem", "setitem", "add_at", "take_along_axis", "index_add",
                 "scatter_add", "one_hot", "sort", "argsort"],
    "linalg": ["matmul"],
    "pooling": ["max_pool2d", "max_pool2d_backward", "max_pool2d_gather", "max_pool2d_indices",
                "avg_pool2d", "avg_pool2d_backward", "adaptive_avg_pool2d",
                "adaptive_avg_pool2d_backward"],
    "batchnorm": ["batch_norm_stats", "batch_norm_train_forward", "batch_norm_backward",
                  "batch_norm_update_running_inplace", "channel_affine", "dropout_apply"],
    "conv": ["conv2d", "conv_transpose2d", "conv2d_weight"],
    "attention": ["attention_forward", "attention_backward"],
    "normalization": ["layer_norm_forward", "layer_norm_backward", "rms_norm_forward",
                      "rms_norm_backward", "softmax_backward", "log_softmax_backward",
                      "cross_entropy_forward", "cross_entropy_backward",
                      "cross_entropy_reduce"],
    "linear": ["linear_act", "linear_act_backward", "linear_act_backward_chain"],
    "cluster": ["kmeans_assign", "kmeans_update"],
}


class Backend:
    """Documented list of the primitives every backend implements.

    Each method below raises ``NotImplementedError`` here; ``ArrayBackend`` implements them.
    ``name`` is ``"cpu"`` or ``"cuda"``; ``device`` is the :class:`~scitensor.Device` served.
    """

    name: str = "abstract"

    # ---- IO and creation -------------------------------------------------------------
    def asarray(self, obj, dtype):
        """Python data or a host (NumPy) array -> a backend array of ``dtype``."""
        raise NotImplementedError

    def to_numpy(self, a):
        """Backend array -> host ``numpy.ndarray`` (waits for pending work)."""
        raise NotImplementedError

    def from_dlpack(self, obj):
        """Zero-copy import of a DLPack-capable object living on this backend's device."""
        raise NotImplementedError

    def scalar(self, value, dtype):
        """Python number -> the scalar form binary primitives accept for ``dtype``."""
        raise NotImplementedError

    def empty(self, shape, dtype):
        raise NotImplementedError

    def zeros(self, shape, dtype):
        raise NotImplementedError

    def full(self, shape, value, dtype):
        raise NotImplementedError

    def arange(self, start, stop, step, dtype):
        raise NotImplementedError

    def linspace(self, start, stop, num, dtype):
        raise NotImplementedError

    def eye(self, n, m, dtype):
        raise NotImplementedError

    def astype(self, a, dtype):
        """Cast to ``dtype`` (returns a new array; the input when it already has it)."""
        raise NotImplementedError

    def copy(self, a):
        raise NotImplementedError

    def synchronize(self):
        """Wait for every queued operation on the device."""
        raise NotImplementedError

    # ---- random (counter-based: the same (seed, offset) gives the same numbers) --------
    def uniform(self, shape, dtype, seed, offset):
        """U[0, 1) numbers from Philox4x32-10 at key ``seed``, counter ``offset``."""
        raise NotImplementedError

    def normal(self, shape, dtype, seed, offset):
        """Standard normal numbers (Box-Muller over Philox)."""
        raise NotImplementedError

    def randint(self, low, high, shape, dtype, seed, offset):
        raise NotImplementedError

    def bernoulli_mask(self, shape, p_keep, seed, offset):
        """Boolean array, True with probability ``p_keep`` (dropout masks)."""
        raise NotImplementedError

    # ---- matrix product ---------------------------------------------------------------
    def matmul(self, a, b):
        """Batched, broadcasting matrix product of arrays with ndim >= 2 (float dtypes)."""
        raise NotImplementedError

    # ---- fused attention (full contract: scitensor.backends.xp_attention) ----------------
    def attention_forward(self, q, k, v, causal, scale, out=None):
        """``(out, lse)``: softmax(q kᵀ · scale [+ causal mask]) v for ``q`` ``(B, H, Sq, D)``
        and ``k``, ``v`` ``(B, Hkv, Sk, D)`` (any strides), and the rows' logsumexp. ``out``:
        an array or view shaped and typed like ``q`` that receives the output and is returned
        (``ValueError`` naming the shapes and dtypes otherwise); None allocates one."""
        raise NotImplementedError

    def attention_backward(self, g, q, k, v, out, lse, causal, scale, grads_out=None):
        """``(dq, dk, dv)`` for the output cotangent ``g`` (any strides). ``grads_out``: three
        arrays or views shaped and typed like ``q``, ``k``, ``v`` that receive the gradients
        and are returned; None allocates them."""
        raise NotImplementedError
