// Fused attention backward (FlashAttention-2 style), three kernels:
//
// 1. st_attention_bwd_pre: delta = rowsum(dO * O) (float32, (B, H, SQ)) and zeroes the float32
//    dQ accumulator (B, H, SQ, D). Grid (row blocks, H, B): a CTA of STA_ROW_THREADS threads
//    covers STA_ROW_THREADS / (D / 8) rows of one head, D / 8 threads per row.
// 2. st_attention_bwd_dkdv[_causal]: one CTA per (key tile of BN = 16 * ST_ATTN_WARPS keys,
//    kv head, batch) = (blockIdx.x, blockIdx.y, blockIdx.z); each warp owns 16 keys and keeps
//    their dK, dV in registers while the CTA walks every query tile (ST_ATTN_BM rows) of every
//    query head sharing this kv head (GQA), double-buffering Q, dO, lse and delta through
//    shared memory with cp.async. Per query tile, with scores recomputed from q, k and the
//    forward's logsumexp:
//      S^T = K Q^T, P^T = exp2(S^T * scale * log2e - lse * log2e)      (mask: keys >= SK, causal)
//      dV += P^T dO,  dP^T = V dO^T,  dS^T = P^T (dP^T - delta),  dK += dS^T Q
//    then dS^T goes to shared memory (rounded to the input type, as FA2 does), and the CTA
//    computes its share dQ_partial = dS K (BM x D, split over the warps) and adds it to the
//    float32 accumulator with red.global.add.v2.f32. dQ is therefore NOT bitwise deterministic
//    (the order of the atomic additions varies); dK and dV are.
//    Causal: a key tile starts at the first query tile that can see it, and only tiles crossing
//    the diagonal pay for the mask.
// 3. st_attention_bwd_convert: dQ = accumulator * scale, in the input type (kernel 1's grid).
// q, k, v, dO, O, dQ, dK and dV are (B, heads, S, D) operands addressed through StaRows strides
// (attention_common.cuh), so views of packed projections and their gradient buffers need no
// copies; lse, delta and the dQ accumulator are dense (B, H, SQ[, D]).
// st_attention_bwd_dkdv2[_causal] (16-bit types) replaces kernel 2 with FlashAttention-2's warp
// layouts (described at its body below); the host picks one by AttentionConfig.bwd_version.
//
// dK is scaled by `scale` at the end; dQ by the convert kernel. Query rows that saw no key in
// the forward have lse = +inf, so their P is 0 and they contribute nothing.
//
// Compile-time configuration (-D): ST_ATTN_TYPE, ST_ATTN_D as in attention_fwd.cu,
// ST_ATTN_WARPS (warps per CTA of the dK/dV kernel), ST_ATTN_BM (query rows per step, a
// multiple of 16 with (BM / 16) dividing the warp count).
// Dynamic shared memory of the dK/dV kernel:
//   (2 * BN + 4 * BM) * (D * ES + 16) + BN * (BM * ES + 16) + 4 * BM * 4 bytes.
#include "attention_bwd_common.cuh"

