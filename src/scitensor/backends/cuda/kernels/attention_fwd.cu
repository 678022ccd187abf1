// Fused attention forward (FlashAttention-2 style): out = softmax(q k^T * scale) v and the
// per-row logsumexp, without materialising the score matrix.
//
// One CTA owns BM = 16 * ST_ATTN_MW * ST_ATTN_WARPS query rows of one (batch, head); each warp
// owns 16 * ST_ATTN_MW of them (MW = 2 reuses every K/V fragment read from shared memory for two
// m16 tiles, halving shared-memory traffic per MMA). Q is loaded once into registers (A
// fragments) when they fit, else re-read per tile from shared memory; K and V tiles of
// ST_ATTN_BN keys stream through shared memory with cp.async, double-buffered (tile j+1 loads
// while tile j computes).
// Per tile: S = Q K^T on tensor cores, the online softmax in registers (running max m, running
// sum l, rescale of the output accumulator by 2^(m_old - m_new)), then O += P V with P taken
// straight from the S accumulators (see attention_common.cuh). The running max stays in raw
// score units and scale * log2(e) is folded into one FFMA per probability before its ex2,
// which needs scale > 0 (the host sends other scales to the composition); O is rescaled only
// when a row max of the warp moved.
//
// Masking: keys >= SK (last tile) and, with causal, key j > row i + (SK - SQ) (bottom-right
// aligned) are -inf; only tiles that need it pay for the mask, and with causal the CTA stops at
// the last key its last row can see, so fully masked tiles are never loaded. CTAs of causal
// launches take the heaviest query tiles first.
//
// Grid: one CTA per (query tile, head, batch) = (blockIdx.x, blockIdx.y, blockIdx.z).
// Operands: q (B, H, SQ, D), k and v (B, HKV, SK, D) and out (B, H, SQ, D) anywhere in memory,
// each addressed through its own StaRows strides (a view of a (B, S, 3, H, D) projection, say).
// Outputs: out in the input type; lse (B, H, SQ) float32 and dense, natural log, +inf for
// rows that see no key (their output row is 0).
//
// Compile-time configuration (-D): ST_ATTN_TYPE (attention_common.cuh), ST_ATTN_D (32, 64,
// 128), ST_ATTN_WARPS (warps per CTA), ST_ATTN_MW (m16 tiles per warp, 1 or 2), ST_ATTN_BN
// (keys per tile, a multiple of 16), ST_ATTN_LAZY_RESCALE (1: skip the O rescale when no row
// max of the warp moved).
// Dynamic shared memory: (BM + 4 * BN) * (D * ES + 16) bytes.
#include "attention_common.cuh"

#ifndef ST_ATTN_WARPS
#define ST_ATTN_WARPS 4
#endif
#ifndef ST_ATTN_BN
#define ST_ATTN_BN 64
#endif
#ifndef ST_ATTN_MW
#define ST_ATTN_MW 1
#endif
#ifndef ST_ATTN_LAZY_RESCALE
#define ST_ATTN_LAZY_RESCALE 0
#endif

