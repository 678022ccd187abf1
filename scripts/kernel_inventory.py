"""Which CUDA kernels we ship, and which of them a run actually launched.

Three parts, importable (``sys.path`` must hold ``scripts/``) and runnable:

- the inventory: every ``extern "C" __global__`` kernel in
  ``src/scitensor/backends/cuda/kernels/*.cu``, named ``"<file>:<kernel>"`` as the loaders
  name them (``compiler.LoadedModule.function`` -> ``launch.Kernel.name``, e.g.
  ``"elementwise.cu:st_add"``). Kernels that macros generate (``BINARY(st_add, ...)``,
  ``st_adam_mt_##SUF``, ``st_kmeans_assign_bk##BK``) are expanded with a small preprocessor:
  comments stripped, continuation lines joined, function-like macros whose expansion holds a
  ``__global__`` expanded at their uses (parameters substituted, ``##`` pasted), and every
  ``#if`` branch counted (a kernel compiled under any ``-D`` option is shipped). The loaders
  look kernels up by their plain names (``get_function("st_add")``, no NVRTC name
  expressions), so a template kernel outside ``extern "C"`` could not be launched and is not
  listed;
- the recorder (:func:`start_recording`): the exercise scripts call it first; it wraps, at
  run time and in this process only (no library file changes), the launch choke points of
  the CUDA backend, and maps launched ``CUfunction`` handles back to names. Every kernel
  launch goes through CuPy's ``driver.launchKernel``, reached two ways: ``launch._launch``
  (bound at import; every :class:`~scitensor.backends.cuda.launch.Kernel`: elementwise,
  random, pooling, batch norm, dropout, conv, linear, k-means, row kernels, segment sums) and
  the ``_driver`` module global of ``attention.py`` (``_Launcher``: attention, and the conv
  kernels with dynamic shared memory) and ``optim.py`` (``_MtKernel``: the multi-tensor
  optimizer kernels). The recorder replaces such globals in every module of
  ``scitensor.backends.cuda``. Handles come from ``compiler.LoadedModule.function``, wrapped
  to remember ``ptr -> name``;
- coverage (``--coverage FILE...``): the union of recorded names against the inventory.

Usage:
    python scripts/kernel_inventory.py                       # list the shipped kernels
    python scripts/kernel_inventory.py --coverage OUT/kernels/*.txt [--report-only]

``--coverage`` prints ``kernels launched: N of M; never launched: [...]`` and exits 1 when
a shipped kernel was never launched (0 with ``--report-only``), 2 when no record was read.
"""

from __future__ import annotations

import argparse
import atexit
import pathlib
import re
import sys
from collections.abc import Iterable

ROOT = pathlib.Path(__file__).resolve().parents[1]
KERNEL_DIR = ROOT / "src" / "scitensor" / "backends" / "cuda" / "kernels"

__all__ = ["KERNEL_DIR", "Recorder", "coverage", "inventory", "kernels_in_source",
           "read_records", "shipped", "start_recording"]

# ---- inventory ------------------------------------------------------------------------------
_COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)
_DEFINE = re.compile(r"^\s*#\s*define\s+([A-Za-z_]\w*)(\([^)]*\))?(.*)$")
_DIRECTIVE = re.compile(r"^\s*#")
_GLOBAL = re.compile(r'extern\s+"C"\s+__global__\b')
_IDENT = re.compile(r"\s*([A-Za-z_]\w*)")
_QUALIFIERS = {"void", "static", "inline", "__noinline__", "__forceinline__"}


def _strip(text: str) -> str:
    """Comments removed (kept newlines) and continuation lines joined."""
    text = _COMMENT.sub(lambda m: "\n" * m.group(0).count("\n") if m.group(0)[1] == "*"
                        else "", text)
    return re.sub(r"\\\r?\n", " ", text)


def _balanced(text: str, i: int) -> int:
    """Index just past the parenthesised group starting at ``text[i] == '('``."""
    depth = 0
    for j in range(i, len(text)):
        c = text[j]
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return j + 1
    raise ValueError(f"unbalanced parentheses at {text[i:i + 60]!r}")


