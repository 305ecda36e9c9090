"""conv -> ReLU -> max-pool, and conv -> ReLU, as one operation each: compositions of the reference ops.

These exist so the fast backend can run the layers as one fused kernel (see minicnn/nn/fast/block.py)
while the tests hold it to exactly these definitions.
"""

from __future__ import annotations

import numpy as np

from minicnn.nn.ref.act import relu_backward, relu_forward
from minicnn.nn.ref.conv import conv2d_backward, conv2d_forward
from minicnn.nn.ref.pool import maxpool2d_backward, maxpool2d_forward


def conv_relu_pool_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, pad: int,
                           pool_kernel: int, pool_stride: int, for_backward: bool = True):
    """x: (N, C, H, W), w: (F, C, KH, KW), b: (F,)  ->  maxpool(relu(conv(x))): (N, F, PH, PW), cache.

    for_backward=False promises that no backward follows (inference): the fast twin then skips what
    only backward needs, and its cache must not be passed to conv_relu_pool_backward. Here it changes
    nothing."""
    conv_out, conv_cache = conv2d_forward(x, w, b, stride, pad)
    relu_out, relu_cache = relu_forward(conv_out)
    out, pool_cache = maxpool2d_forward(relu_out, pool_kernel, pool_stride)
    return out, (conv_cache, relu_cache, pool_cache)


def conv_relu_pool_backward(dout: np.ndarray, cache, need_dx: bool = True, weight_mask=None):
    """dout: (N, F, PH, PW)  ->  dx: (N, C, H, W) or None, dw: (F, C, KH, KW), db: (F,).

    With ``weight_mask`` (0/1, shape of w), dw is multiplied by it: the gradient of pruned weights
    is not wanted (SGD masks it anyway), which lets the fast twin skip computing it.
    """
    conv_cache, relu_cache, pool_cache = cache
    d = maxpool2d_backward(dout, pool_cache)
    d = relu_backward(d, relu_cache)
    dx, dw, db = conv2d_backward(d, conv_cache, need_dx)
    return dx, (dw if weight_mask is None else dw * weight_mask), db


def conv_relu_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, pad: int):
    """x: (N, C, H, W), w: (F, C, KH, KW), b: (F,)  ->  relu(conv(x)): (N, F, OH, OW), cache."""
    conv_out, conv_cache = conv2d_forward(x, w, b, stride, pad)
    out, relu_cache = relu_forward(conv_out)
    return out, (conv_cache, relu_cache)


def conv_relu_backward(dout: np.ndarray, cache, need_dx: bool = True, weight_mask=None):
    """dout: (N, F, OH, OW)  ->  dx: (N, C, H, W) or None, dw: (F, C, KH, KW), db: (F,); ``weight_mask``
    as in conv_relu_pool_backward."""
    conv_cache, relu_cache = cache
    dx, dw, db = conv2d_backward(relu_backward(dout, relu_cache), conv_cache, need_dx)
    return dx, (dw if weight_mask is None else dw * weight_mask), db


def conv_pair_forward(x: np.ndarray, w1: np.ndarray, b1: np.ndarray, pad1: int, w2: np.ndarray, b2: np.ndarray,
                      pad2: int) -> np.ndarray:
    """Inference through conv -> ReLU -> conv -> ReLU -> 2x2 max-pool (stride-1 convs): x (N, C, H, W),
    w1 (F1, C, KH, KW), w2 (F2, F1, KH, KW)  ->  (N, F2, PH, PW). No cache: no backward follows."""
    mid, _ = conv_relu_forward(x, w1, b1, 1, pad1)
    out, _ = conv_relu_pool_forward(mid, w2, b2, 1, pad2, 2, 2, for_backward=False)
    return out
