"""Two 3x3 convs in a row for inference, conv -> ReLU -> conv -> ReLU -> 2x2 max-pool, one image at a time.

Run as two layers, the first conv's output (Conv-2: 64 maps of 32x32, 134 MB for a batch of 512) goes to
memory and comes back to be split into the second conv's quarter planes. Here each image's first conv
map is written, through ReLU, straight into those planes, in L2: with padding 1 on both convs and even
sizes, the first map's conv quarter (r, e) at q is the second's padded pixel (2yy + r + 1, 2u + e + 1),
i.e. quarter plane (1 - r, 1 - e) at q + r*WH + e (parity.py), one shifted run per quarter; the junk
column u = W/2 of each row lands on the left or right padding and is written as 0. Both convs run the
blocked 9-tap passes (_simd_conv.py), or Winograd's products where they have many channels (winograd.py,
as split.py's layers: Conv-2's second conv, both of Conv-4's second pair), so the pair takes dense 3x3
banks of whole blocks of filters (can_pair); block.conv_pair_forward runs the two layers otherwise.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from minicnn.nn.fast._jit import kernel, serial
from minicnn.nn.fast._simd_conv import BLOCK
from minicnn.nn.fast.conv_passes import all_finite
from minicnn.nn.fast.parity import aligned_zeros, fill_quarters, line_entries, round_up, split_sizes
from minicnn.nn.fast.pool2 import pool2_values
from minicnn.nn.fast.split import blocked_passes, conv_filter_block
from minicnn.nn.fast.winograd import (CHUNK, conv_winograd, filter_transform, finite_filters, tiles_plane_len,
                                      winograd_fits)


def can_pair(x: np.ndarray, w1: np.ndarray, pad1: int, w2: np.ndarray, pad2: int) -> bool:
    """Whether forward_pair takes these layers: x (N, C, H, W) of even H and W, both convs 3x3 with
    padding 1, dense enough for the blocked passes, their filter counts whole blocks."""
    h, width = x.shape[2], x.shape[3]
    return (pad1 == 1 and pad2 == 1 and h % 2 == 0 and width % 2 == 0 and w2.shape[1] == w1.shape[0]
            and w1.shape[0] % BLOCK == 0 and w2.shape[0] % BLOCK == 0 and blocked_passes(w1) and blocked_passes(w2))


@kernel
def forward_pair(x, w1, b1, w2, b2, out, n_parts):
    """out (N, F2, H/2, W/2) = maxpool2x2(relu(conv(relu(conv(x, w1, b1, pad 1)), w2, b2, pad 1))) for x
    (N, C, H, W), w1 (F1, C, 3, 3), w2 (F2, F1, 3, 3) as can_pair requires."""
    n_img, c_in, h, width = x.shape
    n_mid, n_out = w1.shape[0], w2.shape[0]
    wh, span1, plane_len = split_sizes(h, width, 1, 3, 3, h, False)
    _, span2, _ = split_sizes(h, width, 1, 3, 3, out.shape[2], True)
    # many channels: Winograd's products (for finite pixels; they read the planes a chunk past the map)
    first_winograd = winograd_fits(n_mid, c_in, 3, 3) and finite_filters(w1)
    second_winograd = winograd_fits(n_out, n_mid, 3, 3) and finite_filters(w2)
    if first_winograd or second_winograd:
        plane_len = tiles_plane_len(plane_len, max(span1, span2), wh)
    plane_row = round_up(plane_len, line_entries(x))
    u1 = filter_transform(w1, False) if first_winograd else np.empty((16, 0, 0), dtype=x.dtype)
    u2 = filter_transform(w2, False) if second_winograd else np.empty((16, 0, 0), dtype=x.dtype)
    keep = np.empty(span1, dtype=np.bool_)  # the first map's entries that are pixels (not junk columns)
    for q in range(span1):
        keep[q] = q % wh < width // 2
    per_part = (n_img + n_parts - 1) // n_parts
    for t in prange(n_parts):
        planes = aligned_zeros((2, 2, c_in, plane_row), x)
        mid = aligned_zeros((2, 2, n_mid, plane_row), x)  # the second conv's planes: borders stay 0
        conv1 = aligned_zeros((n_mid if first_winograd else BLOCK, 2, 2, span1), x)
        conv2 = aligned_zeros((n_out if second_winograd else BLOCK, 2, 2, span2), x)
        tiles1 = aligned_zeros((16, c_in if first_winograd else 0, CHUNK), x)
        products1 = aligned_zeros((16, n_mid if first_winograd else 0, CHUNK), x)
        tiles2 = aligned_zeros((16, n_mid if second_winograd else 0, CHUNK), x)
        products2 = aligned_zeros((16, n_out if second_winograd else 0, CHUNK), x)
        pooled = np.empty(span2, dtype=x.dtype)
        for n in range(t * per_part, min(n_img, (t + 1) * per_part)):
            fill_quarters(x, n, 1, wh, planes, 0)
            finite = (first_winograd or second_winograd) and all_finite(x, n)
            if first_winograd and finite:
                conv_winograd(planes, wh, span1, u1, b1, tiles1, products1, conv1)
                for f in range(n_mid):
                    relu_into_planes(conv1[f], keep, wh, mid, f)
            else:
                for f0 in range(0, n_mid, BLOCK):
                    conv_filter_block(planes, w1, b1, f0, wh, conv1)
                    for k in range(BLOCK):
                        relu_into_planes(conv1[k], keep, wh, mid, f0 + k)
            if second_winograd and finite:
                conv_winograd(mid, wh, span2, u2, b2, tiles2, products2, conv2)
                for f in range(n_out):
                    pool2_values(conv2[f], wh, pooled, out, n, f)
            else:
                for f0 in range(0, n_out, BLOCK):
                    conv_filter_block(mid, w2, b2, f0, wh, conv2)
                    for k in range(BLOCK):
                        pool2_values(conv2[k], wh, pooled, out, n, f0 + k)


@serial
def relu_into_planes(conv, keep, wh, planes, c):
    """planes[1 - r, 1 - e, c, q + r*WH + e] = relu(conv[r, e, q]) where keep[q], else 0: a split conv
    map (2, 2, span) of padding 1 as channel c of the next 3x3, padding-1 conv's quarter planes
    (see the module's docstring). NaN stays NaN."""
    zero = planes.dtype.type(0.0)
    for r in range(2):
        for e in range(2):
            src, dst = conv[r, e], planes[1 - r, 1 - e, c, r * wh + e:]
            for q in range(keep.size):
                v = src[q]
                dst[q] = (zero if v <= zero else v) if keep[q] else zero
