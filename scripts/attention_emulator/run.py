"""Check the CUDA attention kernels without a GPU, on the host emulator (emu_runtime.h).

Builds ``harness.cpp`` with g++ for each kernel configuration (element type, head dim, tile
sizes), runs forward + backward on random inputs with lengths off the tiles, causal and not,
grouped-query attention, and compares out / dq / dk / dv with a float64 reference by
normwise relative error. A wrong fragment layout, ldmatrix address, mask or loop bound shows
up as an error of order 1 (or NaN from the 0xFF-poisoned shared memory and outputs).

Operands are laid out dense, or as strided views (``--layouts``): q, k, v heads of one packed
``(B, S, N, D)`` projection with the output and gradients written into sequence-major buffers,
as ``nn.MultiHeadAttention`` passes them, and every operand in its own axis order.
Their buffers have gaps (a spare head or row) that hold NaN in the inputs and must keep their
poison in the outputs (``gaps written`` fails the case).

Usage:
    python scripts/attention_emulator/run.py                # the default sweep
    python scripts/attention_emulator/run.py --quick        # one small case per config
    python scripts/attention_emulator/run.py --asan         # AddressSanitizer build (slower)
    EMU_CP_EAGER=1 python scripts/attention_emulator/run.py # copies land at issue (WAR races)
    EMU_LAZY=1 python scripts/attention_emulator/run.py     # lazy O rescale, every config

Example output line:
    bf16 D64 fwd(4w,1m,64) bwd(4w,64) cross  B1 H2/1 Sq70 Sk45 causal  out 2.1e-03  dq 4.0e-03 ...
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import os
import pathlib
import subprocess
import sys
import tempfile

import ml_dtypes
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from check_attention_gpu import reference as _gpu_check_reference

HERE = pathlib.Path(__file__).resolve().parent
KERNELS = HERE.parents[1] / "src" / "scitensor" / "backends" / "cuda" / "kernels"
BUILD = pathlib.Path(tempfile.gettempdir()) / "scitensor_attention_emulator"
TYPES = {"bf16": (0, ml_dtypes.bfloat16, 3e-2), "f16": (1, np.float16, 6e-3),
         "tf32": (2, np.float32, 3e-3), "f32x3": (3, np.float32, 1e-5)}


def lazy_rescale(ty: str, d: int) -> int:
    """The forward's ST_ATTN_LAZY_RESCALE: EMU_LAZY=0|1 if set, else attention.py's default
    (1 for 16-bit types at D128)."""
    env = os.environ.get("EMU_LAZY")
    return int(env) if env else int(ty in ("bf16", "f16") and d == 128)


def build(ty: str, d: int, fwd: tuple[int, ...], bwd: tuple[int, ...], asan: bool) -> pathlib.Path:
    flags = ["-std=c++20", "-O1", "-g", "-pthread", f"-DST_ATTN_TYPE={TYPES[ty][0]}",
             f"-DST_ATTN_D={d}", f"-DEMU_FWD_WARPS={fwd[0]}", f"-DEMU_FWD_MW={fwd[1]}",
             f"-DEMU_FWD_BN={fwd[2]}",
             f"-DEMU_BWD_WARPS={bwd[0]}", f"-DEMU_BWD_BM={bwd[1]}",
             f"-DEMU_BWD_V={bwd[2] if len(bwd) > 2 else 1}",
             f"-I{KERNELS}", f"-I{HERE}", f"-DST_ATTN_LAZY_RESCALE={lazy_rescale(ty, d)}"]
    if asan:
        flags += ["-fsanitize=address", "-fno-omit-frame-pointer"]
    h = hashlib.sha256(" ".join(flags).encode())
    for p in (HERE / "harness.cpp", HERE / "emu_runtime.h", *sorted(KERNELS.glob("attention*"))):
        h.update(p.read_bytes())
    exe = BUILD / f"harness-{h.hexdigest()[:16]}"
    if not exe.exists():
        BUILD.mkdir(parents=True, exist_ok=True)
        tmp = exe.with_suffix(f".{os.getpid()}.tmp")  # parallel test workers build too
        subprocess.run(["g++", *flags, str(HERE / "harness.cpp"), "-o", str(tmp)], check=True)
        tmp.replace(exe)
    return exe


def reference(q, k, v, g, causal, scale):
    """float64 out, dq, dk, dv: the GPU check's reference without its logsumexp."""
    out, _lse, dq, dk, dv = _gpu_check_reference(q, k, v, g, causal, scale)
    return out, dq, dk, dv


# Memory layouts of the eight operands. Each operand is a (B, heads, S, D) view: (buffer,
# element offset, batch / head / row strides in elements); buffers are flat arrays. The strided
# layouts mimic nn.MultiHeadAttention (heads of one packed projection, outputs in the
# sequence-major order the output projection reads) and leave gaps (a spare head or row) that the
# inputs fill with NaN and the outputs must leave untouched.
LAYOUTS = ("dense", "packed", "cross")


