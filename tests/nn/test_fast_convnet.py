"""The whole one-conv network as one op (minicnn/nn/fast/convnet.py, the paper's model) equals the
reference composition (minicnn/nn/ref/convnet.py), and a model takes it when it can."""

from __future__ import annotations

import numpy as np
import pytest

from minicnn.nn.fast import group_linear
from minicnn.nn.fast.convnet import NINE_TAP_MIN_DENSITY, Outputs
from minicnn.nn.fast.convnet_parts import publish, publish_kept
from minicnn.nn.fast.pool2 import zero_blocked_and_sum
from _fast_compare import ATOL, RTOL, assert_close, block_kink_margin, f32, fast, grid, ref


CONVNET_GRID = [
    # (N, C, H, W, F, K, pad, classes)
    (4, 3, 32, 32, 8, 3, 1, 10),  # the paper's model
    (5, 2, 9, 11, 3, 3, 1, 4),  # odd sizes: the last conv row and column are not pooled
    (3, 3, 10, 8, 4, 3, 0, 3),  # no padding
    (2, 2, 7, 10, 3, 5, 2, 5),  # 5x5 filters: one pass per tap
    (3, 1, 6, 6, 1, 3, 1, 2),  # one channel, one filter
    (13, 2, 9, 11, 3, 3, 1, 3),  # several groups of images per thread (the kernel's buffers reused), short ones
    (7, 3, 9, 11, 6, 3, 1, 3),  # a block of four filters in one conv pass, two more one by one; a short group
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
@pytest.mark.parametrize("sparse_conv", [False, True], ids=["9-taps", "tap-by-tap"])
def test_conv_relu_pool_linear_loss_non_finite(where, sparse_conv, rng):
    """A NaN in the input or the weights makes the loss and every gradient NaN where the reference's are
    (the kernel's weight gradient straight from the pooling codes, 9 taps at once or tap by tap, must
    fall back for NaN gradients)."""
    x, wt, b, p, fc_w, fc_b, labels, _, _ = convnet_inputs(rng, (3, 2, 8, 8, 3, 3, 1, 4), None)
    mask = None
    if sparse_conv:  # few enough kept weights for the tap-by-tap passes
        mask = f32(rng.random(wt.shape) < 0.1)
        mask[:, :, 1, 1] = 1.0
        wt *= mask
        assert mask.mean() < NINE_TAP_MIN_DENSITY
    if where == "input":
        x[1, 0, 3, 4] = np.nan
    else:
        wt[2, 1, 1, 1] = np.nan
    with np.errstate(invalid="ignore"):
        want = ref.conv_relu_pool_linear_loss(x, wt, b, p, fc_w, fc_b, labels, mask)
    got = fast.conv_relu_pool_linear_loss(x, wt, b, p, fc_w, fc_b, labels, mask)
    assert np.isnan(got[0]) and np.isnan(want[0])
    for name, a, b_ in zip(("logits", "dw", "db", "dfc_w", "dfc_b"), got[1:], want[1:]):
        if where == "weight" and name in ("dw", "db"):
            # A pooling window whose maximum is NaN passes no gradient in the fast kernels (its code
            # says "no gradient", as the layer-by-layer kernels do), where the reference's ReLU mask
            # turns it into NaN * 0 = NaN: no NaN the reference lacks, the loss NaN in both.
            assert np.isnan(b_)[np.isnan(a)].all(), name
        elif name == "dw" and mask is not None:
            # The tap-by-tap passes compute the kept weights' gradients only: a pruned one stays 0, where
            # the reference's full gradient times the mask is NaN * 0 = NaN. The kept ones alike.
            kept = mask != 0
            np.testing.assert_array_equal(np.isnan(a[kept]), np.isnan(b_[kept]), err_msg=name)
            assert np.isnan(a).any() and np.all(a[~kept] == 0.0)
        else:
            np.testing.assert_array_equal(np.isnan(a), np.isnan(b_), err_msg=name)


@pytest.mark.parametrize("wanted", [False, True], ids=["masked", "zero-but-kept"])
def test_conv_relu_pool_linear_loss_dead_filters(wanted, rng):
    """Filters whose weights are all 0 are pooled without a conv pass (their map is their bias): with a
    positive, a negative and a zero bias, their gradient masked or wanted (zero weights, mask 1), on the
    9-tap and the tap-by-tap paths, the op equals the reference."""
    for density in (0.1, 0.6):
        x, wt, b, p, fc_w, fc_b, labels, _, _ = convnet_inputs(rng, (5, 3, 8, 10, 4, 3, 1, 4), None)
        mask = f32(rng.random(wt.shape) < density)
        mask[:, 0, 1, 1] = 1.0  # every filter keeps a weight ...
        mask[:3] = 1.0 if wanted else 0.0  # ... but the first three, all 0 below
        wt *= mask
        wt[:3] = 0.0
        b[:3] = (0.5, -0.5, 0.0)
        want = ref.conv_relu_pool_linear_loss(x, wt, b, p, fc_w, fc_b, labels, mask)
        got = fast.conv_relu_pool_linear_loss(x, wt, b, p, fc_w, fc_b, labels, mask)
        assert abs(got[0] - want[0]) <= ATOL + RTOL * abs(want[0])
        for name, a, b_ in zip(("logits", "dw", "db", "dfc_w", "dfc_b"), got[1:], want[1:]):
            assert_close(a, b_, f"convnet {name} density {density}")
        assert got[3][0] != 0.0 and got[3][1] == 0.0 == got[3][2]  # only the positive bias passes a gradient
        inference = fast.conv_relu_pool_linear_forward(x, wt, b, p, fc_w, fc_b)
        np.testing.assert_array_equal(inference, got[1])


@pytest.mark.parametrize("density", [0.02, 0.05, 0.3])
def test_conv_relu_pool_linear_sparse_linear_layer(density, rng):
    """Below SPARSE_BELOW_DENSITY kept linear weights the op's linear layer runs on the kept ones only
    (group_linear's sparse stages), above it dense: both equal the reference, masked entries of dfc_w
    are exactly 0, and inference computes the same logits as training. The paper's shapes."""
    x, wt, b, p, fc_w, fc_b, labels, _, _ = convnet_inputs(rng, (9, 3, 32, 32, 8, 3, 1, 10), None)
    fc_mask = f32(rng.random(fc_w.shape) < density)
    fc_w = np.where(fc_mask != 0, np.where(fc_w == 0, f32(0.125), fc_w), f32(0.0))  # kept weights nonzero
    plan = group_linear.sparse_linear(fc_mask, (16, 16), 17)
    assert plan.sparse == (density < group_linear.SPARSE_BELOW_DENSITY)
    assert plan.indices.size == (np.count_nonzero(fc_mask) if plan.sparse else 0)
    want = ref.conv_relu_pool_linear_loss(x, wt, b, p, fc_w, fc_b, labels, None, fc_mask)
    got = fast.conv_relu_pool_linear_loss(x, wt, b, p, fc_w, fc_b, labels, None, fc_mask)
    assert abs(got[0] - want[0]) <= ATOL + RTOL * abs(want[0])
    for name, a, b_ in zip(("logits", "dw", "db", "dfc_w", "dfc_b"), got[1:], want[1:]):
        assert_close(a, b_, f"convnet {name}")
    assert np.all(got[4][fc_mask == 0] == 0.0)
    np.testing.assert_array_equal(fast.conv_relu_pool_linear_forward(x, wt, b, p, fc_w, fc_b), got[1])


def test_sparse_linear_plan(rng):
    """group_linear.sparse_linear: the kept weights of a (K, F*PH*PW) mask at their split-row places
    (PH*WH per filter, WH > PW), by class in order; dense (no entries) at or above the threshold."""
    n_class, n_filt, ph, pw, wh = 4, 3, 5, 5, 6
    kept = rng.random((n_class, n_filt * ph * pw)) < 0.05
    plan = group_linear.sparse_linear(kept, (ph, pw), wh)
    assert plan.sparse
    rows, cols = np.nonzero(kept)
    f, cell = np.divmod(cols, ph * pw)
    np.testing.assert_array_equal(plan.indices, f * ph * wh + (cell // pw) * wh + cell % pw)
    np.testing.assert_array_equal(plan.columns, cols)
    np.testing.assert_array_equal(np.diff(plan.indptr), np.bincount(rows, minlength=n_class))
    np.testing.assert_array_equal(plan.places, np.unique(plan.indices))  # every kept place once, in order
    np.testing.assert_array_equal(plan.places[plan.slots], plan.indices)
    dense = group_linear.sparse_linear(np.ones_like(kept), (ph, pw), wh)
    assert not dense.sparse and dense.indices.size == dense.columns.size == 0


def test_conv_relu_pool_linear_loss_rejects_bad_labels_and_shapes(rng):
    x, wt, b, p, fc_w, fc_b, labels, _, _ = convnet_inputs(rng, (3, 2, 8, 8, 3, 3, 1, 4), None)
    for bad in (np.array([0, 1, 4]), np.array([0, -1, 2]), np.array([0, 1])):
        with pytest.raises(ValueError, match="labels"):
            fast.conv_relu_pool_linear_loss(x, wt, b, p, fc_w, fc_b, bad)
    with pytest.raises(ValueError, match="fc_w"):
        fast.conv_relu_pool_linear_loss(x, wt, b, p, fc_w[:, 1:], fc_b, labels)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_zero_blocked_and_sum(dtype, rng):
    """pool2.zero_blocked_and_sum sets the gradient of every window of code 4 (ReLU blocked it) to 0 in
    place, sums the rest and says whether the rest is finite: a NaN in a blocked window is dropped, one
    in a kept window is reported (the caller then takes the exact path)."""
    code = rng.integers(0, 5, size=70).astype(np.int8)
    code[[3, 40]] = 4
    code[10] = 1
    grad = rng.standard_normal(70).astype(dtype)
    grad[3] = np.nan
    grad[40] = np.inf
    kept = np.where(code < 4, grad, 0).astype(dtype)
    work = grad.copy()
    total, finite = zero_blocked_and_sum(code, work)
    np.testing.assert_array_equal(work, kept)
    assert finite
    assert abs(total - kept.sum(dtype=np.float64)) <= 1e-5 * np.abs(kept).sum()
    work = grad.copy()
    work[10] = np.nan
    _, finite = zero_blocked_and_sum(code, work)
    assert not finite


@pytest.mark.parametrize("n_parts", [1, 2, 3])
def test_publish_sums_thread_parts_in_order(n_parts, rng):
    """The whole-network op's threads' sums become dw, db, dfc_w (back from split rows: the junk
    columns dropped) and dfc_b as part 0 + part 1 + ..., exactly (float32)."""
    n_filt, n_class, ph, pw, wh = 3, 4, 5, 5, 6
    span = ph * wh
    loss = rng.standard_normal(n_parts)
    dw_part = f32(rng.standard_normal((n_parts, n_filt, 2, 3, 3)))
    db_part, dfcb_part = f32(rng.standard_normal((n_parts, n_filt))), f32(rng.standard_normal((n_parts, n_class)))
    dfc_part = f32(rng.standard_normal((n_parts, n_class, n_filt * span)))
    dw, db = np.empty(dw_part.shape[1:], np.float32), np.empty(n_filt, np.float32)
    dfc_w, dfc_b = np.empty((n_class, n_filt * ph * pw), np.float32), np.empty(n_class, np.float32)
    logits = np.empty((1, n_class), np.float32)
    total = publish(loss, dw_part, db_part, dfc_part, dfcb_part, ph, pw, wh, False,
                     Outputs(logits, dw, db, dfc_w, dfc_b))

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

    # a sparse linear layer's parts: the kept weights' sums, (n_parts, 1, nnz), back to their places
    kept = rng.random(dfc_w.shape) < 0.04  # below SPARSE_BELOW_DENSITY
    plan = group_linear.sparse_linear(kept, (ph, pw), wh)
    assert plan.sparse and plan.indices.size == kept.sum() > 0
    kept_part = f32(rng.standard_normal((n_parts, 1, plan.indices.size)))
    dfc_w[...] = np.nan
    publish_kept(kept_part, plan.indptr, plan.columns, dfc_w)
    want = np.zeros(dfc_w.shape, np.float32)
    want[kept] = in_order(kept_part)[0]  # nonzero's order is the plan's: class by class, columns in order
    np.testing.assert_array_equal(dfc_w, want)


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
