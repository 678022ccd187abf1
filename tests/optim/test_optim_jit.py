"""Optimizers inside ``scitensor.jit``: on the CPU the jit runs eagerly, on CUDA it captures the
step (fused optimizer kernels, hyper-parameters refreshed by a replay hook). Both must match
the eager run, and changing the learning rate between calls must take effect."""

import numpy as np
import pytest

import scitensor as st
from scitensor import optim


def _mlp(device, seed=0):
    rng = np.random.default_rng(seed)
    shapes = [(8, 16), (16,), (16, 4), (4,)]
    return [st.tensor(rng.standard_normal(s).astype(np.float32) * 0.3, device=device,
                      requires_grad=True) for s in shapes]


def _data(device, n=6, seed=1):
    rng = np.random.default_rng(seed)
    return [(st.tensor(rng.standard_normal((32, 8)).astype(np.float32), device=device),
             st.tensor(rng.standard_normal((32, 4)).astype(np.float32), device=device))
            for _ in range(n)]


def _make_step(params, opt, clip=None):
    w1, b1, w2, b2 = params

    def step(x, y):
        opt.zero_grad()
        h = (x @ w1 + b1).relu()
        loss = ((h @ w2 + b2 - y) ** 2).mean()
        loss.backward()
        if clip is not None:
            optim.clip_grad_norm_(params, clip)
        opt.step()
        return loss

    return step


@pytest.mark.parametrize("make_opt", [
    lambda ps: optim.Adam(ps, lr=1e-2),
    lambda ps: optim.AdamW(ps, lr=1e-2, weight_decay=0.1, amsgrad=True),
    lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
], ids=["adam", "adamw-amsgrad", "sgd-nesterov"])
def test_jitted_training_matches_eager(device, make_opt):
    data = _data(device)
    pe, pj = _mlp(device), _mlp(device)
    oe, oj = make_opt(pe), make_opt(pj)
    eager, jitted = _make_step(pe, oe), st.jit(_make_step(pj, oj))
    for i in range(20):
        x, y = data[i % len(data)]
        le = eager(x, y)
        lj = jitted(x, y)
        np.testing.assert_allclose(lj.item(), le.item(), rtol=1e-5, atol=1e-7)
    for a, b in zip(pe, pj):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-5, atol=1e-6)
    if device.type == "cuda":
        assert jitted.stats["replays"] == 18 and jitted.stats["captures"] == 1
    steps = [s.get("step") for s in oj.state_dict()["state"].values()]
    assert all(s is None or s == 20 for s in steps)


def test_lr_changes_between_jitted_calls_take_effect(device):
    data = _data(device)
    pe, pj = _mlp(device), _mlp(device)
    oe, oj = optim.Adam(pe, lr=1e-2), optim.Adam(pj, lr=1e-2)
    se, sj = optim.StepLR(oe, step_size=3, gamma=0.5), optim.StepLR(oj, step_size=3, gamma=0.5)
    eager, jitted = _make_step(pe, oe), st.jit(_make_step(pj, oj))
    for i in range(12):
        x, y = data[i % len(data)]
        eager(x, y)
        jitted(x, y)
        se.step()
        sj.step()
    for a, b in zip(pe, pj):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-5, atol=1e-6)
    # lr = 0: the next jitted (replayed) step leaves the parameters where they are
    for g in oj.param_groups:
        g["lr"] = 0.0
    before = [p.numpy().copy() for p in pj]
    x, y = data[0]
    jitted(x, y)
    for b, p in zip(before, pj):
        np.testing.assert_array_equal(p.numpy(), b)
    # and back: they move again
    for g in oj.param_groups:
        g["lr"] = 1e-2
    jitted(x, y)
    assert any(not np.array_equal(p.numpy(), b) for b, p in zip(before, pj))


def test_jitted_step_with_clipping_matches_eager(device):
    data = _data(device)
    pe, pj = _mlp(device), _mlp(device)
    oe, oj = optim.Adam(pe, lr=1e-2), optim.Adam(pj, lr=1e-2)
    eager = _make_step(pe, oe, clip=0.05)
    jitted = st.jit(_make_step(pj, oj, clip=0.05))
    for i in range(8):
        x, y = data[i % len(data)]
        eager(x, y)
        jitted(x, y)
    for a, b in zip(pe, pj):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-5, atol=1e-6)
