"""The fused linear op ``act(x @ w + b)``: forward and every gradient against float64 NumPy
references (poisoned outputs on CUDA), numerical gradient checks, gradients of gradients
(the create_graph composition), chains of fused layers (the previous layer's activation
backward and bias gradient done by the next layer's input-gradient GEMM) against the
composition, the cases where that chain fusion must not happen, ``F.linear`` / ``nn.Dense``,
errors, and Hypothesis over shapes.

Shapes include sizes that are not multiples of 8/16 (cuBLASLt's vector paths), one row, one
output feature (backward epilogues refuse k = 1: the fallback runs), batched leading axes.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as hs

import scitensor as st
from scitensor import nn
from scitensor.autodiff.engine import sole_consumer
from scitensor.nn import functional as F
from scitensor.ops.linear import linear

from .helpers import PROPS, f64, grad_check, poisoned, second_order

TOL = {st.float64: 1e-10, st.float32: 2e-5, st.float16: 4e-3, st.bfloat16: 2e-2}
# cuBLASLt's GELU epilogue need not evaluate tanh exactly as NumPy does: float32 GELU cases
# allow 1e-4 (the erf and tanh forms differ by ~1e-4 relative; a wrong formula by far more)
GELU_F32_TOL = 1e-4


def tol_for(dtype, *activations):
    t = TOL[dtype]
    return max(t, GELU_F32_TOL) if dtype is st.float32 and "gelu" in activations else t
C = math.sqrt(2.0 / math.pi)


# ---- float64 references ----------
def act_ref(pre, activation):
    if activation is None:
        return pre, np.ones_like(pre)
    if activation == "relu":
        return np.maximum(pre, 0.0), (pre > 0).astype(np.float64)
    t = np.tanh(C * (pre + 0.044715 * pre**3))
    d = 0.5 * (1 + t) + 0.5 * pre * (1 - t * t) * C * (1 + 3 * 0.044715 * pre**2)
    return 0.5 * pre * (1 + t), d


def linear_ref(x, w, b, activation, g, y_dev=None):
    """y and (dx, dw, db) in float64. For ReLU the mask comes from the tested output ``y_dev``
    when given (``y > 0`` iff ``pre > 0``): a pre-activation within rounding of 0 must not
    flip the reference's mask; the forward check still compares ``y`` with float64."""
    x, w = f64(x), f64(w)
    k, n = w.shape
    x2 = x.reshape(-1, k)
    pre = x2 @ w + (0.0 if b is None else f64(b))
    y, d = act_ref(pre, activation)
    if activation == "relu" and y_dev is not None:
        d = (f64(y_dev).reshape(-1, n) > 0).astype(np.float64)
    dpre = f64(g).reshape(-1, n) * d
    return (y.reshape(*x.shape[:-1], n),
            ((dpre @ w.T).reshape(x.shape), x2.T @ dpre, dpre.sum(0)))


def rel_err(got, ref) -> float:
    got, ref = f64(got), np.asarray(ref, np.float64)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    if not np.all(np.isfinite(got)):
        return float("inf")
    return float(np.linalg.norm(got - ref) / max(np.linalg.norm(ref), 1e-30))


def data(x_shape, n, dtype, bias=True, seed=0):
    r = np.random.default_rng(seed)
    k = x_shape[-1]
    x = r.standard_normal(x_shape).astype(dtype.np)
    w = (r.standard_normal((k, n)) / math.sqrt(k)).astype(dtype.np)
    b = r.standard_normal(n).astype(dtype.np) if bias else None
    g = r.standard_normal((*x_shape[:-1], n)).astype(dtype.np)
    return x, w, b, g


def run_linear(device, x_shape, n, dtype, activation, bias=True, seed=0, layout="contiguous"):
    x, w, b, g = data(x_shape, n, dtype, bias, seed)
    xt = st.tensor(x, device=device)
    if layout == "transposed":  # a column-major 2-D input
        xt = st.tensor(np.ascontiguousarray(x.T), device=device).T
    xt.requires_grad_()
    wt = st.tensor(w, device=device, requires_grad=True)
    bt = None if b is None else st.tensor(b, device=device, requires_grad=True)
    with poisoned(device):
        y = linear(xt, wt, bt, activation)
        y.backward(st.tensor(g, device=device))
    ref_y, (dx, dw, db) = linear_ref(x, w, b, activation, g, y)
    tol = tol_for(dtype, activation)
    assert y.dtype is dtype and y.shape == (*x_shape[:-1], n)
    assert rel_err(y, ref_y) < tol, rel_err(y, ref_y)
    assert xt.grad.dtype is dtype and rel_err(xt.grad, dx) < 2 * tol, rel_err(xt.grad, dx)
    assert rel_err(wt.grad, dw) < 2 * tol, rel_err(wt.grad, dw)
    if bt is not None:
        assert rel_err(bt.grad, db) < 2 * tol, rel_err(bt.grad, db)
    return y


