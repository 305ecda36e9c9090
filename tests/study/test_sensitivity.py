"""Sensitivity analysis: one layer pruned alone (masks as prune_model gives that layer), rows per layer and
amount, the checkpoint untouched, the command's files and its one-line errors."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from cli_helpers import assert_clean_error, invoke

from minicnn.io.data import make_normalizer
from minicnn.io.dataset import make_synthetic
from minicnn.nn.model import build_model
from minicnn.pruning.criteria import Context
from minicnn.pruning.masks import masks_of, prune_model
from minicnn.study.sensitivity import (COLUMNS, SensitivityRow, copy_model, most_sensitive, save_sensitivity,
                                       sensitivity)


@pytest.fixture(autouse=True)
def _no_user_data(monkeypatch, tmp_path):
    monkeypatch.delenv("MINICNN_DATA", raising=False)
    monkeypatch.setenv("MINICNN_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def small():
    """(model, dataset, normalizer): a conv2 model (5 prunable layers) on 64/48 synthetic images."""
    model = build_model("conv2", rng=np.random.default_rng(3), backend="ref")
    dataset = make_synthetic(64, 48, np.random.default_rng(4))
    return model, dataset, make_normalizer("center", dataset)


def _state(model) -> dict:
    return {k: v.copy() for k, v in model.state().items()}


@pytest.mark.parametrize("method,criterion", [("unstructured", "magnitude"), ("unstructured", "random"),
                                              ("structured", "magnitude"), ("unstructured", "gradmag")])
def test_one_layer_alone_gets_prune_models_mask(small, method, criterion):
    model, dataset, norm = small
    ctx = dict(seed=7, images=dataset.x_train, labels=dataset.y_train, normalize=norm, batch_size=32)
    full = copy_model(model)
    prune_model(full, 0.6, method, "layer", criterion, Context(model=full, **ctx))
    names = [layer.name for layer in model.prunable_layers()]
    for name in names[:-1] if method == "structured" else names:
        alone = copy_model(model)
        prune_model(alone, 0.6, method, "layer", criterion, Context(model=alone, **ctx), names=[name])
        masks = masks_of(alone)
        assert list(masks) == [name]  # no other layer got a mask
        assert masks[name].keys() == masks_of(full)[name].keys()
        for param, mask in masks[name].items():
            np.testing.assert_array_equal(mask, masks_of(full)[name][param])
        for layer, before in zip(alone.layers, model.layers):  # other layers' weights untouched
            if layer.name != name:
                for key, value in layer.params.items():
                    np.testing.assert_array_equal(value, before.params[key])


def test_unknown_layer_name_is_refused(small):
    with pytest.raises(Exception, match="no prunable layer named 'nope'"):
        prune_model(copy_model(small[0]), 0.5, names=["nope"])


def test_rows_amount_zero_and_model_untouched(small):
    model, dataset, norm = small
    before = _state(model)
    unpruned, rows = sensitivity(model, dataset, norm, [0.0, 0.5, 0.9])
    assert len(rows) == 5 * 3
    assert [(r.layer, r.amount) for r in rows[:3]] == [("conv1", 0.0), ("conv1", 0.5), ("conv1", 0.9)]
    for row in rows:
        if row.amount == 0.0:
            assert row.test_acc == unpruned["acc"] and row.test_loss == unpruned["loss"] and row.pruned == 0
        else:
            assert row.pruned == round(row.amount * row.total)
    assert not masks_of(model)
    for key, value in before.items():
        np.testing.assert_array_equal(model.state()[key], value)
    # pruning 90% of a layer changes its output: some loss differs from the unpruned one
    assert any(r.test_loss != unpruned["loss"] for r in rows if r.amount == 0.9)


def test_structured_skips_output_layer(small):
    model, dataset, norm = small
    _, rows = sensitivity(model, dataset, norm, [0.5], method="structured")
    assert [r.layer for r in rows] == ["conv1", "conv2", "fc1", "fc2"]
    assert {r.unit for r in rows} == {"filters", "neurons"}


def test_random_reproducible_by_seed(small):
    model, dataset, norm = small
    runs = [sensitivity(model, dataset, norm, [0.7], criterion="random", seed=s)[1] for s in (1, 1, 2)]
    assert runs[0] == runs[1]
    first, _, other = (copy_model(model) for _ in range(3))
    for trial, seed in ((first, 1), (other, 2)):
        prune_model(trial, 0.7, criterion="random", context=Context(seed=seed), names=["fc1"])
    assert not np.array_equal(masks_of(first)["fc1"]["weight"], masks_of(other)["fc1"]["weight"])


def test_most_sensitive_and_save(tmp_path):
    def row(layer, amount, drop):
        return SensitivityRow(layer, "unstructured", "magnitude", 0, amount, "weights", 1, 2, 0.5 - drop, 1.0,
                              drop, 10)
    rows = [row("a", 0.5, 0.1), row("a", 1.0, 0.4), row("b", 0.5, 0.2), row("b", 1.0, 0.3)]
    worst, at = most_sensitive(rows)
    assert (worst.layer, at) == ("b", 0.5)
    # both collapse at 0.99 (a tie there); the amount where they differ most decides
    collapse = [row("a", 0.8, 0.02), row("a", 0.9, 0.08), row("a", 0.99, 0.27),
                row("b", 0.8, 0.13), row("b", 0.9, 0.25), row("b", 0.99, 0.28)]
    worst, at = most_sensitive(collapse)
    assert (worst.layer, at) == ("b", 0.9)
    csv_path, h5_path = save_sensitivity(rows, tmp_path, {"acc": 0.5, "loss": 1.0}, "ck.h5")
    with open(csv_path, newline="") as fh:
        lines = list(csv.reader(fh))
    assert tuple(lines[0]) == COLUMNS and len(lines) == 5
    import h5py

    with h5py.File(h5_path) as f:
        assert f.attrs["format"] == "minicnn-sensitivity" and list(f["acc_drop"][()]) == [0.1, 0.4, 0.2, 0.3]


@pytest.fixture(scope="module")
def trained(make_synthetic_cache, tmp_path_factory):
    cache = make_synthetic_cache(256, 64)
    out = tmp_path_factory.mktemp("sense") / "base.h5"
    result = invoke("train", "--epochs", "1", "--data", cache, "--out", out)
    assert result.exit_code == 0, result.output
    return cache, out


def test_cli_writes_files_and_leaves_checkpoint(trained, tmp_path):
    cache, ckpt = trained
    original = ckpt.read_bytes()
    result = invoke("sensitivity", ckpt, "--data", cache, "--amounts", "0,0.5,0.9")
    assert result.exit_code == 0, result.output
    out = ckpt.parent / "base-sensitivity"
    for ext in ("csv", "h5", "png", "svg"):
        assert (out / f"sensitivity.{ext}").stat().st_size > 0
    assert "most sensitive: " in result.output and "at amount 0.9" in result.output
    assert ckpt.read_bytes() == original
    with open(out / "sensitivity.csv", newline="") as fh:
        assert len(list(csv.reader(fh))) == 1 + 2 * 3
    # a rerun for the same checkpoint replaces its table; another checkpoint's table is refused
    assert invoke("sensitivity", ckpt, "--data", cache, "--amounts", "0.5").exit_code == 0
    other = tmp_path / "other.h5"
    other.write_bytes(original)
    assert_clean_error(invoke("sensitivity", other, "--data", cache, "--out", out), "--force")


@pytest.mark.parametrize("amounts,fragment", [("0.5,1.5", "outside [0, 1]"), ("0.5,0.2", "not increasing"),
                                              ("x", "not a number"), ("", "no pruning amounts")])
def test_cli_bad_amounts(trained, tmp_path, amounts, fragment):
    cache, ckpt = trained
    result = invoke("sensitivity", ckpt, "--data", cache, "--amounts", amounts, "--out", tmp_path / "s")
    assert_clean_error(result, fragment)
    assert not (tmp_path / "s").exists()


def test_cli_refuses_diverged_checkpoint(trained, tmp_path):
    import h5py

    cache, ckpt = trained
    bad = tmp_path / "nan.h5"
    bad.write_bytes(ckpt.read_bytes())
    with h5py.File(bad, "r+") as f:
        f["params/conv1/weight"][0, 0, 0, 0] = np.nan
    assert_clean_error(invoke("sensitivity", bad, "--data", cache, "--out", tmp_path / "s"), "NaN or infinite")
