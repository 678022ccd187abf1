"""Eager vs ``st.jit`` training-step times (on the GPU ``jit`` replays one CUDA graph per step;
on the CPU it simply runs the function, so the two times match).

    python examples/batching.py                    # best device, MLP 1024-wide, 200 steps
    python examples/batching.py --device cpu --tiny
"""

import argparse
import time

import scitensor as st
from scitensor import nn, optim
from scitensor.nn import functional as F


def _sync(dev):
    if dev.type != "cpu":
        dev.backend.synchronize()


def time_steps(step, x, y, steps, dev, warmup=3):
    for _ in range(warmup):  # jit: eager run, then capture
        step(x, y)
    _sync(dev)
    start = time.perf_counter()
    for _ in range(steps):
        loss = step(x, y)
    _sync(dev)
    return (time.perf_counter() - start) / steps, float(loss.item())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--tiny", action="store_true", help="a small net, 5 steps")
    args = p.parse_args(argv)
    if args.tiny:
        args.steps, args.width, args.layers, args.batch = 5, 32, 2, 16
    dev = st.best_device() if args.device == "auto" else st.Device(args.device)
    st.manual_seed(0)
    layers = [nn.Dense(args.width, args.width) if i % 2 == 0 else nn.ReLU()
              for i in range(2 * args.layers - 1)]
    model = nn.Sequential(*layers, nn.Dense(args.width, 10)).to(dev)
    opt = optim.AdamW(model.parameters(), lr=1e-3)
    x = st.randn(args.batch, args.width, device=dev)
    y = st.randint(0, 10, (args.batch,), device=dev)

    def step(xb, yb):
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.detach()

    compiled = st.jit(step)
    eager_s, eager_loss = time_steps(step, x, y, args.steps, dev)
    jit_s, jit_loss = time_steps(compiled, x, y, args.steps, dev)
    print(f"device {dev}: MLP {args.layers}x{args.width}, batch {args.batch}, AdamW")
    print(f"eager  {1e3 * eager_s:8.3f} ms/step (loss {eager_loss:.4f})")
    print(f"st.jit {1e3 * jit_s:8.3f} ms/step (loss {jit_loss:.4f}; {compiled.stats})")
    print(f"speed-up {eager_s / jit_s:.2f}x")
    return eager_s, jit_s


if __name__ == "__main__":
    main()
