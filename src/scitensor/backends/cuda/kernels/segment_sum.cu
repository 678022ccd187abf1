// Reproducible scatter-add for deterministic mode (host code: backends/cuda/segment_sum.py):
//   out[p, key[j], q] += vals[p, j, q]   for p < pre, j < n, q < post,
// with out viewed as (pre, K, post) and vals as (pre, n, post), both C-contiguous, for one
// floating dtype chosen with -DST_DTYPE=<n>: 0 float16, 1 bfloat16 (float32 sums),
// 2 float32 (float32 sums), 3 float64 (float64 sums). No atomics anywhere: the addends of one
// destination are added one after another in a fixed order, so the result has the same bits
// on every run (and on every GPU: the launch shapes come from the sizes only).
//
//   st_seg_prep: keys = index with negatives wrapped (index < 0: index + K); an index outside
//     [-K, K) becomes K, which sorts last and is dropped; pos = 0..n-1.
//   st_seg_radix_count / _scan / _scatter: one pass of a stable LSD radix sort of (key, pos)
//     by SEG_RADIX_BITS bits of the key (the host runs ceil(bits(K) / 4) passes, ping-pong
//     buffers). A block owns SEG_IPT * blockDim consecutive items, a thread SEG_IPT
//     consecutive ones; each thread counts its digits in its own shared-memory column (no
//     atomics), count writes the per-block digit totals digit-major, scan turns them into
//     exclusive offsets (one block), scatter turns the columns into per-thread offsets and
//     writes its items in order: equal keys keep their order (stable), so the sorted
//     positions of one destination are increasing and the sums run in index order.
//   st_seg_sum_chunks: the sorted items are cut into chunks of `chunk` (from the sizes only);
//     one thread per (p, chunk, q) walks its chunk, one piece (run of equal keys) after the
//     other, adding in sorted order. A piece that starts a run begins from out's value; a run
//     that lies inside the chunk is written to out directly; a run that goes on past the
//     chunk's end leaves its first piece in tail[p, chunk, q]; a piece that continues a run
//     from the previous chunk (it starts the chunk) leaves its sum in head[p, chunk, q].
//   st_seg_sum_merge: one thread per (p, chunk boundary, q) whose run starts in that chunk
//     and crosses the boundary: tail, then the heads of the following chunks in order, into
//     out. (A run over many chunks is summed serially over its chunks: fine for the
//     deterministic fallback this is.)
// Nothing reads a size back to the host: every step is a kernel on the caller's stream.
#include "common.cuh"

#ifndef ST_DTYPE
#define ST_DTYPE 2
#endif

#if ST_DTYPE == 0
typedef st_f16 T;
typedef float A;
#define SEG_LOAD(v) st_f16_to_f32(v)
#define SEG_STORE(v) st_f32_to_f16(v)
#elif ST_DTYPE == 1
typedef st_bf16 T;
typedef float A;
#define SEG_LOAD(v) st_bf16_to_f32(v)
#define SEG_STORE(v) st_f32_to_bf16(v)
#elif ST_DTYPE == 2
typedef float T;
typedef float A;
#define SEG_LOAD(v) (v)
#define SEG_STORE(v) (v)
#elif ST_DTYPE == 3
typedef double T;
typedef double A;
#define SEG_LOAD(v) (v)
#define SEG_STORE(v) (v)
#else
#error "ST_DTYPE must be 0 (float16), 1 (bfloat16), 2 (float32) or 3 (float64) for segment_sum.cu"
#endif

typedef long long i64;

#define SEG_RADIX_BITS 4
#define SEG_RADIX 16          // 1 << SEG_RADIX_BITS digit values
#define SEG_IPT 8             // items per thread in the radix kernels (RADIX_IPT on the host)
#define SEG_MAX_THREADS 256   // radix block size at most (and at least SEG_RADIX)

#define SEG_LOOP(i, n)                                                      \
  for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (n);         \
       i += (i64)gridDim.x * blockDim.x)

__device__ __forceinline__ int seg_digit(i64 key, int shift) {
  return (int)((key >> shift) & (SEG_RADIX - 1));
}

extern "C" __global__ void st_seg_prep(const i64* __restrict__ index, i64* __restrict__ keys,
                                       i64* __restrict__ pos, long long n, long long k) {
  SEG_LOOP(j, n) {
    i64 v = index[j];
    if (v < 0) v += k;
    keys[j] = (v < 0 || v >= k) ? k : v;
    pos[j] = j;
  }
}

// per-block digit totals: hist[d * gridDim.x + block]
extern "C" __global__ void st_seg_radix_count(const i64* __restrict__ keys,
                                              i64* __restrict__ hist, long long n,
                                              int shift) {
  __shared__ int cnt[SEG_RADIX][SEG_MAX_THREADS];
  const int t = threadIdx.x, nt = blockDim.x;
  for (int d = 0; d < SEG_RADIX; ++d) cnt[d][t] = 0;
  const i64 base = ((i64)blockIdx.x * nt + t) * SEG_IPT;
  for (int j = 0; j < SEG_IPT; ++j) {
    const i64 i = base + j;
    if (i < n) ++cnt[seg_digit(keys[i], shift)][t];
  }
  __syncthreads();
  if (t < SEG_RADIX) {
    i64 s = 0;
    for (int u = 0; u < nt; ++u) s += cnt[t][u];
    hist[(i64)t * gridDim.x + blockIdx.x] = s;
  }
}

