"""Probe Hopper ``wgmma.mma_async`` operand layouts on an sm_90 GPU (bf16 in, fp32 accumulate).

Before the flash-attention forward is built on ``wgmma``, this checks every layout assumption
it rests on, one warpgroup (128 threads, one CTA) per launch, against float64 NumPy on the
bf16-rounded inputs. Every output buffer is NaN-poisoned before its launch. There are no spin
waits anywhere (the only waits are ``wgmma.wait_group`` and ``__syncthreads``), and a launch
that kills the CUDA context (a wrong descriptor can read out of range) is reported as FAIL and
the remaining cases are rerun in a fresh child process.

Variants (each prints one PASS/FAIL line per case with the max abs error):

1. ``ss_kmajor_sw128``: C[64xN] = A[64xK] @ B[NxK]^T, both operands K-major in shared memory
   with the 128-byte swizzle, N in {64, 128} (m64n64k16 / m64n128k16), K in {64, 128}.
2. ``ss_b_mnmajor_sw128``: C[64xN] = A[64x64] @ V[64xN], V stored keys x head-dim (N
   contiguous): B is MN-major (imm-trans-b = 1), 128-byte swizzle. Two encodings of LBO/SBO are
   tried (A: CUTLASS/ThunderKittens reading, B: the two swapped); the variant passes when one
   of them passes for every N, and the probe says which.
3. ``rs_a_regs``: A from registers ({a0,a1,a2,a3} per k-step, the mma.m16n8k16 A fragment per
   warp), B = V MN-major from shared memory with the encoding that passed in 2.
4. ``accum_layout``: the accumulator fragment mapping (below), checked register by register
   from a raw dump; if it is wrong the probe searches where each register's value really sits.
5. ``chain_qk_pv``: S = Q K^T (SS, K-major), P = bf16(S) packed from the S accumulators straight
   into A fragments, O = P V (RS, V MN-major), D in {64, 128}: the attention inner loop.

Run on the GPU machine (about 10-20 s, mostly compilation)::

    python scripts/wgmma_probe.py                 # exit code 0 only if every variant passes
    python scripts/wgmma_probe.py --compiler nvcc # force one compile route (nvrtc|rawmodule|nvcc)
    python scripts/wgmma_probe.py --dump-source /tmp/wgmma_probe.cu   # no GPU needed

Check the embedded source compiles without a GPU::

    python scripts/wgmma_probe.py --dump-source /tmp/p.cu && \\
        nvcc -gencode=arch=compute_90a,code=sm_90a -cubin -o /dev/null /tmp/p.cu

The block between ``BEGIN REUSABLE WGMMA HELPERS`` and ``END REUSABLE WGMMA HELPERS`` in the
source is meant to move into ``src/scitensor/backends/cuda/kernels/wgmma.cuh``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

M = 64  # wgmma M (one warpgroup)
THREADS = 128
SMEM_BYTES = 96 * 1024 + 1024  # generous: a wrong descriptor then reads garbage, not past the end
TOL = 1e-2  # max |diff| / max |ref|
NVRTC_OPTIONS = ("--gpu-architecture=sm_90a", "-std=c++17")
ACCUM_MAPPING = ("thread t = 32*w + lane (w = warp 0..3) holds, for j = 0..N/8-1: "
                 "d[4j+0] = C[r][c], d[4j+1] = C[r][c+1], d[4j+2] = C[r+8][c], "
                 "d[4j+3] = C[r+8][c+1], with r = 16*w + lane/4, c = 8*j + 2*(lane%4)")
A_FRAGMENT = ("A fragment per k-step (16 columns, k0 = 16*ks), thread t = 32*w + lane, "
              "r = 16*w + lane/4, c = k0 + 2*(lane%4): a0 = {A[r][c], A[r][c+1]}, "
              "a1 = {A[r+8][c], A[r+8][c+1]}, a2 = {A[r][c+8], A[r][c+9]}, "
              "a3 = {A[r+8][c+8], A[r+8][c+9]} (lower column in the low 16 bits); from S "
              "accumulators: a0..a3 = pack(s[8ks+0,1]), pack(s[8ks+2,3]), pack(s[8ks+4,5]), "
              "pack(s[8ks+6,7])")
MN_HYPOTHESES = {
    "A": "LBO = byte stride between 64-column MN blocks (k_rows*128), SBO = byte stride "
         "between 8-row K groups (1024) [CUTLASS make_gmma_desc<MN>, ThunderKittens]",
    "B": "swapped: LBO = 1024 (8-row K groups), SBO = k_rows*128 (64-column MN blocks)",
}

# --------------------------------------------------------------------------------------------
# CUDA source (generated: the wgmma wrappers have 32/64 accumulator operands each)
# --------------------------------------------------------------------------------------------

_HELPERS_HEAD = r"""
// ============================ BEGIN REUSABLE WGMMA HELPERS ==================================
// Hopper (sm_90a) warpgroup MMA helpers: bf16 operands, fp32 accumulators. No headers needed
// (NVRTC-safe). All wgmma instructions must be executed by all 128 threads of a warpgroup
// (4 consecutive warps starting at a warp index divisible by 4), convergent.
namespace wg {

// Shared-window byte address of a generic pointer into shared memory (what descriptors and
// ld/st.shared take). Same as __cvta_generic_to_shared, without the header.
__device__ __forceinline__ unsigned smem_addr(const void* p) {
  unsigned r;
  asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(r) : "l"(p));
  return r;
}

// ---- 128-byte swizzle ---------------------------------------------------------------------
// The layout TMA writes with CU_TENSOR_MAP_SWIZZLE_128B and wgmma reads with swizzle mode 1
// (CuTe Swizzle<3,4,3> on byte addresses: address bits [4,7) ^= bits [7,10)).
// A bf16 tile with `rows` rows and C columns (C a multiple of 64) is stored as C/64 blocks of
// 64 columns; block b starts at b * rows * 128 bytes and holds `rows` lines of 128 bytes
// (line r = row r's 64 elements). Within a line, the 16-byte chunk (8 elements) index q is
// stored at chunk position q ^ (r % 8). The tile base must be 1024-byte aligned (the hardware
// swizzles on absolute address bits, so this formula equals the hardware's only then).
// Returns the byte offset of element (r, c) from the tile base.
__device__ __forceinline__ unsigned sw128_offset(int r, int c, int rows) {
  return (unsigned)((c >> 6) * rows * 128 + r * 128 + ((((c & 63) >> 3) ^ (r & 7)) << 4) +
                    ((c & 7) << 1));
}

