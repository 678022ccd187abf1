// Softmax cross-entropy of integer labels over (rows, c) logits, forward and backward.
// Compiled once per dtype (-DST_DTYPE, see rowwise.cuh); math in float32; labels int64.
//
// Forward (one read of the logits): per thread an online (max, sum of exp) and the plain sum
// of the logits (for label smoothing), merged over the row group; lse = m + log s and
//   loss = lse - (1 - eps) * x[label] - eps * sum(x) / c.
// A row whose label is ignore_index is not read: loss 0, lse 0. A label outside [0, c) gives
// a NaN loss (the CPU path raises instead; a kernel cannot).
//
// Backward (one read, one write; no probabilities stored anywhere):
//   dx[j] = g_row * (exp(x[j] - lse) - eps / c - (1 - eps) * [j == label]),
// zeros on ignored rows. g_row = g[row * g_stride]: g_stride 0 broadcasts one cotangent (the
// mean and sum reductions), 1 reads one per row.
//
// Any c and alignment: rows are walked with st_row_chunks (16-byte vectors where aligned);
// dx must be allocated with the same 16-byte alignment as x.
#include "rowwise.cuh"

extern "C" __global__ void __launch_bounds__(512)
    st_cross_entropy_fwd(const T* __restrict__ x, const long long* __restrict__ labels,
                         float* __restrict__ loss, float* __restrict__ lse, long long rows,
                         int c, int tpr, long long ignore_index, float smoothing) {
  __shared__ float smem[3][32];
  const int group = threadIdx.x / tpr, t = threadIdx.x - group * tpr;
  const long long row = (long long)blockIdx.x * (blockDim.x / tpr) + group;
  const bool active = row < rows;
  const long long label = active ? labels[row] : ignore_index;
  const bool skip = label == ignore_index;
  const T* xr = x + (active ? row : 0) * c;
  float m = -INFINITY, s = 0.f, sx[1] = {0.f};
  st_row_chunks(xr, skip ? 0 : c, t, tpr, [&](int, const float(&v)[ST_VEC], int cnt) {
    float cm = v[0];
    for (int e = 1; e < cnt; ++e) cm = fmaxf(cm, v[e]);
    if (cm > m) {  // rescale only when the running max grows
      s = m == -INFINITY ? 0.f : s * st_exp(m - cm);
      m = cm;
    }
    const float mt = m == -INFINITY ? 0.f : m;
    for (int e = 0; e < cnt; ++e) {
      s += st_exp(v[e] - mt);
      sx[0] += v[e];
    }
  });
  st_row_maxsum<1>(m, s, sx, tpr, smem);
  if (active && t == 0) {
    if (skip) {
      loss[row] = 0.f;
      lse[row] = 0.f;
    } else {
      const float l = m + logf(s);
      lse[row] = l;
      float r;
      if (label < 0 || label >= c) {
        r = __int_as_float(0x7fc00000);
      } else {
        r = l - (1.f - smoothing) * st_ld(xr[label]);
        if (smoothing != 0.f) r -= smoothing * (sx[0] / (float)c);
      }
      loss[row] = r;
    }
  }
}

// No barriers here: groups may leave early.
extern "C" __global__ void __launch_bounds__(512)
    st_cross_entropy_bwd(const float* __restrict__ g, long long g_stride, const T* __restrict__ x,
                         const long long* __restrict__ labels, const float* __restrict__ lse,
                         T* __restrict__ dx, long long rows, int c, int tpr,
                         long long ignore_index, float smoothing) {
  const int group = threadIdx.x / tpr, t = threadIdx.x - group * tpr;
  const long long row = (long long)blockIdx.x * (blockDim.x / tpr) + group;
  if (row >= rows) return;
  const long long label = labels[row];
  T* dr = dx + row * c;
  if (label == ignore_index) {  // zeros, without reading the logits
    const int mis = (int)(((unsigned long long)dr & 15ull) / sizeof(T));
    const int head = mis ? min(c, ST_VEC - mis) : 0;
    const int nv = (c - head) / ST_VEC;
    float z[ST_VEC];
#pragma unroll
    for (int e = 0; e < ST_VEC; ++e) z[e] = 0.f;
    for (int i = t; i < head; i += tpr) dr[i] = st_st(0.f);
    for (int v = t; v < nv; v += tpr) st_store_vec(dr + head + (long long)v * ST_VEC, z);
    for (int i = head + nv * ST_VEC + t; i < c; i += tpr) dr[i] = st_st(0.f);
    return;
  }
  const float gr = g[row * g_stride];
  const float coef = (label < 0 || label >= c) ? __int_as_float(0x7fc00000) : gr;
  const float l = lse[row];
  const float base = coef * (smoothing / (float)c);  // dx = coef * p - base - hit
  const float hit = coef * (1.f - smoothing);
  const int lab = (int)label;
  st_row_chunks(x + row * c, c, t, tpr, [&](int i, const float(&v)[ST_VEC], int cnt) {
    float o[ST_VEC];
    for (int e = 0; e < cnt; ++e) {
      const float d = fmaf(coef, st_exp(v[e] - l), -base);
      o[e] = (i + e == lab) ? d - hit : d;
    }
    st_store_chunk(dr, i, o, cnt);
  });
}

// The reductions of the per-row losses (one block, a fixed order: deterministic): out[0] = the
// sum of loss over all rows (ignored rows hold 0), divided by the number of rows whose label is
// not ignore_index when `mean` (0 / 0 = NaN for none, as PyTorch), out[1] = that number.
extern "C" __global__ void __launch_bounds__(1024)
    st_cross_entropy_reduce(const float* __restrict__ loss, const long long* __restrict__ labels,
                            float* __restrict__ out, long long rows, long long ignore_index,
                            int mean) {
  __shared__ double part_s[32];
  __shared__ long long part_n[32];
  double s = 0.0;
  long long n = 0;
  for (long long i = threadIdx.x; i < rows; i += blockDim.x) {
    s += (double)loss[i];
    n += labels[i] != ignore_index;
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    s += __shfl_xor_sync(0xffffffffu, s, o);
    n += __shfl_xor_sync(0xffffffffu, n, o);
  }
  const int w = threadIdx.x >> 5, l = threadIdx.x & 31;
  if (l == 0) {
    part_s[w] = s;
    part_n[w] = n;
  }
  __syncthreads();
  if (w == 0) {
    const int nw = blockDim.x >> 5;
    s = l < nw ? part_s[l] : 0.0;
    n = l < nw ? part_n[l] : 0;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      s += __shfl_xor_sync(0xffffffffu, s, o);
      n += __shfl_xor_sync(0xffffffffu, n, o);
    }
    if (l == 0) {
      out[0] = mean ? (float)(s / (double)n) : (float)s;
      out[1] = (float)n;
    }
  }
}
