"""Every Numba twin equals its NumPy reference, in float32 (the training precision).

Tolerance: |fast - ref| <= ATOL + RTOL * |ref| elementwise. Both sides compute the same sums in
float32 but in different orders (the fast kernels split them across threads and let LLVM reassociate
them for SIMD), so they may differ by rounding only. With O(1) inputs and at most a few thousand terms
per sum, the rounding difference is a few float32 ulps (eps = 1.2e-7) of the terms' magnitude:
RTOL = 1e-4 leaves ~800 ulps of headroom on large results, and ATOL = 1e-5 covers results that
cancel to near zero (where a relative bound means nothing). A real bug (a missed term, a wrong index,
a padding or stride error) changes results by O(0.1), orders of magnitude above both.

Max-pool indices, ReLU masks and the SGD update of pruned entries are discrete and must match exactly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minicnn.nn.backend import get_backend

ref = get_backend("ref")
fast = get_backend("fast")

ATOL = 1e-5
RTOL = 1e-4
ROOT = Path(__file__).resolve().parents[1]


def assert_close(got, want, what: str = "", atol: float = ATOL, rtol: float = RTOL, terms=None) -> None:
    """|got - want| <= atol + rtol*|want| (+ 1e-7 * terms, where ``terms`` is the sum of the absolute
    values of the terms each entry sums: float32 summed in different orders differs by a few ulps of
    that, which for long sums with cancellation exceeds any fixed relative tolerance)."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
    err = np.abs(got.astype(np.float64) - want.astype(np.float64))
    allowed = atol + rtol * np.abs(want.astype(np.float64))
    if terms is not None:
        allowed = allowed + 1e-7 * np.asarray(terms, dtype=np.float64)
    if not np.all(err <= allowed):
        i = np.unravel_index(np.argmax(err - allowed), err.shape)
        raise AssertionError(f"{what}: |fast - ref| = {err[i]:.3g} > {allowed[i]:.3g} at {i} "
                             f"(fast {got[i]!r}, ref {want[i]!r}); {np.sum(err > allowed)} entries off")