#ifndef ST_ATTN_WARPS
#define ST_ATTN_WARPS 4
#endif
#ifndef ST_ATTN_BM
#define ST_ATTN_BM 64
#endif
template <class Tr, int D, int NW, int BM, bool CAUSAL>
STA_FN void attention_bwd_dkdv_body(
    const typename Tr::T* __restrict__ q, const typename Tr::T* __restrict__ k,
    const typename Tr::T* __restrict__ v, const typename Tr::T* __restrict__ dout,
    const float* __restrict__ lse, const float* __restrict__ delta,
    typename Tr::T* __restrict__ dk, typename Tr::T* __restrict__ dv,
    float* __restrict__ dq_acc, int H, int HKV, int SQ, int SK, float scale, float scale_log2,
    const StaRows& qs, const StaRows& ks, const StaRows& vs, const StaRows& gs,
    const StaRows& dks, const StaRows& dvs, unsigned char* smem) {
  typedef typename Tr::T T;
  typedef typename Tr::FragA FragA;
  typedef typename Tr::FragB FragB;
  constexpr int BN = 16 * NW, NT = 32 * NW, KS = Tr::KSTEP, ES = Tr::ES;
  constexpr int ROW = D * ES + 16, SROW = BM * ES + 16;
  constexpr int MCH = BM / 16, DPARTS = NW / MCH, DW = D / DPARTS;  // dQ work split
  static_assert(D % 32 == 0 && BM % 16 == 0 && NW % MCH == 0 && DW % 16 == 0, "bad tiles");
  unsigned char* sK = smem;
  unsigned char* sV = sK + BN * ROW;
  unsigned char* sQ = sV + BN * ROW;        // [2][BM] rows
  unsigned char* sO = sQ + 2 * BM * ROW;    // [2][BM] rows of dO
  unsigned char* sS = sO + 2 * BM * ROW;    // dS^T: [BN][BM]
  float* sL = reinterpret_cast<float*>(sS + BN * SROW);  // [2][BM] lse * log2(e)
  float* sD = sL + 2 * BM;                               // [2][BM] delta
  sta_check_smem((2 * BN + 4 * BM) * ROW + BN * SROW + 16 * BM);

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t = lane & 3;
  const StaBwdWalk<BN, BM, CAUSAL> walk(H, HKV, SQ, SK);
  const int b = walk.b, hk = walk.hk, n0 = walk.n0, diag = walk.diag, total = walk.total;
  auto issue = [&](int j, int nb) {
    walk.template stage<ES, D, NT>(j, nb, q, dout, qs, gs, lse, delta, H, SQ, sQ, sO, sL, sD,
                                   tid);
  };

  sta_load_rows<ES, D, BN, NT, false>(sK, ks.head(k, b, hk), n0, SK, ks.s, tid);
  sta_load_rows<ES, D, BN, NT, false>(sV, vs.head(v, b, hk), n0, SK, vs.s, tid);
  if (total > 0) issue(0, 0);
  sta_cp_async_commit();

  float dka[D / 8][4], dva[D / 8][4];
#pragma unroll
  for (int j = 0; j < D / 8; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) dka[j][e] = dva[j][e] = 0.f;
  const int n_lo = n0 + warp * 16 + g;  // this thread's keys: n_lo and n_lo + 8

  for (int it = 0; it < total; ++it) {
    const int buf = it & 1;
    sta_cp_async_wait<0>();  // query tile `it` (issued one iteration ago) has landed
    sta_sync();  // for every thread; everyone is done with tile it - 1 and with dS^T
    if (it + 1 < total) issue(it + 1, buf ^ 1);
    sta_cp_async_commit();
    const int hq = walk.head(it), m0 = walk.row0(it);
    const unsigned char* cQ = sQ + buf * BM * ROW;
    const unsigned char* cO = sO + buf * BM * ROW;
    const float* cL = sL + buf * BM;
    const float* cD = sD + buf * BM;

    // S^T (16 keys x BM queries) = K_w Q^T
    float s[BM / 8][4];
#pragma unroll
    for (int j = 0; j < BM / 8; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / KS; ++kk) {
      FragA ka;
      Tr::load_a(ka, sK, warp * 16, kk * KS, ROW);
#pragma unroll
      for (int mp = 0; mp < BM / 16; ++mp) {
        FragB bb[2];
        Tr::load_b_nk(bb, cQ, mp * 16, kk * KS, ROW);
        Tr::mma(s[2 * mp], ka, bb[0]);
        Tr::mma(s[2 * mp + 1], ka, bb[1]);
      }
    }
    const bool masked = (n0 + BN > SK) || (CAUSAL && n0 + BN - 1 > m0 + diag);
#pragma unroll
    for (int j = 0; j < BM / 8; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int ml = j * 8 + 2 * t + (e & 1);
        float p = sta_ex2(s[j][e] * scale_log2 - cL[ml]);
        if (masked) {
          const int n = n_lo + (e >> 1) * 8, m = m0 + ml;
          if (n >= SK || (CAUSAL && n > m + diag)) p = 0.f;
        }
        s[j][e] = p;
      }
    }
    // dV += P^T dO
#pragma unroll
    for (int kk = 0; kk < BM / KS; ++kk) {
      FragA pa;
      Tr::a_from_c(pa, s, kk);
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        FragB bb[2];
        Tr::load_b_kn(bb, cO, kk * KS, dp * 16, ROW);
        Tr::mma(dva[2 * dp], pa, bb[0]);
        Tr::mma(dva[2 * dp + 1], pa, bb[1]);
      }
    }
    // dP^T = V_w dO^T, then dS^T = P^T (dP^T - delta)
    float ds[BM / 8][4];
