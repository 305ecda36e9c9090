"""The whole-model op's linear layer (fast/convnet.py) over one group of GROUP = 4 images: the logits, the
linear weight's and bias's gradients, and the pooled maps' gradients. Stages, inlined into the op's loop.

Two twins of each: dense, over the whole linear weight in the pooled maps' split rows (fc_split, K x
F*span); and sparse, over the kept weights only, row-compressed by class (a SparseLinear), which the op
takes when fewer than SPARSE_BELOW_DENSITY of the weights are kept. Dense, the three products read or
write all K x F*span entries per group: at the paper's 95 % unstructured pruning they were a fifth of a
training step, for 5 % of the weights. Sparse, each kept weight is one index and value loaded for the
group's four images (a gather per image: no vector loop, so it pays only well below the dense loop's
cost); pruned weights then contribute nothing, where the dense products multiply them (0 * inf = NaN in
a diverged run), as fast.dense's sparse kernels.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from minicnn.nn.fast._jit import serial, stage

#: The op's linear layer goes sparse below this fraction of kept weights. Measured on the paper model's
#: whole step (conv and linear pruned alike), sparse against dense stages, interleaved: 1.16-1.19x
#: faster at 1 % kept, 1.01-1.05x at 5 %, 0.91x at 10 %.
SPARSE_BELOW_DENSITY = 0.06


@stage
def dense_logits(fc_split, fc_b, pooled, z, logits, first, size):
    """z (GROUP, K) = the group's logits, copied to logits[first : first + size]: per class one loop over
    the flat maps (F*span) with the four images' dot products side by side, each weight loaded once for
    four (a loop per filter: 4x slower)."""
    p0, p1, p2, p3 = pooled[0], pooled[1], pooled[2], pooled[3]
    for k in range(fc_b.shape[0]):
        wk = fc_split[k]
        a0 = a1 = a2 = a3 = fc_b[k]
        for i in range(wk.size):
            wv = wk[i]
            a0 += wv * p0[i]
            a1 += wv * p1[i]
            a2 += wv * p2[i]
            a3 += wv * p3[i]
        z[0, k], z[1, k], z[2, k], z[3, k] = a0, a1, a2, a3
    for g in range(size):
        for k in range(fc_b.shape[0]):
            logits[first + g, k] = z[g, k]



@stage
def dense_linear_grads(dz, pooled, dfc, dfcb):
    """dfc (K, F*span) += the linear weight's gradient, dfcb (K,) += the bias's, the group's four images
    in one pass (one array written per loop: LLVM vectorises a loop writing two at half width)."""
    p0, p1, p2, p3 = pooled[0], pooled[1], pooled[2], pooled[3]
    for k in range(dfc.shape[0]):
        dwk = dfc[k]
        g0, g1, g2, g3 = dz[0, k], dz[1, k], dz[2, k], dz[3, k]
        dfcb[k] += (g0 + g1) + (g2 + g3)
        for i in range(dwk.size):
            dwk[i] += g0 * p0[i] + g1 * p1[i] + g2 * p2[i] + g3 * p3[i]


@stage
def dense_pooled_grads(dz, fc_split, size, dpooled):
    """dpooled[g] = sum over classes k of dz[g, k] * fc_split[k] (junk columns stay 0), two classes per
    pass over dpooled[g] (a pass per class took 1.3-1.7x longer)."""
    n_class, flat_len = fc_split.shape
    for g in range(size):
        dp = dpooled[g]
        for i in range(flat_len):
            dp[i] = 0.0
        for k in range(0, n_class - 1, 2):
            ga, gb, wa, wb = dz[g, k], dz[g, k + 1], fc_split[k], fc_split[k + 1]
            for i in range(flat_len):
                dp[i] += ga * wa[i] + gb * wb[i]
        if n_class % 2:
            ga, wa = dz[g, n_class - 1], fc_split[n_class - 1]
            for i in range(flat_len):
                dp[i] += ga * wa[i]


@stage
def sparse_logits(values, indptr, indices, fc_b, pooled, z, logits, first, size):
    """dense_logits over the kept weights: z[g, k] = fc_b[k] + sum over j in indptr[k] .. indptr[k+1] - 1
    of values[j] * pooled[g, indices[j]]."""
    p0, p1, p2, p3 = pooled[0], pooled[1], pooled[2], pooled[3]
    zero = fc_b[0] * 0
    for k in range(fc_b.shape[0]):
        # two sums per image, the even and the odd entries: one chain of dependent multiply-adds per image
        # waits on each add's latency
        a0 = a1 = a2 = a3 = fc_b[k]
        b0 = b1 = b2 = b3 = zero
        j, stop = indptr[k], indptr[k + 1]
        while j + 1 < stop:
            i, wv, i_, wv_ = indices[j], values[j], indices[j + 1], values[j + 1]
            a0 += wv * p0[i]
            a1 += wv * p1[i]
            a2 += wv * p2[i]
            a3 += wv * p3[i]
            b0 += wv_ * p0[i_]
            b1 += wv_ * p1[i_]
            b2 += wv_ * p2[i_]
            b3 += wv_ * p3[i_]
            j += 2
        if j < stop:
            i, wv = indices[j], values[j]
            a0 += wv * p0[i]
            a1 += wv * p1[i]
            a2 += wv * p2[i]
            a3 += wv * p3[i]
        z[0, k], z[1, k], z[2, k], z[3, k] = a0 + b0, a1 + b1, a2 + b2, a3 + b3
    for g in range(size):
        for k in range(fc_b.shape[0]):
            logits[first + g, k] = z[g, k]


@stage
def sparse_grads(dz, pooled, values, indptr, indices, at, pitch, dvalues, dfcb, grad):
    """dense_linear_grads and dense_pooled_grads over the kept weights, in one pass over them: dvalues (nnz,)
    += the gradient of values, dfcb (K,) += the bias's, and the pooled maps' gradients of the group's four
    images straight into the backward's layout, grad (flat; image g's entry of kept weight j at at[j] +
    g*pitch), zeroed first: the sum over classes k of dz[g, k] * values[j] (a short group's unused images
    have dz = 0). In that layout the backward needs no copy (dense_pooled_grads writes rows per image)."""
    p0, p1, p2, p3 = pooled[0], pooled[1], pooled[2], pooled[3]
    for i in range(grad.size):
        grad[i] = 0.0
    for k in range(dfcb.shape[0]):
        g0, g1, g2, g3 = dz[0, k], dz[1, k], dz[2, k], dz[3, k]
        dfcb[k] += (g0 + g1) + (g2 + g3)
        for j in range(indptr[k], indptr[k + 1]):
            i, o, wv = indices[j], at[j], values[j]
            dvalues[j] += g0 * p0[i] + g1 * p1[i] + g2 * p2[i] + g3 * p3[i]
            grad[o] += g0 * wv
            grad[o + pitch] += g1 * wv
            grad[o + 2 * pitch] += g2 * wv
            grad[o + 3 * pitch] += g3 * wv


class SparseLinear(NamedTuple):
    """The kept linear weights' places in the pooled maps' split rows, row-compressed by class: ``sparse``
    False (and no entries) for the dense stages."""

    sparse: bool
    indptr: np.ndarray  # (K + 1,) int64: class k's entries are indptr[k] .. indptr[k + 1] - 1
    indices: np.ndarray  # (nnz,) int64: their places in a split row (F*span), in order
    columns: np.ndarray  # (nnz,) int64: their columns in the linear weight (F*PH*PW)


def sparse_linear(kept: np.ndarray | None, pooled_hw: tuple, wh: int) -> SparseLinear:
    """kept (K, F*PH*PW), nonzero where a linear weight is kept (None: all) -> the SparseLinear the op
    runs: sparse below SPARSE_BELOW_DENSITY kept, else dense (no entries). pooled_hw: (PH, PW); wh: a
    split row's length."""
    if kept is None:
        return SparseLinear(False, np.zeros(1, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64))
    return SparseLinear(*_kept_places(np.ascontiguousarray(kept), pooled_hw[0], pooled_hw[1], wh,
                                      SPARSE_BELOW_DENSITY))


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
        return False, np.zeros(n_class + 1, dtype=np.int64), none, none
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
    return True, indptr, indices[:n_kept], columns[:n_kept]


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
