"""GPU faults: out-of-memory, errors reported at the op that caused them, jit after a failure.

What can be provoked safely is tested in this process: out-of-memory (huge allocations), a
queued-operation failure (a simulated stream error, injected at the synchronization point or
in a device-to-host copy), and failures while ``st.jit`` captures. A real device fault (a
kernel that traps) poisons the CUDA context of its process, so that test runs in a subprocess
and only when asked for with ``SCITENSOR_TEST_DEVICE_FAULTS=1``.

Everything except ``test_ops_carry_their_own_names`` and
``test_report_names_the_last_op_enqueued`` needs a usable CUDA device.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import scitensor as st
from scitensor.nn import functional as F

needs_cuda = pytest.mark.skipif(not st.cuda_status()[0],
                                reason=f"CUDA not usable: {st.cuda_status()[1]}")


@pytest.fixture
def cuda():
    if not st.cuda_status()[0]:
        pytest.skip(f"CUDA not usable: {st.cuda_status()[1]}")
    dev = st.Device("cuda")
    dev.backend.synchronize()
    return dev


def _too_many_bytes():
    """More bytes than the GPU has in all (and a multiple of 4)."""
    import cupy

    _, total = cupy.cuda.runtime.memGetInfo()
    return (2 * total + 4095) // 4096 * 4096


# ---- out of memory -----------------------------------------------------------------------

def test_oom_names_op_and_size_frees_its_memory_and_the_next_op_succeeds(cuda):
    from scitensor.backends.cuda.errors import CudaOutOfMemoryError

    x = st.arange(1000, dtype=st.float32, device=cuda)
    expected = np.arange(1000, dtype=np.float32)
    pool = cuda.backend.pool
    cuda.backend.synchronize()
    # earlier tests' unreachable arrays (held in reference cycles) would be freed by the OOM
    # recovery's garbage collection and make the pool shrink: collect them first
    gc.collect()
    used = pool.used_bytes()
    nbytes = _too_many_bytes()
    with pytest.raises(CudaOutOfMemoryError) as info:
        st.empty(nbytes // 4, dtype=st.float32, device=cuda)
    e = info.value
    assert isinstance(e, MemoryError)
    assert e.requested == nbytes and e.device == "cuda:0"
    assert "empty" in str(e) and str(nbytes) in str(e) and "cuda:0" in str(e)
    cuda.backend.synchronize()
    # (other threads' or earlier tests' arrays may still be released meanwhile: never more)
    assert pool.used_bytes() <= used, "the failed allocation kept memory in the pool"
    np.testing.assert_array_equal(x.numpy(), expected)  # existing tensors intact
    np.testing.assert_array_equal((x * 2 + 1).numpy(), expected * 2 + 1)


def test_oom_inside_an_op_names_the_primitive(cuda):
    from scitensor.backends.cuda.errors import CudaOutOfMemoryError

    n = _too_many_bytes() // 4
    view = st.zeros(1, device=cuda).broadcast_to(n)  # a view: nothing allocated yet
    with pytest.raises(CudaOutOfMemoryError) as info:
        view + 1.0  # the output needs n floats
    assert "add" in str(info.value) and "cuda:0" in str(info.value)
    y = st.ones(4, device=cuda) + 1.0
    assert y.tolist() == [2.0] * 4


def test_oom_while_jit_captures_raises_and_later_calls_work(cuda):
    n_big = _too_many_bytes() // 4
    state = {"n": 8}

    @st.jit
    def step(x):
        # the size comes from Python state outside the signature: the capture (second call)
        # asks for too much memory
        return x.sum() + st.zeros(state["n"], device=cuda).sum()

    x = st.ones(4, device=cuda)
    assert step(x).item() == 4.0  # eager warm-up
    state["n"] = n_big
    with pytest.raises((MemoryError, RuntimeError)) as info:
        step(x)
    assert "memory" in str(info.value).lower()
    state["n"] = 8
    assert step(x).item() == 4.0  # this signature now runs eagerly: a correct result
    assert (st.ones(3, device=cuda) * 2).tolist() == [2.0] * 3  # the stream is usable


# ---- errors pinned to their op -----------------------------------------------------------

class _FailingStream:
    """Wraps the backend's stream; ``synchronize`` raises a CUDA error once armed (as a
    failed kernel's error surfaces at the next synchronization)."""

    def __init__(self, real):
        self.real = real
        self.armed = False

    def synchronize(self):
        if self.armed:
            import cupy

            self.armed = False
            raise cupy.cuda.runtime.CUDARuntimeError(700)  # cudaErrorIllegalAddress
        return self.real.synchronize()

    def __getattr__(self, name):
        return getattr(self.real, name)


