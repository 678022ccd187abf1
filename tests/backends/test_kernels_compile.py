"""Every CUDA source in backends/cuda/kernels compiles for sm_90 (runs without a GPU); sources
on Hopper's warpgroup MMA (those including ``wgmma.cuh`` or ``attention_wgmma.cuh``) for
``sm_90a``, as the backend compiles them.

Uses ``nvcc`` when it is on PATH (skipped otherwise), so a syntax error in a kernel cannot
land unseen on machines without a GPU. Sources that take ``-DST_DTYPE`` are compiled for
every dtype code (0..6); a source that refuses a code with an ``#error`` directive skips it.
"""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess

import pytest

KERNELS = pathlib.Path(__file__).parents[2] / "src" / "scitensor" / "backends" / "cuda" / "kernels"
SOURCES = sorted(KERNELS.glob("*.cu"))
NVCC = shutil.which("nvcc")


def _variants(path: pathlib.Path):
    if "ST_DTYPE" in path.read_text():
        return [f"-DST_DTYPE={code}" for code in range(7)]
    return [None]


CASES = [(p, d) for p in SOURCES for d in _variants(p)]


def _arch_specific(path: pathlib.Path) -> bool:
    return re.search(r'#include "(attention_)?wgmma\.cuh"', path.read_text()) is not None


def test_kernel_sources_exist():
    assert {p.name for p in SOURCES} >= {"elementwise.cu", "random.cu"}
    assert _arch_specific(KERNELS / "attention_fwd_wgmma.cu")
    assert _arch_specific(KERNELS / "attention_bwd_wgmma.cu")
    assert not _arch_specific(KERNELS / "attention_bwd.cu")


@pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH")
@pytest.mark.parametrize("source,define", CASES,
                         ids=[f"{p.name}{'' if d is None else d}" for p, d in CASES])
def test_compiles_for_sm90(source, define, tmp_path):
    arch = "sm_90a" if _arch_specific(source) else "sm_90"
    cmd = [NVCC, f"-arch={arch}", "--ptx", "-std=c++17", f"-I{KERNELS}", str(source),
           "-o", str(tmp_path / "out.ptx")]
    if define:
        cmd.insert(1, define)
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if res.returncode != 0 and define and "#error" in res.stderr:
        pytest.skip(f"{source.name} does not support {define}")
    assert res.returncode == 0, f"nvcc failed for {source.name} {define or ''}:\n{res.stderr}"


def _nvrtc_available() -> bool:
    try:
        from cupy_backends.cuda.libs import nvrtc

        nvrtc.getVersion()
        return True
    except Exception:  # no CuPy or no libnvrtc here
        return False


@pytest.mark.skipif(not _nvrtc_available(), reason="CuPy's NVRTC bindings or libnvrtc missing")
@pytest.mark.parametrize("source,define", CASES,
                         ids=[f"{p.name}{'' if d is None else d}" for p, d in CASES])
def test_compiles_with_nvrtc(source, define, tmp_path, monkeypatch):
    """The runtime compiler (no system headers, unlike nvcc) accepts every source too."""
    from scitensor.backends.cuda.compiler import compile_source
    from scitensor.backends.cuda.errors import KernelCompileError

    monkeypatch.setenv("SCITENSOR_KERNEL_CACHE", str(tmp_path))
    try:
        image = compile_source(source.name, source.read_text(), 90, [define] if define else [],
                               arch_specific=_arch_specific(source))
    except KernelCompileError as e:
        if define and "#error" in e.log:
            pytest.skip(f"{source.name} does not support {define}")
        raise
    assert len(image) > 0
