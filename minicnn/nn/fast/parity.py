"""The parity-split layout of the 2x2-pool kernels: an image and its conv map stored by row and column parity.

A 2x2, stride-2 window reads rows 2py, 2py + 1 and columns 2u, 2u + 1: stride-2 patterns that SIMD
handles badly. So the padded image is stored as four quarter planes,
    planes[R % 2, C % 2, c, (R // 2)*WH + C // 2] = padded image (R, C),   WH = ceil(padded width / 2),
and the conv map likewise as conv[r, e, q] = map(2*yy + r, 2*u + e) at q = yy*WH + u. Then
- a window's four values conv[0|1, 0|1, q] share one index q: pooling is a flat vector loop;
- output (2yy + r, 2u + e), tap (i, j) reads padded pixel (2yy + r + i, 2u + e + j), which is quarter
  plane ((r + i) % 2, (e + j) % 2) at q + ((r + i) // 2)*WH + (e + j) // 2: one contiguous run per tap.
Columns u >= PW of each row are junk (computed, never pooled); their gradient is kept 0.

This module holds the layout's sizes, its buffers (aligned to cache lines) and the copies into and out
of it; the passes over it are in conv_passes.py (conv and its gradients) and pool2.py (pool, ReLU).
"""

from __future__ import annotations

import numpy as np

from minicnn.nn.fast._jit import serial
from minicnn.nn.fast._simd import STEP, split_step

#: Bytes per cache line: the unit aligned_zeros aligns buffers to and the kernels round lengths to.
CACHE_LINE = 64


@serial
def round_up(n, multiple):
    return (n + multiple - 1) // multiple * multiple


@serial
def line_entries(like):
    """Entries of like's dtype per cache line."""
    return CACHE_LINE // like.itemsize


