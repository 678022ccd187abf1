// Softmax and log-softmax over the last axis of a (rows, n) array, forward and backward.
// Compiled once per dtype (-DST_DTYPE, see rowwise.cuh); math in float32. `log` != 0 selects
// log-softmax.
//
// Forward: one online (max, sum of exp) pass per thread, merged over the row group in one
// reduction: each thread keeps m_t = max of its values and s_t = sum exp(x - m_t); merging
// (m, s) pairs rescales the sums (exp(m_t - m)). Output y = exp(x - m) / s, or x - m - log s.
// Backward: softmax dx = y * (g - sum(g y)); log-softmax dx = g - exp(y) * sum(g).
//
// Register kernels (_v1/_v2/_v4) keep the row in registers: one read, one write. They need
// n % ST_VEC == 0 and 16-byte aligned pointers. Loop kernels take any n and alignment and
// read the row twice (the second read mostly from L2).
#include "rowwise.cuh"

template <int VPT>
__device__ __forceinline__ void softmax_fwd_reg(const T* __restrict__ x, T* __restrict__ y,
                                                long long rows, int n, int tpr, int log) {
  __shared__ float smem[2][32];
  const int group = threadIdx.x / tpr, t = threadIdx.x - group * tpr;
  const long long row = (long long)blockIdx.x * (blockDim.x / tpr) + group;
  const bool active = row < rows;
  const int nvec = n / ST_VEC;
  const long long off = (active ? row : 0) * n;
  float v[VPT][ST_VEC];
  float m = -INFINITY;
#pragma unroll
  for (int k = 0; k < VPT; ++k) {
    if (active && t + k * tpr < nvec) {
      st_load_vec(x + off + (t + k * tpr) * ST_VEC, v[k]);
#pragma unroll
      for (int e = 0; e < ST_VEC; ++e) m = fmaxf(m, v[k][e]);
    }
  }
  const float mt = m == -INFINITY ? 0.f : m;  // all -inf (or none): exps are 0, not NaN
  float s = 0.f;
#pragma unroll
  for (int k = 0; k < VPT; ++k) {
    if (active && t + k * tpr < nvec) {
#pragma unroll
      for (int e = 0; e < ST_VEC; ++e) {
        const float ex = st_exp(v[k][e] - mt);
        s += ex;
        if (!log) v[k][e] = ex;  // softmax keeps exp(x - m_t): one exp per element
      }
    }
  }
  const float m_own = m;
  float none[1];
  st_row_maxsum<0>(m, s, none, tpr, smem);
  // softmax: y = exp(x - m_t) * exp(m_t - m) / s; log-softmax: y = x - (m + log s).
  // A thread whose values are all -inf holds zeros: scale 0 (exp(0 - m) could overflow).
  // A row of only -inf gives NaN, as the CPU reference (0 / 0).
  const float scale = m == -INFINITY ? __int_as_float(0x7fc00000)
                      : (m_own == -INFINITY ? 0.f : st_exp(m_own - m) / s);
  const float shift = log ? m + logf(s) : 0.f;
#pragma unroll
  for (int k = 0; k < VPT; ++k) {
    const int c = t + k * tpr;
    if (active && c < nvec) {
#pragma unroll
      for (int e = 0; e < ST_VEC; ++e) v[k][e] = log ? v[k][e] - shift : v[k][e] * scale;
      st_store_vec(y + off + c * ST_VEC, v[k]);
    }
  }
}

template <int VPT>
__device__ __forceinline__ void softmax_bwd_reg(const T* __restrict__ g, const T* __restrict__ y,
                                                T* __restrict__ dx, long long rows, int n,
                                                int tpr, int log) {
  __shared__ float smem[1][32];
  const int group = threadIdx.x / tpr, t = threadIdx.x - group * tpr;
  const long long row = (long long)blockIdx.x * (blockDim.x / tpr) + group;
  const bool active = row < rows;
  const int nvec = n / ST_VEC;
  const long long off = (active ? row : 0) * n;
  float gv[VPT][ST_VEC], yv[VPT][ST_VEC];
  float s[1] = {0.f};
#pragma unroll
  for (int k = 0; k < VPT; ++k) {
    if (active && t + k * tpr < nvec) {
      st_load_vec(g + off + (t + k * tpr) * ST_VEC, gv[k]);
      st_load_vec(y + off + (t + k * tpr) * ST_VEC, yv[k]);
#pragma unroll
      for (int e = 0; e < ST_VEC; ++e) s[0] += log ? gv[k][e] : gv[k][e] * yv[k][e];
    }
  }
  st_row_sum<1>(s, tpr, smem);
#pragma unroll
  for (int k = 0; k < VPT; ++k) {
    const int c = t + k * tpr;
    if (active && c < nvec) {
#pragma unroll
      for (int e = 0; e < ST_VEC; ++e)
        gv[k][e] = log ? gv[k][e] - st_exp(yv[k][e]) * s[0] : yv[k][e] * (gv[k][e] - s[0]);
      st_store_vec(dx + off + c * ST_VEC, gv[k]);
    }
  }
}

