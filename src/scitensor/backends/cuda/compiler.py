"""NVRTC compilation of our ``kernels/*.cu`` sources, cached in memory and on disk.

A source is compiled on first use for the device's architecture (``sm_XY`` CUBIN, or PTX for
the newest architecture NVRTC knows when the device is newer). The disk cache key hashes the
source, every ``kernels/*.cuh`` header, the architecture, the options and the NVRTC version;
the cache lives in ``$SCITENSOR_KERNEL_CACHE`` (default ``~/.cache/scitensor/kernels``).
Nothing here compiles or touches the GPU at import.

Example:
    >>> from scitensor.backends.cuda.compiler import load_module   # doctest: +SKIP
    >>> mod = load_module("random.cu", device_id=0)                  # doctest: +SKIP
    >>> k = mod.function("st_uniform_f32", "pqQQ")                   # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import tempfile
import threading

from .errors import KernelCompileError
from .launch import Kernel

__all__ = ["KERNEL_DIR", "LoadedModule", "cache_dir", "compile_source", "load_module"]

KERNEL_DIR = pathlib.Path(__file__).with_name("kernels")
BASE_OPTIONS = ("-std=c++17",)
_modules: dict = {}
_lock = threading.Lock()


def cache_dir() -> pathlib.Path:
    """The on-disk kernel cache folder."""
    env = os.environ.get("SCITENSOR_KERNEL_CACHE")
    if env:
        return pathlib.Path(env)
    return pathlib.Path.home() / ".cache" / "scitensor" / "kernels"


def _headers() -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(KERNEL_DIR.glob("*.cuh"))}


def _nvrtc():
    from cupy_backends.cuda.libs import nvrtc

    return nvrtc


def _target(arch: int, arch_specific: bool = False) -> tuple[str, bool]:
    """NVRTC option for ``arch`` (e.g. 90) and whether the output is a CUBIN.

    ``arch_specific`` asks for the architecture-specific target (``sm_90a``: Hopper's wgmma
    and setmaxnreg), which exists only for the exact architecture: ``ValueError`` when NVRTC
    does not know ``arch``."""
    nvrtc = _nvrtc()
    try:
        supported = sorted(nvrtc.getSupportedArchs())
    except Exception:  # old NVRTC: assume it knows the device
        supported = [arch]
    if arch_specific:
        if arch not in supported:
            raise ValueError(f"NVRTC {nvrtc.getVersion()} cannot compile for sm_{arch}a")
        return f"--gpu-architecture=sm_{arch}a", True
    if arch in supported:
        return f"--gpu-architecture=sm_{arch}", True
    usable = [a for a in supported if a <= arch]
    best = usable[-1] if usable else supported[0]
    return f"--gpu-architecture=compute_{best}", False


def compile_source(name: str, source: str, arch: int, options=(),
                   arch_specific: bool = False) -> bytes:
    """Compile CUDA C++ ``source`` (called ``name`` in messages) to a CUBIN/PTX image
    (``arch_specific``: for ``sm_<arch>a``, see :func:`_target`).

    Looks in the disk cache first; writes the result there (best effort).

    Raises:
        KernelCompileError: with the kernel name and NVRTC's log when compilation fails.
    """
    nvrtc = _nvrtc()
    headers = _headers()
    target, cubin = _target(arch, arch_specific)
    opts = (*BASE_OPTIONS, target, *options)
    h = hashlib.sha256()
    for part in (source, *[f"{k}\0{v}" for k, v in headers.items()], *opts,
                 str(nvrtc.getVersion())):
        h.update(part.encode())
        h.update(b"\0")
    key = h.hexdigest()[:32]
    path = cache_dir() / f"{pathlib.Path(name).stem}-{key}.{'cubin' if cubin else 'ptx'}"
    try:
        return path.read_bytes()
    except OSError:
        pass
    prog = nvrtc.createProgram(source, name, [v.encode() for v in headers.values()],
                               [k.encode() for k in headers])
    try:
        try:
            nvrtc.compileProgram(prog, list(opts))
        except nvrtc.NVRTCError:
            raise KernelCompileError(name, nvrtc.getProgramLog(prog), opts) from None
        image = nvrtc.getCUBIN(prog) if cubin else nvrtc.getPTX(prog)
    finally:
        nvrtc.destroyProgram(prog)
    if isinstance(image, str):
        image = image.encode()
    _write_atomic(path, image)
    return image


def _write_atomic(path: pathlib.Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError:  # a read-only home must not stop the GPU from working
        pass


class LoadedModule:
    """A compiled source loaded on one device; hands out fast :class:`Kernel` launchers."""

    def __init__(self, name: str, module):
        self.name = name
        self._module = module  # keeps the CUmodule loaded
        self._kernels: dict = {}

    def function(self, kernel: str, signature: str) -> Kernel:
        """The kernel ``kernel`` with parameter ``signature`` (see :class:`Kernel`)."""
        k = self._kernels.get(kernel)
        if k is None:
            try:
                fn = self._module.get_function(kernel)
            except Exception as e:
                raise KeyError(f"kernel {kernel!r} is not defined in {self.name} "
                               f"({type(e).__name__}: {e})") from None
            k = self._kernels[kernel] = Kernel(f"{self.name}:{kernel}", fn.ptr, signature, fn)
        return k

    def has(self, kernel: str) -> bool:
        try:
            self._module.get_function(kernel)
            return True
        except Exception:
            return False


def load_source(name: str, source: str, device_id: int, arch: int, options=(),
                arch_specific: bool = False) -> LoadedModule:
    """Compile (cached) and load ``source`` on ``device_id``; cached per source/options/device."""
    key = (name, hashlib.sha256(source.encode()).hexdigest(), tuple(options), device_id,
           arch_specific)
    mod = _modules.get(key)
    if mod is not None:
        return mod
    with _lock:
        mod = _modules.get(key)
        if mod is None:
            import cupy

            image = compile_source(name, source, arch, options, arch_specific)
            with cupy.cuda.Device(device_id):
                m = cupy.cuda.function.Module()
                m.load(image)
            mod = _modules[key] = LoadedModule(name, m)
    return mod


def load_module(filename: str, device_id: int, arch: int | None = None,
                options=(), arch_specific: bool = False) -> LoadedModule:
    """Compile (cached) and load ``kernels/<filename>`` on ``device_id`` (``arch_specific``:
    for ``sm_<arch>a``, e.g. kernels using Hopper's wgmma)."""
    if arch is None:
        import cupy

        arch = int(cupy.cuda.Device(device_id).compute_capability)
    source = (KERNEL_DIR / filename).read_text()
    return load_source(filename, source, device_id, arch, options, arch_specific)
