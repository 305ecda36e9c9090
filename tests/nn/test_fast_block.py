"""The fused conv -> ReLU (-> max-pool) ops (minicnn/nn/fast/block.py) equal the reference composition:
exactly on grids with ties, up to rounding on continuous values, NaN and inf where the reference has
them; and the pieces of the parity layout and skip plans they rest on."""

from __future__ import annotations

import numpy as np
import pytest

import minicnn.nn.fast.block as block
import minicnn.nn.fast.skip as skip
from minicnn.nn.fast.parity import fill_quarters
from _fast_compare import assert_close, block_kink_margin, f32, fast, grid, ref


BLOCK_GRID = [
    # (N, C, H, W, F, K, conv stride, pad, pool kernel, pool stride)
    (1, 3, 32, 32, 8, 3, 1, 1, 2, 2),  # the paper's block, batch 1
    (5, 3, 32, 32, 8, 3, 1, 1, 2, 2),
    (2, 2, 9, 11, 3, 3, 1, 1, 2, 2),  # odd sizes: the last row/column is not pooled
    (3, 1, 7, 5, 2, 3, 1, 0, 2, 1),  # overlapping windows
    (2, 3, 10, 9, 4, 5, 1, 2, 3, 2),
    (1, 2, 8, 8, 3, 1, 1, 0, 3, 3),
    (2, 2, 9, 9, 3, 3, 2, 1, 2, 2),  # conv stride 2
    (1, 4, 12, 10, 2, 3, 3, 1, 2, 1),
]


def check_block(rng, x, wt, b, s, p, pk, ps, *, need_dx, mask, exact):
    out_r, cache_r = ref.conv_relu_pool_forward(x, wt, b, s, p, pk, ps)
    out_f, cache_f = fast.conv_relu_pool_forward(x, wt, b, s, p, pk, ps)
    g = grid(rng, out_r.shape, 8) if exact else f32(rng.standard_normal(out_r.shape))
    got = fast.conv_relu_pool_backward(g, cache_f, need_dx, mask)
    want = ref.conv_relu_pool_backward(g, cache_r, need_dx, mask)
    if exact:
        np.testing.assert_array_equal(out_f, out_r)
    else:
        assert_close(out_f, out_r, "block forward")
    for name, a, b_ in zip(("dx", "dw", "db"), got, want):
        if name == "dx" and not need_dx:
            assert a is None and b_ is None
        elif exact:
            np.testing.assert_array_equal(a, b_, err_msg=f"block {name}")
        else:
            assert_close(a, b_, f"block {name}")
    if mask is not None:
        assert np.all(got[1][mask == 0] == 0.0)


@pytest.mark.parametrize("case", BLOCK_GRID, ids=lambda c: "-".join(map(str, c)))
@pytest.mark.parametrize("need_dx", [True, False])
@pytest.mark.parametrize("pruned", [False, True])
def test_conv_relu_pool_exact_on_grid(case, need_dx, pruned, rng):
    """Grid values make ties common (equal conv outputs, zeros after ReLU) and every sum exact: the
    fused kernel must route each gradient exactly as conv -> relu -> pool does (first maximum)."""
    n, c, h, w, f, k, s, p, pk, ps = case
    x, wt, b = grid(rng, (n, c, h, w), 4, 2), grid(rng, (f, c, k, k), 4, 2), grid(rng, f, 4, 2)
    mask = None
    if pruned:
        mask = f32(rng.random(wt.shape) > 0.5)
        mask[0] = 0.0  # one filter fully pruned
        wt *= mask
    check_block(rng, x, wt, b, s, p, pk, ps, need_dx=need_dx, mask=mask, exact=True)


