// Convolution kernels (NCHW) for one dtype, chosen at compile time with -DST_DTYPE=<n>:
//   0 float16, 1 bfloat16, 2 float32, 3 float64. Low-precision values accumulate in float32.
//
// The dense path is im2col + one cuBLASLt GEMM (see backends/cuda/conv.py for why):
//   st_im2col      x -> column matrix, rows (n, c, i, j) in "batch-major" order (n outer) or
//                  "channel-major" order (c, i, j outer), each row the Ho*Wo output pixels;
//   st_col2im      the adjoint: each input pixel gathers the column entries that read it
//                  (no atomics, deterministic), plus an optional per-channel bias;
//   st_swap01      (A, B, P) -> (B, A, P) with an optional bias over A (layout changes
//                  between NCHW and the channel-major GEMM output);
//   st_add_channel_bias   y[n, k, :] += bias[k] in place.
// Depthwise-style convolutions (one input channel per output channel) run directly:
//   st_depthwise_fwd, st_depthwise_bwd_input, st_depthwise_bwd_weight_k{3,5,7} (+ _finish).
//
// Launch shape shared by the row kernels: a 1-D grid of rows * blocks_per_row blocks; block b
// covers row b / blocks_per_row and a blockDim.x-wide chunk of that row's pixels. Every index
// division is 32-bit and per thread only the pixel's (h, w) needs one.
#include "common.cuh"

#ifndef ST_DTYPE
#define ST_DTYPE 2
#endif

#if ST_DTYPE == 0
typedef st_f16 T;
typedef float Acc;
#define LOAD(x) st_f16_to_f32(x)
#define STORE(x) st_f32_to_f16(x)
#elif ST_DTYPE == 1
typedef st_bf16 T;
typedef float Acc;
#define LOAD(x) st_bf16_to_f32(x)
#define STORE(x) st_f32_to_bf16(x)
#elif ST_DTYPE == 2
typedef float T;
typedef float Acc;
#define LOAD(x) (x)
#define STORE(x) (x)
#else
typedef double T;
typedef double Acc;
#define LOAD(x) (x)
#define STORE(x) (x)
#endif

#define ROW_AND_PIXEL(count)                                              \
  const int row = blockIdx.x / blocks_per_row;                            \
  const int q = (blockIdx.x - row * blocks_per_row) * blockDim.x + threadIdx.x; \
  if (q >= (count)) return;

extern "C" __global__ void st_im2col(const T* __restrict__ x, T* __restrict__ cols, int N,
                                     int C, int H, int W, int Ho, int Wo, int kh, int kw,
                                     int sh, int sw, int pt, int pl, int dh, int dw,
                                     int batch_major, int blocks_per_row) {
  const int P = Ho * Wo;
  ROW_AND_PIXEL(P)
  const int R = C * kh * kw;
  int n, r;
  if (batch_major) {
    n = row / R;
    r = row - n * R;
  } else {
    r = row / N;
    n = row - r * N;
  }
  const int j = r % kw;
  const int t = r / kw;
  const int i = t % kh;
  const int c = t / kh;
  const int ho = q / Wo, wo = q - ho * Wo;
  const int hi = ho * sh - pt + i * dh, wi = wo * sw - pl + j * dw;
  T v = 0;  // all-zero bits are 0.0 in every dtype
  if ((unsigned)hi < (unsigned)H && (unsigned)wi < (unsigned)W)
    v = x[((long long)(n * C + c) * H + hi) * W + wi];
  cols[(long long)row * P + q] = v;  // both layouts store row-major (row, pixel)
}

extern "C" __global__ void st_col2im(const T* __restrict__ cols, const T* __restrict__ bias,
                                     T* __restrict__ dx, int N, int C, int H, int W, int Ho,
                                     int Wo, int kh, int kw, int sh, int sw, int pt, int pl,
                                     int dh, int dw, int batch_major, int blocks_per_row) {
  ROW_AND_PIXEL(H * W)  // row = n * C + c
  const int n = row / C, c = row - n * C;
  const int h = q / W, w = q - h * W;
  const int P = Ho * Wo, R = C * kh * kw;
  Acc acc = bias ? LOAD(bias[c]) : (Acc)0;
  for (int i = 0; i < kh; ++i) {
    const int hh = h + pt - i * dh;
    if (hh < 0) break;  // decreasing in i
    if (hh % sh) continue;
    const int ho = hh / sh;
    if (ho >= Ho) continue;
    for (int j = 0; j < kw; ++j) {
      const int ww = w + pl - j * dw;
      if (ww < 0) break;
      if (ww % sw) continue;
      const int wo = ww / sw;
      if (wo >= Wo) continue;
      const int r = (c * kh + i) * kw + j;
      const long long crow = batch_major ? (long long)n * R + r : (long long)r * N + n;
      acc += LOAD(cols[crow * P + ho * Wo + wo]);
    }
  }
  dx[(long long)row * (H * W) + q] = STORE(acc);
}

