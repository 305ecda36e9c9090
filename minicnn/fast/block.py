"""Fused conv -> ReLU -> max-pool: same contract as minicnn.ref.block, one pass per image.

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
Strides other than 1, and filter banks wide enough for matrix products to win (fast.conv.uses_gemm),
fall back to the three separate fast ops.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from minicnn.fast._jit import num_threads, reduction_kernel, serial
from minicnn.fast.act import relu_backward, relu_forward
from minicnn.fast.conv import conv2d_backward, conv2d_forward, uses_gemm
from minicnn.fast.pool import maxpool2d_backward, maxpool2d_forward
from minicnn.ref.im2col import conv_output_size


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
    """active: (F, C, KH, KW) bool -> (counts (F,), taps (F, K)): for each filter the flat indices
    c*KH*KW + i*KW + j of its active taps, so kernels loop over those only (no branch per tap)."""
    flat = active.reshape(active.shape[0], int(np.prod(active.shape[1:])))
    counts = flat.sum(axis=1).astype(np.int64)
    taps = np.zeros(flat.shape, dtype=np.int64)
    for f in range(flat.shape[0]):
        idx = np.flatnonzero(flat[f])
        taps[f, : idx.size] = idx
    return counts, taps


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


def conv_relu_pool_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, pad: int,
                           pool_kernel: int, pool_stride: int):
    """x: (N, C, H, W), w: (F, C, KH, KW), b: (F,)  ->  maxpool(relu(conv(x))): (N, F, PH, PW), cache."""
    if stride != 1 or uses_gemm(w):  # wide filter banks: matrix products win (see fast/conv.py)
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
    arg = np.empty((n, f, ph, pw), dtype=np.int32)
    tap_count, taps = _tap_lists(w != 0)
    _forward(x, w, b.astype(x.dtype), pad, pool_kernel, pool_stride, tap_count, taps, out, arg,
             max(1, min(num_threads(), n)))
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
    _, x, w, pad, pool_k, pool_s, out, arg = cache
    dout = np.ascontiguousarray(dout, dtype=x.dtype)
    parts = max(1, min(num_threads(), x.shape[0]))
    dw_part = np.zeros((parts,) + w.shape, dtype=x.dtype)
    db_part = np.zeros((parts, w.shape[0]), dtype=x.dtype)
    dx = np.empty(x.shape if need_dx else (1, 1, 1, 1), dtype=x.dtype)
    grad_count, grad_taps = _tap_lists(np.ones(w.shape, bool) if weight_mask is None else weight_mask != 0)
    _backward(x, dout, out, arg, w, pad, pool_k, pool_s, grad_count, grad_taps, dw_part, db_part, dx, need_dx)
    return (dx if need_dx else None), dw_part.sum(axis=0), db_part.sum(axis=0)
