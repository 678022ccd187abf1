"""The CUDA linear-layer path on the host, against the CPU backend.

:class:`~scitensor.backends.cuda.linear.CudaLinearPrimitives` (the real host code: epilogue
choice, aux allocation and leading dimensions, operand order, the chain fusion, every
fallback) runs on NumPy arrays with ``kernels/linear.cu`` compiled by g++ (``host_cuda``)
and a stand-in for cuBLASLt that computes each epilogue in NumPy the way the cuBLASLt docs
describe it (the ReLU aux written as cuBLASLt's bit-mask) and checks the arguments cuBLASLt
requires (aux leading dimensions, bias length, contiguity). Outputs are poisoned (0xFF).
What only the GPU can check (that cuBLASLt agrees) is ``scripts/check_linear_gpu.py``.
Runs without a GPU; skipped without g++.
"""

from __future__ import annotations

import numpy as np
import pytest

import scitensor as st
from scitensor import dtypes as dt
from scitensor.backends.cuda import linear as cl
from scitensor.backends.xp_linear import LinearAux, gelu_tanh_grad

from . import host_cuda

pytestmark = pytest.mark.skipif(host_cuda.GXX is None, reason="g++ is not on PATH")

BF16 = dt.bfloat16.np
_CODE = {np.dtype(np.float16): 0, np.dtype(BF16): 1, np.dtype(np.float32): 2}
_FWD_IN_BIAS = {"bias", "relu_bias", "relu_aux_bias", "gelu_bias", "gelu_aux_bias"}


class FakeCublasLt:
    """``CublasLt.gemm`` in NumPy: the documented epilogue semantics (row-major view)."""

    def __init__(self, refuse=()):
        self.refuse = set(refuse)
        self.calls: list = []

    def gemm(self, a, b, out, stream, epilogue, bias=None, aux=None, aux_ld=0):
        self.calls.append(epilogue)
        if epilogue in self.refuse:
            return False
        m, n = out.shape
        assert a.shape[1] == b.shape[0] and (a.shape[0], b.shape[1]) == (m, n)
        assert a.dtype == b.dtype == out.dtype and out.flags.c_contiguous
        for arr in (a, b):  # cuBLASLt takes row- or column-contiguous operands
            assert arr.strides[-1] == arr.itemsize or arr.strides[0] == arr.itemsize
        acc = a.astype(np.float32) @ b.astype(np.float32)
        if bias is not None:
            assert bias.shape == (n,) and bias.dtype == out.dtype and bias.flags.c_contiguous
        if aux is not None:
            assert aux.flags.c_contiguous and aux.shape[0] == m and aux_ld >= n
            if "relu" in epilogue:
                assert aux.dtype == np.uint8 and aux_ld % 128 == 0
                assert aux.shape[1] == aux_ld // 8
            else:
                assert aux.dtype == out.dtype and aux_ld % 8 == 0 and aux.shape[1] == aux_ld
        if epilogue in _FWD_IN_BIAS:
            acc = acc + bias.astype(np.float32)
        if epilogue in ("relu", "relu_bias", "relu_aux", "relu_aux_bias"):
            if aux is not None:
                mask = np.zeros((m, aux_ld), bool)
                mask[:, :n] = acc > 0
                aux[...] = np.packbits(mask, axis=1, bitorder="little")
            acc = np.maximum(acc, 0)
        elif epilogue in ("gelu", "gelu_bias", "gelu_aux", "gelu_aux_bias"):
            if aux is not None:
                aux[:, :n] = acc.astype(out.dtype)
            acc = 0.5 * acc * (1 + np.tanh(np.float32(np.sqrt(2 / np.pi))
                                           * (acc + np.float32(0.044715) * acc**3)))
        elif epilogue in ("drelu", "drelu_bgrad"):
            assert a.shape[1] > 1, "cuBLASLt refuses k = 1 for DRELU"
            bits = np.unpackbits(aux, axis=1, bitorder="little")[:, :n].astype(bool)
            acc = np.where(bits, acc, np.float32(0))
        elif epilogue in ("dgelu", "dgelu_bgrad"):
            assert a.shape[1] > 1, "cuBLASLt refuses k = 1 for DGELU"
            acc = acc * gelu_tanh_grad(np, aux[:, :n].astype(np.float32))
        if epilogue in ("drelu_bgrad", "dgelu_bgrad"):
            bias[...] = acc.sum(0).astype(out.dtype)
        elif epilogue == "bgrada":
            bias[...] = b.astype(np.float32).sum(0).astype(out.dtype)
        out[...] = acc.astype(out.dtype)
        return True


