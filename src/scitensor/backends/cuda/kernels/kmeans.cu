// k-means (Lloyd) kernels for one input dtype chosen with -DST_DTYPE=<n>: 0 float16,
// 1 bfloat16, 2 float32 (float32 math), 3 float64 (float64 math). Host code:
// backends/cuda/cluster.py; design, floors and timings: docs/kernels/kmeans.md.
//
// assign (st_kmeans_prep + st_kmeans_assign_bk<BK>): the nearest centroid of every point.
//   argmin_k ||x - c_k||^2 = argmax_k (x.c_k - ||c_k||^2 / 2), a GEMM of the (N, D) points by
//   the (D, K) transposed centroids with the argmax fused into it: a CTA of 256 threads owns
//   BM points, streams the centroids through shared memory in tiles of BN centroids x BK
//   dimensions, each thread accumulates a TM x TN block of scores in registers (outer
//   products from 16-byte shared loads) and folds it into a running max/argmax per point.
//   Ties go to the lowest centroid index (strict '>' in ascending order inside a thread, the
//   lower index on equal scores across threads); NaN scores never win. The squared distance
//   to the chosen centroid is then recomputed directly, sum_d (x_d - c_d)^2 with a fixed warp
//   reduction (no cancellation, deterministic).
//   st_kmeans_prep writes the centroids transposed and zero-padded to (dpad, kpad) and
//   hn_k = ||c_k||^2 / 2 (+inf for the padding columns, which therefore never win).
//
// update (st_kmeans_update_partial + st_kmeans_reduce + st_kmeans_divide): new centroids =
//   per-cluster means of the points, an empty cluster keeps its old centroid.
//   A CTA owns a chunk of points and a range of clusters [k0, k0 + kn) and sums, in shared
//   memory, the points of its chunk whose label falls in the range (column D counts them),
//   then writes its (kn, D + 1) slab of partial[chunk]; a warp reads 32 labels, then the rows
//   of the in-range points, KM_U rows in flight, lane = dimension.
//   - deterministic == 0: one accumulator per CTA, shared-memory atomicAdd (the float sums
//     depend on the order the warps get there: not bitwise reproducible);
//   - deterministic == 1: one accumulator per warp (plain adds in the warp's fixed point
//     order), merged in warp order: bitwise reproducible for a given launch shape, which the
//     host derives from (N, K, D, dtype) only.
//   st_kmeans_reduce sums the partial slabs over the chunks in a fixed order;
//   st_kmeans_divide divides by the counts (or keeps the old centroid).
//   Labels outside [0, K) are ignored.
//
// Host contract: x is C-contiguous (N, D); centroids, partials and totals are contiguous in
// the compute type A; labels are int64; every launch uses the block size named at the kernel.
#include "common.cuh"

#ifndef ST_DTYPE
#define ST_DTYPE 2
#endif

#if ST_DTYPE == 0
typedef st_f16 T;
typedef float A;
__device__ __forceinline__ A km_load(T v) { return st_f16_to_f32(v); }
#elif ST_DTYPE == 1
typedef st_bf16 T;
typedef float A;
__device__ __forceinline__ A km_load(T v) { return st_bf16_to_f32(v); }
#elif ST_DTYPE == 2
typedef float T;
typedef float A;
__device__ __forceinline__ A km_load(T v) { return v; }
#elif ST_DTYPE == 3
typedef double T;
typedef double A;
__device__ __forceinline__ A km_load(T v) { return v; }
#else
#error "ST_DTYPE must be 0 (float16), 1 (bfloat16), 2 (float32) or 3 (float64) for kmeans.cu"
#endif

#define KM_FULL 0xffffffffu
#define KM_THREADS 256  // assign: 16 x 16 threads
#if ST_DTYPE == 3
#define KM_BM 64   // points per CTA
#define KM_BN 64   // centroids per tile
#define KM_TM 4    // points per thread
#define KM_TN 4    // centroids per thread
#define KM_MIN_BLOCKS 2
#else
#define KM_BM 128
#define KM_BN 128
#define KM_TM 8
#define KM_TN 8
#define KM_MIN_BLOCKS 2
#endif
#define KM_HM (KM_TM / 2)            // a thread's points come in two runs of KM_HM
#define KM_HN (KM_TN / 2)
#define KM_XPAD (16 / (int)sizeof(A))  // keeps the rows of the point tile 16-byte aligned
static_assert(KM_HM * sizeof(A) == 16 && KM_HN * sizeof(A) == 16, "16-byte shared loads");
static_assert((KM_BM / KM_TM) * (KM_BN / KM_TN) == KM_THREADS, "one micro-tile per thread");
static_assert(KM_BN / KM_TN == 16, "the argmax merge shuffles across 16 lanes");

