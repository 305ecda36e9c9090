"""The exported model beside minicnn: ONNX file size and inference images/s in ONNX Runtime and in
minicnn, for the paper model structured-pruned to 8, 4, 2 and 1 filters, side by side in one run.

Each model is written as a checkpoint, read back and exported as `minicnn export --format onnx` does
(compacted); minicnn runs the same checkpoint compacted, as `minicnn compact` leaves it (inference
forward, fast kernels). Batch 512 of preprocessed float32 images; ONNX Runtime gets as many intra-op
threads as minicnn's Numba has (one inter-op thread). The two are timed alternately, repeat after
repeat; the figure is the median.

    python benchmarks/bench_export.py [--batches 10] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import minicnn  # noqa: F401  (before NumPy: it sets what NumPy's OpenBLAS reads as it loads)
import numpy as np

from minicnn.ladder.machine import cpu_model


def images_per_s(runs: dict, batches: list, repeats: int) -> dict:
    """{name: median images/s} of each run(batch) over all batches, the runs timed alternately."""
    for run in runs.values():
        run(batches[0])  # warm up (compilation, allocation)
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            t0 = time.perf_counter()
            for x in batches:
                run(x)
            times[name].append(time.perf_counter() - t0)
    n = sum(len(x) for x in batches)
    return {name: n / statistics.median(t) for name, t in times.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    import numba
    import onnxruntime as ort

    from minicnn.io.checkpoint import load_checkpoint, save_checkpoint
    from minicnn.io.data import normalize
    from minicnn.io.export import preprocessing
    from minicnn.io.onnx_export import OPSET, onnx_model, save_onnx
    from minicnn.nn.model import build_model
    from minicnn.pruning.compact import compact
    from minicnn.pruning.masks import prune_model

    threads = numba.get_num_threads()
    rng = np.random.default_rng(0)
    batches = [normalize(rng.integers(0, 256, (512, 3, 32, 32), dtype=np.uint8), "center")
               for _ in range(args.batches)]
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    print(f"CPU: {cpu_model()}; {threads} threads; onnxruntime {ort.__version__}, ONNX opset {OPSET}")
    print(f"paper model, structured pruning, batch 512, inference images/s (median of {args.repeats} x "
          f"{args.batches} batches)\n")
    print(f"{'filters':>7s} {'ONNX bytes':>10s} {'ORT img/s':>10s} {'minicnn img/s':>13s} {'minicnn/ORT':>11s}")
    with tempfile.TemporaryDirectory() as folder:
        for k in (8, 4, 2, 1):
            model = build_model("paper", np.random.default_rng(0))
            prune_model(model, (8 - k) / 8, "structured")
            ckpt = save_checkpoint(Path(folder) / f"k{k}.h5", model, config={"normalize": "center"})
            loaded, _ = load_checkpoint(ckpt)
            out = save_onnx(onnx_model(loaded, preprocessing("center")), Path(folder) / f"k{k}.onnx")
            session = ort.InferenceSession(str(out), options, providers=["CPUExecutionProvider"])
            small, _ = compact(loaded)
            speed = images_per_s({"ort": lambda x: session.run(None, {"input": x}),
                                  "minicnn": lambda x: small.forward(x, for_backward=False)},
                                 batches, args.repeats)
            print(f"{k:7d} {out.stat().st_size:10,d} {speed['ort']:10,.0f} {speed['minicnn']:13,.0f} "
                  f"{speed['minicnn'] / speed['ort']:10.2f}x")


if __name__ == "__main__":
    main()
