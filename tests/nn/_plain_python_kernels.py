"""Run by tests/test_fast_compiled.py with NUMBA_DISABLE_JIT=1: every fast op, its kernels run as plain
Python (prange is then range), against the reference on small inputs. Prints one line
    RESULT {"op name": max |fast - ref| / (ATOL + RTOL |ref|), ...}
(below 1 means within the tolerance of _fast_compare.py).

    NUMBA_DISABLE_JIT=1 python tests/nn/_plain_python_kernels.py
"""

import json

import numpy as np
from numba.core import config

from minicnn.nn.backend import get_backend
from minicnn.nn.fast import conv as fast_conv
from minicnn.nn.pixels import PixelBatch

ref, fast = get_backend("ref"), get_backend("fast")
rng = np.random.default_rng(7)
errors = {}


def f32(a):
    return np.ascontiguousarray(a, dtype=np.float32)


def coarse(shape, denominator):
    """Values on a coarse grid: sums are exact whatever the order, and ties are frequent."""
    return f32(rng.integers(-2, 3, size=shape) / denominator)


def err(name, a, b):
    """Records max |a - b| / (ATOL + RTOL |b|) under ``name`` (both None: nothing to compare)."""
    if a is None and b is None:
        return
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (name, a.shape, b.shape)
    e = float(np.max(np.abs(a - b) / (1e-5 + 1e-4 * np.abs(b)))) if a.size else 0.0
    errors[name] = max(errors.get(name, 0.0), e)


def err_all(prefix, names, got, want):
    for name, a, b in zip(names, got, want):
        err(f"{prefix} {name}", a, b)


def check_conv():
    for (n, c, h, w, f, k, s, p) in [(2, 2, 5, 4, 3, 3, 1, 1), (1, 3, 6, 7, 2, 3, 2, 0), (3, 1, 5, 5, 2, 2, 3, 2)]:
        x = f32(rng.standard_normal((n, c, h, w)))
        wt = f32(rng.standard_normal((f, c, k, k)))
        wt[0, 0, 0, 0] = 0.0
        b = f32(rng.standard_normal(f))
        (orf, crf), (off, cff) = ref.conv2d_forward(x, wt, b, s, p), fast.conv2d_forward(x, wt, b, s, p)
        err("conv forward", off, orf)
        g = f32(rng.standard_normal(orf.shape))
        err_all("conv", ("dx", "dw", "db"), fast.conv2d_backward(g, cff), ref.conv2d_backward(g, crf))
        err("im2col", fast.im2col(x, k, k, s, p), ref.im2col(x, k, k, s, p))
        cols = f32(rng.standard_normal(ref.im2col(x, k, k, s, p).shape))
        err("col2im", fast.col2im(cols, x.shape, k, k, s, p), ref.col2im(cols, x.shape, k, k, s, p))


def check_pool():
    for (shape, k, s) in [((2, 2, 6, 5), 2, 2), ((1, 3, 7, 7), 3, 2), ((2, 1, 5, 6), 2, 1)]:
        x = f32(np.maximum(rng.integers(-2, 3, size=shape), 0))
        (orr, crr), (of, cf) = ref.maxpool2d_forward(x, k, s), fast.maxpool2d_forward(x, k, s)
        err("pool forward", of, orr)
        g = f32(rng.standard_normal(orr.shape))
        err("pool backward", fast.maxpool2d_backward(g, cf), ref.maxpool2d_backward(g, crr))


def check_block():
    """conv -> ReLU -> pool: the 2x2 parity-split kernels (with and without dx; 4 channels and 5 filters:
    the blocked passes' twins), another pool, stride 2."""
    for (n, c, h, w, f, k, s, p, pk, ps) in [(2, 2, 6, 7, 3, 3, 1, 1, 2, 2), (2, 4, 6, 7, 5, 3, 1, 1, 2, 2),
                                              (1, 2, 7, 7, 2, 3, 1, 0, 3, 2), (2, 1, 8, 6, 2, 3, 2, 1, 2, 1)]:
        x, wt, b = coarse((n, c, h, w), 4), coarse((f, c, k, k), 4), coarse(f, 4)
        mask = f32(rng.random(wt.shape) > 0.3)
        wt *= mask
        (orr, crr) = ref.conv_relu_pool_forward(x, wt, b, s, p, pk, ps)
        (of, cf) = fast.conv_relu_pool_forward(x, wt, b, s, p, pk, ps)
        err("block forward", of, orr)
        g = f32(rng.integers(-4, 5, size=orr.shape) / 8)
        for m in (None, mask):
            for need_dx in (True, False):
                err_all("block", ("dx", "dw", "db"), fast.conv_relu_pool_backward(g, cf, need_dx, m),
                        ref.conv_relu_pool_backward(g, crr, need_dx, m))


