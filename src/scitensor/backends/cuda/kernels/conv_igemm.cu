// Implicit-GEMM convolution on tensor cores (mma.sync), NCHW, no im2col buffer.
//
// One NVRTC module per (element type, pass, tile configuration); the loader is
// backends/cuda/conv_igemm.py and the design notes are docs/kernels/conv.md.
//
// Forward (ST_IGEMM_KIND 0, kernel st_igemm_fwd), per group g:
//   out[n, g*M + m, pix] = bias + sum_kk A[m][kk] * B[kk][(n, pix)]
//   A = the weight packed by st_igemm_prep into [groups][Mpad][Kpad] (zero padded, so its
//       tiles load with 16-byte cp.async and no predicates);
//   B = the input windows, gathered from NCHW straight into shared memory: column j = (n, p, q)
//       of the output, row kk = (c, r, s) of the window; the per-row offsets (c*H*W + r*dh*W +
//       s*dw, r*dh, s*dw) come from a tap table st_igemm_prep writes, so the inner loop has no
//       division. Outside the (padded) input reads zero.
//   The same kernel is the input gradient of a stride-1 convolution (conv_transpose2d): the
//   gathered tensor is dy, the weight is packed transposed and flipped, padding d*(k-1) - p.
// Weight gradient (ST_IGEMM_KIND 1, st_igemm_wgrad): C[m = out channel][col = (c, r, s)] =
//   sum over pixels (n, p, q) of dy[n, g*M + m, p, q] * x[n, g*Cg + c, p*sh - pt + r*dh, ...];
//   both operands are gathered along the pixel (reduction) dimension. The reduction is split
//   over `splits` CTAs writing float32 partial tiles; st_igemm_wgrad_reduce adds them in a
//   fixed order (deterministic, no atomics). With one split the kernel writes dw directly.
//
// Pipeline: two shared-memory stages, one barrier per k tile. While tile k is multiplied, the
// weight tile k+1 streams in with cp.async and the gathered tile k+1 is loaded into registers
// (scalar loads: NCHW windows are not 16-byte aligned in general), then stored to the free stage.
// Tiles: A [BM][BK] (k contiguous, rows padded by 16 bytes: ldmatrix conflict-free); forward B
// [BK][BN] (n contiguous; bf16/fp16 fragments with ldmatrix.trans, tf32 with scalar reads, rows
// padded to a stride of 8 words mod 32 so they are conflict-free); weight-gradient B [BN][BK].
//
// v2 (ST_IGEMM_KIND 2 st_igemm_fwd2, 3 st_igemm_wgrad2; docs/kernels/conv.md section 8): the
// gathered tensor is transposed to NHWC first (st_igemm_nhwc), the reduction runs over
// (r, s, c) with c innermost, and every operand tile arrives by 16-byte cp.async through
// ST_IGEMM_STAGES shared-memory stages (dynamic shared memory). v1 above stays for shapes whose
// channels are not a multiple of 16 bytes, and for A/B measurements.
//
// Compile-time configuration (-D): ST_IGEMM_TYPE 0 bfloat16, 1 float16, 2 float32 as one tf32
// product, 3 float32 as 3xTF32 (about float32 accuracy); ST_IGEMM_KIND; ST_IGEMM_BM, _BN, _BK
// (CTA tile), ST_IGEMM_WM, _WN (warps along M and N), ST_IGEMM_MINB (CTAs per SM the register
// allocation must allow: __launch_bounds__). Shared memory is static (< 48 KiB).
// Indices are 32-bit: the loader routes tensors of 2^31 elements or more elsewhere.
#include "attention_common.cuh"

#ifndef ST_IGEMM_TYPE
#define ST_IGEMM_TYPE 0
#endif
#ifndef ST_IGEMM_KIND
#define ST_IGEMM_KIND 0
#endif
#ifndef ST_IGEMM_BM
#define ST_IGEMM_BM 64
#endif
#ifndef ST_IGEMM_BN
#define ST_IGEMM_BN 128
#endif
#ifndef ST_IGEMM_BK
#if ST_IGEMM_TYPE >= 2
#define ST_IGEMM_BK 16
#else
#define ST_IGEMM_BK 32
#endif
#endif
#ifndef ST_IGEMM_WM
#define ST_IGEMM_WM 2
#endif
#ifndef ST_IGEMM_WN
#define ST_IGEMM_WN 4
#endif
#ifndef ST_IGEMM_MINB
#define ST_IGEMM_MINB 1
#endif

#if ST_IGEMM_TYPE == 0
typedef StaHalf<true> IgTr;
#elif ST_IGEMM_TYPE == 1
typedef StaHalf<false> IgTr;
#elif ST_IGEMM_TYPE == 2
typedef StaTf32<1> IgTr;
#else
typedef StaTf32<2> IgTr;
#endif
typedef IgTr::T IgT;

#ifdef SCITENSOR_EMULATE
inline unsigned ig_umulhi(unsigned a, unsigned b) {
  return (unsigned)(((unsigned long long)a * b) >> 32);
}
#else
STA_FN unsigned ig_umulhi(unsigned a, unsigned b) { return __umulhi(a, b); }
#endif

// n / d for 0 <= n < 2^31 with (mul, shr) from the host (Granlund-Montgomery: shr = ceil(log2
// d), mul = floor(2^32 (2^shr - d) / d) + 1); umulhi(n, mul) < n, so the sum fits 32 bits.
STA_FN int ig_div(int n, unsigned mul, int shr) {
  return (int)((ig_umulhi((unsigned)n, mul) + (unsigned)n) >> shr);
}

// 16 bytes global -> shared through L1 (cp.async.ca): the gathered windows of neighbouring taps
// overlap (a 3x3 window reads each input element 9 times), so L1 hits save L2 bandwidth;
// zero-fills when !full. The packed weight streams with .cg (sta_cp_async16).
#ifdef SCITENSOR_EMULATE
#define ig_cp_async16_ca sta_cp_async16
#else
STA_FN void ig_cp_async16_ca(void* dst, const void* src, bool full) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 16, %2;\n" ::"r"(sta_smem(dst)),
               "l"(__cvta_generic_to_global(src)), "r"(full ? 16 : 0) : "memory");
}
#endif

// Far outside any image: invalid gather columns start here, invalid table rows add it, so the
// bounds test fails without a separate flag (|valid coordinates| < 2^20, no overflow).
#define IG_OFF (-(1 << 28))

// one row of the tap table: offset of (channel, r, s) in the gathered tensor and the row /
// column shifts r*dh, s*dw
struct __align__(16) IgTap {
  int delta, dr, ds, pad;
};
struct __align__(8) IgV8 {
  sta_u32 x[2];
};

template <class Tr>
STA_FN typename Tr::T ig_from_float(float v) {
  if constexpr (Tr::ES == 2) {
    return (typename Tr::T)(Tr::pack(v, 0.f) & 0xffffu);
  } else {
    return v;
  }
}

template <class Tr>
STA_FN sta_u32 ig_bits(typename Tr::T v) {
  if constexpr (Tr::ES == 2) {
    return (sta_u32)v;
  } else {
    return __float_as_uint(v);
  }
}

