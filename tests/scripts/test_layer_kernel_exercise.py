"""scripts/layer_kernel_exercise.py without a GPU: a dry run on the CPU backend, the conv
routes its cases take, and the pooling / batch-norm / dropout / linear sections through the
CUDA backend's real host code with the kernels built for the host (``tests/backends``)."""

from __future__ import annotations

import pathlib
import sys

import pytest

import scitensor as st

from ..backends import host_cuda

ROOT = pathlib.Path(__file__).resolve().parents[2]
if str(ROOT / "scripts") not in sys.path:
    sys.path.insert(0, str(ROOT / "scripts"))

import kernel_inventory as ki  # noqa: E402
import layer_kernel_exercise as lx  # noqa: E402


def test_dry_run_on_the_cpu_passes(capsys):
    assert lx.main(["--device", "cpu"]) == 0
    out = capsys.readouterr().out
    for name in lx.SECTIONS:
        assert f"== {name}: " in out
    assert "raised: none; mismatches: 0" in out


def test_failures_are_loud(monkeypatch, capsys):
    assert lx.main(["--device", "cpu", "--only", "pool,nope"]) == 2

    def broken(c):
        raise ValueError("boom")

    def wrong(c):
        c.check("x", [1.0, 2.0], [1.0, 2.5], 1e-3)

    monkeypatch.setitem(lx.SECTIONS, "broken", broken)
    monkeypatch.setitem(lx.SECTIONS, "wrong", wrong)
    assert lx.main(["--device", "cpu", "--only", "broken,wrong,dropout"]) == 1
    out = capsys.readouterr().out
    assert "SECTION broken RAISED" in out and "MISMATCH wrong: x: err 2.00e-01" in out
    assert "== dropout: " in out  # the sections after a failure still run


def test_conv_cases_take_every_route():
    routes = {name: {(p, r) for run in runs for _, p, r in lx.conv_plan(run, 90)}
              for name, runs in lx.CONV_RUNS.items()}
    for name in ("igemm16", "igemm32"):
        for p in lx.PASSES:
            assert {(p, "igemm/v1"), (p, "igemm/v2")} <= routes[name], (name, p)
        assert ("dgrad", "im2col") in routes[name]  # strided input gradient
    assert {(p, "im2col") for p in lx.PASSES} <= routes["conv"]
    assert {(p, "depthwise") for p in lx.PASSES} <= routes["depthwise"]
    assert ("wgrad", "igemm/v1") in routes["depthwise"]  # 9x9: not the depthwise kernels
    # igemm sections cover each element type, and the conv section float64
    assert {r.dt for r in lx.CONV_RUNS["igemm16"]} == {st.bfloat16, st.float16}
    assert {r.precision for r in lx.CONV_RUNS["igemm32"]} == {"highest", "tf32"}
    assert st.float64 in {r.dt for r in lx.CONV_RUNS["conv"]}


@pytest.mark.skipif(host_cuda.GXX is None, reason="g++ is not on PATH")
def test_sections_on_host_built_kernels():
    """The real CUDA host code (path choice, argument packing, grids) with the kernels built
    by g++: every comparison passes and every kernel of the four sources is launched."""
    from ..backends import test_cuda_linear_emulated as lin_emu

    pool_be = host_cuda.host_backend_class()(st.Device("cpu"))
    lin_be = lin_emu.host_backend(lin_emu.FakeCublasLt())
    inv = ki.inventory()
    for sections, be, sources in ((("pool", "batchnorm", "dropout"), pool_be,
                                   ("pooling.cu", "batchnorm.cu", "dropout.cu")),
                                  (("linear",), lin_be, ("linear.cu",))):
        c = lx.Ctx("cpu")
        c.be = be
        for name in sections:
            c.name = name
            lx.SECTIONS[name](c)
        assert c.checks > 100 and not c.bad, c.bad[:10]
        launched = {k[2] if len(k) == 3 else k[0] for k, v in be.kernels.items()
                    if getattr(v, "launches", 1)}
        want = {k for src in sources for k in inv[src]}
        assert want <= launched, sorted(want - launched)


def test_gpu_check_runs_every_section_once():
    """scripts/gpu_check.sh's sanitize steps split the sections among themselves."""
    import re

    text = (ROOT / "scripts" / "gpu_check.sh").read_text()
    steps = re.search(r'LAYER_STEPS="([^"]*)"', text).group(1).split()
    sections = [s for step in steps for s in step.split("=", 1)[1].split(",")]
    assert sorted(sections) == sorted(lx.SECTIONS)
