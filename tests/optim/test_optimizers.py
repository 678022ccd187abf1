import subprocess
import sys

import numpy as np
import pytest

import scitensor as st
from scitensor import optim

STEPS = 5


def _loss(w):
    """A non-quadratic loss so successive gradients differ: sum(sin(w) * w)."""
    return (w.sin() * w).sum()


def _grad_np(w):
    return np.cos(w) * w + np.sin(w)


# ---- float64 references written from the published update rules -------------------------
def sgd_ref(w, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
    w = w.copy()
    buf = None
    for _ in range(STEPS):
        g = _grad_np(w)
        if weight_decay:
            g = g + weight_decay * w
        if momentum:
            buf = g.copy() if buf is None else momentum * buf + (1 - dampening) * g
            g = g + momentum * buf if nesterov else buf
        w = w - lr * g
    return w


def adam_ref(w, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
             decoupled=False):
    w = w.copy()
    b1, b2 = betas
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    vmax = np.zeros_like(w)
    for t in range(1, STEPS + 1):
        g = _grad_np(w)
        if weight_decay and decoupled:
            w = w * (1 - lr * weight_decay)
        elif weight_decay:
            g = g + weight_decay * w
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        vmax = np.maximum(vmax, v)
        vhat = (vmax if amsgrad else v) / (1 - b2**t)
        w = w - lr * (m / (1 - b1**t)) / (np.sqrt(vhat) + eps)
    return w


def _run(opt_cls, w0, device, dtype=st.float64, **kw):
    w = st.tensor(w0, dtype=dtype, device=device, requires_grad=True)
    opt = opt_cls([w], **kw)
    for _ in range(STEPS):
        opt.zero_grad()
        _loss(w).backward()
        opt.step()
    return w, opt


SGD_CASES = [
    dict(lr=0.1),
    dict(lr=0.1, momentum=0.9),
    dict(lr=0.05, momentum=0.9, nesterov=True),
    dict(lr=0.1, momentum=0.8, dampening=0.3, weight_decay=0.01),
    dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1),
    dict(lr=0.1, weight_decay=0.5),
]
ADAM_CASES = [
    dict(lr=0.1),
    dict(lr=0.05, betas=(0.8, 0.99), eps=1e-6),
    dict(lr=0.1, weight_decay=0.1),
    dict(lr=0.1, amsgrad=True),
]


@pytest.mark.parametrize("kw", SGD_CASES)
def test_sgd_matches_reference(device, rng, kw):
    w0 = rng.standard_normal((3, 4))
    w, _ = _run(optim.SGD, w0, device, **kw)
    np.testing.assert_allclose(w.numpy(), sgd_ref(w0, **kw), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kw", ADAM_CASES)
def test_adam_matches_reference(device, rng, kw):
    w0 = rng.standard_normal((3, 4))
    w, _ = _run(optim.Adam, w0, device, **kw)
    np.testing.assert_allclose(w.numpy(), adam_ref(w0, **kw), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kw", [dict(lr=0.1), dict(lr=0.1, weight_decay=0.3),
                                dict(lr=0.05, amsgrad=True, weight_decay=0.1)])
def test_adamw_matches_reference(device, rng, kw):
    w0 = rng.standard_normal((3, 4))
    w, _ = _run(optim.AdamW, w0, device, **kw)
    ref = adam_ref(w0, decoupled=True, **{"weight_decay": 1e-2, **kw})
    np.testing.assert_allclose(w.numpy(), ref, rtol=1e-10, atol=1e-12)


def test_adamw_default_weight_decay_differs_from_adam(rng):
    w0 = rng.standard_normal(4)
    a, _ = _run(optim.Adam, w0, None, lr=0.1)
    b, _ = _run(optim.AdamW, w0, None, lr=0.1)
    assert not np.allclose(a.numpy(), b.numpy())


