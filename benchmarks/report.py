"""One report over every benchmark: rows in a common schema, a table, JSON, Markdown, a chart.

Every benchmark module writes a JSON file. Modules written to the common rules emit ROWs
directly: ``{"meta": {...}, "rows": [ROW, ...]}`` where a ROW has at least

- ``benchmark``, ``case``, ``dtype``, ``pass``: what was measured;
- ``scitensor_ms``, ``torch_ms``: the two times; ``speed`` = ``torch_ms / scitensor_ms``
  (> 1: scitensor is faster);
- ``unit`` ("TFLOP/s", "GB/s" or None), ``scitensor_rate``, ``torch_rate``, ``ceiling``
  (the H100 figure of design.md §6 in that unit, or None);
- ``target`` (the issue's target as a minimum speed, or None) and ``met`` (bool or None).

Two optional keys carry targets that are not a speed: ``target_ms`` (a maximum for
``scitensor_ms``) and ``target_rate`` (a minimum for ``scitensor_rate``). The report adds
``module`` and ``pct_ceiling`` (100 · scitensor_rate / ceiling).

The older modules' own layouts are normalised by the adapters below (one per layout, chosen
by :func:`detect_schema`); their targets are the issues' (as listed in
``benchmarks/results/SUMMARY_h100.md``), written as minimum speeds.
"""

from __future__ import annotations

import datetime
import json
import math
import re
from pathlib import Path

from . import registry

ROW_KEYS = ("benchmark", "case", "dtype", "pass", "scitensor_ms", "torch_ms", "speed", "unit",
            "scitensor_rate", "torch_rate", "ceiling", "target", "met")
# design.md §6: measured H100 ceilings
COPY_CEILING_GBS = 2966.0
GEMM_CEILING_TFLOPS = {"bf16": 747.0, "tf32": 384.0, "fp32": 51.3}
ENV_KEYS = ("gpu", "driver", "cpu", "cores", "python", "numpy", "cupy", "torch", "nvmath",
            "scitensor", "cuda_runtime", "cuda_driver", "cudnn")


# ---- rows ------------------------------------------------------------------------------------
def make_row(**fields) -> dict:
    """A ROW with every key present, ``speed``, ``met`` and ``pct_ceiling`` filled in.

    ``speed`` is ``torch_ms / scitensor_ms`` (or the rates' ratio when a time is missing)
    unless given; ``met`` is judged from ``target``/``target_ms``/``target_rate`` unless
    given (None when there is no target or nothing to judge it by).

    Args:
        **fields: ROW keys (missing ones become None; ``pass_`` stands for ``pass``, a Python
            keyword) and any extra keys to keep.

    Returns:
        The row as a dict.

    Example:
        >>> r = make_row(benchmark="gemm", case="8192^3", dtype="bf16", pass_="fwd",
        ...              scitensor_ms=2.0, torch_ms=3.0, target=1.0)
        >>> r["speed"], r["met"], r["pass"]
        (1.5, True, 'fwd')
    """
    if "pass_" in fields:
        fields["pass"] = fields.pop("pass_")
    row = {k: fields.pop(k, None) for k in ROW_KEYS}
    row.update(fields)
    row.setdefault("target_ms", None)
    row.setdefault("target_rate", None)
    if row["speed"] is None:
        row["speed"] = _ratio(row["torch_ms"], row["scitensor_ms"])
        if row["speed"] is None:
            row["speed"] = _ratio(row["scitensor_rate"], row["torch_rate"])
    if row["met"] is None:
        row["met"] = judge(row)
    rate, ceiling = row["scitensor_rate"], row["ceiling"]
    row["pct_ceiling"] = 100.0 * rate / ceiling if _pos(rate) and _pos(ceiling) else None
    return row


