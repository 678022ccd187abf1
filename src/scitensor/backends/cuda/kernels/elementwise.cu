// Elementwise kernels for one dtype, chosen at compile time with -DST_DTYPE=<n>:
//   0 float16, 1 bfloat16, 2 float32, 3 float64, 4 int32, 5 int64, 6 bool.
// Every kernel works on contiguous arrays of n elements. Low-precision floats compute in
// float32 and round once (as the CPU backend does). Binary kernels take a mode:
//   0: a and b are arrays; 1: b is the scalar sb; 2: a is the scalar sa;
//   3: b is an array of `period` elements repeated along a (b broadcast over a's leading
//      axes: a bias row, a position table); 4: a repeats the same way along b.
#include "common.cuh"

#ifndef ST_DTYPE
#define ST_DTYPE 2
#endif

#if ST_DTYPE == 0
typedef st_f16 T; typedef float C;
#define LOAD(x) st_f16_to_f32(x)
#define STORE(x) st_f32_to_f16(x)
#define ST_FLOAT 1
#elif ST_DTYPE == 1
typedef st_bf16 T; typedef float C;
#define LOAD(x) st_bf16_to_f32(x)
#define STORE(x) st_f32_to_bf16(x)
#define ST_FLOAT 1
#elif ST_DTYPE == 2
typedef float T; typedef float C;
#define LOAD(x) (x)
#define STORE(x) (x)
#define ST_FLOAT 1
#elif ST_DTYPE == 3
typedef double T; typedef double C;
#define LOAD(x) (x)
#define STORE(x) (x)
#define ST_FLOAT 2
#elif ST_DTYPE == 4
typedef int T; typedef int C;
#define LOAD(x) (x)
#define STORE(x) ((T)(x))
#define ST_FLOAT 0
#elif ST_DTYPE == 5
typedef long long T; typedef long long C;
#define LOAD(x) (x)
#define STORE(x) ((T)(x))
#define ST_FLOAT 0
#else
typedef st_bool T; typedef int C;
#define LOAD(x) ((int)(x))
#define STORE(x) ((T)((x) != 0))
#define ST_FLOAT 0
#endif

#if ST_FLOAT == 1
#define M(fn) fn##f
#elif ST_FLOAT == 2
#define M(fn) fn
#endif

#define BINARY(name, OUT, STORE_OUT, expr)                                          \
  extern "C" __global__ void name(const T* __restrict__ a, const T* __restrict__ b, \
                                  C sa, C sb, OUT* __restrict__ out, long long n,   \
                                  int mode, long long period) {                     \
    ST_LOOP(i, n) {                                                                 \
      const C x = mode == 2 ? sa : LOAD(a[mode == 4 ? i % period : i]);             \
      const C y = mode == 1 ? sb : LOAD(b[mode == 3 ? i % period : i]);             \
      out[i] = STORE_OUT(expr);                                                     \
    }                                                                               \
  }

#define UNARY(name, OUT, STORE_OUT, expr)                                                   \
  extern "C" __global__ void name(const T* __restrict__ a, OUT* __restrict__ out, long long n) { \
    ST_LOOP(i, n) {                                                                         \
      const C x = LOAD(a[i]);                                                               \
      out[i] = STORE_OUT(expr);                                                             \
    }                                                                                       \
  }

#define AS_BOOL(x) ((st_bool)((x) ? 1 : 0))

// comparisons and logical ops: every dtype, bool output
BINARY(st_eq, st_bool, AS_BOOL, x == y)
BINARY(st_ne, st_bool, AS_BOOL, x != y)
BINARY(st_lt, st_bool, AS_BOOL, x < y)
BINARY(st_le, st_bool, AS_BOOL, x <= y)
BINARY(st_gt, st_bool, AS_BOOL, x > y)
BINARY(st_ge, st_bool, AS_BOOL, x >= y)
BINARY(st_logical_and, st_bool, AS_BOOL, (x != C(0)) && (y != C(0)))
BINARY(st_logical_or, st_bool, AS_BOOL, (x != C(0)) || (y != C(0)))
BINARY(st_logical_xor, st_bool, AS_BOOL, (x != C(0)) != (y != C(0)))
UNARY(st_logical_not, st_bool, AS_BOOL, x == C(0))