#pragma unroll
    for (int j = 0; j < BM / 8; ++j) ds[j][0] = ds[j][1] = ds[j][2] = ds[j][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / KS; ++kk) {
      FragA va;
      Tr::load_a(va, sV, warp * 16, kk * KS, ROW);
#pragma unroll
      for (int mp = 0; mp < BM / 16; ++mp) {
        FragB bb[2];
        Tr::load_b_nk(bb, cO, mp * 16, kk * KS, ROW);
        Tr::mma(ds[2 * mp], va, bb[0]);
        Tr::mma(ds[2 * mp + 1], va, bb[1]);
      }
    }
#pragma unroll
    for (int j = 0; j < BM / 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) ds[j][e] = s[j][e] * (ds[j][e] - cD[j * 8 + 2 * t + (e & 1)]);
    // dK += dS^T Q
#pragma unroll
    for (int kk = 0; kk < BM / KS; ++kk) {
      FragA da;
      Tr::a_from_c(da, ds, kk);
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        FragB bb[2];
        Tr::load_b_kn(bb, cQ, kk * KS, dp * 16, ROW);
        Tr::mma(dka[2 * dp], da, bb[0]);
        Tr::mma(dka[2 * dp + 1], da, bb[1]);
      }
    }
    // dS^T -> shared memory, rows = this warp's keys
#pragma unroll
    for (int j = 0; j < BM / 8; ++j)
#pragma unroll
      for (int i = 0; i < 2; ++i)
        Tr::store2(reinterpret_cast<T*>(sS + (warp * 16 + g + 8 * i) * SROW) + j * 8 + 2 * t,
                   ds[j][2 * i], ds[j][2 * i + 1]);
    sta_sync();
    // dQ_partial (rows mc*16.., cols dpart*DW..) = dS K over this CTA's keys
    {
      const int mc = warp % MCH, dpart = warp / MCH;
      float dq[DW / 8][4];
#pragma unroll
      for (int j = 0; j < DW / 8; ++j) dq[j][0] = dq[j][1] = dq[j][2] = dq[j][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < BN / KS; ++kk) {
        FragA sa;
        Tr::load_a_kn(sa, sS, mc * 16, kk * KS, SROW);
#pragma unroll
        for (int np = 0; np < DW / 16; ++np) {
          FragB bb[2];
          Tr::load_b_kn(bb, sK, kk * KS, dpart * DW + np * 16, ROW);
          Tr::mma(dq[2 * np], sa, bb[0]);
          Tr::mma(dq[2 * np + 1], sa, bb[1]);
        }
      }
      float* dqb = dq_acc + (long long)(b * H + hq) * SQ * D + dpart * DW + 2 * t;
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const int row = m0 + mc * 16 + g + 8 * i;
        if (row < SQ) {
#pragma unroll
          for (int j = 0; j < DW / 8; ++j)
            sta_red_add2(dqb + (long long)row * D + j * 8, dq[j][2 * i], dq[j][2 * i + 1]);
        }
      }
    }
  }
  sta_cp_async_wait<0>();

#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int n = n_lo + 8 * i;
    if (n < SK) {
      T* dkr = dks.row(dk, b, hk, n) + 2 * t;
      T* dvr = dvs.row(dv, b, hk, n) + 2 * t;
#pragma unroll
      for (int j = 0; j < D / 8; ++j) {
        Tr::store2(dkr + j * 8, dka[j][2 * i] * scale, dka[j][2 * i + 1] * scale);
        Tr::store2(dvr + j * 8, dva[j][2 * i], dva[j][2 * i + 1]);
      }
    }
  }
}