def judge(row: dict) -> bool | None:
    """Whether a row meets its targets: None without a target or without the figure to judge.

    Example:
        >>> judge({"speed": 0.9, "target": 1.0, "target_ms": None, "target_rate": None})
        False
    """
    checks = []
    for target, value, ok in (
            (row.get("target"), row.get("speed"), lambda v, t: v >= t),
            (row.get("target_ms"), row.get("scitensor_ms"), lambda v, t: v <= t),
            (row.get("target_rate"), row.get("scitensor_rate"), lambda v, t: v >= t)):
        if target is None:
            continue
        if value is None:
            return None
        checks.append(ok(value, target))
    return all(checks) if checks else None


def _pos(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def _ratio(a, b):
    return a / b if _pos(a) and _pos(b) else None


def _ms(value, unit: str):
    """A time in ``unit`` (s, ms, us/µs) as milliseconds."""
    if value is None:
        return None
    scale = {"s": 1e3, "ms": 1.0, "us": 1e-3, "µs": 1e-3}[unit]
    return value * scale


# ---- adapters for the older modules' layouts ---------------------------------------------------
def adapt_rows(data: dict) -> list[dict]:
    """ROW-schema JSON (``{"meta", "rows": [ROW]}``): fill in what a row leaves out."""
    return [make_row(**r) for r in data["rows"]]


def adapt_cpu_bench(data: dict) -> list[dict]:
    """``cpu_bench.json``: ``results`` of name/unit/scitensor/torch/ratio (ours/torch)/
    target_ratio (a maximum of ours/torch, so the minimum speed is its inverse)."""
    rows = []
    for r in data["results"]:
        name = r["name"]
        pas = "step" if "step" in name else "fwd+bwd" if "backward" in name else "fwd"
        tr = r.get("target_ratio")
        rows.append(make_row(benchmark="cpu", case=name, dtype="fp32", pass_=pas,
                             scitensor_ms=_ms(r["scitensor"], r["unit"]),
                             torch_ms=_ms(r.get("torch"), r["unit"]),
                             target=1.0 / tr if tr else None))
    return rows


def adapt_cpu_conv(data: dict) -> list[dict]:
    """``cpu_conv.json``: one CNN step, median wall ms per library; target: within 2x."""
    ms = data["step_ms"]
    return [make_row(benchmark="cpu_cnn",
                     case="CNN conv-BN-ReLU x3 (32/64/128), batch 256 3x32x32, SGD",
                     dtype="fp32", pass_="step", scitensor_ms=ms["scitensor"],
                     torch_ms=ms.get("torch"), target=0.5)]


def adapt_gpu_overhead(data: dict) -> list[dict]:
    """``gpu_overhead_<tag>.json``: per-op µs rows and GEMM TFLOP/s rows; ``target`` is
    ``[op, x]`` on ours/torch (time: ``<=``, so the minimum speed is 1/x; rate: ``>=``)."""
    rows = []
    for r in data["rows"]:
        key, st_v, t_v = r["key"], r["scitensor"], r.get("torch")
        target = None
        if r.get("target"):  # ours/torch: a time ratio at most x is a speed at least 1/x
            op, x = r["target"]
            if r["unit"] == "TFLOP/s":
                target = x if op == ">=" else None
            else:
                target = 1.0 / x if op == "<=" else None
        gemm = re.fullmatch(r"gemm_(\d+)_(\w+)", key)
        mm = re.fullmatch(r"matmul_(\d+)x(\d+)x(\d+)_(\w+)", key)
        if gemm or mm:
            m, k, n = (int(gemm[1]),) * 3 if gemm else (int(mm[1]), int(mm[2]), int(mm[3]))
            dtype = (gemm or mm).groups()[-1]
            flop = 2.0 * m * k * n
            if r["unit"] == "TFLOP/s":
                st_ms, t_ms = flop / st_v / 1e9, (flop / t_v / 1e9 if t_v else None)
            else:
                st_ms, t_ms = _ms(st_v, r["unit"]), _ms(t_v, r["unit"])
            rows.append(make_row(
                benchmark="gemm", case=f"{m}x{k} @ {k}x{n}", dtype=dtype, pass_="fwd",
                scitensor_ms=st_ms, torch_ms=t_ms, unit="TFLOP/s",
                scitensor_rate=flop / st_ms / 1e9,
                torch_rate=flop / t_ms / 1e9 if t_ms else None,
                ceiling=GEMM_CEILING_TFLOPS.get(dtype), target=target))
        else:
            pas = ("fwd+bwd" if "backward" in key else
                   "fwd, sync each op" if "sync" in key else "fwd")
            rows.append(make_row(benchmark="overhead", case=r["what"], dtype="fp32",
                                 pass_=pas, scitensor_ms=_ms(st_v, r["unit"]),
                                 torch_ms=_ms(t_v, r["unit"]), target=target))
    return rows


# issue 4: jit <= 1.5 µs per op; MLP b128 eager <= 1.0x PyTorch eager; jit <= 1.1x graph
_BATCHING_CHAIN = (("sync every op", "st_sync_every_op", "torch_sync_every_op", None),
                   ("async eager", "st_async_eager", "torch_eager", None),
                   ("jit vs CUDA graph", "st_jit", "torch_graph", 1.5e-3))
_BATCHING_MLP = (("mlp_b128_h512_s", "MLP 784-512-512-10, batch 128, Adam", 1.0),
                 ("mlp_b1024_h2048_s", "MLP 784-2048-2048-10, batch 1024, Adam", None))


def adapt_gpu_batching_v1(data: dict) -> list[dict]:
    """``gpu_batching_<tag>.json`` (before ROWs): seconds per op of a tiny-op chain and per
    MLP step, for scitensor eager/jit and PyTorch eager/CUDA graph."""
    rows = []
    chain = data["chain_per_op_s"]
    for pas, ours, theirs, max_ms in _BATCHING_CHAIN:
        rows.append(make_row(benchmark="batching", case="chain of tiny ops (per op)",
                             dtype="fp32", pass_=pas, scitensor_ms=_ms(chain[ours], "s"),
                             torch_ms=_ms(chain.get(theirs), "s"), target_ms=max_ms))
    for key, case, eager_target in _BATCHING_MLP:
        r = data.get(key)
        if not r:
            continue
        # like with like only: the file's "st jit vs torch eager" line is left out
        for pas, ours, theirs, target in (
                ("step, eager", "st_eager", "torch_eager", eager_target),
                ("step, jit vs CUDA graph", "st_jit", "torch_graph", 1 / 1.1)):
            rows.append(make_row(benchmark="batching", case=case, dtype="fp32", pass_=pas,
                                 scitensor_ms=_ms(r[ours], "s"),
                                 torch_ms=_ms(r.get(theirs), "s"), target=target))
    return rows


def _norm_targets(op, mode, shape, dtype):
    """Issue 5's targets: (minimum speed, minimum GB/s) for one case."""
    rows, cols = shape
    if op == "layer_norm" and (rows, cols) == (32768, 4096):
        if mode == "fwd":
            return None, (2600.0 if dtype == "fp32" else None)
        return 1.5, None
    if op == "layer_norm" and (rows, cols) == (4096, 768):
        return 1.0, None
    if op == "cross_entropy" and mode == "fwd+bwd" and (rows, cols) == (8192, 32000):
        return 1.2, None
    return None, None


def adapt_gpu_norm_softmax(data: dict) -> list[dict]:
    """``gpu_norm_softmax.json``: device time (pre-filled queue) and GB/s over the byte floor
    for each op/mode/shape/dtype."""
    out = []
    for r in data["rows"]:
        s, t = r["scitensor"], r.get("torch") or {}
        target, target_rate = _norm_targets(r["op"], r["mode"], tuple(r["shape"]), r["dtype"])
        out.append(make_row(
            benchmark="norm_softmax", case=f"{r['op']} {r['shape'][0]}x{r['shape'][1]}",
            dtype=r["dtype"], pass_=r["mode"], scitensor_ms=s["device_ms"],
            torch_ms=t.get("device_ms"), unit="GB/s", scitensor_rate=s.get("GBps"),
            torch_rate=t.get("GBps"), ceiling=COPY_CEILING_GBS, target=target,
            target_rate=target_rate))
    return out


def adapt_gpu_pooling_bn(data: dict) -> list[dict]:
    """``gpu_pooling_bn.json``: device times when the file has them (the targets are judged on
    those), else the eager event times; GB/s of the bytes touched once."""
    ceiling = (data.get("meta") or {}).get("copy_ceiling_gbs", COPY_CEILING_GBS)
    out = []
    for r in data["rows"]:
        device = "scitensor_device_ms" in r
        st_ms = r["scitensor_device_ms"] if device else r["scitensor_ms"]
        t_ms = r.get("torch_device_ms" if device else "torch_ms")
        nbytes = r.get("bytes")
        out.append(make_row(
            benchmark="pooling_bn", case=f"{r['case']} {'x'.join(map(str, r['shape']))}",
            dtype=r["dtype"], pass_=r["pass"], scitensor_ms=st_ms, torch_ms=t_ms,
            unit="GB/s", scitensor_rate=nbytes / st_ms / 1e6 if nbytes else None,
            torch_rate=nbytes / t_ms / 1e6 if nbytes and t_ms else None, ceiling=ceiling,
            target=r.get("target"), timing="device" if device else "eager"))
    return out


def adapt_gpu_attention(data: dict) -> list[dict]:
    """``gpu_attention.json``: ``results`` with ours/torch ms and TFLOP/s and a goal ratio."""
    out = []
    for r in data["results"]:
        dname, _, case = r["case"].partition(" ")
        dtype = "tf32" if "tf32" in dname else dname
        if r.get("causal"):
            case += " causal"
        out.append(make_row(
            benchmark="attention", case=case, dtype=dtype, pass_=r["mode"],
            scitensor_ms=r["ours_ms"], torch_ms=r.get("torch_ms"), unit="TFLOP/s",
            scitensor_rate=r.get("ours_tflops"), torch_rate=r.get("torch_tflops"),
            ceiling=GEMM_CEILING_TFLOPS.get(dtype), target=r.get("goal_ratio")))
    return out


def adapt_gpu_conv_v1(data: dict) -> list[dict]:
    """``gpu_conv.json`` (before ROWs): forward+backward per shape; fp32 runs TF32 math on both
    sides, so its ceiling is TF32's. Issue 8's target: at least 0.5x PyTorch."""
    tf32 = (data.get("meta") or {}).get("matmul_precision") == "tf32"
    out = []
    for r in data["rows"]:
        ceil_key = "tf32" if r["dtype"] == "fp32" and tf32 else r["dtype"]
        out.append(make_row(
            benchmark="conv", case=r["shape"], dtype=r["dtype"], pass_="fwd+bwd",
            scitensor_ms=r["scitensor_ms"], torch_ms=r.get("torch_ms"), unit="TFLOP/s",
            scitensor_rate=r.get("scitensor_tflops"), torch_rate=r.get("torch_tflops"),
            ceiling=GEMM_CEILING_TFLOPS.get(ceil_key), target=0.5))
    return out


def _rows_have(data, *keys) -> bool:
    rows = data.get("rows")
    return isinstance(rows, list) and bool(rows) and all(
        isinstance(r, dict) and all(k in r for k in keys) for r in rows)


# (name, test, adapter, where its environment is); the ROW schema is tried first
SCHEMAS = (
    ("rows", lambda d: _rows_have(d, "benchmark", "case", "dtype", "pass", "scitensor_ms",
                                  "torch_ms"), adapt_rows, "meta"),
    ("cpu_bench", lambda d: "results" in d and "machine" in d, adapt_cpu_bench, "machine"),
    ("cpu_conv", lambda d: "step_ms" in d, adapt_cpu_conv, "meta"),
    ("gpu_overhead", lambda d: _rows_have(d, "key", "what", "unit"), adapt_gpu_overhead,
     "machine"),
    ("gpu_batching_v1", lambda d: "chain_per_op_s" in d, adapt_gpu_batching_v1, None),
    ("gpu_norm_softmax", lambda d: _rows_have(d, "op", "mode", "floor_bytes"),
     adapt_gpu_norm_softmax, "env"),
    ("gpu_pooling_bn", lambda d: _rows_have(d, "case", "pass", "speed_vs_torch"),
     adapt_gpu_pooling_bn, "meta"),
    ("gpu_attention", lambda d: isinstance(d.get("results"), list) and all(
        "ours_ms" in r for r in d["results"]), adapt_gpu_attention, "meta"),
    ("gpu_conv_v1", lambda d: _rows_have(d, "shape", "speed_vs_torch", "scitensor_tflops"),
     adapt_gpu_conv_v1, "meta"),
)


def detect_schema(data) -> str:
    """The name of a benchmark JSON's layout (a key of :data:`SCHEMAS`).

    Raises:
        ValueError: the layout is none the report knows.

    Example:
        >>> detect_schema({"step_ms": {"scitensor": 1.0}})
        'cpu_conv'
    """
    if isinstance(data, dict):
        for name, test, _, _ in SCHEMAS:
            if test(data):
                return name
    keys = sorted(data)[:8] if isinstance(data, dict) else type(data).__name__
    raise ValueError(f"report: unrecognised benchmark JSON layout (top-level keys {keys}); "
                     "write ROWs as {'meta': ..., 'rows': [...]} or add an adapter")


def normalize(data: dict, module: str | None = None) -> tuple[list[dict], dict]:
    """A benchmark JSON as ``(ROWs, environment)``.

    Args:
        data: the parsed JSON of one module.
        module: the module's name, stored in each row's ``module`` key.

    Returns:
        The rows in the common schema and the environment the file names (GPU, versions).

    Example:
        >>> rows, env = normalize({"meta": {"gpu": "H100"}, "rows": [{"benchmark": "b",
        ...     "case": "c", "dtype": "fp32", "pass": "fwd", "scitensor_ms": 1.0,
        ...     "torch_ms": 2.0}]}, "gpu_b")
        >>> rows[0]["speed"], rows[0]["module"], env["gpu"]
        (2.0, 'gpu_b', 'H100')
    """
    name = detect_schema(data)
    _, _, adapter, env_key = next(s for s in SCHEMAS if s[0] == name)
    rows = adapter(data)
    for r in rows:
        r["module"] = module
    env = dict(data.get(env_key) or {}) if env_key else {
        k: data[k] for k in ("gpu", "torch") if k in data}
    if "device" in env and "gpu" not in env:
        env["gpu"] = env.pop("device")
    if "machine" in env and "cpu" not in env:  # cpu_conv: "machine" is the CPU architecture
        env["cpu"] = env.pop("machine")
    if "cpus" in env and "cores" not in env:
        env["cores"] = env.pop("cpus")
    return rows, {k: env[k] for k in ENV_KEYS if env.get(k) is not None}


# ---- collecting a folder -----------------------------------------------------------------------
def find_json(folder: Path, module: registry.Module, not_before: float | None = None):
    """The JSON file ``module`` wrote into ``folder`` (the exact name first, then the newest
    tagged one), or None. ``not_before``: ignore files older than this time stamp."""
    found = [p for p in sorted(folder.glob("*.json")) if module.matches(p.name)
             and (not_before is None or p.stat().st_mtime >= not_before)]
    if not found:
        return None
    exact = [p for p in found if p.name == f"{module.name}.json"]
    return exact[0] if exact else max(found, key=lambda p: (p.stat().st_mtime, p.name))


def collect(folder: Path, modules=None, status=None, not_before=None) -> dict:
    """Rows, sources and the modules not run, from the JSON files in ``folder``.

    Args:
        folder: where the modules wrote their JSON.
        modules: the registry entries expected there; None: every module with a JSON file,
            plus the others of the same kind (GPU or CPU) as those found.
        status: ``{module name: reason}`` for modules known not to have run (their files are
            then not read); from the runner.
        not_before: ``{module name: time stamp}``; older files are stale and ignored.

    Returns:
        ``{"rows": [...], "sources": {module: {...}}, "not_run": [{module, title, reason}]}``.
    """
    folder, status, not_before = Path(folder), status or {}, not_before or {}
    if modules is None:
        present = {m.gpu for m in registry.MODULES if find_json(folder, m)}
        modules = [m for m in registry.MODULES if m.gpu in present]
    rows, sources, not_run = [], {}, []
    for m in modules:
        if m.name in status:
            not_run.append({"module": m.name, "title": m.title, "reason": status[m.name]})
            continue
        path = find_json(folder, m, not_before.get(m.name))
        if path is None:
            not_run.append({"module": m.name, "title": m.title,
                            "reason": _missing_reason(folder, m)})
            continue
        try:
            data = json.loads(path.read_text())
            mrows, env = normalize(data, m.name)
        except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError) as e:
            not_run.append({"module": m.name, "title": m.title,
                            "reason": f"{path.name}: {type(e).__name__}: {e}"[:300]})
            continue
        rows += mrows
        sources[m.name] = {"file": path.name, "schema": detect_schema(data), "env": env,
                           "rows": len(mrows), "title": m.title}
    return {"rows": rows, "sources": sources, "not_run": not_run}