def host_backend(lt):
    from scitensor.backends.cpu import CpuBackend

    class HostCudaLinear(cl.CudaLinearPrimitives, CpuBackend):
        sm_count = 1

        def __init__(self, device):
            super().__init__(device)
            self.kernels: dict = {}

        def _lin_blas(self):
            return lt

        def _lin_stream(self) -> int:
            return 0

        def _lin_new(self, shape, dtype):
            a = np.empty(shape, dtype)
            a.reshape(-1).view(np.uint8)[...] = 0xFF
            return a

        def _lin_ptr(self, a) -> int:
            return a.ctypes.data

        def _lin_kernel(self, name, dtype):
            key = (name, _CODE[np.dtype(dtype)])
            k = self.kernels.get(key)
            if k is None:
                lib = host_cuda.build("linear.cu", key[1])
                k = self.kernels[key] = host_cuda.HostKernel(lib, name, "pppqiii")
            return k

    return HostCudaLinear(st.Device("cpu"))


@pytest.fixture
def trace():
    t: list = []
    cl.set_trace(t)
    yield t
    cl.set_trace(None)


@pytest.fixture
def cpu():
    return st.Device("cpu").backend


def _close(a, b, dtype):
    tol = {np.dtype(np.float32): 2e-5, np.dtype(BF16): 2e-2, np.dtype(np.float16): 4e-3}
    r = tol[np.dtype(dtype)]
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape and np.all(np.isfinite(a)), (a.shape, b.shape)
    err = np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)
    assert err < r, err


def _data(m, k, n, dtype, seed=0):
    r = np.random.default_rng(seed)
    x = r.standard_normal((m, k)).astype(dtype)
    w = (r.standard_normal((k, n)) / np.sqrt(k)).astype(dtype)
    b = r.standard_normal(n).astype(dtype)
    g = r.standard_normal((m, n)).astype(dtype)
    return x, w, b, g


def _as_cpu_aux(aux):
    """The same saved state in the CPU backend's form (so both backwards use one mask)."""
    if aux.kind == "bits":
        mask = np.unpackbits(aux.data, axis=1, bitorder="little")[:, :aux.n].astype(bool)
        return LinearAux("mask", mask, aux.n, aux.n)
    return LinearAux("pre", np.ascontiguousarray(aux.data[:, :aux.n]), aux.n, aux.n)


SHAPES = [(5, 7, 3), (1, 9, 4), (33, 17, 9), (4, 129, 130), (16, 24, 40), (3, 16, 1)]
DTYPES = [np.float32, BF16]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("activation", [None, "relu", "gelu"], ids=str)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("need_aux", [True, False], ids=["aux", "noaux"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "bf16"])
def test_forward(cpu, trace, shape, activation, bias, need_aux, dtype):
    m, k, n = shape
    x, w, b, _ = _data(m, k, n, dtype)
    b = b if bias else None
    lt = FakeCublasLt()
    be = host_backend(lt)
    y, aux = be.linear_act(x, w, b, activation, need_aux)
    y_ref, aux_ref = cpu.linear_act(x, w, b, activation, need_aux)
    _close(y, y_ref, dtype)
    if activation is None and b is None:
        assert trace == ["fwd gemm default"] and lt.calls == []
        return
    epi = cl._FWD[(activation, b is not None, need_aux and activation is not None)]
    assert lt.calls == [epi] and trace == [f"fwd gemm {epi}"]
    if activation is None or not need_aux:
        assert aux is None
        return
    if activation == "relu":
        assert aux.kind == "bits" and aux.ld % 128 == 0 and aux.data.shape == (m, aux.ld // 8)
        bits = _as_cpu_aux(aux).data
        if dtype == np.float32:  # same float32 pre-activation: the same mask
            np.testing.assert_array_equal(bits, aux_ref.data)
    else:
        assert aux.kind == "pre" and aux.ld % 8 == 0 and aux.data.shape == (m, aux.ld)
        _close(aux.data[:, :n], aux_ref.data, dtype)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("activation", [None, "relu", "gelu"], ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "bf16"])
