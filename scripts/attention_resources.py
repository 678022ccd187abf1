"""ptxas resource report (registers, spills, shared memory) for every attention kernel config.

Compiles ``attention_fwd.cu`` / ``attention_bwd.cu`` with ``nvcc -arch=sm_90 -cubin -Xptxas -v``
for each element type, head dim and tile configuration (the defaults of
``backends/cuda/attention.py`` plus the alternatives the benchmark sweeps) and prints a
Markdown table. Needs nvcc, no GPU.

Usage:
    python scripts/attention_resources.py [--all]
"""

from __future__ import annotations

import argparse
import pathlib
import re
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
KERNELS = ROOT / "src" / "scitensor" / "backends" / "cuda" / "kernels"
TYPES = {0: "bf16", 1: "f16", 2: "tf32", 3: "f32 (3xTF32)"}
ES = {0: 2, 1: 2, 2: 4, 3: 4}
FWD_ALT = [(4, 1, 64), (4, 1, 128), (8, 1, 64), (4, 2, 32), (4, 2, 64), (8, 2, 64)]
BWD_ALT = [(4, 32), (4, 64), (8, 32), (8, 64)]


def defaults():
    sys.path.insert(0, str(ROOT / "src"))
    text = (ROOT / "src/scitensor/backends/cuda/attention.py").read_text()
    out = {}
    for codes, body in re.findall(r"for _code in \(([^)]*)\):\n((?:    DEFAULT.*\n)+)", text):
        names = {"BF16": 0, "F16": 1, "TF32": 2, "TF32X3": 3}
        for line in body.splitlines():
            d, args = re.search(r"_code, (\d+)\)\] = AttentionConfig\(([^)]*)\)", line).groups()
            cfg = tuple(int(x) for x in args.split(","))
            for c in codes.split(","):
                out[(names[c.strip()], int(d))] = cfg
    return out


def ptxas(source: str, defines: list[str]) -> dict[str, str]:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = ["nvcc", "-arch=sm_90", "-cubin", "-std=c++17", "-Xptxas", "-v", *defines,
               f"-I{KERNELS}", str(KERNELS / source), "-o", f"{tmp}/k.cubin"]
        res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(f"nvcc failed: {' '.join(cmd)}\n{res.stderr}")
    info, name = {}, None
    for line in res.stderr.splitlines():
        m = re.search(r"Compiling entry function '(\w+)'", line)
        if m:
            name = m.group(1)
        m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m and name:
            info[name] = f"spill {m.group(1)}/{m.group(2)} B"
        m = re.search(r"Used (\d+) registers", line)
        if m and name:
            info[name] = f"{m.group(1)} regs, " + info.get(name, "")
    return info


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--all", action="store_true", help="also the sweep's alternative tiles")
    args = ap.parse_args()
    dflt = defaults()
    print("| type | D | kernel | tiles | shared mem | ptxas (non-causal; causal) |")
    print("|---|---|---|---|---|---|")
    for (code, d), (fw, bn, bw, bm, *rest) in sorted(dflt.items()):
        mw = rest[0] if rest else 1
        bv = rest[1] if len(rest) > 1 else 1
        fwd_cfgs = FWD_ALT if args.all else [(fw, mw, bn)]
        bwd_cfgs = [(w, m, 1) for w, m in BWD_ALT] + [(8, 64, 2)] if args.all else [(bw, bm, bv)]
        base = [f"-DST_ATTN_TYPE={code}", f"-DST_ATTN_D={d}"]
        for w, m, n in fwd_cfgs:
            info = ptxas("attention_fwd.cu", [*base, f"-DST_ATTN_WARPS={w}", f"-DST_ATTN_BN={n}",
                                              f"-DST_ATTN_MW={m}"])
            smem = (16 * m * w + 4 * n) * (d * ES[code] + 16)
            mark = "" if (w, m, n) == (fw, mw, bn) else " (alt)"
            print(f"| {TYPES[code]} | {d} | fwd | {w} warps x {16 * m} rows, BN {n}{mark} | "
                  f"{smem // 1024} KiB | "
                  f"{info['st_attention_fwd']}; {info['st_attention_fwd_causal']} |")
        for w, m, v in bwd_cfgs:
            if m // 16 > w or w % (m // 16) or (d // (w // (m // 16))) % 16:
                continue
            if v == 2 and (code > 1 or (d * m // (32 * w)) % 16):
                continue
            info = ptxas("attention_bwd.cu", [*base, f"-DST_ATTN_WARPS={w}", f"-DST_ATTN_BM={m}"])
            bn = 16 * w
            smem = (2 * bn + 4 * m) * (d * ES[code] + 16) + v * bn * (m * ES[code] + 16) + 16 * m
            mark = "" if (w, m, v) == (bw, bm, bv) else " (alt)"
            name = "st_attention_bwd_dkdv2" if v == 2 else "st_attention_bwd_dkdv"
            print(f"| {TYPES[code]} | {d} | bwd dK/dV{' v2' if v == 2 else ''} | {w} warps, "
                  f"BM {m}{mark} | {smem // 1024} KiB | {info[name]}; {info[name + '_causal']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
