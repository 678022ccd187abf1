// Shared pieces of the Hopper wgmma attention kernels (attention_fwd_wgmma.cu,
// attention_bwd_wgmma.cu): the wgmma wrappers of the compiled element type chosen by N, the
// swizzled tile load and the packing of accumulators into register A fragments.
#pragma once
#include "attention_common.cuh"
#include "wgmma.cuh"

// D = A * B (ss0), D += A * B (ss), both operands from shared memory; TA / TB = 1: A / B is
// MN-major (transposed read); N = 32, 64 or 128
template <int N, int TA = 0, int TB = 0>
STA_FN void wg_ss0(float (&d)[N / 2], wg_u64 a, wg_u64 b) {
#if ST_ATTN_TYPE == 0
  if constexpr (N == 32) wg_ss0_m64n32k16_bf16<TB, TA>(d, a, b);
  else if constexpr (N == 64) wg_ss0_m64n64k16_bf16<TB, TA>(d, a, b);
  else wg_ss0_m64n128k16_bf16<TB, TA>(d, a, b);
#else
  if constexpr (N == 32) wg_ss0_m64n32k16_f16<TB, TA>(d, a, b);
  else if constexpr (N == 64) wg_ss0_m64n64k16_f16<TB, TA>(d, a, b);
  else wg_ss0_m64n128k16_f16<TB, TA>(d, a, b);
#endif
}
template <int N, int TA = 0, int TB = 0>
STA_FN void wg_ss(float (&d)[N / 2], wg_u64 a, wg_u64 b) {
#if ST_ATTN_TYPE == 0
  if constexpr (N == 32) wg_ss_m64n32k16_bf16<TB, TA>(d, a, b, 1);
  else if constexpr (N == 64) wg_ss_m64n64k16_bf16<TB, TA>(d, a, b, 1);
  else wg_ss_m64n128k16_bf16<TB, TA>(d, a, b, 1);
#else
  if constexpr (N == 32) wg_ss_m64n32k16_f16<TB, TA>(d, a, b, 1);
  else if constexpr (N == 64) wg_ss_m64n64k16_f16<TB, TA>(d, a, b, 1);
  else wg_ss_m64n128k16_f16<TB, TA>(d, a, b, 1);
#endif
}
// D += A * B with A from registers and B from shared memory, MN-major
template <int N>
STA_FN void wg_rs_t(float (&d)[N / 2], const unsigned (&a)[4], wg_u64 b) {
#if ST_ATTN_TYPE == 0
  if constexpr (N == 64) wg_rs_m64n64k16_bf16<1>(d, a, b, 1);
  else wg_rs_m64n128k16_bf16<1>(d, a, b, 1);
#else
  if constexpr (N == 64) wg_rs_m64n64k16_f16<1>(d, a, b, 1);
  else wg_rs_m64n128k16_f16<1>(d, a, b, 1);
#endif
}

// C = A B^T over D columns (issued and committed as one group, not waited for): A is 64 rows of a
// tile of AROWS rows at a_addr (K-major, blocks of 64 columns AROWS * 128 bytes apart), B the
// N = BROWS rows of a tile at b_addr; k step kk reads columns 16 kk.. of both (block kk / 4,
// bytes 32 (kk % 4) into the 128-byte row). S = Q K^T in the forward, S^T = K Q^T and
// dP^T = V dO^T in the backward.
template <int D, int AROWS, int BROWS>
STA_FN void wg_issue_abt(float (&c)[BROWS / 2], unsigned a_addr, unsigned b_addr) {
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    const wg_u64 da = wg_desc(a_addr + (kk >> 2) * AROWS * 128 + (kk & 3) * 32, 16, 1024);
    const wg_u64 db = wg_desc(b_addr + (kk >> 2) * BROWS * 128 + (kk & 3) * 32, 16, 1024);
    if (kk == 0) wg_ss0<BROWS>(c, da, db);
    else wg_ss<BROWS>(c, da, db);
  }
  wg_commit();
}

// C += A B (issued and committed as one group, not waited for): A from registers (KROWS / 16
// k16 fragments), B a tile of KROWS rows of D columns at b_addr, MN-major; k step kk covers
// rows 16 kk.. (2048 bytes further), N = D spans D / 64 blocks of 64 columns KROWS * 128 bytes
// apart. O += P V in the forward, dV += P^T dO and dK += dS^T Q in the backward.
template <int D, int KROWS>
STA_FN void wg_issue_rs_t(float (&c)[D / 2], const unsigned (&a)[KROWS / 16][4],
                          unsigned b_addr) {
#pragma unroll
  for (int kk = 0; kk < KROWS / 16; ++kk)
    wg_rs_t<D>(c, a[kk], wg_desc(b_addr + kk * 2048, KROWS * 128, 1024));
  wg_commit();
}

// ROWS rows of D 16-bit elements from global row row0 (rows >= limit zero-filled; rows
// `stride` elements apart) into a 128B-swizzled shared tile
template <int D, int ROWS, int NT>
STA_FN void wg_load_rows(unsigned char* dst, const sta_u16* src, long long stride, int row0,
                         int limit, int tid) {
  constexpr int CH = D / 8;  // 16-byte chunks per row
#pragma unroll
  for (int i = tid; i < ROWS * CH; i += NT) {
    const int r = i / CH, c = i - r * CH;
    const int gr = row0 + r;
    const bool ok = gr < limit;
    sta_cp_async16(dst + wg_sw128(r, c, ROWS), src + (ok ? gr : 0) * stride + c * 8, ok);
  }
}

// n8 blocks 2kk and 2kk + 1 of an m64nN accumulator (rows g / g + 8 of the warp's 16) are the
// k16 A fragment kk of a register-A wgmma (a0/a1 from the first block, a2/a3 from the second)
template <class Tr, int N>
STA_FN void wg_pack(unsigned (&pa)[N / 16][4], const float (&s)[N / 2]) {
#pragma unroll
  for (int j = 0; j < N / 8; ++j) {
    pa[j >> 1][2 * (j & 1)] = Tr::pack(s[4 * j], s[4 * j + 1]);
    pa[j >> 1][2 * (j & 1) + 1] = Tr::pack(s[4 * j + 2], s[4 * j + 3]);
  }
}

// first 1024-byte boundary at or after p (the swizzled tiles need it)
STA_FN unsigned char* wg_align1024(unsigned char* p) {
  return reinterpret_cast<unsigned char*>((reinterpret_cast<unsigned long long>(p) + 1023) &
                                          ~1023ull);
}
