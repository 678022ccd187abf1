// 2-D pooling over contiguous NCHW arrays, forward and backward, for one dtype chosen at
// compile time with -DST_DTYPE=<n>: 0 float16, 1 bfloat16, 2 float32 (math in float32).
//
// Semantics match backends/xp_pooling.py bit for bit where the summation order allows:
// max pooling keeps the first maximum in window order (row-major), NaN counts as largest
// (the first NaN wins), and records the window position (i * kw + j) as uint8 (or int32 for
// windows of more than 256 positions); padding never wins and never receives gradient.
// Backward kernels gather (one thread per input element, summing the outputs whose window
// holds it in ascending output order): no atomics, no zero-fill pass, deterministic.
//
// Host contract (backends/cuda/pooling.py): every element count < 2^30, so indices are int;
// fast paths get the alignment they state.
#include "float_io.cuh"

__device__ __forceinline__ float st_neg_inf() { return __int_as_float(0xff800000); }

// the max-pooling update (bk < 0: nothing read yet): the first real element, then strictly
// greater values win; a first NaN wins over numbers. Padding is never offered.
__device__ __forceinline__ void st_max_update(float& best, int& bk, bool& best_nan, float v,
                                              int k) {
  if (bk < 0 || v > best || (v != v && !best_nan)) {
    best = v;
    bk = k;
    best_nan = v != v;
  }
}

// ---- max pooling, any geometry: one thread per output ------------------------------------
template <typename A>
__device__ __forceinline__ void max_fwd_generic(const T* __restrict__ x, T* __restrict__ y,
                                                A* __restrict__ arg, int planes, int H, int W,
                                                int OH, int OW, int kh, int kw, int sh, int sw,
                                                int ph, int pw, int dh, int dw) {
  const int total = planes * OH * OW;
  ST_GRID_LOOP(idx, total) {
    const int ow = idx % OW, t = idx / OW, oh = t % OH, plane = t / OH;
    const T* __restrict__ xp = x + (long long)plane * H * W;
    const int h0 = oh * sh - ph, w0 = ow * sw - pw;
    float best = st_neg_inf();
    int bk = -1;
    bool best_nan = false;
    for (int i = 0; i < kh; ++i) {
      const int h = h0 + i * dh;
      if (h < 0 || h >= H) continue;
      for (int j = 0; j < kw; ++j) {
        const int w = w0 + j * dw;
        if (w < 0 || w >= W) continue;
        st_max_update(best, bk, best_nan, LOAD(xp[h * W + w]), i * kw + j);
      }
    }
    y[idx] = STORE(best);  // a window of padding only (possible with dilation): -inf
    if (arg) arg[idx] = (A)(bk < 0 ? 0 : bk);
  }
}

#define MAX_FWD_ARGS                                                                        \
  const T *__restrict__ x, T *__restrict__ y, void *__restrict__ arg, int planes, int H,   \
      int W, int OH, int OW, int kh, int kw, int sh, int sw, int ph, int pw, int dh, int dw
#define MAX_FWD_PASS x, y, planes, H, W, OH, OW, kh, kw, sh, sw, ph, pw, dh, dw

extern "C" __global__ void st_max_pool2d_fwd_u8(MAX_FWD_ARGS) {
  max_fwd_generic<unsigned char>(x, y, (unsigned char*)arg, planes, H, W, OH, OW, kh, kw, sh,
                                 sw, ph, pw, dh, dw);
}
extern "C" __global__ void st_max_pool2d_fwd_i32(MAX_FWD_ARGS) {
  max_fwd_generic<int>(x, y, (int*)arg, planes, H, W, OH, OW, kh, kw, sh, sw, ph, pw, dh, dw);
}

