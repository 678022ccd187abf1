// Building blocks of the attention kernels (attention_fwd.cu, attention_bwd.cu): warp-level
// tensor-core tiles with inline PTX (NVRTC has no mma.h), cp.async tile loads, and one traits
// struct per element type that hides the fragment layouts.
//
// Fragment layouts relied on (PTX ISA, "Matrix fragments for mma.m16n8k16 / m16n8k8"), with
// lane = 0..31, g = lane / 4 (group), t = lane % 4 (thread in group):
//   m16n8k16 (.bf16/.f16), A 16x16 row-major, 4 x b32 each holding 2 elements (lo = lower col):
//     a0 = A[g][2t..2t+1]   a1 = A[g+8][2t..2t+1]   a2 = A[g][2t+8..]   a3 = A[g+8][2t+8..]
//   B 16x8 ("col"): b0 = B[2t..2t+1][g]   b1 = B[2t+8..2t+9][g]
//   C/D 16x8 fp32: c0,c1 = C[g][2t], C[g][2t+1]   c2,c3 = C[g+8][2t], C[g+8][2t+1]
//   m16n8k8 (.tf32): a0 = A[g][t]  a1 = A[g+8][t]  a2 = A[g][t+4]  a3 = A[g+8][t+4]
//                    b0 = B[t][g]  b1 = B[t+4][g];   C as above.
// ldmatrix.m8n8.x4: lanes 8i..8i+7 give the 8 row addresses (16 bytes each) of matrix i; lane l
// receives in r[i] the 32 bits at row l/4, bytes 4*(l%4) of matrix i; with .trans it receives
// the 16-bit elements M[2(l%4)][l/4] (low half) and M[2(l%4)+1][l/4] (high half).
// For fp32 data the same 16-byte rows hold 4 floats, so ldmatrix (non-trans) yields exactly
// the tf32 A and B fragments (float l%4 of row l/4).
//
// The C -> A reuse (P = softmax(S) feeds the next product from registers): for 16-bit types
// the accumulators of two adjacent n8 tiles are exactly one k16 A fragment. For tf32 they are
// not (C holds columns 2t, 2t+1; A wants t, t+4), so within each k8 block we permute k:
// A column t <-> key 2t and A column t+4 <-> key 2t+1, and every B operand paired with such an
// A is read with the same permutation (b0 = row 2t, b1 = row 2t+1). Operands loaded with
// ldmatrix in natural order (load_a with load_b_nk) are never mixed with permuted ones.
//
// Shared-memory tiles are row-major with 16 bytes of padding per row: row stride/16 is odd, so
// the 8 rows of every ldmatrix hit 8 distinct 16-byte bank groups, and for fp32 the stride is
// 4 (mod 32) words, so the scalar reads of rows 2t / 2t+1, column g are conflict-free.
//
// SCITENSOR_EMULATE: scripts/attention_emulator provides these primitives on the host (one
// thread per CUDA thread) so the kernels' index arithmetic can be tested without a GPU.
#pragma once

#ifndef SCITENSOR_EMULATE
typedef unsigned int sta_u32;
typedef unsigned short sta_u16;
#define STA_FN __device__ __forceinline__
#define STA_INF __int_as_float(0x7f800000)

STA_FN sta_u32 sta_smem(const void* p) { return (sta_u32)__cvta_generic_to_shared(p); }

STA_FN void sta_ldsm_x4(sta_u32 (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(sta_smem(p)) : "memory");
}
STA_FN void sta_ldsm_x4_t(sta_u32 (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(sta_smem(p)) : "memory");
}
// 16 bytes global -> shared, bypassing L1; zero-fills when !full (rows past the end)
STA_FN void sta_cp_async16(void* dst, const void* src, bool full) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(sta_smem(dst)),
               "l"(__cvta_generic_to_global(src)), "r"(full ? 16 : 0) : "memory");
}
STA_FN void sta_cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
STA_FN void sta_cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }

