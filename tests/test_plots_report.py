"""`minicnn plot` / `minicnn report`, the figures module and the claim checks, on synthetic result tables."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from minicnn.cli import cli
from minicnn.study.report import (CLAIMS, CONFIRMED, NOT_CONFIRMED, NOT_TESTABLE, PAPER_AMOUNTS, PAPER_LRS, VERDICTS,
                                  aggregate, evaluate_claims, render_report, write_report)
from minicnn.study.results import ResultRow, load_results, save_results

PARAMS_TOTAL = 20_714
FLOPS_DENSE = 460_000
SCHEDULES = ("oneshot", "iterative")
METHODS = ("structured", "unstructured")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _paper_like(schedule: str, method: str, lr: float, a: float) -> tuple[float, float, float]:
    """(test acc before, test acc after, train acc) shaped like the paper's figures."""
    base = 0.60
    before = base * (1 - a) ** (3 if method == "structured" else 0.8) + 0.10 * a
    if method == "unstructured" and a < 0.5:
        before = base - 0.05 * a
    if lr == 0.8:
        if schedule == "oneshot":
            after = 0.58 if (a <= 0.3 or method == "unstructured" and a <= 0.6) else 0.10
        else:
            after = 0.58 if (a <= 0.4 or method == "unstructured" and a < 0.7) else (
                0.42 if method == "unstructured" and a <= 0.95 else 0.10)
        gap = 0.06 if after > 0.5 else 0.0
    elif lr == 0.01:
        after = 0.64 - 0.10 * a - (0.05 if a >= 0.95 else 0.0)
        if a >= 0.99:
            after = 0.40 if method == "structured" else 0.49
        gap = 0.06 if a < 0.8 else 0.01
        if schedule == "oneshot" and method == "structured":
            gap = 0.01
    else:
        after = before + 0.02 if schedule == "oneshot" else 0.60 - 0.45 * a
        gap = 0.0
    return before, after, min(after + gap, 1.0)


def make_rows(schedules=SCHEDULES, methods=METHODS, lrs=PAPER_LRS, seeds=(0, 1), amounts=PAPER_AMOUNTS,
              accuracy=_paper_like, scope="layer") -> list[dict]:
    """A full (or partial) results grid with plausible numbers and a little seed noise."""
    rows = []
    for schedule in schedules:
        for method in methods:
            for lr in lrs:
                for seed in seeds:
                    noise = np.random.default_rng([seed, len(method), int(lr * 1e4), len(schedule)])
                    for step, a in enumerate(amounts):
                        before, after, train = accuracy(schedule, method, lr, a)
                        jitter = noise.normal(0, 0.003, 3)
                        effective = int(PARAMS_TOTAL * (1 - a) ** (1.5 if method == "structured" else 1))
                        if method == "structured" and a >= 0.95:
                            effective = 10
                        rows.append(ResultRow(**{
                            "schedule": schedule, "method": method, "scope": scope, "lr": lr, "seed": seed,
                            "step": step, "amount": a, "remaining": 1 - a, "params_total": PARAMS_TOTAL,
                            "params_nonzero": int(PARAMS_TOTAL * (1 - a)), "params_effective": effective,
                            "remaining_effective": effective / PARAMS_TOTAL, "flops_dense": FLOPS_DENSE,
                            "flops_effective": int(FLOPS_DENSE * effective / PARAMS_TOTAL) + 100,
                            "training_flops_effective": 3 * (int(FLOPS_DENSE * effective / PARAMS_TOTAL) + 100),
                            "test_acc_before": float(np.clip(before + jitter[0], 0, 1)),
                            "test_acc_after": float(np.clip(after + jitter[1], 0, 1)),
                            "train_acc": float(np.clip(train + jitter[2], 0, 1)),
                            "train_loss": 1.2, "test_loss": 1.3, "epochs": 10, "seconds": 12.5,
                            "diverged": bool(lr == 0.8 and method == "structured" and a == 0.5 and seed == 1),
                        }))
    return rows


def write_table(tmp_path: Path, rows: list[dict], name: str = "sweep") -> Path:
    out = tmp_path / name
    out.mkdir()
    save_results(rows, out / "results.csv", out / "results.h5")
    return out


def by_id(claims: list[dict]) -> dict[str, dict]:
    return {c["id"]: c for c in claims}


def assert_image(path: Path) -> None:
    data = path.read_bytes()
    assert data, path
    if path.suffix == ".png":
        assert data.startswith(PNG_MAGIC), path
    else:
        assert b"<svg" in data[:2000], path


