"""A sparse filter's passes (minicnn/nn/fast/_simd_taps.py): each intrinsic equals its plain twin bit for
bit (signed zeros, ties, masked last steps, NaN and inf), the twins equal the definitions written in
NumPy (conv quarters read by tap, then max-pool with codes; code-masked gradient sums), and the bias's
sum is pool2's. The whole-model op that takes them is held to the reference in test_fast_convnet.py."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from minicnn.nn.fast import _simd_taps as taps
from minicnn.nn.fast.pool2 import zero_blocked_and_sum
from minicnn.nn.fast.skip import tap_lists

DTYPES = [np.float32, np.float64]
C_IN, WH, ROW = 3, 17, 1400  # channels, a quarter-plane row, a channel's plane: room past every read


@njit
def _window_vector(planes, offsets, weights, count, b, f, at, pooled, code):
    return taps._taps_window_codes_vector(planes, offsets, weights, count, b, f, at, pooled, code)


@njit
def _weight_grad(planes, offsets, count, code, grad, out):
    taps.taps_weight_grad(planes, offsets, count, code, grad, out)


def sparse_filters(rng, dtype, n_filt=6):
    """Small-integer weights (F, C, 3, 3), filter f keeping f + 1 taps at random (6: two gradient passes),
    their SkipPlan lists, tap tables, a bias, and flat quarter planes (2, 2, C, ROW) of small integers."""
    w = np.zeros((n_filt, C_IN, 3, 3), dtype)
    for f in range(n_filt):
        kept = rng.choice(C_IN * 9, size=f + 1, replace=False)
        w[f].reshape(-1)[kept] = rng.choice([-2, -1, 1, 2], size=f + 1)
    count, tap_list = tap_lists(w != 0)
    offsets = taps.tap_offsets(count, tap_list, C_IN, 3, 3, ROW, WH)
    weights = taps.tap_weights(w, count, tap_list)
    b = rng.integers(-2, 3, n_filt).astype(dtype)
    planes = rng.integers(-3, 4, (2, 2, C_IN, ROW)).astype(dtype)
    return w, count, tap_list, offsets, weights, b, planes


def quarters_by_definition(planes, w, b, f, at, n):
    """(4, n): conv quarter (r, e) of filter f at positions at .. at + n - 1 from the 4-D quarter planes:
    padded pixel (2yy + r + i, 2u + e + j) of channel c is plane ((r + i) % 2, (e + j) % 2) at
    ((r + i) // 2)*WH + (e + j) // 2 + q."""
    out = np.full((4, n), b[f], dtype=np.float64)
    for c, i, j in zip(*np.nonzero(w[f])):
        for r in range(2):
            for e in range(2):
                start = at + ((r + i) >> 1) * WH + ((e + j) >> 1)
                out[r * 2 + e] += float(w[f, c, i, j]) * planes[(r + i) & 1, (e + j) & 1, c, start:start + n]
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [272, 37, 16, 5, 0])
def test_taps_window_codes_is_its_twin_and_conv_pool(dtype, n, rng):
    """The one-pass conv-ReLU-pool of a sparse filter as vectors against its twin, bit for bit, and the
    NaN flag alike: every filter (1-6 taps), whole steps and a masked last one, the entries past n
    untouched; an inf pixel (flag stays down) and a NaN one (flag up); the twin against the conv
    quarters by definition, then NumPy's max and the first argmax (4 where ReLU blocks)."""
    w, count, _, offsets, weights, b, planes = sparse_filters(rng, dtype)
    at = 5
    for poison in (None, np.inf, np.nan):
        if poison is not None:
            planes[1, 0, 1, at + n // 2 :: 7] = poison
            planes[0, 1, 2, at + n // 3 :: 5] = poison
        flat = planes.reshape(-1)
        for f in range(w.shape[0]):
            got = (np.full(n + 4, -7.0, dtype), np.full(n + 4, 9, np.int8))
            want = (got[0].copy(), got[1].copy())
            flag = _window_vector(flat, offsets[f], weights[f], count[f], b, f, at, got[0][:n], got[1][:n])
            assert flag == taps.taps_window_codes_loops(flat, offsets[f], weights[f], count[f], b, f, at, want[0][:n],
                                                        want[1][:n])
            np.testing.assert_array_equal(got[0].view(f"u{got[0].itemsize}"), want[0].view(f"u{want[0].itemsize}"))
            np.testing.assert_array_equal(got[1], want[1])
            assert np.all(got[0][n:] == -7.0) and np.all(got[1][n:] == 9)
            quarters = quarters_by_definition(planes, w, b, f, at, n)
            with np.errstate(invalid="ignore"):  # inf + -inf: NaN, as the kernels' window sums
                assert flag == bool(np.isnan(quarters.sum(axis=0)).any())
            if poison is None:
                best = quarters.max(axis=0)
                np.testing.assert_array_equal(want[0][:n], np.maximum(best, 0.0))
                np.testing.assert_array_equal(want[1][:n], np.where(best > 0, quarters.argmax(axis=0), 4))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1216, 75, 16, 5])
