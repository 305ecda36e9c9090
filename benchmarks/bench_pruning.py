"""Does pruning save time? Three tables for the paper model (batch 512), minicnn vs PyTorch, one run.

1. Structured pruning + compaction: k of 8 conv filters left. Time per training epoch (50,000 images)
   of minicnn with the model compacted (removed filters and fc1 columns physically dropped), of
   minicnn running the full-size masked model, and of PyTorch (dense: masks do not save it time).
2. Unstructured pruning: time per epoch at increasing sparsity. minicnn skips pruned conv weights
   (whole channels, or tap by tap below fast.skip.NINE_TAP_MIN_DENSITY) and, in the whole-network op
   (fast/convnet.py), runs fc1 on its kept weights only below fast.group_linear.SPARSE_BELOW_DENSITY; "dense"
   is the same model with both turned off (every weight computed), "unpruned/this" the unpruned
   model's epoch over this one's, and PyTorch.
3. The conv crossovers behind skip.NINE_TAP_MIN_DENSITY and convnet.NINE_TAP_MIN_DENSITY: at each density
   of kept conv weights, the fused conv-ReLU-pool layer's forward + backward (block.py) with all 9 taps
   of a channel per pass vs one pass per kept tap, and the paper model's whole training step op
   (convnet.py) with 9 taps per pass vs each filter's taps in one pass (_simd_taps.py).
4. Whole training epochs of the unpruned and the 95 % unstructured-pruned model, in turn: train_epoch over
   CIFAR-10's 50,000 training images (MINICNN_DATA; else as many random ones), as `minicnn train` runs
   them; its medians give the last line.

minicnn trains as `minicnn train` does: each batch a PixelBatch of uint8 images (minicnn/nn/pixels.py),
normalised inside the paper model's op as it reads them; PyTorch gets the same batches as floats, made
ahead of its timing.

Ends with:
    95% unstructured sparsity: an epoch N.NNx faster than the unpruned model's

    python benchmarks/bench_pruning.py [--batches 10] [--repeats 3]
"""

from __future__ import annotations

import os

# Both libraries use OpenMP threads; pin them to cores for both (minicnn does so by default, see
# minicnn/fast/_jit.py), set before either library starts its thread pool.
os.environ.setdefault("OMP_PROC_BIND", "true")

import argparse  # noqa: E402
import contextlib
import statistics
import time

import minicnn  # noqa: F401  (before NumPy: it sets what NumPy's OpenBLAS reads as it loads)
import numpy as np

from minicnn.io.data import Normalizer
from minicnn.nn.pixels import as_floats
from _torch_twin import torch_model

EPOCH = 50_000


def seconds_per_epoch(step, batches, repeats):
    """Median seconds per epoch of EPOCH images of step(batches), after one batch to warm up."""
    return interleaved_seconds_per_epoch({"step": step}, batches, repeats)["step"]


def interleaved_seconds_per_epoch(steps, batches, repeats):
    """seconds_per_epoch of several steps (name -> step), timed in turn repeat after repeat, so that a
    machine that changes speed midway slows them alike."""
    times = {name: [] for name in steps}
    for step in steps.values():
        step(batches[:1])
    for _ in range(repeats):
        for name, step in steps.items():
            t0 = time.perf_counter()
            step(batches)
            times[name].append(time.perf_counter() - t0)
    images = sum(len(b[1]) for b in batches)
    return {name: statistics.median(t) / images * EPOCH for name, t in times.items()}


class DenseKernels:
    """Within it, the paper model's op computes every conv tap and linear weight (pruning-awareness off)."""

    def __init__(self, block, convnet, skip, group_linear):
        self.modules, self.skip_plan = (block, convnet, group_linear), skip.skip_plan
        self.sparse_below = group_linear.SPARSE_BELOW_DENSITY

    def __enter__(self):
        block, convnet, group_linear = self.modules
        block.skip_plan = convnet.skip_plan = lambda active, *_: self.skip_plan(np.ones_like(active))
        group_linear.SPARSE_BELOW_DENSITY = 0.0

    def __exit__(self, *exc):
        block, convnet, group_linear = self.modules
        block.skip_plan = convnet.skip_plan = self.skip_plan
        group_linear.SPARSE_BELOW_DENSITY = self.sparse_below


