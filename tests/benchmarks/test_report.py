"""The benchmark report: adapters of every JSON layout, the ratio/ceiling/target math, the
Markdown, missing modules, the chart, and the report built from the committed results."""

from __future__ import annotations

import doctest
import json
import math
import pathlib
import re
import subprocess
import sys

import pytest

from benchmarks import chart, registry, report

ROOT = pathlib.Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"


def _one(rows, **match):
    found = [r for r in rows if all(r[k] == v for k, v in match.items())]
    assert len(found) == 1, (match, [(r["case"], r["dtype"], r["pass"]) for r in rows])
    return found[0]


# ---- synthetic JSON of each layout -------------------------------------------------------------
CPU_BENCH = {"machine": {"cpu": "x86_64", "cores": 2, "python": "3.11.7", "numpy": "2.4.6",
                         "scitensor": "0.1.0", "torch": "2.13.0+cpu", "torch_threads": 2},
             "results": [
                 {"name": "MLP train step", "unit": "ms", "scitensor": 4.0, "torch": 3.0,
                  "ratio": 4 / 3, "target_ratio": 1.5},
                 {"name": "tiny op, no grad", "unit": "µs", "scitensor": 2.0, "torch": 1.0,
                  "ratio": 2.0, "target_ratio": 1.5},
                 {"name": "tiny op forward+backward", "unit": "µs", "scitensor": 30.0,
                  "torch": None, "ratio": None, "target_ratio": None}]}
CPU_CONV = {"meta": {"python": "3.11.7", "cpus": 2, "machine": "x86_64", "torch": "2.13"},
            "step_ms": {"scitensor": 500.0, "torch": 200.0}, "slowdown_vs_torch": 2.5}
GPU_OVERHEAD = {"machine": {"gpu": "H100", "cupy": "14.2.0", "nvmath": "1.0.0"}, "rows": [
    {"key": "tiny_forward", "what": "tiny add", "scitensor": 10.0, "torch": 8.0, "unit": "us",
     "ratio": 1.25, "target": ["<=", 1.0]},
    {"key": "tiny_forward_backward", "what": "tiny mul fwd+bwd", "scitensor": 40.0,
     "torch": 80.0, "unit": "us", "ratio": 0.5, "target": ["<=", 1.0]},
    {"key": "tiny_forward_sync", "what": "tiny add, sync", "scitensor": 16.0, "torch": 20.0,
     "unit": "us", "ratio": 0.8, "target": None},
    {"key": "matmul_256x1024x512_fp32", "what": "matmul", "scitensor": 20.0, "torch": 22.0,
     "unit": "us", "ratio": 20 / 22, "target": ["<=", 1.2]},
    {"key": "gemm_8192_bf16", "what": "GEMM", "scitensor": 700.0, "torch": 800.0,
     "unit": "TFLOP/s", "ratio": 0.875, "target": [">=", 0.95]}]}
GPU_BATCHING_V1 = {
    "chain_per_op_s": {"st_sync_every_op": 16e-6, "st_async_eager": 12e-6, "st_jit": 1.4e-6,
                       "torch_sync_every_op": 24e-6, "torch_eager": 12e-6,
                       "torch_graph": 1.2e-6},
    "mlp_b128_h512_s": {"st_eager": 2e-3, "st_jit": 1e-4, "st_jit_stats": {},
                        "torch_eager": 2.5e-3, "torch_graph": 2.5e-4},
    "mlp_b1024_h2048_s": {"st_eager": 2.4e-3, "st_jit": 1.3e-3, "torch_eager": 1.7e-3,
                          "torch_graph": 1.1e-3},
    "torch": "2.11", "gpu": "H100"}
