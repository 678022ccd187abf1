// Host emulation of the CUDA features the row kernels use (layer_norm.cu, softmax.cu,
// cross_entropy.cu): one std::thread per GPU thread, blocks one after another, a barrier per
// block (__syncthreads) and per warp (shuffles exchange through a buffer between two warp
// barriers), __shared__ as static storage. scripts/norm_emulator/run.py copies it next to the
// kernels as common.cuh (which it replaces) and builds them with g++ (-fno-gnu-unique: the
// libraries of different dtypes share template names with differently sized statics).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <algorithm>
#include <mutex>
#include <condition_variable>
#include <thread>
#include <vector>
#include <functional>
#include <cstdlib>

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __restrict__
#define __align__(n) alignas(n)
#define __shared__ static

struct U3 { unsigned x, y, z; };
static thread_local U3 threadIdx, blockIdx;
static U3 blockDim, gridDim;
struct uint4 { unsigned x, y, z, w; };
struct alignas(16) float4 { float x, y, z, w; };
inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
template <class P> inline P __ldg(const P* p) { return *p; }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline float __uint_as_float(unsigned i) { float f; std::memcpy(&f, &i, 4); return f; }
inline float rsqrtf(float x) { return 1.f / std::sqrt(x); }
using std::min; using std::max;

struct EmuBarrier {  // generation-counting barrier (std::barrier of libstdc++ 12 hung here)
  explicit EmuBarrier(int n) : n(n) {}
  void arrive_and_wait() {
    std::unique_lock<std::mutex> lk(m);
    const unsigned long gen = generation;
    if (++count == n) { count = 0; ++generation; cv.notify_all(); return; }
    cv.wait(lk, [&] { return generation != gen; });
  }
  int n, count = 0;
  unsigned long generation = 0;
  std::mutex m;
  std::condition_variable cv;
};
static EmuBarrier* g_block_barrier;
static std::vector<EmuBarrier*> g_warp_barriers;
static float g_warp_buf[32][32];
inline void __syncthreads() { g_block_barrier->arrive_and_wait(); }
inline float __shfl_sync(unsigned, float v, int src, int width = 32) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  g_warp_buf[warp][lane] = v;
  g_warp_barriers[warp]->arrive_and_wait();
  const float r = g_warp_buf[warp][(lane & ~(width - 1)) + (src % width)];
  g_warp_barriers[warp]->arrive_and_wait();
  return r;
}
inline float __shfl_xor_sync(unsigned, float v, int o) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  g_warp_buf[warp][lane] = v;
  g_warp_barriers[warp]->arrive_and_wait();
  const float r = g_warp_buf[warp][lane ^ o];
  g_warp_barriers[warp]->arrive_and_wait();
  return r;
}

inline void emu_launch(int grid, int block, std::function<void()> body) {
  if (block % 32) throw 1;
  gridDim = {(unsigned)grid, 1, 1};
  blockDim = {(unsigned)block, 1, 1};
  EmuBarrier bb(block);
  g_block_barrier = &bb;
  std::vector<EmuBarrier*> wb;
  for (int w = 0; w < block / 32; ++w) wb.push_back(new EmuBarrier(32));
  g_warp_barriers = wb;
  for (int b = 0; b < grid; ++b) {
    std::vector<std::thread> ts;
    for (int t = 0; t < block; ++t)
      ts.emplace_back([=] { blockIdx = {(unsigned)b, 0, 0}; threadIdx = {(unsigned)t, 0, 0}; body(); });
    for (auto& th : ts) th.join();
  }
  for (auto* p : wb) delete p;
}

typedef unsigned short st_f16;
typedef unsigned short st_bf16;
typedef unsigned char st_bool;
inline float st_f16_to_f32(st_f16 h) { _Float16 f; std::memcpy(&f, &h, 2); return (float)f; }
inline st_f16 st_f32_to_f16(float f) { _Float16 h = (_Float16)f; st_f16 r; std::memcpy(&r, &h, 2); return r; }
inline float st_bf16_to_f32(st_bf16 h) { return __uint_as_float(((unsigned)h) << 16); }
inline st_bf16 st_f32_to_bf16(float f) {
  unsigned u; std::memcpy(&u, &f, 4);
  if (std::isnan(f)) return 0x7fc0;
  u += 0x7fffu + ((u >> 16) & 1u);
  return (st_bf16)(u >> 16);
}
inline void __trap() { std::abort(); }
#include <tuple>
#include <type_traits>
template <class A> A emu_arg(uint64_t s) {
  if constexpr (std::is_pointer_v<A>) return reinterpret_cast<A>((uintptr_t)s);
  else if constexpr (std::is_same_v<A, float>) { uint32_t u = (uint32_t)s; float f; std::memcpy(&f, &u, 4); return f; }
  else return (A)(int64_t)s;
}
template <class... A, size_t... I>
void emu_run(void (*k)(A...), int grid, int block, const uint64_t* s, std::index_sequence<I...>) {
  auto args = std::make_tuple(emu_arg<std::decay_t<A>>(s[I])...);
  emu_launch(grid, block, [&] { std::apply(k, args); });
}
template <class... A> void emu_run_k(void (*k)(A...), int g, int b, const uint64_t* s) {
  emu_run(k, g, b, s, std::index_sequence_for<A...>{});
}
#define EXPORT(name) extern "C" __attribute__((visibility("default"))) void run_##name(int g, int b, const uint64_t* s) { emu_run_k(&name, g, b, s); }
