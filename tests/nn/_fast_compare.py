"""What the fast-kernel tests share: both backends, the float32 tolerance and exact-grid inputs.

Tolerance: |fast - ref| <= ATOL + RTOL * |ref| elementwise. Both sides compute the same sums in
float32 but in different orders (the fast kernels split them across threads and let LLVM reassociate
them for SIMD), so they may differ by rounding only. With O(1) inputs and at most a few thousand terms
per sum, the rounding difference is a few float32 ulps (eps = 1.2e-7) of the terms' magnitude:
RTOL = 1e-4 leaves ~800 ulps of headroom on large results, and ATOL = 1e-5 covers results that
cancel to near zero (where a relative bound means nothing). A real bug (a missed term, a wrong index,
a padding or stride error) changes results by O(0.1), orders of magnitude above both.

Max-pool indices, ReLU masks and the SGD update of pruned entries are discrete and must match exactly.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from minicnn.nn.backend import get_backend

ref = get_backend("ref")
fast = get_backend("fast")

ATOL = 1e-5
RTOL = 1e-4
ROOT = Path(__file__).resolve().parents[2]


def assert_close(got, want, what: str = "", atol: float = ATOL, rtol: float = RTOL, terms=None) -> None:
    """|got - want| <= atol + rtol*|want| (+ 1e-7 * terms, where ``terms`` is the sum of the absolute
    values of the terms each entry sums: float32 summed in different orders differs by a few ulps of
    that, which for long sums with cancellation exceeds any fixed relative tolerance)."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
    err = np.abs(got.astype(np.float64) - want.astype(np.float64))
    allowed = atol + rtol * np.abs(want.astype(np.float64))
    if terms is not None:
        allowed = allowed + 1e-7 * np.asarray(terms, dtype=np.float64)
    if not np.all(err <= allowed):
        i = np.unravel_index(np.argmax(err - allowed), err.shape)
        raise AssertionError(f"{what}: |fast - ref| = {err[i]:.3g} > {allowed[i]:.3g} at {i} "
                             f"(fast {got[i]!r}, ref {want[i]!r}); {np.sum(err > allowed)} entries off")


def f32(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


def grid(rng, shape, denominator: int, top: int = None) -> np.ndarray:
    """Random multiples of 1/denominator in [-1, 1]: products and sums of a few thousand of them are
    exact in float32, so every summation order gives the same bits, and ties are real ties."""
    top = denominator if top is None else top
    return f32(rng.integers(-top, top + 1, size=shape) / denominator)



def block_kink_margin(x, wt, b, s, p, pk, ps) -> float:
    """Float64 distance of the conv outputs from ReLU's kink and of each pooling window's maximum from
    its runner-up (rounding may flip decisions closer than that)."""
    z = ref.conv2d_forward(x.astype(np.float64), wt.astype(np.float64), b.astype(np.float64), s, p)[0]
    r = np.maximum(z, 0.0)
    cols = ref.im2col(r.reshape(-1, 1, *r.shape[2:]), pk, pk, ps, 0)  # (N*F, PK*PK, P)
    srt = np.sort(cols, axis=1)
    top, second = srt[:, -1], srt[:, -2] if pk > 1 else np.zeros_like(srt[:, -1])
    gaps = (top - second)[top > 0]
    return float(min(np.abs(z).min(), gaps.min() if gaps.size else np.inf))



def run_python(args, *, timeout: int, **env) -> subprocess.CompletedProcess:
    """Run ``python *args`` from the repository root with this checkout first on PYTHONPATH and the
    extra environment variables ``env``; returns the finished process (output captured as text)."""
    full_env = dict(os.environ, **env)
    full_env["PYTHONPATH"] = os.pathsep.join([str(ROOT), full_env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run([sys.executable, *args], env=full_env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)
