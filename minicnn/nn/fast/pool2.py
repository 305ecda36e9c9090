"""What follows a split conv map (parity.py): a 2x2 max-pool through ReLU, or ReLU alone, and the gradients.

Pooling codes, one int8 per window: 0..3 = the argmax cell (row-major, the first maximum wins, as the
reference), 4 = no gradient (the window's maximum is <= 0, so ReLU blocks it, or NaN). ReLU commutes
with max, so relu(max) is max(max, 0). Argmax and the masks are integer arithmetic on comparisons, not
branches: LLVM's branches mispredict on real data (5x slower) or keep the loop scalar.
"""

from __future__ import annotations

import numpy as np

from minicnn.nn.fast._jit import serial, serial_reduction
from minicnn.nn.fast._simd import STEP, unblocked_sums, unblocked_sums_loop
from minicnn.nn.fast._simd_window import window_codes
from minicnn.nn.fast.parity import copy_rows


@serial
def pool2(conv, wh, pooled, code, out, n, f):
    """out[n, f] = relu(max of each 2x2 window); code[q] = the window's pooling code."""
    pool2_codes(conv, 0, pooled, code)
    copy_rows(pooled, wh, out, n, f)


@serial
def pool2_codes(conv, at, pooled, code):
    """pooled[q] = relu(max of the 2x2 window at + q of the split conv map), code[q] = its pooling code."""
    # the windows as vectors (_simd_window.window_codes: the first maximum wins, strict >; 2x the loop's speed)
    if window_codes(conv, at, pooled, code):
        # rare (or inf + -inf): a NaN in a window wins (as np.argmax), so divergence stays visible
        c00, c01, c10, c11 = conv[0, 0, at:], conv[0, 1, at:], conv[1, 0, at:], conv[1, 1, at:]
        for q in range(pooled.size):
            if c00[q] != c00[q] or c01[q] != c01[q] or c10[q] != c10[q] or c11[q] != c11[q]:
                pooled[q] = np.nan
                code[q] = 4


@serial
def pool2_values(conv, wh, pooled, out, n, f):
    """pool2 without the codes, for inference (the argmax is a third of pool2's time)."""
    pool2_max(conv, 0, pooled)
    copy_rows(pooled, wh, out, n, f)


@serial
def pool2_max(conv, at, pooled):
    """pooled[q] = relu(max of the 2x2 window at + q of the split conv map), NaN if the window holds one."""
    c00, c01, c10, c11 = conv[0, 0, at:], conv[0, 1, at:], conv[1, 0, at:], conv[1, 1, at:]
    nans = np.int32(0)
    for q in range(pooled.size):
        a0, a1, a2, a3 = c00[q], c01[q], c10[q], c11[q]
        window_sum = (a0 + a1) + (a2 + a3)
        nans |= np.int32(window_sum != window_sum)  # an integer flag: see pool2_codes
        pooled[q] = max(max(max(a0, a1), max(a2, a3)), np.float32(0.0))
    if nans:
        for q in range(pooled.size):
            if c00[q] != c00[q] or c01[q] != c01[q] or c10[q] != c10[q] or c11[q] != c11[q]:
                pooled[q] = np.nan


@serial_reduction  # the db sum may be reordered: without that, LLVM keeps the whole loop scalar
def unpool2_codes(code, grad, dconv, lead):
    """dconv[:, :, lead : lead + span] = gradient of the split conv map, given grad (span,), the
    gradient of the pooled map in the same split rows (junk columns 0), and the pooling codes; returns
    its sum (db). ReLU passes the gradient only where the pooled value is > 0, which code 4 marks."""
    d00, d01, d10, d11 = dconv[0, 0, lead:], dconv[0, 1, lead:], dconv[1, 0, lead:], dconv[1, 1, lead:]
    total = np.float32(0.0)
    bad = np.int32(0)
    # Every cell written (the argmax gets g, the others 0): no scatter, no zeroing. Multiplied by 0/1, as
    # four selects became a branchy switch (9x slower); a non-finite g (0 * inf = NaN) is redone below.
    for q in range(grad.size):
        k, g = code[q], grad[q]
        d00[q] = g * np.float32(k == 0)
        d01[q] = g * np.float32(k == 1)
        d10[q] = g * np.float32(k == 2)
        d11[q] = g * np.float32(k == 3)
        total += g * np.float32(k < 4)
        g_minus_g = g - g  # NaN if g is inf or NaN, else 0
        bad |= np.int32(g_minus_g != g_minus_g)
    if bad:  # exact selects; a window ReLU blocked gets g * 0 (NaN for inf) in its first cell, as the
        # reference's pool backward routes g there (all its ReLU outputs tie at 0) and its ReLU multiplies
        zero = np.float32(0.0)
        total = zero
        for q in range(grad.size):
            k, g = code[q], grad[q]
            blocked = g * zero
            d00[q] = g if k == 0 else (blocked if k == 4 else zero)
            d01[q] = g if k == 1 else zero
            d10[q] = g if k == 2 else zero
            d11[q] = g if k == 3 else zero
            total += g if k < 4 else blocked
    return total


@serial  # not reassociated: the sum's order is written out (_simd.unblocked_sums)
def zero_blocked_and_sum(code, grad):
    """Sets grad (span,) to 0 in the windows of code 4 (ReLU blocked them), in place, and returns (db,
    finite): the sum of what is left, and whether all of it is finite. Once per filter, so that
    conv_passes.weight_grad_codes tests no code per channel (5 of its loop's 43 vector instructions)."""
    lanes = np.zeros(STEP, dtype=grad.dtype)
    check = np.zeros(STEP, dtype=grad.dtype)  # sums of entry * 0: NaN once one is inf or NaN
    whole = grad.size - grad.size % STEP
    # the sum in STEP lanes in a written-out order: entry q into lane q % STEP, then the lanes pairwise
    # (left to LLVM, a process that compiled the kernels and one that loaded them from the cache summed in
    # different orders)
    unblocked_sums(grad, code, whole, lanes, check, True)
    # the rest (float64 maps are whole cache lines of 8, not of 16)
    unblocked_sums_loop(grad, code, whole, grad.size, lanes, check, True)
    width = STEP // 2
    while width:
        for lane in range(width):
            lanes[lane] += lanes[lane + width]
        width //= 2
    finite = True
    for lane in range(STEP):
        finite = finite and check[lane] == 0.0
    return lanes[0], finite


@serial
def relu_unsplit(conv, wh, out, n, f):
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
def relu_split(dout, out, n, f, wh, dconv, lead):
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