// ---- shared-memory matrix descriptor (64 bits, PTX ISA "Matrix Descriptor Format") --------
//   bits  0-13: start address        (shared-window byte address >> 4; 16-byte aligned)
//   bits 16-29: leading dim byte offset (LBO, bytes >> 4)
//   bits 32-45: stride dim byte offset  (SBO, bytes >> 4)
//   bits 49-51: matrix base offset   (0 when the swizzle pattern starts on a 1024-byte
//               boundary for 128B swizzle; we always keep tiles 1024-aligned, and k-steps
//               inside a 128-byte line leave address bits 7-9 alone, so it stays 0)
//   bits 62-63: swizzle mode         (0 none/interleave, 1 = 128B, 2 = 64B, 3 = 32B)
// All other bits are zero.
enum : unsigned { SWIZZLE_NONE = 0, SWIZZLE_128B = 1, SWIZZLE_64B = 2, SWIZZLE_32B = 3 };

__device__ __forceinline__ unsigned long long make_desc(unsigned saddr, unsigned lbo_bytes,
                                                        unsigned sbo_bytes, unsigned swizzle,
                                                        unsigned base_offset) {
  unsigned long long d = 0;
  d |= (unsigned long long)((saddr & 0x3FFFFu) >> 4);                 // bits  0-13
  d |= (unsigned long long)((lbo_bytes & 0x3FFFFu) >> 4) << 16;       // bits 16-29
  d |= (unsigned long long)((sbo_bytes & 0x3FFFFu) >> 4) << 32;       // bits 32-45
  d |= (unsigned long long)(base_offset & 0x7u) << 49;                // bits 49-51
  d |= (unsigned long long)(swizzle & 0x3u) << 62;                    // bits 62-63
  return d;
}

// K-major operand (rows = M or N, K contiguous), 128B swizzle, stored as sw128_offset says.
// Descriptor of k-step ks (16 K-elements = 32 bytes): the start address moves 32 bytes along
// the 128-byte line for ks % 4 and jumps to the next 64-column block every 4 steps.
// SBO = 1024 (8 rows x 128 B, the distance between 8-row core-matrix groups); LBO is unused
// for swizzled K-major layouts (set to 16 bytes, i.e. encoded 1, as CUTLASS assumes).
__device__ __forceinline__ unsigned long long desc_kmajor_sw128(unsigned tile_saddr, int rows,
                                                                int ks) {
  unsigned a = tile_saddr + (unsigned)((ks >> 2) * rows * 128 + (ks & 3) * 32);
  return make_desc(a, 16, 1024, SWIZZLE_128B, 0);
}

// MN-major operand (K rows, MN contiguous; e.g. V stored keys x head-dim for P.V), 128B
// swizzle, stored as sw128_offset(k, mn, k_rows) says. Descriptor of k-step ks (16 K rows =
// 2 groups of 8 lines = 2048 bytes): LBO = distance between 64-wide MN blocks
// (k_rows * 128), SBO = distance between 8-row K groups (1024). Use with imm-trans = 1.
__device__ __forceinline__ unsigned long long desc_mnmajor_sw128(unsigned tile_saddr,
                                                                 int k_rows, int ks) {
  return make_desc(tile_saddr + (unsigned)(ks * 16 * 128), (unsigned)(k_rows * 128), 1024,
                   SWIZZLE_128B, 0);
}

