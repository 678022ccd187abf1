// Batch normalization over contiguous (N, C, L) arrays (L = product of spatial sizes), for
// one dtype chosen with -DST_DTYPE=<n> (0 float16, 1 bfloat16, 2 float32); float32 math and
// float32 per-channel statistics.
//
// Training forward = 3 launches:
//   st_bn_stats_partial  grid C*S: block (c, s) reduces a 1/S slice of channel c's N*L values
//                        to (count, mean, M2): per-thread Welford over 16-byte vectors (each
//                        vector's exact mean/M2 merged with Chan's formula), then a Chan merge
//                        across the warp (shuffles) and the block (shared memory);
//   st_bn_stats_finalize one thread per channel merges the S partials in order (in double),
//                        writes mean, biased var, invstd = 1/sqrt(var + eps), scale = invstd*w;
//   st_bn_apply          y = (x - mean[c]) * scale[c] + shift[c], 16-byte vectors.
// Training backward = 3 launches: st_bn_bwd_partial (sum g, sum g*(x - mean) per block),
// st_bn_bwd_finalize (dweight, dbias and the per-channel coefficients), st_bn_bwd_apply
// (dx = a[c]*g + b[c]*(x - mean[c]) + d[c]). Every reduction runs in a fixed order: results
// are deterministic. ``vec`` flags say L % VEC == 0 and the arrays are 16-byte aligned.
#include "float_io.cuh"

#define ST_FULL_MASK 0xffffffffu

// (n, mean, m2) += (nb, mb, m2b): Chan et al.'s parallel update
__device__ __forceinline__ void st_merge(float& n, float& mean, float& m2, float nb, float mb,
                                         float m2b) {
  if (nb == 0.f) return;
  const float nn = n + nb;
  const float d = mb - mean;
  const float r = nb / nn;
  mean += d * r;
  m2 += m2b + d * d * n * r;
  n = nn;
}

// merge over the block; the total is valid in thread 0 (blockDim.x: a multiple of 32)
__device__ __forceinline__ void st_block_merge(float& n, float& mean, float& m2) {
  __shared__ float sh[3][32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    const float nb = __shfl_down_sync(ST_FULL_MASK, n, off);
    const float mb = __shfl_down_sync(ST_FULL_MASK, mean, off);
    const float m2b = __shfl_down_sync(ST_FULL_MASK, m2, off);
    st_merge(n, mean, m2, nb, mb, m2b);
  }
  if (lane == 0) {
    sh[0][warp] = n;
    sh[1][warp] = mean;
    sh[2][warp] = m2;
  }
  __syncthreads();
  if (warp == 0) {
    const int nw = blockDim.x >> 5;
    n = lane < nw ? sh[0][lane] : 0.f;
    mean = lane < nw ? sh[1][lane] : 0.f;
    m2 = lane < nw ? sh[2][lane] : 0.f;
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
      const float nb = __shfl_down_sync(ST_FULL_MASK, n, off);
      const float mb = __shfl_down_sync(ST_FULL_MASK, mean, off);
      const float m2b = __shfl_down_sync(ST_FULL_MASK, m2, off);
      st_merge(n, mean, m2, nb, mb, m2b);
    }
  }
}

// sum of two values over the block; valid in thread 0
__device__ __forceinline__ void st_block_sum2(float& a, float& b) {
  __shared__ float sh[2][32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    a += __shfl_down_sync(ST_FULL_MASK, a, off);
    b += __shfl_down_sync(ST_FULL_MASK, b, off);
  }
  if (lane == 0) {
    sh[0][warp] = a;
    sh[1][warp] = b;
  }
  __syncthreads();
  if (warp == 0) {
    const int nw = blockDim.x >> 5;
    a = lane < nw ? sh[0][lane] : 0.f;
    b = lane < nw ? sh[1][lane] : 0.f;
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
      a += __shfl_down_sync(ST_FULL_MASK, a, off);
      b += __shfl_down_sync(ST_FULL_MASK, b, off);
    }
  }
}

// this block's item range of channel c: items are vectors (vec) or elements of the N planes
#define ST_BN_SLICE                                              \
  const int S_ = S;                                              \
  const int c = blockIdx.x / S_, s = blockIdx.x - c * S_;        \
  const int Lv = vec ? L / VEC : L;                              \
  const int items = N * Lv;                                      \
  const int chunk = (items + S_ - 1) / S_;                       \
  const int start = s * chunk, end = min(start + chunk, items);

