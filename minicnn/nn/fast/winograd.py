"""Winograd's F(2x2, 3x3) on the parity-split layout: a 3x3 conv's 2x2 output block in 16 products
instead of 36, for layers with many channels (Conv-2's 64x64 layer: its forward and both gradients).

A 1-D 3-tap correlation's two outputs y_r = sum_i g_i d_(r+i) from a 4-entry tile d can be had as
    y = A^T [(G g) * (B^T d)]        (* elementwise, 4 products instead of 6)
with B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], G = [[1, 0, 0], [1/2, 1/2, 1/2],
[1/2, -1/2, 1/2], [0, 0, 1]], A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]; nested in 2-D, a 4x4 tile d gives the
2x2 outputs Y = A^T [(G g G^T) * (B^T d B)] A. Summed over the input channels, the products become 16
matrix products, one per tile entry xi = (a, b):
    M[xi] (F, tiles) = U[xi] (F, C) @ V[xi] (C, tiles),   U = G g G^T per (f, c),  V = B^T d B per (c, tile)
and Y = A^T M A per (f, tile). The products are 16 * 64 * 64 multiply-adds per tile of a 64x64 layer
against 36 * 64 * 64 for the direct conv; the transforms (adds only) take a fifth of the forward's time.
The weight gradient is the same bilinear form transposed: with Yh = A dY A^T per (f, tile),
    dU[xi] (C, F) = sum over tiles of V[xi] (C, tiles) @ Yh[xi]^T (tiles, F),   dw = G^T dU G per (f, c),
the products summed over a thread's images and turned into dw once (dw_from_products).

The parity layout holds the tiles already: conv quarter (r, e) at q is output (2yy + r, 2u + e), a 2x2
block, and its 4x4 tile of padded pixels (2yy + R, 2u + C), R, C < 4, is quarter plane (R % 2, C % 2) at
q + (R // 2)*WH + C // 2 (parity.py). So a step of positions q is a vector of tiles, and the transforms
are vector loops over q. The input gradient is the same correlation of the conv map's gradient with
each filter turned by 180 degrees, channels and filters swapped: its tile for plane position p is the
split gradient maps' rows 2(yy - 1) .. 2yy + 1 (quarter r = R % 2, R // 2 rows back from the row above).

The positions run in chunks of CHUNK (the matmul panel's width): a chunk's V and M (16 * 64 * CHUNK
each, 192 KB) stay in the core's L2 cache, and V[xi]'s chunk (12 KB) in L1 while U[xi]'s row blocks
sweep it. The results equal the direct conv's up to rounding (the transforms add and halve in their own
order; exact on values whose sums are exact, as the tests' grids).
"""

from __future__ import annotations

import numpy as np

from minicnn.nn.fast._jit import serial, stage
from minicnn.nn.fast._simd import STEP
from minicnn.nn.fast._simd_winograd import grad_tiles_step, matmul_panel, tiles_step, untile_step
from minicnn.nn.fast.conv_passes import all_finite

#: The matmul panel's rows and vectors: 24 of the 32 vector registers (one thread, in L1: 8 x 3 163 GFLOP/s,
#: 4 x 6 146, 4 x 4 139; and 8 x 3's chunks of 48 waste fewer products past the map).
ROWS, VECTORS = 8, 3
#: Positions per chunk: one panel wide.
CHUNK = VECTORS * STEP
#: The weight gradient's panel: 4 channels by 4 vectors of filters (so whole blocks of 64 filters).
GRAD_ROWS, GRAD_VECTORS = 4, 4
#: Fewest input channels (forward) or filters (input gradient) for which the Winograd pass runs: it
#: pays where the 16 products dominate the transforms (Conv-2's 64x64 layer); with Conv-2's first
#: layer's 3 channels the direct pass stays.
MIN_CHANNELS = 32


@serial
def finite_filters(w):
    """Whether w (F, C, KH, KW) holds no inf or NaN: the transforms' sums would make NaNs of infs and
    spread a NaN over whole tiles, where the direct conv keeps them in place (so do pixels and gradients,
    which the callers check image by image)."""
    for f in range(w.shape[0]):
        if not all_finite(w, f):
            return False
    return True


@serial
def weight_grad_fits(n_filt, c_in, kh, kw):
    """Whether the weight gradient of a 3x3 bank (n_filt, c_in) runs as Winograd products: 3x3,
    c_in >= MIN_CHANNELS and a multiple of GRAD_ROWS, n_filt a multiple of GRAD_VECTORS * STEP."""
    return (kh == 3 and kw == 3 and c_in >= MIN_CHANNELS and c_in % GRAD_ROWS == 0
            and n_filt % (GRAD_VECTORS * STEP) == 0)


@serial
def winograd_fits(n_filt, c_in, kh, kw):
    """Whether a 3x3, stride-1 bank of n_filt filters over c_in channels runs its forward (its input
    gradient: the same with n_filt and c_in swapped) as Winograd products: 3x3, c_in >= MIN_CHANNELS,
    and n_filt a multiple of the panel's ROWS."""
    return kh == 3 and kw == 3 and c_in >= MIN_CHANNELS and n_filt % ROWS == 0