// V consecutive elements (V = 1, 2 or 4) to shared memory in one store (V*ES-byte aligned)
template <class Tr, int V>
STA_FN void ig_store_vec(unsigned char* dst, const typename Tr::T (&v)[V]) {
  if constexpr (V == 1) {
    *reinterpret_cast<typename Tr::T*>(dst) = v[0];
  } else if constexpr (Tr::ES == 2 && V == 2) {
    *reinterpret_cast<sta_u32*>(dst) = ig_bits<Tr>(v[0]) | (ig_bits<Tr>(v[1]) << 16);
  } else if constexpr (Tr::ES == 2 && V == 4) {
    IgV8 w;
    w.x[0] = ig_bits<Tr>(v[0]) | (ig_bits<Tr>(v[1]) << 16);
    w.x[1] = ig_bits<Tr>(v[2]) | (ig_bits<Tr>(v[3]) << 16);
    *reinterpret_cast<IgV8*>(dst) = w;
  } else if constexpr (V == 2) {
    IgV8 w;
    w.x[0] = ig_bits<Tr>(v[0]);
    w.x[1] = ig_bits<Tr>(v[1]);
    *reinterpret_cast<IgV8*>(dst) = w;
  } else {
    sta_v16 w;
#pragma unroll
    for (int i = 0; i < 4; ++i) w.x[i] = ig_bits<Tr>(v[i]);
    *reinterpret_cast<sta_v16*>(dst) = w;
  }
}

// B fragments (n tiles n0.., n0+8..; k k0..) from a [k][n] tile in natural k order. 16-bit:
// ldmatrix.trans; tf32: b0 = B[k0+t][n0+g], b1 = B[k0+t+4][n0+g] by scalar reads (a row stride
// of 8 words mod 32 keeps the 32 lanes on distinct banks).
template <class Tr>
STA_FN void ig_load_b_kn(typename Tr::FragB (&b)[2], const unsigned char* base, int k0, int n0,
                         int stride) {
  if constexpr (Tr::ES == 2) {
    Tr::load_b_kn(b, base, k0, n0, stride);
  } else {
    const int l = threadIdx.x & 31, g = l >> 2, t = l & 3;
    const unsigned char* r0 = base + (k0 + t) * stride + (n0 + g) * 4;
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      Tr::split(b[j].x[0], b[j].x[Tr::SPLIT - 1], 0, *reinterpret_cast<const float*>(r0 + j * 32));
      Tr::split(b[j].x[0], b[j].x[Tr::SPLIT - 1], 1,
                *reinterpret_cast<const float*>(r0 + 4 * stride + j * 32));
    }
  }
}

// forward epilogue (both layouts): + bias, NCHW stores (pairs of adjacent pixels when aligned);
// acc[i][jn] holds rows m0+wm0+16i+lg(+8), columns n0+wn0+8jn+2lt(+1) of the GEMM
template <class Tr, int MT, int NT8>
STA_FN void ig_fwd_epilogue(const float (&acc)[MT][NT8][4], const typename Tr::T* __restrict__ bias,
                            typename Tr::T* __restrict__ out, int M, int Mtot, int PIX, int Ngemm,
                            int n0, int m0, int wm0, int wn0, int grp, unsigned mul_pix,
                            int shr_pix) {
  const int lane = threadIdx.x & 31, lg = lane >> 2, lt = lane & 3;
  int en[NT8], epix[NT8];
#pragma unroll
  for (int jn = 0; jn < NT8; ++jn) {
    const int j = n0 + wn0 + 8 * jn + 2 * lt;
    en[jn] = -1;
    epix[jn] = 0;
    if (j < Ngemm) {
      en[jn] = ig_div(j, mul_pix, shr_pix);
      epix[jn] = j - en[jn] * PIX;
    }
  }
#pragma unroll
  for (int i = 0; i < MT; ++i) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int m = m0 + wm0 + 16 * i + lg + 8 * h;
      if (m >= M) continue;
      const int ch = grp * M + m;
      const float bv = bias ? Tr::to_float(bias[ch]) : 0.f;
#pragma unroll
      for (int jn = 0; jn < NT8; ++jn) {
        const int n = en[jn], pix = epix[jn];
        if (n < 0) continue;
        const float v0 = acc[i][jn][2 * h] + bv, v1 = acc[i][jn][2 * h + 1] + bv;
        const long long off = ((long long)n * Mtot + ch) * PIX + pix;
        if (pix + 1 < PIX && !(off & 1)) {
          Tr::store2(out + off, v0, v1);
        } else {
          out[off] = ig_from_float<Tr>(v0);
          if (n0 + wn0 + 8 * jn + 2 * lt + 1 < Ngemm) {
            const long long off1 = pix + 1 < PIX ? off + 1 : ((long long)(n + 1) * Mtot + ch) * PIX;
            out[off1] = ig_from_float<Tr>(v1);
          }
        }
      }
    }
  }
}

// One staged k tile of a warp's MMAs: per k step, the warp's MT A fragments, then pair by pair
// its B fragments, accumulated into acc. load_a(frag, i, k) and load_b(frags, jp, k) read the
// stage's shared-memory tiles, whose layouts differ between the kernels.
template <class Tr, int MT, int NT8, int KSTEPS, class LoadA, class LoadB>
STA_FN void ig_tile_mma(float (&acc)[MT][NT8][4], LoadA load_a, LoadB load_b) {
#pragma unroll
  for (int ks = 0; ks < KSTEPS; ++ks) {
    typename Tr::FragA a[MT];
#pragma unroll
    for (int i = 0; i < MT; ++i) load_a(a[i], i, ks * Tr::KSTEP);
#pragma unroll
    for (int jp = 0; jp < NT8 / 2; ++jp) {
      typename Tr::FragB bb[2];
      load_b(bb, jp, ks * Tr::KSTEP);
#pragma unroll
      for (int i = 0; i < MT; ++i) {
        Tr::mma(acc[i][2 * jp], a[i], bb[0]);
        Tr::mma(acc[i][2 * jp + 1], a[i], bb[1]);
      }
    }
  }
}

// ---- forward / stride-1 input gradient ------------------------------------------------------
template <class Tr, int BM, int BN, int BK, int WM, int WN>
struct IgFwdShape {
  static constexpr int NT = 32 * WM * WN, ES = Tr::ES, KS = Tr::KSTEP;
  static constexpr int WTM = BM / WM, WTN = BN / WN, MT = WTM / 16, NT8 = WTN / 8;
  static constexpr int ROWA = BK * ES + 16, ROWB = BN * ES + (ES == 2 ? 16 : 32);
  static constexpr int SA = BM * ROWA, SB = BK * ROWB, SMEM = 2 * (SA + SB);
  // gather: each thread owns VJ columns as VJ/VR runs of VR adjacent ones, runs TPR*VR apart,
  // so one scalar load instruction of a warp reads one contiguous 64/128-byte span
  static constexpr int VJ = 4, VR = ES == 2 ? 2 : 1, TPR = BN / VJ, RPP = NT / TPR;
  static constexpr int PASSES = BK / RPP;
  static constexpr int CPR = BK * ES / 16, ACHUNKS = BM * CPR;
  static_assert(WTM % 16 == 0 && WTN % 16 == 0, "warp tile must be a multiple of 16x16");
  static_assert(BK % KS == 0 && (BK * ES) % 16 == 0, "BK must hold whole k steps and 16 bytes");
  static_assert(NT % TPR == 0 && BK % RPP == 0, "gather rows must divide BK");
  static_assert(ACHUNKS % NT == 0, "weight tile chunks must divide the threads");
  static_assert(SMEM <= 48 * 1024, "static shared memory is limited to 48 KiB");
};

