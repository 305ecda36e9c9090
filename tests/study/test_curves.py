"""The results model (minicnn.study.curves): rows grouped into curves, and the figures' names."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from minicnn.study.curves import (MissingRows, aggregate, curves_for_scope, figure_stem, figure_title, lr_key,
                                  preferred_scope)

from synthetic_results import make_rows


def test_aggregate_mean_and_std_over_seeds():
    rows = make_rows(schedules=("oneshot",), methods=("structured",), lrs=(0.01,), amounts=(0.0, 0.5))
    rows[0] = dataclasses.replace(rows[0], test_acc_after=0.5)  # seed 0 at amount 0
    rows[2] = dataclasses.replace(rows[2], test_acc_after=0.7)  # seed 1 at amount 0
    (curve,) = aggregate(rows).values()
    assert curve.seeds == (0, 1) and list(curve.n) == [2, 2]
    assert curve.mean["test_acc_after"][0] == pytest.approx(0.6)
    assert curve.std["test_acc_after"][0] == pytest.approx(np.std([0.5, 0.7], ddof=1))


def test_a_rerun_row_replaces_the_earlier_one():
    rows = make_rows(schedules=("oneshot",), methods=("unstructured",), lrs=(0.01,), seeds=(0,), amounts=(0.0, 0.5))
    rerun = dataclasses.replace(rows[1], test_acc_after=0.123)
    (curve,) = aggregate(rows + [rerun]).values()
    assert list(curve.n) == [1, 1] and curve.value(0.5) == pytest.approx(0.123)


def test_curves_come_in_the_papers_order():
    rows = make_rows(seeds=(0,), amounts=(0.0, 0.5))
    rows = rows[::-1] + make_rows(seeds=(0,), amounts=(0.0, 0.5), lrs=(0.05,), scope="global")
    keys = [k[:4] for k in aggregate(rows)]  # (schedule, method, scope, lr); the criterion is key[4]
    assert keys[:3] == [("oneshot", "unstructured", "layer", 0.8), ("oneshot", "unstructured", "layer", 0.01),
                        ("oneshot", "unstructured", "layer", 0.0001)]
    assert keys[3] == ("oneshot", "unstructured", "global", 0.05)  # the layerwise curves of a method first
    assert keys[4] == ("oneshot", "structured", "layer", 0.8)
    assert keys[-1] == ("iterative", "structured", "global", 0.05)


def test_scopes_and_lookups():
    layer = make_rows(schedules=("iterative",), methods=("structured",), lrs=(0.01,), seeds=(0,), amounts=(0.0, 0.9))
    both = layer + make_rows(schedules=("iterative",), methods=("structured",), lrs=(0.01,), seeds=(0,),
                             amounts=(0.0,), scope="global")
    assert preferred_scope(both) == "layer" and preferred_scope(both[len(layer):]) == "global"
    assert preferred_scope([]) is None
    assert list(curves_for_scope(both)) == [("iterative", "structured", 0.01)]
    assert list(curves_for_scope(both, "global")["iterative", "structured", 0.01].amounts) == [0.0]
    assert lr_key(np.float64(0.01) * 3) == 0.03
    (curve,) = aggregate(layer).values()
    with pytest.raises(MissingRows, match="no rows at amount 50% for iterative structured, lr 0.01"):
        curve.value(0.5)


def test_figure_names_and_titles():
    assert figure_stem("oneshot", "structured", 0.8) == "oneshot_structured_lr0.8"
    assert figure_stem("iterative", "unstructured", 0.0001, "global", "layer") == \
        "iterative_unstructured_lr0.0001_global"
    assert figure_stem("iterative", "unstructured", 0.0001, "global", "global") == "iterative_unstructured_lr0.0001"
    assert figure_title("oneshot", "structured", 0.01) == "One-shot structured pruning, lr 0.01"
    assert figure_title("iterative", "unstructured", 0.8, "global") == \
        "Iterative unstructured pruning, lr 0.8 (global scope)"
