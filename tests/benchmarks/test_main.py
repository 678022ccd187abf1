"""``python -m benchmarks``: the registry, running modules in their own processes under time
limits, and the command line (run mode and ``--from-json``)."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import pytest

from benchmarks import __main__ as cli
from benchmarks import registry

from .test_report import CPU_BENCH, CPU_CONV, GPU_NORM


def test_find_by_name_or_short_name():
    assert registry.find("gpu_attention") is registry.find("attention")
    assert registry.find("cpu_conv").name == "cpu_conv"
    assert registry.find("conv").name == "gpu_conv"  # the CPU module keeps its prefix
    with pytest.raises(KeyError, match="no benchmark module called 'nope'; known: cpu_bench"):
        registry.find("nope")


def test_names_are_unique_and_files_map_to_modules():
    names = [m.name for m in registry.MODULES]
    assert len(names) == len(set(names))
    assert {m.name for m in registry.MODULES if not m.gpu} == {"cpu_bench", "cpu_conv"}
    assert registry.for_file("gpu_overhead_h100.json").name == "gpu_overhead"
    assert registry.for_file("gpu_conv.json").name == "gpu_conv"
    assert registry.for_file("cpu_bench.json").name == "cpu_bench"
    assert registry.for_file("report.json") is None
    assert registry.for_file("gpu_conv.md") is None


def test_quick_runs_use_the_modules_own_flag_when_it_has_one(tmp_path):
    out = Path("OUT")
    overhead = registry.find("overhead")  # its source declares --quick
    assert overhead.has_quick_flag()
    assert overhead.command("py", out, quick=True)[-1] == "--quick"
    attention = registry.find("attention")
    if not attention.has_quick_flag():
        assert attention.command("py", out, quick=True)[-len(attention.quick_args):] == \
            list(attention.quick_args)
    assert registry.find("cpu_bench").command("py", out, quick=False) == \
        ["py", "-m", "benchmarks.cpu_bench", "--out", "OUT"]
    fake = _Fake("gpu_fake", "fake", True, quick_args=("--reps", "1"), script=tmp_path / "x.py")
    fake.script.write_text('ap.add_argument("--quick")\n')
    assert fake.has_quick_flag()
    fake.script.write_text("nothing\n")
    assert not fake.has_quick_flag()
    assert not _Fake("gpu_gone", "gone", True, script=tmp_path / "gone.py").has_quick_flag()


@dataclasses.dataclass(frozen=True)
class _Fake(registry.Module):
    """A module whose code is a script in a temporary folder."""

    script: Path = Path("/nonexistent")

    @property
    def path(self) -> Path:
        return self.script

    def command(self, python, out, quick):
        return [python, str(self.script), "--out", str(out)]


def _fake(tmp_path, name, body):
    script = tmp_path / f"{name}.py"
    script.write_text("import sys, time, json, os, pathlib\n" + body)
    return _Fake(name, name, False, script=script)


def test_run_module_success_failure_and_missing(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    ok = _fake(tmp_path, "ok", "pathlib.Path(sys.argv[2], 'ok.json').write_text('{}')\n")
    assert cli.run_module(ok, out, quick=False, timeout=60) is None
    assert (out / "ok.json").exists() and (out / "logs" / "ok.log").exists()
    bad = _fake(tmp_path, "bad", "print('working'); print('boom: no GPU', file=sys.stderr)\n"
                                 "sys.exit(3)\n")
    why = cli.run_module(bad, out, quick=False, timeout=60)
    assert why.startswith("failed (exit 3): boom: no GPU (log: ")
    gone = _Fake("gpu_gone", "gone", True, script=tmp_path / "gone.py")
    assert cli.run_module(gone, out, False, 60) == "benchmarks/gpu_gone.py does not exist yet"


def test_run_module_kills_a_module_past_its_limit(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    slow = _fake(tmp_path, "slow", "pathlib.Path(sys.argv[2], 'pid').write_text(str(os.getpid()))"
                                   "\ntime.sleep(60)\n")
    t0 = time.perf_counter()
    why = cli.run_module(slow, out, quick=False, timeout=3)
    assert time.perf_counter() - t0 < 30
    assert why.startswith("timed out after 3 s")
    pid = int((out / "pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_main_from_json(tmp_path, capsys):
    (tmp_path / "cpu_bench.json").write_text(json.dumps(CPU_BENCH))
    (tmp_path / "gpu_norm_softmax.json").write_text(json.dumps(GPU_NORM))
    assert cli.main(["--from-json", str(tmp_path), "--no-png"]) == 0
    printed = capsys.readouterr().out
    assert "== cpu (cpu_bench)" in printed and "== norm_softmax (gpu_norm_softmax)" in printed
    rep = json.loads((tmp_path / "report.json").read_text())  # --out defaults to the folder
    assert rep["meta"]["command"] == f"python -m benchmarks --from-json {tmp_path} --no-png"
    assert {n["module"] for n in rep["not_run"]} >= {"cpu_conv", "gpu_attention"}
    out = tmp_path / "only"
    assert cli.main(["--from-json", str(tmp_path), "--only", "norm_softmax,attention",
                     "--out", str(out), "--no-png"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert {r["module"] for r in rep["rows"]} == {"gpu_norm_softmax"}
    assert [n["module"] for n in rep["not_run"]] == ["gpu_attention"]


def test_main_rejects_bad_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--from-json", str(tmp_path / "missing")])
    assert e.value.code == 2 and "is not a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["--from-json", str(tmp_path), "--only", "nope"])
    assert "no benchmark module called 'nope'" in capsys.readouterr().err


def test_main_runs_the_cpu_modules_without_a_gpu(tmp_path, monkeypatch, capsys):
    ran = []

    def fake_run(module, out, quick, timeout):
        ran.append((module.name, quick, timeout))
        if module.name == "cpu_bench":
            (out / "cpu_bench.json").write_text(json.dumps(CPU_BENCH))
        return None  # cpu_conv "succeeds" but writes nothing

    monkeypatch.setattr(cli, "probe", lambda: {"cuda_usable": False, "cuda_status": "no GPU",
                                               "cpu": "test-cpu", "python": "3.x"})
    monkeypatch.setattr(cli, "run_module", fake_run)
    stale = tmp_path / "cpu_conv.json"  # from an earlier run: must not be used
    stale.write_text(json.dumps(CPU_CONV))
    os.utime(stale, (time.time() - 3600,) * 2)
    assert cli.main(["--out", str(tmp_path), "--quick", "--timeout", "9", "--no-png"]) == 0
    assert ran == [("cpu_bench", True, 9.0), ("cpu_conv", True, 9.0)]
    rep = json.loads((tmp_path / "report.json").read_text())
    assert {r["module"] for r in rep["rows"]} == {"cpu_bench"}
    assert rep["not_run"] == [{"module": "cpu_conv", "title": registry.find("cpu_conv").title,
                               "reason": f"no JSON in {tmp_path}"}]
    assert rep["meta"]["environment"]["cpu"]["cpu"] == "test-cpu"
    assert "CUDA usable: False (no GPU)" in capsys.readouterr().out


def test_main_runs_every_gpu_module_with_a_gpu(tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(cli, "probe", lambda: {"cuda_usable": True, "gpu": "Fake GPU"})
    monkeypatch.setattr(cli, "run_module",
                        lambda m, out, quick, timeout: ran.append((m.name, timeout)) or "x")
    assert cli.main(["--out", str(tmp_path), "--no-png"]) == 1  # no rows at all
    assert ran == [(m.name, m.timeout_s) for m in registry.MODULES if m.gpu]


def test_probe_reports_this_machine():
    info = cli.probe()
    assert info["python"] == ".".join(map(str, sys.version_info[:3]))
    assert isinstance(info["cuda_usable"], bool) and info["cuda_status"]
    assert info["cores"] == os.cpu_count()
