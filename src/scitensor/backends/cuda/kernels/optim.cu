// Fused multi-tensor optimizer updates (SGD, Adam/AdamW) and global-norm gradient clipping.
//
// One launch updates up to ST_MT_MAX tensors of one dtype: the tensor list (pointers, sizes,
// first block of each tensor, hyper-parameter row) is passed BY VALUE as a kernel parameter,
// so a CUDA graph bakes the addresses it was captured with and needs no device pointer table.
// Block b works on a chunk of ST_MT_CHUNK elements of tensor i, where
// block_start[i] <= b < block_start[i + 1].
//
// Hyper-parameters are read from a float64 device buffer (one row of ST_H per parameter),
// refreshed by the host before every eager step and before every graph replay. Arithmetic
// uses explicitly rounded intrinsics (no FMA contraction) in the order of the NumPy/CuPy
// reference path, so fp32 and fp64 results match it bit for bit. fp16/bf16 parameters are
// updated in fp32 with fp32 optimizer state.
#include "common.cuh"

#define ST_MT_MAX 48
#define ST_MT_CHUNK 2048
#define ST_H 12

struct StMtList {
  unsigned long long p[ST_MT_MAX];   // parameters (or gradients for clipping)
  unsigned long long g[ST_MT_MAX];   // gradients
  unsigned long long s0[ST_MT_MAX];  // exp_avg | momentum_buffer
  unsigned long long s1[ST_MT_MAX];  // exp_avg_sq
  unsigned long long s2[ST_MT_MAX];  // max_exp_avg_sq (0 when unused)
  long long n[ST_MT_MAX];            // elements
  long long block_start[ST_MT_MAX];  // first block of each tensor
  long long row[ST_MT_MAX];          // hyper-parameter row
  int count;
};

// ---- storage types -------------------------------------------------------------------------
struct StF32 {
  typedef float S;
  typedef float C;
  static __device__ __forceinline__ float ld(float x) { return x; }
  static __device__ __forceinline__ float st(float x) { return x; }
};
struct StF64 {
  typedef double S;
  typedef double C;
  static __device__ __forceinline__ double ld(double x) { return x; }
  static __device__ __forceinline__ double st(double x) { return x; }
};
struct StF16 {
  typedef st_f16 S;
  typedef float C;
  static __device__ __forceinline__ float ld(st_f16 x) { return st_f16_to_f32(x); }
  static __device__ __forceinline__ st_f16 st(float x) { return st_f32_to_f16(x); }
};
struct StBF16 {
  typedef st_bf16 S;
  typedef float C;
  static __device__ __forceinline__ float ld(st_bf16 x) { return st_bf16_to_f32(x); }
  static __device__ __forceinline__ st_bf16 st(float x) { return st_f32_to_bf16(x); }
};