def test_backward(cpu, trace, shape, activation, dtype):
    m, k, n = shape
    x, w, b, g = _data(m, k, n, dtype)
    lt = FakeCublasLt()
    be = host_backend(lt)
    _, aux = be.linear_act(x, w, b, activation, True)
    trace.clear()
    got = be.linear_act_backward(g, x, w, aux, activation, (True, True, True))
    ref = cpu.linear_act_backward(g, x, w, None if aux is None else _as_cpu_aux(aux),
                                  activation, (True, True, True))
    for a, r in zip(got, ref):
        _close(a, r, dtype)
    fused_db = m > 1 and n > 1
    expected = ([] if activation is None else
                [f"dpre kernel {'drelu_bits' if activation == 'relu' else 'dgelu'}"])
    expected += ["dW gemm bgrada"] if fused_db else ["dW gemm default", "db reduce"]
    assert trace == [*expected, "dX gemm default"]


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_backward_kernel_vector_and_scalar_paths(cpu, activation):
    lt = FakeCublasLt()
    be = host_backend(lt)
    for m, n in [(3, 8), (2, 64), (5, 13), (7, 1), (130, 129)]:
        x, w, b, g = _data(m, 6, n, np.float32, seed=n)
        _, aux = be.linear_act(x, w, b, activation, True)
        got = be._linear_act_grad(g, aux, activation)
        ref = cpu._linear_act_grad(g, _as_cpu_aux(aux), activation)
        np.testing.assert_allclose(got, ref, rtol=2e-6, atol=1e-5)
        # a misaligned gradient (offset view) must take the scalar path and still be right
        g2 = np.empty(g.size + 1, np.float32)[1:].reshape(g.shape)
        g2[...] = g
        np.testing.assert_allclose(be._linear_act_grad(g2, aux, activation), ref, rtol=2e-6,
                                   atol=1e-5)


CHAIN_SHAPES = [(5, 7, 3, 4), (11, 16, 24, 8), (4, 129, 130, 5), (6, 9, 1, 3), (6, 3, 9, 1)]


@pytest.mark.parametrize("shape", CHAIN_SHAPES, ids=str)
@pytest.mark.parametrize("prev", ["relu", "gelu"])
@pytest.mark.parametrize("activation", [None, "relu", "gelu"], ids=str)
@pytest.mark.parametrize("need_prev_db", [True, False], ids=["prev_db", "no_prev_db"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "bf16"])
def test_chain(cpu, trace, shape, prev, activation, need_prev_db, dtype):
    """Layer 1 (k0 -> k, activation ``prev``) feeds layer 2 (k -> n, ``activation``)."""
    m, k0, k, n = shape
    x0, w0, b0, _ = _data(m, k0, k, dtype, seed=1)
    lt = FakeCublasLt()
    be = host_backend(lt)
    h, prev_aux = be.linear_act(x0, w0, b0, prev, True)
    _, w, b, g = _data(m, k, n, dtype, seed=2)
    _, aux = be.linear_act(h, w, b, activation, True)
    trace.clear()
    got = be.linear_act_backward_chain(g, h, w, aux, activation, (True, True, True), prev_aux,
                                       prev, need_prev_db)
    ref = cpu.linear_act_backward_chain(
        g, h, w, None if aux is None else _as_cpu_aux(aux), activation, (True, True, True),
        _as_cpu_aux(prev_aux), prev, need_prev_db)
    for a, r in zip(got, ref):
        if r is None:
            assert a is None
        else:
            _close(a, r, dtype)
    epi = ("drelu" if prev == "relu" else "dgelu") + ("_bgrad" if need_prev_db else "")
    if n > 1:
        assert trace[-1] == f"dX gemm {epi}"
    else:  # cuBLASLt refuses k = 1 for DRELU/DGELU: GEMM, then the kernel (and a reduce)
        assert "dX gemm default (chain fallback)" in trace
        assert epi not in lt.calls