STA_FN void sta_mma_bf16(float (&c)[4], const sta_u32 (&a)[4], sta_u32 b0, sta_u32 b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
STA_FN void sta_mma_f16(float (&c)[4], const sta_u32 (&a)[4], sta_u32 b0, sta_u32 b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
STA_FN void sta_mma_tf32(float (&c)[4], const sta_u32 (&a)[4], sta_u32 b0, sta_u32 b1) {
  asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// cvt.rn.{bf16x2,f16x2}.f32 d, a, b puts a in the upper and b in the lower half
STA_FN sta_u32 sta_pack_bf16(float lo, float hi) {
  sta_u32 d;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(d) : "f"(hi), "f"(lo));
  return d;
}
STA_FN sta_u32 sta_pack_f16(float lo, float hi) {
  sta_u32 d;
  asm("cvt.rn.f16x2.f32 %0, %1, %2;\n" : "=r"(d) : "f"(hi), "f"(lo));
  return d;
}
STA_FN sta_u32 sta_tf32(float x) {
  sta_u32 d;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(d) : "f"(x));
  return d;
}
STA_FN float sta_bf16_to_f32(sta_u16 h) { return __uint_as_float(((sta_u32)h) << 16); }
STA_FN float sta_f16_to_f32(sta_u16 h) {
  float f;
  asm("cvt.f32.f16 %0, %1;\n" : "=f"(f) : "h"(h));
  return f;
}
STA_FN float sta_ex2(float x) {  // 2^x; ex2.approx(-inf) = +0
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}
STA_FN float sta_lg2(float x) { return __log2f(x); }
STA_FN float sta_shfl_xor(float v, int m) { return __shfl_xor_sync(0xffffffffu, v, m); }
STA_FN bool sta_any(bool p) { return __any_sync(0xffffffffu, p); }  // warp-uniform call
STA_FN void sta_red_add2(float* p, float a, float b) {  // p[0] += a, p[1] += b (8-byte aligned)
  asm volatile("red.global.add.v2.f32 [%0], {%1, %2};\n" ::"l"(__cvta_generic_to_global(p)),
               "f"(a), "f"(b) : "memory");
}
STA_FN float sta_as_float(sta_u32 x) { return __uint_as_float(x); }
STA_FN void sta_sync() { __syncthreads(); }
// trap when the launch gave less dynamic shared memory than the tiles need
STA_FN void sta_check_smem(unsigned bytes) {
  unsigned have;
  asm("mov.u32 %0, %%dynamic_smem_size;\n" : "=r"(have));
  if (have < bytes) __trap();
}
#endif  // SCITENSOR_EMULATE

#define STA_LOG2E 1.4426950408889634f
#define STA_LN2 0.6931471805599453f

struct __align__(16) sta_v16 { sta_u32 x[4]; };  // one 16-byte vector access

STA_FN int sta_imin(int a, int b) { return a < b ? a : b; }
STA_FN int sta_imax(int a, int b) { return a > b ? a : b; }

// Fragments: SPLIT = 2 holds a tf32 "big" part and the tf32 rounding of the remainder (3xTF32).
template <int SPLIT> struct StaFragA { sta_u32 x[SPLIT][4]; };
template <int SPLIT> struct StaFragB { sta_u32 x[SPLIT][2]; };

// Where the rows of one (batch, head) of a (B, heads, S, D) operand are: element strides of the
// batch, head and row axes (the head-dim axis is contiguous). Every q/k/v/out/dO/dQ/dK/dV operand
// takes one, so the kernels read and write views (e.g. heads of a packed (B, S, 3, H, D) qkv
// projection) without transposing copies. The host guarantees 16-byte aligned rows (data pointer
// and every stride * element size a multiple of 16), as the 16-byte accesses need.
struct StaRows {
  long long b, h;
  int s;  // row stride: the host keeps |s| * element size < 2^31 (32-bit row offsets)
  // first element of head h of batch b
  template <class T>
  STA_FN T* head(T* p, int bi, int hi) const { return p + bi * b + hi * h; }
  // first element of row r of that head
  template <class T>
  STA_FN T* row(T* p, int bi, int hi, int r) const { return head(p, bi, hi) + (long long)r * s; }
};

// Row-major tile load, global -> shared with cp.async: NROWS rows of D elements starting at
// global row row0 of src (rows `stride` elements apart; rows >= limit are zero-filled); shared
// rows are D*ES + 16 bytes apart. FIXED: thread tid copies chunk tid % CPR of rows tid / CPR,
// + RSTEP, + 2 RSTEP, ... in a fully unrolled loop; else the chunks c = tid, tid + NT, ... in a
// loop of unknown trip count. Which one needs fewer registers depends on the kernel (ptxas -v):
// the forward's default configurations do best with the first, the backward's with the second.
template <int ES, int D, int NROWS, int NT, bool FIXED>
STA_FN void sta_load_rows(unsigned char* dst, const void* src, int row0, int limit, int stride,
                          int tid) {
  constexpr int CPR = D * ES / 16;  // 16-byte chunks per row
  constexpr int ROW = D * ES + 16;
  const long long rs = (long long)stride * ES;  // row stride in bytes
  if constexpr (FIXED) {
    constexpr int RSTEP = NT / CPR;  // rows between one thread's chunks
    static_assert(NT % CPR == 0, "a thread's chunks must share their column");
    const int r = tid / CPR, ch = tid - r * CPR;
    const unsigned char* s = static_cast<const unsigned char*>(src) + ch * 16;
    unsigned char* d = dst + r * ROW + ch * 16;
#pragma unroll
    for (int i = 0; i < (NROWS + RSTEP - 1) / RSTEP; ++i) {
      if (NROWS % RSTEP == 0 || r + i * RSTEP < NROWS) {
        const int gr = row0 + r + i * RSTEP;
        const bool ok = gr < limit;
        sta_cp_async16(d + i * RSTEP * ROW, s + (ok ? gr : 0) * rs, ok);
      }
    }
  } else {
    const unsigned char* s = static_cast<const unsigned char*>(src);
#pragma unroll
    for (int c = tid; c < NROWS * CPR; c += NT) {
      const int r = c / CPR, ch = c - r * CPR;
      const int gr = row0 + r;
      const bool ok = gr < limit;
      sta_cp_async16(dst + r * ROW + ch * 16, s + (ok ? gr : 0) * rs + ch * 16, ok);
    }
  }
}

// ---- 16-bit types on m16n8k16 (BF16 = true: bfloat16, else float16) -----------------------
template <bool BF16>
struct StaHalf {
  typedef sta_u16 T;
  static constexpr int ES = 2, KSTEP = 16, SPLIT = 1;
  typedef StaFragA<1> FragA;
  typedef StaFragB<1> FragB;

  static STA_FN sta_u32 pack(float lo, float hi) {
    return BF16 ? sta_pack_bf16(lo, hi) : sta_pack_f16(lo, hi);
  }
  static STA_FN float to_float(T h) { return BF16 ? sta_bf16_to_f32(h) : sta_f16_to_f32(h); }
  static STA_FN void mma(float (&c)[4], const FragA& a, const FragB& b) {
    if (BF16) sta_mma_bf16(c, a.x[0], b.x[0][0], b.x[0][1]);
    else sta_mma_f16(c, a.x[0], b.x[0][0], b.x[0][1]);
  }
  // A rows row0..+15, k cols col0..+15 of a row-major [row][k] tile
  static STA_FN void load_a(FragA& a, const unsigned char* base, int row0, int col0, int stride) {
    const int l = threadIdx.x & 31;
    sta_ldsm_x4(a.x[0], base + (row0 + (l & 7) + ((l >> 3) & 1) * 8) * stride + col0 * 2 +
                            (l >> 4) * 16);
  }
  // B for n tiles n0..+7 and n0+8..+15 at k0..+15, from a [n][k] tile
  static STA_FN void load_b_nk(FragB (&b)[2], const unsigned char* base, int n0, int k0,
                               int stride) {
    const int l = threadIdx.x & 31;
    sta_u32 r[4];
    sta_ldsm_x4(r, base + (n0 + (l & 7) + (l >> 4) * 8) * stride + k0 * 2 + ((l >> 3) & 1) * 16);
    b[0].x[0][0] = r[0]; b[0].x[0][1] = r[1]; b[1].x[0][0] = r[2]; b[1].x[0][1] = r[3];
  }
  // B for n tiles n0.., n0+8.. at k0..+15, from a [k][n] tile (transposing load)
  static STA_FN void load_b_kn(FragB (&b)[2], const unsigned char* base, int k0, int n0,
                               int stride) {
    const int l = threadIdx.x & 31;
    sta_u32 r[4];
    sta_ldsm_x4_t(r, base + (k0 + (l & 7) + ((l >> 3) & 1) * 8) * stride + n0 * 2 + (l >> 4) * 16);
    b[0].x[0][0] = r[0]; b[0].x[0][1] = r[1]; b[1].x[0][0] = r[2]; b[1].x[0][1] = r[3];
  }
  // A (rows m0..+15, k k0..+15) from a [k][m] tile (transposing load)
  static STA_FN void load_a_kn(FragA& a, const unsigned char* base, int m0, int k0, int stride) {
    const int l = threadIdx.x & 31;
    sta_ldsm_x4_t(a.x[0], base + (k0 + (l & 7) + (l >> 4) * 8) * stride + (m0 + ((l >> 3) & 1) * 8) * 2);
  }
  // k step kk of a product whose A is the accumulator c (n8 tiles 2kk and 2kk+1)
  template <int N>
  static STA_FN void a_from_c(FragA& a, const float (&c)[N][4], int kk) {
    a.x[0][0] = pack(c[2 * kk][0], c[2 * kk][1]);
    a.x[0][1] = pack(c[2 * kk][2], c[2 * kk][3]);
    a.x[0][2] = pack(c[2 * kk + 1][0], c[2 * kk + 1][1]);
    a.x[0][3] = pack(c[2 * kk + 1][2], c[2 * kk + 1][3]);
  }
  static STA_FN void store2(T* p, float x, float y) { *reinterpret_cast<sta_u32*>(p) = pack(x, y); }
  static STA_FN void load8(const T* p, float (&x)[8]) {
    const sta_v16 v = *reinterpret_cast<const sta_v16*>(p);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      x[2 * i] = to_float((T)(v.x[i] & 0xffffu));
      x[2 * i + 1] = to_float((T)(v.x[i] >> 16));
    }
  }
  static STA_FN void store8(T* p, const float (&x)[8]) {
    sta_v16 v;
#pragma unroll
    for (int i = 0; i < 4; ++i) v.x[i] = pack(x[2 * i], x[2 * i + 1]);
    *reinterpret_cast<sta_v16*>(p) = v;
  }
};

