"""Train an MLP on the bundled 8x8 digits with a DataLoader; prints device, time, accuracy.

    python examples/mlp_digits.py                  # best device, 30 epochs (~97% test)
    python examples/mlp_digits.py --device cpu --tiny
"""

import argparse
import time

import scitensor as st
from scitensor import nn, optim
from scitensor.data import DataLoader
from scitensor.datasets import load_digits
from scitensor.nn import functional as F


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--tiny", action="store_true", help="one epoch (a smoke test)")
    args = p.parse_args(argv)
    dev = st.best_device() if args.device == "auto" else st.Device(args.device)
    epochs = 1 if args.tiny else args.epochs
    st.manual_seed(0)
    x, y = load_digits("train")
    xt, yt = load_digits("test", device=dev)
    model = nn.Sequential(nn.Dense(64, 128), nn.ReLU(), nn.Dense(128, 128), nn.ReLU(),
                          nn.Dense(128, 10)).to(dev)
    opt = optim.Adam(model.parameters(), lr=2e-3)
    loader = DataLoader(x, y, batch_size=32, shuffle=True, seed=0, device=dev)
    start = time.perf_counter()
    for epoch in range(epochs):
        total = 0.0
        for xb, yb in loader:
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total = loss.detach() * xb.shape[0] + total
        print(f"epoch {epoch + 1}/{epochs}: loss {float(total.item()) / x.shape[0]:.4f}")
    seconds = time.perf_counter() - start
    model.eval()
    with st.no_grad():
        acc = (st.argmax(model(xt), axis=1) == yt).sum().item() / xt.shape[0]
    print(f"device {dev}: {seconds:.2f} s, test accuracy {100 * acc:.2f}%")
    return acc


if __name__ == "__main__":
    main()
