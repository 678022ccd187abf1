"""The fused multi-tensor CUDA optimizer kernels against the ufunc (xp) path.

GPU tests are skipped without CUDA; the packing checks at the top run anywhere CuPy imports.
"""

import ctypes
import re

import numpy as np
import pytest

import scitensor as st
from scitensor import optim

cuda = pytest.mark.skipif(not st.cuda_status()[0], reason="CUDA is not usable here")
STEPS = 10


# ---- host-side glue (no GPU needed) ------------------------------------------------------
def test_constants_match_kernel_source():
    cu = pytest.importorskip("scitensor.backends.cuda.optim")
    from scitensor.backends.cuda.compiler import KERNEL_DIR

    src = (KERNEL_DIR / "optim.cu").read_text()
    defines = dict(re.findall(r"#define (ST_\w+) (\d+)", src))
    assert int(defines["ST_MT_MAX"]) == cu.MT_MAX
    assert int(defines["ST_MT_CHUNK"]) == cu.CHUNK
    assert int(defines["ST_H"]) == cu.H
    assert int(defines["ST_RED_THREADS"]) == cu.THREADS
    assert cu._LIST.size == 8 * 8 * cu.MT_MAX + 8


def test_tensor_list_packing(monkeypatch):
    cu = pytest.importorskip("scitensor.backends.cuda.optim")
    seen = {}

    def fake_launch(f, gx, gy, gz, bx, by, bz, shmem, stream, params, extra):
        slots = (ctypes.c_void_p * 3).from_address(params)
        raw = ctypes.string_at(slots[0], cu._LIST.size)
        seen.update(fields=cu._LIST.unpack(raw), grid=(gx, bx), stream=stream,
                    hyper=ctypes.c_uint64.from_address(slots[1]).value,
                    flag=ctypes.c_int32.from_address(slots[2]).value)

    monkeypatch.setattr(cu._driver, "launchKernel", fake_launch)
    k = cu._MtKernel("test", 1234, "pi", None)
    items = [(10, 20, 30, 40, 0, 5000, 3), (11, 21, 31, 41, 0, 1, 7)]
    blocks = k(99, items, 555, 1)
    m = cu.MT_MAX
    f = seen["fields"]
    assert blocks == 3 + 1 and seen["grid"] == (4, cu.THREADS) and seen["stream"] == 99
    assert f[0:2] == (10, 11) and f[m:m + 2] == (20, 21) and f[2 * m:2 * m + 2] == (30, 31)
    assert f[3 * m:3 * m + 2] == (40, 41) and f[4 * m:4 * m + 2] == (0, 0)
    assert f[5 * m:5 * m + 2] == (5000, 1) and f[6 * m:6 * m + 2] == (0, 3)
    assert f[7 * m:7 * m + 2] == (3, 7) and f[-1] == 2
    assert seen["hyper"] == 555 and seen["flag"] == 1


# ---- GPU: fused == ufunc path ----------------------------------------------------------------
CONFIGS = {
    "sgd": (optim.SGD, {"lr": 0.1}),
    "sgd-momentum-wd": (optim.SGD, {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01}),
    "sgd-dampening": (optim.SGD, {"lr": 0.05, "momentum": 0.8, "dampening": 0.3}),
    "sgd-nesterov": (optim.SGD, {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
    "adam": (optim.Adam, {"lr": 1e-2}),
    "adam-wd-amsgrad": (optim.Adam, {"lr": 1e-2, "weight_decay": 0.1, "amsgrad": True}),
    "adamw": (optim.AdamW, {"lr": 1e-2, "weight_decay": 0.1}),
    "adamw-amsgrad": (optim.AdamW, {"lr": 1e-2, "betas": (0.8, 0.99), "amsgrad": True}),
}
SHAPES = [(3, 5), (4097,), (), (0,), (2, 3, 7)]


def _grads(dtype, seed=0):
    """STEPS lists of gradients (one array per shape), exactly representable in ``dtype``."""
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(s).astype(dtype.np).astype(np.float64) for s in SHAPES]
            for _ in range(STEPS)]


def _run(cls, kw, dtype, device, fused, grads, quantize=None, lr_schedule=None):
    rng = np.random.default_rng(42)
    init = [rng.standard_normal(s).astype(dtype.np if quantize is None else quantize.np)
            for s in SHAPES]
    ps = [st.tensor(a, dtype=dtype, device=device, requires_grad=True) for a in init]
    opt = cls(ps, fused=fused, **kw)
    for t, gs in enumerate(grads):
        if lr_schedule is not None:
            opt.param_groups[0]["lr"] = lr_schedule(t)
        for i, (p, g) in enumerate(zip(ps, gs)):
            # parameter 1 has no gradient on odd steps (it is skipped, its step count lags)
            p.grad = None if (i == 1 and t % 2) else st.tensor(g, dtype=dtype, device=device)
        opt.step()
        if quantize is not None:  # emulate half storage of an fp32-math update
            for p in ps:
                p.data[...] = p.data.astype(quantize.np).astype(p.data.dtype)
    return ps, opt


