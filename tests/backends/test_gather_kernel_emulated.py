"""``kernels/gather.cu`` (the CUDA backend's ``a[ids]``) built for the host and run on NumPy
arrays (``host_cuda.py``): every word width and id dtype against ``np.take(mode="wrap")``,
the wrap-around CuPy's indexing applies to out-of-range ids. No GPU needed; skipped without
``g++``. ``test_cuda_gather.py`` runs the same kernels on the GPU.
"""

from __future__ import annotations

import numpy as np
import pytest

from .host_cuda import GXX, HostKernel, build

pytestmark = pytest.mark.skipif(GXX is None, reason="g++ is not on PATH")

# the grid-stride loop of the real common.cuh (the emulated one leaves it out)
ST_LOOP = r"""
#define ST_LOOP(i, n) \
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
       i += (long long)gridDim.x * blockDim.x)
"""


@pytest.mark.parametrize("word", [16, 8, 4, 2, 1])
@pytest.mark.parametrize("id_dtype", [np.int64, np.int32], ids=["i64", "i32"])
def test_gather_rows_kernel(word, id_dtype):
    lib = build("gather.cu", 0, ST_LOOP)
    suffix = "i64" if id_dtype is np.int64 else "i32"
    k = HostKernel(lib, f"st_gather_rows_w{word}_{suffix}", "pppqqq")
    r = np.random.default_rng(word)
    n_rows, row_words = 7, 3
    table = r.integers(0, 256, size=(n_rows, row_words * word), dtype=np.uint8)
    ids = np.array([[0, 6, -1, 3], [7, -8, 20, 2]], dtype=id_dtype)
    out = np.full(ids.shape + (row_words * word,), 0xAB, dtype=np.uint8)  # poisoned
    k(2, 3, 0, table.ctypes.data, ids.ctypes.data, out.ctypes.data, ids.size, n_rows,
      row_words)
    np.testing.assert_array_equal(out, np.take(table, ids, axis=0, mode="wrap"))