// exclusive prefix sum of hist[0, m) in place; one block
extern "C" __global__ void st_seg_radix_scan(i64* __restrict__ hist, long long m) {
  __shared__ i64 part[SEG_MAX_THREADS];
  const int t = threadIdx.x, nt = blockDim.x;
  const i64 per = (m + nt - 1) / nt;
  const i64 lo = (i64)t * per;
  const i64 hi = lo + per < m ? lo + per : m;
  i64 s = 0;
  for (i64 i = lo; i < hi; ++i) s += hist[i];
  part[t] = s;
  __syncthreads();
  if (t == 0) {
    i64 run = 0;
    for (int u = 0; u < nt; ++u) {
      const i64 v = part[u];
      part[u] = run;
      run += v;
    }
  }
  __syncthreads();
  i64 run = part[t];
  for (i64 i = lo; i < hi; ++i) {
    const i64 v = hist[i];
    hist[i] = run;
    run += v;
  }
}

// stable scatter of one pass; same grid and block size as st_seg_radix_count
extern "C" __global__ void st_seg_radix_scatter(const i64* __restrict__ keys_in,
                                                const i64* __restrict__ pos_in,
                                                i64* __restrict__ keys_out,
                                                i64* __restrict__ pos_out,
                                                const i64* __restrict__ hist, long long n,
                                                int shift) {
  __shared__ i64 off[SEG_RADIX][SEG_MAX_THREADS];
  const int t = threadIdx.x, nt = blockDim.x;
  for (int d = 0; d < SEG_RADIX; ++d) off[d][t] = 0;
  const i64 base = ((i64)blockIdx.x * nt + t) * SEG_IPT;
  for (int j = 0; j < SEG_IPT; ++j) {
    const i64 i = base + j;
    if (i < n) ++off[seg_digit(keys_in[i], shift)][t];
  }
  __syncthreads();
  if (t < SEG_RADIX) {  // counts of the threads before -> this thread's first slot per digit
    i64 run = hist[(i64)t * gridDim.x + blockIdx.x];
    for (int u = 0; u < nt; ++u) {
      const i64 v = off[t][u];
      off[t][u] = run;
      run += v;
    }
  }
  __syncthreads();
  for (int j = 0; j < SEG_IPT; ++j) {
    const i64 i = base + j;
    if (i < n) {
      const i64 key = keys_in[i];
      const i64 p = off[seg_digit(key, shift)][t]++;
      keys_out[p] = key;
      pos_out[p] = pos_in[i];
    }
  }
}

// pieces of runs inside each chunk (see the top of the file)
extern "C" __global__ void st_seg_sum_chunks(T* out, const T* vals,
                                             const i64* __restrict__ skeys,
                                             const i64* __restrict__ spos,
                                             A* __restrict__ head, A* __restrict__ tail,
                                             long long n, long long k, long long pre,
                                             long long post, long long chunk,
                                             long long nchunks) {
  SEG_LOOP(w, pre * nchunks * post) {
    const i64 q = w % post, r = w / post;
    const i64 c = r % nchunks, p = r / nchunks;
    const i64 s0 = c * chunk;
    const i64 s1 = s0 + chunk < n ? s0 + chunk : n;
    const i64 slot = (p * nchunks + c) * post + q;
    i64 s = s0;
    while (s < s1) {
      const i64 key = skeys[s];
      if (key >= k) break;  // dropped indices sort last
      const bool starts = s == 0 || skeys[s - 1] != key;
      T* dst = out + (p * k + key) * post + q;
      A acc = starts ? (A)SEG_LOAD(*dst) : (A)0;
      i64 e = s;
      do {
        acc += (A)SEG_LOAD(vals[(p * n + spos[e]) * post + q]);
        ++e;
      } while (e < s1 && skeys[e] == key);
      const bool ends = e == n || skeys[e] != key;
      if (starts && ends) {
        *dst = SEG_STORE(acc);
      } else if (starts) {
        tail[slot] = acc;  // the run goes on in the next chunk
      } else {
        head[slot] = acc;  // the run came from the previous chunk
      }
      s = e;
    }
  }
}

// runs that cross chunk boundaries: tail of their first chunk + heads of the next, in order
extern "C" __global__ void st_seg_sum_merge(T* out, const i64* __restrict__ skeys,
                                            const A* __restrict__ head,
                                            const A* __restrict__ tail, long long n,
                                            long long k, long long pre, long long post,
                                            long long chunk, long long nchunks) {
  const i64 bounds = nchunks - 1;
  SEG_LOOP(w, pre * bounds * post) {
    const i64 q = w % post, r = w / post;
    const i64 c = r % bounds, p = r / bounds;
    const i64 last = (c + 1) * chunk - 1;  // chunk c is not the final one: last + 1 < n
    const i64 key = skeys[last];
    if (key >= k || skeys[last + 1] != key) continue;   // no run crosses this boundary
    if (c > 0 && skeys[c * chunk - 1] == key) continue;  // it started in an earlier chunk
    A acc = tail[(p * nchunks + c) * post + q];
    for (i64 cc = c + 1; cc < nchunks; ++cc) {
      acc += head[(p * nchunks + cc) * post + q];
      const i64 next = (cc + 1) * chunk;
      if (next >= n || skeys[next] != key) break;
    }
    out[(p * k + key) * post + q] = SEG_STORE(acc);
  }
}