#if ST_FLOAT
// NaN-propagating maximum/minimum as NumPy's
BINARY(st_maximum, T, STORE, (x != x) ? x : ((y != y) ? y : (x >= y ? x : y)))
BINARY(st_minimum, T, STORE, (x != x) ? x : ((y != y) ? y : (x <= y ? x : y)))
BINARY(st_add, T, STORE, x + y)
BINARY(st_sub, T, STORE, x - y)
BINARY(st_mul, T, STORE, x * y)
BINARY(st_div, T, STORE, x / y)
BINARY(st_pow, T, STORE, M(pow)(x, y))

__device__ __forceinline__ C st_sigmoid(C x) {
  const C e = M(exp)(-M(fabs)(x));  // exp of a non-positive number: no overflow
  return x >= C(0) ? C(1) / (C(1) + e) : e / (C(1) + e);
}

UNARY(st_neg, T, STORE, -x)
UNARY(st_exp, T, STORE, M(exp)(x))
UNARY(st_log, T, STORE, M(log)(x))
UNARY(st_log1p, T, STORE, M(log1p)(x))
UNARY(st_expm1, T, STORE, M(expm1)(x))
UNARY(st_sqrt, T, STORE, M(sqrt)(x))
UNARY(st_rsqrt, T, STORE, C(1) / M(sqrt)(x))
UNARY(st_abs, T, STORE, M(fabs)(x))
UNARY(st_sign, T, STORE, x > C(0) ? C(1) : (x < C(0) ? C(-1) : x))
UNARY(st_sin, T, STORE, M(sin)(x))
UNARY(st_cos, T, STORE, M(cos)(x))
UNARY(st_tanh, T, STORE, M(tanh)(x))
UNARY(st_sigmoid, T, STORE, st_sigmoid(x))
UNARY(st_relu, T, STORE, x < C(0) ? C(0) : x)
UNARY(st_gelu_tanh, T, STORE,
      C(0.5) * x * (C(1) + M(tanh)(C(0.7978845608028654) * (x + C(0.044715) * x * x * x))))
UNARY(st_gelu_erf, T, STORE, C(0.5) * x * (C(1) + M(erf)(x * C(0.7071067811865476))))
UNARY(st_erf, T, STORE, M(erf)(x))
UNARY(st_silu, T, STORE, x * st_sigmoid(x))
UNARY(st_softplus, T, STORE,
      (x > C(0) ? x : C(0)) + M(log1p)(M(exp)(-M(fabs)(x))))
UNARY(st_floor, T, STORE, M(floor)(x))
UNARY(st_ceil, T, STORE, M(ceil)(x))
UNARY(st_round, T, STORE, M(rint)(x))
UNARY(st_square, T, STORE, x * x)
UNARY(st_reciprocal, T, STORE, C(1) / x)
UNARY(st_isnan, st_bool, AS_BOOL, x != x)
UNARY(st_isinf, st_bool, AS_BOOL, (x == x) && (x - x != x - x))
UNARY(st_isfinite, st_bool, AS_BOOL, x - x == C(0))

