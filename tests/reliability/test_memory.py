"""Memory stays flat over long training runs, and backward() leaves no graph alive.

2,000 steps of a small MLP and a small CNN, eager and (on CUDA) under ``st.jit``: the number of
live tensors, the process's resident memory and, on CUDA, the bytes held by the memory pools
and the device's used memory are measured at step 200 and at step 2,000 and must not grow
(within the stated tolerances); the traced (tracemalloc) allocations must not grow over the last 200
steps. The numbers are printed (``-s``) and logged on the
``scitensor.tests.memory`` logger, so they land in the test log.

Then the autodiff graph: after ``backward()`` (and after dropping the output), the tensors and
pullback closures of the graph are freed by reference counting alone (no reference cycles), so
they never wait for the cyclic garbage collector.
"""

from __future__ import annotations

import gc
import logging
import os
import tracemalloc
import weakref

import numpy as np
import pytest

import scitensor as st
from scitensor import nn, optim
from scitensor.nn import functional as F
from scitensor.tensor import Tensor

log = logging.getLogger("scitensor.tests.memory")

STEPS = 2000
FIRST = 200
WINDOW = 200  # steps traced by tracemalloc at the end (tracing slows Python several times)
SETTLE = 10  # traced steps before the window opens: the live set of one step is then traced
RSS_TOLERANCE = 4 * 2**20  # bytes of resident-memory growth allowed from step 200 to 2,000
TRACED_TOLERANCE = 16 * 2**10  # bytes of traced growth over the window (< 82 B a step)
# CUDA: one leaked allocation a step (CuPy rounds each up to >= 512 B) would add >= 900 KiB
POOL_TOLERANCE = 256 * 2**10  # bytes of growth of the pool's in-use memory
DEVICE_TOLERANCE = 4 * 2**20  # bytes of growth of the memory the pool holds (2 MiB chunks)


def _rss() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None  # not Linux: the other measurements still run


def _live_tensors() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if issubclass(type(o), Tensor))


def _cuda_memory(device):
    """``(pool bytes in use, bytes the pool holds from the device)`` or ``(None, None)`` on the
    CPU. Not the device-wide ``memGetInfo``: other processes (pytest-xdist workers) share the
    GPU, and their allocations would show up as this process's growth."""
    if device.type != "cuda":
        return None, None
    be = device.backend
    be.synchronize()
    return be.pool.used_bytes(), be.pool.total_bytes()


def _models(kind, device):
    st.manual_seed(0)
    if kind == "mlp":
        model = nn.Sequential(nn.Dense(16, 32, device=device), nn.ReLU(),
                              nn.Dense(32, 4, device=device))
        x = st.randn(32, 16, device=device)
        y = st.randint(0, 4, (32,), device=device)
        opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    else:
        model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, device=device), nn.ReLU(),
                              nn.MaxPool2d(2), nn.BatchNorm2d(4, device=device), nn.Flatten(),
                              nn.Dense(4 * 4 * 4, 4, device=device))
        x = st.randn(8, 1, 8, 8, device=device)
        y = st.randint(0, 4, (8,), device=device)
        opt = optim.Adam(model.parameters(), lr=1e-3)
    return model, opt, x, y


def _train(kind, device, use_jit):
    model, opt, x, y = _models(kind, device)

    def step(xb, yb):
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    run = st.jit(step) if use_jit else step
    marks = {}
    for i in range(STEPS):
        loss = run(x, y)
        if i + 1 == FIRST:
            marks["first"] = (_live_tensors(), _rss(), *_cuda_memory(device))
        if i + 1 == STEPS - WINDOW - SETTLE:
            gc.collect()
            tracemalloc.start()
        if i + 1 == STEPS - WINDOW:
            gc.collect()
            start, _ = tracemalloc.get_traced_memory()
    gc.collect()
    end, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    traced = end - start
    del loss
    marks["last"] = (_live_tensors(), _rss(), *_cuda_memory(device))
    return marks, traced, run