def check_winograd():
    """A 3x3 layer with 32 channels and 64 filters: the Winograd passes' twins (forward, dx, dw), one
    small image (a chunk)."""
    x, wt, b = coarse((1, 32, 4, 5), 4), coarse((64, 32, 3, 3), 4), coarse(64, 4)
    wt[wt == 0] = 0.25  # every channel live: the 9-tap (and so the Winograd) passes
    (orr, crr) = ref.conv_relu_pool_forward(x, wt, b, 1, 1, 2, 2)
    (of, cf) = fast.conv_relu_pool_forward(x, wt, b, 1, 1, 2, 2)
    err("winograd forward", of, orr)
    g = f32(rng.integers(-4, 5, size=orr.shape) / 8)
    err_all("winograd", ("dx", "dw", "db"), fast.conv_relu_pool_backward(g, cf, True),
            ref.conv_relu_pool_backward(g, crr, True))


def check_conv_relu():
    """conv -> ReLU without a pool: the parity-split kernels, 3x3 (9 taps per pass; blocked with 4 channels
    and 5 filters) and 5x5 (tap by tap)."""
    for (n, c, h, w, f, k, p) in [(2, 2, 6, 7, 3, 3, 1), (2, 4, 6, 7, 5, 3, 1), (1, 2, 7, 6, 2, 5, 2)]:
        x, wt, b = coarse((n, c, h, w), 4), coarse((f, c, k, k), 4), coarse(f, 4)
        (orr, crr), (of, cf) = ref.conv_relu_forward(x, wt, b, 1, p), fast.conv_relu_forward(x, wt, b, 1, p)
        err("conv-relu forward", of, orr)
        g = f32(rng.integers(-4, 5, size=orr.shape) / 8)
        err_all("conv-relu", ("dx", "dw", "db"), fast.conv_relu_backward(g, cf), ref.conv_relu_backward(g, crr))


def check_conv_pair():
    """conv -> ReLU -> conv -> ReLU -> pool at inference: the fused pair kernel (4 and 8 filters, even
    sizes) and the layers one after the other (6 filters)."""
    for (n, c, h, w, f1, f2) in [(2, 3, 6, 8, 4, 8), (1, 2, 6, 6, 6, 4)]:
        x, b1, b2 = coarse((n, c, h, w), 4), coarse(f1, 4), coarse(f2, 4)
        w1, w2 = coarse((f1, c, 3, 3), 4) + 0.125, coarse((f2, f1, 3, 3), 4) + 0.125  # no channel all 0
        err("conv pair", fast.conv_pair_forward(x, w1, b1, 1, w2, b2, 1), ref.conv_pair_forward(x, w1, b1, 1, w2, b2, 1))


