// Fused attention backward, dK/dV kernel on Hopper warpgroup MMA (wgmma, sm_90a), 16-bit types:
// the contract of attention_bwd.cu's dK/dV kernels (same arguments, grid, walk over query tiles,
// masking, float32 dQ accumulator updated with red.global.add), with the pre and convert
// kernels from attention_bwd_common.cuh in the same module.
//
// One CTA owns BN = 64 * NWG keys of one (batch, kv head); warpgroup w owns keys 64w..64w+63 and
// keeps their dK and dV (64 x D each) in registers while the CTA walks the query tiles (BM = 64
// rows; Q, dO, lse * log2(e) and delta double-buffered with cp.async). K, V and every Q / dO
// tile sit in shared memory in the 128-byte swizzled layout of wgmma.cuh. Per query tile and
// warpgroup (FlashAttention-3's dK/dV schedule without its producer warps):
//   S^T  = K_w Q^T,   dP^T = V_w dO^T    wgmma m64nBMk16, both operands K-major from smem;
//   P^T  = exp2(S^T * scale * log2e - lse * log2e) (masked: keys >= SK, causal),
//   dS^T = P^T (dP^T - delta)             on the accumulators;
//   dV  += P^T dO,    dK  += dS^T Q      wgmma m64nDk16, A from registers (the accumulators of
//                                         two n8 blocks are one k16 A fragment), B MN-major;
//   dS^T -> shared memory (rounded to the input type, as FlashAttention does), a barrier, then
//   dQ (BM x D / NWG columns per warpgroup) = dS K over the CTA's keys: wgmma with A = dS^T read
//   transposed (MN-major) and B = K (MN-major), added to the float32 accumulator with
//   red.global.add (bulk reductions of the same rows, cp.reduce.async.bulk, measured no faster).
// Two barriers per query tile: (A) the tile has landed and both warpgroups are done with the
// previous one (and with its dS^T), (B) dS^T of the tile is in shared memory.
//
// Compile-time configuration (-D): ST_ATTN_TYPE (0 bf16, 1 f16), ST_ATTN_D (64 or 128),
// ST_ATTN_WARPS (8: two warpgroups), ST_ATTN_BM (64).
// Dynamic shared memory: (2 BN + 4 BM) D * 2 + BN * BM * 2 + 16 BM + 1024 bytes.
#define STA_BWD_STAGGER 1  // measured: -5 % at D128, -6 % at D64 (non-causal), causal neutral
#include "attention_bwd_common.cuh"
#include "attention_wgmma.cuh"

#ifndef ST_ATTN_WARPS
#define ST_ATTN_WARPS 8
#endif
#ifndef ST_ATTN_BM
#define ST_ATTN_BM 64
#endif

