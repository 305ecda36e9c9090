"""Rung 6: nine taps per pass, and the weight gradient from the pooling codes (3x3 filters only).
Changed from rung 5: the passes over a channel's planes; the layout, fill and pooling are rung 5's.

Rung 5 ran a loop per tap and quarter, each step two loads (a conv entry, a pixel), a multiply-add and
a store. A core loads at most two vectors per cycle (this virtual machine about one, see README.md)
and multiply-adds two: that loop waits on memory. Here one pass per channel loads the window's 4x4
tile of pixels (16 loads: the four planes at q and q + 1, and one row of WH on) and makes all 36
products of nine taps and four conv positions from it, reading and writing the four conv entries once:
24 memory operations feed 36 multiply-adds, not 108. The weight gradient too, one pass per channel:
each window's code gives its argmax cell the pooled gradient and the other three 0, and the 36
products go into nine sums held in registers; the conv map's gradient is never stored."""

from __future__ import annotations

import numpy as np
from numba import prange

from minicnn.ladder._jit import kernel, reduction_kernel, serial, serial_reduction
from minicnn.ladder.rung5_parity import fill_quarters, pool_codes, split_sizes
from minicnn.ladder.shared import part_range, run_fused

_ZERO_SUMS = (np.float32(0.0),) * 9  # the nine sums of a weight-gradient pass, before it


@serial
def _tile_row(even, odd, q):
    """A tile row: padded columns 2u .. 2u + 3 of one row, from its even and odd quarter-plane runs."""
    return even[q], odd[q], even[q + 1], odd[q + 1]


@serial
def _taps3(w3, row, k):
    """One filter row w3 (3 weights) on tile row ``row`` from column k."""
    return w3[0] * row[k] + w3[1] * row[k + 1] + w3[2] * row[k + 2]


@serial
def _cells4(g, top, bottom, j):
    """Tap (i, j) times the window's cell gradients g (row-major): cell (r, e) meets tile pixel (r + i,
    e + j), in tile rows i (top) and i + 1 (bottom)."""
    return g[0] * top[j] + g[1] * top[j + 1] + g[2] * bottom[j] + g[3] * bottom[j + 1]


@serial
def _conv_nine(planes, w, b, f, wh, conv):
    """conv (2, 2, PH*WH) = b[f] + the conv of 3x3 filter f, one pass per channel."""
    conv[:, :, :] = b[f]
    c00, c01, c10, c11 = conv[0, 0], conv[0, 1], conv[1, 0], conv[1, 1]
    for c in range(w.shape[1]):
        w0 = (w[f, c, 0, 0], w[f, c, 0, 1], w[f, c, 0, 2])  # the filter's rows on channel c
        w1 = (w[f, c, 1, 0], w[f, c, 1, 1], w[f, c, 1, 2])
        w2 = (w[f, c, 2, 0], w[f, c, 2, 1], w[f, c, 2, 2])
        # the planes by (row, column) parity, then from one row of WH on for tile rows 2 and 3: read at q + WH,
        # a signed index Numba must check for < 0, LLVM did not vectorise the loop (2-5x slower; also from a helper)
        ee, eo, oe, oo = planes[0, 0, c], planes[0, 1, c], planes[1, 0, c], planes[1, 1, c]
        ee2, eo2, oe2, oo2 = ee[wh:], eo[wh:], oe[wh:], oo[wh:]
        for q in range(conv.shape[2]):
            t0, t1, t2, t3 = _tile_row(ee, eo, q), _tile_row(oe, oo, q), _tile_row(ee2, eo2, q), _tile_row(oe2, oo2, q)
            c00[q] += _taps3(w0, t0, 0) + _taps3(w1, t1, 0) + _taps3(w2, t2, 0)
            c01[q] += _taps3(w0, t0, 1) + _taps3(w1, t1, 1) + _taps3(w2, t2, 1)
            c10[q] += _taps3(w0, t1, 0) + _taps3(w1, t2, 0) + _taps3(w2, t3, 0)
            c11[q] += _taps3(w0, t1, 1) + _taps3(w1, t2, 1) + _taps3(w2, t3, 1)


