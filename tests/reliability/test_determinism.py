"""Determinism: the same seed and inputs give the same bits.

On the CPU everything is reproducible. On CUDA every op without atomics is too (checked here
op by op, running each twice on the same inputs); the primitives that accumulate with atomics
are listed in ``scitensor.runtime.NONDETERMINISTIC_PRIMITIVES`` and docs/determinism.md.
Deterministic mode (``st.set_deterministic(True)``) makes those reproducible where the backend
provides a reproducible implementation (``backend.deterministic_primitives``) and raises a
``RuntimeError`` where it does not. On CUDA the scatter-adds (``add_at``, ``index_add``,
``scatter_add``: a sorted segmented sum), the k-means update and the cuBLASLt algorithm choice
are wired; the fused attention backward falls back to its reference composition.
"""

from __future__ import annotations

import ctypes
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import scitensor as st
from scitensor import nn, optim, runtime
from scitensor.data import DataLoader
from scitensor.nn import functional as F
from tests.ops.helpers import poisoned


def bits(t: st.Tensor) -> bytes:
    return t.numpy().tobytes()


def same_bits(a: st.Tensor, b: st.Tensor, what: str = "") -> None:
    assert a.shape == b.shape and a.dtype == b.dtype, what
    assert bits(a) == bits(b), f"{what}: results differ between two identical runs"


# ---- random numbers, init, data order ------------------------------------------------------

RANDOM = {
    "rand": lambda d: st.rand(64, 3, device=d),
    "randn": lambda d: st.randn(65, device=d),
    "randint": lambda d: st.randint(-5, 1000, (7, 9), device=d),
    "rand_bf16": lambda d: st.rand(50, dtype=st.bfloat16, device=d),
    "randn_f64": lambda d: st.randn(9, dtype=st.float64, device=d),
    "rand_like": lambda d: st.rand_like(st.zeros(4, 4, device=d)),
    "randn_like": lambda d: st.randn_like(st.zeros(4, 4, device=d)),
    "dropout": lambda d: F.dropout(st.ones(200, device=d), 0.3),
    "nn.init": lambda d: nn.Conv2d(3, 4, 3, device=d).weight,
    "nn.Dense": lambda d: nn.Dense(8, 5, device=d).bias,
    "nn.Embedding": lambda d: nn.Embedding(10, 4, device=d).weight,
}


@pytest.mark.parametrize("name", sorted(RANDOM))
def test_same_seed_same_numbers(device, name):
    make = RANDOM[name]
    runs = []
    for _ in range(2):
        st.manual_seed(1234)
        runs.append(make(device))
    same_bits(runs[0], runs[1], name)
    st.manual_seed(1235)
    assert bits(make(device)) != bits(runs[0]), f"{name}: another seed gave the same numbers"


def test_explicit_generator_streams_repeat(device):
    a = [st.rand(5, device=device, generator=st.Generator(7)) for _ in range(2)]
    same_bits(*a, "Generator(7)")
    g = st.Generator(7)
    first, second = st.rand(5, device=device, generator=g), st.rand(5, device=device,
                                                                   generator=g)
    same_bits(first, a[0], "first draw")
    assert bits(second) != bits(first)


@pytest.mark.parametrize("name", ["rand", "randint", "dropout", "rand_bf16", "randn"])
def test_cpu_and_cuda_draw_the_same_numbers(name):
    if not st.cuda_status()[0]:
        pytest.skip(f"needs CUDA beside the CPU: {st.cuda_status()[1]}")
    out = []
    for dev in (st.Device("cpu"), st.Device("cuda")):
        st.manual_seed(99)
        out.append(RANDOM[name](dev).numpy())
    if name == "randn":  # Box-Muller: log/sin/cos may differ in the last ulp between devices
        np.testing.assert_allclose(out[1], out[0], rtol=2e-6, atol=2e-6)
    else:
        assert out[0].tobytes() == out[1].tobytes(), f"{name}: CPU and CUDA streams differ"


