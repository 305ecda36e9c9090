"""One filter's conv, input gradient and weight gradient on the parity layout (see parity.py), one image.

Each pass has two paths, chosen by the skip plan (skip.py):
- 9 taps: a 3x3 filter's nine weights of a channel in one pass over the quarter planes. A window's four
  conv positions read a 4x4 tile of padded pixels p<R><C> = (2yy + R, 2u + C), so 16 loads feed the 36
  multiply-adds of four outputs (a tap at a time is bound by loads and stores: 1.6x slower).
- tap by tap: any kernel size, one contiguous multiply-add per kept tap and conv quarter.
The 9-tap loops index flat arrays at q plus a constant, as unsigned integers (see unsigned_offsets).
"""

from __future__ import annotations

import numpy as np

from minicnn.nn.fast._jit import serial, serial_reduction
from minicnn.nn.fast._simd import STEP
from minicnn.nn.fast.parity import round_up, tap_run, unsigned_offsets


@serial  # not reassociated: the sums' order is written out below
def conv_quarters(planes, w, b, f, nine_taps, tap_count, taps, live, wh, conv):
    """conv[r, e, q] = b[f] + the conv of filter f at output (2yy + r, 2u + e), q = yy*WH + u, from the
    quarter planes of one image. planes: (2, 2, C, plane_len), w: (F, C, KH, KW), conv: (2, 2, span);
    nine_taps, tap_count, taps, live: a SkipPlan of w != 0."""
    kh, kw = w.shape[2], w.shape[3]
    span = conv.shape[2]
    c00, c01, c10, c11 = conv[0, 0], conv[0, 1], conv[1, 0], conv[1, 1]
    c_in = planes.shape[2]
    if nine_taps or tap_count[f] == 0:
        for q in range(span):
            c00[q] = c01[q] = c10[q] = c11[q] = b[f]
    if nine_taps:
        # the four quarter planes of a channel read at q, q + 1, q + WH and q + WH + 1, the four conv
        # quarters written at q + k*span
        one, row, row1, n = unsigned_offsets(wh, span)
        s1, s2, s3 = n, n + n, n + n + n
        flat = conv.reshape(conv.size)
        for c in range(c_in):
            if not live[f, c]:  # all 9 weights of this channel are 0
                continue
            a0, a1, b0, b1 = planes[0, 0, c], planes[0, 1, c], planes[1, 0, c], planes[1, 1, c]
            w00, w01, w02 = w[f, c, 0, 0], w[f, c, 0, 1], w[f, c, 0, 2]
            w10, w11, w12 = w[f, c, 1, 0], w[f, c, 1, 1], w[f, c, 1, 2]
            w20, w21, w22 = w[f, c, 2, 0], w[f, c, 2, 1], w[f, c, 2, 2]
            # each output as three row sums added at the end: three dependent multiply-adds deep, not
            # nine (1.04-1.06x); reassociation would turn them back into one chain
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
    else:
        for q_ in range(tap_count[f]):
            k = taps[f, q_]
            c, i, j = k // (kh * kw), (k // kw) % kh, k % kw
            wv = w[f, c, i, j]
            for r in range(2):
                for e in range(2):
                    src, dst = tap_run(planes, c, i, j, r, e, wh), conv[r, e]
                    if q_ == 0:  # the first tap writes the bias too (one pass over the map fewer)
                        for q in range(span):
                            dst[q] = b[f] + wv * src[q]
                    else:
                        for q in range(span):
                            dst[q] += wv * src[q]


