"""Run ``kernels/kmeans.cu`` on the host: the CUDA k-means path tested without a GPU.

Builds on :mod:`tests.backends.host_cuda` (the CUDA built-ins as C++, blocks of real threads)
and adds what these kernels use beyond it: shuffles of int/double values, ``__ballot_sync``,
``__ffs``, shared-memory ``atomicAdd`` (``std::atomic_ref``), ``__fma_rn``, ``double2`` and
``__align__``. Every launch runs its blocks one after another, each block's threads as real
threads, so barriers, warp shuffles and atomics behave as on the GPU (warps do not run in
lockstep here, which is stricter than the GPU for code that forgets a barrier).

:func:`host_cluster_backend` gives the CUDA backend's cluster mixin
(:class:`~scitensor.backends.cuda.cluster.CudaClusterPrimitives`, the real host code: plans,
argument order, grids) over NumPy arrays with these launchers; fresh arrays are poisoned
(0xFF bytes: NaN for floats, -1 for integers) so an element no kernel writes fails the test.
"""

from __future__ import annotations

import ctypes
import hashlib
import pathlib
import subprocess
import tempfile
import threading

import numpy as np

from tests.backends import host_cuda

GXX = host_cuda.GXX
SOURCE = "kmeans.cu"

EXTRA = r"""
#include <atomic>
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define ST_LOOP(i, n) \
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
       i += (long long)gridDim.x * blockDim.x)
struct double2 { double x, y; };
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }
inline unsigned long long emu_xchg64[32][32];
template <class V> inline V emu_exchange(V v, int src) {
  static_assert(sizeof(V) <= 8, "8-byte exchange slots");
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  unsigned long long bits = 0;
  std::memcpy(&bits, &v, sizeof(V));
  emu_xchg64[warp][lane] = bits;
  emu_warp_bar[warp]->arrive_and_wait();
  V r = v;
  if (src >= 0 && src < 32) std::memcpy(&r, &emu_xchg64[warp][src], sizeof(V));
  emu_warp_bar[warp]->arrive_and_wait();
  return r;
}
template <class V> inline V __shfl_xor_sync(unsigned, V v, int off) {
  return emu_exchange(v, (int)(threadIdx.x & 31) ^ off);
}
template <class V> inline V __shfl_sync(unsigned, V v, int src) { return emu_exchange(v, src); }
inline unsigned __ballot_sync(unsigned, int pred) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  emu_xchg64[warp][lane] = pred ? 1 : 0;
  emu_warp_bar[warp]->arrive_and_wait();
  unsigned r = 0;
  for (int l = 0; l < 32; ++l) r |= emu_xchg64[warp][l] ? (1u << l) : 0u;
  emu_warp_bar[warp]->arrive_and_wait();
  return r;
}
inline int __ffs(int v) { return v ? __builtin_ctz((unsigned)v) + 1 : 0; }
template <class V> inline V atomicAdd(V* p, V v) { return std::atomic_ref<V>(*p).fetch_add(v); }
// A launch: blocks one after another, each block's threads as std::threads. Kernels take
// only integer-class parameters (pointers, int, long long), each passed as a 64-bit value.
#include <thread>
#include <vector>
typedef unsigned long long emu_u64;
static void emu_call(void* f, int n, const emu_u64* a) {
  typedef emu_u64 U;
  switch (n) {
    case 4: reinterpret_cast<void (*)(U, U, U, U)>(f)(a[0], a[1], a[2], a[3]); break;
    case 5: reinterpret_cast<void (*)(U, U, U, U, U)>(f)(a[0], a[1], a[2], a[3], a[4]); break;
    case 7: reinterpret_cast<void (*)(U, U, U, U, U, U, U)>(f)(a[0], a[1], a[2], a[3], a[4],
                                                               a[5], a[6]); break;
    case 10: reinterpret_cast<void (*)(U, U, U, U, U, U, U, U, U, U)>(f)(
        a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9]); break;
    default: std::abort();
  }
}
extern "C" void emu_launch(void* f, unsigned grid, unsigned block, int n, const emu_u64* a) {
  emu_configure(grid, block);
  for (unsigned b = 0; b < grid; ++b) {
    std::vector<std::thread> pool;
    pool.reserve(block);
    for (unsigned t = 0; t < block; ++t)
      pool.emplace_back([=] { emu_set_thread(b, t); emu_call(f, n, a); });
    for (auto& th : pool) th.join();
  }
}
"""

