"""Training and inference throughput of minicnn (fast backend) vs PyTorch CPU, side by side.

Same model, same batch size, same number of threads, float32 batches already normalised (both sides
get the same arrays). Both sides are timed alternately, repeat after repeat (a noisy machine slows
both alike); medians reported, the ratio is the median of the per-repeat ratios. Ends with two lines:
    train ratio: N.Nx
    inference ratio: N.Nx

    python benchmarks/bench_train.py [--arch paper] [--batch-size 512] [--batches 20] [--repeats 5]
"""

from __future__ import annotations

import os

# Both libraries use OpenMP threads; pin them to cores for both (minicnn does so by default, see
# minicnn/fast/_jit.py), set before either library starts its thread pool.
os.environ.setdefault("OMP_PROC_BIND", "true")

import argparse  # noqa: E402
import statistics
import time

import numpy as np

from _torch_twin import torch_model


def minicnn_runner(arch, x, y, lr):
    from minicnn.nn.model import build_model
    from minicnn.nn.train import Optimizer, SGDConfig, train_step

    model = build_model(arch, np.random.default_rng(0), backend="fast")
    opt = Optimizer(SGDConfig(lr=lr))

    def train(batches):
        for xb, yb in batches:
            train_step(model, opt, xb, yb)

    def infer(batches):
        for xb, _ in batches:
            model.forward(xb, for_backward=False)  # as torch.inference_mode below

    return train, infer


def torch_runner(arch, x, y, lr, threads):
    import torch
    from torch import nn

    from minicnn.nn.model import build_model

    torch.set_num_threads(threads)
    net = torch_model(build_model(arch, np.random.default_rng(0), backend="ref"))
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()

    def train(batches):
        for xb, yb in batches:
            opt.zero_grad(set_to_none=True)
            loss_fn(net(xb), yb).backward()
            opt.step()

    def infer(batches):
        with torch.inference_mode():
            for xb, _ in batches:
                net(xb)

    return train, infer


def interleaved(mine, theirs, my_batches, their_batches, repeats):
    """Time both sides alternately, repeat after repeat, so that a noisy neighbour slows both alike.
    Returns (median images/s of mine, of theirs, median of the per-repeat ratios)."""
    mine(my_batches[:2])  # warm-up (JIT, allocators)
    theirs(their_batches[:2])
    n = sum(len(b[1]) for b in my_batches)
    ours, others = [], []
    for _ in range(repeats):
        for fn, batches, out in ((mine, my_batches, ours), (theirs, their_batches, others)):
            t0 = time.perf_counter()
            fn(batches)
            out.append(n / (time.perf_counter() - t0))
    ratios = [a / b for a, b in zip(ours, others)]
    return statistics.median(ours), statistics.median(others), statistics.median(ratios)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="paper")
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--lr", type=float, default=0.01)
    args = ap.parse_args()

    import numba
    import torch

    threads = numba.get_num_threads()
    rng = np.random.default_rng(0)
    n = args.batch_size * args.batches
    x = (rng.integers(0, 256, (n, 3, 32, 32)).astype(np.float32) / 255 - 0.5).astype(np.float32)
    y = rng.integers(0, 10, n)
    np_batches = [(x[i:i + args.batch_size], y[i:i + args.batch_size]) for i in range(0, n, args.batch_size)]
    t_batches = [(torch.from_numpy(a), torch.from_numpy(b)) for a, b in np_batches]

    m_train, m_infer = minicnn_runner(args.arch, x, y, args.lr)
    t_train, t_infer = torch_runner(args.arch, x, y, args.lr, threads)
    rows = [
        ("train",) + interleaved(m_train, t_train, np_batches, t_batches, args.repeats),
        ("inference",) + interleaved(m_infer, t_infer, np_batches, t_batches, args.repeats),
    ]
    print(f"arch={args.arch} batch={args.batch_size} threads={threads} OMP_PROC_BIND={os.environ.get('OMP_PROC_BIND')} "
          f"torch={torch.__version__} "
          f"(medians of {args.repeats} interleaved repeats x {n} images; ratio = median of per-repeat ratios)")
    print(f"{'':10s} {'minicnn img/s':>14s} {'torch img/s':>12s} {'ratio':>6s}")
    for name, mine, theirs, ratio in rows:
        print(f"{name:10s} {mine:14,.0f} {theirs:12,.0f} {ratio:5.1f}x")
    for name, _, _, ratio in rows:
        print(f"{name} ratio: {ratio:.1f}x")


if __name__ == "__main__":
    main()
