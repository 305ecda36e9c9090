"""Skip plans: which conv weights the kernels compute, so that pruned ones cost nothing.

A kernel either takes all 9 taps of a 3x3 channel per pass (skipping whole channels whose weights are
all pruned) or, for sparser filters and other kernel sizes, loops over each filter's list of kept taps.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

#: The 3x3 kernels take all 9 taps of a channel per pass (pruned ones multiply zeros) when at least this
#: fraction of weights is kept, else one pass per kept tap: the two tie at about 18 % kept
#: (benchmarks/bench_pruning.py, table 3).
NINE_TAP_MIN_DENSITY = 0.18


class SkipPlan(NamedTuple):
    """How the kernels skip the inactive weights of a conv weight (F, C, KH, KW); its arrays are shared
    between calls with the same pattern, and only read."""

    nine_taps: bool  # all 9 taps of a live channel per pass (3x3 filters, dense enough)
    tap_count: np.ndarray  # (F,) int64: active taps per filter
    taps: np.ndarray  # (F, C*KH*KW) int64: taps[f, :tap_count[f]] = flat indices c*KH*KW + i*KW + j
    live: np.ndarray  # (F, C) bool: any active weight in the channel


def tap_lists(active: np.ndarray):
    """active: (F, C, KH, KW) bool -> (counts (F,), taps (F, K)): taps[f, :counts[f]] are the flat
    indices c*KH*KW + i*KW + j of filter f's active taps in order (the rest of the row is unused), so
    kernels loop over those only (no branch per tap)."""
    flat = active.reshape(active.shape[0], int(np.prod(active.shape[1:])))
    counts = flat.sum(axis=1).astype(np.int64)
    # a stable sort of "not active" puts each row's active indices first, in order (one call for all filters)
    taps = np.argsort(~flat, axis=1, kind="stable").astype(np.int64)
    return counts, taps


def skip_plan(active: np.ndarray, nine_tap_min_density: float | None = None) -> SkipPlan:
    """The SkipPlan of active: (F, C, KH, KW) bool, the weights that are nonzero (forward) or whose
    gradient is wanted (backward). The tap lists are made once per pattern (pruning changes rarely); the
    choice of path is made per call, against nine_tap_min_density (None: the current
    NINE_TAP_MIN_DENSITY; a kernel whose tap-by-tap passes cost otherwise brings its own)."""
    active = np.ascontiguousarray(active, dtype=bool)
    density, tap_count, taps, live = _pattern_plan(active.shape, active.tobytes())
    threshold = NINE_TAP_MIN_DENSITY if nine_tap_min_density is None else nine_tap_min_density
    nine_taps = active.shape[2:] == (3, 3) and active.size > 0 and density >= threshold
    return SkipPlan(nine_taps, tap_count, taps, live)


@functools.lru_cache(maxsize=64)
def _pattern_plan(shape: tuple, pattern: bytes):
    """(fraction active, tap_count, taps, live) of skip_plan for the pattern active.tobytes() of an
    array of this shape."""
    active = np.frombuffer(pattern, dtype=bool).reshape(shape)
    tap_count, taps = tap_lists(active)
    return (float(active.mean()) if active.size else 0.0), tap_count, taps, active.any(axis=(2, 3))


def wanted(w: np.ndarray, weight_mask) -> np.ndarray:
    """(F, C, KH, KW) bool: the weights whose gradient is computed (all, or where weight_mask is nonzero)."""
    return np.ones(w.shape, bool) if weight_mask is None else weight_mask != 0
