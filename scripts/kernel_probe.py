"""Run one benchmark case of our kernels once, inside a profiler range, for Nsight Compute.

Warm-up calls (compilation, autotuning) run outside the range; the measured call runs between
``cudaProfilerStart``/``cudaProfilerStop``, so ``ncu --profile-from-start off`` sees only it::

    ncu --profile-from-start off --section SpeedOfLight --section WarpStateStats \\
        python scripts/kernel_probe.py attention_fwd_d128

Cases: attention_{fwd,bwd}_d{64,128} (bf16, B4 H16 S4096 D128 / B8 H16 S2048 D64),
conv_c256_{fwd,bwd}_{fp32,bf16} (N128 C256 14x14 K256 3x3, pad 1).
"""

from __future__ import annotations

import sys

import numpy as np

import scitensor as st
from scitensor.nn import functional as F


def attention(d: int, backward: bool):
    b, h, s = (4, 16, 4096) if d == 128 else (8, 16, 2048)
    dev = st.Device("cuda")
    rng = np.random.default_rng(0)
    q, k, v = (st.tensor(rng.standard_normal((b, h, s, d), dtype=np.float32), device=dev)
               .astype(st.bfloat16).requires_grad_(backward) for _ in range(3))

    def run():
        o = F.scaled_dot_product_attention(q, k, v)
        if backward:
            o.backward(st.ones_like(o))
    return run


def conv(dtype: str, backward: bool):
    dev = st.Device("cuda")
    st.set_matmul_precision("tf32")
    rng = np.random.default_rng(0)
    dt = st.bfloat16 if dtype == "bf16" else st.float32
    x = st.tensor(rng.standard_normal((128, 256, 14, 14), dtype=np.float32), device=dev)
    w = st.tensor(0.05 * rng.standard_normal((256, 256, 3, 3), dtype=np.float32), device=dev)
    x, w = x.astype(dt).requires_grad_(backward), w.astype(dt).requires_grad_(backward)

    def run():
        y = F.conv2d(x, w, padding=1)
        if backward:
            y.backward(st.ones_like(y))
    return run


def main(argv=None) -> int:
    import cupy

    name = (argv or sys.argv[1:] or ["attention_fwd_d128"])[0]
    if name.startswith("attention"):
        _, pass_, d = name.split("_")
        run = attention(int(d[1:]), pass_ == "bwd")
    else:
        _, _, pass_, dtype = name.split("_")
        run = conv(dtype, pass_ == "bwd")
    for _ in range(3):
        run()
    cupy.cuda.runtime.deviceSynchronize()
    cupy.cuda.profiler.start()
    run()
    cupy.cuda.runtime.deviceSynchronize()
    cupy.cuda.profiler.stop()
    print(f"{name}: done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
