// Shared definitions for scitensor's CUDA kernels: storage/compute types per dtype and
// conversions. No system headers: NVRTC on the GPU image lacks some of them, and the
// half-precision conversions are one PTX instruction each.
#pragma once

// NVRTC has no <math.h>: the constants kernels use from it
#ifndef INFINITY
#define INFINITY (__int_as_float(0x7f800000))
#endif
#ifndef NAN
#define NAN (__int_as_float(0x7fffffff))
#endif

typedef unsigned short st_f16;   // IEEE binary16 bits
typedef unsigned short st_bf16;  // bfloat16 bits
typedef unsigned char st_bool;   // NumPy bool: one byte, 0 or 1

__device__ __forceinline__ float st_f16_to_f32(st_f16 h) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
  return f;
}
__device__ __forceinline__ st_f16 st_f32_to_f16(float f) {
  st_f16 h;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
  return h;
}
__device__ __forceinline__ st_f16 st_f64_to_f16(double d) {
  st_f16 h;
  asm("cvt.rn.f16.f64 %0, %1;" : "=h"(h) : "d"(d));
  return h;
}
__device__ __forceinline__ float st_bf16_to_f32(st_bf16 h) {
  return __uint_as_float(((unsigned int)h) << 16);
}
__device__ __forceinline__ st_bf16 st_f32_to_bf16(float f) {
  st_bf16 h;
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f));
  return h;
}

// Grid-stride loop over [0, n) with 64-bit indices.
#define ST_LOOP(i, n)                                                        \
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
       i += (long long)gridDim.x * blockDim.x)