extern "C" __global__ void st_swap01(const T* __restrict__ src, const T* __restrict__ bias,
                                     T* __restrict__ dst, int A, int B, int P,
                                     int blocks_per_row) {
  ROW_AND_PIXEL(P)  // dst row = b * A + a
  const int b = row / A, a = row - b * A;
  const T v = src[((long long)a * B + b) * P + q];
  dst[(long long)row * P + q] = bias ? STORE(LOAD(v) + LOAD(bias[a])) : v;
}

extern "C" __global__ void st_add_channel_bias(T* __restrict__ y, const T* __restrict__ bias,
                                               int K, int P, int blocks_per_row) {
  ROW_AND_PIXEL(P)  // row = n * K + k
  const long long e = (long long)row * P + q;
  y[e] = STORE(LOAD(y[e]) + LOAD(bias[row % K]));
}

// ---- depthwise-style: output channel k reads input channel k / (K / C) only --------------
extern "C" __global__ void st_depthwise_fwd(const T* __restrict__ x, const T* __restrict__ w,
                                            const T* __restrict__ bias, T* __restrict__ y,
                                            int N, int C, int H, int W, int K, int Ho, int Wo,
                                            int kh, int kw, int sh, int sw, int pt, int pl,
                                            int dh, int dw, int blocks_per_row) {
  ROW_AND_PIXEL(Ho * Wo)  // row = n * K + k
  const int n = row / K, k = row - n * K;
  const int c = k / (K / C);
  const int ho = q / Wo, wo = q - ho * Wo;
  const T* xs = x + ((long long)n * C + c) * H * W;
  const T* ws = w + k * kh * kw;
  Acc acc = bias ? LOAD(bias[k]) : (Acc)0;
  for (int i = 0; i < kh; ++i) {
    const int hi = ho * sh - pt + i * dh;
    if ((unsigned)hi >= (unsigned)H) continue;
    for (int j = 0; j < kw; ++j) {
      const int wi = wo * sw - pl + j * dw;
      if ((unsigned)wi >= (unsigned)W) continue;
      acc += LOAD(xs[hi * W + wi]) * LOAD(ws[i * kw + j]);
    }
  }
  y[(long long)row * (Ho * Wo) + q] = STORE(acc);
}

extern "C" __global__ void st_depthwise_bwd_input(const T* __restrict__ gy,
                                                  const T* __restrict__ w,
                                                  const T* __restrict__ bias,
                                                  T* __restrict__ dx, int N, int C, int H,
                                                  int W, int K, int Ho, int Wo, int kh, int kw,
                                                  int sh, int sw, int pt, int pl, int dh, int dw,
                                                  int blocks_per_row) {
  ROW_AND_PIXEL(H * W)  // row = n * C + c
  const int n = row / C, c = row - n * C;
  const int h = q / W, wq = q - h * W;
  const int m = K / C, P = Ho * Wo;
  Acc acc = bias ? LOAD(bias[c]) : (Acc)0;
  for (int mm = 0; mm < m; ++mm) {
    const int k = c * m + mm;
    const T* gs = gy + ((long long)n * K + k) * P;
    const T* ws = w + k * kh * kw;
    for (int i = 0; i < kh; ++i) {
      const int hh = h + pt - i * dh;
      if (hh < 0) break;
      if (hh % sh) continue;
      const int ho = hh / sh;
      if (ho >= Ho) continue;
      for (int j = 0; j < kw; ++j) {
        const int ww = wq + pl - j * dw;
        if (ww < 0) break;
        if (ww % sw) continue;
        const int wo = ww / sw;
        if (wo >= Wo) continue;
        acc += LOAD(gs[ho * Wo + wo]) * LOAD(ws[i * kw + j]);
      }
    }
  }
  dx[(long long)row * (H * W) + q] = STORE(acc);
}