#define KM_UPDATE_SMEM 40960  // bytes of the update accumulator (host: SMEM_BYTES)
#define KM_CAP (KM_UPDATE_SMEM / (int)sizeof(A))
#define KM_U 8  // rows in flight per warp in the update

__device__ __forceinline__ float km_fma(float a, float b, float c) { return __fmaf_rn(a, b, c); }
__device__ __forceinline__ double km_fma(double a, double b, double c) {
  return __fma_rn(a, b, c);
}

// KM_HM consecutive values from a 16-byte aligned shared address
__device__ __forceinline__ void km_lds(const float* p, float* r) {
  const float4 v = *reinterpret_cast<const float4*>(p);
  r[0] = v.x; r[1] = v.y; r[2] = v.z; r[3] = v.w;
}
__device__ __forceinline__ void km_lds(const double* p, double* r) {
  const double2 v = *reinterpret_cast<const double2*>(p);
  r[0] = v.x; r[1] = v.y;
}

// a thread's i-th point row / j-th centroid column inside the CTA tile
__device__ __forceinline__ int km_row(int ty, int i) {
  return i < KM_HM ? ty * KM_HM + i : KM_BM / 2 + ty * KM_HM + (i - KM_HM);
}
__device__ __forceinline__ int km_col(int tx, int j) {
  return j < KM_HN ? tx * KM_HN + j : KM_BN / 2 + tx * KM_HN + (j - KM_HN);
}

// ---- prep: transposed, padded centroids and half squared norms ---------------------------
// Any grid; ct is (dpad, kpad), hn is (kpad,).
extern "C" __global__ void st_kmeans_prep(const A* __restrict__ c, A* __restrict__ ct,
                                          A* __restrict__ hn, int k, int d, int kpad,
                                          int dpad) {
  const long long total = (long long)dpad * kpad;
  ST_LOOP(e, total) {
    const int kk = (int)(e % kpad), dd = (int)(e / kpad);
    ct[e] = (kk < k && dd < d) ? c[(long long)kk * d + dd] : (A)0;
  }
  ST_LOOP(kk, (long long)kpad) {
    if (kk < k) {
      A s = 0;
      for (int dd = 0; dd < d; ++dd) {
        const A v = c[kk * d + dd];
        s = km_fma(v, v, s);
      }
      hn[kk] = (A)0.5 * s;
    } else {
      hn[kk] = (A)INFINITY;
    }
  }
}

