"""The threads' parts of the whole-model op's sums (convnet.py): each thread's loss and gradient sums are
its own until the end (the threads' slices of shared arrays meet in a cache line, which would bounce
between the cores if both wrote it per image), stored once into its place (store_part, a stage of the
parallel loop), then summed part by part in a fixed order after the loop (publish, publish_kept: serial
functions, as convnet.py's other work around the loop)."""

from __future__ import annotations

import numpy as np

from minicnn.nn.fast._jit import serial, stage
from minicnn.nn.fast._simd import STEP


@stage
def store_part(dw_part, db_part, dfc_part, dfcb_part, t, dw_sum, db_sum, dfc_sum, dfcb_sum, sparse):
    """Thread t's sums into its places of the parts, entry by entry; a dense layer's weight gradient from
    class-interleaved (dfc_sum (n_steps, K*STEP), see dense_grads) back to split rows. Slice assignments
    (dw_part[t] = dw_sum) would do the same, but each compiles Numba's shape-mismatch error, whose message
    formatting took 7 of the op's 45 s of compilation on a cold start."""
    n_filt, c_in, kh, kw = dw_sum.shape
    for f in range(n_filt):
        for c in range(c_in):
            for i in range(kh):
                for j in range(kw):
                    dw_part[t, f, c, i, j] = dw_sum[f, c, i, j]
        db_part[t, f] = db_sum[f]
    for k in range(dfc_part.shape[1]):
        for e in range(dfc_part.shape[2]):
            dfc_part[t, k, e] = dfc_sum[0, e] if sparse else dfc_sum[e // STEP, k * STEP + e % STEP]
    for k in range(dfcb_sum.shape[0]):
        dfcb_part[t, k] = dfcb_sum[k]


@serial
def part_sums(n_parts, w, n_class, fc_rows, train):
    """Every thread's sums, zeroed: loss (n_parts,), dw (n_parts, F, C, KH, KW), db (n_parts, F), dfc
    (n_parts,) + fc_rows (in split rows (K, F*span), or the kept weights' (1, nnz) of a sparse linear
    layer), dfc_b (n_parts, K); the gradients' places are empty without train."""
    n_filt, dtype = w.shape[0], w.dtype
    return (np.zeros(n_parts),
            np.zeros((n_parts,) + (w.shape if train else (0, 0, 0, 0)), dtype=dtype),
            np.zeros((n_parts, n_filt), dtype=dtype),
            np.zeros((n_parts,) + (fc_rows if train else (0, 0)), dtype=dtype),
            np.zeros((n_parts, n_class), dtype=dtype))


@serial
def publish(loss_part, dw_part, db_part, dfc_part, dfcb_part, ph, pw, wh, sparse, out):
    """The threads' parts (see part_sums) summed into out's dw, db, dfc_w (K, F*PH*PW: back from split
    rows; not with ``sparse``, see publish_kept) and dfc_b, in the order part 0 + part 1 + ...; returns
    the summed loss. Part by part and row by row, each a loop over contiguous entries (a strided sum per
    entry took 6x as long)."""
    dw, db, dfc_w, dfc_b = out.dw, out.db, out.dfc_w, out.dfc_b
    n_parts, n_class, n_filt, span = dw_part.shape[0], dfcb_part.shape[1], db_part.shape[1], ph * wh
    _, c_in, kh, kw = dw.shape
    # entry by entry, not dw[:] = ... (see store_part)
    for t in range(n_parts):
        for f in range(n_filt):
            for c in range(c_in):
                for i in range(kh):
                    for j in range(kw):
                        dw[f, c, i, j] = dw_part[t, f, c, i, j] if t == 0 else dw[f, c, i, j] + dw_part[t, f, c, i, j]
            db[f] = db_part[t, f] if t == 0 else db[f] + db_part[t, f]
        for k in range(n_class):
            dfc_b[k] = dfcb_part[t, k] if t == 0 else dfc_b[k] + dfcb_part[t, k]
    for k in range(0 if sparse else n_class):
        for f in range(n_filt):
            for py in range(ph):
                dst, src = dfc_w[k, (f * ph + py) * pw :], dfc_part[0, k, f * span + py * wh :]
                for u in range(pw):
                    dst[u] = src[u]
                for t in range(1, n_parts):
                    src = dfc_part[t, k, f * span + py * wh :]
                    for u in range(pw):
                        dst[u] += src[u]
    return loss_part.sum()


@serial
def publish_kept(dfc_part, indptr, columns, dfc_w):
    """A sparse linear layer's weight gradient: dfc_w (K, F*PH*PW) = 0 but at the kept weights (indptr,
    columns: a SparseLinear's), each the sum of the threads' parts dfc_part (n_parts, 1, nnz) in the order
    part 0 + part 1 + ..."""
    for k in range(dfc_w.shape[0]):  # loops, not dfc_w[...] = 0 (see store_part)
        for e in range(dfc_w.shape[1]):
            dfc_w[k, e] = 0.0
    for k in range(indptr.size - 1):
        for j in range(indptr[k], indptr[k + 1]):
            total = dfc_part[0, 0, j]
            for t in range(1, dfc_part.shape[0]):
                total += dfc_part[t, 0, j]
            dfc_w[k, columns[j]] = total
