"""A whole one-conv network and its loss as one operation: the paper's model in a single op.

    logits = linear(flatten(maxpool_2x2(relu(conv(x))))),   loss = softmax cross-entropy(logits, labels)

with every gradient of the four parameters. It exists so the fast backend can run a training step of
such a network image by image in one kernel (see minicnn/nn/fast/convnet.py), while the tests hold it to
exactly this composition of the reference ops.
"""

from __future__ import annotations

import numpy as np

from minicnn.nn.pixels import as_floats
from minicnn.nn.ref.act import flatten_backward, flatten_forward
from minicnn.nn.ref.block import conv_relu_pool_backward, conv_relu_pool_forward
from minicnn.nn.ref.dense import linear_backward, linear_forward, masked_linear_backward, masked_linear_forward
from minicnn.nn.ref.loss import softmax_cross_entropy


def conv_relu_pool_linear_loss(x: np.ndarray, w: np.ndarray, b: np.ndarray, pad: int, fc_w: np.ndarray,
                               fc_b: np.ndarray, labels: np.ndarray, weight_mask=None, fc_mask=None):
    """One training pass of conv (stride 1, padding ``pad``) -> ReLU -> 2x2 max-pool -> flatten -> linear
    -> mean softmax cross-entropy.

    x: (N, C, H, W), w: (F, C, KH, KW), b: (F,), fc_w: (K, F*PH*PW), fc_b: (K,), labels: (N,) ints in
    [0, K). weight_mask / fc_mask: None, or 0/1 arrays shaped as w / fc_w that multiply dw / dfc_w (the
    gradient of pruned weights is not wanted, as in conv_relu_pool_backward and masked_linear_backward).

    -> loss (float), logits (N, K), dw (F, C, KH, KW), db (F,), dfc_w (K, F*PH*PW), dfc_b (K,).
    x may also be a PixelBatch (minicnn.nn.pixels): its floats() are the batch.
    """
    x = as_floats(x)
    pooled, block_cache = conv_relu_pool_forward(x, w, b, 1, pad, 2, 2)
    flat, flat_cache = flatten_forward(pooled)
    if fc_mask is None:
        logits, fc_cache = linear_forward(flat, fc_w, fc_b)
    else:
        logits, fc_cache = masked_linear_forward(flat, fc_w, fc_b, fc_mask)
    loss, dlogits = softmax_cross_entropy(logits, labels)
    fc_backward = linear_backward if fc_mask is None else masked_linear_backward
    dflat, dfc_w, dfc_b = fc_backward(dlogits, fc_cache)
    _, dw, db = conv_relu_pool_backward(flatten_backward(dflat, flat_cache), block_cache, need_dx=False,
                                        weight_mask=weight_mask)
    return loss, logits, dw, db, dfc_w, dfc_b


def conv_relu_pool_linear_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, pad: int, fc_w: np.ndarray,
                                  fc_b: np.ndarray) -> np.ndarray:
    """Inference through the same network: x, w, b, pad, fc_w, fc_b as in conv_relu_pool_linear_loss
    -> logits (N, K). (Pruned weights are already 0 in w and fc_w, so no mask is needed.)"""
    x = as_floats(x)
    pooled, _ = conv_relu_pool_forward(x, w, b, 1, pad, 2, 2, for_backward=False)
    logits, _ = linear_forward(flatten_forward(pooled)[0], fc_w, fc_b)
    return logits
