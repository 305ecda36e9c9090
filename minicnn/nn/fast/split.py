"""conv -> ReLU -> 2x2 max-pool (or conv -> ReLU) layer by layer, one image at a time on the parity layout.

Each thread takes a slice of the batch and, per image and filter, computes the conv map into a small
private buffer (in L1), pools it (or applies ReLU) while it is hot, and writes only the result and the
pooling codes: the (N, F, OH, OW) conv output never goes through memory. Backward reads the codes.
They take every filter bank, even Conv-2's 64x64x3x3 (1.9x faster than im2col + BLAS and separate ops).
"""

from __future__ import annotations

import numpy as np
from numba import prange

from minicnn.nn.fast._jit import reduction_kernel, serial, stage
from minicnn.nn.fast._simd import STEP
from minicnn.nn.fast._simd_conv import BLOCK, conv_block, input_grad_block
from minicnn.nn.fast.conv_passes import (all_finite, conv_quarters, input_grad_quarters, weight_grad_codes,
                                         weight_grad_quarters)
from minicnn.nn.fast.parity import (aligned_zeros, fill_quarters, line_entries, round_up, split_rows, split_sizes,
                                    unfill_quarters)
from minicnn.nn.fast.skip import NINE_TAP_MIN_DENSITY
from minicnn.nn.fast.pool2 import pool2, pool2_values, relu_split, relu_unsplit, unpool2_codes, zero_blocked_and_sum
from minicnn.nn.fast.winograd import (CHUNK, conv_winograd, dw_from_products, filter_transform, finite_filters,
                                      input_grad_winograd, tiles_plane_len, weight_grad_fits, weight_grad_winograd,
                                      winograd_fits)


@reduction_kernel
def forward_split(x, w, b, pad, pool, keep_codes, nine_taps, tap_count, taps, live, out, code, n_parts):
    """x: (N, C, H, W), w: (F, C, KH, KW), b: (F,); nine_taps, tap_count, taps, live: a SkipPlan of w != 0.
    pool: out (N, F, PH, PW) = 2x2 max-pool of relu(conv), and with keep_codes code (N, F, span) its
    pooling codes (inference skips them); else out (N, F, OH, OW) = relu(conv). code is unused unless
    pool and keep_codes."""
    n_img, c_in, h, width = x.shape
    n_filt, _, kh, kw = w.shape
    wh, span, plane_len = split_sizes(h, width, pad, kh, kw, out.shape[2], pool)
    # many channels: the conv as Winograd products (winograd.py; Conv-2's 64x64 layer: 1.4x the 9-tap
    # blocks below), which read the planes a chunk past the map
    # (at any density the 9-tap passes would take: the products cost the same at every density, and a
    # pruned bank with a dead (filter, channel) pair leaves the blocked passes for the filter-by-filter ones)
    winograd = nine_taps and winograd_fits(n_filt, c_in, kh, kw) and finite_filters(w)
    if winograd:
        plane_len = tiles_plane_len(plane_len, span, wh)
    u = filter_transform(w, False) if winograd else np.empty((16, 0, 0), dtype=x.dtype)
    plane_row = round_up(plane_len, line_entries(x))  # each channel's planes start on a cache line
    per_part = (n_img + n_parts - 1) // n_parts
    # the 9-tap pass over BLOCK filters at once (their sums in registers, see _simd_conv.py): 1.6-1.7x the
    # filter-by-filter pass on Conv-2's 64x64 layer; the filters past the last whole block one by one
    first_single = blocked_filters(w)
    for t in prange(n_parts):
        planes = aligned_zeros((2, 2, c_in, plane_row), x)
        conv = aligned_zeros((n_filt if winograd else BLOCK, 2, 2, span), x)
        tiles = aligned_zeros((16, c_in if winograd else 0, CHUNK), x)
        products = aligned_zeros((16, n_filt if winograd else 0, CHUNK), x)
        pooled = np.empty(span, dtype=x.dtype)
        for n in range(t * per_part, min(n_img, (t + 1) * per_part)):
            fill_quarters(x, n, pad, wh, planes, 0)
            if winograd and all_finite(x, n):  # (an inf pixel: see finite_filters)
                conv_winograd(planes, wh, span, u, b, tiles, products, conv)
                for f in range(n_filt):
                    pool_or_relu(conv[f], wh, pooled, pool, keep_codes, code, out, n, f)
                continue
            for f0 in range(0, first_single, BLOCK):
                conv_filter_block(planes, w, b, f0, wh, conv)
                for k in range(BLOCK):
                    pool_or_relu(conv[k], wh, pooled, pool, keep_codes, code, out, n, f0 + k)
            for f in range(first_single, n_filt):
                conv_quarters(planes, w, b, f, nine_taps, tap_count, taps, live, wh, conv[0])
                pool_or_relu(conv[0], wh, pooled, pool, keep_codes, code, out, n, f)


