"""scaled_dot_product_attention: forward and the three gradients against a float64 NumPy
reference (odd lengths, causal and not, grouped-query attention, every floating dtype),
numerical gradient checks in float64 (second order through the create_graph fallback),
Hypothesis over shapes, and CUDA kernel shapes on the ``device`` fixture with poisoned
outputs (the GPU half runs where a GPU is present).
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


@pytest.mark.parametrize("bwd_version", [1, 2])
def test_cuda_kernels_on_host_emulator(bwd_version):
    """The bf16 CUDA kernels (D64 tiles, both dK/dV kernels), forward and backward, run on the
    host emulator (one thread per CUDA thread, warp collectives emulated) against float64."""
    emu = _emulator()
    if emu is None:
        pytest.skip("g++ with C++20 <barrier> is not available")
    exe = emu.build("bf16", 64, (4, 2, 64), (8, 64, bwd_version), asan=False)
    errs = emu.run_case(exe, "bf16", 1, 2, 1, 70, 45, 64, True, seed=3)
    assert not errs.pop("lse_nan")
    assert all(e < 3e-2 for e in errs.values()), errs
