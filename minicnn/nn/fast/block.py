"""Fused conv -> ReLU -> max-pool, and conv -> ReLU: same contracts as minicnn.nn.ref.block, one pass per image.

Why fuse: run layer by layer, the (N, F, OH, OW) conv output is written, read by ReLU, written again,
read by the pool: four trips through memory of an array much larger than the cache, for almost no
arithmetic. The fused kernels compute each image's conv map per filter in a small private buffer and
write only the pooled map (and what backward needs). Which kernel runs:
- stride 1, 2x2 stride-2 pool or no pool: the parity-split kernels (split.py), for any filter bank;
- stride 1, other pools: the padded-width plane kernels (plane.py), unless the filter bank is wide
  (fast.conv.uses_gemm);
- otherwise the separate fast ops (conv, relu, maxpool).
Pruned weights are skipped (skip.py); masked weights' gradients are not computed.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from minicnn.nn.fast._jit import num_threads
from minicnn.nn.fast.act import relu_backward, relu_forward
from minicnn.nn.fast.conv import conv2d_backward, conv2d_forward, uses_gemm
from minicnn.nn.fast.pair import can_pair, forward_pair
from minicnn.nn.fast.parity import split_sizes
from minicnn.nn.fast.plane import plane_backward, plane_forward
from minicnn.nn.fast.pool import maxpool2d_backward, maxpool2d_forward
from minicnn.nn.fast.skip import skip_plan, wanted
from minicnn.nn.fast.split import backward_split, forward_split
from minicnn.nn.ref.im2col import conv_output_size


class LayersCache(NamedTuple):
    """The separate ops' caches: conv, relu and (None without a pool) pool."""

    conv: tuple
    relu: object
    pool: object = None


class SplitCache(NamedTuple):
    """What backward_split reads: the input, weights, padding, whether pooled, the output (N, F, PH, PW)
    or (N, F, OH, OW), and the pooling codes (N, F, span) (a (1, 1, 1) dummy without a pool)."""

    x: np.ndarray
    w: np.ndarray
    pad: int
    pool: bool
    out: np.ndarray
    code: np.ndarray


class PlaneCache(NamedTuple):
    """What plane_backward reads: input, weights, padding, pool size and stride, output, argmax."""

    x: np.ndarray
    w: np.ndarray
    pad: int
    pool_k: int
    pool_s: int
    out: np.ndarray
    arg: np.ndarray


def conv_relu_pool_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, pad: int,
                           pool_kernel: int, pool_stride: int, for_backward: bool = True):
    """x: (N, C, H, W), w: (F, C, KH, KW), b: (F,)  ->  maxpool(relu(conv(x))): (N, F, PH, PW), cache.
    With for_backward=False (inference) the 2x2 kernel skips the pooling codes and the cache is None."""
    pool2 = pool_kernel == 2 and pool_stride == 2
    if stride != 1 or (uses_gemm(w) and not pool2):  # wide filter banks: matrix products win (see conv.py)
        conv_out, conv_cache = conv2d_forward(x, w, b, stride, pad)
        relu_out, relu_cache = relu_forward(conv_out)
        out, pool_cache = maxpool2d_forward(relu_out, pool_kernel, pool_stride)
        return out, LayersCache(conv_cache, relu_cache, pool_cache)
    n, _, h, width = x.shape
    f, _, kh, kw = w.shape
    oh, ow = conv_output_size(h, kh, 1, pad), conv_output_size(width, kw, 1, pad)
    ph, pw = conv_output_size(oh, pool_kernel, pool_stride, 0), conv_output_size(ow, pool_kernel, pool_stride, 0)
    x = np.ascontiguousarray(x)
    w = np.ascontiguousarray(w, dtype=x.dtype)
    out = np.empty((n, f, ph, pw), dtype=x.dtype)
    plan = skip_plan(w != 0)
    parts = max(1, min(num_threads(), n))
    if pool2:  # the usual pool: the parity-split kernel, which beats matrix products even for wide banks
        _, span, _ = split_sizes(h, width, pad, kh, kw, ph, True)
        code = np.empty((n, f, span) if for_backward else (1, 1, 1), dtype=np.int8)
        forward_split(x, w, b.astype(x.dtype), pad, True, for_backward, *plan, out, code, parts)
        return out, (SplitCache(x, w, pad, True, out, code) if for_backward else None)
    arg = np.empty((n, f, ph, pw), dtype=np.int32)
    plane_forward(x, w, b.astype(x.dtype), pad, pool_kernel, pool_stride, plan.tap_count, plan.taps, out, arg, parts)
    return out, PlaneCache(x, w, pad, pool_kernel, pool_stride, out, arg)


def conv_relu_pool_backward(dout: np.ndarray, cache, need_dx: bool = True, weight_mask=None):
    """dout: (N, F, PH, PW)  ->  dx: (N, C, H, W) or None, dw: (F, C, KH, KW), db: (F,).

    With ``weight_mask`` (F, C, KH, KW) of 0/1, dw is 0 where the mask is 0 (the reference multiplies
    by the mask; here the masked taps are simply not computed: pruning makes backward cheaper).
    """
    if isinstance(cache, LayersCache):
        return _layers_backward(dout, cache, need_dx, weight_mask)
    if isinstance(cache, SplitCache):
        return _split_backward(dout, cache, need_dx, weight_mask)
    x, w = cache.x, cache.w
    dout = np.ascontiguousarray(dout, dtype=x.dtype)
    dw_part, db_part, dx = _gradient_buffers(x, w, need_dx)
    plan = skip_plan(wanted(w, weight_mask))
    plane_backward(x, dout, cache.out, cache.arg, w, cache.pad, cache.pool_k, cache.pool_s, plan.tap_count,
                   plan.taps, dw_part, db_part, dx, need_dx)
    return (dx if need_dx else None), dw_part.sum(axis=0), db_part.sum(axis=0)