@serial
def blocked_passes(w):
    """Whether the 9-tap passes over blocks of filters or channels (_simd_conv.py), which compute every
    weight, run for w (F, C, KH, KW): 3x3 filters with a nonzero weight in every (filter, channel) pair
    and at least skip.NINE_TAP_MIN_DENSITY of their weights nonzero. Sparser banks skip the pruned
    channels or taps filter by filter."""
    n_filt, c_in, kh, kw = w.shape
    if kh != 3 or kw != 3:
        return False
    nonzero = 0
    for f in range(n_filt):
        for c in range(c_in):
            live = 0
            for i in range(3):
                for j in range(3):
                    live += w[f, c, i, j] != 0.0
            if live == 0:
                return False
            nonzero += live
    return nonzero >= NINE_TAP_MIN_DENSITY * w.size


@serial
def blocked_filters(w):
    """How many of w's (F, C, KH, KW) filters the conv takes BLOCK at a time (conv_filter_block): the whole
    blocks where blocked_passes(w), else none; the filters past them go one by one."""
    return w.shape[0] // BLOCK * BLOCK if blocked_passes(w) else 0


@stage
def conv_filter_block(planes, w, b, f0, wh, conv):
    """conv (BLOCK, 2, 2, span)[k] = conv_quarters' map of filter f0 + k (3x3 w (F, C, 3, 3), every channel)."""
    conv_block(planes.reshape(planes.size), planes.shape[3], planes.shape[2], w.reshape(w.size), b, f0, BLOCK,
               conv.reshape(conv.size), conv.shape[3], wh)


@stage
def pool_or_relu(conv, wh, pooled, pool, keep_codes, code, out, n, f):
    """out[n, f] from filter f's split conv map conv (2, 2, span): pooled (with its codes when
    keep_codes), or through ReLU."""
    if pool and keep_codes:
        pool2(conv, wh, pooled, code[n, f], out, n, f)
    elif pool:  # inference: no codes wanted
        pool2_values(conv, wh, pooled, out, n, f)
    else:
        relu_unsplit(conv, wh, out, n, f)


