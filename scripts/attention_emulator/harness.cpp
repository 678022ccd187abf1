// Runs the attention kernels (forward, then the three backward kernels) on the host emulator.
//
// Build (run.py does this): g++ -std=c++20 -O1 -pthread -DST_ATTN_TYPE=.. -DST_ATTN_D=..
//   -DEMU_FWD_WARPS=.. -DEMU_FWD_MW=.. -DEMU_FWD_BN=.. -DEMU_BWD_WARPS=.. -DEMU_BWD_BM=..
//   [-DEMU_BWD_V=2]
//   -I<kernels dir> harness.cpp
// Usage: harness DIR B H HKV SQ SK CAUSAL SCALE
//   DIR/layout.txt has one line per operand (q k v dout out dq dk dv, any order):
//     NAME BUFFER OFFSET SB SH SS
//   the operand's (B, heads, S, D) view starts OFFSET elements into DIR/BUFFER.bin, with batch,
//   head and row strides SB, SH, SS in elements (the D axis contiguous). Every buffer is read
//   (raw element bits of the kernel type: inputs, and outputs pre-filled with poison by the
//   caller) and written back after the run, so the caller sees both the results and whatever
//   the kernels wrote outside the output views. DIR/lse.bin (dense (B, H, SQ) float32) is
//   written too. Launch geometry and shared-memory sizes mirror backends/cuda/attention.py.
#define SCITENSOR_EMULATE 1
#include "emu_runtime.h"
// clang-format off
#include "attention_fwd.cu"
#include "attention_bwd.cu"
// clang-format on
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#ifndef EMU_BWD_V
#define EMU_BWD_V 1  // 2: the v2 dK/dV kernel (16-bit types)
#endif

typedef StaTraits Tr;
typedef Tr::T T;
constexpr int D = ST_ATTN_D, ES = Tr::ES;

struct Buffer {
  std::vector<sta_v16> mem;  // 16-byte aligned storage
  size_t bytes = 0;
  unsigned char* data() { return reinterpret_cast<unsigned char*>(mem.data()); }
};
struct Operand {
  T* p = nullptr;
  StaRows rows{0, 0, 0};
};