// ---- forward ---------------------------------------------------------------------------
extern "C" __global__ void st_bn_stats_partial(const T* __restrict__ x, float* __restrict__ part,
                                               int N, int C, int L, int S, int vec) {
  ST_BN_SLICE
  float n = 0.f, mean = 0.f, m2 = 0.f;
#pragma unroll 2
  for (int it = start + threadIdx.x; it < end; it += blockDim.x) {
    const int b = it / Lv, j = it - b * Lv;
    const long long plane = (long long)b * C + c;
    if (vec) {
      float v[VEC];
      st_loadv(x + plane * L + (long long)j * VEC, v);
      float s1 = 0.f;
#pragma unroll
      for (int k = 0; k < VEC; ++k) s1 += v[k];
      const float mb = s1 * (1.f / VEC);
      float q = 0.f;
#pragma unroll
      for (int k = 0; k < VEC; ++k) q += (v[k] - mb) * (v[k] - mb);
      st_merge(n, mean, m2, (float)VEC, mb, q);
    } else {
      st_merge(n, mean, m2, 1.f, LOAD(x[plane * L + j]), 0.f);
    }
  }
  st_block_merge(n, mean, m2);
  if (threadIdx.x == 0) {
    part[3 * blockIdx.x] = n;
    part[3 * blockIdx.x + 1] = mean;
    part[3 * blockIdx.x + 2] = m2;
  }
}

// weight may be null (scale 1)
extern "C" __global__ void st_bn_stats_finalize(const float* __restrict__ part, int S, int C,
                                                float eps, const float* __restrict__ weight,
                                                float* __restrict__ mean_out,
                                                float* __restrict__ var_out,
                                                float* __restrict__ invstd_out,
                                                float* __restrict__ scale_out) {
  ST_GRID_LOOP(c, C) {
    double n = 0.0, mean = 0.0, m2 = 0.0;
    for (int s = 0; s < S; ++s) {
      const float* p = part + 3 * (c * S + s);
      const double nb = p[0];
      if (nb == 0.0) continue;
      const double nn = n + nb, d = (double)p[1] - mean, r = nb / nn;
      mean += d * r;
      m2 += (double)p[2] + d * d * n * r;
      n = nn;
    }
    const double var = n > 0.0 && m2 > 0.0 ? m2 / n : 0.0;
    const float invstd = (float)(1.0 / sqrt(var + (double)eps));
    mean_out[c] = (float)mean;
    var_out[c] = (float)var;
    invstd_out[c] = invstd;
    scale_out[c] = weight ? invstd * weight[c] : invstd;
  }
}

// y = (x - center[c]) * scale[c] + shift[c]; center and shift may be null (zero).
// Also evaluation-mode batch norm (channel_affine): center null, shift = b - rm * scale.
extern "C" __global__ void st_bn_apply(const T* __restrict__ x, T* __restrict__ y,
                                       const float* __restrict__ center,
                                       const float* __restrict__ scale,
                                       const float* __restrict__ shift, int C, int L,
                                       int total, int vec) {
  if (vec) {
    const int nv = total / VEC;
    ST_GRID_LOOP(v, nv) {
      const int e = v * VEC;
      const int c = (e / L) % C;
      const float m = center ? center[c] : 0.f, a = scale[c], b = shift ? shift[c] : 0.f;
      float t[VEC];
      st_loadv(x + e, t);
#pragma unroll
      for (int k = 0; k < VEC; ++k) t[k] = (t[k] - m) * a + b;
      st_storev(y + e, t);
    }
  } else {
    ST_GRID_LOOP(e, total) {
      const int c = (e / L) % C;
      const float m = center ? center[c] : 0.f, b = shift ? shift[c] : 0.f;
      y[e] = STORE((LOAD(x[e]) - m) * scale[c] + b);
    }
  }
}

// ---- backward --------------------------------------------------------------------------
extern "C" __global__ void st_bn_bwd_partial(const T* __restrict__ g, const T* __restrict__ x,
                                             const float* __restrict__ mean,
                                             float* __restrict__ part, int N, int C, int L,
                                             int S, int vec) {
  ST_BN_SLICE
  const float m = mean[c];
  float sg = 0.f, sgx = 0.f;
#pragma unroll 2
  for (int it = start + threadIdx.x; it < end; it += blockDim.x) {
    const int b = it / Lv, j = it - b * Lv;
    const long long plane = (long long)b * C + c;
    if (vec) {
      float gv[VEC], xv[VEC];
      const long long off = plane * L + (long long)j * VEC;
      st_loadv(g + off, gv);
      st_loadv(x + off, xv);
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        sg += gv[k];
        sgx += gv[k] * (xv[k] - m);
      }
    } else {
      const float gv = LOAD(g[plane * L + j]);
      sg += gv;
      sgx += gv * (LOAD(x[plane * L + j]) - m);
    }
  }
  st_block_sum2(sg, sgx);
  if (threadIdx.x == 0) {
    part[2 * blockIdx.x] = sg;
    part[2 * blockIdx.x + 1] = sgx;
  }
}