// ---- float32 on m16n8k8 tf32 (SPLIT = 1: one tf32 product; 2: 3xTF32, near-fp32 accuracy) ---
template <int SPLIT_>
struct StaTf32 {
  typedef float T;
  static constexpr int ES = 4, KSTEP = 8, SPLIT = SPLIT_;
  typedef StaFragA<SPLIT_> FragA;
  typedef StaFragB<SPLIT_> FragB;

  // One product (SPLIT 1) hands the float32 bits to the tensor core as they are: mma .tf32
  // reads the top 19 bits (truncation, as Triton's "tf32" does); rounding with cvt.rna cost
  // one ALU instruction per operand element, and the ALU pipe, not the tensor pipe, bounded
  // the tf32 conv kernels (ncu, docs/kernels/conv.md). 3xTF32 keeps the rounded split: its
  // small part must be the exact remainder of the big one.
  static STA_FN void split(sta_u32* big, sta_u32* small, int i, float x) {
    if (SPLIT_ == 1) {
      big[i] = __float_as_uint(x);
      return;
    }
    const sta_u32 hi = sta_tf32(x);
    big[i] = hi;
    small[i] = sta_tf32(x - sta_as_float(hi));
  }
  static STA_FN void mma(float (&c)[4], const FragA& a, const FragB& b) {
    if (SPLIT_ == 2) {  // small terms first, the big product last
      sta_mma_tf32(c, a.x[SPLIT_ - 1], b.x[0][0], b.x[0][1]);
      sta_mma_tf32(c, a.x[0], b.x[SPLIT_ - 1][0], b.x[SPLIT_ - 1][1]);
    }
    sta_mma_tf32(c, a.x[0], b.x[0][0], b.x[0][1]);
  }
  static STA_FN void load_a(FragA& a, const unsigned char* base, int row0, int col0, int stride) {
    const int l = threadIdx.x & 31;
    sta_u32 r[4];
    sta_ldsm_x4(r, base + (row0 + (l & 7) + ((l >> 3) & 1) * 8) * stride + col0 * 4 + (l >> 4) * 16);
#pragma unroll
    for (int i = 0; i < 4; ++i) split(a.x[0], a.x[SPLIT_ - 1], i, sta_as_float(r[i]));
  }
  static STA_FN void load_b_nk(FragB (&b)[2], const unsigned char* base, int n0, int k0,
                               int stride) {
    const int l = threadIdx.x & 31;
    sta_u32 r[4];
    sta_ldsm_x4(r, base + (n0 + (l & 7) + (l >> 4) * 8) * stride + k0 * 4 + ((l >> 3) & 1) * 16);
#pragma unroll
    for (int i = 0; i < 4; ++i)
      split(b[i >> 1].x[0], b[i >> 1].x[SPLIT_ - 1], i & 1, sta_as_float(r[i]));
  }
  // permuted k (see the header comment): b0 <- row k0+2t, b1 <- row k0+2t+1, column n0+8j+g
  static STA_FN void load_b_kn(FragB (&b)[2], const unsigned char* base, int k0, int n0,
                               int stride) {
    const int l = threadIdx.x & 31, g = l >> 2, t = l & 3;
    const unsigned char* r0 = base + (k0 + 2 * t) * stride + (n0 + g) * 4;
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      split(b[j].x[0], b[j].x[SPLIT_ - 1], 0, *reinterpret_cast<const float*>(r0 + j * 32));
      split(b[j].x[0], b[j].x[SPLIT_ - 1], 1,
            *reinterpret_cast<const float*>(r0 + stride + j * 32));
    }
  }
  // permuted k: a0 = [k0+2t][m0+g], a1 = [k0+2t][m0+g+8], a2 = [k0+2t+1][m0+g], a3 = [..][m0+g+8]
  static STA_FN void load_a_kn(FragA& a, const unsigned char* base, int m0, int k0, int stride) {
    const int l = threadIdx.x & 31, g = l >> 2, t = l & 3;
    const unsigned char* r0 = base + (k0 + 2 * t) * stride + (m0 + g) * 4;
#pragma unroll
    for (int i = 0; i < 4; ++i)
      split(a.x[0], a.x[SPLIT_ - 1], i,
            *reinterpret_cast<const float*>(r0 + (i >> 1) * stride + (i & 1) * 32));
  }
  // permuted k: a0 = C[g][2t] = c0, a1 = C[g+8][2t] = c2, a2 = C[g][2t+1] = c1, a3 = c3
  template <int N>
  static STA_FN void a_from_c(FragA& a, const float (&c)[N][4], int kk) {
    split(a.x[0], a.x[SPLIT_ - 1], 0, c[kk][0]);
    split(a.x[0], a.x[SPLIT_ - 1], 1, c[kk][2]);
    split(a.x[0], a.x[SPLIT_ - 1], 2, c[kk][1]);
    split(a.x[0], a.x[SPLIT_ - 1], 3, c[kk][3]);
  }
  static STA_FN float to_float(T x) { return x; }
  static STA_FN void store2(T* p, float x, float y) {
    sta_u32* q = reinterpret_cast<sta_u32*>(p);
    q[0] = __float_as_uint(x);
    q[1] = __float_as_uint(y);
  }
  static STA_FN void load8(const T* p, float (&x)[8]) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const sta_v16 v = *reinterpret_cast<const sta_v16*>(p + 4 * h);
#pragma unroll
      for (int i = 0; i < 4; ++i) x[4 * h + i] = sta_as_float(v.x[i]);
    }
  }
  static STA_FN void store8(T* p, const float (&x)[8]) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      sta_v16 v;
#pragma unroll
      for (int i = 0; i < 4; ++i) v.x[i] = __float_as_uint(x[4 * h + i]);
      *reinterpret_cast<sta_v16*>(p + 4 * h) = v;
    }
  }
};

// ST_ATTN_TYPE selects the element type: 0 bfloat16, 1 float16, 2 float32 (tf32), 3 float32
// (3xTF32). The Python loader passes it with -D, together with the tile sizes.
#ifndef ST_ATTN_TYPE
#define ST_ATTN_TYPE 0
#endif
#if ST_ATTN_TYPE == 0
typedef StaHalf<true> StaTraits;
#elif ST_ATTN_TYPE == 1
typedef StaHalf<false> StaTraits;
#elif ST_ATTN_TYPE == 2
typedef StaTf32<1> StaTraits;
#else
typedef StaTf32<2> StaTraits;
#endif
#ifndef ST_ATTN_D
#define ST_ATTN_D 64
#endif
