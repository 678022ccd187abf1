"""scaled_dot_product_attention: forward and the three gradients against a float64 NumPy
reference (odd lengths, causal and not, grouped-query attention, every floating dtype),
numerical gradient checks in float64 (second order through the create_graph fallback),
Hypothesis over shapes, and CUDA kernel shapes on the ``device`` fixture with poisoned
outputs (the GPU half runs where a GPU is present). The backend primitives' strided operands
and ``out=`` / ``grads_out=`` contract (views of packed projections, results written into
slices of poisoned buffers) run on every device too, and the kernels themselves on the host
emulator with dense and strided layouts.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as hs

import scitensor as st
from scitensor.backends import xp_attention
from scitensor.ops.attention import attention_reference, scaled_dot_product_attention

from .helpers import PROPS, f64, grad_check, poisoned, second_order

# normwise relative error allowed per dtype (bf16/fp16 kernels also round P and dS)
NORM_TOL = {"float16": 6e-3, "bfloat16": 3e-2, "float32": 1e-4, "float64": 1e-10}
DTYPES = (st.float16, st.bfloat16, st.float32, st.float64)


def reference(q, k, v, g, causal, scale):
    """float64 out, dq, dk, dv from the textbook formulas (independent of the backend)."""
    q, k, v, g = (np.asarray(x, dtype=np.float64) for x in (q, k, v, g))
    b, h, sq, d = q.shape
    hkv = k.shape[1]
    grp = h // hkv
    kk, vv = np.repeat(k, grp, axis=1), np.repeat(v, grp, axis=1)
    s = q @ kk.swapaxes(-1, -2) * scale
    sk = k.shape[2]
    visible = np.ones((sq, sk), bool)
    if causal:
        visible = np.arange(sk)[None, :] <= np.arange(sq)[:, None] + (sk - sq)
    s = np.where(visible, s, -np.inf)
    m = np.max(s, axis=-1, keepdims=True, initial=-np.inf)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(s - m)
    den = e.sum(axis=-1, keepdims=True)
    p = np.where(den > 0, e / np.where(den > 0, den, 1.0), 0.0)
    out = p @ vv
    dp = g @ vv.swapaxes(-1, -2)
    ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True))
    dq = ds @ kk * scale
    dk = (ds.swapaxes(-1, -2) @ q * scale).reshape(b, hkv, grp, sk, d).sum(axis=2)
    dv = (p.swapaxes(-1, -2) @ g).reshape(b, hkv, grp, sk, d).sum(axis=2)
    return out, dq, dk, dv


def rel_err(got, ref) -> float:
    """||got - ref|| / ||ref||, with ||ref|| floored at an RMS of 1 per element (inputs are
    O(1)), so exactly-zero gradients (one visible key) compare absolutely."""
    got, ref = f64(got), np.asarray(ref, np.float64)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    if not np.all(np.isfinite(got)):
        return float("inf")
    return float(np.linalg.norm(got - ref) / max(np.linalg.norm(ref), np.sqrt(ref.size), 1e-30))


def run_case(device, dtype, b, h, hkv, sq, sk, d, causal, seed=0, scale=None):
    r = np.random.default_rng(seed)
    arrays = [r.standard_normal(s).astype(dtype.np) for s in
              ((b, h, sq, d), (b, hkv, sk, d), (b, hkv, sk, d), (b, h, sq, d))]
    q, k, v, g = (st.tensor(a, device=device) for a in arrays)
    for t in (q, k, v):
        t.requires_grad_()
    sc = 1.0 / np.sqrt(d) if scale is None else scale
    with poisoned(device):
        out = scaled_dot_product_attention(q, k, v, causal=causal, scale=scale)
        out.backward(g)
    ref = reference(*arrays, causal, sc)
    tol = NORM_TOL[dtype.name]
    for name, got, want in zip(("out", "dq", "dk", "dv"), (out, q.grad, k.grad, v.grad), ref):
        assert got.dtype is dtype and got.device == device
        err = rel_err(got, want)
        assert err < tol, f"{name}: relative error {err:.3g} >= {tol} ({dtype.name}, " \
                          f"B{b} H{h}/{hkv} Sq{sq} Sk{sk} D{d} causal={causal})"


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", [(2, 2, 2, 7, 7, 8), (1, 4, 2, 13, 5, 16),
                                   (1, 3, 1, 5, 19, 4), (2, 2, 1, 1, 9, 8)])
def test_forward_and_gradients(device, dtype, causal, shape):
    run_case(device, dtype, *shape, causal)


@pytest.mark.parametrize("dtype", (st.bfloat16, st.float16, st.float32), ids=lambda t: t.name)
@pytest.mark.parametrize("d", [32, 64, 128])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("lengths", [(130, 130), (67, 150), (150, 67), (1, 1)])
def test_kernel_shapes(device, dtype, d, causal, lengths):
    """The CUDA kernels' head dims with lengths off the tiles (on the CPU: the composition)."""
    run_case(device, dtype, 1, 2, 1, *lengths, d, causal, seed=d + lengths[0])


