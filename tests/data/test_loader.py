"""DataLoader on the CPU: order, seeded shuffle, drop_last, partial batches, errors."""

import numpy as np
import pytest

import scitensor as st
from scitensor.data import DataLoader


def _xy(n=10):
    return np.arange(2.0 * n, dtype=np.float32).reshape(n, 2), np.arange(n)


def _labels(loader):
    return [b[-1].tolist() for b in loader]


def test_order_and_partial_last_batch():
    x, y = _xy()
    loader = DataLoader(x, y, batch_size=4, device="cpu")
    assert len(loader) == 3
    batches = list(loader)
    assert [b[1].tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    xb, yb = batches[-1]
    assert isinstance(xb, st.Tensor) and xb.device == "cpu"
    assert xb.shape == (2, 2) and xb.dtype == st.float32 and yb.dtype == st.int64
    np.testing.assert_array_equal(xb.numpy(), x[8:])


def test_drop_last():
    x, y = _xy()
    loader = DataLoader(x, y, batch_size=4, drop_last=True)
    assert len(loader) == 2
    assert _labels(loader) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    exact = DataLoader(x, y, batch_size=5, drop_last=True)
    assert len(exact) == 2 and len(list(exact)) == 2


def test_batch_larger_than_data():
    x, y = _xy(3)
    assert _labels(DataLoader(x, y, batch_size=8)) == [[0, 1, 2]]
    assert len(DataLoader(x, y, batch_size=8, drop_last=True)) == 0
    assert list(DataLoader(x, y, batch_size=8, drop_last=True)) == []


def test_shuffle_is_seeded_and_fresh_per_epoch():
    x, y = _xy(50)
    a = DataLoader(x, y, batch_size=7, shuffle=True, seed=3)
    b = DataLoader(x, y, batch_size=7, shuffle=True, seed=3)
    e0a, e1a = _labels(a), _labels(a)
    e0b, e1b = _labels(b), _labels(b)
    assert e0a == e0b and e1a == e1b  # same seed, same epochs: same order
    assert e0a != e1a  # a fresh permutation each epoch
    flat = sorted(v for batch in e0a for v in batch)
    assert flat == list(range(50))  # a permutation: every sample exactly once
    assert _labels(DataLoader(x, y, batch_size=7, shuffle=True, seed=4)) != e0a
    b.set_epoch(1)
    assert _labels(b) == e1a
    assert a.order(0).tolist() == [v for batch in e0a for v in batch]


def test_rows_stay_paired_under_shuffle():
    x, y = _xy(20)
    for xb, yb in DataLoader(x, y, batch_size=6, shuffle=True, seed=1):
        np.testing.assert_array_equal(xb.numpy(), x[yb.numpy()])


def test_tensor_sources_and_single_source():
    x, y = _xy(6)
    loader = DataLoader(st.tensor(x), st.tensor(y), batch_size=4)
    assert _labels(loader) == [[0, 1, 2, 3], [4, 5]]
    (only,) = next(iter(DataLoader(st.tensor(x), batch_size=2)))
    np.testing.assert_array_equal(only.numpy(), x[:2])
    images = np.zeros((4, 1, 8, 8), np.uint8)
    (xb,) = next(iter(DataLoader(images, batch_size=4)))
    assert xb.shape == (4, 1, 8, 8) and xb.dtype == st.int64


def test_batches_do_not_alias_the_source():
    x, y = _xy(4)
    xb, _ = next(iter(DataLoader(x, y, batch_size=4)))
    x[0, 0] = 99.0
    assert xb.numpy()[0, 0] == 0.0


def test_default_device_is_used():
    x, y = _xy(4)
    with st.default_device("cpu"):
        xb, _ = next(iter(DataLoader(x, y, batch_size=2)))
    assert xb.device == "cpu"


def test_errors():
    x, y = _xy(10)
    with pytest.raises(ValueError, match="same number of samples"):
        DataLoader(x, y[:9], batch_size=2)
    with pytest.raises(ValueError, match="same number of samples"):
        DataLoader(st.tensor(x), st.tensor(y[:3]), batch_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(x, batch_size=0)
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(x, batch_size=2.5)
    with pytest.raises(ValueError, match="at least one"):
        DataLoader(batch_size=2)
    with pytest.raises(ValueError, match="scalar"):
        DataLoader(np.float32(1.0), batch_size=2)
    with pytest.raises(TypeError, match="seed"):
        DataLoader(x, batch_size=2, seed="a")
