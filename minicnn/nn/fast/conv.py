"""Numba conv2d: same contract as minicnn.nn.ref.conv, im2col one image at a time.

Differences from the reference, and why:
- The reference builds the im2col matrix of the whole batch, (N, C*KH*KW, OH*OW): 9x the input, far
  bigger than the caches. Here each thread takes a contiguous slice of the batch and unfolds ONE
  image at a time into a private (K, P) buffer (K = C*KH*KW, P = OH*OW) that stays in cache, then
  does the small matrix products on it while it is hot.
- Forward and input-gradient products are written as rows of multiply-adds (out[f, :] += w * cols[k, :])
  that LLVM vectorises as is; the weight gradient is K*F dot products of length P, which needs the
  fastmath reassociation to vectorise (see _jit.py).
- The weight gradient is a sum over images: each thread adds into its own partial, and the partials
  are summed at the end (no two threads write the same memory).
- The backward pass unfolds each image again instead of keeping the im2col matrix from the forward
  pass: the cache holds x only (9x less memory), and the unfold is cheap next to the products.
- `need_dx=False` skips the input gradient, which the first layer never needs (its input is data).
- Weights that are exactly 0 (pruned) are skipped in the multiply-add loops.
- Wide filter banks (at least GEMM_MIN_WEIGHTS weights, e.g. Conv-2's 64x64x3x3) go another way:
  im2col a few images at a time, then NumPy's BLAS matrix product, which beats plain loops when the
  arithmetic dominates. (A wide conv followed by ReLU and a 2x2 pool, as Conv-2's second, runs in the
  fused kernels of block.py instead.)
"""

from __future__ import annotations

import numpy as np
from numba import prange

from minicnn.nn.fast._jit import kernel, num_threads, reduction_kernel, serial
from minicnn.nn.fast.im2col import col2im, im2col
from minicnn.nn.ref.im2col import conv_output_size


@serial
def _unfold(x, n, kh, kw, stride, pad, cols):
    """cols[(c, i, j), (y, x)] = x_padded[n, c, y*stride + i, x*stride + j]; cols: (K, P)."""
    c_in, h, w = x.shape[1], x.shape[2], x.shape[3]
    oh = (h + 2 * pad - kh) // stride + 1
    ow = (w + 2 * pad - kw) // stride + 1
    for c in range(c_in):
        for i in range(kh):
            for j in range(kw):
                row = cols[(c * kh + i) * kw + j]
                for y in range(oh):
                    ih = y * stride + i - pad
                    for x_ in range(ow):
                        iw = x_ * stride + j - pad
                        row[y * ow + x_] = x[n, c, ih, iw] if (0 <= ih < h and 0 <= iw < w) else 0.0


@serial
def _fold_add(cols, n, kh, kw, stride, pad, dx):
    """The adjoint of _unfold: dx[n] += col2im(cols)."""
    c_in, h, w = dx.shape[1], dx.shape[2], dx.shape[3]
    oh = (h + 2 * pad - kh) // stride + 1
    ow = (w + 2 * pad - kw) // stride + 1
    for c in range(c_in):
        for i in range(kh):
            for j in range(kw):
                row = cols[(c * kh + i) * kw + j]
                for y in range(oh):
                    ih = y * stride + i - pad
                    if 0 <= ih < h:
                        for x_ in range(ow):
                            iw = x_ * stride + j - pad
                            if 0 <= iw < w:
                                dx[n, c, ih, iw] += row[y * ow + x_]


@kernel
def _conv_forward(x, w2, b, kh, kw, stride, pad, out2, n_parts):
    n_img, n_filt = x.shape[0], w2.shape[0]
    k_len, p_len = w2.shape[1], out2.shape[2]
    per_part = (n_img + n_parts - 1) // n_parts
    for t in prange(n_parts):
        cols = np.empty((k_len, p_len), dtype=x.dtype)
        for n in range(t * per_part, min(n_img, (t + 1) * per_part)):
            _unfold(x, n, kh, kw, stride, pad, cols)
            for f in range(n_filt):
                o = out2[n, f]
                o[:] = b[f]
                for k in range(k_len):
                    wv = w2[f, k]
                    if wv != 0.0:  # pruned weights cost nothing
                        src = cols[k]
                        for p in range(p_len):
                            o[p] += wv * src[p]


def _loops_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, pad: int):
    n, _, h, width = x.shape
    f, _, kh, kw = w.shape
    oh, ow = conv_output_size(h, kh, stride, pad), conv_output_size(width, kw, stride, pad)
    x = np.ascontiguousarray(x)
    out = np.empty((n, f, oh, ow), dtype=x.dtype)
    w2 = np.ascontiguousarray(w, dtype=x.dtype).reshape(f, int(np.prod(w.shape[1:])))
    _conv_forward(x, w2, b.astype(x.dtype), kh, kw, stride, pad, out.reshape(n, f, oh * ow),
                  max(1, min(num_threads(), n)))
    return out


@reduction_kernel
def _conv_weight_grad(x, dout2, kh, kw, stride, pad, dw_part, db_part):
    n_img = x.shape[0]
    n_parts, n_filt, k_len = dw_part.shape
    p_len = dout2.shape[2]
    per_part = (n_img + n_parts - 1) // n_parts
    for t in prange(n_parts):
        cols = np.empty((k_len, p_len), dtype=x.dtype)
        for n in range(t * per_part, min(n_img, (t + 1) * per_part)):
            _unfold(x, n, kh, kw, stride, pad, cols)
            for f in range(n_filt):
                g = dout2[n, f]
                db_part[t, f] += g.sum()
                for k in range(k_len):
                    src = cols[k]
                    acc = np.float32(0.0)
                    for p in range(p_len):
                        acc += g[p] * src[p]
                    dw_part[t, f, k] += acc