def f32(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


# ------------------------------------------------------------------------------------ convolution
def check_conv(rng, n, c, h, w, f, kh, kw, stride, pad, *, prune: float = 0.0, need_dx: bool = True):
    x = f32(rng.standard_normal((n, c, h, w)))
    bound = 1 / np.sqrt(c * kh * kw)
    wt = f32(rng.uniform(-bound, bound, (f, c, kh, kw)))
    if prune:
        wt[rng.random(wt.shape) < prune] = 0.0
    b = f32(rng.uniform(-bound, bound, f))
    out_r, cache_r = ref.conv2d_forward(x, wt, b, stride, pad)
    out_f, cache_f = fast.conv2d_forward(x, wt, b, stride, pad)
    assert_close(out_f, out_r, "conv forward")
    g = f32(rng.standard_normal(out_r.shape))
    dx_r, dw_r, db_r = ref.conv2d_backward(g, cache_r, need_dx)
    dx_f, dw_f, db_f = fast.conv2d_backward(g, cache_f, need_dx)
    # dw and db sum N*OH*OW terms: compare within rounding of the sum of their magnitudes
    _, cache_abs = ref.conv2d_forward(np.abs(x).astype(np.float64), np.abs(wt).astype(np.float64),
                                      np.abs(b).astype(np.float64), stride, pad)
    _, dw_terms, db_terms = ref.conv2d_backward(np.abs(g).astype(np.float64), cache_abs, False)
    assert_close(dw_f, dw_r, "conv dw", terms=dw_terms)
    assert_close(db_f, db_r, "conv db", terms=db_terms)
    if need_dx:
        assert_close(dx_f, dx_r, "conv dx")
    else:
        assert dx_f is None and dx_r is None


CONV_GRID = [
    # (N, C, H, W, F, K, stride, pad)
    (1, 1, 1, 1, 1, 1, 1, 0),
    (1, 3, 7, 5, 4, 3, 1, 1),
    (4, 2, 9, 11, 3, 3, 2, 1),
    (1, 3, 32, 32, 8, 3, 1, 1),  # the paper's first layer, batch 1
    (5, 3, 32, 32, 8, 3, 1, 1),  # ... with more images than threads
    (3, 2, 10, 7, 5, 5, 1, 2),
    (2, 4, 9, 9, 2, 5, 3, 2),
    (2, 3, 6, 8, 3, 1, 2, 0),
    (3, 1, 5, 5, 2, 3, 3, 0),
    (1, 2, 4, 6, 6, 4, 2, 1),
    (2, 64, 8, 8, 16, 3, 1, 1),  # many input channels: long sums
]


@pytest.mark.parametrize("case", CONV_GRID, ids=lambda c: "-".join(map(str, c)))
@pytest.mark.parametrize("need_dx", [True, False])
def test_conv2d(case, need_dx, rng):
    n, c, h, w, f, k, s, p = case
    check_conv(rng, n, c, h, w, f, k, k, s, p, need_dx=need_dx)


@pytest.mark.parametrize("prune", [0.5, 0.9, 1.0])
def test_conv2d_pruned_weights(prune, rng):
    """The fast kernels skip zero weights; results must not change (also with every weight pruned)."""
    check_conv(rng, 3, 3, 9, 8, 6, 3, 3, 1, 1, prune=prune)
    check_conv(rng, 2, 2, 7, 7, 4, 3, 3, 2, 0, prune=prune)


def test_conv2d_pruned_filter(rng):
    """A whole filter zeroed (structured pruning): its output map is exactly the bias."""
    x = f32(rng.standard_normal((2, 3, 6, 6)))
    wt = f32(rng.standard_normal((4, 3, 3, 3)))
    wt[1] = 0.0
    b = f32(rng.standard_normal(4))
    out_f, _ = fast.conv2d_forward(x, wt, b, 1, 1)
    np.testing.assert_array_equal(out_f[:, 1], np.full((2, 6, 6), b[1], np.float32))
    check_conv(rng, 2, 3, 6, 6, 4, 3, 3, 1, 1, prune=0.3)


def test_conv2d_rectangular_kernel(rng):
    check_conv(rng, 2, 2, 7, 9, 3, 3, 2, 2, 1)
    check_conv(rng, 1, 3, 5, 6, 2, 1, 4, 1, 2)


def test_conv2d_does_not_modify_inputs(rng):
    x = f32(rng.standard_normal((2, 3, 5, 5)))
    wt = f32(rng.standard_normal((4, 3, 3, 3)))
    b = f32(rng.standard_normal(4))
    copies = [a.copy() for a in (x, wt, b)]
    out, cache = fast.conv2d_forward(x, wt, b, 1, 1)
    g = f32(rng.standard_normal(out.shape))
    g_copy = g.copy()
    fast.conv2d_backward(g, cache)
    for a, a0 in zip((x, wt, b, g), (*copies, g_copy)):
        np.testing.assert_array_equal(a, a0)


def test_conv2d_non_contiguous_input(rng):
    """A transposed (non C-contiguous) input gives the same result as its contiguous copy."""
    x = f32(rng.standard_normal((2, 3, 6, 5))).transpose(0, 1, 3, 2)
    wt = f32(rng.standard_normal((2, 3, 3, 3)))
    b = f32(rng.standard_normal(2))
    assert_close(fast.conv2d_forward(x, wt, b, 1, 1)[0], ref.conv2d_forward(np.ascontiguousarray(x), wt, b, 1, 1)[0])


# ------------------------------------------------------------------------------------------ linear
@pytest.mark.parametrize("n,d,o", [(1, 1, 1), (1, 2048, 10), (16, 2048, 10), (3, 7, 5), (5, 600, 3),
                                   (2, 257, 256), (9, 33, 1)])
@pytest.mark.parametrize("need_dx", [True, False])
@pytest.mark.parametrize("prune", [0.0, 0.8])
def test_linear(n, d, o, need_dx, prune, rng):
    x = f32(rng.standard_normal((n, d)))
    w = f32(rng.uniform(-1, 1, (o, d)) / np.sqrt(d))
    if prune:
        w[rng.random(w.shape) < prune] = 0.0
    b = f32(rng.standard_normal(o))
    out_r, cache_r = ref.linear_forward(x, w, b)
    out_f, cache_f = fast.linear_forward(x, w, b)
    assert_close(out_f, out_r, "linear forward")
    g = f32(rng.standard_normal((n, o)))
    dx_r, dw_r, db_r = ref.linear_backward(g, cache_r, need_dx)
    dx_f, dw_f, db_f = fast.linear_backward(g, cache_f, need_dx)
    assert_close(dw_f, dw_r, "linear dw")
    assert_close(db_f, db_r, "linear db")
    if need_dx:
        assert_close(dx_f, dx_r, "linear dx")
    else:
        assert dx_f is None


# ------------------------------------------------------------------------------------ relu, flatten
@pytest.mark.parametrize("shape", [(1,), (1, 1, 1, 1), (4, 8, 32, 32), (3, 7), (2, 3, 5, 7)])
def test_relu_and_flatten(shape, rng):
    x = f32(rng.integers(-2, 3, size=shape) * rng.random(shape))  # exact zeros included
    out_r, cache_r = ref.relu_forward(x)
    out_f, cache_f = fast.relu_forward(x)
    np.testing.assert_array_equal(out_f, out_r)
    assert out_f.dtype == np.float32
    g = f32(rng.standard_normal(shape))
    np.testing.assert_array_equal(fast.relu_backward(g, cache_f), ref.relu_backward(g, cache_r))
    if len(shape) == 4:
        fo, fc = fast.flatten_forward(x)
        ro, rc = ref.flatten_forward(x)
        np.testing.assert_array_equal(fo, ro)
        g2 = f32(rng.standard_normal(ro.shape))
        np.testing.assert_array_equal(fast.flatten_backward(g2, fc), ref.flatten_backward(g2, rc))


def test_relu_propagates_nan():
    x = np.array([np.nan, -1.0, 2.0], np.float32)
    out_r, _ = ref.relu_forward(x)
    out_f, _ = fast.relu_forward(x)
    np.testing.assert_array_equal(out_f, out_r)


def test_relu_backward_non_finite_gradient():
    """A NaN or inf upstream gradient where the input is <= 0: the reference multiplies by the mask
    (NaN * 0 = NaN), and so must the fast twin."""
    x = np.array([-1.0, 0.0, 2.0, -3.0, 1.0], np.float32)
    g = np.array([np.nan, np.inf, np.nan, -np.inf, 1.0], np.float32)
    (_, cache_r), (_, cache_f) = ref.relu_forward(x), fast.relu_forward(x)
    with np.errstate(invalid="ignore"):
        want = ref.relu_backward(g, cache_r)
    assert np.isnan(want[:2]).all() and np.isnan(want[3])
    np.testing.assert_array_equal(fast.relu_backward(g, cache_f), want)


# ------------------------------------------------------------------------------------- max pooling
POOL_GRID = [
    # (N, C, H, W, K, stride)
    (1, 1, 2, 2, 2, 2),
    (1, 3, 7, 5, 2, 2),
    (4, 2, 9, 11, 2, 1),
    (2, 8, 32, 32, 2, 2),
    (3, 2, 9, 11, 3, 3),
    (2, 3, 8, 8, 3, 2),
    (1, 2, 6, 7, 3, 1),
    (2, 1, 5, 5, 1, 1),
    (1, 1, 12, 10, 4, 3),
]


@pytest.mark.parametrize("case", POOL_GRID, ids=lambda c: "-".join(map(str, c)))
@pytest.mark.parametrize("values", ["distinct", "ties", "zeros"])
def test_maxpool(case, values, rng):
    n, c, h, w, k, s = case
    shape = (n, c, h, w)
    if values == "distinct":
        x = f32(rng.standard_normal(shape))
    elif values == "ties":
        x = f32(np.maximum(rng.integers(-3, 3, size=shape), 0))  # ReLU-like: many exact zeros and repeats
    else:
        x = np.zeros(shape, np.float32)
    check_pool(rng, x, k, s)


def check_pool(rng, x, k, s):
    out_r, cache_r = ref.maxpool2d_forward(x, k, s)
    out_f, cache_f = fast.maxpool2d_forward(x, k, s)
    np.testing.assert_array_equal(out_f, out_r)
    assert out_f.dtype == out_r.dtype
    g = f32(rng.standard_normal(out_r.shape))
    # the same input receives each output's gradient (first-max tie rule); overlapping windows
    # (stride < kernel) add in another order, hence a rounding tolerance instead of equality
    assert_close(fast.maxpool2d_backward(g, cache_f), ref.maxpool2d_backward(g, cache_r), "pool dx")
    # routing, exactly: a distinct power-of-two gradient per output cannot be confused by rounding
    for o in range(min(out_r[0, 0].size, 12)):
        e = np.zeros(out_r.shape, np.float32)
        e.reshape(*out_r.shape[:2], -1)[:, :, o] = 1.0
        np.testing.assert_array_equal(fast.maxpool2d_backward(e, cache_f), ref.maxpool2d_backward(e, cache_r))


def test_maxpool_default_stride(rng):
    x = f32(rng.standard_normal((2, 2, 6, 6)))
    np.testing.assert_array_equal(fast.maxpool2d_forward(x, 2)[0], ref.maxpool2d_forward(x, 2, 2)[0])


def test_maxpool_propagates_nan():
    x = np.array([[[[1.0, np.nan], [3.0, 2.0]]]], np.float32)
    np.testing.assert_array_equal(fast.maxpool2d_forward(x, 2)[0], ref.maxpool2d_forward(x, 2)[0])


# ----------------------------------------------------------------------------- softmax cross-entropy
@pytest.mark.parametrize("n,k,scale", [(1, 10, 1.0), (16, 10, 1.0), (512, 10, 3.0), (7, 2, 1.0),
                                       (5, 10, 1e4), (3, 3, 80.0)])
def test_softmax_cross_entropy(n, k, scale, rng):
    logits = f32(rng.standard_normal((n, k)) * scale)
    labels = rng.integers(0, k, size=n)
    loss_r, d_r = ref.softmax_cross_entropy(logits, labels)
    loss_f, d_f = fast.softmax_cross_entropy(logits, labels)
    assert isinstance(loss_f, float) and np.isfinite(loss_f) and np.all(np.isfinite(d_f))
    assert loss_f == pytest.approx(loss_r, rel=RTOL, abs=ATOL)
    # dlogits are probabilities / N: absolute tolerance scaled by 1/N
    assert_close(d_f, d_r, "dlogits", atol=ATOL / n)


def test_softmax_cross_entropy_int32_labels(rng):
    logits = f32(rng.standard_normal((6, 10)))
    labels = rng.integers(0, 10, size=6).astype(np.int32)
    loss_r, d_r = ref.softmax_cross_entropy(logits, labels)
    loss_f, d_f = fast.softmax_cross_entropy(logits, labels)
    assert loss_f == pytest.approx(loss_r, rel=RTOL)
    assert_close(d_f, d_r)


# -------------------------------------------------------------------------------------------- SGD
@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("shape", [(8, 3, 3, 3), (10, 2048), (1,), (301, 257)])  # the last: the parallel loop
def test_sgd_step(momentum, weight_decay, masked, shape, rng):
    p_r = f32(rng.standard_normal(shape))
    mask = f32(rng.random(shape) > 0.5) if masked else None
    if masked:
        p_r *= mask
    p_f = p_r.copy()
    v_r = v_f = None
    for step in range(4):
        g = f32(rng.standard_normal(shape))
        v_r = ref.sgd_step(p_r, g, v_r, 0.1, momentum, weight_decay, mask)
        v_f = fast.sgd_step(p_f, g, v_f, 0.1, momentum, weight_decay, mask)
        assert p_f.dtype == np.float32
        assert_close(p_f, p_r, f"param after step {step + 1}")
        if momentum:
            assert_close(v_f, v_r, f"velocity after step {step + 1}")
        else:
            assert v_f is None and v_r is None
        if masked:
            assert np.all(p_f[mask == 0] == 0.0)
            if momentum:
                assert np.all(v_f[mask == 0] == 0.0)


def test_sgd_step_mask_dtypes(rng):
    """A uint8 or bool mask acts as the float 0/1 mask."""
    p0 = f32(rng.standard_normal((4, 5)))
    g = f32(rng.standard_normal((4, 5)))
    mask = rng.random((4, 5)) > 0.5
    p_ref = p0.copy()
    ref.sgd_step(p_ref, g, None, 0.1, 0.0, 0.0, mask.astype(np.float32))
    for m in (mask, mask.astype(np.uint8)):
        p = p0.copy()
        fast.sgd_step(p, g, None, 0.1, 0.0, 0.0, m)
        assert_close(p, p_ref)


# ---------------------------------------------------------------------------------- im2col / col2im
@pytest.mark.parametrize("n,c,h,w,kh,kw,stride,pad", [(1, 1, 3, 3, 3, 3, 1, 0), (2, 3, 7, 5, 3, 3, 1, 1),
                                                      (4, 2, 9, 11, 5, 5, 2, 2), (1, 3, 32, 32, 3, 3, 1, 1),
                                                      (3, 1, 6, 8, 2, 3, 3, 1), (2, 2, 4, 4, 1, 1, 1, 0)])
def test_im2col_col2im(n, c, h, w, kh, kw, stride, pad, rng):
    x = f32(rng.standard_normal((n, c, h, w)))
    cols_r = ref.im2col(x, kh, kw, stride, pad)
    cols_f = fast.im2col(x, kh, kw, stride, pad)
    np.testing.assert_array_equal(cols_f, cols_r)  # a pure copy: exact
    y = f32(rng.standard_normal(cols_r.shape))
    assert_close(fast.col2im(y, x.shape, kh, kw, stride, pad), ref.col2im(y, x.shape, kh, kw, stride, pad), "col2im")


# ----------------------------------------------------------------- exact agreement on a dyadic grid
def grid(rng, shape, denominator: int, top: int = None) -> np.ndarray:
    """Random multiples of 1/denominator in [-1, 1]: products and sums of a few thousand of them are
    exact in float32, so every summation order gives the same bits, and ties are real ties."""
    top = denominator if top is None else top
    return f32(rng.integers(-top, top + 1, size=shape) / denominator)


@pytest.mark.parametrize("case", CONV_GRID, ids=lambda c: "-".join(map(str, c)))
def test_conv2d_exact_on_grid(case, rng):
    """With exactly representable sums any correct kernel returns the reference's bits."""
    n, c, h, w, f, k, s, p = case
    x, wt, b = grid(rng, (n, c, h, w), 8), grid(rng, (f, c, k, k), 16), grid(rng, f, 16)
    wt[rng.random(wt.shape) < 0.3] = 0.0
    out_r, cache_r = ref.conv2d_forward(x, wt, b, s, p)
    out_f, cache_f = fast.conv2d_forward(x, wt, b, s, p)
    np.testing.assert_array_equal(out_f, out_r)
    g = grid(rng, out_r.shape, 8)
    for got, want in zip(fast.conv2d_backward(g, cache_f), ref.conv2d_backward(g, cache_r)):
        np.testing.assert_array_equal(got, want)
    cols = grid(rng, ref.im2col(x, k, k, s, p).shape, 8)
    np.testing.assert_array_equal(fast.col2im(cols, x.shape, k, k, s, p), ref.col2im(cols, x.shape, k, k, s, p))


@pytest.mark.parametrize("n,d,o", [(1, 2048, 10), (16, 2048, 10), (3, 600, 7)])
def test_linear_exact_on_grid(n, d, o, rng):
    x, w, b = grid(rng, (n, d), 8), grid(rng, (o, d), 16), grid(rng, o, 16)
    out_r, cache_r = ref.linear_forward(x, w, b)
    out_f, cache_f = fast.linear_forward(x, w, b)
    np.testing.assert_array_equal(out_f, out_r)
    g = grid(rng, (n, o), 8)
    for got, want in zip(fast.linear_backward(g, cache_f), ref.linear_backward(g, cache_r)):
        np.testing.assert_array_equal(got, want)


# ------------------------------------------------------------------------- fused conv-relu-pool
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
    """The quarter planes (minicnn/fast/block.py) from the image, against a plain NumPy build: rows of
    32 pixels and more go 16 pairs at a time through vector shuffles, the rest pair by pair."""
    from minicnn.nn.fast.block import _fill_quarters

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
        _fill_quarters(x, image, pad, wh, got, at)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_split_step_equals_its_python_twin(dtype, rng):
    """The vector de-interleave (minicnn/fast/_simd.py) against the plain loop it stands for, at odd
    offsets in all three arrays."""
    from numba import njit

    from minicnn.nn.fast._simd import STEP, _split_step_python, _split_step_vector

    @njit
    def compiled(src, s, even, e, odd, o):
        _split_step_vector(src, s, even, e, odd, o)

    src = rng.standard_normal(2 * STEP + 9).astype(dtype)
    for s, e, o in [(0, 0, 0), (3, 5, 1), (9, 2, 7)]:
        got_even, got_odd = np.full(STEP + 8, -1.0, dtype), np.full(STEP + 8, -1.0, dtype)
        want_even, want_odd = got_even.copy(), got_odd.copy()
        compiled(src, s, got_even, e, got_odd, o)
        _split_step_python(src, s, want_even, e, want_odd, o)
        np.testing.assert_array_equal(got_even, want_even)
        np.testing.assert_array_equal(got_odd, want_odd)
        np.testing.assert_array_equal(want_even[e:e + STEP], src[s:s + 2 * STEP:2])  # the twin does what it says


def block_kink_margin(x, wt, b, s, p, pk, ps) -> float:
    """Float64 distance of the conv outputs from ReLU's kink and of each pooling window's maximum from
    its runner-up (rounding may flip decisions closer than that)."""
    z = ref.conv2d_forward(x.astype(np.float64), wt.astype(np.float64), b.astype(np.float64), s, p)[0]
    r = np.maximum(z, 0.0)
    cols = ref.im2col(r.reshape(-1, 1, *r.shape[2:]), pk, pk, ps, 0)  # (N*F, PK*PK, P)
    srt = np.sort(cols, axis=1)
    top, second = srt[:, -1], srt[:, -2] if pk > 1 else np.zeros_like(srt[:, -1])
    gaps = (top - second)[top > 0]
    return float(min(np.abs(z).min(), gaps.min() if gaps.size else np.inf))


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
    import minicnn.nn.fast.block as block

    active = rng.random((4, 3, 3, 3)) < 0.5
    active[0, 0] = False
    monkeypatch.setattr(block, "NINE_TAP_MIN_DENSITY", 0.0)
    assert block._skip_plan(active)[0]
    monkeypatch.setattr(block, "NINE_TAP_MIN_DENSITY", 2.0)
    for pattern in (active, ~active, active):
        nine_taps, counts, taps, live = block._skip_plan(pattern)
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
    import minicnn.nn.fast.block as block

    monkeypatch.setattr(block, "NINE_TAP_MIN_DENSITY", 0.0 if path == "nine_taps" else 2.0)
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
    import minicnn.nn.fast.block as block

    monkeypatch.setattr(block, "NINE_TAP_MIN_DENSITY", 0.0 if path == "nine_taps" else 2.0)
    n, c, h, w, f, k, s, p = case
    x, wt, b = grid(rng, (n, c, h, w), 4, 2), grid(rng, (f, c, k, k), 4, 2), grid(rng, f, 4, 2)
    mask = None
    if density < 1.0:
        mask = f32(rng.random(wt.shape) < density)
        mask[0, 0] = 0.0  # a whole channel pruned
        wt *= mask
    out_r, cache_r = ref.conv_relu_forward(x, wt, b, s, p)
    out_f, cache_f = fast.conv_relu_forward(x, wt, b, s, p)
    assert cache_f[0] == ("split" if s == 1 else "layers")
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


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("need_dx", [True, False])
def test_conv_relu_pool_backward_non_finite_gradient(bad, need_dx, rng):
    """A NaN or inf upstream gradient reaches only its window's argmax cell, as in the reference (the
    fast kernel's multiply-by-mask shortcuts must fall back to exact selects; without dx, the weight
    gradient taken straight from the pooling codes too)."""
    x, wt, b = grid(rng, (2, 2, 8, 8), 4, 2), grid(rng, (3, 2, 3, 3), 4, 2), grid(rng, 3, 4, 2)
    wt[wt == 0] = 0.25  # (dx skips zero weights, where the reference spreads NaN * 0)
    out_r, cache_r = ref.conv_relu_pool_forward(x, wt, b, 1, 1, 2, 2)
    _, cache_f = fast.conv_relu_pool_forward(x, wt, b, 1, 1, 2, 2)
    g = grid(rng, out_r.shape, 8)
    g[0, 1, 2, 3] = bad
    for name, got, want in zip(("dx", "dw", "db"), fast.conv_relu_pool_backward(g, cache_f, need_dx),
                               ref.conv_relu_pool_backward(g, cache_r, need_dx)):
        np.testing.assert_array_equal(got, want, err_msg=name)


@pytest.mark.parametrize("bad", [-np.inf, np.inf, np.nan])
def test_conv_relu_pool_backward_non_finite_input(bad, rng):
    """An inf or NaN pixel with a finite upstream gradient: the reference's weight gradient multiplies
    every pixel by its conv cell's gradient, so 0 * inf makes NaN even where that gradient is 0. The fast
    kernel's codes path multiplies only each window's argmax pixel, so it must notice the pixel and take
    the exact path (without dx: the path that reads the weight gradient straight from the codes)."""
    x, wt, b = grid(rng, (2, 2, 8, 8), 4, 2), np.abs(grid(rng, (3, 2, 3, 3), 4, 2)) + 0.25, grid(rng, 3, 4, 2)
    x[1, 0, 3, 4] = bad  # positive weights: the conv cells that read it are inf or -inf (or NaN), no mix
    with np.errstate(invalid="ignore"):
        out_r, cache_r = ref.conv_relu_pool_forward(x, wt, b, 1, 1, 2, 2)
    _, cache_f = fast.conv_relu_pool_forward(x, wt, b, 1, 1, 2, 2)
    g = grid(rng, out_r.shape, 8)
    with np.errstate(invalid="ignore"):
        want = ref.conv_relu_pool_backward(g, cache_r, False)
    got = fast.conv_relu_pool_backward(g, cache_f, False)
    assert np.isnan(want[1]).any()
    for name, a, b_ in zip(("dw", "db"), got[1:], want[1:]):
        np.testing.assert_array_equal(a, b_, err_msg=name)


def test_conv_relu_pool_linear_loss_negative_inf_input(rng):
    """A -inf pixel under positive conv weights: its conv cells are -inf, ReLU and pooling make them 0,
    so the logits and the pooled gradients stay finite, yet the reference's weight gradient is NaN where
    the pixel meets a zero cell gradient (0 * -inf). The whole-model op must give the same."""
    x, wt, b, p, fc_w, fc_b, labels, _, _ = convnet_inputs(rng, (3, 2, 8, 8, 3, 3, 1, 4), None)
    wt = np.abs(wt) + 0.25
    x[1, 0, 3, 4] = -np.inf
    with np.errstate(invalid="ignore"):
        want = ref.conv_relu_pool_linear_loss(x, wt, b, p, fc_w, fc_b, labels)
    got = fast.conv_relu_pool_linear_loss(x, wt, b, p, fc_w, fc_b, labels)
    assert np.isfinite(want[1]).all() and np.isnan(want[2]).any()
    for name, a, b_ in zip(("logits", "dw", "db", "dfc_w", "dfc_b"), got[1:], want[1:]):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b_), err_msg=name)
        assert_close(np.nan_to_num(a), np.nan_to_num(b_), f"convnet {name}")


