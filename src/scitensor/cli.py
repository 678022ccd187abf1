"""The ``scitensor`` command: ``scitensor demo`` trains a small network, ``scitensor info``
describes the installation.

Example:
    $ scitensor demo --epochs 30
    $ scitensor info
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.metadata
import os
import platform
import sys
import time

__all__ = ["DemoResult", "main", "train_demo"]


@dataclasses.dataclass
class DemoResult:
    """What :func:`train_demo` measured."""

    device: str
    epochs: int
    train_seconds: float
    test_accuracy: float
    test_correct: int
    test_size: int
    final_loss: float


def _resolve_device(name: str):
    import scitensor as st

    if name == "auto":
        return st.best_device()
    dev = st.Device(name)
    if dev.type == "cuda":
        ok, why = st.cuda_status()
        if not ok:
            raise SystemExit(f"scitensor demo: --device {name} is not usable here: {why}. "
                             "Use --device auto (falls back to the CPU) or --device cpu")
    return dev


def train_demo(epochs: int = 30, batch_size: int = 32, lr: float = 2e-3, seed: int = 0,
               device="auto", progress: bool = True, hidden: int = 128) -> DemoResult:
    """Train an MLP (64 -> hidden -> hidden -> 10, ReLU, Adam) on the bundled digits.

    Args:
        epochs: passes over the 1,438 training images.
        batch_size: images per step.
        lr: Adam's learning rate.
        seed: seeds the weights and the batch order (the train/test split is fixed).
        device: ``"auto"`` (``st.best_device()``), ``"cpu"``, ``"cuda"`` or a Device.
        progress: show a tqdm progress bar on stderr.
        hidden: width of the two hidden layers.

    Returns:
        A :class:`DemoResult` with the device, the training time (seconds, excluding data
        loading and evaluation) and the test accuracy.

    Example:
        >>> from scitensor.cli import train_demo
        >>> r = train_demo(epochs=2, progress=False, device="cpu")
        >>> r.test_size
        359
    """
    import numpy as np

    import scitensor as st
    from scitensor import nn, optim
    from scitensor.datasets import load_digits

    dev = _resolve_device(device) if isinstance(device, str) else st.Device(device)
    st.manual_seed(seed)
    x, y = load_digits("train", device=dev)  # the fixed split: comparable across seeds
    xt, yt = load_digits("test", device=dev)
    model = nn.Sequential(nn.Dense(64, hidden, device=dev), nn.ReLU(),
                          nn.Dense(hidden, hidden, device=dev), nn.ReLU(),
                          nn.Dense(hidden, 10, device=dev))
    opt = optim.Adam(model.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    blas = _one_blas_thread() if dev.type == "cpu" else contextlib.nullcontext()
    with blas:
        loss_value, seconds = _train(model, opt, x, y, epochs, batch_size, rng, progress, dev)
    model.eval()
    with st.no_grad():
        correct = int((st.argmax(model(xt), axis=1) == yt).sum().item())
    return DemoResult(device=str(dev), epochs=epochs, train_seconds=seconds,
                      test_accuracy=correct / xt.shape[0], test_correct=correct,
                      test_size=xt.shape[0], final_loss=loss_value)


def _one_blas_thread():
    """Limit BLAS to one thread while training. The demo's matrices are tiny, so BLAS threads
    only add hand-offs, and on a busy machine waiting for them costs seconds per epoch.

    Uses threadpoolctl when installed, else OpenBLAS's own setter (NumPy's wheels bundle
    OpenBLAS); elsewhere (e.g. Apple Accelerate) it changes nothing.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return _OpenBlasThreads(1)
    return threadpool_limits(1, user_api="blas")


class _OpenBlasThreads:
    """Context manager setting the thread count of the OpenBLAS loaded in this process."""

    _SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                "openblas_set_num_threads64_", "openblas_set_num_threads")

    def __init__(self, threads: int):
        self.threads = threads
        self.set = self.get = None
        self.previous = None

    def _find(self) -> None:
        import ctypes

        try:
            with open("/proc/self/maps") as f:  # Linux: the shared objects now loaded
                paths = {line.split()[-1] for line in f if "openblas" in line.lower()}
        except OSError:
            return
        for path in sorted(p for p in paths if p.startswith("/")):
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            for name in self._SETTERS:
                setter = getattr(lib, name, None)
                getter = getattr(lib, name.replace("_set_", "_get_"), None)
                if setter is not None and getter is not None:
                    self.set, self.get = setter, getter
                    return

    def __enter__(self):
        self._find()
        if self.set is not None:
            self.previous = int(self.get())
            self.set(self.threads)
        return self

    def __exit__(self, *exc):
        if self.set is not None and self.previous is not None:
            self.set(self.previous)
        return False