@pytest.mark.parametrize("width", [5, 31, 32, 33, 64, 65, 70])
@pytest.mark.parametrize("pad", [0, 1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fill_quarters_splits_rows_by_parity(width, pad, dtype, rng):
    """The quarter planes (minicnn/nn/fast/parity.py) from the image, against a plain NumPy build: rows of
    32 pixels and more go 16 pairs at a time through vector shuffles, the rest pair by pair."""
    n, c, h, at = 2, 3, 5, 7
    x = rng.standard_normal((n, c, h, width)).astype(dtype)
    wh = (width + 2 * pad + 1) // 2
    rows = (h + 2 * pad + 1) // 2
    for image in range(n):
        want = np.zeros((2, 2, c, at + rows * wh + 5), dtype=dtype)
        padded = np.pad(x[image], ((0, 0), (pad, pad), (pad, pad)))
        for row in range(h + 2 * pad):
            for col in range(width + 2 * pad):
                want[row % 2, col % 2, :, at + (row // 2) * wh + col // 2] = padded[:, row, col]
        got = np.zeros_like(want)
        fill_quarters(x, image, pad, wh, got, at)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("case", BLOCK_GRID, ids=lambda c: "-".join(map(str, c)))
@pytest.mark.parametrize("need_dx", [True, False])
def test_conv_relu_pool_continuous(case, need_dx, rng):
    """Continuous values, drawn (redrawn if needed) so no conv output lies within 1e-5 of a non-smooth
    point: then the fused kernel equals the composition up to float32 rounding."""
    n, c, h, w, f, k, s, p, pk, ps = case
    for _ in range(50):
        x = f32(rng.standard_normal((n, c, h, w)))
        bound = 1 / np.sqrt(c * k * k)
        wt, b = f32(rng.uniform(-bound, bound, (f, c, k, k))), f32(rng.uniform(-bound, bound, f))
        if block_kink_margin(x, wt, b, s, p, pk, ps) > 1e-5:
            break
    else:
        pytest.fail("could not draw inputs away from the non-smooth points")
    check_block(rng, x, wt, b, s, p, pk, ps, need_dx=need_dx, mask=None, exact=False)


POOL2_GRID = [
    # (N, C, H, W, F, K, pad): 2x2 pooling, stride 1 conv, the parity-split kernels
    (3, 3, 32, 32, 8, 3, 1),  # the paper's block
    (2, 8, 16, 16, 8, 3, 1),  # Conv-4's 16x16 maps: the weight gradient's whole vector steps past the map (span 72)
    (2, 2, 9, 11, 3, 3, 1),  # odd sizes: the last conv row/column is not pooled
    (2, 3, 10, 8, 4, 3, 0),  # no padding
    (2, 4, 11, 12, 3, 3, 2),  # 3x3 filters, wide padding: the input gradient reads the border
    (2, 2, 7, 10, 3, 5, 2),  # 5x5 filters
    (2, 1, 6, 6, 2, 2, 0),  # even kernel
    (2, 3, 8, 9, 2, 1, 0),  # 1x1 filters
]


def test_skip_plan_follows_the_threshold_and_the_pattern(rng, monkeypatch):
    """The skip plan's tap lists are cached per pattern of zeros, but its choice of path follows
    NINE_TAP_MIN_DENSITY at every call (the path tests below set it), and each pattern gets its own
    lists."""
    active = rng.random((4, 3, 3, 3)) < 0.5
    active[0, 0] = False
    monkeypatch.setattr(skip, "NINE_TAP_MIN_DENSITY", 0.0)
    assert skip.skip_plan(active).nine_taps
    monkeypatch.setattr(skip, "NINE_TAP_MIN_DENSITY", 2.0)
    for pattern in (active, ~active, active):
        nine_taps, counts, taps, live = skip.skip_plan(pattern)
        assert not nine_taps
        np.testing.assert_array_equal(counts, pattern.reshape(4, -1).sum(axis=1))
        for f in range(4):
            np.testing.assert_array_equal(taps[f, : counts[f]], np.flatnonzero(pattern[f]))
        np.testing.assert_array_equal(live, pattern.any(axis=(2, 3)))


@pytest.mark.parametrize("case", POOL2_GRID, ids=lambda c: "-".join(map(str, c)))
@pytest.mark.parametrize("density", [1.0, 0.5])
@pytest.mark.parametrize("path", ["nine_taps", "tap_by_tap"])
@pytest.mark.parametrize("need_dx", [True, False])
def test_conv_relu_pool_2x2_paths_exact(case, density, path, need_dx, rng, monkeypatch):
    """Both inner strategies of the 2x2 kernels (all 9 taps of a 3x3 channel per pass, or one pass per
    kept tap) route every gradient exactly as the composition, with and without pruned weights."""
    monkeypatch.setattr(skip, "NINE_TAP_MIN_DENSITY", 0.0 if path == "nine_taps" else 2.0)
    n, c, h, w, f, k, p = case
    x, wt, b = grid(rng, (n, c, h, w), 4, 2), grid(rng, (f, c, k, k), 4, 2), grid(rng, f, 4, 2)
    mask = None
    if density < 1.0:
        mask = f32(rng.random(wt.shape) < density)
        mask[0, 0] = 0.0  # a whole channel pruned: skipped by the 9-tap path
        wt *= mask
    check_block(rng, x, wt, b, 1, p, 2, 2, need_dx=need_dx, mask=mask, exact=True)


CONV_RELU_GRID = [
    # (N, C, H, W, F, K, stride, pad): conv -> ReLU without a pool (Conv-2's first layer)
    (2, 3, 32, 32, 8, 3, 1, 1),  # Conv-2's first layer, fewer filters
    (2, 8, 16, 16, 8, 3, 1, 1),  # Conv-4's 16x16 maps: the weight gradient's whole vector steps past the map
    (2, 2, 9, 11, 3, 3, 1, 1),  # odd sizes: the split map's last row and column are half used
    (2, 3, 10, 7, 4, 3, 1, 0),  # no padding
    (2, 4, 11, 12, 3, 3, 1, 2),  # wide padding: the input gradient reads the border
    (2, 2, 7, 10, 3, 5, 1, 2),  # 5x5 filters
    (2, 1, 7, 6, 2, 2, 1, 0),  # even kernel, odd output height
    (2, 3, 8, 9, 2, 1, 1, 0),  # 1x1 filters
    (2, 2, 9, 9, 3, 3, 2, 1),  # stride 2: the separate ops
]


@pytest.mark.parametrize("case", CONV_RELU_GRID, ids=lambda c: "-".join(map(str, c)))
@pytest.mark.parametrize("density", [1.0, 0.5])
@pytest.mark.parametrize("path", ["nine_taps", "tap_by_tap"])
@pytest.mark.parametrize("need_dx", [True, False])
def test_conv_relu_exact_on_grid(case, density, path, need_dx, rng, monkeypatch):
    """relu(conv) fused, both inner strategies, with and without pruned weights: the same output and
    gradients as the reference composition, exactly (grid values: ties at 0 everywhere)."""
    monkeypatch.setattr(skip, "NINE_TAP_MIN_DENSITY", 0.0 if path == "nine_taps" else 2.0)
    n, c, h, w, f, k, s, p = case
    x, wt, b = grid(rng, (n, c, h, w), 4, 2), grid(rng, (f, c, k, k), 4, 2), grid(rng, f, 4, 2)
    mask = None
    if density < 1.0:
        mask = f32(rng.random(wt.shape) < density)
        mask[0, 0] = 0.0  # a whole channel pruned
        wt *= mask
    out_r, cache_r = ref.conv_relu_forward(x, wt, b, s, p)
    out_f, cache_f = fast.conv_relu_forward(x, wt, b, s, p)
    assert isinstance(cache_f, block.SplitCache if s == 1 else block.LayersCache)
    np.testing.assert_array_equal(out_f, out_r)
    g = grid(rng, out_r.shape, 8)
    got = fast.conv_relu_backward(g, cache_f, need_dx, mask)
    want = ref.conv_relu_backward(g, cache_r, need_dx, mask)
    for name, a, b_ in zip(("dx", "dw", "db"), got, want):
        if name == "dx" and not need_dx:
            assert a is None and b_ is None
        else:
            np.testing.assert_array_equal(a, b_, err_msg=f"conv-relu {name}")


def test_conv_relu_continuous(rng):
    """Continuous values, a wide filter bank: equal up to float32 rounding."""
    x = f32(rng.standard_normal((3, 16, 10, 9)))
    wt, b = f32(rng.standard_normal((32, 16, 3, 3)) * 0.1), f32(rng.standard_normal(32) * 0.1)
    out_r, cache_r = ref.conv_relu_forward(x, wt, b, 1, 1)
    out_f, cache_f = fast.conv_relu_forward(x, wt, b, 1, 1)
    assert_close(out_f, out_r, "conv-relu forward")
    g = f32(rng.standard_normal(out_r.shape))
    for got, want, what in zip(fast.conv_relu_backward(g, cache_f), ref.conv_relu_backward(g, cache_r),
                               ("dx", "dw", "db")):
        assert_close(got, want, f"conv-relu {what}")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_conv_relu_non_finite(bad, rng):
    """A NaN weight propagates NaN through the fused ReLU, and a NaN / inf upstream gradient times the
    ReLU mask gives what the reference's multiplication gives (NaN where the mask is 0)."""
    x, wt, b = grid(rng, (2, 2, 6, 6), 4, 2), grid(rng, (3, 2, 3, 3), 4, 2), grid(rng, 3, 4, 2)
    wt[wt == 0] = 0.25  # (dx skips zero weights, where the reference spreads NaN * 0)
    out_r, cache_r = ref.conv_relu_forward(x, wt, b, 1, 1)
    out_f, cache_f = fast.conv_relu_forward(x, wt, b, 1, 1)
    g = grid(rng, out_r.shape, 8)
    g[0, 1, 2, 3], g[1, 2, 0, 0] = bad, bad
    with np.errstate(invalid="ignore"):  # inf * 0 in the reference's ReLU mask
        want = ref.conv_relu_backward(g, cache_r, True)
    for name, got, want_ in zip(("dx", "dw", "db"), fast.conv_relu_backward(g, cache_f, True), want):
        np.testing.assert_array_equal(got, want_, err_msg=name)
    wt[1, 0, 1, 1] = np.nan
    out_r, _ = ref.conv_relu_forward(x, wt, b, 1, 1)
    out_f, _ = fast.conv_relu_forward(x, wt, b, 1, 1)
    assert np.isnan(out_r[:, 1]).all()
    np.testing.assert_array_equal(out_f, out_r)


@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_conv_relu_inf_pixel_in_the_last_row(bad, rng):
    """The weight gradient's whole vector steps run past the map over real pixels of the last rows (with
    a gradient of 0): with an inf or NaN pixel there, 0 * inf would make NaN in taps whose gradient the
    reference keeps finite, so a non-finite image takes the exact steps (16x16: span 72, not whole)."""
    x, wt, b = grid(rng, (2, 2, 16, 16), 4, 2), np.abs(grid(rng, (3, 2, 3, 3), 4, 2)) + 0.25, grid(rng, 3, 4, 2)
    x[1, 0, 15, 7] = bad
    with np.errstate(invalid="ignore"):
        out_r, cache_r = ref.conv_relu_forward(x, wt, b, 1, 1)
        _, cache_f = fast.conv_relu_forward(x, wt, b, 1, 1)
        g = grid(rng, out_r.shape, 8)
        want = ref.conv_relu_backward(g, cache_r, True)
    assert np.isfinite(want[1][:, 0, 0]).all()  # the taps that never read the last row
    for name, got, want_ in zip(("dx", "dw", "db"), fast.conv_relu_backward(g, cache_f, True), want):
        np.testing.assert_array_equal(got, want_, err_msg=name)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("need_dx", [True, False])
def test_conv_relu_pool_backward_non_finite_gradient(bad, need_dx, rng):
    """A NaN or inf upstream gradient reaches only its window's argmax cell, as in the reference (the
    fast kernel's multiply-by-mask shortcuts must fall back to exact selects, and so must the weight
    gradient taken straight from the pooling codes)."""
    x, wt, b = grid(rng, (2, 2, 8, 8), 4, 2), grid(rng, (3, 2, 3, 3), 4, 2), grid(rng, 3, 4, 2)
    wt[wt == 0] = 0.25  # (dx skips zero weights, where the reference spreads NaN * 0)
    out_r, cache_r = ref.conv_relu_pool_forward(x, wt, b, 1, 1, 2, 2)
    _, cache_f = fast.conv_relu_pool_forward(x, wt, b, 1, 1, 2, 2)
    g = grid(rng, out_r.shape, 8)
    g[0, 1, 2, 3] = bad
    for name, got, want in zip(("dx", "dw", "db"), fast.conv_relu_pool_backward(g, cache_f, need_dx),
                               ref.conv_relu_pool_backward(g, cache_r, need_dx)):
        np.testing.assert_array_equal(got, want, err_msg=name)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("need_dx", [True, False])
@pytest.mark.parametrize("c, f", [(2, 3), (32, 64)])  # the 9-tap passes; Winograd's (direct for the image)
def test_non_finite_gradient_on_a_window_relu_blocked(bad, need_dx, c, f, rng):
    """A NaN or inf upstream gradient on a window whose conv cells are all <= 0: the reference's pool
    backward routes it to the window's first cell (its ReLU outputs tie at 0) and its ReLU multiplies it
    by 0, so NaN reaches dw, db and (around that cell) dx; the fast kernels must not drop it."""
    x, wt, b = grid(rng, (2, c, 8, 8), 4, 2), grid(rng, (f, c, 3, 3), 4, 2), grid(rng, f, 4, 2)
    wt[wt == 0] = 0.25  # (dx skips zero weights, where the reference spreads NaN * 0)
    out_r, cache_r = ref.conv_relu_pool_forward(x, wt, b, 1, 1, 2, 2)
    _, cache_f = fast.conv_relu_pool_forward(x, wt, b, 1, 1, 2, 2)
    g = grid(rng, out_r.shape, 8)
    g[tuple(np.argwhere(out_r == 0)[0])] = bad
    with np.errstate(invalid="ignore"):
        want = ref.conv_relu_pool_backward(g, cache_r, need_dx)
    assert np.isnan(want[2]).any()
    for name, got, want_ in zip(("dx", "dw", "db"), fast.conv_relu_pool_backward(g, cache_f, need_dx), want):
        np.testing.assert_array_equal(got, want_, err_msg=name)


@pytest.mark.parametrize("bad", [-np.inf, np.inf, np.nan])
@pytest.mark.parametrize("need_dx", [False, True])
def test_conv_relu_pool_backward_non_finite_input(bad, need_dx, rng):
    """An inf or NaN pixel with a finite upstream gradient: the reference's weight gradient multiplies
    every pixel by its conv cell's gradient, so 0 * inf makes NaN even where that gradient is 0. The fast
    kernel's codes path multiplies only each window's argmax pixel, so it must notice the pixel and take
    the exact path (with or without dx: the weight gradient is read straight from the codes either way)."""
    x, wt, b = grid(rng, (2, 2, 8, 8), 4, 2), np.abs(grid(rng, (3, 2, 3, 3), 4, 2)) + 0.25, grid(rng, 3, 4, 2)
    x[1, 0, 3, 4] = bad  # positive weights: the conv cells that read it are inf or -inf (or NaN), no mix
    with np.errstate(invalid="ignore"):
        out_r, cache_r = ref.conv_relu_pool_forward(x, wt, b, 1, 1, 2, 2)
    _, cache_f = fast.conv_relu_pool_forward(x, wt, b, 1, 1, 2, 2)
    g = grid(rng, out_r.shape, 8)
    with np.errstate(invalid="ignore"):
        want = ref.conv_relu_pool_backward(g, cache_r, need_dx)
    got = fast.conv_relu_pool_backward(g, cache_f, need_dx)
    assert np.isnan(want[1]).any()
    for name, a, b_ in zip(("dx", "dw", "db"), got, want):
        np.testing.assert_array_equal(a, b_, err_msg=name)


def test_conv_relu_pool_propagates_nan():
    x = np.ones((1, 1, 4, 4), np.float32)
    wt = np.ones((1, 1, 3, 3), np.float32)
    wt[0, 0, 1, 1] = np.nan
    b = np.zeros(1, np.float32)
    out_r, _ = ref.conv_relu_pool_forward(x, wt, b, 1, 1, 2, 2)
    out_f, _ = fast.conv_relu_pool_forward(x, wt, b, 1, 1, 2, 2)
    assert np.isnan(out_r).all()
    np.testing.assert_array_equal(out_f, out_r)



@pytest.mark.parametrize("pool, path", [(2, block.SplitCache), (3, block.LayersCache)])
def test_fused_block_on_a_wide_layer_agrees(pool, path, rng):
    """A wide filter bank: the 2x2 pool keeps the parity-split kernels (they beat im2col + BLAS there),
    other pools go through the matrix-product conv and the separate ops."""
    x = f32(rng.standard_normal((3, 16, 8, 8)))
    wt = f32(rng.standard_normal((32, 16, 3, 3)) * 0.2)
    b = f32(rng.standard_normal(32) * 0.1)
    out_f, cache_f = fast.conv_relu_pool_forward(x, wt, b, 1, 1, pool, 2)
    out_r, cache_r = ref.conv_relu_pool_forward(x, wt, b, 1, 1, pool, 2)
    assert isinstance(cache_f, path)
    assert_close(out_f, out_r, "wide block forward")
    g = f32(rng.standard_normal(out_r.shape))
    for got, want, what in zip(fast.conv_relu_pool_backward(g, cache_f), ref.conv_relu_pool_backward(g, cache_r),
                               ("dx", "dw", "db")):
        assert_close(got, want, f"wide block {what}")



# ------------------------------------------------------------------------------ whole models
def test_model_steps_fuse_conv_relu_with_or_without_pool(rng):
    """A Conv-2-like stack: conv -> relu and conv -> relu -> pool each run as one fused step, and the
    fast model's logits and every gradient match the reference model's."""
    from minicnn.nn.model import build_model

    spec = "conv6,relu,conv8,relu,pool2,flatten,linear12,relu,linear10"
    models = [build_model(spec, np.random.default_rng(4), backend=b, input_shape=(3, 12, 10)) for b in ("fast", "ref")]
    assert models[0]._steps() == [(0, 1), (2, 4), (5, 5), (6, 6), (7, 7), (8, 8)]
    x = f32(rng.standard_normal((5, 3, 12, 10)))
    logits = [m.forward(x) for m in models]
    assert_close(logits[0], logits[1], "logits")
    g = f32(rng.standard_normal(logits[1].shape))
    for m in models:
        m.backward(g)
    for fast_layer, ref_layer in zip(models[0].param_layers(), models[1].param_layers()):
        for name in ref_layer.grads:
            assert_close(fast_layer.grads[name], ref_layer.grads[name], f"{ref_layer.name}.{name}")


@pytest.mark.parametrize("nan", [False, True])
def test_inference_forward_equals_training_forward(nan, rng):
    """for_backward=False (inference) skips the pooling codes: the same output, no cache, and a model
    refuses a backward after such a forward."""
    from minicnn.nn.model import build_model

    x, wt = f32(rng.standard_normal((3, 3, 12, 12))), f32(rng.standard_normal((4, 3, 3, 3)))
    b = f32(rng.standard_normal(4))
    if nan:
        x[1, 0, 5, 5] = np.nan
    out, cache = fast.conv_relu_pool_forward(x, wt, b, 1, 1, 2, 2)
    out_inf, cache_inf = fast.conv_relu_pool_forward(x, wt, b, 1, 1, 2, 2, for_backward=False)
    assert cache is not None and cache_inf is None
    np.testing.assert_array_equal(out_inf, out)
    assert np.isnan(out).any() == nan
    model = build_model("conv6,relu,conv8,relu,pool2,flatten,linear10", np.random.default_rng(0),
                        input_shape=(3, 12, 12))
    np.testing.assert_array_equal(model.forward(x, for_backward=False), model.forward(x))
    model.forward(x, for_backward=False)
    with pytest.raises(RuntimeError, match="for_backward=False"):
        model.backward(f32(rng.standard_normal((3, 10))))