def _hopper_attention(device):
    """The CUDA attention module on an sm_90 device, else skip (the wgmma forward needs one)."""
    if device.type != "cuda":
        pytest.skip("the wgmma forward is a CUDA kernel")
    from scitensor.backends.cuda import attention as ca

    if getattr(device.backend, "arch", None) != 90:
        pytest.skip("the wgmma forward needs an sm_90 GPU")
    return ca


# (fwd_warps = 4 x warpgroups, fwd_bn): every warpgroup count and key tile the kernel takes
WGMMA_TILES = [(4, 64), (4, 128), (8, 64), (8, 128), (12, 64)]


@pytest.mark.parametrize("tiles", WGMMA_TILES, ids=lambda t: f"w{t[0]}bn{t[1]}")
@pytest.mark.parametrize("dtype, d", [(st.bfloat16, 128), (st.float16, 64)],
                         ids=lambda x: getattr(x, "name", str(x)))
@pytest.mark.parametrize("causal", [False, True])
def test_wgmma_forward_tiles(device, tiles, dtype, d, causal):
    """Each tile shape of the Hopper forward against float64 (odd lengths, Sq != Sk, grouped
    heads), gradients through the mma.sync backward it hands its lse to."""
    ca = _hopper_attention(device)
    code = ca.BF16 if dtype is st.bfloat16 else ca.F16
    base = ca.config_for(code, d, 90)
    cfg = ca.AttentionConfig(tiles[0], tiles[1], base.bwd_warps, base.bwd_bm, 1,
                             base.bwd_version, 0, 2)
    ca.set_attention_config(code, d, cfg)
    try:
        for i, lengths in enumerate([(200, 333), (77, 77), (300, 100), (1, 5)]):
            run_case(device, dtype, 2, 4, 2, *lengths, d, causal, seed=7 * i + tiles[1])
    finally:
        ca.set_attention_config(code, d, None)


@pytest.mark.parametrize("dtype, d", [(st.bfloat16, 128), (st.float16, 128), (st.bfloat16, 64),
                                      (st.float16, 64)],
                         ids=lambda x: getattr(x, "name", str(x)))
@pytest.mark.parametrize("causal", [False, True])
def test_wgmma_backward(device, dtype, d, causal):
    """The Hopper dK/dV kernel (bwd_version 3) against float64: lengths off the 128-key and
    64-query tiles, Sq != Sk both ways, grouped heads, a single row."""
    ca = _hopper_attention(device)
    code = ca.BF16 if dtype is st.bfloat16 else ca.F16
    base = ca.config_for(code, d, 90)
    cfg = ca.AttentionConfig(base.fwd_warps, base.fwd_bn, 8, 64, base.fwd_mw, 3,
                             base.fwd_lazy_rescale, base.fwd_version)
    ca.set_attention_config(code, d, cfg)
    try:
        for i, lengths in enumerate([(200, 333), (77, 77), (300, 100), (1, 5), (256, 256)]):
            run_case(device, dtype, 2, 4, 2, *lengths, d, causal, seed=11 * i + d)
    finally:
        ca.set_attention_config(code, d, None)


@pytest.mark.parametrize("dtype, d", [(st.bfloat16, 128), (st.float16, 64)],
                         ids=lambda x: getattr(x, "name", str(x)))
@pytest.mark.parametrize("causal", [False, True])
def test_portable_kernels_on_hopper(device, dtype, d, causal):
    """The mma.sync forward and backward (the defaults of other GPUs) stay checked on sm_90,
    where the wgmma kernels are the defaults."""
    ca = _hopper_attention(device)
    code = ca.BF16 if dtype is st.bfloat16 else ca.F16
    ca.set_attention_config(code, d, ca.DEFAULT_CONFIGS[(code, d)])
    try:
        for i, lengths in enumerate([(200, 333), (300, 100)]):
            run_case(device, dtype, 2, 4, 2, *lengths, d, causal, seed=5 * i + d)
    finally:
        ca.set_attention_config(code, d, None)


