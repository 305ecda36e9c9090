"""The reference backward passes equal central finite differences of the forward passes (float64).

Each op is turned into a scalar ``L = sum(op(inputs) * g)`` with a fixed random upstream gradient g, so
the analytic gradient is ``op_backward(g)`` and every input entry is checked against
``(L(x + eps e_i) - L(x - eps e_i)) / (2 eps)``. Shapes are tiny so every entry is checked. Inputs are
drawn away from kinks (ReLU at 0) and ties (max pooling), where the derivative does not exist.
"""

from __future__ import annotations

import numpy as np
import pytest

from minicnn.nn.backend import get_backend
from minicnn.nn.model import build_model

ref = get_backend("ref")

EPS = 1e-6
RTOL = 1e-6
ATOL = 1e-8


def numeric_grad(f, x: np.ndarray, eps: float = EPS) -> np.ndarray:
    """Central differences of scalar f() with respect to every entry of x (x is perturbed in place)."""
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = f()
        flat[i] = old - eps
        down = f()
        flat[i] = old
        gflat[i] = (up - down) / (2 * eps)
    return grad


def assert_grad(analytic: np.ndarray, numeric: np.ndarray, what: str) -> None:
    assert analytic.shape == numeric.shape, what
    assert analytic.dtype == np.float64, what
    np.testing.assert_allclose(analytic, numeric, rtol=RTOL, atol=ATOL, err_msg=what)


# ------------------------------------------------------------------------------------ convolution
CONV_CASES = [
    # (N, C, H, W, F, K, stride, pad)
    (1, 1, 4, 4, 1, 3, 1, 0),
    (2, 2, 5, 4, 3, 3, 1, 1),
    (2, 3, 6, 5, 2, 3, 2, 1),
    (1, 2, 7, 6, 2, 2, 2, 0),
    (2, 1, 5, 7, 2, 3, 3, 2),
    (1, 2, 4, 5, 3, 1, 1, 0),
    (1, 1, 6, 6, 1, 5, 1, 2),
]


@pytest.mark.parametrize("n,c,h,w,f,k,stride,pad", CONV_CASES)
def test_conv2d_gradients(n, c, h, w, f, k, stride, pad, rng):
    x = rng.standard_normal((n, c, h, w))
    wt = rng.standard_normal((f, c, k, k))
    b = rng.standard_normal(f)
    out, cache = ref.conv2d_forward(x, wt, b, stride, pad)
    g = rng.standard_normal(out.shape)
    dx, dw, db = ref.conv2d_backward(g, cache)

    def loss():
        return float((ref.conv2d_forward(x, wt, b, stride, pad)[0] * g).sum())

    assert_grad(dx, numeric_grad(loss, x), "dx")
    assert_grad(dw, numeric_grad(loss, wt), "dw")
    assert_grad(db, numeric_grad(loss, b), "db")
    # need_dx=False skips dx and leaves the parameter gradients as they were
    none, dw2, db2 = ref.conv2d_backward(g, cache, need_dx=False)
    assert none is None
    np.testing.assert_array_equal(dw2, dw)
    np.testing.assert_array_equal(db2, db)


# ------------------------------------------------------------------------------------------ linear
@pytest.mark.parametrize("n,d,o", [(1, 1, 1), (1, 5, 3), (4, 7, 2), (3, 2, 6)])
def test_linear_gradients(n, d, o, rng):
    x = rng.standard_normal((n, d))
    wt = rng.standard_normal((o, d))
    b = rng.standard_normal(o)
    out, cache = ref.linear_forward(x, wt, b)
    g = rng.standard_normal(out.shape)
    dx, dw, db = ref.linear_backward(g, cache)

    def loss():
        return float((ref.linear_forward(x, wt, b)[0] * g).sum())

    assert_grad(dx, numeric_grad(loss, x), "dx")
    assert_grad(dw, numeric_grad(loss, wt), "dw")
    assert_grad(db, numeric_grad(loss, b), "db")
    assert ref.linear_backward(g, cache, need_dx=False)[0] is None


# -------------------------------------------------------------------------------- relu and flatten
def away_from_zero(rng, shape, margin=1e-2):
    """Normal draws with |x| >= margin, so x +- eps never crosses ReLU's kink."""
    x = rng.standard_normal(shape)
    return np.where(np.abs(x) < margin, np.sign(x + 1e-300) * margin * 2, x)


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 4, 5), (3, 7)])
def test_relu_gradient(shape, rng):
    x = away_from_zero(rng, shape)
    out, cache = ref.relu_forward(x)
    g = rng.standard_normal(out.shape)
    dx = ref.relu_backward(g, cache)
    assert_grad(dx, numeric_grad(lambda: float((ref.relu_forward(x)[0] * g).sum()), x), "dx")