__device__ __forceinline__ Acc st_warp_sum(Acc v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  return v;
}

// Weight gradient, stage 1: block (k, chunk) sums gy * x over its samples and every output
// pixel for all kh*kw taps at once (register accumulators, MAXK x MAXK at most), then writes
// one partial sum per tap: partial[chunk][k][tap]. Stage 2 (_finish) adds the chunks in a
// fixed order, so the result is deterministic.
#define ST_DEPTHWISE_BWD_WEIGHT(MAXK)                                                        \
  extern "C" __global__ void st_depthwise_bwd_weight_k##MAXK(                                \
      const T* __restrict__ x, const T* __restrict__ gy, Acc* __restrict__ partial, int N,   \
      int C, int H, int W, int K, int Ho, int Wo, int kh, int kw, int sh, int sw, int pt,    \
      int pl, int dh, int dw, int chunks) {                                                  \
    const int k = blockIdx.x / chunks, chunk = blockIdx.x - k * chunks;                      \
    const int c = k / (K / C);                                                               \
    const int per = (N + chunks - 1) / chunks;                                               \
    const int n0 = chunk * per;                                                              \
    const int n1 = min(N, n0 + per);                                                         \
    const int P = Ho * Wo;                                                                   \
    Acc acc[MAXK * MAXK];                                                                    \
    _Pragma("unroll") for (int t = 0; t < MAXK * MAXK; ++t) acc[t] = 0;                      \
    for (int n = n0; n < n1; ++n) {                                                          \
      const T* xs = x + ((long long)n * C + c) * H * W;                                      \
      const T* gs = gy + ((long long)n * K + k) * P;                                         \
      for (int p = threadIdx.x; p < P; p += blockDim.x) {                                    \
        const int ho = p / Wo, wo = p - ho * Wo;                                             \
        const Acc g = LOAD(gs[p]);                                                           \
        _Pragma("unroll") for (int i = 0; i < MAXK; ++i) {                                   \
          const int hi = ho * sh - pt + i * dh;                                              \
          if (i < kh && (unsigned)hi < (unsigned)H) {                                        \
            _Pragma("unroll") for (int j = 0; j < MAXK; ++j) {                               \
              const int wi = wo * sw - pl + j * dw;                                          \
              if (j < kw && (unsigned)wi < (unsigned)W)                                      \
                acc[i * MAXK + j] += g * LOAD(xs[hi * W + wi]);                              \
            }                                                                                \
          }                                                                                  \
        }                                                                                    \
      }                                                                                      \
    }                                                                                        \
    __shared__ Acc red[32];                                                                  \
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;                              \
    const int nwarps = (blockDim.x + 31) >> 5;                                               \
    _Pragma("unroll") for (int i = 0; i < MAXK; ++i) {                                       \
      _Pragma("unroll") for (int j = 0; j < MAXK; ++j) {                                     \
        if (i < kh && j < kw) {                                                              \
          const Acc v = st_warp_sum(acc[i * MAXK + j]);                                      \
          if (lane == 0) red[warp] = v;                                                      \
          __syncthreads();                                                                   \
          if (warp == 0) {                                                                   \
            Acc s = lane < nwarps ? red[lane] : (Acc)0;                                      \
            s = st_warp_sum(s);                                                              \
            if (lane == 0)                                                                   \
              partial[((long long)chunk * K + k) * (kh * kw) + i * kw + j] = s;              \
          }                                                                                  \
          __syncthreads();                                                                   \
        }                                                                                    \
      }                                                                                      \
    }                                                                                        \
  }

ST_DEPTHWISE_BWD_WEIGHT(3)
ST_DEPTHWISE_BWD_WEIGHT(5)
ST_DEPTHWISE_BWD_WEIGHT(7)

extern "C" __global__ void st_depthwise_bwd_weight_finish(const Acc* __restrict__ partial,
                                                          T* __restrict__ dw, int chunks,
                                                          int count) {
  ST_LOOP(e, count) {
    Acc s = 0;
    for (int ch = 0; ch < chunks; ++ch) s += partial[(long long)ch * count + e];
    dw[e] = STORE(s);
  }
}
