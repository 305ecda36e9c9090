"""`minicnn plot` and `minicnn report`, the figures (plots.figures) and the report (minicnn.study.report), on
synthetic result tables."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from minicnn.cli import cli
from minicnn.paper import LRS, METHODS, SCHEDULES
from minicnn.study.claims import CLAIMS, VERDICTS
from minicnn.study.report import render_report, write_report

from synthetic_results import make_rows, write_table

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


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
    expected = [f"{s}_{m}_lr{lr:g}" for s in SCHEDULES for m in METHODS for lr in LRS]
    expected += ["summary_schedules", "summary_lrs", "summary_flops", "summary_methods"]
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
    assert "| C23 | 3.1.1 |" in text and "not testable (no rows for iterative structured, lr 0.8)" in text
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


def test_results_table_rows_show_mean_and_std():
    rows = make_rows(schedules=("iterative",), methods=("structured",), lrs=(0.01,), amounts=(0.0, 0.9))
    rows = [dataclasses.replace(r, test_acc_before=0.2, test_acc_after=0.5 + 0.1 * r.seed, train_acc=0.75)
            for r in rows]
    text = render_report(rows)
    assert "### Iterative structured pruning, lr 0.01\n" in text
    assert "| 0.9 | 0.1 | 655 | 14.6 k | 20.0 ± 0.0 | 55.0 ± 7.1 | 75.0 ± 0.0 |" in text
    assert "- learning rates: 0.01\n- amounts: 0, 0.9\n- seeds: 2 (0, 1)" in text