#define IG_FWD_PARAMS                                                                             \
  const void *x_, const void *wp_, const IgTap *taps, const void *bias_, void *out_, int C,     \
      int H, int W, int Cg, int M, int Mpad, int Mtot, int P, int Q, int sh, int sw, int pt,      \
      int pl, int Kpad, int Ngemm, int tiles_m, int tiles_n, unsigned mul_pix, int shr_pix,       \
      unsigned mul_q, int shr_q
#define IG_FWD_ARGS                                                                               \
  (const IgT*)x_, (const IgT*)wp_, taps, (const IgT*)bias_, (IgT*)out_, C, H, W, Cg, M, Mpad,  \
      Mtot, P, Q, sh, sw, pt, pl, Kpad, Ngemm, tiles_m, tiles_n, mul_pix, shr_pix, mul_q, shr_q

// x: the gathered tensor (N, C, H, W); out: (N, Mtot, P, Q) with Mtot = groups * M; wp: the
// packed weight; Cg: gathered channels per group; Ngemm = N * P * Q.
template <class Tr, int BM, int BN, int BK, int WM, int WN>
STA_FN void igemm_fwd_body(const typename Tr::T* __restrict__ x,
                           const typename Tr::T* __restrict__ wp, const IgTap* __restrict__ taps,
                           const typename Tr::T* __restrict__ bias,
                           typename Tr::T* __restrict__ out, int C, int H, int W, int Cg, int M,
                           int Mpad, int Mtot, int P, int Q, int sh, int sw, int pt, int pl,
                           int Kpad, int Ngemm, int tiles_m, int tiles_n, unsigned mul_pix,
                           int shr_pix, unsigned mul_q, int shr_q, unsigned char* smem) {
  typedef IgFwdShape<Tr, BM, BN, BK, WM, WN> S;
  typedef typename Tr::T T;
  typedef typename Tr::FragA FragA;
  typedef typename Tr::FragB FragB;
  const int tid = threadIdx.x, warp = tid >> 5;
  int b = blockIdx.x;  // m tiles innermost: CTAs that gather the same columns run together
  const int tm = b % tiles_m;
  b /= tiles_m;
  const int tn = b % tiles_n;
  const int grp = b / tiles_n;
  const int m0 = tm * BM, n0 = tn * BN;
  const int HW = H * W, PIX = P * Q;
  const T* xg = x + (long long)grp * Cg * HW;
  const T* wg = wp + ((long long)grp * Mpad + m0) * Kpad;
  unsigned char* sA = smem;
  unsigned char* sB = smem + 2 * S::SA;

  // the gather columns of this thread (fixed for the whole reduction)
  const int lc = tid % S::TPR, lr = tid / S::TPR;
  int ih0[S::VJ], iw0[S::VJ], xoff[S::VJ];
#pragma unroll
  for (int v = 0; v < S::VJ; ++v) {
    const int j = n0 + lc * S::VR + (v % S::VR) + (v / S::VR) * (S::TPR * S::VR);
    if (j < Ngemm) {
      const int n = ig_div(j, mul_pix, shr_pix), pix = j - n * PIX;
      const int p = ig_div(pix, mul_q, shr_q), q = pix - p * Q;
      ih0[v] = p * sh - pt;
      iw0[v] = q * sw - pl;
      xoff[v] = n * C * HW + ih0[v] * W + iw0[v];
    } else {
      ih0[v] = IG_OFF;
      iw0[v] = 0;
      xoff[v] = 0;
    }
  }

  T stage[S::PASSES][S::VJ / S::VR][S::VR];
  auto gather = [&](int kt) {
#pragma unroll
    for (int ps = 0; ps < S::PASSES; ++ps) {
      const IgTap tap = taps[kt * BK + lr + ps * S::RPP];
#pragma unroll
      for (int v = 0; v < S::VJ; ++v) {
        const int ih = ih0[v] + tap.dr, iw = iw0[v] + tap.ds;
        stage[ps][v / S::VR][v % S::VR] = ((unsigned)ih < (unsigned)H && (unsigned)iw < (unsigned)W)
                           ? xg[xoff[v] + tap.delta]
                           : (T)0;
      }
    }
  };
  auto store_b = [&](int buf) {
#pragma unroll
    for (int ps = 0; ps < S::PASSES; ++ps) {
      unsigned char* row = sB + buf * S::SB + (lr + ps * S::RPP) * S::ROWB;
#pragma unroll
      for (int h = 0; h < S::VJ / S::VR; ++h)
        ig_store_vec<Tr, S::VR>(row + (lc * S::VR + h * S::TPR * S::VR) * S::ES, stage[ps][h]);
    }
  };
  auto issue_a = [&](int kt, int buf) {
    const unsigned char* src = reinterpret_cast<const unsigned char*>(wg + kt * BK);
#pragma unroll
    for (int c = tid; c < S::ACHUNKS; c += S::NT) {
      const int r = c / S::CPR, ch = c - r * S::CPR;
      sta_cp_async16(sA + buf * S::SA + r * S::ROWA + ch * 16,
                     src + (long long)r * Kpad * S::ES + ch * 16, true);
    }
  };

  const int wm0 = (warp % WM) * S::WTM, wn0 = (warp / WM) * S::WTN;
  float acc[S::MT][S::NT8][4];
#pragma unroll
  for (int i = 0; i < S::MT; ++i)
#pragma unroll
    for (int j = 0; j < S::NT8; ++j) acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.f;

  const int KT = Kpad / BK;
  issue_a(0, 0);
  sta_cp_async_commit();
  gather(0);
  store_b(0);
  sta_cp_async_wait<0>();
  sta_sync();
  for (int kt = 0; kt < KT; ++kt) {
    const int buf = kt & 1;
    const bool more = kt + 1 < KT;
    if (more) {  // the other stage was released by the barrier that ended tile kt - 1
      issue_a(kt + 1, buf ^ 1);
      gather(kt + 1);
    }
    sta_cp_async_commit();
    const unsigned char* cA = sA + buf * S::SA;
    const unsigned char* cB = sB + buf * S::SB;
    ig_tile_mma<Tr, S::MT, S::NT8, BK / S::KS>(
        acc, [&](FragA& f, int i, int k) { Tr::load_a(f, cA, wm0 + 16 * i, k, S::ROWA); },
        [&](FragB (&b)[2], int jp, int k) { ig_load_b_kn<Tr>(b, cB, k, wn0 + 16 * jp, S::ROWB); });
    if (more) store_b(buf ^ 1);
    sta_cp_async_wait<0>();
    sta_sync();
  }

  ig_fwd_epilogue<Tr, S::MT, S::NT8>(acc, bias, out, M, Mtot, PIX, Ngemm, n0, m0, wm0, wn0, grp,
                                     mul_pix, shr_pix);
}

