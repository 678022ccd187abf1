// Layer norm and RMS norm over the last axis of a (rows, n) array, forward and backward.
// Compiled once per dtype (-DST_DTYPE, see rowwise.cuh); math in float32. `rms` != 0 selects
// RMS norm (no mean, no bias). Weight/bias are float32 (pf32 = 1) or of the input's type, or
// null. Statistics (mean, rstd) and parameter-gradient partials are float32.
//
// Register kernels (st_norm_*_v1/v2, and v4 for float32) keep a row's VPT 16-byte vectors
// per thread in registers: the input is read from memory once. They need n % ST_VEC == 0 and
// 16-byte aligned pointers. Loop kernels (st_norm_*_loop, st_norm_*_loop1 for odd n) read the row
// twice and take any n.
//
// Backward: dx = rstd * (g w - mean(g w) - xhat * mean(g w xhat)) (RMS: without the middle
// term). dweight = sum_rows(g xhat), dbias = sum_rows(g) in two deterministic stages: the
// backward kernel runs a fixed grid whose row groups each own a slice of rows and keep
// per-column sums in registers, writing one partial row per group to part[set][group][n]
// (set 0: dweight, 1: dbias); st_norm_param_reduce then sums the partial rows. No atomics.
#include "rowwise.cuh"

// ---- forward --------------------------------------------------------------------------------
template <int VPT>
__device__ __forceinline__ void norm_fwd_reg(const T* __restrict__ x, const void* __restrict__ w,
                                             const void* __restrict__ b, int pf32,
                                             T* __restrict__ y, float* __restrict__ mean_out,
                                             float* __restrict__ rstd_out, long long rows, int n,
                                             int tpr, float eps, int rms) {
  __shared__ float smem[3][32];
  const int group = threadIdx.x / tpr, t = threadIdx.x - group * tpr;
  const long long row = (long long)blockIdx.x * (blockDim.x / tpr) + group;
  const bool active = row < rows;
  const int nvec = n / ST_VEC;
  const T* xr = x + (active ? row : 0) * n;
  float v[VPT][ST_VEC];
#pragma unroll
  for (int k = 0; k < VPT; ++k) {
    if (active && t + k * tpr < nvec) {
      st_load_vec(xr + (t + k * tpr) * ST_VEC, v[k]);
    } else {
#pragma unroll
      for (int e = 0; e < ST_VEC; ++e) v[k][e] = 0.f;
    }
  }
  float cnt = 0.f, sum = 0.f;
#pragma unroll
  for (int k = 0; k < VPT; ++k) {
    if (active && t + k * tpr < nvec) {
      cnt += (float)ST_VEC;
#pragma unroll
      for (int e = 0; e < ST_VEC; ++e) sum += v[k][e];
    }
  }
  float mean = (rms || cnt == 0.f) ? 0.f : sum / cnt;
  float m2 = 0.f;
#pragma unroll
  for (int k = 0; k < VPT; ++k) {
    if (active && t + k * tpr < nvec) {
#pragma unroll
      for (int e = 0; e < ST_VEC; ++e) {
        const float d = v[k][e] - mean;
        m2 = fmaf(d, d, m2);
      }
    }
  }
  st_row_welford(cnt, mean, m2, tpr, smem);
  const float rstd = rsqrtf(m2 / (float)n + eps);
  if (active && t == 0) {
    if (!rms) mean_out[row] = mean;
    rstd_out[row] = rstd;
  }
  T* yr = y + (active ? row : 0) * n;
#pragma unroll
  for (int k = 0; k < VPT; ++k) {
    const int c = t + k * tpr;
    if (active && c < nvec) {
      float wv[ST_VEC], bv[ST_VEC], o[ST_VEC];
      if (w) st_load_param(w, pf32, (long long)c * ST_VEC, wv);
      if (b) st_load_param(b, pf32, (long long)c * ST_VEC, bv);
#pragma unroll
      for (int e = 0; e < ST_VEC; ++e) {
        float r = (v[k][e] - mean) * rstd;
        if (w) r *= wv[e];
        if (b) r += bv[e];
        o[e] = r;
      }
      st_store_vec(yr + c * ST_VEC, o);
    }
  }
}

#define NORM_FWD_ARGS                                                                      \
  const T *__restrict__ x, const void *__restrict__ w, const void *__restrict__ b, int pf32, \
      T *__restrict__ y, float *__restrict__ mean_out, float *__restrict__ rstd_out,       \
      long long rows, int n, int tpr, float eps, int rms
