// Storage type T for one floating dtype chosen with -DST_DTYPE=<n> (0 float16, 1 bfloat16,
// 2 float32), float32 math (LOAD/STORE), and 16-byte vector loads/stores of VEC = 16 /
// sizeof(T) elements. Used by pooling.cu, batchnorm.cu and dropout.cu.
#pragma once
#include "common.cuh"

#ifndef ST_DTYPE
#define ST_DTYPE 2
#endif

#if ST_DTYPE == 0
typedef st_f16 T;
#define LOAD(v) st_f16_to_f32(v)
#define STORE(v) st_f32_to_f16(v)
#elif ST_DTYPE == 1
typedef st_bf16 T;
#define LOAD(v) st_bf16_to_f32(v)
#define STORE(v) st_f32_to_bf16(v)
#elif ST_DTYPE == 2
typedef float T;
#define LOAD(v) (v)
#define STORE(v) (v)
#else
#error "ST_DTYPE must be 0 (float16), 1 (bfloat16) or 2 (float32) for this kernel source"
#endif

#define VEC (16 / (int)sizeof(T))

// grid-stride loop with int indices (the host keeps element counts below 2^30)
#define ST_GRID_LOOP(i, n) \
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += gridDim.x * blockDim.x)

// VEC consecutive elements from / to a 16-byte aligned address, as float32
__device__ __forceinline__ void st_loadv(const T* __restrict__ p, float* v) {
#if ST_DTYPE == 2
  const float4 a = reinterpret_cast<const float4*>(p)[0];
  v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
#else
  const uint4 u = reinterpret_cast<const uint4*>(p)[0];
  const unsigned int w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    v[2 * k] = LOAD((T)(w[k] & 0xffffu));
    v[2 * k + 1] = LOAD((T)(w[k] >> 16));
  }
#endif
}

__device__ __forceinline__ void st_storev(T* __restrict__ p, const float* v) {
#if ST_DTYPE == 2
  reinterpret_cast<float4*>(p)[0] = make_float4(v[0], v[1], v[2], v[3]);
#else
  uint4 u;
  u.x = (unsigned int)STORE(v[0]) | ((unsigned int)STORE(v[1]) << 16);
  u.y = (unsigned int)STORE(v[2]) | ((unsigned int)STORE(v[3]) << 16);
  u.z = (unsigned int)STORE(v[4]) | ((unsigned int)STORE(v[5]) << 16);
  u.w = (unsigned int)STORE(v[6]) | ((unsigned int)STORE(v[7]) << 16);
  reinterpret_cast<uint4*>(p)[0] = u;
#endif
}

// 8 consecutive elements from a 16-byte aligned address (two vectors for float32)
__device__ __forceinline__ void st_load8(const T* __restrict__ p, float* v) {
  st_loadv(p, v);
#if ST_DTYPE == 2
  st_loadv(p + 4, v + 4);
#endif
}

// 4 consecutive elements to an address aligned to 4 elements (16 or 8 bytes)
__device__ __forceinline__ void st_store4(T* __restrict__ p, const float* v) {
#if ST_DTYPE == 2
  st_storev(p, v);
#else
  uint2 u;
  u.x = (unsigned int)STORE(v[0]) | ((unsigned int)STORE(v[1]) << 16);
  u.y = (unsigned int)STORE(v[2]) | ((unsigned int)STORE(v[3]) << 16);
  reinterpret_cast<uint2*>(p)[0] = u;
#endif
}