def _missing_reason(folder: Path, m: registry.Module) -> str:
    md = sorted(p.name for p in folder.glob(f"{m.name}*.md"))
    if md:
        return (f"no JSON in {folder} ({', '.join(md)} only: its figures are not in this "
                "report)")
    if not m.path.exists():
        return f"no JSON in {folder}; benchmarks/{m.name}.py does not exist yet"
    return f"no JSON in {folder}"


# ---- the report --------------------------------------------------------------------------------
def build(collected: dict, machine: dict | None = None, command: str = "") -> dict:
    """The report: rows, environment, sources, modules not run and a summary per benchmark.

    Args:
        collected: what :func:`collect` returned.
        machine: this machine's environment when the results were measured here (the
            runner's probe), merged over what the files say.
        command: the command line that made the report.
    """
    env = {"gpu": _merge_env(collected["sources"], gpu=True),
           "cpu": _merge_env(collected["sources"], gpu=False)}
    if machine:
        kind = "gpu" if machine.get("cuda_usable") else "cpu"
        env[kind].update({k: v for k, v in machine.items() if k in ENV_KEYS and v is not None})
    env = {k: v for k, v in env.items() if v}
    meta = {"generated": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "command": command, "environment": env, "sources": collected["sources"],
            "ceilings": {"copy_GBps": COPY_CEILING_GBS, "gemm_TFLOPs": GEMM_CEILING_TFLOPS}}
    if machine:
        meta["this_machine"] = machine
    return {"meta": meta, "rows": collected["rows"], "not_run": collected["not_run"],
            "summary": summarize(collected["rows"])}


