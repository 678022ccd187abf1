// The attention kernels' launch ABI on the host emulator, as a shared library.
//
// Compiled with the same -D options the Python loader gives NVRTC for one module; exposes
//   int emu_launch_kernel(const char* name, int gx, int gy, int gz, int block, int smem,
//                         void** params)
// where params is the cuLaunchKernel parameter array (pointers to each argument's value), so
// glue_check.py can run backends/cuda/attention.py unchanged with the driver call redirected.
#define SCITENSOR_EMULATE 1
#include "emu_runtime.h"
// clang-format off
#include "attention_fwd.cu"
#include "attention_bwd.cu"
// clang-format on
#include <cstring>

#ifndef ST_ATTN_BN
#define ST_ATTN_BN 64
#endif
#ifndef ST_ATTN_MW
#define ST_ATTN_MW 1
#endif
#ifndef ST_ATTN_BM
#define ST_ATTN_BM 64
#endif

typedef StaTraits::T T;
// the v2 dK/dV kernel exists where attention_bwd.cu compiles it (its STA_BWD2_DQW test)
#define EMU_BWD2_DQW (ST_ATTN_D * ST_ATTN_BM / (32 * ST_ATTN_WARPS))
#if ST_ATTN_TYPE < 2 && ST_ATTN_BM % 32 == 0 && ST_ATTN_WARPS % 2 == 0 && \
    ST_ATTN_WARPS % (ST_ATTN_BM / 32) == 0 && EMU_BWD2_DQW >= 16 && EMU_BWD2_DQW % 16 == 0
#define EMU_HAS_V2 1
#else
#define EMU_HAS_V2 0
#endif

template <class X>
static X arg(void** params, int i) {
  X x;
  std::memcpy(&x, params[i], sizeof(X));
  return x;
}
// one operand's strides: params i, i + 1 (long long batch, head), i + 2 (int row)
static StaRows rows(void** p, int i) {
  return StaRows{arg<long long>(p, i), arg<long long>(p, i + 1), arg<int>(p, i + 2)};
}

extern "C" int emu_launch_kernel(const char* name, int gx, int gy, int gz, int block, int smem,
                                 void** p) {
  constexpr int D = ST_ATTN_D, NW = ST_ATTN_WARPS;
  const EmuDim grid{(unsigned)gx, (unsigned)gy, (unsigned)gz};
  if (!std::strncmp(name, "st_attention_fwd", 16)) {
    const bool causal = !std::strcmp(name, "st_attention_fwd_causal");
    if (block != 32 * NW) return 1;
    auto q = arg<const T*>(p, 0), k = arg<const T*>(p, 1), v = arg<const T*>(p, 2);
    auto out = arg<T*>(p, 3);
    auto lse = arg<float*>(p, 4);
    int H = arg<int>(p, 5), HKV = arg<int>(p, 6), SQ = arg<int>(p, 7), SK = arg<int>(p, 8);
    float sl2 = arg<float>(p, 9);
    const StaRows qs = rows(p, 10), ks = rows(p, 13), vs = rows(p, 16), os = rows(p, 19);
    emu_launch(grid, block, smem, [&](unsigned char* s) {
      if (causal)
        attention_fwd_body<StaTraits, D, NW, ST_ATTN_MW, ST_ATTN_BN, true>(
            q, k, v, out, lse, H, HKV, SQ, SK, sl2, qs, ks, vs, os, s);
      else
        attention_fwd_body<StaTraits, D, NW, ST_ATTN_MW, ST_ATTN_BN, false>(
            q, k, v, out, lse, H, HKV, SQ, SK, sl2, qs, ks, vs, os, s);
    });
    return 0;
  }
  if (!std::strncmp(name, "st_attention_bwd_dkdv", 21)) {
    const bool v2 = !std::strncmp(name, "st_attention_bwd_dkdv2", 22);
    const bool causal = std::strstr(name, "_causal") != nullptr;
    if (block != 32 * NW) return 1;
    auto q = arg<const T*>(p, 0), k = arg<const T*>(p, 1), v = arg<const T*>(p, 2);
    auto g = arg<const T*>(p, 3);
    auto lse = arg<const float*>(p, 4), delta = arg<const float*>(p, 5);
    auto dk = arg<T*>(p, 6), dv = arg<T*>(p, 7);
    auto acc = arg<float*>(p, 8);
    int H = arg<int>(p, 9), HKV = arg<int>(p, 10), SQ = arg<int>(p, 11), SK = arg<int>(p, 12);
    float scale = arg<float>(p, 13), sl2 = arg<float>(p, 14);
    const StaRows qs = rows(p, 15), ks = rows(p, 18), vs = rows(p, 21), gs = rows(p, 24),
                  dks = rows(p, 27), dvs = rows(p, 30);
#define EMU_DKDV(BODY, CAUSAL)                                                              \
  emu_launch(grid, block, smem, [&](unsigned char* s) {                                    \
    BODY<StaTraits, D, NW, ST_ATTN_BM, CAUSAL>(q, k, v, g, lse, delta, dk, dv, acc, H, HKV, \
                                               SQ, SK, scale, sl2, qs, ks, vs, gs, dks,   \
                                               dvs, s);                                    \
  })
    if (v2) {
#if EMU_HAS_V2
      if (causal) EMU_DKDV(attention_bwd_dkdv2_body, true);
      else EMU_DKDV(attention_bwd_dkdv2_body, false);
#else
      return 3;  // this module has no v2 kernel
#endif
    } else if (causal) {
      EMU_DKDV(attention_bwd_dkdv_body, true);
    } else {
      EMU_DKDV(attention_bwd_dkdv_body, false);
    }
    return 0;
  }
  if (!std::strcmp(name, "st_attention_bwd_pre")) {
    auto out = arg<const T*>(p, 0), g = arg<const T*>(p, 1);
    auto delta = arg<float*>(p, 2), acc = arg<float*>(p, 3);
    int H = arg<int>(p, 4), SQ = arg<int>(p, 5);
    const StaRows os = rows(p, 6), gs = rows(p, 9);
    if (block != STA_ROW_THREADS) return 1;
    emu_launch(grid, block, smem, [&](unsigned char*) {
      attention_bwd_pre_body<StaTraits, D>(out, g, delta, acc, H, SQ, os, gs);
    });
    return 0;
  }
  if (!std::strcmp(name, "st_attention_bwd_convert")) {
    auto acc = arg<const float*>(p, 0);
    auto dq = arg<T*>(p, 1);
    int H = arg<int>(p, 2), SQ = arg<int>(p, 3);
    float scale = arg<float>(p, 4);
    const StaRows qs = rows(p, 5);
    if (block != STA_ROW_THREADS) return 1;
    emu_launch(grid, block, smem, [&](unsigned char*) {
      attention_bwd_convert_body<StaTraits, D>(acc, dq, H, SQ, scale, qs);
    });
    return 0;
  }
  return 2;
}