@serial
def tiles_plane_len(plane_len, span, wh):
    """A quarter-plane row's length (at least plane_len) for the conv's Winograd tiles of span positions:
    they read a whole chunk past the map, and a tile's entries reach WH + 1 past its position."""
    return max(plane_len, (span + CHUNK - 1) // CHUNK * CHUNK + wh + 1)


@stage
def _flat(a):
    """a (C-contiguous) as 1-D: the intrinsics' arguments."""
    return a.reshape(a.size)


@stage
def _g_times(g0, g1, g2):
    """G g for one column of 3, in float64 (U is rounded once, as it is stored): the 4 entries of the
    filter transform."""
    g0, g1, g2 = np.float64(g0), np.float64(g1), np.float64(g2)
    return g0, 0.5 * (g0 + g1 + g2), 0.5 * (g0 - g1 + g2), g2


@stage
def _gt_times(m0, m1, m2, m3):
    """G^T m for one column of 4, in float64: the 3 entries of the weight gradient's back-transform
    (G^T = [[1, 1/2, 1/2, 0], [0, 1/2, -1/2, 0], [0, 1/2, 1/2, 1]])."""
    m0, m1, m2, m3 = np.float64(m0), np.float64(m1), np.float64(m2), np.float64(m3)
    return m0 + 0.5 * (m1 + m2), 0.5 * (m1 - m2), 0.5 * (m1 + m2) + m3


@serial
def filter_transform(w, flip):
    """U (16, F, C) = G w[f, c] G^T (row-major over the 4x4), from w (F, C, 3, 3); with flip, U (16, C, F)
    from w[f, c] turned by 180 degrees (the input gradient's filters)."""
    n_filt, c_in = w.shape[0], w.shape[1]
    u = np.empty((16, c_in, n_filt) if flip else (16, n_filt, c_in), dtype=w.dtype)
    for f in range(n_filt):
        for c in range(c_in):
            g = w[f, c, ::-1, ::-1] if flip else w[f, c]
            c0 = _g_times(g[0, 0], g[1, 0], g[2, 0])  # G g's columns, 4 rows each
            c1 = _g_times(g[0, 1], g[1, 1], g[2, 1])
            c2 = _g_times(g[0, 2], g[1, 2], g[2, 2])
            for a in range(4):
                row = _g_times(c0[a], c1[a], c2[a])  # (G g) G^T's row a
                for b in range(4):
                    if flip:
                        u[a * 4 + b, c, f] = row[b]
                    else:
                        u[a * 4 + b, f, c] = row[b]
    return u


@stage
def _tiles(src, quarter, rows, row, first, down, v):
    """v (16, rows, CHUNK), flattened, = B^T d B of 4x4 tiles of src (flat, quarters of `quarter`
    entries holding `rows` rows of `row` entries): tile q's entry (R, C) of row k is src at
    (R % 2 * 2 + C % 2)*quarter + k*row + first + q + (R // 2)*down + C // 2."""
    plane = rows * CHUNK
    for k in range(rows):
        for q in range(0, CHUNK, STEP):
            tiles_step(src, k * row + first + q, 2 * quarter, quarter, down, v, k * CHUNK + q, plane)


@stage
def _products(u, v, m):
    """m[xi] (K, CHUNK) = u[xi] (K, D) @ v[xi] (D, CHUNK) for the 16 xi, ROWS rows at a time; all flat."""
    n_rows, depth = m.size // (16 * CHUNK), v.size // (16 * CHUNK)
    for xi in range(16):
        for r0 in range(0, n_rows, ROWS):
            matmul_panel(u, (xi * n_rows + r0) * depth, depth, v, xi * depth * CHUNK, CHUNK,
                         m, (xi * n_rows + r0) * CHUNK, CHUNK, ROWS, VECTORS, 0)


@stage
def _untiles(m, bias, count, dst, first, quarter, row):
    """dst[first + k*row + (r*2 + e)*quarter + q] = (A^T M A)[r, e] + bias[k] of m (16, K, CHUNK)'s
    column q < count, for every k < K; all flat."""
    n_rows = m.size // (16 * CHUNK)
    plane = n_rows * CHUNK
    for k in range(n_rows):
        for q in range(0, count, STEP):
            untile_step(m, k * CHUNK + q, plane, bias, k, dst, first + k * row + q, quarter, min(STEP, count - q))


@serial
def conv_winograd(planes, wh, span, u, b, v, m, conv):
    """conv (F, 2, 2, span)[f] = filter f's split conv map (conv_passes.conv_quarters' definition) of the
    planes (2, 2, C, plane_row), by Winograd products: u = filter_transform(w, False), b (F,) the bias;
    v (16, C, CHUNK) and m (16, F, CHUNK) work buffers. The planes are read up to round_up(span, CHUNK) +
    WH + 1 entries into a channel's row (past it, into the next: those positions' results are not
    stored)."""
    c_in, plane_row = planes.shape[2], planes.shape[3]
    flat_planes, flat_u, flat_v, flat_m, flat_conv = _flat(planes), _flat(u), _flat(v), _flat(m), _flat(conv)
    for q0 in range(0, span, CHUNK):
        _tiles(flat_planes, c_in * plane_row, c_in, plane_row, q0, wh, flat_v)
        _products(flat_u, flat_v, flat_m)
        _untiles(flat_m, b, min(CHUNK, span - q0), flat_conv, q0, span, 4 * span)


@serial
def input_grad_winograd(maps, row, lead, wh, stop, u, zeros, v, m, dplanes):
    """dplanes (2, 2, C, plane_row)[R, C', c, p] for p < stop = the input gradient in the parity layout
    (_simd_conv.input_grad_block_loops' definition) from maps (F, 2, 2, row) flattened, the filters'
    split conv-map gradients with lead zeros before each, by Winograd products: u = filter_transform(w,
    True) (16, C, F), zeros (C,); v (16, F, CHUNK) and m (16, C, CHUNK) work buffers. The maps are read up
    to lead + round_up(stop, CHUNK) entries into a quarter's row (past it, into the next: those
    positions' results are not stored), so past the last filter's."""
    c_in, n_filt = u.shape[1], u.shape[2]
    plane_row = dplanes.shape[3]
    flat_u, flat_v, flat_m, flat_dplanes = _flat(u), _flat(v), _flat(m), _flat(dplanes)
    for p0 in range(0, stop, CHUNK):
        # tile row R of plane position p: gradient quarter R % 2, 1 - R // 2 rows of WH back; columns
        # likewise, one entry back for C < 2. A filter's 4 quarters are rows of `row`: its stride is 4 rows.
        _tiles(maps, row, n_filt, 4 * row, lead + p0 - wh - 1, wh, flat_v)
        _products(flat_u, flat_v, flat_m)
        _untiles(flat_m, zeros, min(CHUNK, stop - p0), flat_dplanes, p0, c_in * plane_row, plane_row)


@serial
def weight_grad_winograd(planes, wh, span, maps, row, lead, dyt, v, yt, du):
    """du (16, C, F) += this image's Winograd products of the weight gradient: for each tile entry xi,
    V[xi] (C, tiles) @ (A dY A^T)[xi] (tiles, F), where dY is the image's split conv-map gradient, maps
    (F, 2, 2, row) flattened with lead zeros before each (0 at junk columns), and V its tiles of the
    planes (2, 2, C, plane_row). dyt (4, round_up(span, CHUNK), F) zeros past span, v (16, C, CHUNK) and
    yt (16, CHUNK, F): work buffers. dw_from_products turns du into the weight gradient: (G^T du G)."""
    n_filt, c_in, plane_row = dyt.shape[2], planes.shape[2], planes.shape[3]
    whole = dyt.shape[1]
    flat_planes, flat_dyt, flat_v, flat_yt, flat_du = _flat(planes), _flat(dyt), _flat(v), _flat(yt), _flat(du)
    for quarter in range(4):  # the gradient filters-last: the products' vectors run over filters
        for p in range(span):
            at = (quarter * whole + p) * n_filt
            first = quarter * row + lead + p
            for f in range(n_filt):  # (contiguous stores, gathered loads: 3x the other order)
                flat_dyt[at + f] = maps[first + f * 4 * row]
    for q0 in range(0, span, CHUNK):
        _tiles(flat_planes, c_in * plane_row, c_in, plane_row, q0, wh, flat_v)
        for p in range(CHUNK):
            for f0 in range(0, n_filt, STEP):
                grad_tiles_step(flat_dyt, (q0 + p) * n_filt + f0, whole * n_filt, flat_yt, p * n_filt + f0,
                                CHUNK * n_filt)
        for xi in range(16):
            for c0 in range(0, c_in, GRAD_ROWS):
                for f0 in range(0, n_filt, GRAD_VECTORS * STEP):
                    matmul_panel(flat_v, (xi * c_in + c0) * CHUNK, CHUNK, flat_yt, xi * CHUNK * n_filt + f0, n_filt,
                                 flat_du, (xi * c_in + c0) * n_filt + f0, n_filt, GRAD_ROWS, GRAD_VECTORS, 1)


@serial
def dw_from_products(du, dw):
    """dw (F, C, 3, 3) += G^T du[:, c, f] G (du's 16 entries row-major 4x4), in float64: the weight
    gradient from weight_grad_winograd's sums."""
    for f in range(dw.shape[0]):
        for c in range(dw.shape[1]):
            c0 = _gt_times(du[0, c, f], du[4, c, f], du[8, c, f], du[12, c, f])  # G^T du's columns, 3 rows each
            c1 = _gt_times(du[1, c, f], du[5, c, f], du[9, c, f], du[13, c, f])
            c2 = _gt_times(du[2, c, f], du[6, c, f], du[10, c, f], du[14, c, f])
            c3 = _gt_times(du[3, c, f], du[7, c, f], du[11, c, f], du[15, c, f])
            for i in range(3):
                row = _gt_times(c0[i], c1[i], c2[i], c3[i])  # (G^T du) G's row i
                for j in range(3):
                    dw[f, c, i, j] += row[j]
