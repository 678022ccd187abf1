// Philox4x32-10 random numbers, bit-for-bit the stream of backends/philox.py.
// Counter of block i: (i_lo, i_hi, offset_lo, offset_hi); key (seed_lo, seed_hi); each block
// yields four 32-bit words, consumed in order (word j = lane j % 4 of block j / 4).
#include "common.cuh"

struct st_u4 { unsigned int x, y, z, w; };

__device__ __forceinline__ st_u4 st_philox_block(unsigned long long block,
                                                 unsigned long long seed,
                                                 unsigned long long offset) {
  unsigned int c0 = (unsigned int)block, c1 = (unsigned int)(block >> 32);
  unsigned int c2 = (unsigned int)offset, c3 = (unsigned int)(offset >> 32);
  unsigned int k0 = (unsigned int)seed, k1 = (unsigned int)(seed >> 32);
#pragma unroll
  for (int r = 0; r < 10; ++r) {
    const unsigned int hi0 = __umulhi(c0, 0xD2511F53u), lo0 = c0 * 0xD2511F53u;
    const unsigned int hi1 = __umulhi(c2, 0xCD9E8D57u), lo1 = c2 * 0xCD9E8D57u;
    const unsigned int n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
    c0 = n0; c1 = lo1; c2 = n2; c3 = lo0;
    k0 += 0x9E3779B9u; k1 += 0xBB67AE85u;
  }
  st_u4 out = {c0, c1, c2, c3};
  return out;
}

__device__ __forceinline__ unsigned int st_lane(st_u4 v, int lane) {
  return lane == 0 ? v.x : (lane == 1 ? v.y : (lane == 2 ? v.z : v.w));
}

// word j of the stream
__device__ __forceinline__ unsigned int st_philox_word(unsigned long long j,
                                                       unsigned long long seed,
                                                       unsigned long long offset) {
  return st_lane(st_philox_block(j >> 2, seed, offset), (int)(j & 3));
}

// 24 random bits -> [0, 1) in float32
__device__ __forceinline__ float st_u01_f32(unsigned int w) {
  return (float)(w >> 8) * (1.0f / 16777216.0f);
}
// 53 random bits from two words -> [0, 1) in float64
__device__ __forceinline__ double st_u01_f64(unsigned int hi, unsigned int lo) {
  return ((double)(hi >> 5) * 67108864.0 + (double)(lo >> 6)) * (1.0 / 9007199254740992.0);
}

// one thread per Philox block: four float32 values
extern "C" __global__ void st_uniform_f32(float* __restrict__ out, long long n,
                                          unsigned long long seed, unsigned long long offset0,
    const unsigned long long* __restrict__ offset_delta) {
  // offset_delta: device-side counter advance (CUDA-graph replays draw fresh numbers)
  const unsigned long long offset = offset0 + *offset_delta;
  const long long nb = (n + 3) / 4;
  ST_LOOP(b, nb) {
    const st_u4 v = st_philox_block((unsigned long long)b, seed, offset);
    const long long j = 4 * b;
    out[j] = st_u01_f32(v.x);
    if (j + 1 < n) out[j + 1] = st_u01_f32(v.y);
    if (j + 2 < n) out[j + 2] = st_u01_f32(v.z);
    if (j + 3 < n) out[j + 3] = st_u01_f32(v.w);
  }
}

// one thread per Philox block: two float64 values (two words each)
extern "C" __global__ void st_uniform_f64(double* __restrict__ out, long long n,
                                          unsigned long long seed, unsigned long long offset0,
    const unsigned long long* __restrict__ offset_delta) {
  // offset_delta: device-side counter advance (CUDA-graph replays draw fresh numbers)
  const unsigned long long offset = offset0 + *offset_delta;
  const long long nb = (n + 1) / 2;
  ST_LOOP(b, nb) {
    const st_u4 v = st_philox_block((unsigned long long)b, seed, offset);
    const long long j = 2 * b;
    out[j] = st_u01_f64(v.x, v.y);
    if (j + 1 < n) out[j + 1] = st_u01_f64(v.z, v.w);
  }
}