// ---- ordering -----------------------------------------------------------------------------
// Before the first wgmma of a batch, and whenever accumulator or A-fragment registers were
// written by ordinary instructions since the last wgmma.
__device__ __forceinline__ void fence() {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
// Close the batch of wgmma issued so far into one group.
__device__ __forceinline__ void commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
// Wait until at most N committed groups are still pending (N = 0: all done).
template <int N>
__device__ __forceinline__ void wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Ordinary (generic-proxy) stores to shared memory that wgmma (async proxy) will read: each
// writing thread runs this, then a barrier (__syncthreads) before the wgmma.
__device__ __forceinline__ void fence_proxy_async_smem() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
// Compiler-level fence on registers handed to / produced by async wgmma: keeps the compiler
// from moving reads/writes of them across wgmma.fence / wait_group (CUTLASS
// warpgroup_fence_operand). Call on accumulators before fence() and after wait<>().
template <int NR>
__device__ __forceinline__ void fence_operands(float (&d)[NR]) {
#pragma unroll
  for (int i = 0; i < NR; ++i) asm volatile("" : "+f"(d[i])::"memory");
}
template <int NR>
__device__ __forceinline__ void fence_operands(unsigned (&a)[NR]) {
#pragma unroll
  for (int i = 0; i < NR; ++i) asm volatile("" : "+r"(a[i])::"memory");
}

// Two fp32 -> one .b32 of two bf16 (round to nearest even): `lo` in bits 0-15 (the lower
// column of an A fragment pair), `hi` in bits 16-31. cvt.rn.bf16x2.f32 d, a, b puts a in the
// upper half, b in the lower half.
__device__ __forceinline__ unsigned pack_bf16x2(float lo, float hi) {
  unsigned r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}

// ---- accumulator layout (m64nNk16, fp32 D, NR = N/2 registers per thread) ------------------
// thread t = 32*w + lane: r = 16*w + lane/4, for j in [0, N/8): c = 8*j + 2*(lane%4),
//   d[4j+0] = D[r][c], d[4j+1] = D[r][c+1], d[4j+2] = D[r+8][c], d[4j+3] = D[r+8][c+1].
// A-fragment layout (RS form, per k-step of 16): same per-warp layout as mma.m16n8k16's A:
//   c = 2*(lane%4): a0 = A[r][c..c+1], a1 = A[r+8][c..c+1], a2 = A[r][c+8..c+9],
//   a3 = A[r+8][c+8..c+9]; hence P's fragment for k-step ks is the S accumulators
//   s[8ks+0..7] packed in pairs (a0 = s0,s1  a1 = s2,s3  a2 = s4,s5  a3 = s6,s7).

// ---- wgmma wrappers ------------------------------------------------------------------------
// SS: D(64xN fp32) (+)= A(64x16 bf16, smem desc) * B(16xN bf16, smem desc).
// RS: D(64xN fp32) (+)= A(64x16 bf16, 4 registers per thread) * B(16xN bf16, smem desc).
// TRANS_A / TRANS_B (imm-trans): 0 = operand K-major in smem, 1 = MN-major ("transposed").
// scale_d = 0: D = A*B (the old D is ignored); 1: D += A*B. imm-scale-a/b are fixed at 1.
"""

_HELPERS_TAIL = r"""
// Overloads on the accumulator array size pick the N of the instruction.
template <int TRANS_A, int TRANS_B>
__device__ __forceinline__ void mma_ss(float (&d)[32], unsigned long long da,
                                       unsigned long long db, int scale_d) {
  mma_ss_m64n64k16<TRANS_A, TRANS_B>(d, da, db, scale_d);
}
template <int TRANS_A, int TRANS_B>
__device__ __forceinline__ void mma_ss(float (&d)[64], unsigned long long da,
                                       unsigned long long db, int scale_d) {
  mma_ss_m64n128k16<TRANS_A, TRANS_B>(d, da, db, scale_d);
}
template <int TRANS_B>
__device__ __forceinline__ void mma_rs(float (&d)[32], const unsigned (&a)[4],
                                       unsigned long long db, int scale_d) {
  mma_rs_m64n64k16<TRANS_B>(d, a, db, scale_d);
}
template <int TRANS_B>
__device__ __forceinline__ void mma_rs(float (&d)[64], const unsigned (&a)[4],
                                       unsigned long long db, int scale_d) {
  mma_rs_m64n128k16<TRANS_B>(d, a, db, scale_d);
}

}  // namespace wg
// ============================= END REUSABLE WGMMA HELPERS ===================================
"""

_PROBE_KERNELS = r"""
// ------------------------------- probe kernels (not reusable) -------------------------------
extern __shared__ __align__(16) unsigned char g_probe_smem[];

// 1024-byte aligned start of dynamic shared memory (we over-allocate by 1024 bytes).
__device__ __forceinline__ unsigned char* probe_smem(unsigned& saddr) {
  unsigned s = wg::smem_addr(g_probe_smem);
  unsigned pad = (1024u - (s & 1023u)) & 1023u;
  saddr = s + pad;
  return g_probe_smem + pad;
}

// Plain threads copy a row-major rows x cols bf16 matrix into the swizzled layout.
__device__ __forceinline__ void fill_sw128(unsigned char* tile, const unsigned short* g, int rows,
                                           int cols) {
  for (int i = threadIdx.x; i < rows * cols; i += blockDim.x) {
    int r = i / cols, c = i % cols;
    *reinterpret_cast<unsigned short*>(tile + wg::sw128_offset(r, c, rows)) = g[i];
  }
}

// Accumulators -> row-major C (64 x 2*NR) through the assumed mapping, plus a raw dump
// raw[t][i] = d[i] so the host can check the mapping register by register.
template <int NR>
__device__ __forceinline__ void store_accum(const float (&d)[NR], float* C, float* raw) {
  const int N = 2 * NR;
  int t = threadIdx.x, w = t >> 5, lane = t & 31;
  int r = 16 * w + (lane >> 2);
#pragma unroll
  for (int j = 0; j < N / 8; ++j) {
    int c = 8 * j + 2 * (lane & 3);
    C[r * N + c] = d[4 * j + 0];
    C[r * N + c + 1] = d[4 * j + 1];
    C[(r + 8) * N + c] = d[4 * j + 2];
    C[(r + 8) * N + c + 1] = d[4 * j + 3];
  }
#pragma unroll
  for (int i = 0; i < NR; ++i) raw[t * NR + i] = d[i];
}

// MN-major descriptor under hypothesis mn_hyp (0: helper = encoding A, 1: LBO/SBO swapped).
__device__ __forceinline__ unsigned long long probe_desc_mn(unsigned tile, int k_rows, int ks,
                                                            int mn_hyp) {
  if (mn_hyp == 0) return wg::desc_mnmajor_sw128(tile, k_rows, ks);
  return wg::make_desc(tile + (unsigned)(ks * 16 * 128), 1024, (unsigned)(k_rows * 128),
                       wg::SWIZZLE_128B, 0);
}

// C[64xN] = A[64xK] * op(B). B_MN = 0: B is N x K row-major (K-major, C = A B^T).
// B_MN = 1: B is K x N row-major (MN-major, C = A B, imm-trans-b = 1).
template <int N, int K, int B_MN>
__device__ __forceinline__ void probe_ss(const unsigned short* A, const unsigned short* B,
                                         float* C, float* raw, unsigned long long* desc_out,
                                         int mn_hyp) {
  unsigned base;
  unsigned char* sm = probe_smem(base);
  unsigned char* sA = sm;                      // 64 x K, K-major
  unsigned char* sB = sm + M_ROWS * K * 2;     // N x K (K-major) or K x N (MN-major)
  unsigned aA = base, aB = base + M_ROWS * K * 2;
  fill_sw128(sA, A, M_ROWS, K);
  if (B_MN) fill_sw128(sB, B, K, N); else fill_sw128(sB, B, N, K);
  wg::fence_proxy_async_smem();
  __syncthreads();

  float d[N / 2];
#pragma unroll
  for (int i = 0; i < N / 2; ++i) d[i] = 0.f;
  wg::fence_operands(d);
  wg::fence();
#pragma unroll
  for (int ks = 0; ks < K / 16; ++ks) {
    unsigned long long da = wg::desc_kmajor_sw128(aA, M_ROWS, ks);
    unsigned long long db = B_MN ? probe_desc_mn(aB, K, ks, mn_hyp)
                                 : wg::desc_kmajor_sw128(aB, N, ks);
    wg::mma_ss<0, B_MN>(d, da, db, ks > 0 ? 1 : 0);
  }
  wg::commit();
  wg::wait<0>();
  wg::fence_operands(d);
  store_accum(d, C, raw);
  if (threadIdx.x == 0) {
    for (int ks = 0; ks < K / 16; ++ks) {
      desc_out[2 * ks] = wg::desc_kmajor_sw128(aA, M_ROWS, ks);
      desc_out[2 * ks + 1] = B_MN ? probe_desc_mn(aB, K, ks, mn_hyp)
                                  : wg::desc_kmajor_sw128(aB, N, ks);
    }
  }
}

