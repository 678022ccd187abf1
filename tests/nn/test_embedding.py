"""``F.embedding`` and ``nn.Embedding``: gather forward, scatter-add backward, padding rows,
range checks, initialisation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as hs
from hypothesis.extra import numpy as hnp

import scitensor as st
from scitensor import nn, optim
from scitensor.nn import functional as F

from ..ops.helpers import PROPS, f64, grad_check, poisoned, second_order


def _reference_grad(ids: np.ndarray, g: np.ndarray, n: int, pad=None) -> np.ndarray:
    dw = np.zeros((n, g.shape[-1]))
    np.add.at(dw, ids.reshape(-1), g.reshape(-1, g.shape[-1]))
    if pad is not None:
        dw[pad] = 0.0
    return dw


@pytest.mark.parametrize("dtype", [st.float32, st.float64, st.bfloat16], ids=lambda d: d.name)
@pytest.mark.parametrize("pad", [None, 3, -1])
def test_forward_and_backward_match_numpy(device, rng, dtype, pad):
    n, d = 7, 5
    w = rng.standard_normal((n, d)).astype(dtype.np)
    ids = rng.integers(0, n, (4, 6))
    ids[0, :3] = 2  # repeated ids accumulate
    ids[1, 0] = n - 1
    g = rng.standard_normal((4, 6, d)).astype(dtype.np)
    weight = st.tensor(w, device=device, requires_grad=True)
    with poisoned(device):
        out = F.embedding(st.tensor(ids, device=device), weight, padding_idx=pad)
        out.backward(st.tensor(g, device=device))
    assert out.shape == (4, 6, d) and out.dtype is dtype and out.device == device
    np.testing.assert_array_equal(f64(out), f64(w)[ids])
    assert weight.grad.dtype is dtype
    want = _reference_grad(ids, f64(g), n, None if pad is None else pad % n)
    tol = 2e-2 if dtype is st.bfloat16 else 1e-5
    np.testing.assert_allclose(f64(weight.grad), want, rtol=tol, atol=tol)
    if pad is not None:
        assert np.all(f64(weight.grad)[pad % n] == 0)


def test_int32_ids_and_scalar_id(device):
    w = st.tensor(np.arange(12.0).reshape(4, 3), device=device)
    assert F.embedding(st.tensor(np.array([3, 1], np.int32), device=device), w).tolist() == \
        [[9.0, 10.0, 11.0], [3.0, 4.0, 5.0]]
    assert F.embedding(st.tensor(2, device=device), w).tolist() == [6.0, 7.0, 8.0]


def test_check_grad_float64(rng):
    # (with a padding_idx the gradient is zeroed on purpose, so it is not the derivative:
    # that case is checked against the reference above)
    ids = st.tensor(rng.integers(0, 4, (3, 5)))
    grad_check(lambda w: F.embedding(ids, w) * 1.5, rng.standard_normal((4, 3)),
               device=st.Device("cpu"))


def test_second_order(rng):
    """create_graph: the pullback is differentiable (the composition with index_add)."""
    ids = st.tensor(rng.integers(0, 4, (2, 5)))
    f = second_order(lambda w: F.embedding(ids, w, padding_idx=2) ** 2)
    grad_check(f, rng.standard_normal((4, 3)), device=st.Device("cpu"))
    grad = f(st.tensor(rng.standard_normal((4, 3))))
    assert np.all(grad.numpy()[2] == 0)  # the padding row stays without gradient


def test_out_of_range_ids_raise_on_cpu():
    w = st.randn(5, 2)
    with pytest.raises(IndexError, match=r"embedding: id 5 is out of range .* \[0, 5\)"):
        F.embedding(st.tensor([0, 5]), w)
    with pytest.raises(IndexError, match="id -1"):  # NumPy would wrap it silently
        F.embedding(st.tensor([[-1, 2]]), w)


def test_out_of_range_checked_on_gpu_in_sync_mode(device):
    w = st.randn(5, 2, device=device)
    with st.sync_mode(), pytest.raises(IndexError, match="out of range"):
        F.embedding(st.tensor([7], device=device), w)


@pytest.mark.parametrize("create_graph", [False, True], ids=["backward", "create_graph"])
def test_deterministic_mode_backward(device, rng, create_graph):
    """Deterministic mode: the backward's scatter-add (``add_at``, or ``index_add`` when the
    graph is kept) either gives the same bits on every run or, where the backend has no
    reproducible implementation (CUDA's atomics today), raises a RuntimeError naming
    'embedding' instead of varying silently."""
    from scitensor import runtime

    n, d = 6, 4
    ids = rng.integers(0, n, (5, 7))
    ids[0, :4] = 2  # repeated ids: the accumulation order matters for the bits
    w0 = rng.standard_normal((n, d)).astype(np.float32)
    g = rng.standard_normal((5, 7, d)).astype(np.float32)

    def weight_grad():
        w = st.tensor(w0, device=device, requires_grad=True)
        F.embedding(st.tensor(ids, device=device), w).backward(
            st.tensor(g, device=device), create_graph=create_graph)
        return w.grad.numpy()

    reproducible = runtime.is_reproducible(device.backend,
                                           "index_add" if create_graph else "add_at")
    assert reproducible or device.type != "cpu"  # the CPU backend always is
    with st.deterministic():
        if not reproducible:
            with pytest.raises(RuntimeError, match=r"embedding.*deterministic mode"):
                weight_grad()
            return
        first, second = weight_grad(), weight_grad()
    assert first.tobytes() == second.tobytes()
    np.testing.assert_allclose(first, _reference_grad(ids, g.astype(np.float64), n),
                               rtol=1e-5, atol=1e-5)


def test_errors():
    w = st.randn(5, 2)
    with pytest.raises(TypeError, match="integer tensor"):
        F.embedding(st.tensor([0.0, 1.0]), w)
    with pytest.raises(ValueError, match="num_embeddings, embedding_dim"):
        F.embedding(st.tensor([0]), st.randn(5))
    with pytest.raises(ValueError, match="padding_idx 5 is out of range"):
        F.embedding(st.tensor([0]), w, padding_idx=5)
    with pytest.raises(TypeError, match="padding_idx must be an int"):
        F.embedding(st.tensor([0]), w, padding_idx=1.0)
    with pytest.raises(TypeError, match="ids must be a Tensor"):
        F.embedding([0, 1], w)
    with pytest.raises(ValueError, match="num_embeddings must be a positive int"):
        nn.Embedding(0, 3)


def test_layer_init_padding_and_training(device):
    st.manual_seed(0)
    emb = nn.Embedding(4000, 16, padding_idx=-2, device=device)
    assert emb.padding_idx == 3998 and emb.weight.device == device
    w = emb.weight.numpy().astype(np.float64)
    assert np.all(w[3998] == 0)
    rest = np.delete(w, 3998, axis=0)
    # N(0, 1): mean within ~5 standard errors, std within 2% (64,000 draws)
    assert abs(rest.mean()) < 5 / np.sqrt(rest.size) and abs(rest.std() - 1) < 0.02
    opt = optim.SGD(emb.parameters(), lr=0.5)
    ids = st.tensor([[3998, 1, 1]], device=device)
    before = emb.weight.numpy().copy()
    (emb(ids) ** 2).sum().backward()
    opt.step()
    after = emb.weight.numpy()
    assert np.all(after[3998] == 0)  # no gradient reached the padding row
    np.testing.assert_allclose(after[1], before[1] * (1 - 0.5 * 2 * 2), rtol=1e-5)
    assert np.array_equal(after[2], before[2])
    assert repr(emb) == "Embedding(4000, 16, padding_idx=3998)"


def test_from_pretrained_and_state_dict():
    table = st.tensor(np.arange(6.0).reshape(3, 2))
    frozen = nn.Embedding.from_pretrained(table)
    assert not frozen.weight.requires_grad and list(frozen.state_dict()) == ["weight"]
    assert frozen(st.tensor([2, 0])).tolist() == [[4.0, 5.0], [0.0, 1.0]]
    table[0, 0] = 100.0  # a copy, not a view
    assert frozen.weight[0, 0].item() == 0.0
    trained = nn.Embedding.from_pretrained(table, freeze=False)
    assert trained.weight.requires_grad
    fresh = nn.Embedding(3, 2)
    fresh.load_state_dict(trained.state_dict())
    assert fresh.weight.tolist() == trained.weight.tolist()


@PROPS
@given(ids_shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
       n=hs.integers(1, 6), d=hs.integers(1, 4), seed=hs.integers(0, 2**16))
def test_property_shapes(ids_shape, n, d, seed):
    r = np.random.default_rng(seed)
    w = r.standard_normal((n, d))
    ids = r.integers(0, n, ids_shape)
    g = r.standard_normal(ids_shape + (d,))
    weight = st.tensor(w, requires_grad=True)
    out = F.embedding(st.tensor(ids), weight)
    assert out.shape == ids_shape + (d,)
    np.testing.assert_array_equal(out.numpy(), w[ids])
    out.backward(st.tensor(g))
    np.testing.assert_allclose(weight.grad.numpy(), _reference_grad(ids, g, n), atol=1e-12)