@pytest.mark.parametrize("name,kw", [("SGD", c) for c in SGD_CASES]
                         + [("Adam", c) for c in ADAM_CASES]
                         + [("AdamW", dict(lr=0.1, weight_decay=0.2)),
                            ("AdamW", dict(lr=0.05, amsgrad=True))])
def test_matches_torch(rng, name, kw):
    torch = pytest.importorskip("torch")
    w0 = rng.standard_normal((6, 5)).astype(np.float32)
    w, _ = _run(getattr(optim, name), w0, None, dtype=st.float32, **kw)
    tw = torch.tensor(w0, requires_grad=True)
    topt = getattr(torch.optim, name)([tw], **kw)
    for _ in range(STEPS):
        topt.zero_grad()
        (torch.sin(tw) * tw).sum().backward()
        topt.step()
    np.testing.assert_allclose(w.numpy(), tw.detach().numpy(), rtol=1e-5, atol=1e-6)


# ---- behaviour ---------------------------------------------------------------------------
@pytest.mark.parametrize("make", [lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9),
                                  lambda ps: optim.Adam(ps, lr=0.1),
                                  lambda ps: optim.AdamW(ps, lr=0.1)])
def test_step_updates_in_place_and_leaves_grad_alone(device, make):
    w = st.randn(3, 3, device=device, requires_grad=True)
    arr = w.data
    opt = make([w])
    _loss(w).backward()
    g = w.grad.numpy().copy()
    before = w.numpy().copy()
    opt.step()
    assert w.data is arr  # same storage: updated in place
    assert not np.allclose(w.numpy(), before)
    np.testing.assert_array_equal(w.grad.numpy(), g)
    assert w.is_leaf and w.requires_grad


def test_parameters_without_grad_are_skipped():
    a = st.ones(2, requires_grad=True)
    b = st.ones(2, requires_grad=True)
    opt = optim.Adam([a, b], lr=0.1)
    (a * a).sum().backward()
    opt.step()
    assert b.tolist() == [1.0, 1.0] and b not in opt.state
    assert a.tolist() != [1.0, 1.0]


def test_zero_grad():
    w = st.ones(2, requires_grad=True)
    opt = optim.SGD([w], lr=0.1)
    (w * w).sum().backward()
    opt.zero_grad(set_to_none=False)
    assert w.grad.tolist() == [0.0, 0.0]
    opt.zero_grad()
    assert w.grad is None


def test_param_groups_have_their_own_hyper_parameters():
    a = st.ones(1, requires_grad=True)
    b = st.ones(1, requires_grad=True)
    opt = optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1)
    (a + b).sum().backward()
    opt.step()
    assert np.allclose(a.numpy(), 0.9) and np.allclose(b.numpy(), 0.5)
    opt.param_groups[0]["lr"] = 0.0  # schedule the learning rate
    opt.step()
    assert np.allclose(a.numpy(), 0.9)


def test_step_records_no_graph():
    w = st.ones(2, requires_grad=True)
    opt = optim.SGD([w], lr=0.1)
    (w * w).sum().backward()
    opt.step()
    assert w.is_leaf and w._parents == ()


@pytest.mark.parametrize("make", [lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9),
                                  lambda ps: optim.Adam(ps, lr=0.1, amsgrad=True),
                                  lambda ps: optim.AdamW(ps, lr=0.1)])
def test_state_dict_round_trip(rng, make):
    w0 = rng.standard_normal(5)
    w = st.tensor(w0, requires_grad=True)
    opt = make([w])
    for _ in range(3):
        opt.zero_grad()
        _loss(w).backward()
        opt.step()
    saved = opt.state_dict()
    assert set(saved) == {"state", "param_groups"} and saved["param_groups"][0]["params"] == [0]
    assert all(isinstance(v, st.Tensor | int) for v in saved["state"][0].values())
    w2 = st.tensor(w.numpy(), requires_grad=True)
    opt2 = make([w2])
    opt2.load_state_dict(saved)
    for x, o in ((w, opt), (w2, opt2)):
        for _ in range(2):
            o.zero_grad()
            _loss(x).backward()
            o.step()
    np.testing.assert_array_equal(w.numpy(), w2.numpy())