GPU_NORM = {"env": {"gpu": "H100", "torch": "2.11", "cupy": "14.2.0"}, "rows": [
    {"op": "layer_norm", "mode": "fwd", "shape": [32768, 4096], "dtype": "fp32",
     "floor_bytes": 1, "input_sets": 1,
     "scitensor": {"device_ms": 0.4, "eager_ms": 0.5, "GBps": 2500.0},
     "torch": {"device_ms": 0.6, "eager_ms": 0.6, "GBps": 1700.0}, "speedup": 1.5},
    {"op": "layer_norm", "mode": "fwd+bwd", "shape": [32768, 4096], "dtype": "bf16",
     "floor_bytes": 1, "input_sets": 1,
     "scitensor": {"device_ms": 1.0, "eager_ms": 1.1, "GBps": 1483.0},
     "torch": {"device_ms": 1.4, "eager_ms": 1.5, "GBps": 1000.0}, "speedup": 1.4},
    {"op": "cross_entropy", "mode": "fwd+bwd", "shape": [8192, 32000], "dtype": "fp32",
     "floor_bytes": 1, "input_sets": 1, "scitensor": {"device_ms": 1.0, "GBps": 2966.0},
     "torch": {"device_ms": 3.0, "GBps": 1000.0}, "speedup": 3.0},
    {"op": "softmax", "mode": "fwd", "shape": [32768, 4096], "dtype": "fp32",
     "floor_bytes": 1, "input_sets": 1, "scitensor": {"device_ms": 1.0, "GBps": 1.0},
     "torch": {"device_ms": 0.5, "GBps": 2.0}, "speedup": 0.5}]}
POOLING_ROW = {"case": "max_pool2d 3x3 s2 p1", "shape": [2, 3, 4, 4], "dtype": "fp32",
               "pass": "fwd", "bytes": 2966_000_000, "torch_ms": 3.0, "scitensor_ms": 2.0,
               "torch_gbs": 1.0, "scitensor_gbs": 1.0, "speed_vs_torch": 1.5,
               "y_rel_err": 0.0, "dx_rel_err": 0.0, "target": 1.5, "target_met": True}
GPU_POOLING_EAGER = {"meta": {"gpu": "H100", "copy_ceiling_gbs": 2966.0},
                     "rows": [dict(POOLING_ROW)]}
GPU_POOLING_DEVICE = {"meta": {"gpu": "H100"}, "rows": [dict(
    POOLING_ROW, torch_device_ms=2.0, scitensor_device_ms=2.0, device_speed_vs_torch=1.0)]}
GPU_ATTENTION = {"meta": {"device": "H100", "torch": "2.11"}, "results": [
    {"case": "bf16 B4 H16 S4096 D128", "causal": True, "mode": "fwd+bwd", "ours_ms": 4.0,
     "ours_tflops": 373.5, "torch_ms": 2.0, "torch_tflops": 747.0, "ratio": 0.5,
     "goal_ratio": 0.5},
    {"case": "fp32(tf32) B8 H16 S2048 D64", "causal": False, "mode": "fwd", "ours_ms": 1.0,
     "ours_tflops": 96.0, "torch_ms": 4.0, "torch_tflops": 24.0, "ratio": 4.0,
     "goal_ratio": 0.5}], "memory": None, "sweep": None}
GPU_CONV_V1 = {"meta": {"gpu": "H100", "matmul_precision": "tf32", "cudnn": 91900}, "rows": [
    {"shape": "N128 C64 56x56 K64 3x3", "dtype": "fp32", "torch_ms": 1.0, "scitensor_ms": 4.0,
     "speed_vs_torch": 0.25, "torch_tflops": 76.8, "scitensor_tflops": 19.2,
     "max_rel_err": 1e-6},
    {"shape": "N128 C64 56x56 K64 3x3", "dtype": "bf16", "torch_ms": 1.0, "scitensor_ms": 1.5,
     "speed_vs_torch": 2 / 3, "torch_tflops": 74.7, "scitensor_tflops": 49.8,
     "max_rel_err": 1e-3}]}
ROWS_NEW = {"meta": {"gpu": "H100", "driver": "580.1"}, "rows": [
    {"benchmark": "linear", "case": "4096x4096", "dtype": "bf16", "pass": "fwd",
     "scitensor_ms": 1.0, "torch_ms": 1.1, "speed": 1.1, "unit": "TFLOP/s",
     "scitensor_rate": 373.5, "torch_rate": 340.0, "ceiling": 747.0, "target": 1.2,
     "met": False, "extra": "kept"},
    {"benchmark": "linear", "case": "small", "dtype": "fp32", "pass": "fwd+bwd",
     "scitensor_ms": 2.0, "torch_ms": 3.0}]}