template <class Tr, int D, int NW, int MW, int BN, bool CAUSAL>
STA_FN void attention_fwd_body(const typename Tr::T* __restrict__ q,
                               const typename Tr::T* __restrict__ k,
                               const typename Tr::T* __restrict__ v,
                               typename Tr::T* __restrict__ out, float* __restrict__ lse,
                               int H, int HKV, int SQ, int SK, float scale_log2,
                               const StaRows& qs, const StaRows& ks, const StaRows& vs,
                               const StaRows& os, unsigned char* smem) {
  typedef typename Tr::T T;
  typedef typename Tr::FragA FragA;
  typedef typename Tr::FragB FragB;
  constexpr int BM = 16 * MW * NW, NT = 32 * NW, KS = Tr::KSTEP, ES = Tr::ES;
  constexpr int ROW = D * ES + 16;
  // Q fragments stay in registers when they take at most 32 registers (64 with one m tile)
  constexpr int QREGS = MW * (D / KS) * 4 * Tr::SPLIT;
  constexpr bool QREG = QREGS <= 32 || (MW == 1 && QREGS <= 64);
  static_assert(D % 32 == 0 && BN % 16 == 0, "head dim must be a multiple of 32, BN of 16");
  unsigned char* sQ = smem;
  unsigned char* sK = sQ + BM * ROW;      // [2][BN] rows
  unsigned char* sV = sK + 2 * BN * ROW;  // [2][BN] rows
  sta_check_smem((BM + 4 * BN) * ROW);

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int h = blockIdx.y, b = blockIdx.z, hk = h / (H / HKV);
  // heaviest tiles first (CTAs start in x order)
  const int m0 = (CAUSAL ? (SQ + BM - 1) / BM - 1 - (int)blockIdx.x : (int)blockIdx.x) * BM;
  const T* qb = qs.head(q, b, h);
  const T* kb = ks.head(k, b, hk);
  const T* vb = vs.head(v, b, hk);
  const int diag = SK - SQ;  // row i sees keys j <= i + diag (causal)
  const int n_end = CAUSAL ? sta_imin(SK, m0 + BM + diag) : SK;  // keys [0, n_end) are seen

  if (n_end > 0) {
    sta_load_rows<ES, D, BM, NT, true>(sQ, qb, m0, SQ, qs.s, tid);
    sta_load_rows<ES, D, BN, NT, true>(sK, kb, 0, SK, ks.s, tid);
    sta_load_rows<ES, D, BN, NT, true>(sV, vb, 0, SK, vs.s, tid);
  }
  sta_cp_async_commit();

  // this warp owns query rows wrow + 16 i + {g, g + 8}, i < MW
  const int wrow = warp * 16 * MW;
  float o[MW][D / 8][4];
  float mrow[MW][2], lrow[MW][2];  // running max (log2 units), partial running sum
#pragma unroll
  for (int i = 0; i < MW; ++i) {
    mrow[i][0] = mrow[i][1] = -STA_INF;
    lrow[i][0] = lrow[i][1] = 0.f;
#pragma unroll
    for (int j = 0; j < D / 8; ++j) o[i][j][0] = o[i][j][1] = o[i][j][2] = o[i][j][3] = 0.f;
  }
  FragA qf[QREG ? MW : 1][QREG ? D / KS : 1];

  // key tiles n0 = 0, BN, ... below n_end, double-buffered (buf = (n0 / BN) % 2)
  for (int n0 = 0, buf = 0; n0 < n_end; n0 += BN, buf ^= 1) {
    sta_cp_async_wait<0>();  // this tile (issued one iteration ago) has landed
    sta_sync();              // ... for every thread; and everyone is done with the previous one
    if (n0 + BN < n_end) {   // so its buffer takes the next tile while this one computes
      sta_load_rows<ES, D, BN, NT, true>(sK + (buf ^ 1) * BN * ROW, kb, n0 + BN, SK, ks.s,
                                         tid);
      sta_load_rows<ES, D, BN, NT, true>(sV + (buf ^ 1) * BN * ROW, vb, n0 + BN, SK, vs.s,
                                         tid);
    }
    sta_cp_async_commit();
    if (QREG && n0 == 0) {
#pragma unroll
      for (int i = 0; i < MW; ++i)
#pragma unroll
        for (int kk = 0; kk < D / KS; ++kk)
          Tr::load_a(qf[QREG ? i : 0][QREG ? kk : 0], sQ, wrow + 16 * i, kk * KS, ROW);
    }
    const unsigned char* cK = sK + buf * BN * ROW;
    const unsigned char* cV = sV + buf * BN * ROW;

    // S = Q K^T
    float s[MW][BN / 8][4];
#pragma unroll
    for (int i = 0; i < MW; ++i)
#pragma unroll
      for (int j = 0; j < BN / 8; ++j) s[i][j][0] = s[i][j][1] = s[i][j][2] = s[i][j][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / KS; ++kk) {
      FragA qa[MW];
      if (!QREG) {
#pragma unroll
        for (int i = 0; i < MW; ++i) Tr::load_a(qa[i], sQ, wrow + 16 * i, kk * KS, ROW);
      }
#pragma unroll
      for (int np = 0; np < BN / 16; ++np) {
        FragB bb[2];
        Tr::load_b_nk(bb, cK, np * 16, kk * KS, ROW);
#pragma unroll
        for (int i = 0; i < MW; ++i) {
          const FragA& a = QREG ? qf[QREG ? i : 0][QREG ? kk : 0] : qa[i];
          Tr::mma(s[i][2 * np], a, bb[0]);
          Tr::mma(s[i][2 * np + 1], a, bb[1]);
        }
      }
    }

    // online softmax, one m16 tile at a time; the running max is in raw score units (scale
    // > 0 keeps the order), so each probability is one FFMA and one ex2
    const bool masked = (n0 + BN > SK) || (CAUSAL && n0 + BN - 1 > m0 + diag);
#pragma unroll
    for (int i = 0; i < MW; ++i) {
      const int r_lo = m0 + wrow + 16 * i + g;
      float mx[2] = {-STA_INF, -STA_INF};
#pragma unroll
      for (int j = 0; j < BN / 8; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          if (masked) {
            const int col = n0 + j * 8 + 2 * t + (e & 1), row = r_lo + (e >> 1) * 8;
            if (col >= SK || (CAUSAL && col > row + diag)) s[i][j][e] = -STA_INF;
          }
          mx[e >> 1] = fmaxf(mx[e >> 1], s[i][j][e]);
        }
      }
      float nbase[2], alpha[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        mx[r] = fmaxf(mx[r], sta_shfl_xor(mx[r], 1));  // a row lives in the 4 lanes of a group
        mx[r] = fmaxf(mx[r], sta_shfl_xor(mx[r], 2));
        const float mnew = fmaxf(mrow[i][r], mx[r]);
        // all masked so far: a base of 0 keeps exp2 away from NaN
        nbase[r] = mnew == -STA_INF ? 0.f : -mnew * scale_log2;
        alpha[r] = mrow[i][r] == mnew ? 1.f : sta_ex2(fmaf(mrow[i][r], scale_log2, nbase[r]));
        mrow[i][r] = mnew;
        lrow[i][r] *= alpha[r];
      }
      // ST_ATTN_LAZY_RESCALE: rescale O only when a row max of this warp moved (after the
      // first tiles it rarely does); else every tile, as FA2 does
      if (!ST_ATTN_LAZY_RESCALE || sta_any(alpha[0] != 1.f || alpha[1] != 1.f)) {
#pragma unroll
        for (int r = 0; r < 2; ++r)
#pragma unroll
          for (int j = 0; j < D / 8; ++j) {
            o[i][j][2 * r] *= alpha[r];
            o[i][j][2 * r + 1] *= alpha[r];
          }
      }
#pragma unroll
      for (int j = 0; j < BN / 8; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float p = sta_ex2(fmaf(s[i][j][e], scale_log2, nbase[e >> 1]));
          s[i][j][e] = p;
          lrow[i][e >> 1] += p;
        }
      }
    }

    // O += P V
