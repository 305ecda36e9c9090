"""im2col / col2im: turn convolution into one matrix product.

Every receptive field (a C x KH x KW patch of the padded input) becomes one column of a matrix, so a
convolution with F filters is just ``W.reshape(F, C*KH*KW) @ cols``. col2im is the adjoint: it adds
each column back into the patch it came from (overlapping patches accumulate), which is exactly what
the gradient with respect to the input needs.
"""

from __future__ import annotations

import numpy as np


def conv_output_size(size: int, kernel: int, stride: int, pad: int) -> int:
    """Output length along one axis: floor((size + 2*pad - kernel) / stride) + 1."""
    return (size + 2 * pad - kernel) // stride + 1


def im2col(x: np.ndarray, kh: int, kw: int, stride: int = 1, pad: int = 0) -> np.ndarray:
    """Unfold patches into columns.

    x: (N, C, H, W)  ->  cols: (N, C*KH*KW, OH*OW)

    Row index of cols is c*KH*KW + i*KW + j (the order of ``w.reshape(F, -1)``); column index is
    oh*OW + ow. cols[n, (c,i,j), (oh,ow)] = x_padded[n, c, oh*stride + i, ow*stride + j].
    """
    n, c, h, w = x.shape
    oh = conv_output_size(h, kh, stride, pad)
    ow = conv_output_size(w, kw, stride, pad)
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    cols = np.empty((n, c, kh, kw, oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            # all output positions read input row oh*stride+i and column ow*stride+j for this tap
            cols[:, :, i, j] = xp[:, :, i : i + stride * oh : stride, j : j + stride * ow : stride]
    return cols.reshape(n, c * kh * kw, oh * ow)


def col2im(cols: np.ndarray, x_shape: tuple, kh: int, kw: int, stride: int = 1, pad: int = 0) -> np.ndarray:
    """Fold columns back, summing overlaps (the adjoint of im2col).

    cols: (N, C*KH*KW, OH*OW), x_shape = (N, C, H, W)  ->  dx: (N, C, H, W)
    """
    n, c, h, w = x_shape
    oh = conv_output_size(h, kh, stride, pad)
    ow = conv_output_size(w, kw, stride, pad)
    cols = cols.reshape(n, c, kh, kw, oh, ow)
    xp = np.zeros((n, c, h + 2 * pad, w + 2 * pad), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            xp[:, :, i : i + stride * oh : stride, j : j + stride * ow : stride] += cols[:, :, i, j]
    return xp[:, :, pad : pad + h, pad : pad + w]
