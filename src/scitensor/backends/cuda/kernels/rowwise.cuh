// Shared pieces of the row-wise kernels (layer_norm.cu, softmax.cu, cross_entropy.cu): the
// storage type T chosen with -DST_DTYPE (0 float16, 1 bfloat16, 2 float32; math is float32),
// 16-byte vector loads/stores, and reductions over the tpr threads that share one row.
//
// Thread layout used by every row kernel: a block of blockDim.x threads holds
// blockDim.x / tpr row groups of tpr threads each. tpr is a power of two <= 32 (the group is
// part of a warp: shuffles only) or a multiple of 32 (the group is whole warps: shuffles,
// then shared memory). blockDim.x is a multiple of 32, so full-warp shuffle masks are valid;
// kernels keep every thread alive up to their last barrier (no early return).
#pragma once
#include "common.cuh"

#ifndef ST_DTYPE
#define ST_DTYPE 2
#endif

#if ST_DTYPE == 0
typedef st_f16 T;
__device__ __forceinline__ float st_ld(T v) { return st_f16_to_f32(v); }
__device__ __forceinline__ T st_st(float v) { return st_f32_to_f16(v); }
#elif ST_DTYPE == 1
typedef st_bf16 T;
__device__ __forceinline__ float st_ld(T v) { return st_bf16_to_f32(v); }
__device__ __forceinline__ T st_st(float v) { return st_f32_to_bf16(v); }
#elif ST_DTYPE == 2
typedef float T;
__device__ __forceinline__ float st_ld(T v) { return v; }
__device__ __forceinline__ T st_st(float v) { return v; }
#else
#error "row kernels support ST_DTYPE 0 (float16), 1 (bfloat16) and 2 (float32) only"
#endif

#define ST_VEC (16 / (int)sizeof(T))  // elements per 16-byte vector: 4 (fp32) or 8
#define ST_FULL 0xffffffffu
#define ST_LOG2E 1.4426950408889634f

union __align__(16) StPack {
  uint4 u;
  T e[ST_VEC];
};

// ---- loads and stores ---------------------------------------------------------------------
__device__ __forceinline__ void st_load_vec(const T* __restrict__ p, float (&v)[ST_VEC]) {
  StPack k;
  k.u = __ldg(reinterpret_cast<const uint4*>(p));
#pragma unroll
  for (int e = 0; e < ST_VEC; ++e) v[e] = st_ld(k.e[e]);
}

__device__ __forceinline__ void st_store_vec(T* __restrict__ p, const float (&v)[ST_VEC]) {
  StPack k;
#pragma unroll
  for (int e = 0; e < ST_VEC; ++e) k.e[e] = st_st(v[e]);
  *reinterpret_cast<uint4*>(p) = k.u;
}

// A parameter vector (weight/bias) that is float32 (pf32 != 0) or of type T, at element i.
__device__ __forceinline__ void st_load_param(const void* __restrict__ p, int pf32,
                                              long long i, float (&v)[ST_VEC]) {
  if (pf32) {
    const float4* q = reinterpret_cast<const float4*>(static_cast<const float*>(p) + i);
#pragma unroll
    for (int j = 0; j < ST_VEC / 4; ++j) {
      const float4 f = __ldg(q + j);
      v[4 * j] = f.x; v[4 * j + 1] = f.y; v[4 * j + 2] = f.z; v[4 * j + 3] = f.w;
    }
  } else {
    st_load_vec(static_cast<const T*>(p) + i, v);
  }
}

__device__ __forceinline__ float st_param(const void* __restrict__ p, int pf32, long long i) {
  return pf32 ? __ldg(static_cast<const float*>(p) + i) : st_ld(static_cast<const T*>(p)[i]);
}

// exp(x) as one FMUL + MUFU.EX2 (2 ulp near 0, where softmax sums get their mass)
__device__ __forceinline__ float st_exp(float x) { return exp2f(x * ST_LOG2E); }

// ---- reductions over a row group ------------------------------------------------------------
// Butterfly sums: a + b == b + a exactly, so every lane of the group ends with the same bits.
template <int K>
__device__ __forceinline__ void st_row_sum(float (&v)[K], int tpr, float (*smem)[32]) {
  const int width = tpr < 32 ? tpr : 32;
  for (int o = width >> 1; o > 0; o >>= 1) {
#pragma unroll
    for (int k = 0; k < K; ++k) v[k] += __shfl_xor_sync(ST_FULL, v[k], o);
  }
  if (tpr > 32) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, wpr = tpr >> 5;
    if (lane == 0) {
#pragma unroll
      for (int k = 0; k < K; ++k) smem[k][warp] = v[k];
    }
    __syncthreads();
    const int first = warp - warp % wpr;
#pragma unroll
    for (int k = 0; k < K; ++k) {
      float s = 0.f;
      for (int i = 0; i < wpr; ++i) s += smem[k][first + i];
      v[k] = s;
    }
    __syncthreads();  // smem may be reused right after
  }
}

// Merge of (max, sum of exp(x - max)) pairs; symmetric in its operands.
__device__ __forceinline__ void st_merge_maxsum(float& m, float& s, float m2, float s2) {
  const float mx = fmaxf(m, m2);
  if (mx == -INFINITY) {  // both empty (or all -inf): nothing to rescale
    s += s2;
  } else {
    s = s * st_exp(m - mx) + s2 * st_exp(m2 - mx);
  }
  m = mx;
}