@serial_reduction  # the nine sums may be reordered: vector lanes
def _weight_grad_codes(planes, code, grad, wh, dw_f):
    """dw_f (C, 3, 3) += the weight gradient of one filter from one image, straight from the pooling
    codes and grad (PH*WH,), the pooled map's gradient in split rows (junk 0); returns db's share."""
    for c in range(dw_f.shape[0]):
        ee, eo, oe, oo = planes[0, 0, c], planes[0, 1, c], planes[1, 0, c], planes[1, 1, c]
        ee2, eo2, oe2, oo2 = ee[wh:], eo[wh:], oe[wh:], oo[wh:]  # as in _conv_nine
        s = _ZERO_SUMS
        for q in range(grad.size):
            k, d = code[q], grad[q]  # g: d at the argmax cell, 0 at the other three (all four for code 4)
            g = (d * np.float32(k == 0), d * np.float32(k == 1), d * np.float32(k == 2), d * np.float32(k == 3))
            t0, t1, t2, t3 = _tile_row(ee, eo, q), _tile_row(oe, oo, q), _tile_row(ee2, eo2, q), _tile_row(oe2, oo2, q)
            s = (s[0] + _cells4(g, t0, t1, 0), s[1] + _cells4(g, t0, t1, 1), s[2] + _cells4(g, t0, t1, 2),
                 s[3] + _cells4(g, t1, t2, 0), s[4] + _cells4(g, t1, t2, 1), s[5] + _cells4(g, t1, t2, 2),
                 s[6] + _cells4(g, t2, t3, 0), s[7] + _cells4(g, t2, t3, 1), s[8] + _cells4(g, t2, t3, 2))
        for k in range(9):
            dw_f[c, k // 3, k % 3] += s[k]
    return (grad * (code < 4)).sum()


@kernel
def _forward(x, w, b, pad, pooled, code, n_parts):
    """pooled (N, F, PH, PW); code (N, F, PH*WH): rung 5's kernel with this rung's pass (Numba does not
    cache a kernel that takes the pass as an argument)."""
    wh, ph, pw, plane_len = split_sizes(x, w, pad)
    for t in prange(n_parts):
        planes = np.zeros((2, 2, x.shape[1], plane_len), dtype=x.dtype)
        conv, row = np.empty((2, 2, ph * wh), dtype=x.dtype), np.empty(ph * wh, dtype=x.dtype)
        for n in part_range(x.shape[0], n_parts, t):
            fill_quarters(x, n, pad, wh, planes)
            for f in range(w.shape[0]):
                _conv_nine(planes, w, b, f, wh, conv)
                pool_codes(conv, row, code[n, f])
                pooled[n, f] = row.reshape(ph, wh)[:, :pw]


@reduction_kernel
def _backward(x, pad, dpooled, code, dw_part, db_part):
    """dw_part[t] (F, C, 3, 3), db_part[t] (F,): the gradients from thread t's slice of the batch."""
    wh, ph, pw, plane_len = split_sizes(x, dw_part[0], pad)
    for t in prange(dw_part.shape[0]):
        planes, grad = np.zeros((2, 2, x.shape[1], plane_len), dtype=x.dtype), np.zeros((ph, wh), dtype=x.dtype)
        for n in part_range(x.shape[0], dw_part.shape[0], t):
            fill_quarters(x, n, pad, wh, planes)
            for f in range(dw_part.shape[1]):
                grad[:, :pw] = dpooled[n, f]
                db_part[t, f] += _weight_grad_codes(planes, code[n, f], grad.reshape(ph * wh), wh, dw_part[t, f])


def conv_relu_pool_linear_loss(x: np.ndarray, w: np.ndarray, b: np.ndarray, pad: int, fc_w: np.ndarray,
                               fc_b: np.ndarray, labels: np.ndarray):
    """The contract of minicnn.nn.ref.convnet (no masks) for 3x3 filters; shapes as in rung 1."""
    if w.shape[2:] != (3, 3):
        raise ValueError(f"rung 6 takes 3x3 filters, not {w.shape[2]}x{w.shape[3]}")
    wh, ph, _, _ = split_sizes(x, w, pad)
    return run_fused(_forward, _backward, ph * wh, x, w, b, pad, fc_w, fc_b, labels)