def test_dataloader_shuffle_repeats():
    x = np.arange(50)
    a = DataLoader(x, batch_size=8, shuffle=True, seed=3)
    b = DataLoader(x, batch_size=8, shuffle=True, seed=3)
    for epoch in range(3):
        ea = np.concatenate([t.numpy() for (t,) in a])
        eb = np.concatenate([t.numpy() for (t,) in b])
        np.testing.assert_array_equal(ea, eb)
        np.testing.assert_array_equal(ea, a.order(epoch))
    assert not np.array_equal(a.order(0), a.order(1))
    c = DataLoader(x, batch_size=8, shuffle=True, seed=4)
    assert not np.array_equal(a.order(0), c.order(0))


# ---- training runs -------------------------------------------------------------------------

def _train(kind, device, steps=5, use_jit=False):
    st.manual_seed(0)
    if kind == "mlp":
        model = nn.Sequential(nn.Dense(12, 32, device=device), nn.GELU(), nn.Dropout(0.2),
                              nn.Dense(32, 3, device=device))
        data = np.random.default_rng(0).standard_normal((40, 12)).astype(np.float32)
        opt = optim.AdamW(model.parameters(), lr=1e-2)
    else:
        model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, device=device), nn.ReLU(),
                              nn.BatchNorm2d(4, device=device), nn.MaxPool2d(2), nn.Flatten(),
                              nn.Dense(4 * 4 * 4, 3, device=device))
        data = np.random.default_rng(0).standard_normal((40, 1, 8, 8)).astype(np.float32)
        opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    labels = np.random.default_rng(1).integers(0, 3, 40)
    loader = DataLoader(data, labels, batch_size=8, shuffle=True, seed=5, device=device)

    def step(xb, yb):
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    run = st.jit(step) if use_jit else step
    losses = []
    while len(losses) < steps:
        for xb, yb in loader:
            if len(xb) < 8 or len(losses) == steps:
                continue
            losses.append(run(xb, yb).item())
    return losses, [p.numpy().tobytes() for p in model.parameters()]


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_training_steps_repeat_bit_for_bit(device, kind):
    a = _train(kind, device)
    b = _train(kind, device)
    assert a[0] == b[0], f"{kind}: losses differ between two runs: {a[0]} vs {b[0]}"
    assert a[1] == b[1], f"{kind}: parameters differ between two runs"


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_jit_training_steps_repeat_bit_for_bit(device, kind):
    if device.type != "cuda":
        pytest.skip("jit replays CUDA graphs; on the CPU it is the eager case")
    a = _train(kind, device, steps=8, use_jit=True)
    b = _train(kind, device, steps=8, use_jit=True)
    assert a == b, f"{kind}: jitted runs differ"


# ---- op by op: the same inputs give the same bits -------------------------------------------

def _grads(fn, *shapes, device, seed=0):
    rng = np.random.default_rng(seed)
    xs = [st.tensor(rng.standard_normal(s).astype(np.float32), device=device,
                    requires_grad=True) for s in shapes]
    out = fn(*xs)
    out.backward(st.tensor(rng.standard_normal(out.shape).astype(np.float32), device=device))
    return [out] + [x.grad for x in xs]


def _labels(device, n=16, classes=10):
    return st.tensor(np.arange(n) % classes, device=device)