// ---- weight gradient --------------------------------------------------------------------------
template <class Tr, int BM, int BN, int BK, int WM, int WN>
struct IgWgradShape {
  static constexpr int NT = 32 * WM * WN, ES = Tr::ES, KS = Tr::KSTEP;
  static constexpr int WTM = BM / WM, WTN = BN / WN, MT = WTM / 16, NT8 = WTN / 8;
  static constexpr int ROW = BK * ES + 16;
  static constexpr int SA = BM * ROW, SB = BN * ROW, SMEM = 2 * (SA + SB);
  static constexpr int VP = 2, TPR = BK / VP, RPP = NT / TPR, PA = BM / RPP, PB = BN / RPP;
  static_assert(WTM % 16 == 0 && WTN % 16 == 0, "warp tile must be a multiple of 16x16");
  static_assert(BK % KS == 0, "BK must hold whole k steps");
  static_assert(NT % TPR == 0 && BM % RPP == 0 && BN % RPP == 0, "gather rows must divide tiles");
  static_assert(SMEM <= 48 * 1024, "static shared memory is limited to 48 KiB");
};

#define IG_WGRAD_PARAMS                                                                           \
  const void *x_, const void *gy_, const IgTap *taps, float *partial, void *dw_, int C, int H,  \
      int W, int Cg, int Ktot, int M, int Ncols, int P, int Q, int sh, int sw, int pt, int pl,    \
      int NPQ, int chunk, int groups, int tiles_m, int tiles_n, unsigned mul_pix, int shr_pix,    \
      unsigned mul_q, int shr_q
#define IG_WGRAD_ARGS                                                                             \
  (const IgT*)x_, (const IgT*)gy_, taps, partial, (IgT*)dw_, C, H, W, Cg, Ktot, M, Ncols, P, Q, \
      sh, sw, pt, pl, NPQ, chunk, groups, tiles_m, tiles_n, mul_pix, shr_pix, mul_q, shr_q

// x (N, C, H, W), gy (N, Ktot, P, Q), M = Ktot / groups, Ncols = Cg*kh*kw, NPQ = N*P*Q; CTA
// (tm, tn, group, split) reduces pixels [split*chunk, min(NPQ, (split+1)*chunk)). partial:
// [splits][Ktot][Ncols] float32, or null to write dw (Ktot, Ncols) directly.
template <class Tr, int BM, int BN, int BK, int WM, int WN>
STA_FN void igemm_wgrad_body(const typename Tr::T* __restrict__ x,
                             const typename Tr::T* __restrict__ gy,
                             const IgTap* __restrict__ taps, float* __restrict__ partial,
                             typename Tr::T* __restrict__ dw, int C, int H, int W, int Cg,
                             int Ktot, int M, int Ncols, int P, int Q, int sh, int sw, int pt,
                             int pl, int NPQ, int chunk, int groups, int tiles_m, int tiles_n,
                             unsigned mul_pix, int shr_pix, unsigned mul_q, int shr_q,
                             unsigned char* smem) {
  typedef IgWgradShape<Tr, BM, BN, BK, WM, WN> S;
  typedef typename Tr::T T;
  typedef typename Tr::FragA FragA;
  typedef typename Tr::FragB FragB;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int lg = lane >> 2, lt = lane & 3;
  int b = blockIdx.x;  // tiles innermost: CTAs of one split read the same pixels together
  const int tm = b % tiles_m;
  b /= tiles_m;
  const int tn = b % tiles_n;
  b /= tiles_n;
  const int grp = b % groups;
  const int split = b / groups;
  const int m0 = tm * BM, n0 = tn * BN;
  const int HW = H * W, PIX = P * Q;
  const int jbeg = split * chunk, jend = jbeg + chunk < NPQ ? jbeg + chunk : NPQ;
  const int KT = jend > jbeg ? (jend - jbeg + BK - 1) / BK : 0;
  unsigned char* sA = smem;
  unsigned char* sB = smem + 2 * S::SA;

  const int lp = tid % S::TPR, lr = tid / S::TPR;
  int aoff[S::PA];  // dy row offsets of this thread's output channels (-1: past M)
#pragma unroll
  for (int i = 0; i < S::PA; ++i) {
    const int m = m0 + lr + i * S::RPP;
    aoff[i] = m < M ? (grp * M + m) * PIX : -1;
  }
  int cdelta[S::PB], cdr[S::PB], cds[S::PB];  // this thread's (c, r, s) columns
#pragma unroll
  for (int i = 0; i < S::PB; ++i) {
    const IgTap tap = taps[n0 + lr + i * S::RPP];
    cdelta[i] = tap.delta;
    cdr[i] = tap.dr;
    cds[i] = tap.ds;
  }
  const int xgrp = grp * Cg * HW;

  T sta[S::PA][S::VP], stb[S::PB][S::VP];
  auto gather = [&](int kt) {
    int ih0[S::VP], iw0[S::VP], xo[S::VP], go[S::VP];
#pragma unroll
    for (int e = 0; e < S::VP; ++e) {
      const int jj = jbeg + kt * BK + lp * S::VP + e;
      if (jj < jend) {
        const int n = ig_div(jj, mul_pix, shr_pix), pix = jj - n * PIX;
        const int p = ig_div(pix, mul_q, shr_q), q = pix - p * Q;
        ih0[e] = p * sh - pt;
        iw0[e] = q * sw - pl;
        xo[e] = n * C * HW + xgrp + ih0[e] * W + iw0[e];
        go[e] = n * Ktot * PIX + pix;
      } else {
        ih0[e] = IG_OFF;
        iw0[e] = 0;
        xo[e] = 0;
        go[e] = -1;
      }
    }
#pragma unroll
    for (int i = 0; i < S::PA; ++i)
#pragma unroll
      for (int e = 0; e < S::VP; ++e)
        sta[i][e] = (go[e] >= 0 && aoff[i] >= 0) ? gy[go[e] + aoff[i]] : (T)0;
#pragma unroll
    for (int i = 0; i < S::PB; ++i)
#pragma unroll
      for (int e = 0; e < S::VP; ++e) {
        const int ih = ih0[e] + cdr[i], iw = iw0[e] + cds[i];
        stb[i][e] = ((unsigned)ih < (unsigned)H && (unsigned)iw < (unsigned)W)
                        ? x[xo[e] + cdelta[i]]
                        : (T)0;
      }
  };
  auto store = [&](int buf) {
#pragma unroll
    for (int i = 0; i < S::PA; ++i)
      ig_store_vec<Tr, S::VP>(sA + buf * S::SA + (lr + i * S::RPP) * S::ROW + lp * S::VP * S::ES,
                              sta[i]);
#pragma unroll
    for (int i = 0; i < S::PB; ++i)
      ig_store_vec<Tr, S::VP>(sB + buf * S::SB + (lr + i * S::RPP) * S::ROW + lp * S::VP * S::ES,
                              stb[i]);
  };

  const int wm0 = (warp % WM) * S::WTM, wn0 = (warp / WM) * S::WTN;
  float acc[S::MT][S::NT8][4];
#pragma unroll
  for (int i = 0; i < S::MT; ++i)
#pragma unroll
    for (int j = 0; j < S::NT8; ++j) acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.f;

  if (KT > 0) {
    gather(0);
    store(0);
    sta_sync();
  }
  for (int kt = 0; kt < KT; ++kt) {
    const int buf = kt & 1;
    const bool more = kt + 1 < KT;
    if (more) gather(kt + 1);
    const unsigned char* cA = sA + buf * S::SA;
    const unsigned char* cB = sB + buf * S::SB;
    ig_tile_mma<Tr, S::MT, S::NT8, BK / S::KS>(
        acc, [&](FragA& f, int i, int k) { Tr::load_a(f, cA, wm0 + 16 * i, k, S::ROW); },
        [&](FragB (&b)[2], int jp, int k) { Tr::load_b_nk(b, cB, wn0 + 16 * jp, k, S::ROW); });
    if (more) store(buf ^ 1);
    sta_sync();
  }

#pragma unroll
  for (int i = 0; i < S::MT; ++i) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int m = m0 + wm0 + 16 * i + lg + 8 * h;
      if (m >= M) continue;
      const long long row = partial ? ((long long)split * groups + grp) * M + m : (long long)grp * M + m;
#pragma unroll
      for (int jn = 0; jn < S::NT8; ++jn) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int col = n0 + wn0 + 8 * jn + 2 * lt + e;
          if (col >= Ncols) continue;
          const float v = acc[i][jn][2 * h + e];
          if (partial) partial[row * Ncols + col] = v;
          else dw[row * Ncols + col] = ig_from_float<Tr>(v);
        }
      }
    }
  }
}