def test_conv_relu_pool_propagates_nan():
    x = np.ones((1, 1, 4, 4), np.float32)
    wt = np.ones((1, 1, 3, 3), np.float32)
    wt[0, 0, 1, 1] = np.nan
    b = np.zeros(1, np.float32)
    out_r, _ = ref.conv_relu_pool_forward(x, wt, b, 1, 1, 2, 2)
    out_f, _ = fast.conv_relu_pool_forward(x, wt, b, 1, 1, 2, 2)
    assert np.isnan(out_r).all()
    np.testing.assert_array_equal(out_f, out_r)


def test_backends_have_the_same_ops():
    """Same op names and the same signatures in both backends (the fast twins' contract)."""
    import inspect

    from minicnn.nn.backend import OPS

    names = [name for group in OPS.values() for name in group]
    for name in names:
        r, f = getattr(ref, name), getattr(fast, name)
        rp = [(q.name, q.default) for q in inspect.signature(r).parameters.values()]
        fp = [(q.name, q.default) for q in inspect.signature(f).parameters.values()]
        assert rp == fp, name


# ---------------------------------------------------------------------------- random small shapes
SETTINGS = settings(max_examples=30, deadline=None, derandomize=True)


@st.composite
def conv_cases(draw):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    pad = draw(st.integers(0, 2))
    h = draw(st.integers(max(1, kh - 2 * pad), 10))
    w = draw(st.integers(max(1, kw - 2 * pad), 10))
    return dict(n=draw(st.integers(1, 4)), c=draw(st.integers(1, 4)), h=h, w=w, f=draw(st.integers(1, 5)),
                kh=kh, kw=kw, stride=draw(st.integers(1, 3)), pad=pad, prune=draw(st.sampled_from([0.0, 0.5])),
                need_dx=draw(st.booleans()), seed=draw(st.integers(0, 2**31)))