LAYOUTS = [("rows", ROWS_NEW), ("cpu_bench", CPU_BENCH), ("cpu_conv", CPU_CONV),
           ("gpu_overhead", GPU_OVERHEAD), ("gpu_batching_v1", GPU_BATCHING_V1),
           ("gpu_norm_softmax", GPU_NORM), ("gpu_pooling_bn", GPU_POOLING_EAGER),
           ("gpu_pooling_bn", GPU_POOLING_DEVICE), ("gpu_attention", GPU_ATTENTION),
           ("gpu_conv_v1", GPU_CONV_V1)]


@pytest.mark.parametrize(("schema", "data"), LAYOUTS, ids=[f"{s}-{i}" for i, (s, _) in
                                                           enumerate(LAYOUTS)])
def test_every_layout_is_detected_and_gives_complete_rows(schema, data):
    assert report.detect_schema(data) == schema
    rows, env = report.normalize(json.loads(json.dumps(data)), "mod")
    assert rows
    for r in rows:
        assert set(report.ROW_KEYS) <= set(r)
        assert r["module"] == "mod"
        assert r["speed"] is None or r["speed"] > 0
        if _pos(r["scitensor_ms"]) and _pos(r["torch_ms"]):
            assert r["speed"] == pytest.approx(r["torch_ms"] / r["scitensor_ms"])
    assert set(env) <= set(report.ENV_KEYS)


def _pos(x):
    return isinstance(x, float | int) and x > 0


def test_cpu_bench_adapter_converts_units_and_inverts_the_target():
    rows, env = report.normalize(CPU_BENCH)
    mlp = _one(rows, case="MLP train step")
    assert (mlp["pass"], mlp["scitensor_ms"], mlp["torch_ms"]) == ("step", 4.0, 3.0)
    assert mlp["speed"] == pytest.approx(0.75)
    assert mlp["target"] == pytest.approx(1 / 1.5) and mlp["met"] is True
    tiny = _one(rows, case="tiny op, no grad")
    assert tiny["scitensor_ms"] == pytest.approx(2e-3) and tiny["speed"] == pytest.approx(0.5)
    assert tiny["met"] is False  # ours/torch 2.0 > 1.5
    fb = _one(rows, case="tiny op forward+backward")
    assert fb["pass"] == "fwd+bwd" and fb["speed"] is None and fb["met"] is None
    assert env["cpu"] == "x86_64" and env["cores"] == 2


def test_cpu_conv_adapter():
    (row,), env = report.normalize(CPU_CONV)
    assert row["speed"] == pytest.approx(0.4) and row["target"] == 0.5 and row["met"] is False
    assert env == {"cpu": "x86_64", "cores": 2, "python": "3.11.7", "torch": "2.13"}


def test_gpu_overhead_adapter_times_rates_and_targets():
    rows, env = report.normalize(GPU_OVERHEAD)
    tiny = _one(rows, case="tiny add")
    assert tiny["benchmark"] == "overhead" and tiny["pass"] == "fwd"
    assert tiny["scitensor_ms"] == pytest.approx(0.010) and tiny["speed"] == pytest.approx(0.8)
    assert tiny["target"] == pytest.approx(1.0) and tiny["met"] is False
    assert _one(rows, case="tiny mul fwd+bwd")["met"] is True
    assert _one(rows, case="tiny add, sync")["pass"] == "fwd, sync each op"
    mm = _one(rows, case="256x1024 @ 1024x512")
    flop = 2 * 256 * 1024 * 512
    assert mm["scitensor_rate"] == pytest.approx(flop / 20e-6 / 1e12)
    assert mm["target"] == pytest.approx(1 / 1.2) and mm["met"] is True
    assert mm["pct_ceiling"] == pytest.approx(100 * mm["scitensor_rate"] / 51.3)
    gemm = _one(rows, dtype="bf16")
    assert gemm["scitensor_ms"] == pytest.approx(2 * 8192**3 / 700e12 * 1e3)
    assert gemm["speed"] == pytest.approx(700 / 800)  # = torch ms / ours
    assert gemm["target"] == 0.95 and gemm["met"] is False
    assert gemm["ceiling"] == 747.0 and gemm["pct_ceiling"] == pytest.approx(100 * 700 / 747)
    assert env == {"gpu": "H100", "cupy": "14.2.0", "nvmath": "1.0.0"}


