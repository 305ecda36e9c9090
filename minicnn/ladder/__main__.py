"""python -m minicnn.ladder [--repeats N] [--out DIR]: the ladder measured side by side, in one run.

Times every rung's training step (forward, loss and the four gradients, no optimizer step) on the
paper model's batch, x (512, 3, 32, 32) float32, w (8, 3, 3, 3), fc_w (10, 2048), and PyTorch's on the
same batch (forward, loss and backward, when torch is importable), all interleaved repeat after repeat
so that a noisy machine slows them alike. Prints images/s (the median of the repeats), the speedup
over the previous rung, GFLOP/s from the paper model's training FLOPs per image
(minicnn.pruning.flops, 3 x forward), the fraction of NumPy's float32 matrix-product speed measured in
the same run (the machine's practical peak), and the CPU model. Rung 1 is timed on SLOW_BATCH images
and scaled. With --out, draws the figure there (plots/ladder.py: ladder.png and ladder.svg).

This is a harness on top of the rungs: it reads the FLOP counter and the plots, which the rungs do not.
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np

from minicnn.ladder import RUNGS, load
from minicnn.ladder._jit import num_threads
from minicnn.ladder.machine import cpu_model, import_torch, matmul_gflops, seconds

BATCH = 512
SLOW_BATCH = 16  # images rung 1 is timed on (its per-image cost does not depend on the batch)
MIN_SECONDS = 0.25  # a repeat runs the step as many times as fill this


def paper_batch(n: int, rng: np.random.Generator):
    """x (n, 3, 32, 32) float32 (pixels / 255 - 0.5), the paper model's freshly initialised parameters
    (PyTorch's default init) and labels: (x, w, b, pad, fc_w, fc_b, labels)."""
    from minicnn.nn.model import build_model

    model = build_model("paper", rng, backend="ref")
    conv, fc = (next(layer for layer in model.layers if layer.kind == kind) for kind in ("conv", "linear"))
    x = (rng.integers(0, 256, (n, 3, 32, 32)) / 255 - 0.5).astype(np.float32)
    return (x, conv.params["weight"], conv.params["bias"], conv.padding, fc.params["weight"], fc.params["bias"],
            rng.integers(0, 10, n))


def training_flops_per_image() -> int:
    from minicnn.nn.model import build_model
    from minicnn.pruning.flops import count

    return count(build_model("paper", np.random.default_rng(0), backend="ref"))["totals"]["training_flops_effective"]


def torch_step(batch):
    """PyTorch's training step on the same batch and parameters (None without torch): forward, mean
    cross-entropy and backward; the input needs no gradient, as in the rungs."""
    try:
        torch = import_torch()  # its threads on every core, though minicnn's already run (see there)
    except ImportError:
        return None, None
    torch.set_num_threads(num_threads())
    x, w, b, pad, fc_w, fc_b, labels = batch
    net = torch.nn.Sequential(torch.nn.Conv2d(3, w.shape[0], w.shape[2], 1, pad), torch.nn.ReLU(),
                              torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(fc_w.shape[1], fc_w.shape[0]))
    with torch.no_grad():
        for param, value in zip(net.parameters(), (w, b, fc_w, fc_b)):
            param.copy_(torch.from_numpy(value))
    xt, yt = torch.from_numpy(x), torch.from_numpy(labels)

    def step():
        net.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(xt), yt).backward()

    return step, torch.__version__