SHAPES = [((5, 7), 3), ((1, 1), 1), ((1, 9), 4), ((33, 17), 9), ((2, 3, 13), 11),
          ((4, 129), 130), ((64, 96), 40), ((3, 16), 1), ((17, 24), 264)]
ACTS = [None, "relu", "gelu"]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("activation", ACTS, ids=str)
@pytest.mark.parametrize("dtype", [st.float32, st.bfloat16], ids=str)
def test_matches_reference(device, shape, activation, dtype):
    run_linear(device, shape[0], shape[1], dtype, activation)


@pytest.mark.parametrize("shape", [((5, 7), 3), ((4, 129), 130), ((2, 3, 13), 8)], ids=str)
@pytest.mark.parametrize("activation", ACTS, ids=str)
def test_without_bias(device, shape, activation):
    run_linear(device, shape[0], shape[1], st.float32, activation, bias=False)


@pytest.mark.parametrize("activation", ACTS, ids=str)
@pytest.mark.parametrize("dtype", [st.float16, st.float64], ids=str)
def test_other_dtypes(device, activation, dtype):
    run_linear(device, (9, 24), 16, dtype, activation)
    run_linear(device, (5, 7), 3, dtype, activation, seed=1)


@pytest.mark.parametrize("activation", ACTS, ids=str)
def test_transposed_input(device, activation):
    run_linear(device, (12, 20), 8, st.float32, activation, layout="transposed")


def test_gelu_is_the_tanh_approximation(device):
    x = st.tensor([[-3.0, -1.0, 0.0, 0.5, 2.0]], device=device)
    eye = st.tensor(np.eye(5, dtype=np.float32), device=device)
    y = linear(x, eye, activation="gelu")
    np.testing.assert_allclose(y.numpy(), st.gelu(x, approximate="tanh").numpy(), rtol=1e-5,
                               atol=2e-5)
    assert np.abs(y.numpy() - st.gelu(x).numpy()).max() > 1e-5  # not the erf form
    y2 = linear(x, eye, activation="gelu_tanh")
    np.testing.assert_array_equal(y2.numpy(), y.numpy())


def test_no_grad_forward_matches(device):
    x, w, b, _ = data((6, 10), 5, st.float32)
    xt, wt, bt = (st.tensor(a, device=device, requires_grad=True) for a in (x, w, b))
    for activation in ACTS:
        with st.no_grad():
            y = linear(xt, wt, bt, activation)
        assert not y.requires_grad
        ref, _ = linear_ref(x, w, b, activation, np.zeros((6, 5)))
        assert rel_err(y, ref) < tol_for(st.float32, activation)


def test_only_some_inputs_need_grad(device):
    x, w, b, g = data((6, 10), 5, st.float32)
    xt = st.tensor(x, device=device)
    wt = st.tensor(w, device=device, requires_grad=True)
    bt = st.tensor(b, device=device)
    y = linear(xt, wt, bt, "relu")
    y.backward(st.tensor(g, device=device))
    _, (_, dw, _) = linear_ref(x, w, b, "relu", g, y)
    assert xt.grad is None and bt.grad is None and rel_err(wt.grad, dw) < 2e-5
    xt.requires_grad_()
    y = linear(xt, wt.detach(), bt, "gelu")
    y.backward(st.tensor(g, device=device))
    _, (dx, _, _) = linear_ref(x, w, b, "gelu", g)
    assert rel_err(xt.grad, dx) < 2 * GELU_F32_TOL


def test_empty_and_one_dimensional(device):
    w = st.randn(4, 3, device=device, requires_grad=True)
    b = st.randn(3, device=device, requires_grad=True)
    y = linear(st.zeros(0, 4, device=device), w, b, "relu")
    assert y.shape == (0, 3)
    y.sum().backward()
    assert w.grad.shape == (4, 3) and float(abs(w.grad).max().item()) == 0.0
    v = st.randn(4, device=device)
    np.testing.assert_allclose(linear(v, w, b).numpy(), (v @ w + b).numpy(), rtol=1e-5,
                               atol=1e-6)


