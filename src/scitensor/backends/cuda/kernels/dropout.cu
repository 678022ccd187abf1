// Dropout's apply step, y = x * (mask ? scale : 0), for one dtype chosen with
// -DST_DTYPE=<n> (0 float16, 1 bfloat16, 2 float32). The mask (one byte per element) comes
// from the Philox kernels of random.cu; multiplying (not selecting) keeps NaNs in dropped
// places NaN, as PyTorch does. ``vec``: n % VEC == 0 and 16-byte aligned x and y.
#include "float_io.cuh"

extern "C" __global__ void st_dropout_apply(const T* __restrict__ x,
                                            const unsigned char* __restrict__ mask,
                                            T* __restrict__ y, float scale, int n, int vec) {
  if (vec) {
    const int nv = n / VEC;
    ST_GRID_LOOP(v, nv) {
      float t[VEC];
      st_loadv(x + v * VEC, t);
#if ST_DTYPE == 2
      const unsigned int m = reinterpret_cast<const unsigned int*>(mask)[v];
      const unsigned int bits[1] = {m};
#else
      const uint2 m2 = reinterpret_cast<const uint2*>(mask)[v];
      const unsigned int bits[2] = {m2.x, m2.y};
#endif
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        const unsigned int byte = (bits[k >> 2] >> (8 * (k & 3))) & 0xffu;
        t[k] = t[k] * (byte ? scale : 0.f);
      }
      st_storev(y + v * VEC, t);
    }
  } else {
    ST_GRID_LOOP(i, n) { y[i] = STORE(LOAD(x[i]) * (mask[i] ? scale : 0.f)); }
  }
}
