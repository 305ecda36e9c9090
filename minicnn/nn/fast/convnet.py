"""A whole one-conv network and its loss in one pass per image: same contract as minicnn.nn.ref.convnet.

Why: run layer by layer, the paper's model writes the pooled maps and their pooling codes, reads them back
for the linear layer, writes the gradient of the pooled maps, reads it back with the codes, and fills
each image's quarter planes twice. Its linear layer is small (K = 10 outputs), so one thread carries its
images all the way through instead, in groups of GROUP, while their planes, maps and codes stay in its
core's cache: conv -> ReLU -> pool (the parity-split passes of conv_passes.py and pool2.py), logits,
softmax cross-entropy, the linear layer's gradients, the pooled maps' gradients and the conv's weight
gradient read straight from the pooling codes. Nothing of an image is written to memory but its K logits
(training 1.04-1.16x, inference 1.03-1.14x faster than the layer-by-layer kernels).

Layout: the pooled maps stay in the split kernels' rows of WH entries (PW real, the rest junk, set to 0
here), so the linear weight is re-laid out once per call to the same rows, with zeros in the junk
columns (one flat dot product per class, no unsplitting per image), and class-interleaved: fc_steps
(n_steps, K, STEP), each STEP positions' classes side by side, which the dense linear layer's passes
read as one stream (group_linear.py).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import prange

from minicnn.nn.fast._jit import num_threads, reduction_kernel, serial, serial_reduction, stage
from minicnn.nn.fast._simd import STEP
from minicnn.nn.fast._simd_conv import BLOCK
from minicnn.nn.fast.split import blocked_filters, conv_filter_block
from minicnn.nn.fast._simd_taps import tap_offsets, tap_weights, taps_weight_grad, taps_window_codes
from minicnn.nn.fast.conv_passes import conv_quarters, weight_grad_codes, weight_grad_quarters
from minicnn.nn.fast.convnet_parts import part_sums, publish, publish_kept, store_part
from minicnn.nn.fast.group_linear import (dense_grads, dense_logits, gather_pooled, grad_places, kept_values,
                                          lane_sums, scatter_grads, sparse_grads, sparse_linear, sparse_logits)
from minicnn.nn.fast.images import fill_image, image_finite, prefetch_images
from minicnn.nn.fast.parity import aligned_zeros, line_entries, round_up, split_sizes
from minicnn.nn.fast.pool2 import pool2_codes, pool2_max, unpool2_codes, zero_blocked_and_sum
from minicnn.nn.fast.skip import SkipPlan, skip_plan, wanted
from minicnn.nn.pixels import PixelBatch
from minicnn.nn.ref.im2col import conv_output_size


#: Images carried through the kernel together: the group's images share each trip of the linear weight
#: (K x F*span, 87 KB for the paper's model: beyond L1) and its gradient through L2, and the fixed costs
#: of the conv and weight-gradient passes. Written out in the linear layer's loops (p0..p3): not a tunable.
GROUP = 4

#: The op takes a 3x3 conv's 9 taps per pass (skip.py) when at least this fraction of its weights is kept,
#: else each filter's kept taps in one pass (_simd_taps.py). Those passes cost less than the layers'
#: tap-by-tap ones (skip.NINE_TAP_MIN_DENSITY, 18 %): the paper model's training step ties at about 45-55 %
#: kept (benchmarks/bench_pruning.py, table 3's op columns).
NINE_TAP_MIN_DENSITY = 0.45


class Geometry(NamedTuple):
    """The sizes of one group's buffers, in entries (see parity.py for WH and span)."""

    pad: int
    wh: int  # a quarter-plane row
    span: int  # one image's split conv map per quarter: PH rows of WH
    ph: int  # pooled rows
    pw: int  # pooled columns (of WH: the rest are junk)
    pitch: int  # from one image to the next in the group's planes, maps, codes and map gradients
    lead: int  # the zero margin on both sides of the conv-map gradient
    group_len: int  # the group's maps, codes and map gradients: GROUP*pitch in whole cache lines
    plane_row: int  # a channel's quarter plane: group_len + plane_len + STEP (the taps read past the last image)


