"""GPT training step (issue 9): scitensor's layers and PyTorch side by side, same weights.

The model (both libraries, built the same way): token and position embeddings, 6 pre-norm
blocks of d_model 384 (LayerNorm -> causal multi-head attention with 6 heads, one fused qkv
projection -> residual; LayerNorm -> Dense 384->1536 -> GELU (tanh form; in the GEMM
epilogue on our side) -> Dense 1536->384 -> residual), a final LayerNorm and an untied LM
head without bias; vocabulary 65 (characters), context 256, batch 16; fp32 everywhere
(exact fp32 GEMMs on both sides: scitensor's ``"highest"`` precision, PyTorch's default
``allow_tf32=False``). One step = forward, cross-entropy, backward, AdamW (lr 3e-4, betas
0.9/0.95, weight decay 0.1; PyTorch's default foreach implementation, ours the fused
multi-tensor kernel). No gradient clipping.

scitensor side: ``nn.Embedding``, ``nn.LayerNorm``, ``nn.MultiHeadAttention(causal=True)``,
``nn.ModuleList``, ``nn.Dense(activation="gelu")``. PyTorch side: ``nn.Embedding``,
``nn.LayerNorm``, ``nn.Linear``, ``F.gelu(approximate="tanh")``,
``F.scaled_dot_product_attention(is_causal=True)``. PyTorch's weights are copied from
scitensor's (``Linear.weight = Dense.weight.T``), so the step-0 losses on the same batch must
agree (printed, and in the JSON's meta).

Rows (median CUDA-event milliseconds of a whole step, events around each step and a sync
after it, so host time counts; token batches rotate among 4 sets; the two eager steps are
host-bound and timed in alternating rounds, ``timing.interleaved_event_ms``, because a shared
machine's host speed drifts by 10-30 % over seconds):

- ``step eager``: scitensor eager vs PyTorch eager (target: speed >= 1.0);
- ``step jit / CUDA graph``: ``st.jit`` replay vs a PyTorch CUDA graph of the same step
  (``AdamW(capturable=True)``);
- ``step st.jit vs torch eager``: the jitted step against PyTorch eager (target >= 1.0).

TFLOP/s counts the GEMM and attention FLOPs of forward + backward (see :func:`step_flops`)
against the 51.3 TFLOP/s fp32 GEMM ceiling of design.md §6 (H100).

Run on a GPU machine::

    python -m benchmarks.gpu_gpt --out DIR [--quick] [--tf32]

``--cpu-smoke`` builds a small model on the CPU (no CUDA, no timing targets) and checks the
two libraries' losses over a few steps: a local check of the weight copying.
Writes ``DIR/gpu_gpt.json`` and ``DIR/gpu_gpt.md`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

import scitensor as st
from scitensor import nn, optim
from scitensor.nn import functional as F

try:  # run as `python -m benchmarks.X` or as a script
    from .timing import event_ms, interleaved_event_ms
except ImportError:
    from timing import event_ms, interleaved_event_ms

FP32_CEILING = 51.3  # TFLOP/s, fp32 GEMM 8192^3 on the H100 (design.md §6)
ROTATE = 4
LR, BETAS, WD, EPS = 3e-4, (0.9, 0.95), 0.1, 1e-8


@dataclass(frozen=True)
class Config:
    vocab: int = 65
    layers: int = 6
    d_model: int = 384
    heads: int = 6
    context: int = 256
    batch: int = 16

    def describe(self) -> str:
        return (f"L{self.layers} d{self.d_model} H{self.heads} S{self.context} "
                f"B{self.batch} V{self.vocab}")


SMOKE = Config(vocab=65, layers=2, d_model=64, heads=2, context=32, batch=2)


def step_flops(c: Config) -> float:
    """Forward + backward FLOPs of one step: GEMMs 3x their forward (dX and dW), attention
    3.5x its forward (FlashAttention's convention), causal attention counted half."""
    tokens = c.batch * c.context
    d = c.d_model
    gemm_fwd = c.layers * 2 * tokens * d * (3 * d + d + 4 * d + 4 * d) + 2 * tokens * d * c.vocab
    attn_fwd = c.layers * 4 * c.batch * c.context ** 2 * d / 2
    return 3 * gemm_fwd + 3.5 * attn_fwd


# ---- scitensor model -----------------------------------------------------------------------
class Block(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = nn.MultiHeadAttention(d, heads, causal=True)
        self.ln2 = nn.LayerNorm(d)
        self.fc = _dense_gelu(d, 4 * d)
        self.proj = nn.Dense(4 * d, d)

    def forward(self, x):
        b, t, d = x.shape
        x = x + self.attn(self.ln1(x))
        h = self.ln2(x).reshape(b * t, d)  # the MLP on rows: plain 2-D GEMMs
        return x + self.proj(self.fc(h)).reshape(b, t, d)


def _dense_gelu(n_in: int, n_out: int) -> nn.Module:
    """``Dense`` + tanh-GELU, fused into the GEMM epilogue where ``Dense`` supports it."""
    try:
        return nn.Dense(n_in, n_out, activation="gelu")
    except TypeError:  # a Dense without fused activations
        return nn.Sequential(nn.Dense(n_in, n_out), nn.GELU(approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.tok = nn.Embedding(c.vocab, c.d_model)
        self.pos = nn.Embedding(c.context, c.d_model)
        for table in (self.tok, self.pos):
            nn.init.normal_(table.weight, std=0.02)
        self.blocks = nn.ModuleList([Block(c.d_model, c.heads) for _ in range(c.layers)])
        self.ln_f = nn.LayerNorm(c.d_model)
        self.head = nn.Dense(c.d_model, c.vocab, bias=False)
        self.register_buffer("positions", st.arange(c.context), persistent=False)

    def forward(self, idx):
        b, t = idx.shape
        x = self.tok(idx) + self.pos(self.positions[:t])
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x).reshape(b * t, -1))


def build_scitensor(c: Config, dev):
    st.manual_seed(0)
    model = GPT(c).to(dev)
    opt = optim.AdamW(model.parameters(), lr=LR, betas=BETAS, eps=EPS, weight_decay=WD)

    def step(x, y):
        loss = F.cross_entropy(model(x), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.detach()

    return model, step


# ---- PyTorch model (weights copied from scitensor's) ----------------------------------------
def build_torch(c: Config, st_model: GPT, device: str, capturable: bool = False):
    import torch
    import torch.nn.functional as tf

    class TBlock(torch.nn.Module):
        def __init__(self):
            super().__init__()
            d = c.d_model
            self.ln1, self.ln2 = torch.nn.LayerNorm(d), torch.nn.LayerNorm(d)
            self.qkv, self.out = torch.nn.Linear(d, 3 * d), torch.nn.Linear(d, d)
            self.fc, self.proj = torch.nn.Linear(d, 4 * d), torch.nn.Linear(4 * d, d)

        def forward(self, x):
            b, t, d = x.shape
            q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, c.heads, d // c.heads).permute(
                2, 0, 3, 1, 4).unbind(0)
            a = tf.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.out(a.transpose(1, 2).reshape(b, t, d))
            return x + self.proj(tf.gelu(self.fc(self.ln2(x)), approximate="tanh"))

    class TGPT(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = torch.nn.Embedding(c.vocab, c.d_model)
            self.pos = torch.nn.Embedding(c.context, c.d_model)
            self.blocks = torch.nn.ModuleList([TBlock() for _ in range(c.layers)])
            self.ln_f = torch.nn.LayerNorm(c.d_model)
            self.head = torch.nn.Linear(c.d_model, c.vocab, bias=False)

        def forward(self, idx):
            t = idx.shape[1]
            x = self.tok(idx) + self.pos(torch.arange(t, device=idx.device))
            for block in self.blocks:
                x = block(x)
            return self.head(self.ln_f(x)).view(-1, c.vocab)

    model = TGPT()
    copy_weights(st_model, model)
    model = model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=BETAS, eps=EPS, weight_decay=WD,
                            capturable=capturable)

    def step(x, y):
        opt.zero_grad(set_to_none=False)
        loss = tf.cross_entropy(model(x), y.view(-1))
        loss.backward()
        opt.step()
        return loss.detach()

    return model, step


def copy_weights(src: GPT, dst) -> None:
    """scitensor -> PyTorch: Dense weights transposed, everything else as is."""
    import torch

    def put(param, tensor, transpose=False):
        a = np.asarray(tensor.numpy(), dtype=np.float32)
        with torch.no_grad():
            param.copy_(torch.from_numpy(np.ascontiguousarray(a.T if transpose else a)))

    put(dst.tok.weight, src.tok.weight)
    put(dst.pos.weight, src.pos.weight)
    for sb, tb in zip(src.blocks, dst.blocks):
        for s_ln, t_ln in ((sb.ln1, tb.ln1), (sb.ln2, tb.ln2)):
            put(t_ln.weight, s_ln.weight)
            put(t_ln.bias, s_ln.bias)
        fc = sb.fc if isinstance(sb.fc, nn.Dense) else sb.fc[0]
        for s_d, t_l in ((sb.attn.qkv_proj, tb.qkv), (sb.attn.out_proj, tb.out),
                         (fc, tb.fc), (sb.proj, tb.proj)):
            put(t_l.weight, s_d.weight, transpose=True)
            put(t_l.bias, s_d.bias)
    put(dst.ln_f.weight, src.ln_f.weight)
    put(dst.ln_f.bias, src.ln_f.bias)
    put(dst.head.weight, src.head.weight, transpose=True)


def make_batches(c: Config, n: int = ROTATE, seed: int = 0):
    r = np.random.default_rng(seed)
    return [(r.integers(0, c.vocab, (c.batch, c.context)), r.integers(0, c.vocab,
                                                                       (c.batch, c.context)))
            for _ in range(n)]


# ---- runs ----------------------------------------------------------------------------------
def compare_losses(c: Config, dev, tdev: str, steps: int):
    """Both libraries from the same weights for ``steps`` steps: the losses side by side."""
    import torch

    model, st_step = build_scitensor(c, dev)
    _, t_step = build_torch(c, model, tdev)
    batches = make_batches(c)
    ours, theirs = [], []
    for i in range(steps):
        x, y = batches[i % len(batches)]
        ours.append(st_step(st.tensor(x, device=dev), st.tensor(y, device=dev)).item())
        theirs.append(t_step(torch.from_numpy(x).to(tdev), torch.from_numpy(y).to(tdev)).item())
    return ours, theirs


def time_cuda(c: Config, warmup: int, reps: int, tf32: bool) -> dict:
    import cupy
    import torch

    dev = st.Device("cuda")
    st.set_matmul_precision("tf32" if tf32 else "highest")
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    batches = make_batches(c, seed=1)
    res = {}

    model, st_step = build_scitensor(c, dev)
    sx = [(st.tensor(x, device=dev), st.tensor(y, device=dev)) for x, y in batches]

    def st_record():
        e = cupy.cuda.Event()
        e.record(cupy.cuda.get_current_stream())
        return e

    st_eager = (lambda i: st_step(*sx[i % ROTATE]), st_record, dev.backend.synchronize)
    jstep = st.jit(st_step)
    res["st_jit"] = event_ms(lambda i: jstep(*sx[i % ROTATE]), st_record,
                             dev.backend.synchronize, max(warmup, 3), reps)
    res["st_jit_stats"] = dict(jstep.stats)

    _, t_step = build_torch(c, model, "cuda")
    tx = [(torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda()) for x, y in batches]

    def t_record():
        e = torch.cuda.Event(enable_timing=True)
        e.record()
        return e

    # both eager steps are host-bound: timed in alternating rounds, so the host's speed
    # drifting over seconds (10-30 % on a shared machine) does not become a false ratio
    eager = interleaved_event_ms(
        {"scitensor": st_eager,
         "torch": (lambda i: t_step(*tx[i % ROTATE]), t_record, torch.cuda.synchronize)},
        warmup, reps)
    res["st_eager"], res["torch_eager"] = eager["scitensor"], eager["torch"]
    try:
        res["torch_graph"] = _torch_graph_ms(c, model, tx, warmup, reps, t_record)
    except Exception as e:  # optional row: report why it is missing
        res["torch_graph_error"] = f"{type(e).__name__}: {e}"[:300]
    st.set_matmul_precision("highest")
    return res


def _torch_graph_ms(c, st_model, tx, warmup, reps, record) -> float:
    import torch

    _, t_step = build_torch(c, st_model, "cuda", capturable=True)
    sx, sy = tx[0][0].clone(), tx[0][1].clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            t_step(sx, sy)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        t_step(sx, sy)

    def replay(i):
        x, y = tx[i % ROTATE]
        sx.copy_(x)
        sy.copy_(y)
        graph.replay()

    return event_ms(replay, record, torch.cuda.synchronize, warmup, reps)


def time_cpu(c: Config, reps: int) -> dict:
    """Wall-clock per step on the CPU (the smoke run: no CUDA, no targets)."""
    import torch

    dev = st.Device("cpu")
    batches = make_batches(c, seed=1)
    model, st_step = build_scitensor(c, dev)
    _, t_step = build_torch(c, model, "cpu")
    sx = [(st.tensor(x), st.tensor(y)) for x, y in batches]
    tx = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in batches]

    def wall(fn):
        fn(0)
        out = []
        for i in range(reps):
            t0 = time.perf_counter()
            fn(i)
            out.append(1e3 * (time.perf_counter() - t0))
        return statistics.median(out)

    return {"st_eager": wall(lambda i: st_step(*sx[i % ROTATE])),
            "torch_eager": wall(lambda i: t_step(*tx[i % ROTATE]).item())}


def rows_from(c: Config, res: dict, dtype: str, targets: bool) -> list[dict]:
    flops = step_flops(c)
    pairs = [("step eager", "st_eager", "torch_eager", 1.0),
             ("step jit / CUDA graph", "st_jit", "torch_graph", None),
             ("step st.jit vs torch eager", "st_jit", "torch_eager", 1.0)]
    rows = []
    for name, ours, theirs, target in pairs:
        o, t = res.get(ours), res.get(theirs)
        if o is None:
            continue
        speed = t / o if t else None
        tgt = target if targets else None
        rows.append({
            "benchmark": "gpt_train_step", "case": c.describe(), "dtype": dtype, "pass": name,
            "scitensor_ms": o, "torch_ms": t, "speed": speed, "unit": "TFLOP/s",
            "scitensor_rate": flops / (o * 1e9), "torch_rate": flops / (t * 1e9) if t else None,
            "ceiling": FP32_CEILING if dtype == "fp32" else None, "target": tgt,
            "met": (speed >= tgt) if (tgt is not None and speed is not None) else None,
        })
    return rows


def table(rows: list[dict], title: str) -> str:
    def f(v, fmt):
        return "n/a" if v is None else format(v, fmt)

    lines = [f"# {title}", "",
             "| case | dtype | pass | scitensor ms | PyTorch ms | speed | st TFLOP/s | "
             "torch TFLOP/s | target | met |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['dtype']} | {r['pass']} | {f(r['scitensor_ms'], '.3f')} "
                     f"| {f(r['torch_ms'], '.3f')} | {f(r['speed'], '.2f')}x | "
                     f"{f(r['scitensor_rate'], '.1f')} | {f(r['torch_rate'], '.1f')} | "
                     f"{f(r['target'], '.1f')} | {r['met'] if r['met'] is not None else ''} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--quick", action="store_true", help="fewer repetitions (~30 s)")
    p.add_argument("--reps", type=int, default=None)
    p.add_argument("--tf32", action="store_true", help="TF32 GEMMs in both libraries")
    p.add_argument("--cpu-smoke", action="store_true",
                   help="a small model on the CPU: loss agreement and wall-clock only")
    args = p.parse_args(argv)
    import torch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    c = SMOKE if args.cpu_smoke else Config()
    dtype = "tf32" if args.tf32 else "fp32"
    meta = {"config": asdict(c), "step_gflop": step_flops(c) / 1e9,
            "scitensor": st.__version__, "torch": torch.__version__,
            "numpy": np.__version__, "python": platform.python_version(),
            "optimizer": {"lr": LR, "betas": BETAS, "weight_decay": WD, "eps": EPS,
                          "torch_impl": "foreach (default)"},
            "matmul": "tf32" if args.tf32 else "exact fp32"}
    if args.cpu_smoke:
        dev, tdev = st.Device("cpu"), "cpu"
        meta["device"] = f"CPU ({platform.processor() or platform.machine()})"
    else:
        import cupy

        dev, tdev = st.Device("cuda"), "cuda"
        meta["device"] = torch.cuda.get_device_name()
        meta["cupy"] = cupy.__version__
        meta["cuda_runtime"] = cupy.cuda.runtime.runtimeGetVersion()
        st.set_matmul_precision("tf32" if args.tf32 else "highest")
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
    ours, theirs = compare_losses(c, dev, tdev, steps=3)
    st.set_matmul_precision("highest")
    print(f"first losses: scitensor {ours[0]:.6f}  PyTorch {theirs[0]:.6f}  "
          f"(ln {c.vocab} = {math.log(c.vocab):.6f})")
    print("losses over 3 steps: scitensor " + ", ".join(f"{v:.6f}" for v in ours)
          + " | PyTorch " + ", ".join(f"{v:.6f}" for v in theirs))
    diff = max(abs(a - b) / abs(b) for a, b in zip(ours, theirs))
    meta.update(first_loss_scitensor=ours[0], first_loss_torch=theirs[0], losses_scitensor=ours,
                losses_torch=theirs, loss_max_rel_diff=diff)
    tol = 1e-2 if args.tf32 else 1e-4
    if diff > tol:
        print(f"WARNING: losses differ by {diff:.2e} (relative) > {tol}: the models differ")
    if args.cpu_smoke:
        res = time_cpu(c, reps=args.reps or 3)
        title = f"GPT training step (CPU smoke, wall-clock) — {meta['device']}"
    else:
        reps = args.reps or (10 if args.quick else 40)
        res = time_cuda(c, warmup=3 if args.quick else 10, reps=reps, tf32=args.tf32)
        title = (f"GPT training step — {meta['device']}, PyTorch {torch.__version__}, "
                 f"scitensor {st.__version__}")
    meta["raw_ms"] = res
    rows = rows_from(c, res, dtype, targets=not args.cpu_smoke)
    md = table(rows, title)
    md += (f"\n\nFirst losses on one batch from the same weights: scitensor {ours[0]:.6f}, "
           f"PyTorch {theirs[0]:.6f}; largest relative difference over 3 steps {diff:.1e}.\n")
    if "torch_graph_error" in res:
        md += f"\nPyTorch CUDA graph row missing: {res['torch_graph_error']}\n"
    (out / "gpu_gpt.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2,
                                                 default=str))
    (out / "gpu_gpt.md").write_text(md)
    print(md)
    return rows, meta


if __name__ == "__main__":
    main()