// C[64xN] = A[64x64] * V[64xN]; A from registers (built from global per the A fragment
// layout), V MN-major in smem.
template <int N>
__device__ __forceinline__ void probe_rs(const unsigned short* A, const unsigned short* V,
                                         float* C, float* raw, unsigned long long* desc_out,
                                         int mn_hyp) {
  const int K = 64;
  unsigned base;
  unsigned char* sV = probe_smem(base);
  fill_sw128(sV, V, K, N);
  wg::fence_proxy_async_smem();
  __syncthreads();

  int t = threadIdx.x, w = t >> 5, lane = t & 31;
  int r = 16 * w + (lane >> 2);
  unsigned a[K / 16][4];
#pragma unroll
  for (int ks = 0; ks < K / 16; ++ks) {
    int c = 16 * ks + 2 * (lane & 3);
    a[ks][0] = (unsigned)A[r * K + c] | ((unsigned)A[r * K + c + 1] << 16);
    a[ks][1] = (unsigned)A[(r + 8) * K + c] | ((unsigned)A[(r + 8) * K + c + 1] << 16);
    a[ks][2] = (unsigned)A[r * K + c + 8] | ((unsigned)A[r * K + c + 9] << 16);
    a[ks][3] = (unsigned)A[(r + 8) * K + c + 8] | ((unsigned)A[(r + 8) * K + c + 9] << 16);
  }
  float d[N / 2];
#pragma unroll
  for (int i = 0; i < N / 2; ++i) d[i] = 0.f;
#pragma unroll
  for (int ks = 0; ks < K / 16; ++ks) wg::fence_operands(a[ks]);
  wg::fence_operands(d);
  wg::fence();
#pragma unroll
  for (int ks = 0; ks < K / 16; ++ks) {
    wg::mma_rs<1>(d, a[ks], probe_desc_mn(base, K, ks, mn_hyp), ks > 0 ? 1 : 0);
  }
  wg::commit();
  wg::wait<0>();
  wg::fence_operands(d);
  store_accum(d, C, raw);
  if (threadIdx.x == 0) {
    for (int ks = 0; ks < K / 16; ++ks) {
      desc_out[2 * ks] = 0ull;
      desc_out[2 * ks + 1] = probe_desc_mn(base, K, ks, mn_hyp);
    }
  }
}