// Online max/sum over a row group; `extra` is summed alongside (K_EXTRA of 0 or 1 values).
template <int K_EXTRA>
__device__ __forceinline__ void st_row_maxsum(float& m, float& s, float* extra, int tpr,
                                              float (*smem)[32]) {
  const int width = tpr < 32 ? tpr : 32;
  for (int o = width >> 1; o > 0; o >>= 1) {
    const float m2 = __shfl_xor_sync(ST_FULL, m, o);
    const float s2 = __shfl_xor_sync(ST_FULL, s, o);
#pragma unroll
    for (int k = 0; k < K_EXTRA; ++k) extra[k] += __shfl_xor_sync(ST_FULL, extra[k], o);
    st_merge_maxsum(m, s, m2, s2);
  }
  if (tpr > 32) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, wpr = tpr >> 5;
    if (lane == 0) {
      smem[0][warp] = m;
      smem[1][warp] = s;
#pragma unroll
      for (int k = 0; k < K_EXTRA; ++k) smem[2 + k][warp] = extra[k];
    }
    __syncthreads();
    const int first = warp - warp % wpr;
    m = smem[0][first];
    s = smem[1][first];
#pragma unroll
    for (int k = 0; k < K_EXTRA; ++k) extra[k] = smem[2 + k][first];
    for (int i = 1; i < wpr; ++i) {  // same order in every thread: identical results
      st_merge_maxsum(m, s, smem[0][first + i], smem[1][first + i]);
#pragma unroll
      for (int k = 0; k < K_EXTRA; ++k) extra[k] += smem[2 + k][first + i];
    }
    __syncthreads();
  }
}

// Chan's merge of (count, mean, sum of squared deviations) statistics.
__device__ __forceinline__ void st_merge_welford(float& n, float& mean, float& m2, float nb,
                                                 float meanb, float m2b) {
  const float nn = n + nb;
  if (nn > 0.f) {
    const float delta = meanb - mean;
    const float fb = nb / nn;
    mean = fmaf(delta, fb, mean);
    m2 = m2 + m2b + delta * delta * n * fb;
    n = nn;
  }
}

// Welford statistics over a row group; every thread of the group gets the same result.
__device__ __forceinline__ void st_row_welford(float& n, float& mean, float& m2, int tpr,
                                               float (*smem)[32]) {
  const int width = tpr < 32 ? tpr : 32;
  for (int o = width >> 1; o > 0; o >>= 1) {
    const float nb = __shfl_xor_sync(ST_FULL, n, o);
    const float mb = __shfl_xor_sync(ST_FULL, mean, o);
    const float qb = __shfl_xor_sync(ST_FULL, m2, o);
    st_merge_welford(n, mean, m2, nb, mb, qb);
  }
  if (tpr <= 32) {  // the merge is not bitwise symmetric: take the group's first lane
    const int src = (threadIdx.x & 31) & ~(width - 1);
    n = __shfl_sync(ST_FULL, n, src);
    mean = __shfl_sync(ST_FULL, mean, src);
    m2 = __shfl_sync(ST_FULL, m2, src);
    return;
  }
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, wpr = tpr >> 5;
  if (lane == 0) {
    smem[0][warp] = n;
    smem[1][warp] = mean;
    smem[2][warp] = m2;
  }
  __syncthreads();
  const int first = warp - warp % wpr;
  n = smem[0][first];
  mean = smem[1][first];
  m2 = smem[2][first];
  for (int i = 1; i < wpr; ++i)
    st_merge_welford(n, mean, m2, smem[0][first + i], smem[1][first + i], smem[2][first + i]);
  __syncthreads();
}

// ---- walking one row in 16-byte vectors, whatever its alignment -----------------------------
// Calls f(i, v, cnt) for the row's elements: cnt == ST_VEC for an aligned vector starting at
// element i, cnt == 1 for a single element (the unaligned head and the tail). Vector loads are
// batched four at a time so that several are in flight per thread.
template <typename F>
__device__ __forceinline__ void st_row_chunks(const T* __restrict__ row, int n, int t, int tpr,
                                              F&& f) {
  const int mis = (int)(((unsigned long long)row & 15ull) / sizeof(T));
  const int head = mis ? min(n, ST_VEC - mis) : 0;
  const int nv = (n - head) / ST_VEC;
  const T* body = row + head;
  int c = t;
  for (; c + 3 * tpr < nv; c += 4 * tpr) {
    float v[4][ST_VEC];
#pragma unroll
    for (int u = 0; u < 4; ++u) st_load_vec(body + (long long)(c + u * tpr) * ST_VEC, v[u]);
#pragma unroll
    for (int u = 0; u < 4; ++u) f(head + (c + u * tpr) * ST_VEC, v[u], ST_VEC);
  }
  for (; c < nv; c += tpr) {
    float v[ST_VEC];
    st_load_vec(body + (long long)c * ST_VEC, v);
    f(head + c * ST_VEC, v, ST_VEC);
  }
  for (int i = t; i < head; i += tpr) {
    float v[ST_VEC];
    v[0] = st_ld(row[i]);
    f(i, v, 1);
  }
  for (int i = head + nv * ST_VEC + t; i < n; i += tpr) {
    float v[ST_VEC];
    v[0] = st_ld(row[i]);
    f(i, v, 1);
  }
}

// Stores what st_row_chunks handed out (out rows must share the input rows' alignment).
__device__ __forceinline__ void st_store_chunk(T* __restrict__ row, int i, const float (&v)[ST_VEC],
                                               int cnt) {
  if (cnt == ST_VEC) {
    st_store_vec(row + i, v);
  } else {
    row[i] = st_st(v[0]);
  }
}