def _train(model, opt, x, y, epochs, batch_size, rng, progress, dev):
    """The training loop of :func:`train_demo`: ``(final epoch's mean loss, seconds)``."""
    from tqdm import tqdm

    import scitensor as st
    from scitensor.nn import functional as F

    n = x.shape[0]
    loss_value = float("nan")
    start = time.perf_counter()
    bar = tqdm(range(epochs), desc="training", unit="epoch", disable=not progress,
               file=sys.stderr, dynamic_ncols=True)
    for _ in bar:
        perm = st.tensor(rng.permutation(n), device=dev)
        total = None
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total = loss.detach() * idx.shape[0] if total is None else \
                total + loss.detach() * idx.shape[0]
        loss_value = total.item() / n  # one host sync per epoch
        bar.set_postfix(loss=f"{loss_value:.4f}")
    bar.close()
    if dev.type != "cpu":
        dev.backend.synchronize()
    return loss_value, time.perf_counter() - start


def _demo(args) -> int:
    import scitensor as st

    dev = _resolve_device(args.device)
    if dev.type == "cpu":
        ok, why = st.cuda_status()
        note = "" if ok else f" (no GPU: {why})"
    else:
        note = f" ({st.cuda_status()[1]})"
    print(f"scitensor {st.__version__} demo: MLP 64-{args.hidden}-{args.hidden}-10 on the 8x8 "
          "handwritten digits (UCI, CC BY 4.0)")
    print(f"device: {dev}{note}")
    r = train_demo(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                   device=dev, progress=not args.no_progress, hidden=args.hidden)
    print(f"trained {r.epochs} epochs (batch {args.batch_size}, Adam lr {args.lr}) in "
          f"{r.train_seconds:.2f} s on {r.device}; final training loss {r.final_loss:.4f}")
    print(f"test accuracy: {100 * r.test_accuracy:.2f}% ({r.test_correct}/{r.test_size})")
    return 0


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _info(args) -> int:
    import numpy as np

    import scitensor as st

    print(f"scitensor   {st.__version__}")
    print(f"python      {platform.python_version()} ({platform.python_implementation()}, "
          f"{platform.platform()})")
    print(f"numpy       {np.__version__}")
    print(f"cpus        {os.cpu_count()}")
    for dist in ("ml_dtypes", "safetensors", "tqdm"):
        print(f"{dist:<12}{_version(dist)}")
    cupy = [f"{d} {_version(d)}" for d in ("cupy-cuda12x", "cupy-cuda13x", "cupy")
            if _version(d) != "not installed"]
    print(f"cupy        {', '.join(cupy) if cupy else 'not installed'}")
    ok, why = st.cuda_status()
    print(f"devices     {', '.join(str(d) for d in st.devices())}")
    print(f"best        {st.best_device()}")
    print(f"GPU         {'usable' if ok else 'not usable'}: {why}")
    print(f"defaults    device {st.get_default_device()}, dtype {st.get_default_dtype().name}")
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scitensor", description="scitensor command line")
    sub = p.add_subparsers(dest="command", required=True, metavar="{demo,info}")
    d = sub.add_parser("demo", help="train an MLP on the bundled handwritten digits",
                       description="Train a 64-128-128-10 MLP on the bundled 8x8 digits and "
                                   "report the device, the training time and test accuracy.")
    d.add_argument("--device", default="auto",
                   help="auto (GPU if usable, else CPU), cpu, cuda or cuda:N (default: auto)")
    d.add_argument("--epochs", type=_positive(int), default=30, help="default: 30")
    d.add_argument("--batch-size", type=_positive(int), default=32, help="default: 32")
    d.add_argument("--lr", type=_positive(float), default=2e-3, help="Adam learning rate "
                   "(default: 0.002)")
    d.add_argument("--seed", type=int, default=0, help="default: 0")
    d.add_argument("--hidden", type=_positive(int), default=128, help="hidden width "
                   "(default: 128)")
    d.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    d.set_defaults(func=_demo)
    i = sub.add_parser("info", help="versions, devices and whether a GPU is usable")
    i.set_defaults(func=_info)
    return p


def _positive(kind):
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") \
                from None
        if not v > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return v

    return parse


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``scitensor`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # e.g. `scitensor info | head -3`
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        return 0


if __name__ == "__main__":
    sys.exit(main())