@SETTINGS
@given(conv_cases())
def test_conv2d_random_shapes(case):
    seed = case.pop("seed")
    check_conv(np.random.default_rng(seed), **case)


@st.composite
def pool_cases(draw):
    k = draw(st.integers(1, 4))
    return dict(n=draw(st.integers(1, 3)), c=draw(st.integers(1, 3)), h=draw(st.integers(k, 11)),
                w=draw(st.integers(k, 11)), k=k, s=draw(st.integers(1, 4)), ties=draw(st.booleans()),
                seed=draw(st.integers(0, 2**31)))


@SETTINGS
@given(pool_cases())
def test_maxpool_random_shapes(case):
    rng = np.random.default_rng(case["seed"])
    shape = (case["n"], case["c"], case["h"], case["w"])
    x = f32(np.maximum(rng.integers(-2, 3, size=shape), 0)) if case["ties"] else f32(rng.standard_normal(shape))
    check_pool(rng, x, case["k"], case["s"])


@SETTINGS
@given(n=st.integers(1, 6), d=st.integers(1, 300), o=st.integers(1, 12), seed=st.integers(0, 2**31))
def test_linear_and_loss_random_shapes(n, d, o, seed):
    rng = np.random.default_rng(seed)
    x = f32(rng.standard_normal((n, d)))
    w = f32(rng.uniform(-1, 1, (o, d)) / np.sqrt(d))
    b = f32(rng.standard_normal(o))
    out_r, cache_r = ref.linear_forward(x, w, b)
    out_f, cache_f = fast.linear_forward(x, w, b)
    assert_close(out_f, out_r, "linear forward")
    labels = rng.integers(0, o, size=n)
    loss_r, d_r = ref.softmax_cross_entropy(out_r, labels)
    loss_f, d_f = fast.softmax_cross_entropy(out_r, labels)
    assert loss_f == pytest.approx(loss_r, rel=RTOL, abs=ATOL)
    assert_close(d_f, d_r, "dlogits", atol=ATOL / n)
    for a, b_ in zip(fast.linear_backward(d_r, cache_f), ref.linear_backward(d_r, cache_r)):
        assert_close(a, b_, "linear backward")