def _merge_env(sources: dict, gpu: bool) -> dict:
    """One environment over the modules of a kind; differing values are listed per module."""
    envs = {name: s["env"] for name, s in sources.items() if registry.find(name).gpu == gpu}
    merged = {}
    for key in ENV_KEYS:
        values = {}
        for name, env in envs.items():
            if key in env:
                values.setdefault(str(env[key]), []).append(name)
        if len(values) == 1:
            merged[key] = next(iter(values))
        elif values:
            merged[key] = "; ".join(f"{v} ({', '.join(n)})" for v, n in values.items())
    return merged


def groups(rows: list[dict]) -> dict[str, list[dict]]:
    """Rows grouped by ``benchmark``, in order of first appearance."""
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["benchmark"], []).append(r)
    return out


def summarize(rows: list[dict]) -> dict:
    """Per benchmark (and ``all``): rows, speeds' geometric mean/min/max, targets met.

    Example:
        >>> s = summarize([make_row(benchmark="b", case="c", scitensor_ms=1.0, torch_ms=2.0,
        ...                         target=1.0)])
        >>> s["all"]["geomean_speed"], s["all"]["targets"], s["all"]["met"]
        (2.0, 1, 1)
    """
    def one(rs):
        speeds = [r["speed"] for r in rs if _pos(r["speed"])]
        judged = [r for r in rs if r["met"] is not None]
        return {"rows": len(rs), "compared": len(speeds),
                "geomean_speed": (math.exp(sum(map(math.log, speeds)) / len(speeds))
                                  if speeds else None),
                "min_speed": min(speeds, default=None), "max_speed": max(speeds, default=None),
                "targets": len(judged), "met": sum(bool(r["met"]) for r in judged),
                "missed": [_label(r) for r in judged if not r["met"]]}

    out = {name: one(rs) for name, rs in groups(rows).items()}
    out["all"] = one(rows)
    return out