def _split_args(inner: str) -> list[str]:
    """Top-level comma-separated macro arguments of ``inner`` (the text between the parens)."""
    args, depth, cur = [], 0, []
    for c in inner:
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        if c == "," and depth == 0:
            args.append("".join(cur).strip())
            cur = []
        else:
            cur.append(c)
    args.append("".join(cur).strip())
    return args


def _declared(text: str) -> list[tuple[int, str]]:
    """``(position, name)`` of the ``extern "C" __global__`` functions declared in ``text``."""
    names = []
    for m in _GLOBAL.finditer(text):
        i = m.end()
        while True:
            t = _IDENT.match(text, i)
            if t is None:
                break
            word, i = t.group(1), t.end()
            if word == "__launch_bounds__":
                j = text.index("(", i)
                i = _balanced(text, j)
            elif word in _QUALIFIERS:
                continue
            else:
                rest = text[i:].lstrip()
                if rest.startswith("("):
                    names.append((m.start(), word))
                break
    return names


def kernels_in_source(text: str) -> list[str]:
    """Kernel names defined by one CUDA source (see the module docs), in source order.

    Args:
        text: the ``.cu`` file's contents.

    Returns:
        Unique names, in the order they first appear.

    Example:
        >>> src = '#define K(S) extern "C" __global__ void st_k_##S(int n) {}\\nK(a) K(b)'
        >>> kernels_in_source(src)
        ['st_k_a', 'st_k_b']
    """
    text = _strip(text)
    macros: dict[str, list[tuple[list[str] | None, str]]] = {}
    code_lines = []
    for line in text.split("\n"):
        d = _DEFINE.match(line)
        if d:
            params = None
            if d.group(2) is not None:
                params = [p.strip() for p in d.group(2)[1:-1].split(",") if p.strip()]
            macros.setdefault(d.group(1), []).append((params, d.group(3)))
        elif not _DIRECTIVE.match(line):
            code_lines.append(line)
    # the macros whose expansion (through other macros) holds a kernel
    gen = {name for name, defs in macros.items() if any("__global__" in b for _, b in defs)}
    while True:
        more = {name for name, defs in macros.items() if name not in gen and any(
            re.search(rf"\b{re.escape(g)}\b", b) for _, b in defs for g in gen)}
        if not more:
            break
        gen |= more

    def expand(body: str, params: list[str] | None, args: list[str]) -> str:
        if params:
            table = dict(zip(params, args))
            body = re.sub(r"\b[A-Za-z_]\w*\b", lambda m: table.get(m.group(0), m.group(0)),
                          body)
        return re.sub(r"\s*##\s*", "", body)

    def scan(code: str, depth: int) -> list[str]:
        """Kernel names of ``code`` in source order, macro uses expanded."""
        if depth > 16:
            raise ValueError("kernel_inventory: macro expansion nested too deep")
        found = [(pos, [n]) for pos, n in _declared(code) if n not in gen]
        for name in gen:
            for m in re.finditer(rf"\b{re.escape(name)}\b", code):
                for params, body in macros[name]:
                    if params is None:
                        found.append((m.start(), scan(expand(body, None, []), depth + 1)))
                        continue
                    j = m.end()
                    while j < len(code) and code[j].isspace():
                        j += 1
                    if j >= len(code) or code[j] != "(":
                        continue
                    end = _balanced(code, j)
                    found.append((m.start(), scan(
                        expand(body, params, _split_args(code[j + 1:end - 1])), depth + 1)))
        found.sort(key=lambda item: item[0])
        return [n for _, names in found for n in names]

    return list(dict.fromkeys(scan("\n".join(code_lines), 0)))


def inventory(kernel_dir: pathlib.Path | str = KERNEL_DIR) -> dict[str, list[str]]:
    """The kernels of every ``*.cu`` file of ``kernel_dir``.

    Args:
        kernel_dir: the folder of ``*.cu`` sources (default: the package's).

    Returns:
        ``{file name: [kernel names in source order]}``.

    Example:
        >>> "st_add" in inventory()["elementwise.cu"]
        True
    """
    return {p.name: kernels_in_source(_with_includes(p))
            for p in sorted(pathlib.Path(kernel_dir).glob("*.cu"))}


