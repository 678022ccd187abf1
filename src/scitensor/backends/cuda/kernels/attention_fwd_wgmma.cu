// Fused attention forward on Hopper warpgroup MMA (wgmma, sm_90a): the same contract as
// attention_fwd.cu (out = softmax(q k^T * scale) v, the per-row logsumexp, causal masking
// bottom-right aligned, keys past SK masked, rows that see no key give 0 and lse = +inf), for
// 16-bit inputs.
//
// One CTA owns BM = 64 * ST_WG_NWG query rows of one (batch, head); warpgroup w (4 warps) owns
// rows 64w..64w+63. Q (once) and K/V tiles of ST_WG_BN keys (double-buffered: tile j+1 loads
// with cp.async while tile j computes) sit in shared memory in the 128-byte swizzled layout
// that wgmma reads (wgmma.cuh). Per tile and warpgroup:
//   S = Q K^T: D / 16 wgmma m64nBNk16, both operands from shared memory (K-major);
//   online softmax on the S accumulators (raw-unit running max, one FFMA + ex2 each, as in
//     attention_fwd.cu; scale > 0 is required and the host sends other scales elsewhere);
//   O += P V: BN / 16 wgmma m64nDk16 with P from registers (the S accumulators of two n8
//     blocks are one A fragment) and V from shared memory, MN-major (transposed read).
// Operands are addressed as base + b * stride_b + h * stride_h + row * stride_s (elements; the
// head-dim axis contiguous, strides multiples of 8, bases 16-byte aligned: the host checks), the
// argument list and grid (x: query tile, y: head, z: batch) are attention_fwd.cu's.
//
// Compile-time configuration (-D): ST_ATTN_TYPE (0 bf16, 1 f16), ST_ATTN_D (64 or 128),
// ST_WG_NWG (warpgroups per CTA), ST_WG_BN (keys per tile: 64 or 128).
// Dynamic shared memory: (BM + 4 * BN) * D * 2 + 1024 bytes (the tiles start 1024-aligned).
#include "attention_wgmma.cuh"

#ifndef ST_WG_NWG
#define ST_WG_NWG 2
#endif
#ifndef ST_WG_BN
#define ST_WG_BN 128
#endif
#ifndef ST_WG_PIPE
#define ST_WG_PIPE 1
#endif

// Online softmax of one tile's scores (rows r_lo, r_lo + 8 of this thread: s[4j + e], row
// e / 2): masks, moves the running max and sum, leaves the probabilities in s and returns the
// factors the output rows must be rescaled by
template <int BN, bool CAUSAL>
STA_FN void wg_softmax(float (&s)[BN / 2], float (&mrow)[2], float (&lrow)[2],
                       float (&alpha)[2], int n0, bool masked, int r_lo, int t, int SK,
                       int diag, float scale_log2) {
  float mx[2] = {-STA_INF, -STA_INF};
#pragma unroll
  for (int j = 0; j < BN / 8; ++j) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      if (masked) {
        const int col = n0 + j * 8 + 2 * t + (e & 1), row = r_lo + (e >> 1) * 8;
        if (col >= SK || (CAUSAL && col > row + diag)) s[4 * j + e] = -STA_INF;
      }
      mx[e >> 1] = fmaxf(mx[e >> 1], s[4 * j + e]);
    }
  }
  float nbase[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    mx[r] = fmaxf(mx[r], sta_shfl_xor(mx[r], 1));  // a row lives in the 4 lanes of a group
    mx[r] = fmaxf(mx[r], sta_shfl_xor(mx[r], 2));
    const float mnew = fmaxf(mrow[r], mx[r]);
    nbase[r] = mnew == -STA_INF ? 0.f : -mnew * scale_log2;  // all masked so far: no NaN
    alpha[r] = mrow[r] == mnew ? 1.f : sta_ex2(fmaf(mrow[r], scale_log2, nbase[r]));
    mrow[r] = mnew;
    lrow[r] *= alpha[r];
  }
#pragma unroll
  for (int i = 0; i < BN / 2; ++i) {
    s[i] = sta_ex2(fmaf(s[i], scale_log2, nbase[(i >> 1) & 1]));
    lrow[(i >> 1) & 1] += s[i];
  }
}

template <int D>
STA_FN void wg_rescale(float (&o)[D / 2], const float (&alpha)[2]) {
#pragma unroll
  for (int i = 0; i < D / 2; ++i) o[i] *= alpha[(i >> 1) & 1];
}