@pytest.fixture(scope="module")
def full_table(tmp_path_factory) -> Path:
    return write_table(tmp_path_factory.mktemp("full"), make_rows())


@pytest.fixture(scope="module")
def plotted(full_table):
    """`minicnn plot` run once on the full table with the default output folder (RESULTS/figures)."""
    res = CliRunner().invoke(cli, ["plot", str(full_table)])
    assert res.exit_code == 0, res.output
    return res, full_table / "figures"


# ------------------------------------------------------------------------------------------ CLI
def test_plot_writes_every_figure(plotted):
    res, out = plotted
    expected = [f"{s}_{m}_lr{lr:g}" for s in SCHEDULES for m in METHODS for lr in PAPER_LRS]
    expected += ["summary_schedules", "summary_lrs", "summary_flops", "summary_methods"]
    assert "oneshot_structured_lr0.8" in expected and "iterative_unstructured_lr0.0001" in expected
    for stem in expected:
        for ext in ("png", "svg"):
            path = out / f"{stem}.{ext}"
            assert path.is_file(), path
            assert_image(path)
            assert str(path) in res.output
    assert len(list(out.glob("*.png"))) == len(list(out.glob("*.svg"))) == 16
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temporary files left behind"
    svg = (out / "oneshot_structured_lr0.8.svg").read_text()
    assert "One-shot structured pruning, lr 0.8" in svg  # matplotlib keeps each text as an SVG comment


def test_report_default_paths_and_claims(plotted, full_table):
    res = CliRunner().invoke(cli, ["report", str(full_table / "results.csv")])
    assert res.exit_code == 0, res.output
    assert ".png" not in res.output  # figures existed: not drawn again
    report = full_table / "REPORT.md"
    assert report.is_file()
    text = report.read_text()
    assert "## Claims" in text and "## Results" in text
    assert "](figures/oneshot_structured_lr0.8.png)" in text
    assert "](figures/summary_flops.png)" in text
    assert "seeds: 2 (0, 1)" in text and "epochs per step: 10" in text
    assert f"total fine-tuning time: {len(make_rows()) * 12.5 / 60:.1f} min" in text
    assert "### One-shot structured pruning, lr 0.8" in text
    assert " ± " in text  # two seeds -> mean ± std
    assert "diverged 1/2" in text
    claim_rows = [line for line in text.splitlines() if line.startswith("| C")]
    assert len(claim_rows) == len(CLAIMS) >= 35
    for claim, line in zip(CLAIMS, claim_rows):
        assert line.startswith(f"| {claim.cid} | {claim.section} |")
        assert any(f"| {v}" in line for v in VERDICTS), line
    assert "not testable" not in "\n".join(claim_rows)  # the full grid tests every claim
    assert f"{len(CLAIMS)} claims" in res.output


def test_report_custom_out_links_figures_relatively(plotted, tmp_path):
    _res, figures = plotted
    out = tmp_path / "docs" / "R.md"
    res = CliRunner().invoke(cli, ["report", str(figures.parent), "--out", str(out), "--figures", str(figures)])
    assert res.exit_code == 0, res.output
    rel = Path(os.path.relpath(figures / "summary_lrs.png", out.parent)).as_posix()
    assert rel.startswith("../") and f"]({rel})" in out.read_text()


def test_missing_results_is_a_one_line_error(tmp_path):
    for command in (["plot"], ["report"]):
        res = CliRunner().invoke(cli, command + [str(tmp_path / "nowhere")])
        assert res.exit_code != 0
        assert res.output.startswith("Error: ") and res.output.count("\n") == 1, res.output
        assert "Traceback" not in res.output
        assert not isinstance(res.exception, Exception) or isinstance(res.exception, SystemExit)


def test_empty_results_is_a_clean_error(tmp_path):
    out = write_table(tmp_path, [])
    res = CliRunner().invoke(cli, ["report", str(out)])
    assert res.exit_code != 0 and res.output.startswith("Error: ") and "Traceback" not in res.output