// ---- assign: fused distance GEMM + argmin --------------------------------------------------
// Grid: ceil(n / KM_BM) CTAs of KM_THREADS. dpad is a multiple of BK, kpad of KM_BN.
template <int BK>
__device__ __forceinline__ void kmeans_assign(const T* __restrict__ x, const A* __restrict__ c,
                                              const A* __restrict__ ct,
                                              const A* __restrict__ hn,
                                              long long* __restrict__ labels,
                                              A* __restrict__ dist, long long n, int d,
                                              int kpad, int dpad) {
  __shared__ __align__(16) A xs[BK][KM_BM + KM_XPAD];  // points, transposed: xs[dim][point]
  __shared__ __align__(16) A cs[BK][KM_BN];            // centroids: cs[dim][centroid]
  __shared__ int s_lab[KM_BM];
  const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
  const long long m0 = (long long)blockIdx.x * KM_BM;
  const bool x_resident = dpad == BK;  // the whole point tile fits: load it once

  A best[KM_TM];
  int bidx[KM_TM];
#pragma unroll
  for (int i = 0; i < KM_TM; ++i) {
    best[i] = -(A)INFINITY;
    bidx[i] = 0;
  }

  for (int k0 = 0; k0 < kpad; k0 += KM_BN) {
    A acc[KM_TM][KM_TN];
#pragma unroll
    for (int j = 0; j < KM_TN; ++j) {
      const A h = hn[k0 + km_col(tx, j)];
#pragma unroll
      for (int i = 0; i < KM_TM; ++i) acc[i][j] = -h;
    }
    for (int d0 = 0; d0 < dpad; d0 += BK) {
      if (!x_resident || k0 == 0) {
        for (int e = tid; e < BK * KM_BM; e += KM_THREADS) {
          const int dd = e % BK, m = e / BK;
          const long long row = m0 + m;
          const int col = d0 + dd;
          xs[dd][m] = (row < n && col < d) ? km_load(x[row * d + col]) : (A)0;
        }
      }
      for (int e = tid; e < BK * KM_BN; e += KM_THREADS) {
        const int nn = e % KM_BN, dd = e / KM_BN;
        cs[dd][nn] = ct[(long long)(d0 + dd) * kpad + k0 + nn];
      }
      __syncthreads();
#pragma unroll
      for (int dd = 0; dd < BK; ++dd) {
        A a[KM_TM], b[KM_TN];
        km_lds(&xs[dd][ty * KM_HM], a);
        km_lds(&xs[dd][KM_BM / 2 + ty * KM_HM], a + KM_HM);
        km_lds(&cs[dd][tx * KM_HN], b);
        km_lds(&cs[dd][KM_BN / 2 + tx * KM_HN], b + KM_HN);
#pragma unroll
        for (int i = 0; i < KM_TM; ++i)
#pragma unroll
          for (int j = 0; j < KM_TN; ++j) acc[i][j] = km_fma(a[i], b[j], acc[i][j]);
      }
      __syncthreads();
    }
    // columns in ascending order: a strictly greater score replaces, so the first one stays
#pragma unroll
    for (int i = 0; i < KM_TM; ++i)
#pragma unroll
      for (int j = 0; j < KM_TN; ++j)
        if (acc[i][j] > best[i]) {
          best[i] = acc[i][j];
          bidx[i] = k0 + km_col(tx, j);
        }
  }

  // merge the 16 threads of a point row (lanes tx = 0..15 of one half-warp)
#pragma unroll
  for (int i = 0; i < KM_TM; ++i) {
    A v = best[i];
    int id = bidx[i];
#pragma unroll
    for (int off = 8; off >= 1; off >>= 1) {
      const A ov = __shfl_xor_sync(KM_FULL, v, off);
      const int oid = __shfl_xor_sync(KM_FULL, id, off);
      if (ov > v || (ov == v && oid < id)) {
        v = ov;
        id = oid;
      }
    }
    if (tx == 0) s_lab[km_row(ty, i)] = id;
  }
  __syncthreads();

  // exact squared distance to the chosen centroid: a warp per point, lane = dimension
  const int warp = tid >> 5, lane = tid & 31;
  for (int r = warp; r < KM_BM; r += KM_THREADS / 32) {
    const long long row = m0 + r;
    if (row >= n) break;
    const int lab = s_lab[r];
    A s = 0;
    for (int j = lane; j < d; j += 32) {
      const A xv = x_resident ? xs[j][r] : km_load(x[row * d + j]);
      const A diff = xv - c[(long long)lab * d + j];
      s = km_fma(diff, diff, s);
    }
#pragma unroll
    for (int off = 16; off >= 1; off >>= 1) s += __shfl_xor_sync(KM_FULL, s, off);
    if (lane == 0) {
      labels[row] = lab;
      dist[row] = s;
    }
  }
}

#define KM_ASSIGN_ARGS                                                                     \
  const T *__restrict__ x, const A *__restrict__ c, const A *__restrict__ ct,              \
      const A *__restrict__ hn, long long *__restrict__ labels, A *__restrict__ dist,      \
      long long n, int d, int kpad, int dpad
#define KM_ASSIGN_KERNEL(BK)                                                               \
  extern "C" __global__ void __launch_bounds__(KM_THREADS, KM_MIN_BLOCKS)                  \
      st_kmeans_assign_bk##BK(KM_ASSIGN_ARGS) {                                            \
    kmeans_assign<BK>(x, c, ct, hn, labels, dist, n, d, kpad, dpad);                      \
  }
KM_ASSIGN_KERNEL(4)
KM_ASSIGN_KERNEL(8)
KM_ASSIGN_KERNEL(16)
KM_ASSIGN_KERNEL(32)