@serial_reduction  # the flags of the kernel it was written in (split.backward_split): the same bits
def input_grad_quarters(dconv, lead, w, f, nine_taps, wh, dplanes):
    """dplanes (2, 2, C, plane_len) += the input gradient of filter f (w: (F, C, KH, KW)), the transposed
    conv of its split conv-map gradient dconv[r, e, lead : lead + span] (zeros on both sides, lead = WH + 1).
    Channels whose weights are all 0 cost nothing."""
    c_in = dplanes.shape[2]
    kh, kw = w.shape[2], w.shape[3]
    span = dconv.shape[2] - 2 * lead
    if nine_taps:
        # gathered rather than scattered: quarter plane (R, C) at p receives tap (i, j) of conv quarter
        # (r, e) with r + i in {R, R + 2} and e + j in {C, C + 2}, read at p + lead - 0, - 1, - WH, - WH - 1
        one, row, row1, n = unsigned_offsets(wh, span + lead)
        d00, d01, d10, d11 = dconv[0, 0], dconv[0, 1], dconv[1, 0], dconv[1, 1]
        for c in range(c_in):
            w00, w01, w02 = w[f, c, 0, 0], w[f, c, 0, 1], w[f, c, 0, 2]
            w10, w11, w12 = w[f, c, 1, 0], w[f, c, 1, 1], w[f, c, 1, 2]
            w20, w21, w22 = w[f, c, 2, 0], w[f, c, 2, 1], w[f, c, 2, 2]
            if (w00 == 0.0 and w01 == 0.0 and w02 == 0.0 and w10 == 0.0 and w11 == 0.0
                    and w12 == 0.0 and w20 == 0.0 and w21 == 0.0 and w22 == 0.0):
                continue
            x00, x01, x10, x11 = dplanes[0, 0, c], dplanes[0, 1, c], dplanes[1, 0, c], dplanes[1, 1, c]
            for p in range(n):
                a000, a001, a00w, a00x = d00[p + row1], d00[p + row], d00[p + one], d00[p]
                a010, a011, a01w, a01x = d01[p + row1], d01[p + row], d01[p + one], d01[p]
                a100, a101, a10w, a10x = d10[p + row1], d10[p + row], d10[p + one], d10[p]
                a110, a111, a11w, a11x = d11[p + row1], d11[p + row], d11[p + one], d11[p]
                x00[p] += (w00 * a000 + w02 * a001 + w01 * a011 + w20 * a00w + w10 * a10w
                           + w22 * a00x + w21 * a01x + w12 * a10x + w11 * a11x)
                x01[p] += (w01 * a000 + w00 * a010 + w02 * a011 + w21 * a00w + w20 * a01w
                           + w11 * a10w + w10 * a11w + w22 * a01x + w12 * a11x)
                x10[p] += (w10 * a000 + w00 * a100 + w12 * a001 + w11 * a011 + w02 * a101
                           + w01 * a111 + w20 * a10w + w22 * a10x + w21 * a11x)
                x11[p] += (w11 * a000 + w10 * a010 + w01 * a100 + w00 * a110 + w12 * a011
                           + w02 * a111 + w21 * a10w + w20 * a11w + w22 * a11x)
    else:  # a tap at a time: dx += w * (dconv shifted by the tap)
        for c in range(c_in):
            for i in range(kh):
                for j in range(kw):
                    wv = w[f, c, i, j]
                    if wv != 0.0:
                        for r in range(2):
                            for e in range(2):
                                dst, d = tap_run(dplanes, c, i, j, r, e, wh), dconv[r, e, lead:]
                                for q in range(span):
                                    dst[q] += wv * d[q]


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
def weight_grad_quarters(planes, dconv, lead, f, nine_taps, grad_count, grad_taps, live, wh, dw_f, whole_steps):
    """dw_f (C, KH, KW) += the weight gradient of filter f from one image: its quarter planes and the
    gradient of its split conv map, dconv[r, e, lead : lead + span]; grad_count, grad_taps, live: a
    SkipPlan of the weights whose gradient is wanted.

    whole_steps: the 9-tap pass runs on over the positions up to round_up(span, STEP), whose gradient is
    0 (dconv's margin), so that LLVM's vector loop takes them all: on small maps (Conv-4's 16x16, span
    72) its scalar remainder loop took as long as the vector loop. For the caller to allow: a margin
    (lead) of at least round_up(span, STEP) - span, planes' rows reaching WH + 1 past that, and every
    pixel finite (0 * inf would be NaN)."""
    kh, kw = dw_f.shape[1], dw_f.shape[2]
    span = dconv.shape[2] - 2 * lead
    c_in = planes.shape[2]
    d00, d01, d10, d11 = dconv[0, 0, lead:], dconv[0, 1, lead:], dconv[1, 0, lead:], dconv[1, 1, lead:]
    if nine_taps:
        one, row, row1, n = unsigned_offsets(wh, round_up(span, STEP) if whole_steps else span)
        for c in range(c_in):
            if not live[f, c]:  # no weight of this channel wants a gradient
                continue
            a0, a1, b0, b1 = planes[0, 0, c], planes[0, 1, c], planes[1, 0, c], planes[1, 1, c]
            g = _NINE_ZEROS
            for q in range(n):
                # the window's four cells' gradients e<r><e> times the tile; tap (i, j) takes cell (r, e)'s
                # pixel (r + i, e + j)
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
                    src, d = tap_run(planes, c, i, j, r, e, wh), dconv[r, e, lead:]
                    for q in range(span):
                        acc += d[q] * src[q]
            dw_f[c, i, j] += acc


@serial_reduction  # the 9 sums over q may be reordered (vector lanes)
def weight_grad_codes(planes, code, grad, f, live, wh, dw_f):
    """pool2.unpool2_codes and the 9-tap weight_grad_quarters in one, for a 3x3 filter f whose input
    needs no gradient: dw_f (C, 3, 3) += the weight gradient, the conv-map gradient taken straight from
    the pooling codes (span,) and grad (span,), the pooled map's gradient in split rows (junk columns 0).

    Only a window's argmax cell (r, e) has a gradient, so tap (i, j) multiplies it by one pixel of the
    4x4 tile, (r + i, e + j), picked with selects: 9 multiply-adds per window instead of 36 (1.4x), and
    the map's gradient is never stored (its backward 1.09x).

    grad must be 0 in the windows of code 4 (pool2.zero_blocked_and_sum sets it so), and grad and the
    image finite (all_finite): else 0 * inf would be NaN where the reference has NaN and this has 0; the
    callers then take unpool2_codes + weight_grad_quarters.

    It runs over all of grad and code: a caller may pass them longer than the map, grad 0 there, so
    that the vector loop takes every window (see weight_grad_quarters' whole_steps); planes' rows must
    then reach WH + 1 past them."""
    one, row, row1, n = unsigned_offsets(wh, grad.size)
    for c in range(planes.shape[2]):
        if not live[f, c]:  # no weight of this channel wants a gradient
            continue
        a0, a1, b0, b1 = planes[0, 0, c], planes[0, 1, c], planes[1, 0, c], planes[1, 1, c]
        g0 = g1 = g2 = g3 = g4 = g5 = g6 = g7 = g8 = np.float32(0.0)
        for q in range(n):
            k, g = code[q], grad[q]  # g is 0 where k is 4 (no gradient: ReLU blocked it)
            down, right = (k & 2) != 0, (k & 1) != 0  # the argmax cell's row and column in the window
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
def all_finite(x, n):
    """Whether image n of x (N, C, H, W, C-contiguous) holds no inf or NaN: the sum of pixel * 0 is 0,
    or NaN if one is inf or NaN (one flat loop: 4x faster than row by row)."""
    image = x[n].reshape(x[n].size)
    total = np.float32(0.0)
    for i in range(image.size):
        total += image[i] * np.float32(0.0)
    return total == 0.0