_libs: dict = {}
_lock = threading.Lock()


def build(dtype_code: int) -> ctypes.CDLL:
    """Compile ``kernels/kmeans.cu`` for the host with ``-DST_DTYPE=dtype_code`` (cached)."""
    with _lock:
        if dtype_code in _libs:
            return _libs[dtype_code]
        kernels = host_cuda.KERNELS
        texts = {"common.cuh": host_cuda.COMMON + EXTRA, SOURCE: (kernels / SOURCE).read_text()}
        digest = hashlib.sha256(repr(sorted(texts.items())).encode()).hexdigest()[:16]
        out_dir = pathlib.Path(tempfile.gettempdir()) / "scitensor-host-kmeans" / digest
        lib = out_dir / f"kmeans_{dtype_code}.so"
        if not lib.exists():
            out_dir.mkdir(parents=True, exist_ok=True)
            for name, text in texts.items():
                (out_dir / name).write_text(text)
            tmp = lib.with_suffix(f".{threading.get_ident()}.tmp")
            cmd = [GXX, "-x", "c++", "-std=c++20", "-O1", "-fno-strict-aliasing", "-shared",
                   "-fPIC", "-pthread", "-w", f"-DST_DTYPE={dtype_code}", str(out_dir / SOURCE),
                   "-o", str(tmp)]
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            if res.returncode:
                raise RuntimeError(f"host build of {SOURCE} failed:\n{res.stderr[-4000:]}")
            pre = subprocess.run([*cmd[:-2], "-E", "-P"], capture_output=True, text=True,
                                 timeout=300)
            lib.with_suffix(".i").write_text(pre.stdout)
            tmp.replace(lib)
        handle = ctypes.CDLL(str(lib))
        handle.signatures = host_cuda._signatures(lib.with_suffix(".i").read_text())
        _libs[dtype_code] = handle
        return handle


class ThreadedKernel(host_cuda.HostKernel):
    """A host kernel whose launches run each block's threads as real (C++) threads."""

    def __init__(self, lib, name: str, signature: str):
        super().__init__(lib, name, signature)
        if set(signature) - set("piq"):
            raise AssertionError(f"{name}: the launcher passes integer-class parameters only")
        self.address = ctypes.cast(self.fn, ctypes.c_void_p).value

    def __call__(self, blocks: int, threads: int, stream: int, *args) -> None:
        self.launches.append((blocks, threads))
        slots = (ctypes.c_uint64 * len(args))(*[int(a) & (2**64 - 1) for a in args])
        done = threading.Event()

        def run():
            self.lib.emu_launch(ctypes.c_void_p(self.address), blocks, threads, len(args), slots)
            done.set()

        th = threading.Thread(target=run, daemon=True)
        th.start()
        if not done.wait(timeout=300):  # a barrier some thread never reaches
            raise RuntimeError(f"{self.name}: deadlocked in host emulation")


def host_cluster_backend():
    """A CPU-device backend whose cluster primitives are the CUDA mixin on host kernels."""
    from scitensor import Device
    from scitensor.backends.cpu import CpuBackend
    from scitensor.backends.cuda.cluster import CudaClusterPrimitives

    poisoned = host_cuda.poisoned_empty(np.empty)

    class HostCudaCluster(CudaClusterPrimitives, CpuBackend):
        def __init__(self, device):
            super().__init__(device)
            self.kernels: dict = {}
            self.log: list = []  # (kernel name, blocks, threads) of every launch, in order

        def _km_kernel(self, name, signature, code):
            key = (code, name)
            k = self.kernels.get(key)
            if k is None:
                k = self.kernels[key] = ThreadedKernel(build(code), name, signature)
            return k

        def _km_ptr(self, a) -> int:
            return a.ctypes.data

        def _km_stream(self) -> int:
            return 0

        def _km_new(self, shape, np_dtype):
            return poisoned(shape, dtype=np_dtype)

        def _km_launch(self, name, signature, code, blocks, threads, *args):
            self.log.append((name, blocks, threads))
            super()._km_launch(name, signature, code, blocks, threads, *args)

        def launched(self) -> dict:
            """``{kernel name: (blocks, threads) of its latest launch}``."""
            return {name: (blocks, threads) for name, blocks, threads in self.log}

    return HostCudaCluster(Device("cpu"))