@SETTINGS
@given(size=st.integers(1, 200), momentum=st.sampled_from([0.0, 0.5, 0.9]),
       weight_decay=st.sampled_from([0.0, 5e-4, 1e-2]), lr=st.floats(1e-3, 1.0), masked=st.booleans(),
       seed=st.integers(0, 2**31))
def test_sgd_random(size, momentum, weight_decay, lr, masked, seed):
    rng = np.random.default_rng(seed)
    p_r = f32(rng.standard_normal(size))
    mask = f32(rng.random(size) > 0.3) if masked else None
    p_f = p_r.copy()
    v_r = v_f = None
    for _ in range(3):
        g = f32(rng.standard_normal(size))
        v_r = ref.sgd_step(p_r, g, v_r, lr, momentum, weight_decay, mask)
        v_f = fast.sgd_step(p_f, g, v_f, lr, momentum, weight_decay, mask)
    assert_close(p_f, p_r)


# --------------------------------------------------------------------- kernels as plain Python
_PLAIN_PYTHON_CHECK = r"""
import json, sys
import numpy as np
import numba
from numba.core import config
assert config.DISABLE_JIT, "NUMBA_DISABLE_JIT did not take effect"
from minicnn.nn.backend import get_backend
from minicnn.nn.fast import conv as fast_conv
assert not hasattr(fast_conv._conv_forward, "py_func"), "kernels are still compiled"
ref, fast = get_backend("ref"), get_backend("fast")
rng = np.random.default_rng(7)
f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)
errors = {}

def err(name, a, b):
    if a is None and b is None:
        return
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (name, a.shape, b.shape)
    e = float(np.max(np.abs(a - b) / (1e-5 + 1e-4 * np.abs(b)))) if a.size else 0.0
    errors[name] = max(errors.get(name, 0.0), e)

for (n, c, h, w, f, k, s, p) in [(2, 2, 5, 4, 3, 3, 1, 1), (1, 3, 6, 7, 2, 3, 2, 0), (3, 1, 5, 5, 2, 2, 3, 2)]:
    x = f32(rng.standard_normal((n, c, h, w)))
    wt = f32(rng.standard_normal((f, c, k, k)))
    wt[0, 0, 0, 0] = 0.0
    b = f32(rng.standard_normal(f))
    (orf, crf), (off, cff) = ref.conv2d_forward(x, wt, b, s, p), fast.conv2d_forward(x, wt, b, s, p)
    err("conv forward", off, orf)
    g = f32(rng.standard_normal(orf.shape))
    for name, a, b_ in zip(("conv dx", "conv dw", "conv db"), fast.conv2d_backward(g, cff),
                           ref.conv2d_backward(g, crf)):
        err(name, a, b_)
    err("im2col", fast.im2col(x, k, k, s, p), ref.im2col(x, k, k, s, p))
    cols = f32(rng.standard_normal(ref.im2col(x, k, k, s, p).shape))
    err("col2im", fast.col2im(cols, x.shape, k, k, s, p), ref.col2im(cols, x.shape, k, k, s, p))

for (shape, k, s) in [((2, 2, 6, 5), 2, 2), ((1, 3, 7, 7), 3, 2), ((2, 1, 5, 6), 2, 1)]:
    x = f32(np.maximum(rng.integers(-2, 3, size=shape), 0))
    (orr, crr), (of, cf) = ref.maxpool2d_forward(x, k, s), fast.maxpool2d_forward(x, k, s)
    err("pool forward", of, orr)
    g = f32(rng.standard_normal(orr.shape))
    err("pool backward", fast.maxpool2d_backward(g, cf), ref.maxpool2d_backward(g, crr))

for (n, c, h, w, f, k, s, p, pk, ps) in [(2, 2, 6, 7, 3, 3, 1, 1, 2, 2), (1, 2, 7, 7, 2, 3, 1, 0, 3, 2),
                                          (2, 1, 8, 6, 2, 3, 2, 1, 2, 1)]:
    # values on a coarse grid: sums are exact whatever the order, and ties are frequent
    x = f32(rng.integers(-2, 3, size=(n, c, h, w)) / 4)
    wt = f32(rng.integers(-2, 3, size=(f, c, k, k)) / 4)
    b = f32(rng.integers(-2, 3, size=f) / 4)
    mask = f32(rng.random(wt.shape) > 0.3)
    wt *= mask
    (orr, crr) = ref.conv_relu_pool_forward(x, wt, b, s, p, pk, ps)
    (of, cf) = fast.conv_relu_pool_forward(x, wt, b, s, p, pk, ps)
    err("block forward", of, orr)
    g = f32(rng.integers(-4, 5, size=orr.shape) / 8)
    for m in (None, mask):
        for name, a, b_ in zip(("block dx", "block dw", "block db"), fast.conv_relu_pool_backward(g, cf, True, m),
                               ref.conv_relu_pool_backward(g, crr, True, m)):
            err(name, a, b_)

for (n, c, h, w, f, k, p, classes) in [(3, 2, 6, 7, 3, 3, 1, 4), (2, 1, 7, 6, 2, 3, 0, 3)]:
    x = f32(rng.integers(-2, 3, size=(n, c, h, w)) / 4)
    wt = f32(rng.integers(-2, 3, size=(f, c, k, k)) / 4)
    b = f32(rng.integers(-2, 3, size=f) / 4)
    ph, pw = (h + 2 * p - k + 1) // 2, (w + 2 * p - k + 1) // 2
    fw = f32(rng.integers(-2, 3, size=(classes, f * ph * pw)) / 8)
    fb = f32(rng.integers(-2, 3, size=classes) / 4)
    labels = rng.integers(0, classes, size=n)
    got = fast.conv_relu_pool_linear_loss(x, wt, b, p, fw, fb, labels)
    want = ref.conv_relu_pool_linear_loss(x, wt, b, p, fw, fb, labels)
    for name, a, b_ in zip(("convnet loss", "convnet logits", "convnet dw", "convnet db", "convnet dfc_w",
                            "convnet dfc_b"), got, want):
        err(name, a, b_)
    err("convnet inference", fast.conv_relu_pool_linear_forward(x, wt, b, p, fw, fb), want[1])

x = f32(rng.integers(-2, 3, size=(2, 3, 4, 4)) * rng.random((2, 3, 4, 4)))
(orr, crr), (of, cf) = ref.relu_forward(x), fast.relu_forward(x)
err("relu forward", of, orr)
g = f32(rng.standard_normal(x.shape))
err("relu backward", fast.relu_backward(g, cf), ref.relu_backward(g, crr))

x, w, b = f32(rng.standard_normal((3, 300))), f32(rng.standard_normal((4, 300))), f32(rng.standard_normal(4))
(orr, crr), (of, cf) = ref.linear_forward(x, w, b), fast.linear_forward(x, w, b)
err("linear forward", of, orr)
g = f32(rng.standard_normal(orr.shape))
for name, a, b_ in zip(("linear dx", "linear dw", "linear db"), fast.linear_backward(g, cf),
                       ref.linear_backward(g, crr)):
    err(name, a, b_)

logits, labels = f32(rng.standard_normal((5, 10)) * 5), rng.integers(0, 10, size=5)
(lr_, dr), (lf, df) = ref.softmax_cross_entropy(logits, labels), fast.softmax_cross_entropy(logits, labels)
err("softmax loss", lf, lr_)
err("softmax dlogits", df, dr)

for momentum, wd, masked in [(0.0, 0.0, False), (0.9, 1e-2, True)]:
    pr = f32(rng.standard_normal(20)); pf = pr.copy()
    mask = f32(rng.random(20) > 0.5) if masked else None
    vr = vf = None
    for _ in range(3):
        g = f32(rng.standard_normal(20))
        vr = ref.sgd_step(pr, g, vr, 0.1, momentum, wd, mask)
        vf = fast.sgd_step(pf, g, vf, 0.1, momentum, wd, mask)
    err(f"sgd m={momentum}", pf, pr)

print("RESULT " + json.dumps(errors))
"""