// ---- max pooling 3x3, stride 2, padding 1 (the ResNet stem): 4 outputs per thread --------
// Needs W % 8 == 0, W == 2 * OW, 16-byte aligned x. Per window row, the thread's 4 windows
// read input columns 8q-1 .. 8q+7: one 32 (float32) or 16 (16-bit) byte vector plus one
// scalar shared with the left neighbour.
extern "C" __global__ void st_max_pool2d_k3s2p1_fwd(const T* __restrict__ x,
                                                    T* __restrict__ y,
                                                    unsigned char* __restrict__ arg,
                                                    int planes, int H, int W, int OH,
                                                    int OW) {
  const int QW = OW >> 2;
  const int total = planes * OH * QW;
  ST_GRID_LOOP(idx, total) {
    const int q = idx % QW, t = idx / QW, oh = t % OH, plane = t / OH;
    const T* __restrict__ xp = x + (long long)plane * H * W;
    const int c0 = q * 8;
    float best[4];
    int bk[4];
    bool bn[4];
#pragma unroll
    for (int o = 0; o < 4; ++o) {
      best[o] = st_neg_inf();
      bk[o] = -1;
      bn[o] = false;
    }
#pragma unroll
    for (int i = 0; i < 3; ++i) {
      const int h = 2 * oh - 1 + i;
      if (h < 0 || h >= H) continue;
      const T* __restrict__ row = xp + h * W;
      float v[9];
      v[0] = c0 > 0 ? LOAD(row[c0 - 1]) : st_neg_inf();
      st_load8(row + c0, v + 1);
#pragma unroll
      for (int o = 0; o < 4; ++o) {
#pragma unroll
        for (int j = 0; j < 3; ++j) {
          if (o == 0 && j == 0 && c0 == 0) continue;  // column -1 is padding
          st_max_update(best[o], bk[o], bn[o], v[2 * o + j], i * 3 + j);
        }
      }
    }
    st_store4(y + 4 * idx, best);
    if (arg) {
      reinterpret_cast<unsigned int*>(arg)[idx] =
          (unsigned int)max(bk[0], 0) | ((unsigned int)max(bk[1], 0) << 8) |
          ((unsigned int)max(bk[2], 0) << 16) | ((unsigned int)max(bk[3], 0) << 24);
    }
  }
}

// ---- 2x2 stride 2, no padding, max (mode 0) or average (mode 1): 4 outputs per thread ----
// Needs W % 8 == 0, W == 2 * OW, H >= 2 * OH, 16-byte aligned x. Every window is whole.
extern "C" __global__ void st_pool2d_k2s2_fwd(const T* __restrict__ x, T* __restrict__ y,
                                              unsigned char* __restrict__ arg, int planes,
                                              int H, int W, int OH, int OW, int mode,
                                              float divisor) {
  const int QW = OW >> 2;
  const int total = planes * OH * QW;
  ST_GRID_LOOP(idx, total) {
    const int q = idx % QW, t = idx / QW, oh = t % OH, plane = t / OH;
    const T* __restrict__ r0 = x + (long long)plane * H * W + (2 * oh) * W + q * 8;
    float a[8], b[8], out[4];
    st_load8(r0, a);
    st_load8(r0 + W, b);
    if (mode == 0) {
      unsigned int packed = 0;
#pragma unroll
      for (int o = 0; o < 4; ++o) {
        float best = st_neg_inf();
        int bk = -1;
        bool bn = false;
        st_max_update(best, bk, bn, a[2 * o], 0);
        st_max_update(best, bk, bn, a[2 * o + 1], 1);
        st_max_update(best, bk, bn, b[2 * o], 2);
        st_max_update(best, bk, bn, b[2 * o + 1], 3);
        out[o] = best;
        packed |= (unsigned int)bk << (8 * o);  // whole windows: bk >= 0
      }
      if (arg) reinterpret_cast<unsigned int*>(arg)[idx] = packed;
    } else {
#pragma unroll
      for (int o = 0; o < 4; ++o) out[o] = (((a[2 * o] + a[2 * o + 1]) + b[2 * o]) + b[2 * o + 1]) / divisor;
    }
    st_store4(y + 4 * idx, out);
  }
}

