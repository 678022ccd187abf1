// Shared pieces of the attention backward kernels (attention_bwd.cu: mma.sync dK/dV kernels
// v1 and v2; attention_bwd_wgmma.cu: the Hopper wgmma dK/dV kernel): the row-wise pre and
// convert kernels (delta = rowsum(dO * O) with the zeroing of the float32 dQ accumulator;
// dQ = accumulator * scale in the input type), the walk of a dK/dV CTA over query tiles, and
// the dK/dV kernels' argument list. Every module that includes this defines st_attention_bwd_pre
// and st_attention_bwd_convert, so the host takes all backward kernels from one module.
#pragma once
#include "attention_common.cuh"

#define STA_ROW_THREADS 256  // block size of the pre and convert kernels (attention.py mirrors it)

// The row-wise kernels' (pre, convert) thread: 8 elements (`part`) of query row `row` of head
// (b, h); `dense` is the row's index in the dense (B, H, SQ) arrays.
template <int D>
struct StaRowThread {
  static constexpr int TPR = D / 8;                  // threads per row (a power of two <= 32)
  static constexpr int RPB = STA_ROW_THREADS / TPR;  // rows per CTA
  int b, h, row, part;
  long long dense;
  STA_FN StaRowThread(int H, int SQ) {
    row = blockIdx.x * RPB + threadIdx.x / TPR;
    part = threadIdx.x % TPR;
    h = blockIdx.y;
    b = blockIdx.z;
    dense = ((long long)b * H + h) * SQ + row;
  }
};

template <class Tr, int D>
STA_FN void attention_bwd_pre_body(const typename Tr::T* __restrict__ out,
                                   const typename Tr::T* __restrict__ dout,
                                   float* __restrict__ delta, float* __restrict__ dq_acc, int H,
                                   int SQ, const StaRows& os, const StaRows& gs) {
  const StaRowThread<D> th(H, SQ);
  float acc = 0.f;
  if (th.row < SQ) {
    float a[8], c[8];
    Tr::load8(os.row(out, th.b, th.h, th.row) + th.part * 8, a);
    Tr::load8(gs.row(dout, th.b, th.h, th.row) + th.part * 8, c);
#pragma unroll
    for (int i = 0; i < 8; ++i) acc += a[i] * c[i];
    sta_v16 zero;
    zero.x[0] = zero.x[1] = zero.x[2] = zero.x[3] = 0u;
    sta_v16* z = reinterpret_cast<sta_v16*>(dq_acc + th.dense * D + th.part * 8);
    z[0] = zero;
    z[1] = zero;
  }
#pragma unroll
  for (int m = StaRowThread<D>::TPR / 2; m > 0; m >>= 1) acc += sta_shfl_xor(acc, m);
  if (th.row < SQ && th.part == 0) delta[th.dense] = acc;
}

template <class Tr, int D>
STA_FN void attention_bwd_convert_body(const float* __restrict__ acc,
                                       typename Tr::T* __restrict__ dq, int H, int SQ,
                                       float scale, const StaRows& qs) {
  const StaRowThread<D> th(H, SQ);
  if (th.row < SQ) {
    float x[8];
    StaTf32<1>::load8(acc + th.dense * D + th.part * 8, x);
#pragma unroll
    for (int e = 0; e < 8; ++e) x[e] *= scale;
    Tr::store8(qs.row(dq, th.b, th.h, th.row) + th.part * 8, x);
  }
}