template <class Tr, int D, int NWG, int BM, bool CAUSAL>
STA_FN void wg_attention_bwd_body(
    const sta_u16* __restrict__ q, const sta_u16* __restrict__ k, const sta_u16* __restrict__ v,
    const sta_u16* __restrict__ dout, const float* __restrict__ lse,
    const float* __restrict__ delta, sta_u16* __restrict__ dk, sta_u16* __restrict__ dv,
    float* __restrict__ dq_acc, int H, int HKV, int SQ, int SK, float scale, float scale_log2,
    const StaRows& qs, const StaRows& ks, const StaRows& vs, const StaRows& gs,
    const StaRows& dks, const StaRows& dvs, unsigned char* smem_raw) {
  constexpr int BN = 64 * NWG, NT = 128 * NWG, DQN = D / NWG;
  constexpr int KVBYTES = BN * D * 2, QBYTES = BM * D * 2, SBYTES = BN * BM * 2;
  static_assert((D == 64 || D == 128) && BM == 64 && (DQN == 32 || DQN == 64),
                "tiles: D 64 or 128, BM 64, D / NWG columns of dQ per warpgroup 32 or 64");
  unsigned char* smem = wg_align1024(smem_raw);
  unsigned char* sK = smem;
  unsigned char* sV = sK + KVBYTES;
  unsigned char* sQ = sV + KVBYTES;      // [2] tiles
  unsigned char* sO = sQ + 2 * QBYTES;   // [2] tiles of dO
  unsigned char* sS = sO + 2 * QBYTES;   // dS^T: BN key rows of BM queries (one 128-byte block)
  float* sL = reinterpret_cast<float*>(sS + SBYTES);  // [2][BM] lse * log2(e)
  float* sD = sL + 2 * BM;                            // [2][BM] delta
  sta_check_smem(2 * KVBYTES + 4 * QBYTES + SBYTES + 16 * BM + 1024);

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wg = warp >> 2, wl = warp & 3, g = lane >> 2, t = lane & 3;
  const StaBwdWalk<BN, BM, CAUSAL> walk(H, HKV, SQ, SK);
  const int b = walk.b, hk = walk.hk, n0 = walk.n0, diag = walk.diag, total = walk.total;
  auto stage = [&](int j, int nb) {  // query tile j -> buffer nb
    const int m0 = walk.row0(j), hq = walk.head(j);
    wg_load_rows<D, BM, NT>(sQ + nb * QBYTES, qs.head(q, b, hq), qs.s, m0, SQ, tid);
    wg_load_rows<D, BM, NT>(sO + nb * QBYTES, gs.head(dout, b, hq), gs.s, m0, SQ, tid);
    if (tid < BM) {
      const bool ok = m0 + tid < SQ;
      const long long r = ((long long)b * H + hq) * SQ + m0 + tid;
      sL[nb * BM + tid] = ok ? lse[r] * STA_LOG2E : STA_INF;
      sD[nb * BM + tid] = ok ? delta[r] : 0.f;
    }
  };

  wg_load_rows<D, BN, NT>(sK, ks.head(k, b, hk), ks.s, n0, SK, tid);
  wg_load_rows<D, BN, NT>(sV, vs.head(v, b, hk), vs.s, n0, SK, tid);
  if (total > 0) stage(0, 0);
  sta_cp_async_commit();

  float dka[D / 2], dva[D / 2];
#pragma unroll
  for (int i = 0; i < D / 2; ++i) dka[i] = dva[i] = 0.f;
  const unsigned k_addr = wg_smem_addr(sK), v_addr = wg_smem_addr(sV);
  const unsigned s_addr = wg_smem_addr(sS);
  const int key_lo = n0 + 64 * wg + 16 * wl + g;  // this thread's keys: key_lo, key_lo + 8
  // dQ's B operand: K's columns wg * DQN.. (block of 64 columns, then bytes into the row)
  const unsigned kq_addr = k_addr + (wg * DQN / 64) * BN * 128 + (wg * DQN % 64) * 2;

  for (int it = 0; it < total; ++it) {
    const int buf = it & 1;
    sta_cp_async_wait<0>();  // query tile `it` (issued one iteration ago) has landed ...
    wg_fence_proxy_async();  // ... visible to wgmma's reads ...
    sta_sync();              // (A) ... for every thread; all are done with tile it - 1 and sS
    if (it + 1 < total) stage(it + 1, buf ^ 1);
    sta_cp_async_commit();
    const int hq = walk.head(it), m0 = walk.row0(it);
    const unsigned q_addr = wg_smem_addr(sQ + buf * QBYTES);
    const unsigned o_addr = wg_smem_addr(sO + buf * QBYTES);
    const float* cL = sL + buf * BM;
    const float* cD = sD + buf * BM;

    // S^T = K_w Q^T, then dP^T = V_w dO^T, as two wgmma groups (k step kk: head-dim columns
    // 16 kk..); each later step waits only for the group it needs, so the tensor cores run dP^T
    // while P^T is computed, dV while dS^T is computed, and dK while dS^T is stored
    float s[BM / 2], dp[BM / 2];
    wg_fence();
    wg_issue_abt<D, BN, BM>(s, k_addr + wg * 64 * 128, q_addr);
    wg_issue_abt<D, BN, BM>(dp, v_addr + wg * 64 * 128, o_addr);
    wg_wait<1>();  // S^T
    wg_touch(s);

    // P^T on the accumulators: s[4j + e] is key key_lo + 8 (e / 2), query column
    // 8j + 2t + (e % 2) of the tile
    const bool masked = (n0 + BN > SK) || (CAUSAL && n0 + BN - 1 > m0 + diag);
#pragma unroll
    for (int j = 0; j < BM / 8; ++j) {
      const float2 lq = *reinterpret_cast<const float2*>(cL + 8 * j + 2 * t);
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float p = sta_ex2(fmaf(s[4 * j + e], scale_log2, -((e & 1) ? lq.y : lq.x)));
        if (masked) {
          const int n = key_lo + 8 * (e >> 1), m = m0 + 8 * j + 2 * t + (e & 1);
          if (n >= SK || (CAUSAL && n > m + diag)) p = 0.f;
        }
        s[4 * j + e] = p;
      }
    }
    unsigned pa[BM / 16][4], da[BM / 16][4];
    wg_pack<Tr, BM>(pa, s);
    // dV += P^T dO (k: the tile's queries)
    wg_touch(dva);
    wg_fence();
    wg_issue_rs_t<D, BM>(dva, pa, o_addr);
    wg_wait<1>();  // dP^T (dV may still run)
    wg_touch(dp);
#pragma unroll
    for (int j = 0; j < BM / 8; ++j) {
      const float2 dl = *reinterpret_cast<const float2*>(cD + 8 * j + 2 * t);
#pragma unroll
      for (int e = 0; e < 4; ++e)
        dp[4 * j + e] = s[4 * j + e] * (dp[4 * j + e] - ((e & 1) ? dl.y : dl.x));
    }
    wg_pack<Tr, BM>(da, dp);
    // dK += dS^T Q
    wg_touch(dka);
    wg_fence();
    wg_issue_rs_t<D, BM>(dka, da, q_addr);

    // dS^T -> shared memory while those run: row = key (local), 16-byte chunk j = queries 8j..,
    // the pair (2t, 2t + 1) at byte 4t of the chunk; da holds the packed pairs
#pragma unroll
    for (int j = 0; j < BM / 8; ++j) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int row = 64 * wg + 16 * wl + g + 8 * r;
        *reinterpret_cast<unsigned*>(sS + wg_sw128(row, j, BN) + 4 * t) =
            da[j >> 1][2 * (j & 1) + r];
      }
    }
    wg_fence_proxy_async();  // the generic-proxy stores, visible to wgmma's reads ...
    sta_sync();              // (B) ... of both warpgroups' dS^T

    // dQ (BM x DQN) = dS K over the CTA's keys: k step kk covers keys 16 kk.. of both operands;
    // A = dS^T read transposed (M = queries contiguous, one 64-element block), B = K (MN-major)
    float dq[DQN / 2];
    wg_fence();
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) {
      const wg_u64 a = wg_desc(s_addr + kk * 2048, BN * 128, 1024);
      const wg_u64 bk = wg_desc(kq_addr + kk * 2048, BN * 128, 1024);
      if (kk == 0) wg_ss0<DQN, 1, 1>(dq, a, bk);
      else wg_ss<DQN, 1, 1>(dq, a, bk);
    }
    wg_commit();
    wg_wait<0>();  // dV, dK and dQ
    wg_touch(dq);
    wg_touch(dva);
    wg_touch(dka);
    float* dqb = dq_acc + ((long long)b * H + hq) * SQ * D + wg * DQN + 2 * t;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = m0 + 16 * wl + g + 8 * r;
      if (row < SQ) {
#pragma unroll
        for (int j = 0; j < DQN / 8; ++j)
          sta_red_add2(dqb + (long long)row * D + 8 * j, dq[4 * j + 2 * r], dq[4 * j + 2 * r + 1]);
      }
    }
  }
  sta_cp_async_wait<0>();

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int n = key_lo + 8 * r;
    if (n < SK) {
      sta_u16* dkr = dks.row(dk, b, hk, n) + 2 * t;
      sta_u16* dvr = dvs.row(dv, b, hk, n) + 2 * t;
#pragma unroll
      for (int j = 0; j < D / 8; ++j) {
        Tr::store2(dkr + 8 * j, dka[4 * j + 2 * r] * scale, dka[4 * j + 2 * r + 1] * scale);
        Tr::store2(dvr + 8 * j, dva[4 * j + 2 * r], dva[4 * j + 2 * r + 1]);
      }
    }
  }
}

#define STA_WG_BWD_CALL(CAUSAL)                                                                  \
  extern __shared__ __align__(1024) unsigned char smem[];                                        \
  wg_attention_bwd_body<StaTraits, ST_ATTN_D, ST_ATTN_WARPS / 4, ST_ATTN_BM, CAUSAL>(            \
      (const sta_u16*)q, (const sta_u16*)k, (const sta_u16*)v, (const sta_u16*)dout, lse, delta, \
      (sta_u16*)dk, (sta_u16*)dv, dq_acc, H, HKV, SQ, SK, scale, scale_log2, STA_BWD_STRIDES,    \
      smem)

extern "C" __global__ void __launch_bounds__(ST_ATTN_WARPS * 32, 1)
    st_attention_bwd_dkdv_wgmma(STA_BWD_ARGS) {
  STA_WG_BWD_CALL(false);
}
extern "C" __global__ void __launch_bounds__(ST_ATTN_WARPS * 32, 1)
    st_attention_bwd_dkdv_wgmma_causal(STA_BWD_ARGS) {
  STA_WG_BWD_CALL(true);
}