// ---- correctly rounded arithmetic, never contracted into FMA ---------------------------------
__device__ __forceinline__ float st_add(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ float st_sub(float a, float b) { return __fsub_rn(a, b); }
__device__ __forceinline__ float st_mul(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ float st_div(float a, float b) { return __fdiv_rn(a, b); }
__device__ __forceinline__ float st_sqrt(float a) { return __fsqrt_rn(a); }
__device__ __forceinline__ double st_add(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ double st_sub(double a, double b) { return __dsub_rn(a, b); }
__device__ __forceinline__ double st_mul(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ double st_div(double a, double b) { return __ddiv_rn(a, b); }
__device__ __forceinline__ double st_sqrt(double a) { return __dsqrt_rn(a); }
// NumPy's maximum: NaN in either argument gives NaN
template <typename C>
__device__ __forceinline__ C st_nanmax(C a, C b) { return (a != a || a >= b) ? a : b; }

__device__ __forceinline__ int st_mt_find(const StMtList& L) {
  const long long b = blockIdx.x;
  int i = 0;
  while (i + 1 < L.count && L.block_start[i + 1] <= b) ++i;
  return i;
}

// ---- Adam / AdamW --------------------------------------------------------------------------
// row: 0 -step_size  1 sqrt(1-b2^t)  2 1-b1  3 b2  4 1-b2  5 eps  6 weight_decay
//      7 1-lr*weight_decay  8 first step (state holds garbage: read it as zero)
template <class T>
__device__ __forceinline__ void st_adam(const StMtList& L, const double* __restrict__ hyper,
                                        int decoupled) {
  typedef typename T::S S;
  typedef typename T::C C;
  const int i = st_mt_find(L);
  const double* h = hyper + L.row[i] * ST_H;
  const C neg_step = (C)h[0], bc2 = (C)h[1], omb1 = (C)h[2], b2 = (C)h[3], omb2 = (C)h[4];
  const C eps = (C)h[5], wd = (C)h[6], decay = (C)h[7];
  const bool use_wd = h[6] != 0.0, first = h[8] != 0.0;
  S* __restrict__ p = (S*)L.p[i];
  const S* __restrict__ g = (const S*)L.g[i];
  C* __restrict__ m = (C*)L.s0[i];
  C* __restrict__ v = (C*)L.s1[i];
  C* __restrict__ vmax = (C*)L.s2[i];
  const long long n = L.n[i];
  const long long begin = (long long)(blockIdx.x - L.block_start[i]) * ST_MT_CHUNK;
  const long long end = begin + ST_MT_CHUNK < n ? begin + ST_MT_CHUNK : n;
  for (long long j = begin + threadIdx.x; j < end; j += blockDim.x) {
    C pj = T::ld(p[j]);
    C gj = T::ld(g[j]);
    if (use_wd) {
      if (decoupled) pj = st_mul(pj, decay);
      else gj = st_add(st_mul(pj, wd), gj);
    }
    C mj = first ? (C)0 : m[j];
    C vj = first ? (C)0 : v[j];
    mj = st_add(mj, st_mul(st_sub(gj, mj), omb1));
    vj = st_add(st_mul(vj, b2), st_mul(st_mul(gj, omb2), gj));
    m[j] = mj;
    v[j] = vj;
    C vd = vj;
    if (vmax) {
      vd = st_nanmax(first ? (C)0 : vmax[j], vj);
      vmax[j] = vd;
    }
    const C den = st_add(st_div(st_sqrt(vd), bc2), eps);
    pj = st_add(pj, st_mul(st_div(mj, den), neg_step));
    p[j] = T::st(pj);
  }
}

// ---- SGD -----------------------------------------------------------------------------------
// row: 0 lr  1 momentum  2 1-dampening  3 weight_decay  4 nesterov  5 first step (momentum
//      buffer not yet written: it becomes the gradient)
template <class T>
__device__ __forceinline__ void st_sgd(const StMtList& L, const double* __restrict__ hyper) {
  typedef typename T::S S;
  typedef typename T::C C;
  const int i = st_mt_find(L);
  const double* h = hyper + L.row[i] * ST_H;
  const C lr = (C)h[0], mom = (C)h[1], omd = (C)h[2], wd = (C)h[3];
  const bool use_wd = h[3] != 0.0, nesterov = h[4] != 0.0, first = h[5] != 0.0;
  S* __restrict__ p = (S*)L.p[i];
  const S* __restrict__ g = (const S*)L.g[i];
  C* __restrict__ buf = (C*)L.s0[i];
  const bool use_mom = buf != 0 && h[1] != 0.0;
  const long long n = L.n[i];
  const long long begin = (long long)(blockIdx.x - L.block_start[i]) * ST_MT_CHUNK;
  const long long end = begin + ST_MT_CHUNK < n ? begin + ST_MT_CHUNK : n;
  for (long long j = begin + threadIdx.x; j < end; j += blockDim.x) {
    C pj = T::ld(p[j]);
    C gj = T::ld(g[j]);
    if (use_wd) gj = st_add(st_mul(pj, wd), gj);
    if (use_mom) {
      // buf = g (first) | buf = momentum * buf + (1 - dampening) * g
      const C bj = first ? gj : st_add(st_mul(buf[j], mom), st_mul(gj, omd));
      buf[j] = bj;
      gj = nesterov ? st_add(st_mul(bj, mom), gj) : bj;
    }
    pj = st_sub(pj, st_mul(gj, lr));
    p[j] = T::st(pj);
  }
}

// ---- gradient clipping by global L2 norm -----------------------------------------------------
#define ST_RED_THREADS 256

__device__ __forceinline__ double st_block_sum(double x) {
  __shared__ double sh[ST_RED_THREADS];
  sh[threadIdx.x] = x;
  __syncthreads();
  for (int s = ST_RED_THREADS / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
    __syncthreads();
  }
  return sh[0];
}

// partials[blockIdx.x] = sum of squares of this block's chunk (float64); blockDim = 256
template <class T>
__device__ __forceinline__ void st_sumsq(const StMtList& L, double* __restrict__ partials) {
  typedef typename T::S S;
  const int i = st_mt_find(L);
  const S* __restrict__ g = (const S*)L.p[i];
  const long long n = L.n[i];
  const long long begin = (long long)(blockIdx.x - L.block_start[i]) * ST_MT_CHUNK;
  const long long end = begin + ST_MT_CHUNK < n ? begin + ST_MT_CHUNK : n;
  double acc = 0.0;
  for (long long j = begin + threadIdx.x; j < end; j += blockDim.x) {
    const double x = (double)T::ld(g[j]);
    acc += x * x;
  }
  const double total = st_block_sum(acc);
  if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

// g *= coef[0] in place
template <class T>
__device__ __forceinline__ void st_scale(const StMtList& L, const double* __restrict__ coef) {
  typedef typename T::S S;
  typedef typename T::C C;
  const int i = st_mt_find(L);
  S* __restrict__ g = (S*)L.p[i];
  const C c = (C)coef[0];
  const long long n = L.n[i];
  const long long begin = (long long)(blockIdx.x - L.block_start[i]) * ST_MT_CHUNK;
  const long long end = begin + ST_MT_CHUNK < n ? begin + ST_MT_CHUNK : n;
  for (long long j = begin + threadIdx.x; j < end; j += blockDim.x) {
    g[j] = T::st(st_mul(T::ld(g[j]), c));
  }
}

// One block of 256 threads, fixed summation order (deterministic): norm = sqrt(sum partials),
// coef[0] = min(1, max_norm / (norm + 1e-6)) (NaN stays NaN, as torch's clamp); the norm is
// written as float32 (out_f64 == 0) or float64.
extern "C" __global__ void st_clip_finalize(const double* __restrict__ partials, long long count,
                                            double max_norm, void* __restrict__ norm_out,
                                            int out_f64, double* __restrict__ coef) {
  double acc = 0.0;
  for (long long j = threadIdx.x; j < count; j += blockDim.x) acc += partials[j];
  const double total = st_block_sum(acc);
  if (threadIdx.x == 0) {
    const double norm = __dsqrt_rn(total);
    if (out_f64) *(double*)norm_out = norm;
    else *(float*)norm_out = (float)norm;
    const double q = max_norm / (norm + 1e-6);
    coef[0] = q > 1.0 ? 1.0 : q;
  }
}

// ---- entry points --------------------------------------------------------------------------
#define ST_OPTIM_ENTRY(SUF, T)                                                                \
  extern "C" __global__ void st_adam_mt_##SUF(const StMtList L,                              \
                                              const double* __restrict__ hyper,             \
                                              int decoupled) {                              \
    st_adam<T>(L, hyper, decoupled);                                                         \
  }                                                                                          \
  extern "C" __global__ void st_sgd_mt_##SUF(const StMtList L,                               \
                                             const double* __restrict__ hyper) {             \
    st_sgd<T>(L, hyper);                                                                     \
  }                                                                                          \
  extern "C" __global__ void st_sumsq_mt_##SUF(const StMtList L,                             \
                                               double* __restrict__ partials) {              \
    st_sumsq<T>(L, partials);                                                                \
  }                                                                                          \
  extern "C" __global__ void st_scale_mt_##SUF(const StMtList L,                             \
                                               const double* __restrict__ coef) {            \
    st_scale<T>(L, coef);                                                                    \
  }

ST_OPTIM_ENTRY(f32, StF32)
ST_OPTIM_ENTRY(f64, StF64)
ST_OPTIM_ENTRY(f16, StF16)
ST_OPTIM_ENTRY(bf16, StBF16)
