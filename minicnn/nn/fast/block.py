"""Fused conv -> ReLU -> max-pool, and conv -> ReLU: same contracts as minicnn.nn.ref.block, one pass per image.

Why fuse: run layer by layer, the (N, F, OH, OW) conv output is written, read by ReLU, written
again, read by the pool: four trips through memory of an array much larger than the cache, for
almost no arithmetic. Here each thread takes a slice of the batch and, per image and per filter,
computes the conv map into a small private buffer (in L1), applies ReLU and pooling while it is
hot, and writes only the pooled map and the argmax of each window.

The "padded-width" trick (stride 1): the image is copied into a zero-padded plane of width
WP = W + 2*pad, flattened. Output pixel (y, x) is computed at flat index y*WP + x, so for filter tap
(i, j) the whole output map is ONE contiguous multiply-add,
    conv[0 : OH*WP] += w[f, c, i, j] * plane_c[i*WP + j : i*WP + j + OH*WP],
a long loop LLVM vectorises well (instead of OH short loops of OW). The WP - OW extra columns of
each row are junk that pooling never reads. Backward mirrors it: the gradient of the conv map is 0
except at each window's argmax (only if the pooled value is > 0, else ReLU blocks it); the junk
columns stay 0, so dw[f, c, i, j] is one long dot product of that map with the same shifted plane.
Ties follow the reference: the first maximum of a window in row-major order wins (strict `>`).

The common 2x2, stride-2 pool has its own pair of kernels (_forward_split/_backward_split, below),
on a parity-split version of this layout that also vectorises the pooling; the kernels above serve
every other pool. The split kernels take every filter bank, even one as wide as Conv-2's 64x64x3x3:
there, forward and backward ran 1.9x faster than im2col + BLAS followed by separate ReLU and pool
passes. Without a pool (conv -> ReLU, as Conv-2's first layer) the same kernels write relu(conv)
back in NCHW order instead of pooling it. Strides other than 1, and wide filter banks with other
pools (fast.conv.uses_gemm), fall back to the separate fast ops.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import prange

from minicnn.nn.fast._jit import num_threads, reduction_kernel, serial, serial_reduction
from minicnn.nn.fast._simd import STEP, split_step
from minicnn.nn.fast.act import relu_backward, relu_forward
from minicnn.nn.fast.conv import conv2d_backward, conv2d_forward, uses_gemm
from minicnn.nn.fast.pool import maxpool2d_backward, maxpool2d_forward
from minicnn.nn.ref.im2col import conv_output_size


@serial
def _fill_plane(x, n, pad, wp, plane):
    """plane[c, (y + pad)*WP + x + pad] = x[n, c, y, x]; the border was zeroed once and stays 0."""
    c_in, h, width = x.shape[1], x.shape[2], x.shape[3]
    for c in range(c_in):
        for y in range(h):
            row = (y + pad) * wp + pad
            for x_ in range(width):
                plane[c, row + x_] = x[n, c, y, x_]


@serial
def _first_nan(conv, base, wp, pool_k):
    """Window offset (i*K + j) of the first NaN of the pooling window at ``base``."""
    for i in range(pool_k):
        for j in range(pool_k):
            v = conv[base + i * wp + j]
            if v != v:
                return i * pool_k + j
    return 0


def _tap_lists(active: np.ndarray):
    """active: (F, C, KH, KW) bool -> (counts (F,), taps (F, K)): taps[f, :counts[f]] are the flat
    indices c*KH*KW + i*KW + j of filter f's active taps in order (the rest of the row is unused), so
    kernels loop over those only (no branch per tap)."""
    flat = active.reshape(active.shape[0], int(np.prod(active.shape[1:])))
    counts = flat.sum(axis=1).astype(np.int64)
    # a stable sort of "not active" puts each row's active indices first, in order (one call for all
    # filters: a Python loop over them cost 60 us per step on the paper's 8)
    taps = np.argsort(~flat, axis=1, kind="stable").astype(np.int64)
    return counts, taps


#: The split kernels' 3x3 filters take all 9 taps of a channel per pass (pruned ones multiply zeros)
#: when at least this fraction of weights is kept, else one pass per kept tap. The crossover was
#: measured with benchmarks/bench_pruning.py (table 3), paper model, 512-bit vectors: the two tie at
#: about 18 % of weights kept (tap by tap / 9 taps = 1.06 at 20 %, 0.97 at 15 %, timed interleaved; it
#: was 24 % before the 9-tap weight gradient took its pixels by selects, see _weight_grad_codes).
NINE_TAP_MIN_DENSITY = 0.18


def _skip_plan(active: np.ndarray):
    """How the kernels skip pruned weights. active: (F, C, KH, KW) bool, the weights that are nonzero
    (forward) or whose gradient is wanted (backward). Returns (nine_taps: bool, tap_count (F,),
    taps (F, C*KH*KW), live (F, C): any active weight in the channel); the arrays are shared between
    calls with the same pattern, and only read.

    The tap lists change only when pruning does, so they are made once per pattern (made per training
    step, their few NumPy calls took 0.1-0.2 ms of the paper model's 7 ms); the choice of path is made
    per call, against the current NINE_TAP_MIN_DENSITY."""
    active = np.ascontiguousarray(active, dtype=bool)
    density, tap_count, taps, live = _pattern_plan(active.shape, active.tobytes())
    nine_taps = active.shape[2:] == (3, 3) and active.size > 0 and density >= NINE_TAP_MIN_DENSITY
    return nine_taps, tap_count, taps, live


@functools.lru_cache(maxsize=64)
def _pattern_plan(shape: tuple, pattern: bytes):
    """(fraction active, tap_count, taps, live) of _skip_plan for the pattern active.tobytes() of an
    array of this shape."""
    active = np.frombuffer(pattern, dtype=bool).reshape(shape)
    tap_count, taps = _tap_lists(active)
    return (float(active.mean()) if active.size else 0.0), tap_count, taps, active.any(axis=(2, 3))


@reduction_kernel
def _forward(x, w, b, pad, pool_k, pool_s, tap_count, taps, out, arg, n_parts):
    n_img, c_in, h, width = x.shape
    n_filt, _, kh, kw = w.shape
    wp = width + 2 * pad
    oh = h + 2 * pad - kh + 1
    span = oh * wp  # flat length of the output map, junk columns included
    ph, pw = out.shape[2], out.shape[3]
    per_part = (n_img + n_parts - 1) // n_parts
    for t in prange(n_parts):
        plane = np.zeros((c_in, (h + 2 * pad) * wp + kw), dtype=x.dtype)  # + kw: last tap's reads stay inside
        conv = np.empty(span, dtype=x.dtype)
        for n in range(t * per_part, min(n_img, (t + 1) * per_part)):
            _fill_plane(x, n, pad, wp, plane)
            for f in range(n_filt):
                for p in range(span):
                    conv[p] = b[f]
                for q in range(tap_count[f]):  # nonzero weights only: pruned ones cost nothing
                    k = taps[f, q]
                    c, i, j = k // (kh * kw), (k // kw) % kh, k % kw
                    wv = w[f, c, i, j]
                    src = plane[c, i * wp + j : i * wp + j + span]
                    for p in range(span):
                        conv[p] += wv * src[p]
                for py in range(ph):
                    for px in range(pw):
                        base = py * pool_s * wp + px * pool_s
                        best = conv[base]
                        best_at = 0
                        nans = np.int64(best != best)
                        # branch-free argmax (first maximum wins: strict >); an `if` here mispredicts
                        # on every other window and doubled the kernel's time
                        if pool_k == 2:  # the common 2x2 window, unrolled
                            for k, v in ((1, conv[base + 1]), (2, conv[base + wp]), (3, conv[base + wp + 1])):
                                best_at += (k - best_at) * np.int64(v > best)
                                best = max(best, v)
                                nans += np.int64(v != v)
                        else:
                            for i in range(pool_k):
                                for j in range(pool_k):
                                    v = conv[base + i * wp + j]
                                    best_at += (i * pool_k + j - best_at) * np.int64(v > best)
                                    best = max(best, v)
                                    nans += np.int64(v != v)
                        if nans:  # rare: a NaN wins, as np.argmax, so divergence stays visible
                            best_at = _first_nan(conv, base, wp, pool_k)
                            best = conv[base + (best_at // pool_k) * wp + best_at % pool_k]
                        out[n, f, py, px] = 0.0 if best <= 0.0 else best  # ReLU commutes with max
                        arg[n, f, py, px] = best_at


@reduction_kernel
def _backward(x, dout, out, arg, w, pad, pool_k, pool_s, grad_count, grad_taps, dw_part, db_part, dx, need_dx):
    n_img, c_in, h, width = x.shape
    n_parts, n_filt = db_part.shape
    kh, kw = w.shape[2], w.shape[3]
    wp = width + 2 * pad
    span = (h + 2 * pad - kh + 1) * wp
    ph, pw = dout.shape[2], dout.shape[3]
    per_part = (n_img + n_parts - 1) // n_parts
    for t in prange(n_parts):
        plane = np.zeros((c_in, (h + 2 * pad) * wp + kw), dtype=x.dtype)
        dplane = np.zeros((c_in, (h + 2 * pad) * wp + kw), dtype=x.dtype)
        dconv = np.zeros(span, dtype=x.dtype)
        for n in range(t * per_part, min(n_img, (t + 1) * per_part)):
            _fill_plane(x, n, pad, wp, plane)
            if need_dx:
                dplane[:, :] = 0.0
            for f in range(n_filt):
                for p in range(span):
                    dconv[p] = 0.0
                db_f = np.float32(0.0)
                for py in range(ph):
                    for px in range(pw):
                        # ReLU passes the gradient only where the pooled value is > 0; multiplying
                        # by that test instead of branching on it avoids mispredictions
                        g = dout[n, f, py, px] * np.float32(out[n, f, py, px] > 0.0)
                        a = arg[n, f, py, px]
                        dconv[(py * pool_s + a // pool_k) * wp + px * pool_s + a % pool_k] += g
                        db_f += g
                db_part[t, f] += db_f
                for q in range(grad_count[f]):  # taps whose gradient is wanted (masked ones are not)
                    k = grad_taps[f, q]
                    c, i, j = k // (kh * kw), (k // kw) % kh, k % kw
                    src = plane[c, i * wp + j : i * wp + j + span]
                    acc = np.float32(0.0)
                    for p in range(span):
                        acc += dconv[p] * src[p]
                    dw_part[t, f, c, i, j] += acc
                if need_dx:
                    for c in range(c_in):
                        for i in range(kh):
                            for j in range(kw):
                                wv = w[f, c, i, j]
                                if wv != 0.0:
                                    dst = dplane[c, i * wp + j : i * wp + j + span]
                                    for p in range(span):
                                        dst[p] += wv * dconv[p]
            if need_dx:
                for c in range(c_in):
                    for y in range(h):
                        row = (y + pad) * wp + pad
                        for x_ in range(width):
                            dx[n, c, y, x_] = dplane[c, row + x_]


# ---------------------------------------------------------------------------------------------------
# The 2x2, stride-2 pool (the paper's, and almost every CNN's): a parity-split layout.
#
# A 2x2 window reads rows 2py, 2py + 1 and columns 2u, 2u + 1: stride-2 patterns that SIMD handles
# badly. So the padded image is stored as four quarter planes by row and column parity,
#     planes[R % 2, C % 2, c, (R // 2)*WH + C // 2] = padded image (R, C),   WH = ceil(padded width / 2)
# and the conv map likewise as conv[r, e, q] = map(2*yy + r, 2*u + e) at q = yy*WH + u. Then
# - a window's four values conv[0|1, 0|1, q] share one index q: pooling is a flat vector loop;
# - output (2yy + r, 2u + e), tap (i, j) reads padded pixel (2yy + r + i, 2u + e + j), which is quarter
#   plane ((r + i) % 2, (e + j) % 2) at q + ((r + i) // 2)*WH + (e + j) // 2: one contiguous run per tap.
# Columns u >= PW of each row are junk (computed, never pooled); their gradient is kept 0.
# Pooling codes: 0..3 = argmax cell (row-major, first maximum wins), 4 = no gradient (max <= 0 or NaN).


@serial
def _row_runs(planes, c, row, pad, wh, at):
    """The two quarter-plane runs that padded row ``row`` of channel c is split into: (pixels x_ of
    even index, pixels x_ of odd index), for the image whose planes start at index ``at``. Pixel x_ lands
    in padded column x_ + pad, i.e. quarter column parity (x_ + pad) & 1 at index (x_ + pad) >> 1."""
    start = at + (row >> 1) * wh
    return (planes[row & 1, pad & 1, c, start + (pad >> 1) :],
            planes[row & 1, (pad + 1) & 1, c, start + ((pad + 1) >> 1) :])


@serial
def _fill_quarters(x, n, pad, wh, planes, at):
    """planes[R % 2, C % 2, c, at + (R // 2)*WH + C // 2] = padded image n at (R, C); the border stays 0
    (``at``: where the image starts in the planes, 0 unless they hold several images side by side).
    Row by row: the even and the odd pixels of an image row are two contiguous runs of one quarter-plane
    row each: STEP pixel pairs at a time by vector shuffles (split_step, see minicnn/fast/_simd.py), the
    rest by two stride-2 copy loops."""
    c_in, h, width = x.shape[1], x.shape[2], x.shape[3]
    steps = width // (2 * STEP)
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
def _unfill_quarters(planes, n, pad, wh, dx):
    """The reverse of _fill_quarters: dx[n, c, y, x_] = planes' entry for padded pixel (y + pad, x_ + pad)."""
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
def _pool2(conv, wh, pooled, code, out, n, f):
    """out[n, f] = relu(max of each 2x2 window); code[q] = the window's pooling code (see above)."""
    _pool2_codes(conv, 0, pooled, code)
    _copy_rows(pooled, wh, out, n, f)


@serial
def _pool2_codes(conv, at, pooled, code):
    """pooled[q] = relu(max of the 2x2 window at + q of the split conv map), code[q] = its pooling code."""
    c00, c01, c10, c11 = conv[0, 0, at:], conv[0, 1, at:], conv[1, 0, at:], conv[1, 1, at:]
    nans = np.int32(0)
    for q in range(pooled.size):  # one vector loop over all windows
        a0, a1, a2, a3 = c00[q], c01[q], c10[q], c11[q]
        # branch-free argmax (first maximum wins: strict >): integer arithmetic on the comparisons. As
        # `at = 1 if a1 > best else at`, LLVM emits branches that mispredict on real data (measured 5x slower).
        best, at = a0, np.int32(0)
        at += (1 - at) * np.int32(a1 > best)
        best = max(best, a1)
        at += (2 - at) * np.int32(a2 > best)
        best = max(best, a2)
        at += (3 - at) * np.int32(a3 > best)
        best = max(best, a3)
        # any NaN in the window makes this sum NaN. An integer flag, not a float running sum: a float
        # sum is a reduction LLVM may not reorder without 'reassoc', and it kept the whole loop scalar
        # (measured 4x slower)
        window_sum = (a0 + a1) + (a2 + a3)
        nans |= np.int32(window_sum != window_sum)
        pooled[q] = max(best, np.float32(0.0))  # ReLU commutes with max
        code[q] = at + (4 - at) * np.int32(best <= 0.0)
    if nans:  # rare (or inf + -inf): a NaN in a window wins (as np.argmax), so divergence stays visible
        for q in range(pooled.size):
            if c00[q] != c00[q] or c01[q] != c01[q] or c10[q] != c10[q] or c11[q] != c11[q]:
                pooled[q] = np.nan
                code[q] = 4


@serial
def _pool2_values(conv, wh, pooled, out, n, f):
    """_pool2 without the codes, for inference: out[n, f] = relu(max of each 2x2 window), NaN if the
    window holds one. (The argmax arithmetic is a third of _pool2's time.)"""
    _pool2_max(conv, 0, pooled)
    _copy_rows(pooled, wh, out, n, f)


@serial
def _pool2_max(conv, at, pooled):
    """pooled[q] = relu(max of the 2x2 window at + q of the split conv map), NaN if the window holds one."""
    c00, c01, c10, c11 = conv[0, 0, at:], conv[0, 1, at:], conv[1, 0, at:], conv[1, 1, at:]
    nans = np.int32(0)
    for q in range(pooled.size):
        a0, a1, a2, a3 = c00[q], c01[q], c10[q], c11[q]
        window_sum = (a0 + a1) + (a2 + a3)
        nans |= np.int32(window_sum != window_sum)  # an integer flag: see _pool2
        pooled[q] = max(max(max(a0, a1), max(a2, a3)), np.float32(0.0))
    if nans:
        for q in range(pooled.size):
            if c00[q] != c00[q] or c01[q] != c01[q] or c10[q] != c10[q] or c11[q] != c11[q]:
                pooled[q] = np.nan


@serial
def _copy_rows(pooled, wh, out, n, f):
    """out[n, f, py, u] = pooled[py*WH + u]: drops the junk columns."""
    ph, pw = out.shape[2], out.shape[3]
    for py in range(ph):  # explicit loops: Numba's slice assignment is several times slower here
        row, src = out[n, f, py], pooled[py * wh :]
        for u in range(pw):
            row[u] = src[u]


@serial
def _split_rows(dout, n, f, wh, grad):
    """grad[py*WH + u] = dout[n, f, py, u]: the reverse of _copy_rows (grad's junk columns stay as they are)."""
    ph, pw = dout.shape[2], dout.shape[3]
    for py in range(ph):
        row, dst = dout[n, f, py], grad[py * wh :]
        for u in range(pw):
            dst[u] = row[u]


@serial_reduction  # the db sum may be reordered: without that, LLVM keeps the whole loop scalar
def _unpool2_codes(code, grad, dconv, lead):
    """dconv[:, :, lead : lead + span] = gradient of the split conv map, given grad (span,), the
    gradient of the pooled map in the same split rows (junk columns 0), and the pooling codes; returns
    its sum (db). ReLU passes the gradient only where the pooled value is > 0, which code 4 marks."""
    d00, d01, d10, d11 = dconv[0, 0, lead:], dconv[0, 1, lead:], dconv[1, 0, lead:], dconv[1, 1, lead:]
    total = np.float32(0.0)
    bad = np.int32(0)
    # Every cell is written (the argmax gets g, the others 0): no scatter, no zeroing. Multiplying by
    # 0/1 rather than selecting: LLVM turns four exclusive selects on k into a branchy switch (measured
    # 9x slower). A non-finite g would leave NaN (0 * inf) where the exact answer is 0, so that rare
    # case is redone below with selects.
    for q in range(grad.size):
        k, g = code[q], grad[q]
        d00[q] = g * np.float32(k == 0)
        d01[q] = g * np.float32(k == 1)
        d10[q] = g * np.float32(k == 2)
        d11[q] = g * np.float32(k == 3)
        total += g * np.float32(k < 4)
        g_minus_g = g - g  # NaN if g is inf or NaN, else 0
        bad |= np.int32(g_minus_g != g_minus_g)
    if bad:
        zero = np.float32(0.0)
        total = zero
        for q in range(grad.size):
            k, g = code[q], grad[q]
            d00[q] = g if k == 0 else zero
            d01[q] = g if k == 1 else zero
            d10[q] = g if k == 2 else zero
            d11[q] = g if k == 3 else zero
            total += g if k < 4 else zero
    return total


@serial
def _relu_unsplit(conv, wh, out, n, f):
    """out[n, f] = relu of the split conv map (no pooling): conv[y % 2, x % 2, (y // 2)*WH + x // 2]."""
    oh, ow = out.shape[2], out.shape[3]
    for y in range(oh):
        row, start = out[n, f, y], (y >> 1) * wh
        even_x, odd_x = conv[y & 1, 0, start:], conv[y & 1, 1, start:]
        for u in range((ow + 1) // 2):
            v = even_x[u]
            row[2 * u] = 0.0 if v <= 0.0 else v  # NaN stays NaN (a diverged run must show it)
        for u in range(ow // 2):
            v = odd_x[u]
            row[2 * u + 1] = 0.0 if v <= 0.0 else v


@serial_reduction  # the db sum may be reordered (else LLVM keeps the loops scalar)
def _relu_split(dout, out, n, f, wh, dconv, lead):
    """dconv[:, :, lead:] = dout[n, f] * (out[n, f] > 0), split by parity as the conv map; returns its
    sum (db). Multiplying by the mask, as the reference does, keeps NaN * 0 = NaN alike. Entries that
    no pixel maps to are never written and stay 0."""
    oh, ow = dout.shape[2], dout.shape[3]
    total = np.float32(0.0)
    for y in range(oh):
        g_row, o_row, start = dout[n, f, y], out[n, f, y], lead + (y >> 1) * wh
        even_x, odd_x = dconv[y & 1, 0, start:], dconv[y & 1, 1, start:]
        for u in range((ow + 1) // 2):
            g = g_row[2 * u] * np.float32(o_row[2 * u] > 0.0)
            even_x[u] = g
            total += g
        for u in range(ow // 2):
            g = g_row[2 * u + 1] * np.float32(o_row[2 * u + 1] > 0.0)
            odd_x[u] = g
            total += g
    return total


#: Bytes per cache line: the unit _aligned_zeros aligns buffers to and the kernels round lengths to.
CACHE_LINE = 64


@serial
def _round_up(n, multiple):
    return (n + multiple - 1) // multiple * multiple


@serial
def _line_entries(like):
    """Entries of like's dtype per cache line."""
    return CACHE_LINE // like.itemsize


@serial
def _aligned_zeros(shape, like):
    """Zeros of like's dtype in this shape (a tuple, C order), the first on a 64-byte boundary (a cache
    line). Numba aligns arrays
    to 32 bytes only, and the conv and weight-gradient loops, which run from a buffer's first entry,
    load 512-bit vectors: one that straddles two lines costs two loads. The bare conv pass ran 1.06-1.16x
    faster aligned on one thread, 1.02-1.05x on two; the whole-model op (minicnn/fast/convnet.py) with its
    planes, conv maps and map gradients aligned 1.05-1.08x (training) and 1.03-1.11x (inference),
    interleaved. (Aligning the pooled maps and the linear layer's buffers too made no measurable
    difference.)"""
    count = 1
    for size in shape:
        count *= size
    per_line = _line_entries(like)
    buf = np.zeros(count + per_line, dtype=like.dtype)
    skip = (per_line - (buf.ctypes.data // like.itemsize) % per_line) % per_line
    return buf[skip : skip + count].reshape(shape)


@serial
def _tap_run(planes, c, i, j, r, e, wh):
    """The run of padded pixels that tap (i, j) reads for conv quarter (r, e): padded pixel
    (2yy + r + i, 2u + e + j) of channel c at index q."""
    start = ((r + i) >> 1) * wh + ((e + j) >> 1)
    return planes[(r + i) & 1, (e + j) & 1, c, start:]


@serial
def _split_sizes(h, width, pad, kh, kw, out_rows, pool):
    """(WH, span, plane_len) of the split layout: span = conv-map entries computed per quarter (whole
    rows of WH; with pooling only the pooled rows), plane_len = quarter-plane length, one junk row and
    KW entries longer than the padded image so that every tap's run stays inside."""
    wh = (width + 2 * pad + 1) // 2
    span = (out_rows if pool else (out_rows + 1) // 2) * wh
    return wh, span, ((h + 2 * pad + 1) // 2 + 1) * wh + kw


@serial
def _unsigned_offsets(wh, span):
    """The 9-tap loops index a few flat arrays at q plus a constant rather than slicing 16 runs: with
    16 slices LLVM ran out of registers for their addresses and reloaded ten of them from the stack
    every step (the same loop in C, on four base pointers, ran 1.5x faster; here 1.45-1.6x). The
    indices are unsigned: with a signed index Numba must allow for a negative one (wrap-around) and
    LLVM then gathers element by element. -> (1, WH, WH + 1, span) as uint64."""
    u = np.uint64
    return u(1), u(wh), u(wh + 1), u(span)


@serial  # not reassociated: see the sums below
def _conv_quarters(planes, w, b, f, nine_taps, tap_count, taps, live, wh, conv):
    """conv[r, e, q] = b[f] + the conv of filter f at output (2yy + r, 2u + e), q = yy*WH + u, from the
    quarter planes of one image (planes (2, 2, C, plane_len), conv (2, 2, span)); see _skip_plan for
    nine_taps, tap_count, taps and live."""
    kh, kw = w.shape[2], w.shape[3]
    span = conv.shape[2]
    c00, c01, c10, c11 = conv[0, 0], conv[0, 1], conv[1, 0], conv[1, 1]
    c_in = planes.shape[2]
    for q in range(span):
        c00[q] = c01[q] = c10[q] = c11[q] = b[f]
    if nine_taps:
        # Flat, unsigned indexing (see _unsigned_offsets): the four quarter planes of a channel are read
        # at q, q + 1, q + WH and q + WH + 1, the four conv quarters written at q + k*span.
        one, row, row1, n = _unsigned_offsets(wh, span)
        s1, s2, s3 = n, n + n, n + n + n
        flat = conv.reshape(conv.size)
        for c in range(c_in):
            if not live[f, c]:  # all 9 weights of this channel are 0
                continue
            a0, a1, b0, b1 = planes[0, 0, c], planes[0, 1, c], planes[1, 0, c], planes[1, 1, c]
            w00, w01, w02 = w[f, c, 0, 0], w[f, c, 0, 1], w[f, c, 0, 2]
            w10, w11, w12 = w[f, c, 1, 0], w[f, c, 1, 1], w[f, c, 1, 2]
            w20, w21, w22 = w[f, c, 2, 0], w[f, c, 2, 1], w[f, c, 2, 2]
            # all 9 taps of the channel for the four conv positions of each window in one
            # pass: 16 loads feed 36 multiply-adds. A tap at a time is bound by the loads and
            # stores of the conv map instead (measured 1.6x slower). p<R><C> = padded pixel
            # (2yy + R, 2u + C), the 4x4 tile that the window's four conv positions read.
            # Each output is three row sums added at the end, three dependent multiply-adds deep rather
            # than nine (the bare loop ran 1.04-1.06x faster). Kept as written because this function
            # may not reassociate: with that allowed, LLVM turned the sums back into one chain.
            for q in range(n):
                p00, p01, p02, p03 = a0[q], a1[q], a0[q + one], a1[q + one]
                p10, p11, p12, p13 = b0[q], b1[q], b0[q + one], b1[q + one]
                p20, p21, p22, p23 = a0[q + row], a1[q + row], a0[q + row1], a1[q + row1]
                p30, p31, p32, p33 = b0[q + row], b1[q + row], b0[q + row1], b1[q + row1]
                flat[q] = ((flat[q] + w00 * p00 + w01 * p01 + w02 * p02) + (w10 * p10 + w11 * p11 + w12 * p12)
                           + (w20 * p20 + w21 * p21 + w22 * p22))
                flat[q + s1] = ((flat[q + s1] + w00 * p01 + w01 * p02 + w02 * p03)
                                + (w10 * p11 + w11 * p12 + w12 * p13) + (w20 * p21 + w21 * p22 + w22 * p23))
                flat[q + s2] = ((flat[q + s2] + w00 * p10 + w01 * p11 + w02 * p12)
                                + (w10 * p20 + w11 * p21 + w12 * p22) + (w20 * p30 + w21 * p31 + w22 * p32))
                flat[q + s3] = ((flat[q + s3] + w00 * p11 + w01 * p12 + w02 * p13)
                                + (w10 * p21 + w11 * p22 + w12 * p23) + (w20 * p31 + w21 * p32 + w22 * p33))
    else:  # any kernel size, one contiguous multiply-add per nonzero tap and conv quarter
        for q_ in range(tap_count[f]):
            k = taps[f, q_]
            c, i, j = k // (kh * kw), (k // kw) % kh, k % kw
            wv = w[f, c, i, j]
            for r in range(2):
                for e in range(2):
                    src, dst = _tap_run(planes, c, i, j, r, e, wh), conv[r, e]
                    for q in range(span):
                        dst[q] += wv * src[q]


_NINE_ZEROS = (np.float32(0.0),) * 9  # the nine sums of a 9-tap weight-gradient pass, before it


@serial
def _add_3x3(dw, g):
    """dw (3, 3) += g, the nine sums of a 9-tap weight-gradient pass in row-major order."""
    dw[0, 0] += g[0]
    dw[0, 1] += g[1]
    dw[0, 2] += g[2]
    dw[1, 0] += g[3]
    dw[1, 1] += g[4]
    dw[1, 2] += g[5]
    dw[2, 0] += g[6]
    dw[2, 1] += g[7]
    dw[2, 2] += g[8]


@serial_reduction  # the 9 sums over q may be reordered (vector lanes)
def _weight_grad_quarters(planes, dconv, lead, f, nine_taps, grad_count, grad_taps, live, wh, dw_f):
    """dw_f (C, KH, KW) += the weight gradient of filter f from one image: its quarter planes and the
    gradient of its split conv map, dconv[r, e, lead : lead + span]."""
    kh, kw = dw_f.shape[1], dw_f.shape[2]
    span = dconv.shape[2] - 2 * lead
    c_in = planes.shape[2]
    d00, d01, d10, d11 = dconv[0, 0, lead:], dconv[0, 1, lead:], dconv[1, 0, lead:], dconv[1, 1, lead:]
    if nine_taps:
        one, row, row1, n = _unsigned_offsets(wh, span)  # flat unsigned indexing: see there
        for c in range(c_in):
            if not live[f, c]:  # no weight of this channel wants a gradient
                continue
            a0, a1, b0, b1 = planes[0, 0, c], planes[0, 1, c], planes[1, 0, c], planes[1, 1, c]
            g = _NINE_ZEROS
            for q in range(n):
                # the window at q: its four cells' gradients e<r><e> times the 4x4 tile of padded pixels
                # p<R><C> = (2yy + R, 2u + C) they read; tap (i, j) takes cell (r, e)'s pixel (r + i, e + j)
                e00, e01, e10, e11 = d00[q], d01[q], d10[q], d11[q]
                p00, p01, p02, p03 = a0[q], a1[q], a0[q + one], a1[q + one]
                p10, p11, p12, p13 = b0[q], b1[q], b0[q + one], b1[q + one]
                p20, p21, p22, p23 = a0[q + row], a1[q + row], a0[q + row1], a1[q + row1]
                p30, p31, p32, p33 = b0[q + row], b1[q + row], b0[q + row1], b1[q + row1]
                g = (g[0] + (e00 * p00 + e01 * p01 + e10 * p10 + e11 * p11),
                     g[1] + (e00 * p01 + e01 * p02 + e10 * p11 + e11 * p12),
                     g[2] + (e00 * p02 + e01 * p03 + e10 * p12 + e11 * p13),
                     g[3] + (e00 * p10 + e01 * p11 + e10 * p20 + e11 * p21),
                     g[4] + (e00 * p11 + e01 * p12 + e10 * p21 + e11 * p22),
                     g[5] + (e00 * p12 + e01 * p13 + e10 * p22 + e11 * p23),
                     g[6] + (e00 * p20 + e01 * p21 + e10 * p30 + e11 * p31),
                     g[7] + (e00 * p21 + e01 * p22 + e10 * p31 + e11 * p32),
                     g[8] + (e00 * p22 + e01 * p23 + e10 * p32 + e11 * p33))
            _add_3x3(dw_f[c], g)
    else:
        for q_ in range(grad_count[f]):  # taps whose gradient is wanted (masked ones are not)
            k = grad_taps[f, q_]
            c, i, j = k // (kh * kw), (k // kw) % kh, k % kw
            acc = np.float32(0.0)
            for r in range(2):
                for e in range(2):
                    src, d = _tap_run(planes, c, i, j, r, e, wh), dconv[r, e, lead:]
                    for q in range(span):
                        acc += d[q] * src[q]
            dw_f[c, i, j] += acc


@serial_reduction  # the 9 sums over q may be reordered (vector lanes)
def _weight_grad_codes(planes, code, grad, f, live, wh, dw_f):
    """_unpool2_codes and the 9-tap _weight_grad_quarters in one, for a 3x3 filter f whose conv input
    needs no gradient: dw_f (C, 3, 3) += the weight gradient, the conv-map gradient taken straight from
    the pooling codes and grad (span,), the gradient of the pooled map in split rows (junk columns 0).

    Only a window's argmax cell (r, e) has a gradient, so tap (i, j) multiplies it by one pixel of the
    window's 4x4 tile, (r + i, e + j): the 3x3 block of the tile at (r, e) is picked with selects (rows,
    then columns: 21 selects) and multiplied once, 9 multiply-adds per window instead of 36 (the other
    three cells' zeros times their pixels). Measured 1.4x faster than the 36, bit-identical. Never
    storing the map's gradient also saves a pass that writes four arrays (LLVM keeps such a loop at half
    width): the backward of the paper's conv ran 1.09x faster for that.

    grad must be 0 in the windows of code 4 (_zero_blocked_and_sum sets it so). Both grad and the
    image (planes) must be finite: the reference multiplies every pixel by its cell's gradient, so an
    inf or NaN pixel makes dw NaN even where that gradient is 0 (0 * inf). Callers check
    (_zero_blocked_and_sum, _all_finite) and take _unpool2_codes + _weight_grad_quarters otherwise."""
    one, row, row1, n = _unsigned_offsets(wh, grad.size)  # flat unsigned indexing: see there
    zero = np.float32(0.0)
    for c in range(planes.shape[2]):
        if not live[f, c]:  # no weight of this channel wants a gradient
            continue
        a0, a1, b0, b1 = planes[0, 0, c], planes[0, 1, c], planes[1, 0, c], planes[1, 1, c]
        g0 = g1 = g2 = g3 = g4 = g5 = g6 = g7 = g8 = zero
        for q in range(n):
            k, g = code[q], grad[q]  # g is 0 where k is 4 (no gradient: ReLU blocked it)
            down, right = (k & 2) != 0, (k & 1) != 0  # the argmax cell's row and column in the window
            # p<R><C> = padded pixel (2yy + R, 2u + C): the 4x4 tile the window's four cells read
            p00, p01, p02, p03 = a0[q], a1[q], a0[q + one], a1[q + one]
            p10, p11, p12, p13 = b0[q], b1[q], b0[q + one], b1[q + one]
            p20, p21, p22, p23 = a0[q + row], a1[q + row], a0[q + row1], a1[q + row1]
            p30, p31, p32, p33 = b0[q + row], b1[q + row], b0[q + row1], b1[q + row1]
            # rows r .. r + 2 of the tile
            r00, r01, r02, r03 = (p10, p11, p12, p13) if down else (p00, p01, p02, p03)
            r10, r11, r12, r13 = (p20, p21, p22, p23) if down else (p10, p11, p12, p13)
            r20, r21, r22, r23 = (p30, p31, p32, p33) if down else (p20, p21, p22, p23)
            # columns e .. e + 2 of those
            s00, s01, s02 = (r01, r02, r03) if right else (r00, r01, r02)
            s10, s11, s12 = (r11, r12, r13) if right else (r10, r11, r12)
            s20, s21, s22 = (r21, r22, r23) if right else (r20, r21, r22)
            g0 += g * s00
            g1 += g * s01
            g2 += g * s02
            g3 += g * s10
            g4 += g * s11
            g5 += g * s12
            g6 += g * s20
            g7 += g * s21
            g8 += g * s22
        _add_3x3(dw_f[c], (g0, g1, g2, g3, g4, g5, g6, g7, g8))


@serial_reduction  # the sum may be reordered
def _all_finite(x, n):
    """Whether image n of x (N, C, H, W, C-contiguous) holds no inf or NaN: the sum of pixel * 0 is 0,
    or NaN if one is inf or NaN. One flat loop over the pixels (row by row, and with an integer flag
    as _pool2_codes has, were 4x and 2x slower)."""
    image = x[n].reshape(x[n].size)
    total = np.float32(0.0)
    for i in range(image.size):
        total += image[i] * np.float32(0.0)
    return total == 0.0


@serial  # not reassociated: the sum's order is written out below
def _zero_blocked_and_sum(code, grad):
    """Sets grad to 0 in the windows without a gradient (code 4: ReLU blocked them), in place, and
    returns (db, finite): the sum of what is left, and whether all of it is finite. Zeroed here once per
    filter, so that _weight_grad_codes needs no test of the code per channel (the test was 5 of its
    loop's 43 vector instructions). Integer flag, not a float test inside the sum: see _pool2_codes.

    The sum runs in 16 lanes, in an order written out here (entry q into lane q % 16, then the lanes
    pairwise), not left to LLVM: as a reordered sum, a process that compiled the kernels and one that
    loaded them from the cache added it in different orders (db differed in the last bit, and training
    at the chaotic lr 0.8 then ended elsewhere)."""
    zero = np.float32(0.0)
    for q in range(grad.size):
        grad[q] = grad[q] if code[q] < 4 else zero
    lanes = np.zeros(16, dtype=grad.dtype)
    bad = np.int32(0)
    for start in range(0, grad.size, 16):
        run = grad[start : start + 16]  # 16 entries, fewer at the end
        for lane in range(run.size):
            g = run[lane]
            lanes[lane] += g
            g_minus_g = g - g  # NaN if g is inf or NaN, else 0
            bad |= np.int32(g_minus_g != g_minus_g)
    for width in (8, 4, 2, 1):
        for lane in range(width):
            lanes[lane] += lanes[lane + width]
    return lanes[0], bad == 0


@reduction_kernel
def _forward_split(x, w, b, pad, pool, keep_codes, nine_taps, tap_count, taps, live, out, code, n_parts):
    """pool: out (N, F, PH, PW) = 2x2 max-pool of relu(conv), and with keep_codes code (N, F, span) its
    pooling codes (inference skips them); else out (N, F, OH, OW) = relu(conv). code is unused unless
    pool and keep_codes."""
    n_img, c_in, h, width = x.shape
    n_filt, _, kh, kw = w.shape
    wh, span, plane_len = _split_sizes(h, width, pad, kh, kw, out.shape[2], pool)
    plane_row = _round_up(plane_len, _line_entries(x))  # each channel's planes start on a cache line
    per_part = (n_img + n_parts - 1) // n_parts
    for t in prange(n_parts):
        planes = _aligned_zeros((2, 2, c_in, plane_row), x)
        conv = _aligned_zeros((2, 2, span), x)
        pooled = np.empty(span, dtype=x.dtype)
        for n in range(t * per_part, min(n_img, (t + 1) * per_part)):
            _fill_quarters(x, n, pad, wh, planes, 0)
            for f in range(n_filt):
                _conv_quarters(planes, w, b, f, nine_taps, tap_count, taps, live, wh, conv)
                if pool and keep_codes:
                    _pool2(conv, wh, pooled, code[n, f], out, n, f)
                elif pool:  # inference: no codes wanted
                    _pool2_values(conv, wh, pooled, out, n, f)
                else:
                    _relu_unsplit(conv, wh, out, n, f)


@reduction_kernel
def _backward_split(x, dout, out, code, w, pad, pool, nine_taps, grad_count, grad_taps, live, dw_part, db_part,
                    dx, need_dx):
    """The gradients of _forward_split: dout and out (its output) are (N, F, PH, PW) with pool, else
    (N, F, OH, OW)."""
    n_img, c_in, h, width = x.shape
    n_parts, n_filt = db_part.shape
    kh, kw = w.shape[2], w.shape[3]
    wh, span, plane_len = _split_sizes(h, width, pad, kh, kw, dout.shape[2], pool)
    # The conv-map gradient sits at dconv[r, e, lead : lead + span], zeros on both sides, so the input
    # gradient can read it shifted back by up to lead = WH + 1 (see the 9-tap input gradient below).
    lead = wh + 1
    dx_span = span + lead  # quarter-plane entries a 3x3 transposed conv writes
    one, row, row1, n_dx = _unsigned_offsets(wh, dx_span)
    plane_row = _round_up(plane_len, _line_entries(x))  # each channel's planes start on a cache line
    per_part = (n_img + n_parts - 1) // n_parts
    for t in prange(n_parts):
        planes = _aligned_zeros((2, 2, c_in, plane_row), x)
        dplanes = _aligned_zeros((2, 2, c_in, plane_row), x)
        dconv = _aligned_zeros((2, 2, lead + span + lead), x)
        d00, d01, d10, d11 = dconv[0, 0], dconv[0, 1], dconv[1, 0], dconv[1, 1]
        grad = np.zeros(span, dtype=x.dtype)
        for n in range(t * per_part, min(n_img, (t + 1) * per_part)):
            _fill_quarters(x, n, pad, wh, planes, 0)
            image_finite = pool and nine_taps and not need_dx and _all_finite(x, n)  # see _weight_grad_codes
            if need_dx:
                dplanes[:, :, :, :] = 0.0
            for f in range(n_filt):
                if pool:
                    _split_rows(dout, n, f, wh, grad)
                    if nine_taps and not need_dx:  # the map's gradient is not needed: skip storing it
                        total, finite = _zero_blocked_and_sum(code[n, f], grad)
                        if finite and image_finite:
                            db_part[t, f] += total
                            _weight_grad_codes(planes, code[n, f], grad, f, live, wh, dw_part[t, f])
                            continue
                    db_part[t, f] += _unpool2_codes(code[n, f], grad, dconv, lead)
                else:
                    db_part[t, f] += _relu_split(dout, out, n, f, wh, dconv, lead)
                _weight_grad_quarters(planes, dconv, lead, f, nine_taps, grad_count, grad_taps, live, wh,
                                      dw_part[t, f])
                if need_dx and nine_taps:
                    for c in range(c_in):
                        w00, w01, w02 = w[f, c, 0, 0], w[f, c, 0, 1], w[f, c, 0, 2]
                        w10, w11, w12 = w[f, c, 1, 0], w[f, c, 1, 1], w[f, c, 1, 2]
                        w20, w21, w22 = w[f, c, 2, 0], w[f, c, 2, 1], w[f, c, 2, 2]
                        if (w00 == 0.0 and w01 == 0.0 and w02 == 0.0 and w10 == 0.0 and w11 == 0.0
                                and w12 == 0.0 and w20 == 0.0 and w21 == 0.0 and w22 == 0.0):
                            continue
                        # The transposed conv, all 9 taps per pass, gathered rather than scattered: quarter
                        # plane (R, C) at p receives tap (i, j) of conv quarter (r, e) with r + i in {R, R + 2}
                        # and e + j in {C, C + 2}, read at p - 0, p - 1, p - WH, p - WH - 1 of the gradient
                        # map, i.e. at p + lead - 0, ... of d<r><e> (lead = WH + 1; flat unsigned indexing,
                        # see _unsigned_offsets): 16 loads feed 36 multiply-adds into 4 outputs, where a tap
                        # at a time is bound by the stores.
                        x00, x01, x10, x11 = dplanes[0, 0, c], dplanes[0, 1, c], dplanes[1, 0, c], dplanes[1, 1, c]
                        for p in range(n_dx):
                            a000, a001, a00w, a00x = d00[p + row1], d00[p + row], d00[p + one], d00[p]
                            a010, a011, a01w, a01x = d01[p + row1], d01[p + row], d01[p + one], d01[p]
                            a100, a101, a10w, a10x = d10[p + row1], d10[p + row], d10[p + one], d10[p]
                            a110, a111, a11w, a11x = d11[p + row1], d11[p + row], d11[p + one], d11[p]
                            # plane (R, C): rows r + i in {R, R + 2}, columns e + j in {C, C + 2}
                            x00[p] += (w00 * a000 + w02 * a001 + w01 * a011 + w20 * a00w + w10 * a10w
                                       + w22 * a00x + w21 * a01x + w12 * a10x + w11 * a11x)
                            x01[p] += (w01 * a000 + w00 * a010 + w02 * a011 + w21 * a00w + w20 * a01w
                                       + w11 * a10w + w10 * a11w + w22 * a01x + w12 * a11x)
                            x10[p] += (w10 * a000 + w00 * a100 + w12 * a001 + w11 * a011 + w02 * a101
                                       + w01 * a111 + w20 * a10w + w22 * a10x + w21 * a11x)
                            x11[p] += (w11 * a000 + w10 * a010 + w01 * a100 + w00 * a110 + w12 * a011
                                       + w02 * a111 + w21 * a10w + w20 * a11w + w22 * a11x)
                elif need_dx:  # the transposed conv, a tap at a time: dx += w * (dconv shifted by the tap)
                    for c in range(c_in):
                        for i in range(kh):
                            for j in range(kw):
                                wv = w[f, c, i, j]
                                if wv != 0.0:
                                    for r in range(2):
                                        for e in range(2):
                                            dst, d = _tap_run(dplanes, c, i, j, r, e, wh), dconv[r, e, lead:]
                                            for q in range(span):
                                                dst[q] += wv * d[q]
            if need_dx:
                _unfill_quarters(dplanes, n, pad, wh, dx)


def conv_relu_pool_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, pad: int,
                           pool_kernel: int, pool_stride: int, for_backward: bool = True):
    """x: (N, C, H, W), w: (F, C, KH, KW), b: (F,)  ->  maxpool(relu(conv(x))): (N, F, PH, PW), cache.
    With for_backward=False (inference) the 2x2 kernel skips the pooling codes and the cache is None."""
    pool2 = pool_kernel == 2 and pool_stride == 2
    if stride != 1 or (uses_gemm(w) and not pool2):  # wide filter banks: matrix products win (see fast/conv.py)
        conv_out, conv_cache = conv2d_forward(x, w, b, stride, pad)
        relu_out, relu_cache = relu_forward(conv_out)
        out, pool_cache = maxpool2d_forward(relu_out, pool_kernel, pool_stride)
        return out, ("layers", conv_cache, relu_cache, pool_cache)
    n, _, h, width = x.shape
    f, _, kh, kw = w.shape
    oh, ow = conv_output_size(h, kh, 1, pad), conv_output_size(width, kw, 1, pad)
    ph, pw = conv_output_size(oh, pool_kernel, pool_stride, 0), conv_output_size(ow, pool_kernel, pool_stride, 0)
    x = np.ascontiguousarray(x)
    w = np.ascontiguousarray(w, dtype=x.dtype)
    out = np.empty((n, f, ph, pw), dtype=x.dtype)
    nine_taps, tap_count, taps, live = _skip_plan(w != 0)
    parts = max(1, min(num_threads(), n))
    if pool2:  # the usual pool: the parity-split kernel, which beats matrix products even for wide banks
        _, span, _ = _split_sizes(h, width, pad, kh, kw, ph, True)
        code = np.empty((n, f, span) if for_backward else (1, 1, 1), dtype=np.int8)
        _forward_split(x, w, b.astype(x.dtype), pad, True, for_backward, nine_taps, tap_count, taps, live, out,
                       code, parts)
        return out, (("split", x, w, pad, True, out, code) if for_backward else None)
    arg = np.empty((n, f, ph, pw), dtype=np.int32)
    _forward(x, w, b.astype(x.dtype), pad, pool_kernel, pool_stride, tap_count, taps, out, arg, parts)
    return out, ("fused", x, w, pad, pool_kernel, pool_stride, out, arg)


def conv_relu_pool_backward(dout: np.ndarray, cache, need_dx: bool = True, weight_mask=None):
    """dout: (N, F, PH, PW)  ->  dx: (N, C, H, W) or None, dw: (F, C, KH, KW), db: (F,).

    With ``weight_mask`` (F, C, KH, KW) of 0/1, dw is 0 where the mask is 0 (the reference multiplies
    by the mask; here the masked taps are simply not computed: pruning makes backward cheaper).
    """
    if cache[0] == "layers":
        _, conv_cache, relu_cache, pool_cache = cache
        d = relu_backward(maxpool2d_backward(dout, pool_cache), relu_cache)
        dx, dw, db = conv2d_backward(d, conv_cache, need_dx)
        return dx, (dw if weight_mask is None else dw * weight_mask), db
    if cache[0] == "split":
        return _split_backward(dout, cache, need_dx, weight_mask)
    _, x, w, pad, pool_k, pool_s, out, arg = cache
    dout = np.ascontiguousarray(dout, dtype=x.dtype)
    dw_part, db_part, dx = _gradient_buffers(x, w, need_dx)
    _, grad_count, grad_taps, _ = _skip_plan(_wanted(w, weight_mask))
    _backward(x, dout, out, arg, w, pad, pool_k, pool_s, grad_count, grad_taps, dw_part, db_part, dx, need_dx)
    return (dx if need_dx else None), dw_part.sum(axis=0), db_part.sum(axis=0)


def conv_relu_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, pad: int):
    """x: (N, C, H, W), w: (F, C, KH, KW), b: (F,)  ->  relu(conv(x)): (N, F, OH, OW), cache.

    Stride 1 runs the parity-split kernels without the pool: the conv map of one image and filter
    is computed in L1 and written once, already through ReLU (no separate pass over the activation).
    """
    if stride != 1:
        conv_out, conv_cache = conv2d_forward(x, w, b, stride, pad)
        out, relu_cache = relu_forward(conv_out)
        return out, ("layers", conv_cache, relu_cache)
    n, _, h, width = x.shape
    f, _, kh, kw = w.shape
    x = np.ascontiguousarray(x)
    w = np.ascontiguousarray(w, dtype=x.dtype)
    out = np.empty((n, f, conv_output_size(h, kh, 1, pad), conv_output_size(width, kw, 1, pad)), dtype=x.dtype)
    nine_taps, tap_count, taps, live = _skip_plan(w != 0)
    no_codes = np.empty((1, 1, 1), dtype=np.int8)
    _forward_split(x, w, b.astype(x.dtype), pad, False, False, nine_taps, tap_count, taps, live, out, no_codes,
                   max(1, min(num_threads(), n)))
    return out, ("split", x, w, pad, False, out, no_codes)


def conv_relu_backward(dout: np.ndarray, cache, need_dx: bool = True, weight_mask=None):
    """dout: (N, F, OH, OW)  ->  dx: (N, C, H, W) or None, dw: (F, C, KH, KW), db: (F,); ``weight_mask``
    as in conv_relu_pool_backward."""
    if cache[0] == "layers":
        _, conv_cache, relu_cache = cache
        dx, dw, db = conv2d_backward(relu_backward(dout, relu_cache), conv_cache, need_dx)
        return dx, (dw if weight_mask is None else dw * weight_mask), db
    return _split_backward(dout, cache, need_dx, weight_mask)


def _wanted(w: np.ndarray, weight_mask) -> np.ndarray:
    """(F, C, KH, KW) bool: the weights whose gradient is computed."""
    return np.ones(w.shape, bool) if weight_mask is None else weight_mask != 0


def _gradient_buffers(x: np.ndarray, w: np.ndarray, need_dx: bool):
    """Per-thread partials of dw and db (summed after the kernel), and dx (a dummy without need_dx)."""
    parts = max(1, min(num_threads(), x.shape[0]))
    dw_part = np.zeros((parts,) + w.shape, dtype=x.dtype)
    db_part = np.zeros((parts, w.shape[0]), dtype=x.dtype)
    return dw_part, db_part, np.empty(x.shape if need_dx else (1, 1, 1, 1), dtype=x.dtype)


def _split_backward(dout: np.ndarray, cache, need_dx: bool, weight_mask):
    _, x, w, pad, pool, out, code = cache
    dout = np.ascontiguousarray(dout, dtype=x.dtype)
    dw_part, db_part, dx = _gradient_buffers(x, w, need_dx)
    wanted = _wanted(w, weight_mask)
    nine_taps, grad_count, grad_taps, live = _skip_plan(wanted)
    _backward_split(x, dout, out, code, w, pad, pool, nine_taps, grad_count, grad_taps, live, dw_part, db_part,
                    dx, need_dx)
    dw = dw_part.sum(axis=0)
    if weight_mask is not None:
        dw *= wanted  # a 9-tap pass computes every tap of a live channel; drop the unwanted ones
    return (dx if need_dx else None), dw, db_part.sum(axis=0)