# ---- numerical gradients and gradients of gradients (CPU, float64) ----------
@pytest.mark.parametrize("activation", ACTS, ids=str)
def test_check_grad(activation):
    r = np.random.default_rng(2)
    x = r.standard_normal((2, 3, 5))
    w = r.standard_normal((5, 4))
    b = r.standard_normal(4) + 0.3
    grad_check(lambda x, w, b: linear(x, w, b, activation), x, w, b, device=st.Device("cpu"))


@pytest.mark.parametrize("activation", ACTS, ids=str)
@pytest.mark.parametrize("argnum", [0, 1, 2])
def test_second_order(activation, argnum):
    r = np.random.default_rng(3)
    x = r.standard_normal((3, 5))
    w = r.standard_normal((5, 4))
    b = r.standard_normal(4)
    f = lambda x, w, b: linear(x, w, b, activation) ** 2  # nonlinear in b too
    grad_check(second_order(f, argnum), x, w, b, device=st.Device("cpu"))


def test_create_graph_on_device(device):
    x, w, b, _ = data((4, 6), 5, st.float32)
    xt, wt, bt = (st.tensor(a, device=device, requires_grad=True) for a in (x, w, b))
    (gx,) = st.gradients(linear(xt, wt, bt, "gelu").sum(), [xt], create_graph=True)
    assert gx.requires_grad
    (gw,) = st.gradients((gx * gx).sum(), [wt])
    ref = _second_order_ref(x, w, b)
    assert rel_err(gw, ref) < 5 * GELU_F32_TOL


def _second_order_ref(x, w, b, eps=1e-6):
    """d/dw of sum((d/dx sum(gelu(x @ w + b)))^2) by central differences in float64."""
    x, w, b = f64(x), f64(w), f64(b)

    def f(w):
        _, d = act_ref(x @ w + b, "gelu")
        gx = d @ w.T
        return float((gx * gx).sum())

    out = np.zeros_like(w)
    for i in np.ndindex(w.shape):
        e = np.zeros_like(w)
        e[i] = eps
        out[i] = (f(w + e) - f(w - e)) / (2 * eps)
    return out


# ---- chains of fused layers ----------
def _mlp(device, dims, acts, dtype, seed=0, bias=True):
    r = np.random.default_rng(seed)
    ws = [(r.standard_normal((a, c)) / math.sqrt(a)).astype(dtype.np)
          for a, c in itertools.pairwise(dims)]
    bs = [r.standard_normal(c).astype(dtype.np) if bias else None for c in dims[1:]]
    wt = [st.tensor(w, device=device, requires_grad=True) for w in ws]
    bt = [None if b is None else st.tensor(b, device=device, requires_grad=True) for b in bs]
    return ws, bs, wt, bt


def _mlp_ref(x, ws, bs, acts, g, outs):
    """Forward and every gradient of the layer stack in float64 (masks from ``outs``)."""
    hs, ds = [f64(x)], []
    for i, (w, b, a) in enumerate(zip(ws, bs, acts)):
        pre = hs[-1] @ f64(w) + (0.0 if b is None else f64(b))
        y, d = act_ref(pre, a)
        if a == "relu":
            d = (f64(outs[i]) > 0).astype(np.float64)
        hs.append(y)
        ds.append(d)
    grads = []
    gy = f64(g)
    for i in range(len(ws) - 1, -1, -1):
        dpre = gy * ds[i]
        grads.append((hs[i].T @ dpre, dpre.sum(0)))
        gy = dpre @ f64(ws[i]).T
    return hs[-1], gy, grads[::-1]


class _Counter:
    """Counts calls of one backend primitive (the backend object is shared: restored after)."""

    def __init__(self, monkeypatch, backend, name):
        self.calls = 0
        orig = getattr(backend, name)

        def counted(*args, **kwargs):
            self.calls += 1
            return orig(*args, **kwargs)

        monkeypatch.setattr(backend, name, counted)


CHAINS = [([12, 16, 16, 5], ["relu", "relu", None]),
          ([9, 130, 7, 3], ["gelu", "relu", None]),
          ([8, 20, 13, 6], ["relu", "gelu", "relu"]),
          ([5, 1, 4, 3], ["relu", "relu", None]),  # a 1-wide hidden layer
          ([6, 4, 1], ["gelu", None])]  # one output: the dX GEMM has k = 1 (no epilogue)


