// Row gather, the CUDA backend's a[ids] for an integer index array (host code:
// backends/cuda/gather.py): one launch where CuPy's integer-array indexing runs its general
// indexing machinery (~30 µs of host time for an embedding lookup).
//
//   out[i, :] = table[wrap(ids[i]), :]   for i < n_ids,
//
// with table viewed as (n_rows, row_words) and out as (n_ids, row_words), both C-contiguous.
// The kernels copy words of W bytes and know nothing of dtypes: the host picks the widest W
// (16, 8, 4, 2 or 1) that divides the row's bytes and both base addresses. An id outside
// [0, n_rows) wraps around as CuPy's indexing does (id mod n_rows, plus n_rows if negative);
// the host never launches with n_rows == 0.
#include "common.cuh"

#define GATHER_ROWS(name, W, ID)                                                          \
  extern "C" __global__ void name(const W* __restrict__ table, const ID* __restrict__ ids, \
                                  W* __restrict__ out, long long n_ids, long long n_rows, \
                                  long long row_words) {                                  \
    ST_LOOP(i, n_ids * row_words) {                                                       \
      const long long r = i / row_words;                                                  \
      long long id = (long long)ids[r] % n_rows;                                          \
      if (id < 0) id += n_rows;                                                           \
      out[i] = table[id * row_words + (i - r * row_words)];                               \
    }                                                                                     \
  }

GATHER_ROWS(st_gather_rows_w16_i64, uint4, long long)
GATHER_ROWS(st_gather_rows_w8_i64, unsigned long long, long long)
GATHER_ROWS(st_gather_rows_w4_i64, unsigned int, long long)
GATHER_ROWS(st_gather_rows_w2_i64, unsigned short, long long)
GATHER_ROWS(st_gather_rows_w1_i64, unsigned char, long long)
GATHER_ROWS(st_gather_rows_w16_i32, uint4, int)
GATHER_ROWS(st_gather_rows_w8_i32, unsigned long long, int)
GATHER_ROWS(st_gather_rows_w4_i32, unsigned int, int)
GATHER_ROWS(st_gather_rows_w2_i32, unsigned short, int)
GATHER_ROWS(st_gather_rows_w1_i32, unsigned char, int)