#define SM_FWD_ARGS \
  const T *__restrict__ x, T *__restrict__ y, long long rows, int n, int tpr, int log
#define SM_BWD_ARGS                                                                  \
  const T *__restrict__ g, const T *__restrict__ y, T *__restrict__ dx, long long rows, \
      int n, int tpr, int log

extern "C" __global__ void __launch_bounds__(512) st_softmax_fwd_v1(SM_FWD_ARGS) {
  softmax_fwd_reg<1>(x, y, rows, n, tpr, log);
}
extern "C" __global__ void __launch_bounds__(512) st_softmax_fwd_v2(SM_FWD_ARGS) {
  softmax_fwd_reg<2>(x, y, rows, n, tpr, log);
}
extern "C" __global__ void __launch_bounds__(512) st_softmax_bwd_v1(SM_BWD_ARGS) {
  softmax_bwd_reg<1>(g, y, dx, rows, n, tpr, log);
}
extern "C" __global__ void __launch_bounds__(512) st_softmax_bwd_v2(SM_BWD_ARGS) {
  softmax_bwd_reg<2>(g, y, dx, rows, n, tpr, log);
}
#if ST_DTYPE == 2  // 16 values per thread; 16-bit types stop at v2 (16 values too)
extern "C" __global__ void __launch_bounds__(512) st_softmax_fwd_v4(SM_FWD_ARGS) {
  softmax_fwd_reg<4>(x, y, rows, n, tpr, log);
}
extern "C" __global__ void __launch_bounds__(512) st_softmax_bwd_v4(SM_BWD_ARGS) {
  softmax_bwd_reg<4>(g, y, dx, rows, n, tpr, log);
}
#endif

// ---- loop kernels: any n, any alignment (rows of y share x's alignment) ------------------------
extern "C" __global__ void __launch_bounds__(512) st_softmax_fwd_loop(SM_FWD_ARGS) {
  __shared__ float smem[2][32];
  const int group = threadIdx.x / tpr, t = threadIdx.x - group * tpr;
  const long long row = (long long)blockIdx.x * (blockDim.x / tpr) + group;
  const bool active = row < rows;
  const T* xr = x + (active ? row : 0) * n;
  T* yr = y + (active ? row : 0) * n;
  const int na = active ? n : 0;
  float m = -INFINITY, s = 0.f;
  st_row_chunks(xr, na, t, tpr, [&](int, const float(&v)[ST_VEC], int cnt) {
    float cm = v[0];
    for (int e = 1; e < cnt; ++e) cm = fmaxf(cm, v[e]);
    if (cm > m) {  // rescale only when the running max grows
      s = m == -INFINITY ? 0.f : s * st_exp(m - cm);
      m = cm;
    }
    const float mt = m == -INFINITY ? 0.f : m;
    for (int e = 0; e < cnt; ++e) s += st_exp(v[e] - mt);
  });
  float none[1];
  st_row_maxsum<0>(m, s, none, tpr, smem);
  const float mt = m == -INFINITY ? 0.f : m;
  const float inv_s = 1.f / s, shift = m + logf(s);
  st_row_chunks(xr, na, t, tpr, [&](int i, const float(&v)[ST_VEC], int cnt) {
    float o[ST_VEC];
    for (int e = 0; e < cnt; ++e) o[e] = log ? v[e] - shift : st_exp(v[e] - mt) * inv_s;
    st_store_chunk(yr, i, o, cnt);
  });
}

extern "C" __global__ void __launch_bounds__(512) st_softmax_bwd_loop(SM_BWD_ARGS) {
  __shared__ float smem[1][32];
  const int group = threadIdx.x / tpr, t = threadIdx.x - group * tpr;
  const long long row = (long long)blockIdx.x * (blockDim.x / tpr) + group;
  const bool active = row < rows;
  const long long off = (active ? row : 0) * n;
  const int na = active ? n : 0;
  const T* gr = g + off;
  const T* yr = y + off;
  float s[1] = {0.f};
  // walk g; read y at the same places (same alignment), scalar or vector alike
  st_row_chunks(gr, na, t, tpr, [&](int i, const float(&gv)[ST_VEC], int cnt) {
    float yv[ST_VEC];
    if (cnt == ST_VEC) st_load_vec(yr + i, yv); else yv[0] = st_ld(yr[i]);
    for (int e = 0; e < cnt; ++e) s[0] += log ? gv[e] : gv[e] * yv[e];
  });
  st_row_sum<1>(s, tpr, smem);
  T* dr = dx + off;
  st_row_chunks(gr, na, t, tpr, [&](int i, const float(&gv)[ST_VEC], int cnt) {
    float yv[ST_VEC], o[ST_VEC];
    if (cnt == ST_VEC) st_load_vec(yr + i, yv); else yv[0] = st_ld(yr[i]);
    for (int e = 0; e < cnt; ++e)
      o[e] = log ? gv[e] - st_exp(yv[e]) * s[0] : yv[e] * (gv[e] - s[0]);
    st_store_chunk(dr, i, o, cnt);
  });
}
