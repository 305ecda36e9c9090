"""Two convs in a row at inference (minicnn/nn/fast/pair.py): conv -> ReLU -> conv -> ReLU -> 2x2 max-pool
as one op equals the reference composition exactly on grids, where the fused kernel takes the layers and
where they run one after the other; and a model's inference forward runs it with the same logits as its
training forward."""

from __future__ import annotations

import numpy as np
import pytest

from _fast_compare import f32, fast, grid, ref
from minicnn.nn.fast.pair import can_pair

PAIR_GRID = [
    # (N, C, H, W, F1, F2, pad1, pad2, fused): the fused kernel, and the layers it leaves to the others
    (2, 3, 32, 32, 8, 4, 1, 1, True),  # CIFAR's size
    (3, 3, 12, 10, 4, 8, 1, 1, True),
    (2, 2, 6, 14, 8, 8, 1, 1, True),
    (2, 3, 8, 10, 32, 32, 1, 1, True),  # 32 channels into the second conv: its Winograd products
    (2, 32, 6, 8, 32, 16, 1, 1, True),  # and into the first
    (2, 3, 11, 10, 8, 4, 1, 1, False),  # odd height
    (2, 3, 12, 12, 6, 4, 1, 1, False),  # 6 filters: not whole blocks
    (2, 3, 12, 12, 8, 4, 2, 1, False),  # padding 2
]


def _weights(rng, c, f1, f2, dead):
    w1, w2 = grid(rng, (f1, c, 3, 3), 4, 2), grid(rng, (f2, f1, 3, 3), 4, 2)
    w1[w1 == 0], w2[w2 == 0] = 0.25, -0.25  # every channel live
    if dead:
        w2[1, 3] = 0.0  # a pruned channel: the blocked passes step aside
    return w1, grid(rng, f1, 4, 2), w2, grid(rng, f2, 4, 2)


@pytest.mark.parametrize("case", PAIR_GRID, ids=lambda c: "-".join(map(str, c)))
@pytest.mark.parametrize("dead", [False, True])
def test_conv_pair_exact_on_grid(case, dead, rng):
    n, c, h, w, f1, f2, pad1, pad2, fused = case
    x = grid(rng, (n, c, h, w), 4, 2)
    w1, b1, w2, b2 = _weights(rng, c, f1, f2, dead)
    assert can_pair(x, w1, pad1, w2, pad2) == (fused and not dead)
    got = fast.conv_pair_forward(x, w1, b1, pad1, w2, b2, pad2)
    np.testing.assert_array_equal(got, ref.conv_pair_forward(x, w1, b1, pad1, w2, b2, pad2))


def test_conv_pair_reference_is_the_composition(rng):
    x = f32(rng.standard_normal((2, 3, 8, 8)))
    w1, b1 = f32(rng.standard_normal((4, 3, 3, 3))), f32(rng.standard_normal(4))
    w2, b2 = f32(rng.standard_normal((4, 4, 3, 3))), f32(rng.standard_normal(4))
    mid, _ = ref.conv_relu_forward(x, w1, b1, 1, 1)
    want, _ = ref.conv_relu_pool_forward(mid, w2, b2, 1, 1, 2, 2)
    np.testing.assert_array_equal(ref.conv_pair_forward(x, w1, b1, 1, w2, b2, 1), want)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("c, f1, f2", [(3, 8, 4), (32, 32, 16)])  # the 9-tap passes, Winograd's (direct for the image)
def test_conv_pair_non_finite_pixel(bad, c, f1, f2, rng):
    """An inf or NaN pixel spreads through both convs as in the reference (the first map's junk columns,
    written as the second conv's padding, stay 0)."""
    x = grid(rng, (2, c, 12, 12), 4, 2)
    x[1, 2, 4, 11] = bad
    w1, b1, w2, b2 = _weights(rng, c, f1, f2, dead=False)
    assert can_pair(x, w1, 1, w2, 1)
    with np.errstate(invalid="ignore"):
        want = ref.conv_pair_forward(x, w1, b1, 1, w2, b2, 1)
    got = fast.conv_pair_forward(x, w1, b1, 1, w2, b2, 1)
    assert not np.isfinite(want[1]).all() and np.isfinite(want[0]).all()
    np.testing.assert_array_equal(got, want)


def test_model_inference_runs_the_pair_with_the_training_logits(rng, monkeypatch):
    """A Conv-2-like model: its inference forward calls conv_pair_forward once, for its two convs, and
    gives the training forward's logits bit for bit; the layers keep no cache."""
    from minicnn.nn.model import build_model

    model = build_model("conv8,relu,conv8,relu,pool2,flatten,linear12,relu,linear10", np.random.default_rng(3),
                        input_shape=(3, 12, 12))
    x = f32(rng.standard_normal((4, 3, 12, 12)))
    calls = []
    pair = model.ops.conv_pair_forward
    monkeypatch.setattr(model, "ops", type(model.ops)(**{**vars(model.ops),
                                                          "conv_pair_forward": lambda *a: calls.append(1) or pair(*a)}))
    inference = model.forward(x, for_backward=False)
    assert calls == [1]
    assert model.layers[0]._cache is None and model.layers[2]._cache is None
    np.testing.assert_array_equal(inference, model.forward(x))
    assert calls == [1]  # the training forward runs the layers one by one
