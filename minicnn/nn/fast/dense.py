"""Numba linear layer: same contract as minicnn.nn.ref.dense (weights (O, D), as PyTorch).

Differences, and why:
- Forward: one batch row per thread; each output is a dot product over D (a reduction, hence the
  fastmath reassociation so it vectorises).
- Input gradient: one batch row per thread, dx[n] += dout[n, o] * w[o] (contiguous multiply-adds).
- Weight gradient: threads own disjoint column blocks of dw (prange over blocks of D), so no two
  threads write the same memory and no partials are needed; each block of dw stays in cache while
  the batch streams through.
- Wide layers (BLAS_MIN_WEIGHTS) use NumPy's BLAS matrix products instead.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import prange

from minicnn.nn.fast._jit import kernel, num_threads, reduction_kernel

_BLOCK = 256  # columns of dw per task: O*256 floats stay in L1/L2


@reduction_kernel
def _linear_forward(x, w, b, out):
    n_img, d = x.shape
    n_out = w.shape[0]
    for blk in prange((n_img + 3) // 4):
        n0 = 4 * blk
        if n0 + 4 <= n_img:
            # four batch rows per pass: each weight loaded once feeds four multiply-adds (a row at a
            # time is bound by loading w, which does not fit in L1)
            x0, x1, x2, x3 = x[n0], x[n0 + 1], x[n0 + 2], x[n0 + 3]
            for o in range(n_out):
                wo = w[o]
                a0 = a1 = a2 = a3 = np.float32(0.0)
                for k in range(d):
                    a0 += x0[k] * wo[k]
                    a1 += x1[k] * wo[k]
                    a2 += x2[k] * wo[k]
                    a3 += x3[k] * wo[k]
                out[n0, o], out[n0 + 1, o] = a0 + b[o], a1 + b[o]
                out[n0 + 2, o], out[n0 + 3, o] = a2 + b[o], a3 + b[o]
        else:
            for n in range(n0, n_img):
                for o in range(n_out):
                    acc = np.float32(0.0)
                    for k in range(d):
                        acc += x[n, k] * w[o, k]
                    out[n, o] = acc + b[o]


@kernel
def _linear_input_grad(dout, w, dx):
    n_img, d = dx.shape
    n_out = w.shape[0]
    for n in prange(n_img):
        row = dx[n]
        if n_out < 4:
            for k in range(d):
                row[k] = 0.0
        o = 0
        while o + 4 <= n_out:  # four outputs per pass: the dx row is loaded and stored once per 4
            g0, g1, g2, g3 = dout[n, o], dout[n, o + 1], dout[n, o + 2], dout[n, o + 3]
            w0, w1, w2, w3 = w[o], w[o + 1], w[o + 2], w[o + 3]
            if o == 0:  # the first pass writes the row (no separate zeroing pass)
                for k in range(d):
                    row[k] = g0 * w0[k] + g1 * w1[k] + g2 * w2[k] + g3 * w3[k]
            else:
                for k in range(d):
                    row[k] += g0 * w0[k] + g1 * w1[k] + g2 * w2[k] + g3 * w3[k]
            o += 4
        for o in range(o, n_out):
            g, wo = dout[n, o], w[o]
            for k in range(d):
                row[k] += g * wo[k]


@kernel
def _linear_weight_grad(dout, x, dw, db):
    n_img, d = x.shape
    n_out = dw.shape[0]
    n_blocks = (d + _BLOCK - 1) // _BLOCK
    for blk in prange(n_blocks):
        lo = blk * _BLOCK
        width = min(d, lo + _BLOCK) - lo
        # a private accumulator and 1-D row views: LLVM then sees the inner loop cannot alias and
        # vectorises it (indexing dw[o, k] directly ran ~15x slower)
        acc = np.zeros((n_out, width), dtype=dw.dtype)
        n = 0
        while n + 4 <= n_img:  # four batch rows per pass: each acc row loaded and stored once per 4
            x0, x1, x2, x3 = x[n, lo:], x[n + 1, lo:], x[n + 2, lo:], x[n + 3, lo:]
            for o in range(n_out):
                g0, g1, g2, g3 = dout[n, o], dout[n + 1, o], dout[n + 2, o], dout[n + 3, o]
                row = acc[o]
                for k in range(width):
                    row[k] += g0 * x0[k] + g1 * x1[k] + g2 * x2[k] + g3 * x3[k]
            n += 4
        for n in range(n, n_img):
            xs = x[n, lo:]
            for o in range(n_out):
                g, row = dout[n, o], acc[o]
                for k in range(width):
                    row[k] += g * xs[k]
        for o in range(n_out):
            out_row, row = dw[o, lo:], acc[o]
            for k in range(width):
                out_row[k] = row[k]
    for o in range(n_out):
        total = 0.0
        for n in range(n_img):
            total += dout[n, o]
        db[o] = total


#: Layers with at least this many weights (Conv-2's 16384x256 fc1, say) use NumPy's BLAS matrix
#: products: there the arithmetic dominates and a tuned GEMM wins; small layers (the paper's 2048x10)
#: stay on the loops above, which avoid BLAS's per-call overhead and threading.
BLAS_MIN_WEIGHTS = 65536


def linear_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray):
    """x: (N, D), w: (O, D), b: (O,)  ->  out: (N, O), cache."""
    x = np.ascontiguousarray(x)
    if w.size >= BLAS_MIN_WEIGHTS:
        return x @ w.T.astype(x.dtype, copy=False) + b.astype(x.dtype), (x, w)
    out = np.empty((x.shape[0], w.shape[0]), dtype=x.dtype)
    _linear_forward(x, np.ascontiguousarray(w, dtype=x.dtype), b.astype(x.dtype), out)
    return out, (x, w)


def linear_backward(dout: np.ndarray, cache, need_dx: bool = True):
    """dout: (N, O)  ->  dx: (N, D) or None, dw: (O, D), db: (O,)."""
    x, w = cache
    dout = np.ascontiguousarray(dout, dtype=x.dtype)
    if w.size >= BLAS_MIN_WEIGHTS:
        return (dout @ w.astype(x.dtype, copy=False) if need_dx else None), dout.T @ x, dout.sum(axis=0)
    dw = np.empty(w.shape, dtype=x.dtype)
    db = np.empty(w.shape[0], dtype=x.dtype)
    _linear_weight_grad(dout, x, dw, db)
    dx = None
    if need_dx:
        dx = np.empty(x.shape, dtype=x.dtype)
        _linear_input_grad(dout, np.ascontiguousarray(w, dtype=x.dtype), dx)
    return dx, dw, db


# ----------------------------------------------------------------------------- sparse (pruned) weights
#: Below this fraction of kept weights the sparse kernels beat the dense ones (measured with
#: benchmarks/bench_pruning.py on the paper model's fc1: the gathers of the sparse kernels cost about
#: 5-8x a vectorised dense multiply-add, so the sparse path pays once fewer than ~1/8 of weights remain).
SPARSE_BELOW_DENSITY = 0.125

#: The same for layers whose dense products are BLAS's (BLAS_MIN_WEIGHTS): against those the sparse
#: kernels pay only below about 1 % kept (forward + backward, batch 512, 2 threads: sparse / dense 2.2,
#: 0.91, 0.87 at 1 % for Conv-2's 256x16384 fc1, a 512x2048 and a 256x256 layer; 1.09, 0.68, 0.68 at
#: 0.5 %; 4-7x at 10 %, where the 1/8 above made pruned Conv-2 train 1.9x slower than unpruned).
SPARSE_BELOW_DENSITY_BLAS = 0.007


def _csr(mask: np.ndarray):
    """Row-compressed positions of the kept weights: indptr (O+1,), indices (nnz,) into the row."""
    rows, cols = np.nonzero(mask)
    indptr = np.zeros(mask.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=mask.shape[0]), out=indptr[1:])
    return indptr, cols.astype(np.int64)


@kernel
def _sparse_forward(x, w, b, indptr, indices, out):
    n_img = x.shape[0]
    n_out = w.shape[0]
    for n in prange(n_img):
        xs = x[n]
        for o in range(n_out):
            acc = b[o]
            for q in range(indptr[o], indptr[o + 1]):
                acc += w[o, indices[q]] * xs[indices[q]]
            out[n, o] = acc


@kernel
def _sparse_backward(dout, x, w, indptr, indices, dw_part, db, dx, need_dx):
    n_img, d = x.shape
    n_out = w.shape[0]
    n_parts = dw_part.shape[0]
    per_part = (n_img + n_parts - 1) // n_parts
    for t in prange(n_parts):
        for n in range(t * per_part, min(n_img, (t + 1) * per_part)):
            xs = x[n]
            if need_dx:
                for k in range(d):
                    dx[n, k] = 0.0
            for o in range(n_out):
                g = dout[n, o]
                for q in range(indptr[o], indptr[o + 1]):
                    k = indices[q]
                    dw_part[t, q] += g * xs[k]
                    if need_dx:
                        dx[n, k] += g * w[o, k]
    for o in range(n_out):
        total = 0.0
        for n in range(n_img):
            total += dout[n, o]
        db[o] = total


class MaskedCache(NamedTuple):
    """masked_linear_forward's cache on the dense kernels: the input, the weight and its 0/1 mask."""

    x: np.ndarray
    w: np.ndarray
    mask: np.ndarray


