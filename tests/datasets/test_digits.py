import gzip
import importlib.resources

import numpy as np
import pytest

import scitensor as st
from scitensor.datasets import load_digits


def _file_rows():
    ref = importlib.resources.files("scitensor.datasets") / "digits.csv.gz"
    with ref.open("rb") as f, gzip.open(f, "rt") as text:
        return np.loadtxt(text, delimiter=",")


def test_all_matches_the_bundled_file():
    x, y = load_digits("all")
    rows = _file_rows()
    assert x.shape == (1797, 64) and y.shape == (1797,)
    assert x.dtype == st.float32 and y.dtype == st.int64
    np.testing.assert_allclose(x.numpy(), rows[:, :64] / 16.0, rtol=1e-7)
    np.testing.assert_array_equal(y.numpy(), rows[:, 64])
    assert x.numpy().min() == 0.0 and x.numpy().max() == 1.0
    assert sorted(set(y.tolist())) == list(range(10))


def test_split_is_a_stratified_partition():
    xa, ya = load_digits("all", dtype=st.float64)
    xtr, ytr = load_digits("train", dtype=st.float64)
    xte, yte = load_digits("test", dtype=st.float64)
    assert xtr.shape[0] + xte.shape[0] == 1797
    assert 0.19 < xte.shape[0] / 1797 < 0.21
    # train + test hold exactly the images of the whole set (as a multiset of rows)
    def rows(x, y):
        a = np.concatenate([x.numpy(), y.numpy()[:, None]], axis=1)
        return a[np.lexsort(a.T[::-1])]
    np.testing.assert_array_equal(
        rows(st.concatenate([xtr, xte]), st.concatenate([ytr, yte])), rows(xa, ya))
    per_class_all = np.bincount(ya.numpy(), minlength=10)
    per_class_test = np.bincount(yte.numpy(), minlength=10)
    np.testing.assert_array_equal(per_class_test, np.round(per_class_all * 0.2))
    assert not np.all(np.diff(ytr.numpy()) >= 0)  # shuffled, not sorted by class


def test_split_is_deterministic_and_seeded():
    a = load_digits("test", seed=3)
    b = load_digits("test", seed=3)
    c = load_digits("test", seed=4)
    np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())
    np.testing.assert_array_equal(a[1].numpy(), b[1].numpy())
    assert not np.array_equal(a[1].numpy(), c[1].numpy())


def test_test_fraction():
    x, _ = load_digits("test", test_fraction=0.5)
    assert abs(x.shape[0] - 1797 / 2) <= 10


def test_device_and_dtype(device):
    x, y = load_digits("train", device=device, dtype=st.float64)
    assert x.device == device and y.device == device and x.dtype == st.float64
    st.set_default_dtype(st.float64)
    assert load_digits("test")[0].dtype == st.float64


def test_results_are_independent_copies():
    x, y = load_digits("all")
    x[0, 0] = 99.0
    y[0] = 7
    x2, y2 = load_digits("all")
    assert x2[0, 0].item() == 0.0 and y2[0].item() == 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="split must be"):
        load_digits("validation")
    with pytest.raises(ValueError, match="test_fraction"):
        load_digits("test", test_fraction=1.0)
    with pytest.raises(TypeError, match="must be floating"):
        load_digits(dtype=st.int32)
    with pytest.raises(TypeError, match="seed"):
        load_digits(seed=1.5)
