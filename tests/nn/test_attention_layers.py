"""``nn.MultiHeadAttention`` against a float64 NumPy composition; gradients; dropout; jit."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as hs

import scitensor as st
from scitensor import nn, optim
from scitensor.nn import functional as F
from scitensor.nn.attention import _attention_composed, _attention_seq_major, _heads_view
from scitensor.ops.attention import attention_reference

from ..ops.helpers import PROPS, f64, grad_check, poisoned, second_order


def mha_reference(xq, xk, xv, w, b, wo, bo, h, hkv, causal):
    """float64 multi-head attention from the textbook formulas (independent of scitensor)."""
    xq, xk, xv, w, wo = (np.asarray(a, np.float64) for a in (xq, xk, xv, w, wo))
    bsz, sq, e = xq.shape
    sk = xk.shape[1]
    d = e // h
    ekv = hkv * d
    b = np.zeros(w.shape[1]) if b is None else np.asarray(b, np.float64)
    bo = np.zeros(e) if bo is None else np.asarray(bo, np.float64)
    q = (xq @ w[:, :e] + b[:e]).reshape(bsz, sq, h, d).transpose(0, 2, 1, 3)
    k = (xk @ w[:, e:e + ekv] + b[e:e + ekv]).reshape(bsz, sk, hkv, d).transpose(0, 2, 1, 3)
    v = (xv @ w[:, e + ekv:] + b[e + ekv:]).reshape(bsz, sk, hkv, d).transpose(0, 2, 1, 3)
    k, v = np.repeat(k, h // hkv, axis=1), np.repeat(v, h // hkv, axis=1)
    s = q @ k.swapaxes(-1, -2) / np.sqrt(d)
    visible = np.ones((sq, sk), bool)
    if causal:
        visible = np.arange(sk)[None, :] <= np.arange(sq)[:, None] + (sk - sq)
    s = np.where(visible, s, -np.inf)
    m = np.max(s, axis=-1, keepdims=True, initial=-np.inf)
    ex = np.exp(s - np.where(np.isfinite(m), m, 0.0))
    den = ex.sum(axis=-1, keepdims=True)
    p = np.where(den > 0, ex / np.where(den > 0, den, 1.0), 0.0)
    o = (p @ v).transpose(0, 2, 1, 3).reshape(bsz, sq, e)
    return o @ wo + bo


def _params(m):
    b = m.qkv_proj.bias
    bo = m.out_proj.bias
    return (f64(m.qkv_proj.weight), None if b is None else f64(b), f64(m.out_proj.weight),
            None if bo is None else f64(bo))


def rel_err(got, want) -> float:
    got, want = f64(got), np.asarray(want, np.float64)
    assert got.shape == want.shape
    return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30))


# head_dim 32: the CUDA kernels' path on a GPU
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("kv_heads", [None, 1])
@pytest.mark.parametrize("bias", [True, False])
def test_self_attention_matches_reference(device, rng, causal, kv_heads, bias):
    st.manual_seed(0)
    m = nn.MultiHeadAttention(64, 2, bias=bias, causal=causal, kv_heads=kv_heads,
                              device=device)
    assert m.head_dim == 32 and m.qkv_proj.weight.shape == (64, (2 + 2 * (kv_heads or 2)) * 32)
    x = rng.standard_normal((2, 13, 64)).astype(np.float32)
    with poisoned(device):
        y = m(st.tensor(x, device=device))
    assert y.shape == (2, 13, 64) and y.device == device and y.dtype is st.float32
    want = mha_reference(x, x, x, *_params(m), 2, kv_heads or 2, causal)
    assert rel_err(y, want) < 1e-5


@pytest.mark.parametrize("mode", ["key_is_value", "separate", "same_as_query"])
@pytest.mark.parametrize("causal", [False, True])
def test_cross_attention_matches_reference(device, rng, mode, causal):
    m = nn.MultiHeadAttention(64, 4, kv_heads=2, device=device)
    xq = rng.standard_normal((2, 9, 64)).astype(np.float32)
    xk = rng.standard_normal((2, 5, 64)).astype(np.float32)  # Sq > Sk: early rows see nothing
    xv = rng.standard_normal((2, 5, 64)).astype(np.float32) if mode == "separate" else xk
    if mode == "same_as_query":
        xk = xv = xq
    tq, tk = st.tensor(xq, device=device), st.tensor(xk, device=device)
    tv = st.tensor(xv, device=device) if mode == "separate" else tk
    with poisoned(device):
        y = m(tq, tk, tv, causal=causal)
    want = mha_reference(xq, xk, xv, *_params(m), 4, 2, causal)
    assert rel_err(y, want) < 1e-5
    if causal and mode != "same_as_query":  # query rows 0..3 see no key: out_proj bias only
        np.testing.assert_allclose(f64(y)[:, :4], np.broadcast_to(f64(m.out_proj.bias),
                                                                   (2, 4, 64)), atol=1e-6)


@pytest.mark.parametrize("cross", [False, True])
@pytest.mark.parametrize("causal", [False, True])
def test_gradients_float64(rng, cross, causal):
    """check_grad over the input(s) and every parameter (float64 central differences)."""
    m = nn.MultiHeadAttention(8, 2, kv_heads=1, causal=causal).double()

    def f(xq, xk, w, b, wo, bo):
        m.qkv_proj.weight, m.qkv_proj.bias, m.out_proj.weight, m.out_proj.bias = w, b, wo, bo
        return m(xq, xk) if cross else m(xq) + 0 * xk.sum()

    args = [rng.standard_normal(s) for s in ((2, 5, 8), (2, 3, 8), (8, 16), (16,), (8, 8), (8,))]
    grad_check(f, *args, device=st.Device("cpu"))


def test_gradients_match_reference_on_device(device, rng):
    """float32 gradients on the device against the float64 CPU layer (checked above)."""
    st.manual_seed(3)
    ref = nn.MultiHeadAttention(64, 2, causal=True).double()
    m = nn.MultiHeadAttention(64, 2, causal=True, device=device)
    m.load_state_dict(ref.state_dict())
    x = rng.standard_normal((2, 11, 64))
    g = rng.standard_normal((2, 11, 64))
    x64 = st.tensor(x, requires_grad=True)
    ref(x64).backward(st.tensor(g))
    x32 = st.tensor(x.astype(np.float32), device=device, requires_grad=True)
    with poisoned(device):
        m(x32).backward(st.tensor(g.astype(np.float32), device=device))
    assert rel_err(x32.grad, x64.grad.numpy()) < 1e-4
    for (name, p), q in zip(m.named_parameters(), ref.parameters()):
        assert rel_err(p.grad, q.grad.numpy()) < 1e-4, name


def test_second_order_through_the_layer(rng):
    m = nn.MultiHeadAttention(6, 2, causal=True).double()
    grad_check(second_order(lambda x: m(x)), rng.standard_normal((1, 4, 6)),
               device=st.Device("cpu"))


@pytest.mark.parametrize("causal", [False, True])
def test_unfused_composition_matches_fused(rng, causal):
    """The dropout path's composition (at p=0) against the fused op, GQA and Sq > Sk."""
    q = st.tensor(rng.standard_normal((2, 7, 4, 3)))
    kv = st.tensor(rng.standard_normal((2, 5, 4, 3)))
    roles = ((0, 0, 4), (1, 0, 2), (1, 2, 4))
    qs, ks, vs = (_heads_view((q, kv)[i], h0, h1) for i, h0, h1 in roles)
    got = _attention_composed(qs, ks, vs, causal, 0.5, 0.0)
    want = F.scaled_dot_product_attention(qs, ks, vs, causal=causal, scale=0.5)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-12, atol=1e-12)