#elif ST_DTYPE == 4 || ST_DTYPE == 5
// integers: arithmetic wraps around like NumPy's (computed on unsigned values)
typedef unsigned long long U;
BINARY(st_maximum, T, STORE, x >= y ? x : y)
BINARY(st_minimum, T, STORE, x <= y ? x : y)
BINARY(st_add, T, STORE, (U)x + (U)y)
BINARY(st_sub, T, STORE, (U)x - (U)y)
BINARY(st_mul, T, STORE, (U)x * (U)y)
UNARY(st_neg, T, STORE, (U)0 - (U)x)
UNARY(st_abs, T, STORE, x < 0 ? (U)0 - (U)x : (U)x)
UNARY(st_sign, T, STORE, x > 0 ? 1 : (x < 0 ? -1 : 0))
UNARY(st_relu, T, STORE, x < 0 ? 0 : x)
UNARY(st_square, T, STORE, (U)x * (U)x)
UNARY(st_floor, T, STORE, x)  // NumPy 2 keeps integers as they are
UNARY(st_ceil, T, STORE, x)
UNARY(st_round, T, STORE, x)
UNARY(st_isnan, st_bool, AS_BOOL, x != x)  // always false for integers
UNARY(st_isinf, st_bool, AS_BOOL, x != x)
UNARY(st_isfinite, st_bool, AS_BOOL, x == x)

#else
// bool: max is or, min is and (arithmetic on bool goes to CuPy, which refuses it as NumPy)
BINARY(st_maximum, T, STORE, x | y)
BINARY(st_minimum, T, STORE, x & y)
UNARY(st_floor, T, STORE, x)
UNARY(st_ceil, T, STORE, x)
UNARY(st_abs, T, STORE, x)
UNARY(st_isnan, st_bool, AS_BOOL, x != x)  // always false
UNARY(st_isinf, st_bool, AS_BOOL, x != x)
UNARY(st_isfinite, st_bool, AS_BOOL, x == x)
#endif

// ---- casts from this dtype to each dtype ------------------------------------------------
__device__ __forceinline__ float st_to_f32(float x) { return x; }
__device__ __forceinline__ float st_to_f32(double x) { return (float)x; }
__device__ __forceinline__ float st_to_f32(int x) { return (float)x; }
__device__ __forceinline__ float st_to_f32(long long x) { return (float)x; }
__device__ __forceinline__ double st_to_f64(float x) { return (double)x; }
__device__ __forceinline__ double st_to_f64(double x) { return x; }
__device__ __forceinline__ double st_to_f64(int x) { return (double)x; }
__device__ __forceinline__ double st_to_f64(long long x) { return (double)x; }
__device__ __forceinline__ st_f16 st_to_f16(float x) { return st_f32_to_f16(x); }
__device__ __forceinline__ st_f16 st_to_f16(double x) { return st_f64_to_f16(x); }
__device__ __forceinline__ st_f16 st_to_f16(int x) { return st_f64_to_f16((double)x); }
__device__ __forceinline__ st_f16 st_to_f16(long long x) { return st_f64_to_f16((double)x); }
// double -> bfloat16 goes through float32, as ml_dtypes does
__device__ __forceinline__ st_bf16 st_to_bf16(float x) { return st_f32_to_bf16(x); }
__device__ __forceinline__ st_bf16 st_to_bf16(double x) { return st_f32_to_bf16((float)x); }
__device__ __forceinline__ st_bf16 st_to_bf16(int x) { return st_f32_to_bf16((float)x); }
__device__ __forceinline__ st_bf16 st_to_bf16(long long x) { return st_f32_to_bf16((float)(double)x); }
__device__ __forceinline__ st_bool st_to_bool(C x) { return (st_bool)(x != C(0)); }

#define CAST(name, OUT, conv)                                                                   \
  extern "C" __global__ void name(const T* __restrict__ a, OUT* __restrict__ out, long long n) { \
    ST_LOOP(i, n) { out[i] = conv(LOAD(a[i])); }                                                \
  }

CAST(st_cast_float16, st_f16, st_to_f16)
CAST(st_cast_bfloat16, st_bf16, st_to_bf16)
CAST(st_cast_float32, float, st_to_f32)
CAST(st_cast_float64, double, st_to_f64)
CAST(st_cast_int32, int, (int))
CAST(st_cast_int64, long long, (long long))
CAST(st_cast_bool, st_bool, st_to_bool)

// fill with a value (the scalar in compute type)
extern "C" __global__ void st_fill(T* __restrict__ out, C value, long long n) {
  const T v = STORE(value);
  ST_LOOP(i, n) { out[i] = v; }
}