@cuda
@pytest.mark.parametrize("dtype", [st.float32, st.float64], ids=lambda d: d.name)
@pytest.mark.parametrize("name", list(CONFIGS))
def test_fused_equals_ufunc_path(name, dtype):
    cls, kw = CONFIGS[name]
    grads = _grads(dtype)
    fused, of = _run(cls, kw, dtype, "cuda", True, grads)
    plain, op = _run(cls, kw, dtype, "cuda", False, grads)
    tol = 1e-6 if dtype == st.float32 else 1e-13
    for a, b in zip(fused, plain):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=tol, atol=tol)
    sf, sp = of.state_dict()["state"], op.state_dict()["state"]
    assert sorted(sf) == sorted(sp)
    for k in sf:
        assert sf[k].get("step") == sp[k].get("step")
        for key, v in sp[k].items():
            if isinstance(v, st.Tensor):
                np.testing.assert_allclose(sf[k][key].numpy(), v.numpy(), rtol=tol, atol=tol)


@cuda
@pytest.mark.parametrize("dtype", [st.float16, st.bfloat16], ids=lambda d: d.name)
@pytest.mark.parametrize("name", list(CONFIGS))
def test_fused_half_params_use_fp32_math(name, dtype):
    """A half parameter updated in fp32 (fp32 state) then rounded: the same as the fp32 CPU
    path rounding the parameter to half after each step."""
    cls, kw = CONFIGS[name]
    grads = _grads(dtype)
    fused, of = _run(cls, kw, dtype, "cuda", True, grads)
    ref, _ = _run(cls, kw, st.float32, "cpu", True, grads, quantize=dtype)
    tol = 1e-2 if dtype == st.bfloat16 else 1e-3
    for a, b in zip(fused, ref):
        assert a.dtype == dtype
        np.testing.assert_allclose(a.numpy().astype(np.float32), b.numpy(), rtol=tol,
                                   atol=tol)
    for s in of.state_dict()["state"].values():
        for v in s.values():
            if isinstance(v, st.Tensor):
                assert v.dtype == st.float32


@cuda
@pytest.mark.parametrize("name", ["sgd-momentum-wd", "adamw-amsgrad"])
def test_lr_change_between_eager_steps(name):
    cls, kw = CONFIGS[name]
    grads = _grads(st.float32)
    sched = [0.1, 0.0, 0.02, 0.05, 0.0, 0.01, 0.1, 0.03, 0.0, 0.07].__getitem__
    fused, _ = _run(cls, kw, st.float32, "cuda", True, grads, lr_schedule=sched)
    ref, _ = _run(cls, kw, st.float32, "cpu", True, grads, lr_schedule=sched)
    for a, b in zip(fused, ref):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-6)


@cuda
def test_many_params_mixed_dtypes_and_groups():
    """More parameters than one launch takes (48), two dtypes, two groups, strided grads."""
    rng = np.random.default_rng(0)

    def make(device):
        r = np.random.default_rng(1)
        return [st.tensor(r.standard_normal((i % 7 + 1, 3)), device=device, requires_grad=True,
                          dtype=st.float32 if i % 3 else st.float64) for i in range(110)]

    pg, pc = make("cuda"), make("cpu")
    og = optim.Adam([{"params": pg[:60]}, {"params": pg[60:], "lr": 0.05}], lr=0.01)
    oc = optim.Adam([{"params": pc[:60]}, {"params": pc[60:], "lr": 0.05}], lr=0.01)
    for _ in range(3):
        for a, b in zip(pg, pc):
            g = rng.standard_normal(a.shape[::-1])
            a.grad = st.tensor(g, dtype=a.dtype, device="cuda").T  # strided
            b.grad = st.tensor(g, dtype=b.dtype).T
        og.step()
        oc.step()
    for a, b in zip(pg, pc):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)


@cuda
def test_state_dict_round_trip_keeps_fp32_state_for_half_params():
    p = st.ones(5, dtype=st.float16, device="cuda", requires_grad=True)
    opt = optim.Adam([p], lr=0.1)
    p.grad = st.ones(5, dtype=st.float16, device="cuda")
    opt.step()
    opt2 = optim.Adam([p], lr=0.1)
    opt2.load_state_dict(opt.state_dict())
    s = opt2.state_dict()["state"][0]
    assert s["step"] == 1 and s["exp_avg"].dtype == st.float32
    opt2.step()
    assert opt2.state_dict()["state"][0]["step"] == 2