# (source shapes as (seq, heads), roles, which sources require grad): the layer's packed
# self-attention, its key-is-value cross-attention, three sources with one frozen, and a source
# with a head no role uses (its gradient must be zero)
SEQ_MAJOR_CASES = {
    "packed": ([(9, 5)], ((0, 0, 3), (0, 3, 4), (0, 4, 5)), (True,)),
    "key_is_value": ([(9, 4), (6, 4)], ((0, 0, 4), (1, 0, 2), (1, 2, 4)), (True, True)),
    "frozen_value": ([(7, 2), (11, 1), (11, 1)], ((0, 0, 2), (1, 0, 1), (2, 0, 1)),
                     (True, True, False)),
    "uncovered_head": ([(8, 6)], ((0, 0, 2), (0, 3, 4), (0, 5, 6)), (True,)),
}


@pytest.mark.parametrize("case", SEQ_MAJOR_CASES)
@pytest.mark.parametrize("causal", [False, True])
def test_seq_major_op_matches_composition(device, rng, case, causal):
    """The layer's copy-free attention step (strided views in, output and gradients written
    into place) against the float64 composition through head views, value and gradients."""
    shapes, roles, needs = SEQ_MAJOR_CASES[case]
    b, d = 2, 32  # a CUDA kernel head dim
    host = [rng.standard_normal((b, s, n, d)) for s, n in shapes]
    srcs = [st.tensor(a.astype(np.float32), device=device, requires_grad=rg)
            for a, rg in zip(host, needs)]
    ref_srcs = [st.tensor(a, requires_grad=rg) for a, rg in zip(host, needs)]
    sq, h = shapes[roles[0][0]][0], roles[0][2] - roles[0][1]
    g = rng.standard_normal((b, sq, h, d))
    with poisoned(device):
        y = _attention_seq_major(tuple(srcs), roles, causal, None)
        y.backward(st.tensor(g.astype(np.float32), device=device))
    qs, ks, vs = (_heads_view(ref_srcs[i], h0, h1) for i, h0, h1 in roles)
    want = attention_reference(qs, ks, vs, causal).permute(0, 2, 1, 3)
    want.backward(st.tensor(g))
    assert y.shape == (b, sq, h, d) and rel_err(y, want.numpy()) < 1e-4
    for i, (src, ref) in enumerate(zip(srcs, ref_srcs)):
        if not ref.requires_grad:
            assert src.grad is None
            continue
        assert rel_err(src.grad, ref.grad.numpy()) < 1e-4, i
    if case == "uncovered_head":
        assert np.all(srcs[0].grad.numpy()[:, :, [2, 4]] == 0)


