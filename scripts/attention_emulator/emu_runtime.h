// A host emulator for the warp-level primitives of attention_common.cuh (SCITENSOR_EMULATE).
//
// Every CUDA thread of a block is one std::thread; __syncthreads is a std::barrier over the
// block, and each warp-collective instruction (ldmatrix, mma.sync, shfl) is an exchange through
// a per-warp slot table guarded by a 32-thread barrier (double-buffered by a per-lane parity,
// so one barrier per collective suffices). cp.async copies are queued per thread and performed
// only at cp.async.wait_group, so reading a tile before waiting for it reads stale/poisoned
// data. Shared memory starts filled with 0xFF bytes (NaN for every float type).
//
// The fragment semantics implemented here are the ones documented in attention_common.cuh;
// they are an independent re-statement of the PTX ISA tables, used to check the kernels' index
// arithmetic (addresses, masks, tile loops), not the hardware itself.
#pragma once
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __restrict__ __restrict
#define __align__(n) alignas(n)
#define STA_FN inline
#define STA_INF (std::numeric_limits<float>::infinity())

typedef unsigned int sta_u32;
typedef unsigned short sta_u16;

struct EmuDim { unsigned x = 0, y = 0, z = 0; };
inline thread_local EmuDim threadIdx, blockIdx;
inline EmuDim blockDim, gridDim;

[[noreturn]] inline void emu_fail(const char* what) {
  std::fprintf(stderr, "EMULATOR ERROR: %s (thread %u, block %u,%u,%u)\n", what, threadIdx.x,
               blockIdx.x, blockIdx.y, blockIdx.z);
  std::abort();
}

struct EmuWarp {
  std::barrier<> bar{32};
  sta_u32 slot[2][32][16];
};
struct EmuBlock {
  std::barrier<> bar;
  std::vector<unsigned char> smem;
  std::vector<std::unique_ptr<EmuWarp>> warps;
  EmuBlock(int threads, size_t smem_bytes) : bar(threads), smem(smem_bytes, 0xFF) {
    for (int w = 0; w < threads / 32; ++w) warps.emplace_back(new EmuWarp());
  }
};
struct EmuCopy { unsigned char* dst; const unsigned char* src; int n; };

inline thread_local EmuBlock* emu_blk = nullptr;
inline thread_local int emu_parity = 0;
inline thread_local std::vector<std::vector<EmuCopy>> emu_groups;
inline thread_local std::vector<EmuCopy> emu_open;

inline void emu_check_smem(const void* p, size_t n, size_t align) {
  const unsigned char* c = static_cast<const unsigned char*>(p);
  const unsigned char* lo = emu_blk->smem.data();
  if (c < lo || c + n > lo + emu_blk->smem.size()) emu_fail("shared-memory access out of range");
  if ((size_t)(c - lo) % align) emu_fail("misaligned shared-memory access");
}

// all 32 lanes publish N words; returns the warp's table (valid until the next-but-one call)
template <int N>
inline const sta_u32 (*emu_exchange(const sta_u32* mine))[16] {
  EmuWarp& w = *emu_blk->warps[threadIdx.x / 32];
  const int p = emu_parity;
  emu_parity ^= 1;
  std::memcpy(w.slot[p][threadIdx.x % 32], mine, N * 4);
  w.bar.arrive_and_wait();
  return w.slot[p];
}

inline void __syncthreads() { emu_blk->bar.arrive_and_wait(); }
inline void sta_check_smem(unsigned bytes) {
  if (bytes > emu_blk->smem.size()) emu_fail("launch gave less dynamic shared memory than needed");
}
inline void sta_sync() { __syncthreads(); }

inline float sta_as_float(sta_u32 x) { float f; std::memcpy(&f, &x, 4); return f; }
inline sta_u32 __float_as_uint(float f) { sta_u32 x; std::memcpy(&x, &f, 4); return x; }