def test_wgmma_configs_are_the_hopper_defaults_and_checked(device):
    ca = _hopper_attention(device)
    for code in (ca.BF16, ca.F16):
        for d in (64, 128):
            assert ca.config_for(code, d, 90).fwd_version == 2
            assert ca.config_for(code, d, 90).bwd_version == 3
            assert ca.config_for(code, d, 80).fwd_version == 1
            assert ca.config_for(code, d, 80).bwd_version in (1, 2)
        assert ca.config_for(code, 32, 90).fwd_version == 1
    wg = ca.AttentionConfig(12, 64, 8, 64, 1, 2, 0, 2)
    wg.check(128, ca.BF16)
    ca.AttentionConfig(12, 64, 8, 64, 1, 3, 0, 2).check(128, ca.F16)
    ca.AttentionConfig(4, 128, 8, 64, 1, 3, 0, 2).check(64, ca.BF16)
    for d, code, cfg in [(32, ca.BF16, wg), (128, ca.TF32, wg),
                         (128, ca.BF16, ca.AttentionConfig(12, 32, 8, 64, 1, 2, 0, 2)),
                         (128, ca.BF16, ca.AttentionConfig(12, 128, 8, 64, 1, 2, 0, 2)),
                         (128, ca.BF16, ca.AttentionConfig(12, 64, 8, 64, 2, 2, 0, 2)),
                         (128, ca.BF16, ca.AttentionConfig(12, 64, 8, 64, 1, 2, 0, 3)),
                         # the wgmma backward: two warpgroups, 64-row query tiles, 16-bit only
                         (128, ca.BF16, ca.AttentionConfig(12, 64, 4, 64, 1, 3, 0, 2)),
                         (128, ca.BF16, ca.AttentionConfig(12, 64, 8, 32, 1, 3, 0, 2)),
                         (32, ca.BF16, ca.AttentionConfig(8, 64, 8, 64, 1, 3)),
                         (64, ca.TF32, ca.AttentionConfig(4, 64, 8, 64, 1, 3))]:
        with pytest.raises(ValueError, match="does not fit"):
            cfg.check(d, code)


def test_custom_scale_and_rows_that_see_nothing(device):
    run_case(device, st.float32, 1, 2, 2, 9, 4, 8, True, scale=0.3)
    q = st.randn(1, 1, 6, 4, device=device)
    kv = st.randn(1, 1, 2, 4, device=device)
    out = scaled_dot_product_attention(q, kv, kv, causal=True).numpy()
    assert np.all(out[0, 0, :4] == 0) and np.all(np.isfinite(out))


@pytest.mark.parametrize("scale", [-0.2, 0.0])
@pytest.mark.parametrize("causal", [False, True])
def test_non_positive_scale(device, scale, causal):
    """A kernel head dim with a scale the CUDA forward does not take (it folds a positive scale
    into its softmax): the forward runs on the composition, the backward on the kernels."""
    run_case(device, st.float32, 1, 2, 1, 37, 29, 64, causal, seed=5, scale=scale)


def test_empty_keys_and_queries(device):
    q = st.randn(1, 2, 3, 4, device=device, requires_grad=True)
    kv = st.zeros(1, 2, 0, 4, device=device, requires_grad=True)
    out = scaled_dot_product_attention(q, kv, kv)
    assert out.shape == (1, 2, 3, 4) and np.all(out.numpy() == 0)
    out.sum().backward()
    assert np.all(q.grad.numpy() == 0) and kv.grad.shape == (1, 2, 0, 4)
    q0 = st.randn(1, 2, 0, 4, device=device)
    assert scaled_dot_product_attention(q0, q0, q0, causal=True).shape == (1, 2, 0, 4)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dims", [(1, 2, 1, 5, 7, 3), (2, 2, 2, 6, 4, 2)])
def test_check_grad_float64(causal, dims):
    b, h, hkv, sq, sk, d = dims
    r = np.random.default_rng(7)
    q, k, v = (r.standard_normal(s) for s in ((b, h, sq, d), (b, hkv, sk, d), (b, hkv, sk, d)))
    grad_check(lambda a, c, e: scaled_dot_product_attention(a, c, e, causal=causal),
               q, k, v, device=st.Device("cpu"))


