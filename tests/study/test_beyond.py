"""Beyond the paper: curves keep criteria apart, the paper's report and claims stay as they were, the
study figures, mask agreement (Jaccard) and the report's "Beyond the paper" answers."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from minicnn.study.agreement import agreement_table, jaccard, mask_agreement
from minicnn.study.beyond import beyond_answers
from minicnn.study.claims import evaluate_claims
from minicnn.study.curves import aggregate, curves_for_scope, figure_stem, has_beyond_rows
from minicnn.study.report import render_report
from minicnn.study.results import load_results

from synthetic_results import make_rows

ROOT = Path(__file__).resolve().parents[2]
AMOUNTS = (0.0, 0.5, 0.9)


def _rows(criterion="magnitude", schedules=("oneshot",), shift=0.0, seeds=(0, 1)):
    """One configuration (unstructured, lr 0.01) per schedule; test accuracy after shifted by ``shift``."""
    rows = make_rows(schedules=schedules, methods=("unstructured",), lrs=(0.01,), seeds=seeds, amounts=AMOUNTS,
                     criterion=criterion)
    return [dataclasses.replace(r, test_acc_after=r.test_acc_after + (shift if r.amount > 0 else 0.0)) for r in rows]


def _by_id(answers):
    return {a["id"]: a for a in answers}


# ------------------------------------------------------------------------------------------ curves
def test_curves_keep_criteria_apart_and_the_paper_curves_see_only_magnitude():
    rows = _rows() + _rows("random", shift=-0.2)
    curves = aggregate(rows)
    assert list(curves) == [("oneshot", "unstructured", "layer", 0.01, "magnitude"),
                            ("oneshot", "unstructured", "layer", 0.01, "random")]
    magnitude, random = curves.values()
    assert magnitude.criterion == "magnitude" and random.criterion == "random"
    assert list(magnitude.n) == [2, 2, 2]  # not 4: the random rows are not merged in
    assert magnitude.value(0.5) - random.value(0.5) == pytest.approx(0.2)
    paper = curves_for_scope(rows + _rows(schedules=("agp",)))
    assert list(paper) == [("oneshot", "unstructured", 0.01)]
    assert paper["oneshot", "unstructured", 0.01].value(0.5) == pytest.approx(magnitude.value(0.5))
    assert figure_stem("oneshot", "unstructured", 0.01, criterion="random") == "oneshot_unstructured_lr0.01_random"
    assert not has_beyond_rows(_rows(schedules=("oneshot", "iterative"))) and has_beyond_rows(rows)


def test_the_committed_report_is_what_report_writes_and_beyond_rows_change_no_claim(monkeypatch):
    """experiments/results/REPORT.md renders byte for byte from the committed tables (the paper's study and
    the extended one merged, figures in plots/paper, the mask agreement from the committed CSV: the step
    checkpoints stay where the study ran), and the rows beyond the paper change none of its claims."""
    from minicnn.study.agreement import load_agreement
    from minicnn.study.report import AGREEMENT_CSV
    from minicnn.study.results import merge_tables

    monkeypatch.chdir(ROOT)  # as experiments/report.sh runs it: the sensitivity table is named from here
    results = Path("experiments") / "results"
    paper, extended = load_results(results / "paper"), load_results(results / "extended")
    rows = merge_tables([paper, extended])
    text = render_report(rows, ROOT / "plots" / "paper", ROOT / results,
                         sweep_dirs=[results / "paper", results / "extended"],
                         agreement=load_agreement(results / AGREEMENT_CSV))
    assert text == (results / "REPORT.md").read_text(encoding="utf-8")
    assert "## Beyond the paper" in text and "## Beyond the paper" not in render_report(paper)
    before = json.dumps(evaluate_claims(paper), sort_keys=True, default=str)
    assert json.dumps(evaluate_claims(rows), sort_keys=True, default=str) == before


# ----------------------------------------------------------------------------------------- figures
def test_study_figures_are_written_with_data_and_skipped_without(tmp_path):
    from plots.figures import make_figures
    from plots.study_figures import make_study_figures

    paper = _rows(schedules=("oneshot", "iterative"), seeds=(0,))
    names = {p.name for p in make_figures(paper, tmp_path / "paper")}
    assert not any(n.startswith(("accuracy_vs", "schedules_equal")) for n in names)
    rows = paper + _rows("random", schedules=("oneshot", "iterative"), shift=-0.2, seeds=(0,))
    names = {p.name for p in make_study_figures(rows, tmp_path / "study")}
    assert names == {f"{stem}.{ext}" for stem in ("accuracy_vs_compression", "accuracy_vs_speedup",
                                                 "schedules_equal_compute") for ext in ("png", "svg")}
    # one schedule only: nothing to compare at equal compute
    names = {p.name for p in make_study_figures(_rows(seeds=(0,)) + _rows("random", seeds=(0,)), tmp_path / "one")}
    assert "schedules_equal_compute.png" not in names and "accuracy_vs_compression.png" in names
    assert not list(tmp_path.rglob("*.tmp*"))


# --------------------------------------------------------------------------------------- agreement
def test_jaccard_identical_and_by_hand():
    a = np.array([1, 1, 0, 0, 1], bool)
    assert jaccard(a, a) == 1.0
    assert jaccard(a, np.array([1, 0, 1, 0, 1], bool)) == pytest.approx(2 / 4)
    assert jaccard(np.zeros(3, bool), np.zeros(3, bool)) == 1.0
    with pytest.raises(ValueError):
        jaccard(a, a[:3])


def _run(sweep: Path, name: str, settings: dict, masks_by_amount: dict):
    from minicnn.io.checkpoint import save_checkpoint
    from minicnn.nn.model import build_model
    from minicnn.study.rundir import step_path, write_settings

    run = sweep / "runs" / name
    (run / "steps").mkdir(parents=True)
    write_settings(run / "run.json", {"scope": "layer", "lr": 0.01, "method": "unstructured", **settings})
    for step, (amount, keep) in enumerate(masks_by_amount.items()):
        model = build_model("paper", rng=np.random.default_rng(0), backend="ref")
        for layer in model.prunable_layers():
            layer.masks["weight"] = np.ones_like(layer.params["weight"])
        first = model.prunable_layers()[0]
        first.masks["weight"].reshape(-1)[:keep.size] = keep
        save_checkpoint(step_path(run, step, amount), model)


def test_mask_agreement_between_criteria_and_seeds(tmp_path):
    # only the first 4 entries of the first layer differ; the model's other weights are kept by all
    n_kept_elsewhere = 20_714 - 8 - 10 - 4  # paper model weights: all parameters less the biases, less 4
    full = np.ones(4, np.float32)
    a, b = np.array([1, 1, 0, 0], np.float32), np.array([1, 0, 1, 0], np.float32)
    _run(tmp_path, "oneshot-unstructured-lr0.01-seed0", {"schedule": "oneshot", "seed": 0, "criterion": "magnitude"},
         {0.0: full, 0.5: a})
    _run(tmp_path, "oneshot-unstructured-random-lr0.01-seed0",
         {"schedule": "oneshot", "seed": 0, "criterion": "random"}, {0.0: full, 0.5: b})
    _run(tmp_path, "oneshot-unstructured-lr0.01-seed1", {"schedule": "oneshot", "seed": 1, "criterion": "magnitude"},
         {0.0: full, 0.5: a})
    rows = mask_agreement(tmp_path)
    got = {(r.kind, r.first, r.second, r.amount): r for r in rows}
    assert got["criteria", "magnitude", "random", 0.0].jaccard == 1.0
    crit = got["criteria", "magnitude", "random", 0.5]
    assert crit.jaccard == pytest.approx((n_kept_elsewhere + 1) / (n_kept_elsewhere + 3)) and crit.pairs == 1
    assert got["seeds", "magnitude", "magnitude", 0.5].jaccard == 1.0
    assert len(rows) == 4 and rows[0].kind == "criteria"
    assert agreement_table(rows)[2].startswith("| magnitude vs random | oneshot unstructured, layer scope")


def test_mask_agreement_pairs_runs_across_study_folders(tmp_path):
    """Two folders (the paper's study and an extended one) pair their runs; a run found in both pairs
    with nothing, so it adds no agreement of 1 with itself."""
    full, a, b = np.ones(4, np.float32), np.array([1, 1, 0, 0], np.float32), np.array([1, 0, 1, 0], np.float32)
    magnitude = {"schedule": "oneshot", "seed": 0, "criterion": "magnitude"}
    _run(tmp_path / "paper", "oneshot-unstructured-lr0.01-seed0", magnitude, {0.0: full, 0.5: a})
    _run(tmp_path / "ext", "oneshot-unstructured-lr0.01-seed0", magnitude, {0.0: full, 0.5: a})
    _run(tmp_path / "ext", "oneshot-unstructured-random-lr0.01-seed0",
         {"schedule": "oneshot", "seed": 0, "criterion": "random"}, {0.0: full, 0.5: b})
    assert mask_agreement(tmp_path / "paper") == []
    rows = mask_agreement([tmp_path / "paper", tmp_path / "ext"])
    assert {(r.kind, r.amount, r.pairs) for r in rows} == {("criteria", 0.0, 2), ("criteria", 0.5, 2)}
    assert [r.jaccard < 1 for r in rows] == [False, True]


def test_agreement_table_round_trips_and_the_report_reads_it_without_checkpoints(tmp_path):
    """write_report keeps the agreement beside the report; a folder without step checkpoints (a checkout
    of committed results) renders the same report from that file."""
    from minicnn.study.agreement import load_agreement, save_agreement
    from minicnn.study.report import AGREEMENT_CSV, write_report

    full, a, b = np.ones(4, np.float32), np.array([1, 1, 0, 0], np.float32), np.array([1, 0, 1, 0], np.float32)
    _run(tmp_path / "S", "oneshot-unstructured-lr0.01-seed0", {"schedule": "oneshot", "seed": 0,
                                                              "criterion": "magnitude"}, {0.0: full, 0.5: a})
    _run(tmp_path / "S", "oneshot-unstructured-random-lr0.01-seed0",
         {"schedule": "oneshot", "seed": 0, "criterion": "random"}, {0.0: full, 0.5: b})
    rows = mask_agreement(tmp_path / "S")
    assert load_agreement(save_agreement(rows, tmp_path / "a.csv")) == [
        dataclasses.replace(r, jaccard=float(f"{r.jaccard:.6g}"), jaccard_min=float(f"{r.jaccard_min:.6g}"))
        for r in rows]
    table = _rows() + _rows("random", shift=-0.05)
    first = write_report(table, tmp_path / "R" / "REPORT.md", sweep_dirs=[tmp_path / "S"]).read_text()
    assert (tmp_path / "R" / AGREEMENT_CSV).is_file() and "criteria: mean Jaccard" in first
    import shutil

    shutil.rmtree(tmp_path / "S" / "runs")
    assert write_report(table, tmp_path / "R" / "REPORT.md", sweep_dirs=[tmp_path / "S"]).read_text() == first
    (tmp_path / "R" / AGREEMENT_CSV).unlink()
    assert "| B5 |" in (text := write_report(table, tmp_path / "R" / "REPORT.md").read_text())
    assert "not measured: no comparable step checkpoints" in text


def test_merged_tables_count_a_run_found_twice_once():
    from minicnn.study.results import merge_tables

    paper = _rows(schedules=("oneshot", "iterative"))
    extended = _rows(schedules=("iterative", "agp")) + _rows("random", schedules=("iterative",))
    merged = merge_tables([paper, extended])
    assert merged[:len(paper)] == paper
    assert len(merged) == len(paper) + len(extended) - len(AMOUNTS) * 2  # extended's iterative magnitude rows
    assert {(r.schedule, r.criterion) for r in merged[len(paper):]} == {("agp", "magnitude"),
                                                                        ("iterative", "random")}


# ----------------------------------------------------------------------------------------- answers
def test_magnitude_beats_random_by_the_constructed_margin():
    answers = _by_id(beyond_answers(_rows() + _rows("random", shift=-0.05)))
    b1 = answers["B1"]
    assert b1["verdict"] == "yes"
    assert "better at 2 of 2" in b1["answer"] and "mean difference +5.0 pts" in b1["answer"]
    assert "50%: +5.0, 90%: +5.0" in b1["answer"]
    assert b1["table"][2].startswith("| oneshot unstructured, layer scope, lr 0.01 | 0.5 |")
    assert b1["table"][2].endswith("| +5.0 | 1.0 | yes |")
    # within the tolerance (1 pt): a tie, so not "yes"
    tie = _by_id(beyond_answers(_rows() + _rows("random", shift=-0.005)))["B1"]
    assert tie["verdict"] == "tie" and "tie at 2" in tie["answer"]
    assert answers["B2"]["verdict"] == "not testable" and "no rows with criterion gradmag" in answers["B2"]["answer"]
    assert answers["B3"]["answer"] == "not testable: no agp or lth rows"
    assert answers["B4"]["verdict"] == "not measured" and answers["B5"]["verdict"] == "not measured"


def test_schedules_compared_only_at_equal_epochs():
    rows = _rows(schedules=("iterative", "agp", "lth"))
    lth = [dataclasses.replace(r, test_acc_after=r.test_acc_after + 0.03 * (r.amount > 0))
           for r in rows if r.schedule == "lth"]
    agp = [dataclasses.replace(r, epochs_spent=5) for r in rows if r.schedule == "agp"]
    b3 = _by_id(beyond_answers([r for r in rows if r.schedule == "iterative"] + lth + agp))["B3"]
    assert "lth: yes, better at 2 of 2 equal-epoch points" in b3["answer"]
    assert "agp: not comparable (50%: agp 5 vs iterative 20 epochs" in b3["answer"]
    only_agp = _by_id(beyond_answers(_rows(schedules=("agp",))))["B3"]
    assert only_agp["answer"] == "not testable: no iterative rows to compare agp with"


def test_most_sensitive_layer_from_the_sweeps_sensitivity_table(tmp_path):
    from minicnn.study.sensitivity import SensitivityRow, save_sensitivity

    def row(layer, amount, drop):
        return SensitivityRow(layer=layer, method="unstructured", criterion="magnitude", seed=0, amount=amount,
                              unit="weights", pruned=0, total=1, test_acc=0.6 - drop, test_loss=1.0, acc_drop=drop,
                              params_effective=1)

    save_sensitivity([row("conv1", 0.5, 0.02), row("conv1", 0.9, 0.30), row("fc", 0.5, 0.01), row("fc", 0.9, 0.05)],
                     tmp_path / "sensitivity", {"acc": 0.6, "loss": 1.0})
    b4 = _by_id(beyond_answers(_rows() + _rows("random"), sweep_dirs=tmp_path))["B4"]
    assert b4["verdict"] == "measured"
    assert b4["answer"].startswith("unstructured magnitude: conv1 (drop 30.0 pts at 90%; next fc 5.0 pts)")


def test_the_report_section_appears_only_beyond_the_paper():
    assert "## Beyond the paper" not in render_report(_rows(schedules=("oneshot", "iterative")))
    text = render_report(_rows() + _rows("random", shift=-0.05))
    section = text[text.index("## Beyond the paper"):]
    assert "| B1 | Does magnitude beat random" in section and "yes: magnitude better at 2 of 2" in section
    assert "### One-shot unstructured pruning (random criterion), lr 0.01" in text
    assert "- criteria: magnitude, random" in text


@pytest.mark.parametrize("outcomes, verdict", [
    ([0, 0, 0], "tie"), ([1, 1, 0, 0], "yes"), ([1, 0, 0, 0], "never worse"), ([-1, -1, 0], "no"),
    ([-1, 0, 0, 0], "never better"), ([1, -1, 0, 0], "mixed"), ([1, 1, 1, -1], "mixed"),
])
def test_overall_verdict_names_what_the_points_show(outcomes, verdict):
    from minicnn.study.beyond import _verdict

    assert _verdict(outcomes) == verdict
