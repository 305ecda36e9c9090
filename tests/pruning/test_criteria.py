"""Pruning criteria (minicnn.pruning.criteria): magnitude equals torch's pruning, random is reproducible per
seed and hits the counts, gradmag equals |w * g| from PyTorch autograd, every unstructured criterion ranks
globally, masks only shrink, and the command line takes --criterion."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cli_helpers import assert_clean_error, invoke
from torch.nn.utils import prune as tprune

from minicnn import paper
from minicnn.errors import MiniCNNError
from minicnn.io.checkpoint import load_checkpoint
from minicnn.io.data import make_normalizer
from minicnn.io.dataset import make_synthetic
from minicnn.nn.layers import Conv2d, Flatten, Linear, MaxPool2d, ReLU
from minicnn.nn.model import build_model
from minicnn.pruning import criteria
from minicnn.pruning.criteria import CRITERIA, Context
from minicnn.pruning.masks import prune_model
from minicnn.study.config import PruneConfig, SweepConfig
from minicnn.study.results import load_results

SMALL_SPEC = "conv4,relu,pool2,flatten,linear12,relu,linear10"


def _model(arch="paper", seed=5):
    return build_model(arch, np.random.default_rng(seed), backend="ref")


def _data(n=40, seed=0):
    data = make_synthetic(n, 8, np.random.default_rng(seed))
    return data, make_normalizer("center", data)


def _context(model, seed=0, step=0, n=40, batch_size=16, batches=3):
    data, normalize = _data(n)
    return Context(seed=seed, step=step, model=model, images=data.x_train, labels=data.y_train,
                   normalize=normalize, batch_size=batch_size, batches=batches)


def _masks(model):
    return [layer.masks.get("weight", np.ones_like(layer.params["weight"])) for layer in model.prunable_layers()]


def _pruned(mask) -> int:
    return int(mask.size - np.count_nonzero(mask))


# ------------------------------------------------------------------------------------------ magnitude
def _torch_copy(model):
    out = []
    for layer in model.prunable_layers():
        module = torch.nn.Module()
        module.weight = torch.nn.Parameter(torch.tensor(layer.params["weight"], dtype=torch.float64))
        out.append(module)
    return out


@pytest.mark.parametrize("method,scope", [("unstructured", "layer"), ("unstructured", "global"),
                                          ("structured", "layer")])
def test_magnitude_equals_torch_over_an_iterative_schedule(method, scope):
    """Through the shared construction, the default criterion is still torch's l1_unstructured /
    global_unstructured / ln_structured(n=2, dim=0), step after step."""
    model = _model(seed=7)
    mods = _torch_copy(model)
    previous = [0, 0]
    for step, amount in enumerate(paper.AMOUNTS):
        prune_model(model, amount, method, scope, "magnitude", Context(seed=3, step=step))
        if scope == "global":
            sizes = [m.weight.numel() for m in mods]
            tprune.global_unstructured([(m, "weight") for m in mods], pruning_method=tprune.L1Unstructured,
                                       amount=round(amount * sum(sizes)) - sum(previous))
        elif method == "unstructured":
            for m, prev in zip(mods, previous):
                tprune.l1_unstructured(m, "weight", amount=round(amount * m.weight.numel()) - prev)
        else:
            tprune.ln_structured(mods[0], "weight", amount=round(amount * 8) - previous[0], n=2, dim=0)
        ours = _masks(model)
        compared = mods[:1] if method == "structured" else mods
        for mask, mod in zip(ours, compared):
            np.testing.assert_array_equal(mask, mod.weight_mask.detach().numpy(), err_msg=f"at {amount}")
        if method == "structured":
            previous = [int((~ours[0].reshape(8, -1).any(axis=1)).sum()), 0]
        else:
            previous = [_pruned(m) for m in ours]


# --------------------------------------------------------------------------------------------- random
def _random_masks(seed, amount=0.5, method="unstructured", scope="layer", step=0):
    model = _model()
    prune_model(model, amount, method, scope, "random", Context(seed=seed, step=step))
    return _masks(model)


@pytest.mark.parametrize("method", ["unstructured", "structured"])
def test_random_is_reproducible_per_seed_and_differs_across_seeds(method):
    first, again = _random_masks(1, method=method), _random_masks(1, method=method)
    other = _random_masks(2, method=method)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, c) for a, c in zip(first, other))
    assert not np.array_equal(first[0], _random_masks(1, method=method, step=1)[0])  # the step is in the seed


@pytest.mark.parametrize("amount", [0.1, 0.5, 0.95])
def test_random_prunes_exactly_the_target_counts(amount):
    for mask in _random_masks(3, amount):
        assert _pruned(mask) == round(amount * mask.size)
    conv_mask = _random_masks(3, amount, "structured")[0]
    assert int((~conv_mask.reshape(8, -1).any(axis=1)).sum()) == round(amount * 8)


@pytest.mark.parametrize("name", list(CRITERIA))
@pytest.mark.parametrize("method", ["unstructured", "structured"])
def test_masks_only_shrink_over_an_iterative_schedule(name, method):
    model = _model(SMALL_SPEC, seed=2)
    before = _masks(model)
    for step, amount in enumerate(paper.AMOUNTS):
        prune_model(model, amount, method, "layer", name, _context(model, seed=4, step=step))
        after = _masks(model)
        for old, new, layer in zip(before, after, model.prunable_layers()):
            assert np.all(new <= old), f"{name}: a mask grew at {amount}"
            if method == "unstructured":
                assert _pruned(new) == round(amount * new.size)
            assert np.all(layer.params["weight"][new == 0] == 0.0)
        before = after


# -------------------------------------------------------------------------------------------- gradmag
def _torch_loss(model, x, y, weights):
    """The model's mean cross-entropy in float64 torch, with ``weights`` (tensors) as its prunable weights."""
    out, it = torch.tensor(x, dtype=torch.float64), iter(weights)
    for layer in model.layers:
        bias = None if "bias" not in layer.params else torch.tensor(layer.params["bias"], dtype=torch.float64)
        if isinstance(layer, Conv2d):
            out = F.conv2d(out, next(it), bias, stride=layer.stride, padding=layer.padding)
        elif isinstance(layer, Linear):
            out = F.linear(out, next(it), bias)
        elif isinstance(layer, ReLU):
            out = F.relu(out)
        elif isinstance(layer, MaxPool2d):
            out = F.max_pool2d(out, layer.kernel_size, layer.stride)
        elif isinstance(layer, Flatten):
            out = out.flatten(1)
    return F.cross_entropy(out, torch.tensor(y, dtype=torch.int64))


