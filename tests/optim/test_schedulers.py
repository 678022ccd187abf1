import math

import pytest

import scitensor as st
from scitensor import optim


def _opt(device, lr=1.0, groups=1):
    ps = [st.ones(2, device=device, requires_grad=True) for _ in range(groups)]
    return optim.SGD([{"params": [p], "lr": lr * (i + 1)} for i, p in enumerate(ps)], lr=lr)


def _lrs(opt, sched, n):
    out = []
    for _ in range(n):
        out.append([g["lr"] for g in opt.param_groups])
        sched.step()
    return out


def test_step_lr(device):
    opt = _opt(device, groups=2)
    got = _lrs(opt, optim.StepLR(opt, step_size=2, gamma=0.1), 5)
    want = [[1.0, 2.0], [1.0, 2.0], [0.1, 0.2], [0.1, 0.2], [0.01, 0.02]]
    for g, w in zip(got, want):
        assert g == pytest.approx(w)


def test_cosine_annealing(device):
    opt = _opt(device, lr=0.5)
    sched = optim.CosineAnnealingLR(opt, T_max=10, eta_min=0.1)
    got = [lr[0] for lr in _lrs(opt, sched, 13)]
    for e, lr in enumerate(got):
        c = min(e, 10)
        assert lr == pytest.approx(0.1 + 0.4 * (1 + math.cos(math.pi * c / 10)) / 2)
    assert got[10] == pytest.approx(0.1) and got[12] == pytest.approx(0.1)


def test_linear_warmup(device):
    opt = _opt(device, lr=2.0)
    got = [lr[0] for lr in _lrs(opt, optim.LinearWarmup(opt, 4, start_factor=0.5), 6)]
    assert got == pytest.approx([1.0, 1.25, 1.5, 1.75, 2.0, 2.0])


def test_lambda_lr_per_group(device):
    opt = _opt(device, groups=2)
    sched = optim.LambdaLR(opt, [lambda e: 1.0 / (e + 1), lambda e: 0.5])
    got = _lrs(opt, sched, 3)
    assert got == [[1.0, 1.0], [0.5, 1.0], pytest.approx([1 / 3, 1.0])]


def test_state_dict_round_trip(device):
    opt = _opt(device)
    sched = optim.StepLR(opt, step_size=1, gamma=0.5)
    for _ in range(3):
        sched.step()
    state = sched.state_dict()
    assert state["last_epoch"] == 3 and "optimizer" not in state
    opt2 = _opt(device)
    sched2 = optim.StepLR(opt2, step_size=1, gamma=0.5)
    sched2.load_state_dict(state)
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.125)
    assert sched2.get_last_lr() == pytest.approx([0.125])


def test_scheduled_lr_drives_the_update(device):
    w = st.tensor([1.0], device=device, requires_grad=True)
    opt = optim.SGD([w], lr=1.0)
    sched = optim.StepLR(opt, step_size=1, gamma=0.5)
    for _ in range(3):  # gradient of w is 1: steps of 1, 0.5, 0.25
        opt.zero_grad()
        w.sum().backward()
        opt.step()
        sched.step()
    assert w.item() == pytest.approx(1.0 - 1.75)


def test_bad_arguments():
    opt = _opt("cpu")
    with pytest.raises(ValueError, match="step_size"):
        optim.StepLR(opt, step_size=0)
    with pytest.raises(ValueError, match="T_max"):
        optim.CosineAnnealingLR(opt, T_max=0)
    with pytest.raises(ValueError, match="one per group"):
        optim.LambdaLR(opt, [lambda e: 1.0, lambda e: 1.0])
    with pytest.raises(TypeError, match="optimizer"):
        optim.StepLR([1.0], step_size=1)