// ---- 2x2 stride 2, float32: 4 input columns (2 outputs) per thread -----------------------
// The 8-column kernel above reads 2 x 16 bytes per row per thread, so a warp's first load
// instruction touches every other 16-byte half of 1 KiB (and the second the rest): twice
// the L1 wavefronts of a contiguous 512-byte read. Here a warp's load of each row is one
// contiguous run of 16-byte vectors and its store one run of 8-byte pairs.
// Needs W % 4 == 0, W == 2 * OW, H >= 2 * OH, 16-byte aligned x; arg (max mode) gets 2 bytes.
#if ST_DTYPE == 2
extern "C" __global__ void st_pool2d_k2s2_fwd_f32q(const float* __restrict__ x,
                                                   float* __restrict__ y,
                                                   unsigned char* __restrict__ arg, int planes,
                                                   int H, int W, int OH, int OW, int mode,
                                                   float divisor) {
  const int QW = OW >> 1;
  const int total = planes * OH * QW;
  ST_GRID_LOOP(idx, total) {
    const int q = idx % QW, t = idx / QW, oh = t % OH, plane = t / OH;
    const float* __restrict__ r0 = x + (long long)plane * H * W + (2 * oh) * W + q * 4;
    const float4 a = __ldg(reinterpret_cast<const float4*>(r0));
    const float4 b = __ldg(reinterpret_cast<const float4*>(r0 + W));
    float2 out;
    if (mode == 0) {
      float best0 = st_neg_inf(), best1 = st_neg_inf();
      int bk0 = -1, bk1 = -1;
      bool bn0 = false, bn1 = false;
      st_max_update(best0, bk0, bn0, a.x, 0);
      st_max_update(best0, bk0, bn0, a.y, 1);
      st_max_update(best0, bk0, bn0, b.x, 2);
      st_max_update(best0, bk0, bn0, b.y, 3);
      st_max_update(best1, bk1, bn1, a.z, 0);
      st_max_update(best1, bk1, bn1, a.w, 1);
      st_max_update(best1, bk1, bn1, b.z, 2);
      st_max_update(best1, bk1, bn1, b.w, 3);
      out = make_float2(best0, best1);
      if (arg)  // whole windows: bk >= 0
        reinterpret_cast<unsigned short*>(arg)[idx] = (unsigned short)(bk0 | (bk1 << 8));
    } else {
      out = make_float2((((a.x + a.y) + b.x) + b.y) / divisor,
                        (((a.z + a.w) + b.z) + b.w) / divisor);
    }
    reinterpret_cast<float2*>(y)[idx] = out;
  }
}
#endif

// ---- max pooling backward, any geometry: one thread per input element --------------------
template <typename A>
__device__ __forceinline__ void max_bwd_generic(const T* __restrict__ g,
                                                const A* __restrict__ arg,
                                                T* __restrict__ dx, int planes, int H, int W,
                                                int OH, int OW, int kh, int kw, int sh, int sw,
                                                int ph, int pw, int dh, int dw) {
  const int total = planes * H * W;
  const int eh = (kh - 1) * dh, ew = (kw - 1) * dw;
  ST_GRID_LOOP(idx, total) {
    const int w = idx % W, t = idx / W, h = t % H, plane = t / H;
    const int hp = h + ph, wp = w + pw;
    const int oh0 = hp <= eh ? 0 : (hp - eh - 1) / sh + 1;
    const int oh1 = min(hp / sh, OH - 1);
    const int ow0 = wp <= ew ? 0 : (wp - ew - 1) / sw + 1;
    const int ow1 = min(wp / sw, OW - 1);
    const int base = plane * OH * OW;
    float acc = 0.f;
    for (int oh = oh0; oh <= oh1; ++oh) {
      const int di = hp - oh * sh;
      if (di % dh) continue;
      for (int ow = ow0; ow <= ow1; ++ow) {
        const int dj = wp - ow * sw;
        if (dj % dw) continue;
        const int o = base + oh * OW + ow;
        if ((int)arg[o] == (di / dh) * kw + dj / dw) acc += LOAD(g[o]);
      }
    }
    dx[idx] = STORE(acc);
  }
}

#define MAX_BWD_ARGS                                                                        \
  const T *__restrict__ g, const void *__restrict__ arg, T *__restrict__ dx, int planes,   \
      int H, int W, int OH, int OW, int kh, int kw, int sh, int sw, int ph, int pw, int dh, \
      int dw

extern "C" __global__ void st_max_pool2d_bwd_u8(MAX_BWD_ARGS) {
  max_bwd_generic<unsigned char>(g, (const unsigned char*)arg, dx, planes, H, W, OH, OW, kh,
                                 kw, sh, sw, ph, pw, dh, dw);
}
extern "C" __global__ void st_max_pool2d_bwd_i32(MAX_BWD_ARGS) {
  max_bwd_generic<int>(g, (const int*)arg, dx, planes, H, W, OH, OW, kh, kw, sh, sw, ph, pw,
                       dh, dw);
}