// ---- v2: NHWC gathers, every operand by 16-byte cp.async, STAGES-deep pipeline ---------------
// The gathered tensor is first transposed to NHWC (st_igemm_nhwc), so the reduction index is
// ordered (r, s, c) with c innermost and VEC = 16 / ES consecutive channels of one tap are 16
// contiguous bytes: one predicated cp.async (zero-filled outside the image) per VEC elements,
// no staging registers, no per-element index math. Needs the gathered channels per group to
// be a multiple of VEC (the loader checks; other shapes run v1). The tap table has one row per
// VEC-chunk of the reduction: delta = (r*dh*W + s*dw)*C + c, dr = r*dh, ds = s*dw.
// Shared memory is dynamic: STAGES * (A tile + B tile), rows padded by 16 bytes.

// forward: A = packed weight [BM][BK] (k contiguous, load_a), B = windows [BN][BK] (pixels x k,
// k contiguous, load_b_nk); both natural k order for every type.
template <class Tr, int BM, int BN, int BK, int WM, int WN, int STAGES>
struct IgFwd2Shape {
  static constexpr int NT = 32 * WM * WN, ES = Tr::ES, KS = Tr::KSTEP, VEC = 16 / ES;
  static constexpr int WTM = BM / WM, WTN = BN / WN, MT = WTM / 16, NT8 = WTN / 8;
  static constexpr int ROW = BK * ES + 16, SA = BM * ROW, SB = BN * ROW, STAGE = SA + SB;
  static constexpr int SMEM = STAGES * STAGE;
  static constexpr int CPR = BK * ES / 16, ACH = BM * CPR, BCH = BN * CPR, BPT = BCH / NT;
  static_assert(WTM % 16 == 0 && WTN % 16 == 0, "warp tile must be a multiple of 16x16");
  static_assert(BK % KS == 0 && (BK * ES) % 32 == 0, "BK must hold whole k steps, 32 bytes");
  static_assert(ACH % NT == 0 && BCH % NT == 0 && NT % CPR == 0, "chunks must divide threads");
  static_assert(STAGES >= 2 && STAGES <= 8, "2 to 8 pipeline stages");
};

// x: the gathered tensor in NHWC (N, H, W, C); C, H, W its logical sizes; the rest as
// igemm_fwd_body. taps: Kpad / VEC rows.
template <class Tr, int BM, int BN, int BK, int WM, int WN, int STAGES>
STA_FN void igemm_fwd2_body(const typename Tr::T* __restrict__ x,
                            const typename Tr::T* __restrict__ wp, const IgTap* __restrict__ taps,
                            const typename Tr::T* __restrict__ bias,
                            typename Tr::T* __restrict__ out, int C, int H, int W, int Cg, int M,
                            int Mpad, int Mtot, int P, int Q, int sh, int sw, int pt, int pl,
                            int Kpad, int Ngemm, int tiles_m, int tiles_n, unsigned mul_pix,
                            int shr_pix, unsigned mul_q, int shr_q, unsigned char* smem) {
  typedef IgFwd2Shape<Tr, BM, BN, BK, WM, WN, STAGES> S;
  typedef typename Tr::FragA FragA;
  typedef typename Tr::FragB FragB;
  const int tid = threadIdx.x, warp = tid >> 5;
  int b = blockIdx.x;  // m tiles innermost: CTAs that gather the same pixels run together
  const int tm = b % tiles_m;
  b /= tiles_m;
  const int tn = b % tiles_n;
  const int grp = b / tiles_n;
  const int m0 = tm * BM, n0 = tn * BN;
  const int PIX = P * Q;
  const unsigned char* wg =
      reinterpret_cast<const unsigned char*>(wp + ((long long)grp * Mpad + m0) * Kpad);
  const unsigned char* xb = reinterpret_cast<const unsigned char*>(x);

  // this thread's B chunks: rows (pixels) brow + i * NT / CPR, chunk column bch (fixed)
  const int bch = tid % S::CPR, brow = tid / S::CPR;
  int ih0[S::BPT], iw0[S::BPT], xoff[S::BPT];
#pragma unroll
  for (int i = 0; i < S::BPT; ++i) {
    const int j = n0 + brow + i * (S::NT / S::CPR);
    if (j < Ngemm) {
      const int n = ig_div(j, mul_pix, shr_pix), pix = j - n * PIX;
      const int p = ig_div(pix, mul_q, shr_q), q = pix - p * Q;
      ih0[i] = p * sh - pt;
      iw0[i] = q * sw - pl;
      xoff[i] = ((n * H + ih0[i]) * W + iw0[i]) * C + grp * Cg;
    } else {
      ih0[i] = IG_OFF;
      iw0[i] = 0;
      xoff[i] = 0;
    }
  }
  auto issue = [&](int kt, int stage) {
    unsigned char* sA = smem + stage * S::STAGE;
    unsigned char* sB = sA + S::SA;
#pragma unroll
    for (int u = 0; u < S::ACH / S::NT; ++u) {  // a fixed trip count (tid < NT is not known)
      const int c = tid + u * S::NT, r = c / S::CPR, ch = c - r * S::CPR;
      sta_cp_async16(sA + r * S::ROW + ch * 16,
                     wg + (long long)r * Kpad * S::ES + kt * BK * S::ES + ch * 16, true);
    }
    const IgTap tap = taps[kt * S::CPR + bch];
#pragma unroll
    for (int i = 0; i < S::BPT; ++i) {
      const int ih = ih0[i] + tap.dr, iw = iw0[i] + tap.ds;
      const bool ok = (unsigned)ih < (unsigned)H && (unsigned)iw < (unsigned)W;
      const int e = ok ? xoff[i] + tap.delta : 0;
      ig_cp_async16_ca(sB + (brow + i * (S::NT / S::CPR)) * S::ROW + bch * 16,
                       xb + (long long)e * S::ES, ok);
    }
  };

  const int wm0 = (warp % WM) * S::WTM, wn0 = (warp / WM) * S::WTN;
  float acc[S::MT][S::NT8][4];
#pragma unroll
  for (int i = 0; i < S::MT; ++i)
#pragma unroll
    for (int j = 0; j < S::NT8; ++j) acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.f;

  const int KT = Kpad / BK;
#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (s < KT) issue(s, s);
    sta_cp_async_commit();
  }
  int stage = 0, wstage = STAGES - 1;
  for (int kt = 0; kt < KT; ++kt) {
    sta_cp_async_wait<STAGES - 2>();  // tile kt has landed (this thread's copies) ...
    sta_sync();  // ... everyone's, and everyone is done with the stage refilled next
    if (kt + STAGES - 1 < KT) issue(kt + STAGES - 1, wstage);
    sta_cp_async_commit();
    const unsigned char* cA = smem + stage * S::STAGE;
    const unsigned char* cB = cA + S::SA;
    ig_tile_mma<Tr, S::MT, S::NT8, BK / S::KS>(
        acc, [&](FragA& f, int i, int k) { Tr::load_a(f, cA, wm0 + 16 * i, k, S::ROW); },
        [&](FragB (&b)[2], int jp, int k) { Tr::load_b_nk(b, cB, wn0 + 16 * jp, k, S::ROW); });
    stage = stage + 1 == STAGES ? 0 : stage + 1;
    wstage = wstage + 1 == STAGES ? 0 : wstage + 1;
  }
  sta_cp_async_wait<0>();
  ig_fwd_epilogue<Tr, S::MT, S::NT8>(acc, bias, out, M, Mtot, PIX, Ngemm, n0, m0, wm0, wn0, grp,
                                     mul_pix, shr_pix);
}

