// The implicit-GEMM conv kernels (kernels/conv_igemm.cu) on the host emulator, as a shared
// library with the launch ABI:
//   int emu_launch_kernel(const char* name, int grid, int block, int smem, void** params)
// where params is the cuLaunchKernel parameter array (a pointer to each argument's value) and
// smem the dynamic shared memory of the launch (the v2 kernels refuse less than they need).
// Built with the same -D options the loader gives NVRTC for one module, plus the attention
// emulator's runtime (scripts/attention_emulator/emu_runtime.h: one std::thread per CUDA
// thread, warp collectives exchanged through barriers, cp.async deferred to its wait,
// shared memory poisoned with 0xFF).
#define SCITENSOR_EMULATE 1
#include "emu_runtime.h"
// clang-format off
#include "conv_igemm.cu"
// clang-format on
#include <cstring>

namespace {
struct Params {
  void** p;
  int i = 0;
  template <class X>
  X next() {
    X x;
    std::memcpy(&x, p[i++], sizeof(X));
    return x;
  }
};
constexpr int BM = ST_IGEMM_BM, BN = ST_IGEMM_BN, BK = ST_IGEMM_BK, WM = ST_IGEMM_WM,
              WN = ST_IGEMM_WN, STAGES = ST_IGEMM_STAGES;
}  // namespace

extern "C" int emu_launch_kernel(const char* name, int grid, int block, int smem,
                                 void** params) {
  Params a{params};
  if (!std::strcmp(name, "st_igemm_nhwc")) {
    auto x_ = a.next<const void*>();
    auto y_ = a.next<void*>();
    int C = a.next<int>(), HW = a.next<int>(), tiles_c = a.next<int>(), tiles_hw = a.next<int>();
    if (block != 256) return 2;
    emu_launch(grid, block, 32 * 33 * sizeof(IgT),
               [&](unsigned char* sm) { igemm_nhwc_body<IgTr>(IG_NHWC_ARGS, sm); });
    return 0;
  }
  if (!std::strcmp(name, "st_igemm_prep")) {
    auto w_ = a.next<const void*>();
    auto wp_ = a.next<void*>();
    auto taps = a.next<IgTap*>();
    int mode = a.next<int>(), groups = a.next<int>(), M = a.next<int>(), Mpad = a.next<int>();
    int Kgemm = a.next<int>(), Kpad = a.next<int>(), Cgw = a.next<int>(), Kgw = a.next<int>();
    int R = a.next<int>(), S = a.next<int>(), in_hw = a.next<int>(), in_w = a.next<int>();
    int dh = a.next<int>(), dwl = a.next<int>(), ntaps = a.next<int>();
    int tapmode = a.next<int>(), cgath = a.next<int>(), vec = a.next<int>();
    emu_launch(grid, block, 0, [&](unsigned char*) { igemm_prep_body<IgTr>(IG_PREP_ARGS); });
    return 0;
  }
  if (!std::strcmp(name, "st_igemm_wgrad_reduce")) {
    auto partial = a.next<const float*>();
    auto dw_ = a.next<void*>();
    int splits = a.next<int>();
    long long total = a.next<long long>();
    emu_launch(grid, block, 0, [&](unsigned char*) { igemm_reduce_body<IgTr>(IG_REDUCE_ARGS); });
    return 0;
  }
  if (block != 32 * WM * WN) return 2;
#if ST_IGEMM_KIND == 0 || ST_IGEMM_KIND == 2
  if (!std::strcmp(name, ST_IGEMM_KIND == 0 ? "st_igemm_fwd" : "st_igemm_fwd2")) {
    auto x_ = a.next<const void*>();
    auto wp_ = a.next<const void*>();
    auto taps = a.next<const IgTap*>();
    auto bias_ = a.next<const void*>();
    auto out_ = a.next<void*>();
    int C = a.next<int>(), H = a.next<int>(), W = a.next<int>(), Cg = a.next<int>();
    int M = a.next<int>(), Mpad = a.next<int>(), Mtot = a.next<int>(), P = a.next<int>();
    int Q = a.next<int>(), sh = a.next<int>(), sw = a.next<int>(), pt = a.next<int>();
    int pl = a.next<int>(), Kpad = a.next<int>(), Ngemm = a.next<int>();
    int tiles_m = a.next<int>(), tiles_n = a.next<int>();
    unsigned mul_pix = a.next<unsigned>();
    int shr_pix = a.next<int>();
    unsigned mul_q = a.next<unsigned>();
    int shr_q = a.next<int>();
#if ST_IGEMM_KIND == 0
    typedef IgFwdShape<IgTr, BM, BN, BK, WM, WN> Shape;
    emu_launch(grid, block, Shape::SMEM, [&](unsigned char* sm) {
      igemm_fwd_body<IgTr, BM, BN, BK, WM, WN>(IG_FWD_ARGS, sm);
    });
#else
    typedef IgFwd2Shape<IgTr, BM, BN, BK, WM, WN, STAGES> Shape;
    if (smem < Shape::SMEM) return 3;
    emu_launch(grid, block, Shape::SMEM, [&](unsigned char* sm) {
      igemm_fwd2_body<IgTr, BM, BN, BK, WM, WN, STAGES>(IG_FWD_ARGS, sm);
    });
#endif
    return 0;
  }
#else
  if (!std::strcmp(name, ST_IGEMM_KIND == 1 ? "st_igemm_wgrad" : "st_igemm_wgrad2")) {
    auto x_ = a.next<const void*>();
    auto gy_ = a.next<const void*>();
    auto taps = a.next<const IgTap*>();
    auto partial = a.next<float*>();
    auto dw_ = a.next<void*>();
    int C = a.next<int>(), H = a.next<int>(), W = a.next<int>(), Cg = a.next<int>();
    int Ktot = a.next<int>(), M = a.next<int>(), Ncols = a.next<int>(), P = a.next<int>();
    int Q = a.next<int>(), sh = a.next<int>(), sw = a.next<int>(), pt = a.next<int>();
    int pl = a.next<int>(), NPQ = a.next<int>(), chunk = a.next<int>(), groups = a.next<int>();
    int tiles_m = a.next<int>(), tiles_n = a.next<int>();
    unsigned mul_pix = a.next<unsigned>();
    int shr_pix = a.next<int>();
    unsigned mul_q = a.next<unsigned>();
    int shr_q = a.next<int>();
#if ST_IGEMM_KIND == 1
    typedef IgWgradShape<IgTr, BM, BN, BK, WM, WN> Shape;
    emu_launch(grid, block, Shape::SMEM, [&](unsigned char* sm) {
      igemm_wgrad_body<IgTr, BM, BN, BK, WM, WN>(IG_WGRAD_ARGS, sm);
    });
#else
    typedef IgWgrad2Shape<IgTr, BM, BN, BK, WM, WN, STAGES> Shape;
    if (smem < Shape::SMEM) return 3;
    emu_launch(grid, block, Shape::SMEM, [&](unsigned char* sm) {
      igemm_wgrad2_body<IgTr, BM, BN, BK, WM, WN, STAGES>(IG_WGRAD_ARGS, sm);
    });
#endif
    return 0;
  }
#endif
  return 1;
}