DETERMINISTIC_OPS = {
    "matmul": (lambda a, b: a @ b, (64, 96), (96, 48)),
    "linear_relu": (lambda x, w, b: st.linear(x, w, b, activation="relu"), (32, 64), (64, 48),
                    (48,)),
    "sum_mean": (lambda a: a.sum(axis=0) + a.mean(axis=0), (512, 33)),
    "softmax": (lambda a: st.softmax(a, -1), (64, 1000)),
    "log_softmax": (lambda a: st.log_softmax(a, -1), (64, 1000)),
    "logsumexp": (lambda a: st.logsumexp(a, axis=1), (64, 1000)),
    "layer_norm": (lambda a, w, b: F.layer_norm(a, 256, w, b), (128, 256), (256,), (256,)),
    "rms_norm": (lambda a, w: F.rms_norm(a, 256, w), (128, 256), (256,)),
    "conv2d": (lambda x, w, b: F.conv2d(x, w, b, padding=1), (4, 8, 16, 16), (16, 8, 3, 3),
               (16,)),
    "conv_transpose2d": (lambda x, w: F.conv_transpose2d(x, w, stride=2), (2, 8, 8, 8),
                         (8, 4, 3, 3)),
    "max_pool2d": (lambda x: F.max_pool2d(x, 3, 2, 1), (4, 8, 16, 16)),
    "avg_pool2d": (lambda x: F.avg_pool2d(x, 2), (4, 8, 16, 16)),
    "batch_norm": (lambda x, w, b: F.batch_norm(x, weight=w, bias=b, training=True),
                   (8, 16, 8, 8), (16,), (16,)),
    "attention_forward_dk_dv": (
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, causal=True),
        (2, 4, 128, 64), (2, 4, 128, 64), (2, 4, 128, 64)),
    "norm_clip": (lambda a: st.norm(a, axis=1) + st.clip(a, -0.5, 0.5).sum(1), (64, 300)),
}


@pytest.mark.parametrize("name", sorted(DETERMINISTIC_OPS))
def test_op_without_atomics_repeats_bit_for_bit(device, name):
    fn, *shapes = DETERMINISTIC_OPS[name]
    first = _grads(fn, *shapes, device=device)
    for _ in range(2):
        again = _grads(fn, *shapes, device=device)
        skip_dq = name.startswith("attention")  # dq accumulates atomically on CUDA
        for i, (a, b) in enumerate(zip(first, again)):
            if skip_dq and i == 1 and device.type == "cuda":
                continue
            same_bits(a, b, f"{name} output {i}")


def test_cross_entropy_repeats_bit_for_bit(device):
    logits_np = np.random.default_rng(0).standard_normal((256, 1000)).astype(np.float32)
    runs = []
    for _ in range(3):
        logits = st.tensor(logits_np, device=device, requires_grad=True)
        loss = F.cross_entropy(logits, _labels(device, 256, 1000), label_smoothing=0.1)
        loss.backward()
        runs.append((loss, logits.grad))
    for loss, grad in runs[1:]:
        same_bits(loss, runs[0][0], "cross_entropy loss")
        same_bits(grad, runs[0][1], "cross_entropy grad")


def test_optimizers_and_clipping_repeat_bit_for_bit(device):
    def run():
        st.manual_seed(0)
        ps = [st.randn(300, device=device, requires_grad=True),
              st.randn(17, 5, device=device, requires_grad=True)]
        opts = [optim.Adam(ps[:1], lr=1e-2, amsgrad=True), optim.SGD(ps[1:], lr=0.1,
                                                                       momentum=0.9,
                                                                       nesterov=True)]
        for i in range(4):
            for p in ps:
                p.grad = st.randn(*p.shape, device=device) * (10.0 ** i)
            optim.clip_grad_norm_(ps, 1.0)
            for o in opts:
                o.step()
        return [bits(p) for p in ps]

    assert run() == run()


# ---- the paths with atomics: reproducible in deterministic mode (or an error) ---------------

def _dup_index_ops(device):
    """Ops whose CUDA implementation accumulates with atomics: many repeated indices."""
    rng = np.random.default_rng(0)
    idx = st.tensor(rng.integers(0, 8, 4096), device=device)
    src = st.tensor(rng.standard_normal((4096, 16)).astype(np.float32), device=device)
    x = st.zeros(8, 16, device=device)
    return {
        "index_add": ("index_add", lambda: st.index_add(x, 0, idx, src)),
        "scatter_add": ("scatter_add", lambda: st.scatter_add(
            x, 0, idx.reshape(-1, 1).broadcast_to(4096, 16) * 1, src)),
        "getitem_backward": ("add_at", lambda: st.grad(
            lambda t: (t[idx] * src).sum())(st.ones(8, 16, device=device))),
        "embedding_backward": ("add_at", lambda: st.grad(
            lambda w: (F.embedding(idx, w) * src).sum())(st.ones(8, 16, device=device))),
        "take_along_axis_backward": ("scatter_add", lambda: st.grad(
            lambda t: (st.take_along_axis(t.T, idx.reshape(1, -1).broadcast_to(16, 4096) * 1,
                                          1) * src.T).sum())(st.ones(8, 16, device=device))),
    }