@pytest.mark.parametrize("chain", CHAINS, ids=str)
@pytest.mark.parametrize("dtype", [st.float32, st.bfloat16], ids=str)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_chain_of_fused_layers(device, monkeypatch, chain, dtype, bias):
    dims, acts = chain
    r = np.random.default_rng(7)
    rows = 11
    x = r.standard_normal((rows, dims[0])).astype(dtype.np)
    g = r.standard_normal((rows, dims[-1])).astype(dtype.np)
    ws, bs, wt, bt = _mlp(device, dims, acts, dtype, bias=bias)
    xt = st.tensor(x, device=device, requires_grad=True)
    counter = _Counter(monkeypatch, device.backend, "linear_act_backward_chain")
    outs = []
    with poisoned(device):
        h = xt
        for w, b, a in zip(wt, bt, acts):
            h = linear(h, w, b, a)
            outs.append(h)
        h.backward(st.tensor(g, device=device))
    # every layer after the first gets its input from a fused layer with an activation
    assert counter.calls == len(dims) - 2
    ref_y, ref_dx, grads = _mlp_ref(x, ws, bs, acts, g, outs)
    tol = 4 * tol_for(dtype, *acts)
    assert rel_err(h, ref_y) < tol
    assert rel_err(xt.grad, ref_dx) < tol, rel_err(xt.grad, ref_dx)
    for i, (dw, db) in enumerate(grads):
        assert rel_err(wt[i].grad, dw) < tol, (i, rel_err(wt[i].grad, dw))
        if bias:
            assert rel_err(bt[i].grad, db) < tol, (i, rel_err(bt[i].grad, db))


def _two_layers(device, seed=0):
    ws, bs, wt, bt = _mlp(device, [6, 8, 4], ["relu", "gelu"], st.float64, seed=seed)
    x = np.random.default_rng(seed + 1).standard_normal((5, 6))
    return x, ws, bs, wt, bt


@pytest.mark.parametrize("case", ["second_consumer", "retain_grad", "requested_input",
                                  "also_a_root", "create_graph"])
