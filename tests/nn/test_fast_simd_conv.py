"""The 9-tap passes with their sums in vector registers (minicnn/nn/fast/_simd_conv.py): each intrinsic
equals its plain twin bit for bit (odd lengths: a masked last step), the twins equal the filter-by-filter
passes of conv_passes.py up to rounding, and the layers that run them (a whole block of filters, the
filters past it, every channel live or not) equal the reference composition exactly on grids."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from _fast_compare import assert_close, f32, fast, grid, ref
from minicnn.nn.fast import _simd_conv as simd_conv
from minicnn.nn.fast.conv_passes import conv_quarters, input_grad_quarters
from minicnn.nn.fast.parity import aligned_zeros, fill_quarters, line_entries, round_up, split_sizes
from minicnn.nn.fast.skip import skip_plan
from minicnn.nn.fast.split import blocked_passes


def split_image(x, pad, out_rows, pool):
    """The quarter planes of image 0 of x (N, C, H, W) as split.py lays them out: (planes, WH, span)."""
    _, c_in, h, width = x.shape
    wh, span, plane_len = split_sizes(h, width, pad, 3, 3, out_rows, pool)
    planes = aligned_zeros((2, 2, c_in, round_up(plane_len, line_entries(x))), x)
    fill_quarters(x, 0, pad, wh, planes, 0)
    return planes, wh, span


@njit
def _conv_block_compiled(planes, plane_row, c_in, w, b, f0, conv, span, wh):
    simd_conv._conv_block_vector(planes, plane_row, c_in, w, b, f0, 4, conv, span, wh)


@njit
def _input_grad_block_compiled(dconv, row, n_filt, w, c0, dplanes, plane_row, c_in, wh, lead, stop):
    simd_conv._input_grad_block_vector(dconv, row, n_filt, w, c0, 4, dplanes, plane_row, c_in, wh, lead, stop)


# (C, H, W, pad, pooled): CIFAR's 32x32 (whole vector steps) and odd sizes (a masked last step)
SHAPES = [(5, 32, 32, 1, True), (3, 11, 9, 1, True), (6, 9, 13, 2, False), (4, 7, 7, 0, False)]


def _case(shape, dtype, rng):
    c_in, h, width, pad, pool = shape
    x = rng.standard_normal((1, c_in, h, width)).astype(dtype)
    oh = h + 2 * pad - 2
    planes, wh, span = split_image(x, pad, oh // 2 if pool else oh, pool)
    return x, planes, wh, span


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "-".join(map(str, s)))
def test_conv_block_equals_its_twin_and_the_filter_pass(shape, dtype, rng):
    """Four filters' split conv maps: the intrinsic and its twin bit for bit (entries past span
    untouched), both equal to conv_quarters filter by filter up to rounding; a NaN pixel reaches both
    alike."""
    x, planes, wh, span = _case(shape, dtype, rng)
    n_filt, c_in = 6, shape[0]
    w = rng.standard_normal((n_filt, c_in, 3, 3)).astype(dtype)
    b = rng.standard_normal(n_filt).astype(dtype)
    for poison in (False, True):
        if poison:
            planes[1, 0, c_in - 1, wh + 2] = np.nan
        got = np.full(4 * 4 * span + 5, -7.0, dtype)
        want = got.copy()
        flat_planes, flat_w = planes.reshape(-1), w.reshape(-1)
        _conv_block_compiled(flat_planes, planes.shape[3], c_in, flat_w, b, 2, got, span, wh)
        simd_conv.conv_block_loops(flat_planes, planes.shape[3], c_in, flat_w, b, 2, 4, want, span, wh)
        np.testing.assert_array_equal(got, want)
        assert np.all(got[4 * 4 * span:] == -7.0)
        if not poison:
            plan = skip_plan(np.ones(w.shape, bool))
            for k in range(4):
                one = aligned_zeros((2, 2, span), x)
                conv_quarters(planes, w, b, 2 + k, *plan, wh, one)
                np.testing.assert_allclose(got[k * 4 * span:(k + 1) * 4 * span], one.reshape(-1),
                                           rtol=1e-4 if dtype == np.float32 else 1e-12, atol=1e-4)
        else:
            assert np.isnan(got[: 4 * 4 * span]).any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "-".join(map(str, s)))
def test_input_grad_block_equals_its_twin_and_the_filter_pass(shape, dtype, rng):
    """Four channels' input gradient over every filter: the intrinsic and its twin bit for bit, only the
    positions asked for written; both equal to input_grad_quarters summed over the filters."""
    x, planes, wh, span = _case(shape, dtype, rng)
    n_filt, c_in = 5, 8
    plane_row = planes.shape[3]
    lead = wh + 1
    row = lead + span + lead
    w = rng.standard_normal((n_filt, c_in, 3, 3)).astype(dtype)
    maps = np.zeros(n_filt * 4 * row + 16, dtype)  # 16: what the last step may read past
    dconv = maps[: n_filt * 4 * row].reshape(n_filt, 2, 2, row)
    dconv[..., lead:lead + span] = rng.standard_normal((n_filt, 2, 2, span))
    stop = span + lead
    got = np.full((2, 2, c_in, plane_row), -7.0, dtype)
    want = got.copy()
    _input_grad_block_compiled(maps, row, n_filt, w.reshape(-1), 4, got.reshape(-1), plane_row, c_in, wh, lead, stop)
    simd_conv.input_grad_block_loops(maps, row, n_filt, w.reshape(-1), 4, 4, want.reshape(-1), plane_row, c_in, wh,
                                     lead, stop)
    np.testing.assert_array_equal(got, want)
    assert np.all(got[:, :, :4] == -7.0) and np.all(got[:, :, 4:, stop:] == -7.0)
    by_filter = np.zeros((2, 2, c_in, plane_row), dtype)
    for f in range(n_filt):
        input_grad_quarters(dconv[f], lead, w, f, True, wh, by_filter)
    np.testing.assert_allclose(got[:, :, 4:, :stop], by_filter[:, :, 4:, :stop],
                               rtol=1e-4 if dtype == np.float32 else 1e-12, atol=1e-4)


def test_blocked_passes_decision(rng):
    """The blocked passes run for dense 3x3 banks only: not with a channel whose nine weights are all
    pruned, not for other kernel sizes, not below the 9-tap density."""
    w = f32(rng.standard_normal((8, 4, 3, 3)))
    assert blocked_passes(w)
    dead = w.copy()
    dead[3, 2] = 0.0
    assert not blocked_passes(dead)
    assert not blocked_passes(f32(rng.standard_normal((8, 4, 5, 5))))
    sparse = w.copy()
    sparse[:, :, 1:, :] = 0.0  # 3 of 9 weights per channel left: every channel live, 33 % dense
    assert blocked_passes(sparse)
    sparse[:, :, 0, 1:] = 0.0  # 1 of 9: below the 9-tap density
    assert not blocked_passes(sparse)


BLOCKED_GRID = [
    # (N, C, H, W, F, pad): whole blocks of 4 filters and channels, filters past the last block, odd sizes
    (2, 8, 32, 32, 8, 1),
    (3, 4, 11, 9, 6, 1),
    (2, 8, 9, 13, 5, 2),
    (2, 6, 10, 10, 4, 0),  # 6 channels: the input gradient filter by filter, the rest blocked
]


@pytest.mark.parametrize("case", BLOCKED_GRID, ids=lambda c: "-".join(map(str, c)))
@pytest.mark.parametrize("pool", [True, False])
@pytest.mark.parametrize("dead_channel", [False, True])
def test_blocked_layers_exact_on_grid(case, pool, dead_channel, rng):
    """conv -> ReLU (-> 2x2 pool) with the blocked passes (or, with one channel's weights all pruned, the
    filter-by-filter ones): output and every gradient exactly the reference's (grid values: every sum
    exact, ties everywhere)."""
    n, c, h, w, f, p = case
    x = grid(rng, (n, c, h, w), 4, 2)
    wt = grid(rng, (f, c, 3, 3), 4, 2)
    wt[wt == 0] = 0.25  # every channel live
    if dead_channel:
        wt[f - 1, 0] = 0.0
    b = grid(rng, f, 4, 2)
    assert blocked_passes(wt) != dead_channel
    if pool:
        (out_r, cache_r), (out_f, cache_f) = (ref.conv_relu_pool_forward(x, wt, b, 1, p, 2, 2),
                                              fast.conv_relu_pool_forward(x, wt, b, 1, p, 2, 2))
        g = grid(rng, out_r.shape, 8)
        got, want = fast.conv_relu_pool_backward(g, cache_f), ref.conv_relu_pool_backward(g, cache_r)
        inference, _ = fast.conv_relu_pool_forward(x, wt, b, 1, p, 2, 2, for_backward=False)
        np.testing.assert_array_equal(inference, out_r)
    else:
        (out_r, cache_r), (out_f, cache_f) = ref.conv_relu_forward(x, wt, b, 1, p), fast.conv_relu_forward(x, wt, b, 1, p)
        g = grid(rng, out_r.shape, 8)
        got, want = fast.conv_relu_backward(g, cache_f), ref.conv_relu_backward(g, cache_r)
    np.testing.assert_array_equal(out_f, out_r)
    for name, a, b_ in zip(("dx", "dw", "db"), got, want):
        np.testing.assert_array_equal(a, b_, err_msg=name)


def test_blocked_layer_continuous(rng):
    """A Conv-2-like 64x64 layer on continuous values: equal to the reference up to float32 rounding."""
    x = f32(rng.standard_normal((2, 64, 12, 12)))
    wt, b = f32(rng.standard_normal((64, 64, 3, 3)) * 0.05), f32(rng.standard_normal(64) * 0.1)
    out_r, cache_r = ref.conv_relu_pool_forward(x, wt, b, 1, 1, 2, 2)
    out_f, cache_f = fast.conv_relu_pool_forward(x, wt, b, 1, 1, 2, 2)
    assert_close(out_f, out_r, "blocked forward", terms=None)
    g = f32(rng.standard_normal(out_r.shape))
    for got, want, what in zip(fast.conv_relu_pool_backward(g, cache_f), ref.conv_relu_pool_backward(g, cache_r),
                               ("dx", "dw", "db")):
        assert_close(got, want, f"blocked {what}")