// Attention inner step without softmax: S = Q Kt^T (Q 64 x D, Kt 64 keys x D, both K-major),
// P = bf16(S) from the S accumulators, O = P V (V 64 keys x D, MN-major), O is 64 x D.
template <int D>
__device__ __forceinline__ void probe_chain(const unsigned short* Q, const unsigned short* Kt,
                                            const unsigned short* V, float* O, float* raw,
                                            unsigned long long* desc_out, int mn_hyp) {
  const int KEYS = 64;
  unsigned base;
  unsigned char* sm = probe_smem(base);
  const unsigned tile = M_ROWS * D * 2;  // bytes of each 64 x D tile (a multiple of 1024)
  fill_sw128(sm, Q, M_ROWS, D);
  fill_sw128(sm + tile, Kt, KEYS, D);
  fill_sw128(sm + 2 * tile, V, KEYS, D);
  wg::fence_proxy_async_smem();
  __syncthreads();
  unsigned aQ = base, aK = base + tile, aV = base + 2 * tile;

  float s[KEYS / 2];
#pragma unroll
  for (int i = 0; i < KEYS / 2; ++i) s[i] = 0.f;
  wg::fence_operands(s);
  wg::fence();
#pragma unroll
  for (int ks = 0; ks < D / 16; ++ks) {
    wg::mma_ss<0, 0>(s, wg::desc_kmajor_sw128(aQ, M_ROWS, ks),
                     wg::desc_kmajor_sw128(aK, KEYS, ks), ks > 0 ? 1 : 0);
  }
  wg::commit();
  wg::wait<0>();
  wg::fence_operands(s);

  unsigned p[KEYS / 16][4];
#pragma unroll
  for (int kb = 0; kb < KEYS / 16; ++kb) {
    p[kb][0] = wg::pack_bf16x2(s[8 * kb + 0], s[8 * kb + 1]);
    p[kb][1] = wg::pack_bf16x2(s[8 * kb + 2], s[8 * kb + 3]);
    p[kb][2] = wg::pack_bf16x2(s[8 * kb + 4], s[8 * kb + 5]);
    p[kb][3] = wg::pack_bf16x2(s[8 * kb + 6], s[8 * kb + 7]);
  }
  float o[D / 2];
#pragma unroll
  for (int i = 0; i < D / 2; ++i) o[i] = 0.f;
#pragma unroll
  for (int kb = 0; kb < KEYS / 16; ++kb) wg::fence_operands(p[kb]);
  wg::fence_operands(o);
  wg::fence();
#pragma unroll
  for (int kb = 0; kb < KEYS / 16; ++kb) {
    wg::mma_rs<1>(o, p[kb], probe_desc_mn(aV, KEYS, kb, mn_hyp), kb > 0 ? 1 : 0);
  }
  wg::commit();
  wg::wait<0>();
  wg::fence_operands(o);
  store_accum(o, O, raw);
  if (threadIdx.x == 0) {
    for (int kb = 0; kb < KEYS / 16; ++kb) {
      desc_out[2 * kb] = 0ull;
      desc_out[2 * kb + 1] = probe_desc_mn(aV, KEYS, kb, mn_hyp);
    }
  }
}
"""

# kernel name -> (kind, N, K): kind in ss_k (B K-major), ss_mn (B MN-major), rs, chain (N=K=D)
KERNELS = {
    **{f"probe_ss_k_n{n}_k{k}": ("ss_k", n, k) for n in (64, 128) for k in (64, 128)},
    **{f"probe_ss_mn_n{n}_k64": ("ss_mn", n, 64) for n in (64, 128)},
    **{f"probe_rs_n{n}_k64": ("rs", n, 64) for n in (64, 128)},
    **{f"probe_chain_d{d}": ("chain", d, d) for d in (64, 128)},
}


def _operand_list(first: int, count: int, per_line: int = 8) -> str:
    """``"%first, %first+1, ..."`` split into C string-literal lines for the asm template."""
    regs = [f"%{i}" for i in range(first, first + count)]
    lines = [", ".join(regs[i:i + per_line]) for i in range(0, count, per_line)]
    return '"\n      "'.join(line + (", " if i + 1 < len(lines) else "")
                            for i, line in enumerate(lines))


def _wrapper(form: str, n: int) -> str:
    """One wgmma wrapper: ``form`` "ss" or "rs", N = ``n`` (accumulators "+f", n/2 of them)."""
    nr = n // 2
    outs = ",\n        ".join(", ".join(f'"+f"(d[{i}])' for i in range(j, min(j + 6, nr)))
                              for j in range(0, nr, 6))
    if form == "ss":
        head = ("template <int TRANS_A, int TRANS_B>\n"
                f"__device__ __forceinline__ void mma_ss_m64n{n}k16(float (&d)[{nr}], "
                "unsigned long long desc_a,\n"
                "                                                 unsigned long long desc_b, "
                "int scale_d) {")
        operands = f"%{nr}, %{nr + 1}, p, 1, 1, %{nr + 3}, %{nr + 4}"
        scale = nr + 2
        ins = '"l"(desc_a), "l"(desc_b), "r"(scale_d), "n"(TRANS_A), "n"(TRANS_B)'
    else:
        head = ("template <int TRANS_B>\n"
                f"__device__ __forceinline__ void mma_rs_m64n{n}k16(float (&d)[{nr}], "
                "const unsigned (&a)[4],\n"
                "                                                 unsigned long long desc_b, "
                "int scale_d) {")
        operands = (f"{{%{nr}, %{nr + 1}, %{nr + 2}, %{nr + 3}}}, %{nr + 4}, p, 1, 1, "
                    f"%{nr + 6}")
        scale = nr + 5
        ins = ('"r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(scale_d), '
               '"n"(TRANS_B)')
    return (f"{head}\n"
            "  asm volatile(\n"
            '      "{\\n"\n'
            '      ".reg .pred p;\\n"\n'
            f'      "setp.ne.b32 p, %{scale}, 0;\\n"\n'
            f'      "wgmma.mma_async.sync.aligned.m64n{n}k16.f32.bf16.bf16 "\n'
            f'      "{{{_operand_list(0, nr)}}}, "\n'
            f'      "{operands};\\n"\n'
            '      "}\\n"\n'
            f"      : {outs}\n"
            f"      : {ins}\n"
            '      : "memory");\n'
            "}\n")


def _entry_points() -> str:
    sig = ("const unsigned short* __restrict__ a, const unsigned short* __restrict__ b, "
           "const unsigned short* __restrict__ v, float* c, float* raw, "
           "unsigned long long* desc, int mn_hyp")
    out = []
    for name, (kind, n, k) in KERNELS.items():
        if kind == "ss_k":
            body = f"probe_ss<{n}, {k}, 0>(a, b, c, raw, desc, mn_hyp);"
        elif kind == "ss_mn":
            body = f"probe_ss<{n}, {k}, 1>(a, b, c, raw, desc, mn_hyp);"
        elif kind == "rs":
            body = f"probe_rs<{n}>(a, b, c, raw, desc, mn_hyp);"
        else:
            body = f"probe_chain<{n}>(a, b, v, c, raw, desc, mn_hyp);"
        out.append(f'extern "C" __global__ void __launch_bounds__(128, 1)\n{name}({sig}) {{\n'
                   f"  {body}\n}}\n")
    return "\n".join(out)


def build_source() -> str:
    """The whole CUDA source: reusable helpers, then probe kernels and their entry points."""
    wrappers = "\n".join(_wrapper(form, n) for form in ("ss", "rs") for n in (64, 128))
    return ("// Generated by scripts/wgmma_probe.py (sm_90a only: wgmma).\n"
            "#define M_ROWS 64\n"
            + _HELPERS_HEAD + "\n" + wrappers + _HELPERS_TAIL + _PROBE_KERNELS + "\n"
            + _entry_points())


SOURCE = build_source()

# --------------------------------------------------------------------------------------------
# compilation (three routes, tried in order under --compiler auto)
# --------------------------------------------------------------------------------------------


def _load_cubin(cubin: bytes):
    import cupy

    tmp = tempfile.mkdtemp(prefix="wgmma_probe_")
    path = os.path.join(tmp, "wgmma_probe.cubin")
    with open(path, "wb") as f:
        f.write(cubin)
    mod = cupy.RawModule(path=path)
    kernels = {name: mod.get_function(name) for name in KERNELS}
    shutil.rmtree(tmp, ignore_errors=True)
    return mod, kernels


def _via_nvrtc():
    """NVRTC straight from CuPy's bindings with ``--gpu-architecture=sm_90a`` -> CUBIN."""
    from cupy_backends.cuda.libs import nvrtc

    prog = nvrtc.createProgram(SOURCE, "wgmma_probe.cu", [], [])
    try:
        try:
            nvrtc.compileProgram(prog, list(NVRTC_OPTIONS))
        except nvrtc.NVRTCError:
            raise RuntimeError("NVRTC log:\n" + str(nvrtc.getProgramLog(prog))) from None
        cubin = nvrtc.getCUBIN(prog)
    finally:
        nvrtc.destroyProgram(prog)
    if isinstance(cubin, str):
        cubin = cubin.encode("latin-1")
    return _load_cubin(bytes(cubin))