class SparseCache(NamedTuple):
    """masked_linear_forward's cache on the sparse kernels: the input, the weight and the row-compressed
    positions of its kept entries (see _csr)."""

    x: np.ndarray
    w: np.ndarray
    indptr: np.ndarray
    indices: np.ndarray


def masked_linear_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, mask: np.ndarray):
    """x: (N, D), w and mask: (O, D), b: (O,)  ->  out = x @ (w * mask).T + b: (N, O), cache.

    Dense kernel while many weights are kept; below SPARSE_BELOW_DENSITY a row-compressed kernel that
    touches only the kept weights (one gather per kept weight and image); SPARSE_BELOW_DENSITY_BLAS where
    the dense kernel is BLAS's."""
    below = SPARSE_BELOW_DENSITY_BLAS if w.size >= BLAS_MIN_WEIGHTS else SPARSE_BELOW_DENSITY
    if np.count_nonzero(mask) >= below * mask.size:
        out, (x, _) = linear_forward(x, w * mask, b)
        return out, MaskedCache(x, w, mask)
    x = np.ascontiguousarray(x)
    indptr, indices = _csr(mask)
    out = np.empty((x.shape[0], w.shape[0]), dtype=x.dtype)
    _sparse_forward(x, np.ascontiguousarray(w, dtype=x.dtype), b.astype(x.dtype), indptr, indices, out)
    return out, SparseCache(x, w, indptr, indices)


def masked_linear_backward(dout: np.ndarray, cache, need_dx: bool = True):
    """dout: (N, O)  ->  dx: (N, D) or None, dw: (O, D) (0 where the mask is 0), db: (O,)."""
    if isinstance(cache, MaskedCache):
        x, w, mask = cache
        dx, dw, db = linear_backward(dout, (x, w * mask), need_dx)
        return dx, dw * mask, db
    x, w, indptr, indices = cache
    dout = np.ascontiguousarray(dout, dtype=x.dtype)
    parts = max(1, min(num_threads(), x.shape[0]))
    dw_part = np.zeros((parts, indices.size), dtype=x.dtype)
    db = np.empty(w.shape[0], dtype=x.dtype)
    dx = np.empty(x.shape if need_dx else (1, 1), dtype=x.dtype)
    _sparse_backward(dout, x, np.ascontiguousarray(w, dtype=x.dtype), indptr, indices, dw_part, db, dx, need_dx)
    dw = np.zeros(w.shape, dtype=x.dtype)
    rows = np.repeat(np.arange(w.shape[0]), np.diff(indptr))
    dw[rows, indices] = dw_part.sum(axis=0)
    return (dx if need_dx else None), dw, db