// ---- dK/dV kernel v2 (16-bit types): FlashAttention-2's warp layouts ------------------------
// v1 above gives each warp 16 keys for every product, so each Q / dO / K fragment read from
// shared memory feeds one m16 tile: about 340 bytes of ldmatrix per MMA at D128, which bounds
// it by shared-memory bandwidth. v2 changes the warp layout per product (BN = 16 * NW keys,
// BM query rows per step, NW = 8 warps):
//   S^T, dP^T   (BN x BM):  NW/2 key blocks of 32 keys x 2 query blocks of BM/2;
//   dV, dK      (BN x D):   NW/2 key blocks of 32 keys x 2 column blocks of D/2;
//   dQ          (BM x D):   BM/32 query blocks of 32 rows x the rest of the warps over columns;
// every fragment then feeds two m16 tiles (about 240 bytes per MMA). P^T and dS^T go through
// shared memory (rounded to the input type, as FA2 does) because the warp that computes a
// score block is not the one that needs it for dV/dK. Two barriers per query tile, as in v1:
// (A) the tile has landed and every warp is done with the previous one, (B) P^T and dS^T are
// written. Masking, GQA, causal start and dQ accumulation are v1's.
// Shared memory: (2 * BN + 4 * BM) * (D * ES + 16) + 2 * BN * (BM * ES + 16) + 16 * BM bytes.
template <class Tr, int D, int NW, int BM, bool CAUSAL>
STA_FN void attention_bwd_dkdv2_body(
    const typename Tr::T* __restrict__ q, const typename Tr::T* __restrict__ k,
    const typename Tr::T* __restrict__ v, const typename Tr::T* __restrict__ dout,
    const float* __restrict__ lse, const float* __restrict__ delta,
    typename Tr::T* __restrict__ dk, typename Tr::T* __restrict__ dv,
    float* __restrict__ dq_acc, int H, int HKV, int SQ, int SK, float scale, float scale_log2,
    const StaRows& qs, const StaRows& ks, const StaRows& vs, const StaRows& gs,
    const StaRows& dks, const StaRows& dvs, unsigned char* smem) {
  typedef typename Tr::T T;
  typedef typename Tr::FragA FragA;
  typedef typename Tr::FragB FragB;
  constexpr int BN = 16 * NW, NT = 32 * NW, ES = Tr::ES;
  constexpr int ROW = D * ES + 16, SROW = BM * ES + 16;
  constexpr int QB = BM / 2;                          // S^T / dP^T: queries per warp
  constexpr int DH = D / 2;                           // dV / dK: columns per warp
  constexpr int MQ = BM / 32, DQW = D / (NW / MQ);    // dQ: query blocks, columns per warp
  static_assert(Tr::KSTEP == 16, "v2 is for 16-bit types (natural-order fragments only)");
  static_assert(NW % 2 == 0 && QB % 16 == 0 && BM % 32 == 0 && NW % MQ == 0 &&
                DQW % 16 == 0 && DH % 16 == 0, "bad tiles");
  unsigned char* sK = smem;
  unsigned char* sV = sK + BN * ROW;
  unsigned char* sQ = sV + BN * ROW;      // [2][BM] rows
  unsigned char* sO = sQ + 2 * BM * ROW;  // [2][BM] rows of dO
  unsigned char* sP = sO + 2 * BM * ROW;  // P^T:  [BN][BM]
  unsigned char* sS = sP + BN * SROW;     // dS^T: [BN][BM]
  float* sL = reinterpret_cast<float*>(sS + BN * SROW);  // [2][BM] lse * log2(e)
  float* sD = sL + 2 * BM;                               // [2][BM] delta
  sta_check_smem((2 * BN + 4 * BM) * ROW + 2 * BN * SROW + 16 * BM);

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t = lane & 3;
  const StaBwdWalk<BN, BM, CAUSAL> walk(H, HKV, SQ, SK);
  const int b = walk.b, hk = walk.hk, n0 = walk.n0, diag = walk.diag, total = walk.total;
  auto issue = [&](int j, int nb) {
    walk.template stage<ES, D, NT>(j, nb, q, dout, qs, gs, lse, delta, H, SQ, sQ, sO, sL, sD,
                                   tid);
  };

  sta_load_rows<ES, D, BN, NT, false>(sK, ks.head(k, b, hk), n0, SK, ks.s, tid);
  sta_load_rows<ES, D, BN, NT, false>(sV, vs.head(v, b, hk), n0, SK, vs.s, tid);
  if (total > 0) issue(0, 0);
  sta_cp_async_commit();

  // warp roles: key block kw (32 keys) for S^T, dP^T, dV, dK; query half qh for S^T / dP^T;
  // column half dh for dV / dK; query block mq and column block dc for dQ
  const int kw = warp % (NW / 2), qh = warp / (NW / 2), dh = qh;
  const int mq = warp % MQ, dc = warp / MQ;
  float dka[2][DH / 8][4], dva[2][DH / 8][4];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < DH / 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) dka[i][j][e] = dva[i][j][e] = 0.f;

  for (int it = 0; it < total; ++it) {
    const int buf = it & 1;
    sta_cp_async_wait<0>();  // query tile `it` (issued one iteration ago) has landed
    sta_sync();  // (A) for every thread; everyone is done with tile it - 1, sP and sS
    if (it + 1 < total) issue(it + 1, buf ^ 1);
    sta_cp_async_commit();
    const int hq = walk.head(it), m0 = walk.row0(it);
    const unsigned char* cQ = sQ + buf * BM * ROW;
    const unsigned char* cO = sO + buf * BM * ROW;
    const float* cL = sL + buf * BM;
    const float* cD = sD + buf * BM;

    {  // S^T = K Q^T and dP^T = V dO^T for keys kw*32.., queries qh*QB..; P^T, dS^T -> smem
      float s[2][QB / 8][4], dp[2][QB / 8][4];
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < QB / 8; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e) s[i][j][e] = dp[i][j][e] = 0.f;
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        FragA ka[2], va[2];
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          Tr::load_a(ka[i], sK, kw * 32 + 16 * i, kk * 16, ROW);
          Tr::load_a(va[i], sV, kw * 32 + 16 * i, kk * 16, ROW);
        }