@pytest.fixture
def failing_stream(cuda, monkeypatch):
    from scitensor.backends.cuda import backend as cuda_backend

    real_get = cuda_backend._get_stream
    holder = {}

    def get_stream(index=None):
        s = real_get(index)
        if "f" not in holder:
            holder["f"] = _FailingStream(s)
        holder["f"].real = s
        return holder["f"]

    monkeypatch.setattr(cuda_backend, "_get_stream", get_stream)
    stream = get_stream(cuda.index)
    yield stream
    stream.armed = False


# each a single op (the error must come from that op's own synchronization)
OPS = [
    ("add", lambda x: x + 1), ("exp", lambda x: st.exp(x)), ("matmul", lambda x: x @ x),
    ("sum", lambda x: x.sum(axis=0)), ("softmax", lambda x: st.softmax(x, -1)),
    ("concatenate", lambda x: st.concatenate([x, x])), ("getitem", lambda x: x[0]),
    ("eq", lambda x: x == x), ("max", lambda x: x.max()), ("flip", lambda x: x.flip(0)),
]


@pytest.mark.parametrize("name, op", OPS, ids=[o[0] for o in OPS])
def test_sync_mode_reports_an_error_at_the_op_that_caused_it(failing_stream, cuda, name, op):
    from scitensor.backends.cuda.errors import CudaError

    x = st.ones(3, 3, device=cuda)
    with st.sync_mode(True):
        failing_stream.armed = True
        with pytest.raises(CudaError) as info:
            op(x)
    msg = str(info.value)
    assert f"after op {name!r}" in msg and "cuda:0" in msg, msg
    assert (x + 1).sum().item() == 18.0  # the simulated fault is gone: work goes on


def test_async_mode_reports_the_error_at_the_next_synchronization(failing_stream, cuda):
    from scitensor.backends.cuda.errors import CudaError

    x = st.ones(3, device=cuda)
    y = st.exp(x) * 2  # queued; the (simulated) failure surfaces when the host waits
    failing_stream.armed = True
    with pytest.raises(CudaError) as info:
        st.gpu.synchronize(cuda)
    msg = str(info.value)
    assert "cuda:0" in msg and "set_sync_mode(True)" in msg, msg
    assert "the last op enqueued on cuda:0 before it was 'mul'" in msg, msg
    assert y.numpy().shape == (3,)


# ops that queue kernels (a view such as flip queues none: the op before it is the nearest)
ASYNC_OPS = [o for o in OPS if o[0] not in ("flip", "concatenate")] + [
    ("conv2d", lambda x: F.conv2d(x.reshape(1, 1, 3, 3), x.reshape(1, 1, 3, 3))),
    ("embedding", lambda x: F.embedding(st.tensor([2, 0], device=x.device), x)),
]


@pytest.mark.parametrize("name, op", ASYNC_OPS, ids=[o[0] for o in ASYNC_OPS])
def test_async_mode_names_the_last_op_enqueued(failing_stream, cuda, name, op):
    """Asynchronous mode: the error surfaces at a later wait and names the nearest op, the last
    one enqueued on the device (each op records itself; ops finished by helpers too)."""
    from scitensor.backends.cuda.errors import CudaError

    x = st.ones(3, 3, device=cuda)
    st.exp(x)  # an earlier op: the report must name the last one
    op(x)
    failing_stream.armed = True
    with pytest.raises(CudaError) as info:
        st.gpu.synchronize(cuda)
    msg = str(info.value)
    assert f"before it was {name!r}" in msg and "set_sync_mode(True)" in msg, msg
    assert (x + 1).sum().item() == 18.0


class _FailingCopy:
    """Stands in for a device array whose device-to-host copy meets a CUDA error (the copy
    waits for the queued work, so a failed kernel's error can surface there)."""

    def __init__(self, real, status=700):  # 700: cudaErrorIllegalAddress
        self.real = real
        self.status = status

    def get(self, *args, **kwargs):
        import cupy

        raise cupy.cuda.runtime.CUDARuntimeError(self.status)

    def view(self, *args, **kwargs):  # the bfloat16 path copies a uint16 view
        return _FailingCopy(self.real.view(*args, **kwargs), self.status)

    def __getattr__(self, name):
        return getattr(self.real, name)


