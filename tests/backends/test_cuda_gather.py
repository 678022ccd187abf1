"""The CUDA backend's row-gather kernel (``a[ids]``, ``backends/cuda/gather.py``) against NumPy.

Skipped without a usable GPU. Outputs are poisoned (0xFF bytes) before the kernel runs, so a
row it forgets to write fails; every word width (16 to 1 bytes) and both id dtypes are hit,
and out-of-range ids must wrap around as CuPy's own indexing wraps them.
"""

from __future__ import annotations

import numpy as np
import pytest

import scitensor as st
from scitensor.nn import functional as F

pytestmark = pytest.mark.skipif(not st.cuda_status()[0],
                                reason=f"CUDA not usable: {st.cuda_status()[1]}")


@pytest.fixture(scope="module")
def gpu():
    return st.Device("cuda").backend


@pytest.fixture(autouse=True)
def poison(gpu):
    gpu._ew.poison = True
    try:
        yield
    finally:
        gpu._ew.poison = False


def _table(shape, dtype, seed=0):
    r = np.random.default_rng(seed)
    if dtype is st.bool:
        return r.random(shape) < 0.5
    return (r.standard_normal(shape) * 10).astype(dtype.np)


def _same(got, want):
    """Bitwise equality of a CuPy result and a NumPy reference (bfloat16 included)."""
    got = st.Device("cuda").backend.to_numpy(got)
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_array_equal(np.ascontiguousarray(got).view(np.uint8),
                                  np.ascontiguousarray(want).view(np.uint8))


def _launches(gpu, monkeypatch):
    """Record the gather kernels launched (word bytes, id dtype) while the test runs."""
    seen = []
    orig = type(gpu)._gather_kernel

    def spy(self, word, id_dtype):
        seen.append((word, np.dtype(id_dtype).name))
        return orig(self, word, id_dtype)

    monkeypatch.setattr(type(gpu), "_gather_kernel", spy)
    return seen


# (table shape, dtype) -> the word width the kernel must copy with
CASES = [((65, 384), st.float32, 16), ((10, 6), st.float32, 8), ((7, 3), st.float32, 4),
         ((9, 5), st.float16, 2), ((9, 3), st.bool, 1), ((11, 4, 8), st.bfloat16, 16),
         ((12,), st.float64, 8), ((5, 2), st.int64, 16), ((6, 3), st.int32, 4)]


@pytest.mark.parametrize("shape,dtype,word", CASES, ids=str)
@pytest.mark.parametrize("id_dtype", [np.int64, np.int32], ids=["i64", "i32"])
def test_gather_rows_matches_numpy(gpu, monkeypatch, shape, dtype, word, id_dtype):
    import cupy

    table = _table(shape, dtype)
    r = np.random.default_rng(1)
    ids = r.integers(0, shape[0], size=(3, 17)).astype(id_dtype)
    seen = _launches(gpu, monkeypatch)
    got = gpu.getitem(gpu.asarray(table, dtype), (cupy.asarray(ids),))
    assert seen == [(word, np.dtype(id_dtype).name)]
    _same(got, table[ids])


def test_out_of_range_ids_wrap_like_cupy(gpu, monkeypatch):
    import cupy

    table = _table((7, 12), st.float32)
    ids = np.array([-1, -7, -8, 7, 15, -100, 3, 1 << 40], dtype=np.int64)
    seen = _launches(gpu, monkeypatch)
    got = gpu.getitem(cupy.asarray(table), (cupy.asarray(ids),))
    assert seen, "the gather kernel did not run"
    _same(got, np.take(table, ids, axis=0, mode="wrap"))
    _same(got, cupy.asnumpy(cupy.asarray(table)[cupy.asarray(ids)]))


def test_unaligned_and_strided_operands(gpu, monkeypatch):
    import cupy

    base = cupy.asarray(_table((9, 8), st.float32))
    view = base[1:]             # rows start 32 bytes in: still 16-byte words
    odd = base.reshape(-1)[1:65].reshape(8, 8)  # 4 bytes in: 4-byte words
    ids_host = np.array([[0, 7, 3], [5, 5, 1]], dtype=np.int64)
    ids = cupy.asarray(np.ascontiguousarray(ids_host.T)).T  # a non-contiguous id array
    seen = _launches(gpu, monkeypatch)
    for a, word in ((view, 16), (odd, 4)):
        seen.clear()
        got = gpu.getitem(a, (ids,))
        assert seen == [(word, "int64")]
        _same(got, cupy.asnumpy(a)[ids_host])


def test_other_keys_and_layouts_use_cupy(gpu, monkeypatch):
    import cupy

    table = cupy.asarray(_table((6, 4), st.float32))
    seen = _launches(gpu, monkeypatch)
    host = cupy.asnumpy(table)
    ids = np.array([2, 0, 3])
    mask = np.array([True, False, True, True, False, True])
    cases = [(table.T, (cupy.asarray(ids),), host.T[ids]),               # not C-contiguous
             (table, (cupy.asarray(ids), 1), host[ids, 1]),              # two entries
             (table, (cupy.asarray(mask),), host[mask]),                 # bool mask
             (table, (slice(1, 3),), host[1:3])]
    for a, key, want in cases:
        _same(gpu.getitem(a, key), want)
    # an empty table: whatever CuPy does (never a kernel taking ids modulo 0 rows)
    empty = cupy.zeros((0, 4), cupy.float32)
    try:
        want = empty[cupy.asarray(ids)]
    except Exception as e:
        with pytest.raises(type(e)):
            gpu.getitem(empty, (cupy.asarray(ids),))
    else:
        assert gpu.getitem(empty, (cupy.asarray(ids),)).shape == want.shape
    assert seen == []


def test_empty_ids_and_empty_rows(gpu):
    import cupy

    table = cupy.asarray(_table((5, 3), st.float32))
    got = gpu.getitem(table, (cupy.zeros((0, 2), cupy.int64),))
    assert got.shape == (0, 2, 3)
    got = gpu.getitem(cupy.zeros((5, 0), cupy.float32), (cupy.asarray([1, 2]),))
    assert got.shape == (2, 0)


def test_embedding_forward_and_backward_on_gpu():
    w = _table((65, 32), st.float32)
    ids = np.random.default_rng(2).integers(0, 65, size=(4, 9))
    wt = st.tensor(w, device="cuda", requires_grad=True)
    out = F.embedding(st.tensor(ids, device="cuda"), wt)
    np.testing.assert_array_equal(out.numpy(), w[ids])
    g = np.random.default_rng(3).standard_normal(out.shape).astype(np.float32)
    out.backward(st.tensor(g, device="cuda"))
    want = np.zeros_like(w, dtype=np.float64)
    np.add.at(want, ids, g)
    np.testing.assert_allclose(wt.grad.numpy(), want, rtol=1e-5, atol=1e-5)