// weight gradient: A = dy rows [BK pixels][BM channels] (load_a_kn), B = x windows [BK pixels]
// [BN columns] (load_b_kn); both transposed loads, so tf32's permuted k order matches.
// Columns are ordered (r, s, c) in the GEMM and written to dw's (c, r, s) in the epilogue.
template <class Tr, int BM, int BN, int BK, int WM, int WN, int STAGES>
struct IgWgrad2Shape {
  static constexpr int NT = 32 * WM * WN, ES = Tr::ES, KS = Tr::KSTEP, VEC = 16 / ES;
  static constexpr int WTM = BM / WM, WTN = BN / WN, MT = WTM / 16, NT8 = WTN / 8;
  static constexpr int ROWA = BM * ES + 16, ROWB = BN * ES + 16;
  static constexpr int SA = BK * ROWA, SB = BK * ROWB, STAGE = SA + SB, SMEM = STAGES * STAGE;
  static constexpr int CPRA = BM * ES / 16, CPRB = BN * ES / 16;
  static constexpr int ACH = BK * CPRA, BCH = BK * CPRB, BPT = BCH / NT;
  static_assert(WTM % 16 == 0 && WTN % 16 == 0, "warp tile must be a multiple of 16x16");
  static_assert(BK % KS == 0, "BK must hold whole k steps");
  static_assert(BCH % NT == 0 && NT % CPRB == 0, "B chunks must divide the threads");
  static_assert(STAGES >= 2 && STAGES <= 8, "2 to 8 pipeline stages");
};

// x (N, H, W, C) and gy (N, P, Q, Ktot) in NHWC; the rest as igemm_wgrad_body. taps: one row
// per VEC columns of the GEMM (tiles_n * BN / VEC rows).
template <class Tr, int BM, int BN, int BK, int WM, int WN, int STAGES>
STA_FN void igemm_wgrad2_body(const typename Tr::T* __restrict__ x,
                              const typename Tr::T* __restrict__ gy,
                              const IgTap* __restrict__ taps, float* __restrict__ partial,
                              typename Tr::T* __restrict__ dw, int C, int H, int W, int Cg,
                              int Ktot, int M, int Ncols, int P, int Q, int sh, int sw, int pt,
                              int pl, int NPQ, int chunk, int groups, int tiles_m, int tiles_n,
                              unsigned mul_pix, int shr_pix, unsigned mul_q, int shr_q,
                              unsigned char* smem) {
  typedef IgWgrad2Shape<Tr, BM, BN, BK, WM, WN, STAGES> S;
  typedef typename Tr::FragA FragA;
  typedef typename Tr::FragB FragB;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int lg = lane >> 2, lt = lane & 3;
  int b = blockIdx.x;  // tiles innermost: CTAs of one split read the same pixels together
  const int tm = b % tiles_m;
  b /= tiles_m;
  const int tn = b % tiles_n;
  b /= tiles_n;
  const int grp = b % groups;
  const int split = b / groups;
  const int m0 = tm * BM, n0 = tn * BN;
  const int PIX = P * Q;
  const int jbeg = split * chunk, jend = jbeg + chunk < NPQ ? jbeg + chunk : NPQ;
  const int KT = jend > jbeg ? (jend - jbeg + BK - 1) / BK : 0;
  const unsigned char* xb = reinterpret_cast<const unsigned char*>(x);
  const unsigned char* gb = reinterpret_cast<const unsigned char*>(gy);
  const int gcol = grp * M + m0;  // first dy channel of this tile

  // B: fixed column chunk bch (one tap for the whole reduction), rows brow + i * NT / CPRB
  const int bch = tid % S::CPRB, brow = tid / S::CPRB;
  const IgTap tap = taps[n0 / S::VEC + bch];
  const int xgrp = grp * Cg + tap.delta;
  auto issue = [&](int kt, int stage) {
    unsigned char* sA = smem + stage * S::STAGE;
    unsigned char* sB = sA + S::SA;
    const int jt = jbeg + kt * BK;
#pragma unroll
    for (int u = 0; u < (S::ACH + S::NT - 1) / S::NT; ++u) {
      const int c = tid + u * S::NT;
      if (S::ACH % S::NT != 0 && c >= S::ACH) break;
      const int r = c / S::CPRA, ch = c - r * S::CPRA;
      const int jj = jt + r;
      const bool ok = jj < jend && m0 + ch * S::VEC < M;
      const long long e = ok ? (long long)jj * Ktot + gcol + ch * S::VEC : 0;
      sta_cp_async16(sA + r * S::ROWA + ch * 16, gb + e * S::ES, ok);
    }
#pragma unroll
    for (int i = 0; i < S::BPT; ++i) {
      const int r = brow + i * (S::NT / S::CPRB), jj = jt + r;
      bool ok = false;
      int e = 0;
      if (jj < jend) {
        const int n = ig_div(jj, mul_pix, shr_pix), pix = jj - n * PIX;
        const int p = ig_div(pix, mul_q, shr_q), q = pix - p * Q;
        const int ih0 = p * sh - pt, iw0 = q * sw - pl;
        const int ih = ih0 + tap.dr, iw = iw0 + tap.ds;
        ok = (unsigned)ih < (unsigned)H && (unsigned)iw < (unsigned)W;
        e = ok ? ((n * H + ih0) * W + iw0) * C + xgrp : 0;
      }
      ig_cp_async16_ca(sB + r * S::ROWB + bch * 16, xb + (long long)e * S::ES, ok);
    }
  };

  const int wm0 = (warp % WM) * S::WTM, wn0 = (warp / WM) * S::WTN;
  float acc[S::MT][S::NT8][4];
#pragma unroll
  for (int i = 0; i < S::MT; ++i)
#pragma unroll
    for (int j = 0; j < S::NT8; ++j) acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.f;

#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (s < KT) issue(s, s);
    sta_cp_async_commit();
  }
  int stage = 0, wstage = STAGES - 1;
  for (int kt = 0; kt < KT; ++kt) {
    sta_cp_async_wait<STAGES - 2>();
    sta_sync();
    if (kt + STAGES - 1 < KT) issue(kt + STAGES - 1, wstage);
    sta_cp_async_commit();
    const unsigned char* cA = smem + stage * S::STAGE;
    const unsigned char* cB = cA + S::SA;
    ig_tile_mma<Tr, S::MT, S::NT8, BK / S::KS>(
        acc, [&](FragA& f, int i, int k) { Tr::load_a_kn(f, cA, wm0 + 16 * i, k, S::ROWA); },
        [&](FragB (&b)[2], int jp, int k) { Tr::load_b_kn(b, cB, k, wn0 + 16 * jp, S::ROWB); });
    stage = stage + 1 == STAGES ? 0 : stage + 1;
    wstage = wstage + 1 == STAGES ? 0 : wstage + 1;
  }
  sta_cp_async_wait<0>();

  // GEMM column col = rs * Cg + c  ->  dw column c * RS + rs
  const int RS = Ncols / Cg;
  int dcol[S::NT8][2];