def conv_relu_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, pad: int):
    """x: (N, C, H, W), w: (F, C, KH, KW), b: (F,)  ->  relu(conv(x)): (N, F, OH, OW), cache.

    Stride 1 runs the parity-split kernels without the pool: the conv map of one image and filter
    is computed in L1 and written once, already through ReLU (no separate pass over the activation).
    """
    if stride != 1:
        conv_out, conv_cache = conv2d_forward(x, w, b, stride, pad)
        out, relu_cache = relu_forward(conv_out)
        return out, LayersCache(conv_cache, relu_cache)
    n, _, h, width = x.shape
    f, _, kh, kw = w.shape
    x = np.ascontiguousarray(x)
    w = np.ascontiguousarray(w, dtype=x.dtype)
    out = np.empty((n, f, conv_output_size(h, kh, 1, pad), conv_output_size(width, kw, 1, pad)), dtype=x.dtype)
    no_codes = np.empty((1, 1, 1), dtype=np.int8)
    forward_split(x, w, b.astype(x.dtype), pad, False, False, *skip_plan(w != 0), out, no_codes,
                  max(1, min(num_threads(), n)))
    return out, SplitCache(x, w, pad, False, out, no_codes)


def conv_relu_backward(dout: np.ndarray, cache, need_dx: bool = True, weight_mask=None):
    """dout: (N, F, OH, OW)  ->  dx: (N, C, H, W) or None, dw: (F, C, KH, KW), db: (F,); ``weight_mask``
    as in conv_relu_pool_backward."""
    if isinstance(cache, LayersCache):
        return _layers_backward(dout, cache, need_dx, weight_mask)
    return _split_backward(dout, cache, need_dx, weight_mask)


def conv_pair_forward(x: np.ndarray, w1: np.ndarray, b1: np.ndarray, pad1: int, w2: np.ndarray, b2: np.ndarray,
                      pad2: int) -> np.ndarray:
    """Inference through conv -> ReLU -> conv -> ReLU -> 2x2 max-pool (stride-1 convs): x (N, C, H, W)
    -> (N, F2, PH, PW). Dense 3x3 'same' convs of whole filter blocks run as one kernel that never writes
    the first conv's output (pair.py: Conv-2's two convs 1.05-1.19x); other layers one after the other."""
    x = np.ascontiguousarray(x)
    w1, w2 = np.ascontiguousarray(w1, dtype=x.dtype), np.ascontiguousarray(w2, dtype=x.dtype)
    if not can_pair(x, w1, pad1, w2, pad2):
        mid, _ = conv_relu_forward(x, w1, b1, 1, pad1)
        return conv_relu_pool_forward(mid, w2, b2, 1, pad2, 2, 2, for_backward=False)[0]
    n, _, h, width = x.shape
    out = np.empty((n, w2.shape[0], h // 2, width // 2), dtype=x.dtype)
    forward_pair(x, w1, b1.astype(x.dtype), w2, b2.astype(x.dtype), out, max(1, min(num_threads(), n)))
    return out


def _layers_backward(dout: np.ndarray, cache: LayersCache, need_dx: bool, weight_mask):
    """Backward through the separate ops: (pool,) ReLU, conv."""
    if cache.pool is not None:
        dout = maxpool2d_backward(dout, cache.pool)
    dx, dw, db = conv2d_backward(relu_backward(dout, cache.relu), cache.conv, need_dx)
    return dx, (dw if weight_mask is None else dw * weight_mask), db


def _gradient_buffers(x: np.ndarray, w: np.ndarray, need_dx: bool):
    """Per-thread partials of dw and db (summed after the kernel), and dx (a dummy without need_dx)."""
    parts = max(1, min(num_threads(), x.shape[0]))
    dw_part = np.zeros((parts,) + w.shape, dtype=x.dtype)
    db_part = np.zeros((parts, w.shape[0]), dtype=x.dtype)
    return dw_part, db_part, np.empty(x.shape if need_dx else (1, 1, 1, 1), dtype=x.dtype)


def _split_backward(dout: np.ndarray, cache: SplitCache, need_dx: bool, weight_mask):
    x, w = cache.x, cache.w
    dout = np.ascontiguousarray(dout, dtype=x.dtype)
    dw_part, db_part, dx = _gradient_buffers(x, w, need_dx)
    active = wanted(w, weight_mask)
    backward_split(x, dout, cache.out, cache.code, w, cache.pad, cache.pool, *skip_plan(active), dw_part, db_part,
                   dx, need_dx)
    dw = dw_part.sum(axis=0)
    if weight_mask is not None:
        dw *= active  # a 9-tap pass computes every tap of a live channel; drop the unwanted ones
    return (dx if need_dx else None), dw, db_part.sum(axis=0)