@pytest.mark.parametrize("refuse", [("relu_aux_bias", "gelu_aux_bias"), ("bgrada",),
                                    ("drelu_bgrad", "dgelu_bgrad")], ids="+".join)
@pytest.mark.parametrize("prev", ["relu", "gelu"])
def test_fallbacks_when_cublaslt_refuses(cpu, trace, refuse, prev):
    m, k0, k, n = 9, 12, 20, 6
    x0, w0, b0, _ = _data(m, k0, k, np.float32, seed=3)
    lt = FakeCublasLt(refuse)
    be = host_backend(lt)
    h, prev_aux = be.linear_act(x0, w0, b0, prev, True)
    h_ref, prev_aux_ref = cpu.linear_act(x0, w0, b0, prev, True)
    _close(h, h_ref, np.float32)
    _, w, b, g = _data(m, k, n, np.float32, seed=4)
    _, aux = be.linear_act(h, w, b, "relu", True)
    _, aux_ref = cpu.linear_act(h_ref, w, b, "relu", True)
    got = be.linear_act_backward_chain(g, h, w, aux, "relu", (True, True, True), prev_aux,
                                       prev, True)
    ref = cpu.linear_act_backward_chain(g, h_ref, w, aux_ref, "relu", (True, True, True),
                                        prev_aux_ref, prev, True)
    for a, r in zip(got, ref):
        _close(a, r, np.float32)
    assert any("fallback" in t or "reduce" in t for t in trace), trace


def test_switches_turn_fusion_off(cpu, trace, monkeypatch):
    monkeypatch.setitem(cl.FUSE, "forward", False)
    monkeypatch.setitem(cl.FUSE, "bgrad", False)
    monkeypatch.setitem(cl.FUSE, "chain", False)
    lt = FakeCublasLt()
    be = host_backend(lt)
    x0, w0, b0, _ = _data(6, 5, 7, np.float32)
    h, prev_aux = be.linear_act(x0, w0, b0, "relu", True)
    assert prev_aux.kind == "mask" and lt.calls == []
    _, w, b, g = _data(6, 7, 4, np.float32, seed=5)
    _, aux = be.linear_act(h, w, b, "gelu", True)
    got = be.linear_act_backward_chain(g, h, w, aux, "gelu", (True, True, True), prev_aux,
                                       "relu", True)
    ref = cpu.linear_act_backward_chain(g, h, w, aux, "gelu", (True, True, True), prev_aux,
                                        "relu", True)
    for a, r in zip(got, ref):
        _close(a, r, np.float32)
    assert lt.calls == [] and "fwd fallback" in trace


def test_transposed_input_is_retried_row_major(cpu, trace):
    lt = FakeCublasLt()
    x, w, b, _ = _data(8, 6, 5, np.float32)
    be = host_backend(lt)
    xt = np.ascontiguousarray(x.T).T  # column-major
    lt.refuse = {"relu_aux_bias"}
    orig = lt.gemm

    def gemm(a, *args, **kwargs):  # refuse only the column-major input
        lt.refuse = {"relu_aux_bias"} if a.strides[0] == a.itemsize else set()
        return orig(a, *args, **kwargs)

    lt.gemm = gemm
    y, aux = be.linear_act(xt, w, b, "relu", True)
    _close(y, cpu.linear_act(x, w, b, "relu", False)[0], np.float32)
    assert lt.calls == ["relu_aux_bias", "relu_aux_bias"] and aux.kind == "bits"
