"""Rung 1: plain loops, the definition. Every output of every layer is written as its formula, one at a
time: a conv output is b[f] + the sum of w[f] times the C x KH x KW patch under it, a pooled value the
first maximum of its 2x2 window after ReLU, a logit b[k] + a dot product, and back again.

What it costs: the Python interpreter runs every step of every loop (a few hundred nanoseconds each,
where the CPU could do dozens of multiply-adds), and NumPy's help is a 27-term sum per call, too
short to pay for the call. Nothing here is fast; everything later is measured against what it does.
"""

from __future__ import annotations

import math

import numpy as np


def conv_relu_pool_linear_loss(x: np.ndarray, w: np.ndarray, b: np.ndarray, pad: int, fc_w: np.ndarray,
                               fc_b: np.ndarray, labels: np.ndarray):
    """x (N, C, H, W), w (F, C, KH, KW), b (F,), fc_w (K, F*PH*PW), fc_b (K,), labels (N,) -> loss,
    logits (N, K), dw, db, dfc_w, dfc_b: the contract of minicnn.nn.ref.convnet (no masks)."""
    n_img, _, h, width = x.shape
    n_filt, _, kh, kw = w.shape
    n_class = fc_b.shape[0]
    oh, ow = h + 2 * pad - kh + 1, width + 2 * pad - kw + 1
    ph, pw = oh // 2, ow // 2
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    pooled = np.zeros((n_img, n_filt, ph, pw), dtype=x.dtype)
    cell = np.full((n_img, n_filt, ph, pw), -1)  # the window's argmax cell 0..3, or -1: ReLU passes nothing
    for n in range(n_img):
        for f in range(n_filt):
            conv = np.empty((oh, ow), dtype=x.dtype)
            for y in range(oh):
                for x_ in range(ow):
                    conv[y, x_] = b[f] + np.sum(w[f] * xp[n, :, y : y + kh, x_ : x_ + kw])
            for py in range(ph):
                for px in range(pw):
                    window = [max(conv[2 * py + i, 2 * px + j], 0) for i in range(2) for j in range(2)]
                    best = 0
                    for k in range(1, 4):
                        if window[k] > window[best]:  # strict: the first maximum wins ties
                            best = k
                    pooled[n, f, py, px] = window[best]
                    cell[n, f, py, px] = best if window[best] > 0 else -1
    flat = pooled.reshape(n_img, n_filt * ph * pw)
    logits = np.empty((n_img, n_class), dtype=x.dtype)
    dlogits = np.empty((n_img, n_class), dtype=x.dtype)
    loss = 0.0
    for n in range(n_img):
        for k in range(n_class):
            logits[n, k] = fc_b[k] + np.dot(fc_w[k], flat[n])
        top = max(logits[n])
        log_total = math.log(sum(math.exp(z - top) for z in logits[n]))
        loss += (top + log_total - logits[n, labels[n]]) / n_img
        for k in range(n_class):  # d loss / d logit = (softmax - one-hot) / N
            dlogits[n, k] = (math.exp(logits[n, k] - top - log_total) - (k == labels[n])) / n_img
    dfc_w = np.zeros_like(fc_w, dtype=x.dtype)
    dfc_b = np.zeros(n_class, dtype=x.dtype)
    dflat = np.zeros_like(flat)
    for n in range(n_img):
        for k in range(n_class):
            dfc_w[k] += dlogits[n, k] * flat[n]
            dfc_b[k] += dlogits[n, k]
            dflat[n] += dlogits[n, k] * fc_w[k]
    dpooled = dflat.reshape(pooled.shape)
    dw, db = np.zeros_like(w, dtype=x.dtype), np.zeros(n_filt, dtype=x.dtype)
    for n in range(n_img):
        for f in range(n_filt):
            for py in range(ph):
                for px in range(pw):
                    best = cell[n, f, py, px]
                    if best < 0:
                        continue
                    y, x_ = 2 * py + best // 2, 2 * px + best % 2  # only the argmax cell has a gradient
                    g = dpooled[n, f, py, px]
                    db[f] += g
                    dw[f] += g * xp[n, :, y : y + kh, x_ : x_ + kw]
    return float(loss), logits, dw, db, dfc_w, dfc_b