def _via_rawmodule():
    """``cupy.RawModule(code=...)`` with -arch=sm_90a (CuPy may append its own -arch)."""
    import cupy

    mod = cupy.RawModule(code=SOURCE, options=("-arch=sm_90a", "-std=c++17"), backend="nvrtc")
    return mod, {name: mod.get_function(name) for name in KERNELS}


def _via_nvcc():
    """nvcc -gencode=arch=compute_90a,code=sm_90a -cubin, then load the file."""
    nvcc = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
    with tempfile.TemporaryDirectory(prefix="wgmma_probe_") as tmp:
        cu, cubin = os.path.join(tmp, "wgmma_probe.cu"), os.path.join(tmp, "wgmma_probe.cubin")
        with open(cu, "w") as f:
            f.write(SOURCE)
        cmd = [nvcc, "-gencode=arch=compute_90a,code=sm_90a", "-cubin", "-std=c++17",
               "-o", cubin, cu]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stdout}\n{res.stderr}")
        with open(cubin, "rb") as f:
            data = f.read()
    return _load_cubin(data)


ROUTES = {"nvrtc": _via_nvrtc, "rawmodule": _via_rawmodule, "nvcc": _via_nvcc}


def compile_module(route: str):
    """Compile and load; returns (module, {kernel name: RawKernel}, route used)."""
    order = list(ROUTES) if route == "auto" else [route]
    for name in order:
        t0 = time.perf_counter()
        try:
            mod, kernels = ROUTES[name]()
        except Exception as e:  # report and try the next route
            msg = str(e)
            print(f"[compile] route {name} failed: {type(e).__name__}: {msg[-3000:]}",
                  flush=True)
            continue
        print(f"[compile] route {name} ok ({time.perf_counter() - t0:.1f} s)", flush=True)
        for k in kernels.values():
            k.max_dynamic_shared_size_bytes = SMEM_BYTES
        return mod, kernels, name
    raise RuntimeError("every compile route failed (see the [compile] lines above)")


# --------------------------------------------------------------------------------------------
# inputs, references, checks (pure NumPy)
# --------------------------------------------------------------------------------------------


def bf16(x: np.ndarray):
    """Round to bf16; returns (raw uint16 bits, the rounded values as float64)."""
    import ml_dtypes

    b = np.ascontiguousarray(np.asarray(x, np.float32).astype(ml_dtypes.bfloat16))
    return b.view(np.uint16), b.astype(np.float64)


def make_case(kind: str, n: int, k: int, rng: np.random.Generator):
    """Inputs (uint16 arrays a, b, v) and the float64 reference (64 x n) for one kernel."""
    if kind == "ss_k":       # C = A B^T, B is n x k
        a16, a = bf16(rng.standard_normal((M, k)))
        b16, b = bf16(rng.standard_normal((n, k)))
        return (a16, b16, None), a @ b.T
    if kind in ("ss_mn", "rs"):  # C = A V, V is k x n
        a16, a = bf16(rng.standard_normal((M, k)))
        v16, v = bf16(rng.standard_normal((k, n)))
        return (a16, v16, None), a @ v
    if kind == "chain":      # O = bf16(fp32(Q K^T)) V, D = n, 64 keys
        q16, q = bf16(0.5 * rng.standard_normal((M, n)))
        k16, kk = bf16(0.5 * rng.standard_normal((64, n)))
        v16, v = bf16(rng.standard_normal((64, n)))
        _, p = bf16((q @ kk.T).astype(np.float32))
        return (q16, k16, v16), p @ v
    raise ValueError(kind)


def assumed_rc(t: int, i: int) -> tuple[int, int]:
    """(row, col) of accumulator register d[i] of thread t under the assumed mapping."""
    w, lane = divmod(t, 32)
    j, e = divmod(i, 4)
    return 16 * w + lane // 4 + 8 * (e // 2), 8 * j + 2 * (lane % 4) + (e % 2)


def compare(got: np.ndarray, ref: np.ndarray) -> dict:
    """Max abs error, relative error (to max |ref|), pass flag and the first mismatches."""
    got = np.asarray(got, np.float64)
    scale = float(np.abs(ref).max()) or 1.0
    finite = np.isfinite(got)
    err = np.where(finite, np.abs(got - ref), np.inf)
    bad = err > TOL * scale
    idx = np.argwhere(bad)[:3]
    return {
        "max_abs": float(err.max()),
        "rel": float(err.max() / scale),
        "ok": bool(not bad.any()),
        "bad_frac": float(bad.mean()),
        "nonfinite": int((~finite).sum()),
        "first_bad": [(int(r), int(c), float(got[r, c]), float(ref[r, c])) for r, c in idx],
    }


def describe_desc(desc: np.ndarray, nsteps: int) -> str:
    """Decode the descriptors the kernel used (desc[2ks] = A, desc[2ks+1] = B)."""
    def fields(x: int) -> dict:
        return {"start": (x & 0x3FFF) << 4, "lbo": ((x >> 16) & 0x3FFF) << 4,
                "sbo": ((x >> 32) & 0x3FFF) << 4, "base": (x >> 49) & 7, "swz": (x >> 62) & 3}

    parts = []
    for which, off in (("A", 0), ("B", 1)):
        vals = [int(desc[2 * ks + off]) for ks in range(nsteps)]
        if vals[0] == 0:
            continue  # A from registers
        f0 = [fields(v) for v in vals]
        steps = ",".join(str(f["start"] - f0[0]["start"]) for f in f0)
        parts.append(f"{which}: 0x{vals[0]:016x} start=0x{f0[0]['start']:05x} "
                     f"LBO={f0[0]['lbo']} SBO={f0[0]['sbo']} base_off={f0[0]['base']} "
                     f"swizzle(bits62-63)={f0[0]['swz']} start+=[{steps}]B")
    return "; ".join(parts)


