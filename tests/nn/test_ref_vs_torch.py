"""The NumPy reference equals PyTorch (CPU, float64): forward values and, through a random upstream
gradient (loss = sum(out * dout)), every backward gradient. Also SGD against torch.optim.SGD and the
default initialisation against torch.nn's."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from minicnn.nn.backend import get_backend  # noqa: E402
from minicnn.nn.layers import Conv2d, Linear, torch_default_init  # noqa: E402

ref = get_backend("ref")

# float64 on both sides: only summation order differs.
TOL = dict(rtol=1e-10, atol=1e-12)


def t(a: np.ndarray, grad: bool = False):
    return torch.tensor(a, dtype=torch.float64, requires_grad=grad)


def close(ours: np.ndarray, theirs, what: str = "") -> None:
    theirs = theirs.detach().numpy() if hasattr(theirs, "detach") else np.asarray(theirs)
    assert ours.shape == theirs.shape, what
    np.testing.assert_allclose(ours, theirs, err_msg=what, **TOL)


def grads_match_torch(ours, tout, g, tx, tw, tb):
    """ours = (dx, dw, db) for upstream gradient g; torch's from backpropagating g through tout."""
    (tout * t(g)).sum().backward()
    for name, mine, theirs in zip(("dx", "dw", "db"), ours, (tx.grad, tw.grad, tb.grad)):
        close(mine, theirs, name)


# ------------------------------------------------------------------------------------ convolution
CONV_SHAPES = [(1, 3, 7, 5), (4, 2, 9, 11), (1, 1, 5, 5), (2, 3, 8, 6)]