def test_gpu_batching_v1_adapter_compares_like_with_like():
    rows, env = report.normalize(GPU_BATCHING_V1)
    assert len(rows) == 3 + 2 * 2
    assert not any("torch eager" in r["pass"] for r in rows)
    jit = _one(rows, case="chain of tiny ops (per op)", **{"pass": "jit vs CUDA graph"})
    assert jit["scitensor_ms"] == pytest.approx(1.4e-3)
    assert jit["target_ms"] == pytest.approx(1.5e-3) and jit["met"] is True
    b128 = [r for r in rows if "batch 128" in r["case"]]
    eager = _one(b128, **{"pass": "step, eager"})
    assert eager["speed"] == pytest.approx(1.25) and eager["target"] == 1.0 and eager["met"]
    graph = _one(b128, **{"pass": "step, jit vs CUDA graph"})
    assert graph["speed"] == pytest.approx(2.5) and graph["target"] == pytest.approx(1 / 1.1)
    big_graph = _one([r for r in rows if "batch 1024" in r["case"]],
                     **{"pass": "step, jit vs CUDA graph"})
    assert big_graph["met"] is False  # 1.1 / 1.3 < 1 / 1.1
    assert env == {"gpu": "H100", "torch": "2.11"}


def test_gpu_norm_softmax_adapter_targets_speed_and_bandwidth():
    rows, _ = report.normalize(GPU_NORM)
    fwd = _one(rows, dtype="fp32", case="layer_norm 32768x4096")
    assert fwd["unit"] == "GB/s" and fwd["ceiling"] == 2966.0
    assert fwd["target"] is None and fwd["target_rate"] == 2600.0
    assert fwd["met"] is False  # 2500 GB/s < 2600 although 1.5x PyTorch
    assert fwd["pct_ceiling"] == pytest.approx(100 * 2500 / 2966)
    bwd = _one(rows, dtype="bf16")
    assert bwd["target"] == 1.5 and bwd["met"] is False and bwd["pass"] == "fwd+bwd"
    ce = _one(rows, case="cross_entropy 8192x32000")
    assert ce["target"] == 1.2 and ce["met"] is True and ce["pct_ceiling"] == pytest.approx(100)
    sm = _one(rows, case="softmax 32768x4096")
    assert sm["speed"] == pytest.approx(0.5) and sm["met"] is None


def test_gpu_pooling_adapter_prefers_device_times():
    (eager,), env = report.normalize(GPU_POOLING_EAGER)
    assert eager["timing"] == "eager" and eager["speed"] == pytest.approx(1.5)
    assert eager["met"] is True and eager["case"] == "max_pool2d 3x3 s2 p1 2x3x4x4"
    assert eager["scitensor_rate"] == pytest.approx(1483.0)
    assert eager["pct_ceiling"] == pytest.approx(50.0)
    (device,), _ = report.normalize(GPU_POOLING_DEVICE)
    assert device["timing"] == "device" and device["speed"] == pytest.approx(1.0)
    assert device["met"] is False  # judged on device time, as the module does
    assert env == {"gpu": "H100"}


