// The attention kernels' launch ABI on the host emulator, as a shared library.
//
// Compiled with the same -D options the Python loader gives NVRTC for one module; exposes
//   int emu_launch_kernel(const char* name, int grid, int block, int smem, void** params)
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

template <class X>
static X arg(void** params, int i) {
  X x;
  std::memcpy(&x, params[i], sizeof(X));
  return x;
}

extern "C" int emu_launch_kernel(const char* name, int grid, int block, int smem, void** p) {
  constexpr int D = ST_ATTN_D, NW = ST_ATTN_WARPS;
  if (!std::strncmp(name, "st_attention_fwd", 16)) {
    const bool causal = !std::strcmp(name, "st_attention_fwd_causal");
    if (block != 32 * NW) return 1;
    auto q = arg<const T*>(p, 0), k = arg<const T*>(p, 1), v = arg<const T*>(p, 2);
    auto out = arg<T*>(p, 3);
    auto lse = arg<float*>(p, 4);
    int H = arg<int>(p, 5), HKV = arg<int>(p, 6), SQ = arg<int>(p, 7), SK = arg<int>(p, 8);
    float sl2 = arg<float>(p, 9);
    emu_launch(grid, block, smem, [&](unsigned char* s) {
      if (causal)
        attention_fwd_body<StaTraits, D, NW, ST_ATTN_MW, ST_ATTN_BN, true>(
            q, k, v, out, lse, H, HKV, SQ, SK, sl2, s);
      else
        attention_fwd_body<StaTraits, D, NW, ST_ATTN_MW, ST_ATTN_BN, false>(
            q, k, v, out, lse, H, HKV, SQ, SK, sl2, s);
    });
    return 0;
  }
  if (!std::strncmp(name, "st_attention_bwd_dkdv", 21)) {
    const bool causal = !std::strcmp(name, "st_attention_bwd_dkdv_causal");
    if (block != 32 * NW) return 1;
    auto q = arg<const T*>(p, 0), k = arg<const T*>(p, 1), v = arg<const T*>(p, 2);
    auto g = arg<const T*>(p, 3);
    auto lse = arg<const float*>(p, 4), delta = arg<const float*>(p, 5);
    auto dk = arg<T*>(p, 6), dv = arg<T*>(p, 7);
    auto acc = arg<float*>(p, 8);
    int H = arg<int>(p, 9), HKV = arg<int>(p, 10), SQ = arg<int>(p, 11), SK = arg<int>(p, 12);
    float scale = arg<float>(p, 13), sl2 = arg<float>(p, 14);
    emu_launch(grid, block, smem, [&](unsigned char* s) {
      if (causal)
        attention_bwd_dkdv_body<StaTraits, D, NW, ST_ATTN_BM, true>(
            q, k, v, g, lse, delta, dk, dv, acc, H, HKV, SQ, SK, scale, sl2, s);
      else
        attention_bwd_dkdv_body<StaTraits, D, NW, ST_ATTN_BM, false>(
            q, k, v, g, lse, delta, dk, dv, acc, H, HKV, SQ, SK, scale, sl2, s);
    });
    return 0;
  }
  if (!std::strcmp(name, "st_attention_bwd_pre")) {
    auto out = arg<const T*>(p, 0), g = arg<const T*>(p, 1);
    auto delta = arg<float*>(p, 2), acc = arg<float*>(p, 3);
    long long rows = arg<long long>(p, 4);
    emu_launch(grid, block, smem, [&](unsigned char*) {
      attention_bwd_pre_body<StaTraits, D>(out, g, delta, acc, rows);
    });
    return 0;
  }
  if (!std::strcmp(name, "st_attention_bwd_convert")) {
    auto acc = arg<const float*>(p, 0);
    auto dq = arg<T*>(p, 1);
    long long n8 = arg<long long>(p, 2);
    float scale = arg<float>(p, 3);
    emu_launch(grid, block, smem, [&](unsigned char*) {
      attention_bwd_convert_body<StaTraits>(acc, dq, n8, scale);
    });
    return 0;
  }
  return 2;
}