def discover_mapping(raw: np.ndarray, ref: np.ndarray) -> str:
    """Where each raw accumulator value really sits in ref (nearest element), when unique."""
    scale = float(np.abs(ref).max()) or 1.0
    flat = ref.ravel()
    lines, found = [], 0
    for t in (0, 1, 4, 5, 32, 64, 96):
        locs = []
        for i in range(min(8, raw.shape[1])):
            if not np.isfinite(raw[t, i]):
                locs.append("nan")
                continue
            j = int(np.argmin(np.abs(flat - raw[t, i])))
            if abs(flat[j] - raw[t, i]) <= 1e-5 * scale:
                found += 1
                locs.append(f"{divmod(j, ref.shape[1])}")
            else:
                locs.append("?")
        lines.append(f"    t={t:3d} d[0..7] -> " + " ".join(locs))
    total = sum(min(8, raw.shape[1]) for _ in lines)
    if found < total // 2:
        return (f"    only {found}/{total} sampled registers match a C element: the products "
                "are wrong, so the mapping cannot be read off")
    return f"    {found}/{total} sampled registers located:\n" + "\n".join(lines)


# --------------------------------------------------------------------------------------------
# cases
# --------------------------------------------------------------------------------------------


def case_list() -> list[tuple[str, str]]:
    """(case id, group) in run order."""
    cases = [(f"ss_kmajor_sw128/n{n}_k{k}", "ss_kmajor_sw128")
             for n in (64, 128) for k in (64, 128)]
    cases += [(f"accum_layout/n{n}", "accum_layout") for n in (64, 128)]
    cases += [(f"ss_b_mnmajor_sw128/{h}/n{n}", "ss_b_mnmajor_sw128")
              for h in MN_HYPOTHESES for n in (64, 128)]
    cases += [(f"rs_a_regs/n{n}", "rs_a_regs") for n in (64, 128)]
    cases += [(f"chain_qk_pv/d{d}", "chain_qk_pv") for d in (64, 128)]
    return cases


def mn_choice(results: list[dict], forced: str | None) -> str:
    """The MN-major encoding to use downstream: the first that passed every N; else A."""
    if forced:
        return forced
    for h in MN_HYPOTHESES:
        rows = [r for r in results if r["case"].startswith(f"ss_b_mnmajor_sw128/{h}/")]
        if len(rows) == 2 and all(r["ok"] for r in rows):
            return h
    return "A"