@pytest.mark.parametrize("dtype", [st.float32, st.bfloat16], ids=lambda d: d.name)
def test_a_failed_copy_to_the_host_is_reported_as_synchronize_reports_it(failing_stream, cuda,
                                                                        dtype):
    """numpy(), item() and tolist() copy through the backend's to_numpy: a CUDA runtime error
    there is a CudaError with synchronize's message, not CuPy's bare CUDARuntimeError."""
    import cupy

    from scitensor.backends.cuda.errors import CudaError

    x = st.ones(1, dtype=dtype, device=cuda)
    st.exp(x)
    failing_stream.armed = True
    with pytest.raises(CudaError) as sync_info:
        cuda.backend.synchronize()
    for read in (lambda t: t.numpy(), lambda t: t.item(), lambda t: t.tolist()):
        t = st.exp(x)  # the same last op as above
        t.data = _FailingCopy(t.data)
        with pytest.raises(CudaError) as info:
            read(t)
        assert str(info.value) == str(sync_info.value)
        assert isinstance(info.value.__cause__, cupy.cuda.runtime.CUDARuntimeError)
    assert st.exp(x).tolist() == pytest.approx([np.e], rel=1e-2)  # reads work again


def test_out_of_memory_in_a_copy_to_the_host_stays_an_oom_error(cuda):
    from scitensor.backends.cuda.errors import CudaError, CudaOutOfMemoryError

    t = st.ones(2, device=cuda)
    t.data = _FailingCopy(t.data, status=2)  # cudaErrorMemoryAllocation
    with pytest.raises(CudaOutOfMemoryError) as info:
        t.numpy()
    assert not isinstance(info.value, CudaError) and "to_numpy" in str(info.value)


def test_report_names_the_last_op_enqueued(monkeypatch):
    """The recording itself, without a GPU: sync_if_requested notes the dispatching function
    of each op on a GPU device (the op behind a '_helper' that finishes it), per device, and
    the asynchronous report names it."""
    from scitensor.backends.cuda.errors import CudaError, queued_failure
    from scitensor.ops import _core

    class FakeGpu:
        type = "cuda"

        def __init__(self, index):
            self.index = index

        def __str__(self):
            return f"cuda:{self.index}"

    monkeypatch.setattr(_core, "LAST_OP", {})
    gpu0, gpu1 = FakeGpu(0), FakeGpu(1)

    def softplus(d):
        _core.sync_if_requested(d)

    def _finish(d):
        _core.sync_if_requested(d)

    def cumsum(d):
        _finish(d)

    failure = RuntimeError("an illegal memory access was encountered")
    e = queued_failure(gpu0, failure)
    assert isinstance(e, CudaError) and "no scitensor op had been enqueued on cuda:0" in str(e)
    softplus(gpu0)
    cumsum(gpu1)
    st.exp(st.ones(2))  # a CPU op records nothing
    assert set(_core.LAST_OP) == {0, 1}
    for gpu, name in ((gpu0, "softplus"), (gpu1, "cumsum")):
        msg = str(queued_failure(gpu, failure))
        assert f"the last op enqueued on {gpu} before it was {name!r}" in msg, msg
        assert "illegal memory access" in msg and "set_sync_mode(True)" in msg, msg
    cumsum(gpu0)
    assert "before it was 'cumsum'" in str(queued_failure(gpu0, failure))


def test_ops_carry_their_own_names():
    """Sync mode names the failing op from the calling frames: every op's code object must
    carry the op's own name (factory-made ops would otherwise all be called 'op')."""
    for name in ("exp", "log", "relu", "eq", "lt", "logical_and", "max", "min", "argmax",
                 "argmin", "sigmoid", "isnan", "logical_not"):
        assert getattr(st, name).__code__.co_name == name, name