def test_seq_major_op_copies_nothing(device, rng, monkeypatch):
    """Issue 9: the fused step reads the projection, writes the output and the gradients in
    place: the backend is never asked for a contiguous copy."""
    be = device.backend
    calls = []
    for name in ("ascontiguous", "copy"):
        orig = getattr(be, name)
        monkeypatch.setattr(be, name, lambda *a, _o=orig, _n=name, **k: calls.append(_n)
                            or _o(*a, **k))
    src = st.tensor(rng.standard_normal((2, 16, 6, 64)).astype(np.float32), device=device,
                    requires_grad=True)
    y = _attention_seq_major((src,), ((0, 0, 2), (0, 2, 4), (0, 4, 6)), True, None)
    y.backward(st.tensor(rng.standard_normal(y.shape).astype(np.float32), device=device))
    assert src.grad.shape == src.shape and calls == []


def test_dropout_in_training_only_and_unbiased():
    st.manual_seed(0)
    m = nn.MultiHeadAttention(8, 2, dropout=0.5).double()
    x = st.randn(1, 4, 8, dtype=st.float64)
    clean = m.eval()(x).numpy()
    m.train()
    draws = [m(x).numpy() for _ in range(600)]
    assert not np.allclose(draws[0], clean) and not np.allclose(draws[0], draws[1])
    # E[dropout(P)] = P: the mean of many draws approaches the clean output (without the
    # 1/(1-p) rescale it would sit near half-way to out_proj's bias)
    spread = np.abs(np.mean(draws, axis=0) - clean).max() / np.abs(clean).max()
    assert spread < 0.05, spread


def test_dropout_path_gradients(rng):
    m = nn.MultiHeadAttention(8, 2, dropout=0.3, causal=True).double()

    def f(x):
        st.manual_seed(5)  # the same mask on every evaluation
        return m(x)

    grad_check(f, rng.standard_normal((1, 5, 8)), device=st.Device("cpu"))


