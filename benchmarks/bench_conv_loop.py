"""The 9-tap conv loop alone, one thread: minicnn's Numba helper (minicnn.nn.fast.conv_passes.conv_quarters) on the
paper's conv (8 filters x 3 channels, 32x32 input), in float multiply-adds per second. Compare with
benchmarks/conv_loop_bound.c, the same loop in C, and the CPU's peak that it prints:

    python benchmarks/bench_conv_loop.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import minicnn  # noqa: F401  (before NumPy: it sets what NumPy's OpenBLAS reads as it loads)
import numpy as np


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()

    import numba

    from minicnn.nn.fast._jit import REDUCTION_FASTMATH
    from minicnn.nn.fast.conv_passes import conv_quarters
    from minicnn.nn.fast.parity import fill_quarters, split_sizes
    from minicnn.nn.fast.skip import skip_plan

    @numba.njit(fastmath=REDUCTION_FASTMATH)
    def passes(x, w, b, nine_taps, tap_count, taps, live, images):
        """The forward conv of ``images`` images (one image's planes, refilled each time)."""
        wh, span, plane_len = split_sizes(32, 32, 1, 3, 3, 16, True)
        planes = np.zeros((2, 2, x.shape[1], plane_len), np.float32)
        conv = np.empty((2, 2, span), np.float32)
        for n in range(images):
            fill_quarters(x, n % x.shape[0], 1, wh, planes, 0)
            for f in range(w.shape[0]):
                conv_quarters(planes, w, b, f, nine_taps, tap_count, taps, live, wh, conv)
        return conv[0, 0, 0]

    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 3, 32, 32)).astype(np.float32)
    w = (rng.standard_normal((8, 3, 3, 3)) * 0.2).astype(np.float32)
    b = np.zeros(8, np.float32)
    plan = skip_plan(w != 0)
    _, span, _ = split_sizes(32, 32, 1, 3, 3, 16, True)
    images = 3000
    passes(x, w, b, *plan, 1)
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        passes(x, w, b, *plan, images)
        times.append((time.perf_counter() - t0) / images)
    per_image = statistics.median(times)
    fmas = 8 * 3 * span * 36  # filters x channels x split-map entries x 36 multiply-adds (junk column included)
    print(f"Numba 9-tap conv loop (with the image fill): {per_image * 1e6:.2f} us per image, "
          f"{fmas / per_image / 1e9:.1f} G lane-FMA/s, vector features: "
          f"{'512-bit' if (numba.config.CPU_FEATURES or '').endswith('-prefer-256-bit') else 'default'}")


if __name__ == "__main__":
    main()
