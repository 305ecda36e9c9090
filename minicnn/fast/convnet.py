"""A whole one-conv network and its loss in one pass per image: same contract as minicnn.ref.convnet.

Why: run layer by layer, the paper's model writes the pooled maps (8 KB per image) and their pooling
codes, reads them back for the linear layer, writes the gradient of the pooled maps, reads it back
with the codes, and fills each image's quarter planes twice. Its linear layer is small (K = 10
outputs), so one thread can carry an image all the way through instead: conv -> ReLU -> pool (the
split kernels of minicnn/fast/block.py), logits, softmax cross-entropy, the gradient of the logits,
the linear layer's gradients, the gradient of the pooled maps and the conv's weight gradient (read
straight from the pooling codes), while the image's planes, maps and codes stay in the L1/L2 cache of
its core. Nothing of the image is written to memory but its K logits. Measured against the layer-by-
layer kernels, alternating: training 1.04-1.16x, inference 1.03-1.14x.

Layout: the pooled maps stay in the split kernels' rows of WH entries (PW real, the rest junk, set
to 0 here), so the linear weight is re-laid out once per call to the same rows, fc_split (K, F*span)
with zeros in the junk columns: one flat dot product per class, no unsplitting per image.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from minicnn.fast._jit import num_threads, reduction_kernel
from minicnn.fast.block import (_conv_quarters, _fill_quarters, _pool2_codes, _pool2_max, _pooled_grad_sum,
                                _skip_plan, _split_sizes, _unpool2_codes, _wanted, _weight_grad_codes,
                                _weight_grad_quarters)
from minicnn.ref.im2col import conv_output_size


@reduction_kernel
def _convnet_pass(x, w, b, pad, nine_taps, tap_count, taps, live, grad_nine_taps, grad_count, grad_taps, grad_live,
                  fc_split, fc_b, labels, train, logits, loss_part, dw_part, db_part, dfc_part, dfcb_part):
    """logits (N, K) of every image; with ``train`` also, per thread t over its slice of the batch,
    loss_part[t] (the sum of its images' losses) and the partial gradients dw_part[t] (F, C, KH, KW),
    db_part[t] (F,), dfc_part[t] (K, F*span) in split rows and dfcb_part[t] (K,). fc_split: (K, F*span),
    the linear weight in split rows; labels (N,) is read only with ``train``."""
    n_img, c_in, h, width = x.shape
    n_filt, _, kh, kw = w.shape
    n_class = fc_b.shape[0]
    n_parts = loss_part.shape[0]
    ph, pw = (h + 2 * pad - kh + 1) // 2, (width + 2 * pad - kw + 1) // 2
    wh, span, plane_len = _split_sizes(h, width, pad, kh, kw, ph, True)
    lead = wh + 1  # zero margins of the conv-map gradient (see _backward_split)
    flat_len = n_filt * span
    inv_n = 1.0 / max(n_img, 1)  # the loss is the batch mean
    per_part = (n_img + n_parts - 1) // n_parts
    for t in prange(n_parts):
        planes = np.zeros((2, 2, c_in, plane_len), dtype=x.dtype)
        conv = np.empty((2, 2, span), dtype=x.dtype)
        pooled = np.empty((n_filt, span), dtype=x.dtype)
        code = np.empty((n_filt, span), dtype=np.int8)
        dpooled = np.empty((n_filt, span), dtype=x.dtype)
        pooled_flat, dpooled_flat = pooled.reshape(flat_len), dpooled.reshape(flat_len)
        dconv = np.zeros((2, 2, lead + span + lead), dtype=x.dtype)
        z = np.empty(n_class, dtype=np.float64)
        dz = np.empty(n_class, dtype=x.dtype)
        for n in range(t * per_part, min(n_img, (t + 1) * per_part)):
            # forward: conv -> ReLU -> pool, filter by filter, into pooled (junk columns 0)
            _fill_quarters(x, n, pad, wh, planes)
            for f in range(n_filt):
                _conv_quarters(planes, w, b, f, nine_taps, tap_count, taps, live, wh, conv)
                if train:
                    _pool2_codes(conv, pooled[f], code[f])
                else:
                    _pool2_max(conv, pooled[f])
                for py in range(ph):
                    for col in range(pw, wh):
                        pooled[f, py * wh + col] = 0.0
            # logits. The linear layer's loops run over the pooled maps flattened (F*span entries): one
            # long loop per class, where a loop per filter left each short dot product waiting on its
            # own sum (measured 4x slower).
            for k in range(n_class):
                wk = fc_split[k]
                acc = fc_b[k]
                for i in range(flat_len):
                    acc += wk[i] * pooled_flat[i]
                z[k] = acc
                logits[n, k] = acc
            if not train:
                continue
            # softmax cross-entropy: loss = logsumexp(z) - z[label], dz = (softmax(z) - onehot(label)) / N
            top = z.max()  # NaN-propagating, as the reference: a diverged step shows NaN everywhere
            total = 0.0
            for k in range(n_class):
                total += math.exp(z[k] - top)
            log_total = math.log(total)
            label = labels[n]
            loss_part[t] += log_total + top - z[label]
            for k in range(n_class):
                dz[k] = (math.exp(z[k] - top - log_total) - (1.0 if k == label else 0.0)) * inv_n
            # the linear layer's gradients, and the gradient of the pooled maps (junk columns stay 0).
            # One array written per loop: LLVM vectorises a loop that writes two only at half width.
            dpooled_flat[:] = 0.0
            for k in range(n_class):
                g, wk, dwk = dz[k], fc_split[k], dfc_part[t, k]
                dfcb_part[t, k] += g
                for i in range(flat_len):
                    dwk[i] += g * pooled_flat[i]
                for i in range(flat_len):
                    dpooled_flat[i] += g * wk[i]
            # backward through pool, ReLU and conv: the weight gradient straight from the pooling codes
            for f in range(n_filt):
                if grad_nine_taps:
                    total, finite = _pooled_grad_sum(code[f], dpooled[f])
                    if finite:
                        db_part[t, f] += total
                        _weight_grad_codes(planes, code[f], dpooled[f], f, grad_live, wh, dw_part[t, f])
                        continue
                db_part[t, f] += _unpool2_codes(code[f], dpooled[f], dconv, lead)
                _weight_grad_quarters(planes, dconv, lead, f, grad_nine_taps, grad_count, grad_taps, grad_live, wh,
                                      dw_part[t, f])


def _split_linear(x: np.ndarray, w: np.ndarray, pad: int, fc_w: np.ndarray, fc_b: np.ndarray):
    """Check the shapes; -> (PH, PW, WH, fc_split (K, F*span)): the linear weight in the pooled maps'
    split rows, zeros in the junk columns."""
    _, _, h, width = x.shape
    n_filt, _, kh, kw = w.shape
    n_class = fc_b.shape[0]
    ph, pw = conv_output_size(h, kh, 1, pad) // 2, conv_output_size(width, kw, 1, pad) // 2
    if fc_w.shape != (n_class, n_filt * ph * pw):
        raise ValueError(f"fc_w has shape {fc_w.shape}; the pooled maps need ({n_class}, {n_filt * ph * pw})")
    wh, span, _ = _split_sizes(h, width, pad, kh, kw, ph, True)
    fc_split = np.zeros((n_class, n_filt, ph, wh), dtype=x.dtype)
    fc_split[..., :pw] = fc_w.reshape(n_class, n_filt, ph, pw)
    return ph, pw, wh, fc_split.reshape(n_class, n_filt * span)


def conv_relu_pool_linear_loss(x: np.ndarray, w: np.ndarray, b: np.ndarray, pad: int, fc_w: np.ndarray,
                               fc_b: np.ndarray, labels: np.ndarray, weight_mask=None, fc_mask=None):
    """x: (N, C, H, W), w: (F, C, KH, KW), b: (F,), fc_w: (K, F*PH*PW), fc_b: (K,), labels: (N,)
    -> loss, logits (N, K), dw, db, dfc_w, dfc_b; see minicnn.ref.convnet for the contract."""
    x = np.ascontiguousarray(x)
    dtype, n, n_filt, n_class = x.dtype, x.shape[0], w.shape[0], fc_b.shape[0]
    ph, pw, wh, fc_split = _split_linear(x, w, pad, fc_w, fc_b)
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    if labels.shape != (n,) or (n and (labels.min() < 0 or labels.max() >= n_class)):
        raise ValueError(f"labels must be {n} integers in [0, {n_class})")
    w = np.ascontiguousarray(w, dtype=dtype)
    nine_taps, tap_count, taps, live = _skip_plan(w != 0)
    wanted = _wanted(w, weight_mask)
    grad_nine_taps, grad_count, grad_taps, grad_live = _skip_plan(wanted)
    parts = max(1, min(num_threads(), n))
    logits = np.empty((n, n_class), dtype=dtype)
    loss_part = np.zeros(parts)
    dw_part = np.zeros((parts,) + w.shape, dtype=dtype)
    db_part = np.zeros((parts, n_filt), dtype=dtype)
    dfc_part = np.zeros((parts,) + fc_split.shape, dtype=dtype)
    dfcb_part = np.zeros((parts, n_class), dtype=dtype)
    _convnet_pass(x, w, b.astype(dtype), pad, nine_taps, tap_count, taps, live, grad_nine_taps, grad_count, grad_taps,
                  grad_live, fc_split, fc_b.astype(dtype), labels, True, logits, loss_part, dw_part, db_part, dfc_part,
                  dfcb_part)

    dw = dw_part.sum(axis=0)
    if weight_mask is not None:
        dw *= wanted  # a 9-tap pass computes every tap of a live channel; drop the unwanted ones
    dfc_w = dfc_part.sum(axis=0).reshape(n_class, n_filt, ph, wh)[..., :pw].reshape(fc_w.shape)
    if fc_mask is not None:
        dfc_w = dfc_w * fc_mask
    return float(loss_part.sum() / max(n, 1)), logits, dw, db_part.sum(axis=0), dfc_w, dfcb_part.sum(axis=0)


def conv_relu_pool_linear_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, pad: int, fc_w: np.ndarray,
                                  fc_b: np.ndarray) -> np.ndarray:
    """x: (N, C, H, W), w: (F, C, KH, KW), b: (F,), fc_w: (K, F*PH*PW), fc_b: (K,) -> logits (N, K)."""
    x = np.ascontiguousarray(x)
    dtype, n, n_filt, n_class = x.dtype, x.shape[0], w.shape[0], fc_b.shape[0]
    _, _, _, fc_split = _split_linear(x, w, pad, fc_w, fc_b)
    w = np.ascontiguousarray(w, dtype=dtype)
    nine_taps, tap_count, taps, live = _skip_plan(w != 0)
    parts = max(1, min(num_threads(), n))
    logits = np.empty((n, n_class), dtype=dtype)
    unused = np.zeros((parts, 1), dtype=dtype)  # the gradients' places: not written without train
    _convnet_pass(x, w, b.astype(dtype), pad, nine_taps, tap_count, taps, live, False, tap_count, taps, live, fc_split,
                  fc_b.astype(dtype), np.zeros(1, np.int64), False, logits, np.zeros(parts),
                  np.zeros((parts, 1, 1, 1, 1), dtype=dtype), unused, np.zeros((parts, 1, 1), dtype=dtype), unused)
    return logits