def test_jit_training_step_matches_eager(device):
    """A tiny pre-norm block with every new layer, trained eagerly and through st.jit."""

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = nn.Embedding(11, 64)
            self.blocks = nn.ModuleList([nn.ModuleDict({
                "ln": nn.LayerNorm(64), "attn": nn.MultiHeadAttention(64, 2, causal=True),
                "act": nn.SiLU()}) for _ in range(2)])
            self.norm = nn.RMSNorm(64)
            self.head = nn.Dense(64, 11)

        def forward(self, ids):
            x = self.tok(ids)
            for blk in self.blocks:
                x = x + blk["act"](blk["attn"](blk["ln"](x)))
            return self.head(self.norm(x))

    def make():
        st.manual_seed(0)
        model = Tiny().to(device)
        return model, optim.AdamW(model.parameters(), lr=1e-2)

    def step_for(model, opt):
        def step(ids, labels):
            loss = F.cross_entropy(model(ids).reshape(-1, 11), labels.reshape(-1))
            opt.zero_grad()
            loss.backward()
            optim.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            return loss.detach()
        return step

    (m1, o1), (m2, o2) = make(), make()
    eager, jitted = step_for(m1, o1), st.jit(step_for(m2, o2))
    r = np.random.default_rng(0)
    batches = [[st.tensor(r.integers(0, 11, (2, 16)), device=device) for _ in range(2)]
               for _ in range(2)]
    losses = []
    for i in range(6):  # two batches in turn: each reaches the graph through its inputs
        ids, labels = batches[i % 2]
        a, b = eager(ids, labels).item(), jitted(ids, labels).item()
        np.testing.assert_allclose(a, b, rtol=1e-4)
        losses.append(a)
    assert losses[-2] < losses[0] and losses[-1] < losses[1]
    for p, q in zip(m1.parameters(), m2.parameters()):
        # AdamW at lr 1e-2 moves an element with a near-zero gradient by about +-lr whatever
        # its size, so last-bit differences of atomically summed gradients (embedding and
        # attention backward on the GPU) can show up as ~1e-3 absolute after 6 steps
        np.testing.assert_allclose(p.numpy(), q.numpy(), rtol=1e-3, atol=2e-3)


def test_errors_and_repr():
    with pytest.raises(ValueError, match="embed_dim 10 is not divisible by num_heads 4"):
        nn.MultiHeadAttention(10, 4)
    with pytest.raises(ValueError, match="multiple of kv_heads 3"):
        nn.MultiHeadAttention(12, 4, kv_heads=3)
    with pytest.raises(ValueError, match="dropout must be in"):
        nn.MultiHeadAttention(8, 2, dropout=1.0)
    m = nn.MultiHeadAttention(8, 2)
    with pytest.raises(ValueError, match=r"\(batch, seq, 8\), got shape \(4, 8\); add a batch"):
        m(st.randn(4, 8))
    with pytest.raises(ValueError, match="must be"):
        m(st.randn(1, 4, 6))
    with pytest.raises(ValueError, match="value given without key"):
        m(st.randn(1, 4, 8), value=st.randn(1, 4, 8))
    with pytest.raises(ValueError, match="share the batch size"):
        m(st.randn(1, 4, 8), st.randn(2, 4, 8))
    with pytest.raises(TypeError, match="query must be a Tensor"):
        m(np.ones((1, 2, 8)))
    assert repr(nn.MultiHeadAttention(8, 4, kv_heads=2, causal=True)).startswith(
        "MultiHeadAttention(embed_dim=8, num_heads=4, kv_heads=2, causal=True, dropout=0.0\n"
        "  (qkv_proj): Dense(in_features=8, out_features=16, bias=True)")


@PROPS
@given(b=hs.integers(1, 2), sq=hs.integers(1, 6), sk=hs.integers(1, 6),
       kv=hs.integers(1, 2), grp=hs.integers(1, 2), d=hs.integers(1, 3),
       causal=hs.booleans(), cross=hs.booleans(), seed=hs.integers(0, 2**16))
def test_property_shapes(b, sq, sk, kv, grp, d, causal, cross, seed):
    h = kv * grp
    m = nn.MultiHeadAttention(h * d, h, kv_heads=kv, causal=causal).double()
    r = np.random.default_rng(seed)
    xq = r.standard_normal((b, sq, h * d))
    xk = r.standard_normal((b, sk, h * d)) if cross else xq
    y = m(st.tensor(xq), st.tensor(xk)) if cross else m(st.tensor(xq))
    want = mha_reference(xq, xk, xk, *_params(m), h, kv, causal)
    np.testing.assert_allclose(y.numpy(), want, rtol=1e-10, atol=1e-10)


def test_cross_attention_inputs_of_different_dtypes_are_refused():
    m = nn.MultiHeadAttention(8, 2)
    q = st.randn(1, 3, 8)
    with pytest.raises(TypeError, match="project to float32, float64; pass inputs of one"):
        m(q, st.randn(1, 4, 8, dtype=st.float64))