// The work of one dK/dV CTA (both kernel versions): key tile n0 (BN keys) of kv head (b, hk),
// walking `total` query tiles of BM rows: every tile of the G query heads sharing the kv head
// (GQA), causal ones from the first tile that sees key n0. With STA_BWD_STAGGER 1 each key tile
// starts its walk of a head's query tiles at a different tile (key tile x at the x-th, wrapping
// around): the CTAs of a head, which run at the same time, then add their dQ shares to different
// rows instead of all to the same few; 0 (the default): every CTA starts at the first tile.
// stage() copies tile j's Q and dO (cp.async, zero-filled past SQ; strides qs and gs),
// lse * log2(e) (+inf past SQ) and delta into buffer nb.
#ifndef STA_BWD_STAGGER
#define STA_BWD_STAGGER 0
#endif
template <int BN, int BM, bool CAUSAL>
struct StaBwdWalk {
  int b, hk, G, n0, diag, m_first, per_head, total, shift;
  STA_FN StaBwdWalk(int H, int HKV, int SQ, int SK) {
    shift = STA_BWD_STAGGER ? (int)blockIdx.x : 0;
    n0 = blockIdx.x * BN;
    hk = blockIdx.y;
    b = blockIdx.z;
    G = H / HKV;
    diag = SK - SQ;  // query row i sees keys j <= i + diag (causal)
    const int first = CAUSAL ? sta_imax(0, n0 - diag) : 0;  // first query row seeing key n0
    const int num_m = (SQ + BM - 1) / BM;
    m_first = sta_imin(first / BM, num_m);
    per_head = num_m - m_first;
    total = G * per_head;
  }
  STA_FN int head(int j) const { return hk * G + j / per_head; }
  STA_FN int row0(int j) const { return (m_first + (j % per_head + shift) % per_head) * BM; }
  template <int ES, int D, int NT, class T>
  STA_FN void stage(int j, int nb, const T* q, const T* dout, const StaRows& qs,
                    const StaRows& gs, const float* lse, const float* delta, int H, int SQ,
                    unsigned char* sQ, unsigned char* sO, float* sL, float* sD, int tid) const {
    constexpr int ROW = D * ES + 16;
    const int m0 = row0(j), hq = head(j);
    const long long rbase = (long long)(b * H + hq) * SQ;
    sta_load_rows<ES, D, BM, NT, false>(sQ + nb * BM * ROW, qs.head(q, b, hq), m0, SQ, qs.s,
                                        tid);
    sta_load_rows<ES, D, BM, NT, false>(sO + nb * BM * ROW, gs.head(dout, b, hq), m0, SQ, gs.s,
                                        tid);
#pragma unroll
    for (int i0 = 0; i0 < BM; i0 += NT) {
      const int i = i0 + tid;
      if (BM % NT == 0 || i < BM) {
        const bool ok = m0 + i < SQ;
        sL[nb * BM + i] = ok ? lse[rbase + m0 + i] * STA_LOG2E : STA_INF;
        sD[nb * BM + i] = ok ? delta[rbase + m0 + i] : 0.f;
      }
    }
  }
};

#ifndef SCITENSOR_EMULATE
typedef StaTraits::T StaT;

// the strides (elements: batch, head, row) of O and dO follow the scalars
extern "C" __global__ void __launch_bounds__(STA_ROW_THREADS)
    st_attention_bwd_pre(const void* out, const void* dout, float* delta, float* dq_acc, int H,
                         int SQ, long long osb, long long osh, int oss, long long gsb,
                         long long gsh, int gss) {
  attention_bwd_pre_body<StaTraits, ST_ATTN_D>((const StaT*)out, (const StaT*)dout, delta,
                                               dq_acc, H, SQ, StaRows{osb, osh, oss},
                                               StaRows{gsb, gsh, gss});
}

// the strides of dQ follow the scalars
extern "C" __global__ void __launch_bounds__(STA_ROW_THREADS)
    st_attention_bwd_convert(const float* acc, void* dq, int H, int SQ, float scale,
                             long long qsb, long long qsh, int qss) {
  attention_bwd_convert_body<StaTraits, ST_ATTN_D>(acc, (StaT*)dq, H, SQ, scale,
                                                   StaRows{qsb, qsh, qss});
}

// the strides (elements) of q, k, v, dO, dK, dV follow the scalars: batch, head, row for each
#define STA_BWD_ARGS                                                                        \
  const void *q, const void *k, const void *v, const void *dout, const float *lse,          \
      const float *delta, void *dk, void *dv, float *dq_acc, int H, int HKV, int SQ, int SK, \
      float scale, float scale_log2, long long qsb, long long qsh, int qss, long long ksb,   \
      long long ksh, int kss, long long vsb, long long vsh, int vss, long long gsb,          \
      long long gsh, int gss, long long dksb, long long dksh, int dkss, long long dvsb,      \
      long long dvsh, int dvss
#define STA_BWD_STRIDES                                                   \
  StaRows{qsb, qsh, qss}, StaRows{ksb, ksh, kss}, StaRows{vsb, vsh, vss}, \
      StaRows{gsb, gsh, gss}, StaRows{dksb, dksh, dkss}, StaRows{dvsb, dvsh, dvss}
#endif  // SCITENSOR_EMULATE