template <class Tr, int D, int NWG, int BN, bool CAUSAL>
STA_FN void wg_attention_fwd_body(const sta_u16* __restrict__ q, const sta_u16* __restrict__ k,
                                  const sta_u16* __restrict__ v, sta_u16* __restrict__ out,
                                  float* __restrict__ lse, int H, int HKV, int SQ, int SK,
                                  float scale_log2, long long qsb, long long qsh, int qss,
                                  long long ksb, long long ksh, int kss, long long vsb,
                                  long long vsh, int vss, long long osb, long long osh, int oss,
                                  unsigned char* smem_raw) {
  constexpr int BM = 64 * NWG, NT = 128 * NWG;
  constexpr int QBYTES = BM * D * 2, KVBYTES = BN * D * 2;
  static_assert((D == 64 || D == 128) && (BN == 64 || BN == 128), "D and BN: 64 or 128");
  unsigned char* smem = wg_align1024(smem_raw);
  unsigned char* sQ = smem;
  unsigned char* sK = sQ + QBYTES;        // [2] tiles
  unsigned char* sV = sK + 2 * KVBYTES;   // [2] tiles
  sta_check_smem(QBYTES + 4 * KVBYTES + 1024);

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wg = warp >> 2, wl = warp & 3, g = lane >> 2, t = lane & 3;
  const int h = blockIdx.y, b = blockIdx.z, hk = h / (H / HKV);
  // heaviest tiles first (CTAs start in x order)
  const int m0 = (CAUSAL ? (SQ + BM - 1) / BM - 1 - (int)blockIdx.x : (int)blockIdx.x) * BM;
  const sta_u16* qb = q + b * qsb + h * qsh;
  const sta_u16* kb = k + b * ksb + hk * ksh;
  const sta_u16* vb = v + b * vsb + hk * vsh;
  const int diag = SK - SQ;  // row i sees keys j <= i + diag (causal)
  const int n_end = CAUSAL ? sta_imin(SK, m0 + BM + diag) : SK;
  const int n_tiles = n_end > 0 ? (n_end + BN - 1) / BN : 0;
  // tile `it` needs the mask when it reaches past SK or (causal) past the diagonal of row m0
#define WG_MASKED(it) \
  (((it) + 1) * BN > SK || (CAUSAL && ((it) + 1) * BN - 1 > m0 + diag))

  float o[D / 2], s[BN / 2], alpha[2];
#pragma unroll
  for (int i = 0; i < D / 2; ++i) o[i] = 0.f;
  float mrow[2] = {-STA_INF, -STA_INF}, lrow[2] = {0.f, 0.f};  // rows r_lo, r_lo + 8
  const int r_lo = m0 + 64 * wg + 16 * wl + g;
  const unsigned q_addr = wg_smem_addr(sQ) + wg * 64 * 128;
  unsigned pa[BN / 16][4];

#if ST_WG_PIPE
  // Software pipeline (FlashAttention-3's intra-warpgroup overlap): iteration it issues
  // S(it + 1) = Q K(it + 1)^T and then O += P(it) V(it), waits for S only, and computes the
  // softmax of tile it + 1 (the exponentials) while the tensor cores run P(it) V(it); only the
  // rescale of O waits for that product. K runs one tile ahead of V: at the top of iteration
  // it, K(it + 1) and V(it) are resident and K(it + 2), V(it + 1) start loading into the
  // buffers that K(it) and V(it - 1) (both finished) leave.
  if (n_tiles > 0) {
    wg_load_rows<D, BM, NT>(sQ, qb, qss, m0, SQ, tid);
    wg_load_rows<D, BN, NT>(sK, kb, kss, 0, SK, tid);
  }
  sta_cp_async_commit();
  if (n_tiles > 0) {
    if (n_tiles > 1) wg_load_rows<D, BN, NT>(sK + KVBYTES, kb, kss, BN, SK, tid);
    wg_load_rows<D, BN, NT>(sV, vb, vss, 0, SK, tid);
  }
  sta_cp_async_commit();
  if (n_tiles > 0) {
    sta_cp_async_wait<1>();  // Q and K(0)
    wg_fence_proxy_async();
    sta_sync();
    wg_fence();
    wg_issue_abt<D, BM, BN>(s, q_addr, wg_smem_addr(sK));
    wg_wait<0>();
    wg_touch(s);
    wg_softmax<BN, CAUSAL>(s, mrow, lrow, alpha, 0, WG_MASKED(0), r_lo, t, SK, diag,
                           scale_log2);
    wg_pack<Tr, BN>(pa, s);
  }
  // the loop body with tile it + 1 present; the last tile's product is peeled off below, so
  // the wgmma groups in flight are the same on every path (ptxas tracks them statically)
  for (int it = 0; it + 1 < n_tiles; ++it) {
    sta_cp_async_wait<0>();   // K(it + 1) and V(it) have landed (this thread's copies) ...
    wg_fence_proxy_async();   // ... visible to wgmma's (async-proxy) reads ...
    sta_sync();               // ... for every thread; all are done with K(it) and V(it - 1)
    if (it + 2 < n_tiles)
      wg_load_rows<D, BN, NT>(sK + (it & 1) * KVBYTES, kb, kss, (it + 2) * BN, SK, tid);
    wg_load_rows<D, BN, NT>(sV + ((it + 1) & 1) * KVBYTES, vb, vss, (it + 1) * BN, SK, tid);
    sta_cp_async_commit();
    wg_touch(o);
    wg_fence();
    wg_issue_abt<D, BM, BN>(s, q_addr, wg_smem_addr(sK + ((it + 1) & 1) * KVBYTES));
    wg_issue_rs_t<D, BN>(o, pa, wg_smem_addr(sV + (it & 1) * KVBYTES));
    wg_wait<1>();  // S(it + 1) is done; P(it) V(it) may still run
    wg_touch(s);
    wg_softmax<BN, CAUSAL>(s, mrow, lrow, alpha, (it + 1) * BN, WG_MASKED(it + 1), r_lo, t, SK,
                           diag, scale_log2);
    wg_wait<0>();
    wg_touch(o);
    wg_rescale<D>(o, alpha);
    wg_pack<Tr, BN>(pa, s);
  }
  if (n_tiles > 0) {
    const int it = n_tiles - 1;
    sta_cp_async_wait<0>();  // V(it)
    wg_fence_proxy_async();
    sta_sync();
    wg_touch(o);
    wg_fence();
    wg_issue_rs_t<D, BN>(o, pa, wg_smem_addr(sV + (it & 1) * KVBYTES));
    wg_wait<0>();
    wg_touch(o);
  }
#else
  if (n_tiles > 0) {
    wg_load_rows<D, BM, NT>(sQ, qb, qss, m0, SQ, tid);
    wg_load_rows<D, BN, NT>(sK, kb, kss, 0, SK, tid);
    wg_load_rows<D, BN, NT>(sV, vb, vss, 0, SK, tid);
  }
  sta_cp_async_commit();
  for (int it = 0; it < n_tiles; ++it) {
    const int buf = it & 1;
    sta_cp_async_wait<0>();   // tile `it` has landed (this thread's copies) ...
    wg_fence_proxy_async();   // ... visible to wgmma's (async-proxy) reads ...
    sta_sync();               // ... for every thread; all are done with tile it - 1
    if (it + 1 < n_tiles) {   // so its buffers take tile it + 1 while tile it computes
      wg_load_rows<D, BN, NT>(sK + (buf ^ 1) * KVBYTES, kb, kss, (it + 1) * BN, SK, tid);
      wg_load_rows<D, BN, NT>(sV + (buf ^ 1) * KVBYTES, vb, vss, (it + 1) * BN, SK, tid);
    }
    sta_cp_async_commit();
    wg_fence();
    wg_issue_abt<D, BM, BN>(s, q_addr, wg_smem_addr(sK + buf * KVBYTES));
    wg_wait<0>();
    wg_touch(s);
    wg_softmax<BN, CAUSAL>(s, mrow, lrow, alpha, it * BN, WG_MASKED(it), r_lo, t, SK, diag,
                           scale_log2);
    wg_rescale<D>(o, alpha);
    wg_pack<Tr, BN>(pa, s);
    wg_touch(o);
    wg_fence();
    wg_issue_rs_t<D, BN>(o, pa, wg_smem_addr(sV + buf * KVBYTES));
    wg_wait<0>();
    wg_touch(o);
  }
#endif
#undef WG_MASKED
  sta_cp_async_wait<0>();

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float l = lrow[r];
    l += sta_shfl_xor(l, 1);
    l += sta_shfl_xor(l, 2);
    const int row = r_lo + 8 * r;
    if (row < SQ) {
      const float inv = l > 0.f ? 1.f / l : 0.f;
      sta_u16* orow = out + b * osb + h * osh + (long long)row * oss + 2 * t;
#pragma unroll
      for (int j = 0; j < D / 8; ++j)
        Tr::store2(orow + j * 8, o[4 * j + 2 * r] * inv, o[4 * j + 2 * r + 1] * inv);
      if (t == 0)
        lse[((long long)b * H + h) * SQ + row] =
            l > 0.f ? (mrow[r] * scale_log2 + sta_lg2(l)) * STA_LN2 : STA_INF;
    }
  }
}


