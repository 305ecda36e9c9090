"""2-D convolution (cross-correlation, as PyTorch) via im2col.

Forward, for filter f at output position (oh, ow):
    out[n, f, oh, ow] = b[f] + sum_{c,i,j} w[f, c, i, j] * x_pad[n, c, oh*s + i, ow*s + j]
With cols = im2col(x) of shape (N, K, P) (K = C*KH*KW, P = OH*OW) and W2 = w.reshape(F, K):
    out[n] = W2 @ cols[n] + b                     (F, P)
Backward, with dout[n] of shape (F, P):
    dW2 = sum_n dout[n] @ cols[n].T               (F, K)
    db  = sum_{n,p} dout[n, :, p]                 (F,)
    dx  = col2im(W2.T @ dout[n])                  (N, C, H, W)
"""

from __future__ import annotations

import numpy as np

from minicnn.nn.ref.im2col import col2im, conv_output_size, im2col


def conv2d_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int = 1, pad: int = 0):
    """x: (N, C, H, W), w: (F, C, KH, KW), b: (F,)  ->  out: (N, F, OH, OW), cache."""
    n, c, h, width = x.shape
    f, _, kh, kw = w.shape
    oh = conv_output_size(h, kh, stride, pad)
    ow = conv_output_size(width, kw, stride, pad)
    cols = im2col(x, kh, kw, stride, pad)  # (N, K, P)
    w2 = w.reshape(f, w[0].size if f else int(np.prod(w.shape[1:])))  # (F, K)
    out = np.matmul(w2, cols) + b[None, :, None]  # (N, F, P)
    cache = (x.shape, cols, w, stride, pad)
    return out.reshape(n, f, oh, ow), cache


def conv2d_backward(dout: np.ndarray, cache, need_dx: bool = True):
    """dout: (N, F, OH, OW)  ->  dx: (N, C, H, W) (None if not need_dx), dw: (F, C, KH, KW), db: (F,).

    The first layer of a network never needs dx (its input is data): need_dx=False skips it.
    """
    x_shape, cols, w, stride, pad = cache
    n, f = dout.shape[:2]
    kh, kw = w.shape[2:]
    d2 = dout.reshape(n, f, dout.shape[2] * dout.shape[3])  # (N, F, P)
    dw = np.einsum("nfp,nkp->fk", d2, cols).reshape(w.shape)
    db = d2.sum(axis=(0, 2))
    if not need_dx:
        return None, dw, db
    dcols = np.matmul(w.reshape(f, int(np.prod(w.shape[1:]))).T, d2)  # (N, K, P)
    dx = col2im(dcols, x_shape, kh, kw, stride, pad)
    return dx, dw, db
