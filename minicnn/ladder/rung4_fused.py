"""Rung 4: conv, ReLU and pool fused per image. Changed from rung 3: one kernel carries an image through
conv -> ReLU -> pool, filter by filter, in buffers of its own thread (the padded image, 12 KB, and one
filter's conv map, 4 KB: both stay in the core's L1 cache), and writes only the pooled map and the
pooling codes (a quarter of the map, and a byte per window). The backward likewise makes each conv
map's gradient from the codes in a private buffer and uses it at once for the weight gradient. The
conv and weight-gradient loops are rung 3's (conv_image, weight_grad_image).

ReLU is folded into the pooling: max and ReLU commute (relu(max) = max(relu)), and a window whose
maximum is <= 0 passes no gradient, so its code is 4 ("none") instead of an argmax cell 0..3.

Why it is faster: rung 3 made nine passes over 16 MB arrays, the batch's conv map and its gradient
(conv, ReLU in and out, pool; unpool, ReLU's gradient reading two and writing one, the weight
gradient), and a padded copy of the batch; here none of them leaves the core. The arithmetic is rung 3's.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from minicnn.ladder._jit import kernel, reduction_kernel, serial
from minicnn.ladder.rung3_numba_direct import conv_image, weight_grad_image
from minicnn.ladder.shared import run_fused


@serial
def _fill_padded(x, n, pad, xp):
    """xp (C, H + 2*pad, W + 2*pad) = image n of x; the border (zeroed once) stays 0."""
    for c in range(x.shape[1]):
        for y in range(x.shape[2]):
            src, dst = x[n, c, y], xp[c, y + pad, pad:]
            for x_ in range(x.shape[3]):
                dst[x_] = src[x_]


@serial
def _relu_pool(conv, pooled, code):
    """pooled (PH, PW) = relu(max of each 2x2 window of conv (OH, OW)); code (PH*PW,) = its argmax cell
    0..3 (the first maximum wins ties), or 4 where the maximum is <= 0 (ReLU passes no gradient)."""
    ph, pw = pooled.shape
    for py in range(ph):
        for px in range(pw):
            best, at = conv[2 * py, 2 * px], 0
            for k in range(1, 4):
                if conv[2 * py + k // 2, 2 * px + k % 2] > best:
                    best, at = conv[2 * py + k // 2, 2 * px + k % 2], k
            pooled[py, px] = max(best, 0.0)
            code[py * pw + px] = at if best > 0.0 else 4


@serial
def _unpool_relu(dpooled, code, dconv):
    """dconv (OH, OW): each window's gradient dpooled (PH, PW) at its argmax cell, 0 elsewhere."""
    dconv[:, :] = 0.0
    ph, pw = dpooled.shape
    for py in range(ph):
        for px in range(pw):
            k = code[py * pw + px]
            if k < 4:
                dconv[2 * py + k // 2, 2 * px + k % 2] = dpooled[py, px]


@kernel
def _forward(x, w, b, pad, pooled, code, n_parts):
    """pooled (N, F, PH, PW) and code (N, F, PH*PW), the batch cut into n_parts slices, one per thread."""
    n_img, c_in, h, width = x.shape
    per_part = (n_img + n_parts - 1) // n_parts
    for t in prange(n_parts):
        xp = np.zeros((c_in, h + 2 * pad, width + 2 * pad), dtype=x.dtype)  # this thread's, in its L1 cache
        conv = np.empty((h + 2 * pad - w.shape[2] + 1, width + 2 * pad - w.shape[3] + 1), dtype=x.dtype)
        for n in range(t * per_part, min(n_img, (t + 1) * per_part)):
            _fill_padded(x, n, pad, xp)
            for f in range(w.shape[0]):
                conv_image(xp, w, b, f, conv)
                _relu_pool(conv, pooled[n, f], code[n, f])


@reduction_kernel
def _backward(x, pad, dpooled, code, dw_part, db_part):
    """dw_part[t] (F, C, KH, KW), db_part[t] (F,): the gradients from thread t's slice of the batch."""
    n_img, c_in, h, width = x.shape
    n_parts, n_filt, _, kh, kw = dw_part.shape
    per_part = (n_img + n_parts - 1) // n_parts
    for t in prange(n_parts):
        xp = np.zeros((c_in, h + 2 * pad, width + 2 * pad), dtype=x.dtype)
        dconv = np.empty((h + 2 * pad - kh + 1, width + 2 * pad - kw + 1), dtype=x.dtype)
        for n in range(t * per_part, min(n_img, (t + 1) * per_part)):
            _fill_padded(x, n, pad, xp)
            for f in range(n_filt):
                _unpool_relu(dpooled[n, f], code[n, f], dconv)
                db_part[t, f] += weight_grad_image(xp, dconv, dw_part[t, f])


def conv_relu_pool_linear_loss(x: np.ndarray, w: np.ndarray, b: np.ndarray, pad: int, fc_w: np.ndarray,
                               fc_b: np.ndarray, labels: np.ndarray):
    """x (N, C, H, W), w (F, C, KH, KW), b (F,), fc_w (K, F*PH*PW), fc_b (K,), labels (N,) -> loss,
    logits (N, K), dw, db, dfc_w, dfc_b: the contract of minicnn.nn.ref.convnet (no masks)."""
    windows = ((x.shape[2] + 2 * pad - w.shape[2] + 1) // 2) * ((x.shape[3] + 2 * pad - w.shape[3] + 1) // 2)
    return run_fused(_forward, _backward, windows, x, w, b, pad, fc_w, fc_b, labels)