def layout(kind: str, b, h, hkv, sq, sk, d):
    """``(buffers, operands)``: buffer name -> element count; operand -> (buffer, offset,
    (sb, sh, ss)). ``packed`` needs ``sq == sk``."""
    bufs, ops = {}, {}

    def buf(name, *shape):
        bufs[name] = int(np.prod(shape))

    if kind == "dense":
        for n, (heads, s) in {"q": (h, sq), "k": (hkv, sk), "v": (hkv, sk), "dout": (h, sq),
                              "out": (h, sq), "dq": (h, sq), "dk": (hkv, sk),
                              "dv": (hkv, sk)}.items():
            buf(n, b, heads, s, d)
            ops[n] = (n, 0, (heads * s * d, s * d, d))
    elif kind == "packed":  # self-attention: q, k, v heads of one (B, S, N, D) projection
        assert sq == sk, "the packed layout is self-attention"
        n = h + 2 * hkv
        # one spare row per batch and one spare head per row: gaps
        qkv = ((sq + 1) * (n + 1) * d, d, (n + 1) * d)
        buf("qkv", b, sq + 1, n + 1, d)
        buf("gqkv", b, sq + 1, n + 1, d)
        for x, h0 in (("q", 0), ("k", h), ("v", h + hkv)):
            ops[x] = ("qkv", h0 * d, qkv)
            ops["d" + x] = ("gqkv", h0 * d, qkv)
        buf("y", b, sq, h + 1, d)  # the output, heads 1..h of (B, S, H + 1, D)
        ops["out"] = ("y", d, (sq * (h + 1) * d, d, (h + 1) * d))
        buf("gy", b, sq, h, d)  # the incoming gradient, sequence-major like the output
        ops["dout"] = ("gy", 0, (sq * h * d, d, h * d))
    elif kind == "cross":  # every operand its own axis order; no two share strides
        def put(name, x, shape, perm, off_head=0):
            """``x`` in buffer ``name`` of ``shape`` (an axis order of (B, heads, S, D), maybe
            with a spare head or row); ``perm[i]`` = where axis i of (B, heads, S, D) is."""
            buf(name, *shape)
            strides = [int(np.prod(shape[i + 1:])) for i in range(4)]
            ops[x] = (name, off_head * strides[perm[1]],
                      tuple(strides[perm[i]] for i in range(3)))

        put("xq", "q", (sq, b, h + 1, d), (1, 2, 0), off_head=1)   # sequence-first, heads 1..h
        put("gxq", "dq", (sq, b, h + 1, d), (1, 2, 0), off_head=1)
        put("xk", "k", (b, sk, hkv, d), (0, 2, 1))                  # sequence-major
        put("gxk", "dk", (b, sk + 1, hkv, d), (0, 2, 1))            # + a spare row per batch
        put("xv", "v", (b, hkv, sk + 1, d), (0, 1, 2))              # head-major, spare row
        put("gxv", "dv", (sk, b, hkv + 1, d), (1, 2, 0), off_head=1)
        put("y", "out", (b, sq + 1, h, d), (0, 2, 1))               # a spare row per batch
        put("gout", "dout", (b, h, sq, d), (0, 1, 2))
    else:
        raise ValueError(f"unknown layout {kind!r}; use one of {LAYOUTS}")
    return bufs, ops


def view(flat: np.ndarray, op, heads: int, b: int, s: int, d: int) -> np.ndarray:
    """The (B, heads, S, D) view of operand ``op`` = (buffer, offset, strides) in ``flat``."""
    _, off, (sb, sh, ss) = op
    it = flat.itemsize
    return np.lib.stride_tricks.as_strided(flat[off:], (b, heads, s, d), (sb * it, sh * it,
                                                                         ss * it, it))


OUTPUTS = ("out", "dq", "dk", "dv")


