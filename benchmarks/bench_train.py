"""Training and inference throughput of minicnn (fast backend) vs PyTorch CPU, eager and compiled
(torch.compile, inductor), side by side; then how close minicnn's training comes to the machine's peak.

Same model, same batch size, same number of threads, the same images: minicnn reads them as ``minicnn train``
does, uint8 pixels by rows with the normaliser's table (``io.data.Normalizer.batch``: a PixelBatch, which the
paper model's op normalises as it unpacks it, other models as floats), PyTorch gets the very same values
as float32 tensors made ahead (its normalisation is not timed). Each PyTorch variant is timed beside
minicnn, alternately, repeat after repeat (a noisy machine slows both alike): eager PyTorch in this
process, torch.compile in a second one (a process that has run torch.compile runs eager PyTorch slower).
Medians reported; a pair's ratio is the median over repeats of minicnn's images/s over the variant's
(both printed), and the ratio printed last is the lower of the two pairs'. Minicnn's column is this
process's. Peak: the GFLOP/s of a float32 NumPy matmul of 4096 x 4096 (its BLAS on every core, as the
kernels), and minicnn's training GFLOP/s counted as PyTorch's FLOP counter counts a training step
(``minicnn.pruning.flops.training_matmul_flops``, held equal to it by a test). Ends with:
    train ratio: N.Nx
    inference ratio: N.Nx
    train fraction of peak: NN%

    python benchmarks/bench_train.py [--arch paper] [--batch-size 512] [--batches 20] [--repeats 5]
                                     [--no-compile]
"""

from __future__ import annotations

import os

# Both libraries use OpenMP threads; pin them to cores for both (minicnn does so by default, see
# minicnn/fast/_jit.py), set before either library starts its thread pool.
os.environ.setdefault("OMP_PROC_BIND", "true")

import argparse  # noqa: E402
import json
import statistics
import subprocess
import sys
import time

import minicnn  # noqa: F401  (before NumPy: it sets what NumPy's OpenBLAS reads as it loads)
import numpy as np

from _torch_twin import torch_model

NORMALIZE = "center"  # x / 255 - 0.5, the default of minicnn train


def minicnn_runner(arch, pixels, lr):
    """(train, infer) over batches of (rows, labels): each step takes pixels[rows] as minicnn's training
    loop (nn/train.py) does, through the normaliser."""
    from minicnn.io.data import Normalizer
    from minicnn.nn.model import build_model
    from minicnn.nn.train import Optimizer, SGDConfig, train_step

    model = build_model(arch, np.random.default_rng(0), backend="fast")
    opt = Optimizer(SGDConfig(lr=lr))
    normalizer = Normalizer(NORMALIZE, None, None)

    def train(batches):
        for rows, yb in batches:
            train_step(model, opt, normalizer.batch(pixels, rows), yb)

    def infer(batches):
        for rows, _ in batches:
            model.forward(normalizer.batch(pixels, rows), for_backward=False)  # as torch.inference_mode below

    return train, infer


def torch_runner(arch, lr, threads, compiled=False):
    """(train, infer) of the PyTorch twin; ``compiled``: through torch.compile (inductor, default mode)."""
    import torch
    from torch import nn

    from minicnn.nn.model import build_model

    torch.set_num_threads(threads)
    net = torch_model(build_model(arch, np.random.default_rng(0), backend="ref"))
    if compiled:
        net = torch.compile(net)
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


def interleaved(sides, repeats):
    """Time every side ((fn, batches), minicnn first) in turn, repeat after repeat, so that a noisy
    neighbour slows all alike. Returns (median images/s per side, median over repeats of minicnn's
    images/s over the fastest other side's)."""
    for fn, batches in sides:
        fn(batches[:2])  # warm-up (JIT, torch.compile, allocators)
    n = sum(len(b[1]) for b in sides[0][1])
    speeds = [[] for _ in sides]
    for _ in range(repeats):
        for (fn, batches), out in zip(sides, speeds):
            t0 = time.perf_counter()
            fn(batches)
            out.append(n / (time.perf_counter() - t0))
    ratios = [mine / max(others) for mine, *others in zip(*speeds)]
    return [statistics.median(s) for s in speeds], statistics.median(ratios)