def test_relu_gradient_at_zero_is_zero():
    """At the kink the reference takes the subgradient 0, as PyTorch does."""
    x = np.array([-1.0, 0.0, -0.0, 2.0])
    out, cache = ref.relu_forward(x)
    np.testing.assert_array_equal(out, [0.0, 0.0, 0.0, 2.0])
    np.testing.assert_array_equal(ref.relu_backward(np.ones(4), cache), [0.0, 0.0, 0.0, 1.0])


def test_flatten_gradient(rng):
    x = rng.standard_normal((2, 3, 4, 5))
    out, cache = ref.flatten_forward(x)
    assert out.shape == (2, 60)
    np.testing.assert_array_equal(out[1], x[1].reshape(-1))
    g = rng.standard_normal(out.shape)
    dx = ref.flatten_backward(g, cache)
    assert_grad(dx, numeric_grad(lambda: float((ref.flatten_forward(x)[0] * g).sum()), x), "dx")


# ------------------------------------------------------------------------------------- max pooling
def distinct_values(rng, shape, gap=1e-3):
    """A random permutation of well-separated values: no ties, and x +- eps never changes an argmax."""
    return rng.permutation(np.arange(int(np.prod(shape))) * gap).reshape(shape) + rng.uniform(0, gap / 10)


@pytest.mark.parametrize("n,c,h,w,k,stride", [(1, 1, 2, 2, 2, 2), (2, 2, 4, 6, 2, 2), (1, 3, 5, 7, 3, 2),
                                              (2, 1, 7, 5, 2, 1), (1, 2, 9, 8, 3, 3), (1, 1, 5, 5, 3, 1)])
def test_maxpool_gradient(n, c, h, w, k, stride, rng):
    x = distinct_values(rng, (n, c, h, w))
    out, cache = ref.maxpool2d_forward(x, k, stride)
    g = rng.standard_normal(out.shape)
    dx = ref.maxpool2d_backward(g, cache)
    assert_grad(dx, numeric_grad(lambda: float((ref.maxpool2d_forward(x, k, stride)[0] * g).sum()), x), "dx")


# ----------------------------------------------------------------------------- softmax cross-entropy
@pytest.mark.parametrize("n,k", [(1, 2), (1, 10), (5, 3), (8, 10)])
@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_softmax_cross_entropy_gradient(n, k, scale, rng):
    logits = rng.standard_normal((n, k)) * scale
    labels = rng.integers(0, k, size=n)
    loss, dlogits = ref.softmax_cross_entropy(logits, labels)
    assert np.isfinite(loss) and loss >= 0
    numeric = numeric_grad(lambda: ref.softmax_cross_entropy(logits, labels)[0], logits)
    assert_grad(dlogits, numeric, "dlogits")
    # rows of the gradient sum to zero (softmax minus one-hot), scaled by 1/N
    np.testing.assert_allclose(dlogits.sum(axis=1), 0.0, atol=1e-15)


def test_softmax_cross_entropy_value():
    """Uniform logits: loss = log K exactly."""
    loss, dlogits = ref.softmax_cross_entropy(np.zeros((4, 10)), np.array([0, 3, 9, 9]))
    assert loss == pytest.approx(np.log(10.0), rel=1e-15)
    np.testing.assert_allclose(dlogits[0], (np.full(10, 0.1) - np.eye(10)[0]) / 4)


# ------------------------------------------------------------------------ fused conv-relu-pool
def _block_margin(x, wt, b, stride, pad, pk, ps) -> float:
    z = ref.conv2d_forward(x, wt, b, stride, pad)[0]
    r = np.maximum(z, 0.0)
    cols = np.sort(ref.im2col(r.reshape(-1, 1, *r.shape[2:]), pk, pk, ps, 0), axis=1)
    gaps = (cols[:, -1] - cols[:, -2])[cols[:, -1] > 0] if pk > 1 else np.array([np.inf])
    return float(min(np.abs(z).min(), gaps.min() if gaps.size else np.inf))