def run_case(exe, ty, b, h, hkv, sq, sk, d, causal, seed, kind="dense") -> dict:
    """Run the kernels on random inputs laid out as ``kind`` (see :func:`layout`); returns the
    normwise relative errors of out/dq/dk/dv, ``lse_nan`` and ``gaps_written`` (output buffer
    elements outside every output view that lost their poison)."""
    _, npdt, _ = TYPES[ty]
    r = np.random.default_rng(seed)
    bufs, ops = layout(kind, b, h, hkv, sq, sk, d)
    flat = {}
    for n, size in bufs.items():
        flat[n] = np.empty(size, npdt)
        flat[n].view(np.uint8)[...] = 0xFF  # NaN: gaps of inputs, every output element
    heads = {"q": h, "dout": h, "out": h, "dq": h, "k": hkv, "v": hkv, "dk": hkv, "dv": hkv}
    lens = {"q": sq, "dout": sq, "out": sq, "dq": sq, "k": sk, "v": sk, "dk": sk, "dv": sk}
    vw = {n: view(flat[op[0]], op, heads[n], b, lens[n], d) for n, op in ops.items()}
    host = {}
    for n in ("q", "k", "v", "dout"):
        host[n] = r.standard_normal(vw[n].shape).astype(npdt)
        vw[n][...] = host[n]
    scale = 1.0 / np.sqrt(d)
    with tempfile.TemporaryDirectory() as tmp:
        for n, a in flat.items():
            a.tofile(f"{tmp}/{n}.bin")
        with open(f"{tmp}/layout.txt", "w") as f:
            for n, (bn, off, (sb, sh, ss)) in ops.items():
                f.write(f"{n} {bn} {off} {sb} {sh} {ss}\n")
        subprocess.run([str(exe), tmp, str(b), str(h), str(hkv), str(sq), str(sk),
                        str(int(causal)), repr(float(scale))], check=True)
        for n in flat:
            flat[n] = np.fromfile(f"{tmp}/{n}.bin", dtype=npdt)
        lse = np.fromfile(f"{tmp}/lse.bin", dtype=np.float32)
    vw = {n: view(flat[op[0]], op, heads[n], b, lens[n], d) for n, op in ops.items()}
    ref = reference(host["q"], host["k"], host["v"], host["dout"], causal, scale)
    errs = {}
    for n, want in zip(OUTPUTS, ref):
        x = vw[n].astype(np.float64)
        errs[n] = (np.inf if not np.all(np.isfinite(x)) else
                   float(np.linalg.norm(x - want)
                         / max(np.linalg.norm(want), 1e-2 * np.sqrt(want.size))))
    errs["lse_nan"] = bool(np.isnan(lse).any())
    gaps = 0
    for bn in {ops[n][0] for n in OUTPUTS}:
        covered = np.zeros(bufs[bn], bool)
        idx = np.arange(bufs[bn])
        for n in OUTPUTS:
            if ops[n][0] == bn:
                view(covered, (bn, ops[n][1], ops[n][2]), heads[n], b, lens[n], d)[...] = True
        untouched = flat[bn].view(np.uint8).reshape(bufs[bn], -1)
        gaps += int((untouched[idx[~covered]] != 0xFF).any(axis=1).sum())
    errs["gaps_written"] = gaps
    return errs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--asan", action="store_true")
    ap.add_argument("--types", default="bf16,f16,tf32,f32x3")
    ap.add_argument("--dims", default="32,64,128")
    ap.add_argument("--configs", default="4x1x64:4x64",
                    help="comma list of FWDWARPSxMWxBN:BWDWARPSxBM[v2] (v2: the FA2-layout "
                         "dK/dV kernel, 16-bit types)")
    ap.add_argument("--layouts", default=",".join(LAYOUTS),
                    help="comma list of operand layouts: dense (B, H, S, D) arrays; packed "
                         "(views into one (B, S, N, D) projection, self-attention cases only); "
                         "cross (every operand in its own axis order)")
    args = ap.parse_args()
    cases = [(1, 2, 1, 70, 45), (1, 2, 2, 33, 97), (2, 4, 2, 64, 64), (1, 1, 1, 1, 5),
             (1, 1, 1, 200, 333), (2, 3, 1, 37, 37)]
    if args.quick:  # one cross-attention and one self-attention (packed) case
        cases = [cases[0], cases[-1]]
    failed = 0
    for cfg in args.configs.split(","):
        f, bw = cfg.split(":")
        fwd = tuple(int(x) for x in f.split("x"))
        version = 2 if bw.endswith("v2") else 1
        bwd = (*(int(x) for x in bw.removesuffix("v2").split("x")), version)
        for ty in args.types.split(","):
            if version == 2 and ty not in ("bf16", "f16"):
                continue
            tol = TYPES[ty][2]
            for d in (int(x) for x in args.dims.split(",")):
                if d // max(1, (bwd[0] // (bwd[1] // 16))) < 16:
                    continue
                if version == 2 and (d * bwd[1] // (32 * bwd[0])) % 16:
                    continue
                exe = build(ty, d, fwd, bwd, args.asan)
                for i, (b, h, hkv, sq, sk) in enumerate(cases):
                    for kind, causal in itertools.product(args.layouts.split(","),
                                                          (False, True)):
                        if kind == "packed" and sq != sk:
                            continue
                        e = run_case(exe, ty, b, h, hkv, sq, sk, d, causal, seed=i * 7 + d,
                                     kind=kind)
                        bad = (e["lse_nan"] or e["gaps_written"]
                               or any(e[n] > tol for n in OUTPUTS))
                        failed += bool(bad)
                        print(f"{ty:5} D{d:<3} fwd({fwd[0]}w,{fwd[1]}m,{fwd[2]}) "
                              f"bwd({bwd[0]}w,{bwd[1]}{'v2' if version == 2 else ''}) "
                              f"{kind:6} B{b} H{h}/{hkv} Sq{sq} Sk{sk} "
                              f"{'causal' if causal else 'full  '}"
                              + "".join(f"  {n} {e[n]:.1e}" for n in OUTPUTS)
                              + (f"  gaps written {e['gaps_written']}" if e["gaps_written"]
                                 else "")
                              + ("  FAIL" if bad else ""), flush=True)
    print("emulator:", "all passed" if not failed else f"{failed} case(s) FAILED")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
