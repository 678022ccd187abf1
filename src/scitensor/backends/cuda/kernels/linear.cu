// Backward of the linear layer's activation (scitensor/backends/cuda/linear.py):
// dpre = g * act'(pre), from what the forward GEMM's cuBLASLt epilogue saved.
//
// g and out are C-contiguous (rows, cols); -DST_DTYPE picks T (float_io.cuh), math in float.
// One thread handles 8 consecutive columns of one row: one byte of the ReLU bit-mask. With
// "vec" (cols % 8 == 0, ld % 8 == 0 and 16-byte aligned pointers) those 8 values move as
// 16-byte vectors (two for float32).
#include "float_io.cuh"

// The grid-stride loop over (row, 8-column group) pairs, without a division per step:
// the stride is split once into whole rows and a column remainder.
#define ST_GROUP_LOOP(r, cg, rows, groups)                                                 \
  const long long st_stride = (long long)gridDim.x * blockDim.x;                            \
  const long long st_stride_r = st_stride / (groups);                                       \
  const int st_stride_c = (int)(st_stride - st_stride_r * (groups));                        \
  const long long st_first = (long long)blockIdx.x * blockDim.x + threadIdx.x;              \
  long long r = st_first / (groups);                                                        \
  int cg = (int)(st_first - r * (groups));                                                  \
  for (; r < (rows); r += st_stride_r, cg += st_stride_c,                                   \
                     r += (cg >= (groups)) ? 1 : 0, cg -= (cg >= (groups)) ? (groups) : 0)

__device__ __forceinline__ void st_lin_load8(const T* __restrict__ p, float* v) {
  st_loadv(p, v);
#if ST_DTYPE == 2
  st_loadv(p + 4, v + 4);
#endif
}

__device__ __forceinline__ void st_lin_store8(T* __restrict__ p, const float* v) {
  st_storev(p, v);
#if ST_DTYPE == 2
  st_storev(p + 4, v + 4);
#endif
}

// d/dx of 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))): cuBLASLt's GELU (tanh form)
__device__ __forceinline__ float st_dgelu_tanh(float x) {
  const float c = 0.7978845608028654f, a = 0.044715f;
  const float x2 = x * x;
  const float t = tanhf(c * (x + a * x2 * x));
  return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * c * (1.0f + 3.0f * a * x2);
}

// out = bit ? g : 0, where bit j % 8 (least significant first) of byte j / 8 of the row's
// ld_bytes-byte mask row is pre[row, j] > 0 (cuBLASLt RELU_AUX layout)
extern "C" __global__ void st_linear_drelu_bits(const T* __restrict__ g,
                                                const unsigned char* __restrict__ bits,
                                                T* __restrict__ out, long long rows, int cols,
                                                int ld_bytes, int vec) {
  const int groups = (cols + 7) >> 3;
  ST_GROUP_LOOP(r, cg, rows, groups) {
    const unsigned int m = bits[r * ld_bytes + cg];
    const int c0 = cg * 8;
    const long long base = r * cols + c0;
    if (vec) {
      float v[8];
      st_lin_load8(g + base, v);
#pragma unroll
      for (int k = 0; k < 8; ++k) {
        if (!((m >> k) & 1u)) v[k] = 0.0f;
      }
      st_lin_store8(out + base, v);
    } else {
      const int cnt = cols - c0 < 8 ? cols - c0 : 8;
      for (int k = 0; k < cnt; ++k) {
        out[base + k] = ((m >> k) & 1u) ? g[base + k] : STORE(0.0f);
      }
    }
  }
}

// out = g * gelu'(pre), pre a (rows, ld) array of T (its first cols columns used)
extern "C" __global__ void st_linear_dgelu(const T* __restrict__ g, const T* __restrict__ pre,
                                           T* __restrict__ out, long long rows, int cols,
                                           int ld, int vec) {
  const int groups = (cols + 7) >> 3;
  ST_GROUP_LOOP(r, cg, rows, groups) {
    const int c0 = cg * 8;
    const long long base = r * cols + c0;
    const long long pbase = r * ld + c0;
    if (vec) {
      float v[8], p[8];
      st_lin_load8(g + base, v);
      st_lin_load8(pre + pbase, p);
#pragma unroll
      for (int k = 0; k < 8; ++k) v[k] *= st_dgelu_tanh(p[k]);
      st_lin_store8(out + base, v);
    } else {
      const int cnt = cols - c0 < 8 ? cols - c0 : 8;
      for (int k = 0; k < cnt; ++k) {
        out[base + k] = STORE(LOAD(g[base + k]) * st_dgelu_tanh(LOAD(pre[pbase + k])));
      }
    }
  }
}