@pytest.mark.parametrize("shape", CONV_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("pad", [0, 1, 2])
def test_conv2d_matches_torch(shape, k, stride, pad, rng):
    n, c, h, w = shape
    if h + 2 * pad < k or w + 2 * pad < k:
        pytest.skip("kernel larger than the padded input")
    f = 3
    x = rng.standard_normal(shape)
    wt = rng.standard_normal((f, c, k, k))
    b = rng.standard_normal(f)
    out, cache = ref.conv2d_forward(x, wt, b, stride, pad)
    tx, tw, tb = t(x, True), t(wt, True), t(b, True)
    tout = F.conv2d(tx, tw, tb, stride=stride, padding=pad)
    close(out, tout, "forward")
    g = rng.standard_normal(out.shape)
    grads_match_torch(ref.conv2d_backward(g, cache), tout, g, tx, tw, tb)


def test_conv2d_rectangular_kernel_matches_torch(rng):
    """The reference also handles KH != KW (im2col takes both)."""
    x = rng.standard_normal((2, 2, 7, 6))
    wt = rng.standard_normal((3, 2, 3, 2))
    b = rng.standard_normal(3)
    out, cache = ref.conv2d_forward(x, wt, b, 2, 1)
    tx, tw, tb = t(x, True), t(wt, True), t(b, True)
    tout = F.conv2d(tx, tw, tb, stride=2, padding=1)
    close(out, tout)
    g = rng.standard_normal(out.shape)
    (tout * t(g)).sum().backward()
    for ours, theirs in zip(ref.conv2d_backward(g, cache), (tx.grad, tw.grad, tb.grad)):
        close(ours, theirs)


# ------------------------------------------------------------------------------------------ linear
@pytest.mark.parametrize("n,d,o", [(1, 7, 3), (4, 2048, 10), (5, 3, 1), (2, 9, 11)])
def test_linear_matches_torch(n, d, o, rng):
    x, wt, b = rng.standard_normal((n, d)), rng.standard_normal((o, d)), rng.standard_normal(o)
    out, cache = ref.linear_forward(x, wt, b)
    tx, tw, tb = t(x, True), t(wt, True), t(b, True)
    tout = F.linear(tx, tw, tb)
    close(out, tout)
    g = rng.standard_normal(out.shape)
    (tout * t(g)).sum().backward()
    dx, dw, db = ref.linear_backward(g, cache)
    close(dx, tx.grad, "dx")
    close(dw, tw.grad, "dw")
    close(db, tb.grad, "db")


# ------------------------------------------------------------------------------------ relu, flatten
def test_relu_matches_torch_including_zeros(rng):
    x = rng.integers(-3, 4, size=(2, 3, 5, 7)).astype(np.float64)  # many exact zeros
    x[0, 0, 0, :3] = [0.0, -0.0, 1e-300]
    out, cache = ref.relu_forward(x)
    tx = t(x, True)
    tout = torch.relu(tx)
    close(out, tout)
    g = rng.standard_normal(out.shape)
    (tout * t(g)).sum().backward()
    close(ref.relu_backward(g, cache), tx.grad)


def test_flatten_matches_torch(rng):
    x = rng.standard_normal((3, 2, 5, 4))
    out, cache = ref.flatten_forward(x)
    close(out, torch.flatten(t(x), 1))
    g = rng.standard_normal(out.shape)
    close(ref.flatten_backward(g, cache), t(g).reshape(x.shape))


# ------------------------------------------------------------------------------------- max pooling
def tie_heavy(rng, shape):
    """ReLU of small integers: about half exact zeros, and many repeated positive values."""
    return np.maximum(rng.integers(-3, 3, size=shape), 0).astype(np.float64)


POOL_SHAPES = [(1, 1, 4, 4), (1, 3, 7, 5), (4, 2, 9, 11), (2, 2, 8, 8)]
POOL_CASES = [(2, 2), (2, 1), (3, 3), (3, 2), (3, 1)]


@pytest.mark.parametrize("shape", POOL_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("k,stride", POOL_CASES)
@pytest.mark.parametrize("values", ["ties", "zeros", "distinct"])
def test_maxpool_matches_torch_gradient_routing(shape, k, stride, values, rng):
    """Values and exactly where the gradient goes. With ties torch's CPU kernel routes to the first
    maximum in row-major window order; our reference must do the same."""
    if values == "ties":
        x = tie_heavy(rng, shape)
    elif values == "zeros":
        x = np.zeros(shape)  # every window is one big tie
        x[..., ::3, ::2] = 1.0
    else:
        x = rng.standard_normal(shape)
    out, cache = ref.maxpool2d_forward(x, k, stride)
    tx = t(x, True)
    tout = F.max_pool2d(tx, k, stride)
    close(out, tout, "forward")
    g = rng.standard_normal(out.shape)
    (tout * t(g)).sum().backward()
    close(ref.maxpool2d_backward(g, cache), tx.grad, "dx")
    # also against torch's own argmax indices: a unit gradient per output lands at the same input
    _, idx = F.max_pool2d(t(x), k, stride, return_indices=True)
    _, cache = ref.maxpool2d_forward(x, k, stride)
    n, c, oh, ow = out.shape
    for o in range(oh * ow):
        e = np.zeros(out.shape)
        e.reshape(n, c, -1)[:, :, o] = 1.0
        dx = ref.maxpool2d_backward(e, cache).reshape(n, c, -1)
        np.testing.assert_array_equal(dx.argmax(axis=-1), idx.reshape(n, c, -1)[:, :, o].numpy())


def test_maxpool_first_max_rule_by_hand():
    """A 2x2 window of equal values sends the gradient to its top-left entry."""
    x = np.array([[[[5.0, 5.0, 0.0, 0.0], [5.0, 5.0, 0.0, 0.0]]]])
    out, cache = ref.maxpool2d_forward(x, 2, 2)
    np.testing.assert_array_equal(out, [[[[5.0, 0.0]]]])
    dx = ref.maxpool2d_backward(np.array([[[[1.0, 2.0]]]]), cache)
    np.testing.assert_array_equal(dx, [[[[1.0, 0.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0]]]])


# ------------------------------------------------------------------------ fused conv-relu-pool
@pytest.mark.parametrize("shape", [(1, 3, 7, 5), (4, 2, 9, 11), (2, 3, 32, 32)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("k,stride,pad,pk,ps", [(3, 1, 1, 2, 2), (3, 1, 0, 3, 2), (5, 2, 2, 2, 1), (1, 1, 0, 2, 2)])
def test_conv_relu_pool_matches_torch_with_ties(shape, k, stride, pad, pk, ps, rng):
    """maxpool(relu(conv)) against torch on small integers: conv outputs are exact integers, so equal
    outputs and zeros after ReLU are everywhere, and the gradient routing must still match torch."""
    n, c, h, w = shape
    x = rng.integers(-2, 3, size=shape).astype(np.float64)
    wt = rng.integers(-1, 2, size=(4, c, k, k)).astype(np.float64)
    b = rng.integers(-1, 2, size=4).astype(np.float64)
    out, cache = ref.conv_relu_pool_forward(x, wt, b, stride, pad, pk, ps)
    tx, tw, tb = t(x, True), t(wt, True), t(b, True)
    tout = F.max_pool2d(torch.relu(F.conv2d(tx, tw, tb, stride=stride, padding=pad)), pk, ps)
    close(out, tout, "forward")
    g = rng.standard_normal(out.shape)
    grads_match_torch(ref.conv_relu_pool_backward(g, cache), tout, g, tx, tw, tb)


@pytest.mark.parametrize("k,stride,pad", [(3, 1, 1), (3, 1, 0), (5, 2, 2), (2, 1, 0)])
def test_conv_relu_matches_torch_with_ties(k, stride, pad, rng):
    """relu(conv) against torch on small integers (many outputs exactly 0: ReLU's gradient there is 0)."""
    x = rng.integers(-2, 3, size=(2, 3, 9, 8)).astype(np.float64)
    wt = rng.integers(-1, 2, size=(4, 3, k, k)).astype(np.float64)
    b = rng.integers(-1, 2, size=4).astype(np.float64)
    out, cache = ref.conv_relu_forward(x, wt, b, stride, pad)
    tx, tw, tb = t(x, True), t(wt, True), t(b, True)
    tout = torch.relu(F.conv2d(tx, tw, tb, stride=stride, padding=pad))
    close(out, tout, "forward")
    assert (out == 0).any()
    g = rng.standard_normal(out.shape)
    grads_match_torch(ref.conv_relu_backward(g, cache), tout, g, tx, tw, tb)


@pytest.mark.parametrize("shape", [(3, 2, 9, 11), (4, 3, 32, 32)], ids=lambda s: "x".join(map(str, s)))
def test_whole_one_conv_network_matches_torch(shape, rng):
    """conv -> ReLU -> 2x2 max-pool -> flatten -> linear -> cross-entropy as one op (the paper's model):
    loss, logits and all four gradients against torch autograd, with ties in the pooling windows."""
    n, c, h, w = shape
    x = rng.integers(-2, 3, size=shape).astype(np.float64)
    wt = rng.integers(-1, 2, size=(4, c, 3, 3)).astype(np.float64)
    b = rng.integers(-1, 2, size=4).astype(np.float64)
    fc_w, fc_b = rng.standard_normal((10, 4 * (h // 2) * (w // 2))) * 0.1, rng.standard_normal(10)
    labels = rng.integers(0, 10, size=n)
    loss, logits, dw, db, dfc_w, dfc_b = ref.conv_relu_pool_linear_loss(x, wt, b, 1, fc_w, fc_b, labels)
    tw, tb, tfw, tfb = t(wt, True), t(b, True), t(fc_w, True), t(fc_b, True)
    pooled = F.max_pool2d(torch.relu(F.conv2d(t(x), tw, tb, padding=1)), 2, 2)
    tlogits = F.linear(pooled.flatten(1), tfw, tfb)
    tloss = F.cross_entropy(tlogits, torch.tensor(labels))
    tloss.backward()
    close(np.array(loss), tloss, "loss")
    close(logits, tlogits, "logits")
    for name, mine, theirs in zip(("dw", "db", "dfc_w", "dfc_b"), (dw, db, dfc_w, dfc_b),
                                  (tw.grad, tb.grad, tfw.grad, tfb.grad)):
        close(mine, theirs, name)


# ----------------------------------------------------------------------------- softmax cross-entropy
@pytest.mark.parametrize("n,k,scale", [(1, 10, 1.0), (7, 10, 3.0), (16, 3, 1.0), (5, 10, 1e4), (4, 2, 1e4)])
def test_softmax_cross_entropy_matches_torch(n, k, scale, rng):
    logits = rng.standard_normal((n, k)) * scale
    labels = rng.integers(0, k, size=n)
    loss, dlogits = ref.softmax_cross_entropy(logits, labels)
    tl = t(logits, True)
    tloss = F.cross_entropy(tl, torch.tensor(labels, dtype=torch.int64))
    tloss.backward()
    assert math.isfinite(loss) and np.all(np.isfinite(dlogits))
    assert loss == pytest.approx(tloss.item(), rel=1e-12, abs=1e-12)
    close(dlogits, tl.grad)


def test_softmax_cross_entropy_large_logits_stay_finite():
    """Logits of 1e4 overflow a naive exp; the shifted form stays finite in float32 and float64."""
    for dtype in (np.float32, np.float64):
        logits = np.array([[1e4, 0.0, -1e4], [0.0, 1e4, 1e4], [-1e4, -1e4, -1e4]], dtype=dtype)
        labels = np.array([1, 2, 0])
        loss, dlogits = ref.softmax_cross_entropy(logits, labels)
        tloss = F.cross_entropy(torch.tensor(logits, dtype=torch.float64), torch.tensor(labels))
        assert math.isfinite(loss) and np.all(np.isfinite(dlogits))
        assert loss == pytest.approx(tloss.item(), rel=1e-6)


# -------------------------------------------------------------------------------------------- SGD
@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_sgd_matches_torch(momentum, weight_decay, rng):
    shapes = [(3, 2, 3, 3), (3,), (10, 7)]
    ours = [rng.standard_normal(s) for s in shapes]
    theirs = [torch.tensor(p.copy(), requires_grad=True) for p in ours]
    opt = torch.optim.SGD(theirs, lr=0.05, momentum=momentum, weight_decay=weight_decay)
    velocity = [None] * len(ours)
    for _ in range(6):
        grads = [rng.standard_normal(s) for s in shapes]
        for i, (p, g) in enumerate(zip(ours, grads)):
            velocity[i] = ref.sgd_step(p, g, velocity[i], 0.05, momentum, weight_decay)
        for tp, g in zip(theirs, grads):
            tp.grad = torch.tensor(g)
        opt.step()
        for p, tp in zip(ours, theirs):
            close(p, tp)
        if momentum:
            for i, tp in enumerate(theirs):
                close(velocity[i], opt.state[tp]["momentum_buffer"], "velocity")
        else:
            assert all(v is None for v in velocity)


def test_sgd_mask_keeps_pruned_weights_at_zero(rng):
    """With a mask, pruned entries stay exactly 0 and kept entries move as unmasked torch SGD would
    move them when their gradient is the masked one."""
    p = rng.standard_normal((6, 5))
    mask = (rng.random(p.shape) > 0.4).astype(np.float64)
    p *= mask
    tp = torch.tensor(p.copy(), requires_grad=True)
    opt = torch.optim.SGD([tp], lr=0.1, momentum=0.9, weight_decay=1e-2)
    v = None
    for _ in range(5):
        g = rng.standard_normal(p.shape)
        v = ref.sgd_step(p, g, v, 0.1, 0.9, 1e-2, mask)
        tp.grad = torch.tensor(g * mask)
        opt.step()
        assert np.all(p[mask == 0] == 0.0) and np.all(v[mask == 0] == 0.0)
        close(p, tp)


# ------------------------------------------------------------------------------- default init
def _torch_bound(fan_in: int) -> float:
    """The bound of torch's kaiming_uniform_(a=sqrt(5)): gain * sqrt(3 / fan_in), gain = sqrt(2/(1+a^2))."""
    gain = math.sqrt(2.0 / (1 + 5))
    return gain * math.sqrt(3.0 / fan_in)


def _check_uniform(a: np.ndarray, bound: float, what: str) -> None:
    a = np.asarray(a, dtype=np.float64)
    assert np.abs(a).max() <= bound * (1 + 1e-6), what
    assert a.max() > 0.99 * bound and a.min() < -0.99 * bound, what
    assert abs(a.mean()) < 0.02 * bound, what
    assert a.std() == pytest.approx(bound / math.sqrt(3), rel=0.02), what


@pytest.mark.parametrize("c,f,k", [(3, 8, 3), (64, 128, 3), (2, 4, 5)])
def test_default_init_matches_torch_conv(c, f, k):
    torch.manual_seed(0)
    tconv = torch.nn.Conv2d(c, f, k)
    fan_in = c * k * k
    bound = _torch_bound(fan_in)
    assert bound == pytest.approx(1 / math.sqrt(fan_in), rel=1e-12)
    # torch's actual draws sit inside that bound and reach it
    assert tconv.weight.abs().max().item() <= bound * (1 + 1e-6)
    assert tconv.bias.abs().max().item() <= bound * (1 + 1e-6)
    # ours: a large draw with the same fan-in is U(-bound, bound), weight and bias
    big_w, big_b = torch_default_init(np.random.default_rng(0), (20000, c, k, k), fan_in)
    _check_uniform(big_w, bound, "conv weight")
    _check_uniform(big_b, bound, "conv bias")
    layer = Conv2d("c", c, f, k, rng=np.random.default_rng(1))
    assert layer.params["weight"].shape == tuple(tconv.weight.shape)
    assert layer.params["bias"].shape == tuple(tconv.bias.shape)
    assert layer.params["weight"].dtype == np.float32
    assert np.abs(layer.params["weight"]).max() <= bound * (1 + 1e-6)
    if tconv.weight.numel() > 5000:
        big_torch = tconv.weight.detach().numpy()
        _check_uniform(big_torch, bound, "torch conv weight")
        _check_uniform(layer.params["weight"], bound, "our conv weight")


@pytest.mark.parametrize("d,o", [(2048, 10), (50, 20000), (7, 3)])
def test_default_init_matches_torch_linear(d, o):
    torch.manual_seed(0)
    tlin = torch.nn.Linear(d, o)
    bound = _torch_bound(d)
    assert tlin.weight.abs().max().item() <= bound * (1 + 1e-6)
    assert tlin.bias.abs().max().item() <= bound * (1 + 1e-6)
    layer = Linear("fc", d, o, rng=np.random.default_rng(2))
    assert layer.params["weight"].shape == tuple(tlin.weight.shape)
    assert layer.params["bias"].shape == tuple(tlin.bias.shape)
    if tlin.weight.numel() > 5000:
        _check_uniform(tlin.weight.detach().numpy(), bound, "torch linear weight")
        _check_uniform(layer.params["weight"], bound, "our linear weight")
    if o >= 5000:
        _check_uniform(tlin.bias.detach().numpy(), bound, "torch linear bias")
        _check_uniform(layer.params["bias"], bound, "our linear bias")
    big_w, big_b = torch_default_init(np.random.default_rng(3), (30000, d), d)
    _check_uniform(big_w, bound, "linear weight")
    _check_uniform(big_b, bound, "linear bias")