@pytest.mark.parametrize("arch", ["paper", SMALL_SPEC])
@pytest.mark.parametrize("structured", [False, True])
def test_gradmag_equals_torch_autograd(arch, structured):
    """sum over batches b of |w * dL_b/dw|, on a partly pruned model, batches 16, 16 and 8 of 40 images."""
    model = _model(arch, seed=11)
    prune_model(model, 0.3)  # masks present: pruned weights score 0
    context = _context(model)
    weights = [layer.params["weight"] for layer in model.prunable_layers()]
    ours = criteria.gradmag(weights, structured, context)
    expected = [np.zeros(w.shape) for w in weights]
    for lo in (0, 16, 32):
        x = context.normalize(context.images[lo:lo + 16])
        tw = [torch.tensor(w, dtype=torch.float64, requires_grad=True) for w in weights]
        _torch_loss(model, x, context.labels[lo:lo + 16], tw).backward()
        for e, t in zip(expected, tw):
            e += np.abs(t.detach().numpy() * t.grad.numpy())
    if structured:
        expected = [e.reshape(e.shape[0], -1).sum(axis=1) for e in expected]
    for o, e in zip(ours, expected):
        assert o.shape == e.shape
        np.testing.assert_allclose(o, e, rtol=2e-4, atol=1e-6 * e.max())


def test_gradmag_needs_the_model_and_data():
    model = _model()
    weights = [layer.params["weight"] for layer in model.prunable_layers()]
    with pytest.raises(MiniCNNError, match="gradmag"):
        criteria.gradmag(weights, False, Context())
    with pytest.raises(MiniCNNError, match="gradmag"):
        criteria.gradmag(weights[:1], False, _context(model))


# ------------------------------------------------------------------------------------- global scope
@pytest.mark.parametrize("name", list(CRITERIA))
def test_global_scope_ranks_every_criterion_across_tensors(name):
    """round(amount * all weights) pruned in all, and no kept weight scores below a pruned one."""
    model = _model(SMALL_SPEC, seed=3)
    context = _context(model, seed=9, step=2)
    scores = CRITERIA[name]([layer.params["weight"] for layer in model.prunable_layers()], False, context)
    prune_model(model, 0.6, "unstructured", "global", name, context)
    masks = _masks(model)
    flat_s = np.concatenate([s.reshape(-1) for s in scores])
    flat_m = np.concatenate([m.reshape(-1) for m in masks])
    assert _pruned(flat_m) == round(0.6 * flat_m.size)
    assert flat_s[flat_m == 1].min() >= flat_s[flat_m == 0].max()
    assert len({round(_pruned(m) / m.size, 2) for m in masks}) > 1  # not layerwise in disguise


# ------------------------------------------------------------------------------------ bad input, configs
def test_unknown_criterion_names_the_choices():
    with pytest.raises(MiniCNNError, match="magnitude, random, gradmag"):
        prune_model(_model(), 0.5, criterion="nope")
    with pytest.raises(MiniCNNError, match="unknown pruning criterion 'nope'"):
        PruneConfig(schedule="oneshot", method="unstructured", lr=0.01, criterion="nope")
    with pytest.raises(MiniCNNError, match="unknown pruning criterion"):
        SweepConfig(criteria=("magnitude", "nope"))


