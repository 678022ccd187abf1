"""scitensor: a small tensor library with autodiff, a NumPy CPU backend and a CUDA backend.

Example:
    >>> import scitensor as st
    >>> x = st.tensor([1.0, 2.0, 3.0], requires_grad=True)
    >>> (x * x).sum().backward()
    >>> x.grad.tolist()
    [2.0, 4.0, 6.0]
"""

from . import cluster, dtypes, gpu
from ._version import __version__
from .autodiff import (
    custom_vjp,
    enable_grad,
    grad,
    gradients,
    is_grad_enabled,
    no_grad,
    set_grad_enabled,
    tree_flatten,
    tree_unflatten,
    value_and_grad,
    vjp,
)
from .creation import (
    arange,
    empty,
    empty_like,
    eye,
    from_dlpack,
    from_numpy,
    full,
    full_like,
    linspace,
    ones,
    ones_like,
    rand,
    rand_like,
    randint,
    randn,
    randn_like,
    tensor,
    zeros,
    zeros_like,
)
from .device import (
    Device,
    best_device,
    cuda_status,
    default_device,
    devices,
    get_default_device,
    set_default_device,
)
from .dtypes import (
    DType,
    as_dtype,
    bfloat16,
    float16,
    float32,
    float64,
    get_default_dtype,
    int32,
    int64,
    result_type,
    set_default_dtype,
)
from .dtypes import bool_ as bool
from .jit import jit
from .ops import *  # noqa: F403
from .precision import get_matmul_precision, set_matmul_precision
from .random import Generator, manual_seed
from .runtime import (
    HostSyncInCaptureError,
    deterministic,
    get_sync_mode,
    is_deterministic,
    set_deterministic,
    set_sync_mode,
    sync_mode,
)
from .serialization import CheckpointError, load, save
from .tensor import Tensor