def test_load_state_dict_errors():
    a, b = st.ones(2, requires_grad=True), st.ones(3, requires_grad=True)
    opt = optim.Adam([a, b])
    (a.sum() + b.sum()).backward()
    opt.step()
    saved = opt.state_dict()
    with pytest.raises(ValueError, match="group 0 has 2 parameter"):
        optim.Adam([a]).load_state_dict(saved)
    with pytest.raises(ValueError, match=r"shape \(2,\) but its parameter has shape \(3,\)"):
        optim.Adam([b, a]).load_state_dict(saved)
    with pytest.raises(TypeError, match="'state' and 'param_groups'"):
        optim.Adam([a, b]).load_state_dict({"x": 1})


def test_load_state_dict_restores_hyper_parameters():
    w = st.ones(2, requires_grad=True)
    saved = optim.SGD([w], lr=0.3, momentum=0.5).state_dict()
    opt = optim.SGD([w], lr=0.1)
    opt.load_state_dict(saved)
    assert opt.param_groups[0]["lr"] == 0.3 and opt.param_groups[0]["momentum"] == 0.5
    assert opt.param_groups[0]["params"] == [w] or opt.param_groups[0]["params"][0] is w


def test_constructor_errors():
    w = st.ones(2, requires_grad=True)
    with pytest.raises(TypeError, match="single Tensor"):
        optim.SGD(w, lr=0.1)
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.Adam([])
    with pytest.raises(ValueError, match="not a leaf"):
        optim.SGD([w * 2], lr=0.1)
    with pytest.raises(TypeError, match="int64"):
        optim.SGD([st.arange(3)], lr=0.1)
    with pytest.raises(TypeError, match="not a Tensor"):
        optim.SGD([np.ones(2)], lr=0.1)
    with pytest.raises(ValueError, match="more than one group"):
        optim.SGD([w, w], lr=0.1)
    with pytest.raises(ValueError, match="lr must be"):
        optim.SGD([w], lr=-1.0)
    with pytest.raises(ValueError, match="nesterov=True needs momentum"):
        optim.SGD([w], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="betas"):
        optim.Adam([w], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="eps"):
        optim.Adam([w], eps=-1.0)
    with pytest.raises(ValueError, match="weight_decay"):
        optim.AdamW([w], weight_decay=-0.1)
    with pytest.raises(TypeError, match=r"unknown hyper-parameter\(s\) \['momentum'\]"):
        optim.Adam([{"params": [w], "momentum": 0.9}])


def test_state_on_another_dtype_is_a_clear_error():
    w = st.ones(2, requires_grad=True)
    opt = optim.Adam([w])
    (w * w).sum().backward()
    opt.step()
    w.data = w.data.astype(np.float64)  # as Module.to(dtype=...) would after the first step
    w.grad = None
    (w * w).sum().backward()
    with pytest.raises(RuntimeError, match="move or cast the model before creating"):
        opt.step()


def test_repr():
    w = st.ones(2, requires_grad=True)
    r = repr(optim.SGD([w], lr=0.1))
    assert r.startswith("SGD (") and "lr=0.1" in r and "1 params" in r


def test_optim_does_not_import_nn():
    code = ("import sys, scitensor.optim; "
            "assert 'scitensor.nn' not in sys.modules, 'optim imported nn'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_training_reduces_a_loss(device):
    st.manual_seed(0)
    x = st.randn(64, 3, device=device)
    true_w = st.tensor([[1.0], [-2.0], [0.5]], device=device)
    y = x @ true_w
    w = st.zeros(3, 1, device=device, requires_grad=True)
    opt = optim.Adam([w], lr=0.1)
    for _ in range(200):
        opt.zero_grad()
        loss = ((x @ w - y) ** 2).mean()
        loss.backward()
        opt.step()
    np.testing.assert_allclose(w.numpy(), true_w.numpy(), atol=1e-3)
