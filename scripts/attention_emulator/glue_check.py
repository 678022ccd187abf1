"""Run ``backends/cuda/attention.py`` unchanged on the host emulator (no GPU needed).

The module's NVRTC loader and driver launch are redirected: ``load_module`` builds
``emu_lib.cpp`` with the same -D options (one shared library per module), and
``launchKernel`` calls it with the very parameter array the driver would get. Arrays are NumPy
arrays behind a small CuPy-like wrapper. This checks the Python glue (argument order, grid and
shared-memory sizes, tile configs, GQA/causal plumbing) together with the kernels, against a
float64 reference, on dense operands and on the strided views nn.MultiHeadAttention passes
(q, k, v heads of one packed projection; output and gradients written into slices of larger
buffers, whose other elements must keep their poison, with no copies). Example:

    python scripts/attention_emulator/glue_check.py
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import pathlib
import subprocess
import sys
import types

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(HERE))

from run import BUILD, KERNELS, reference  # noqa: E402

import scitensor as st  # noqa: E402
from scitensor.backends.cuda import attention as ca  # noqa: E402
from scitensor.backends.xp_attention import AttentionPrimitives  # noqa: E402


class FakeArray:
    """The slice of the CuPy ndarray API the glue uses, over a NumPy array (or view)."""

    def __init__(self, a: np.ndarray):
        self.a = a
        self.shape, self.dtype, self.size, self.strides = a.shape, a.dtype, a.size, a.strides
        self.flags = types.SimpleNamespace(c_contiguous=a.flags.c_contiguous)
        self.data = types.SimpleNamespace(ptr=a.ctypes.data)


def poisoned(shape, dtype) -> FakeArray:
    a = np.empty(shape, dtype)
    a.view(np.uint8)[...] = 0xFF
    return FakeArray(a)


_libs: dict = {}
_handles: dict = {}


def _lib(options: tuple[str, ...]):
    key = hashlib.sha256(" ".join(options).encode()
                         + (HERE / "emu_lib.cpp").read_bytes()
                         + (HERE / "emu_runtime.h").read_bytes()
                         + b"".join(p.read_bytes() for p in sorted(KERNELS.glob("attention*")))
                         ).hexdigest()[:16]
    if key not in _libs:
        so = BUILD / f"emu_lib-{key}.so"
        if not so.exists():
            BUILD.mkdir(parents=True, exist_ok=True)
            tmp = so.with_suffix(f".{os.getpid()}.tmp")  # parallel test workers build too
            subprocess.run(["g++", "-std=c++20", "-O1", "-shared", "-fPIC", "-pthread", *options,
                            f"-I{KERNELS}", f"-I{HERE}", str(HERE / "emu_lib.cpp"), "-o", str(tmp)],
                           check=True)
            tmp.replace(so)
        lib = ctypes.CDLL(str(so))
        lib.emu_launch_kernel.argtypes = [ctypes.c_char_p, *[ctypes.c_int] * 5,
                                          ctypes.c_void_p]
        _libs[key] = lib
    return _libs[key]


class FakeModule:
    def __init__(self, filename, options):
        self.name = filename
        self.options = tuple(options)

    def function(self, name, signature):
        ptr = len(_handles) + 1
        _handles[ptr] = (self.options, name)
        return types.SimpleNamespace(name=f"{self.name}:{name}", ptr=ptr, signature=signature)


def fake_load_module(filename, device_id, arch=None, options=(), arch_specific=False):
    assert not arch_specific, "the emulator has no wgmma (sm_90a) kernels"
    return FakeModule(filename, options)


class FakeDriver:
    @staticmethod
    def funcSetAttribute(ptr, attr, value):
        assert attr == 8 and value <= 227 * 1024, (attr, value)

    @staticmethod
    def launchKernel(ptr, gx, gy, gz, bx, by, bz, smem, stream, params, extra):
        assert (by, bz, extra) == (1, 1, 0)
        options, name = _handles[ptr]
        rc = _lib(options).emu_launch_kernel(name.encode(), gx, gy, gz, bx, smem, params)
        assert rc == 0, f"{name}: emulator refused the launch ({rc})"


class FakeBackend(ca.CudaAttentionPrimitives, AttentionPrimitives):
    # sm_80: the mma.sync kernels everywhere (the sm_90 wgmma forward has no host emulation)
    index, arch, sm_count = 0, 80, 2
    copies = 0  # ascontiguous / copy / setitem calls: the strided path should need none

    def empty(self, shape, dtype):
        return poisoned(shape, dtype.np)

    def ascontiguous(self, x):
        self.copies += 1
        return FakeArray(np.ascontiguousarray(x.a))

    def copy(self, x):
        self.copies += 1
        return FakeArray(x.a.copy())

    def setitem(self, a, key, value):
        self.copies += 1
        a.a[key] = value.a


def operands(kind, layout, host, b, h, hkv, sq, sk, d):
    """q, k, v, g (FakeArrays) holding ``host`` and the poisoned output targets: ``out`` and
    ``grads`` (None: let the backend allocate) plus ``gaps``: (buffer, mask of the elements
    that no output view covers), for the poison check.

    layout ``dense``: separate (B, H, S, D) arrays. ``packed`` (self-attention): q, k, v are
    views of one (B, S, H + 2 Hkv + 1, D) buffer (a spare head), the output and the gradients
    land in views of (B, S, H + 1, D) and (B, S, N + 1, D) buffers, as nn.MultiHeadAttention
    passes them. ``odd``: like packed, but the output's rows are one element longer than D, so
    no stride is a multiple of 16 bytes: the backend must compute densely and copy into it.
    ``chunks``: packed, launched one batch at a time (as for more than 65535 batches).
    """
    dtype = host[0].dtype
    if layout == "dense":
        return [FakeArray(x) for x in host], None, None, []
    assert sq == sk
    n = h + 2 * hkv
    qkv = np.full((b, sq, n + 1, d), np.nan, dtype)
    views = []
    for x, (h0, h1) in zip(host[:3], ((0, h), (h, h + hkv), (h + hkv, n))):
        v = qkv[:, :, h0:h1].transpose(0, 2, 1, 3)
        v[...] = x
        views.append(FakeArray(v))
    gy = np.ascontiguousarray(host[3].transpose(0, 2, 1, 3))  # the incoming (B, S, H, D) grad
    views.append(FakeArray(gy.transpose(0, 2, 1, 3)))
    extra = 1 if layout == "odd" else 0
    y = poisoned((b, sq, h + 1, d + extra), dtype).a
    out = FakeArray(y[:, :, 1:, :d].transpose(0, 2, 1, 3))
    ymask = np.ones(y.shape, bool)
    ymask[:, :, 1:, :d] = False
    gbuf = poisoned(qkv.shape, dtype).a
    grads = [FakeArray(gbuf[:, :, h0:h1].transpose(0, 2, 1, 3))
             for h0, h1 in ((0, h), (h, h + hkv), (h + hkv, n))]
    gmask = np.zeros(gbuf.shape, bool)
    gmask[:, :, n:] = True
    return views, out, grads, [(y, ymask), (gbuf, gmask)]


def main() -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="the bf16/f16 D64 cases: dense, packed views, unaligned output, "
                         "batch chunks")
    quick = ap.parse_args().quick
    ca.load_module = fake_load_module
    ca._driver = FakeDriver
    ca._stream = lambda: 0
    ca.cupy = types.SimpleNamespace(empty=poisoned)
    be = FakeBackend()
    tol = {"bf16": 3e-2, "f16": 6e-3, "f32": 1e-5, "tf32": 3e-3}
    np_dt = {"bf16": st.bfloat16.np, "f16": np.float16, "f32": np.float32, "tf32": np.float32}
    failed = 0
    cases = [("bf16", 64, 1, 2, 1, 150, 70, True, "dense"),
             ("bf16", 128, 1, 2, 2, 40, 130, False, "dense"),
             ("f16", 32, 2, 2, 1, 33, 33, True, "dense"),
             ("f32", 64, 1, 2, 1, 70, 45, True, "dense"),
             ("tf32", 128, 1, 1, 1, 20, 37, False, "dense"),
             ("bf16", 64, 2, 3, 1, 45, 45, True, "packed"),
             ("bf16", 128, 1, 2, 2, 40, 40, False, "packed"),
             ("f32", 32, 2, 2, 1, 21, 21, True, "packed"),
             ("f16", 64, 1, 2, 1, 33, 33, True, "odd"),
             ("bf16", 64, 3, 2, 1, 40, 40, False, "chunks")]
    if quick:
        cases = [c for c in cases if c[:2] in (("bf16", 64), ("f16", 64))]  # + chunks
    for kind, d, b, h, hkv, sq, sk, causal, lay in cases:
        st.set_matmul_precision("tf32" if kind == "tf32" else "highest")
        r = np.random.default_rng(d + sq)
        host = [r.standard_normal(s).astype(np_dt[kind]) for s in
                ((b, h, sq, d), (b, hkv, sk, d), (b, hkv, sk, d), (b, h, sq, d))]
        scale = 1 / np.sqrt(d)
        (q, k, v, g), out_to, grads_to, gaps = operands(kind, lay, host, b, h, hkv, sq, sk, d)
        be.copies = 0
        ca._GRID_Z = 1 if lay == "chunks" else 65535
        out, lse = be.attention_forward(q, k, v, causal, scale, out=out_to)
        dq, dk, dv = be.attention_backward(g, q, k, v, out, lse, causal, scale, grads_to)
        ca._GRID_Z = 65535
        if out_to is not None:
            assert out is out_to and [dq, dk, dv] == grads_to, "results not in the given arrays"
        ref = reference(*host, causal, scale)
        errs = {}
        for n, got, want in zip(("out", "dq", "dk", "dv"), (out, dq, dk, dv), ref):
            x = got.a.astype(np.float64)
            floor = max(np.linalg.norm(want), 1e-2 * np.sqrt(x.size))
            errs[n] = (float(np.linalg.norm(x - want) / floor) if np.isfinite(x).all()
                       else np.inf)
        written = sum(int((buf.view(np.uint8).reshape(*buf.shape, -1)[mask] != 0xFF).any(-1).sum())
                      for buf, mask in gaps)
        copied = be.copies if lay != "odd" else 0  # "odd" must copy
        bad = (any(e > tol[kind] for e in errs.values()) or np.isnan(lse.a).any()
               or written > 0 or copied > 0)
        failed += bad
        print(f"glue {kind:4} D{d:<3} {lay:6} B{b} H{h}/{hkv} Sq{sq} Sk{sk} causal={causal} "
              + " ".join(f"{n} {e:.1e}" for n, e in errs.items())
              + (f" gaps written {written}" if written else "")
              + (f" {copied} copies" if copied else "") + (" FAIL" if bad else ""),
              flush=True)
    st.set_matmul_precision("highest")
    print("glue_check:", "all passed" if not failed else f"{failed} FAILED")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