@pytest.mark.skipif(os.environ.get("SCITENSOR_TEST_DEVICE_FAULTS") != "1",
                    reason="a real device fault poisons its CUDA context: run with "
                           "SCITENSOR_TEST_DEVICE_FAULTS=1 (in a subprocess)")
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_real_kernel_fault_is_reported(cuda, mode):
    """A kernel that traps inside st.exp, in a subprocess: sync mode names 'exp'; async mode
    raises at the next synchronization, names 'exp' as the last op enqueued and says how to
    find the op exactly."""
    script = textwrap.dedent(f"""
        import cupy, scitensor as st
        from scitensor.backends.cuda.errors import CudaError
        dev = st.Device("cuda")
        be = dev.backend
        trap = cupy.RawKernel('extern "C" __global__ void trap_now(float* p) {{ __trap(); }}',
                              "trap_now")
        real_exp = type(be).exp
        def faulty_exp(self, a):
            out = real_exp(self, a)
            trap((1,), (1,), (out,))
            return out
        type(be).exp = faulty_exp
        x = st.ones(4, device=dev)
        try:
            if "{mode}" == "sync":
                with st.sync_mode(True):
                    st.exp(x)
            else:
                st.exp(x)
                be.synchronize()
        except CudaError as e:
            print("CAUGHT", e)
        else:
            print("NO ERROR")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    out = proc.stdout + proc.stderr
    assert "CAUGHT" in out, out
    if mode == "sync":
        assert "after op 'exp'" in out, out
    else:
        assert "the last op enqueued on cuda:0 before it was 'exp'" in out, out
        assert "set_sync_mode(True)" in out, out


# ---- jit after failures --------------------------------------------------------------------

def test_host_sync_in_capture_raises_and_later_calls_run_eagerly(cuda):
    @st.jit
    def f(x):
        return x * float((x > 0).all())  # a host read: allowed eagerly, not in a capture

    x = st.ones(3, device=cuda)
    assert f(x).tolist() == [1.0] * 3
    with pytest.raises(st.HostSyncInCaptureError):
        f(x)
    assert f(x).tolist() == [1.0] * 3  # eager from now on for this signature
    assert f(-x).tolist() == [-0.0] * 3
    assert (st.ones(2, device=cuda) + 1).tolist() == [2.0, 2.0]  # stream not stuck capturing


def test_exception_during_capture_leaves_a_working_eager_path(cuda):
    calls = {"n": 0}

    @st.jit
    def f(x):
        calls["n"] += 1
        if calls["n"] == 2:
            raise ValueError("boom during capture")
        return (x * 3).sum()

    x = st.arange(4, dtype=st.float32, device=cuda)
    assert f(x).item() == 18.0
    with pytest.raises(RuntimeError, match="boom during capture") as info:
        f(x)
    assert isinstance(info.value.__cause__, ValueError)
    for k in range(3):  # eager, correct, every time
        y = st.full((4,), float(k), device=cuda)
        assert f(y).item() == 12.0 * k
    assert f.stats["replays"] == 0


def test_exception_in_the_first_call_does_not_poison_the_cache(cuda):
    """A signature whose first (eager) call raised is not marked warm: the next calls run
    eagerly, then capture, then replay, all correct."""
    state = {"fail": True}

    @st.jit
    def f(x):
        if state["fail"]:
            raise KeyError("user error")
        return x @ x.T

    x = st.randn(3, 4, device=cuda)
    with pytest.raises(KeyError):
        f(x)
    state["fail"] = False
    ref = (x @ x.T).numpy()
    for _ in range(4):  # eager, capture, replay, replay
        np.testing.assert_allclose(f(x).numpy(), ref, rtol=1e-5, atol=1e-6)
    assert f.stats == {"eager": 2, "captures": 1, "replays": 2}, f.stats


def test_replay_after_a_failed_call_gives_fresh_correct_results(cuda):
    """A captured step keeps replaying correctly after an unrelated call raised in between:
    never stale or garbage outputs."""
    w = st.randn(4, 4, device=cuda)

    @st.jit
    def f(x):
        return (x @ w).relu()

    xs = [st.randn(2, 4, device=cuda) for _ in range(5)]
    for i, xi in enumerate(xs):
        if i == 2:
            with pytest.raises(ValueError):
                f(st.randn(2, 5, device=cuda))  # a new signature that fails in its eager run
        np.testing.assert_allclose(f(xi).numpy(), (xi @ w).relu().numpy(), rtol=1e-5,
                                   atol=1e-6)
    assert f.stats["replays"] >= 2


def test_jit_signature_includes_deterministic_mode(cuda):
    @st.jit
    def f(x):
        return x * 2

    x = st.ones(2, device=cuda)
    f(x), f(x)
    with st.deterministic():
        assert f(x).tolist() == [2.0, 2.0]
    assert len(f.cache) == 2  # a graph captured under one mode is not replayed under the other