@pytest.mark.parametrize("use_jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_training_memory_is_flat(kind, use_jit, device, capsys):
    if use_jit and device.type != "cuda":
        pytest.skip("jit captures CUDA graphs; on the CPU it runs eagerly (the eager case)")
    marks, traced, run = _train(kind, device, use_jit)
    (t0, r0, p0, d0), (t1, r1, p1, d1) = marks["first"], marks["last"]
    mib = 2**20
    report = (f"memory {kind}/{'jit' if use_jit else 'eager'} on {device}: "
              f"live tensors {t0} -> {t1}; "
              f"RSS {'n/a' if r0 is None else f'{r0 / mib:.1f} -> {r1 / mib:.1f} MiB'}; "
              f"traced growth over the last {WINDOW} steps: {traced} B")
    if p0 is not None:
        report += (f"; CUDA pool in use {p0 / mib:.2f} -> {p1 / mib:.2f} MiB; pool holds "
                   f"{d0 / mib:.1f} -> {d1 / mib:.1f} MiB")
    if use_jit:
        report += f"; jit stats {run.stats}"
    with capsys.disabled():
        print("\n" + report)
    log.info(report)
    assert t1 <= t0, f"live tensors grew: {report}"
    if r0 is not None:
        assert r1 - r0 <= RSS_TOLERANCE, f"host memory grew: {report}"
    assert traced <= TRACED_TOLERANCE, f"allocations kept from the traced window: {report}"
    if p0 is not None:
        assert p1 - p0 <= POOL_TOLERANCE, f"CUDA pool grew: {report}"
        assert d1 - d0 <= DEVICE_TOLERANCE, f"device memory grew: {report}"
    if use_jit:
        assert run.stats["replays"] >= STEPS - 3, f"the jit step did not replay: {run.stats}"


# ---- no reference cycles keep an autodiff graph alive ----------------------------------

def _graph_ops(device):
    """Small differentiable programs covering each op family's pullback closures; each takes
    ``x(*shape)``, which makes a leaf tensor that requires grad."""
    def idx(*values):
        return st.tensor(list(values), device=device)

    return {
        "elementwise": lambda x: (lambda a: ((a * 2 + 1).exp().log1p() / (a.abs() + 1))
                                  .tanh())(x(4, 3)),
        "pow_where_clip": lambda x: (lambda a: st.where(a > 0, a ** 2, st.clip(a, -1, 1)))(
            x(4)),
        "reductions": lambda x: (lambda a: a.softmax(-1).sum(0) + a.max(1).mean()
                                 + a.std())(x(4, 3)),
        "logsumexp_norm": lambda x: (lambda a: st.logsumexp(a, axis=1) + st.norm(a))(x(4, 3)),
        "shape": lambda x: (lambda a: st.concatenate([a.T.reshape(3, 2), a.flip(0).T])[::2])(
            x(2, 3)),
        "indexing": lambda x: (lambda a: a[idx(0, 0, 4)].sum()
                               + st.take_along_axis(a, st.zeros(5, 1, dtype=st.int64,
                                                                device=device), 1).sum()
                               + st.index_add(a, 0, idx(1), a[:1]).sum())(x(5, 3)),
        "matmul": lambda x: (x(4, 3) @ x(3, 2)).relu(),
        "conv_pool_bn": lambda x: (lambda a, w: F.batch_norm(
            F.max_pool2d(F.conv2d(a, w, padding=1), 2), training=True).sum()
            + F.avg_pool2d(a, 2).sum() + F.adaptive_avg_pool2d(a, 1).sum())(
            x(2, 2, 6, 6), x(3, 2, 3, 3)),
        "norms_attention": lambda x: (lambda a: F.layer_norm(a, 8).sum() + F.rms_norm(a, 8).sum()
                                      + F.scaled_dot_product_attention(a, a, a, causal=True)
                                      .sum())(x(1, 2, 4, 8)),
        "losses_dropout": lambda x: (lambda a: F.cross_entropy(F.dropout(a, 0.5),
                                                                idx(0, 1, 2, 3))
                                     + F.mse_loss(a, st.zeros(4, 5, device=device)))(x(4, 5)),
        "to_astype": lambda x: x(3).to(dtype=st.float64).astype(st.float32) * 2,
        "custom_vjp": lambda x: _custom_square(x(3)),
    }


@st.custom_vjp
def _custom_square(x):
    return x * x


_custom_square.defvjp(lambda x: (x * x, x), lambda x, g: (2 * x * g,))


def _graph_tensors(root):
    """Every recorded tensor of ``root``'s graph (walking ``_parents``)."""
    seen, stack, out = set(), [root], []
    while stack:
        t = stack.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        out.append(t)
        stack.extend(p for p in t._parents if p is not None)
    return out


@pytest.mark.parametrize("retain_graph", [False, True], ids=["backward", "retain_graph"])
@pytest.mark.parametrize("name", sorted(_graph_ops(st.Device("cpu"))))
def test_graph_is_freed_by_refcount_after_backward(name, retain_graph, device):
    program = _graph_ops(device)[name]

    def leaf(*shape):
        return st.randn(*shape, device=device, requires_grad=True)

    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()  # only reference counting may free the graph
    try:
        out = program(leaf)
        loss = out.sum() if out.size != 1 else out.reshape(())
        nodes = [t for t in _graph_tensors(loss) if not t.is_leaf]
        assert nodes, "the program recorded no graph"
        refs = [weakref.ref(t) for t in nodes]
        # closures only: module-level pullbacks (add's, neg's) live as long as their module
        pullbacks = [weakref.ref(t._pullback) for t in nodes
                     if getattr(t._pullback, "__closure__", None) and _weakrefable(t._pullback)]
        loss.backward(retain_graph=retain_graph)
        del out, loss, nodes
        alive = [r() for r in refs if r() is not None]
        assert not alive, (f"{name}: {len(alive)} graph tensor(s) still alive after backward "
                           f"and del without the garbage collector: "
                           f"{[(t.shape, t._pullback) for t in alive[:3]]}")
        assert all(r() is None for r in pullbacks), f"{name}: a pullback closure survived"
    finally:
        if was_enabled:
            gc.enable()


def _weakrefable(obj) -> bool:
    try:
        weakref.ref(obj)
        return True
    except TypeError:
        return False


def test_no_tensor_is_ever_in_a_reference_cycle(device):
    """A training step leaves nothing for the cyclic collector that holds a tensor."""
    model, opt, x, y = _models("cnn", device)
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for _ in range(3):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        del loss
        gc.collect()
        cyclic = [o for o in gc.garbage if issubclass(type(o), Tensor)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert not cyclic, f"tensors found in reference cycles: {[t.shape for t in cyclic[:5]]}"


def test_grad_of_a_grad_leaves_no_graph(device):
    """create_graph=True records the backward pass; dropping the results frees all of it."""
    gc.collect()
    before = _live_tensors()
    w = st.randn(5, device=device, requires_grad=True)
    g = st.grad(lambda v: (v ** 3).sum())
    h = st.grad(lambda v: g(v).sum())(w)
    np.testing.assert_allclose(h.numpy(), 6 * w.numpy(), rtol=1e-5)
    del h, w
    assert _live_tensors() <= before