def _label(r: dict) -> str:
    return f"{r['benchmark']}: {r['case']} · {r['dtype']} · {r['pass']}"


# ---- formatting --------------------------------------------------------------------------------
def fmt_ms(ms) -> str:
    """A time for the table: ms above 0.1 ms, µs below.

    Example:
        >>> fmt_ms(540.4), fmt_ms(1.5), fmt_ms(0.362), fmt_ms(0.00125), fmt_ms(None)
        ('540 ms', '1.50 ms', '0.362 ms', '1.25 µs', '—')
    """
    if not _pos(ms):
        return "—"
    if ms >= 100:
        return f"{ms:.0f} ms"
    if ms >= 1:
        return f"{ms:.2f} ms"
    if ms >= 0.1:
        return f"{ms:.3f} ms"
    us = ms * 1e3
    return f"{us:.1f} µs" if us >= 10 else f"{us:.2f} µs"


def fmt_target(r: dict) -> str:
    """The row's targets as text (``≥ 1.50x``, ``≤ 1.5 µs``, ``≥ 2600 GB/s``)."""
    parts = []
    if r.get("target") is not None:
        parts.append(f"≥ {r['target']:.2f}x")
    if r.get("target_ms") is not None:
        parts.append(f"≤ {fmt_ms(r['target_ms'])}")
    if r.get("target_rate") is not None:
        parts.append(f"≥ {r['target_rate']:.0f} {r.get('unit') or ''}".rstrip())
    return " & ".join(parts) or "—"