_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]+"([^"]+)"[^\n]*$', re.M)


def _with_includes(path: pathlib.Path, seen: set | None = None) -> str:
    """The text of ``path`` with its ``#include "..."`` of files beside it inlined (each file
    once, as ``#pragma once`` does): kernels a shared header defines belong to every module
    that includes it (``attention_bwd_common.cuh``'s pre and convert kernels)."""
    seen = set() if seen is None else seen

    def inline(m: re.Match) -> str:
        inc = path.parent / m.group(1)
        if inc in seen or not inc.is_file():
            return ""
        seen.add(inc)
        return _with_includes(inc, seen)

    return _INCLUDE.sub(inline, path.read_text())


def shipped(kernel_dir: pathlib.Path | str = KERNEL_DIR) -> set[str]:
    """Every shipped kernel as ``"<file>:<kernel>"`` (the loaders' ``Kernel.name``).

    Args:
        kernel_dir: the folder of ``*.cu`` sources (default: the package's).

    Returns:
        The set of names.

    Example:
        >>> "optim.cu:st_adam_mt_bf16" in shipped()
        True
    """
    return {f"{f}:{k}" for f, ks in inventory(kernel_dir).items() for k in ks}


# ---- recording launches ---------------------------------------------------------------------
class _DriverProxy:
    """Stands in for CuPy's driver module in one of our modules: records launches."""

    def __init__(self, real, hook):
        self._real = real
        self._hook = hook

    def launchKernel(self, f, *args):  # CuPy's name
        self._hook(f)
        return self._real.launchKernel(f, *args)

    def __getattr__(self, name):
        return getattr(self._real, name)


class Recorder:
    """Names of the kernels launched in this process since :meth:`install`."""

    def __init__(self):
        self._names: dict[int, str] = {}   # CUfunction handle -> "<file>:<kernel>"
        self._launched: set[int] = set()
        self.installed = False

    def _hook(self, ptr) -> None:
        self._launched.add(int(ptr))

    def install(self) -> Recorder:
        """Wrap the launch choke points (idempotent; needs CuPy, i.e. a CUDA machine).

        Every module of ``scitensor.backends.cuda`` is imported; in each, a global bound to
        CuPy's driver module (``_driver``) is replaced by a recording proxy and a global bound
        to its ``launchKernel`` (``launch._launch``) by a recording wrapper, so a new launcher
        written with either idiom is recorded too."""
        if self.installed:
            return self
        import importlib
        import pkgutil

        from cupy_backends.cuda.api import driver

        import scitensor.backends.cuda as pkg
        from scitensor.backends.cuda import compiler

        rec = self
        orig_function = compiler.LoadedModule.function

        def function(self, kernel, signature):
            k = orig_function(self, kernel, signature)
            rec._names[int(k.ptr)] = f"{self.name}:{kernel}"
            return k

        compiler.LoadedModule.function = function
        real_launch = driver.launchKernel

        def recording_launch(f, *args):
            rec._hook(f)
            return real_launch(f, *args)

        for info in pkgutil.iter_modules(pkg.__path__):
            try:
                mod = importlib.import_module(f"{pkg.__name__}.{info.name}")
            except Exception as e:  # the backend will fail on it too, loudly
                print(f"kernel_inventory: cannot import {info.name} ({type(e).__name__}: {e})")
                continue
            for attr, val in list(vars(mod).items()):
                if val is driver:
                    setattr(mod, attr, _DriverProxy(driver, self._hook))
                elif val is real_launch:
                    setattr(mod, attr, recording_launch)
        from scitensor.backends.cuda import launch

        if getattr(launch, "_launch", recording_launch) is not recording_launch:
            raise RuntimeError("kernel_inventory: launch._launch is not CuPy's launchKernel; "
                               "update Recorder.install to the new launch path")
        self.installed = True
        return self

    def names(self) -> set[str]:
        """The launched kernels, ``"<file>:<kernel>"``."""
        return {self._names.get(p, f"<unknown CUfunction {p:#x}>") for p in self._launched}

    def write(self, path) -> None:
        """One name per line, sorted."""
        p = pathlib.Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("".join(n + "\n" for n in sorted(self.names())))

    def summary(self) -> str:
        """``kernels launched: N of M (this process); never launched: [...]``, the list
        limited to the source files this process launched kernels from (the union over the
        exercise scripts is ``--coverage``'s job)."""
        ours = shipped()
        got = self.names()
        files = {n.split(":")[0] for n in got}
        never = sorted(n for n in ours - got if n.split(":")[0] in files)
        line = (f"kernels launched: {len(got & ours)} of {len(ours)} (this process); never "
                f"launched from {', '.join(sorted(files)) or 'no file'}: {never}")
        extra = sorted(got - ours)
        if extra:
            line += f"; not in the inventory: {extra}"
        return line