def test_fast_kernels_as_plain_python():
    """With NUMBA_DISABLE_JIT=1 the kernels run as ordinary Python (prange is range): their logic,
    not only the compiled code, must equal the reference."""
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run([sys.executable, "-c", _PLAIN_PYTHON_CHECK], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    errors = json.loads(line[len("RESULT "):])
    expected = {"conv forward", "conv dx", "conv dw", "conv db", "im2col", "col2im", "pool forward",
                "pool backward", "relu forward", "relu backward", "linear forward", "linear dx", "linear dw",
                "linear db", "softmax loss", "softmax dlogits", "sgd m=0.0", "sgd m=0.9", "block forward",
                "block dx", "block dw", "block db", "convnet loss", "convnet logits", "convnet dw", "convnet db",
                "convnet dfc_w", "convnet dfc_b", "convnet inference"}
    assert set(errors) == expected
    # each value is max |fast - ref| / (ATOL + RTOL |ref|): below 1 means within tolerance
    bad = {k: v for k, v in errors.items() if not v <= 1.0}
    assert not bad, bad


def test_kernel_cache_folder_follows_every_fast_source(tmp_path, monkeypatch):
    """A kernel's cached machine code includes the helpers it calls from other files, which Numba does
    not re-check: the cache folder is named after all of minicnn/fast's sources, so a change to any one
    of them (here the vector helper only) compiles afresh."""
    import shutil

    import numba

    from minicnn.nn.fast import _jit

    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    sources = tmp_path / "fast"
    shutil.copytree(ROOT / "minicnn" / "nn" / "fast", sources, ignore=shutil.ignore_patterns("__pycache__"))
    first = _jit._kernel_cache_dir(sources)
    assert first == _jit._kernel_cache_dir(sources)
    assert Path(first).parent == sources / "__pycache__"
    with open(sources / "_simd.py", "a") as f:
        f.write("# changed\n")
    assert _jit._kernel_cache_dir(sources) != first
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "mine"))
    assert _jit._kernel_cache_dir(sources) is None  # the user's choice stands
    if _jit._CACHE_DIR is not None:
        assert numba.config.CACHE_DIR == _jit._CACHE_DIR


_WHOLE_OP_RUN = """
import sys
import numpy as np
from minicnn.nn.fast import convnet
rng = np.random.default_rng(0)
x = rng.standard_normal((64, 3, 32, 32)).astype(np.float32)
w, b = (rng.standard_normal((8, 3, 3, 3)) * 0.2).astype(np.float32), (rng.standard_normal(8) * 0.1).astype(np.float32)
fc_w, fc_b = (rng.standard_normal((10, 2048)) * 0.02).astype(np.float32), np.zeros(10, np.float32)
out = convnet.conv_relu_pool_linear_loss(x, w, b, 1, fc_w, fc_b, rng.integers(0, 10, 64))
np.savez(sys.argv[1], *[np.asarray(o) for o in out])
"""