def minicnn_step(model, lr=0.01, within=None):
    """A training step over batches; ``within``: a context every step runs in."""
    from minicnn.nn.train import Optimizer, SGDConfig, train_step

    opt = Optimizer(SGDConfig(lr=lr))

    def run(batches):
        with within or contextlib.nullcontext():
            for x, y in batches:
                train_step(model, opt, x, y)

    return run


def torch_step(model):
    import torch


    net = torch_model(model)
    with torch.no_grad():
        for tl, layer in zip([m for m in net if hasattr(m, "weight")], model.param_layers()):
            tl.weight.copy_(torch.from_numpy(layer.params["weight"]))
            tl.bias.copy_(torch.from_numpy(layer.params["bias"]))
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    loss_fn = torch.nn.CrossEntropyLoss()
    tb = None

    def run(batches):
        nonlocal tb
        if tb is None or len(tb) != len(batches):
            tb = [(torch.from_numpy(as_floats(x)), torch.from_numpy(y)) for x, y in batches]
        for x, y in tb:
            opt.zero_grad(set_to_none=True)
            loss_fn(net(x), y).backward()
            opt.step()

    return run


def block_ms(x, w, b, mask, repeats, thresholds=(None,)):
    """Median ms of the fused conv-ReLU-pool forward + backward (no input gradient) on batch x, one
    figure per value of skip.NINE_TAP_MIN_DENSITY in ``thresholds`` (None: as it is), timed
    alternately repeat after repeat."""
    import minicnn.nn.fast.block as block
    import minicnn.nn.fast.skip as skip

    x = as_floats(x)
    out, _ = block.conv_relu_pool_forward(x, w, b, 1, 1, 2, 2)
    g = np.random.default_rng(2).standard_normal(out.shape).astype(np.float32)
    saved = skip.NINE_TAP_MIN_DENSITY

    def run(threshold):
        skip.NINE_TAP_MIN_DENSITY = saved if threshold is None else threshold
        try:
            _, cache = block.conv_relu_pool_forward(x, w, b, 1, 1, 2, 2)
            block.conv_relu_pool_backward(g, cache, False, mask)
        finally:
            skip.NINE_TAP_MIN_DENSITY = saved

    times = {threshold: [] for threshold in thresholds}
    for threshold in thresholds:
        run(threshold)
    for _ in range(repeats):
        for threshold in thresholds:
            t0 = time.perf_counter()
            run(threshold)
            times[threshold].append(time.perf_counter() - t0)
    medians = [1e3 * statistics.median(times[threshold]) for threshold in thresholds]
    return medians[0] if len(medians) == 1 else medians


def op_ms(batches, model, w, mask, repeats):
    """Median ms per batch of the paper model's whole training step op (convnet.py) on ``batches`` with conv
    weight w (pruned by mask) and the model's other parameters, with 9 taps per pass and tap by tap
    (convnet.NINE_TAP_MIN_DENSITY 0 and 2), timed in turn (interleaved_seconds_per_epoch)."""
    import minicnn.nn.fast.convnet as convnet

    conv, fc = model.param_layers()
    b, fc_w, fc_b = conv.params["bias"], fc.params["weight"], fc.params["bias"]
    saved = convnet.NINE_TAP_MIN_DENSITY

    def step(threshold):
        def run(some):
            convnet.NINE_TAP_MIN_DENSITY = threshold
            try:
                for x, y in some:
                    convnet.conv_relu_pool_linear_loss(x, w, b, 1, fc_w, fc_b, y, mask)
            finally:
                convnet.NINE_TAP_MIN_DENSITY = saved

        return run

    per_epoch = interleaved_seconds_per_epoch({"nine": step(0.0), "taps": step(2.0)}, batches, repeats)
    batch_share = len(batches[0][1]) / EPOCH
    return 1e3 * per_epoch["nine"] * batch_share, 1e3 * per_epoch["taps"] * batch_share