def fmt_ceiling(r: dict) -> str:
    """Our share of the ceiling and our rate (``84% (2500 GB/s)``)."""
    pct, rate = r.get("pct_ceiling"), r.get("scitensor_rate")
    if pct is None:
        return "—"
    share = f"{pct:.0f}%" if pct >= 1 else "<1%"
    return f"{share} ({rate:.0f} {r['unit']})" if rate >= 100 else \
        f"{share} ({rate:.3g} {r['unit']})"


def table_cells(r: dict, markdown: bool = False) -> list[str]:
    """The cells of one row: case, dtype, pass, scitensor, PyTorch, speed, % of ceiling,
    target, met."""
    met = {True: "yes", False: "**no**" if markdown else "NO", None: "—"}[r["met"]]
    speed = f"{r['speed']:.2f}x" if _pos(r["speed"]) else "—"
    return [str(r["case"]), str(r["dtype"]), str(r["pass"]), fmt_ms(r["scitensor_ms"]),
            fmt_ms(r["torch_ms"]), speed, fmt_ceiling(r), fmt_target(r), met]


HEADER = ["case", "dtype", "pass", "scitensor", "PyTorch", "speed (torch/ours)",
          "% of ceiling (ours)", "target", "met"]


def _environment_lines(report: dict) -> list[str]:
    lines = []
    for kind, env in report["meta"]["environment"].items():
        env = dict(env)
        name = env.pop(kind, None) or "unnamed"
        if kind == "gpu" and "driver" not in env:
            env["driver"] = "not recorded"
        what = ", ".join(f"{k} {v}" for k, v in env.items())
        lines.append(f"{kind.upper()} results: {name}; {what}")
    return lines