def test_whole_model_op_same_compiled_or_cached(tmp_path):
    """A process that compiles the paper model's whole-model op and one that loads it from the kernel
    cache compute the same bits: training at lr 0.8 is chaotic, so a last-bit difference in one
    gradient sum (db, once) sent `minicnn train`'s first run to other accuracies than its second."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "kernels"))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    runs = []
    for name in ("compiled", "cached"):
        out = tmp_path / f"{name}.npz"
        proc = subprocess.run([sys.executable, "-c", _WHOLE_OP_RUN, str(out)], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-4000:]
        runs.append(np.load(out))
    for key, what in zip(runs[0].files, ("loss", "logits", "dw", "db", "dfc_w", "dfc_b")):
        np.testing.assert_array_equal(runs[0][key], runs[1][key], err_msg=what)


def test_fast_maxpool_as_plain_python_on_a_wide_image():
    script = ("import numpy as np\n"
              "from minicnn.nn.backend import get_backend\n"
              "f, r = get_backend('fast'), get_backend('ref')\n"
              "x = np.random.default_rng(0).random((1, 1, 2, 300)).astype(np.float32)\n"
              "(o, c), (o2, c2) = f.maxpool2d_forward(x, 2), r.maxpool2d_forward(x, 2)\n"
              "g = np.ones_like(o)\n"
              "assert np.array_equal(f.maxpool2d_backward(g, c), r.maxpool2d_backward(g, c2))\n")
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


# --------------------------------------------------------------- wide layers: im2col + BLAS path
@pytest.mark.parametrize("n, c, h, w, f, k, stride, pad", [
    (3, 16, 9, 7, 32, 3, 1, 1),   # 4608 weights: just above the threshold
    (2, 64, 8, 8, 64, 3, 2, 1),   # Conv-2's 64x64x3x3, strided
    (70, 48, 6, 6, 16, 3, 1, 0),  # 70 images: many im2col chunks
])
@pytest.mark.parametrize("need_dx", [True, False])
def test_conv2d_wide_layers_use_matrix_products_and_agree(monkeypatch, n, c, h, w, f, k, stride, pad, need_dx, rng):
    import minicnn.nn.fast.conv as fast_conv

    assert fast_conv.uses_gemm(np.zeros((f, c, k, k), np.float32))
    monkeypatch.setattr(fast_conv, "_GEMM_CHUNK_BYTES", 4 * c * k * k * h * w * 3)  # a few images per chunk
    check_conv(rng, n, c, h, w, f, k, k, stride, pad, need_dx=need_dx)


@pytest.mark.parametrize("pool, path", [(2, "split"), (3, "layers")])
def test_fused_block_on_a_wide_layer_agrees(pool, path, rng):
    """A wide filter bank: the 2x2 pool keeps the parity-split kernels (they beat im2col + BLAS there),
    other pools go through the matrix-product conv and the separate ops."""
    x = f32(rng.standard_normal((3, 16, 8, 8)))
    wt = f32(rng.standard_normal((32, 16, 3, 3)) * 0.2)
    b = f32(rng.standard_normal(32) * 0.1)
    out_f, cache_f = fast.conv_relu_pool_forward(x, wt, b, 1, 1, pool, 2)
    out_r, cache_r = ref.conv_relu_pool_forward(x, wt, b, 1, 1, pool, 2)
    assert cache_f[0] == path
    assert_close(out_f, out_r, "wide block forward")
    g = f32(rng.standard_normal(out_r.shape))
    for got, want, what in zip(fast.conv_relu_pool_backward(g, cache_f), ref.conv_relu_pool_backward(g, cache_r),
                               ("dx", "dw", "db")):
        assert_close(got, want, f"wide block {what}")


def test_linear_wide_layer_uses_blas_and_agrees(rng):
    import minicnn.nn.fast.dense as fast_dense

    x = f32(rng.standard_normal((9, 20000)))
    wt = f32(rng.standard_normal((7, 20000)) * 0.01)
    assert wt.size >= fast_dense.BLAS_MIN_WEIGHTS
    b = f32(rng.standard_normal(7))
    out_f, cache_f = fast.linear_forward(x, wt, b)
    out_r, cache_r = ref.linear_forward(x, wt, b)
    assert_close(out_f, out_r, "wide linear forward")
    g = f32(rng.standard_normal(out_r.shape))
    for got, want, what in zip(fast.linear_backward(g, cache_f), ref.linear_backward(g, cache_r), ("dx", "dw", "db")):
        assert_close(got, want, f"wide linear {what}")


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


# ------------------------------------------------- the one-conv network as one op (paper's model)
CONVNET_GRID = [
    # (N, C, H, W, F, K, pad, classes)
    (4, 3, 32, 32, 8, 3, 1, 10),  # the paper's model
    (5, 2, 9, 11, 3, 3, 1, 4),  # odd sizes: the last conv row and column are not pooled
    (3, 3, 10, 8, 4, 3, 0, 3),  # no padding
    (2, 2, 7, 10, 3, 5, 2, 5),  # 5x5 filters: one pass per tap
    (3, 1, 6, 6, 1, 3, 1, 2),  # one channel, one filter
    (13, 2, 9, 11, 3, 3, 1, 3),  # several groups of images per thread (the kernel's buffers reused), short ones
]


def convnet_inputs(rng, case, pruned):
    """Grid values (see grid): the conv, pooling decisions and logits are exact in both backends, so
    only the softmax's rounding separates them. pruned: None, 'conv', 'both' (conv and linear masks)
    or 'sparse' (a conv so sparse the kernels go tap by tap, and a sparse linear layer)."""
    n, c, h, w, f, k, p, classes = case
    x, wt, b = grid(rng, (n, c, h, w), 4, 2), grid(rng, (f, c, k, k), 4, 2), grid(rng, f, 4, 2)
    ph, pw = (h + 2 * p - k + 1) // 2, (w + 2 * p - k + 1) // 2
    fc_w, fc_b = grid(rng, (classes, f * ph * pw), 8, 2), grid(rng, classes, 4, 2)
    labels = rng.integers(0, classes, size=n)
    mask = fc_mask = None
    if pruned in ("conv", "both", "sparse"):
        mask = f32(rng.random(wt.shape) < (0.15 if pruned == "sparse" else 0.6))
        mask[0, 0] = 0.0  # a whole channel pruned
        wt *= mask
    if pruned in ("both", "sparse"):
        fc_mask = f32(rng.random(fc_w.shape) < (0.05 if pruned == "sparse" else 0.5))
        fc_w *= fc_mask
    return x, wt, b, p, fc_w, fc_b, labels, mask, fc_mask


@pytest.mark.parametrize("case", CONVNET_GRID, ids=lambda c: "-".join(map(str, c)))
@pytest.mark.parametrize("pruned", [None, "conv", "both", "sparse"])
def test_conv_relu_pool_linear_loss(case, pruned, rng):
    """The whole network's loss, logits and four gradients equal the reference composition."""
    x, wt, b, p, fc_w, fc_b, labels, mask, fc_mask = convnet_inputs(rng, case, pruned)
    want = ref.conv_relu_pool_linear_loss(x, wt, b, p, fc_w, fc_b, labels, mask, fc_mask)
    got = fast.conv_relu_pool_linear_loss(x, wt, b, p, fc_w, fc_b, labels, mask, fc_mask)
    assert isinstance(got[0], float)
    assert abs(got[0] - want[0]) <= ATOL + RTOL * abs(want[0]), (got[0], want[0])
    for name, a, b_ in zip(("logits", "dw", "db", "dfc_w", "dfc_b"), got[1:], want[1:]):
        assert_close(a, b_, f"convnet {name}")
    if mask is not None:
        assert np.all(got[2][mask == 0] == 0.0)
    if fc_mask is not None:
        assert np.all(got[4][fc_mask == 0] == 0.0)
    logits = fast.conv_relu_pool_linear_forward(x, wt, b, p, fc_w, fc_b)
    assert_close(logits, ref.conv_relu_pool_linear_forward(x, wt, b, p, fc_w, fc_b), "convnet inference logits")
    np.testing.assert_array_equal(logits, got[1])  # inference computes the same sums as training


def test_conv_relu_pool_linear_loss_continuous(rng):
    """Continuous values, the paper's shapes, float32 and float64: equal up to rounding."""
    for dtype in (np.float32, np.float64):
        x = rng.standard_normal((6, 3, 32, 32)).astype(dtype)
        wt, b = (rng.standard_normal((8, 3, 3, 3)) * 0.2).astype(dtype), (rng.standard_normal(8) * 0.1).astype(dtype)
        fc_w, fc_b = (rng.standard_normal((10, 2048)) * 0.02).astype(dtype), (rng.standard_normal(10) * 0.1).astype(dtype)
        labels = rng.integers(0, 10, size=6)
        if block_kink_margin(x, wt, b, 1, 1, 2, 2) < 1e-6:
            continue  # (a near tie may route a gradient differently under rounding)
        want = ref.conv_relu_pool_linear_loss(x, wt, b, 1, fc_w, fc_b, labels)
        got = fast.conv_relu_pool_linear_loss(x, wt, b, 1, fc_w, fc_b, labels)
        assert abs(got[0] - want[0]) <= ATOL + RTOL * abs(want[0])
        for name, a, b_ in zip(("logits", "dw", "db", "dfc_w", "dfc_b"), got[1:], want[1:]):
            assert_close(a, b_, f"convnet {name} {np.dtype(dtype).name}")