@pytest.mark.parametrize("causal", [False, True])
def test_second_order_through_composition(causal):
    r = np.random.default_rng(3)
    q, k, v = (st.tensor(r.standard_normal(s)) for s in ((1, 2, 4, 3), (1, 1, 5, 3), (1, 1, 5, 3)))
    for argnum in range(3):
        f = second_order(lambda a, c, e: scaled_dot_product_attention(a, c, e, causal=causal),
                         argnum=argnum)
        grad_check(f, q, k, v, device=st.Device("cpu"))


def test_matches_reference_composition():
    r = np.random.default_rng(5)
    q = st.tensor(r.standard_normal((2, 4, 6, 8)))
    kv = st.tensor(r.standard_normal((2, 2, 9, 8)))
    for causal in (False, True):
        a = scaled_dot_product_attention(q, kv, kv, causal=causal).numpy()
        b = attention_reference(q, kv, kv, causal=causal).numpy()
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_query_chunks(monkeypatch):
    """Small score blocks: the CPU path loops over query chunks and still agrees."""
    monkeypatch.setattr(xp_attention, "SCORE_BLOCK_ELEMENTS", 40)
    run_case(st.Device("cpu"), st.float64, 1, 2, 1, 23, 11, 4, True, seed=9)


@given(b=hs.integers(1, 2), hkv=hs.integers(1, 2), grp=hs.integers(1, 3),
       sq=hs.integers(1, 12), sk=hs.integers(0, 12), d=hs.integers(1, 9),
       causal=hs.booleans(), dtype=hs.sampled_from((st.float32, st.float64)),
       seed=hs.integers(0, 2**31 - 1))
@PROPS
def test_property_shapes(b, hkv, grp, sq, sk, d, causal, dtype, seed):
    run_case(st.Device("cpu"), dtype, b, hkv * grp, hkv, sq, sk, d, causal, seed=seed)


def test_errors():
    q = st.randn(1, 4, 3, 8)
    with pytest.raises(ValueError, match="multiple of the key/value heads"):
        scaled_dot_product_attention(q, st.randn(1, 3, 3, 8), st.randn(1, 3, 3, 8))
    with pytest.raises(ValueError, match="head_dim"):
        scaled_dot_product_attention(q, st.randn(1, 4, 3, 4), st.randn(1, 4, 3, 4))
    with pytest.raises(TypeError, match="one floating dtype"):
        scaled_dot_product_attention(q, q.astype(st.float64), q)
    with pytest.raises(ValueError, match="batch, heads"):
        scaled_dot_product_attention(q[0], q[0], q[0])


def _poison(shape, dtype) -> np.ndarray:
    """A host array of ``dtype`` (a scitensor dtype) filled with 0xFF bytes (NaN)."""
    a = np.empty(shape, dtype.np)
    a.view(np.uint8)[...] = 0xFF
    return a


def _untouched(a) -> bool:
    """Whether every byte of host array ``a`` still holds the 0xFF poison."""
    return bool(np.all(np.ascontiguousarray(a).view(np.uint8) == 0xFF))


def _swap(x):
    """(B, S, heads, D) <-> (B, heads, S, D), a view."""
    return x.transpose(0, 2, 1, 3)


# (dtype, head dim): the CUDA kernels' types and head dims, and float64 (the xp composition on
# every device); the CPU runs the composition for all
STRIDED = [(st.bfloat16, 64), (st.float16, 32), (st.float32, 128), (st.float64, 16)]