// dweight = invstd * sum(g (x - mean)), dbias = sum(g); dx = a*g + b*(x - mean) + d with
// k = invstd * w: a = k, b = -k invstd^2 sum(g (x - mean)) / count, d = -k sum(g) / count
extern "C" __global__ void st_bn_bwd_finalize(const float* __restrict__ part, int S, int C,
                                              float count, const float* __restrict__ invstd,
                                              const float* __restrict__ weight,
                                              float* __restrict__ dweight,
                                              float* __restrict__ dbias,
                                              float* __restrict__ coef_a,
                                              float* __restrict__ coef_b,
                                              float* __restrict__ coef_d) {
  ST_GRID_LOOP(c, C) {
    double sg = 0.0, sgx = 0.0;
    for (int s = 0; s < S; ++s) {
      sg += part[2 * (c * S + s)];
      sgx += part[2 * (c * S + s) + 1];
    }
    const double is = invstd[c];
    const double k = weight ? is * (double)weight[c] : is;
    dweight[c] = (float)(sgx * is);
    dbias[c] = (float)sg;
    coef_a[c] = (float)k;
    coef_b[c] = (float)(-k * is * is * sgx / (double)count);
    coef_d[c] = (float)(-k * sg / (double)count);
  }
}

extern "C" __global__ void st_bn_bwd_apply(const T* __restrict__ g, const T* __restrict__ x,
                                           T* __restrict__ dx, const float* __restrict__ mean,
                                           const float* __restrict__ coef_a,
                                           const float* __restrict__ coef_b,
                                           const float* __restrict__ coef_d, int C, int L,
                                           int total, int vec) {
  if (vec) {
    const int nv = total / VEC;
    ST_GRID_LOOP(v, nv) {
      const int e = v * VEC;
      const int c = (e / L) % C;
      const float m = mean[c], a = coef_a[c], b = coef_b[c], d = coef_d[c];
      float gv[VEC], xv[VEC];
      st_loadv(g + e, gv);
      st_loadv(x + e, xv);
#pragma unroll
      for (int k = 0; k < VEC; ++k) gv[k] = a * gv[k] + b * (xv[k] - m) + d;
      st_storev(dx + e, gv);
    }
  } else {
    ST_GRID_LOOP(e, total) {
      const int c = (e / L) % C;
      dx[e] = STORE(coef_a[c] * LOAD(g[e]) + coef_b[c] * (LOAD(x[e]) - mean[c]) + coef_d[c]);
    }
  }
}

// ---- running statistics (training mode) ------------------------------------------------
// One launch per batch-norm step, one thread per channel, in place (PyTorch's rule):
//   running_mean = keep * running_mean + take * mean
//   running_var  = keep * running_var  + take * (var * unbiased)
// with keep = 1 - momentum, take = momentum, unbiased = count / (count - 1), all three
// rounded to float32 on the host as the CPU backend rounds them. Each running array (null:
// skipped) has its own dtype code (0 float16, 1 bfloat16, 2 float32; the host sends float64
// arrays to the CPU-style path) and is updated in float32, as the CPU backend computes.
// counter (int64 num_batches_tracked, may be null) is incremented once, by thread 0.
__device__ __forceinline__ float st_bn_load_any(const void* p, int code, int c) {
  if (code == 2) return static_cast<const float*>(p)[c];
  if (code == 1) return st_bf16_to_f32(static_cast<const st_bf16*>(p)[c]);
  return st_f16_to_f32(static_cast<const st_f16*>(p)[c]);
}

__device__ __forceinline__ void st_bn_store_any(void* p, int code, int c, float v) {
  if (code == 2) {
    static_cast<float*>(p)[c] = v;
  } else if (code == 1) {
    static_cast<st_bf16*>(p)[c] = st_f32_to_bf16(v);
  } else {
    static_cast<st_f16*>(p)[c] = st_f32_to_f16(v);
  }
}

extern "C" __global__ void st_bn_update_running(void* running_mean, void* running_var,
                                                const float* __restrict__ mean,
                                                const float* __restrict__ var, int C,
                                                int mean_code, int var_code, float keep,
                                                float take, float unbiased,
                                                long long* counter) {
  if (counter && blockIdx.x == 0 && threadIdx.x == 0) *counter += 1;
  ST_GRID_LOOP(c, C) {
    if (running_mean) {
      const float r = st_bn_load_any(running_mean, mean_code, c);
      st_bn_store_any(running_mean, mean_code, c, r * keep + mean[c] * take);
    }
    if (running_var) {
      const float r = st_bn_load_any(running_var, var_code, c);
      st_bn_store_any(running_var, var_code, c, r * keep + (var[c] * unbiased) * take);
    }
  }
}
