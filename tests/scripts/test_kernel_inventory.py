"""scripts/kernel_inventory.py: the kernel inventory parser, the launch recorder and coverage.

No GPU needed: the inventory is parsed from the ``.cu`` sources; the recorder runs in a
subprocess with the driver's launch calls stubbed out.
"""

from __future__ import annotations

import doctest
import pathlib
import re
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))

import kernel_inventory as ki  # noqa: E402

CUDA_PY = ROOT / "src" / "scitensor" / "backends" / "cuda"


def test_docstring_examples():
    assert doctest.testmod(ki).failed == 0


def test_inventory_finds_the_known_kernels():
    inv = ki.inventory()
    assert set(inv) == {p.name for p in ki.KERNEL_DIR.glob("*.cu")}
    for f, names in inv.items():
        assert names, f"no kernel found in {f}"
        assert len(names) == len(set(names)), f
        assert all(re.fullmatch(r"st_\w+", n) for n in names), (f, names)
    ours = ki.shipped()
    for name in (
        "elementwise.cu:st_add",            # BINARY(st_add, ...) macro
        "elementwise.cu:st_logical_not",    # UNARY
        "elementwise.cu:st_cast_bool",      # CAST
        "elementwise.cu:st_fill",           # plain
        "random.cu:st_bernoulli",
        "conv.cu:st_depthwise_bwd_weight_k5",     # st_..._k##MAXK
        "conv_igemm.cu:st_igemm_wgrad2",          # under #if ST_IGEMM_KIND
        "optim.cu:st_adam_mt_bf16",               # one macro, four kernels per suffix
        "optim.cu:st_clip_finalize",
        "kmeans.cu:st_kmeans_assign_bk16",
        "kmeans.cu:st_kmeans_update_partial",     # __launch_bounds__ before a new line
        "attention_bwd.cu:st_attention_bwd_dkdv_causal",
        "layer_norm.cu:st_norm_param_reduce",
        "pooling.cu:st_max_pool2d_fwd_i32",
    ):
        assert name in ours, name
    assert "optim.cu:st_adam_mt_" not in ours and "elementwise.cu:name" not in ours
    assert len(ours) > 150


def test_every_plain_declaration_is_listed():
    """Cross-check with a plain regex: each ``extern "C" __global__ ... NAME(`` outside a macro
    definition, and the count of ``__global__`` declarations outside macros."""
    decl = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?'
                      r"(\w+)\s*\(")
    inv = ki.inventory()
    found = 0
    for p in ki.KERNEL_DIR.glob("*.cu"):
        text = re.sub(r"//[^\n]*", "", p.read_text()).replace("\\\n", " ")
        text = "\n".join(line for line in text.splitlines()
                         if not line.lstrip().startswith("#define"))
        for m in decl.finditer(text):
            assert m.group(1) in inv[p.name], (p.name, m.group(1))
            found += 1
    assert found > 50


def test_loader_kernel_names_are_shipped():
    """Every complete ``"st_..."`` literal in the CUDA host code names a shipped kernel (or is
    the stem of some, as ``"st_adam_mt"`` + ``_f32``)."""
    names = {k for ks in ki.inventory().values() for k in ks}
    for p in CUDA_PY.glob("*.py"):
        for lit in re.findall(r'"(st_[a-z0-9_]*[a-z0-9])"', p.read_text()):
            assert lit in names or any(n.startswith(lit + "_") for n in names), (p.name, lit)


def test_macro_expansion_and_preprocessing():
    src = textwrap.dedent(r"""
        // extern "C" __global__ void st_commented(int n) {}
        /* extern "C" __global__ void st_block_commented(int n) {} */
        #define ARGS const float* x, int n
        #define ONE(NAME, OP)                                \
          extern "C" __global__ void NAME(ARGS) { (void)OP; }
        #define SUFFIXED(S) extern "C" __global__ void __launch_bounds__(min(256, 4 * (2))) \
          st_sfx_##S(ARGS) {}
        #define BOTH(S) ONE(st_both_##S, 1) SUFFIXED(S)
        #define NOT_A_KERNEL(a) ((a) + 1)
        #if ST_KIND == 0
        extern "C" __global__ void __launch_bounds__(128)
            st_plain(ARGS) {}
        #else
        extern "C" __global__ void st_other(ARGS) { int y = NOT_A_KERNEL(n); }
        #endif
        __global__ void not_extern_c(int n) {}
        template <int N> __global__ void templated(int n) {}
        ONE(st_one, x[0])
        BOTH(a)
        BOTH( b )
    """)
    assert ki.kernels_in_source(src) == ["st_plain", "st_other", "st_one", "st_both_a",
                                         "st_sfx_a", "st_both_b", "st_sfx_b"]