#define NORM_FWD_PASS x, w, b, pf32, y, mean_out, rstd_out, rows, n, tpr, eps, rms

extern "C" __global__ void __launch_bounds__(512) st_norm_fwd_v1(NORM_FWD_ARGS) {
  norm_fwd_reg<1>(NORM_FWD_PASS);
}
extern "C" __global__ void __launch_bounds__(512) st_norm_fwd_v2(NORM_FWD_ARGS) {
  norm_fwd_reg<2>(NORM_FWD_PASS);
}
// v4: 16 values per thread in float32, 32 in 16-bit types. The 16-bit forward uses it so a
// thread keeps 64 bytes of loads in flight like float32's v4 (with v2, bf16 rows of 4096 ran
// at 68% of the copy ceiling against float32's 100%); the 16-bit backward stops at v2
// (registers).
extern "C" __global__ void __launch_bounds__(512) st_norm_fwd_v4(NORM_FWD_ARGS) {
  norm_fwd_reg<4>(NORM_FWD_PASS);
}

// Loop version: VW = ST_VEC (n % ST_VEC == 0, aligned) or 1 (any n). Reads the row twice.
template <int VW>
__device__ __forceinline__ void norm_fwd_loop(NORM_FWD_ARGS) {
  __shared__ float smem[3][32];
  const int group = threadIdx.x / tpr, t = threadIdx.x - group * tpr;
  const long long row = (long long)blockIdx.x * (blockDim.x / tpr) + group;
  const bool active = row < rows;
  const int nv = active ? n / VW : 0;
  const T* xr = x + (active ? row : 0) * n;
  float cnt = 0.f, mean = 0.f, m2 = 0.f;
  for (int c = t; c < nv; c += tpr) {
    float v[ST_VEC];
    if constexpr (VW == 1) v[0] = st_ld(xr[c]); else st_load_vec(xr + (long long)c * VW, v);
    float s = 0.f;
#pragma unroll
    for (int e = 0; e < VW; ++e) s += v[e];
    const float cm = rms ? 0.f : s / (float)VW;
    float cq = 0.f;
#pragma unroll
    for (int e = 0; e < VW; ++e) cq = fmaf(v[e] - cm, v[e] - cm, cq);
    st_merge_welford(cnt, mean, m2, (float)VW, cm, cq);
  }
  st_row_welford(cnt, mean, m2, tpr, smem);
  const float rstd = rsqrtf(m2 / (float)n + eps);
  if (active && t == 0) {
    if (!rms) mean_out[row] = mean;
    rstd_out[row] = rstd;
  }
  T* yr = y + (active ? row : 0) * n;
  for (int c = t; c < nv; c += tpr) {
    const long long i = (long long)c * VW;
    float v[ST_VEC], wv[ST_VEC], bv[ST_VEC];
    if constexpr (VW == 1) {
      v[0] = st_ld(xr[c]);
      if (w) wv[0] = st_param(w, pf32, i);
      if (b) bv[0] = st_param(b, pf32, i);
    } else {
      st_load_vec(xr + i, v);
      if (w) st_load_param(w, pf32, i, wv);
      if (b) st_load_param(b, pf32, i, bv);
    }
#pragma unroll
    for (int e = 0; e < VW; ++e) {
      float r = (v[e] - mean) * rstd;
      if (w) r *= wv[e];
      if (b) r += bv[e];
      v[e] = r;
    }
    if constexpr (VW == 1) yr[c] = st_st(v[0]); else st_store_vec(yr + i, v);
  }
}

extern "C" __global__ void __launch_bounds__(512) st_norm_fwd_loop(NORM_FWD_ARGS) {
  norm_fwd_loop<ST_VEC>(NORM_FWD_PASS);
}
extern "C" __global__ void __launch_bounds__(512) st_norm_fwd_loop1(NORM_FWD_ARGS) {
  norm_fwd_loop<1>(NORM_FWD_PASS);
}

// ---- backward -------------------------------------------------------------------------------
// Per-thread column sums for dweight (set 0) and dbias (set 1): in registers, or (SMEM) in the
// thread's own slots of shared memory, which frees 2 * VPT * ST_VEC registers so that more
// rows are in flight per SM. Slots are thread-private: no barrier guards them. The SMEM
// variant needs blockDim.x <= ACC_THREADS.
#define ACC_THREADS 256
template <int VPT, bool SMEM>
struct ColSums;

