"""Numba im2col / col2im: same layout as minicnn.nn.ref.im2col, one image per thread (prange over N)."""

from __future__ import annotations

import numpy as np
from numba import prange

from minicnn.nn.fast._jit import kernel
from minicnn.nn.ref.im2col import conv_output_size

__all__ = ["conv_output_size", "im2col", "col2im"]


@kernel
def _im2col(x, kh, kw, stride, pad, cols):
    n_img, c_in, h, w = x.shape
    ow = (w + 2 * pad - kw) // stride + 1
    oh = (h + 2 * pad - kh) // stride + 1
    for n in prange(n_img):
        for c in range(c_in):
            for i in range(kh):
                for j in range(kw):
                    row = (c * kh + i) * kw + j
                    for y in range(oh):
                        ih = y * stride + i - pad
                        for x_ in range(ow):
                            iw = x_ * stride + j - pad
                            inside = 0 <= ih < h and 0 <= iw < w
                            cols[n, row, y * ow + x_] = x[n, c, ih, iw] if inside else 0.0


def im2col(x: np.ndarray, kh: int, kw: int, stride: int = 1, pad: int = 0) -> np.ndarray:
    """x: (N, C, H, W) -> cols: (N, C*KH*KW, OH*OW). Writes each element once, no padded copy."""
    n, c, h, w = x.shape
    oh, ow = conv_output_size(h, kh, stride, pad), conv_output_size(w, kw, stride, pad)
    cols = np.empty((n, c * kh * kw, oh * ow), dtype=x.dtype)
    _im2col(np.ascontiguousarray(x), kh, kw, stride, pad, cols)
    return cols


@kernel
def _col2im(cols, kh, kw, stride, pad, dx):
    n_img, c_in, h, w = dx.shape
    ow = (w + 2 * pad - kw) // stride + 1
    oh = (h + 2 * pad - kh) // stride + 1
    for n in prange(n_img):
        for c in range(c_in):
            for i in range(kh):
                for j in range(kw):
                    row = (c * kh + i) * kw + j
                    for y in range(oh):
                        ih = y * stride + i - pad
                        if ih < 0 or ih >= h:
                            continue
                        for x_ in range(ow):
                            iw = x_ * stride + j - pad
                            if 0 <= iw < w:
                                dx[n, c, ih, iw] += cols[n, row, y * ow + x_]


def col2im(cols: np.ndarray, x_shape: tuple, kh: int, kw: int, stride: int = 1, pad: int = 0) -> np.ndarray:
    """cols: (N, C*KH*KW, OH*OW) -> dx: (N, C, H, W), overlaps summed."""
    dx = np.zeros(x_shape, dtype=cols.dtype)
    _col2im(np.ascontiguousarray(cols), kh, kw, stride, pad, dx)
    return dx
