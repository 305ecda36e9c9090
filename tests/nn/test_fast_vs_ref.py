"""Every Numba twin of a single op equals its NumPy reference, in float32 (the training precision); the
tolerance is explained in _fast_compare.py. Fused ops: test_fast_block.py and test_fast_convnet.py."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _fast_compare import ATOL, RTOL, assert_close, f32, fast, grid, ref


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


@pytest.mark.parametrize("n,d,o,density,sparse", [
    (5, 600, 3, 0.5, False), (5, 600, 3, 0.05, True),  # the layers' own kernels: sparse below 1/8 kept
    (4, 600, 128, 0.05, False), (4, 600, 128, 0.004, True),  # BLAS-sized: sparse below 0.7 % kept only
])
@pytest.mark.parametrize("need_dx", [True, False])
def test_masked_linear(n, d, o, density, sparse, need_dx, rng):
    """The pruned linear layer (dense kernels on w * mask, or the row-compressed sparse ones, chosen by
    the density kept and by whether BLAS runs the dense products) equals the reference; dw is 0 where the
    mask is."""
    from minicnn.nn.fast.dense import SparseCache

    x = f32(rng.standard_normal((n, d)))
    mask = f32(rng.random((o, d)) < density)
    mask[0, :3] = 1.0  # no empty layer
    w = f32(rng.uniform(-1, 1, (o, d)) / np.sqrt(d)) * mask
    b = f32(rng.standard_normal(o))
    out_r, cache_r = ref.masked_linear_forward(x, w, b, mask)
    out_f, cache_f = fast.masked_linear_forward(x, w, b, mask)
    assert isinstance(cache_f, SparseCache) == sparse
    assert_close(out_f, out_r, "masked linear forward")
    g = f32(rng.standard_normal((n, o)))
    dx_r, dw_r, db_r = ref.masked_linear_backward(g, cache_r, need_dx)
    dx_f, dw_f, db_f = fast.masked_linear_backward(g, cache_f, need_dx)
    assert_close(dw_f, dw_r, "masked linear dw")
    assert np.all(dw_f[mask == 0] == 0.0)
    assert_close(db_f, db_r, "masked linear db")
    if need_dx:
        assert_close(dx_f, dx_r, "masked linear dx")
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