def test_gpu_attention_adapter():
    rows, env = report.normalize(GPU_ATTENTION)
    bf = _one(rows, dtype="bf16")
    assert bf["case"] == "B4 H16 S4096 D128 causal" and bf["pass"] == "fwd+bwd"
    assert bf["speed"] == pytest.approx(0.5) and bf["met"] is True  # 0.5 >= 0.5
    assert bf["pct_ceiling"] == pytest.approx(50.0)
    tf = _one(rows, dtype="tf32")
    assert tf["case"] == "B8 H16 S2048 D64" and tf["ceiling"] == 384.0
    assert env == {"gpu": "H100", "torch": "2.11"}


def test_gpu_conv_v1_adapter_uses_the_tf32_ceiling_for_fp32():
    rows, env = report.normalize(GPU_CONV_V1)
    fp32 = _one(rows, dtype="fp32")
    assert fp32["ceiling"] == 384.0 and fp32["pct_ceiling"] == pytest.approx(5.0)
    assert fp32["target"] == 0.5 and fp32["met"] is False
    bf16 = _one(rows, dtype="bf16")
    assert bf16["ceiling"] == 747.0 and bf16["met"] is True
    assert env == {"gpu": "H100", "cudnn": 91900}


def test_row_schema_keeps_what_the_module_says():
    rows, env = report.normalize(ROWS_NEW, "gpu_linear")
    first, second = rows
    assert first["speed"] == 1.1 and first["met"] is False and first["extra"] == "kept"
    assert first["pct_ceiling"] == pytest.approx(50.0)
    assert second["speed"] == pytest.approx(1.5) and second["unit"] is None
    assert second["target"] is None and second["met"] is None
    assert env == {"gpu": "H100", "driver": "580.1"}


@pytest.mark.parametrize("data", [{"something": 1}, [1, 2], {"rows": []},
                                  {"rows": [{"benchmark": "x"}]}])
def test_unknown_layout_is_an_error_naming_the_fix(data):
    with pytest.raises(ValueError, match=r"unrecognised benchmark JSON layout.*add an adapter"):
        report.detect_schema(data)


# ---- ratio, ceiling and target math ------------------------------------------------------------
def test_speed_is_torch_time_over_ours_else_the_rates_ratio():
    assert report.make_row(scitensor_ms=2.0, torch_ms=5.0)["speed"] == pytest.approx(2.5)
    r = report.make_row(scitensor_rate=300.0, torch_rate=200.0, unit="TFLOP/s")
    assert r["speed"] == pytest.approx(1.5)
    for bad in (0.0, -1.0, None, float("nan"), float("inf")):
        assert report.make_row(scitensor_ms=bad, torch_ms=1.0)["speed"] is None
        assert report.make_row(scitensor_ms=1.0, torch_ms=bad)["speed"] is None


def test_pct_ceiling():
    r = report.make_row(scitensor_rate=1483.0, ceiling=2966.0, unit="GB/s")
    assert r["pct_ceiling"] == pytest.approx(50.0)
    assert report.make_row(scitensor_rate=1.0)["pct_ceiling"] is None
    assert report.make_row(ceiling=1.0)["pct_ceiling"] is None


@pytest.mark.parametrize(("fields", "met"), [
    ({"speed": 1.0, "target": 1.0}, True),
    ({"speed": 0.999, "target": 1.0}, False),
    ({"speed": None, "target": 1.0}, None),
    ({"speed": 2.0}, None),
    ({"scitensor_ms": 1.0, "target_ms": 1.5}, True),
    ({"scitensor_ms": 2.0, "target_ms": 1.5}, False),
    ({"scitensor_rate": 2700.0, "target_rate": 2600.0}, True),
    ({"speed": 2.0, "target": 1.0, "scitensor_rate": 2500.0, "target_rate": 2600.0}, False),
    ({"speed": 2.0, "target": 1.0, "scitensor_rate": None, "target_rate": 2600.0}, None),
])
def test_judge(fields, met):
    row = {"target": None, "target_ms": None, "target_rate": None, **fields}
    assert report.judge(row) is met