@kernel
def _conv_input_grad(dout2, w2, kh, kw, stride, pad, dx, n_parts):
    n_img = dx.shape[0]
    n_filt, k_len = w2.shape
    p_len = dout2.shape[2]
    per_part = (n_img + n_parts - 1) // n_parts
    for t in prange(n_parts):
        dcols = np.empty((k_len, p_len), dtype=dx.dtype)
        for n in range(t * per_part, min(n_img, (t + 1) * per_part)):
            dcols[:, :] = 0.0
            for f in range(n_filt):
                g = dout2[n, f]
                for k in range(k_len):
                    wv = w2[f, k]
                    if wv != 0.0:
                        dst = dcols[k]
                        for p in range(p_len):
                            dst[p] += wv * g[p]
            _fold_add(dcols, n, kh, kw, stride, pad, dx)


def _loops_backward(dout: np.ndarray, x, w, stride: int, pad: int, need_dx: bool):
    n, f = dout.shape[:2]
    kh, kw = w.shape[2:]
    dout2 = np.ascontiguousarray(dout, dtype=x.dtype).reshape(n, f, dout.shape[2] * dout.shape[3])
    parts = max(1, min(num_threads(), n))
    dw_part = np.zeros((parts, f, int(np.prod(w.shape[1:]))), dtype=x.dtype)
    db_part = np.zeros((parts, f), dtype=x.dtype)
    _conv_weight_grad(x, dout2, kh, kw, stride, pad, dw_part, db_part)
    dw = dw_part.sum(axis=0).reshape(w.shape)
    db = db_part.sum(axis=0)
    dx = None
    if need_dx:
        dx = np.zeros(x.shape, dtype=x.dtype)
        w2 = np.ascontiguousarray(w, dtype=x.dtype).reshape(f, int(np.prod(w.shape[1:])))
        _conv_input_grad(dout2, w2, kh, kw, stride, pad, dx, parts)
    return dx, dw, db


# ------------------------------------------------------------------------ wide layers: im2col + BLAS
#: Convolutions with at least this many weights (F*C*KH*KW) are computed as matrix products: im2col
#: (the Numba kernel above) then NumPy's BLAS matmul, a few images at a time. For wide layers (Conv-2's
#: 64x64x3x3) the arithmetic dominates and a tuned GEMM beats plain loops several times over; for the
#: paper's 8x3x3x3 filters the direct loops (and the fused kernel) win, since there memory traffic
#: dominates and the im2col matrix is 9x the input.
GEMM_MIN_WEIGHTS = 4096
_GEMM_CHUNK_BYTES = 32 << 20  # im2col columns per chunk of images: stays far below the batch's size


def uses_gemm(w: np.ndarray) -> bool:
    return w.size >= GEMM_MIN_WEIGHTS


def _chunks(x: np.ndarray, k_len: int, p_len: int):
    per_image = max(1, k_len * p_len * x.itemsize)
    step = max(1, _GEMM_CHUNK_BYTES // per_image)
    return [(lo, min(lo + step, x.shape[0])) for lo in range(0, x.shape[0], step)]


def _gemm_forward(x, w, b, stride, pad):
    n, _, h, width = x.shape
    f, _, kh, kw = w.shape
    oh, ow = conv_output_size(h, kh, stride, pad), conv_output_size(width, kw, stride, pad)
    w2 = np.ascontiguousarray(w, dtype=x.dtype).reshape(f, w[0].size)
    out = np.empty((n, f, oh * ow), dtype=x.dtype)
    for lo, hi in _chunks(x, w2.shape[1], oh * ow):
        np.matmul(w2, im2col(x[lo:hi], kh, kw, stride, pad), out=out[lo:hi])
    out += b.astype(x.dtype)[None, :, None]
    return out.reshape(n, f, oh, ow)


def _gemm_backward(dout, x, w, stride, pad, need_dx):
    n, f, oh, ow = dout.shape
    kh, kw = w.shape[2:]
    w2 = np.ascontiguousarray(w, dtype=x.dtype).reshape(f, w[0].size)
    d2 = np.ascontiguousarray(dout, dtype=x.dtype).reshape(n, f, oh * ow)
    dw = np.zeros(w2.shape, dtype=x.dtype)
    dx = np.empty(x.shape, dtype=x.dtype) if need_dx else None
    for lo, hi in _chunks(x, w2.shape[1], oh * ow):
        cols = im2col(x[lo:hi], kh, kw, stride, pad)  # recomputed: cheaper than keeping 9x the input
        for i in range(hi - lo):
            dw += d2[lo + i] @ cols[i].T
        if need_dx:
            dx[lo:hi] = col2im(np.matmul(w2.T, d2[lo:hi]), x[lo:hi].shape, kh, kw, stride, pad)
    return dx, dw.reshape(w.shape), d2.sum(axis=(0, 2))


def conv2d_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int = 1, pad: int = 0):
    """x: (N, C, H, W), w: (F, C, KH, KW), b: (F,)  ->  out: (N, F, OH, OW), cache."""
    x = np.ascontiguousarray(x)
    out = _gemm_forward(x, w, b, stride, pad) if uses_gemm(w) else _loops_forward(x, w, b, stride, pad)
    return out, (x, w, stride, pad)


def conv2d_backward(dout: np.ndarray, cache, need_dx: bool = True):
    """dout: (N, F, OH, OW)  ->  dx: (N, C, H, W) or None, dw: (F, C, KH, KW), db: (F,)."""
    x, w, stride, pad = cache
    backward = _gemm_backward if uses_gemm(w) else _loops_backward
    return backward(dout, x, w, stride, pad, need_dx)