def test_chain_not_fused_when_unsafe(device, monkeypatch, case):
    x, ws, bs, wt, bt = _two_layers(device)
    xt = st.tensor(x, device=device, requires_grad=True)
    counter = _Counter(monkeypatch, device.backend, "linear_act_backward_chain")
    h = linear(xt, wt[0], bt[0], "relu")
    y = linear(h, wt[1], bt[1], "gelu")
    g = np.random.default_rng(9).standard_normal(y.shape)
    gt = st.tensor(g, device=device)
    _, dx_ref, grads = _mlp_ref(x, ws, bs, ["relu", "gelu"], g, [h, y])
    gh_ref = None
    if case == "second_consumer":  # h also feeds the loss directly: its cotangent is a sum
        loss = (y * gt).sum() + (h * h).sum()
        loss.backward()
        _, dx_ref, grads = _extra_h_ref(x, ws, bs, g, h)
    elif case == "retain_grad":
        h.retain_grad()
        y.backward(gt)
        gh_ref = _gh_ref(h, ws, bs, g)
    elif case == "requested_input":
        gh, gw0 = st.gradients(y, [h, wt[0]], gt)
        assert gw0 is None  # the walk stops at h
        np.testing.assert_allclose(gh.numpy(), _gh_ref(h, ws, bs, g), rtol=1e-10)
        assert counter.calls == 0
        return
    elif case == "also_a_root":
        res = st.gradients([y, h], [xt] + wt + bt, [gt, st.ones_like(h)])
        assert counter.calls == 0
        _, dx2, grads2 = _extra_h_ref(x, ws, bs, g, h, linear_term=True)
        np.testing.assert_allclose(res[0].numpy(), dx2, rtol=1e-9, atol=1e-12)
        for i, (dw, db) in enumerate(grads2):
            np.testing.assert_allclose(res[1 + i].numpy(), dw, rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(res[3 + i].numpy(), db, rtol=1e-9, atol=1e-12)
        return
    else:  # create_graph: the pullbacks compose ops; fusion would break the recording
        y.backward(gt, create_graph=True)
        assert xt.grad.requires_grad
    assert counter.calls == 0
    np.testing.assert_allclose(xt.grad.numpy(), dx_ref, rtol=1e-9, atol=1e-12)
    for i, (dw, db) in enumerate(grads):
        np.testing.assert_allclose(wt[i].grad.numpy(), dw, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(bt[i].grad.numpy(), db, rtol=1e-9, atol=1e-12)
    if gh_ref is not None:
        np.testing.assert_allclose(h.grad.numpy(), gh_ref, rtol=1e-10, atol=1e-12)


def _gh_ref(h, ws, bs, g):
    pre = f64(h) @ f64(ws[1]) + f64(bs[1])
    return (g * act_ref(pre, "gelu")[1]) @ f64(ws[1]).T


def _extra_h_ref(x, ws, bs, g, h, linear_term=False):
    """Gradients when the loss also has ``sum(h * h)`` (or ``sum(h)``) besides ``<g, y>``."""
    gh = _gh_ref(h, ws, bs, g) + (1.0 if linear_term else 2.0 * f64(h))
    d0 = (f64(h) > 0).astype(np.float64)
    dpre0 = gh * d0
    pre1 = f64(h) @ f64(ws[1]) + f64(bs[1])
    dpre1 = g * act_ref(pre1, "gelu")[1]
    grads = [(f64(x).T @ dpre0, dpre0.sum(0)), (f64(h).T @ dpre1, dpre1.sum(0))]
    return None, dpre0 @ f64(ws[0]).T, grads


def test_chain_with_retain_graph_twice(device):
    x, ws, bs, wt, bt = _two_layers(device)
    xt = st.tensor(x, device=device, requires_grad=True)
    y = linear(linear(xt, wt[0], bt[0], "relu"), wt[1], bt[1], "gelu")
    y.sum().backward(retain_graph=True)
    first = [t.grad.numpy().copy() for t in (xt, *wt, *bt)]
    y.sum().backward()
    for t, a in zip((xt, *wt, *bt), first):
        np.testing.assert_allclose(t.grad.numpy(), 2 * a, rtol=1e-12, atol=1e-14)


def test_sole_consumer_outside_backward_is_false():
    assert not sole_consumer(st.ones(2, requires_grad=True))


# ---- F.linear and nn.Dense ----------
def test_functional_and_dense(device):
    st.manual_seed(0)
    layer = nn.Dense(6, 4, activation="relu", device=device)
    plain = nn.Dense(6, 4, device=device)
    plain.weight, plain.bias = layer.weight, layer.bias
    x = st.randn(3, 6, device=device)
    np.testing.assert_allclose(layer(x).numpy(), st.relu(plain(x)).numpy(), rtol=1e-6,
                               atol=1e-7)
    np.testing.assert_allclose(F.linear(x, layer.weight, layer.bias, activation="relu").numpy(),
                               layer(x).numpy())
    assert "activation='relu'" in repr(layer)
    assert nn.Dense(2, 2, activation="gelu_tanh").activation == "gelu"
    with pytest.raises(ValueError, match="activation"):
        nn.Dense(2, 2, activation="tanh")


def test_dtype_promotion_and_integers():
    x = st.tensor([[1, 2]])
    w = st.tensor([[1.0], [0.5]], dtype=st.float64)
    y = linear(x, w, st.tensor([0.5], dtype=st.float32))
    assert y.dtype is st.float64 and y.tolist() == [[2.5]]
    yi = linear(st.tensor([[1, 2]]), st.tensor([[3], [4]]))
    assert yi.dtype is st.float32 and yi.tolist() == [[11.0]]


def test_errors_name_the_problem():
    x, w = st.ones(2, 3), st.ones(3, 4)
    with pytest.raises(ValueError, match=r"linear: input \(2, 5\) and weight \(3, 4\)"):
        linear(st.ones(2, 5), w)
    with pytest.raises(ValueError, match=r"bias shape \(3,\) must be \(4,\)"):
        linear(x, w, st.ones(3))
    with pytest.raises(ValueError, match="activation must be None, 'relu' or 'gelu'"):
        linear(x, w, activation="silu")
    with pytest.raises(TypeError, match="linear: weight must be a Tensor"):
        linear(x, np.ones((3, 4)))
    with pytest.raises(ValueError, match="do not fit"):
        F.linear(x, st.ones(3))


# ---- Hypothesis ----------
@PROPS
@given(lead=hs.lists(hs.integers(1, 4), min_size=1, max_size=3), k=hs.integers(1, 20),
       n=hs.integers(1, 20), activation=hs.sampled_from(ACTS), bias=hs.booleans(),
       seed=hs.integers(0, 2**16))
def test_shapes_property(device, lead, k, n, activation, bias, seed):
    run_linear(device, (*lead, k), n, st.float32, activation, bias=bias, seed=seed)