ATOMIC_OPS = ["index_add", "scatter_add", "getitem_backward", "embedding_backward",
              "take_along_axis_backward"]


@pytest.mark.parametrize("name", ATOMIC_OPS)
def test_atomic_paths_are_reproducible_in_deterministic_mode(device, name):
    primitive, call = _dup_index_ops(device)[name]
    be = device.backend
    assert runtime.is_reproducible(be, primitive), \
        f"the {be.name} backend's {primitive!r} has no reproducible implementation"
    with st.deterministic():
        runs = [call() for _ in range(5)]
    for r in runs[1:]:
        same_bits(r, runs[0], name)
    fast = call()  # the atomic path: the same sums up to rounding
    np.testing.assert_allclose(fast.numpy(), runs[0].numpy(), rtol=1e-4, atol=1e-3)


def _scatter_add_ops(device, dtype, seed=0):
    """index_add, scatter_add and an integer-array index backward in ``dtype``: 20,000 addends
    on 7 rows (runs over many chunks) plus 3,000 on distinct destinations, odd sizes."""
    rng = np.random.default_rng(seed)
    n, rows, cols = 20_000, 7, 33
    idx_np = np.concatenate([rng.integers(-rows, rows, n - 3000), rng.permutation(3000) % rows])
    src_np = (rng.standard_normal((n, cols)) * 10.0 ** rng.integers(-3, 3, (n, 1)))
    x_np = rng.standard_normal((rows, cols))
    sidx_np = rng.integers(0, rows * cols, (n, 1)) % rows

    def t(a, dt=dtype):
        return st.tensor(np.asarray(a), dtype=dt, device=device)

    idx, src, x, sidx = t(idx_np, st.int64), t(src_np), t(x_np), t(sidx_np, st.int64)
    ops = {
        "index_add": lambda: st.index_add(x, 0, idx, src),
        "scatter_add": lambda: st.scatter_add(x, 0, sidx.broadcast_to(n, cols) * 1, src),
        "getitem_backward": lambda: st.grad(lambda w: (w[idx] * src).sum())(x),
    }
    refs = {}
    xs, s = x.numpy().astype(np.float64), src.numpy().astype(np.float64)
    ref = xs.copy()
    np.add.at(ref, idx_np, s)
    refs["index_add"] = ref
    ref = xs.copy()
    np.add.at(ref, (np.broadcast_to(sidx_np, (n, cols)), np.arange(cols)), s)
    refs["scatter_add"] = ref
    ref = np.zeros_like(xs)
    np.add.at(ref, idx_np, s)
    refs["getitem_backward"] = ref
    return ops, refs


@pytest.mark.parametrize("dtype", [st.float32, st.float64, st.bfloat16, st.float16],
                         ids=lambda d: d.name)
def test_deterministic_scatter_adds_repeat_and_match_float64(device, dtype):
    """Every floating dtype: the same bits on every run in deterministic mode, and the sums
    of a float64 ``np.add.at`` up to the dtype's rounding (outputs poisoned first). On CUDA
    16-bit sums accumulate in float32; the CPU's ``np.add.at`` rounds to the 16-bit dtype
    after every add, so there only float32/float64 are compared with the reference."""
    ops, refs = _scatter_add_ops(device, dtype)
    tol = {st.float32: 1e-4, st.float64: 1e-10, st.bfloat16: 3e-2, st.float16: 5e-3}[dtype]
    for name, call in ops.items():
        with st.deterministic(), poisoned(device):
            runs = [call() for _ in range(3)]
        for r in runs[1:]:
            same_bits(r, runs[0], f"{name} {dtype.name}")
        if device.type == "cpu" and dtype.itemsize == 2:
            continue
        scale = np.abs(refs[name]).max() + 1
        np.testing.assert_allclose(runs[0].numpy().astype(np.float64), refs[name],
                                   rtol=0, atol=tol * scale, err_msg=name)