@reduction_kernel
def backward_split(x, dout, out, code, w, pad, pool, nine_taps, grad_count, grad_taps, live, dw_part, db_part,
                   dx, need_dx):
    """The gradients of forward_split: dout and out (its output) are (N, F, PH, PW) with pool, else
    (N, F, OH, OW); nine_taps, grad_count, grad_taps, live: a SkipPlan of the weights whose gradient is
    wanted. Adds into each thread's dw_part[t] (F, C, KH, KW) and db_part[t] (F,); with need_dx writes
    dx (N, C, H, W)."""
    n_img, c_in, h, width = x.shape
    n_parts, n_filt = db_part.shape
    kh, kw = w.shape[2], w.shape[3]
    wh, span, plane_len = split_sizes(h, width, pad, kh, kw, dout.shape[2], pool)
    # the weight-gradient passes run whole vector steps, to whole_span (see weight_grad_quarters' whole_steps:
    # Conv-4's training 1.16-1.21x), over zeros past the map in grad and dconv and inside the planes' rows
    whole_span = round_up(span, STEP)
    lead = wh + 1  # zeros on both sides of the map's gradient: the input gradient reads it shifted back
    extra_steps = span < whole_span <= span + lead  # positions to add, within the map's zero margin
    # many channels and filters: the weight gradient as Winograd products (winograd.py), from all the
    # image's filters' map gradients side by side; its sums turned into dw_part once per thread
    winograd_dw = nine_taps and weight_grad_fits(n_filt, c_in, kh, kw)
    if winograd_dw:
        plane_len = tiles_plane_len(plane_len, span, wh)
    plane_row = round_up(max(plane_len, whole_span + wh + 1), line_entries(x))  # rows start on cache lines
    per_part = (n_img + n_parts - 1) // n_parts
    # the input gradient of BLOCK channels at once over every filter (_simd_conv.input_grad_block, 1.45-1.7x
    # the filter-by-filter pass on Conv-2's 64x64 layer), from all the filters' conv-map gradients of the
    # image side by side; else filter by filter from the one map in hand
    blocked_dx = need_dx and c_in % BLOCK == 0 and blocked_passes(w)
    # many filters: as Winograd products (winograd.py), which read the maps a chunk past the last
    winograd_dx = need_dx and nine_taps and winograd_fits(c_in, n_filt, kh, kw) and finite_filters(w)
    u = filter_transform(w, True) if winograd_dx else np.empty((16, 0, 0), dtype=x.dtype)
    zeros = np.zeros(c_in, dtype=x.dtype)
    all_maps = blocked_dx or winograd_dw or winograd_dx
    row = lead + span + lead
    for t in prange(n_parts):
        planes = aligned_zeros((2, 2, c_in, plane_row), x)
        dplanes = aligned_zeros((2, 2, c_in, plane_row), x)
        # past the last filter's maps: STEP (the block reads past), or CHUNK + lead (the Winograd tiles)
        maps = aligned_zeros(((n_filt if all_maps else 1) * 4 * row + (CHUNK + lead if winograd_dx else STEP),), x)
        tiles = aligned_zeros((16, n_filt if winograd_dx else 0, CHUNK), x)
        products = aligned_zeros((16, c_in if winograd_dx else 0, CHUNK), x)
        # the Winograd weight gradient's: the maps filters-last, the planes' tiles, the maps' tiles, the sums
        dyt = aligned_zeros((4, round_up(span, CHUNK) if winograd_dw else 0, n_filt), x)
        image_tiles = aligned_zeros((16, c_in if winograd_dw else 0, CHUNK), x)
        grad_tiles = aligned_zeros((16, CHUNK if winograd_dw else 0, n_filt), x)
        du = np.zeros((16, c_in if winograd_dw else 0, n_filt), dtype=x.dtype)
        whole_grad = np.zeros(whole_span, dtype=x.dtype)  # the pooled map's gradient in split rows, 0 past it
        grad = whole_grad[:span]
        codes = np.full(whole_span, 4, dtype=np.int8)  # its pooling codes, 4 (no gradient) past it
        for n in range(t * per_part, min(n_img, (t + 1) * per_part)):
            fill_quarters(x, n, pad, wh, planes, 0)
            # no inf or NaN pixel: for weight_grad_codes, and for the extra steps past the map
            image_finite = nine_taps and (pool or extra_steps) and all_finite(x, n)
            # the Winograd passes for finite pixels and gradients (see finite_filters); else this image's
            # by the passes below
            grads_finite = all_finite(dout, n)
            winograd_image = winograd_dw and grads_finite and all_finite(x, n)
            winograd_dx_image = winograd_dx and grads_finite
            filter_dx = need_dx and not blocked_dx and not winograd_dx_image  # filter by filter
            if filter_dx:
                dplanes[:, :, :, :] = 0.0
            for f in range(n_filt):
                at = f * 4 * row if all_maps else 0
                dconv = maps[at : at + 4 * row].reshape((2, 2, row))
                # (the Winograd pass takes the image's weight gradient after the loop, from all the maps)
                map_gradient(dout, out, code, planes, pool, nine_taps, grads_finite, image_finite, extra_steps,
                             need_dx, not winograd_image, grad_count, grad_taps, live, wh, span, lead, n, f, grad,
                             whole_grad, codes, dconv, dw_part[t, f], db_part[t])
                if filter_dx:
                    input_grad_quarters(dconv, lead, w, f, nine_taps, wh, dplanes)
            if winograd_image:
                weight_grad_winograd(planes, wh, span, maps, row, lead, dyt, image_tiles, grad_tiles, du)
            if winograd_dx_image:  # the same positions as the blocked pass below
                input_grad_winograd(maps, row, lead, wh, span + lead, u, zeros, tiles, products, dplanes)
            elif blocked_dx:  # every position the filter-by-filter pass writes; the rest of dplanes stays 0
                for c0 in range(0, c_in, BLOCK):
                    input_grad_block(maps, row, n_filt, w.reshape(w.size), c0, BLOCK, dplanes.reshape(dplanes.size),
                                     plane_row, c_in, wh, lead, span + lead)
            if need_dx:
                unfill_quarters(dplanes, n, pad, wh, dx)
        if winograd_dw:
            dw_from_products(du, dw_part[t])


@stage
def map_gradient(dout, out, code, planes, pool, nine_taps, grads_finite, image_finite, extra_steps, need_dx, with_dw,
                 grad_count, grad_taps, live, wh, span, lead, n, f, grad, whole_grad, codes, dconv, dw_f, db):
    """backward_split's passes of filter f of image n but the input gradient: its conv map's gradient
    dconv (2, 2, row) when dx needs it or the weight gradient reads it, its bias gradient into db[f] and,
    with_dw, its weight gradient into dw_f (C, KH, KW): straight from the pooling codes (weight_grad_codes)
    where the pixels and gradients allow, else from dconv. Without with_dw dconv is always made."""
    from_codes = False  # the weight gradient straight from the codes (see weight_grad_codes)
    if pool:
        split_rows(dout, n, f, wh, grad)
        # (a non-finite gradient in a window ReLU blocked: zeroed there, where unpool2_codes makes g * 0
        # of it, as the reference)
        if with_dw and nine_taps and grads_finite:
            total, finite = zero_blocked_and_sum(code[n, f], grad)
            from_codes = finite and image_finite
            if from_codes:
                db[f] += total
                code_f = code[n, f]
                for q in range(span):  # a loop: a slice assignment compiles Numba's shape check
                    codes[q] = code_f[q]
                weight_grad_codes(planes, codes, whole_grad, f, live, wh, dw_f)
        if need_dx or not from_codes:  # the map's gradient: for dx, or for the weight gradient
            map_total = unpool2_codes(code[n, f], grad, dconv, lead)
            if not from_codes:
                db[f] += map_total
    else:
        db[f] += relu_split(dout, out, n, f, wh, dconv, lead)
    if with_dw and not from_codes:
        weight_grad_quarters(planes, dconv, lead, f, nine_taps, grad_count, grad_taps, live, wh, dw_f,
                             image_finite and extra_steps)