def format_text(report: dict) -> str:
    """The report as a plain-text table, grouped by benchmark."""
    lines = _environment_lines(report) + [""]
    for name, rs in groups(report["rows"]).items():
        cells = [HEADER] + [table_cells(r) for r in rs]
        widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]
        lines.append(f"== {name} ({rs[0].get('module')})")
        for c in cells:
            lines.append("  ".join(x.ljust(w) for x, w in zip(c, widths)).rstrip())
        lines.append("")
    lines += _summary_lines(report, markdown=False)
    return "\n".join(lines)


def _summary_lines(report: dict, markdown: bool) -> list[str]:
    s = report["summary"]["all"]
    bullet = "- " if markdown else "  "
    lines = [f"Targets met: {s['met']} of {s['targets']}" + ("; missed:" if s["missed"] else ".")]
    if s["missed"]:
        lines += [""] if markdown else []
        lines += [bullet + m for m in s["missed"]]
    if report["not_run"]:
        lines += ["", "Not in this report:", ""] if markdown else ["", "Not run:"]
        lines += [bullet + f"{n['module']}: {n['reason']}" for n in report["not_run"]]
    return lines


def format_markdown(report: dict) -> str:
    """The report as Markdown: environment, a per-benchmark summary, the targets met, one
    table per benchmark. The part after the title sits between snippet section markers
    ``report`` so the docs can include it without the title."""
    meta = report["meta"]
    out = ["# Benchmark report: scitensor vs PyTorch", "",
           "<!-- --8<-- [start:report] -->",
           f"Generated by `{meta['command'] or 'python -m benchmarks'}` on {meta['generated']}"
           f" from {', '.join(s['file'] for s in meta['sources'].values()) or 'no files'}. "
           "Speed = PyTorch time / scitensor time (> 1: scitensor is faster), both measured in "
           "one process on the same inputs; % of ceiling = our rate over the measured H100 "
           f"ceiling (device copy {COPY_CEILING_GBS:.0f} GB/s; GEMM TFLOP/s "
           + ", ".join(f"{k} {v:g}" for k, v in GEMM_CEILING_TFLOPS.items()) + ").", ""]
    out += [f"- {line}" for line in _environment_lines(report)] + [""]
    out += ["| benchmark | module | rows | speed: geo-mean | min | max | targets met |",
            "|---|---|---|---|---|---|---|"]
    for name, s in report["summary"].items():
        if name == "all":
            continue
        module = next(r["module"] for r in report["rows"] if r["benchmark"] == name)
        out.append(f"| {name} | {module} | {s['rows']} | {_x(s['geomean_speed'])} | "
                   f"{_x(s['min_speed'])} | {_x(s['max_speed'])} | "
                   f"{s['met']} / {s['targets']} |")
    out += [""] + _summary_lines(report, markdown=True) + [""]
    for name, rs in groups(report["rows"]).items():
        out += [f"### {name}", "", "| " + " | ".join(HEADER) + " |",
                "|" + "---|" * len(HEADER)]
        out += ["| " + " | ".join(c.replace("|", "\\|") for c in table_cells(r, True)) + " |"
                for r in rs]
        out.append("")
    out.append("<!-- --8<-- [end:report] -->")
    return "\n".join(out) + "\n"


def _x(v) -> str:
    return f"{v:.2f}x" if _pos(v) else "—"


# ---- writing -----------------------------------------------------------------------------------
def write(report: dict, out: Path, png: bool = True) -> dict:
    """Write ``report.json``, ``report.md`` and (with matplotlib) ``report.png`` into ``out``.

    Returns:
        ``{"json": path, "md": path, "png": path or None, "png_skipped": reason or None}``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "md": out / "report.md", "png": None,
             "png_skipped": None}
    paths["json"].write_text(json.dumps(report, indent=1, default=str) + "\n")
    paths["md"].write_text(format_markdown(report))
    if png:
        from .chart import write_chart

        reason = write_chart(report, out / "report.png")
        if reason is None:
            paths["png"] = out / "report.png"
        else:
            paths["png_skipped"] = reason
    return paths
