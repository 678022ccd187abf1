"""Run ``backends/cuda/attention.py`` unchanged on the host emulator (no GPU needed).

The module's NVRTC loader and driver launch are redirected: ``load_module`` builds
``emu_lib.cpp`` with the same -D options (one shared library per module), and
``launchKernel`` calls it with the very parameter array the driver would get. Arrays are NumPy
arrays behind a small CuPy-like wrapper. This checks the Python glue (argument order, grid and
shared-memory sizes, tile configs, GQA/causal plumbing) together with the kernels, against a
float64 reference. Example:

    python scripts/attention_emulator/glue_check.py
"""

from __future__ import annotations

import ctypes
import hashlib
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
    """The slice of the CuPy ndarray API the glue uses, over a NumPy array."""

    def __init__(self, a: np.ndarray):
        self.a = a
        self.shape, self.dtype, self.size = a.shape, a.dtype, a.size
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
            subprocess.run(["g++", "-std=c++20", "-O1", "-shared", "-fPIC", "-pthread", *options,
                            f"-I{KERNELS}", f"-I{HERE}", str(HERE / "emu_lib.cpp"), "-o", str(so)],
                           check=True)
        lib = ctypes.CDLL(str(so))
        lib.emu_launch_kernel.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_int,
                                          ctypes.c_int, ctypes.c_void_p]
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


def fake_load_module(filename, device_id, arch=None, options=()):
    return FakeModule(filename, options)


class FakeDriver:
    @staticmethod
    def funcSetAttribute(ptr, attr, value):
        assert attr == 8 and value <= 227 * 1024, (attr, value)

    @staticmethod
    def launchKernel(ptr, gx, gy, gz, bx, by, bz, smem, stream, params, extra):
        assert (gy, gz, by, bz, extra) == (1, 1, 1, 1, 0)
        options, name = _handles[ptr]
        rc = _lib(options).emu_launch_kernel(name.encode(), gx, bx, smem, params)
        assert rc == 0, f"{name}: emulator refused the launch ({rc})"


class FakeBackend(ca.CudaAttentionPrimitives, AttentionPrimitives):
    index, arch, sm_count = 0, 90, 2

    def empty(self, shape, dtype):
        return poisoned(shape, dtype.np)

    def ascontiguous(self, x):
        return FakeArray(np.ascontiguousarray(x.a))


def main() -> int:
    ca.load_module = fake_load_module
    ca._driver = FakeDriver
    ca._stream = lambda: 0
    ca.cupy = types.SimpleNamespace(empty=poisoned)
    be = FakeBackend()
    tol = {"bf16": 3e-2, "f16": 6e-3, "f32": 1e-5, "tf32": 3e-3}
    np_dt = {"bf16": st.bfloat16.np, "f16": np.float16, "f32": np.float32, "tf32": np.float32}
    failed = 0
    cases = [("bf16", 64, 1, 2, 1, 150, 70, True), ("bf16", 128, 1, 2, 2, 40, 130, False),
             ("f16", 32, 2, 2, 1, 33, 33, True), ("f32", 64, 1, 2, 1, 70, 45, True),
             ("tf32", 128, 1, 1, 1, 20, 37, False)]
    for kind, d, b, h, hkv, sq, sk, causal in cases:
        st.set_matmul_precision("tf32" if kind == "tf32" else "highest")
        r = np.random.default_rng(d + sq)
        host = [r.standard_normal(s).astype(np_dt[kind]) for s in
                ((b, h, sq, d), (b, hkv, sk, d), (b, hkv, sk, d), (b, h, sq, d))]
        scale = 1 / np.sqrt(d)
        q, k, v, g = (FakeArray(x) for x in host)
        out, lse = be.attention_forward(q, k, v, causal, scale)
        dq, dk, dv = be.attention_backward(g, q, k, v, out, lse, causal, scale)
        ref = reference(*host, causal, scale)
        errs = {}
        for n, got, want in zip(("out", "dq", "dk", "dv"), (out, dq, dk, dv), ref):
            x = got.a.astype(np.float64)
            floor = max(np.linalg.norm(want), 1e-2 * np.sqrt(x.size))
            errs[n] = (float(np.linalg.norm(x - want) / floor) if np.isfinite(x).all()
                       else np.inf)
        bad = any(e > tol[kind] for e in errs.values()) or np.isnan(lse.a).any()
        failed += bad
        print(f"glue {kind:4} D{d:<3} B{b} H{h}/{hkv} Sq{sq} Sk{sk} causal={causal} "
              + " ".join(f"{n} {e:.1e}" for n, e in errs.items()) + (" FAIL" if bad else ""),
              flush=True)
    st.set_matmul_precision("highest")
    print("glue_check:", "all passed" if not failed else f"{failed} FAILED")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
