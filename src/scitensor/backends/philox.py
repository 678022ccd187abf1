"""Philox4x32-10 counter-based random numbers, vectorised over an array module (NumPy/CuPy).

The same (seed, offset) gives the same bits on every device: the CUDA backend's kernel
(``kernels/random.cu``) implements the identical stream. Counter layout for block ``i`` of a
call: ``(i_lo, i_hi, offset_lo, offset_hi)``, key ``(seed_lo, seed_hi)``; each block yields
four 32-bit words, consumed in order.
"""

from __future__ import annotations

import numpy as np

M0, M1 = 0xD2511F53, 0xCD9E8D57
W0, W1 = 0x9E3779B9, 0xBB67AE85
MASK32 = 0xFFFFFFFF


def philox_words(xp, n_words: int, seed: int, offset: int):
    """``n_words`` uint32 words of the stream at (``seed``, ``offset``)."""
    n_blocks = (n_words + 3) // 4
    i = xp.arange(n_blocks, dtype=np.uint64)
    c0 = (i & MASK32).astype(np.uint64)
    c1 = (i >> np.uint64(32)).astype(np.uint64)
    c2 = xp.full(n_blocks, offset & MASK32, dtype=np.uint64)
    c3 = xp.full(n_blocks, (offset >> 32) & MASK32, dtype=np.uint64)
    k0, k1 = seed & MASK32, (seed >> 32) & MASK32
    m0, m1, mask = np.uint64(M0), np.uint64(M1), np.uint64(MASK32)
    s32 = np.uint64(32)
    for _ in range(10):
        p0 = c0 * m0
        p1 = c2 * m1
        n0 = (p1 >> s32) ^ c1 ^ np.uint64(k0)
        n2 = (p0 >> s32) ^ c3 ^ np.uint64(k1)
        c0, c1, c2, c3 = n0, p1 & mask, n2, p0 & mask
        k0 = (k0 + W0) & MASK32
        k1 = (k1 + W1) & MASK32
    out = xp.stack([c0, c1, c2, c3], axis=1).reshape(-1)[:n_words]
    return out.astype(np.uint32)


def uniform_from_words(xp, words, np_dtype):
    """U[0, 1): 24 random bits per float32 value, 53 (two words) per float64 value."""
    if np_dtype == np.float64:
        w = words.astype(np.uint64)
        hi = w[0::2] >> np.uint64(5)  # 27 bits
        lo = w[1::2] >> np.uint64(6)  # 26 bits
        return (hi * 67108864.0 + lo) * (1.0 / 9007199254740992.0)
    return ((words >> np.uint32(8)).astype(np.float32) * np.float32(1.0 / 16777216.0))


def words_needed(n: int, np_dtype) -> int:
    return 2 * n if np_dtype == np.float64 else n
