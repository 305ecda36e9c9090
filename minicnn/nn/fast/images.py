"""Where the whole-model op (convnet.py) reads its images: a float batch, or a dataset's uint8 images by rows.

The op takes ``pixels, rows, table, offsets``: either a float batch (N, C, H, W) with rows = 0 .. N-1
(table and offsets unused), or a PixelBatch (minicnn.nn.pixels): a dataset split (M, C, H, W) uint8, the
batch's rows of it, the table (C, 256) of every pixel value's normalised float, and where that table is
v / 255 - offsets[c] (pixels.affine_offsets: the default normalisation's), the offsets (C,): those
values are then computed as the image is unpacked (_simd.scale_split_step, 2.4x faster than the
table's gather), else (0,). The functions below read an
image either way; Numba compiles the op once per kind of pixels, each with only its own branch (the
dispatch is on the pixels' type, at compile time: see the overloads at the end). A uint8 image is 3 KB where its floats
are 12 KB, and it is normalised as it is unpacked: no gathered copy, no float batch.
"""

from __future__ import annotations

import numpy as np
from numba import types
from numba.extending import overload

from minicnn.nn.fast._jit import serial, stage
from minicnn.nn.fast._simd import STEP, lookup_split_step, prefetch, scale_split_step
from minicnn.nn.fast.conv_passes import all_finite
from minicnn.nn.fast.parity import fill_quarters, run_places


@serial
def fill_quarters_table(images, row, table, offsets, pad, wh, planes, at):
    """fill_quarters of image ``row`` of images (M, C, H, W) uint8, C-contiguous, pixel value v of
    channel c written as table[c, v]. Rows of whole vector steps (CIFAR's 32 pixels) go to
    _fill_steps (their values computed where offsets (C,) says the table is v / 255 - offsets[c]);
    others pixel by pixel, through the table."""
    c_in, h, width = images.shape[1], images.shape[2], images.shape[3]
    if width % (2 * STEP) == 0:
        _fill_steps(images, row, table, offsets, pad, wh, planes, at)
        return
    plane_row = planes.shape[3]
    src, dst = images.reshape(images.size), planes.reshape(planes.size)
    for c in range(c_in):
        lut = table[c]
        for y in range(h):
            r, even_col, even_start, odd_col, odd_start = run_places(y + pad, pad, wh, at)
            even = ((r * 2 + even_col) * c_in + c) * plane_row + even_start
            odd = ((r * 2 + odd_col) * c_in + c) * plane_row + odd_start
            first = ((row * c_in + c) * h + y) * width
            for u in range(width // 2):
                dst[even + u] = lut[src[first + 2 * u]]
                dst[odd + u] = lut[src[first + 2 * u + 1]]
            if width % 2:
                dst[even + width // 2] = lut[src[first + width - 1]]


@stage  # inlined into fill_quarters_table (as a call per image: 1.1x slower)
def _fill_steps(images, row, table, offsets, pad, wh, planes, at):
    """fill_quarters_table for rows of whole vector steps: flat indices, as parity._fill_quarters_flat,
    and 2*STEP pixels of a row at a time, computed (scale_split_step) where offsets (C,) says the table
    is v / 255 - offsets[c], else looked up (lookup_split_step: one gather, as fast as unpacking the
    floats, from a quarter of the bytes; looked up one by one, 3x as long). The loop over a row's steps
    is the outermost: as the innermost (one trip for CIFAR) the unpacking took 1.2x as long."""
    c_in, h, width = images.shape[1], images.shape[2], images.shape[3]
    plane_row = planes.shape[3]
    src, dst = images.reshape(images.size), planes.reshape(planes.size)
    computed = offsets.size > 0
    for k in range(width // (2 * STEP)):
        for c in range(c_in):
            lut = table[c]
            offset = offsets[c] if computed else lut[0]
            for y in range(h):
                r, even_col, even_start, odd_col, odd_start = run_places(y + pad, pad, wh, at)
                even = ((r * 2 + even_col) * c_in + c) * plane_row + even_start + STEP * k
                odd = ((r * 2 + odd_col) * c_in + c) * plane_row + odd_start + STEP * k
                first = ((row * c_in + c) * h + y) * width + 2 * STEP * k
                if computed:
                    scale_split_step(src, first, offset, dst, even, dst, odd)
                else:
                    lookup_split_step(src, first, lut, dst, even, dst, odd)


def fill_image(pixels, row, table, offsets, pad, wh, planes, at):
    """Image ``row`` of pixels into the quarter planes at ``at`` (see parity.fill_quarters): floats as
    they are, uint8 through table (computed where offsets says how, see fill_quarters_table)."""
    if pixels.dtype == np.uint8:
        fill_quarters_table(pixels, row, table, offsets, pad, wh, planes, at)
    else:
        fill_quarters(pixels, row, pad, wh, planes, at)


def image_finite(pixels, row, table_finite):
    """Whether image ``row`` holds no inf or NaN (see conv_passes.all_finite): for uint8 pixels,
    ``table_finite`` (whether the whole table is finite; a table with an inf for one value makes every
    image take the exact path that any value allows)."""
    if pixels.dtype == np.uint8:
        return table_finite
    return all_finite(pixels, row)


@stage  # inlined into the op's loop
def prefetch_images(pixels, rows, first, stop, line):
    """Asks for images rows[first .. stop - 1] of pixels (N, C, H, W, C-contiguous; ``line`` entries a
    cache line) in L2, a line at a time, while the group before them is computed (the batch streams
    from memory, and a group of a pruned model is too short for the hardware's prefetching)."""
    image_len = pixels.shape[1] * pixels.shape[2] * pixels.shape[3]
    flat = pixels.reshape(pixels.size)
    for i in range(first, stop):
        for e in range(rows[i] * image_len, (rows[i] + 1) * image_len, line):
            prefetch(flat, e)


# Compiled code calling fill_image or image_finite gets the branch of its pixels' type only, chosen as
# the caller is typed: a plain ``if`` on the dtype would type both branches with both kinds of pixels
# (and table[c, v] means nothing for a float v). Without Numba the functions above run as they are.


@overload(fill_image, inline="always")
def _fill_image_typed(pixels, row, table, offsets, pad, wh, planes, at):
    if pixels.dtype == types.uint8:
        return lambda pixels, row, table, offsets, pad, wh, planes, at: fill_quarters_table(
            pixels, row, table, offsets, pad, wh, planes, at)
    return lambda pixels, row, table, offsets, pad, wh, planes, at: fill_quarters(pixels, row, pad, wh, planes, at)


@overload(image_finite, inline="always")
def _image_finite_typed(pixels, row, table_finite):
    if pixels.dtype == types.uint8:
        return lambda pixels, row, table_finite: table_finite
    return lambda pixels, row, table_finite: all_finite(pixels, row)