def test_settings_recorded_before_criteria_still_match_the_default():
    config = PruneConfig(schedule="oneshot", method="unstructured", lr=0.01)
    old = {k: v for k, v in config.to_dict().items() if k != "criterion"}
    assert config.differences(old) == []
    other = PruneConfig(schedule="oneshot", method="unstructured", lr=0.01, criterion="random")
    assert other.differences(old) == ["criterion: 'magnitude' -> 'random'"]
    sweep = SweepConfig(lrs=(0.01,))
    assert sweep.differences({k: v for k, v in sweep.to_dict().items() if k != "criteria"}) == []
    # a sweep stored with one criterion (before criteria lists) is that one criterion
    one = {**{k: v for k, v in sweep.to_dict().items() if k != "criteria"}, "criterion": "random"}
    assert SweepConfig(lrs=(0.01,), criteria=("random",)).differences(one) == []
    assert sweep.differences(one) == ["criteria: ['random'] -> ['magnitude']"]
    assert SweepConfig.from_dict(one).criteria == ("random",)


def test_sweep_run_folders_name_the_criterion_unless_magnitude(tmp_path):
    one = dict(lrs=(0.01,), methods=("unstructured",), schedules=("oneshot",))
    assert [d.name for _, d in SweepConfig(**one).runs(tmp_path)] == ["oneshot-unstructured-lr0.01-seed0"]
    grid = SweepConfig(**one, criteria=("gradmag",)).runs(tmp_path)
    assert [d.name for _, d in grid] == ["oneshot-unstructured-gradmag-lr0.01-seed0"]
    assert grid[0][0].criterion == "gradmag"
    grid = SweepConfig(**one, criteria=("magnitude", "random"), seeds=(0, 1)).runs(tmp_path)
    assert [d.name for _, d in grid] == ["oneshot-unstructured-lr0.01-seed0", "oneshot-unstructured-random-lr0.01-seed0",
                                         "oneshot-unstructured-lr0.01-seed1", "oneshot-unstructured-random-lr0.01-seed1"]
    assert [(c.criterion, c.seed) for c, _ in grid] == [("magnitude", 0), ("random", 0), ("magnitude", 1),
                                                        ("random", 1)]


# ------------------------------------------------------------------------------------------ command line
def test_cli_prune_with_random_criterion(make_synthetic_cache, tmp_path, monkeypatch):
    monkeypatch.delenv("MINICNN_DATA", raising=False)
    monkeypatch.setenv("MINICNN_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    result = invoke("prune", "--schedule", "oneshot", "--unstructured", "--criterion", "random", "--lr", "0.01",
                    "--amounts", "0,.5", "--epochs", "1", "--train-limit", "256", "--test-limit", "64",
                    "--data", make_synthetic_cache(512, 128))
    assert result.exit_code == 0, result.output
    out = tmp_path / "runs" / "prune-oneshot-unstructured-random-lr0.01"
    assert json.loads((out / "run.json").read_text())["criterion"] == "random"
    assert len((out / "results.csv").read_text().splitlines()) == 3  # header and two rows
    assert [row.criterion for row in load_results(out)] == ["random", "random"]
    model, _ = load_checkpoint(sorted((out / "steps").glob("001_*.h5"))[0])
    for mask in _masks(model):
        assert _pruned(mask) == round(0.5 * mask.size)



def test_a_table_from_before_the_criterion_column_reads_as_magnitude(tmp_path):
    """results.csv files written before rows recorded their criterion (the first committed paper study)
    load, each row read as magnitude pruning, the only criterion there was."""
    from minicnn.study.results import REQUIRED_COLUMNS

    old_header = ",".join(REQUIRED_COLUMNS)  # the columns of those tables, in their order
    assert old_header.startswith("schedule,method,scope,lr,seed,step,amount") and "criterion" not in old_header
    line = "oneshot,unstructured,layer,0.8,0,1,0.1,0.9,20714,18644,18644,0.900068,505866,456714,1370142," \
           "0.3564,0.3696,0.39476,1.70157,1.76022,10,55.9876,0"
    (tmp_path / "results.csv").write_text(f"{old_header}\n{line}\n{line.replace(',0,1,0.1,', ',1,1,0.1,')}\n")
    rows = load_results(tmp_path)
    assert len(rows) == 2 and {row.criterion for row in rows} == {"magnitude"} and rows[1].seed == 1
    assert rows[0].compression_ratio == pytest.approx(20714 / 18644) and rows[0].epochs_spent == -1


def test_cli_unknown_criterion_is_one_line(make_synthetic_cache, tmp_path):
    result = invoke("prune", "--schedule", "oneshot", "--unstructured", "--criterion", "nope", "--lr", "0.01",
                    "--data", make_synthetic_cache(512, 128), "--out", tmp_path / "run")
    assert_clean_error(result, "unknown pruning criterion 'nope'", "magnitude, random, gradmag")
    assert not (tmp_path / "run").exists()
