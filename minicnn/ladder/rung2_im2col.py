"""Rung 2: im2col + one matrix product (the reference's way, minicnn/nn/ref). Changed from rung 1: the
loops move out of Python. im2col copies every C x KH x KW patch of the batch into one column of a
matrix, so the convolution of all images and filters is one product, (F, K) @ (K, N*OH*OW) with
K = C*KH*KW, and the weight gradient another, (F, N*OH*OW) @ (N*OH*OW, K). ReLU, pooling, the linear
layer and the loss are whole-array NumPy operations (the reference's own ops, reused).

Why it is faster: a matrix product runs in BLAS, compiled, threaded and vectorised, near the machine's
peak; the other operations are loops in NumPy's C code. Why it is still slow: the columns hold every
pixel KH*KW = 9 times (56 MB for a batch of 512), and every layer writes its whole output to memory and
reads it back (the conv map alone is 16 MB): the time goes to memory traffic, not arithmetic. And with
only F = 8 rows, the product is too thin for BLAS to reuse what it loads.
"""

from __future__ import annotations

import numpy as np

from minicnn.nn.ref.act import relu_backward, relu_forward
from minicnn.nn.ref.dense import linear_backward, linear_forward
from minicnn.nn.ref.im2col import im2col
from minicnn.nn.ref.loss import softmax_cross_entropy
from minicnn.nn.ref.pool import maxpool2d_backward, maxpool2d_forward


def _linear_loss(pooled: np.ndarray, fc_w: np.ndarray, fc_b: np.ndarray, labels: np.ndarray):
    """The network's head on the pooled maps (N, F, PH, PW), as the reference: -> loss, logits (N, K),
    the pooled maps' gradient (N, F, PH, PW), dfc_w, dfc_b."""
    flat = pooled.reshape(pooled.shape[0], pooled[0].size)
    logits, cache = linear_forward(flat, fc_w, fc_b)
    loss, dlogits = softmax_cross_entropy(logits, labels)
    dflat, dfc_w, dfc_b = linear_backward(dlogits, cache)
    return loss, logits, dflat.reshape(pooled.shape), dfc_w, dfc_b


def conv_relu_pool_linear_loss(x: np.ndarray, w: np.ndarray, b: np.ndarray, pad: int, fc_w: np.ndarray,
                               fc_b: np.ndarray, labels: np.ndarray):
    """x (N, C, H, W), w (F, C, KH, KW), b (F,), fc_w (K, F*PH*PW), fc_b (K,), labels (N,) -> loss,
    logits (N, K), dw, db, dfc_w, dfc_b: the contract of minicnn.nn.ref.convnet (no masks)."""
    n_img = x.shape[0]
    n_filt, c_in, kh, kw = w.shape
    oh, ow = x.shape[2] + 2 * pad - kh + 1, x.shape[3] + 2 * pad - kw + 1
    k = c_in * kh * kw
    cols = im2col(x, kh, kw, 1, pad).transpose(1, 0, 2).reshape(k, n_img * oh * ow)  # (K, N*OH*OW)
    conv = w.reshape(n_filt, k) @ cols + b[:, None]  # the one product: (F, N*OH*OW)
    conv = conv.reshape(n_filt, n_img, oh, ow).transpose(1, 0, 2, 3)  # (N, F, OH, OW)
    act, relu_cache = relu_forward(conv)
    pooled, pool_cache = maxpool2d_forward(act, 2, 2)
    loss, logits, dpooled, dfc_w, dfc_b = _linear_loss(pooled, fc_w, fc_b, labels)
    dconv = relu_backward(maxpool2d_backward(dpooled, pool_cache), relu_cache)  # (N, F, OH, OW)
    dconv = dconv.transpose(1, 0, 2, 3).reshape(n_filt, n_img * oh * ow)
    dw = (dconv @ cols.T).reshape(w.shape)  # the weight gradient: one product too
    return loss, logits, dw, dconv.sum(axis=1), dfc_w, dfc_b
