"""Max pooling.

out[n, c, oh, ow] = max over the KxK window starting at (oh*s, ow*s). The gradient flows only to the
position that produced the maximum. Ties (common after ReLU, where many inputs are exactly 0) go to
the FIRST maximum in row-major window order, the rule PyTorch's CPU kernel uses.
"""

from __future__ import annotations

import numpy as np

from minicnn.nn.ref.im2col import conv_output_size


def maxpool2d_forward(x: np.ndarray, kernel: int = 2, stride: int | None = None):
    """x: (N, C, H, W)  ->  out: (N, C, OH, OW), cache. No padding; stride defaults to kernel."""
    stride = kernel if stride is None else stride
    n, c, h, w = x.shape
    oh = conv_output_size(h, kernel, stride, 0)
    ow = conv_output_size(w, kernel, stride, 0)
    # windows[n, c, oh, ow, i, j] = x[n, c, oh*s + i, ow*s + j]
    windows = np.empty((n, c, oh, ow, kernel, kernel), dtype=x.dtype)
    for i in range(kernel):
        for j in range(kernel):
            windows[..., i, j] = x[:, :, i : i + stride * oh : stride, j : j + stride * ow : stride]
    flat = windows.reshape(n, c, oh, ow, kernel * kernel)
    argmax = flat.argmax(axis=-1)  # np.argmax returns the first maximum: the tie rule
    out = np.take_along_axis(flat, argmax[..., None], axis=-1)[..., 0]
    return out, (x.shape, argmax, kernel, stride)


def maxpool2d_backward(dout: np.ndarray, cache) -> np.ndarray:
    """dout: (N, C, OH, OW)  ->  dx: (N, C, H, W)."""
    x_shape, argmax, kernel, stride = cache
    n, c, oh, ow = dout.shape
    dx = np.zeros(x_shape, dtype=dout.dtype)
    wi, wj = np.divmod(argmax, kernel)  # window-relative row and column of each maximum
    rows = np.arange(oh)[:, None] * stride + wi
    cols = np.arange(ow)[None, :] * stride + wj
    nn, cc = np.meshgrid(np.arange(n), np.arange(c), indexing="ij")
    # overlapping windows (stride < kernel) may pick the same input: np.add.at accumulates
    np.add.at(dx, (nn[:, :, None, None], cc[:, :, None, None], rows, cols), dout)
    return dx