def test_deterministic_scatter_adds_capture_in_jit(device):
    """The reproducible path never waits for the GPU: st.jit captures it, and replays give
    the eager bits."""
    if device.type != "cuda":
        pytest.skip("jit replays CUDA graphs; on the CPU it is the eager case")
    rng = np.random.default_rng(2)
    x = st.tensor(rng.standard_normal((7, 33)).astype(np.float32), device=device)
    idx = st.tensor(rng.integers(-7, 7, 20_000), device=device)
    src = st.tensor(rng.standard_normal((20_000, 33)).astype(np.float32), device=device)
    ids = st.tensor(rng.integers(0, 11, (64, 50)), device=device)
    w = st.tensor(rng.standard_normal((11, 24)).astype(np.float32), device=device)

    def index_add(x, idx, src):
        return st.index_add(x, 0, idx, src)

    def scatter_add(x, idx, src):
        return st.scatter_add(x, 0, (idx % 7).reshape(-1, 1).broadcast_to(20_000, 33) * 1, src)

    def getitem_backward(x, idx, src):
        return st.grad(lambda t: (t[idx] * src).sum())(x)

    def embedding_backward(w, ids):
        return st.grad(lambda t: (F.embedding(ids, t) ** 2).sum())(w)

    cases = [(index_add, (x, idx, src)), (scatter_add, (x, idx, src)),
             (getitem_backward, (x, idx, src)), (embedding_backward, (w, ids))]
    with st.deterministic():
        for fn, args in cases:
            eager = fn(*args)
            step = st.jit(fn)
            for _ in range(3):
                same_bits(step(*args), eager, f"{fn.__name__} (jit replay)")


def test_global_deterministic_mode_selects_reproducible_kmeans(device, monkeypatch):
    """st.set_deterministic(True) makes k-means reproducible even where the caller passes
    deterministic=False, and the xp fallback (a centroid row too wide for the fused kernel's
    shared memory) never uses an atomic add.at then."""
    seen, flags = [], []
    be = device.backend
    real_update = be.kmeans_update

    def spy(x, labels, k, old, deterministic=False):
        seen.append(bool(deterministic))
        return real_update(x, labels, k, old, deterministic)

    monkeypatch.setattr(be, "kmeans_update", spy)
    if hasattr(be, "_km_add_at"):
        real_add = be._km_add_at

        def add_spy(a, index, values, deterministic):
            flags.append(bool(deterministic))
            return real_add(a, index, values, deterministic)

        monkeypatch.setattr(be, "_km_add_at", add_spy)
    rng = np.random.default_rng(5)
    x = st.tensor((rng.standard_normal((3000, 1400)) * 100).astype(np.float32), device=device)
    labels = st.tensor(rng.integers(0, 9, 3000), device=device)
    old = st.zeros(9, 1400, device=device)
    with st.deterministic():
        runs = [st.cluster.update(x, labels, 9, old, deterministic=False) for _ in range(3)]
        res = [st.cluster.kmeans(x[:500, :40], 6, iters=3, seed=0, deterministic=False)
               for _ in range(2)]
    assert seen and all(seen), f"deterministic mode passed deterministic={seen}"
    if device.type == "cuda":
        assert flags and all(flags), f"the fallback scatter-add got deterministic={flags}"
    for r in runs[1:]:
        same_bits(r, runs[0], "kmeans update (wide rows)")
    same_bits(res[1].centroids, res[0].centroids, "kmeans centroids")
    cpu = st.cluster.update(st.tensor(x.numpy()), st.tensor(labels.numpy()), 9,
                            st.zeros(9, 1400))
    np.testing.assert_allclose(runs[0].numpy(), cpu.numpy(), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("name", ["index_add", "scatter_add", "getitem_backward",
                                  "take_along_axis_backward"])
def test_deterministic_mode_refuses_unreproducible_paths(device, name):
    """Until a backend wires a reproducible version, deterministic mode raises rather than
    give results that vary from run to run."""
    primitive, call = _dup_index_ops(device)[name]
    if runtime.is_reproducible(device.backend, primitive):
        with st.deterministic():
            call()  # reproducible here (the CPU; or wired): it just runs
        return
    with st.deterministic(), pytest.raises(RuntimeError, match="deterministic mode is on"):
        call()
    call()  # outside deterministic mode the fast path runs


def test_attention_backward_is_reproducible_in_deterministic_mode(device):
    """The fused CUDA backward adds dq atomically; deterministic mode differentiates the
    reference composition instead (reproducible, O(Sq * Sk) memory)."""
    shapes = [(2, 4, 128, 64)] * 3

    def fn(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, causal=True)

    with st.deterministic():
        runs = [_grads(fn, *shapes, device=device) for _ in range(3)]
    for r in runs[1:]:
        for i, (a, b) in enumerate(zip(runs[0], r)):
            same_bits(a, b, f"attention output {i}")
    fast = _grads(fn, *shapes, device=device)
    for a, b in zip(runs[0][1:], fast[1:]):  # the same gradient, up to rounding
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=2e-3, atol=2e-3)