def whole_epochs(repeats):
    """Seconds of whole training epochs of the paper model, unpruned and 95 % unstructured-pruned, timed
    in turn ``repeats`` times: train_epoch over CIFAR-10's 50,000 training images (MINICNN_DATA, else
    as many random ones) with the product's Normalizer, as `minicnn train` runs an epoch."""
    from minicnn.io.data import load_cifar10, make_normalizer
    from minicnn.io.dataset import make_synthetic
    from minicnn.nn.model import build_model
    from minicnn.nn.train import Optimizer, SGDConfig, train_epoch
    from minicnn.pruning.masks import prune_model

    source = os.environ.get("MINICNN_DATA")
    data = load_cifar10(source, download=False) if source else make_synthetic(EPOCH, 1)
    normalizer = make_normalizer("center", data)
    runs = []
    for amount in (0.0, 0.95):
        model = build_model("paper", np.random.default_rng(0))
        prune_model(model, amount, "unstructured")
        runs.append((model, Optimizer(SGDConfig(lr=0.01)), []))
    for model, optimizer, _ in runs:  # warm up
        train_epoch(model, optimizer, data.x_train[:2048], data.y_train[:2048], normalizer, 512,
                    np.random.default_rng(0))
    for repeat in range(repeats):
        for model, optimizer, seconds in runs:
            seconds.append(train_epoch(model, optimizer, data.x_train, data.y_train, normalizer, 512,
                                       np.random.default_rng(repeat))["seconds"])
    return runs[0][2], runs[1][2]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import numba

    from minicnn.ladder.machine import import_torch

    torch = import_torch()  # before any kernel: both libraries' threads on every core (see there)

    import minicnn.nn.fast.block as block
    import minicnn.nn.fast.convnet as convnet
    import minicnn.nn.fast.group_linear as group_linear
    import minicnn.nn.fast.skip as skip
    from minicnn.pruning.compact import compact
    from minicnn.nn.model import build_model
    from minicnn.pruning.masks import prune_model

    torch.set_num_threads(numba.get_num_threads())
    rng = np.random.default_rng(0)
    # minicnn's batches as `minicnn train` gives them (nn/train.py): uint8 images by rows, which the paper
    # model's op normalises as it reads them (a Normalizer's PixelBatch); PyTorch gets the same floats
    images = rng.integers(0, 256, (512 * args.batches, 3, 32, 32), dtype=np.uint8)
    normalizer = Normalizer("center", None, None)
    batches = [(normalizer.batch(images, np.arange(512 * i, 512 * (i + 1))), rng.integers(0, 10, 512))
               for i in range(args.batches)]
    print(f"paper model, batch 512, {numba.get_num_threads()} threads, seconds per epoch of {EPOCH:,} images "
          f"(median of {args.repeats})\n")

    print("1. structured pruning: filters left vs time per epoch, and vs the conv step's time alone")
    print(f"{'filters':>7s} {'compact s':>9s} {'masked s':>9s} {'torch s':>8s} {'compact/full':>12s} "
          f"{'conv ms':>8s} {'conv/full':>9s} {'k/8':>5s} {'vs torch':>8s}")
    full = full_conv = None
    for k in range(8, 0, -1):
        model = build_model("paper", np.random.default_rng(0))
        prune_model(model, (8 - k) / 8, "structured")
        small, _ = compact(model)
        t_small = seconds_per_epoch(minicnn_step(small), batches, args.repeats)
        t_masked = seconds_per_epoch(minicnn_step(model), batches, args.repeats)
        t_torch = seconds_per_epoch(torch_step(model), batches, args.repeats)
        conv = small.layers[0]
        t_conv = block_ms(batches[0][0], conv.params["weight"], conv.params["bias"], None, 5 * args.repeats)
        full, full_conv = full or t_small, full_conv or t_conv
        print(f"{k:7d} {t_small:9.2f} {t_masked:9.2f} {t_torch:8.2f} {t_small / full:12.2f} {t_conv:8.2f} "
              f"{t_conv / full_conv:9.2f} {k / 8:5.2f} {t_torch / t_small:7.1f}x")

    print("\n2. unstructured pruning: sparsity vs time per epoch")
    print(f"{'sparsity':>8s} {'sparse s':>8s} {'dense s':>8s} {'torch s':>8s} {'dense/sparse':>12s} "
          f"{'unpruned/this':>13s} {'vs torch':>8s}")
    amounts = (0.0, 0.5, 0.8, 0.9, 0.95, 0.99)
    steps = {}
    for amount in amounts:
        model = build_model("paper", np.random.default_rng(0))
        prune_model(model, amount, "unstructured")
        steps[amount, "sparse"] = minicnn_step(model)
        steps[amount, "dense"] = minicnn_step(model, within=DenseKernels(block, convnet, skip, group_linear))
        steps[amount, "torch"] = torch_step(model)
    t = interleaved_seconds_per_epoch(steps, batches, args.repeats)
    for amount in amounts:
        t_sparse, t_dense, t_torch = t[amount, "sparse"], t[amount, "dense"], t[amount, "torch"]
        print(f"{amount:8.2f} {t_sparse:8.2f} {t_dense:8.2f} {t_torch:8.2f} {t_dense / t_sparse:12.2f} "
              f"{t[0.0, 'sparse'] / t_sparse:13.2f} {t_torch / t_sparse:7.1f}x")

    print("\n3. conv weights kept vs time (ms per batch) of the fused conv-ReLU-pool layer's forward + backward "
          "(block.py), and of the paper model's whole training step (convnet.py, linear layer dense)")
    print(f"{'kept':>5s} {'9 taps/pass':>11s} {'tap by tap':>10s} {'chosen':>7s}   {'op 9 taps':>9s} "
          f"{'op taps':>7s} {'chosen':>7s}")
    x = batches[0][0]
    for density in (1.0, 0.8, 0.6, 0.5, 0.4, 0.3, 0.25, 0.2, 0.1):
        model = build_model("paper", np.random.default_rng(0))
        w, b = model.layers[0].params["weight"], model.layers[0].params["bias"]
        mask = (np.random.default_rng(1).random(w.shape) < density).astype(np.float32)
        w = w * mask
        nine, taps = block_ms(x, w, b, mask, 5 * args.repeats, thresholds=(0.0, 2.0))
        chosen = "9 taps" if mask.mean() >= skip.NINE_TAP_MIN_DENSITY else "taps"
        op_nine, op_taps = op_ms(batches, model, w, mask, args.repeats)
        op_chosen = "9 taps" if mask.mean() >= convnet.NINE_TAP_MIN_DENSITY else "taps"
        print(f"{mask.mean():5.2f} {nine:11.2f} {taps:10.2f} {chosen:>7s}   {op_nine:9.2f} {op_taps:7.2f} "
              f"{op_chosen:>7s}")
    print("\n4. whole training epochs (50,000 images, train_epoch as `minicnn train` runs them), unpruned and "
          "95% unstructured, in turn")
    unpruned, pruned = whole_epochs(args.repeats)
    print(f"unpruned s: {' '.join(f'{t:.3f}' for t in unpruned)}\n95%      s: {' '.join(f'{t:.3f}' for t in pruned)}")
    speedup_95 = statistics.median(unpruned) / statistics.median(pruned)
    print(f"\n95% unstructured sparsity: an epoch {speedup_95:.2f}x faster than the unpruned model's")


if __name__ == "__main__":
    main()
