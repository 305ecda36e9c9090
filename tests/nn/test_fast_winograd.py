"""Winograd's F(2x2, 3x3) (minicnn/nn/fast/winograd.py, _simd_winograd.py): each intrinsic equals its plain
twin bit for bit, the twins equal the transforms' matrices (B^T d B, A dY A^T, A^T M A, G g G^T) and a
matrix product, and the layers that take the Winograd passes equal the reference composition: exactly
on grids (every sum exact, ties everywhere), up to rounding on continuous values, and NaN or inf where
the reference has them (non-finite images take the direct passes)."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from _fast_compare import assert_close, f32, fast, grid, ref
from minicnn.nn.fast import _simd_winograd as simd
from minicnn.nn.fast import winograd
from minicnn.nn.fast._simd import STEP
from minicnn.nn.fast.split import blocked_passes

BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=np.float64)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.float64)


@njit
def _tiles_vector(src, t, odd_row, odd_col, down, v, at, plane):
    simd._tiles_step_vector(src, t, odd_row, odd_col, down, v, at, plane)


@njit
def _grad_tiles_vector(dy, at, quarter, v, v_at, plane):
    simd._grad_tiles_step_vector(dy, at, quarter, v, v_at, plane)


@njit
def _untile_vector(m, at, plane, bias, k, dst, d_at, quarter, count):
    simd._untile_step_vector(m, at, plane, bias, k, dst, d_at, quarter, count)


@njit
def _panel_8x3(a, a_at, depth, b, b_at, b_row, out, out_at, out_row):
    simd._matmul_panel_vector(a, a_at, depth, b, b_at, b_row, out, out_at, out_row, 8, 3, 0)


@njit
def _panel_4x4_accumulate(a, a_at, depth, b, b_at, b_row, out, out_at, out_row):
    simd._matmul_panel_vector(a, a_at, depth, b, b_at, b_row, out, out_at, out_row, 4, 4, 1)


DTYPES = [np.float32, np.float64]


@pytest.mark.parametrize("dtype", DTYPES)
def test_tiles_step_is_its_twin_and_bt_d_b(dtype, rng):
    src = rng.standard_normal(400).astype(dtype)
    odd_row, odd_col, down, plane = 90, 45, 20, 37
    got, want = (np.full(16 * plane + STEP + 5, 7.0, dtype) for _ in range(2))
    _tiles_vector(src, 3, odd_row, odd_col, down, got, 5, plane)
    simd.tiles_step_loops(src, 3, odd_row, odd_col, down, want, 5, plane)
    np.testing.assert_array_equal(got, want)
    for lane in (0, 9, STEP - 1):
        d = np.array([[src[3 + lane + (r % 2) * odd_row + (c % 2) * odd_col + (r // 2) * down + c // 2]
                       for c in range(4)] for r in range(4)], dtype=np.float64)
        np.testing.assert_allclose(want[5 + lane + np.arange(16) * plane], (BT @ d @ BT.T).ravel(), rtol=1e-6,
                                   atol=1e-6)
    assert np.all(want[:5] == 7.0)  # nothing outside the lanes written


@pytest.mark.parametrize("dtype", DTYPES)
def test_grad_tiles_step_is_its_twin_and_a_dy_at(dtype, rng):
    dy = rng.standard_normal(200).astype(dtype)
    dy[7] = -0.0
    quarter, plane = 40, 33
    got, want = (np.full(16 * plane + STEP, 7.0, dtype) for _ in range(2))
    _grad_tiles_vector(dy, 2, quarter, got, 0, plane)
    simd.grad_tiles_step_loops(dy, 2, quarter, want, 0, plane)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(want))  # -y1 negated alike, -0.0 kept
    for lane in (0, 5, STEP - 1):
        block = np.array([[dy[2 + (r * 2 + e) * quarter + lane] for e in range(2)] for r in range(2)], np.float64)
        np.testing.assert_allclose(want[lane + np.arange(16) * plane], (AT.T @ block @ AT).ravel(), rtol=1e-6,
                                   atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("count", [STEP, 5, 1])
def test_untile_step_is_its_twin_and_at_m_a(dtype, count, rng):
    """A masked last step (count < STEP) writes only its lanes."""
    m = rng.standard_normal(16 * 21 + STEP).astype(dtype)
    bias = rng.standard_normal(3).astype(dtype)
    got, want = (np.full(4 * 30 + STEP, 7.0, dtype) for _ in range(2))
    _untile_vector(m, 1, 21, bias, 2, got, 3, 30, count)
    simd.untile_step_loops(m, 1, 21, bias, 2, want, 3, 30, count)
    np.testing.assert_array_equal(got, want)
    written = np.zeros(want.size, bool)
    for lane in range(count):
        tile = m[1 + lane + np.arange(16) * 21].astype(np.float64).reshape(4, 4)
        at = 3 + lane + np.arange(4) * 30
        np.testing.assert_allclose(want[at], (AT @ tile @ AT.T).ravel() + bias[2], rtol=1e-6, atol=1e-6)
        written[at] = True
    assert np.all(want[~written] == 7.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul_panels_are_their_twins_and_products(dtype, rng):
    a, b = rng.standard_normal(8 * 40 + 9).astype(dtype), rng.standard_normal(40 * 70 + 5).astype(dtype)
    got, want = (np.full(8 * 60 + 2, 7.0, dtype) for _ in range(2))
    _panel_8x3(a, 9, 40, b, 5, 70, got, 2, 60)
    simd.matmul_panel_loops(a, 9, 40, b, 5, 70, want, 2, 60, 8, 3, 0)
    np.testing.assert_array_equal(got, want)
    product = a[9:].reshape(8, 40).astype(np.float64) @ b[5:].reshape(40, 70)[:, :48].astype(np.float64)
    np.testing.assert_allclose(want[2:].reshape(8, 60)[:, :48], product, rtol=1e-4, atol=1e-4)
    assert np.all(want[2:].reshape(8, 60)[:, 48:] == 7.0) and want[0] == want[1] == 7.0
    start = rng.standard_normal(4 * 64).astype(dtype)  # accumulate: the sums start from out's values
    got, want = start.copy(), start.copy()
    _panel_4x4_accumulate(a, 0, 40, b, 0, 70, got, 0, 64)
    simd.matmul_panel_loops(a, 0, 40, b, 0, 70, want, 0, 64, 4, 4, 1)
    np.testing.assert_array_equal(got, want)
    product = a[:160].reshape(4, 40).astype(np.float64) @ b[:2800].reshape(40, 70)[:, :64].astype(np.float64)
    np.testing.assert_allclose(want.reshape(4, 64), start.reshape(4, 64) + product, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("flip", [False, True])
def test_filter_transform_is_g_g_gt(flip, rng):
    w = f32(rng.standard_normal((5, 3, 3, 3)))
    u = winograd.filter_transform(w, flip)
    assert u.shape == ((16, 3, 5) if flip else (16, 5, 3))
    for f in range(5):
        for c in range(3):
            g = w[f, c, ::-1, ::-1] if flip else w[f, c]
            want = (G @ g.astype(np.float64) @ G.T).ravel()
            got = u[:, c, f] if flip else u[:, f, c]
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_dw_from_products_is_gt_du_g(rng):
    du = f32(rng.standard_normal((16, 3, 4)))
    dw = f32(rng.standard_normal((4, 3, 3, 3)))
    start = dw.copy()
    winograd.dw_from_products(du, dw)
    for f in range(4):
        for c in range(3):
            want = start[f, c] + G.T @ du[:, c, f].astype(np.float64).reshape(4, 4) @ G
            np.testing.assert_allclose(dw[f, c], want, rtol=1e-5, atol=1e-6)


WINOGRAD_GRID = [
    # (N, C, H, W, F, pad): 32 channels and 64 filters (every pass Winograd); odd sizes (a part chunk,
    # the last row or column not pooled); 64 channels and 32 filters (the weight gradient direct)
    (3, 32, 8, 8, 64, 1),
    (2, 32, 9, 13, 64, 1),
    (2, 32, 7, 6, 64, 0),
    (2, 32, 10, 7, 64, 2),
    (2, 64, 6, 6, 32, 1),
]


def _layer(case, rng):
    n, c, h, w, f, p = case
    x, wt, b = grid(rng, (n, c, h, w), 4, 2), grid(rng, (f, c, 3, 3), 4, 2), grid(rng, f, 4, 2)
    wt[wt == 0] = 0.25  # every channel live
    assert blocked_passes(wt) and winograd.winograd_fits(f, c, 3, 3)
    assert winograd.weight_grad_fits(f, c, 3, 3) == (f % 64 == 0)
    assert winograd.winograd_fits(c, f, 3, 3)  # the input gradient's
    return x, wt, b, p


def _check_exact(x, wt, b, p, pool, rng, mask=None, bad=None):
    if pool:
        out_r, cache_r = ref.conv_relu_pool_forward(x, wt, b, 1, p, 2, 2)
        out_f, cache_f = fast.conv_relu_pool_forward(x, wt, b, 1, p, 2, 2)
        inference, _ = fast.conv_relu_pool_forward(x, wt, b, 1, p, 2, 2, for_backward=False)
        np.testing.assert_array_equal(inference, out_r)
    else:
        out_r, cache_r = ref.conv_relu_forward(x, wt, b, 1, p)
        out_f, cache_f = fast.conv_relu_forward(x, wt, b, 1, p)
    np.testing.assert_array_equal(out_f, out_r)
    g = grid(rng, out_r.shape, 8)
    if bad is not None:  # on an output the ReLU passes (where it does not, the reference makes NaN of bad * 0)
        g[tuple(np.argwhere(out_r > 0)[0])] = bad
    backward_r = ref.conv_relu_pool_backward if pool else ref.conv_relu_backward
    backward_f = fast.conv_relu_pool_backward if pool else fast.conv_relu_backward
    with np.errstate(invalid="ignore"):  # inf * 0 in the reference's ReLU mask
        want = backward_r(g, cache_r, True, mask)
    for name, got, want_ in zip(("dx", "dw", "db"), backward_f(g, cache_f, True, mask), want):
        np.testing.assert_array_equal(got, want_, err_msg=name)
    _, dw, db = backward_f(g, cache_f, False, mask)  # without dx: the weight gradient alone
    np.testing.assert_array_equal(dw, want[1])
    np.testing.assert_array_equal(db, want[2])


@pytest.mark.parametrize("case", WINOGRAD_GRID, ids=lambda c: "-".join(map(str, c)))
@pytest.mark.parametrize("pool", [True, False])
def test_winograd_layers_exact_on_grid(case, pool, rng):
    """The conv and both gradients through the Winograd passes equal the reference exactly: on grid values
    every transform and sum is exact, so only a wrong index, tile or transform could differ."""
    x, wt, b, p = _layer(case, rng)
    _check_exact(x, wt, b, p, pool, rng)


@pytest.mark.parametrize("dead_pair", [False, True])
@pytest.mark.parametrize("pool", [True, False])
def test_winograd_layer_pruned_mask(dead_pair, pool, rng):
    """A pruned bank dense enough for the 9-tap passes: the weight gradient of pruned weights is 0. With a
    (filter, channel) pair pruned whole the blocked 9-tap passes step aside, the Winograd ones do not."""
    x, wt, b, p = _layer(WINOGRAD_GRID[0], rng)
    mask = f32(rng.random(wt.shape) > 0.5)
    mask[:, :, 1, 1] = 1.0  # every channel live
    if dead_pair:
        mask[5, 7] = 0.0
    wt *= mask
    assert blocked_passes(wt) != dead_pair
    _check_exact(x, wt, b, p, pool, rng, mask=mask)


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_winograd_layer_non_finite(bad, rng):
    """A non-finite pixel, upstream gradient or weight: what the reference gives (the image, or the whole
    bank, takes the direct passes: the transforms would spread a NaN over tiles and make NaNs of infs)."""
    x, wt, b, p = _layer(WINOGRAD_GRID[0], rng)
    wt = np.abs(wt)  # positive weights: the conv cells that read the pixel are inf or -inf (or NaN), no mix
    x_bad = x.copy()
    x_bad[1, 3, 2, 5] = bad
    with np.errstate(invalid="ignore"):
        _check_exact(x_bad, wt, b, p, True, rng)  # the pixel
        _check_exact(x, wt, b, p, True, rng, bad=bad)  # an upstream gradient
        wt_bad = wt.copy()
        wt_bad[3, 2, 1, 1] = bad
        out_r, _ = ref.conv_relu_pool_forward(x, wt_bad, b, 1, p, 2, 2)
        out_f, _ = fast.conv_relu_pool_forward(x, wt_bad, b, 1, p, 2, 2)
    assert not np.isfinite(out_r).all()
    np.testing.assert_array_equal(out_f, out_r)


@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_winograd_layer_direct_image_between_winograd_ones(bad, rng):
    """A bank with a dead (filter, channel) pair: an image with a non-finite gradient takes the
    filter-by-filter input gradient, the images after it the Winograd one, in the same buffers."""
    x, wt, b, p = _layer((4, 32, 8, 8, 64, 1), rng)
    wt[5, 7] = 0.0
    assert not blocked_passes(wt)
    _check_exact(x, wt, b, p, True, rng, bad=bad)


@pytest.mark.parametrize("dtype, tolerance", [(np.float32, None), (np.float64, 1e-11)])
def test_winograd_conv2_layer_continuous(dtype, tolerance, rng):
    """Conv-2's 64x64 layer on continuous values: equal to the reference up to rounding (float64: to
    1e-11, far below any indexing error)."""
    x = rng.standard_normal((2, 64, 12, 12)).astype(dtype)
    wt, b = (rng.standard_normal((64, 64, 3, 3)) * 0.05).astype(dtype), (rng.standard_normal(64) * 0.1).astype(dtype)
    out_r, cache_r = ref.conv_relu_pool_forward(x, wt, b, 1, 1, 2, 2)
    out_f, cache_f = fast.conv_relu_pool_forward(x, wt, b, 1, 1, 2, 2)
    g = rng.standard_normal(out_r.shape).astype(dtype)
    pairs = [("forward", out_f, out_r)] + list(zip(("dx", "dw", "db"), fast.conv_relu_pool_backward(g, cache_f),
                                                   ref.conv_relu_pool_backward(g, cache_r)))
    for what, got, want in pairs:
        if tolerance is None:
            assert_close(got, want, f"winograd {what}")
        else:
            np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance, err_msg=what)