def test_deterministic_mode_changes_no_result_on_the_cpu():
    cpu = st.Device("cpu")
    base = {n: _grads(DETERMINISTIC_OPS[n][0], *DETERMINISTIC_OPS[n][1:], device=cpu)
            for n in ("matmul", "conv2d", "attention_forward_dk_dv")}
    with st.deterministic():
        for n, ref in base.items():
            got = _grads(DETERMINISTIC_OPS[n][0], *DETERMINISTIC_OPS[n][1:], device=cpu)
            for a, b in zip(got, ref):
                same_bits(a, b, n)
        for name in ATOMIC_OPS:
            _dup_index_ops(cpu)[name][1]()


def test_matmul_algorithm_is_the_same_in_every_process():
    """cuBLASLt results are reproducible for one algorithm; scitensor autotunes by timing,
    which can pick another algorithm in another process. Deterministic mode pins it (the
    heuristic's first candidate, without in-place split-K): plain GEMMs of several shapes
    (one deep enough for split-K), bfloat16, a batch and the linear layer's epilogue GEMMs
    give the same bits in three processes."""
    if not st.cuda_status()[0]:
        pytest.skip(f"needs CUDA: {st.cuda_status()[1]}")
    be = st.Device("cuda").backend
    assert "matmul" in be.deterministic_primitives
    script = textwrap.dedent("""
        import hashlib, numpy as np, scitensor as st
        from scitensor.nn import functional as F
        st.set_deterministic(True)
        r = np.random.default_rng(0)
        h = hashlib.sha256()

        def t(*shape, dtype=st.float32, grad=False):
            return st.tensor(r.standard_normal(shape).astype(np.float32), dtype=dtype,
                             device="cuda", requires_grad=grad)

        for (m, k, n) in [(1024, 1536, 768), (64, 16384, 64), (33, 4097, 129)]:
            h.update((t(m, k) @ t(k, n)).numpy().tobytes())
        h.update((t(256, 2048, dtype=st.bfloat16) @ t(2048, 512, dtype=st.bfloat16))
                 .numpy().tobytes())
        h.update((t(8, 128, 512) @ t(8, 512, 96)).numpy().tobytes())
        x, w, b = t(512, 1024, grad=True), t(1024, 768, grad=True), t(768, grad=True)
        y = st.linear(x, w, b, activation="relu")
        y.backward(t(512, 768))
        for v in (y, x.grad, w.grad, b.grad):
            h.update(v.numpy().tobytes())
        print(h.hexdigest())
    """)
    outs = {subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           timeout=300, check=True).stdout.strip() for _ in range(3)}
    assert len(outs) == 1, f"matmul bits differ between processes: {outs}"


