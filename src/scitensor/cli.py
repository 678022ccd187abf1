"""The ``scitensor`` command: ``scitensor demo`` trains a small network, ``scitensor info``
describes the installation.

Example:
    $ scitensor demo --epochs 30
    $ scitensor demo --model cnn --jit --plot digits.png
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

__all__ = ["DemoResult", "main", "save_plot", "train_demo"]


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
    model: str = "mlp"
    jit: bool = False
    history: dict = dataclasses.field(default_factory=dict)
    """Per epoch: ``"loss"`` (mean training loss) and, when asked for, ``"test_accuracy"``."""


MODELS = ("mlp", "cnn")
DEFAULT_EPOCHS = {"mlp": 30, "cnn": 15}


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


def _build_model(model: str, hidden: int, dev):
    from scitensor import nn

    if model == "mlp":
        return nn.Sequential(nn.Dense(64, hidden, device=dev), nn.ReLU(),
                             nn.Dense(hidden, hidden, device=dev), nn.ReLU(),
                             nn.Dense(hidden, 10, device=dev))
    if model == "cnn":  # 1x8x8 -> 32x8x8 -> 64x8x8 -> 64x4x4 -> 10
        return nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1, bias=False, device=dev),
            nn.BatchNorm2d(32, device=dev), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1, bias=False, device=dev),
            nn.BatchNorm2d(64, device=dev), nn.ReLU(),
            nn.MaxPool2d(2), nn.Flatten(),
            nn.Dense(64 * 4 * 4, 10, device=dev))
    raise ValueError(f"train_demo: model must be one of {MODELS}, got {model!r}")


def train_demo(epochs: int | None = None, batch_size: int = 32, lr: float = 2e-3,
               seed: int = 0, device="auto", progress: bool = True, hidden: int = 128,
               model: str = "mlp", jit: bool = False,
               track_accuracy: bool = False) -> DemoResult:
    """Train a small network on the bundled digits: ``model="mlp"`` (64 -> hidden -> hidden ->
    10, ReLU) or ``model="cnn"`` (two 3x3 conv-batchnorm-ReLU layers of 32 and 64 channels on
    the 1x8x8 images, a 2x2 max pool and a dense layer to the 10 classes), with Adam.

    Args:
        epochs: passes over the 1,438 training images (default: 30 for the MLP, 15 for the
            CNN).
        batch_size: images per step.
        lr: Adam's learning rate.
        seed: seeds the weights and the batch order (the train/test split is fixed).
        device: ``"auto"`` (``st.best_device()``), ``"cpu"``, ``"cuda"`` or a Device.
        progress: show a tqdm progress bar on stderr.
        hidden: width of the MLP's two hidden layers.
        model: ``"mlp"`` or ``"cnn"``.
        jit: run each training step through :func:`scitensor.jit` (captured as a CUDA graph
            on the GPU; on the CPU it simply runs).
        track_accuracy: also measure the test accuracy after every epoch (into
            ``history["test_accuracy"]``; not counted in the training time).

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
    from scitensor import optim
    from scitensor.datasets import load_digits

    if model not in MODELS:
        raise ValueError(f"train_demo: model must be one of {MODELS}, got {model!r}")
    epochs = DEFAULT_EPOCHS[model] if epochs is None else epochs
    dev = _resolve_device(device) if isinstance(device, str) else st.Device(device)
    st.manual_seed(seed)
    x, y = load_digits("train", device=dev)  # the fixed split: comparable across seeds
    xt, yt = load_digits("test", device=dev)
    if model == "cnn":
        x, xt = x.reshape(-1, 1, 8, 8), xt.reshape(-1, 1, 8, 8)
    net = _build_model(model, hidden, dev)
    opt = optim.Adam(net.parameters(), lr=lr)
    rng = np.random.default_rng(seed)

    def accuracy() -> int:
        net.eval()
        with st.no_grad():
            correct = int((st.argmax(net(xt), axis=1) == yt).sum().item())
        net.train()
        return correct

    history = {"loss": []}
    if track_accuracy:
        history["test_accuracy"] = []
    blas = _one_blas_thread() if dev.type == "cpu" else contextlib.nullcontext()
    with blas:
        loss_value, seconds = _train(net, opt, x, y, epochs, batch_size, rng, progress, dev,
                                     jit=jit, history=history,
                                     accuracy=(lambda: accuracy() / xt.shape[0])
                                     if track_accuracy else None)
    correct = accuracy()
    net.eval()
    return DemoResult(device=str(dev), epochs=epochs, train_seconds=seconds,
                      test_accuracy=correct / xt.shape[0], test_correct=correct,
                      test_size=xt.shape[0], final_loss=loss_value, model=model, jit=jit,
                      history=history)


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