def _records(tmp_path, *sets):
    paths = []
    for i, names in enumerate(sets):
        p = tmp_path / f"rec{i}.txt"
        p.write_text("".join(n + "\n" for n in sorted(names)))
        paths.append(str(p))
    return paths


def test_coverage_union(tmp_path, capsys):
    ours = sorted(ki.shipped())
    half = len(ours) // 2
    a, b = _records(tmp_path, ours[:half], ours[half:-1])
    assert ki.main(["--coverage", a, b]) == 1
    out = capsys.readouterr().out
    assert f"kernels launched: {len(ours) - 1} of {len(ours)}; never launched: ['{ours[-1]}']" \
        in out
    assert ki.main(["--coverage", a, b, "--report-only"]) == 0
    (c,) = _records(tmp_path, ours + ["elementwise.cu:st_renamed"])
    assert ki.main(["--coverage", c, str(tmp_path / "missing.txt")]) == 0
    out = capsys.readouterr().out
    assert "missing.txt: MISSING" in out and "st_renamed" in out
    assert ki.main(["--coverage", str(tmp_path / "missing.txt")]) == 2
    assert ki.coverage({"x.cu:st_a", "x.cu:st_b"}, {"x.cu:st_a", "x.cu:st_c"}) == (
        {"x.cu:st_c"}, {"x.cu:st_b"})


RECORDER_SCRIPT = r"""
import sys
sys.path.insert(0, {scripts!r})
from cupy_backends.cuda.api import driver

calls = []
def launch_kernel(f, *args):  # no GPU here: CuPy's launch is replaced before anything binds it
    calls.append(f)
driver.launchKernel = launch_kernel

import kernel_inventory as ki
from scitensor.backends.cuda import attention, compiler, launch, optim
assert launch._launch is launch_kernel and attention._driver is driver

class Fn:
    def __init__(self, ptr):
        self.ptr = ptr
class Module:  # a loaded CUmodule: one handle per kernel name
    def get_function(self, name):
        return Fn(1000 + sum(map(ord, name)))

rec = ki.Recorder().install()
ki.Recorder.install(rec)  # idempotent
ew = compiler.LoadedModule("elementwise.cu", Module())
k = ew.function("st_add", "ppffpqi")
ew.function("st_sub", "ppffpqi")  # looked up, never launched
k(1, 32, 0, 0, 0, 1.0, 1.0, 0, 5, 0)
att = compiler.LoadedModule("attention_fwd.cu", Module())
lau = attention._Launcher(att.function("st_attention_fwd", "pppppiiiif"))
lau(1, 128, 1024, 0, 0, 0, 0, 0, 0, 1, 1, 5, 5, 0.5)
opt = compiler.LoadedModule("optim.cu", Module())
raw = opt.function("st_sgd_mt_f32", "p")
optim._MtKernel("optim.cu:st_sgd_mt_f32", raw.ptr, "p", raw)(0, [(1, 2, 0, 0, 0, 10, 0)], 9)
assert len(calls) == 3, calls
assert isinstance(attention._driver, ki._DriverProxy) and launch._launch is not launch_kernel
print(sorted(rec.names()))
rec.write({out!r})
print(rec.summary())
"""


def test_recorder_maps_launches_to_names(tmp_path):
    pytest.importorskip("cupy")
    out = tmp_path / "rec.txt"
    r = subprocess.run([sys.executable, "-c", RECORDER_SCRIPT.format(scripts=str(SCRIPTS),
                                                                     out=str(out))],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    want = ["attention_fwd.cu:st_attention_fwd", "elementwise.cu:st_add",
            "optim.cu:st_sgd_mt_f32"]
    assert str(want) in r.stdout
    assert out.read_text().split() == want
    assert f"kernels launched: 3 of {len(ki.shipped())} (this process); never launched " \
        "from attention_fwd.cu, elementwise.cu, optim.cu: [" in r.stdout
    assert "'attention_fwd.cu:st_attention_fwd_causal'" in r.stdout  # same file, not launched
    assert "'elementwise.cu:st_sub'" in r.stdout                     # looked up only
    assert "conv.cu" not in r.stdout                                  # a file never used