def test_summary_counts_and_geometric_mean():
    rows = [report.make_row(benchmark="a", case="1", scitensor_ms=1.0, torch_ms=2.0, target=1.0),
            report.make_row(benchmark="a", case="2", scitensor_ms=4.0, torch_ms=2.0, target=1.0),
            report.make_row(benchmark="b", case="3", scitensor_ms=1.0, torch_ms=None)]
    s = report.summarize(rows)
    assert s["a"]["geomean_speed"] == pytest.approx(1.0)
    assert (s["a"]["min_speed"], s["a"]["max_speed"]) == (0.5, 2.0)
    assert (s["a"]["targets"], s["a"]["met"]) == (2, 1)
    assert s["a"]["missed"] == ["a: 2 · None · None"]
    assert s["b"]["compared"] == 0 and s["b"]["geomean_speed"] is None
    assert s["all"]["rows"] == 3 and s["all"]["targets"] == 2


def test_formatting_helpers():
    assert report.fmt_ms(0.0125) == "12.5 µs"
    assert report.fmt_target({"target": 1.5, "target_ms": 1.5e-3, "target_rate": 2600,
                              "unit": "GB/s"}) == "≥ 1.50x & ≤ 1.50 µs & ≥ 2600 GB/s"
    assert report.fmt_target({}) == "—"


def test_module_doctests():
    for mod in (report, registry):
        result = doctest.testmod(mod)
        assert result.attempted > 0 and result.failed == 0, mod.__name__


# ---- collecting a folder, missing modules, Markdown --------------------------------------------
def _write(folder, name, data):
    (folder / name).write_text(json.dumps(data))


def test_collect_lists_missing_and_broken_modules(tmp_path):
    _write(tmp_path, "gpu_overhead_h100.json", GPU_OVERHEAD)
    _write(tmp_path, "gpu_norm_softmax.json", GPU_NORM)
    (tmp_path / "gpu_attention.md").write_text("# a table only\n")
    (tmp_path / "gpu_conv.json").write_text("{not json")
    _write(tmp_path, "gpu_pooling_bn.json", {"unexpected": True})
    _write(tmp_path, "report.json", {"rows": []})  # the report's own output is not a module's
    got = report.collect(tmp_path)
    assert {r["module"] for r in got["rows"]} == {"gpu_overhead", "gpu_norm_softmax"}
    assert set(got["sources"]) == {"gpu_overhead", "gpu_norm_softmax"}
    assert got["sources"]["gpu_overhead"]["file"] == "gpu_overhead_h100.json"
    why = {n["module"]: n["reason"] for n in got["not_run"]}
    gpu_modules = {m.name for m in registry.MODULES if m.gpu}
    assert set(why) == gpu_modules - {"gpu_overhead", "gpu_norm_softmax"}  # no CPU ones
    assert "gpu_attention.md only" in why["gpu_attention"]
    assert why["gpu_conv"].startswith("gpu_conv.json: JSONDecodeError")
    assert "unrecognised benchmark JSON layout" in why["gpu_pooling_bn"]
    assert "no JSON in" in why["gpu_batching"]


def test_collect_with_runner_status_and_stale_files(tmp_path):
    _write(tmp_path, "cpu_bench.json", CPU_BENCH)
    _write(tmp_path, "cpu_conv.json", CPU_CONV)
    mods = [registry.find("cpu_bench"), registry.find("cpu_conv")]
    got = report.collect(tmp_path, mods, status={"cpu_conv": "timed out after 5 s"},
                         not_before={"cpu_bench": 4e9})  # the file is older than the run
    assert got["rows"] == []
    why = {n["module"]: n["reason"] for n in got["not_run"]}
    assert why == {"cpu_bench": f"no JSON in {tmp_path}", "cpu_conv": "timed out after 5 s"}


def test_find_json_prefers_the_exact_name(tmp_path):
    for name in ("gpu_batching_h100.json", "gpu_batching.json", "gpu_batching_x.md"):
        (tmp_path / name).write_text("{}")
    assert report.find_json(tmp_path, registry.find("batching")).name == "gpu_batching.json"
    (tmp_path / "gpu_batching.json").unlink()
    assert report.find_json(tmp_path, registry.find("batching")).name == \
        "gpu_batching_h100.json"
    assert report.find_json(tmp_path, registry.find("attention")) is None