#pragma unroll
        for (int np = 0; np < QB / 16; ++np) {
          FragB qf[2], of[2];
          Tr::load_b_nk(qf, cQ, qh * QB + np * 16, kk * 16, ROW);
          Tr::load_b_nk(of, cO, qh * QB + np * 16, kk * 16, ROW);
#pragma unroll
          for (int i = 0; i < 2; ++i) {
            Tr::mma(s[i][2 * np], ka[i], qf[0]);
            Tr::mma(s[i][2 * np + 1], ka[i], qf[1]);
            Tr::mma(dp[i][2 * np], va[i], of[0]);
            Tr::mma(dp[i][2 * np + 1], va[i], of[1]);
          }
        }
      }
      const bool masked = (n0 + BN > SK) || (CAUSAL && n0 + BN - 1 > m0 + diag);
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const int key_lo = kw * 32 + 16 * i + g;  // local key rows key_lo, key_lo + 8
#pragma unroll
        for (int j = 0; j < QB / 8; ++j) {
          const int ml = qh * QB + j * 8 + 2 * t;  // local query columns ml, ml + 1
          float p[4], d[4];
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int mc = ml + (e & 1);
            float pe = sta_ex2(s[i][j][e] * scale_log2 - cL[mc]);
            if (masked) {
              const int n = n0 + key_lo + (e >> 1) * 8, m = m0 + mc;
              if (n >= SK || (CAUSAL && n > m + diag)) pe = 0.f;
            }
            p[e] = pe;
            d[e] = pe * (dp[i][j][e] - cD[mc]);
          }
#pragma unroll
          for (int r = 0; r < 2; ++r) {
            const int off = (key_lo + 8 * r) * SROW + ml * ES;
            Tr::store2(reinterpret_cast<T*>(sP + off), p[2 * r], p[2 * r + 1]);
            Tr::store2(reinterpret_cast<T*>(sS + off), d[2 * r], d[2 * r + 1]);
          }
        }
      }
    }
    sta_sync();  // (B) P^T and dS^T of the whole tile are in shared memory

    // dV += P^T dO and dK += dS^T Q for keys kw*32.., columns dh*DH..
#pragma unroll
    for (int kk = 0; kk < BM / 16; ++kk) {
      FragA pa[2], sa[2];
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        Tr::load_a(pa[i], sP, kw * 32 + 16 * i, kk * 16, SROW);
        Tr::load_a(sa[i], sS, kw * 32 + 16 * i, kk * 16, SROW);
      }
#pragma unroll
      for (int np = 0; np < DH / 16; ++np) {
        FragB of[2], qf[2];
        Tr::load_b_kn(of, cO, kk * 16, dh * DH + np * 16, ROW);
        Tr::load_b_kn(qf, cQ, kk * 16, dh * DH + np * 16, ROW);
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          Tr::mma(dva[i][2 * np], pa[i], of[0]);
          Tr::mma(dva[i][2 * np + 1], pa[i], of[1]);
          Tr::mma(dka[i][2 * np], sa[i], qf[0]);
          Tr::mma(dka[i][2 * np + 1], sa[i], qf[1]);
        }
      }
    }

    {  // dQ_partial (rows mq*32.., columns dc*DQW..) = dS K over this CTA's keys
      float dq[2][DQW / 8][4];
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < DQW / 8; ++j) dq[i][j][0] = dq[i][j][1] = dq[i][j][2] = dq[i][j][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < BN / 16; ++kk) {
        FragA da[2];
#pragma unroll
        for (int i = 0; i < 2; ++i) Tr::load_a_kn(da[i], sS, mq * 32 + 16 * i, kk * 16, SROW);
#pragma unroll
        for (int np = 0; np < DQW / 16; ++np) {
          FragB kf[2];
          Tr::load_b_kn(kf, sK, kk * 16, dc * DQW + np * 16, ROW);
#pragma unroll
          for (int i = 0; i < 2; ++i) {
            Tr::mma(dq[i][2 * np], da[i], kf[0]);
            Tr::mma(dq[i][2 * np + 1], da[i], kf[1]);
          }
        }
      }
      float* dqb = dq_acc + (long long)(b * H + hq) * SQ * D + dc * DQW + 2 * t;