template <int VPT>
struct ColSums<VPT, false> {
  float a[2][VPT][ST_VEC];
  __device__ __forceinline__ ColSums() {
#pragma unroll
    for (int s = 0; s < 2; ++s)
#pragma unroll
      for (int k = 0; k < VPT; ++k)
#pragma unroll
        for (int e = 0; e < ST_VEC; ++e) a[s][k][e] = 0.f;
  }
  __device__ __forceinline__ void add(int s, int k, const float (&v)[ST_VEC]) {
#pragma unroll
    for (int e = 0; e < ST_VEC; ++e) a[s][k][e] += v[e];
  }
  __device__ __forceinline__ float4 get(int s, int k, int j) const {
    return make_float4(a[s][k][4 * j], a[s][k][4 * j + 1], a[s][k][4 * j + 2], a[s][k][4 * j + 3]);
  }
};

template <int VPT>
struct ColSums<VPT, true> {
  float4* buf;
  __device__ __forceinline__ static int slot(int s, int k, int j) {
    // consecutive threads own consecutive float4: conflict-free 16-byte accesses
    return ((s * VPT + k) * (ST_VEC / 4) + j) * ACC_THREADS + threadIdx.x;
  }
  __device__ __forceinline__ ColSums() {
    __shared__ float4 sums[2 * VPT * (ST_VEC / 4) * ACC_THREADS];
    buf = sums;
#pragma unroll
    for (int s = 0; s < 2; ++s)
#pragma unroll
      for (int k = 0; k < VPT; ++k)
#pragma unroll
        for (int j = 0; j < ST_VEC / 4; ++j) buf[slot(s, k, j)] = make_float4(0.f, 0.f, 0.f, 0.f);
  }
  __device__ __forceinline__ void add(int s, int k, const float (&v)[ST_VEC]) {
#pragma unroll
    for (int j = 0; j < ST_VEC / 4; ++j) {
      float4 q = buf[slot(s, k, j)];
      q.x += v[4 * j]; q.y += v[4 * j + 1]; q.z += v[4 * j + 2]; q.w += v[4 * j + 3];
      buf[slot(s, k, j)] = q;
    }
  }
  __device__ __forceinline__ float4 get(int s, int k, int j) const { return buf[slot(s, k, j)]; }
};

// Row groups walk rows group0, group0 + G, ... (G = gridDim.x * groups per block): the trip
// count is the same for every thread of a block, so the barriers inside stay uniform.
template <int VPT, bool SMEM>
__device__ __forceinline__ void norm_bwd_reg(const T* __restrict__ g, const T* __restrict__ x,
                                             const float* __restrict__ mean,
                                             const float* __restrict__ rstd,
                                             const void* __restrict__ w, int pf32,
                                             T* __restrict__ dx, float* __restrict__ part,
                                             long long rows, int n, int tpr, int rms) {
  __shared__ float smem[2][32];
  if (SMEM && blockDim.x > ACC_THREADS) __trap();  // the host never launches this
  const int rpb = blockDim.x / tpr;
  const int group = threadIdx.x / tpr, t = threadIdx.x - group * tpr;
  const int nvec = n / ST_VEC;
  const float inv_n = 1.f / (float)n;
  ColSums<VPT, SMEM> sums;
  const long long step = (long long)gridDim.x * rpb;
  for (long long r0 = (long long)blockIdx.x * rpb; r0 < rows; r0 += step) {
    const long long row = r0 + group;
    const bool active = row < rows;
    const long long off = (active ? row : 0) * n;
    float xv[VPT][ST_VEC], gv[VPT][ST_VEC];
#pragma unroll
    for (int k = 0; k < VPT; ++k) {
      if (active && t + k * tpr < nvec) {
        st_load_vec(x + off + (t + k * tpr) * ST_VEC, xv[k]);
        st_load_vec(g + off + (t + k * tpr) * ST_VEC, gv[k]);
      }
    }
    const float mu = (active && !rms) ? mean[row] : 0.f;
    const float rs = active ? rstd[row] : 0.f;
    float s[2] = {0.f, 0.f};
#pragma unroll
    for (int k = 0; k < VPT; ++k) {
      const int c = t + k * tpr;
      if (active && c < nvec) {
        float wv[ST_VEC], pw[ST_VEC];
        if (w) st_load_param(w, pf32, (long long)c * ST_VEC, wv);
        if (SMEM ? part != nullptr : true) sums.add(1, k, gv[k]);  // registers: always
#pragma unroll
        for (int e = 0; e < ST_VEC; ++e) {
          const float xh = (xv[k][e] - mu) * rs;
          pw[e] = gv[k][e] * xh;
          const float gw = w ? gv[k][e] * wv[e] : gv[k][e];
          s[0] += gw;
          s[1] = fmaf(gw, xh, s[1]);
          xv[k][e] = xh;
          gv[k][e] = gw;
        }
        if (SMEM ? part != nullptr : true) sums.add(0, k, pw);
      }
    }
    st_row_sum<2>(s, tpr, smem);
    const float a = rms ? 0.f : s[0] * inv_n, c1 = s[1] * inv_n;
#pragma unroll
    for (int k = 0; k < VPT; ++k) {
      const int c = t + k * tpr;
      if (active && c < nvec) {
        float o[ST_VEC];
#pragma unroll
        for (int e = 0; e < ST_VEC; ++e) o[e] = rs * (gv[k][e] - a - xv[k][e] * c1);
        st_store_vec(dx + off + c * ST_VEC, o);
      }
    }
  }
  if (part) {  // one partial row per group: part[set][prow][n]
    const long long p_rows = step, prow = (long long)blockIdx.x * rpb + group;
#pragma unroll
    for (int k = 0; k < VPT; ++k) {
      const int c = t + k * tpr;
      if (c < nvec) {
        float4* pw = reinterpret_cast<float4*>(part + prow * n + c * ST_VEC);
        float4* pb = reinterpret_cast<float4*>(part + (p_rows + prow) * n + c * ST_VEC);
#pragma unroll
        for (int j = 0; j < ST_VEC / 4; ++j) {
          pw[j] = sums.get(0, k, j);
          if (!rms) pb[j] = sums.get(1, k, j);
        }
      }
    }
  }
}