@pytest.mark.parametrize("n,c,h,w,f,k,stride,pad,pk,ps", [
    (1, 1, 4, 4, 1, 3, 1, 1, 2, 2), (2, 2, 6, 5, 2, 3, 1, 1, 2, 2), (1, 2, 7, 7, 2, 3, 2, 1, 2, 1),
    (2, 1, 6, 6, 3, 2, 1, 0, 3, 2),
])
@pytest.mark.parametrize("masked", [False, True])
def test_conv_relu_pool_gradients(n, c, h, w, f, k, stride, pad, pk, ps, masked, rng):
    """The block's gradients (w.r.t. x, w, b), drawn away from ReLU's kink and from pooling ties."""
    for _ in range(100):
        x, wt, b = rng.standard_normal((n, c, h, w)), rng.standard_normal((f, c, k, k)), rng.standard_normal(f)
        if _block_margin(x, wt, b, stride, pad, pk, ps) > 1e-3:
            break
    else:
        pytest.fail("no draw away from the non-smooth points")
    mask = (rng.random(wt.shape) > 0.4).astype(np.float64) if masked else None
    out, cache = ref.conv_relu_pool_forward(x, wt, b, stride, pad, pk, ps)
    g = rng.standard_normal(out.shape)
    dx, dw, db = ref.conv_relu_pool_backward(g, cache, True, mask)

    def loss():
        return float((ref.conv_relu_pool_forward(x, wt, b, stride, pad, pk, ps)[0] * g).sum())

    assert_grad(dx, numeric_grad(loss, x), "dx")
    numeric_dw = numeric_grad(loss, wt)
    assert_grad(dw, numeric_dw if mask is None else numeric_dw * mask, "dw")
    assert_grad(db, numeric_grad(loss, b), "db")


# ---------------------------------------------------------------------------------- im2col / col2im
@pytest.mark.parametrize("n,c,h,w,kh,kw,stride,pad", [(1, 1, 3, 3, 3, 3, 1, 0), (2, 3, 5, 4, 3, 3, 1, 1),
                                                      (2, 2, 7, 6, 3, 2, 2, 1), (1, 2, 8, 9, 5, 5, 3, 2),
                                                      (3, 1, 4, 4, 1, 1, 1, 0), (1, 1, 6, 5, 2, 4, 2, 0)])
def test_im2col_col2im_adjoint(n, c, h, w, kh, kw, stride, pad, rng):
    """<im2col(x), y> == <x, col2im(y)> for all x, y: col2im is exactly im2col's transpose."""
    x = rng.standard_normal((n, c, h, w))
    cols = ref.im2col(x, kh, kw, stride, pad)
    y = rng.standard_normal(cols.shape)
    back = ref.col2im(y, x.shape, kh, kw, stride, pad)
    assert back.shape == x.shape
    lhs, rhs = float((cols * y).sum()), float((x * back).sum())
    assert lhs == pytest.approx(rhs, rel=1e-12, abs=1e-12)


def test_im2col_layout():
    """Row (c, i, j) and column (oh, ow) as documented, zeros in the padding."""
    x = np.arange(2 * 3 * 4, dtype=np.float64).reshape(1, 2, 3, 4)
    cols = ref.im2col(x, 2, 3, 1, 1)  # OH = 4, OW = 4
    assert cols.shape == (1, 2 * 2 * 3, 16)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    for c in range(2):
        for i in range(2):
            for j in range(3):
                for oh in range(4):
                    for ow in range(4):
                        assert cols[0, (c * 2 + i) * 3 + j, oh * 4 + ow] == xp[0, c, oh + i, ow + j]


# ---------------------------------------------------------------------------------- a whole model
MODEL_SPEC = "conv3k3s1p1,relu,pool2,conv2k3s2p1,relu,flatten,linear4,relu,linear3"
MODEL_INPUT = (2, 6, 7)


def test_whole_model_gradients(rng):
    """Loss of a small Sequential (conv, relu, pool, strided conv, linear) w.r.t. every parameter."""
    model = build_model(MODEL_SPEC, np.random.default_rng(3), backend="ref", input_shape=MODEL_INPUT,
                        num_classes=3)
    for layer in model.param_layers():
        for name in layer.params:
            layer.params[name] = layer.params[name].astype(np.float64)
    x = rng.standard_normal((3, *MODEL_INPUT))
    y = np.array([0, 2, 1])

    def loss():
        return ref.softmax_cross_entropy(model.forward(x), y)[0]

    _, dlogits = ref.softmax_cross_entropy(model.forward(x), y)
    model.backward(dlogits)
    checked = 0
    for layer in model.param_layers():
        for name, param in layer.params.items():
            analytic = layer.grads[name]
            assert_grad(analytic, numeric_grad(loss, param), f"{layer.name}.{name}")
            checked += param.size
    assert checked == model.num_params()
    assert [layer.name for layer in model.param_layers()] == ["conv1", "conv2", "fc1", "fc2"]