#pragma unroll
      for (int i = 0; i < 2; ++i) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const int row = m0 + mq * 32 + 16 * i + g + 8 * r;
          if (row < SQ) {
#pragma unroll
            for (int j = 0; j < DQW / 8; ++j)
              sta_red_add2(dqb + (long long)row * D + j * 8, dq[i][j][2 * r], dq[i][j][2 * r + 1]);
          }
        }
      }
    }
  }
  sta_cp_async_wait<0>();

#pragma unroll
  for (int i = 0; i < 2; ++i) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int n = n0 + kw * 32 + 16 * i + g + 8 * r;
      if (n < SK) {
        T* dkr = dks.row(dk, b, hk, n) + dh * DH + 2 * t;
        T* dvr = dvs.row(dv, b, hk, n) + dh * DH + 2 * t;
#pragma unroll
        for (int j = 0; j < DH / 8; ++j) {
          Tr::store2(dkr + j * 8, dka[i][j][2 * r] * scale, dka[i][j][2 * r + 1] * scale);
          Tr::store2(dvr + j * 8, dva[i][j][2 * r], dva[i][j][2 * r + 1]);
        }
      }
    }
  }
}

#ifndef SCITENSOR_EMULATE
#define STA_BWD_CALL(CAUSAL)                                                                  \
  extern __shared__ __align__(16) unsigned char smem[];                                       \
  attention_bwd_dkdv_body<StaTraits, ST_ATTN_D, ST_ATTN_WARPS, ST_ATTN_BM, CAUSAL>(           \
      (const StaT*)q, (const StaT*)k, (const StaT*)v, (const StaT*)dout, lse, delta, (StaT*)dk, \
      (StaT*)dv, dq_acc, H, HKV, SQ, SK, scale, scale_log2, STA_BWD_STRIDES, smem)

extern "C" __global__ void __launch_bounds__(ST_ATTN_WARPS * 32)
    st_attention_bwd_dkdv(STA_BWD_ARGS) {
  STA_BWD_CALL(false);
}
extern "C" __global__ void __launch_bounds__(ST_ATTN_WARPS * 32)
    st_attention_bwd_dkdv_causal(STA_BWD_ARGS) {
  STA_BWD_CALL(true);
}
// v2 exists where its tiles fit: 16-bit types, BM a multiple of 32, dQ columns per warp a
// multiple of 16 (attention.py's AttentionConfig.check mirrors this)
#define STA_BWD2_DQW (ST_ATTN_D * ST_ATTN_BM / (32 * ST_ATTN_WARPS))
#if ST_ATTN_TYPE < 2 && ST_ATTN_BM % 32 == 0 && ST_ATTN_WARPS % 2 == 0 && \
    ST_ATTN_WARPS % (ST_ATTN_BM / 32) == 0 && STA_BWD2_DQW >= 16 && STA_BWD2_DQW % 16 == 0
#define STA_BWD2_CALL(CAUSAL)                                                                 \
  extern __shared__ __align__(16) unsigned char smem[];                                       \
  attention_bwd_dkdv2_body<StaTraits, ST_ATTN_D, ST_ATTN_WARPS, ST_ATTN_BM, CAUSAL>(          \
      (const StaT*)q, (const StaT*)k, (const StaT*)v, (const StaT*)dout, lse, delta, (StaT*)dk, \
      (StaT*)dv, dq_acc, H, HKV, SQ, SK, scale, scale_log2, STA_BWD_STRIDES, smem)

extern "C" __global__ void __launch_bounds__(ST_ATTN_WARPS * 32)
    st_attention_bwd_dkdv2(STA_BWD_ARGS) {
  STA_BWD2_CALL(false);
}
extern "C" __global__ void __launch_bounds__(ST_ATTN_WARPS * 32)
    st_attention_bwd_dkdv2_causal(STA_BWD_ARGS) {
  STA_BWD2_CALL(true);
}
#endif
#endif