// Box-Muller as the CPU backend: m = ceil(n/2) pairs, u = uniform(2m); for k < m,
// z[k] = r cos(t), z[m + k] = r sin(t) with r = sqrt(-2 log(1 - u[k])), t = 2 pi u[m + k].
extern "C" __global__ void st_normal_f32(float* __restrict__ out, long long n,
                                         unsigned long long seed, unsigned long long offset0,
    const unsigned long long* __restrict__ offset_delta) {
  // offset_delta: device-side counter advance (CUDA-graph replays draw fresh numbers)
  const unsigned long long offset = offset0 + *offset_delta;
  const long long m = (n + 1) / 2;
  ST_LOOP(k, m) {
    const float u1 = 1.0f - st_u01_f32(st_philox_word((unsigned long long)k, seed, offset));
    const float u2 = st_u01_f32(st_philox_word((unsigned long long)(m + k), seed, offset));
    const float r = sqrtf(-2.0f * logf(u1));
    const float t = 6.283185307179586f * u2;
    out[k] = r * cosf(t);
    if (m + k < n) out[m + k] = r * sinf(t);
  }
}

extern "C" __global__ void st_normal_f64(double* __restrict__ out, long long n,
                                         unsigned long long seed, unsigned long long offset0,
    const unsigned long long* __restrict__ offset_delta) {
  // offset_delta: device-side counter advance (CUDA-graph replays draw fresh numbers)
  const unsigned long long offset = offset0 + *offset_delta;
  const long long m = (n + 1) / 2;
  ST_LOOP(k, m) {
    const unsigned long long a = 2ull * (unsigned long long)k;
    const unsigned long long b = 2ull * (unsigned long long)(m + k);
    const double u1 = 1.0 - st_u01_f64(st_philox_word(a, seed, offset),
                                       st_philox_word(a + 1, seed, offset));
    const double u2 = st_u01_f64(st_philox_word(b, seed, offset),
                                 st_philox_word(b + 1, seed, offset));
    const double r = sqrt(-2.0 * log(u1));
    const double t = 6.283185307179586 * u2;
    out[k] = r * cos(t);
    if (m + k < n) out[m + k] = r * sin(t);
  }
}

// integers in [low, low + span): (w[2k] << 32 | w[2k+1]) % span + low
extern "C" __global__ void st_randint_i64(long long* __restrict__ out, long long n,
                                          unsigned long long seed, unsigned long long offset0,
                                          long long low, unsigned long long span,
    const unsigned long long* __restrict__ offset_delta) {
  // offset_delta: device-side counter advance (CUDA-graph replays draw fresh numbers)
  const unsigned long long offset = offset0 + *offset_delta;
  const long long nb = (n + 1) / 2;
  ST_LOOP(b, nb) {
    const st_u4 v = st_philox_block((unsigned long long)b, seed, offset);
    const long long j = 2 * b;
    out[j] = (long long)(((((unsigned long long)v.x) << 32) | v.y) % span) + low;
    if (j + 1 < n)
      out[j + 1] = (long long)(((((unsigned long long)v.z) << 32) | v.w) % span) + low;
  }
}

// dropout masks: uniform float32 < p_keep
extern "C" __global__ void st_bernoulli(st_bool* __restrict__ out, long long n,
                                        unsigned long long seed, unsigned long long offset0,
                                        float p_keep,
    const unsigned long long* __restrict__ offset_delta) {
  // offset_delta: device-side counter advance (CUDA-graph replays draw fresh numbers)
  const unsigned long long offset = offset0 + *offset_delta;
  const long long nb = (n + 3) / 4;
  ST_LOOP(b, nb) {
    const st_u4 v = st_philox_block((unsigned long long)b, seed, offset);
    const long long j = 4 * b;
    out[j] = st_u01_f32(v.x) < p_keep;
    if (j + 1 < n) out[j + 1] = st_u01_f32(v.y) < p_keep;
    if (j + 2 < n) out[j + 2] = st_u01_f32(v.z) < p_keep;
    if (j + 3 < n) out[j + 3] = st_u01_f32(v.w) < p_keep;
  }
}