def start_recording(record_path=None) -> Recorder | None:
    """Install a :class:`Recorder`; with ``record_path``, write its names there at exit.

    Args:
        record_path: a file for :meth:`Recorder.write` at interpreter exit, or None.

    Returns:
        The recorder, or None (recording nothing) when CuPy cannot be imported.

    Example:
        >>> rec = start_recording("kernels.txt")     # doctest: +SKIP
        >>> print(rec.summary())                     # doctest: +SKIP
    """
    try:
        rec = Recorder().install()
    except ImportError as e:
        print(f"kernel_inventory: not recording launches ({type(e).__name__}: {e})")
        return None
    if record_path:
        atexit.register(rec.write, record_path)
    return rec


# ---- coverage -------------------------------------------------------------------------------
def read_records(paths: Iterable) -> tuple[dict[str, set[str]], list[str]]:
    """Read record files (one kernel name per line).

    Args:
        paths: the files.

    Returns:
        ``({path: names}, [paths that could not be read])``.
    """
    got, missing = {}, []
    for p in paths:
        try:
            text = pathlib.Path(p).read_text()
        except OSError:
            missing.append(str(p))
            continue
        got[str(p)] = {line.strip() for line in text.splitlines() if line.strip()}
    return got, missing


def coverage(launched: set[str], ours: set[str] | None = None) -> tuple[set[str], set[str]]:
    """Compare launched kernel names with the shipped ones.

    Args:
        launched: names as :meth:`Recorder.names` gives them.
        ours: the shipped names (default: :func:`shipped`).

    Returns:
        ``(never launched, launched but not shipped)``.

    Example:
        >>> coverage({"a.cu:st_x"}, {"a.cu:st_x", "a.cu:st_y"})
        ({'a.cu:st_y'}, set())
    """
    ours = shipped() if ours is None else ours
    return ours - launched, launched - ours


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--coverage", nargs="*", metavar="FILE",
                    help="record files written by the exercise scripts' --record")
    ap.add_argument("--report-only", action="store_true",
                    help="with --coverage: exit 0 even when kernels were never launched")
    args = ap.parse_args(argv)
    inv = inventory()
    ours = {f"{f}:{k}" for f, ks in inv.items() for k in ks}
    if args.coverage is None:
        for f, ks in inv.items():
            print(f"{f}: {len(ks)} kernels: {' '.join(ks)}")
        print(f"{len(ours)} kernels in {len(inv)} files")
        return 0
    records, unreadable = read_records(args.coverage)
    for p, names in records.items():
        print(f"{p}: {len(names & ours)} shipped kernels")
    for p in unreadable:
        print(f"{p}: MISSING (the step did not finish?)")
    if not records:
        print("kernel coverage: no record files read")
        return 2
    union = set().union(*records.values())
    never, unknown = coverage(union, ours)
    print(f"kernels launched: {len(ours) - len(never)} of {len(ours)}; never launched: "
          f"{sorted(never)}")
    if unknown:
        print(f"launched but not in the inventory (inventory parser or naming bug?): "
              f"{sorted(unknown)}")
    if never and not args.report_only:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