@pytest.mark.parametrize("dtype, d", STRIDED, ids=lambda x: getattr(x, "name", str(x)))
@pytest.mark.parametrize("causal", [False, True])
def test_strided_operands_and_outputs(device, dtype, d, causal):
    """The attention primitives read q, k, v as views of one packed (B, S, N + 1, D) projection
    (grouped-query heads, a spare NaN head) and the incoming gradient as a swapped
    (B, S, H, D) array, and write ``out=`` / ``grads_out=`` into views of larger poisoned
    buffers: the very arrays given are returned, the results equal those of dense copies of
    the operands (bit for bit on CUDA but dq, which sums atomically) and the float64
    reference, and the spare heads keep their poison."""
    be = device.backend
    b, h, hkv, s = 2, 3, 1, 45
    n = h + 2 * hkv
    r = np.random.default_rng(d)
    host = _poison((b, s, n + 1, d), dtype)
    host[:, :, :n] = r.standard_normal((b, s, n, d)).astype(dtype.np)
    qkv = be.asarray(host, dtype)
    heads = ((0, h), (h, h + hkv), (h + hkv, n))
    q, k, v = (_swap(qkv[:, :, h0:h1]) for h0, h1 in heads)
    gy = be.asarray(r.standard_normal((b, s, h, d)).astype(dtype.np), dtype)
    g = _swap(gy)
    scale = 1.0 / np.sqrt(d)
    with poisoned(device):
        dense = [be.ascontiguous(x) for x in (q, k, v, g)]
        out_d, lse_d = be.attention_forward(*dense[:3], causal, scale)
        grads_d = be.attention_backward(dense[3], *dense[:3], out_d, lse_d, causal, scale)

    y = be.asarray(_poison((b, s, h + 1, d), dtype), dtype)
    out_to = _swap(y[:, :, 1:])
    out, lse = be.attention_forward(q, k, v, causal, scale, out=out_to)
    assert out is out_to
    gbuf = be.asarray(_poison(host.shape, dtype), dtype)
    grads_to = tuple(_swap(gbuf[:, :, h0:h1]) for h0, h1 in heads)
    grads = be.attention_backward(g, q, k, v, out, lse, causal, scale, grads_out=grads_to)
    assert all(x is want for x, want in zip(grads, grads_to))

    y_host, gbuf_host = be.to_numpy(y), be.to_numpy(gbuf)
    assert _untouched(y_host[:, :, 0]) and _untouched(gbuf_host[:, :, n])
    ref = reference(*(_swap(host[:, :, h0:h1]) for h0, h1 in heads), _swap(be.to_numpy(gy)),
                    causal, scale)
    tol = NORM_TOL[dtype.name]
    got = (_swap(y_host[:, :, 1:]), *(_swap(gbuf_host[:, :, h0:h1]) for h0, h1 in heads))
    dense_host = [be.to_numpy(x) for x in (out_d, *grads_d)]
    kernels = device.type == "cuda" and dtype is not st.float64  # same kernels, same bits
    for name, x, want, xd in zip(("out", "dq", "dk", "dv"), got, ref, dense_host):
        assert rel_err(x, want) < tol, name
        if kernels and name != "dq":
            np.testing.assert_array_equal(f64(x), f64(xd), err_msg=name)
        else:
            np.testing.assert_allclose(f64(x), f64(xd), rtol=tol, atol=tol, err_msg=name)
    if kernels:
        np.testing.assert_array_equal(be.to_numpy(lse), be.to_numpy(lse_d))


@pytest.mark.parametrize("dtype", (st.bfloat16, st.float32), ids=lambda t: t.name)
def test_outputs_the_kernels_cannot_address(device, dtype):
    """Operands and outputs whose strides are no multiple of 16 bytes (rows of D + 1 elements)
    or with one misaligned element offset: inputs are read through dense copies, outputs
    computed densely and copied in; results still land in the given arrays."""
    be = device.backend
    b, h, s, d = 1, 2, 33, 64
    r = np.random.default_rng(1)
    host = r.standard_normal((b, s, 3 * h, d + 1)).astype(dtype.np)
    qkv = be.asarray(host, dtype)
    q, k, v = (_swap(qkv[:, :, i * h:(i + 1) * h, :d]) for i in range(3))
    flat = be.asarray(r.standard_normal(b * h * s * d + 1).astype(dtype.np), dtype)
    g = flat[1:].reshape(b, h, s, d)  # 2 or 4 bytes past an aligned address
    y = be.asarray(_poison((b, s, h, d + 1), dtype), dtype)
    out = _swap(y[:, :, :, 1:])
    res, lse = be.attention_forward(q, k, v, True, 0.125, out=out)
    assert res is out
    gbuf = be.asarray(_poison((b, s, 3 * h, d + 1), dtype), dtype)
    grads_to = tuple(_swap(gbuf[:, :, i * h:(i + 1) * h, 1:]) for i in range(3))
    grads = be.attention_backward(g, q, k, v, out, lse, True, 0.125, grads_out=grads_to)
    assert all(x is want for x, want in zip(grads, grads_to))
    ref = reference(*(_swap(host[:, :, i * h:(i + 1) * h, :d]) for i in range(3)),
                    be.to_numpy(g), True, 0.125)
    y_host, gbuf_host = be.to_numpy(y), be.to_numpy(gbuf)
    got = (_swap(y_host[..., 1:]), *(_swap(gbuf_host[:, :, i * h:(i + 1) * h, 1:])
                                     for i in range(3)))
    for name, x, want in zip(("out", "dq", "dk", "dv"), got, ref):
        assert rel_err(x, want) < NORM_TOL[dtype.name], name
    assert _untouched(y_host[..., 0]) and _untouched(gbuf_host[..., 0])