def test_matmul_plans_in_deterministic_mode_keep_the_first_candidate(monkeypatch):
    """cuBLASLt planning against a recording stand-in for the bindings (no GPU needed): a
    deterministic plan masks the in-place split-K reduction out, keeps the heuristic's first
    candidate and is never timed; the autotuned plan of the same geometry is separate."""
    pytest.importorskip("nvmath.bindings.cublasLt")
    from nvmath.bindings import cublasLt as real

    from scitensor.backends.cuda import cublaslt as cl

    prefs = []

    class FakeLt:
        MatmulDescAttribute = real.MatmulDescAttribute
        MatrixLayoutAttribute = real.MatrixLayoutAttribute
        MatmulPreferenceAttribute = real.MatmulPreferenceAttribute
        Epilogue = real.Epilogue
        matmul_heuristic_result_dtype = real.matmul_heuristic_result_dtype
        get_matmul_desc_attribute_dtype = staticmethod(real.get_matmul_desc_attribute_dtype)
        get_matrix_layout_attribute_dtype = staticmethod(
            real.get_matrix_layout_attribute_dtype)
        get_matmul_preference_attribute_dtype = staticmethod(
            real.get_matmul_preference_attribute_dtype)

        def __getattr__(self, name):  # create/destroy/set calls: accepted, not recorded
            return lambda *args: 1

        def matmul_preference_create(self):
            prefs.append({})
            return len(prefs)

        def matmul_preference_set_attribute(self, pref, attr, ptr, size):
            dtype = real.get_matmul_preference_attribute_dtype(attr)
            prefs[pref - 1][int(attr)] = int(np.frombuffer(ctypes.string_at(ptr, size),
                                                           dtype)[0])

        def matmul_algo_get_heuristic(self, handle, desc, la, lb, lc, ld, pref, want, out, cnt):
            res = np.zeros(want, dtype=real.matmul_heuristic_result_dtype)
            res["workspace_size"] = np.arange(want) + 100  # tells the candidates apart
            ctypes.memmove(out, res.ctypes.data, res.nbytes)
            ctypes.memmove(cnt, np.array([5], np.int32).ctypes.data, 4)

    lt = cl.CublasLt.__new__(cl.CublasLt)
    lt.lt, lt.plans, lt.handle = FakeLt(), {}, 1
    lt._alpha_beta = {np.float32: (0, 0), np.float64: (0, 0)}
    geo = (np.dtype(np.float32), False, 4096, 4096, 4096, 1, ("row", 4096, 4096, 4096, 0),
           ("row", 4096, 4096, 4096, 0), 256, 256, 256)
    fast, det = lt._plan(geo + (False,)), lt._plan(geo + (True,))
    mask = int(real.MatmulPreferenceAttribute.REDUCTION_SCHEME_MASK)
    assert mask not in prefs[0] and prefs[1][mask] == cl.DETERMINISTIC_REDUCTIONS
    allowed = int(real.ReductionScheme.MASK) & ~int(real.ReductionScheme.INPLACE)
    assert allowed == cl.DETERMINISTIC_REDUCTIONS
    assert det.tuned and not fast.tuned and len(lt.plans) == 2
    assert det.ws_size == 100 and len(det.candidates) == 5

    def no_timing(*args):
        raise AssertionError("a deterministic plan was timed")

    monkeypatch.setattr(cl.cupy.cuda, "get_current_stream", no_timing)
    det.choose(3)
    lt._autotune(det, no_timing)  # a deterministic plan is never timed: back to candidate 0
    assert det.ws_size == 100