def _train(model, opt, x, y, epochs, batch_size, rng, progress, dev, jit=False, history=None,
           accuracy=None):
    """The training loop of :func:`train_demo`: ``(final epoch's mean loss, seconds)``.

    Appends each epoch's mean loss to ``history["loss"]`` and, when ``accuracy`` is given,
    its result to ``history["test_accuracy"]`` (time spent there is not counted).
    """
    from tqdm import tqdm

    import scitensor as st
    from scitensor.nn import functional as F

    def step(xb, yb):
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.detach()

    if jit:
        step = st.jit(step)
    n = x.shape[0]
    loss_value = float("nan")
    excluded = 0.0
    start = time.perf_counter()
    bar = tqdm(range(epochs), desc="training", unit="epoch", disable=not progress,
               file=sys.stderr, dynamic_ncols=True)
    for _ in bar:
        perm = st.tensor(rng.permutation(n), device=dev)
        total = None
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            loss = step(x[idx], y[idx])
            total = loss * idx.shape[0] if total is None else total + loss * idx.shape[0]
        loss_value = total.item() / n  # one host sync per epoch
        postfix = {"loss": f"{loss_value:.4f}"}
        if history is not None:
            history["loss"].append(loss_value)
        if accuracy is not None:
            t0 = time.perf_counter()
            acc = accuracy()
            history["test_accuracy"].append(acc)
            postfix["test_acc"] = f"{100 * acc:.1f}%"
            excluded += time.perf_counter() - t0
        bar.set_postfix(postfix)
    bar.close()
    if dev.type != "cpu":
        dev.backend.synchronize()
    return loss_value, time.perf_counter() - start - excluded


def save_plot(result: DemoResult, path: str) -> str | None:
    """Write ``result.history`` (training loss and, when recorded, test accuracy per epoch) as
    a PNG at ``path``; returns None on success, else why no plot was written (matplotlib not
    installed)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ("matplotlib is not installed, so no plot was written "
                "(pip install matplotlib)")
    losses = result.history.get("loss", [])
    accs = result.history.get("test_accuracy", [])
    epochs = range(1, len(losses) + 1)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(epochs, losses, color="tab:blue", marker="o", ms=3, label="training loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean training loss", color="tab:blue")
    ax.set_yscale("log")
    if accs:
        ax2 = ax.twinx()
        ax2.plot(range(1, len(accs) + 1), [100 * a for a in accs], color="tab:orange",
                 marker="s", ms=3, label="test accuracy")
        ax2.set_ylabel("test accuracy (%)", color="tab:orange")
    ax.set_title(f"scitensor demo: {result.model.upper()} on {result.device}, "
                 f"test accuracy {100 * result.test_accuracy:.2f}%")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return None


def _demo(args) -> int:
    import scitensor as st

    dev = _resolve_device(args.device)
    if dev.type == "cpu":
        ok, why = st.cuda_status()
        note = "" if ok else f" (no GPU: {why})"
    else:
        note = f" ({st.cuda_status()[1]})"
    if args.model == "mlp":
        what = f"MLP 64-{args.hidden}-{args.hidden}-10"
    else:
        what = "CNN conv3x3(32)-BN-ReLU-conv3x3(64)-BN-ReLU-maxpool2-dense(10)"
    print(f"scitensor {st.__version__} demo: {what} on the 8x8 handwritten digits "
          "(UCI, CC BY 4.0)")
    print(f"device: {dev}{note}")
    r = train_demo(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                   device=dev, progress=not args.no_progress, hidden=args.hidden,
                   model=args.model, jit=args.jit, track_accuracy=args.plot is not None)
    how = " with st.jit" if args.jit else ""
    print(f"trained {r.epochs} epochs (batch {args.batch_size}, Adam lr {args.lr}){how} in "
          f"{r.train_seconds:.2f} s on {r.device}; final training loss {r.final_loss:.4f}")
    print(f"test accuracy: {100 * r.test_accuracy:.2f}% ({r.test_correct}/{r.test_size})")
    if args.plot is not None:
        why = save_plot(r, args.plot)
        print(f"plot: {why}" if why else f"plot: wrote {args.plot}")
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
    d = sub.add_parser("demo", help="train an MLP or a CNN on the bundled handwritten digits",
                       description="Train a 64-128-128-10 MLP (or, with --model cnn, a small "
                                   "convolutional net) on the bundled 8x8 digits and report "
                                   "the device, the training time and test accuracy.")
    d.add_argument("--model", choices=MODELS, default="mlp", help="default: mlp")
    d.add_argument("--device", default="auto",
                   help="auto (GPU if usable, else CPU), cpu, cuda or cuda:N (default: auto)")
    d.add_argument("--epochs", type=_positive(int), default=None,
                   help="default: 30 for the MLP, 15 for the CNN")
    d.add_argument("--batch-size", type=_positive(int), default=32, help="default: 32")
    d.add_argument("--lr", type=_positive(float), default=2e-3, help="Adam learning rate "
                   "(default: 0.002)")
    d.add_argument("--seed", type=int, default=0, help="default: 0")
    d.add_argument("--hidden", type=_positive(int), default=128, help="hidden width "
                   "(default: 128)")
    d.add_argument("--jit", action="store_true", help="run each training step through "
                   "st.jit (a CUDA graph on the GPU; on the CPU it simply runs)")
    d.add_argument("--plot", metavar="PATH", default=None, help="save a loss/accuracy plot "
                   "as a PNG (needs matplotlib)")
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
