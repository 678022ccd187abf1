"""Every benchmark side by side with PyTorch, and one report: ``python -m benchmarks``.

Without a usable CUDA GPU it runs the CPU benchmarks (``cpu_bench``, ``cpu_conv``); with one,
every GPU benchmark module. Each module runs in its own process under its own time limit, so
one failure or hang costs only that module's rows: modules that do not exist yet, fail, time
out or write no JSON are listed as "not run" with the reason. Then it prints a table grouped
by benchmark and writes ``report.json``, ``report.md`` and ``report.png`` (matplotlib) into
``--out``; each module's log goes to ``--out/logs/``.

    python -m benchmarks [--out DIR] [--only a,b] [--quick] [--timeout S]
    python -m benchmarks --from-json DIR [--out DIR] [--only a,b] [--probe] [--docs]

``--from-json DIR`` runs nothing: it builds the report from the JSON files the modules
already wrote into DIR (the GPU script runs them one by one under time limits, then this).
``--probe`` adds this machine's GPU, driver and versions (use it where the files were just
written). ``--docs`` also copies the chart to ``docs/assets/benchmark-speed.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from . import registry, report

REPO = Path(__file__).resolve().parents[1]
DOCS_PNG = REPO / "docs" / "assets" / "benchmark-speed.png"
PROBE = r"""
import importlib, json, os, platform
info = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
        "python": platform.python_version()}
for name in ("numpy", "cupy", "torch", "nvmath", "scitensor"):
    try:
        info[name] = importlib.import_module(name).__version__
    except Exception as e:
        info[name] = None
try:
    import scitensor as st
    info["cuda_usable"], info["cuda_status"] = st.cuda_status()
except Exception as e:
    info["cuda_usable"], info["cuda_status"] = False, f"{type(e).__name__}: {e}"
print(json.dumps(info))
"""


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO), str(REPO / "src")] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def probe() -> dict:
    """This machine: versions, whether CUDA is usable, and the GPU and driver
    (``nvidia-smi``), found in child processes so this one never touches the GPU."""
    info: dict = {"cuda_usable": False}
    try:
        done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                              timeout=180, env=_env(), cwd=REPO)
        info.update(json.loads(done.stdout.strip().splitlines()[-1]))
    except (subprocess.TimeoutExpired, ValueError, IndexError) as e:
        info["cuda_status"] = f"probe failed: {type(e).__name__}: {e}"
    if shutil.which("nvidia-smi"):
        try:
            done = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version",
                                   "--format=csv,noheader"], capture_output=True, text=True,
                                  timeout=30)
            first = done.stdout.strip().splitlines()[0]
            info["gpu"], info["driver"] = (s.strip() for s in first.split(",", 1))
        except (subprocess.TimeoutExpired, IndexError, ValueError, OSError):
            pass
    return info


def run_module(module: registry.Module, out: Path, quick: bool, timeout: float) -> str | None:
    """Run one module in its own process group; None on success, else why it did not run."""
    if not module.path.exists():
        return f"benchmarks/{module.name}.py does not exist yet"
    cmd = module.command(sys.executable, out, quick)
    log = out / "logs" / f"{module.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"-- {module.name}: {shlex.join(cmd[1:])} (limit {timeout:.0f} s)", flush=True)
    t0 = time.perf_counter()
    with log.open("w") as fh:
        fh.write(f"$ {shlex.join(cmd)}\n")
        fh.flush()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO,
                                env=_env(), start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the module's own process group
            proc.wait()
            return f"timed out after {timeout:.0f} s (log: {log})"
    took = time.perf_counter() - t0
    print(f"   rc={rc} in {took:.1f} s", flush=True)
    if rc != 0:
        return f"failed (exit {rc}): {_last_line(log)} (log: {log})"
    return None


def _last_line(log: Path) -> str:
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1][:200] if lines else "no output"


def _selected(only: str | None, gpu: bool) -> list[registry.Module]:
    if only:
        return [registry.find(n.strip()) for n in only.split(",") if n.strip()]
    return [m for m in registry.MODULES if m.gpu == gpu]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None,
                    help="folder for the modules' JSON, the logs and the report (default: "
                         "build/bench; with --from-json: the folder read)")
    ap.add_argument("--only", default=None,
                    help="comma-separated modules (gpu_attention or attention, cpu_bench)")
    ap.add_argument("--quick", action="store_true", help="small runs (a smoke test)")
    ap.add_argument("--timeout", type=float, default=None,
                    help="time limit per module in seconds (default: each module's own)")
    ap.add_argument("--from-json", type=Path, default=None, metavar="DIR",
                    help="build the report from the JSON files in DIR; run nothing")
    ap.add_argument("--probe", action="store_true",
                    help="with --from-json: record this machine's GPU, driver and versions")
    ap.add_argument("--docs", action="store_true",
                    help=f"also copy the chart to {DOCS_PNG.relative_to(REPO)}")
    ap.add_argument("--no-png", action="store_true", help="skip the chart")
    args = ap.parse_args(argv)
    command = "python -m benchmarks " + shlex.join(argv if argv is not None else sys.argv[1:])
    try:
        if args.from_json is not None:
            folder = args.from_json
            if not folder.is_dir():
                ap.error(f"--from-json: {folder} is not a folder")
            out = args.out or folder
            modules = _selected(args.only, gpu=True) if args.only else None
            collected = report.collect(folder, modules)
            machine = probe() if args.probe else None
        else:
            out = args.out or REPO / "build" / "bench"
            out.mkdir(parents=True, exist_ok=True)
            machine = probe()
            gpu = bool(machine.get("cuda_usable"))
            print(f"CUDA usable: {gpu} ({machine.get('cuda_status')}); writing to {out}",
                  flush=True)
            modules = _selected(args.only, gpu)
            status, started = {}, {}
            for m in modules:
                started[m.name] = time.time() - 1.0  # file systems round time stamps
                why = run_module(m, out, args.quick, args.timeout or m.timeout_s)
                if why is not None:
                    status[m.name] = why
            collected = report.collect(out, modules, status, started)
    except KeyError as e:
        ap.error(str(e.args[0]))
    rep = report.build(collected, machine, command)
    paths = report.write(rep, out, png=not args.no_png)
    print(report.format_text(rep))
    print(f"\nwrote {paths['json']}, {paths['md']}"
          + (f", {paths['png']}" if paths["png"] else "")
          + (f"\nno chart: {paths['png_skipped']}" if paths["png_skipped"] else ""))
    if not rep["rows"]:
        print(f"no rows: no benchmark module's JSON in {args.from_json or out} could be read",
              file=sys.stderr)
    if args.docs and paths["png"]:
        DOCS_PNG.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(paths["png"], DOCS_PNG)
        print(f"copied the chart to {DOCS_PNG}")
    return 0 if rep["rows"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