@pytest.mark.parametrize("where", ["input", "weight"])
def test_conv_relu_pool_linear_loss_non_finite(where, rng):
    """A NaN in the input or the weights makes the loss and every gradient NaN where the reference's are
    (the kernel's weight gradient straight from the pooling codes must fall back for NaN gradients)."""
    x, wt, b, p, fc_w, fc_b, labels, _, _ = convnet_inputs(rng, (3, 2, 8, 8, 3, 3, 1, 4), None)
    if where == "input":
        x[1, 0, 3, 4] = np.nan
    else:
        wt[2, 1, 1, 1] = np.nan
    with np.errstate(invalid="ignore"):
        want = ref.conv_relu_pool_linear_loss(x, wt, b, p, fc_w, fc_b, labels)
    got = fast.conv_relu_pool_linear_loss(x, wt, b, p, fc_w, fc_b, labels)
    assert np.isnan(got[0]) and np.isnan(want[0])
    for name, a, b_ in zip(("logits", "dw", "db", "dfc_w", "dfc_b"), got[1:], want[1:]):
        if where == "weight" and name in ("dw", "db"):
            # A pooling window whose maximum is NaN passes no gradient in the fast kernels (its code
            # says "no gradient", as the layer-by-layer kernels do), where the reference's ReLU mask
            # turns it into NaN * 0 = NaN: no NaN the reference lacks, the loss NaN in both.
            assert np.isnan(b_)[np.isnan(a)].all(), name
        else:
            np.testing.assert_array_equal(np.isnan(a), np.isnan(b_), err_msg=name)


def test_conv_relu_pool_linear_loss_rejects_bad_labels_and_shapes(rng):
    x, wt, b, p, fc_w, fc_b, labels, _, _ = convnet_inputs(rng, (3, 2, 8, 8, 3, 3, 1, 4), None)
    for bad in (np.array([0, 1, 4]), np.array([0, -1, 2]), np.array([0, 1])):
        with pytest.raises(ValueError, match="labels"):
            fast.conv_relu_pool_linear_loss(x, wt, b, p, fc_w, fc_b, bad)
    with pytest.raises(ValueError, match="fc_w"):
        fast.conv_relu_pool_linear_loss(x, wt, b, p, fc_w[:, 1:], fc_b, labels)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_zero_blocked_and_sum(dtype, rng):
    """_zero_blocked_and_sum sets the gradient of every window of code 4 (ReLU blocked it) to 0 in
    place, sums the rest and says whether the rest is finite: a NaN in a blocked window is dropped, one
    in a kept window is reported (the caller then takes the exact path)."""
    from minicnn.nn.fast.block import _zero_blocked_and_sum

    code = rng.integers(0, 5, size=70).astype(np.int8)
    code[[3, 40]] = 4
    code[10] = 1
    grad = rng.standard_normal(70).astype(dtype)
    grad[3] = np.nan
    grad[40] = np.inf
    kept = np.where(code < 4, grad, 0).astype(dtype)
    work = grad.copy()
    total, finite = _zero_blocked_and_sum(code, work)
    np.testing.assert_array_equal(work, kept)
    assert finite
    assert abs(total - kept.sum(dtype=np.float64)) <= 1e-5 * np.abs(kept).sum()
    work = grad.copy()
    work[10] = np.nan
    _, finite = _zero_blocked_and_sum(code, work)
    assert not finite


@pytest.mark.parametrize("n_parts", [1, 2, 3])
def test_publish_sums_thread_parts_in_order(n_parts, rng):
    """The whole-network op's threads' sums become dw, db, dfc_w (back from split rows: the junk
    columns dropped) and dfc_b as part 0 + part 1 + ..., exactly (float32)."""
    from minicnn.nn.fast.convnet import _publish

    n_filt, n_class, ph, pw, wh = 3, 4, 5, 5, 6
    span = ph * wh
    loss = rng.standard_normal(n_parts)
    dw_part = f32(rng.standard_normal((n_parts, n_filt, 2, 3, 3)))
    db_part, dfcb_part = f32(rng.standard_normal((n_parts, n_filt))), f32(rng.standard_normal((n_parts, n_class)))
    dfc_part = f32(rng.standard_normal((n_parts, n_class, n_filt * span)))
    dw, db = np.empty(dw_part.shape[1:], np.float32), np.empty(n_filt, np.float32)
    dfc_w, dfc_b = np.empty((n_class, n_filt * ph * pw), np.float32), np.empty(n_class, np.float32)
    total = _publish(loss, dw_part, db_part, dfc_part, dfcb_part, ph, pw, wh, dw, db, dfc_w, dfc_b)

    def in_order(parts):
        out = parts[0].copy()
        for part in parts[1:]:
            out += part
        return out

    assert total == pytest.approx(loss.sum())
    np.testing.assert_array_equal(dw, in_order(dw_part))
    np.testing.assert_array_equal(db, in_order(db_part))
    np.testing.assert_array_equal(dfc_b, in_order(dfcb_part))
    rows = in_order(dfc_part).reshape(n_class, n_filt, ph, wh)[:, :, :, :pw]  # split rows -> (K, F, PH, PW)
    np.testing.assert_array_equal(dfc_w, rows.reshape(n_class, n_filt * ph * pw))


def test_one_conv_model_trains_through_the_whole_network_op(rng):
    """A conv -> relu -> pool2 -> flatten -> linear model takes one op per training pass: the same loss,
    logits and gradients as layer by layer; any other model goes layer by layer; and a backward after
    such a pass is refused (the layers hold no caches of it)."""
    from minicnn.nn.model import build_model

    x = f32(rng.standard_normal((5, 3, 12, 12)))
    labels = rng.integers(0, 10, size=5)
    model = build_model("conv4,relu,pool2,flatten,linear10", np.random.default_rng(0), input_shape=(3, 12, 12))
    model.layers[0].masks["weight"] = f32(rng.random(model.layers[0].params["weight"].shape) < 0.7)
    model.layers[0].params["weight"] *= model.layers[0].masks["weight"]
    assert model._one_conv_net() is not None
    loss, logits = model.loss_and_gradients(x, labels)
    fused = {f"{layer.name}.{k}": v.copy() for layer in model.param_layers() for k, v in layer.grads.items()}
    with pytest.raises(RuntimeError, match="loss_and_gradients"):
        model.backward(np.zeros((5, 10), np.float32))
    layer_logits = model.forward(x)
    layer_loss, dlogits = model.ops.softmax_cross_entropy(layer_logits, labels)
    model.backward(dlogits)
    assert abs(loss - layer_loss) <= ATOL + RTOL * abs(layer_loss)
    assert_close(logits, layer_logits, "logits")
    for layer in model.param_layers():
        for k, v in layer.grads.items():
            assert_close(fused[f"{layer.name}.{k}"], v, f"{layer.name}.{k}")
    assert_close(model.forward(x, for_backward=False), layer_logits, "inference logits")
    for spec in ("conv4,relu,pool2,flatten,linear5,relu,linear10", "conv4s2,relu,pool2,flatten,linear10",
                 "conv4,relu,pool3,flatten,linear10", "conv4,pool2,relu,flatten,linear10"):
        assert build_model(spec, np.random.default_rng(0), input_shape=(3, 12, 12))._one_conv_net() is None, spec
