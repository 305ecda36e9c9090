"""conv -> ReLU -> max-pool of any pool size, one image at a time on a padded-width plane (stride-1 conv).

The image is copied into a zero-padded plane of width WP = W + 2*pad, flattened. Output pixel (y, x) is
computed at flat index y*WP + x, so for filter tap (i, j) the whole output map is ONE contiguous
multiply-add,
    conv[0 : OH*WP] += w[f, c, i, j] * plane_c[i*WP + j : i*WP + j + OH*WP],
a long loop LLVM vectorises well (instead of OH short loops of OW). The WP - OW extra columns of each row
are junk that pooling never reads. Backward mirrors it: the gradient of the conv map is 0 except at each
window's argmax (only if the pooled value is > 0, else ReLU blocks it); the junk columns stay 0, so
dw[f, c, i, j] is one long dot product of that map with the same shifted plane. Ties follow the
reference: the first maximum of a window in row-major order wins (strict `>`).

The common 2x2, stride-2 pool takes the parity-split kernels of split.py instead; these serve every
other pool.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from minicnn.nn.fast._jit import reduction_kernel, serial


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


@reduction_kernel
def plane_forward(x, w, b, pad, pool_k, pool_s, tap_count, taps, out, arg, n_parts):
    """x: (N, C, H, W), w: (F, C, KH, KW), b: (F,); tap_count, taps: of a SkipPlan of w != 0 -> out
    (N, F, PH, PW) = maxpool(relu(conv)) and arg (N, F, PH, PW) = each window's argmax i*K + j."""
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
def plane_backward(x, dout, out, arg, w, pad, pool_k, pool_s, grad_count, grad_taps, dw_part, db_part, dx, need_dx):
    """The gradients of plane_forward (dout, out, arg: (N, F, PH, PW)) into each thread's dw_part[t]
    (F, C, KH, KW) and db_part[t] (F,), the taps of a SkipPlan of the wanted weights; with need_dx, dx."""
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