def test_partial_table_plots_and_reports(tmp_path):
    out = write_table(tmp_path, make_rows(schedules=("oneshot",), seeds=(0,)))
    res = CliRunner().invoke(cli, ["report", str(out)])  # no figures yet: report draws them
    assert res.exit_code == 0, res.output
    figs = out / "figures"
    assert str(figs / "oneshot_unstructured_lr0.01.png") in res.output
    assert_image(figs / "oneshot_unstructured_lr0.01.svg")
    assert not (figs / "iterative_structured_lr0.01.png").exists()
    for name in ("summary_schedules", "summary_lrs", "summary_methods", "summary_flops"):
        assert_image(figs / f"{name}.png")
    text = (out / "REPORT.md").read_text()
    claims = by_id(evaluate_claims(load_results(out)))
    assert claims["C23"]["verdict"] == NOT_TESTABLE
    assert "no rows for iterative structured, lr 0.8" in claims["C23"]["reason"]
    assert claims["C19"]["verdict"] == NOT_TESTABLE
    assert claims["C07"]["verdict"] != NOT_TESTABLE
    assert "not testable (no rows for iterative" in text
    assert " ± " not in text.split("## Claims")[0]  # one seed: no std
    assert "](figures/summary_methods.png)" in text


def test_small_table_and_second_scope(tmp_path):
    from plots.figures import make_figures

    kw = dict(schedules=("iterative",), methods=("unstructured",), lrs=(0.01,), seeds=(0,), amounts=(0.0, 0.5, 0.9))
    rows = make_rows(**kw) + make_rows(scope="global", **kw)
    names = sorted(p.name for p in make_figures(rows, tmp_path / "f"))
    stems = ["iterative_unstructured_lr0.01", "iterative_unstructured_lr0.01_global", "summary_flops",
             "summary_lrs", "summary_methods", "summary_schedules"]
    assert names == sorted(f"{s}.{e}" for s in stems for e in ("png", "svg"))
    text = render_report(rows, tmp_path / "f", relative_to=tmp_path)
    assert "### Iterative unstructured pruning, lr 0.01 (layer scope)" in text
    assert "### Iterative unstructured pruning, lr 0.01 (global scope)" in text
    assert "](f/iterative_unstructured_lr0.01_global.png)" in text
    assert make_figures([], tmp_path / "g") == []