def measure(batch_size: int = BATCH, repeats: int = 5, slow_batch: int = SLOW_BATCH, with_torch: bool = True,
            min_seconds: float = MIN_SECONDS) -> dict:
    """Images/s of every rung (and PyTorch), medians of ``repeats`` interleaved repeats; see the module."""
    peak = matmul_gflops()  # first: once Numba's threads run they are pinned, and BLAS's main thread with them
    batch = paper_batch(batch_size, np.random.default_rng(0))
    small = tuple(a[:slow_batch] if i in (0, 6) else a for i, a in enumerate(batch))
    runners = []
    for name, idea in RUNGS:
        op, args = load(name).conv_relu_pool_linear_loss, (small if name == "rung1_loops" else batch)
        op(*args)  # compile, or load the compiled kernels
        runners.append([name, idea, lambda op=op, args=args: op(*args), len(args[0]), []])
    step, torch_version = torch_step(batch) if with_torch else (None, None)
    if step is not None:
        step()
        runners.append(["pytorch", f"PyTorch {torch_version}", step, batch_size, []])
    for runner in runners:  # calls per repeat, so that a repeat lasts about min_seconds
        runner.append(max(1, round(min_seconds / max(seconds(runner[2]), 1e-6))))
    for _ in range(repeats):
        for _name, _idea, fn, images, rates, calls in runners:
            rates.append(images * calls / seconds(lambda: [fn() for _ in range(calls)]))
    rows = [{"name": name, "idea": idea, "images": images, "rate": statistics.median(rates), "rates": rates}
            for name, idea, _fn, images, rates, _calls in runners]
    torch_row = rows.pop() if step is not None else None
    return {"rows": rows, "torch": torch_row, "peak_gflops": peak, "flops": training_flops_per_image(),
            "cpu": cpu_model(), "batch": batch_size, "repeats": repeats, "threads": num_threads()}


def report(result: dict) -> str:
    """The table of ``measure``'s result, with the conditions it was measured in."""
    flops, peak, batch = result["flops"], result["peak_gflops"], result["batch"]
    lines = [f"The kernel ladder: the paper model's training step (forward, loss, dw, db, dfc_w, dfc_b), batch {batch} "
             f"float32, {result['threads']} threads",
             f"CPU: {result['cpu']}",
             f"FLOPs per image: {flops:,} (training_flops_effective of minicnn.pruning.flops: 3 x forward; the rungs "
             "compute no input gradient, so they do less)",
             f"Peak: NumPy's float32 matrix product (2048^3) in this run, {peak:.0f} GFLOP/s",
             f"images/s: median of {result['repeats']} interleaved repeats on a shared, noisy machine (the same code "
             "measures up to 1.5x apart from one minute to the next)", "",
             f"{'rung':26s} {'images/s':>9s} {'(repeats: min-max)':>19s} {'speedup':>8s} {'GFLOP/s':>8s} "
             f"{'% of peak':>9s}"]
    previous = None
    for row in result["rows"] + ([result["torch"]] if result["torch"] else []):
        is_torch = row is result["torch"]
        label = row["idea"] if is_torch else f"{_number(row)} {row['idea']}"
        gflops = row["rate"] * flops / 1e9
        spread = f"{min(row['rates']):,.0f}-{max(row['rates']):,.0f}"
        speedup = "" if is_torch or previous is None else f"{row['rate'] / previous:.1f}x"
        percent = 100 * gflops / peak
        lines.append(f"{label:26s} {row['rate']:9,.0f} {spread:>19s} {speedup:>8s} {gflops:8.1f} {percent:8.1f}%")
        previous = row["rate"]
    lines += [f"(rung {_number(row)} timed on {row['images']} images and scaled: its time per image does not depend on "
              "the batch)" for row in result["rows"] if row["images"] != batch]
    if result["torch"] is None:
        lines.append("(no PyTorch figure: torch not importable)")
    return "\n".join(lines)


def _number(row: dict) -> str:
    """The rung's number, from its module name (rung<k>_...)."""
    return row["name"].split("_")[0].removeprefix("rung")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m minicnn.ladder", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats (default 5)")
    parser.add_argument("--out", help="folder for the figure (ladder.png, ladder.svg); none without")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    result = measure(repeats=args.repeats)
    print(report(result))
    if args.out:
        from plots.ladder import ladder_figure

        rows = result["rows"]
        paths = ladder_figure([f"{_number(row)} {row['idea']}" for row in rows], [row["rate"] for row in rows],
                              args.out, result["torch"] and result["torch"]["rate"],
                              f"Training images/s per rung, batch {result['batch']} ({result['cpu']})")
        print("figure: " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    main()