// ---- update, pass 1: per-(chunk, cluster range) partial sums and counts --------------------
// Grid: n_chunks * n_ranges CTAs (chunk-major), any multiple of 32 threads up to 512.
// partial is (n_chunks, k, d + 1); the CTA writes rows [k0, k0 + kn) of its chunk's slab.
// The host picks kr so that the accumulator fits: kr * (d + 1) <= KM_CAP, times the number
// of warps when deterministic.
extern "C" __global__ void __launch_bounds__(512)
    st_kmeans_update_partial(const T* __restrict__ x, const long long* __restrict__ labels,
                             A* __restrict__ partial, long long n, int d, int k, int kr,
                             int n_ranges, long long chunk, int deterministic) {
  __shared__ __align__(16) A s_acc[KM_CAP];
  const int nw = blockDim.x >> 5, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int range = blockIdx.x % n_ranges;
  const long long ci = blockIdx.x / n_ranges;
  const int k0 = range * kr;
  const int kn = kr < k - k0 ? kr : k - k0;
  const int w1 = d + 1;
  const int slab = kn * w1;
  const int used = deterministic ? nw * slab : slab;
  for (int e = threadIdx.x; e < used; e += blockDim.x) s_acc[e] = (A)0;
  __syncthreads();
  A* __restrict__ acc = deterministic ? s_acc + warp * slab : s_acc;

  const long long p_begin = ci * chunk;
  const long long p_end = p_begin + chunk < n ? p_begin + chunk : n;
  for (long long base = p_begin + 32LL * warp; base < p_end; base += 32LL * nw) {
    int rel = -1;  // this lane's point, relative to the range, or -1
    if (base + lane < p_end) {
      const long long lab = labels[base + lane];
      if (lab >= k0 && lab < k0 + kn) rel = (int)(lab - k0);
    }
    unsigned pending = __ballot_sync(KM_FULL, rel >= 0);  // warp-uniform from here on
    while (pending) {
      int jj[KM_U], rr[KM_U];
#pragma unroll
      for (int u = 0; u < KM_U; ++u) {
        int j = -1;
        if (pending) {
          j = __ffs(pending) - 1;
          pending &= pending - 1;
        }
        const int r = __shfl_sync(KM_FULL, rel, j < 0 ? 0 : j);
        jj[u] = j;
        rr[u] = j < 0 ? -1 : r;
      }
      for (int d0 = 0; d0 < d; d0 += 32) {
        const int dd = d0 + lane;
        A v[KM_U];
#pragma unroll
        for (int u = 0; u < KM_U; ++u)
          v[u] = (rr[u] >= 0 && dd < d) ? km_load(x[(base + jj[u]) * d + dd]) : (A)0;
#pragma unroll
        for (int u = 0; u < KM_U; ++u) {
          if (rr[u] >= 0 && dd < d) {
            A* a = acc + rr[u] * w1 + dd;
            if (deterministic) *a += v[u];
            else atomicAdd(a, v[u]);
          }
        }
      }
      if (lane == 0) {
#pragma unroll
        for (int u = 0; u < KM_U; ++u) {
          if (rr[u] >= 0) {
            A* a = acc + rr[u] * w1 + d;
            if (deterministic) *a += (A)1;
            else atomicAdd(a, (A)1);
          }
        }
      }
    }
  }
  __syncthreads();
  A* __restrict__ out = partial + (ci * k + k0) * (long long)w1;
  for (int e = threadIdx.x; e < slab; e += blockDim.x) {
    A s = s_acc[e];
    if (deterministic)
      for (int w = 1; w < nw; ++w) s += s_acc[w * slab + e];
    out[e] = s;
  }
}

// ---- update, pass 2: totals[e] = sum over chunks of partial[chunk][e], fixed order --------
// Grid: any, 256 threads. A CTA takes 32 consecutive elements; warp w sums chunks w, w + 8,
// ... in order, then warp 0 adds the eight warp sums in order.
extern "C" __global__ void __launch_bounds__(256)
    st_kmeans_reduce(const A* __restrict__ partial, A* __restrict__ totals,
                     long long e_total, int n_chunks) {
  __shared__ A red[8][32];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  for (long long e0 = (long long)blockIdx.x * 32; e0 < e_total; e0 += (long long)gridDim.x * 32) {
    const long long e = e0 + lane;
    A s = 0;
    if (e < e_total) {
#pragma unroll 4
      for (int ch = warp; ch < n_chunks; ch += 8) s += partial[(long long)ch * e_total + e];
    }
    red[warp][lane] = s;
    __syncthreads();
    if (warp == 0 && e < e_total) {
      A t = red[0][lane];
#pragma unroll
      for (int w = 1; w < 8; ++w) t += red[w][lane];
      totals[e] = t;
    }
    __syncthreads();
  }
}

// ---- update, pass 3: means, old centroid for empty clusters --------------------------------
// Any grid. totals is (k, d + 1) with the counts in the last column.
extern "C" __global__ void st_kmeans_divide(const A* __restrict__ totals,
                                            const A* __restrict__ old_c, A* __restrict__ new_c,
                                            int k, int d) {
  ST_LOOP(e, (long long)k * d) {
    const long long kk = e / d, dd = e % d;
    const A cnt = totals[kk * (d + 1) + d];
    new_c[e] = cnt > (A)0 ? totals[kk * (d + 1) + dd] / cnt : old_c[e];
  }
}