def test_write_report_is_atomic_and_standalone(tmp_path):
    path = write_report(make_rows(seeds=(3,)), tmp_path / "r.md")
    assert path == tmp_path / "r.md" and path.read_text().startswith("# ")
    assert [p.name for p in tmp_path.iterdir()] == ["r.md"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not the 0600 of the temporary file


def test_aggregate_mean_and_std_over_seeds():
    rows = make_rows(schedules=("oneshot",), methods=("structured",), lrs=(0.01,), amounts=(0.0, 0.5))
    rows[0] = dataclasses.replace(rows[0], test_acc_after=0.5)  # seed 0 at amount 0
    rows[2] = dataclasses.replace(rows[2], test_acc_after=0.7)  # seed 1 at amount 0
    (curve,) = aggregate(rows).values()
    assert curve.seeds == (0, 1) and list(curve.n) == [2, 2]
    assert curve.mean["test_acc_after"][0] == pytest.approx(0.6)
    assert curve.std["test_acc_after"][0] == pytest.approx(np.std([0.5, 0.7], ddof=1))


# ------------------------------------------------------------------------------------- claims
def test_every_claim_has_section_tolerance_and_a_verdict():
    claims = evaluate_claims(make_rows(seeds=(0,)))
    assert [c["id"] for c in claims] == [c.cid for c in CLAIMS]
    assert len({c["id"] for c in claims}) == len(claims)
    for c in claims:
        assert c["section"] and c["tolerance"] and c["verdict"] in VERDICTS
    # the paper-shaped table confirms the paper's headline claims
    got = by_id(claims)
    for cid in ("C02", "C03", "C07", "C08", "C09", "C12", "C14", "C17", "C23", "C24", "C26", "C31",
                "C32", "C35", "C37", "C39"):
        assert got[cid]["verdict"] == CONFIRMED, got[cid]


def _scaled(factor_by_lr):
    """Paper-like accuracies after fine-tuning, scaled per learning rate."""
    def accuracy(schedule, method, lr, a):
        before, after, train = _paper_like(schedule, method, lr, a)
        return before, after * factor_by_lr[lr], train * factor_by_lr[lr]
    return accuracy


def test_lr_001_best_confirmed_and_refuted():
    best = by_id(evaluate_claims(make_rows(seeds=(0,), accuracy=_scaled({0.8: 0.5, 0.01: 1.0, 0.0001: 0.5}))))
    for cid in ("C07", "C14", "C24", "C37"):
        assert best[cid]["verdict"] == CONFIRMED, best[cid]
        assert "lr 0.01" in best[cid]["measurement"]

    def low_lr_wins(schedule, method, lr, a):
        before, after, train = _paper_like(schedule, method, lr, a)
        return (before, 0.9, 0.9) if lr == 0.0001 else (before, after, train)

    worse = by_id(evaluate_claims(make_rows(seeds=(0,), accuracy=low_lr_wins)))
    for cid in ("C07", "C14", "C24", "C37"):
        assert worse[cid]["verdict"] == NOT_CONFIRMED, worse[cid]
        assert "lr 0.0001 is better" in worse[cid]["reason"]


def test_stuck_at_chance_after_30_percent():
    def flat(schedule, method, lr, a):
        return 0.5, 0.5, 0.52

    def stuck(schedule, method, lr, a):
        return (0.5, 0.1, 0.1) if a > 0.3 else (0.5, 0.55, 0.57)

    assert by_id(evaluate_claims(make_rows(seeds=(0,), accuracy=stuck)))["C03"]["verdict"] == CONFIRMED
    assert by_id(evaluate_claims(make_rows(seeds=(0,), accuracy=stuck)))["C02"]["verdict"] == CONFIRMED
    flat_claims = by_id(evaluate_claims(make_rows(seeds=(0,), accuracy=flat)))
    assert flat_claims["C03"]["verdict"] == NOT_CONFIRMED
    assert flat_claims["C02"]["verdict"] == NOT_CONFIRMED


def test_recovery_at_99_percent_and_overfitting_claims():
    def recovers(schedule, method, lr, a):
        if a == 0.99:
            return 0.10, 0.30, 0.30
        return 0.5, 0.55, 0.55

    def no_recovery(schedule, method, lr, a):
        return (0.10, 0.12, 0.12) if a == 0.99 else (0.5, 0.55, 0.65)

    yes, no = (by_id(evaluate_claims(make_rows(seeds=(0,), accuracy=f))) for f in (recovers, no_recovery))
    assert yes["C08"]["verdict"] == CONFIRMED and yes["C35"]["verdict"] == CONFIRMED
    assert no["C08"]["verdict"] == NOT_CONFIRMED and no["C35"]["verdict"] == NOT_CONFIRMED
    assert "every conv filter" in no["C08"]["reason"]  # structured at 99%: 10 effective parameters left
    assert yes["C09"]["verdict"] == CONFIRMED  # train == test: no overfitting
    assert no["C09"]["verdict"] == NOT_CONFIRMED  # 10-point gap
    assert no["C22"]["verdict"] == CONFIRMED


def test_iterative_versus_one_shot():
    def iterative_better(schedule, method, lr, a):
        before, after, train = _paper_like("oneshot", method, lr, a)
        return (before, min(after + 0.1, 1.0), train) if schedule == "iterative" else (before, after, train)

    def iterative_worse(schedule, method, lr, a):
        before, after, train = _paper_like("oneshot", method, lr, a)
        return (before, after * 0.5, train) if schedule == "iterative" else (before, after, train)

    good = by_id(evaluate_claims(make_rows(seeds=(0,), accuracy=iterative_better)))
    bad = by_id(evaluate_claims(make_rows(seeds=(0,), accuracy=iterative_worse)))
    assert good["C19"]["verdict"] == CONFIRMED and good["C20"]["verdict"] == CONFIRMED
    assert bad["C19"]["verdict"] == NOT_CONFIRMED and bad["C20"]["verdict"] != CONFIRMED


def test_iterative_structured_about_40_percent_at_99():
    def at(value):
        def accuracy(schedule, method, lr, a):
            before, after, train = _paper_like(schedule, method, lr, a)
            return (before, value, value) if a == 0.99 else (before, after, train)
        return accuracy

    assert by_id(evaluate_claims(make_rows(seeds=(0,), accuracy=at(0.42))))["C26"]["verdict"] == CONFIRMED
    assert by_id(evaluate_claims(make_rows(seeds=(0,), accuracy=at(0.10))))["C26"]["verdict"] == NOT_CONFIRMED


def test_missing_amount_makes_claim_not_testable():
    rows = [r for r in make_rows(seeds=(0,)) if r.amount != 0.99]
    claims = by_id(evaluate_claims(rows))
    assert claims["C26"]["verdict"] == NOT_TESTABLE and "99%" in claims["C26"]["reason"]
    assert claims["C07"]["verdict"] != NOT_TESTABLE
