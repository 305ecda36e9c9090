"""Accuracy check: minicnn and PyTorch train the same model on the same CIFAR-10 data with the same
hyperparameters and init scheme, and should land within a couple of accuracy points.

Both start from PyTorch's default initialisation (minicnn's own draw of it, seeded; PyTorch's own
draw with torch.manual_seed), use the same normalisation, batch size, learning rate and epochs, and
each shuffles with its own RNG. Prints both test accuracies per epoch and the final difference.

    MINICNN_DATA=path/to/cifar-10-binary.tar.gz python benchmarks/compare_torch_training.py [--lr 0.01]
"""

from __future__ import annotations

import argparse
import time

import minicnn  # noqa: F401  (before NumPy: it sets what NumPy's OpenBLAS reads as it loads)
import numpy as np

from _torch_twin import torch_model


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="paper")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--normalize", default="center")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default=None)
    ap.add_argument("--train-limit", type=int, default=None)
    args = ap.parse_args()

    import numba

    from minicnn.ladder.machine import import_torch

    torch = import_torch()  # before any kernel: both libraries' threads on every core (see there)

    from minicnn.io.data import load_cifar10
    from minicnn.nn.model import build_model
    from minicnn.io.data import make_normalizer
    from minicnn.nn.train import Optimizer, SGDConfig, epoch_rng, evaluate, train_epoch

    torch.set_num_threads(numba.get_num_threads())
    data = load_cifar10(args.data, train_limit=args.train_limit)
    norm = make_normalizer(args.normalize, data)

    model = build_model(args.arch, np.random.default_rng(args.seed), backend="fast")
    opt = Optimizer(SGDConfig(lr=args.lr))
    torch.manual_seed(args.seed)
    net = torch_model(model)
    topt = torch.optim.SGD(net.parameters(), lr=args.lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    x_test = torch.from_numpy(norm(data.x_test))
    y_test = torch.from_numpy(data.y_test)
    g = torch.Generator().manual_seed(args.seed)

    print(f"{args.arch}, lr {args.lr}, batch {args.batch_size}, normalize {args.normalize}, "
          f"{len(data.y_train)} train / {len(data.y_test)} test images")
    print(f"{'epoch':>5s} {'minicnn test':>12s} {'torch test':>10s} {'minicnn s':>9s} {'torch s':>8s}")
    for epoch in range(args.epochs):
        t0 = time.perf_counter()
        train_epoch(model, opt, data.x_train, data.y_train, norm, args.batch_size, epoch_rng(args.seed, epoch))
        t_mini = time.perf_counter() - t0
        mine = evaluate(model, data.x_test, data.y_test, norm)["acc"]

        t0 = time.perf_counter()
        net.train()
        order = torch.randperm(len(data.y_train), generator=g).numpy()
        for lo in range(0, len(order), args.batch_size):
            idx = order[lo:lo + args.batch_size]
            xb = torch.from_numpy(norm(data.x_train[idx]))
            yb = torch.from_numpy(data.y_train[idx])
            topt.zero_grad(set_to_none=True)
            loss_fn(net(xb), yb).backward()
            topt.step()
        t_torch = time.perf_counter() - t0
        with torch.inference_mode():
            theirs = float((net(x_test).argmax(1) == y_test).float().mean())
        print(f"{epoch + 1:5d} {mine:12.2%} {theirs:10.2%} {t_mini:9.1f} {t_torch:8.1f}")
    print(f"final test accuracy: minicnn {mine:.2%}, torch {theirs:.2%}, difference {100 * (mine - theirs):+.2f} points")


if __name__ == "__main__":
    main()