// ---- max pooling 3x3 s2 p1 backward: 4 input columns per thread (needs W % 4 == 0) -------
// Input columns 4r..4r+3 lie in the windows of output columns 2r, 2r+1, 2r+2.
extern "C" __global__ void st_max_pool2d_k3s2p1_bwd(const T* __restrict__ g,
                                                    const unsigned char* __restrict__ arg,
                                                    T* __restrict__ dx, int planes, int H,
                                                    int W, int OH, int OW) {
  const int QW = W >> 2;
  const int total = planes * H * QW;
  ST_GRID_LOOP(idx, total) {
    const int r = idx % QW, t = idx / QW, h = t % H, plane = t / H;
    float acc[4] = {0.f, 0.f, 0.f, 0.f};
    const int oh1 = min((h + 1) >> 1, OH - 1);
    for (int oh = h >> 1; oh <= oh1; ++oh) {
      const int i = h + 1 - 2 * oh;  // kernel row holding input row h
      const int base = (plane * OH + oh) * OW;
#pragma unroll
      for (int m = 0; m < 3; ++m) {
        const int ow = 2 * r + m;
        if (ow >= OW) break;
        const int a = arg[base + ow];
        const float gv = LOAD(g[base + ow]);
#pragma unroll
        for (int j = 0; j < 3; ++j) {
          const int c = 2 * m - 1 + j;  // input column 2*ow - 1 + j, relative to 4r
          if (c >= 0 && c < 4 && a == i * 3 + j) acc[c] += gv;
        }
      }
    }
    st_store4(dx + 4 * idx, acc);
  }
}

// ---- 2x2 stride 2 backward, max (mode 0) or average (mode 1): 4 input columns per thread --
// Needs W % 4 == 0; rows >= 2*OH and columns >= 2*OW (odd sizes) get zero.
extern "C" __global__ void st_pool2d_k2s2_bwd(const T* __restrict__ g,
                                              const unsigned char* __restrict__ arg,
                                              T* __restrict__ dx, int planes, int H, int W,
                                              int OH, int OW, int mode, float divisor) {
  const int QW = W >> 2;
  const int total = planes * H * QW;
  ST_GRID_LOOP(idx, total) {
    const int r = idx % QW, t = idx / QW, h = t % H, plane = t / H;
    float out[4] = {0.f, 0.f, 0.f, 0.f};
    const int oh = h >> 1;
    if (oh < OH) {
      const int base = (plane * OH + oh) * OW;
#pragma unroll
      for (int m = 0; m < 2; ++m) {
        const int ow = 2 * r + m;
        if (ow >= OW) break;
        const float gv = LOAD(g[base + ow]);
        if (mode == 0) {
          const int a = arg[base + ow];
          const int k0 = (h & 1) * 2;
          out[2 * m] = a == k0 ? gv : 0.f;
          out[2 * m + 1] = a == k0 + 1 ? gv : 0.f;
        } else {
          out[2 * m] = out[2 * m + 1] = gv / divisor;
        }
      }
    }
    st_store4(dx + 4 * idx, out);
  }
}

// ---- average pooling, any geometry (PyTorch's divisor rules) -----------------------------
// count_include_pad: the window clipped to the padded input; else clipped to the input.
// divisor > 0 overrides both.
__device__ __forceinline__ float st_avg_divisor(int hs, int ws, int H, int W, int kh, int kw,
                                                int ph, int pw, int cip, int divisor) {
  if (divisor > 0) return (float)divisor;
  const int he = min(hs + kh, H + ph), we = min(ws + kw, W + pw);
  if (cip) return (float)((he - hs) * (we - ws));
  return (float)((min(he, H) - max(hs, 0)) * (min(we, W) - max(ws, 0)));
}

extern "C" __global__ void st_avg_pool2d_fwd(const T* __restrict__ x, T* __restrict__ y,
                                             int planes, int H, int W, int OH, int OW, int kh,
                                             int kw, int sh, int sw, int ph, int pw, int cip,
                                             int divisor) {
  const int total = planes * OH * OW;
  ST_GRID_LOOP(idx, total) {
    const int ow = idx % OW, t = idx / OW, oh = t % OH, plane = t / OH;
    const T* __restrict__ xp = x + (long long)plane * H * W;
    const int hs = oh * sh - ph, ws = ow * sw - pw;
    const int h0 = max(hs, 0), h1 = min(hs + kh, H), w0 = max(ws, 0), w1 = min(ws + kw, W);
    float acc = 0.f;
    for (int h = h0; h < h1; ++h)
      for (int w = w0; w < w1; ++w) acc += LOAD(xp[h * W + w]);
    y[idx] = STORE(acc / st_avg_divisor(hs, ws, H, W, kh, kw, ph, pw, cip, divisor));
  }
}