def check_convnet():
    # the second: a block of four filters in one pass (_simd_conv.conv_block), a fifth alone
    for (n, c, h, w, f, k, p, classes) in [(3, 2, 6, 7, 3, 3, 1, 4), (2, 2, 6, 7, 5, 3, 1, 3), (2, 1, 7, 6, 2, 3, 0, 3)]:
        x, wt, b = coarse((n, c, h, w), 4), coarse((f, c, k, k), 4), coarse(f, 4)
        ph, pw = (h + 2 * p - k + 1) // 2, (w + 2 * p - k + 1) // 2
        fw, fb = coarse((classes, f * ph * pw), 8), coarse(classes, 4)
        labels = rng.integers(0, classes, size=n)
        got = fast.conv_relu_pool_linear_loss(x, wt, b, p, fw, fb, labels)
        want = ref.conv_relu_pool_linear_loss(x, wt, b, p, fw, fb, labels)
        err_all("convnet", ("loss", "logits", "dw", "db", "dfc_w", "dfc_b"), got, want)
        err("convnet inference", fast.conv_relu_pool_linear_forward(x, wt, b, p, fw, fb), want[1])
    # a sparse linear layer (below group_linear.SPARSE_BELOW_DENSITY kept: the 4-lane kept-weight steps)
    x, wt, b = coarse((5, 2, 6, 7), 4), coarse((3, 2, 3, 3), 4), coarse(3, 4)
    fc_mask = f32(rng.random((4, 3 * 3 * 3)) < 0.05)
    fc_mask[:2, 5] = 1.0  # one place kept by two classes
    fw, fb = coarse((4, 3 * 3 * 3), 8) * fc_mask, coarse(4, 4)
    labels = rng.integers(0, 4, size=5)
    got = fast.conv_relu_pool_linear_loss(x, wt, b, 1, fw, fb, labels, None, fc_mask)
    want = ref.conv_relu_pool_linear_loss(x, wt, b, 1, fw, fb, labels, None, fc_mask)
    err_all("convnet sparse", ("loss", "logits", "dw", "db", "dfc_w", "dfc_b"), got, want)
    # a sparse conv (below skip.NINE_TAP_MIN_DENSITY kept: _simd_taps.py's passes, up to four taps a pass)
    x, wt, b = coarse((5, 2, 6, 7), 4), coarse((3, 2, 3, 3), 4), coarse(3, 4)
    mask = f32(rng.random(wt.shape) < 0.15)
    mask[0, 0, :, :2] = 1.0  # six taps: two passes for the weight gradient
    wt = wt * mask
    fw, fb = coarse((4, 3 * 3 * 3), 8), coarse(4, 4)
    labels = rng.integers(0, 4, size=5)
    got = fast.conv_relu_pool_linear_loss(x, wt, b, 1, fw, fb, labels, mask, None)
    want = ref.conv_relu_pool_linear_loss(x, wt, b, 1, fw, fb, labels, mask, None)
    err_all("convnet taps", ("loss", "logits", "dw", "db", "dfc_w", "dfc_b"), got, want)
    # uint8 pixels by rows through a table (fast/images.py): 32-pixel rows take the gathering steps
    images = rng.integers(0, 256, size=(6, 2, 6, 32), dtype=np.uint8)
    table = f32(rng.integers(-4, 5, size=(2, 256)) / 4)
    batch = PixelBatch.of(images, [4, 1, 4], table)
    wt, b, fw, fb = coarse((3, 2, 3, 3), 4), coarse(3, 4), coarse((3, 3 * 3 * 16), 8), coarse(3, 4)
    labels = rng.integers(0, 3, size=3)
    got = fast.conv_relu_pool_linear_loss(batch, wt, b, 1, fw, fb, labels)
    want = ref.conv_relu_pool_linear_loss(batch.floats(), wt, b, 1, fw, fb, labels)
    err_all("convnet pixels", ("loss", "logits", "dw", "db", "dfc_w", "dfc_b"), got, want)


def check_small_ops():
    """ReLU, linear, softmax cross-entropy, SGD."""
    x = f32(rng.integers(-2, 3, size=(2, 3, 4, 4)) * rng.random((2, 3, 4, 4)))
    (orr, crr), (of, cf) = ref.relu_forward(x), fast.relu_forward(x)
    err("relu forward", of, orr)
    g = f32(rng.standard_normal(x.shape))
    err("relu backward", fast.relu_backward(g, cf), ref.relu_backward(g, crr))

    x, w, b = f32(rng.standard_normal((3, 300))), f32(rng.standard_normal((4, 300))), f32(rng.standard_normal(4))
    (orr, crr), (of, cf) = ref.linear_forward(x, w, b), fast.linear_forward(x, w, b)
    err("linear forward", of, orr)
    g = f32(rng.standard_normal(orr.shape))
    err_all("linear", ("dx", "dw", "db"), fast.linear_backward(g, cf), ref.linear_backward(g, crr))

    logits, labels = f32(rng.standard_normal((5, 10)) * 5), rng.integers(0, 10, size=5)
    (lr_, dr), (lf, df) = ref.softmax_cross_entropy(logits, labels), fast.softmax_cross_entropy(logits, labels)
    err("softmax loss", lf, lr_)
    err("softmax dlogits", df, dr)

    for momentum, wd, masked in [(0.0, 0.0, False), (0.9, 1e-2, True)]:
        pr = f32(rng.standard_normal(20))
        pf = pr.copy()
        mask = f32(rng.random(20) > 0.5) if masked else None
        vr = vf = None
        for _ in range(3):
            g = f32(rng.standard_normal(20))
            vr = ref.sgd_step(pr, g, vr, 0.1, momentum, wd, mask)
            vf = fast.sgd_step(pf, g, vf, 0.1, momentum, wd, mask)
        err(f"sgd m={momentum}", pf, pr)


if __name__ == "__main__":
    assert config.DISABLE_JIT, "NUMBA_DISABLE_JIT did not take effect"
    assert not hasattr(fast_conv._conv_forward, "py_func"), "kernels are still compiled"
    for check in (check_conv, check_pool, check_block, check_winograd, check_conv_relu, check_conv_pair, check_convnet,
                  check_small_ops):
        check()
    print("RESULT " + json.dumps(errors))
