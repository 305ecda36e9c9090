"""Numba max pooling: same contract as minicnn.nn.ref.pool.

Differences: one image per thread; the argmax of each window is stored as an offset (i*K + j)
instead of a window tensor, and the comparison `v > best` (strict) keeps the first
maximum, the same tie rule as the reference and PyTorch.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from minicnn.nn.fast._jit import kernel
from minicnn.nn.ref.im2col import conv_output_size


@kernel
def _pool_forward(x, k, stride, out, arg):
    n_img, c_in = x.shape[0], x.shape[1]
    oh, ow = out.shape[2], out.shape[3]
    for n in prange(n_img):
        for c in range(c_in):
            for y in range(oh):
                for x_ in range(ow):
                    best = x[n, c, y * stride, x_ * stride]
                    best_at = 0
                    for i in range(k):
                        for j in range(k):
                            v = x[n, c, y * stride + i, x_ * stride + j]
                            if v > best or (v != v and best == best):  # a NaN wins, as np.argmax
                                best = v
                                best_at = i * k + j
                    out[n, c, y, x_] = best
                    arg[n, c, y, x_] = best_at


def maxpool2d_forward(x: np.ndarray, kernel: int = 2, stride: int | None = None):
    """x: (N, C, H, W)  ->  out: (N, C, OH, OW), cache."""
    stride = kernel if stride is None else stride
    n, c, h, w = x.shape
    oh, ow = conv_output_size(h, kernel, stride, 0), conv_output_size(w, kernel, stride, 0)
    out = np.empty((n, c, oh, ow), dtype=x.dtype)
    arg = np.empty((n, c, oh, ow), dtype=np.int32)
    _pool_forward(np.ascontiguousarray(x), kernel, stride, out, arg)
    return out, (x.shape, arg, kernel, stride)


@kernel
def _pool_backward(dout, arg, k, stride, dx):
    n_img, c_in = dout.shape[0], dout.shape[1]
    oh, ow = dout.shape[2], dout.shape[3]
    for n in prange(n_img):
        for c in range(c_in):
            for y in range(oh):
                for x_ in range(ow):
                    a = arg[n, c, y, x_]
                    dx[n, c, y * stride + a // k, x_ * stride + a % k] += dout[n, c, y, x_]


def maxpool2d_backward(dout: np.ndarray, cache) -> np.ndarray:
    """dout: (N, C, OH, OW)  ->  dx: (N, C, H, W)."""
    x_shape, arg, kernel, stride = cache
    dx = np.zeros(x_shape, dtype=dout.dtype)
    _pool_backward(np.ascontiguousarray(dout), arg, kernel, stride, dx)
    return dx