def launch(kernels: dict, name: str, inputs, n: int, mn_hyp: int):
    """Run one probe kernel on NaN-poisoned outputs; returns (C, raw, desc) on the host."""
    import cupy

    a, b, v = (cupy.asarray(x) if x is not None else cupy.zeros(8, cupy.uint16) for x in inputs)
    c = cupy.full((M, n), cupy.nan, dtype=cupy.float32)
    raw = cupy.full((THREADS, n // 2), cupy.nan, dtype=cupy.float32)
    desc = cupy.zeros(16, dtype=cupy.uint64)
    kernels[name]((1,), (THREADS,), (a, b, v, c, raw, desc, np.int32(mn_hyp)),
                  shared_mem=SMEM_BYTES)
    cupy.cuda.runtime.deviceSynchronize()
    return cupy.asnumpy(c), cupy.asnumpy(raw), cupy.asnumpy(desc)


def run_case(case: str, kernels: dict, rng: np.random.Generator, results: list[dict],
             forced_hyp: str | None) -> dict:
    group, *rest = case.split("/")
    hyp = "A"
    note = ""
    if group == "ss_kmajor_sw128":
        n, k = (int(x[1:]) for x in rest[0].split("_"))
        name = f"probe_ss_k_n{n}_k{k}"
    elif group == "accum_layout":
        n, k = int(rest[0][1:]), 64
        name = f"probe_ss_k_n{n}_k64"
    elif group == "ss_b_mnmajor_sw128":
        hyp, n, k = rest[0], int(rest[1][1:]), 64
        name = f"probe_ss_mn_n{n}_k64"
    elif group == "rs_a_regs":
        hyp, n, k = mn_choice(results, forced_hyp), int(rest[0][1:]), 64
        name = f"probe_rs_n{n}_k64"
        note = f"V encoding {hyp}"
    else:
        hyp, n = mn_choice(results, forced_hyp), int(rest[0][1:])
        k = n
        name = f"probe_chain_d{n}"
        note = f"V encoding {hyp}"
    kind, _, _ = KERNELS[name]
    inputs, ref = make_case(kind, n, k, rng)
    c, raw, desc = launch(kernels, name, inputs, n, list(MN_HYPOTHESES).index(hyp))
    if group == "accum_layout":
        got = np.full_like(ref, np.nan)
        for t in range(THREADS):
            for i in range(n // 2):
                got[assumed_rc(t, i)] = raw[t, i]
        res = compare(got, ref)
        if not res["ok"]:
            note = "actual positions of some registers (row, col):\n" + discover_mapping(raw, ref)
    else:
        res = compare(c, ref)
    nsteps = (64 if kind == "chain" else k) // 16
    res.update(case=case, group=group, kernel=name, desc=describe_desc(desc, nsteps), note=note)
    return res


def print_result(r: dict) -> None:
    status = "PASS" if r["ok"] else "FAIL"
    line = f"{status} {r['case']:<28} max_abs_err={r['max_abs']:.3e} rel={r['rel']:.2e}"
    if "error" in r:
        line = f"FAIL {r['case']:<28} {r['error']}"
    elif not r["ok"]:
        line += f" bad={100 * r['bad_frac']:.1f}% nonfinite={r['nonfinite']}"
        for rr, cc, g, e in r["first_bad"]:
            line += f" | C[{rr},{cc}] got {g:.4g} want {e:.4g}"
    if r.get("note"):
        line += f"  ({r['note']})" if "\n" not in r["note"] else "\n" + r["note"]
    print(line, flush=True)
    if r.get("desc"):
        print(f"     desc {r['desc']}", flush=True)


def run_cases(cases: list[str], args, depth: int) -> list[dict]:
    """Run ``cases`` in this process; after a context-killing error rerun the rest in a child."""
    import cupy

    _, kernels, route = compile_module(args.compiler)
    rng = np.random.default_rng(args.seed)
    results: list[dict] = []
    for pos, case in enumerate(cases):
        try:
            r = run_case(case, kernels, rng, results, args.mn_hyp)
        except Exception as e:
            r = {"case": case, "group": case.split("/")[0], "ok": False, "max_abs": float("inf"),
                 "rel": float("inf"), "error": f"{type(e).__name__}: {e}"}
            print_result(r)
            results.append(r)
            try:  # is the context still usable?
                cupy.cuda.runtime.deviceSynchronize()
                cupy.zeros(4).sum().item()
                continue
            except Exception:
                pass
            rest = cases[pos + 1:]
            if rest and depth < 6:
                results += run_child(rest, args, depth + 1, results)
            elif rest:
                for c in rest:
                    results.append({"case": c, "group": c.split("/")[0], "ok": False,
                                    "max_abs": float("inf"), "rel": float("inf"),
                                    "error": "not run (CUDA context lost)"})
            break
        results.append(r)
        print_result(r)
    for r in results:
        r.setdefault("route", route)
    return results


def run_child(cases: list[str], args, depth: int, so_far: list[dict]) -> list[dict]:
    """Rerun ``cases`` in a fresh process (fresh CUDA context) and collect its results."""
    hyp = args.mn_hyp
    if hyp is None and any(r["case"].startswith("ss_b_mnmajor_sw128/B/") for r in so_far):
        hyp = mn_choice(so_far, None)  # both encodings seen here: fix the choice
    print(f"[recover] CUDA context lost; rerunning {len(cases)} case(s) in a child process",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="wgmma_probe_") as tmp:
        out = os.path.join(tmp, "results.json")
        cmd = [sys.executable, os.path.abspath(__file__), "--only", ",".join(cases),
               "--json-out", out, "--compiler", args.compiler, "--seed", str(args.seed + depth),
               "--depth", str(depth)]
        if hyp:
            cmd += ["--mn-hyp", hyp]
        try:
            subprocess.run(cmd, timeout=300, check=False)
            with open(out) as f:
                return json.load(f)
        except Exception as e:
            return [{"case": c, "group": c.split("/")[0], "ok": False, "max_abs": float("inf"),
                     "rel": float("inf"), "error": f"child failed: {type(e).__name__}: {e}"}
                    for c in cases]


def summarize(results: list[dict]) -> bool:
    """Print the per-variant verdicts; True when every variant passed."""
    groups = ["ss_kmajor_sw128", "accum_layout", "ss_b_mnmajor_sw128", "rs_a_regs",
              "chain_qk_pv"]
    print("\n=== summary ===")
    print(f"{'variant':<22} {'verdict':<8} {'cases':>9}  {'worst rel err':>13}  detail")
    all_ok = True
    for g in groups:
        rows = [r for r in results if r["group"] == g]
        if g == "ss_b_mnmajor_sw128":
            passing = [h for h in MN_HYPOTHESES
                       if (hr := [r for r in rows if r["case"].startswith(f"{g}/{h}/")])
                       and len(hr) == 2 and all(r["ok"] for r in hr)]
            ok = bool(passing)
            use = [r for r in rows if passing and r["case"].startswith(f"{g}/{passing[0]}/")]
            detail = (f"encoding {passing[0]} passes: {MN_HYPOTHESES[passing[0]]}"
                      if passing else "no LBO/SBO encoding passed")
            if len(passing) > 1:
                detail += " (both encodings pass?! N=128 should tell them apart)"
            rows_for_err = use or rows
        else:
            ok = bool(rows) and all(r["ok"] for r in rows)
            rows_for_err = rows
            detail = ""
            if g == "accum_layout":
                detail = "mapping confirmed" if ok else "mapping differs (see above)"
            elif g in ("rs_a_regs", "chain_qk_pv") and rows:
                detail = rows[0].get("note", "")
        all_ok &= ok
        worst = max((r["rel"] for r in rows_for_err), default=float("inf"))
        npass = sum(bool(r["ok"]) for r in rows)
        print(f"{g:<22} {'PASS' if ok else 'FAIL':<8} {npass:>4}/{len(rows):<4}  {worst:>13.2e}"
              f"  {detail}")
    print(f"\nassumed accumulator mapping: {ACCUM_MAPPING}")
    print(f"assumed A-fragment mapping: {A_FRAGMENT}")
    print(f"tolerance: max|diff| <= {TOL} * max|ref| (float64 reference on bf16-rounded inputs)")
    print(f"\nOVERALL: {'PASS' if all_ok else 'FAIL'}")
    return all_ok


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dump-source", metavar="PATH", help="write the CUDA source and exit")
    p.add_argument("--compiler", choices=["auto", *ROUTES], default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", help="comma-separated case ids (internal: crash recovery)")
    p.add_argument("--json-out", help="write results as JSON (internal: crash recovery)")
    p.add_argument("--mn-hyp", choices=list(MN_HYPOTHESES), default=None,
                   help="force the V (MN-major) encoding used by rs_a_regs / chain_qk_pv")
    p.add_argument("--depth", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.dump_source:
        with open(args.dump_source, "w") as f:
            f.write(SOURCE)
        print(f"wrote {args.dump_source} ({len(SOURCE)} chars)")
        return 0

    t0 = time.perf_counter()
    cases = [c for c, _ in case_list()]
    if args.only:
        wanted = args.only.split(",")
        cases = [c for c in cases if c in wanted]
    if args.depth == 0:
        import cupy

        dev = cupy.cuda.Device()
        props = cupy.cuda.runtime.getDeviceProperties(dev.id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        print(f"device: {name} (sm_{dev.compute_capability}), cupy {cupy.__version__}")
        if dev.compute_capability != "90":
            print("wgmma needs an sm_90 GPU (H100/H200); this is not one")
            return 2
    try:
        results = run_cases(cases, args, args.depth)
    except RuntimeError as e:  # nothing compiled
        print(f"FAIL compile: {e}")
        return 1
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(results, f)
        return 0
    ok = summarize(results)
    print(f"total {time.perf_counter() - t0:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