@serial
def aligned_zeros(shape, like):
    """Zeros of like's dtype in this shape (a tuple, C order), the first on a cache line: Numba aligns
    to 32 bytes only, and a 512-bit load that straddles two lines costs two (whole-model op 1.03-1.11x)."""
    count = 1
    for size in shape:
        count *= size
    per_line = line_entries(like)
    buf = np.zeros(count + per_line, dtype=like.dtype)
    skip = (per_line - (buf.ctypes.data // like.itemsize) % per_line) % per_line
    return buf[skip : skip + count].reshape(shape)


@serial
def split_sizes(h, width, pad, kh, kw, out_rows, pool):
    """(WH, span, plane_len) of the split layout: span = conv-map entries computed per quarter (whole
    rows of WH; with pooling only the pooled rows), plane_len = quarter-plane length, one junk row and
    KW entries longer than the padded image so that every tap's run stays inside."""
    wh = (width + 2 * pad + 1) // 2
    span = (out_rows if pool else (out_rows + 1) // 2) * wh
    return wh, span, ((h + 2 * pad + 1) // 2 + 1) * wh + kw


@serial
def unsigned_offsets(wh, span):
    """(1, WH, WH + 1, span) as uint64, for the 9-tap loops that index a few flat arrays at q plus a
    constant: 16 slices ran LLVM out of registers (1.45-1.6x slower), and a signed index makes Numba
    allow for wrap-around, so LLVM gathers element by element."""
    u = np.uint64
    return u(1), u(wh), u(wh + 1), u(span)


@serial
def tap_run(planes, c, i, j, r, e, wh):
    """The run of padded pixels that tap (i, j) reads for conv quarter (r, e): padded pixel
    (2yy + r + i, 2u + e + j) of channel c at index q."""
    start = ((r + i) >> 1) * wh + ((e + j) >> 1)
    return planes[(r + i) & 1, (e + j) & 1, c, start:]


@serial
def run_places(row, pad, wh, at):
    """Where padded row ``row`` of an image is split to, the image's planes starting at index ``at``:
    (quarter row parity, then column parity and start index of the run of pixels x_ of even index, then
    of those of odd index). Pixel x_ lands in padded column x_ + pad, i.e. quarter column parity
    (x_ + pad) & 1 at index (x_ + pad) >> 1."""
    start = at + (row >> 1) * wh
    return row & 1, pad & 1, start + (pad >> 1), (pad + 1) & 1, start + ((pad + 1) >> 1)


@serial
def _row_runs(planes, c, row, pad, wh, at):
    """The two quarter-plane runs that padded row ``row`` of channel c is split into: (pixels x_ of
    even index, pixels x_ of odd index); see run_places."""
    r, even_col, even_start, odd_col, odd_start = run_places(row, pad, wh, at)
    return planes[r, even_col, c, even_start:], planes[r, odd_col, c, odd_start:]


@serial
def fill_quarters(x, n, pad, wh, planes, at):
    """planes[R % 2, C % 2, c, at + (R // 2)*WH + C // 2] = padded image n at (R, C); the border stays 0
    (``at``: where the image starts in the planes, 0 unless they hold several images side by side).
    Row by row: the even and the odd pixels of an image row are two contiguous runs of one quarter-plane
    row each, STEP pixel pairs at a time by vector shuffles (split_step, see _simd.py), the rest by two
    stride-2 copy loops."""
    c_in, h, width = x.shape[1], x.shape[2], x.shape[3]
    steps = width // (2 * STEP)
    if width == 2 * STEP * steps:  # whole vector steps (CIFAR's 32 pixels): flat indices, no row views
        _fill_quarters_flat(x, n, pad, wh, planes, at)
        return
    for c in range(c_in):
        for y in range(h):
            src = x[n, c, y]
            even_x, odd_x = _row_runs(planes, c, y + pad, pad, wh, at)
            for k in range(steps):
                split_step(src, 2 * STEP * k, even_x, STEP * k, odd_x, STEP * k)
            for u in range(steps * STEP, (width + 1) // 2):
                even_x[u] = src[2 * u]
            for u in range(steps * STEP, width // 2):
                odd_x[u] = src[2 * u + 1]


@serial
def _fill_quarters_flat(x, n, pad, wh, planes, at):
    """fill_quarters for rows of whole vector steps, indexing x and planes (both C-contiguous) flat: the
    two quarter-plane runs of a row are offsets, not views (making the views took a quarter of the
    unpacking's time)."""
    c_in, h, width = x.shape[1], x.shape[2], x.shape[3]
    plane_row = planes.shape[3]
    src, dst = x.reshape(x.size), planes.reshape(planes.size)
    for c in range(c_in):
        for y in range(h):
            r, even_col, even_start, odd_col, odd_start = run_places(y + pad, pad, wh, at)
            even = ((r * 2 + even_col) * c_in + c) * plane_row + even_start
            odd = ((r * 2 + odd_col) * c_in + c) * plane_row + odd_start
            first = ((n * c_in + c) * h + y) * width
            for k in range(width // (2 * STEP)):
                split_step(src, first + 2 * STEP * k, dst, even + STEP * k, dst, odd + STEP * k)


@serial
def unfill_quarters(planes, n, pad, wh, dx):
    """The reverse of fill_quarters: dx[n, c, y, x_] = planes' entry for padded pixel (y + pad, x_ + pad)."""
    c_in, h, width = dx.shape[1], dx.shape[2], dx.shape[3]
    for c in range(c_in):
        for y in range(h):
            dst = dx[n, c, y]
            even_x, odd_x = _row_runs(planes, c, y + pad, pad, wh, 0)
            for u in range((width + 1) // 2):
                dst[2 * u] = even_x[u]
            for u in range(width // 2):
                dst[2 * u + 1] = odd_x[u]


@serial
def copy_rows(pooled, wh, out, n, f):
    """out[n, f, py, u] = pooled[py*WH + u]: drops the junk columns."""
    ph, pw = out.shape[2], out.shape[3]
    for py in range(ph):  # explicit loops: Numba's slice assignment is several times slower here
        row, src = out[n, f, py], pooled[py * wh :]
        for u in range(pw):
            row[u] = src[u]


@serial
def split_rows(dout, n, f, wh, grad):
    """grad[py*WH + u] = dout[n, f, py, u]: the reverse of copy_rows (grad's junk columns stay as they are)."""
    ph, pw = dout.shape[2], dout.shape[3]
    for py in range(ph):
        row, dst = dout[n, f, py], grad[py * wh :]
        for u in range(pw):
            dst[u] = row[u]