def _report(tmp_path):
    _write(tmp_path, "gpu_overhead_h100.json", GPU_OVERHEAD)
    _write(tmp_path, "gpu_norm_softmax.json", GPU_NORM)
    rows_new = json.loads(json.dumps(ROWS_NEW))
    rows_new["rows"][0]["case"] = "a | b"
    _write(tmp_path, "gpu_linear.json", rows_new)
    return report.build(report.collect(tmp_path), command="python -m benchmarks --x")


def test_markdown_tables_summary_and_not_run(tmp_path):
    rep = _report(tmp_path)
    md = report.format_markdown(rep)
    assert md.startswith("# Benchmark report")
    assert "<!-- --8<-- [start:report] -->" in md and md.rstrip().endswith("[end:report] -->")
    assert "`python -m benchmarks --x`" in md
    for name in ("overhead", "gemm", "norm_softmax", "linear"):
        assert f"\n### {name}\n" in md
    header = "| " + " | ".join(report.HEADER) + " |"
    assert md.count(header) == 4
    assert "| a \\| b | bf16 | fwd | 1.00 ms | 1.10 ms | 1.10x | 50% (374 TFLOP/s) | ≥ 1.20x " \
           "| **no** |" in md
    assert "| layer_norm 32768x4096 | fp32 | fwd | 0.400 ms | 0.600 ms | 1.50x | 84% " \
           "(2500 GB/s) | ≥ 2600 GB/s | **no** |" in md
    s = rep["summary"]["all"]
    assert f"Targets met: {s['met']} of {s['targets']}; missed:" in md
    assert "\nNot in this report:\n\n- gpu_batching: no JSON in" in md
    assert "driver 580.1" in md and "GPU results: H100;" in md
    # every row of every benchmark table has the header's number of cells
    in_table, checked = False, 0
    for line in md.splitlines():
        if line == header:
            in_table = True
        elif not line.startswith("|"):
            in_table = False
        elif in_table and not line.startswith("|---"):
            assert len(re.split(r"(?<!\\)\|", line)[1:-1]) == len(report.HEADER), line
            checked += 1
    assert checked == len(rep["rows"])


def test_text_table_groups_rows(tmp_path):
    text = report.format_text(_report(tmp_path))
    assert "== gemm (gpu_overhead)" in text and "== linear (gpu_linear)" in text
    assert text.index("== overhead") < text.index("== gemm") < text.index("== norm_softmax")
    assert "Not run:" in text and " NO" in text


def test_environment_merges_and_lists_differences(tmp_path):
    _write(tmp_path, "gpu_overhead_h100.json", GPU_OVERHEAD)
    _write(tmp_path, "gpu_norm_softmax.json", GPU_NORM)
    _write(tmp_path, "cpu_conv.json", CPU_CONV)
    rep = report.build(report.collect(tmp_path),
                       machine={"cuda_usable": True, "driver": "580.1", "gpu": "H100 probe"})
    env = rep["meta"]["environment"]
    assert env["gpu"]["cupy"] == "14.2.0" and env["gpu"]["driver"] == "580.1"
    assert env["gpu"]["gpu"] == "H100 probe"
    assert env["cpu"] == {"cpu": "x86_64", "cores": "2", "python": "3.11.7", "torch": "2.13"}
    _write(tmp_path, "gpu_attention.json", dict(GPU_ATTENTION, meta={"device": "A100"}))
    env = report.build(report.collect(tmp_path))["meta"]["environment"]
    assert env["gpu"]["gpu"] == "H100 (gpu_overhead, gpu_norm_softmax); A100 (gpu_attention)"


def test_write_creates_json_and_markdown(tmp_path):
    rep = _report(tmp_path)
    paths = report.write(rep, tmp_path / "out", png=False)
    saved = json.loads(paths["json"].read_text())
    assert len(saved["rows"]) == len(rep["rows"]) and saved["not_run"] == rep["not_run"]
    assert paths["md"].read_text() == report.format_markdown(rep)
    assert paths["png"] is None and not (tmp_path / "out" / "report.png").exists()


