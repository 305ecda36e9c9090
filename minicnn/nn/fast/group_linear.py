"""The whole-model op's linear layer (fast/convnet.py) over one group of GROUP = 4 images: the logits, the
linear weight's and bias's gradients, and the pooled maps' gradients. Stages, inlined into the op's loop.

Two twins of each: dense, over the whole linear weight in the pooled maps' split rows, class-interleaved
(fc_steps (n_steps, K, STEP), see _simd_linear.py; the logits five classes a pass, the backward
in one pass, each as explicit vectors); and sparse, over the kept weights only, row-compressed by class (a
SparseLinear), which the op takes when fewer than SPARSE_BELOW_DENSITY of the weights are kept. Dense,
the three products read or write all K x F*span entries per group: at the paper's 95 % unstructured
pruning they were a fifth of a training step, for 5 % of the weights. Sparse, the group's four pooled
values at each place that any class keeps a weight at are gathered side by side first (gather_pooled),
so that each kept weight is one slot and value loaded and a 4-lane vector step for the four images
(_simd_linear.py; as one gather per image and no vector, the linear layer took 1.4x as long at 95 %
pruning), and the map gradients are scattered back into the backward's layout at the end
(scatter_grads); pruned weights contribute nothing, where the dense products multiply them (0 * inf =
NaN in a diverged run), as fast.dense's sparse kernels.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from minicnn.nn.fast._jit import serial, stage
from minicnn.nn.fast._simd_linear import dense_grads4, dense_logits4, dot4, gather_places, grads4

#: The op's linear layer goes sparse below this fraction of kept weights. Measured on the paper model's
#: whole training step (conv and linear pruned alike), sparse against dense stages, interleaved, medians of
#: seven: 1.13x faster at 5 % kept, 1.08x at 7.5 %, 0.99x at 10 %, 0.96x at 12 % (with the dense stages
#: as vectors; before them 1.20x at 5 %, 1.04x at 10 %, 0.96x at 15 %, and the threshold was 12 %).
SPARSE_BELOW_DENSITY = 0.10


@stage
def dense_logits(fc_steps, fc_b, pooled, z_t, z, logits, first, size):
    """z (GROUP, K) = the group's logits, copied to logits[first : first + size]: the weight fc_steps
    class-interleaved (n_steps, K, STEP), five classes a pass over the positions with the four images'
    sums in registers (_simd_linear.dense_logits4; z_t (K*4): its lanes)."""
    n_class = fc_b.shape[0]
    dense_logits4(fc_steps.reshape(fc_steps.size), fc_b, pooled.reshape(pooled.size), z_t, n_class, pooled.shape[1])
    for k in range(n_class):
        for g in range(4):
            z[g, k] = z_t[4 * k + g]
    for g in range(size):
        for k in range(n_class):
            logits[first + g, k] = z[g, k]


@stage
def dense_grads(dz, pooled, fc_steps, dfc_steps, dfcb, dpooled):
    """The linear layer's backward for the group's four images: dfc_steps += the weight's gradient and dfcb
    (K,) += the bias's, dpooled (GROUP, F*span) = the pooled maps' gradients (the sum over classes k of
    dz[g, k] * the weight's row k; junk columns 0; a short group's unused images have dz = 0, so 0). The
    weight fc_steps and its gradient class-interleaved, (n_steps, K, STEP) (see _simd_linear.dense_grads4:
    one pass over the positions, 2x the two passes of loops it replaced)."""
    dense_grads4(dz.reshape(dz.size), pooled.reshape(pooled.size), fc_steps.reshape(fc_steps.size),
                 dfc_steps.reshape(dfc_steps.size), dfcb, dpooled.reshape(dpooled.size), dz.shape[1], pooled.shape[1])


@stage
def gather_pooled(pooled, places, pooled_t):
    """pooled_t[4s + g] = pooled[g, places[s]]: the group's four images' pooled values at the kept
    weights' places, side by side, for the 4-lane steps of sparse_logits and sparse_grads (four places a
    gather: _simd_linear.gather_places)."""
    gather_places(pooled, places, pooled_t)


@stage
def sparse_logits(values, indptr, slots, fc_b, pooled_t, z_t, z, logits, first, size):
    """dense_logits over the kept weights: z[g, k] = fc_b[k] + the sum over j in indptr[k] .. indptr[k+1]
    - 1 of values[j] * pooled_t[4 * slots[j] + g] (see gather_pooled), the four images in one vector
    (_simd_linear.dot4; z_t (K*4): its lanes)."""
    for k in range(fc_b.shape[0]):
        for g in range(4):
            z_t[4 * k + g] = fc_b[k]
        dot4(values, slots, indptr[k], indptr[k + 1], pooled_t, z_t, 4 * k)
        for g in range(4):
            z[g, k] = z_t[4 * k + g]
    for g in range(size):
        for k in range(fc_b.shape[0]):
            logits[first + g, k] = z[g, k]


@stage
def sparse_grads(dz, pooled_t, values, indptr, slots, dz_t, dvalues_t, dfcb, grad_t):
    """dense_grads over the kept weights, in one pass over them, the group's
    four images in one vector (_simd_linear.grads4): dvalues_t[4j + g] += dz[g, k] * pooled_t[4 *
    slots[j] + g] (kept weight j's gradient by image lane, summed once per call: lane_sums), dfcb (K,)
    += the bias's, and grad_t[4s + g] = the pooled maps' gradient at place s, zeroed first: the sum over
    classes k of dz[g, k] * values[j] over the kept weights j there (a short group's unused images have
    dz = 0). dz_t (K*4): dz's lanes."""
    for i in range(grad_t.size):
        grad_t[i] = 0.0
    for k in range(dfcb.shape[0]):
        g0, g1, g2, g3 = dz[0, k], dz[1, k], dz[2, k], dz[3, k]
        dz_t[4 * k], dz_t[4 * k + 1], dz_t[4 * k + 2], dz_t[4 * k + 3] = g0, g1, g2, g3
        dfcb[k] += (g0 + g1) + (g2 + g3)
        grads4(values, slots, indptr[k], indptr[k + 1], dz_t, 4 * k, pooled_t, dvalues_t, grad_t)


@stage
def scatter_grads(grad_t, at, pitch, grad):
    """grad[at[s] + g*pitch] = grad_t[4s + g]: the pooled maps' gradients at the kept places into the
    backward's layout (flat (F, group_len), image g at g*pitch; see grad_places). The places no class
    keeps are never written: 0 from the start, they stay 0 (the backward writes only zeros into grad)."""
    for s in range(at.size):
        o = at[s]
        grad[o], grad[o + pitch], grad[o + 2 * pitch], grad[o + 3 * pitch] = (
            grad_t[4 * s], grad_t[4 * s + 1], grad_t[4 * s + 2], grad_t[4 * s + 3])


@stage
def lane_sums(dvalues_t, dvalues):
    """dvalues[j] += kept weight j's four image lanes of dvalues_t (nnz*4), pairwise."""
    for j in range(dvalues.size):
        dvalues[j] += (dvalues_t[4 * j] + dvalues_t[4 * j + 1]) + (dvalues_t[4 * j + 2] + dvalues_t[4 * j + 3])


class SparseLinear(NamedTuple):
    """The kept linear weights' places in the pooled maps' split rows, row-compressed by class: ``sparse``
    False (and no entries) for the dense stages."""

    sparse: bool
    indptr: np.ndarray  # (K + 1,) int64: class k's entries are indptr[k] .. indptr[k + 1] - 1
    indices: np.ndarray  # (nnz,) int64: their places in a split row (F*span), in order
    columns: np.ndarray  # (nnz,) int64: their columns in the linear weight (F*PH*PW)
    places: np.ndarray  # (P,) int64: the split-row places that any class keeps a weight at, in order
    slots: np.ndarray  # (nnz,) int64: each kept weight's place among them: indices[j] = places[slots[j]]


def sparse_linear(kept: np.ndarray | None, pooled_hw: tuple, wh: int) -> SparseLinear:
    """kept (K, F*PH*PW), nonzero where a linear weight is kept (None: all) -> the SparseLinear the op
    runs: sparse below SPARSE_BELOW_DENSITY kept, else dense (no entries). pooled_hw: (PH, PW); wh: a
    split row's length."""
    if kept is None:
        none = np.zeros(0, np.int64)
        return SparseLinear(False, np.zeros(1, np.int64), none, none, none, none)
    kept = np.ascontiguousarray(kept) != 0
    # made once per pattern (pruning changes rarely; every step made it anew: 30 us, 2 % of a 95 %-pruned
    # step, against 6 us for the pattern's bytes and their hash); the op only reads it
    return _pattern_linear(kept.shape, kept.tobytes(), tuple(pooled_hw), wh, SPARSE_BELOW_DENSITY)


@functools.lru_cache(maxsize=16)
def _pattern_linear(shape: tuple, pattern: bytes, pooled_hw: tuple, wh: int, below_density: float) -> SparseLinear:
    """sparse_linear's SparseLinear for the kept pattern (bool (K, F*PH*PW) as bytes)."""
    kept = np.frombuffer(pattern, dtype=bool).reshape(shape)
    return SparseLinear(*_kept_places(kept, pooled_hw[0], pooled_hw[1], wh, below_density))


@serial
def _kept_places(kept, ph, pw, wh, below_density):
    """SparseLinear's fields from kept (K, F*PH*PW): counted, then filled without a branch per entry
    (NumPy's nonzero and index arithmetic took 2 % of a 95 %-pruned step)."""
    n_class, flat = kept.shape
    n_kept = 0
    for k in range(n_class):
        for col in range(flat):
            n_kept += kept[k, col] != 0
    if n_kept >= below_density * kept.size:
        none = np.zeros(0, dtype=np.int64)
        return False, np.zeros(n_class + 1, dtype=np.int64), none, none, none, none
    indptr = np.zeros(n_class + 1, dtype=np.int64)
    # + 1: every entry is written, the kept ones advance
    indices, columns = np.empty(n_kept + 1, dtype=np.int64), np.empty(n_kept + 1, dtype=np.int64)
    at = 0
    for k in range(n_class):
        row = kept[k]
        for f in range(flat // (ph * pw)):
            for py in range(ph):
                col, place = (f * ph + py) * pw, (f * ph + py) * wh
                for px in range(pw):
                    indices[at], columns[at] = place + px, col + px
                    at += row[col + px] != 0
        indptr[k + 1] = at
    indices = indices[:n_kept]
    used = np.zeros(flat // (ph * pw) * ph * wh, dtype=np.bool_)  # the places kept by any class
    for j in range(n_kept):
        used[indices[j]] = True
    places = np.flatnonzero(used)
    slot_of = np.zeros(used.size, dtype=np.int64)
    for s in range(places.size):
        slot_of[places[s]] = s
    slots = np.empty(n_kept, dtype=np.int64)
    for j in range(n_kept):
        slots[j] = slot_of[indices[j]]
    return True, indptr, indices, columns[:n_kept], places, slots


@serial
def kept_values(fc_w, indptr, columns):
    """(nnz,): the linear weights fc_w (K, F*PH*PW) kept by a SparseLinear (indptr, columns), by class."""
    values = np.empty(columns.size, dtype=fc_w.dtype)
    for k in range(indptr.size - 1):
        for j in range(indptr[k], indptr[k + 1]):
            values[j] = fc_w[k, columns[j]]
    return values


@serial
def grad_places(places, span, group_len):
    """Places in the flat (F, group_len) pooled-map gradients of a group's first image, for split-row
    places (F*span)."""
    at = np.empty(places.size, dtype=np.int64)
    for j in range(places.size):
        f = places[j] // span
        at[j] = f * group_len + places[j] - f * span
    return at