extern "C" __global__ void st_avg_pool2d_bwd(const T* __restrict__ g, T* __restrict__ dx,
                                             int planes, int H, int W, int OH, int OW, int kh,
                                             int kw, int sh, int sw, int ph, int pw, int cip,
                                             int divisor) {
  const int total = planes * H * W;
  ST_GRID_LOOP(idx, total) {
    const int w = idx % W, t = idx / W, h = t % H, plane = t / H;
    const int hp = h + ph, wp = w + pw;
    const int oh0 = hp < kh ? 0 : (hp - kh) / sh + 1, oh1 = min(hp / sh, OH - 1);
    const int ow0 = wp < kw ? 0 : (wp - kw) / sw + 1, ow1 = min(wp / sw, OW - 1);
    const T* __restrict__ gp = g + plane * OH * OW;
    float acc = 0.f;
    for (int oh = oh0; oh <= oh1; ++oh)
      for (int ow = ow0; ow <= ow1; ++ow)
        acc += LOAD(gp[oh * OW + ow]) /
               st_avg_divisor(oh * sh - ph, ow * sw - pw, H, W, kh, kw, ph, pw, cip, divisor);
    dx[idx] = STORE(acc);
  }
}

// ---- adaptive average pooling: windows floor(i*H/OH) .. ceil((i+1)*H/OH) -----------------
extern "C" __global__ void st_adaptive_avg_pool2d_fwd(const T* __restrict__ x,
                                                      T* __restrict__ y, int planes, int H,
                                                      int W, int OH, int OW) {
  const int total = planes * OH * OW;
  ST_GRID_LOOP(idx, total) {
    const int ow = idx % OW, t = idx / OW, oh = t % OH, plane = t / OH;
    const T* __restrict__ xp = x + (long long)plane * H * W;
    const int h0 = (oh * H) / OH, h1 = ((oh + 1) * H + OH - 1) / OH;
    const int w0 = (ow * W) / OW, w1 = ((ow + 1) * W + OW - 1) / OW;
    float acc = 0.f;
    for (int h = h0; h < h1; ++h)
      for (int w = w0; w < w1; ++w) acc += LOAD(xp[h * W + w]);
    y[idx] = STORE(acc / (float)((h1 - h0) * (w1 - w0)));
  }
}

// global average pooling (OH = OW = 1): one warp per plane; vec8: HW % 8 == 0 and x aligned
extern "C" __global__ void st_global_avg_pool2d_fwd(const T* __restrict__ x,
                                                    T* __restrict__ y, int planes, int HW,
                                                    int vec8) {
  const int lane = threadIdx.x & 31;
  const int warps = (gridDim.x * blockDim.x) >> 5;
  for (int plane = (blockIdx.x * blockDim.x + threadIdx.x) >> 5; plane < planes;
       plane += warps) {
    const T* __restrict__ xp = x + (long long)plane * HW;
    float acc = 0.f;
    if (vec8) {
      for (int k = lane * 8; k < HW; k += 256) {
        float v[8];
        st_load8(xp + k, v);
        acc += ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
      }
    } else {
      for (int k = lane; k < HW; k += 32) acc += LOAD(xp[k]);
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
    if (lane == 0) y[plane] = STORE(acc / (float)HW);
  }
}

extern "C" __global__ void st_adaptive_avg_pool2d_bwd(const T* __restrict__ g,
                                                      T* __restrict__ dx, int planes, int H,
                                                      int W, int OH, int OW) {
  const int total = planes * H * W;
  ST_GRID_LOOP(idx, total) {
    const int w = idx % W, t = idx / W, h = t % H, plane = t / H;
    // outputs whose window [floor(o*H/OH), ceil((o+1)*H/OH)) holds h
    const int oh0 = (h * OH) / H, oh1 = ((h + 1) * OH + H - 1) / H - 1;
    const int ow0 = (w * OW) / W, ow1 = ((w + 1) * OW + W - 1) / W - 1;
    const T* __restrict__ gp = g + plane * OH * OW;
    float acc = 0.f;
    for (int oh = oh0; oh <= oh1; ++oh) {
      const int rows = ((oh + 1) * H + OH - 1) / OH - (oh * H) / OH;
      for (int ow = ow0; ow <= ow1; ++ow) {
        const int cols = ((ow + 1) * W + OW - 1) / OW - (ow * W) / OW;
        acc += LOAD(gp[oh * OW + ow]) / (float)(rows * cols);
      }
    }
    dx[idx] = STORE(acc);
  }
}