inline const unsigned char* emu_ptr(const sta_u32* s) {
  uint64_t a = (uint64_t)s[0] | ((uint64_t)s[1] << 32);
  return reinterpret_cast<const unsigned char*>(a);
}
inline void emu_ldsm(sta_u32 (&r)[4], const void* p, bool trans) {
  emu_check_smem(p, 16, 16);
  uint64_t a = reinterpret_cast<uint64_t>(p);
  sta_u32 mine[2] = {(sta_u32)a, (sta_u32)(a >> 32)};
  auto tab = emu_exchange<2>(mine);
  const int l = threadIdx.x % 32;
  for (int i = 0; i < 4; ++i) {
    if (!trans) {
      std::memcpy(&r[i], emu_ptr(tab[8 * i + l / 4]) + 4 * (l % 4), 4);
    } else {
      sta_u16 lo, hi;
      std::memcpy(&lo, emu_ptr(tab[8 * i + 2 * (l % 4)]) + 2 * (l / 4), 2);
      std::memcpy(&hi, emu_ptr(tab[8 * i + 2 * (l % 4) + 1]) + 2 * (l / 4), 2);
      r[i] = (sta_u32)lo | ((sta_u32)hi << 16);
    }
  }
}
inline void sta_ldsm_x4(sta_u32 (&r)[4], const void* p) { emu_ldsm(r, p, false); }
inline void sta_ldsm_x4_t(sta_u32 (&r)[4], const void* p) { emu_ldsm(r, p, true); }

// EMU_CP_EAGER=1 performs each copy at issue instead (a write-after-read race on a buffer then
// corrupts the reader), the default defers it to the wait (a read-before-wait sees poison)
inline const bool emu_cp_eager = std::getenv("EMU_CP_EAGER") != nullptr;
inline void sta_cp_async16(void* dst, const void* src, bool full) {
  emu_check_smem(dst, 16, 16);
  if (reinterpret_cast<uintptr_t>(src) % 16) emu_fail("misaligned cp.async source");
  EmuCopy c{static_cast<unsigned char*>(dst), static_cast<const unsigned char*>(src),
            full ? 16 : 0};
  if (emu_cp_eager) {
    std::memset(c.dst, 0, 16);
    if (c.n) std::memcpy(c.dst, c.src, c.n);
    return;
  }
  emu_open.push_back(c);
}
inline void sta_cp_async_commit() { emu_groups.push_back(emu_open); emu_open.clear(); }
template <int N>
inline void sta_cp_async_wait() {
  while ((int)emu_groups.size() > N) {
    for (const EmuCopy& c : emu_groups.front()) {
      std::memset(c.dst, 0, 16);
      if (c.n) std::memcpy(c.dst, c.src, c.n);
    }
    emu_groups.erase(emu_groups.begin());
  }
}

