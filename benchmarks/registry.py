"""The benchmark modules ``python -m benchmarks`` knows: how to run each and where it writes.

Each entry names a module ``benchmarks/<name>.py``, whether it needs a GPU, the arguments of a
full and of a quick run, its time limit, and the JSON file names it writes into ``--out``.
Modules written to the common rules (``--out DIR [--quick]``, ``DIR/<name>.json`` with ROWs)
need no special arguments; older ones get theirs here, and their JSON is normalised by the
adapters in ``benchmarks/report.py``.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Module:
    """One benchmark module.

    Args:
        name: module name in ``benchmarks/`` (``gpu_attention``).
        title: what it measures, for the report.
        gpu: whether it needs a CUDA GPU.
        args: extra arguments of a full run (after ``--out DIR``).
        quick_args: arguments of a quick run when the module has no ``--quick`` flag of its
            own (a module whose source accepts ``--quick`` gets ``--quick`` instead).
        timeout_s: time limit of one run, in seconds.
        patterns: the JSON file names it writes (``fnmatch`` patterns), best first.

    Example:
        >>> from benchmarks.registry import find
        >>> find("attention").name
        'gpu_attention'
    """

    name: str
    title: str
    gpu: bool
    args: tuple[str, ...] = ()
    quick_args: tuple[str, ...] = ()
    timeout_s: int = 300
    patterns: tuple[str, ...] = ()

    @property
    def path(self) -> Path:
        """The module's source file."""
        return BENCH_DIR / f"{self.name}.py"

    @property
    def short(self) -> str:
        """The name without its ``gpu_`` prefix (``attention``); CPU modules keep theirs."""
        return self.name.removeprefix("gpu_")

    def json_patterns(self) -> tuple[str, ...]:
        """File name patterns of the JSON it writes (``<name>.json`` and ``<name>_<tag>.json``
        unless the entry says otherwise)."""
        return self.patterns or (f"{self.name}.json", f"{self.name}_*.json")

    def matches(self, filename: str) -> bool:
        """Whether ``filename`` is one of this module's JSON files."""
        return any(fnmatch.fnmatch(filename, p) for p in self.json_patterns())

    def command(self, python: str, out: Path, quick: bool) -> list[str]:
        """The command line that runs it, writing into ``out``."""
        cmd = [python, "-m", f"benchmarks.{self.name}", "--out", str(out), *self.args]
        if quick:
            cmd += ["--quick"] if self.has_quick_flag() else list(self.quick_args)
        return cmd

    def has_quick_flag(self) -> bool:
        """Whether the module's source declares a ``--quick`` option."""
        try:
            return '"--quick"' in self.path.read_text()
        except OSError:
            return False


MODULES: tuple[Module, ...] = (
    Module("cpu_bench", "CPU: MLP training step and per-op overhead", gpu=False,
           timeout_s=300),
    Module("cpu_conv", "CPU: CNN training step", gpu=False,
           quick_args=("--steps", "2", "--rounds", "1"), timeout_s=600),
    Module("gpu_overhead", "Per-op overhead and GEMM", gpu=True, timeout_s=240),
    Module("gpu_batching", "Batched vs unbatched: eager, sync-every-op, jit / CUDA graphs",
           gpu=True, timeout_s=300),
    Module("gpu_linear", "Linear layers (GEMM + bias + activation)", gpu=True, timeout_s=300),
    Module("gpu_norm_softmax", "Layer norm, RMS norm, softmax, cross-entropy", gpu=True,
           quick_args=("--reps", "5", "--warmup", "2", "--only", "layer_norm,cross_entropy"),
           timeout_s=300),
    Module("gpu_pooling_bn", "Pooling, batch norm, dropout", gpu=True,
           quick_args=("--reps", "5", "--warmup", "2"), timeout_s=300),
    Module("gpu_conv", "conv2d forward + backward", gpu=True,
           quick_args=("--reps", "5", "--warmup", "2"), timeout_s=400),
    Module("gpu_attention", "Scaled dot-product attention", gpu=True,
           quick_args=("--reps", "3", "--warmup", "1", "--skip-memory"), timeout_s=400),
    Module("gpu_kmeans", "k-means (fused distance + argmin + update)", gpu=True,
           timeout_s=300),
    Module("gpu_gpt", "Tiny GPT training step", gpu=True, timeout_s=400),
    Module("gpu_cnn", "CNN training step", gpu=True, timeout_s=400),
)


def find(name: str) -> Module:
    """The module called ``name``, with or without its ``gpu_`` prefix.

    Args:
        name: ``gpu_attention`` or ``attention``; ``cpu_bench``.

    Returns:
        The registry entry.

    Raises:
        KeyError: no such module (the message lists the known ones).

    Example:
        >>> find("cpu_bench").gpu
        False
    """
    for m in MODULES:
        if name in (m.name, m.short):
            return m
    known = ", ".join(m.name for m in MODULES)
    raise KeyError(f"benchmarks: no benchmark module called {name!r}; known: {known}")


def for_file(filename: str) -> Module | None:
    """The module that writes a JSON file of this name, or None."""
    for m in MODULES:
        if m.matches(filename):
            return m
    return None