#define STA_WG_FWD_ARGS                                                                       \
  const void *q, const void *k, const void *v, void *out, float *lse, int H, int HKV, int SQ, \
      int SK, float scale_log2, long long qsb, long long qsh, int qss, long long ksb,         \
      long long ksh, int kss, long long vsb, long long vsh, int vss, long long osb,           \
      long long osh, int oss
#define STA_WG_THREADS (ST_WG_NWG * 128)
#define STA_WG_FWD_CALL(CAUSAL)                                                                \
  extern __shared__ __align__(1024) unsigned char smem[];                                      \
  wg_attention_fwd_body<StaTraits, ST_ATTN_D, ST_WG_NWG, ST_WG_BN, CAUSAL>(                    \
      (const sta_u16*)q, (const sta_u16*)k, (const sta_u16*)v, (sta_u16*)out, lse, H, HKV, SQ, \
      SK, scale_log2, qsb, qsh, qss, ksb, ksh, kss, vsb, vsh, vss, osb, osh, oss, smem)

extern "C" __global__ void __launch_bounds__(STA_WG_THREADS, 1)
    st_attention_fwd_wgmma(STA_WG_FWD_ARGS) {
  STA_WG_FWD_CALL(false);
}
extern "C" __global__ void __launch_bounds__(STA_WG_THREADS, 1)
    st_attention_fwd_wgmma_causal(STA_WG_FWD_ARGS) {
  STA_WG_FWD_CALL(true);
}