def test_taps_weight_grad_is_its_twin_and_masked_sums(dtype, n, rng):
    """A sparse filter's weight-gradient passes as vectors (up to four taps a pass, the bias's sum and the
    finite check in the first) against the plain twin pass by pass, bit for bit; the sums against the
    gradient masked by the codes times each tap's pixels in NumPy; the bias's sum bit for bit pool2's
    (zero_blocked_and_sum), and the check NaN once any gradient, blocked or not, is inf or NaN."""
    w, count, _, offsets, _, _, planes = sparse_filters(rng, dtype)
    flat = planes.reshape(-1)
    code = rng.integers(0, 5, n).astype(np.int8)
    grad = rng.standard_normal(n).astype(dtype)
    for f in range(w.shape[0]):
        got = np.full(2 + offsets.shape[1] // 4, -9.0, dtype)
        want = got.copy()
        _weight_grad(flat, offsets[f], count[f], code, grad, got)
        first = min(count[f], taps.TAPS_PER_PASS)
        taps._taps_grad_pass_python(flat, offsets[f], 0, first, True, code, grad, want)
        for t in range(first, count[f], taps.TAPS_PER_PASS):
            taps._taps_grad_pass_python(flat, offsets[f], t, min(count[f] - t, taps.TAPS_PER_PASS), False, code, grad,
                                        want)
        np.testing.assert_array_equal(got.view(f"u{got.itemsize}"), want.view(f"u{want.itemsize}"))
        assert np.all(got[2 + count[f]:] == -9.0)
        tol = 1e-4 if dtype == np.float32 else 1e-10
        for t in range(count[f]):
            pixels = np.stack([flat[offsets[f, 4 * t + k]:][:n] for k in range(4)]).astype(np.float64)
            expected = sum((grad * (code == k) * pixels[k]).sum() for k in range(4))
            assert abs(want[2 + t] - expected) <= tol * (1 + np.abs(grad).sum() * 3)
        assert want[0] == zero_blocked_and_sum(code, grad.copy())[0] and want[1] == 0.0
    blocked = int(np.nonzero(code == 4)[0][0])
    for poison in (np.inf, np.nan):
        bad = grad.copy()
        bad[blocked] = poison  # blocked, and still reported: the exact path then gives the reference's NaN
        out = np.zeros(2 + offsets.shape[1] // 4, dtype)
        _weight_grad(flat, offsets[0], count[0], code, bad, out)
        assert np.isnan(out[1])


def test_tap_tables_read_the_taps(rng):
    """tap_offsets and tap_weights: tap t of filter f (in the SkipPlan's order) reads, for conv quarter (r, e),
    the quarter plane and position of parity.py's layout, and carries w's weight there."""
    w, count, tap_list, offsets, weights, _, planes = sparse_filters(rng, np.float32)
    flat = planes.reshape(-1)
    for f in range(w.shape[0]):
        for t in range(count[f]):
            c, i, j = np.unravel_index(tap_list[f, t], (C_IN, 3, 3))
            assert weights[f, t] == w[f, c, i, j] != 0
            for r in range(2):
                for e in range(2):
                    at = ((r + i) >> 1) * WH + ((e + j) >> 1) + 11
                    assert flat[offsets[f, 4 * t + r * 2 + e] + 11] == planes[(r + i) & 1, (e + j) & 1, c, at]
    assert offsets.shape == (w.shape[0], 4 * count.max())


@pytest.mark.parametrize("density", [0.3, 0.1])
def test_whole_model_op_takes_the_tap_passes_below_its_threshold(density, rng):
    """Below convnet.NINE_TAP_MIN_DENSITY the paper model's op runs every filter through the one-pass taps,
    also where the layers' blocked 9-tap passes would take the bank (every (filter, channel) pair kept,
    above skip.NINE_TAP_MIN_DENSITY): loss, logits and gradients equal the reference composition's on a
    grid (every sum exact), and equal the op's own 9-tap passes forced by a threshold of 0."""
    from _fast_compare import assert_close, fast, ref
    from test_fast_convnet import convnet_inputs

    from minicnn.nn.fast import convnet
    from minicnn.nn.fast.split import blocked_passes

    x, wt, b, p, fc_w, fc_b, labels, _, _ = convnet_inputs(rng, (6, 3, 12, 10, 5, 3, 1, 4), None)
    mask = (rng.random(wt.shape) < density).astype(np.float32)
    mask[:, :, 1, 1] = 1.0  # every pair kept
    wt *= mask
    assert mask.mean() < convnet.NINE_TAP_MIN_DENSITY and blocked_passes(wt) == (mask.mean() >= 0.18)
    want = ref.conv_relu_pool_linear_loss(x, wt, b, p, fc_w, fc_b, labels, mask)
    got = fast.conv_relu_pool_linear_loss(x, wt, b, p, fc_w, fc_b, labels, mask)
    saved = convnet.NINE_TAP_MIN_DENSITY
    try:
        convnet.NINE_TAP_MIN_DENSITY = 0.0
        nine = fast.conv_relu_pool_linear_loss(x, wt, b, p, fc_w, fc_b, labels, mask)
    finally:
        convnet.NINE_TAP_MIN_DENSITY = saved
    assert got[0] == pytest.approx(want[0], rel=1e-5) and got[0] == pytest.approx(nine[0], rel=1e-6)
    for name, a, w_, n_ in zip(("logits", "dw", "db", "dfc_w", "dfc_b"), got[1:], want[1:], nine[1:]):
        assert_close(a, w_, f"taps {name}")
        np.testing.assert_array_equal(a, n_, err_msg=name)  # grid values: both paths' sums are exact