#pragma unroll
  for (int jn = 0; jn < S::NT8; ++jn)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int col = n0 + wn0 + 8 * jn + 2 * lt + e;
      const int rs = col / Cg;
      dcol[jn][e] = col < Ncols ? (col - rs * Cg) * RS + rs : -1;
    }
#pragma unroll
  for (int i = 0; i < S::MT; ++i) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int m = m0 + wm0 + 16 * i + lg + 8 * h;
      if (m >= M) continue;
      const long long row = partial ? ((long long)split * groups + grp) * M + m : (long long)grp * M + m;
#pragma unroll
      for (int jn = 0; jn < S::NT8; ++jn) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          if (dcol[jn][e] < 0) continue;
          const float v = acc[i][jn][2 * h + e];
          if (partial) partial[row * Ncols + dcol[jn][e]] = v;
          else dw[row * Ncols + dcol[jn][e]] = ig_from_float<Tr>(v);
        }
      }
    }
  }
}

// NCHW -> NHWC: y[n][hw][c] = x[n][c][hw], 32x32 tiles through shared memory, 256 threads;
// block = (n, channel tile, pixel tile), pixel tiles innermost.
#define IG_NHWC_PARAMS const void *x_, void *y_, int C, int HW, int tiles_c, int tiles_hw
#define IG_NHWC_ARGS (const IgT*)x_, (IgT*)y_, C, HW, tiles_c, tiles_hw

template <class Tr>
STA_FN void igemm_nhwc_body(const typename Tr::T* __restrict__ x, typename Tr::T* __restrict__ y,
                            int C, int HW, int tiles_c, int tiles_hw, unsigned char* smem) {
  typedef typename Tr::T T;
  T(*tile)[33] = reinterpret_cast<T(*)[33]>(smem);
  int b = blockIdx.x;
  const int th = b % tiles_hw;
  b /= tiles_hw;
  const int tc = b % tiles_c;
  const int n = b / tiles_c;
  const int c0 = tc * 32, h0 = th * 32, tx = threadIdx.x & 31, ty = threadIdx.x >> 5;
  const T* xs = x + (long long)n * C * HW;
  T* ys = y + (long long)n * C * HW;
#pragma unroll
  for (int i = ty; i < 32; i += 8) {
    const int c = c0 + i, h = h0 + tx;
    if (c < C && h < HW) tile[i][tx] = xs[(long long)c * HW + h];
  }
  sta_sync();
#pragma unroll
  for (int i = ty; i < 32; i += 8) {
    const int h = h0 + i, c = c0 + tx;
    if (c < C && h < HW) ys[(long long)h * C + c] = tile[tx][i];
  }
}

// ---- small kernels: tap table + weight packing, split reduction -------------------------------
// Grid-stride over max(ntaps, groups*Mpad*Kpad) items.
//   taps, tapmode 0 (v1, NCHW): row kk < ntaps is kk = (c, r, s) over C*kh*kw of the gathered
//     tensor (in_hw, in_w its plane and row sizes); rows kk >= Kgemm read nothing (dr = IG_OFF).
//   taps, tapmode 1 (v2, NHWC): row e covers reduction indices kk = e*vec .. e*vec + vec-1 with
//     kk = (r, s, c) over kh*kw*cgath (c innermost, cgath a multiple of vec); in_hw is the
//     channel count of the NHWC tensor, delta = (r*dh*in_w + s*dw)*in_hw + c.
//   wp (when not null): mode 0 (forward) wp[g][m][kk] = w[g*M + m][kk]; mode 1 (input gradient)
//     wp[g][c][(k, r, s)] = w[g*Kg + k][c][kh-1-r][kw-1-s]; modes 2 and 3: the same with the
//     reduction ordered (r, s, c) resp. (r, s, k); zero in the padding.
#define IG_PREP_PARAMS                                                                            \
  const void *w_, void *wp_, IgTap *taps, int mode, int groups, int M, int Mpad, int Kgemm,     \
      int Kpad, int Cgw, int Kgw, int R, int S, int in_hw, int in_w, int dh, int dwl, int ntaps,  \
      int tapmode, int cgath, int vec
#define IG_PREP_ARGS                                                                              \
  (const IgT*)w_, (IgT*)wp_, taps, mode, groups, M, Mpad, Kgemm, Kpad, Cgw, Kgw, R, S, in_hw,    \
      in_w, dh, dwl, ntaps, tapmode, cgath, vec