#pragma unroll
    for (int kk = 0; kk < BN / KS; ++kk) {
      FragA pa[MW];
#pragma unroll
      for (int i = 0; i < MW; ++i) Tr::a_from_c(pa[i], s[i], kk);
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        FragB bb[2];
        Tr::load_b_kn(bb, cV, kk * KS, dp * 16, ROW);
#pragma unroll
        for (int i = 0; i < MW; ++i) {
          Tr::mma(o[i][2 * dp], pa[i], bb[0]);
          Tr::mma(o[i][2 * dp + 1], pa[i], bb[1]);
        }
      }
    }
  }
  sta_cp_async_wait<0>();

#pragma unroll
  for (int i = 0; i < MW; ++i) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float l = lrow[i][r];
      l += sta_shfl_xor(l, 1);
      l += sta_shfl_xor(l, 2);
      const int row = m0 + wrow + 16 * i + g + 8 * r;
      if (row < SQ) {
        const float inv = l > 0.f ? 1.f / l : 0.f;
        T* orow = os.row(out, b, h, row) + 2 * t;
#pragma unroll
        for (int j = 0; j < D / 8; ++j)
          Tr::store2(orow + j * 8, o[i][j][2 * r] * inv, o[i][j][2 * r + 1] * inv);
        if (t == 0)
          lse[((long long)b * H + h) * SQ + row] =
              l > 0.f ? (mrow[i][r] * scale_log2 + sta_lg2(l)) * STA_LN2 : STA_INF;
      }
    }
  }
}

#ifndef SCITENSOR_EMULATE
// the strides (elements) of q, k, v, out follow the scalars: batch, head, row for each
#define STA_FWD_ARGS                                                                          \
  const void *q, const void *k, const void *v, void *out, float *lse, int H, int HKV, int SQ, \
      int SK, float scale_log2, long long qsb, long long qsh, int qss, long long ksb,         \
      long long ksh, int kss, long long vsb, long long vsh, int vss, long long osb,           \
      long long osh, int oss
#define STA_FWD_CALL(CAUSAL)                                                                   \
  extern __shared__ __align__(16) unsigned char smem[];                                        \
  typedef StaTraits::T T;                                                                      \
  attention_fwd_body<StaTraits, ST_ATTN_D, ST_ATTN_WARPS, ST_ATTN_MW, ST_ATTN_BN, CAUSAL>(   \
      (const T*)q, (const T*)k, (const T*)v, (T*)out, lse, H, HKV, SQ, SK, scale_log2,         \
      StaRows{qsb, qsh, qss}, StaRows{ksb, ksh, kss}, StaRows{vsb, vsh, vss},                  \
      StaRows{osb, osh, oss}, smem)

extern "C" __global__ void __launch_bounds__(ST_ATTN_WARPS * 32) st_attention_fwd(STA_FWD_ARGS) {
  STA_FWD_CALL(false);
}
extern "C" __global__ void __launch_bounds__(ST_ATTN_WARPS * 32)
    st_attention_fwd_causal(STA_FWD_ARGS) {
  STA_FWD_CALL(true);
}
#endif
