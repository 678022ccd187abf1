"""Run our CUDA kernel sources on the host: a test harness for machines without a GPU.

The ``.cu`` files are compiled with ``g++`` as plain C++ against a stand-in ``common.cuh``
(the CUDA built-ins as C++: ``blockIdx``/``threadIdx`` thread-local, ``__syncthreads`` a
block barrier, warp shuffles an exchange between real threads with a warp barrier, vector
types, float16/bfloat16 conversions with round-to-nearest-even). A launch runs the blocks
one after another; kernels that talk between threads run each block's threads as real
threads, the others run as a few sequential threads that cover the grid-stride loops.

:class:`HostCudaPooling` is the CUDA backend's pooling mixin on NumPy arrays with these
launchers, so the exact host code (fast-path choice, argument order, grid sizes) runs too.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import pathlib
import re
import shutil
import subprocess
import tempfile
import threading

import numpy as np

KERNELS = (pathlib.Path(__file__).parents[2] / "src" / "scitensor" / "backends" / "cuda"
           / "kernels")
GXX = shutil.which("g++")

COMMON = r"""
#pragma once
#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstring>
#include <memory>
using std::max; using std::min; using std::sqrt;
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
struct st_dim3 { unsigned int x = 0, y = 0, z = 0; };
inline thread_local st_dim3 threadIdx, blockIdx;
inline st_dim3 blockDim, gridDim;
inline std::unique_ptr<std::barrier<>> emu_block_bar;
inline std::unique_ptr<std::barrier<>> emu_warp_bar[32];
inline float emu_xchg[32][32];
extern "C" void emu_configure(unsigned grid, unsigned block) {
  gridDim.x = grid; blockDim.x = block;
  emu_block_bar = std::make_unique<std::barrier<>>(block);
  for (unsigned w = 0; w < 32; ++w)
    emu_warp_bar[w] = std::make_unique<std::barrier<>>(block >= 32 ? 32 : block);
}
extern "C" void emu_set_thread(unsigned b, unsigned t) { blockIdx.x = b; threadIdx.x = t; }
inline void __syncthreads() { emu_block_bar->arrive_and_wait(); }
inline float emu_shfl(float v, int src) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  emu_xchg[warp][lane] = v;
  emu_warp_bar[warp]->arrive_and_wait();
  const float r = (src >= 0 && src < 32) ? emu_xchg[warp][src] : v;
  emu_warp_bar[warp]->arrive_and_wait();
  return r;
}
inline float __shfl_down_sync(unsigned, float v, int off) {
  return emu_shfl(v, (int)(threadIdx.x & 31) + off);
}
inline float __shfl_xor_sync(unsigned, float v, int off) {
  return emu_shfl(v, (int)(threadIdx.x & 31) ^ off);
}
inline float __int_as_float(unsigned int i) { float f; std::memcpy(&f, &i, 4); return f; }
struct float4 { float x, y, z, w; };
struct uint4 { unsigned int x, y, z, w; };
struct uint2 { unsigned int x, y; };
inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
struct float2 { float x, y; };
inline float2 make_float2(float a, float b) { return {a, b}; }
template <class P> inline P __ldg(const P* p) { return *p; }
typedef unsigned short st_f16;
typedef unsigned short st_bf16;
typedef unsigned char st_bool;
inline float st_f16_to_f32(st_f16 h) {
  _Float16 v; std::memcpy(&v, &h, 2); return (float)v;
}
inline st_f16 st_f32_to_f16(float f) {
  _Float16 v = (_Float16)f; st_f16 h; std::memcpy(&h, &v, 2); return h;
}
inline float st_bf16_to_f32(st_bf16 h) {
  unsigned u = (unsigned)h << 16; float f; std::memcpy(&f, &u, 4); return f;
}
inline st_bf16 st_f32_to_bf16(float f) {
  unsigned u; std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (st_bf16)((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (st_bf16)(u >> 16);
}
"""

# kernels whose threads cooperate: real threads, and the grid the host asked for
_COOPERATIVE = {"st_bn_stats_partial", "st_bn_bwd_partial", "st_global_avg_pool2d_fwd"}
_CTYPES = {"p": ctypes.c_void_p, "i": ctypes.c_int, "f": ctypes.c_float,
           "q": ctypes.c_longlong}
_libs: dict = {}
_lock = threading.Lock()


def build(source: str, dtype_code: int, common_extra: str = "") -> ctypes.CDLL:
    """Compile ``kernels/<source>`` for the host (cached by content) and load it.

    ``common_extra`` is appended to the emulated ``common.cuh`` (a test's own launcher, say).
    """
    key = (source, dtype_code, common_extra)
    with _lock:
        if key in _libs:
            return _libs[key]
        texts = {p.name: p.read_text() for p in [*KERNELS.glob("*.cuh"), KERNELS / source]}
        texts["common.cuh"] = COMMON + common_extra
        digest = hashlib.sha256(repr(sorted(texts.items())).encode()).hexdigest()[:16]
        out_dir = pathlib.Path(tempfile.gettempdir()) / "scitensor-host-cuda" / digest
        lib = out_dir / f"{pathlib.Path(source).stem}_{dtype_code}.so"
        if not lib.exists():
            # several test processes (pytest-xdist) may build the same library at once: every
            # file is written under a private name and renamed into place, the .i before the
            # .so (whose existence tells other processes the build is complete)
            out_dir.mkdir(parents=True, exist_ok=True)
            tag = f"{os.getpid()}.{threading.get_ident()}"
            for name, text in texts.items():
                tmp_text = out_dir / f"{name}.{tag}.tmp"
                tmp_text.write_text(text)
                tmp_text.replace(out_dir / name)
            tmp = lib.with_suffix(f".{tag}.tmp")
            cmd = [GXX, "-x", "c++", "-std=c++20", "-O1", "-fno-strict-aliasing", "-shared",
                   "-fPIC", "-pthread", "-w", f"-DST_DTYPE={dtype_code}",
                   str(out_dir / source), "-o", str(tmp)]
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            if res.returncode:
                raise RuntimeError(f"host build of {source} failed:\n{res.stderr[-4000:]}")
            pre = subprocess.run([*cmd[:-2], "-E", "-P"], capture_output=True, text=True,
                                 timeout=300)
            tmp_i = lib.with_suffix(f".{tag}.i.tmp")
            tmp_i.write_text(pre.stdout)
            tmp_i.replace(lib.with_suffix(".i"))
            tmp.replace(lib)
        handle = ctypes.CDLL(str(lib))
        handle.signatures = _signatures(lib.with_suffix(".i").read_text())
        _libs[key] = handle
        return handle


def _signatures(preprocessed: str) -> dict[str, str]:
    """``{kernel: signature}`` from the ``extern "C" void name(...)`` definitions."""
    out = {}
    for m in re.finditer(r'extern\s+"C"\s+void\s+(\w+)\s*\(([^)]*)\)', preprocessed):
        if m.group(1).startswith("emu_"):
            continue
        sig = ""
        for param in m.group(2).split(","):
            if "*" in param:
                sig += "p"
            elif "float" in param:
                sig += "f"
            elif "long long" in param:
                sig += "q"
            elif "int" in param:
                sig += "i"
            else:
                raise ValueError(f"unknown parameter type {param!r} in {m.group(1)}")
        out[m.group(1)] = sig
    return out


class HostKernel:
    """A kernel of a host-built library, launched like ``launch.Kernel``."""

    def __init__(self, lib, name: str, signature: str):
        self.lib, self.name = lib, name
        self.fn = getattr(lib, name)
        declared = lib.signatures.get(name)
        if declared != signature:
            raise AssertionError(f"{name}: host code launches it with signature "
                                 f"{signature!r}, the kernel declares {declared!r}")
        self.fn.argtypes = [_CTYPES[c] for c in signature]
        self.fn.restype = None
        self.launches: list = []

    def __call__(self, blocks: int, threads: int, stream: int, *args) -> None:
        self.launches.append((blocks, threads))
        if self.name not in _COOPERATIVE:
            # sequential threads of a small grid cover every grid-stride loop
            blocks, threads = min(blocks, 2), min(threads, 3)
            self.lib.emu_configure(blocks, threads)
            for b in range(blocks):
                for t in range(threads):
                    self.lib.emu_set_thread(b, t)
                    self.fn(*args)
            return
        self.lib.emu_configure(blocks, threads)
        for b in range(blocks):
            errors = []

            def run(t, b=b, errors=errors):
                try:
                    self.lib.emu_set_thread(b, t)
                    self.fn(*args)
                except Exception as e:  # pragma: no cover - surfaced below
                    errors.append(e)

            pool = [threading.Thread(target=run, args=(t,), daemon=True)
                    for t in range(threads)]
            for th in pool:
                th.start()
            for th in pool:
                th.join(timeout=60)
                if th.is_alive():  # a barrier nobody else reaches: report, do not hang
                    raise RuntimeError(f"{self.name}: block {b} deadlocked in host emulation")
            if errors:
                raise errors[0]


def host_backend_class():
    """``HostCudaPooling``: the CUDA pooling mixin over NumPy with host-built kernels."""
    from scitensor.backends.cpu import CpuBackend
    from scitensor.backends.cuda.pooling import _DTYPE_CODE, CudaPoolingPrimitives

    class HostCudaPooling(CudaPoolingPrimitives, CpuBackend):
        _threads = 64  # two warps: block-level merges still cross warps
        sm_count = 1

        def __init__(self, device):
            super().__init__(device)
            self.kernels: dict = {}

        def _ptr(self, a) -> int:
            return 0 if a is None else a.ctypes.data

        def _stream(self) -> int:
            return 0

        def _kernel(self, source, like, name, signature):
            key = (source, _DTYPE_CODE[like.dtype], name)
            k = self.kernels.get(key)
            if k is None:
                k = self.kernels[key] = HostKernel(build(source, key[1]), name, signature)
            return k

        def launched(self) -> set:
            """Names of the kernels launched so far."""
            return {name for (_, _, name), k in self.kernels.items() if k.launches}

    return HostCudaPooling


def poisoned_empty(xp_empty):
    """``np.empty`` replacement filling new float arrays with NaN and others with 0xFF."""

    def empty(shape, dtype=float):
        a = xp_empty(shape, dtype=dtype)
        a.view(np.uint8)[...] = 0xFF
        return a

    return empty