static void read_buffer(const std::string& path, Buffer& b) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) emu_fail(("cannot read " + path).c_str());
  std::fseek(f, 0, SEEK_END);
  b.bytes = (size_t)std::ftell(f);
  std::fseek(f, 0, SEEK_SET);
  b.mem.resize((b.bytes + 15) / 16);
  if (std::fread(b.data(), 1, b.bytes, f) != b.bytes) emu_fail(("cannot read " + path).c_str());
  std::fclose(f);
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

  std::map<std::string, Buffer> bufs;
  std::map<std::string, Operand> ops;
  {
    std::ifstream lay(dir + "/layout.txt");
    std::string line;
    while (std::getline(lay, line)) {
      std::istringstream in(line);
      std::string name, buf;
      long long off, sb, sh, ss;
      if (!(in >> name >> buf >> off >> sb >> sh >> ss)) continue;
      if (!bufs.count(buf)) read_buffer(dir + "/" + buf + ".bin", bufs[buf]);
      if (off < 0 || (size_t)off * ES > bufs[buf].bytes) emu_fail("operand offset out of range");
      ops[name] = Operand{reinterpret_cast<T*>(bufs[buf].data()) + off,
                          StaRows{sb, sh, (int)ss}};
    }
  }
  for (const char* n : {"q", "k", "v", "dout", "out", "dq", "dk", "dv"})
    if (!ops.count(n)) emu_fail((std::string("layout.txt lacks ") + n).c_str());
  const Operand &q = ops["q"], &k = ops["k"], &v = ops["v"], &g = ops["dout"];
  const Operand &out = ops["out"], &dq = ops["dq"], &dk = ops["dk"], &dv = ops["dv"];
  std::vector<float> lse((size_t)B * H * SQ, NAN), delta((size_t)B * H * SQ, NAN),
      dq_acc((size_t)B * H * SQ * D, NAN);

  {  // forward
    constexpr int NW = EMU_FWD_WARPS, MW = EMU_FWD_MW, BN = EMU_FWD_BN, BM = 16 * MW * NW;
    const EmuDim grid{(unsigned)((SQ + BM - 1) / BM), (unsigned)H, (unsigned)B};
    const size_t smem = (size_t)(BM + 4 * BN) * (D * ES + 16);
    emu_launch(grid, 32 * NW, smem, [&](unsigned char* s) {
      if (causal)
        attention_fwd_body<Tr, D, NW, MW, BN, true>(q.p, k.p, v.p, out.p, lse.data(), H, HKV, SQ,
                                                    SK, scale_log2, q.rows, k.rows, v.rows,
                                                    out.rows, s);
      else
        attention_fwd_body<Tr, D, NW, MW, BN, false>(q.p, k.p, v.p, out.p, lse.data(), H, HKV,
                                                     SQ, SK, scale_log2, q.rows, k.rows, v.rows,
                                                     out.rows, s);
    });
  }
  {  // backward
    constexpr int RPB = STA_ROW_THREADS / (D / 8);
    const EmuDim rgrid{(unsigned)((SQ + RPB - 1) / RPB), (unsigned)H, (unsigned)B};
    emu_launch(rgrid, STA_ROW_THREADS, 0, [&](unsigned char*) {
      attention_bwd_pre_body<Tr, D>(out.p, g.p, delta.data(), dq_acc.data(), H, SQ, out.rows,
                                    g.rows);
    });
    constexpr int NW = EMU_BWD_WARPS, BM = EMU_BWD_BM, BN = 16 * NW, V = EMU_BWD_V;
    const EmuDim grid{(unsigned)((SK + BN - 1) / BN), (unsigned)HKV, (unsigned)B};
    const size_t smem = (size_t)(2 * BN + 4 * BM) * (D * ES + 16) +
                        (size_t)V * BN * (BM * ES + 16) + 16 * BM;
    emu_launch(grid, 32 * NW, smem, [&](unsigned char* s) {
      if constexpr (V == 2 && Tr::KSTEP == 16) {
        if (causal)
          attention_bwd_dkdv2_body<Tr, D, NW, BM, true>(
              q.p, k.p, v.p, g.p, lse.data(), delta.data(), dk.p, dv.p, dq_acc.data(), H, HKV,
              SQ, SK, scale, scale_log2, q.rows, k.rows, v.rows, g.rows, dk.rows, dv.rows, s);
        else
          attention_bwd_dkdv2_body<Tr, D, NW, BM, false>(
              q.p, k.p, v.p, g.p, lse.data(), delta.data(), dk.p, dv.p, dq_acc.data(), H, HKV,
              SQ, SK, scale, scale_log2, q.rows, k.rows, v.rows, g.rows, dk.rows, dv.rows, s);
      } else if (causal)
        attention_bwd_dkdv_body<Tr, D, NW, BM, true>(
            q.p, k.p, v.p, g.p, lse.data(), delta.data(), dk.p, dv.p, dq_acc.data(), H, HKV, SQ,
            SK, scale, scale_log2, q.rows, k.rows, v.rows, g.rows, dk.rows, dv.rows, s);
      else
        attention_bwd_dkdv_body<Tr, D, NW, BM, false>(
            q.p, k.p, v.p, g.p, lse.data(), delta.data(), dk.p, dv.p, dq_acc.data(), H, HKV, SQ,
            SK, scale, scale_log2, q.rows, k.rows, v.rows, g.rows, dk.rows, dv.rows, s);
    });
    emu_launch(rgrid, STA_ROW_THREADS, 0, [&](unsigned char*) {
      attention_bwd_convert_body<Tr, D>(dq_acc.data(), dq.p, H, SQ, scale, dq.rows);
    });
  }
  for (auto& [name, b] : bufs) write_file(dir + "/" + name + ".bin", b.data(), b.bytes);
  write_file(dir + "/lse.bin", lse.data(), lse.size() * 4);
  return 0;
}