// ---- number formats ----
inline float emu_bf16_to_f32(sta_u16 h) { return sta_as_float((sta_u32)h << 16); }
inline sta_u16 emu_f32_to_bf16(float f) {
  sta_u32 x = __float_as_uint(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;
  return (sta_u16)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}
inline float emu_f16_to_f32(sta_u16 h) { _Float16 v; std::memcpy(&v, &h, 2); return (float)v; }
inline sta_u16 emu_f32_to_f16(float f) { _Float16 v = (_Float16)f; sta_u16 h; std::memcpy(&h, &v, 2); return h; }
inline float sta_bf16_to_f32(sta_u16 h) { return emu_bf16_to_f32(h); }
inline float sta_f16_to_f32(sta_u16 h) { return emu_f16_to_f32(h); }
inline sta_u32 sta_pack_bf16(float lo, float hi) {
  return (sta_u32)emu_f32_to_bf16(lo) | ((sta_u32)emu_f32_to_bf16(hi) << 16);
}
inline sta_u32 sta_pack_f16(float lo, float hi) {
  return (sta_u32)emu_f32_to_f16(lo) | ((sta_u32)emu_f32_to_f16(hi) << 16);
}
inline sta_u32 sta_tf32(float f) {  // cvt.rna.tf32.f32: round half away from zero to 10 bits
  sta_u32 x = __float_as_uint(f);
  if ((x & 0x7f800000u) == 0x7f800000u) return x;
  return (x + 0x1000u) & 0xffffe000u;
}

// mma.sync: lane l owns D[g][2t + (e & 1)] (+8 rows for e >= 2); kind 0 bf16, 1 f16, 2 tf32
inline void emu_mma(float (&c)[4], const sta_u32 (&a)[4], sta_u32 b0, sta_u32 b1, int kind) {
  sta_u32 mine[6] = {a[0], a[1], a[2], a[3], b0, b1};
  auto tab = emu_exchange<6>(mine);
  const int l = threadIdx.x % 32, g = l / 4, t = l % 4;
  auto h16 = [&](sta_u32 w, int half) -> double {
    sta_u16 v = (sta_u16)(half ? w >> 16 : w & 0xffffu);
    return kind == 0 ? emu_bf16_to_f32(v) : emu_f16_to_f32(v);
  };
  for (int e = 0; e < 4; ++e) {
    const int row = g + 8 * (e >> 1), col = 2 * t + (e & 1);
    double acc = 0;
    if (kind < 2) {
      for (int kk = 0; kk < 16; ++kk) {
        double av = h16(tab[(row % 8) * 4 + (kk % 8) / 2][(row / 8) + 2 * (kk / 8)], kk % 2);
        double bv = h16(tab[col * 4 + (kk % 8) / 2][4 + kk / 8], kk % 2);
        acc += av * bv;
      }
    } else {
      for (int kk = 0; kk < 8; ++kk) {
        double av = sta_as_float(tab[(row % 8) * 4 + kk % 4][(row / 8) + 2 * (kk / 4)] & 0xffffe000u);
        double bv = sta_as_float(tab[col * 4 + kk % 4][4 + kk / 4] & 0xffffe000u);
        acc += av * bv;
      }
    }
    c[e] = (float)(c[e] + acc);
  }
}
inline void sta_mma_bf16(float (&c)[4], const sta_u32 (&a)[4], sta_u32 b0, sta_u32 b1) { emu_mma(c, a, b0, b1, 0); }
inline void sta_mma_f16(float (&c)[4], const sta_u32 (&a)[4], sta_u32 b0, sta_u32 b1) { emu_mma(c, a, b0, b1, 1); }
inline void sta_mma_tf32(float (&c)[4], const sta_u32 (&a)[4], sta_u32 b0, sta_u32 b1) { emu_mma(c, a, b0, b1, 2); }

inline float sta_shfl_xor(float v, int m) {
  sta_u32 mine[1] = {__float_as_uint(v)};
  auto tab = emu_exchange<1>(mine);
  return sta_as_float(tab[(threadIdx.x % 32) ^ m][0]);
}
inline bool sta_any(bool p) {
  sta_u32 mine[1] = {p ? 1u : 0u};
  auto tab = emu_exchange<1>(mine);
  for (int l = 0; l < 32; ++l)
    if (tab[l][0]) return true;
  return false;
}
inline float sta_ex2(float x) { return std::exp2(x); }
inline float sta_lg2(float x) { return std::log2(x); }
inline void sta_red_add2(float* p, float a, float b) {
  if (reinterpret_cast<uintptr_t>(p) % 8) emu_fail("misaligned red.v2");
  std::atomic_ref<float>(p[0]).fetch_add(a);
  std::atomic_ref<float>(p[1]).fetch_add(b);
}

// Run `body(smem)` for every thread of every block of a (gx, gy, gz) grid (blocks one after
// another, x fastest).
template <class F>
void emu_launch(EmuDim grid, int threads, size_t smem_bytes, F body) {
  gridDim = grid;
  blockDim = {(unsigned)threads, 1, 1};
  for (unsigned i = 0; i < grid.x * grid.y * grid.z; ++i) {
    const unsigned bx = i % grid.x, by = i / grid.x % grid.y, bz = i / (grid.x * grid.y);
    EmuBlock blk(threads, smem_bytes);
    std::vector<std::thread> pool;
    pool.reserve(threads);
    for (int tx = 0; tx < threads; ++tx) {
      pool.emplace_back([&blk, &body, tx, bx, by, bz] {
        threadIdx = {(unsigned)tx, 0, 0};
        blockIdx = {bx, by, bz};
        emu_blk = &blk;
        emu_parity = 0;
        emu_groups.clear();
        emu_open.clear();
        body(blk.smem.data());
        if (!emu_open.empty()) emu_fail("cp.async issued but never committed");
        for (auto& grp : emu_groups)
          if (!grp.empty()) emu_fail("cp.async group never waited for");
      });
    }
    for (auto& th : pool) th.join();
  }
}
// a 1-D grid of `grid` blocks
template <class F>
void emu_launch(int grid, int threads, size_t smem_bytes, F body) {
  emu_launch(EmuDim{(unsigned)grid, 1, 1}, threads, smem_bytes, body);
}