class Outputs(NamedTuple):
    """What the op returns besides the loss: logits (N, K), dw, db, dfc_w (K, F*PH*PW), dfc_b (K,)."""

    logits: np.ndarray
    dw: np.ndarray
    db: np.ndarray
    dfc_w: np.ndarray
    dfc_b: np.ndarray


@reduction_kernel
def _convnet_pass(pixels, rows, table, table_finite, offsets, w, b, pad, plan, grad_plan, fc_w, fc_b, fc_sparse, labels,
                  train, n_parts, out):
    """pixels, rows, table: the batch (N images), as images.py reads it (floats (N, C, H, W) by rows
    0 .. N-1, or uint8 (M, C, H, W) by rows (N,) through table (C, 256), table_finite: all of it finite,
    offsets: computed instead where (C,), see images.py),
    w: (F, C, KH, KW), b: (F,), fc_w: (K, F*PH*PW), fc_b: (K,), labels: (N,) (read only with ``train``);
    plan, grad_plan: SkipPlans of w != 0 and of the wanted weights; fc_sparse: a
    SparseLinear (the kept linear weights by class, in split rows) or one of no entries (dense). Writes the
    logits of every image into out.logits; with ``train`` also the gradients into out's others, and
    returns the batch's mean loss. The batch is cut into n_parts slices, one per thread, each taken in
    groups of GROUP images.

    A group's quarter planes, conv maps, pooling codes and pooled-map gradients hold its images side by
    side, image g at g*pitch (0 between them, or code 4: no gradient), so that one conv pass and one
    weight-gradient pass per filter and channel cover the group; the pooled maps and their gradients are
    kept per image, flat (F*span, junk columns 0), for the linear layer."""
    _, c_in, h, width = pixels.shape
    n_img = rows.size
    n_filt, _, kh, kw = w.shape
    n_class = fc_b.shape[0]
    ph, pw = (h + 2 * pad - kh + 1) // 2, (width + 2 * pad - kw + 1) // 2
    wh, span, plane_len = split_sizes(h, width, pad, kh, kw, ph, True)
    line = line_entries(w)  # entries per cache line (w: of the floats' dtype)
    lead = round_up(wh + 1, line)
    flat_len = n_filt * span
    # dense: the weight in split rows, class-interleaved; sparse: its kept weights by class (none of those)
    fc_steps = _to_class_steps(fc_w, n_filt, ph, pw, wh, 0 if fc_sparse.sparse else n_class)
    values = kept_values(fc_w, fc_sparse.indptr, fc_sparse.columns)
    fc_rows = (1, fc_sparse.indices.size) if fc_sparse.sparse else (n_class, flat_len)  # sparse: the kept weights'
    loss_part, dw_part, db_part, dfc_part, dfcb_part = part_sums(n_parts, w, n_class, fc_rows, train)
    # dense training: the threads' weight-gradient sums class-interleaved too (group_linear.dense_grads)
    sum_rows = fc_rows if fc_sparse.sparse else (fc_steps.shape[0], fc_steps.shape[1] * STEP)
    # an image's conv reads its planes up to KH // 2 rows and KW // 2 columns past its map, and the padded
    # image fills ceil((H + 2*pad) / 2) rows of WH
    pitch = max(span + (kh // 2) * wh + kw // 2, ((h + 2 * pad + 1) // 2) * wh)
    # whole cache lines, so that each pass over a group starts on one (+ plane_len: the taps read past
    # the last image)
    group_len = round_up(GROUP * pitch, line)
    plane_row = round_up(group_len + plane_len + STEP, line)  # STEP: what conv_block's last step reads past
    inv_n = 1.0 / max(n_img, 1)  # the loss is the batch mean
    per_part = (n_img + n_parts - 1) // n_parts
    # Arrays that the loop writes enter it and its stages one by one, not in tuples: Numba 0.68's parfor
    # pass fails to compile some tuples of arrays and loses the writes into others' (the plans, only read,
    # are packed again inside).
    nine_taps, tap_count, taps, live = plan
    grad_nine_taps, grad_count, grad_taps, grad_live = grad_plan
    sparse, indptr, indices, columns, places, slots = fc_sparse
    logits = out.logits
    # see _forward_group; below NINE_TAP_MIN_DENSITY every filter takes the tap passes, blocked or not
    first_single = blocked_filters(w) if nine_taps else 0
    # the sparse passes' taps (_simd_taps.py): where each reads the planes, and the forward's weights
    tap_at = tap_offsets(tap_count, taps, c_in, kh, kw, plane_row, wh)
    tap_w = tap_weights(w, tap_count, taps)
    grad_tap_at = tap_offsets(grad_count, grad_taps, c_in, kh, kw, plane_row, wh)
    for t in prange(n_parts):
        geo = Geometry(pad, wh, span, ph, pw, pitch, lead, group_len, plane_row)
        conv_plan = SkipPlan(nine_taps, tap_count, taps, live)  # read only
        wanted_plan = SkipPlan(grad_nine_taps, grad_count, grad_taps, grad_live)
        # the group's buffers, on cache lines where a vector pass starts (see parity.aligned_zeros)
        planes = aligned_zeros((2, 2, c_in, plane_row), w)  # quarter planes
        planes_flat = planes.reshape(planes.size)
        conv = aligned_zeros((BLOCK, 2, 2, group_len), w)  # BLOCK filters' conv maps
        pooled = aligned_zeros((GROUP, flat_len), w)  # pooled maps, flat
        dpooled = np.empty((GROUP, flat_len), dtype=w.dtype)  # their gradients
        code = np.full((n_filt, group_len), 4, dtype=np.int8)  # pooling codes
        grad = aligned_zeros((n_filt, group_len), w)  # the pooled maps' gradients, side by side
        dconv = aligned_zeros((2, 2, lead + group_len + lead), w)  # one filter's conv-map gradient
        z = np.empty((GROUP, n_class), dtype=np.float64)  # logits
        dz = np.zeros((GROUP, n_class), dtype=w.dtype)  # their gradients
        # this thread's sums, published once at the end: the threads' slices of the shared parts meet
        # in a cache line, which would bounce between the cores if both wrote it per image
        loss_sum = 0.0
        dw_sum = np.zeros(w.shape, dtype=w.dtype) if train else np.zeros((0, 0, 0, 0), dtype=w.dtype)
        db_sum = np.zeros(n_filt, dtype=w.dtype)
        dfc_sum = aligned_zeros((sum_rows[0] if train else 0, sum_rows[1]), w)
        dfcb_sum = np.zeros(n_class, dtype=w.dtype)
        # sparse: the group's pooled values at the kept places, four images side by side, their gradients,
        # where those go in grad, and the kept weights' gradients by image lane
        pooled_t = np.empty(GROUP * places.size, dtype=w.dtype)
        grad_t = np.empty(GROUP * places.size, dtype=w.dtype)
        grad_at = grad_places(places, span, group_len)
        dvalues_t = np.zeros(GROUP * indices.size if train else 0, dtype=w.dtype)
        z_t, dz_t = np.empty(GROUP * n_class, dtype=w.dtype), np.empty(GROUP * n_class, dtype=w.dtype)
        grad_flat = grad.reshape(grad.size)
        tap_sums = np.zeros(2 + grad_tap_at.shape[1] // 4, dtype=w.dtype)  # see _simd_taps.taps_weight_grad
        stop = min(n_img, (t + 1) * per_part)
        for first in range(t * per_part, stop, GROUP):
            size = min(GROUP, stop - first)
            finite = _load_group(pixels, rows, table, table_finite, offsets, first, size, train, geo, planes, pooled,
                                 code, grad)
            prefetch_images(pixels, rows, first + GROUP, min(stop, first + 2 * GROUP), line_entries(pixels))
            _forward_group(w, b, conv_plan, first_single, tap_at, tap_w, size, train, geo, planes, planes_flat,
                           conv, pooled, code)
            if sparse:
                gather_pooled(pooled, places, pooled_t)
                sparse_logits(values, indptr, slots, fc_b, pooled_t, z_t, z, logits, first, size)
            else:
                dense_logits(fc_steps, fc_b, pooled, z_t, z, logits, first, size)
            if train:
                loss_sum = _softmax_loss(z, labels, first, size, inv_n, dz, loss_sum)
                if sparse:
                    sparse_grads(dz, pooled_t, values, indptr, slots, dz_t, dvalues_t, dfcb_sum, grad_t)
                    scatter_grads(grad_t, grad_at, pitch, grad_flat)
                else:
                    dense_grads(dz, pooled, fc_steps, dfc_sum, dfcb_sum, dpooled)
                _backward_group(wanted_plan, grad_tap_at, size, not sparse, finite, geo, planes, planes_flat, dpooled,
                                code, grad, dconv, tap_sums, dw_sum, db_sum)
        if train:
            if sparse:  # (dfc_sum: the kept weights' gradient sums)
                lane_sums(dvalues_t, dfc_sum[0])
            loss_part[t] = loss_sum
            store_part(dw_part, db_part, dfc_part, dfcb_part, t, dw_sum, db_sum, dfc_sum, dfcb_sum, sparse)
    if not train:
        return 0.0
    loss = publish(loss_part, dw_part, db_part, dfc_part, dfcb_part, ph, pw, wh, sparse, out)
    if sparse:
        publish_kept(dfc_part, indptr, columns, out.dfc_w)
    return loss / max(n_img, 1)


# The stages of the kernel's loop over one group of GROUP images, inlined into it (see _jit.stage); they
# take the arrays they write one by one (see the note in _convnet_pass).


@stage
def _load_group(pixels, rows, table, table_finite, offsets, first, size, train, geo, planes, pooled, code, grad):
    """The quarter planes of the batch's images first .. first + size - 1 (see images.py), side by side;
    a short group's unused places hold no image and no gradient. Returns whether (with train) no pixel
    is inf or NaN (see conv_passes.weight_grad_codes)."""
    finite = True
    for g in range(size):
        fill_image(pixels, rows[first + g], table, offsets, geo.pad, geo.wh, planes, g * geo.pitch)
        if train:
            finite = finite and image_finite(pixels, rows[first + g], table_finite)
    if size < GROUP:
        planes[:, :, :, size * geo.pitch :] = 0.0
        pooled[size:] = 0.0
        code[:, size * geo.pitch :] = 4
        grad[:, size * geo.pitch :] = 0.0
    return finite


@stage
def _forward_group(w, b, plan, first_single, offsets, weights, size, train, geo, planes, planes_flat, conv, pooled,
                   code):
    """conv -> ReLU -> pool over the group, into pooled (junk columns 0) and, with train, the pooling
    codes: filters below first_single BLOCK at a time (_simd_conv.conv_block: their sums in registers over
    the channels, 1.18-1.2x the paper model's inference), the others one by one; tap by tap, each in one
    pass per image (_taps_pool_group). conv: (BLOCK, 2, 2, group_len); offsets, weights: the taps' (see
    _simd_taps.py)."""
    for f0 in range(0, first_single, BLOCK):
        conv_filter_block(planes, w, b, f0, geo.wh, conv)
        for k in range(BLOCK):
            _pool_group(conv[k], f0 + k, size, train, geo, pooled, code)
    for f in range(first_single, w.shape[0]):
        if plan.tap_count[f] == 0:  # all its weights pruned: the map is its bias, pooled without a pass
            _constant_filter(b[f], f, size, train, geo, pooled, code)
            continue
        if not plan.nine_taps and _taps_pool_group(planes_flat, offsets[f], weights[f], plan.tap_count[f], b, f, size,
                                                   geo, pooled, code):
            continue
        conv_quarters(planes, w, b, f, plan.nine_taps, plan.tap_count, plan.taps, plan.live, geo.wh, conv[0])
        _pool_group(conv[0], f, size, train, geo, pooled, code)


@stage
def _taps_pool_group(planes_flat, offsets, weights, count, b, f, size, geo, pooled, code):
    """Filter f's conv -> ReLU -> pool over the group from its count taps (offsets, weights: its rows of the
    tap tables), image by image in one pass each (_simd_taps.taps_window_codes), into pooled (junk columns
    0) and code (written with or without train: the buffer is there). False where a window held a NaN:
    then the caller takes the conv map's path, which repairs those windows as pool2_codes does."""
    span, pitch = geo.span, geo.pitch
    for g in range(size):
        out = pooled[g, f * span : (f + 1) * span]
        if taps_window_codes(planes_flat, offsets, weights, count, b, f, g * pitch, out,
                             code[f, g * pitch : g * pitch + span]):
            return False
        _zero_junk(out, geo)
    return True


@stage
def _pool_group(conv, f, size, train, geo, pooled, code):
    """Filter f's conv maps of the group, conv (2, 2, group_len), pooled image by image into pooled (junk
    columns 0) and, with train, code."""
    span, pitch = geo.span, geo.pitch
    for g in range(size):
        out = pooled[g, f * span : (f + 1) * span]
        if train:
            pool2_codes(conv, g * pitch, out, code[f, g * pitch : g * pitch + span])
        else:
            pool2_max(conv, g * pitch, out)
        _zero_junk(out, geo)


@stage
def _zero_junk(out, geo):
    """One image's pooled map of a filter, out (PH rows of WH): its junk columns set to 0 (one, mostly:
    one loop down each)."""
    for col in range(geo.pw, geo.wh):
        for py in range(geo.ph):
            out[py * geo.wh + col] = 0.0


@stage
def _constant_filter(bias, f, size, train, geo, pooled, code):
    """What pool2_codes gives a conv map equal to bias everywhere: pooled relu(bias) in the real columns
    (NaN stays NaN), 0 in the junk ones, and code 0 (the first of four equal cells) or 4 (ReLU blocks it)."""
    value = bias if bias > 0.0 else (bias if bias != bias else np.float32(0.0))
    blocked = not bias > 0.0
    for g in range(size):
        out = pooled[g, f * geo.span : (f + 1) * geo.span]
        for py in range(geo.ph):
            for col in range(geo.wh):
                out[py * geo.wh + col] = value if col < geo.pw else 0.0
        if train:
            codes = code[f, g * geo.pitch : g * geo.pitch + geo.span]
            for q in range(geo.span):
                codes[q] = 4 if blocked else 0


@serial_reduction  # a call: inlined, the loss's last bit differed between a compiled and a cached kernel
def _softmax_loss(z, labels, first, size, inv_n, dz, loss_sum):
    """loss_sum + the group's softmax cross-entropy, logsumexp(z) - z[label], and dz = (softmax(z) -
    onehot(label)) / N; the unused images of a short group keep dz = 0."""
    n_class = z.shape[1]
    for g in range(size):
        zg = z[g]
        top = zg.max()  # NaN-propagating, as the reference: a diverged step shows NaN everywhere
        total = 0.0
        for k in range(n_class):
            total += math.exp(zg[k] - top)
        log_total = math.log(total)
        label = labels[first + g]
        loss_sum += log_total + top - zg[label]
        for k in range(n_class):
            dz[g, k] = (math.exp(zg[k] - top - log_total) - (1.0 if k == label else 0.0)) * inv_n
    if size < GROUP:
        dz[size:] = 0.0
    return loss_sum


@stage
def _backward_group(plan, offsets, size, copy, finite, geo, planes, planes_flat, dpooled, code, grad, dconv, tap_sums,
                    dw, db):
    """dw (F, C, KH, KW), db (F,) += the conv's gradients from the group's pooled-map gradients, filter by
    filter over the group: through the pool and ReLU by the codes, straight into the weight gradient (9
    taps at once, conv_passes.weight_grad_codes, or tap by tap, _simd_taps.taps_weight_grad: one pass for
    up to four taps, the bias's sum and the finite check), unless a pixel or a gradient is inf or NaN
    (then through the stored map gradient, as the reference). plan: of the wanted weights, offsets: its
    taps' (see _simd_taps.py). copy: the pooled maps' gradients are in dpooled (dense), else already in
    grad (group_linear.sparse_grads)."""
    span, pitch, wh, lead = geo.span, geo.pitch, geo.wh, geo.lead
    kh, kw = dw.shape[2], dw.shape[3]
    for f in range(grad.shape[0]):
        grad_f, code_f = grad[f], code[f]
        for g in range(size if copy else 0):
            src, dst = dpooled[g, f * span : (f + 1) * span], grad_f[g * pitch : g * pitch + span]
            for i in range(span):
                dst[i] = src[i]
        if plan.nine_taps:  # weight_grad_codes needs the blocked windows' gradient zeroed
            total, grad_finite = zero_blocked_and_sum(code_f, grad_f)
            if grad_finite and finite:
                db[f] += total
                weight_grad_codes(planes, code_f, grad_f, f, plan.live, wh, dw[f])
                continue
        elif finite:
            taps_weight_grad(planes_flat, offsets[f], plan.tap_count[f], code_f, grad_f, tap_sums)
            if tap_sums[1] == 0.0:  # the gradient is finite
                db[f] += tap_sums[0]
                for t in range(plan.tap_count[f]):
                    tap = plan.taps[f, t]
                    dw[f, tap // (kh * kw), (tap // kw) % kh, tap % kw] += tap_sums[2 + t]
                continue
        db[f] += unpool2_codes(code_f, grad_f, dconv, lead)
        weight_grad_quarters(planes, dconv, lead, f, plan.nine_taps, plan.tap_count, plan.taps, plan.live, wh,
                             dw[f], False)  # (the group's span: whole cache lines already)


# The work around the parallel loop, in serial functions: in the parallel kernel, Numba would run each
# array expression (np.zeros, a sum) as a parallel loop of its own, for microseconds of work (in NumPy
# after the kernel, they took 6 % of a paper-model step).


@serial
def _to_class_steps(fc_w, n_filt, ph, pw, wh, n_class):
    """fc_w (K, F*PH*PW) -> fc_steps (ceil(F*span / STEP), n_class, STEP): the linear weight's first n_class
    rows (all, or none) in the pooled maps' split rows (span = PH*WH), zeros in the junk columns and past
    F*span, class-interleaved (the layout of _simd_linear's dense steps)."""
    span = ph * wh
    fc_steps = aligned_zeros(((n_filt * span + STEP - 1) // STEP, n_class, STEP), fc_w)
    for k in range(n_class):
        for f in range(n_filt):
            for py in range(ph):
                src, at = fc_w[k, (f * ph + py) * pw :], f * span + py * wh
                for u in range(pw):
                    fc_steps[(at + u) // STEP, k, (at + u) % STEP] = src[u]
    return fc_steps


def _pooled_and_row(x: np.ndarray, w: np.ndarray, pad: int):
    """((PH, PW), WH): the pooled maps' size and a split row's length, as the kernel computes them."""
    _, _, h, width = x.shape
    _, _, kh, kw = w.shape
    ph, pw = (h + 2 * pad - kh + 1) // 2, (width + 2 * pad - kw + 1) // 2
    return (ph, pw), split_sizes(h, width, pad, kh, kw, ph, True)[0]


def _check_linear(x: np.ndarray, w: np.ndarray, pad: int, fc_w: np.ndarray, fc_b: np.ndarray) -> None:
    """ValueError unless fc_w (K, F*PH*PW) matches the pooled maps of conv w on x."""
    _, _, h, width = x.shape
    n_filt, _, kh, kw = w.shape
    ph, pw = conv_output_size(h, kh, 1, pad) // 2, conv_output_size(width, kw, 1, pad) // 2
    if fc_w.shape != (fc_b.shape[0], n_filt * ph * pw):
        raise ValueError(f"fc_w has shape {fc_w.shape}; the pooled maps need ({fc_b.shape[0]}, {n_filt * ph * pw})")


def _pixel_source(x):
    """(x, pixels, rows, table, table_finite, offsets) of the op's batch x (see images.py): a float (N, C,
    H, W) array (made C-contiguous) by rows 0 .. N-1, or a PixelBatch's uint8 images, rows, table and
    offsets."""
    if isinstance(x, PixelBatch):
        offsets = x.offsets if x.offsets is not None else np.zeros(0, dtype=x.table.dtype)
        return x, x.images, x.rows, x.table, bool(np.isfinite(x.table).all()), offsets.astype(x.table.dtype)
    x = np.ascontiguousarray(x)
    return (x, x, np.arange(x.shape[0], dtype=np.int64), np.zeros((0, 0), dtype=x.dtype), True,
            np.zeros(0, dtype=x.dtype))


def conv_relu_pool_linear_loss(x, w: np.ndarray, b: np.ndarray, pad: int, fc_w: np.ndarray,
                               fc_b: np.ndarray, labels: np.ndarray, weight_mask=None, fc_mask=None):
    """x: (N, C, H, W) or a PixelBatch (minicnn.nn.pixels), w: (F, C, KH, KW), b: (F,), fc_w: (K, F*PH*PW),
    fc_b: (K,), labels: (N,) -> loss, logits (N, K), dw, db, dfc_w, dfc_b; see minicnn.nn.ref.convnet for
    the contract. A PixelBatch's pixels are read from its images and normalised as they are unpacked."""
    x, pixels, rows, table, table_finite, offsets = _pixel_source(x)
    dtype, n, n_filt, n_class = x.dtype, rows.size, w.shape[0], fc_b.shape[0]
    _check_linear(x, w, pad, fc_w, fc_b)
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    if labels.shape != (n,) or (n and (labels.min() < 0 or labels.max() >= n_class)):
        raise ValueError(f"labels must be {n} integers in [0, {n_class})")
    w = np.ascontiguousarray(w, dtype=dtype)
    active = wanted(w, weight_mask)
    out = Outputs(np.empty((n, n_class), dtype=dtype), np.empty(w.shape, dtype=dtype), np.empty(n_filt, dtype=dtype),
                  np.empty(fc_w.shape, dtype=dtype), np.empty(n_class, dtype=dtype))
    fc_w = np.ascontiguousarray(fc_w, dtype=dtype)
    fc_sparse = sparse_linear(fc_mask, *_pooled_and_row(x, w, pad))
    loss = _convnet_pass(pixels, rows, table, table_finite, offsets, w, b.astype(dtype), pad,
                         skip_plan(w != 0, NINE_TAP_MIN_DENSITY), skip_plan(active, NINE_TAP_MIN_DENSITY), fc_w, fc_b.astype(dtype), fc_sparse, labels, True,
                         max(1, min(num_threads(), n)), out)
    if weight_mask is not None:
        out.dw[...] *= active  # a 9-tap pass computes every tap of a live channel; drop the unwanted ones
    if fc_mask is not None and not fc_sparse.sparse:  # sparse: computed at the kept weights only
        out.dfc_w[...] *= fc_mask
    return (float(loss),) + tuple(out)


def conv_relu_pool_linear_forward(x, w: np.ndarray, b: np.ndarray, pad: int, fc_w: np.ndarray,
                                  fc_b: np.ndarray) -> np.ndarray:
    """x: (N, C, H, W) or a PixelBatch, w: (F, C, KH, KW), b: (F,), fc_w: (K, F*PH*PW), fc_b: (K,) ->
    logits (N, K)."""
    x, pixels, rows, table, table_finite, offsets = _pixel_source(x)
    dtype, n, n_filt, n_class = x.dtype, rows.size, w.shape[0], fc_b.shape[0]
    _check_linear(x, w, pad, fc_w, fc_b)
    w = np.ascontiguousarray(w, dtype=dtype)
    plan = skip_plan(w != 0, NINE_TAP_MIN_DENSITY)
    # the gradients' places: not written without train
    out = Outputs(np.empty((n, n_class), dtype=dtype), np.empty((1, 1, 1, 1), dtype=dtype), np.empty(1, dtype=dtype),
                  np.empty((1, 1), dtype=dtype), np.empty(1, dtype=dtype))
    fc_w = np.ascontiguousarray(fc_w, dtype=dtype)
    fc_sparse = sparse_linear(fc_w, *_pooled_and_row(x, w, pad))  # pruned weights are exactly 0
    _convnet_pass(pixels, rows, table, table_finite, offsets, w, b.astype(dtype), pad, plan, plan, fc_w,
                  fc_b.astype(dtype), fc_sparse, np.zeros(1, np.int64), False, max(1, min(num_threads(), n)), out)
    return out.logits