def _compile_pair(argv):
    """{"train" | "inference": ([minicnn, torch.compile] images/s, ratio)} from this script rerun with
    --only-compile: torch.compile is timed in a process of its own, beside minicnn, because a process
    that has run it runs eager PyTorch slower (the paper model's eager training 12,500 against 21,300
    images/s without it: TorchDynamo's frame hook stays installed)."""
    proc = subprocess.run([sys.executable, __file__, *argv, "--only-compile"], capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("JSON ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"the torch.compile process failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("JSON "):])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="paper")
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--no-compile", action="store_true", help="leave torch.compile out (it compiles for minutes)")
    ap.add_argument("--only-compile", action="store_true", help=argparse.SUPPRESS)  # the second process (see above)
    args = ap.parse_args()

    # first, while no OpenMP runtime has bound this thread to a core: the child would inherit that binding
    compiled = None if (args.no_compile or args.only_compile) else _compile_pair(sys.argv[1:])
    import numba

    from minicnn.ladder.machine import cpu_model, import_torch, matmul_gflops

    torch = import_torch()  # before any kernel: both libraries' threads on every core (see there)

    threads = numba.get_num_threads()
    rng = np.random.default_rng(0)
    n = args.batch_size * args.batches
    from minicnn.io.data import normalize

    pixels = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    y = rng.integers(0, 10, n)
    order = rng.permutation(n)  # shuffled, as an epoch's batches
    row_batches = [(order[i:i + args.batch_size], y[order[i:i + args.batch_size]])
                   for i in range(0, n, args.batch_size)]
    t_batches = [(torch.from_numpy(normalize(pixels[rows], NORMALIZE)), torch.from_numpy(labels))
                 for rows, labels in row_batches]

    def timed_pair(torch_side):
        """{"train" | "inference": ([minicnn, torch_side] images/s, ratio)}, the two timed alternately."""
        pair = [minicnn_runner(args.arch, pixels, args.lr), torch_side]
        return {name: interleaved([(pair[0][kind], row_batches), (pair[1][kind], t_batches)], args.repeats)
                for name, kind in (("train", 0), ("inference", 1))}

    if args.only_compile:  # the child process of the torch.compile pair: its figures as one JSON line
        print("JSON " + json.dumps(timed_pair(torch_runner(args.arch, args.lr, threads, compiled=True))))
        return
    peak = matmul_gflops(size=4096, repeats=3)  # before any kernel runs (see matmul_gflops)
    eager = timed_pair(torch_runner(args.arch, args.lr, threads))
    names = ["minicnn", "torch eager"] + ([] if compiled is None else ["torch.compile"])
    rows, pair_ratios = [], {}
    for name, (speeds, ratio) in eager.items():
        pair_ratios[name] = [ratio]
        if compiled is not None:  # the compiled side's speed, and the lower of the two pairs' ratios
            pair_ratios[name].append(compiled[name][1])
            speeds, ratio = speeds + [compiled[name][0][1]], min(ratio, compiled[name][1])
        rows.append((name, speeds, ratio))
    from minicnn.nn.model import build_model
    from minicnn.pruning.flops import training_matmul_flops

    work = training_matmul_flops(build_model(args.arch, np.random.default_rng(0), backend="ref"))
    train_gflops = rows[0][1][0] * work / 1e9

    print(f"CPU: {cpu_model()}; arch={args.arch} batch={args.batch_size} threads={threads} "
          f"OMP_PROC_BIND={os.environ.get('OMP_PROC_BIND')} torch={torch.__version__} (medians of {args.repeats} "
          f"interleaved repeats x {n} images; ratio = median over repeats of minicnn / PyTorch, the lower of the "
          f"eager and the compiled pair's; torch.compile timed beside minicnn in a process of its own)")
    pair_names = ["vs eager"] + ([] if compiled is None else ["vs compile"])
    print(f"{'':10s}" + "".join(f" {name + ' img/s':>19s}" for name in names)
          + "".join(f" {name:>10s}" for name in pair_names) + f" {'ratio':>6s}")
    for name, speeds, ratio in rows:
        print(f"{name:10s}" + "".join(f" {s:19,.0f}" for s in speeds)
              + "".join(f" {r:9.2f}x" for r in pair_ratios[name]) + f" {ratio:5.1f}x")
    print(f"training: {work:,} FLOPs per image (PyTorch's count) x {rows[0][1][0]:,.0f} img/s = "
          f"{train_gflops:.1f} GFLOP/s; float32 matmul 4096^2 on {threads} threads: {peak:.1f} GFLOP/s")
    for name, _, ratio in rows:
        print(f"{name} ratio: {ratio:.1f}x")
    print(f"train fraction of peak: {100 * train_gflops / peak:.0f}%")


if __name__ == "__main__":
    main()