#define NORM_BWD_ARGS                                                                    \
  const T *__restrict__ g, const T *__restrict__ x, const float *__restrict__ mean,      \
      const float *__restrict__ rstd, const void *__restrict__ w, int pf32,              \
      T *__restrict__ dx, float *__restrict__ part, long long rows, int n, int tpr, int rms
#define NORM_BWD_PASS g, x, mean, rstd, w, pf32, dx, part, rows, n, tpr, rms

// _s*: column sums in shared memory (blocks of <= 256 threads); _v*: in registers (any size)
extern "C" __global__ void __launch_bounds__(512) st_norm_bwd_v1(NORM_BWD_ARGS) {
  norm_bwd_reg<1, false>(NORM_BWD_PASS);
}
extern "C" __global__ void __launch_bounds__(512) st_norm_bwd_v2(NORM_BWD_ARGS) {
  norm_bwd_reg<2, false>(NORM_BWD_PASS);
}
extern "C" __global__ void __launch_bounds__(256) st_norm_bwd_s1(NORM_BWD_ARGS) {
  norm_bwd_reg<1, true>(NORM_BWD_PASS);
}
extern "C" __global__ void __launch_bounds__(256) st_norm_bwd_s2(NORM_BWD_ARGS) {
  norm_bwd_reg<2, true>(NORM_BWD_PASS);
}
#if ST_DTYPE == 2
extern "C" __global__ void __launch_bounds__(512) st_norm_bwd_v4(NORM_BWD_ARGS) {
  norm_bwd_reg<4, false>(NORM_BWD_PASS);
}
extern "C" __global__ void __launch_bounds__(256) st_norm_bwd_s4(NORM_BWD_ARGS) {
  norm_bwd_reg<4, true>(NORM_BWD_PASS);
}
#endif