def test_out_and_grads_out_errors(device):
    be = device.backend
    q = be.asarray(np.ones((1, 2, 3, 8), np.float32), st.float32)
    kv = be.asarray(np.ones((1, 1, 4, 8), np.float32), st.float32)
    with pytest.raises(ValueError, match=r"attention_forward: out must be an array shaped "
                                         r"\(1, 2, 3, 8\) with dtype float32 like q, got .* "
                                         r"\(1, 2, 3, 4\)"):
        be.attention_forward(q, kv, kv, False, 0.5, out=be.empty((1, 2, 3, 4), st.float32))
    with pytest.raises(ValueError, match=r"out must be .* dtype float32 .* dtype float64"):
        be.attention_forward(q, kv, kv, False, 0.5, out=be.empty((1, 2, 3, 8), st.float64))
    out, lse = be.attention_forward(q, kv, kv, False, 0.5)
    with pytest.raises(ValueError, match="grads_out must be three arrays"):
        be.attention_backward(q, q, kv, kv, out, lse, False, 0.5, grads_out=(q, kv))
    with pytest.raises(ValueError, match=r"grads_out\[1\] \(dk\) must be an array shaped "
                                         r"\(1, 1, 4, 8\) .* like k"):
        be.attention_backward(q, q, kv, kv, out, lse, False, 0.5,
                              grads_out=(be.empty((1, 2, 3, 8), st.float32),
                                         be.empty((1, 2, 4, 8), st.float32),
                                         be.empty((1, 1, 4, 8), st.float32)))


def _emulator():
    """scripts/attention_emulator/run.py as a module, or None where g++ lacks C++20."""
    import importlib.util
    import pathlib
    import shutil
    import subprocess
    import tempfile

    if shutil.which("g++") is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        src = pathlib.Path(tmp) / "probe.cpp"
        src.write_text("#include <barrier>\nint main() { std::barrier<> b(1); }\n")
        probe = subprocess.run(["g++", "-std=c++20", "-pthread", str(src), "-o", f"{tmp}/p"],
                               capture_output=True)
    if probe.returncode:
        return None
    path = pathlib.Path(__file__).parents[2] / "scripts" / "attention_emulator" / "run.py"
    spec = importlib.util.spec_from_file_location("attention_emulator_run", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("layout, case, causal", [
    ("dense", (1, 2, 1, 70, 45), True),
    ("packed", (2, 3, 1, 37, 37), True),   # views into one (B, S, N, D) projection
    ("cross", (1, 2, 1, 70, 45), False),   # every operand in its own axis order
])
@pytest.mark.parametrize("bwd_version", [1, 2])
def test_cuda_kernels_on_host_emulator(bwd_version, layout, case, causal):
    """The bf16 CUDA kernels (D64 tiles, both dK/dV kernels), forward and backward, run on the
    host emulator (one thread per CUDA thread, warp collectives emulated) against float64,
    with dense and strided operands; gaps of the strided buffers keep their poison."""
    emu = _emulator()
    if emu is None:
        pytest.skip("g++ with C++20 <barrier> is not available")
    exe = emu.build("bf16", 64, (4, 2, 64), (8, 64, bwd_version), asan=False)
    errs = emu.run_case(exe, "bf16", *case, 64, causal, seed=3, kind=layout)
    assert not errs.pop("lse_nan")
    assert errs.pop("gaps_written") == 0
    assert all(e < 3e-2 for e in errs.values()), errs


def test_cuda_attention_glue_on_host_emulator():
    """backends/cuda/attention.py with its driver launch redirected to the emulator: argument
    order, grids, strides of views, out= / grads_out= (scripts/attention_emulator/glue_check.py
    --quick, in a subprocess: it patches the module)."""
    import pathlib
    import subprocess
    import sys

    if _emulator() is None:
        pytest.skip("g++ with C++20 <barrier> is not available")
    pytest.importorskip("cupy")
    script = pathlib.Path(__file__).parents[2] / "scripts" / "attention_emulator" / "glue_check.py"
    r = subprocess.run([sys.executable, str(script), "--quick"], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0 and "all passed" in r.stdout, r.stdout + r.stderr
