"""Random numbers: Philox generators, seeding, offsets, and rough distribution checks."""

from __future__ import annotations

import numpy as np
import pytest

import scitensor as st
from scitensor.backends.philox import philox_words

FLOATS = [st.float16, st.bfloat16, st.float32, st.float64]
N = 100_000


def test_philox_known_answer():
    """Philox4x32-10 reference vectors (Salmon et al., Random123 kat_vectors)."""
    # counter = 0, key = 0
    w = philox_words(np, 4, seed=0, offset=0)
    assert [int(v) for v in w] == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    # a longer draw extends a shorter one (block i is counter (i_lo, i_hi, off_lo, off_hi))
    a = philox_words(np, 9, seed=7, offset=3)
    assert [int(v) for v in a[:5]] == [int(v) for v in philox_words(np, 5, seed=7, offset=3)]
    assert len(set(int(v) for v in a)) == 9


def test_manual_seed_reproduces(device):
    st.manual_seed(123)
    a = [st.rand(5, device=device), st.randn(2, 3, device=device),
         st.randint(0, 100, (7,), device=device)]
    st.manual_seed(123)
    b = [st.rand(5, device=device), st.randn(2, 3, device=device),
         st.randint(0, 100, (7,), device=device)]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.numpy(), y.numpy())
    assert not np.array_equal(a[0].numpy(), st.rand(5, device=device).numpy())


def test_explicit_generators_are_independent_of_the_default(device):
    g1, g2 = st.Generator(42), st.Generator(42)
    a = st.randn(10, generator=g1, device=device)
    st.rand(100, device=device)  # draws from the default generator do not disturb g2
    b = st.randn(10, generator=g2, device=device)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert g1.offset == 1 and g2.offset == 1


def test_offsets_and_seeds_give_different_numbers(device):
    g = st.Generator(1)
    a = st.rand(1000, generator=g, device=device).numpy()
    b = st.rand(1000, generator=g, device=device).numpy()
    c = st.rand(1000, generator=st.Generator(2), device=device).numpy()
    assert g.get_state() == (1, 2)
    assert not np.array_equal(a, b) and not np.array_equal(a, c)
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.1 and abs(np.corrcoef(a, c)[0, 1]) < 0.1


def test_generator_state_round_trip():
    g = st.Generator(7)
    st.rand(3, generator=g)
    state = g.get_state()
    a = st.rand(3, generator=g)
    g.set_state(state)
    np.testing.assert_array_equal(a.numpy(), st.rand(3, generator=g).numpy())
    assert g.manual_seed(7).get_state() == (7, 0)
    assert repr(g) == "Generator(seed=7, offset=0)"
    assert st.Generator(2**64 + 3).seed == 3
    assert st.manual_seed(5) is st.random.default_generator and st.random.seed() == 5


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: d.name)
def test_rand_distribution(device, dtype):
    u = st.rand(N, dtype=dtype, device=device, generator=st.Generator(3))
    assert u.dtype is dtype and u.device == device and u.shape == (N,)
    a = u.numpy().astype(np.float64)
    assert a.min() >= 0.0 and a.max() < 1.0
    assert abs(a.mean() - 0.5) < 0.01
    assert abs(a.var() - 1 / 12) < 0.005
    hist = np.histogram(a, bins=10, range=(0, 1))[0]
    assert hist.min() > 0.9 * N / 10


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: d.name)
def test_randn_distribution(device, dtype):
    z = st.randn(N + 1, dtype=dtype, device=device, generator=st.Generator(4))  # odd count
    assert z.dtype is dtype and z.shape == (N + 1,)
    a = z.numpy().astype(np.float64)
    assert np.isfinite(a).all()
    assert abs(a.mean()) < 0.02
    assert abs(a.var() - 1.0) < 0.03
    assert abs(np.mean(np.abs(a) < 1.0) - 0.6827) < 0.01


def test_randint_range_and_all_values_hit(device):
    r = st.randint(-3, 4, (N,), device=device, generator=st.Generator(5))
    assert r.dtype is st.int64 and r.device == device
    counts = np.bincount(r.numpy() + 3, minlength=7)
    assert len(counts) == 7 and counts.min() > 0.9 * N / 7
    r = st.randint(10, size=(50, 4), dtype=st.int32, device=device)
    assert r.shape == (50, 4) and r.dtype is st.int32
    assert set(np.unique(r.numpy())) == set(range(10))
    b = st.randint(0, 2, 1000, dtype=st.bool, device=device).numpy()
    assert 400 < b.sum() < 600
    wide = st.randint(-(2**63), 2**63 - 1, (1000,), device=device).numpy()
    assert (wide < 0).any() and (wide > 0).any()


def test_shapes_and_empty(device):
    assert st.rand(2, 3, device=device).shape == (2, 3)
    assert st.rand((2, 3), device=device).shape == (2, 3)
    assert st.randn(0, device=device).shape == (0,)
    assert st.randint(0, 5, (), device=device).shape == ()
    assert st.rand_like(st.zeros(2, 2, dtype=st.float64, device=device)).dtype is st.float64
    assert st.randn_like(st.zeros(4, device=device), generator=st.Generator(1)).shape == (4,)
    assert st.randn(3, requires_grad=True).requires_grad


def test_random_errors():
    with pytest.raises(TypeError, match="rand: dtype must be floating"):
        st.rand(3, dtype=st.int32)
    with pytest.raises(TypeError, match="randn: dtype must be floating"):
        st.randn_like(st.zeros(2, dtype=st.int64))
    with pytest.raises(ValueError, match="randint: need low < high"):
        st.randint(5, 5, (2,))
    with pytest.raises(TypeError, match="randint: low must be an int"):
        st.randint(0.5, 3, (2,))
    with pytest.raises(ValueError, match=r"randint: .* does not fit dtype int32"):
        st.randint(0, 2**33, (2,), dtype=st.int32)
    with pytest.raises(ValueError, match=r"randint: .* does not fit dtype bool"):
        st.randint(0, 3, (2,), dtype=st.bool)
    with pytest.raises(TypeError, match=r"rand: generator must be a scitensor.Generator"):
        st.rand(2, generator=5)
    with pytest.raises(TypeError, match="manual_seed: seed must be an int"):
        st.Generator(1.5)