// Loop version (any n with VW = 1). Each thread owns the columns c = t + j * tpr for every
// row, so it accumulates its partial sums in its own slots of `part` (zeroed first): no race.
template <int VW>
__device__ __forceinline__ void norm_bwd_loop(NORM_BWD_ARGS) {
  __shared__ float smem[2][32];
  const int rpb = blockDim.x / tpr;
  const int group = threadIdx.x / tpr, t = threadIdx.x - group * tpr;
  const int nv = n / VW;
  const float inv_n = 1.f / (float)n;
  const long long step = (long long)gridDim.x * rpb, prow = (long long)blockIdx.x * rpb + group;
  float* pw = part ? part + prow * n : nullptr;
  float* pb = part ? part + (step + prow) * n : nullptr;
  if (part) {  // zero exactly the slots this thread accumulates into below
    for (int c = t; c < nv; c += tpr) {
#pragma unroll
      for (int e = 0; e < VW; ++e) {
        pw[(long long)c * VW + e] = 0.f;
        if (!rms) pb[(long long)c * VW + e] = 0.f;
      }
    }
  }
  for (long long r0 = (long long)blockIdx.x * rpb; r0 < rows; r0 += step) {
    const long long row = r0 + group;
    const bool active = row < rows;
    const int nva = active ? nv : 0;
    const long long off = (active ? row : 0) * n;
    const float mu = (active && !rms) ? mean[row] : 0.f;
    const float rs = active ? rstd[row] : 0.f;
    float s[2] = {0.f, 0.f};
    for (int c = t; c < nva; c += tpr) {
      const long long i = (long long)c * VW;
      float xv[ST_VEC], gv[ST_VEC], wv[ST_VEC];
      if constexpr (VW == 1) {
        xv[0] = st_ld(x[off + i]); gv[0] = st_ld(g[off + i]);
        if (w) wv[0] = st_param(w, pf32, i);
      } else {
        st_load_vec(x + off + i, xv); st_load_vec(g + off + i, gv);
        if (w) st_load_param(w, pf32, i, wv);
      }
#pragma unroll
      for (int e = 0; e < VW; ++e) {
        const float gw = w ? gv[e] * wv[e] : gv[e];
        s[0] += gw;
        s[1] = fmaf(gw, (xv[e] - mu) * rs, s[1]);
      }
    }
    st_row_sum<2>(s, tpr, smem);
    const float a = rms ? 0.f : s[0] * inv_n, c1 = s[1] * inv_n;
    for (int c = t; c < nva; c += tpr) {
      const long long i = (long long)c * VW;
      float xv[ST_VEC], gv[ST_VEC], wv[ST_VEC];
      if constexpr (VW == 1) {
        xv[0] = st_ld(x[off + i]); gv[0] = st_ld(g[off + i]);
        if (w) wv[0] = st_param(w, pf32, i);
      } else {
        st_load_vec(x + off + i, xv); st_load_vec(g + off + i, gv);
        if (w) st_load_param(w, pf32, i, wv);
      }
#pragma unroll
      for (int e = 0; e < VW; ++e) {
        const float xh = (xv[e] - mu) * rs;
        if (part) {
          pw[i + e] = fmaf(gv[e], xh, pw[i + e]);
          if (!rms) pb[i + e] += gv[e];
        }
        const float gw = w ? gv[e] * wv[e] : gv[e];
        xv[e] = rs * (gw - a - xh * c1);
      }
      if constexpr (VW == 1) dx[off + i] = st_st(xv[0]); else st_store_vec(dx + off + i, xv);
    }
  }
}

extern "C" __global__ void __launch_bounds__(512) st_norm_bwd_loop(NORM_BWD_ARGS) {
  norm_bwd_loop<ST_VEC>(NORM_BWD_PASS);
}
extern "C" __global__ void __launch_bounds__(512) st_norm_bwd_loop1(NORM_BWD_ARGS) {
  norm_bwd_loop<1>(NORM_BWD_PASS);
}

// ---- stage 2: sum the partial rows ----------------------------------------------------------
// part is [sets][p_rows][n], out is [sets][n]. Block: 256 threads = 32 columns x 8 slices of
// the partial rows, summed in a fixed order (deterministic). Grid: sets * ceil(n / 32).
extern "C" __global__ void __launch_bounds__(256)
    st_norm_param_reduce(const float* __restrict__ part, float* __restrict__ out, int p_rows,
                         int n) {
  __shared__ float sm[8][33];
  const int col_blocks = (n + 31) / 32;
  const int set = blockIdx.x / col_blocks;
  const int lane = threadIdx.x & 31, slice = threadIdx.x >> 5;
  const int col = (blockIdx.x - set * col_blocks) * 32 + lane;
  const float* p = part + (long long)set * p_rows * n;
  float acc = 0.f;
  if (col < n) {
    int r = slice;
    for (; r + 24 < p_rows; r += 32) {  // four independent loads in flight
      const float a0 = p[(long long)r * n + col], a1 = p[(long long)(r + 8) * n + col];
      const float a2 = p[(long long)(r + 16) * n + col], a3 = p[(long long)(r + 24) * n + col];
      acc += (a0 + a1) + (a2 + a3);
    }
    for (; r < p_rows; r += 8) acc += p[(long long)r * n + col];
  }
  sm[slice][lane] = acc;
  __syncthreads();
  if (slice == 0 && col < n) {
    float s = 0.f;
#pragma unroll
    for (int i = 0; i < 8; ++i) s += sm[i][lane];
    out[(long long)set * n + col] = s;
  }
}
