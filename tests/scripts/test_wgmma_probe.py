"""scripts/wgmma_probe.py: the layout probe's CUDA source compiles for sm_90a (nvcc, when on
PATH) and the probe passes on an sm_90 GPU (run there; it exits 2 elsewhere)."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys

import pytest

SCRIPT = pathlib.Path(__file__).parents[2] / "scripts" / "wgmma_probe.py"


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH")
def test_probe_source_compiles_for_sm90a(tmp_path):
    src = tmp_path / "probe.cu"
    res = subprocess.run([sys.executable, str(SCRIPT), "--dump-source", str(src)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "wgmma.mma_async" in src.read_text()
    out = subprocess.run(["nvcc", "-arch=sm_90a", "--ptx", "-std=c++17", str(src), "-o",
                          str(tmp_path / "probe.ptx")], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr


def test_probe_passes_on_hopper(device):
    if device.type != "cuda" or getattr(device.backend, "arch", None) != 90:
        pytest.skip("needs an sm_90 GPU")
    res = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0 and "OVERALL: PASS" in res.stdout, res.stdout[-3000:]