template <class Tr>
STA_FN void igemm_prep_body(const typename Tr::T* __restrict__ w, typename Tr::T* __restrict__ wp,
                            IgTap* __restrict__ taps, int mode, int groups, int M, int Mpad,
                            int Kgemm, int Kpad, int Cgw, int Kgw, int R, int S, int in_hw,
                            int in_w, int dh, int dwl, int ntaps, int tapmode, int cgath,
                            int vec) {
  const int RS = R * S;
  const long long packed = wp ? (long long)groups * Mpad * Kpad : 0;
  const long long total = packed > ntaps ? packed : ntaps;
  for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total;
       e += (long long)gridDim.x * blockDim.x) {
    if (e < ntaps) {
      const int kk = tapmode ? (int)e * vec : (int)e;
      IgTap t;
      t.pad = 0;
      if (kk < Kgemm) {
        int c, rs;
        if (tapmode) {
          rs = kk / cgath;
          c = kk - rs * cgath;
        } else {
          c = kk / RS;
          rs = kk - c * RS;
        }
        const int r = rs / S, s = rs - r * S;
        t.dr = r * dh;
        t.ds = s * dwl;
        t.delta = tapmode ? (t.dr * in_w + t.ds) * in_hw + c : c * in_hw + t.dr * in_w + t.ds;
      } else {
        t.delta = 0;
        t.dr = IG_OFF;
        t.ds = 0;
      }
      taps[e] = t;
    }
    if (e < packed) {
      const int kk = (int)(e % Kpad);
      const long long gm = e / Kpad;
      const int m = (int)(gm % Mpad), g = (int)(gm / Mpad);
      typename Tr::T v = (typename Tr::T)0;
      if (m < M && kk < Kgemm) {
        if (mode == 0) {
          v = w[((long long)g * M + m) * Kgemm + kk];
        } else if (mode == 2) {
          const int rs = kk / Cgw, c = kk - rs * Cgw;
          v = w[(((long long)g * M + m) * Cgw + c) * RS + rs];
        } else {
          int k, rs;
          if (mode == 1) {
            k = kk / RS;
            rs = kk - k * RS;
          } else {
            rs = kk / Kgw;
            k = kk - rs * Kgw;
          }
          const int r = rs / S, s = rs - r * S;
          v = w[(((long long)g * Kgw + k) * Cgw + m) * RS + (R - 1 - r) * S + (S - 1 - s)];
        }
      }
      wp[e] = v;
    }
  }
}

#define IG_REDUCE_PARAMS const float *partial, void *dw_, int splits, long long total
#define IG_REDUCE_ARGS partial, (IgT*)dw_, splits, total

// dw[e] = sum over splits of partial[s][e], in split order (deterministic)
template <class Tr>
STA_FN void igemm_reduce_body(const float* __restrict__ partial, typename Tr::T* __restrict__ dw,
                              int splits, long long total) {
  for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total;
       e += (long long)gridDim.x * blockDim.x) {
    float s = 0.f;
    for (int k = 0; k < splits; ++k) s += partial[k * total + e];
    dw[e] = ig_from_float<Tr>(s);
  }
}

#define IG_NT (32 * ST_IGEMM_WM * ST_IGEMM_WN)

#ifndef ST_IGEMM_STAGES
#define ST_IGEMM_STAGES 3
#endif

#ifndef SCITENSOR_EMULATE
extern "C" __global__ void st_igemm_prep(IG_PREP_PARAMS) { igemm_prep_body<IgTr>(IG_PREP_ARGS); }
extern "C" __global__ void st_igemm_wgrad_reduce(IG_REDUCE_PARAMS) {
  igemm_reduce_body<IgTr>(IG_REDUCE_ARGS);
}
extern "C" __global__ void __launch_bounds__(256) st_igemm_nhwc(IG_NHWC_PARAMS) {
  __shared__ __align__(16) unsigned char smem[32 * 33 * sizeof(IgT)];
  igemm_nhwc_body<IgTr>(IG_NHWC_ARGS, smem);
}
#if ST_IGEMM_KIND == 0
extern "C" __global__ void __launch_bounds__(IG_NT, ST_IGEMM_MINB) st_igemm_fwd(IG_FWD_PARAMS) {
  __shared__ __align__(16) unsigned char smem[IgFwdShape<IgTr, ST_IGEMM_BM, ST_IGEMM_BN,
                                                         ST_IGEMM_BK, ST_IGEMM_WM,
                                                         ST_IGEMM_WN>::SMEM];
  igemm_fwd_body<IgTr, ST_IGEMM_BM, ST_IGEMM_BN, ST_IGEMM_BK, ST_IGEMM_WM, ST_IGEMM_WN>(
      IG_FWD_ARGS, smem);
}
#elif ST_IGEMM_KIND == 1
extern "C" __global__ void __launch_bounds__(IG_NT, ST_IGEMM_MINB) st_igemm_wgrad(IG_WGRAD_PARAMS) {
  __shared__ __align__(16) unsigned char smem[IgWgradShape<IgTr, ST_IGEMM_BM, ST_IGEMM_BN,
                                                           ST_IGEMM_BK, ST_IGEMM_WM,
                                                           ST_IGEMM_WN>::SMEM];
  igemm_wgrad_body<IgTr, ST_IGEMM_BM, ST_IGEMM_BN, ST_IGEMM_BK, ST_IGEMM_WM, ST_IGEMM_WN>(
      IG_WGRAD_ARGS, smem);
}
#elif ST_IGEMM_KIND == 2
// dynamic shared memory: IgFwd2Shape::SMEM bytes (the loader passes it; trap if less)
extern "C" __global__ void __launch_bounds__(IG_NT, ST_IGEMM_MINB) st_igemm_fwd2(IG_FWD_PARAMS) {
  extern __shared__ __align__(16) unsigned char ig_dsmem[];
  typedef IgFwd2Shape<IgTr, ST_IGEMM_BM, ST_IGEMM_BN, ST_IGEMM_BK, ST_IGEMM_WM, ST_IGEMM_WN,
                      ST_IGEMM_STAGES> Shape;
  sta_check_smem(Shape::SMEM);
  igemm_fwd2_body<IgTr, ST_IGEMM_BM, ST_IGEMM_BN, ST_IGEMM_BK, ST_IGEMM_WM, ST_IGEMM_WN,
                  ST_IGEMM_STAGES>(IG_FWD_ARGS, ig_dsmem);
}
#else
extern "C" __global__ void __launch_bounds__(IG_NT, ST_IGEMM_MINB)
    st_igemm_wgrad2(IG_WGRAD_PARAMS) {
  extern __shared__ __align__(16) unsigned char ig_dsmem[];
  typedef IgWgrad2Shape<IgTr, ST_IGEMM_BM, ST_IGEMM_BN, ST_IGEMM_BK, ST_IGEMM_WM, ST_IGEMM_WN,
                        ST_IGEMM_STAGES> Shape;
  sta_check_smem(Shape::SMEM);
  igemm_wgrad2_body<IgTr, ST_IGEMM_BM, ST_IGEMM_BN, ST_IGEMM_BK, ST_IGEMM_WM, ST_IGEMM_WN,
                    ST_IGEMM_STAGES>(IG_WGRAD_ARGS, ig_dsmem);
}
#endif
#endif  // SCITENSOR_EMULATE
