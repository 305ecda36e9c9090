"""Pruning masks against torch.nn.utils.prune (single-shot and repeated), monotone masks, and masks
that hold through SGD with momentum and weight decay."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.utils import prune as tprune

from minicnn import paper
from minicnn.pruning import masks as prune
from minicnn.errors import MiniCNNError
from minicnn.nn.model import build_model

SHAPES_ANY = [(8, 3, 3, 3), (16, 8, 3, 3), (10, 2048), (12, 20), (7,), (5, 1)]
SHAPES_2D = [(8, 3, 3, 3), (16, 8, 3, 3), (6, 4, 5, 5), (10, 2048), (12, 20), (3, 1)]
AMOUNTS = list(paper.AMOUNTS) + [0.25, 0.375, 0.625, 1.0]
SMALL_SPEC = "conv4,relu,pool2,flatten,linear12,relu,linear10"


def _weights(shape, seed):
    """float64 standard normal weights: no ties, so the pruning order is unique."""
    return np.random.default_rng(seed).standard_normal(shape)


def _holder(w: np.ndarray) -> torch.nn.Module:
    """A bare module owning one float64 parameter 'weight' (what torch's pruning functions need)."""
    module = torch.nn.Module()
    module.weight = torch.nn.Parameter(torch.tensor(w, dtype=torch.float64))
    return module


def _torch_mask(module) -> np.ndarray:
    return module.weight_mask.detach().numpy().astype(np.float32)


def _pruned(mask) -> int:
    return int(mask.size - np.count_nonzero(mask))


def _pruned_slices(mask) -> int:
    return int((~mask.reshape(mask.shape[0], -1).any(axis=1)).sum())


# ------------------------------------------------------------------------------------- rounding
@pytest.mark.parametrize("n", [1, 3, 8, 10, 216, 2048, 20480])
def test_num_to_prune_is_python_round_like_torch(n):
    from torch.nn.utils.prune import _compute_nparams_toprune

    for amount in AMOUNTS:
        assert prune.num_to_prune(amount, n) == round(amount * n) == _compute_nparams_toprune(amount, n)
    assert prune.num_to_prune(0.5, 5) == 2   # 2.5 -> 2, half to even
    assert prune.num_to_prune(0.5, 7) == 4   # 3.5 -> 4


def test_paper_conv1_filter_rounding_table():
    """Filters of the paper model's conv1 (8 of them) pruned at each of the paper's amounts."""
    expected = [0, 1, 2, 2, 3, 4, 5, 6, 6, 7, 8, 8]
    assert [round(a * 8) for a in paper.AMOUNTS] == expected
    w = _weights((8, 3, 3, 3), 0)
    ours, theirs = [], []
    for amount in paper.AMOUNTS:
        ours.append(_pruned_slices(prune.l2_structured_mask(w, amount)))
        conv = torch.nn.Conv2d(3, 8, 3, padding=1).double()
        with torch.no_grad():
            conv.weight.copy_(torch.tensor(w))
        tprune.ln_structured(conv, "weight", amount=amount, n=2, dim=0)
        theirs.append(_pruned_slices(_torch_mask(conv)))
    assert ours == expected
    assert theirs == expected
    for amount, k in zip(paper.AMOUNTS, expected):
        model = build_model("paper", np.random.default_rng(1), backend="ref")
        summary = prune.prune_model(model, amount, "structured")
        assert summary["conv1"]["pruned"] == k and summary["conv1"]["total"] == 8


# ------------------------------------------------------------------------------ single-shot masks
@pytest.mark.parametrize("shape", SHAPES_ANY)
def test_l1_unstructured_equals_torch(shape):
    w = _weights(shape, 1)
    for amount in AMOUNTS:
        module = _holder(w)
        tprune.l1_unstructured(module, "weight", amount=amount)
        ours = prune.l1_unstructured_mask(w, amount)
        assert ours.dtype == np.float32 and ours.shape == w.shape
        np.testing.assert_array_equal(ours, _torch_mask(module), err_msg=f"amount {amount}")
        assert _pruned(ours) == round(amount * w.size)


@pytest.mark.parametrize("shape", SHAPES_2D)
def test_l2_structured_equals_torch(shape):
    w = _weights(shape, 2)
    for amount in AMOUNTS:
        module = _holder(w)
        tprune.ln_structured(module, "weight", amount=amount, n=2, dim=0)
        ours = prune.l2_structured_mask(w, amount)
        np.testing.assert_array_equal(ours, _torch_mask(module), err_msg=f"amount {amount}")
        assert _pruned_slices(ours) == round(amount * shape[0])


def test_structured_needs_two_dimensions():
    with pytest.raises(MiniCNNError):
        prune.l2_structured_mask(np.ones(5), 0.5)


def _global_shapes():
    return [(8, 3, 3, 3), (10, 50), (4, 10)]


@pytest.mark.parametrize("amount", AMOUNTS)
def test_global_l1_equals_torch(amount):
    ws = [_weights(s, 10 + i) for i, s in enumerate(_global_shapes())]
    modules = [_holder(w) for w in ws]
    tprune.global_unstructured([(m, "weight") for m in modules], pruning_method=tprune.L1Unstructured,
                               amount=amount)
    ours = prune.global_l1_masks(ws, amount)
    for o, m in zip(ours, modules):
        np.testing.assert_array_equal(o, _torch_mask(m))
    assert sum(_pruned(o) for o in ours) == round(amount * sum(w.size for w in ws))


# -------------------------------------------------------------------------------- iterative masks
ITERATIVE_SCHEDULES = [
    list(paper.AMOUNTS),
    [0.2, 0.36, 0.488, 0.5904, 0.67232],      # 20% of the remaining weights per step
    [0.05, 0.5, 0.51, 0.9, 1.0],
]


@pytest.mark.parametrize("schedule", ITERATIVE_SCHEDULES)
@pytest.mark.parametrize("shape", SHAPES_ANY)
def test_iterative_l1_equals_torch_container(shape, schedule):
    w = _weights(shape, 3)
    module = _holder(w)
    ours = None
    for step, amount in enumerate(schedule):
        previous = 0 if ours is None else _pruned(ours)
        ours = prune.l1_unstructured_mask(w, amount, ours)
        tprune.l1_unstructured(module, "weight", amount=round(amount * w.size) - previous)  # an int
        if step > 0:
            hooks = [h for h in module._forward_pre_hooks.values() if isinstance(h, tprune.BasePruningMethod)]
            assert len(hooks) == 1 and isinstance(hooks[0], tprune.PruningContainer)
        np.testing.assert_array_equal(ours, _torch_mask(module), err_msg=f"step {step}")
        assert _pruned(ours) == round(amount * w.size)


@pytest.mark.parametrize("schedule", ITERATIVE_SCHEDULES)
@pytest.mark.parametrize("shape", SHAPES_2D)
def test_iterative_l2_structured_equals_torch_container(shape, schedule):
    w = _weights(shape, 4)
    module = _holder(w)
    ours = None
    for step, amount in enumerate(schedule):
        previous = 0 if ours is None else _pruned_slices(ours)
        ours = prune.l2_structured_mask(w, amount, ours)
        tprune.ln_structured(module, "weight", amount=round(amount * shape[0]) - previous, n=2, dim=0)
        np.testing.assert_array_equal(ours, _torch_mask(module), err_msg=f"step {step}")
        assert _pruned_slices(ours) == round(amount * shape[0])


def test_iterative_global_equals_torch():
    ws = [_weights(s, 20 + i) for i, s in enumerate(_global_shapes())]
    total = sum(w.size for w in ws)
    modules = [_holder(w) for w in ws]
    ours = None
    for amount in ITERATIVE_SCHEDULES[0]:
        previous = 0 if ours is None else sum(_pruned(o) for o in ours)
        ours = prune.global_l1_masks(ws, amount, ours)
        tprune.global_unstructured([(m, "weight") for m in modules], pruning_method=tprune.L1Unstructured,
                                   amount=round(amount * total) - previous)
        for o, m in zip(ours, modules):
            np.testing.assert_array_equal(o, _torch_mask(m))


def _torch_paper_model(model):
    """torch modules holding the same conv1/fc1 weights as ``model`` (float64)."""
    conv, fc = model.layer("conv1"), model.layer("fc1")
    tconv = torch.nn.Conv2d(3, 8, 3, padding=1).double()
    tfc = torch.nn.Linear(2048, 10).double()
    with torch.no_grad():
        tconv.weight.copy_(torch.tensor(conv.params["weight"], dtype=torch.float64))
        tfc.weight.copy_(torch.tensor(fc.params["weight"], dtype=torch.float64))
    return tconv, tfc


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_prune_model_iterative_equals_torch(scope):
    """prune_model step by step on the paper model (which zeroes pruned weights as it goes) gives
    the masks of torch's repeated pruning on the untouched weights."""
    model = build_model("paper", np.random.default_rng(5), backend="ref")
    tconv, tfc = _torch_paper_model(model)
    sizes = [216, 20480]
    previous = [0, 0]
    for amount in paper.AMOUNTS:
        summary = prune.prune_model(model, amount, "unstructured", scope)
        if scope == "layer":
            for mod, n, prev in zip((tconv, tfc), sizes, previous):
                tprune.l1_unstructured(mod, "weight", amount=round(amount * n) - prev)
        else:
            tprune.global_unstructured([(tconv, "weight"), (tfc, "weight")],
                                       pruning_method=tprune.L1Unstructured,
                                       amount=round(amount * sum(sizes)) - sum(previous))
        for layer, mod in zip(model.prunable_layers(), (tconv, tfc)):
            mask = layer.masks.get("weight", np.ones_like(layer.params["weight"]))
            np.testing.assert_array_equal(mask, _torch_mask(mod), err_msg=f"{layer.name} at {amount}")
            assert np.all(layer.params["weight"][mask == 0] == 0.0)
            assert "bias" not in layer.masks
        previous = [summary["conv1"]["pruned"], summary["fc1"]["pruned"]]
        if scope == "global":
            assert sum(previous) == round(amount * sum(sizes))
        else:
            assert previous == [round(amount * n) for n in sizes]


def test_prune_model_structured_iterative_equals_torch():
    model = build_model("paper", np.random.default_rng(6), backend="ref")
    tconv, _ = _torch_paper_model(model)
    previous = 0
    for amount in paper.AMOUNTS:
        summary = prune.prune_model(model, amount, "structured")
        tprune.ln_structured(tconv, "weight", amount=round(amount * 8) - previous, n=2, dim=0)
        conv = model.layer("conv1")
        mask = conv.masks.get("weight", np.ones_like(conv.params["weight"]))
        np.testing.assert_array_equal(mask, _torch_mask(tconv))
        previous = summary["conv1"]["pruned"]
        assert previous == round(amount * 8)


# ----------------------------------------------------------------------- hypothesis: monotone masks
_amount_lists = st.lists(st.floats(min_value=0.0, max_value=1.0, allow_nan=False), min_size=1, max_size=6)
_shapes = st.lists(st.integers(1, 6), min_size=1, max_size=4).map(tuple)


def _hyp_weights(shape, seed, ties):
    rng = np.random.default_rng(seed)
    if ties:  # few distinct magnitudes: the counts must still be exact
        return rng.integers(-2, 3, size=shape).astype(np.float32)
    return rng.standard_normal(shape)


@settings(max_examples=150, deadline=None)
@given(shape=_shapes, amounts=_amount_lists, seed=st.integers(0, 2**32 - 1), ties=st.booleans(),
       increasing=st.booleans())
def test_iterative_masks_shrink_and_hit_targets(shape, amounts, seed, ties, increasing):
    w = _hyp_weights(shape, seed, ties)
    if increasing:
        amounts = sorted(amounts)
    mask = None
    for amount in amounts:
        new = prune.l1_unstructured_mask(w, amount, mask)
        before = 0 if mask is None else _pruned(mask)
        assert set(np.unique(new)) <= {0.0, 1.0}
        if mask is not None:
            assert np.all(new <= mask)
        target = round(amount * w.size)
        assert _pruned(new) == max(before, target)
        if target >= before:
            assert _pruned(new) == target
        mask = new
    if len(shape) >= 2:
        mask = None
        for amount in amounts:
            new = prune.l2_structured_mask(w, amount, mask)
            before = 0 if mask is None else _pruned_slices(mask)
            if mask is not None:
                assert np.all(new <= mask)
            rows = new.reshape(shape[0], -1)
            assert np.all(rows.all(axis=1) | ~rows.any(axis=1))  # whole slices only
            assert _pruned_slices(new) == max(before, round(amount * shape[0]))
            mask = new


@settings(max_examples=60, deadline=None)
@given(shapes=st.lists(_shapes, min_size=1, max_size=3), amounts=_amount_lists,
       seed=st.integers(0, 2**32 - 1), ties=st.booleans())
def test_global_masks_shrink_and_hit_targets(shapes, amounts, seed, ties):
    ws = [_hyp_weights(s, seed + i, ties) for i, s in enumerate(shapes)]
    total = sum(w.size for w in ws)
    masks = None
    for amount in sorted(amounts):
        new = prune.global_l1_masks(ws, amount, masks)
        if masks is not None:
            assert all(np.all(n <= m) for n, m in zip(new, masks))
        assert sum(_pruned(m) for m in new) == round(amount * total)
        masks = new


def test_smallest_magnitudes_go_first():
    w = np.array([[0.3, -0.1, 2.0], [-5.0, 0.2, 0.05]])
    mask = prune.l1_unstructured_mask(w, 0.5)
    np.testing.assert_array_equal(mask, [[1, 0, 1], [1, 0, 0]])
    mask = prune.l1_unstructured_mask(w, 0.7, mask)   # round(4.2) = 4: adds |0.3|
    np.testing.assert_array_equal(mask, [[0, 0, 1], [1, 0, 0]])
    mask2 = prune.l1_unstructured_mask(w, 0.2, mask)  # target 1 < 4 pruned: nothing changes
    np.testing.assert_array_equal(mask2, mask)


# ------------------------------------------------------------------------- masks hold through SGD
def _train_steps(model, rng, steps=50, lr=0.05, momentum=0.9, weight_decay=1e-3):
    ops = model.ops
    velocity = {}
    x = rng.standard_normal((8, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, size=8)
    for _ in range(steps):
        logits = model.forward(x)
        _, dlogits = ops.softmax_cross_entropy(logits, y)
        model.backward(dlogits.astype(np.float32))
        for layer in model.param_layers():
            for name, param in layer.params.items():
                key = f"{layer.name}.{name}"
                velocity[key] = ops.sgd_step(param, layer.grads[name], velocity.get(key), lr, momentum,
                                             weight_decay, layer.masks.get(name))


@pytest.mark.parametrize("backend", ["ref", "fast"])
@pytest.mark.parametrize("method,amount", [("unstructured", 0.7), ("structured", 0.5)])
def test_pruned_weights_stay_exactly_zero_through_sgd(backend, method, amount):
    rng = np.random.default_rng(7)
    model = build_model(SMALL_SPEC, rng, backend=backend)
    prune.prune_model(model, amount, method)
    before = {k: v.copy() for k, v in model.state().items()}
    masks = prune.masks_of(model)
    assert masks  # something was pruned
    _train_steps(model, rng)
    changed = False
    for layer in model.prunable_layers():
        for name, param in layer.params.items():
            mask = layer.masks.get(name)
            if mask is not None:
                np.testing.assert_array_equal(mask, masks[layer.name][name])  # masks unchanged
                assert np.all(param[mask == 0] == 0.0), f"{layer.name}.{name} revived"
                kept = mask == 1
            else:
                kept = np.ones(param.shape, dtype=bool)
            changed |= not np.array_equal(param[kept], before[f"{layer.name}.{name}"][kept])
    assert changed  # the kept weights did train
    if method == "structured":
        assert np.count_nonzero(model.layer("conv1").masks["bias"] == 0) == 2


# ---------------------------------------------------------------------------- model-level behaviour
def test_structured_masks_bias_and_skips_output_layer():
    model = build_model(SMALL_SPEC, np.random.default_rng(8), backend="ref")
    summary = prune.prune_model(model, 0.5, "structured")
    conv, fc1, fc2 = model.layer("conv1"), model.layer("fc1"), model.layer("fc2")
    for layer, n in ((conv, 4), (fc1, 12)):
        dead = ~layer.masks["weight"].reshape(n, -1).any(axis=1)
        assert dead.sum() == round(0.5 * n)
        np.testing.assert_array_equal(layer.masks["bias"], (~dead).astype(np.float32))
        assert np.all(layer.params["bias"][dead] == 0.0)
        assert np.all(layer.params["weight"][dead] == 0.0)
        assert np.all(layer.params["bias"][~dead] != 0.0)
    assert fc2.masks == {}
    assert summary["fc2"]["pruned"] == 0 and summary["fc1"]["unit"] == "neurons"
    assert summary["conv1"]["unit"] == "filters" and summary["conv1"]["pruned"] == 2
    prune.prune_model(model, 1.0, "structured")
    assert fc2.masks == {} and not fc1.masks["bias"].any() and not conv.masks["weight"].any()


def test_unstructured_leaves_biases_alone():
    model = build_model(SMALL_SPEC, np.random.default_rng(9), backend="ref")
    biases = {layer.name: layer.params["bias"].copy() for layer in model.prunable_layers()}
    prune.prune_model(model, 0.9, "unstructured")
    for layer in model.prunable_layers():
        assert "bias" not in layer.masks
        np.testing.assert_array_equal(layer.params["bias"], biases[layer.name])
        assert _pruned(layer.masks["weight"]) == round(0.9 * layer.params["weight"].size)


def test_zero_amount_adds_no_masks_and_sparsity():
    model = build_model("paper", np.random.default_rng(10), backend="ref")
    prune.prune_model(model, 0.0)
    assert prune.masks_of(model) == {} and prune.sparsity(model) == 0.0
    prune.prune_model(model, 0.5)
    assert prune.sparsity(model) == (round(0.5 * 216) + round(0.5 * 20480)) / (216 + 20480)


def test_structured_global_is_refused():
    model = build_model("paper", np.random.default_rng(0), backend="ref")
    with pytest.raises(MiniCNNError, match="layerwise"):
        prune.prune_model(model, 0.5, "structured", "global")


@pytest.mark.parametrize("kwargs", [dict(amount=1.5), dict(amount=-0.1), dict(amount=0.5, method="random"),
                                    dict(amount=0.5, scope="model")])
def test_prune_model_bad_arguments(kwargs):
    model = build_model("paper", np.random.default_rng(0), backend="ref")
    with pytest.raises(MiniCNNError):
        prune.prune_model(model, **kwargs)


def test_masks_roundtrip_through_set_masks():
    model = build_model(SMALL_SPEC, np.random.default_rng(11), backend="ref")
    prune.prune_model(model, 0.5, "structured")
    saved = prune.masks_of(model)
    other = build_model(SMALL_SPEC, np.random.default_rng(11), backend="ref")
    other.layer("fc2").masks["weight"] = np.zeros((10, 12), np.float32)  # replaced by set_masks
    prune.set_masks(other, saved)
    assert set(prune.masks_of(other)) == set(saved) == {"conv1", "fc1"}
    for name, entries in saved.items():
        for pname, mask in entries.items():
            np.testing.assert_array_equal(other.layer(name).masks[pname], mask)
    for key, value in model.state().items():
        np.testing.assert_array_equal(other.state()[key], value)
    with pytest.raises(MiniCNNError):
        prune.set_masks(other, {"conv1": {"weight": np.ones((3, 3), np.float32)}})
    with pytest.raises(MiniCNNError):
        prune.set_masks(other, {"conv9": {"weight": np.ones((4, 3, 3, 3), np.float32)}})


# ----------------------------------------------------------------------------------- amount parsing
@pytest.mark.parametrize("text", ["-0.1", "1.5", "0.5,0.2", "0.1,0.1", "abc", "", "  ", "0.1,,0.2", "nan"])
def test_bad_amounts_are_one_line_errors(text):
    with pytest.raises(MiniCNNError) as info:
        prune.parse_amounts(text)
    message = str(info.value)
    assert "\n" not in message and message


def test_parse_amounts():
    assert prune.parse_amounts("0,0.1, 0.5 ,1") == [0.0, 0.1, 0.5, 1.0]
    assert prune.parse_amounts(",".join(str(a) for a in paper.AMOUNTS)) == list(paper.AMOUNTS)
    assert "repeated" in str(pytest.raises(MiniCNNError, prune.parse_amounts, "0.1,0.1").value)
    assert "increasing" in str(pytest.raises(MiniCNNError, prune.parse_amounts, "0.5,0.2").value)
