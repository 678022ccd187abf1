// Runs the attention kernels (forward, then the three backward kernels) on the host emulator.
//
// Build (run.py does this): g++ -std=c++20 -O1 -pthread -DST_ATTN_TYPE=.. -DST_ATTN_D=..
//   -DEMU_FWD_WARPS=.. -DEMU_FWD_MW=.. -DEMU_FWD_BN=.. -DEMU_BWD_WARPS=.. -DEMU_BWD_BM=..
//   [-DEMU_BWD_V=2]
//   -I<kernels dir> harness.cpp
// Usage: harness DIR B H HKV SQ SK CAUSAL SCALE
//   reads DIR/{q,k,v,dout}.bin (raw element bits of the kernel type), writes DIR/{out,lse,dq,
//   dk,dv}.bin. Launch geometry and shared-memory sizes mirror backends/cuda/attention.py.
#define SCITENSOR_EMULATE 1
#include "emu_runtime.h"
// clang-format off
#include "attention_fwd.cu"
#include "attention_bwd.cu"
// clang-format on
#include <string>
#ifndef EMU_BWD_V
#define EMU_BWD_V 1  // 2: the v2 dK/dV kernel (16-bit types)
#endif

typedef StaTraits Tr;
typedef Tr::T T;
constexpr int D = ST_ATTN_D, ES = Tr::ES;

static std::vector<unsigned char> read_file(const std::string& path, size_t n) {
  std::vector<unsigned char> buf(n);
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f || std::fread(buf.data(), 1, n, f) != n) emu_fail(("cannot read " + path).c_str());
  std::fclose(f);
  return buf;
}
static void write_file(const std::string& path, const void* p, size_t n) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f || std::fwrite(p, 1, n, f) != n) emu_fail(("cannot write " + path).c_str());
  std::fclose(f);
}

int main(int argc, char** argv) {
  if (argc != 9) {
    std::fprintf(stderr, "usage: harness DIR B H HKV SQ SK CAUSAL SCALE\n");
    return 2;
  }
  const std::string dir = argv[1];
  const int B = std::atoi(argv[2]), H = std::atoi(argv[3]), HKV = std::atoi(argv[4]);
  const int SQ = std::atoi(argv[5]), SK = std::atoi(argv[6]);
  const bool causal = std::atoi(argv[7]) != 0;
  const float scale = (float)std::atof(argv[8]);
  const float scale_log2 = scale * STA_LOG2E;
  const size_t nq = (size_t)B * H * SQ * D, nk = (size_t)B * HKV * SK * D;

  auto qv = read_file(dir + "/q.bin", nq * ES), kv = read_file(dir + "/k.bin", nk * ES);
  auto vv = read_file(dir + "/v.bin", nk * ES), gv = read_file(dir + "/dout.bin", nq * ES);
  std::vector<unsigned char> out(nq * ES, 0xFF), dq(nq * ES, 0xFF), dk(nk * ES, 0xFF),
      dv(nk * ES, 0xFF);
  std::vector<float> lse((size_t)B * H * SQ, NAN), delta((size_t)B * H * SQ, NAN),
      dq_acc(nq, NAN);
  const T* q = (const T*)qv.data();
  const T* k = (const T*)kv.data();
  const T* v = (const T*)vv.data();
  const T* g = (const T*)gv.data();

  {  // forward
    constexpr int NW = EMU_FWD_WARPS, MW = EMU_FWD_MW, BN = EMU_FWD_BN, BM = 16 * MW * NW;
    const int grid = (SQ + BM - 1) / BM * B * H;
    const size_t smem = (size_t)(BM + 4 * BN) * (D * ES + 16);
    emu_launch(grid, 32 * NW, smem, [&](unsigned char* s) {
      if (causal)
        attention_fwd_body<Tr, D, NW, MW, BN, true>(q, k, v, (T*)out.data(), lse.data(), H, HKV, SQ,
                                                SK, scale_log2, s);
      else
        attention_fwd_body<Tr, D, NW, MW, BN, false>(q, k, v, (T*)out.data(), lse.data(), H, HKV, SQ,
                                                 SK, scale_log2, s);
    });
  }
  {  // backward
    const long long rows = (long long)B * H * SQ;
    const int pre_grid = (int)((rows * (D / 8) + 255) / 256);
    emu_launch(pre_grid, 256, 0, [&](unsigned char*) {
      attention_bwd_pre_body<Tr, D>((const T*)out.data(), g, delta.data(), dq_acc.data(), rows);
    });
    constexpr int NW = EMU_BWD_WARPS, BM = EMU_BWD_BM, BN = 16 * NW, V = EMU_BWD_V;
    const int grid = (SK + BN - 1) / BN * B * HKV;
    const size_t smem = (size_t)(2 * BN + 4 * BM) * (D * ES + 16) +
                        (size_t)V * BN * (BM * ES + 16) + 16 * BM;
    emu_launch(grid, 32 * NW, smem, [&](unsigned char* s) {
      if constexpr (V == 2 && Tr::KSTEP == 16) {
        if (causal)
          attention_bwd_dkdv2_body<Tr, D, NW, BM, true>(q, k, v, g, lse.data(), delta.data(),
                                                        (T*)dk.data(), (T*)dv.data(),
                                                        dq_acc.data(), H, HKV, SQ, SK, scale,
                                                        scale_log2, s);
        else
          attention_bwd_dkdv2_body<Tr, D, NW, BM, false>(q, k, v, g, lse.data(), delta.data(),
                                                         (T*)dk.data(), (T*)dv.data(),
                                                         dq_acc.data(), H, HKV, SQ, SK, scale,
                                                         scale_log2, s);
      } else if (causal)
        attention_bwd_dkdv_body<Tr, D, NW, BM, true>(q, k, v, g, lse.data(), delta.data(),
                                                     (T*)dk.data(), (T*)dv.data(), dq_acc.data(),
                                                     H, HKV, SQ, SK, scale, scale_log2, s);
      else
        attention_bwd_dkdv_body<Tr, D, NW, BM, false>(q, k, v, g, lse.data(), delta.data(),
                                                      (T*)dk.data(), (T*)dv.data(), dq_acc.data(),
                                                      H, HKV, SQ, SK, scale, scale_log2, s);
    });
    const long long n8 = (long long)nq / 8;
    const int cgrid = (int)std::min<long long>((n8 + 255) / 256, 4);
    emu_launch(cgrid, 256, 0, [&](unsigned char*) {
      attention_bwd_convert_body<Tr>(dq_acc.data(), (T*)dq.data(), n8, scale);
    });
  }
  write_file(dir + "/out.bin", out.data(), out.size());
  write_file(dir + "/lse.bin", lse.data(), lse.size() * 4);
  write_file(dir + "/dq.bin", dq.data(), dq.size());
  write_file(dir + "/dk.bin", dk.data(), dk.size());
  write_file(dir + "/dv.bin", dv.data(), dv.size());
  return 0;
}