def test_png_is_written_when_matplotlib_is_present(tmp_path):
    pytest.importorskip("matplotlib")
    paths = report.write(_report(tmp_path), tmp_path / "out")
    assert paths["png_skipped"] is None
    data = paths["png"].read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000


def test_png_is_skipped_with_a_reason_without_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    paths = report.write(_report(tmp_path), tmp_path / "out")
    assert paths["png"] is None and "matplotlib is not installed" in paths["png_skipped"]
    assert "scitensor[bench]" in paths["png_skipped"]
    assert (tmp_path / "out" / "report.md").exists()


def test_chart_without_comparable_rows():
    pytest.importorskip("matplotlib")
    rep = {"rows": [report.make_row(benchmark="b", case="c", scitensor_ms=1.0)],
           "meta": {"environment": {}}}
    assert "no row" in chart.write_chart(rep, pathlib.Path("/nonexistent/x.png"))


# ---- the committed results ---------------------------------------------------------------------
def test_from_json_on_the_committed_results_runs(tmp_path):
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--from-json", str(RESULTS),
                           "--out", str(tmp_path), "--no-png"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rep = json.loads((tmp_path / "report.json").read_text())
    committed = {p.name for p in RESULTS.glob("*.json") if registry.for_file(p.name)}
    assert {s["file"] for s in rep["meta"]["sources"].values()} == committed
    assert rep["rows"] and all(r["speed"] for r in rep["rows"])
    not_run = {n["module"] for n in rep["not_run"]}
    for m in registry.MODULES:  # every module is either in the report or said to be missing
        assert (m.name in rep["meta"]["sources"]) != (m.name in not_run), m.name
    assert "Targets met:" in done.stdout and (tmp_path / "report.md").exists()


def test_committed_report_matches_the_committed_result_files():
    """Every number in benchmarks/results/report.json comes from the committed JSON files."""
    path = RESULTS / "report.json"
    if not path.exists():
        pytest.skip("no committed report")
    committed = json.loads(path.read_text())
    fresh = report.collect(RESULTS)
    key = lambda r: (r["module"], r["benchmark"], r["case"], r["dtype"], r["pass"])
    assert [key(r) for r in committed["rows"]] == [key(r) for r in fresh["rows"]]
    for old, new in zip(committed["rows"], fresh["rows"]):
        for k in ("scitensor_ms", "torch_ms", "speed", "scitensor_rate", "target", "met"):
            assert old[k] == new[k] or (isinstance(old[k], float)
                                        and math.isclose(old[k], new[k])), (key(old), k)
    summary, fresh_summary = committed["summary"]["all"], report.summarize(fresh["rows"])["all"]
    assert summary.keys() == fresh_summary.keys()
    for k, v in summary.items():  # a geometric mean may differ in the last bit across Pythons
        assert v == fresh_summary[k] or (isinstance(v, float)
                                         and math.isclose(v, fresh_summary[k])), k
    md = (RESULTS / "report.md").read_text()
    assert md == report.format_markdown(committed)


def test_docs_chart_is_the_committed_chart():
    docs_png = ROOT / "docs" / "assets" / "benchmark-speed.png"
    results_png = RESULTS / "report.png"
    if not (docs_png.exists() and results_png.exists()):
        pytest.skip("chart not committed")
    assert docs_png.read_bytes() == results_png.read_bytes()


def test_readme_performance_figures_come_from_the_committed_report():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Performance", 1)[1].split("\n## ", 1)[0]
    rep = json.loads((RESULTS / "report.json").read_text())
    speeds = {f"{r['speed']:.2f}" for r in rep["rows"] if r["speed"]}
    quoted = re.findall(r"(\d+\.\d+)x", section)
    assert quoted, "the README's Performance section quotes no ratio"
    assert set(quoted) <= speeds, set(quoted) - speeds
    s = rep["summary"]["all"]
    m = re.search(r"(\d+) of the report's (\d+) targets", section)
    assert m and (int(m[1]), int(m[2])) == (s["met"], s["targets"])
